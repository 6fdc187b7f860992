"""The native kernels as torch.library custom ops, for torch.compile, torch.export and ONNX.

Eager calls run the autograd Functions of :mod:`rnnkit.functional` directly (an op
dispatch costs more than a small recurrence; see docs/interop.md). When a graph is
being captured (Dynamo, torch.export, torch.jit.trace for ONNX, or any tracing tensor
subclass) :func:`rnnkit.functional._apply` routes the same Function through one op
per kernel instead, so the graph holds an opaque, shape-inferable call:

    rnnkit::<kernel>(Tensor x, Tensor? state0 ..., Tensor w_ih, ..., Tensor? lengths,
                     int[] config) -> (out, *final states, *buffers)
    rnnkit::<kernel>_backward(saved tensors ..., grads of out and final states,
                              int[] config) -> (grad of every tensor input)

``config`` holds the Function's integer arguments (activation codes, ``reset_after``,
the ISA). ``buffers`` are what the backward pass reads (the states ``hs`` of every step,
gate activations, ...); outputs never alias each other, so ``out`` is a copy where the
Function returns a view of ``hs``. The op implementations call the Functions' own
``forward`` / ``backward`` with a recording context: one code path for the math.
An extra optional tensor argument (a new parameter) is one more entry in ``args``.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import functional

__all__: list = []


@dataclass(frozen=True)
class _Kernel:
    """How one autograd Function of functional.py maps onto a pair of custom ops.

    args: the Function's tensor arguments, in order (``?`` marks an optional one).
    config: names of its trailing integer arguments, before the recorder.
    n_finals: number of final states it returns after ``out``.
    buffers: names of the tensors ``forward`` saves that are not inputs (op outputs).
    extras: which buffers (by index) ``forward`` returns after the finals.
    recurrent: names of the recurrent weights it saves (contiguous, or None when an
        optional one is absent) after x, w_ih.
    shapes: fake-tensor shapes of out, finals and buffers from (T, B, sizes).
    """

    name: str
    function: type
    args: Tuple[str, ...]
    config: Tuple[str, ...]
    n_finals: int
    buffers: Tuple[str, ...]
    extras: Tuple[int, ...]
    recurrent: Tuple[str, ...]
    shapes: Callable


def _sizes(args: dict) -> Tuple[int, int]:
    """(H, S): hidden size and state size of a layer from its weights."""
    if "w_yh" in args:
        H, O = args["w_yh"].shape
        return H, O
    if args.get("w_hr") is not None:  # a projected LSTM: h is P wide
        P, H = args["w_hr"].shape
        return H, P
    H = args["w_hh"].shape[1]
    return H, H


def _elman_shapes(T, B, H, S):
    return [(T, B, H), (B, H)], [(T + 1, B, H)]


def _lstm_shapes(T, B, H, S):  # S: the width of h (P with a projection)
    return [(T, B, S), (B, S), (B, H)], [(T + 1, B, S), (T + 1, B, H), (T, B, 4 * H)]


def _ln_lstm_shapes(T, B, H, S):
    return [(T, B, H), (B, H), (B, H)], [(T, B, 4 * H), (T, B, 1), (T + 1, B, H), (T + 1, B, H), (T, B, 4 * H),
                                         (T, B, 4 * H)]


def _ln_gru_shapes(T, B, H, S):
    return [(T, B, H), (B, H)], [(T, B, 3 * H), (T, B, 1), (T + 1, B, H), (T, B, 3 * H), (T, B, 3 * H)]


def _gru_shapes(T, B, H, S):
    return [(T, B, H), (B, H)], [(T + 1, B, H), (T, B, 3 * H), (T, B, H)]


def _jordan_shapes(T, B, H, O):
    return [(T, B, O), (B, O)], [(T, B, H), (T + 1, B, O)]


KERNELS = {k.name: k for k in (
    _Kernel("elman", functional._Elman, ("x", "h0?", "w_ih", "w_hh", "b_ih?", "b_hh?", "lengths?"),
            ("act", "isa"), 1, ("hs",), (0,), ("w_hh",), _elman_shapes),
    _Kernel("lstm", functional._LSTM, ("x", "h0?", "c0?", "w_ih", "w_hh", "b_ih?", "b_hh?", "w_ch?", "w_hr?",
                     "lengths?"), ("isa",), 2, ("hs", "cs", "gates"), (1, 2), ("w_hh", "w_ch", "w_hr"), _lstm_shapes),
    _Kernel("ln_lstm", functional._LNLSTM, ("x", "h0?", "c0?", "w_ih", "w_hh", "b_ih?", "b_hh?", "gamma_ih",
                                             "gamma_hh", "gamma_c", "beta_c", "lengths?"),
            ("isa",), 2, ("x_hat", "rho", "hs", "cs", "gates", "raw"), (3, 4),
            ("w_hh", "gamma_ih", "gamma_hh", "gamma_c", "beta_c"), _ln_lstm_shapes),
    _Kernel("ln_gru", functional._LNGRU, ("x", "h0?", "w_ih", "w_hh", "b_ih?", "b_hh?", "gamma_ih", "gamma_hh",
                                           "lengths?"),
            ("isa",), 1, ("x_hat", "rho", "hs", "gates", "raw"), (3,), ("w_hh", "gamma_ih", "gamma_hh", "b_hh"),
            _ln_gru_shapes),
    _Kernel("gru", functional._GRU, ("x", "h0?", "w_ih", "w_hh", "b_ih?", "b_hh?", "lengths?"),
            ("reset_after", "isa"), 1, ("hs", "gates", "hn"), (1,), ("w_hh",), _gru_shapes),
    _Kernel("jordan", functional._Jordan, ("x", "y0?", "w_ih", "w_yh", "w_hy", "b_ih?", "b_yh?", "b_hy?", "lengths?"),
            ("act", "out_act", "isa"), 1, ("hs", "ys"), (0,), ("w_yh", "w_hy"), _jordan_shapes),
)}


class _Ctx:
    """Stands in for autograd's ctx around a Function's forward / backward."""

    def __init__(self, **attrs):
        self.__dict__.update(attrs)
        self.saved_tensors: tuple = ()

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


def _arg_names(k: _Kernel) -> List[str]:
    return [a.rstrip("?") for a in k.args]


def _config(k: _Kernel, config: Sequence[int]) -> list:
    """The op's int[] config as the Function's arguments (``reset_after`` a bool)."""
    return [bool(v) if name == "reset_after" else int(v) for name, v in zip(k.config, config)]


def _ctx_attrs(k: _Kernel, inputs: dict, config: Sequence[int]) -> dict:
    """The attributes a Function's forward sets on ctx, which its backward reads."""
    attrs = dict(zip(k.config, _config(k, config)), recorder=None, w_ih_index=_arg_names(k).index("w_ih"))
    attrs["has_bias"] = tuple(inputs[a] is not None for a in _arg_names(k) if a.startswith("b_"))
    attrs["needs_input_grad"] = (True,) * (len(k.args) + len(k.config) + 1)
    return attrs


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


