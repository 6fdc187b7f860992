"""rnnkit's modules against torch.nn with identical weights: outputs, final states and
gradients of the input, the initial states and every parameter."""
import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from conftest import NETWORK_CASES
from helpers import assert_all_close, forward_backward, twin

# Every network and setting of the registry that torch.nn computes too:
# name -> (torch.nn class, rnnkit class, constructor arguments both take).
TORCH_CASES = {c.name: c for c in NETWORK_CASES if c.spec.torch_computes_same(c.hyper)}
ARCHS = {name: (c.spec.torch_class, c.spec.module_class, {k: v for k, v in c.hyper.items() if k not in c.spec.options})
         for name, c in TORCH_CASES.items()}
CELLS = {name: (getattr(nn, c.spec.cell), c.spec.cell_class, kw) for name, (_, _, kw), c in
         ((n, ARCHS[n], TORCH_CASES[n]) for n in ARCHS) if c.has_cell}  # LSTMCell has no proj_size
I, H, T, B = 5, 7, 6, 4


def _states(arch, L, D, B, dtype, unbatched=False):
    case = TORCH_CASES[arch]
    widths = case.spec.state_widths(case.layer(I, H))  # (h, c) of a projected LSTM: (P, H)
    states = tuple(torch.randn((L * D, S) if unbatched else (L * D, B, S), dtype=dtype, requires_grad=True)
                   for S in widths)
    return states if len(states) == 2 else states[0]  # LSTM: (h, c)


def _leaves(x, hx):
    leaves = [x]
    if hx is not None:
        leaves += list(hx) if isinstance(hx, tuple) else [hx]
    return leaves


def _call(module, x, hx, *rest):
    return module(x, hx)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias,with_hx",
                         [c for c in itertools.product([1, 2, 3], [False, True], [False, True], [True, False],
                                                       [True, False])
                          if c[0] != 2 or (c[3] and c[4])])  # layer 2 only in the default combination
def test_dense_parity(arch, dtype, num_layers, bidirectional, batch_first, bias, with_hx):
    tc, rc, kw = ARCHS[arch]
    t, r = twin(tc, rc, I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                bias=bias, dtype=dtype, **kw)
    D = 2 if bidirectional else 1
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype, requires_grad=True)
    hx = _states(arch, num_layers, D, B, dtype) if with_hx else None
    inputs = _leaves(x, hx)
    ot, gt_in, gt_p = forward_backward(t, [x, hx] + inputs[1:], lambda m, x, hx, *_: m(x, hx))
    orr, gr_in, gr_p = forward_backward(r, [x, hx] + inputs[1:], lambda m, x, hx, *_: m(x, hx))
    assert_all_close(orr, ot, dtype, "outputs")
    assert_all_close(gr_in, gt_in, dtype, "input/state grads")
    assert_all_close(gr_p, gt_p, dtype, "parameter grads")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_unsorted_parity(arch, dtype, bidirectional, batch_first):
    tc, rc, kw = ARCHS[arch]
    t, r = twin(tc, rc, I, H, num_layers=2, bidirectional=bidirectional, batch_first=batch_first, dtype=dtype, **kw)
    lengths = torch.tensor([3, 6, 1, 5])  # unsorted, one full length
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype, requires_grad=True)
    hx = _states(arch, 2, 2 if bidirectional else 1, B, dtype)
    leaves = _leaves(x, hx)

    def call(m, x, hx, *_):  # packs inside, so each run has its own graph
        return m(pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False), hx)

    ot, gt_in, gt_p = forward_backward(t, [x, hx] + leaves[1:], call)
    orr, gr_in, gr_p = forward_backward(r, [x, hx] + leaves[1:], call)
    assert_all_close(orr, ot, dtype, "outputs")
    assert_all_close(gr_in, gt_in, dtype, "input/state grads")
    assert_all_close(gr_p, gt_p, dtype, "parameter grads")


@pytest.mark.parametrize("arch", list(ARCHS))
def test_packed_output_structure(arch):
    tc, rc, kw = ARCHS[arch]
    t, r = twin(tc, rc, I, H, **kw)
    x = torch.randn(T, B, I, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([2, 6, 4, 4]), enforce_sorted=False)
    ot, rt = t(packed)[0], r(packed)[0]
    assert torch.equal(ot.batch_sizes, rt.batch_sizes)
    assert torch.equal(ot.sorted_indices, rt.sorted_indices)
    assert torch.equal(ot.unsorted_indices, rt.unsorted_indices)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("with_hx", [False, True])
