"""One-step cells, torch.nn-compatible, on the same native kernels as the layers.

``RNNCell``, ``LSTMCell`` and ``GRUCell`` subclass their torch.nn namesakes (same
arguments, parameters and outputs); ``JordanCell`` is one step of
:class:`rnnkit.JordanRNN`. A cell stepped by hand equals the layer over the whole
sequence, gradients included.

A step is one native call on the cell's plan: its weights packed once into the
core's layout (csrc/stream.cpp, one layer of a stream) and cached on the cell until
a parameter changes (:class:`rnnkit._cache.PlanCache`: an optimizer step,
``load_state_dict``, ``.data =``, ``to()``, a new Parameter, a write through
``p.data`` or a NumPy view, which the cache's byte compare sees). Without autograd
the call writes the new state(s) into tensors allocated for them; with autograd it
also writes what the layer's backward reads, and that backward (rnnkit.functional)
runs at T = 1 (the step's Function is applied by torch's C entry, without
Function.apply's Python wrapper, unless a functorch transform is active). Inputs the
plan cannot take by address (non-contiguous, CUDA, half precision, a captured graph)
take the general path: the layer function at T = 1.
"""

from __future__ import annotations

import operator
from typing import Optional

import torch
from torch import Tensor, nn

from . import _backend, _core, _variants, functional, networks
from ._cache import PlanCache
from .streaming import _core_stream, _is_buffer, _kernel_params, _layer_norm
from .modules import _JORDAN_ROLES, JordanRNN, _check_jordan_activations, _init_repr, _jordan_parameters, \
    _positive_int, _reset_variants, _runs_natively, _set_up_variants, _warn_once

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


# ----------------------------------------------------------------------------- autograd
# With a gradient, a step is an autograd Function whose forward is one call of the
# cell's plan, writing the new state(s) and the records the backward reads
# (csrc/cells/<cell>.h), and whose backward is the layer's own (rnnkit.functional) at
# T = 1: it gets the tensors in the layout the layer's forward saves, assembled only
# when a backward runs. Each Function takes the tensors the layer Function takes first
# (x, the states, the parameters up to the last one a cell has: so needs_input_grad has
# the same indices for them), then the plan entry; x is (B, I).
def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _states(prev: Optional[Tensor], new: Tensor) -> Tensor:
    """(2, B, W): the state before the step (zeros for None) and after it, as a layer records them."""
    return torch.stack((torch.zeros_like(new) if prev is None else prev.detach(), new.detach()))


class _LayerContext:
    """What the layer Function's backward reads of its ctx, for one step: the entry's
    settings (act, isa, ...), the saved tensors, and needs_input_grad padded with False
    for the layer's arguments the step does not take."""

    def __init__(self, ctx, saved: tuple):
        entry = ctx.entry
        self.__dict__.update(entry.layer)
        self.saved_tensors = saved
        self.needs_input_grad = ctx.needs_input_grad[:-1] + (False,) * entry.pad
        self.recorder = None


def _layer_grads(ctx, g: tuple) -> tuple:
    """The layer backward's gradients for the step's tensors, dx brought back to (B, I), and None for the entry."""
    n = len(ctx.needs_input_grad) - 1
    return (None if g[0] is None else g[0].view(ctx.x_shape),) + tuple(g[1:n]) + (None,)


def _c(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.detach().contiguous()


class _ElmanStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, entry):
        h1 = torch.empty_like(entry.likes[0])
        _core.cell_step_ptr(entry.core, x.data_ptr(), _ptr(h0), 0, h1.data_ptr(), 0, 0, 0, entry.threads)
        ctx.save_for_backward(x, h0, h1, w_ih, w_hh)
        ctx.x_shape, ctx.entry = x.shape, entry
        return h1

    @staticmethod
    def backward(ctx, dh):
        x, h0, h1, w_ih, w_hh = ctx.saved_tensors
        saved = (x.detach().unsqueeze(0), w_ih.detach(), _c(w_hh), _states(h0, h1), None)
        return _layer_grads(ctx, functional._Elman.backward(_LayerContext(ctx, saved), None, dh, None))