def _define(k: _Kernel) -> None:
    names = _arg_names(k)
    params = ", ".join(f"Tensor{'?' if a.endswith('?') else ''} {a.rstrip('?')}" for a in k.args)
    n_out = 1 + k.n_finals + len(k.buffers)
    lib_name = f"rnnkit::{k.name}"

    # ---- forward: the Function's forward, outputs made fresh (no aliasing)
    def forward_impl(*args):
        *tensors, config = args
        inputs = dict(zip(names, tensors))
        ctx = _Ctx()
        res = k.function.forward(ctx, *tensors, *_config(k, config), None)
        out, finals = res[0], res[1:1 + k.n_finals]
        saved = ctx.saved_tensors  # (x, w_ih, *recurrent, *buffers, lengths)
        buffers = saved[2 + len(k.recurrent):-1]
        if any(out.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() for b in buffers):
            out = out.clone()
        return (out, *finals, *buffers)

    schema = f"({params}, int[] config) -> ({', '.join(['Tensor'] * n_out)})"
    torch.library.define(lib_name, schema)
    torch.library.impl(lib_name, "CPU")(forward_impl)

    def forward_fake(*args):
        *tensors, _config = args
        inputs = dict(zip(names, tensors))
        x = inputs["x"]
        T, B = x.shape[0], x.shape[1]
        H, S = _sizes(inputs)
        outs, bufs = k.shapes(T, B, H, S)
        return tuple(x.new_empty(s) for s in outs + bufs)

    torch.library.register_fake(lib_name)(forward_fake)

    # ---- backward: the Function's backward on the saved tensors
    back_params = ", ".join([f"Tensor{'?' if a.endswith('?') else ''} {a.rstrip('?')}" for a in k.args]
                            + [f"Tensor {b}" for b in k.buffers]
                            + ["Tensor d_out"] + [f"Tensor d_final{i}" for i in range(k.n_finals)])
    back_name = f"rnnkit::{k.name}_backward"
    torch.library.define(back_name, f"({back_params}, int[] config) -> ({', '.join(['Tensor'] * len(k.args))})")

    def backward_impl(*args):
        *tensors, config = args
        n = len(k.args)
        inputs = dict(zip(names, tensors[:n]))
        buffers = tensors[n:n + len(k.buffers)]
        grads = tensors[n + len(k.buffers):]
        ctx = _Ctx(**_ctx_attrs(k, inputs, config))
        recurrent = [None if inputs[r] is None else inputs[r].contiguous() for r in k.recurrent]
        ctx.saved_tensors = (inputs["x"], inputs["w_ih"], *recurrent, *buffers, inputs["lengths"])
        extras = [None] * len(k.extras)
        result = k.function.backward(ctx, *grads, *extras)[:n]
        return tuple(_empty(inputs["x"]) if g is None else g.contiguous() for g in result)

    torch.library.impl(back_name, "CPU")(backward_impl)

    def backward_fake(*args):
        *tensors, _config = args
        x = tensors[0]
        return tuple(_empty(x) if t is None or name == "lengths" else torch.empty_like(t)
                     for name, t in zip(names, tensors[:len(k.args)]))

    torch.library.register_fake(back_name)(backward_fake)

    # ---- autograd: forward op + backward op
    def setup_context(ctx, inputs, output):
        *tensors, config = inputs
        ctx.config = list(config)
        ctx.optional = [t is None for t in tensors]
        ctx.save_for_backward(*[t if t is not None else _empty(tensors[0]) for t in tensors],
                              *output[1 + k.n_finals:])

    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        n = len(k.args)
        tensors = [None if absent else t for t, absent in zip(saved[:n], ctx.optional)]
        buffers = saved[n:]
        user = []
        for g, like in zip(grads[:1 + k.n_finals], forward_fake_like(tensors, buffers)):
            user.append(torch.zeros(like, dtype=saved[0].dtype) if g is None else g)
        result = getattr(torch.ops.rnnkit, f"{k.name}_backward")(*tensors, *buffers, *user, ctx.config)
        return (*[None if t is None or name == "lengths" else g for name, t, g in zip(names, tensors, result)],
                None)

    def forward_fake_like(tensors, buffers):
        inputs = dict(zip(names, tensors))
        x = inputs["x"]
        H, S = _sizes(inputs)
        return k.shapes(x.shape[0], x.shape[1], H, S)[0]

    torch.library.register_autograd(lib_name, backward, setup_context=setup_context)


