"""One native call per module forward when no gradient is needed.

When nothing needs a gradient (``torch.inference_mode``, ``torch.no_grad``, or neither
the parameters nor the inputs require one), the forward pass of an rnnkit layer on
the native path (CPU, float32 / float64) is one call of the core's ``Stack``
(csrc/stack.cpp): every layer and direction, the input projections included, with
the weights packed once and kept on the module in a :class:`rnnkit._cache.PlanCache`
(rebuilt after any change of a parameter, and after a change of the instruction set
or a hyper-parameter). The outputs and final states are allocated here, once, and
written by the core; no per-step history is kept. Contiguous tensors reach the core by
their addresses (``Stack.run_ptr``, checked here); other inputs through NumPy views
(``Stack.run``, checked by the binding); both give the same bits.

Everything else takes the layer-by-layer path of :mod:`rnnkit.modules`, which this
one equals (tests/test_stack_plan.py): a gradient to record, dropout in training, a
regulariser that acts (zoneout; recurrent dropout or weight drop in training),
internals or gradient recorders, ``torch.compile`` tracing, other devices and dtypes.

>>> lstm = rnnkit.LSTM(8, 64, num_layers=2, bidirectional=True).eval()
>>> with torch.inference_mode():
...     out, (h_n, c_n) = lstm(torch.randn(10, 4, 8))   # one native call
"""

from __future__ import annotations

import operator
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from . import _backend, _core, _variants, functional, networks
from ._cache import PlanCache

_ATTR = "_rnnkit_stack"  # where a module keeps its _Plan (in its __dict__)
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}
_PLAIN = (Tensor, torch.nn.Parameter)  # tensors whose memory NumPy can view


class _Plan:
    """What one module's one-call forward needs, worked out once per module (and again
    when a hyper-parameter changes): its network, parameter names in the core's order,
    sizes, codes; and the packed weights, in ``cache``."""

    __slots__ = ("spec", "hyper", "hyper_of", "names", "L", "D", "width", "widths", "skip", "input_size", "n_states", "gates",
                 "hidden", "jordan", "codes", "sizes", "cache", "isa", "keys", "macs", "shapes")

    def __init__(self, module, spec, hyper: tuple):
        self.spec, self.hyper = spec, hyper
        # the module's hyper-parameters as a tuple (compared on every call), or None if it has none
        self.hyper_of = _getter(spec.hyper)
        self.L, self.D = module.num_layers, 2 if module.bidirectional else 1
        self.widths = spec.state_widths(module)  # per state: h (P when projected), c; y
        self.width = self.widths[0]
        # settings the core's Stack does not run (layer normalisation): the layer path takes them
        self.skip = any(getattr(module, s, False) for s in spec.not_streamed)
        self.input_size = module.input_size
        self.n_states = len(spec.states)
        self.gates, self.hidden = len(spec.gates), module.hidden_size
        self.jordan = spec.kernel == "jordan"
        suffixes = [f"_l{l}{'_reverse' if d else ''}" for l in range(self.L) for d in range(self.D)]
        self.names = tuple(role + s for s in suffixes for role in spec.param_roles)
        h = dict(zip(spec.hyper, hyper))
        self.codes = (_backend.ARCH_CODES[spec.kernel], _backend.ACT_CODES[h.get("nonlinearity", "tanh")],
                      _backend.ACT_CODES[h.get("output_nonlinearity", "identity")], bool(h.get("reset_after", True)))
        O = module.output_size if self.jordan else getattr(module, "proj_size", 0) or 0
        self.sizes = [v for l in range(self.L)
                      for v in (self.input_size if l == 0 else self.D * self.width, self.hidden, O)]
        self.cache = PlanCache()
        self.isa = self.keys = None
        # multiply-adds per batch row of a step's recurrent product (_threads); per input
        # shape the pointer path's _Shapes
        self.macs = None if self.jordan else self.gates * self.hidden * self.hidden
        self.shapes = {}

    def core(self, table: dict, isa: int):
        """The core's Stack for the module's parameters ``table`` (its ``_parameters``):
        packed now, or the cached one. The cache watches every value of the table, valid
        while its keys are the same (``self.keys``): then each of ``names`` finds the same
        object (or None) as when the Stack was packed."""
        keys = tuple(table)
        if isa != self.isa or keys != self.keys:
            self.cache.clear()
            self.isa, self.keys = isa, keys
        return self.cache.get(tuple(table.values()), lambda: self._build(list(map(table.get, self.names)), isa))

    def _build(self, params: list, isa: int):
        from .streaming import _kernel_params, _layer_norm  # one layer's five entries, as the Stream takes them

        roles = self.spec.param_roles
        hyper = dict(zip(self.spec.hyper, self.hyper))
        entries = []
        for k in range(self.L * self.D):
            layer = params[k * len(roles):(k + 1) * len(roles)]
            entries += [None if e is None else e.numpy()
                        for e in _kernel_params(self.spec, dict(zip(roles, layer)), hyper)]
        arch, act, out_act, reset_after = self.codes
        layer_norm = _layer_norm(dict(zip(roles, params[:len(roles)])))
        return _core.Stack(isa, arch, act, out_act, reset_after, self.D, self.sizes, entries, layer_norm)

    def __reduce__(self):  # a copy or a pickled module gets none: it is rebuilt on use
        return (_none, ())


