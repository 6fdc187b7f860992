"""rnnkit.Stream: one step per call equals the module over the whole sequence."""
import numpy as np
import pytest
import torch

import rnnkit
from conftest import pairs, rel_err


MODULES = {
    "rnn": lambda: rnnkit.RNN(5, 37, num_layers=2),
    "rnn_relu_nobias": lambda: rnnkit.RNN(5, 37, nonlinearity="relu", bias=False),
    "lstm": lambda: rnnkit.LSTM(5, 37, num_layers=3),
    "gru": lambda: rnnkit.GRU(5, 37, num_layers=2),
    "gru_before": lambda: rnnkit.GRU(5, 37, reset_after=False),
    "jordan": lambda: rnnkit.JordanRNN(5, 37, 3, output_nonlinearity="sigmoid"),
}


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [1, 4])
@pytest.mark.parametrize("isa", rnnkit.available_isas())
def test_stream_equals_sequence(name, dtype, B, isa):
    m = MODULES[name]().to(dtype).eval()
    x = torch.randn(9, B, 5, dtype=dtype)
    with torch.no_grad():
        out, state = m(x)
    with rnnkit.use_isa(isa):
        stream = rnnkit.Stream(m, batch_size=B)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for t in range(9):
        y = stream.step(x[t])
        assert y.shape == out[t].shape
        assert rel_err(y, out[t]) < tol, f"step {t}"
    got = stream.state()
    want = state
    if isinstance(want, tuple):
        for a, b in pairs(got, want):
            assert rel_err(a, b) < tol
    else:
        assert rel_err(got, want) < tol


def test_numpy_in_numpy_out_and_unbatched():
    m = rnnkit.GRU(4, 16).eval()
    x = torch.randn(6, 4)
    with torch.no_grad():
        out, _ = m(x)
    stream = rnnkit.Stream(m)
    for t in range(6):
        y = stream.step(x[t].numpy())
        assert isinstance(y, np.ndarray) and y.shape == (16,)
        assert np.allclose(y, out[t].numpy(), atol=1e-6)


def test_out_buffer_and_reset():
    m = rnnkit.LSTM(3, 8).eval()
    stream = rnnkit.Stream(m, batch_size=2)
    x = torch.randn(2, 3)
    buf = torch.empty(2, 8)
    first = stream.step(x, out=buf)
    assert first is buf
    second = stream.step(x).clone()
    stream.reset()
    assert torch.equal(stream.step(x), buf)
    stream.reset((torch.zeros(1, 2, 8), torch.zeros(1, 2, 8)))
    assert torch.equal(stream.step(x), buf)
    assert not torch.equal(second, buf)


def test_reset_to_state_continues_exactly():
    m = rnnkit.GRU(3, 8, num_layers=2).eval()
    stream = rnnkit.Stream(m)
    xs = torch.randn(5, 3)
    for t in range(3):
        stream.step(xs[t])
    saved = stream.state().clone()
    a = [stream.step(xs[t]).clone() for t in (3, 4)]
    stream.reset(saved)
    b = [stream.step(xs[t]).clone() for t in (3, 4)]
    assert all(torch.equal(p, q) for p, q in pairs(a, b))


def test_cells_stream():
    for cell in (rnnkit.RNNCell(3, 7), rnnkit.LSTMCell(3, 7), rnnkit.GRUCell(3, 7, reset_after=False),
                 rnnkit.JordanCell(3, 7, 2)):
        x = torch.randn(4, 3)
        stream = rnnkit.Stream(cell, batch_size=4)
        expected = cell(x)
        expected = expected[0] if isinstance(expected, tuple) else expected
        assert rel_err(stream.step(x), expected) < 1e-5


def test_stream_errors():
    with pytest.raises(ValueError, match="bidirectional"):
        rnnkit.Stream(rnnkit.LSTM(3, 4, bidirectional=True))
    with pytest.raises(TypeError, match="module: expected an rnnkit"):
        rnnkit.Stream(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        rnnkit.Stream(rnnkit.GRU(3, 4), batch_size=0)
    s = rnnkit.Stream(rnnkit.GRU(3, 4), batch_size=2)
    with pytest.raises(ValueError, match=r"x: expected shape \(2, 3\), got \(2, 5\)"):
        s.step(torch.randn(2, 5))
    with pytest.raises(TypeError, match="x: expected dtype torch.float32"):
        s.step(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x: expected shape \(2, 3\) for batch_size=2"):
        s.step(torch.randn(3))
    with pytest.raises(ValueError, match="state: expected shape"):
        s.reset(torch.zeros(1, 3, 4))