# torch.library's register_fake / register_autograd arrived in torch 2.4; before it
# rnnkit runs eagerly only (capturing() is then False).
HAVE_OPS = hasattr(torch.library, "register_autograd") and hasattr(torch.library, "register_fake")
if HAVE_OPS:
    for _kernel in KERNELS.values():
        _define(_kernel)


def _allow_rnn_in_dynamo() -> None:
    """Lets Dynamo trace rnnkit's layers.

    They subclass torch.nn.RNN / LSTM / GRU (the drop-in contract), and Dynamo refuses
    those classes unless ``torch._dynamo.config.allow_rnn`` is set (torch.export sets it
    for its own tracing; with it, torch.nn's layers trace to aten::lstm and friends).
    rnnkit sets it when Dynamo's config loads, without importing Dynamo itself (2.5 s):
    now if it is loaded, else from a one-shot import hook. A user may set it back.
    """
    loaded = sys.modules.get("torch._dynamo.config")
    if loaded is not None:
        loaded.allow_rnn = True
        return

    class _Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "torch._dynamo.config":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            exec_module = spec.loader.exec_module

            def exec_and_allow(module):
                exec_module(module)
                module.allow_rnn = True

            spec.loader.exec_module = exec_and_allow
            return spec

    sys.meta_path.insert(0, _Hook())


_allow_rnn_in_dynamo()


def capturing(x: Tensor) -> bool:
    """Whether a graph is being captured, so that the kernels must run as ops."""
    return HAVE_OPS and (torch.compiler.is_compiling() or torch.jit.is_tracing()
                         or type(x) not in (Tensor, torch.nn.Parameter))


def _apply(k: _Kernel, *args):
    """What ``k.function.apply(*args)`` returns, computed through the kernel's custom op."""
    n = len(k.args)
    tensors, config, recorder = args[:n], args[n:n + len(k.config)], args[-1]
    if recorder is not None:
        raise NotImplementedError("grad_recorder: recording per-step gradients is not supported while a graph is "
                                  "captured (torch.compile / torch.export / ONNX export); run it eagerly")
    if torch.jit.is_tracing():  # torch.onnx.export(..., dynamo=False) called directly: the symbolics
        from .export import register_onnx_symbolics
        register_onnx_symbolics()
    res = getattr(torch.ops.rnnkit, k.name)(*tensors, [int(c) for c in config])
    out, finals, buffers = res[0], res[1:1 + k.n_finals], res[1 + k.n_finals:]
    return (out, *finals, *[buffers[i] for i in k.extras])


def _attach(k: _Kernel) -> None:
    """``Function.op_apply(*args)``: a static method, which Dynamo traces (it compares no classes)."""
    def op_apply(*args):
        return _apply(k, *args)
    k.function.op_apply = staticmethod(op_apply)


for _k in KERNELS.values():
    _attach(_k)
del _k