class _LSTMStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ch, entry):
        likes = entry.likes
        h1, c1, gates = torch.empty_like(likes[0]), torch.empty_like(likes[1]), torch.empty_like(entry.record_likes[0])
        _core.cell_step_ptr(entry.core, x.data_ptr(), _ptr(h0), _ptr(c0), h1.data_ptr(), c1.data_ptr(),
                            gates.data_ptr(), 0, entry.threads)
        ctx.save_for_backward(x, h0, c0, h1, c1, gates, w_ih, w_hh, w_ch)
        ctx.x_shape, ctx.entry = x.shape, entry
        return h1, c1

    @staticmethod
    def backward(ctx, dh, dc):
        x, h0, c0, h1, c1, gates, w_ih, w_hh, w_ch = ctx.saved_tensors
        saved = (x.detach().unsqueeze(0), w_ih.detach(), _c(w_hh), _c(w_ch), None, _states(h0, h1), _states(c0, c1),
                 gates, None)
        return _layer_grads(ctx, functional._LSTM.backward(_LayerContext(ctx, saved), None, dh, dc, None, None))


class _GRUStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, entry):
        h1, (gates, hn) = torch.empty_like(entry.likes[0]), map(torch.empty_like, entry.record_likes)
        _core.cell_step_ptr(entry.core, x.data_ptr(), _ptr(h0), 0, h1.data_ptr(), 0, gates.data_ptr(), hn.data_ptr(),
                            entry.threads)
        ctx.save_for_backward(x, h0, h1, gates, hn, w_ih, w_hh)
        ctx.x_shape, ctx.entry = x.shape, entry
        return h1

    @staticmethod
    def backward(ctx, dh):
        x, h0, h1, gates, hn, w_ih, w_hh = ctx.saved_tensors
        saved = (x.detach().unsqueeze(0), w_ih.detach(), _c(w_hh), _states(h0, h1), gates, hn, None)
        return _layer_grads(ctx, functional._GRU.backward(_LayerContext(ctx, saved), None, dh, None))


class _JordanStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y0, w_ih, w_yh, w_hy, b_ih, b_yh, b_hy, entry):
        y1, hs = torch.empty_like(entry.likes[0]), torch.empty_like(entry.record_likes[0])
        _core.cell_step_ptr(entry.core, x.data_ptr(), _ptr(y0), 0, y1.data_ptr(), 0, hs.data_ptr(), 0, entry.threads)
        ctx.save_for_backward(x, y0, y1, hs, w_ih, w_yh, w_hy)
        ctx.x_shape, ctx.entry = x.shape, entry
        return y1

    @staticmethod
    def backward(ctx, dy):
        x, y0, y1, hs, w_ih, w_yh, w_hy = ctx.saved_tensors
        saved = (x.detach().unsqueeze(0), w_ih.detach(), _c(w_yh), _c(w_hy), hs, _states(y0, y1), None)
        return _layer_grads(ctx, functional._Jordan.backward(_LayerContext(ctx, saved), None, dy, None))


def _input_norm(x: Tensor, w_ih: Tensor):
    """(1, B, G*H) LN(x W_ih^T) and its rho, as the layer-normalised layer's forward saves them."""
    return functional._normalised_input(x.detach().unsqueeze(0), w_ih)


class _LNLSTMStep(torch.autograd.Function):
    """The layer-normalised LSTM's step (SPEC section 15): records gates and A = W_hh h_{t-1}."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, entry):
        likes, records = entry.likes, entry.record_likes
        h1, c1 = torch.empty_like(likes[0]), torch.empty_like(likes[1])
        gates, raw = torch.empty_like(records[0]), torch.empty_like(records[1])
        _core.cell_step_ptr(entry.core, x.data_ptr(), _ptr(h0), _ptr(c0), h1.data_ptr(), c1.data_ptr(),
                            gates.data_ptr(), raw.data_ptr(), entry.threads)
        ctx.save_for_backward(x, h0, c0, h1, c1, gates, raw, w_ih, w_hh, g_ih, g_hh, g_c, b_c)
        ctx.x_shape, ctx.entry = x.shape, entry
        return h1, c1

    @staticmethod
    def backward(ctx, dh, dc):
        x, h0, c0, h1, c1, gates, raw, w_ih, w_hh, g_ih, g_hh, g_c, b_c = ctx.saved_tensors
        x_hat, rho = _input_norm(x, w_ih)
        saved = (x.detach().unsqueeze(0), w_ih.detach(), _c(w_hh), g_ih.detach(), _c(g_hh), _c(g_c), _c(b_c), x_hat,
                 rho, _states(h0, h1), _states(c0, c1), gates, raw, None)
        return _layer_grads(ctx, functional._LNLSTM.backward(_LayerContext(ctx, saved), None, dh, dc, None, None))


class _LNGRUStep(torch.autograd.Function):
    """The layer-normalised GRU's step (SPEC section 15): records gates and A = W_hh h_{t-1}."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, entry):
        h1, (gates, raw) = torch.empty_like(entry.likes[0]), map(torch.empty_like, entry.record_likes)
        _core.cell_step_ptr(entry.core, x.data_ptr(), _ptr(h0), 0, h1.data_ptr(), 0, gates.data_ptr(),
                            raw.data_ptr(), entry.threads)
        ctx.save_for_backward(x, h0, h1, gates, raw, w_ih, w_hh, g_ih, g_hh, b_hh)
        ctx.x_shape, ctx.entry = x.shape, entry
        return h1

    @staticmethod
    def backward(ctx, dh):
        x, h0, h1, gates, raw, w_ih, w_hh, g_ih, g_hh, b_hh = ctx.saved_tensors
        x_hat, rho = _input_norm(x, w_ih)
        saved = (x.detach().unsqueeze(0), w_ih.detach(), _c(w_hh), g_ih.detach(), _c(g_hh), _c(b_hh), x_hat, rho,
                 _states(h0, h1), gates, raw, None)
        return _layer_grads(ctx, functional._LNGRU.backward(_LayerContext(ctx, saved), None, dh, None))


