"""rnnkit.interop: Keras 3 LSTM / GRU weights to and from rnnkit, checked against Keras
itself (on its torch backend) where it is installed, and always against the Keras
equations written out here by hand (Keras's documented cell, in its own gate order)."""

import os

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit import interop, networks

KERAS_NETWORKS = ["lstm", "gru", "gru-rb"]


def keras_oracle(name, weights, x):
    """Keras's LSTM / GRU cell over x (B, T, I), float64, from its weights, written from
    the Keras equations: LSTM gates i, f, c, o; GRU gates z, r, h with
    h = z * h_prev + (1 - z) * hh. Returns (outputs (B, T, H), h_T)."""
    kernel, recurrent, bias = (torch.as_tensor(w, dtype=torch.float64) for w in weights)
    x = x.double()
    B, T, _ = x.shape
    H = recurrent.shape[0]
    h = torch.zeros(B, H, dtype=torch.float64)
    c = torch.zeros(B, H, dtype=torch.float64)
    outs = []
    for t in range(T):
        xt = x[:, t]
        if name == "lstm":
            a = xt @ kernel + h @ recurrent + bias
            i, f, g, o = a.split(H, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            b_in, b_rec = (bias[0], bias[1]) if bias.dim() == 2 else (bias, torch.zeros_like(bias))
            xz, xr, xh = (xt @ kernel + b_in).split(H, dim=1)
            Uz, Ur, Uh = recurrent.split(H, dim=1)
            bz, br, bh = b_rec.split(H)
            z = torch.sigmoid(xz + h @ Uz + bz)
            r = torch.sigmoid(xr + h @ Ur + br)
            hh = torch.tanh(xh + r * (h @ Uh + bh)) if name == "gru" else torch.tanh(xh + (r * h) @ Uh)
            h = z * h + (1 - z) * hh
        outs.append(h)
    return torch.stack(outs, 1), h


def _module(name, **kw):
    torch.manual_seed(0)
    return networks.get(name).make(3, 4, batch_first=True, **kw)


@pytest.mark.parametrize("name", KERAS_NETWORKS)
def test_to_keras_weights_match_keras_equations(name):
    module = _module(name).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    expected, h_T = keras_oracle(name, interop.to_keras_weights(module), x)
    with torch.no_grad():
        out, h_n = module(x)
        h_n = h_n[0] if isinstance(h_n, tuple) else h_n
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n[0], h_T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", KERAS_NETWORKS)
def test_keras_weights_round_trip(name):
    """rnnkit -> Keras arrays -> rnnkit gives the same layer output (biases may move
    between b_ih and b_hh where Keras keeps one)."""
    a, b = _module(name), _module(name)
    torch.manual_seed(5)
    for p in b.parameters():
        p.data.normal_()
    interop.load_keras_weights(b, interop.to_keras_weights(a))
    x = torch.randn(2, 7, 3)
    with torch.no_grad():
        torch.testing.assert_close(b(x)[0], a(x)[0], rtol=1e-6, atol=1e-6)
    again = interop.to_keras_weights(b)
    for u, v in zip(again, interop.to_keras_weights(a)):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6)


def test_keras_weight_errors():
    with pytest.raises(TypeError, match="module: expected an rnnkit GRU"):
        interop.to_keras_weights(rnnkit.RNN(3, 4))
    gru = rnnkit.GRU(3, 4)
    with pytest.raises(ValueError, match=r"weights \(kernel\): expected shape \(3, 12\)"):
        interop.load_keras_weights(gru, [np.zeros((4, 12)), np.zeros((4, 12)), np.zeros((2, 12))])
    with pytest.raises(ValueError, match="weights: expected 3 arrays"):
        interop.load_keras_weights(gru, [np.zeros((3, 12))])
    with pytest.raises(ValueError, match="layer, direction: expected layer < 1"):
        interop.to_keras_weights(gru, layer=1)


# ---- against Keras 3 itself (KERAS_BACKEND=torch)
def _keras():
    if "keras" not in __import__("sys").modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras", reason="keras is not installed (the 'interop' extra)")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras runs on the {keras.backend.backend()} backend here; these tests use its torch backend")
    return keras


def _keras_layer(keras, name, units=4):
    cls = keras.layers.LSTM if name == "lstm" else keras.layers.GRU
    kw = {} if name == "lstm" else {"reset_after": name == "gru"}
    return cls(units, return_sequences=True, return_state=True, **kw)


def _keras_run(layer, x):
    out, *states = layer(x.numpy())
    return torch.as_tensor(np.asarray(out.detach().cpu() if hasattr(out, "detach") else out)), states


@pytest.mark.parametrize("name", KERAS_NETWORKS)
def test_from_keras_matches_keras(name):
    keras = _keras()
    keras.utils.set_random_seed(0)
    layer = _keras_layer(keras, name)
    x = torch.randn(3, 8, 3)
    expected, _ = _keras_run(layer, x)
    module = interop.from_keras(layer)
    assert networks.network_of(module).name == name and module.batch_first
    with torch.no_grad():
        out, _ = module(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", KERAS_NETWORKS)
def test_to_keras_matches_keras(name):
    keras = _keras()
    module = _module(name)
    layer = _keras_layer(keras, name)
    x = torch.randn(3, 8, 3)
    _keras_run(layer, x)  # builds it
    layer.set_weights(interop.to_keras_weights(module))
    got, _ = _keras_run(layer, x)
    with torch.no_grad():
        out, _ = module(x)
    torch.testing.assert_close(got, out, rtol=1e-5, atol=1e-6)


def test_from_keras_rejects_other_activations():
    keras = _keras()
    layer = keras.layers.LSTM(4, recurrent_activation="hard_sigmoid")
    layer(np.zeros((1, 2, 3), dtype="float32"))
    with pytest.raises(ValueError, match="layer.recurrent_activation: expected 'sigmoid'"):
        interop.from_keras(layer)