def test_unbatched_parity(arch, dtype, with_hx):
    tc, rc, kw = ARCHS[arch]
    t, r = twin(tc, rc, I, H, num_layers=2, bidirectional=True, dtype=dtype, **kw)
    x = torch.randn(T, I, dtype=dtype, requires_grad=True)
    hx = _states(arch, 2, 2, None, dtype, unbatched=True) if with_hx else None
    leaves = _leaves(x, hx)
    ot, gt_in, gt_p = forward_backward(t, [x, hx] + leaves[1:], lambda m, x, hx, *_: m(x, hx))
    orr, gr_in, gr_p = forward_backward(r, [x, hx] + leaves[1:], lambda m, x, hx, *_: m(x, hx))
    assert [o.shape for o in orr] == [o.shape for o in ot]
    assert_all_close(orr, ot, dtype, "outputs")
    assert_all_close(gr_in, gt_in, dtype, "input/state grads")
    assert_all_close(gr_p, gt_p, dtype, "parameter grads")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("unbatched", [False, True])
def test_cell_parity(name, dtype, unbatched):
    tc, rc, kw = CELLS[name]
    t, r = twin(tc, rc, I, H, dtype=dtype, **kw)
    x = torch.randn((I,) if unbatched else (B, I), dtype=dtype, requires_grad=True)
    shape = (H,) if unbatched else (B, H)
    hx = torch.randn(shape, dtype=dtype, requires_grad=True)
    if len(TORCH_CASES[name].spec.states) == 2:  # LSTM: (h, c)
        hx = (hx, torch.randn(shape, dtype=dtype, requires_grad=True))
    leaves = _leaves(x, hx)

    def call(m, x, hx, *_):
        out = m(x, hx)
        return (out[0], out[1]) if isinstance(out, tuple) else (out, out * 0)

    ot, gt_in, gt_p = forward_backward(t, [x, hx] + leaves[1:], call)
    orr, gr_in, gr_p = forward_backward(r, [x, hx] + leaves[1:], call)
    assert_all_close(orr, ot, dtype, "outputs")
    assert_all_close(gr_in, gt_in, dtype, "input/state grads")
    assert_all_close(gr_p, gt_p, dtype, "parameter grads")


@pytest.mark.parametrize("arch", list(ARCHS))
def test_state_dict_round_trip(arch):
    tc, rc, kw = ARCHS[arch]
    r = rc(I, H, num_layers=2, bidirectional=True, **kw)
    t = tc(I, H, num_layers=2, bidirectional=True, **kw)
    assert list(r.state_dict()) == list(t.state_dict())
    t.load_state_dict(r.state_dict())  # rnnkit -> torch
    x = torch.randn(T, B, I)
    assert torch.allclose(t(x)[0], r(x)[0], rtol=1e-5, atol=1e-6)
    assert isinstance(r, tc)


def test_dropout_between_layers():
    r = rnnkit.LSTM(I, H, num_layers=2, dropout=0.5)
    x = torch.randn(T, B, I)
    r.train()
    a, b = r(x)[0], r(x)[0]
    assert not torch.equal(a, b), "dropout should make training-mode outputs differ"
    r.eval()
    assert torch.equal(r(x)[0], r(x)[0])
    t = nn.LSTM(I, H, num_layers=2, dropout=0.5).eval()
    t.load_state_dict(r.state_dict())
    assert torch.allclose(t(x)[0], r(x)[0], rtol=1e-5, atol=1e-6)


def test_lengths_keyword_equals_packed():
    r = rnnkit.GRU(I, H, num_layers=2, bidirectional=True).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    lengths = torch.tensor([3, 6, 1, 5])
    out, h = r(x, lengths=lengths)
    from torch.nn.utils.rnn import pad_packed_sequence
    pout, ph = r(pack_padded_sequence(x, lengths, enforce_sorted=False))
    pout, _ = pad_packed_sequence(pout, total_length=T)
    assert torch.allclose(out, pout, atol=1e-14)
    assert torch.allclose(h, ph, atol=1e-14)
    assert torch.all(out[4:, 2] == 0) and torch.all(out[3:, 0] == 0)

