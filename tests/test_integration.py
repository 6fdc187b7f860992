"""rnnkit modules inside ordinary PyTorch code: optimizers, torch.compile, no_grad,
state_dict exchange with torch.nn, deepcopy/pickle."""
import copy
import io

import pytest
import torch

import rnnkit
from conftest import pairs


def _model():
    torch.manual_seed(0)
    return torch.nn.ModuleDict({"rnn": rnnkit.GRU(6, 12, num_layers=2, batch_first=True), "head": torch.nn.Linear(12, 1)})


def _loss(model, x, y):
    out, _ = model["rnn"](x)
    return torch.nn.functional.mse_loss(model["head"](out[:, -1]).squeeze(-1), y)


def test_optimizer_reduces_loss():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 10, 6, generator=g)
    y = x[:, :, 0].sum(1)  # a sum over time: needs memory
    first = _loss(model, x, y).item()
    for _ in range(60):
        opt.zero_grad()
        loss = _loss(model, x, y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile(backend):
    model = _model()
    x, y = torch.randn(4, 7, 6), torch.randn(4)
    expected = _loss(model, x, y)
    expected.backward()
    expected_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(_loss, backend=backend)
    got = compiled(model, x, y)
    got.backward()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    for p, g in pairs(model.parameters(), expected_grads):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6)


def test_torch_compile_inductor_small():
    """The inductor path (C++ code generation around the native kernels) on a small model;
    the full model above is the slow variant."""
    torch.manual_seed(0)
    rnn = rnnkit.GRU(3, 4)
    x = torch.randn(5, 2, 3)

    def loss(x):
        return (rnn(x)[0] * 2).sum()

    expected = torch.autograd.grad(loss(x), list(rnn.parameters()))
    value = torch.compile(loss, backend="inductor")(x)
    got = torch.autograd.grad(value, list(rnn.parameters()))
    assert torch.allclose(value, loss(x), rtol=1e-5, atol=1e-6)
    for g, e in pairs(got, expected):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-6)


def test_no_grad_and_inference_mode():
    m = rnnkit.LSTM(3, 5)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        a = m(x)[0]
    with torch.inference_mode():
        b = m(x)[0]
    assert not a.requires_grad and torch.equal(a, b)


def test_deepcopy_and_pickle_round_trip():
    m = rnnkit.GRU(3, 5, reset_after=False)
    x = torch.randn(4, 2, 3)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert loaded.reset_after is False and torch.equal(loaded(x)[0], m(x)[0])
    assert torch.equal(copy.deepcopy(m)(x)[0], m(x)[0])


def test_weights_only_state_dict_exchange_with_torch():
    t = torch.nn.LSTM(3, 5, num_layers=2)
    r = rnnkit.LSTM(3, 5, num_layers=2)
    buf = io.BytesIO()
    torch.save(t.state_dict(), buf)
    buf.seek(0)
    r.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(4, 2, 3)
    assert torch.allclose(r(x)[0], t(x)[0], atol=1e-6)


@pytest.mark.parametrize("grad", [False, True])
def test_final_state_does_not_alias_the_output(grad):
    """As with torch.nn, editing the output in place leaves h_n alone (and vice versa)."""
    m = rnnkit.GRU(3, 5)
    x = torch.randn(4, 2, 3, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        out, h_n = m(x)
    before = h_n.clone()
    with torch.no_grad():
        out.mul_(0)
    assert torch.equal(h_n, before)