def _none():
    return None


def _getter(names: tuple):
    """A function of a module returning the tuple of its attributes ``names`` (None for none)."""
    if not names:
        return None
    get = operator.attrgetter(*names)
    return get if len(names) > 1 else lambda m: (get(m),)


def _threads(plan: _Plan, B: int) -> int:
    """_backend.num_threads for this plan's step product, without the call when none is forced."""
    forced = _backend._local.threads
    if forced is not None:
        return forced
    if plan.jordan:
        return functional._jordan_threads(B, plan.hidden, plan.width)
    return 1 if B * plan.macs < _backend.PARALLEL_MIN_MACS_PER_STEP else _backend.num_threads(B, plan.hidden, plan.gates)


def _needs_grad(params: list, *tensors) -> bool:
    return any(p is not None and p.requires_grad for p in params) or \
        any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def _plain_states(hx, plan: _Plan, B: int, dtype) -> Optional[list]:
    """hx as NumPy views [state 0, state 1 or None] if it is a full set of CPU tensors of
    shape (L*D, B, S) and the module's dtype that need no gradient; else None (the
    modules' checks then take it, and accept or explain it)."""
    several = plan.n_states > 1
    if several and not (type(hx) in (tuple, list) and len(hx) == plan.n_states):
        return None
    views = []
    for h, width in zip(hx if several else (hx,), plan.widths):
        if type(h) is not Tensor or h.dtype != dtype or not h.is_cpu or h.requires_grad \
                or h.shape != (plan.L * plan.D, B, width):
            return None
        views.append(h.numpy())
    return views if several else views + [None]


def _is_buffer(t, dtype: torch.dtype, shape: tuple) -> bool:
    """Whether ``t`` is a torch tensor the core may read or write through its address:
    a dense, C-contiguous CPU tensor of this dtype and shape (checked before every
    pointer call; anything else takes the checked general path)."""
    return type(t) is Tensor and t.dtype is dtype and t.shape == shape and t.is_cpu and t.layout is torch.strided \
        and t.is_contiguous()


def _state_ptrs(hx, plan: _Plan, shapes: tuple, dtype) -> Optional[tuple]:
    """The addresses (state 0, state 1 or 0) of hx if it is a full set of tensors the core
    may read (_is_buffer) of the states' ``shapes``; else None (the NumPy path takes it)."""
    if plan.n_states > 1:
        if type(hx) not in (tuple, list) or len(hx) != 2:
            return None
        h, c = hx
        if _is_buffer(h, dtype, shapes[0]) and _is_buffer(c, dtype, shapes[1]):
            return h.data_ptr(), c.data_ptr()
        return None
    return (hx.data_ptr(), 0) if _is_buffer(hx, dtype, shapes[0]) else None


