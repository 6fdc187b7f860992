"""The kernels' vectorised float32 sigmoid / tanh against float64 libm, on every ISA
path: with W_hh = 0 and zero initial state, an LSTM's recorded gates are exactly
sigmoid / tanh of the input projection, and an Elman tanh layer outputs tanh of it."""
import pytest
import torch

import rnnkit
from rnnkit import _core, _backend

# 0.625 is where tanh switches from its polynomial to its exp form.
SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 1e-8, 0.6249999, 0.625, 0.6250001, -0.625, 9.0, -9.0, 44.0, 87.0, -87.0,
           88.5, -88.5, 100.0, -100.0, 1e30, -1e30, float("inf"), -float("inf")]


def _inputs():
    x = torch.cat([torch.linspace(-30, 30, 20001), torch.tensor(SPECIAL)])
    return x.to(torch.float32)


@pytest.mark.parametrize("isa", rnnkit.available_isas())
def test_tanh_and_sigmoid_accuracy(isa):
    x = _inputs()
    code = _backend.ISA_CODES[isa]
    # LSTM with W_hh = 0: the gates are sigmoid / tanh of xw. H = 37 puts values both in
    # full vectors and in partial tail chunks.
    H = 37
    x = torch.cat([x, torch.zeros(-x.numel() % H)])
    B = x.numel() // H
    xw = torch.zeros(1, B, 4 * H)
    xw[0, :, :H] = x.view(B, H)  # i = sigmoid(x)
    xw[0, :, 2 * H:3 * H] = x.view(B, H)  # g = tanh(x)
    hs, cs, gates = torch.empty(2, B, H), torch.empty(2, B, H), torch.empty(1, B, 4 * H)
    _core.lstm_forward(code, xw, torch.zeros(4 * H, H), None, None, None, hs, cs, gates, None, 1)
    gates = gates.view(B, 4, H)
    sig, tanh = gates[:, 0].reshape(-1).double(), gates[:, 2].reshape(-1).double()
    xd = x.double()
    exp_sig, exp_tanh = torch.sigmoid(xd), torch.tanh(xd)
    # absolute error 1e-7 covers the denormal range; relative 4e-7 is about 3 float32 ulp
    assert ((sig - exp_sig).abs() <= 1e-7 + 4e-7 * exp_sig.abs()).all(), (sig - exp_sig).abs().max()
    assert ((tanh - exp_tanh).abs() <= 1e-7 + 4e-7 * exp_tanh.abs()).all(), (tanh - exp_tanh).abs().max()
    # tiny inputs keep their relative accuracy (tanh(x) ~ x)
    small = xd.abs() < 1e-3
    assert ((tanh[small] - exp_tanh[small]).abs() <= 2e-7 * exp_tanh[small].abs() + 1e-38).all()


@pytest.mark.parametrize("isa", rnnkit.available_isas())
def test_nan_propagates_through_vector_math(isa):
    code = _backend.ISA_CODES[isa]
    xw = torch.full((1, 3, 4), float("nan"))
    hs, cs, gates = torch.empty(2, 3, 1), torch.empty(2, 3, 1), torch.empty(1, 3, 4)
    _core.lstm_forward(code, xw, torch.zeros(4, 1), None, None, None, hs, cs, gates, None, 1)
    assert torch.isnan(gates).all() and torch.isnan(hs[1]).all()
