"""Step-by-step inference: one native call per time step, no autograd, no allocation.

For online use (audio frames, sensor readings, text generation) where inputs arrive
one step at a time. A :class:`Stream` packs the module's weights once into the core's
layout, keeps every layer's state, and advances all layers one step per
:meth:`Stream.step` call.

Example::

    >>> lstm = rnnkit.LSTM(8, 64, num_layers=2).eval()
    >>> stream = rnnkit.Stream(lstm)                 # batch_size=1
    >>> for frame in frames:                          # each (8,), torch or NumPy
    ...     h = stream.step(frame)                    # (64,): the top layer's new h
    >>> h_n, c_n = stream.state()                     # (2, 1, 64) each, as torch.nn

The stream equals the module run over the whole sequence (a test checks it). It copies
the weights when it is made: after changing the module, make a new stream.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.graph import increment_version as _increment_version

from . import _backend, _core
from . import networks
from ._stack import _is_buffer
from .functional import _sum_bias
from .modules import _layer_params

__all__ = ["Stream"]

def _layer_norm(p: dict) -> bool:
    """Whether one layer's parameters (role -> tensor) are layer-normalised (SPEC section 15)."""
    return p.get("ln_gain_hh") is not None


def _kernel_params(spec, p: dict, hyper: dict) -> list:
    """One layer's five entries of the core's Stream: W_ih, the input-side bias (every
    bias that adds to W_ih x), then the kernel's own weights (csrc/stream.cpp). Layer-
    normalised (the core's layer_norm=True, csrc/rnnkit.h): the gains in one array, then
    the GRU's b_hh, which is not folded (it adds to the normalised recurrent side)."""
    d = lambda t: None if t is None else t.detach().contiguous()  # noqa: E731
    if _layer_norm(p):
        gains = torch.cat([p[r].detach() for r in ("ln_gain_ih", "ln_gain_hh", "ln_gain_c", "ln_bias_c")
                           if p.get(r) is not None])
        if spec.kernel == "gru":
            return [d(p["weight_ih"]), d(p["bias_ih"]), d(p["weight_hh"]), gains, d(p["bias_hh"])]
        return [d(p["weight_ih"]), _fold(p["bias_ih"], p["bias_hh"]), d(p["weight_hh"]), gains, None]
    if spec.kernel == "jordan":
        return [d(p["weight_ih"]), _fold(p["bias_ih"], p["bias_yh"]), d(p["weight_yh"]), d(p["weight_hy"]),
                d(p["bias_hy"])]
    b_hh = p["bias_hh"]
    if spec.kernel == "gru" and hyper["reset_after"] and b_hh is not None:
        H = p["weight_hh"].shape[1]  # b_hn stays inside r * (W_hn h + b_hn)
        return [d(p["weight_ih"]), _fold(p["bias_ih"], torch.cat([b_hh.detach()[:2 * H], b_hh.new_zeros(H)])),
                d(p["weight_hh"]), d(b_hh[2 * H:]), None]
    return [d(p["weight_ih"]), _fold(p["bias_ih"], b_hh), d(p["weight_hh"]), d(p.get("weight_ch")),
            d(p.get("weight_hr"))]


def _fold(*biases: Optional[Tensor]) -> Optional[Tensor]:
    """The sum of the biases that are present (None if none is), contiguous."""
    total = _sum_bias(*biases)
    return None if total is None else total.contiguous()


def _describe(module: nn.Module):
    """(network, layers, sizes, params) of a streamable module: per layer (I, H, O) and
    the five parameter entries of :func:`_kernel_params`."""
    spec = networks.network_of(module, None)
    if spec is None:
        raise TypeError(f"module: expected an rnnkit recurrent layer or cell ({', '.join(networks.names())}), "
                        f"got {type(module).__name__}")
    if getattr(module, "bidirectional", False):
        raise ValueError("module: a bidirectional layer needs the whole sequence and cannot be streamed; "
                         "expected a unidirectional module")
    if hasattr(module, "_check_supported"):
        module._check_supported()
    for setting in spec.not_streamed:
        if getattr(module, setting, False):
            raise NotImplementedError(f"module: rnnkit.Stream does not run {setting}={getattr(module, setting)!r} yet; "
                                      "call the module (or its cell) one step at a time instead")
    is_cell = isinstance(module, spec.cell_class)
    layers = 1 if is_cell else module.num_layers
    width = spec.state_widths(module)[0]  # what a layer emits: h (P wide when projected), or y
    hyper = spec.hyper_of(module)
    sizes, params = [], []
    for l in range(layers):
        layer = [module._parameters.get(r) for r in spec.param_roles] if is_cell else \
            _layer_params(module, spec.param_roles, l, 0)
        params += _kernel_params(spec, dict(zip(spec.param_roles, layer)), hyper)
        O = module.output_size if spec.state_size == "output_size" else getattr(module, "proj_size", 0)
        sizes += [module.input_size if l == 0 else width, module.hidden_size, O]
    return spec, layers, sizes, params