class _Shapes:
    """What the pointer path needs for one shape of input, worked out once: T and B, the
    states' shapes (hx and the final states), and for each output a tensor of its shape
    and dtype (an expanded scalar, no memory) that torch.empty_like copies, the cheapest
    allocation from Python. ok: False where the pointer path does not apply (batch_first
    with T, B > 1: (B, T, I) has not (T, B, I)'s memory; a size that does not fit)."""

    __slots__ = ("batch_first", "dtype", "ok", "T", "B", "states", "likes")

    def __init__(self, plan: _Plan, size: tuple, batch_first: bool, dtype):
        self.batch_first, self.dtype = batch_first, dtype
        unbatched = len(size) == 2
        if len(size) not in (2, 3):
            size, unbatched = (0, 1, 0), False  # not ok: the modules' checks explain it
        T, B = (size[0], 1) if unbatched else (size[1], size[0]) if batch_first else (size[0], size[1])
        self.ok = size[-1] == plan.input_size and T > 0 and B > 0 and (unbatched or not batch_first or T == 1 or B == 1)
        self.T, self.B = T, B
        lead = (plan.L * plan.D,) if unbatched else (plan.L * plan.D, B)
        self.states = tuple(lead + (w,) for w in plan.widths)
        one = torch.empty((), dtype=dtype)
        self.likes = [one.expand(tuple(size[:-1]) + (plan.D * plan.width,))] + [one.expand(s) for s in self.states]


def _shapes(plan: _Plan, size, batch_first: bool, dtype) -> _Shapes:
    """A new _Shapes for this input size, kept in plan.shapes."""
    if len(plan.shapes) >= 16:  # a bound: inputs of many lengths
        plan.shapes.clear()
    shapes = plan.shapes[size] = _Shapes(plan, size, batch_first, dtype)
    return shapes


