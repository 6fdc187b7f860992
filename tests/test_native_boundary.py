"""The boundary between Python and the C++ core: codes come from the binding, output
buffers are written in place or refused, and the Jordan recurrence, now split across
threads like the others, stays bit-identical for any thread count."""
import numpy as np
import pytest
import torch

import rnnkit
from rnnkit import _backend, _core
from rnnkit import networks

_ARCH = _backend.ARCH_CODES


def test_codes_are_read_from_the_binding():
    assert _backend.ISA_CODES == {isa.name: isa.value for isa in _core.Isa}
    assert _backend.ACT_CODES == {act.name: act.value for act in _core.Act}
    assert _ARCH == {arch.name: arch.value for arch in _core.Arch}
    assert list(_backend.ISA_CODES) == ["generic", "avx2", "avx512"]  # best last
    assert set(_backend.ACT_CODES) == {"identity", "tanh", "relu", "sigmoid"}
    assert {a: _core.gate_count(c) for a, c in _ARCH.items()} == {"elman": 1, "lstm": 4, "gru": 3, "jordan": 1}
    assert _core.best_isa() in _backend.ISA_NAMES
    with pytest.raises(ValueError, match="arch: expected 0..3, got 7"):
        _core.gate_count(7)


def test_every_network_names_a_kernel_of_the_core_with_its_gate_count(network):
    spec = network.spec
    assert spec.kernel in _ARCH, f"{spec.name}: kernel {spec.kernel!r} is not a cell of the core"
    assert len(spec.gates) == _core.gate_count(_ARCH[spec.kernel])


def _strided(*shape):
    """A float32 tensor of `shape` that is not C-contiguous (a transposed view)."""
    return torch.empty(*reversed(shape)).permute(*reversed(range(len(shape))))


def test_sequence_kernel_refuses_a_strided_output():
    T, B, H = 4, 3, 5
    xw, w = torch.randn(T, B, 4 * H), torch.randn(4 * H, H)
    hs, cs, gates = torch.empty(T + 1, B, H), torch.empty(T + 1, B, H), torch.empty(T, B, 4 * H)
    with pytest.raises(ValueError, match=r"cs: expected a C-contiguous array \(it is written in place\), got strides"):
        _core.lstm_forward(0, xw, w, None, None, None, hs, _strided(T + 1, B, H), gates, None, 1)
    with pytest.raises(ValueError, match="out: expected a C-contiguous array"):
        _core.lstm_forward(0, xw, w, None, None, None, hs, cs, gates, _strided(T, B, H), 1)
    # a contiguous output is written in place
    _core.lstm_forward(0, xw, w, None, None, None, hs, cs, gates, None, 1)
    assert torch.isfinite(hs).all()


def test_sequence_kernel_refuses_an_output_of_another_kind():
    """An output is never converted (a converted copy would take the result)."""
    T, B, H = 2, 1, 3
    xw, w = torch.randn(T, B, H), torch.randn(H, H)
    with pytest.raises(TypeError, match="hs: expected dtype float32 like the input, got float64"):
        _core.elman_forward(0, 1, xw, w, None, None, torch.empty(T + 1, B, H, dtype=torch.float64), None, 1)
    with pytest.raises(TypeError, match="hs: expected dtype float32 like the input, got int64"):
        _core.elman_forward(0, 1, xw, w, None, None, np.zeros((T + 1, B, H), dtype=np.int64), None, 1)


def test_stream_refuses_a_strided_out_and_writes_a_contiguous_one():
    B, H = 3, 8
    stream = rnnkit.Stream(rnnkit.GRU(4, H).eval(), batch_size=B)
    x = torch.randn(B, 4)
    out = _strided(B, H)
    before = out.clone()
    with pytest.raises(ValueError, match=r"out: expected a C-contiguous array .* got strides \(1, 3\)"):
        stream.step(x, out=out)
    assert torch.equal(out, before)
    good = torch.empty(B, H)
    assert stream.step(x, out=good) is good
    with pytest.raises(ValueError, match="state: expected a C-contiguous array"):
        stream._core.state(0, 0, _strided(B, H), False)


def test_stream_params_must_match_the_cell():
    H, I = 4, 3
    w_ih, w_hh = torch.randn(H, I), torch.randn(H, H)
    arch = _ARCH["elman"]
    with pytest.raises(ValueError, match="params: expected five entries per layer"):
        _core.Stream(0, arch, 1, 0, True, 1, [I, H, 0], [w_ih, None, w_hh, None])
    with pytest.raises(ValueError, match=r"params\[3\]: expected None \(unused for this cell\)"):
        _core.Stream(0, arch, 1, 0, True, 1, [I, H, 0], [w_ih, None, w_hh, torch.zeros(H), None])
    with pytest.raises(ValueError, match=r"params\[2\]: a weight is required"):
        _core.Stream(0, arch, 1, 0, True, 1, [I, H, 0], [w_ih, None, None, None, None])
    with pytest.raises(ValueError, match=r"params\[2\]: expected shape \(4, 4\), got \(4, 3\)"):
        _core.Stream(0, arch, 1, 0, True, 1, [I, H, 0], [w_ih, None, torch.randn(H, I), None, None])


def _jordan_run(m, x, lengths):
    out, y_n = m(x, lengths=lengths)
    g = torch.Generator().manual_seed(5)
    loss = (out * torch.randn(out.shape, generator=g)).sum() + (y_n * torch.randn(y_n.shape, generator=g)).sum()
    return [out.detach(), y_n.detach()] + list(torch.autograd.grad(loss, [x] + list(m.parameters())))


@pytest.mark.parametrize("isa", rnnkit.available_isas())
@pytest.mark.parametrize("with_lengths", [False, True])
def test_jordan_bit_identical_for_any_thread_count(isa, with_lengths):
    m = rnnkit.JordanRNN(9, 70, 37, output_nonlinearity="tanh")
    x = torch.randn(6, 5, 9, requires_grad=True)
    lengths = torch.tensor([6, 3, 1, 6, 2]) if with_lengths else None
    with rnnkit.use_isa(isa):
        with rnnkit.use_threads(1):
            expected = _jordan_run(m, x, lengths)
        for n in (2, 3, 5):
            with rnnkit.use_threads(n):
                got = _jordan_run(m, x, lengths)
            for a, b in zip(expected, got):
                assert torch.equal(a, b), f"{n} threads differ from 1 thread"


@pytest.mark.parametrize("make", [lambda: rnnkit.JordanRNN(6, 40, 33), lambda: rnnkit.LSTM(6, 40, num_layers=2),
                                  lambda: rnnkit.GRU(6, 40, reset_after=False)], ids=["jordan", "lstm", "gru_before"])
def test_threaded_stream_equals_one_thread(make):
    """The stream runs the same skeleton as the sequence kernels, split across threads."""
    m = make().eval()
    x = torch.randn(5, 4, 6)
    results = []
    for n in (1, 3):
        stream = rnnkit.Stream(m, batch_size=4)
        stream._threads = n
        results.append(torch.stack([stream.step(x[t]).clone() for t in range(5)]))
    assert torch.equal(results[0], results[1])