def _c_apply(fn):
    """fn's apply without torch.autograd.Function.apply's Python wrapper (which binds
    setup_context's defaults, none here, and unwraps dead functorch wrappers, which
    _step_apply does for the tensors), or None where this torch has no such entry."""
    try:
        apply = torch._C._FunctionBase.__dict__["apply"].__get__(None, fn)
        unwrap = torch._C._functorch.unwrap_if_dead
        active = torch._C._are_functorch_transforms_active
    except (AttributeError, KeyError):
        return None
    return apply, unwrap, active


def _step_apply(fn, args: list, entry):
    """fn.apply(*args, entry), by the C entry where there is one and no functorch transform is active."""
    fast = fn.c_apply
    if fast is None or fast[2]():
        return fn.apply(*args, entry)
    unwrap = fast[1]
    return fast[0](*[a if a is None else unwrap(a) for a in args], entry)


# Per kernel: the Function; the network's parameter roles it takes (the layer Function's, in
# its order: a number n is the first n of the network's roles, up to the last a cell has:
# the LSTM's weight_ch, as a cell is never projected; the layer-normalised Functions name
# theirs, the gains after the weights); the record widths of a step for H; what the layer
# backward reads of its ctx (ctx.<name>); and pad: how many arguments the layer Function
# takes after the step's tensors (False in the layer backward's needs_input_grad).
_ACT = _backend.ACT_CODES
_STEP_FUNCTIONS = {
    "elman": (_ElmanStep, 4, lambda H: (), lambda m, isa: {"act": _ACT[m.nonlinearity], "isa": isa}, 6),
    "lstm": (_LSTMStep, 5, lambda H: (4 * H,), lambda m, isa: {"isa": isa}, 6),
    "gru": (_GRUStep, 4, lambda H: (3 * H, H), lambda m, isa: {"isa": isa, "reset_after": m.reset_after}, 6),
    "jordan": (_JordanStep, 6, lambda H: (H,), lambda m, isa: {"act": _ACT[m.nonlinearity],
                                                               "out_act": _ACT[m.output_nonlinearity], "isa": isa}, 7),
}
_LN_STEP_FUNCTIONS = {  # layer_norm=True
    "lstm": (_LNLSTMStep, ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "ln_gain_ih", "ln_gain_hh", "ln_gain_c",
                           "ln_bias_c"), lambda H: (4 * H, 4 * H), lambda m, isa: {"isa": isa}, 3),
    "gru": (_LNGRUStep, ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "ln_gain_ih", "ln_gain_hh"),
            lambda H: (3 * H, 3 * H), lambda m, isa: {"isa": isa}, 3),
}
for _fn, *_ in (*_STEP_FUNCTIONS.values(), *_LN_STEP_FUNCTIONS.values()):
    _fn.c_apply = _c_apply(_fn)


class _Entry:
    """A cell's plan for one batch size, instruction set and hyper-parameters: the core's
    one-layer stream over the cell's weights (a packed copy), its thread count; per state
    a (B, W) and a (W,) tensor of the states' dtype (expanded scalars: torch.empty_like
    copies their shape and dtype, the cheapest allocation from Python) and their shapes;
    per record a (1, B, R) one; the autograd step's Function and the parameter roles it
    takes (_STEP_FUNCTIONS); and what the layer backward reads of its ctx."""

    __slots__ = ("core", "threads", "likes", "likes_1", "shape", "shape_1", "record_likes", "fn", "roles", "layer",
                 "pad")