def forward(module, input, hx, lengths, batch_class):
    """The module's ``(output, final state)`` through one native call, or None where
    the one-call path does not apply (the caller then takes the layer-by-layer path).

    A contiguous CPU tensor input of the module's dtype, (T, B, I) ((B, T, I) with
    batch_first where B or T is 1), or (T, I) unbatched, without lengths, and the
    initial states absent or contiguous tensors in full, reach the core by their
    addresses (Stack.run_ptr) after the checks here; the outputs are allocated as torch
    tensors. Anything else goes through NumPy views and the binding's checks (Stack.run).

    batch_class: rnnkit.modules._Batch, which checks and shapes any input that is not
    a plain (T, B, I) / (B, T, I) tensor without lengths (see _plain_states for hx).
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():  # a graph is captured: the ops of rnnkit._ops
        return None
    plan: Optional[_Plan] = module.__dict__.get(_ATTR)
    if plan is None or (plan.hyper_of is not None and plan.hyper != plan.hyper_of(module)):
        spec = networks.network_of(module)
        plan = _Plan(module, spec, tuple(getattr(module, n) for n in spec.hyper))
        module.__dict__[_ATTR] = plan
    if plan.skip or (module.training and module.dropout and plan.L > 1) or _variants.active(module):
        return None
    table = module._parameters
    params = tuple(table.values())  # the plan's (and any other of the module's own)
    p0 = table.get(plan.names[0])
    dtype = p0.dtype
    if dtype not in _NUMPY or not p0.is_cpu:
        return None
    if torch.is_grad_enabled() and _needs_grad(params, input.data if isinstance(input, PackedSequence) else input,
                                               hx, *(hx if isinstance(hx, (tuple, list)) else ())):
        return None

    # The pointer case: the tensors' addresses to the core, checked here.
    if lengths is None and type(input) is Tensor and input.dtype is dtype and input.is_cpu \
            and input.layout is torch.strided and input.is_contiguous():
        size = input.shape
        shapes = plan.shapes.get(size)
        if shapes is None or shapes.batch_first != module.batch_first or shapes.dtype is not dtype:
            shapes = _shapes(plan, size, module.batch_first, dtype)
        if shapes.ok:
            init = (0, 0) if hx is None else _state_ptrs(hx, plan, shapes.states, dtype)
            if init is not None:
                isa = _backend._local.isa  # _backend.current_isa()
                stack = plan.cache.current(params) if isa == plan.isa and tuple(table) == plan.keys else None
                if stack is None:
                    stack = plan.core(table, isa)
                B, likes = shapes.B, shapes.likes
                out, f0 = torch.empty_like(likes[0]), torch.empty_like(likes[1])
                if plan.n_states == 1:
                    stack.run_ptr(shapes.T, B, input.data_ptr(), init[0], 0, out.data_ptr(), f0.data_ptr(), 0,
                                  _threads(plan, B))
                    return out, f0
                f1 = torch.empty_like(likes[2])
                stack.run_ptr(shapes.T, B, input.data_ptr(), init[0], init[1], out.data_ptr(), f0.data_ptr(),
                              f1.data_ptr(), _threads(plan, B))
                return out, (f0, f1)

    # The plain case, checked here: a (T, B, I) tensor (or (B, T, I) with batch_first)
    # without lengths, and the initial states absent or given in full.
    batch = xn = None
    if lengths is None and type(input) is Tensor and input.dtype == dtype and input.is_cpu \
            and not input.requires_grad:
        size = input.shape
        if len(size) == 3 and size[2] == plan.input_size and size[0] and size[1]:
            init = (None, None) if hx is None else \
                _plain_states(hx, plan, size[0] if module.batch_first else size[1], dtype)
            if init is not None:
                xn = input.numpy()  # a view (the binding reads a strided one through a C-order copy)
                if module.batch_first:
                    xn = xn.transpose(1, 0, 2)
                lens = None
    if xn is None:  # anything else: the modules' checks and shapes
        probe = input.data if isinstance(input, PackedSequence) else input
        if not (type(probe) in _PLAIN and probe.is_cpu and probe.dtype in _NUMPY):
            return None  # a tensor subclass (fake, functional, ...) or no native kernel
        batch = batch_class(input, lengths, module.batch_first, module.input_size, dtype)
        if batch.B == 0:
            return None
        shapes = [(plan.L * plan.D, batch.B, w) for w in plan.widths]
        states = module._initial_states(plan.spec, batch, hx, shapes, dtype)
        if any(s is not None and type(s) not in _PLAIN for s in states):
            return None
        xn = batch.x.detach().numpy()
        init = [None if s is None else s.detach().numpy() for s in states] + [None]
        lens = None if batch.lengths is None else batch.lengths.numpy()

    T, B = xn.shape[0], xn.shape[1]
    npt = _NUMPY[dtype]
    out = np.empty((T, B, plan.D * plan.width), npt)
    f0 = np.empty((plan.L * plan.D, B, plan.widths[0]), npt)
    f1 = np.empty((plan.L * plan.D, B, plan.widths[1]), npt) if plan.n_states > 1 else None
    plan.core(table, _backend.current_isa()).run(xn, lens, init[0], init[1], out, f0, f1, _threads(plan, B))

    finals = [torch.from_numpy(f0)] if f1 is None else [torch.from_numpy(f0), torch.from_numpy(f1)]
    if batch is None:  # (B, T, F) with batch_first, a view as torch.nn returns it
        result = torch.from_numpy(out.transpose(1, 0, 2) if module.batch_first else out)
    else:
        result = batch.output(torch.from_numpy(out))
        finals = [batch.final(f) for f in finals]
    return result, (finals[0] if len(finals) == 1 else tuple(finals))
