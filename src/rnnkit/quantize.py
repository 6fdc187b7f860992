"""Reduced-precision inference: int8 weights (torch.ao's dynamic quantisation) or bfloat16 weights.

:func:`quantize_dynamic` converts a trained rnnkit layer into an inference-only module
with the same forward signature, whose weights are stored in reduced precision by the
native core (csrc/lowp.h); activations, states and every gate's math stay float32.

``dtype=torch.qint8`` (the default, as ``torch.ao.quantization.quantize_dynamic``)::

    W ~ s_w[n] * q_w[n, :]       q_w int8, s_w[n] = max|W[n, :]| / 127   (per output row)
    a ~ s_a[b] * q_a[b, :]       q_a int8, s_a[b] = max|a[b, :]| / 127   (per input row,
                                 on the fly, for every product: x W_ih^T and h W_hh^T)
    a W^T ~ s_a[b] s_w[n] sum_k q_a[b, k] q_w[n, k]     (exact int32 sum)

rounding half to even. The integer dot products use AVX512-VNNI (``vpdpbusd``) where the
CPU has it, portable code computing the same integers elsewhere.

``dtype=torch.bfloat16``: weights and each product's input rows rounded to bfloat16,
products accumulated in float32 (AVX512-BF16 ``vdpbf16ps`` where present, an exact
emulation of it elsewhere).

>>> lstm = rnnkit.LSTM(32, 256, num_layers=2).eval()
>>> q = rnnkit.quantize_dynamic(lstm, dtype=torch.qint8)
>>> with torch.no_grad():
...     out, (h_n, c_n) = q(torch.randn(100, 16, 32))

The weights are copied and converted when the module is made (a snapshot, as in
torch.ao): after changing the source module, convert it again. The forward pass runs
with autograd off; a tensor that requires grad raises, as does a float64 input.
``RNNKIT_LOWP_DOT=portable`` in the environment (read at conversion) makes the converted
module use the portable dot products (the same results; for tests).
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor, nn

from . import _backend, _core, networks
from .functional import _c, _np
from .modules import _Batch, _layer_params, _reverse_time, _StackedNetwork
from .streaming import _kernel_params

__all__ = ["quantize_dynamic", "QuantizedRNN", "PRECISIONS"]

# The weight types the core stores, by the dtype that names them, and their codes there.
PRECISIONS = {torch.qint8: ("int8", 0), torch.bfloat16: ("bf16", 1)}


def _precision(dtype) -> tuple:
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype: expected torch.qint8 or torch.bfloat16, got {dtype!r}")
    return PRECISIONS[dtype]


def _native_dot_wanted() -> bool:
    value = os.environ.get("RNNKIT_LOWP_DOT", "native")
    if value not in ("native", "portable"):
        raise ValueError(f"RNNKIT_LOWP_DOT: expected 'native' or 'portable', got {value!r}")
    return value == "native"


def lowp_layer(spec, params: dict, hyper: dict, sizes, precision: int):
    """One layer and direction of the core (``_core.LowpLayer``) from its parameters
    (a dict role -> tensor or None) and (I, H, O)."""
    entries = [None if p is None else _c(p.to(torch.float32)) for p in _kernel_params(spec, params, hyper)]
    return _core.LowpLayer(_backend.current_isa(), precision, _native_dot_wanted(), _backend.ARCH_CODES[spec.kernel],
                           _backend.ACT_CODES[hyper.get("nonlinearity", "tanh")],
                           _backend.ACT_CODES[hyper.get("output_nonlinearity", "identity")],
                           bool(hyper.get("reset_after", True)), list(sizes), entries)


class QuantizedRNN(nn.Module):
    """An rnnkit layer (RNN, LSTM, GRU, JordanRNN) converted by :func:`quantize_dynamic`.

    ``forward(input, hx=None, lengths=None)`` takes and returns what the source module's
    forward does (float32: (T, B, I), (B, T, I) with batch_first, unbatched (T, I), or a
    PackedSequence; initial states as torch.nn), inference only.
    """

    def __init__(self, module: nn.Module, dtype=torch.qint8):
        super().__init__()
        self.precision, code = _precision(dtype)
        self.dtype = dtype
        spec = networks.network_of(module, None)
        if spec is None or not isinstance(module, spec.module_class):
            raise TypeError(f"module: expected an rnnkit layer ({', '.join(sorted({n.module for n in networks.NETWORKS.values()}))}), "
                            f"got {type(module).__name__}")
        if getattr(module, "zoneout", 0):  # (recurrent dropout and weight drop act in training only)
            raise NotImplementedError("module: int8 / bf16 conversion does not apply zoneout yet; expected zoneout=0 "
                                      f"(the module's is {module.zoneout})")
        for setting in spec.not_quantized:  # layer_norm: no reduced-precision kernel normalises
            if getattr(module, setting, False):
                raise NotImplementedError(f"module: int8 / bf16 conversion does not run {setting}=True yet")
        first = module._parameters[f"{spec.param_roles[0]}_l0"]
        if first.dtype != torch.float32 or first.device.type != "cpu":
            raise TypeError(f"module: expected float32 parameters on the CPU, got {first.dtype} on {first.device}")
        self.network = spec
        self._state_argument = module._state_argument
        for name in ("input_size", "hidden_size", "num_layers", "bidirectional", "batch_first"):
            setattr(self, name, getattr(module, name))
        self.output_size = getattr(module, "output_size", None)
        self.widths = spec.state_widths(module)  # per state: h (P when projected), c; y
        self.width = self.widths[0]
        proj = getattr(module, "proj_size", 0) or 0  # the core's O of a projected LSTM
        self.hyper = spec.hyper_of(module)
        D = 2 if self.bidirectional else 1
        self._layers = []
        for layer in range(self.num_layers):
            for direction in range(D):
                params = dict(zip(spec.param_roles, _layer_params(module, spec.param_roles, layer, direction)))
                I = self.input_size if layer == 0 else self.width * D
                self._layers.append(lowp_layer(spec, params, self.hyper,
                                               (I, self.hidden_size, self.output_size or proj), code))

    def __getstate__(self):
        raise TypeError("module: a quantized module holds the core's converted weights and cannot be pickled, "
                        "saved or copied; save the float32 module and convert it again after loading")

    @property
    def native_dot(self) -> bool:
        """Whether the products use the CPU's dot instructions (AVX512-VNNI / AVX512-BF16)."""
        return self._layers[0].native_dot

    def extra_repr(self) -> str:
        return (f"{self.network.title}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, weights={self.precision}")

    def forward(self, input, hx=None, lengths=None):
        if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad
                                           for t in _tensors(input, hx)):
            raise RuntimeError(f"input: a {self.precision} quantized module is inference-only and computes no "
                               "gradient, got a tensor that requires grad (run it under torch.no_grad() or "
                               "torch.inference_mode(), or detach the input)")
        spec = self.network
        batch = _Batch(input, lengths, self.batch_first, self.input_size, torch.float32)
        if batch.x.device.type != "cpu":
            raise TypeError(f"input: expected a CPU tensor, got device {batch.x.device}")
        D = 2 if self.bidirectional else 1
        shapes = [(self.num_layers * D, batch.B, w) for w in self.widths]
        states = _StackedNetwork._initial_states(self, spec, batch, hx, shapes, torch.float32)
        lens = _np(batch.lengths)
        threads = _backend.num_threads(batch.B, self.hidden_size, len(spec.gates))
        x = batch.x
        finals: list = [[] for _ in spec.states]
        with torch.no_grad():
            for layer in range(self.num_layers):
                outs = []
                for direction in range(D):
                    k = layer * D + direction
                    xin = (_reverse_time(x, batch.lengths) if direction == 1 else x).contiguous()
                    out = torch.empty(batch.T, batch.B, self.width)
                    final = [torch.empty(batch.B, w) for w in self.widths]
                    self._layers[k].forward(xin.numpy(), [None if s is None else _c(s[k]) for s in states], lens,
                                            out.numpy(), [f.numpy() for f in final], threads)
                    outs.append(_reverse_time(out, batch.lengths) if direction == 1 else out)
                    for i, f in enumerate(final):
                        finals[i].append(f)
                x = outs[0] if D == 1 else torch.cat(outs, dim=2)
        finals = [batch.final(torch.stack(f)) for f in finals]
        return batch.output(x), (tuple(finals) if len(finals) > 1 else finals[0])


def _tensors(input, hx):
    yield input.data if hasattr(input, "batch_sizes") else input
    if isinstance(hx, (tuple, list)):
        yield from hx
    elif hx is not None:
        yield hx


def quantize_dynamic(module: nn.Module, dtype=torch.qint8) -> QuantizedRNN:
    """An inference-only copy of ``module`` with int8 (``torch.qint8``) or bfloat16 weights.

    Args:
        module: an rnnkit ``RNN``, ``LSTM``, ``GRU`` or ``JordanRNN`` with float32
            parameters (any number of layers, bidirectional or not).
        dtype: ``torch.qint8`` (per-row int8 weights, activations quantised per row on
            the fly, as torch.ao's dynamic quantisation) or ``torch.bfloat16``.

    Returns a :class:`QuantizedRNN`: same forward signature and outputs (float32),
    no parameters, no gradient. See the module docstring for the arithmetic.

    >>> q = rnnkit.quantize_dynamic(rnnkit.GRU(8, 64), dtype=torch.bfloat16)
    >>> out, h_n = q(torch.randn(20, 4, 8))
    """
    return QuantizedRNN(module, dtype)