# What a step reads of the registry, per cell class: the network's states, parameter
# roles, state size attribute, hyper-parameter names and kernel (the same for every
# variant of a class, so a GRUCell whose reset_after changes keeps its entry).
_NETWORK_OF_CLASS: dict = {}


def _not_streamed() -> tuple:
    """Every setting some network of the registry does not stream (``Network.not_streamed``):
    a class's cached entry may be another variant's (GRUCell: gru or gru-rb)."""
    global _NOT_STREAMED
    if _NOT_STREAMED is None:
        _NOT_STREAMED = tuple(sorted({s for n in networks.NETWORKS.values() for s in n.not_streamed}))
    return _NOT_STREAMED


_NOT_STREAMED = None
_NATIVE_DTYPES = (torch.float32, torch.float64)
_requires_grad = operator.attrgetter("requires_grad")


class _Step:
    """The forward of every cell: one step of the network's layer function with T = 1,
    driven by the cell's entry in :mod:`rnnkit.networks`. Off the native core (CUDA,
    half precision), torch.nn's own cell runs where it computes the same equations,
    else the reference (with a one-time warning).

    When no gradient is needed (``torch.no_grad``, ``torch.inference_mode``, frozen
    parameters) a step is one native call (:meth:`_native_step`): the core's one-layer
    stream (csrc/stream.cpp) over the cell's weights, packed once and cached on the
    cell until a parameter changes (:class:`rnnkit._cache.PlanCache`), writing the new
    states into tensors allocated once per call.

    Every cell takes ``zoneout`` (SPEC section 16): a fresh z per call in training, its
    expected value at evaluation (a cell with zoneout takes the layer function's path,
    not the one-call step). Recurrent dropout and weight drop draw one mask per
    sequence, which a one-step cell does not see: they are options of the layers."""

    def extra_repr(self) -> str:
        return super().extra_repr() + _variants.rates_repr(self) + _init_repr(self)

    _state_argument = "hx"

    def __getstate__(self):
        # The plans hold native objects: a pickled or deep-copied cell builds its own.
        state = super().__getstate__()  # a copy of __dict__
        state.pop("_plans", None)
        return state

    def _native_step(self, input: Tensor, hx):
        """The new state(s) by one native call, or None where that path does not apply
        (a graph is captured, or any buffer is not a contiguous CPU tensor of the
        parameters' dtype and the expected shape): the general path then runs, and
        raises any error. Kept lean: at small sizes it is most of a step's time."""
        d = self.__dict__
        params = d["_parameters"]
        w = params["weight_ih"]
        dtype = w.dtype
        if type(input) is not Tensor or input.dtype is not dtype or dtype not in _NATIVE_DTYPES or not w.is_cpu:
            return None
        spec = _NETWORK_OF_CLASS.get(type(self))
        if spec is None:
            spec = _NETWORK_OF_CLASS[type(self)] = networks.network_of(self)
        for setting in _not_streamed():  # settings the one-step kernels do not run (layer_norm): plain attributes
            if d.get(setting, False):
                return None
        if _variants.active(self):  # zoneout: the layer function's path draws z (or uses p)
            return None
        n = len(spec.states)
        parts = hx if type(hx) in (tuple, list) else (hx,) * n if hx is None else (hx,)
        shape = input.shape
        batched = len(shape) == 2
        B = shape[0] if batched else 1
        if B < 1 or len(parts) != n \
                or not _is_buffer(input, dtype, (B, self.input_size) if batched else (self.input_size,)):
            return None
        watched = tuple(params.values())
        plans = d.get("_plans")
        if plans is None:
            plans = d["_plans"] = PlanCache()
        # (isa, B, hyper-parameters) -> _Entry
        isa = _backend.current_isa()
        entries = plans.current(watched)
        if entries is None:
            entries = plans.get(watched, dict)
        key = (isa, B) if not spec.hyper else (isa, B, *[getattr(self, k) for k in spec.hyper])
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = self._build_plan(spec, B)
        state_shape = entry.shape if batched else entry.shape_1
        for s in parts:
            if s is not None and not _is_buffer(s, dtype, state_shape):
                return None
        if torch.compiler.is_compiling() or torch.jit.is_tracing():  # a graph must see the kernel as an op
            return None
        if torch.is_grad_enabled() and (input.requires_grad or any(map(_requires_grad, plans._present))
                                        or any(s is not None and s.requires_grad for s in parts)):
            if not batched:
                return None
            return _step_apply(entry.fn, [input, *parts, *map(params.get, entry.roles)], entry)
        likes = entry.likes if batched else entry.likes_1
        h = torch.empty_like(likes[0])
        if n == 1:
            _core.cell_step_ptr(entry.core, input.data_ptr(), 0 if hx is None else hx.data_ptr(), 0, h.data_ptr(), 0,
                                0, 0, entry.threads)
            return h
        c = torch.empty_like(likes[1])
        h0, c0 = parts
        _core.cell_step_ptr(entry.core, input.data_ptr(), 0 if h0 is None else h0.data_ptr(),
                            0 if c0 is None else c0.data_ptr(), h.data_ptr(), c.data_ptr(), 0, 0, entry.threads)
        return h, c

    def _build_plan(self, spec, B: int) -> _Entry:
        """The plan entry for batch size B and the current instruction set and hyper-parameters
        (see _Entry)."""
        isa = _backend.current_isa()
        hyper = spec.hyper_of(self)
        own = networks.network_of(self)  # this variant's roles (spec may be another variant's: no gains)
        p = {role: self._parameters.get(role) for role in own.param_roles}
        dtype, width, H = self._parameters["weight_ih"].dtype, getattr(self, spec.state_size), self.hidden_size
        O = self.output_size if spec.state_size == "output_size" else 0
        layer_norm = _layer_norm(p)
        fn, roles, records, layer, pad = (_LN_STEP_FUNCTIONS if layer_norm else _STEP_FUNCTIONS)[spec.kernel]
        one = torch.empty((), dtype=dtype)
        e = _Entry()
        e.core = _core_stream(own, hyper, B, [self.input_size, H, O], _kernel_params(own, p, hyper), isa,
                              layer_norm=layer_norm)
        e.fn, e.roles = fn, roles if isinstance(roles, tuple) else tuple(own.param_roles[:roles])
        e.threads = _backend.num_threads(B, H, 2 * len(spec.gates), min_macs=1 << 23)
        e.shape, e.shape_1 = (B, width), (width,)
        e.likes = [one.expand(B, width) for _ in spec.states]  # an LSTM's c is as wide as h
        e.likes_1 = [one.expand(width) for _ in spec.states]
        e.record_likes = [one.expand(1, B, r) for r in records(H)]
        e.layer = {**layer(self, isa), "w_ih_index": 3 if spec.kernel == "lstm" else 2,
                   "has_bias": tuple(p[r] is not None for r in own.param_roles if r.startswith("bias"))}
        e.pad = pad
        return e

    def _step(self, input: Tensor, hx):
        fast = self._native_step(input, hx)
        if fast is not None:
            return fast
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
        masks = _variants.layer_masks(self, spec, 1, 1, x.shape[1], x)  # zoneout (SPEC section 16), or None
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
    ``peephole=True`` adds ``weight_ch`` (3H), ``layer_norm=True`` the gains and bias
    ``ln_gain_ih``, ``ln_gain_hh``, ``ln_gain_c``, ``ln_bias_c``, as :class:`rnnkit.LSTM`.

    >>> cell = rnnkit.LSTMCell(10, 20)
    >>> h, c = cell(torch.randn(3, 10))
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None,
                 peephole: bool = False, layer_norm: bool = False, zoneout: float = 0.0,
                 forget_bias: Optional[float] = None, chrono_tmax: Optional[float] = None):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        _set_up_variants(self, [""], 4, peephole=peephole, layer_norm=layer_norm, rates=(zoneout,),
                         forget_bias=forget_bias, chrono_tmax=chrono_tmax)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset_variants(self)

    def extra_repr(self) -> str:
        s = nn.LSTMCell.extra_repr(self)
        s = s + "".join(f", {k}=True" for k in ("peephole", "layer_norm") if getattr(self, k))
        return s + _variants.rates_repr(self) + _init_repr(self)

    def forward(self, input: Tensor, hx=None):
        return self._step(input, hx)


class GRUCell(_Step, nn.GRUCell):
    """One GRU step (SPEC section 4); a drop-in for ``torch.nn.GRUCell``, plus ``reset_after``
    (False: the seeds' form, see :class:`rnnkit.GRU`).

    >>> cell = rnnkit.GRUCell(10, 20)
    >>> h = cell(torch.randn(3, 10))
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None,
                 reset_after: bool = True, layer_norm: bool = False, zoneout: float = 0.0,
                 forget_bias: Optional[float] = None, chrono_tmax: Optional[float] = None):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.reset_after = bool(reset_after)
        _set_up_variants(self, [""], 3, layer_norm=layer_norm, rates=(zoneout,), forget_bias=forget_bias,
                         chrono_tmax=chrono_tmax)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset_variants(self)

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
