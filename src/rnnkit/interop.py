"""Weights to and from Keras 3's ``LSTM`` and ``GRU`` layers.

Keras keeps one layer's weights as ``[kernel (I, G H), recurrent_kernel (H, G H), bias]``
(``layer.get_weights()`` / ``layer.set_weights(...)``), columns in its gate order; rnnkit
(like torch.nn) keeps ``weight_ih (G H, I)``, ``weight_hh (G H, H)``, ``bias_ih``,
``bias_hh``, rows in its gate order. The conversions, exact up to float rounding:

=====================  =====================  ==========================================
Keras                  rnnkit                 mapping
=====================  =====================  ==========================================
LSTM                   LSTM                   gates i, f, c, o = i, f, g, o; one bias:
                                              bias = b_ih + b_hh (back: b_ih, b_hh = 0)
GRU(reset_after=True)  GRU(reset_after=True)  gates z, r, h <- r, z, n; bias (2, 3H):
                                              row 0 = b_ih, row 1 = b_hh
GRU(reset_after=False) GRU(reset_after=False) the same, one bias b_ih + b_hh (back: b_ih,
                                              0), and the z rows negated: Keras's
                                              h = z h' + (1 - z) n with z = sigmoid(a) is
                                              rnnkit's h = (1 - z) h' + z n with
                                              z = sigmoid(-a)
=====================  =====================  ==========================================

Keras's default activations are required (``activation="tanh"``,
``recurrent_activation="sigmoid"``); Keras layers are batch-major, so
:func:`from_keras` returns a ``batch_first=True`` layer.

>>> gru = rnnkit.GRU(4, 8, batch_first=True)
>>> weights = rnnkit.interop.to_keras_weights(gru)   # for keras.layers.GRU(8).set_weights
>>> rnnkit.interop.load_keras_weights(gru, weights)  # and back
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from . import networks

__all__ = ["to_keras_weights", "load_keras_weights", "from_keras"]


@dataclass(frozen=True)
class _KerasForm:
    """How one rnnkit network's weights read in Keras."""
    keras_class: str
    blocks: Tuple[int, ...]  # Keras gate k is rnnkit row block blocks[k]
    negate: Tuple[int, ...] = ()  # rnnkit row blocks whose sign flips
    bias_rows: int = 1  # 2: Keras keeps input and recurrent biases apart
    reset_after: object = None  # the Keras GRU's reset_after


# By network name (rnnkit.networks); a network not listed has no Keras layer.
_FORMS = {
    "lstm": _KerasForm("LSTM", (0, 1, 2, 3)),
    "gru": _KerasForm("GRU", (1, 0, 2), bias_rows=2, reset_after=True),
    "gru-rb": _KerasForm("GRU", (1, 0, 2), negate=(1,), reset_after=False),
}


def _form(module: nn.Module):
    spec = networks.network_of(module)
    if spec.name not in _FORMS:
        raise TypeError(f"module: expected an rnnkit {' or '.join(sorted({networks.get(n).title for n in _FORMS}))} "
                        f"(Keras has no {spec.title} layer), got {spec.title}")
    return spec, _FORMS[spec.name]


def _blocks(w: torch.Tensor, form: _KerasForm, H: int, order: Sequence[int]) -> torch.Tensor:
    """Rows of w rearranged block by block (``order``), the ``negate`` blocks negated."""
    parts = [w[b * H:(b + 1) * H] * (-1.0 if b in form.negate else 1.0) for b in order]
    return torch.cat(parts)


def _params(module: nn.Module, layer: int, direction: int):
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    if layer >= module.num_layers or direction >= (2 if module.bidirectional else 1):
        raise ValueError(f"layer, direction: expected layer < {module.num_layers} and direction < "
                         f"{2 if module.bidirectional else 1}, got ({layer}, {direction})")
    return [module._parameters.get(n + suffix) for n in names]


