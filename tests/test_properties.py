"""Property-based tests (hypothesis): random sizes, lengths and options against torch.nn
and the reference, in float64."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import functional as F
from rnnkit import reference as R
from conftest import pairs, rel_err

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    T = draw(st.integers(1, 9))
    B = draw(st.integers(1, 7))
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(1, T), min_size=B, max_size=B)))
    return dict(T=T, B=B, I=draw(st.integers(1, 9)), H=draw(st.integers(1, 37)), lengths=lengths,
                layers=draw(st.integers(1, 3)), bidirectional=draw(st.booleans()), batch_first=draw(st.booleans()),
                bias=draw(st.booleans()), with_hx=draw(st.booleans()))


@SETTINGS
@given(p=problems(), arch=st.sampled_from(["rnn_tanh", "rnn_relu", "lstm", "gru"]))
def test_modules_match_torch(p, arch):
    tc, rc, kw = {"rnn_tanh": (nn.RNN, rnnkit.RNN, {"nonlinearity": "tanh"}),
                  "rnn_relu": (nn.RNN, rnnkit.RNN, {"nonlinearity": "relu"}),
                  "lstm": (nn.LSTM, rnnkit.LSTM, {}), "gru": (nn.GRU, rnnkit.GRU, {})}[arch]
    args = dict(num_layers=p["layers"], bidirectional=p["bidirectional"], batch_first=p["batch_first"],
                bias=p["bias"], **kw)
    t = tc(p["I"], p["H"], **args).double()
    r = rc(p["I"], p["H"], **args).double()
    r.load_state_dict(t.state_dict())
    shape = (p["B"], p["T"], p["I"]) if p["batch_first"] else (p["T"], p["B"], p["I"])
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    D = 2 if p["bidirectional"] else 1
    hx = None
    if p["with_hx"]:
        h = torch.randn(p["layers"] * D, p["B"], p["H"], dtype=torch.float64)
        hx = (h, torch.randn_like(h)) if arch == "lstm" else h

    def run(m):
        inp = x
        if p["lengths"] is not None:
            inp = pack_padded_sequence(x, torch.tensor(p["lengths"]), batch_first=p["batch_first"],
                                       enforce_sorted=False)
        out, state = m(inp, hx)
        out = out.data if hasattr(out, "data") and not isinstance(out, torch.Tensor) else out
        states = list(state) if isinstance(state, tuple) else [state]
        g = torch.Generator().manual_seed(5)  # a fixed projection: a well-conditioned loss
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in [out] + states)
        grads = torch.autograd.grad(loss, [x] + list(m.parameters()))
        return [out] + states + list(grads)

    for a, b in pairs(run(r), run(t)):
        assert a.shape == b.shape
        assert rel_err(a, b) < 1e-10


@SETTINGS
@given(p=problems(), reset_after=st.booleans(), f=st.sampled_from(["tanh", "relu", "identity"]),
       g=st.sampled_from(["identity", "tanh", "sigmoid"]), O=st.integers(1, 6))
def test_gru_and_jordan_match_reference(p, reset_after, f, g, O):
    T, B, I, H = p["T"], p["B"], p["I"], p["H"]
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    lengths = None if p["lengths"] is None else torch.tensor(p["lengths"])
    gp = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in [(3 * H, I), (3 * H, H), (3 * H,), (3 * H,)]]
    jp = [torch.randn(s, dtype=torch.float64, requires_grad=True) * 1 for s in [(H, I), (H, O), (O, H), (H,), (H,), (O,)]]
    jp = [q.detach().requires_grad_() for q in jp]
    for fast, ref, leaves in [
        (lambda: F.gru(x, None, *gp, reset_after=reset_after, lengths=lengths),
         lambda: R.gru(x, None, *gp, reset_after=reset_after, lengths=lengths), [x] + gp),
        (lambda: F.jordan(x, None, *jp, nonlinearity=f, output_nonlinearity=g, lengths=lengths),
         lambda: R.jordan(x, None, *jp, nonlinearity=f, output_nonlinearity=g, lengths=lengths), [x] + jp),
    ]:
        (o1, s1), (o2, s2) = fast(), ref()
        assert rel_err(o1, o2) < 1e-10 and rel_err(s1, s2) < 1e-10
        w = torch.randn(o2.shape, dtype=o2.dtype)  # a fixed projection: a well-conditioned loss
        g1 = torch.autograd.grad((o1 * w).sum() + s1.sum(), leaves)
        g2 = torch.autograd.grad((o2 * w).sum() + s2.sum(), leaves)
        for a, b in pairs(g1, g2):
            assert rel_err(a, b) < 1e-9
