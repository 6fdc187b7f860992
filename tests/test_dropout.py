"""Dropout in stacked recurrent layers (torch.nn's rule): in training mode, each element of
the input of layers 1 .. L-1 is zeroed with probability p and the survivors are scaled by
1/(1-p); never after the last layer, never in eval mode."""
import pytest
import torch

import rnnkit
from rnnkit.training.models import build_rnn, run_rnn

T, B, I, H = 12, 8, 5, 48
P = 0.3


def identity_stack(num_layers: int) -> rnnkit.RNN:
    """Layer 0 random; every later layer the identity map (W_ih = 1, W_hh = 0, b = 0), so
    the module's output is exactly what the last layer receives."""
    torch.manual_seed(0)
    rnn = rnnkit.RNN(H, H, num_layers=num_layers, nonlinearity="identity", dropout=P).double()
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(0.5)
        for layer in range(1, num_layers):
            getattr(rnn, f"weight_ih_l{layer}").copy_(torch.eye(H))
            getattr(rnn, f"weight_hh_l{layer}").zero_()
            getattr(rnn, f"bias_ih_l{layer}").zero_()
            getattr(rnn, f"bias_hh_l{layer}").zero_()
    return rnn


def first_layer_by_hand(rnn: rnnkit.RNN, x: torch.Tensor) -> torch.Tensor:
    """h_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh (identity Elman, SPEC section 1), (T, B, H)."""
    h = torch.zeros(x.shape[1], H, dtype=x.dtype)
    out = []
    for t in range(x.shape[0]):
        h = x[t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
        out.append(h)
    return torch.stack(out).detach()


@pytest.mark.parametrize("num_layers", [2, 3])
def test_dropout_zeroes_and_rescales_between_layers_only(num_layers):
    rnn = identity_stack(num_layers)
    x = torch.randn(T, B, H, dtype=torch.float64)
    h1 = first_layer_by_hand(rnn, x)
    assert (h1 != 0).all()
    # L - 1 dropouts between L layers: an element survives all of them with probability
    # (1-p)^(L-1) and is then scaled by (1-p)^-(L-1)
    n_drop = num_layers - 1
    rnn.train()
    with torch.no_grad():
        out = torch.cat([rnn(x)[0] for _ in range(8)])            # (8T, B, H)
    h1s = h1.repeat(8, 1, 1)
    kept = out != 0
    torch.testing.assert_close(out[kept], h1s[kept] / (1 - P) ** n_drop, rtol=1e-10, atol=1e-14)
    dropped = 1 - kept.double().mean().item()
    expected = 1 - (1 - P) ** n_drop
    assert abs(dropped - expected) < 0.02, f"dropped fraction {dropped:.3f}, expected {expected:.3f}"
    rnn.eval()
    with torch.no_grad():
        torch.testing.assert_close(rnn(x)[0], h1, rtol=1e-12, atol=1e-12)


def own_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Bernoulli(1-p) keep mask, survivors scaled by 1/(1-p) (draws from the global generator
    in the same order as torch's CPU dropout, so a seeded run can be replayed)."""
    keep = torch.empty_like(x).bernoulli_(1 - p)
    return x * keep / (1 - p)


def single_layers(stack: torch.nn.Module):
    """The layers of a stack as separate one-layer modules with the same weights."""
    D = 2 if stack.bidirectional else 1
    layers = []
    for layer in range(stack.num_layers):
        if isinstance(stack, rnnkit.JordanRNN):
            width = stack.input_size if layer == 0 else D * stack.output_size
            one = rnnkit.JordanRNN(width, stack.hidden_size, stack.output_size, stack.nonlinearity,
                                   stack.output_nonlinearity, bidirectional=stack.bidirectional)
        else:
            kw = dict(bidirectional=stack.bidirectional)
            if isinstance(stack, rnnkit.GRU):
                kw["reset_after"] = stack.reset_after
            if isinstance(stack, rnnkit.RNN):
                kw["nonlinearity"] = stack.nonlinearity
            width = stack.input_size if layer == 0 else D * stack.hidden_size
            one = type(stack)(width, stack.hidden_size, **kw)
        one = one.to(next(stack.parameters()).dtype)
        one.load_state_dict({name.replace(f"_l{layer}", "_l0"): value for name, value in stack.state_dict().items()
                             if f"_l{layer}" in name})
        layers.append(one)
    return layers


STACKS = {
    "rnn": lambda: rnnkit.RNN(I, H, num_layers=3, dropout=P),
    "lstm": lambda: rnnkit.LSTM(I, H, num_layers=3, dropout=P),
    "lstm_bidirectional": lambda: rnnkit.LSTM(I, H, num_layers=2, dropout=P, bidirectional=True),
    "gru": lambda: rnnkit.GRU(I, H, num_layers=2, dropout=P),
    "gru_before": lambda: rnnkit.GRU(I, H, num_layers=2, dropout=P, reset_after=False),
    "jordan_engine": lambda: build_rnn("jordan", I, H, num_layers=3, dropout=P),
    "jordan_bidirectional": lambda: rnnkit.JordanRNN(I, H, 4, num_layers=2, dropout=P, bidirectional=True),
}


@pytest.mark.parametrize("name", list(STACKS))
def test_stack_equals_its_layers_with_dropout_written_here(name):
    torch.manual_seed(0)
    stack = STACKS[name]().double()
    layers = single_layers(stack)
    x = torch.randn(T, B, I, dtype=torch.float64)
    for training in (True, False):
        stack.train(training)
        torch.manual_seed(123)
        with torch.no_grad():
            got, _ = run_rnn(stack, x, None)
            torch.manual_seed(123)
            h = x
            for k, layer in enumerate(layers):
                if k > 0 and training:
                    h = own_dropout(h, P)
                h, _ = run_rnn(layer, h, None)
        torch.testing.assert_close(got, h, rtol=1e-12, atol=1e-12, msg=f"{name}, training={training}")
