"""torch.nn-compatible recurrent layers on the native core.

``rnnkit.RNN``, ``rnnkit.LSTM`` and ``rnnkit.GRU`` subclass ``torch.nn.RNN`` /
``LSTM`` / ``GRU``: same constructor arguments, parameter names, shapes,
initialisation and state_dict, same forward signature and outputs (tensors of
(T, B, I) or (B, T, I) with ``batch_first``, unbatched (T, I), or PackedSequence).
They add ``nonlinearity='identity'`` (RNN), ``reset_after`` (GRU), and a keyword
``lengths=`` as a lighter alternative to PackedSequence. ``JordanRNN`` is the
Jordan network of SPEC section 2.

Where the native core does not run (CUDA tensors, float16 / bfloat16): LSTM,
reset-after GRU and tanh/relu RNN use torch's own kernels (the same math); the
others run :mod:`rnnkit.reference` with a one-time warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import _stack, _variants, functional, networks
from ._checks import lengths_tensor

__all__ = ["RNN", "LSTM", "GRU", "JordanRNN", "StateGradients"]

_NATIVE_DTYPES = (torch.float32, torch.float64)
_warned: set = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def _runs_natively(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in _NATIVE_DTYPES


# ----------------------------------------------------------------------------- input handling
class _Batch:
    """A module input brought to time-major (T, B, I) form, and the way back."""

    def __init__(self, input, lengths, batch_first: bool, input_size: int, param_dtype: torch.dtype):
        self.packed: Optional[PackedSequence] = None
        self.batch_first = batch_first
        self.unbatched = False
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths: must be None when the input is a PackedSequence (it carries its own lengths)")
            self.packed = input
            x, lens = pad_packed_sequence(input)  # (T, B, I) in the caller's batch order
            lengths = lens
        else:
            if not isinstance(input, Tensor):
                raise TypeError(f"input: expected a Tensor or PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ValueError(
                    "input: expected a 3-D tensor ((T, B, I), or (B, T, I) with batch_first) or a 2-D unbatched "
                    f"(T, I) tensor, got shape {tuple(input.shape)}")
            x = input
            if x.dim() == 2:
                self.unbatched = True
                x = x.unsqueeze(1)
            elif batch_first:
                x = x.transpose(0, 1)
        if not x.dtype.is_floating_point:
            raise TypeError(f"input: expected a floating-point tensor (float32 or float64), got dtype {x.dtype}")
        if x.dtype != param_dtype:
            raise TypeError(f"input: dtype {x.dtype} does not match the module's parameters ({param_dtype}); "
                            f"convert one of them, e.g. module.to({x.dtype}) or input.to({param_dtype})")
        if x.shape[-1] != input_size:
            raise ValueError(f"input: expected input_size={input_size} features in the last dimension, "
                             f"got {x.shape[-1]} (input shape {tuple(input.shape if isinstance(input, Tensor) else x.shape)})")
        if x.shape[0] == 0:
            raise ValueError("input: expected at least one time step, got a sequence of length 0")
        self.x = x  # (T, B, I)
        self.T, self.B = x.shape[0], x.shape[1]
        self.lengths = lengths_tensor(lengths, self.T, self.B)
        if self.unbatched and self.lengths is not None:
            raise ValueError("lengths: not supported for unbatched (2-D) input")

    def state(self, hx: Optional[Tensor], name: str, shape: Sequence[int], dtype: torch.dtype) -> Optional[Tensor]:
        """Check an initial state given as in torch.nn (unbatched: without the batch dim)."""
        if hx is None:
            return None
        if not isinstance(hx, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(hx).__name__}")
        expected = tuple(shape)
        if self.unbatched:
            expected = expected[:-2] + expected[-1:]
        if tuple(hx.shape) != expected:
            raise ValueError(f"{name}: expected shape {expected}, got {tuple(hx.shape)}")
        if hx.dtype != dtype:
            raise TypeError(f"{name}: expected dtype {dtype} like the input, got {hx.dtype}")
        return hx.unsqueeze(-2) if self.unbatched else hx

    def output(self, out: Tensor):
        """(T, B, F) -> the caller's form (batch_first, unbatched or packed)."""
        if self.packed is not None:
            p = self.packed
            lens = self.lengths
            if p.sorted_indices is not None:
                out = out.index_select(1, p.sorted_indices)
                lens = lens.index_select(0, p.sorted_indices.cpu())
            mask = torch.arange(self.T)[:, None] < lens[None, :]  # (T, B) in packed order
            return PackedSequence(out[mask.to(out.device)], p.batch_sizes, p.sorted_indices, p.unsorted_indices)
        if self.unbatched:
            return out.squeeze(1)
        return out.transpose(0, 1) if self.batch_first else out

    def final(self, h: Tensor) -> Tensor:
        return h.squeeze(-2) if self.unbatched else h

    def per_step(self, t: Tensor, reversed_time: bool = False) -> Tensor:
        """A recorded (T, B, F) tensor in the caller's time order and layout (padded, never packed)."""
        if reversed_time:
            t = _reverse_time(t, self.lengths)
        if self.unbatched:
            return t.squeeze(1)
        return t.transpose(0, 1) if self.batch_first and self.packed is None else t