def to_keras_weights(module: nn.Module, layer: int = 0, direction: int = 0) -> List[np.ndarray]:
    """One layer (and direction) of an rnnkit LSTM or GRU as the arrays of
    ``keras.layers.LSTM / GRU(hidden_size, ...).set_weights`` (float32 stays float32)."""
    spec, form = _form(module)
    H = module.hidden_size
    w_ih, w_hh, b_ih, b_hh = (None if p is None else p.detach().cpu() for p in _params(module, layer, direction))
    keras_to_rnnkit = form.blocks  # Keras gate k is rnnkit row block keras_to_rnnkit[k]
    kernel = _blocks(w_ih, form, H, keras_to_rnnkit).t()  # (I, G H)
    recurrent = _blocks(w_hh, form, H, keras_to_rnnkit).t()  # (H, G H)
    out = [kernel.contiguous().numpy(), recurrent.contiguous().numpy()]
    if b_ih is not None:
        if form.bias_rows == 2:
            bias = torch.stack([_blocks(b_ih, form, H, keras_to_rnnkit), _blocks(b_hh, form, H, keras_to_rnnkit)])
        else:
            bias = _blocks(b_ih + b_hh, form, H, keras_to_rnnkit)
        out.append(bias.contiguous().numpy())
    return out


def load_keras_weights(module: nn.Module, weights: Sequence, layer: int = 0, direction: int = 0) -> None:
    """Sets one layer (and direction) of an rnnkit LSTM or GRU from Keras's
    ``layer.get_weights()`` (``[kernel, recurrent_kernel(, bias)]``)."""
    spec, form = _form(module)
    H, G = module.hidden_size, len(spec.gates)
    params = _params(module, layer, direction)
    has_bias = params[2] is not None
    if len(weights) != 2 + has_bias:
        raise ValueError(f"weights: expected {2 + has_bias} arrays (kernel, recurrent_kernel"
                         f"{', bias' if has_bias else ''}), got {len(weights)}")
    kernel, recurrent = (torch.as_tensor(np.asarray(w)) for w in weights[:2])
    I = params[0].shape[1]
    bias_shape = (2, G * H) if form.bias_rows == 2 else (G * H,)
    expected = [("kernel", kernel, (I, G * H)), ("recurrent_kernel", recurrent, (H, G * H))]
    if has_bias:
        bias = torch.as_tensor(np.asarray(weights[2]))
        expected.append(("bias", bias, bias_shape))
    for name, value, shape in expected:
        if tuple(value.shape) != shape:
            raise ValueError(f"weights ({name}): expected shape {shape} for this {spec.title} layer, "
                             f"got {tuple(value.shape)}")
    def rows(t):  # (G H, ...) in Keras gate order -> rnnkit row blocks, negated ones flipped back
        return torch.cat([t[k * H:(k + 1) * H] * (-1.0 if b in form.negate else 1.0)
                          for b, k in ((b, form.blocks.index(b)) for b in range(G))])

    new = [rows(kernel.t()), rows(recurrent.t())]
    if has_bias:
        if form.bias_rows == 2:
            new += [rows(bias[0]), rows(bias[1])]
        else:
            new += [rows(bias), torch.zeros(G * H, dtype=bias.dtype)]
    with torch.no_grad():
        for p, value in zip(params, new):
            p.copy_(value.to(p.dtype))


def from_keras(layer) -> nn.Module:
    """A one-layer ``batch_first`` rnnkit LSTM or GRU holding a built Keras 3 ``LSTM`` /
    ``GRU`` layer's weights (``GRU(reset_after=False)`` gives ``rnnkit.GRU(reset_after=False)``)."""
    from . import modules

    kind = type(layer).__name__
    if kind not in ("LSTM", "GRU"):
        raise TypeError(f"layer: expected a keras.layers.LSTM or GRU, got {kind}")
    for name, expected in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        got = getattr(getattr(layer, "cell", layer), name, None)
        got = getattr(got, "__name__", got)
        if got != expected:
            raise ValueError(f"layer.{name}: expected {expected!r} (the equations rnnkit computes), got {got!r}")
    weights = layer.get_weights()
    if not weights:
        raise ValueError("layer: expected a built Keras layer (call it once or build it), got one without weights")
    I, H = weights[0].shape[0], layer.units
    bias = len(weights) == 3
    if kind == "LSTM":
        module = modules.LSTM(I, H, bias=bias, batch_first=True)
    else:
        module = modules.GRU(I, H, bias=bias, batch_first=True, reset_after=bool(layer.reset_after))
    module = module.to(torch.float64 if weights[0].dtype == np.float64 else torch.float32)
    load_keras_weights(module, weights)
    return module
