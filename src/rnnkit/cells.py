"""One-step cells, torch.nn-compatible, on the same native kernels as the layers.

``RNNCell``, ``LSTMCell`` and ``GRUCell`` subclass their torch.nn namesakes (same
arguments, parameters and outputs); ``JordanCell`` is one step of
:class:`rnnkit.JordanRNN`. A cell runs the sequence kernel with T = 1, so a cell
stepped by hand equals the layer over the whole sequence. For many steps prefer
the layers: a call per step pays Python's overhead each time.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import _variants, functional, networks
from .modules import _JORDAN_ROLES, JordanRNN, _add_peepholes, _check_jordan_activations, _jordan_parameters, _positive_int, \
    _init_repr, _runs_natively, _set_gate_init, _warn_once

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "JordanCell"]


def _cell_input(cell, input: Tensor, states, state_size: int, dtype: torch.dtype):
    """Checks a cell's input and states; returns (x (1, B, I), states (B, S) or None, unbatched)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input: expected a Tensor, got {type(input).__name__}")
    if input.dim() not in (1, 2):
        raise ValueError(f"input: expected a 2-D (B, input_size) or 1-D unbatched tensor, got shape {tuple(input.shape)}")
    if not input.dtype.is_floating_point:
        raise TypeError(f"input: expected a floating-point tensor (float32 or float64), got dtype {input.dtype}")
    if input.dtype != dtype:
        raise TypeError(f"input: dtype {input.dtype} does not match the cell's parameters ({dtype})")
    if input.shape[-1] != cell.input_size:
        raise ValueError(f"input: expected input_size={cell.input_size} features in the last dimension, "
                         f"got {input.shape[-1]}")
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input  # (B, I)
    B = x.shape[0]
    checked = []
    for name, s in states:
        if s is not None:
            expected = (state_size,) if unbatched else (B, state_size)
            if not isinstance(s, Tensor):
                raise TypeError(f"{name}: expected a Tensor, got {type(s).__name__}")
            if tuple(s.shape) != expected:
                raise ValueError(f"{name}: expected shape {expected}, got {tuple(s.shape)}")
            if s.dtype != dtype:
                raise TypeError(f"{name}: expected dtype {dtype} like the input, got {s.dtype}")
            s = s.unsqueeze(0) if unbatched else s
        checked.append(s)
    return x.unsqueeze(0), checked, unbatched


def _out(t: Tensor, unbatched: bool) -> Tensor:
    return t.squeeze(0) if unbatched else t


class _Step:
    """The forward of every cell: one step of the network's layer function with T = 1,
    driven by the cell's entry in :mod:`rnnkit.networks`. Off the native core (CUDA,
    half precision), torch.nn's own cell runs where it computes the same equations,
    else the reference (with a one-time warning).

    Every cell takes ``zoneout`` (SPEC section 14): a fresh z per call in training, its
    expected value at evaluation. Recurrent dropout and weight drop draw one mask per
    sequence, which a one-step cell does not see: they are options of the layers."""

    def extra_repr(self) -> str:
        return super().extra_repr() + _variants.rates_repr(self) + _init_repr(self)

    _state_argument = "hx"

    def _step(self, input: Tensor, hx):
        spec = networks.network_of(self)
        n = len(spec.states)
        if n == 1:
            names, parts = [self._state_argument], [hx]
        else:
            if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == n):
                raise TypeError(f"{self._state_argument}: expected a tuple "
                                f"({', '.join(spec.states)}) for {spec.title}, got {type(hx).__name__}")
            names = [f"{self._state_argument}[{i}] ({s})" for i, s in enumerate(spec.states)]
            parts = (None,) * n if hx is None else hx
        x, states, unbatched = _cell_input(self, input, list(zip(names, parts)), getattr(self, spec.state_size),
                                           self.weight_ih.dtype)
        hyper = spec.hyper_of(self)
        native = _runs_natively(x)
        if not native:
            if spec.torch_computes_same(self):
                return super().forward(input, hx)
            _warn_once(f"{type(self).__name__}-reference", f"rnnkit.{type(self).__name__}: no native kernel for "
                       f"device={x.device.type}, dtype={x.dtype}; running the reference implementation")
        fn = spec.functional if native else spec.reference
        params = [self._parameters.get(role) for role in spec.param_roles]
        masks = _variants.layer_masks(self, spec, 1, 1, x.shape[1], x)  # zoneout (SPEC section 14), or None
        if masks and native and functional._ops.capturing(x):
            _variants.captured_masks_allowed()
            fn = spec.reference  # the custom ops take no masks: while a graph is captured, the reference
        final = fn(x, *states, *params, **hyper, **(masks[0] if masks else {}))[1]
        finals = tuple(_out(f, unbatched) for f in (final if isinstance(final, tuple) else (final,)))
        return finals if n > 1 else finals[0]


