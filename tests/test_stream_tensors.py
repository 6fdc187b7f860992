"""rnnkit.Stream with torch tensors: the pointer path (x and the output passed to the
core by address after the checks in Python) equals the NumPy path and the module over
the whole sequence, writes into ``out=``, and sends every input it cannot take to the
general path, which raises a clear error (never a crash)."""
import numpy as np
import pytest
import torch

import rnnkit
from conftest import NETWORK_CASES, TOL, pairs, rel_err


# Every setting of the registry that rnnkit.Stream runs (not layer_norm yet, which the
# layer-by-layer path takes: tests/test_layer_norm.py); with zoneout the stream applies its
# expected value, as the module does at evaluation (SPEC section 16).
@pytest.fixture(params=[c for c in NETWORK_CASES if c.streams], ids=lambda c: c.name)
def network(request):
    return request.param


def _sequence(network, B, dtype, T=7):
    m = network.layer(5, 12, dtype=dtype, num_layers=2).eval()
    x = torch.randn(T, B, 5, dtype=dtype)
    with torch.no_grad():
        out, state = m(x)
    return m, x, out, state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [1, 3])
def test_torch_steps_equal_sequence_and_numpy(network, dtype, B):
    m, x, out, state = _sequence(network, B, dtype)
    by_torch, by_numpy, into = rnnkit.Stream(m, batch_size=B), rnnkit.Stream(m, batch_size=B), \
        rnnkit.Stream(m, batch_size=B)
    buffer = torch.full(out[0].shape, float("nan"), dtype=dtype)
    for t in range(x.shape[0]):
        y = by_torch.step(x[t])
        assert type(y) is torch.Tensor and y.dtype == dtype and y.shape == out[t].shape
        assert rel_err(y, out[t]) < TOL[dtype], f"step {t}"
        assert np.array_equal(by_numpy.step(x[t].numpy()), y.numpy())  # the same kernel: bit-identical
        assert into.step(x[t], out=buffer) is buffer
        assert torch.equal(buffer, y)
    for a, b in pairs(by_torch.state() if isinstance(state, tuple) else (by_torch.state(),),
                      state if isinstance(state, tuple) else (state,)):
        assert rel_err(a, b) < TOL[dtype]


def test_unbatched_torch_and_out(network):
    m, x, out, _ = _sequence(network, 1, torch.float32)
    s, s_out = rnnkit.Stream(m), rnnkit.Stream(m)
    buffer = torch.empty(out.shape[-1])
    for t in range(x.shape[0]):
        y = s.step(x[t, 0])  # (I,) -> (W,)
        assert y.shape == (out.shape[-1],) and rel_err(y, out[t, 0]) < 1e-5
        assert s_out.step(x[t, 0], out=buffer) is buffer and torch.equal(buffer, y)


def test_inputs_the_pointer_path_does_not_take_still_work(network):
    """A non-contiguous x, one that requires grad, an inference tensor: same answers."""
    m, x, out, _ = _sequence(network, 2, torch.float32, T=3)
    wide = torch.zeros(3, 2, 10)
    wide[..., ::2] = x  # x as a strided view
    streams = [rnnkit.Stream(m, batch_size=2) for _ in range(3)]
    for t in range(3):
        strided = wide[t, :, ::2]
        assert not strided.is_contiguous()
        with torch.inference_mode():
            inference = streams[2].step(x[t].clone())
        for y in (streams[0].step(strided), streams[1].step(x[t].clone().requires_grad_()), inference):
            assert rel_err(y, out[t]) < 1e-5


def test_bad_tensors_raise_clear_errors(network):
    m = network.layer(3, 4, dtype=torch.float32).eval()
    W = network.spec.state_widths(m)[0]  # what the top layer emits: h (P when projected), or y
    s = rnnkit.Stream(m, batch_size=2)
    with pytest.raises(TypeError, match="x: expected dtype torch.float32"):
        s.step(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="x: expected dtype torch.float32"):
        s.step(torch.ones(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"x: expected shape \(2, 3\), got \(2, 5\)"):
        s.step(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"x: expected shape \(2, 3\), got \(1, 2, 3\)"):
        s.step(torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match=r"x: expected shape \(2, 3\) for batch_size=2"):
        s.step(torch.randn(3))
    with pytest.raises(ValueError, match=r"x: expected shape"):
        s.step(torch.tensor(1.0))  # 0-d: never read as a (2, 3) buffer
    with pytest.raises((TypeError, ValueError, RuntimeError), match="x|sparse|layout|storage"):
        s.step(torch.randn(2, 3).to_sparse())
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="out: expected a C-contiguous array"):
        s.step(x, out=torch.empty(W, 2).t())
    with pytest.raises(ValueError, match=rf"out: expected shape \(2, {W}\)"):
        s.step(x, out=torch.empty(2, W + 1))
    with pytest.raises(TypeError, match="out: expected dtype float32"):
        s.step(x, out=torch.empty(2, W, dtype=torch.float64))
    with pytest.raises(ValueError, match="out: a tensor that requires grad"):
        s.step(x, out=torch.empty(2, W, requires_grad=True))
    s.step(x, out=torch.empty(2, W))  # still usable after every error


def test_out_is_seen_as_written():
    """Writing into ``out`` by address bumps its version counter, as an in-place op would."""
    s = rnnkit.Stream(rnnkit.GRU(3, 4).eval())
    out = torch.empty(4)
    before = out._version
    s.step(torch.randn(3), out=out)
    assert out._version > before