def _reverse_time(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """Reverse each sequence within its own length (the padding stays in place)."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T)[:, None]
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t).to(x.device)  # (T, B)
    return x.gather(0, index.unsqueeze(-1).expand_as(x))


# ----------------------------------------------------------------------------- stacked layers
class StateGradients(Mapping):
    """Per-step state gradients of one layer and direction, filled by the backward pass.

    Keys: ``"dh"`` (and ``"dc"`` for an LSTM, ``"dy"`` for a Jordan network): the total
    gradient of the loss with respect to that step's state, (T, B, H) in the caller's
    time order ((B, T, H) with batch_first), computed by the native BPTT.
    Empty until ``backward()`` has run.
    """

    def __init__(self, batch: "_Batch", reverse: bool):
        self._raw: dict = {}
        self._batch, self._reverse = batch, reverse

    def __getitem__(self, key: str) -> Tensor:
        return self._batch.per_step(self._raw[key], self._reverse)

    def __iter__(self):
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def _layer_params(module: nn.Module, roles: Sequence[str], layer: int, direction: int) -> list:
    """The parameters of one layer and direction, in the order of ``roles``."""
    suffix = "_reverse" if direction == 1 else ""
    return [module._parameters.get(f"{role}_l{layer}{suffix}") for role in roles]


def _run_layer(spec, native: bool, x: Tensor, init: list, params: list, hyper: dict, lengths,
               want_internals: bool, recorder: Optional[dict], masks: Optional[dict] = None):
    """One layer in one direction: (out (T, B, F), final states tuple, internals or None).
    ``masks``: the zoneout / recurrent dropout arguments (SPEC section 16), or None."""
    masks = masks or {}
    if native and masks and functional._ops.capturing(x):
        _variants.captured_masks_allowed()
        native = False  # the custom ops take no masks: while a graph is captured, the reference is traced
    if native:
        res = spec.functional(x, *init, *params, **hyper, lengths=lengths, return_internals=want_internals,
                              grad_recorder=recorder, **masks)
    else:
        res = spec.reference(x, *init, *params, **hyper, lengths=lengths, return_internals=want_internals, **masks)
    finals = res[1] if isinstance(res[1], tuple) else (res[1],)
    return res[0], finals, (res[2] if want_internals else None)


def _run_stack(module, spec, batch: _Batch, states: list, native: bool, internals: Optional[list] = None,
               recorders: Optional[list] = None):
    """Runs num_layers x num_directions single-direction layers of network ``spec``.

    states: for each state of the network (h; h and c; y), a tensor (L*D, B, S) or None.
    Returns (output (T, B, D*S), final states as a list of (L*D, B, S) tensors).
    With ``internals`` / ``recorders`` lists, appends per layer and direction the
    recorded internals (dict of (T, B, .) in the caller's order) / a StateGradients.
    Dropout (training only) is applied to every layer's output but the last.
    """
    D = 2 if module.bidirectional else 1
    hyper = spec.hyper_of(module)
    x = batch.x
    finals: list = [[] for _ in spec.states]
    masks = _variants.layer_masks(module, spec, module.num_layers * D, batch.T, batch.B, x)
    for layer_index in range(module.num_layers):
        outs = []
        for direction in range(D):
            k = layer_index * D + direction
            params = _variants.drop_weights(module, spec.param_roles,
                                            _layer_params(module, spec.param_roles, layer_index, direction))
            init = [None if s is None else s[k] for s in states]
            xin = _reverse_time(x, batch.lengths) if direction == 1 else x
            recorder = None
            if recorders is not None:
                recorder = StateGradients(batch, reverse=direction == 1)
                recorders.append(recorder)
            out, final, inner = _run_layer(spec, native, xin, init, params, hyper, batch.lengths,
                                           internals is not None, None if recorder is None else recorder._raw,
                                           None if masks is None else masks[k])
            if internals is not None:
                internals.append({k: batch.per_step(v, direction == 1) for k, v in inner.items()})
            if direction == 1:
                out = _reverse_time(out, batch.lengths)
            outs.append(out)
            for i, f in enumerate(final):
                finals[i].append(f)
        x = outs[0] if D == 1 else torch.cat(outs, dim=2)
        if module.dropout and module.training and layer_index < module.num_layers - 1:
            x = nn.functional.dropout(x, module.dropout, training=True)
    return x, [f[0].unsqueeze(0) if len(f) == 1 else torch.stack(f) for f in finals]


class _StackedNetwork:
    """The forward pass shared by every layer class (RNN, LSTM, GRU, JordanRNN): input
    checks, initial states, the layer stack and the caller's output form, all driven by
    the class's entry in :mod:`rnnkit.networks`."""

    _state_argument = "hx"  # the name of forward's initial-state argument, for error messages

    @property
    def network(self):
        """This layer's :class:`rnnkit.networks.Network`."""
        return networks.network_of(self)

    def _check_supported(self) -> None:
        """Every setting of the layer classes runs natively (a hook for one that would not)."""

    def forward_with_internals(self, input, hx=None, *, lengths=None, grad_recorders: Optional[list] = None):
        """``forward`` that also returns what happens inside, at native speed.

        Returns ``(output, final_state, internals)`` where ``internals[l * D + d]`` (layer
        l, direction d) is a dict of per-step tensors, shape (T, B, H) ((B, T, H) with
        batch_first; padded for PackedSequence input; zero past a sequence's length):
        the network's ``internals`` in :mod:`rnnkit.networks` (LSTM ``i, f, g, o`` gate
        activations and ``c`` cell state; GRU ``r, z, n``; RNN ``a`` pre-activation;
        Jordan ``h`` hidden layer). With ``grad_recorders=[]``, the list receives one
        :class:`StateGradients` per layer and direction, filled by ``backward()``.

        >>> out, h_n, inside = lstm.forward_with_internals(x)
        >>> inside[0]["f"].mean()          # average forget gate of layer 0
        """
        internals: list = []
        out, h_n = self._forward(input, hx, lengths, internals, grad_recorders)
        return out, h_n, internals

    def _initial_states(self, spec, batch: _Batch, hx, shapes, dtype) -> list:
        """hx as passed to forward -> one tensor (L*D, B, S) or None per state of the network
        (``shapes``: one per state)."""
        arg = self._state_argument
        if len(spec.states) == 1:
            return [batch.state(hx, arg, shapes[0], dtype)]
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == len(spec.states)):
            raise TypeError(f"{arg}: expected a tuple ({', '.join(s + '_0' for s in spec.states)}) "
                            f"for {spec.title}, got {type(hx).__name__}")
        parts = (None,) * len(spec.states) if hx is None else hx
        return [batch.state(p, f"{arg}[{i}] ({s}_0)", shape, dtype)
                for i, (s, p, shape) in enumerate(zip(spec.states, parts, shapes))]

    def _forward(self, input, hx, lengths, internals: Optional[list] = None, recorders: Optional[list] = None):
        self._check_supported()
        if internals is None and recorders is None:  # no gradient needed: one native call (rnnkit._stack)
            result = _stack.forward(self, input, hx, lengths, _Batch)
            if result is not None:
                return result
        spec = networks.network_of(self)
        dtype = self._parameters[f"{spec.param_roles[0]}_l0"].dtype
        probe = input.data if isinstance(input, PackedSequence) else input
        if isinstance(probe, Tensor) and not _runs_natively(probe) and spec.torch_computes_same(self) \
                and lengths is None and probe.dtype == dtype and internals is None and recorders is None:
            # CUDA or half precision: torch's kernels compute the same equations.
            return super().forward(input, hx)
        batch = _Batch(input, lengths, self.batch_first, self.input_size, dtype)
        native = _runs_natively(batch.x)
        if not native:
            if internals is not None or recorders is not None:
                raise NotImplementedError("forward_with_internals: recording runs on the native core only "
                                          "(CPU, float32 or float64)")
            _warn_once(f"{type(self).__name__}-reference",
                       f"rnnkit.{type(self).__name__}: no native kernel for device={batch.x.device.type}, "
                       f"dtype={batch.x.dtype}; running the per-step reference implementation (slow)")
        D = 2 if self.bidirectional else 1
        shapes = [(self.num_layers * D, batch.B, S) for S in spec.state_widths(self)]
        states = self._initial_states(spec, batch, hx, shapes, dtype)
        out, finals = _run_stack(self, spec, batch, states, native, internals, recorders)
        finals = [batch.final(f) for f in finals]
        return batch.output(out), (tuple(finals) if len(finals) > 1 else finals[0])


# forward's ``lengths`` may also be passed by position (third): torch.onnx.export
# (dynamo=False) passes every parameter's default positionally.


class RNN(_StackedNetwork, nn.RNN):
    """Elman RNN (SPEC section 1), a drop-in for ``torch.nn.RNN``::

        h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   f in tanh | relu | identity

    Args as ``torch.nn.RNN`` (input_size, hidden_size, num_layers=1, nonlinearity='tanh',
    bias=True, batch_first=False, dropout=0.0, bidirectional=False); nonlinearity may
    also be 'identity'. ``forward(input, hx=None, *, lengths=None) -> (output, h_n)``.
    Regularisers, rates in [0, 1), 0 (off) by default (SPEC section 16; see
    :class:`LSTM`): ``zoneout``, ``recurrent_dropout``, ``weight_drop``.

    >>> rnn = rnnkit.RNN(10, 20, num_layers=2)
    >>> output, h_n = rnn(torch.randn(5, 3, 10))     # (5, 3, 20), (2, 3, 20)
    """

    def __init__(self, *args, zoneout: float = 0.0, recurrent_dropout: float = 0.0, weight_drop: float = 0.0,
                 **kwargs):
        nonlinearity = kwargs.pop("nonlinearity", None)
        if nonlinearity is None and len(args) >= 4 and isinstance(args[3], str):
            args = list(args)
            nonlinearity = args.pop(3)
        nonlinearity = nonlinearity or "tanh"
        if nonlinearity not in functional._NONLINEARITIES:
            raise ValueError(f"nonlinearity: expected 'tanh', 'relu' or 'identity', got {nonlinearity!r}")
        super().__init__(*args, nonlinearity="tanh" if nonlinearity == "identity" else nonlinearity, **kwargs)
        self.nonlinearity = nonlinearity
        _variants.set_rates(self, zoneout, recurrent_dropout, weight_drop)

    def extra_repr(self) -> str:
        return super().extra_repr() + _variants.rates_repr(self)

    def forward(self, input, hx: Optional[Tensor] = None, lengths=None):
        return self._forward(input, hx, lengths)


class LSTM(_StackedNetwork, nn.LSTM):
    """LSTM (SPEC section 3), a drop-in for ``torch.nn.LSTM`` (gate rows i, f, g, o).

    Args as ``torch.nn.LSTM``. ``proj_size=P > 0`` is torch.nn's LSTM with projections
    (LSTMP, Sak et al. 2014, SPEC section 14): ``h_t = W_hr (o_t * tanh(c_t))`` is P wide,
    ``weight_hr_l{k}`` (P, H), ``weight_hh_l{k}`` (4H, P), layer l > 0 reads P * D
    features, h_0 / h_n are (L * D, B, P) and c_0 / c_n (L * D, B, H); a torch.nn
    state_dict loads unchanged, either way.
    ``peephole=True`` (Gers & Schmidhuber 2000, SPEC section 13) adds diagonal weights
    from the cell state to the gates, ``weight_ch_l{k}`` (3H) stacked i, f, o, initialised
    as the other weights: i and f see c_{t-1}, o sees c_t (it combines with proj_size).
    ``layer_norm=True`` is haste's LayerNormLSTM (Ba, Kiros & Hinton 2016; SPEC section
    15): ``W_ih x`` and ``W_hh h`` normalised apart with gains ``ln_gain_ih_l{k}``,
    ``ln_gain_hh_l{k}`` (4H), and c_t before its tanh with ``ln_gain_c_l{k}``,
    ``ln_bias_c_l{k}`` (H); gains start at 1, the bias at 0. Every normalisation sums over
    all units of a row, in a fixed order for any thread count (SPEC section 15).
    ``forward(input, (h_0, c_0)=None, *, lengths=None) -> (output, (h_n, c_n))``.

    Regularisers (SPEC section 16), rates in [0, 1), 0 (off) by default, active in
    training only: ``zoneout`` (Krueger et al. 2016) on h and c, s_t = z s_{t-1} +
    (1 - z) s~_t with z ~ Bernoulli(p) per step and unit, z = p at evaluation;
    ``recurrent_dropout`` (Gal & Ghahramani 2016), one mask per sequence on h_{t-1}
    before the W_hh product; ``weight_drop`` (DropConnect on W_hh, AWD-LSTM), one mask
    on W_hh per forward. Initialisations of the gate biases: ``forget_bias`` (b_f,
    Jozefowicz et al. 2015) or ``chrono_tmax`` (Tallec & Ollivier 2018: b_f ~ log U(1,
    T_max - 1), b_i = -b_f), re-applied by ``reset_parameters``.

    >>> lstm = rnnkit.LSTM(10, 20, batch_first=True)
    >>> output, (h_n, c_n) = lstm(torch.randn(3, 5, 10))   # (3, 5, 20), (1, 3, 20) x 2
    """

    def __init__(self, *args, peephole: bool = False, layer_norm: bool = False, zoneout: float = 0.0,
                 recurrent_dropout: float = 0.0, weight_drop: float = 0.0, forget_bias: Optional[float] = None,
                 chrono_tmax: Optional[float] = None, **kwargs):
        super().__init__(*args, **kwargs)
        _set_up_variants(self, _layer_suffixes(self), 4, peephole=peephole, layer_norm=layer_norm,
                         rates=(zoneout, recurrent_dropout, weight_drop), forget_bias=forget_bias,
                         chrono_tmax=chrono_tmax)

    def reset_parameters(self) -> None:
        super().reset_parameters()  # torch.nn's U(-1/sqrt(H), 1/sqrt(H)) for every parameter
        _reset_variants(self)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        s = s + "".join(f", {k}=True" for k in ("peephole", "layer_norm") if getattr(self, k))
        return s + _variants.rates_repr(self) + _init_repr(self)

    def forward(self, input, hx=None, lengths=None):
        return self._forward(input, hx, lengths)


class GRU(_StackedNetwork, nn.GRU):
    """GRU (SPEC section 4), a drop-in for ``torch.nn.GRU`` (gate rows r, z, n).

    ``reset_after=True`` (default) is torch's / cuDNN's form,
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h = (1 - z) n + z h_prev``.
    ``reset_after=False`` is the seeds' (Cho et al. 2014) form,
    ``n = tanh(W_in x + b_in + W_hn (r * h_prev) + b_hn)``, ``h = (1 - z) h_prev + z n``:
    the same parameters, but z has the opposite meaning (z <-> 1 - z).
    ``layer_norm=True`` (reset after only) is haste's LayerNormGRU (SPEC section 15): the
    input and recurrent projections normalised apart, gains ``ln_gain_ih_l{k}``,
    ``ln_gain_hh_l{k}`` (3H) starting at 1.

    Regularisers ``zoneout``, ``recurrent_dropout`` (on every W_hh product; the update
    reads h_{t-1} itself) and ``weight_drop``, and the initialisations ``forget_bias`` /
    ``chrono_tmax`` as :class:`LSTM` (SPEC section 16); these set the bias of z, the gate
    that keeps the state: +value in the reset-after form, -value in the reset-before form.

    >>> gru = rnnkit.GRU(10, 20, reset_after=False)
    >>> output, h_n = gru(torch.randn(5, 3, 10))
    """

    def __init__(self, *args, reset_after: bool = True, layer_norm: bool = False, zoneout: float = 0.0,
                 recurrent_dropout: float = 0.0, weight_drop: float = 0.0, forget_bias: Optional[float] = None,
                 chrono_tmax: Optional[float] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset_after = bool(reset_after)
        _set_up_variants(self, _layer_suffixes(self), 3, layer_norm=layer_norm,
                         rates=(zoneout, recurrent_dropout, weight_drop), forget_bias=forget_bias,
                         chrono_tmax=chrono_tmax)

    def reset_parameters(self) -> None:
        super().reset_parameters()  # torch.nn's U(-1/sqrt(H), 1/sqrt(H)) for every parameter
        _reset_variants(self)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        s = s if self.reset_after else s + ", reset_after=False"
        s = s + ", layer_norm=True" if getattr(self, "layer_norm", False) else s
        return s + _variants.rates_repr(self) + _init_repr(self)

    def forward(self, input, hx: Optional[Tensor] = None, lengths=None):
        return self._forward(input, hx, lengths)


def _layer_suffixes(module: nn.Module) -> list:
    """The parameter-name suffixes of a stack's layers and directions: _l0, _l0_reverse, _l1, ..."""
    return [f"_l{l}{s}" for l in range(module.num_layers) for s in ("", "_reverse")[:2 if module.bidirectional else 1]]


def _set_up_variants(module: nn.Module, suffixes, gates: int, *, layer_norm: bool, rates: tuple,
                     forget_bias, chrono_tmax, peephole: Optional[bool] = None) -> None:
    """The cell-variant options an LSTM / GRU layer or cell takes, set once for all four:
    peepholes (LSTM: ``peephole`` given), layer normalisation (the LSTM's also of c_t),
    the regularisers' rates (SPEC section 16) and the gate-bias initialisation."""
    if peephole is not None:
        module.peephole = bool(peephole)
    module.layer_norm = bool(layer_norm)
    if peephole:
        _add_peepholes(module, suffixes)
    if module.layer_norm:
        _add_layer_norm(module, suffixes, gates, cell_state=gates == 4)
    _variants.set_rates(module, *rates)
    _check_layer_norm_rates(module)
    _set_gate_init(module, forget_bias, chrono_tmax)


def _reset_variants(module: nn.Module) -> None:
    """What ``reset_parameters`` adds for the variants: layer-norm gains and biases, gate-bias init."""
    _reset_layer_norm(module)
    _variants.init_gate_biases(module)


def _set_gate_init(module: nn.Module, forget_bias, chrono_tmax) -> None:
    """Checks and stores forget_bias / chrono_tmax and applies them (SPEC section 16)."""
    _variants.check_init(forget_bias, chrono_tmax, module.bias)
    module.forget_bias = None if forget_bias is None else float(forget_bias)
    module.chrono_tmax = None if chrono_tmax is None else float(chrono_tmax)
    _variants.init_gate_biases(module)


def _init_repr(module: nn.Module) -> str:
    return "".join(f", {k}={getattr(module, k)}" for k in ("forget_bias", "chrono_tmax")
                   if getattr(module, k, None) is not None)


def _add_peepholes(module: nn.Module, suffixes) -> None:
    """Registers peephole weights ``weight_ch{suffix}`` (3H), U(-1/sqrt(H), 1/sqrt(H))."""
    H, w = module.hidden_size, module.weight_hh_l0 if hasattr(module, "weight_hh_l0") else module.weight_hh
    k = 1.0 / math.sqrt(H)
    for suffix in suffixes:
        p = nn.Parameter(torch.empty(3 * H, device=w.device, dtype=w.dtype))
        nn.init.uniform_(p, -k, k)
        module.register_parameter("weight_ch" + suffix, p)


def _add_layer_norm(module: nn.Module, suffixes, gates: int, cell_state: bool) -> None:
    """Registers the layer-normalisation parameters (SPEC section 15): ``ln_gain_ih{suffix}``,
    ``ln_gain_hh{suffix}`` (gates * H), ones, and with a cell state (the LSTM) ``ln_gain_c{suffix}``
    (H), ones, and ``ln_bias_c{suffix}`` (H), zeros."""
    if getattr(module, "proj_size", 0) or getattr(module, "peephole", False):
        raise ValueError("layer_norm: expected layer_norm=False with peephole=True or proj_size > 0 (they are not "
                         "combined yet), got True")
    if not getattr(module, "reset_after", True):
        raise ValueError("layer_norm: expected layer_norm=False with reset_after=False (haste's LayerNormGRU is the "
                         "reset-after form), got True")
    H, w = module.hidden_size, module.weight_hh_l0 if hasattr(module, "weight_hh_l0") else module.weight_hh
    sizes = (("ln_gain_ih", gates * H), ("ln_gain_hh", gates * H)) + ((("ln_gain_c", H), ("ln_bias_c", H))
                                                                        if cell_state else ())
    for suffix in suffixes:
        for role, size in sizes:
            module.register_parameter(role + suffix, nn.Parameter(torch.empty(size, device=w.device, dtype=w.dtype)))
    _reset_layer_norm(module)


def _check_layer_norm_rates(module: nn.Module) -> None:
    """Zoneout and recurrent dropout are not combined with layer normalisation (its kernels
    take no masks); weight drop and the gate initialisations are."""
    if getattr(module, "layer_norm", False):
        for k in ("zoneout", "recurrent_dropout"):
            if getattr(module, k, 0.0):
                raise ValueError(f"{k}: expected 0 with layer_norm=True (not combined yet), got {getattr(module, k)}")


def _reset_layer_norm(module: nn.Module) -> None:
    """Gains one, bias zero: layer normalisation starts as the plain normalisation."""
    with torch.no_grad():
        for name, p in module._parameters.items():
            if name.startswith("ln_") and p is not None:
                p.fill_(0.0 if name.startswith("ln_bias") else 1.0)


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def _check_jordan_activations(nonlinearity: str, output_nonlinearity: str) -> None:
    if nonlinearity not in functional._NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected one of {functional._NONLINEARITIES}, got {nonlinearity!r}")
    if output_nonlinearity not in functional._OUTPUT_NONLINEARITIES:
        raise ValueError(f"output_nonlinearity: expected one of {functional._OUTPUT_NONLINEARITIES}, "
                         f"got {output_nonlinearity!r}")


_JORDAN_ROLES = networks.NETWORKS["jordan"].param_roles  # weight_ih, weight_yh, weight_hy, bias_ih, bias_yh, bias_hy


def _jordan_parameters(module: nn.Module, suffix: str, I: int, H: int, O: int, bias: bool, kw: dict) -> None:
    """Registers one Jordan layer's parameters, named ``role + suffix`` (SPEC section 2)."""
    shapes = {"weight_ih": (H, I), "weight_yh": (H, O), "weight_hy": (O, H), "bias_ih": (H,), "bias_yh": (H,),
              "bias_hy": (O,)}
    for role in _JORDAN_ROLES:
        if role.startswith("bias") and not bias:
            module.register_parameter(role + suffix, None)
        else:
            module.register_parameter(role + suffix, nn.Parameter(torch.empty(shapes[role], **kw)))


class JordanRNN(_StackedNetwork, nn.Module):
    """Jordan RNN (SPEC section 2): the previous *output* is fed back::

        a_t = W_ih x_t + b_ih + W_yh y_{t-1} + b_yh,  h_t = f(a_t),  y_t = g(W_hy h_t + b_hy)

    Layers stack as in ``torch.nn.RNN``: layer l > 0 reads the outputs y of layer l - 1
    (both directions side by side when bidirectional), with ``dropout`` between layers
    in training. Parameters per layer l (``_reverse`` for the backward direction):
    weight_ih_l{l} (H, I_l), bias_ih_l{l} (H), weight_yh_l{l} (H, O), bias_yh_l{l} (H),
    weight_hy_l{l} (O, H), bias_hy_l{l} (O), initialised U(-1/sqrt(H), 1/sqrt(H)) as
    torch.nn.RNN; ``weight_ih`` etc. without suffix name layer 0's (earlier versions'
    names, which ``load_state_dict`` also accepts).

    ``forward(input, y0=None, *, lengths=None) -> (output, y_n)``: output (T, B, D*O)
    holds every y_t of the last layer ((B, T, D*O) with batch_first); y0 and y_n are
    (num_layers * D, B, O) as h_0 / h_n of ``torch.nn.RNN`` (y0 may also be (B, O) for
    a one-layer unidirectional network). PackedSequence and unbatched (T, I) inputs are
    accepted as by torch.nn.RNN. Regularisers ``zoneout`` (of y), ``recurrent_dropout``
    (of y_{t-1} before W_yh) and ``weight_drop`` (of W_yh) as :class:`LSTM`.

    >>> jordan = rnnkit.JordanRNN(2, 8, 2, output_nonlinearity="sigmoid", num_layers=2)
    >>> y, y_n = jordan(torch.randn(5, 3, 2))          # (5, 3, 2), (2, 3, 2)
    """

    _state_argument = "y0"

    def __init__(self, input_size: int, hidden_size: int, output_size: int, nonlinearity: str = "tanh",
                 output_nonlinearity: str = "identity", bias: bool = True, batch_first: bool = False, *,
                 num_layers: int = 1, dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None,
                 zoneout: float = 0.0, recurrent_dropout: float = 0.0, weight_drop: float = 0.0):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("output_size", output_size), ("num_layers", num_layers)):
            _positive_int(name, value)
        _check_jordan_activations(nonlinearity, output_nonlinearity)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout: expected a number in [0, 1], got {dropout!r}")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.num_layers, self.dropout, self.bidirectional = num_layers, float(dropout), bool(bidirectional)
        self.nonlinearity, self.output_nonlinearity = nonlinearity, output_nonlinearity
        self.bias, self.batch_first = bias, batch_first
        _variants.set_rates(self, zoneout, recurrent_dropout, weight_drop)
        D = 2 if bidirectional else 1
        for layer in range(num_layers):
            for suffix in ("", "_reverse")[:D]:
                _jordan_parameters(self, f"_l{layer}{suffix}", input_size if layer == 0 else output_size * D,
                                   hidden_size, output_size, bias, {"device": device, "dtype": dtype})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -k, k)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, {self.output_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if self.output_nonlinearity != "identity":
            s += f", output_nonlinearity={self.output_nonlinearity!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + _variants.rates_repr(self)

    def _params(self, layer: int = 0, direction: int = 0) -> list:
        """One layer's parameters in the order of the functional signature."""
        return _layer_params(self, _JORDAN_ROLES, layer, direction)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Earlier names: ``weight_ih`` (one JordanRNN layer) and ``0.weight_ih`` (the
        # training engine's stack of one-layer JordanRNNs) -> ``weight_ih_l0``.
        for layer in range(self.num_layers):
            for old in (f"{layer}.", "") if layer == 0 else (f"{layer}.",):
                for role in _JORDAN_ROLES:
                    key, new = prefix + old + role, f"{prefix}{role}_l{layer}"
                    if key in state_dict and new not in state_dict:
                        state_dict[new] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, input, y0: Optional[Tensor] = None, lengths=None):
        return self._forward(input, y0, lengths)

    def _initial_states(self, spec, batch: _Batch, y0, shapes, dtype) -> list:
        # A one-layer unidirectional network also takes y0 without the layer
        # dimension, (B, O) (earlier versions' form).
        shape = shapes[0]
        if isinstance(y0, Tensor) and shape[0] == 1:
            full = tuple(shape[1:]) if not batch.unbatched else (shape[2],)
            if y0.dim() == len(full):
                if tuple(y0.shape) != full:
                    raise ValueError(f"y0: expected shape {full}, got {tuple(y0.shape)} "
                                     f"(the (num_layers * D, B, O) form {(1,) + full} is accepted too)")
                y0 = y0.unsqueeze(0)
        return super()._initial_states(spec, batch, y0, shapes, dtype)


for _role in _JORDAN_ROLES:  # layer 0's parameters under their earlier names
    setattr(JordanRNN, _role, property(lambda self, _r=_role: getattr(self, f"{_r}_l0"),
                                       doc=f"``{_role}_l0``: layer 0's {_role} (the earlier name)."))
del _role