class RNNCell(_Step, nn.RNNCell):
    """One Elman step ``h' = f(W_ih x + b_ih + W_hh h + b_hh)``; a drop-in for ``torch.nn.RNNCell``
    (nonlinearity may also be 'identity').

    >>> cell = rnnkit.RNNCell(10, 20)
    >>> h = cell(torch.randn(3, 10))          # (3, 20)
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None, zoneout: float = 0.0):
        if nonlinearity not in ("tanh", "relu", "identity"):
            raise ValueError(f"nonlinearity: expected 'tanh', 'relu' or 'identity', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, "tanh" if nonlinearity == "identity" else nonlinearity,
                         device=device, dtype=dtype)
        self.nonlinearity = nonlinearity
        _variants.set_rates(self, zoneout)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        return self._step(input, hx)


class LSTMCell(_Step, nn.LSTMCell):
    """One LSTM step (SPEC section 3); a drop-in for ``torch.nn.LSTMCell``: returns (h', c').
    ``peephole=True`` adds ``weight_ch`` (3H), as :class:`rnnkit.LSTM`.

    >>> cell = rnnkit.LSTMCell(10, 20)
    >>> h, c = cell(torch.randn(3, 10))
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None,
                 peephole: bool = False, zoneout: float = 0.0, forget_bias: Optional[float] = None,
                 chrono_tmax: Optional[float] = None):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.peephole = bool(peephole)
        if self.peephole:
            _add_peepholes(self, [""])
        _variants.set_rates(self, zoneout)
        _set_gate_init(self, forget_bias, chrono_tmax)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _variants.init_gate_biases(self)

    def extra_repr(self) -> str:
        s = nn.LSTMCell.extra_repr(self)
        return (s + ", peephole=True" if self.peephole else s) + _variants.rates_repr(self) + _init_repr(self)

    def forward(self, input: Tensor, hx=None):
        return self._step(input, hx)


class GRUCell(_Step, nn.GRUCell):
    """One GRU step (SPEC section 4); a drop-in for ``torch.nn.GRUCell``, plus ``reset_after``
    (False: the seeds' form, see :class:`rnnkit.GRU`).

    >>> cell = rnnkit.GRUCell(10, 20)
    >>> h = cell(torch.randn(3, 10))
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None,
                 reset_after: bool = True, zoneout: float = 0.0, forget_bias: Optional[float] = None,
                 chrono_tmax: Optional[float] = None):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.reset_after = bool(reset_after)
        _variants.set_rates(self, zoneout)
        _set_gate_init(self, forget_bias, chrono_tmax)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _variants.init_gate_biases(self)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        return self._step(input, hx)


class JordanCell(_Step, nn.Module):
    """One Jordan step: ``h = f(W_ih x + b_ih + W_yh y + b_yh)``, ``y' = g(W_hy h + b_hy)``.

    Arguments as :class:`rnnkit.JordanRNN` (one layer, without batch_first); parameters
    weight_ih (H, I), weight_yh (H, O), weight_hy (O, H), bias_ih (H), bias_yh (H),
    bias_hy (O), initialised as the layer's. ``forward(input (B, I), y=None) -> y' (B, O)``.

    >>> cell = rnnkit.JordanCell(2, 8, 2)
    >>> y = cell(torch.randn(3, 2))            # (3, 2)
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, nonlinearity: str = "tanh",
                 output_nonlinearity: str = "identity", bias: bool = True, device=None, dtype=None,
                 zoneout: float = 0.0):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("output_size", output_size)):
            _positive_int(name, value)
        _variants.set_rates(self, zoneout)
        _check_jordan_activations(nonlinearity, output_nonlinearity)
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.nonlinearity, self.output_nonlinearity, self.bias = nonlinearity, output_nonlinearity, bias
        _jordan_parameters(self, "", input_size, hidden_size, output_size, bias, {"device": device, "dtype": dtype})
        self.reset_parameters()

    reset_parameters = JordanRNN.reset_parameters

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, {self.output_size}"
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if self.output_nonlinearity != "identity":
            s += f", output_nonlinearity={self.output_nonlinearity!r}"
        return (s if self.bias else s + ", bias=False") + _variants.rates_repr(self)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A one-layer JordanRNN's state_dict loads too (its names carry ``_l0``).
        for role in _JORDAN_ROLES:
            key = f"{prefix}{role}_l0"
            if key in state_dict and prefix + role not in state_dict:
                state_dict[prefix + role] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    _state_argument = "y"

    def forward(self, input: Tensor, y: Optional[Tensor] = None) -> Tensor:
        return self._step(input, y)
