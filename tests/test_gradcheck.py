"""torch.autograd.gradcheck in float64 through the native kernels (finite differences
against the hand-derived BPTT), for every network and cell."""
import pytest
import torch
from torch.autograd import gradcheck

import rnnkit
from rnnkit import functional as F

T, B, I, H, O = 4, 3, 2, 3, 2
LENGTHS = torch.tensor([4, 1, 3])


def _rand(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "lengths"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "identity"])
def test_elman(lengths, nonlinearity):
    args = (_rand(T, B, I), _rand(B, H), _rand(H, I), _rand(H, H), _rand(H), _rand(H))
    assert gradcheck(lambda *a: F.elman(*a, nonlinearity=nonlinearity, lengths=lengths), args)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "lengths"])
def test_lstm(lengths):
    args = (_rand(T, B, I), _rand(B, H), _rand(B, H), _rand(4 * H, I), _rand(4 * H, H), _rand(4 * H), _rand(4 * H))
    def fn(*a):
        out, (h_n, c_n) = F.lstm(*a, lengths=lengths)
        return out, h_n, c_n
    assert gradcheck(fn, args)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "lengths"])
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru(lengths, reset_after):
    args = (_rand(T, B, I), _rand(B, H), _rand(3 * H, I), _rand(3 * H, H), _rand(3 * H), _rand(3 * H))
    assert gradcheck(lambda *a: F.gru(*a, reset_after=reset_after, lengths=lengths), args)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "lengths"])
@pytest.mark.parametrize("f,g", [("tanh", "identity"), ("relu", "sigmoid"), ("identity", "tanh")])
def test_jordan(lengths, f, g):
    args = (_rand(T, B, I), _rand(B, O), _rand(H, I), _rand(H, O), _rand(O, H), _rand(H), _rand(H), _rand(O))
    assert gradcheck(lambda *a: F.jordan(*a, nonlinearity=f, output_nonlinearity=g, lengths=lengths), args)


@pytest.mark.parametrize("make", [
    lambda: rnnkit.RNN(I, H, num_layers=2, bidirectional=True),
    lambda: rnnkit.LSTM(I, H, num_layers=2, bidirectional=True),
    lambda: rnnkit.GRU(I, H, num_layers=2, bidirectional=True, reset_after=False),
    lambda: rnnkit.JordanRNN(I, H, O, output_nonlinearity="tanh"),
], ids=["rnn", "lstm", "gru_before", "jordan"])
def test_modules_wrt_input_and_parameters(make):
    m = make().double()
    x = _rand(T, B, I)
    params = list(m.parameters())

    def fn(x, *ps):
        with torch.nn.utils.stateless._reparametrize_module(m, dict(zip([n for n, _ in m.named_parameters()], ps))):
            out = m(x)
        return out[0]

    assert gradcheck(fn, (x, *params))


@pytest.mark.parametrize("make", [
    lambda: rnnkit.RNNCell(I, H, nonlinearity="identity"),
    lambda: rnnkit.LSTMCell(I, H),
    lambda: rnnkit.GRUCell(I, H),
    lambda: rnnkit.GRUCell(I, H, reset_after=False),
    lambda: rnnkit.JordanCell(I, H, O),
], ids=["rnn", "lstm", "gru", "gru_before", "jordan"])
def test_cells(make):
    cell = make().double()
    x = _rand(B, I)
    state_size = cell.output_size if isinstance(cell, rnnkit.JordanCell) else H
    h = _rand(B, state_size)

    def fn(x, h):
        out = cell(x, (h, h * 0.5) if isinstance(cell, rnnkit.LSTMCell) else h)
        return out
    assert gradcheck(fn, (x, h))