def _core_stream(spec, hyper: dict, batch_size: int, sizes: list, params: list, isa: int, precision: int = -1,
                 native_dot: bool = True, zoneout: float = 0.0, layer_norm: bool = False):
    """The core's stream (csrc/stream.cpp) over the packed copies of ``params``; precision
    -1 keeps the parameters' own, 0 / 1 packs int8 / bf16 weights (rnnkit.quantize);
    ``zoneout``: the rate p, applied as its expected value (inference); ``layer_norm``:
    the params are a layer-normalised network's (:func:`_kernel_params`)."""
    return _core.Stream(isa, _backend.ARCH_CODES[spec.kernel], _backend.ACT_CODES[hyper.get("nonlinearity", "tanh")],
                        _backend.ACT_CODES[hyper.get("output_nonlinearity", "identity")],
                        bool(hyper.get("reset_after", True)), batch_size, sizes, params, precision, native_dot,
                        zoneout, layer_norm)


class Stream:
    """Holds a module's state and advances it one time step per :meth:`step` call.

    Args:
        module: an rnnkit layer of any network in :mod:`rnnkit.networks`
            (unidirectional, any number of layers), or one of the cells. Its weights are copied and packed
            now; inter-layer dropout is not applied (inference).
        batch_size: B, the number of independent streams advanced together (default 1).
        dtype: None (the module's own precision), or reduced-precision weights for a
            float32 module, as :func:`rnnkit.quantize_dynamic`: ``torch.qint8`` or
            ``torch.bfloat16`` (states, inputs and outputs stay float32).

    ``step(x)`` takes x of shape (B, I), or (I,) when B = 1, as a torch tensor or a
    NumPy array of the module's dtype (float32 or float64), and returns the top
    layer's new hidden state (a Jordan network's output y) of shape (B, H) or (H,), of
    the same kind as x. Pass ``out=`` (a C-contiguous array of that shape) to write
    into it without allocating (a tensor that requires grad is refused; a written
    tensor's version counter is bumped, as by an in-place op). A contiguous CPU tensor
    of the module's dtype reaches the core by its address, checked here first, which
    costs less than converting it; any other input goes through NumPy.
    """

    def __init__(self, module: nn.Module, batch_size: int = 1, dtype=None):
        weights = dtype  # (the name dtype is the module's below)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        spec, layers, sizes, params = _describe(module)
        hyper = spec.hyper_of(module)
        dtype = params[0].dtype
        if dtype not in (torch.float32, torch.float64) or params[0].device.type != "cpu":
            raise TypeError(f"module: a stream runs on the CPU in float32 or float64, got {dtype} on "
                            f"{params[0].device}")
        self.batch_size = batch_size
        self.dtype = dtype
        self.layers = layers
        self.input_size = sizes[0]
        self.network = spec
        self._widths = spec.state_widths(module)
        self._width = self._widths[0]
        precision = -1 if weights is None else _lowp_precision(weights, params[0].dtype)
        for setting in spec.not_quantized if precision >= 0 else ():
            if getattr(module, setting, False):
                raise NotImplementedError(f"module: int8 / bf16 weights do not run {setting}=True yet; expected "
                                          "dtype=None (the module's own precision)")
        self._core = _core_stream(spec, hyper, batch_size, sizes, params, _backend.current_isa(), precision,
                                  precision < 0 or _native_dot_wanted(),
                                  getattr(module, "zoneout", 0.0),  # inference: zoneout's expected value
                                  bool(getattr(module, "layer_norm", False)))
        # A team of threads is started for every step: worth it only for large steps.
        self._threads = _backend.num_threads(batch_size, sizes[1], 2 * len(spec.gates), min_macs=1 << 23)
        self._np_dtype = np.float32 if dtype == torch.float32 else np.float64
        self._out = self._out_np = None  # the last `out=` buffer and its NumPy view
        # For the pointer path, batched and (B = 1) unbatched: per shape of x, a tensor of
        # the output's shape and dtype that torch.empty_like copies (the fastest way to
        # allocate one; an expanded scalar, no memory).
        one = torch.empty((), dtype=dtype)
        self._likes = {torch.Size((batch_size, self.input_size)): one.expand(batch_size, self._width)}
        if batch_size == 1:
            self._likes[torch.Size((self.input_size,))] = one.expand(self._width)

    def step(self, x, out=None):
        """Advance one time step with input ``x``; returns the new top-layer state."""
        # torch tensors as they usually come (contiguous, of the module's dtype): their
        # addresses go straight to the core; anything else takes the general path below.
        if type(x) is Tensor and x.dtype is self.dtype and x.is_cpu and x.layout is torch.strided \
                and x.is_contiguous():
            like = self._likes.get(x.shape)  # None: not a shape the stream takes
            if like is not None:
                if out is None:
                    y = torch.empty_like(like)
                    _core.stream_step_ptr(self._core, x.data_ptr(), y.data_ptr(), self._threads)
                    return y
                if _is_buffer(out, self.dtype, like.shape) and not out.requires_grad:
                    _core.stream_step_ptr(self._core, x.data_ptr(), out.data_ptr(), self._threads)
                    _increment_version(out)  # written in place: autograd and plan caches see it
                    return out
        return self._step(x, out)

    def _step(self, x, out):
        """The general path: NumPy arrays, and every check with its error message."""
        B = self.batch_size
        if isinstance(x, Tensor):
            if x.dtype != self.dtype:
                raise TypeError(f"x: expected dtype {self.dtype} like the module, got {x.dtype}")
            if x.device.type != "cpu":
                raise TypeError(f"x: expected a CPU tensor, got device {x.device}")
            xn = x.detach().numpy()  # a view: NumPy arrays cross into C++ cheaply
            as_torch = True
        elif isinstance(x, np.ndarray):
            if x.dtype != self._np_dtype:
                raise TypeError(f"x: expected dtype {np.dtype(self._np_dtype).name} like the module, got {x.dtype}")
            xn, as_torch = x, False
        else:
            raise TypeError(f"x: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
        unbatched = xn.ndim == 1
        if unbatched:
            if B != 1:
                raise ValueError(f"x: expected shape ({B}, {self.input_size}) for batch_size={B}, "
                                 f"got {tuple(x.shape)}")
            xn = xn.reshape(1, -1)
        if xn.shape != (B, self.input_size):
            raise ValueError(f"x: expected shape ({B}, {self.input_size}), got {tuple(x.shape)}")
        if out is None:
            y = torch.empty(B, self._width, dtype=self.dtype) if as_torch else \
                np.empty((B, self._width), dtype=self._np_dtype)
            yn = y.numpy() if as_torch else y
        else:
            if isinstance(out, Tensor) and out.requires_grad:
                raise ValueError("out: a tensor that requires grad cannot be written in place; expected one that "
                                 "does not (e.g. torch.empty(...) or t.detach())")
            y = out
            if out is self._out:  # the same buffer as last call: reuse its NumPy view
                yn = self._out_np
            else:
                yn = out.numpy() if isinstance(out, Tensor) else out
                self._out, self._out_np = out, yn
            yn = yn.reshape(B, self._width) if unbatched else yn
        self._core.step(xn if xn.flags.c_contiguous else np.ascontiguousarray(xn), yn, self._threads)
        if out is not None and isinstance(out, Tensor):
            _increment_version(out)
        return y.reshape(-1) if unbatched and out is None else y

    def state(self):
        """The current state as the module returns it: h (L, B, H); (h, c) for an LSTM;
        y (L, B, O) for a Jordan network (the network's states, rnnkit.networks)."""
        def read(which):
            buf = torch.empty(self.layers, self.batch_size, self._widths[which], dtype=self.dtype)
            for l in range(self.layers):
                self._core.state(l, which, buf[l], False)
            return buf

        states = tuple(read(which) for which in range(len(self.network.states)))
        return states if len(states) > 1 else states[0]

    def reset(self, state=None) -> None:
        """Set the state (zeros if None); same layout as :meth:`state` returns."""
        several = len(self.network.states) > 1
        parts = (list(state) if state is not None else [None] * len(self.network.states)) if several else [state]
        for which, part in enumerate(parts):
            shape = (self.layers, self.batch_size, self._widths[which])
            if part is None:
                part = torch.zeros(shape, dtype=self.dtype)
            part = torch.as_tensor(part, dtype=self.dtype)
            if tuple(part.shape) != shape:
                raise ValueError(f"state: expected shape {shape}, got {tuple(part.shape)}")
            for l in range(self.layers):
                self._core.state(l, which, part[l].contiguous(), True)


def _lowp_precision(dtype, param_dtype) -> int:
    """The core's code for reduced-precision weights (rnnkit.quantize), from float32 parameters."""
    from .quantize import _precision  # quantize imports this module

    code = _precision(dtype)[1]
    if param_dtype != torch.float32:
        raise TypeError(f"module: {dtype} weights are made from float32 parameters, got {param_dtype}")
    return code


def _native_dot_wanted() -> bool:
    from .quantize import _native_dot_wanted as wanted

    return wanted()
