"""Every network on the native core against rnnkit.reference (the per-step oracle
written from SPEC.md): outputs, final states and all gradients, with and without
per-sequence lengths, in float64 and float32. Also the recorded internals."""
import pytest
import torch

import rnnkit
from rnnkit import functional as F
from rnnkit import reference as R
from conftest import TOL, pairs, rel_err

T, B, I, H, O = 7, 4, 3, 5, 2
LENGTHS = torch.tensor([7, 2, 5, 1])


def _params(shapes, dtype, bias):
    """Random leaf tensors: every 2-D shape is a weight; 1-D shapes are biases (None without bias)."""
    return [torch.randn(s, dtype=dtype).mul_(0.5).requires_grad_() if len(s) == 2 or bias else None
            for s in shapes]


def _compare(fast_fn, ref_fn, tensors, dtype, what):
    """Runs both, compares all outputs and the gradients of `tensors` for a random loss."""
    out_f, out_r = fast_fn(), ref_fn()
    flat_f, flat_r = _flatten(out_f), _flatten(out_r)
    for k, (a, b) in enumerate(pairs(flat_f, flat_r)):
        assert a.shape == b.shape
        assert rel_err(a, b) <= TOL[dtype], f"{what}: output {k} rel err {rel_err(a, b):.3g}"
    g = torch.Generator().manual_seed(7)
    weights = [torch.randn(o.shape, generator=g, dtype=dtype) for o in flat_r]
    leaves = [t for t in tensors if t is not None and t.requires_grad]
    grads_f = torch.autograd.grad(sum((o * w).sum() for o, w in zip(flat_f, weights)), leaves)
    grads_r = torch.autograd.grad(sum((o * w).sum() for o, w in zip(flat_r, weights)), leaves)
    for k, (a, b) in enumerate(pairs(grads_f, grads_r)):
        assert rel_err(a, b) <= TOL[dtype], f"{what}: grad {k} rel err {rel_err(a, b):.3g}"


def _flatten(res):
    out = []
    for r in res:
        if isinstance(r, tuple):
            out.extend(r)
        elif isinstance(r, torch.Tensor):
            out.append(r)
    return out


@pytest.fixture(params=[torch.float64, torch.float32], ids=["f64", "f32"])
def dtype(request):
    return request.param


@pytest.fixture(params=[None, LENGTHS], ids=["dense", "lengths"])
def lengths(request):
    return request.param


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("bias", [True, False])
def test_elman(dtype, lengths, nonlinearity, bias):
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    ps = _params([(H, I), (H, H), (H,), (H,)], dtype, bias)
    _compare(lambda: F.elman(x, h0, *ps, nonlinearity=nonlinearity, lengths=lengths),
             lambda: R.elman(x, h0, *ps, nonlinearity=nonlinearity, lengths=lengths), [x, h0, *ps], dtype,
             f"elman {nonlinearity}")


@pytest.mark.parametrize("bias", [True, False])
def test_lstm(dtype, lengths, bias):
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    ps = _params([(4 * H, I), (4 * H, H), (4 * H,), (4 * H,)], dtype, bias)
    _compare(lambda: F.lstm(x, h0, c0, *ps, lengths=lengths), lambda: R.lstm(x, h0, c0, *ps, lengths=lengths),
             [x, h0, c0, *ps], dtype, "lstm")


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gru(dtype, lengths, reset_after, bias):
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    ps = _params([(3 * H, I), (3 * H, H), (3 * H,), (3 * H,)], dtype, bias)
    _compare(lambda: F.gru(x, h0, *ps, reset_after=reset_after, lengths=lengths),
             lambda: R.gru(x, h0, *ps, reset_after=reset_after, lengths=lengths), [x, h0, *ps], dtype,
             f"gru reset_after={reset_after}")


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("output_nonlinearity", ["identity", "tanh", "sigmoid"])
@pytest.mark.parametrize("bias", [True, False])
def test_jordan(dtype, lengths, nonlinearity, output_nonlinearity, bias):
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    y0 = torch.randn(B, O, dtype=dtype, requires_grad=True)
    ps = _params([(H, I), (H, O), (O, H), (H,), (H,), (O,)], dtype, bias)
    kw = dict(nonlinearity=nonlinearity, output_nonlinearity=output_nonlinearity, lengths=lengths)
    _compare(lambda: F.jordan(x, y0, *ps, **kw), lambda: R.jordan(x, y0, *ps, **kw), [x, y0, *ps], dtype,
             f"jordan {nonlinearity}/{output_nonlinearity}")


def test_jordan_module_and_cell_against_reference():
    m = rnnkit.JordanRNN(I, H, O, output_nonlinearity="sigmoid", batch_first=True).double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    out, y_n = m(x)
    ref_out, ref_y = R.jordan(x.transpose(0, 1), None, m.weight_ih, m.weight_yh, m.weight_hy, m.bias_ih, m.bias_yh,
                              m.bias_hy, output_nonlinearity="sigmoid")
    assert rel_err(out, ref_out.transpose(0, 1)) < 1e-12 and rel_err(y_n, ref_y) < 1e-12
    cell = rnnkit.JordanCell(I, H, O, output_nonlinearity="sigmoid").double()
    cell.load_state_dict(m.state_dict())
    y = None
    for t in range(T):  # the cell stepped by hand equals the sequence layer
        y = cell(x[:, t], y)
        assert rel_err(y, out[:, t]) < 1e-12


def test_seed_form_gru_module_and_cell():
    m = rnnkit.GRU(I, H, reset_after=False).double()
    cell = rnnkit.GRUCell(I, H, reset_after=False).double()
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in m.state_dict().items()})
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, h_n = m(x)
    ref, _ = R.gru(x, None, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0, reset_after=False)
    assert rel_err(out, ref) < 1e-12
    h = None
    for t in range(T):
        h = cell(x[t], h)
        assert rel_err(h, out[t]) < 1e-12
    assert "reset_after=False" in repr(m)


def test_identity_rnn_module_matches_reference():
    m = rnnkit.RNN(I, H, nonlinearity="identity").double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, h_n = m(x)
    ref, ref_h = R.elman(x, None, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0,
                         nonlinearity="identity")
    assert rel_err(out, ref) < 1e-12 and rel_err(h_n[0], ref_h) < 1e-12


@pytest.mark.parametrize("arch", ["lstm", "gru", "gru_before", "rnn"])
def test_recorded_internals_equal_reference(arch, lengths):
    x = torch.randn(T, B, I, dtype=torch.float64)
    if arch == "lstm":
        m = rnnkit.LSTM(I, H).double()
    elif arch == "rnn":
        m = rnnkit.RNN(I, H).double()
    else:
        m = rnnkit.GRU(I, H, reset_after=arch == "gru").double()
    _, _, inside = m.forward_with_internals(x, lengths=lengths)
    params = [m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0]
    if arch == "lstm":
        *_, ref = R.lstm(x, None, None, *params, lengths=lengths, return_internals=True)
    elif arch == "rnn":
        *_, ref = R.elman(x, None, *params, lengths=lengths, return_internals=True)
    else:
        *_, ref = R.gru(x, None, *params, reset_after=arch == "gru", lengths=lengths, return_internals=True)
    assert set(inside[0]) == set(ref)
    for k in ref:
        assert rel_err(inside[0][k], ref[k]) < 1e-12, k
