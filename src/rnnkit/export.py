"""ONNX export of rnnkit layers to the standard ONNX ``RNN``, ``LSTM`` and ``GRU`` operators.

:func:`to_onnx` traces a layer (or any model holding rnnkit layers) with
``torch.onnx.export(..., dynamo=False)``; while it traces, every layer runs through its
custom op (:mod:`rnnkit._ops`), whose ONNX symbolic below writes one standard operator
per layer and direction, with the weights rearranged to ONNX's conventions:

==============  ==============  ===============================================
rnnkit          ONNX operator   rearrangement
==============  ==============  ===============================================
RNN             RNN             activation Tanh / Relu / Affine(1, 0) (identity)
LSTM            LSTM            gate rows i, f, g, o -> i, o, f, c
GRU (after)     GRU             rows r, z, n -> z, r, h; ``linear_before_reset=1``
GRU (before)    GRU             the same, ``linear_before_reset=0``, and the z rows
                                negated: ONNX's h = (1 - z) n + z h_prev with
                                z = sigmoid(-a_z) = 1 - sigmoid(a_z) is the seeds'
                                h = (1 - z) h_prev + z n
==============  ==============  ===============================================

``lengths`` become ``sequence_lens`` (ONNX, like rnnkit, emits zeros past a sequence's
length and returns its last valid state). The Jordan network and the LSTM with a
projection (``proj_size``; ONNX's LSTM has none) have no standard operator and are written
as an ONNX ``Loop`` over time (:func:`_sym_jordan`, :func:`_sym_lstm_projected`). Graphs
are float32 or float64, with T and B dynamic.

>>> lstm = rnnkit.LSTM(8, 16, num_layers=2)
>>> rnnkit.export.to_onnx(lstm, "lstm.onnx", torch.randn(5, 3, 8))
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from . import _ops, networks

__all__ = ["to_onnx"]

OPSET = 17  # what to_onnx writes
MIN_OPSET = 13  # the symbolics' Squeeze / Unsqueeze take their axes as inputs (opset 13)


def _helpers():
    from torch.onnx._internal.torchscript_exporter import symbolic_helper
    return symbolic_helper


def _absent(g):
    """A missing optional ONNX input."""
    n = g.op("prim::Constant")
    n.setType(torch._C.OptionalType.ofTensor())
    return n


def _const(g, values, dtype=torch.int64):
    return g.op("Constant", value_t=torch.tensor(values, dtype=dtype))


def _rows(g, w, blocks: Sequence[int], H: int, negate: Sequence[int] = ()):
    """The row blocks ``blocks`` (of H rows each) of w, in that order, the ones listed in
    ``negate`` negated, with ONNX's leading num_directions axis: (1, len(blocks) H, ...)."""
    parts = []
    for b in blocks:
        part = g.op("Gather", w, _const(g, list(range(b * H, (b + 1) * H))), axis_i=0)
        parts.append(g.op("Neg", part) if b in negate else part)
    return g.op("Unsqueeze", g.op("Concat", *parts, axis_i=0), _const(g, [0]))


def _bias(g, b, like_w, G: int):
    """A bias or, when absent, zeros (G,) of the weight's dtype."""
    sh = _helpers()
    if not sh._is_none(b):
        return b
    dtype = sh._type_utils.JitScalarType.from_value(like_w).dtype()
    return g.op("Constant", value_t=torch.zeros(G, dtype=dtype))


def _standard(g, op_type: str, x, states, w_ih, w_hh, b_ih, b_hh, lengths, blocks, H: int, negate=(),
              extra=(), **attrs):
    """One standard ONNX recurrent operator; returns (out (T, B, H), *finals (B, H)).
    ``extra``: inputs after the initial states (the LSTM's peepholes P)."""
    sh = _helpers()
    G = len(blocks) * H
    W = _rows(g, w_ih, blocks, H, negate)
    R = _rows(g, w_hh, blocks, H, negate)
    Bias = g.op("Concat", _rows(g, _bias(g, b_ih, w_ih, G), blocks, H, negate),
                _rows(g, _bias(g, b_hh, w_ih, G), blocks, H, negate), axis_i=1)
    seq = _absent(g) if sh._is_none(lengths) else g.op("Cast", lengths, to_i=6)  # int32
    init = [_absent(g) if sh._is_none(s) else g.op("Unsqueeze", s, _const(g, [0])) for s in states]
    outputs = g.op(op_type, x, W, R, Bias, seq, *init, *extra, hidden_size_i=H, outputs=1 + len(states), **attrs)
    Y, *finals = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    out = g.op("Squeeze", Y, _const(g, [1]))  # (T, 1, B, H) -> (T, B, H)
    return (out, *[g.op("Squeeze", f, _const(g, [0])) for f in finals])


def _hidden(w_hh) -> int:
    return _helpers()._get_tensor_sizes(w_hh)[1]


def _sym_elman(g, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, config):
    act = _helpers()._parse_arg(config, "is")[0]
    name = {v: k for k, v in _backend_codes().items()}[act]
    attrs = {"activations_s": [{"tanh": "Tanh", "relu": "Relu", "identity": "Affine"}[name]]}
    if name == "identity":
        attrs.update(activation_alpha_f=[1.0], activation_beta_f=[0.0])
    out, h_n = _standard(g, "RNN", x, [h0], w_ih, w_hh, b_ih, b_hh, lengths, (0,), _hidden(w_hh), **attrs)
    return out, h_n, out  # (hs: unused by forward)


def _sym_lstm(g, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ch, w_hr, lengths, config):
    if not _helpers()._is_none(w_hr):  # ONNX's LSTM has no projection
        return _sym_lstm_projected(g, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ch, w_hr, lengths)
    H = _hidden(w_hh)
    # peepholes: rnnkit stores (p_i, p_f, p_o) (SPEC section 13), ONNX's P is (p_i, p_o, p_f)
    extra = () if _helpers()._is_none(w_ch) else (_rows(g, w_ch, (0, 2, 1), H),)
    out, h_n, c_n = _standard(g, "LSTM", x, [h0, c0], w_ih, w_hh, b_ih, b_hh, lengths, (0, 3, 1, 2), H,
                              extra=extra)
    return out, h_n, c_n, out, out, out  # (hs, cs, gates: unused by forward)


def _sym_lstm_projected(g, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ch, w_hr, lengths):
    """The projected LSTM (SPEC section 14) as an ONNX Loop over time, as the Jordan
    network: xw = x W_ih^T + b_ih + b_hh for all steps before the loop; per step the gates
    of xw_t + h W_hh^T (with the peephole terms when given), c' = f c + i g,
    h' = (o tanh(c')) W_hr^T; past a sequence's length the states are kept and the step
    emits zeros."""
    sh = _helpers()
    P, H = sh._get_tensor_sizes(w_hr)
    xw = g.op("MatMul", x, g.op("Transpose", w_ih, perm_i=[1, 0]))  # (T, B, 4H)
    for b in (b_ih, b_hh):
        if not sh._is_none(b):
            xw = g.op("Add", xw, b)
    shape = g.op("Shape", x)
    B = g.op("Gather", shape, _const(g, [1]), axis_i=0)
    dtype = sh._type_utils.JitScalarType.from_value(x).dtype()
    zeros = lambda n: g.op("ConstantOfShape", g.op("Concat", B, _const(g, [n]), axis_i=0),  # noqa: E731
                           value_t=torch.zeros(1, dtype=dtype))
    h0 = zeros(P) if sh._is_none(h0) else h0
    c0 = zeros(H) if sh._is_none(c0) else c0
    peep = [] if sh._is_none(w_ch) else [g.op("Slice", w_ch, _const(g, [k * H]), _const(g, [(k + 1) * H]),
                                             _const(g, [0])) for k in range(3)]  # p_i, p_f, p_o
    loop, body, i, (h, c) = _time_loop(g, x, [h0, c0], outputs=3)
    a = body.op("Add", body.op("Gather", xw, i, axis_i=0),
                body.op("MatMul", h, body.op("Transpose", w_hh, perm_i=[1, 0])))  # (B, 4H)
    a_i, a_f, a_g, a_o = [body.op("Slice", a, _const(body, [k * H]), _const(body, [(k + 1) * H]), _const(body, [1]))
                          for k in range(4)]
    if peep:
        a_i, a_f = body.op("Add", a_i, body.op("Mul", peep[0], c)), body.op("Add", a_f, body.op("Mul", peep[1], c))
    c_new = body.op("Add", body.op("Mul", body.op("Sigmoid", a_f), c),
                    body.op("Mul", body.op("Sigmoid", a_i), body.op("Tanh", a_g)))
    if peep:
        a_o = body.op("Add", a_o, body.op("Mul", peep[2], c_new))
    m = body.op("Mul", body.op("Sigmoid", a_o), body.op("Tanh", c_new))  # (B, H)
    h_new = body.op("MatMul", m, body.op("Transpose", w_hr, perm_i=[1, 0]))  # (B, P)
    emit = h_new
    if not sh._is_none(lengths):
        active = body.op("Unsqueeze", body.op("Less", i, lengths), _const(body, [1]))  # (B, 1)
        h_new, c_new = body.op("Where", active, h_new, h), body.op("Where", active, c_new, c)
        emit = body.op("Where", active, emit, body.op("Sub", emit, emit))
    _end_loop(body, h_new, c_new, emit)
    h_n, c_n, out = loop
    return out, h_n, c_n, out, out, out  # (hs, cs, gates: unused by forward)


def _sym_ln_lstm(g, x, h0, c0, w_ih, w_hh, b_ih, b_hh, gamma_ih, gamma_hh, gamma_c, beta_c, lengths, config):
    """The layer-normalised LSTM (SPEC section 15) as an ONNX Loop over time: every
    normalisation written out (a mean is a product with a constant 1/n column, which no
    opset changes) around the LSTM step; past a sequence's length the states are kept and
    the step emits zeros."""
    sh = _helpers()
    H = _hidden(w_hh)
    dtype = sh._type_utils.JitScalarType.from_value(x).dtype()
    norm = functools.partial(_norm, dtype=dtype)
    xw = norm(g, g.op("MatMul", x, g.op("Transpose", w_ih, perm_i=[1, 0])), 4 * H, gamma_ih)  # (T, B, 4H)
    for b in (b_ih, b_hh):
        if not sh._is_none(b):
            xw = g.op("Add", xw, b)
    B = g.op("Gather", g.op("Shape", x), _const(g, [1]), axis_i=0)
    zeros = g.op("ConstantOfShape", g.op("Concat", B, _const(g, [H]), axis_i=0), value_t=torch.zeros(1, dtype=dtype))
    h0 = zeros if sh._is_none(h0) else h0
    c0 = zeros if sh._is_none(c0) else c0
    loop, body, i, (h, c) = _time_loop(g, x, [h0, c0], outputs=3)
    a = body.op("Add", body.op("Gather", xw, i, axis_i=0),
                norm(body, body.op("MatMul", h, body.op("Transpose", w_hh, perm_i=[1, 0])), 4 * H, gamma_hh))
    a_i, a_f, a_g, a_o = [body.op("Slice", a, _const(body, [k * H]), _const(body, [(k + 1) * H]), _const(body, [1]))
                          for k in range(4)]
    c_new = body.op("Add", body.op("Mul", body.op("Sigmoid", a_f), c),
                    body.op("Mul", body.op("Sigmoid", a_i), body.op("Tanh", a_g)))
    h_new = body.op("Mul", body.op("Sigmoid", a_o), body.op("Tanh", norm(body, c_new, H, gamma_c, beta_c)))
    emit = h_new
    if not sh._is_none(lengths):
        active = body.op("Unsqueeze", body.op("Less", i, lengths), _const(body, [1]))  # (B, 1)
        h_new, c_new = body.op("Where", active, h_new, h), body.op("Where", active, c_new, c)
        emit = body.op("Where", active, emit, body.op("Sub", emit, emit))
    _end_loop(body, h_new, c_new, emit)
    h_n, c_n, out = loop
    return out, h_n, c_n, out, out, out, out, out, out  # (x_hat, rho, hs, cs, gates, raw: unused by forward)


def _norm(gr, v, n: int, gain, bias=None, *, dtype):
    """gain * (v - mean) / sqrt(var + eps) (+ bias) over the last axis of n units (SPEC section 15)."""
    col = gr.op("Constant", value_t=torch.full((n, 1), 1.0 / n, dtype=dtype))  # a mean is a product with it
    d = gr.op("Sub", v, gr.op("MatMul", v, col))
    eps = gr.op("Constant", value_t=torch.tensor(1e-5, dtype=dtype))
    y = gr.op("Mul", gr.op("Div", d, gr.op("Sqrt", gr.op("Add", gr.op("MatMul", gr.op("Mul", d, d), col), eps))), gain)
    return y if _helpers()._is_none(bias) else gr.op("Add", y, bias)


def _sym_ln_gru(g, x, h0, w_ih, w_hh, b_ih, b_hh, gamma_ih, gamma_hh, lengths, config):
    """The layer-normalised GRU (SPEC section 15, reset after) as an ONNX Loop over time."""
    sh = _helpers()
    H = _hidden(w_hh)
    dtype = sh._type_utils.JitScalarType.from_value(x).dtype()
    xw = _norm(g, g.op("MatMul", x, g.op("Transpose", w_ih, perm_i=[1, 0])), 3 * H, gamma_ih, b_ih, dtype=dtype)
    if sh._is_none(h0):
        B = g.op("Gather", g.op("Shape", x), _const(g, [1]), axis_i=0)
        h0 = g.op("ConstantOfShape", g.op("Concat", B, _const(g, [H]), axis_i=0), value_t=torch.zeros(1, dtype=dtype))
    loop, body, i, (h,) = _time_loop(g, x, [h0], outputs=2)
    q = _norm(body, body.op("MatMul", h, body.op("Transpose", w_hh, perm_i=[1, 0])), 3 * H, gamma_hh, b_hh,
              dtype=dtype)
    x_t = body.op("Gather", xw, i, axis_i=0)
    part = lambda v, k: body.op("Slice", v, _const(body, [k * H]), _const(body, [(k + 1) * H]), _const(body, [1]))  # noqa: E731
    r = body.op("Sigmoid", body.op("Add", part(x_t, 0), part(q, 0)))
    z = body.op("Sigmoid", body.op("Add", part(x_t, 1), part(q, 1)))
    n = body.op("Tanh", body.op("Add", part(x_t, 2), body.op("Mul", r, part(q, 2))))
    h_new = body.op("Add", n, body.op("Mul", z, body.op("Sub", h, n)))  # (1 - z) n + z h
    emit = h_new
    if not sh._is_none(lengths):
        active = body.op("Unsqueeze", body.op("Less", i, lengths), _const(body, [1]))  # (B, 1)
        h_new = body.op("Where", active, h_new, h)
        emit = body.op("Where", active, emit, body.op("Sub", emit, emit))
    _end_loop(body, h_new, emit)
    h_n, out = loop
    return out, h_n, out, out, out, out, out  # (x_hat, rho, hs, gates, raw: unused by forward)


def _time_loop(g, x, states, outputs: int):
    """An ONNX Loop over the T steps of x carrying ``states``; returns (the Loop's outputs,
    its body graph, the step index, the body's carried states). Close it with _end_loop."""
    from torch.onnx._internal.torchscript_exporter import jit_utils, utils

    T = g.op("Gather", g.op("Shape", x), _const(g, 0), axis_i=0)
    true = g.op("Constant", value_t=torch.tensor(True))
    loop, (body,), _ = jit_utils.add_op_with_blocks(g, "Loop", T, true, *states, outputs=outputs, n_blocks=1)
    i = utils._add_input_to_block(body.block)
    utils._add_input_to_block(body.block)  # condition
    carried = [utils._add_input_to_block(body.block) for _ in states]
    return loop, body, i, carried


def _end_loop(body, *outputs):
    """The body's outputs: the condition (always true), the new states, then what each step emits."""
    from torch.onnx._internal.torchscript_exporter import utils

    utils._add_output_to_block(body.block, body.op("Identity", body.op("Constant", value_t=torch.tensor(True))))
    for o in outputs:
        utils._add_output_to_block(body.block, o)


def _sym_gru(g, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, config):
    reset_after = bool(_helpers()._parse_arg(config, "is")[0])
    out, h_n = _standard(g, "GRU", x, [h0], w_ih, w_hh, b_ih, b_hh, lengths, (1, 0, 2), _hidden(w_hh),
                         negate=() if reset_after else (1,), linear_before_reset_i=int(reset_after))
    return out, h_n, out, out, out  # (hs, gates, hn: unused by forward)


def _sym_jordan(g, x, y0, w_ih, w_yh, w_hy, b_ih, b_yh, b_hy, lengths, config):
    """The Jordan network as an ONNX Loop over time (no standard operator computes it):
    xw = x W_ih^T + b_ih + b_yh for all steps before the loop; per step
    h = f(xw_t + y W_yh^T), y' = g(h W_hy^T + b_hy); past a sequence's length the state
    is kept and the step emits zeros."""
    sh = _helpers()
    act, out_act = sh._parse_arg(config, "is")[:2]
    names = {v: k for k, v in _backend_codes().items()}
    onnx_act = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid", "identity": None}
    H, O = sh._get_tensor_sizes(w_yh)
    xw = g.op("MatMul", x, g.op("Transpose", w_ih, perm_i=[1, 0]))  # (T, B, H)
    for b in (b_ih, b_yh):
        if not sh._is_none(b):
            xw = g.op("Add", xw, b)
    if sh._is_none(y0):
        B = g.op("Gather", g.op("Shape", x), _const(g, [1]), axis_i=0)
        y0 = g.op("ConstantOfShape", g.op("Concat", B, _const(g, [O]), axis_i=0),
                  value_t=torch.zeros(1, dtype=sh._type_utils.JitScalarType.from_value(x).dtype()))
    loop, body, i, (y,) = _time_loop(g, x, [y0], outputs=2)  # y (B, O)
    a = body.op("Add", body.op("Gather", xw, i, axis_i=0), body.op("MatMul", y, body.op("Transpose", w_yh, perm_i=[1, 0])))
    h = a if onnx_act[names[act]] is None else body.op(onnx_act[names[act]], a)
    o = body.op("MatMul", h, body.op("Transpose", w_hy, perm_i=[1, 0]))
    if not sh._is_none(b_hy):
        o = body.op("Add", o, b_hy)
    y_new = o if onnx_act[names[out_act]] is None else body.op(onnx_act[names[out_act]], o)
    emit = y_new
    if not sh._is_none(lengths):
        active = body.op("Unsqueeze", body.op("Less", i, lengths), _const(body, [1]))  # (B, 1)
        y_new = body.op("Where", active, y_new, y)
        emit = body.op("Where", active, emit, body.op("Sub", emit, emit))
    _end_loop(body, y_new, emit)
    y_n, out = loop
    return out, y_n, out, out  # (hs, ys: unused by forward)


def _backend_codes():
    from ._backend import ACT_CODES
    return ACT_CODES


_SYMBOLICS = {"elman": _sym_elman, "lstm": _sym_lstm, "gru": _sym_gru, "jordan": _sym_jordan,
              "ln_lstm": _sym_ln_lstm, "ln_gru": _sym_ln_gru}
# The ONNX operator each kernel's layers become.
ONNX_OPERATOR = {"elman": "RNN", "lstm": "LSTM", "gru": "GRU", "jordan": "Loop", "ln_lstm": "Loop", "ln_gru": "Loop"}


def onnx_operator(layer: nn.Module) -> str:
    """The ONNX operator ``layer`` becomes: its kernel's, or a ``Loop`` for the variants that
    run their own op (layer normalisation) or that no standard operator has (projection)."""
    if getattr(layer, "layer_norm", False) or getattr(layer, "proj_size", 0):
        return "Loop"
    return ONNX_OPERATOR[networks.network_of(layer).kernel]


def register_onnx_symbolics(opset: int = MIN_OPSET) -> None:
    """Registers the ONNX symbolic of every kernel's op for ``opset`` and later (idempotent;
    rnnkit calls it whenever a layer runs under torch.jit tracing, so a direct
    ``torch.onnx.export(model, args, dynamo=False)`` finds them too)."""
    if opset in _registered:
        return
    for name in _ops.KERNELS:
        torch.onnx.register_custom_op_symbolic(f"rnnkit::{name}", _SYMBOLICS[name], opset)
    _registered.add(opset)


_registered: set = set()


class _Flat(nn.Module):
    """A layer whose outputs are flat: (output, *final states) (ONNX graphs return tensors)."""

    def __init__(self, layer: nn.Module, with_lengths: bool):
        super().__init__()
        self.layer, self.with_lengths = layer, with_lengths

    def forward(self, x, lengths: Optional[Tensor] = None):
        out, finals = self.layer(x, lengths=lengths) if self.with_lengths else self.layer(x)
        return (out, *finals) if isinstance(finals, tuple) else (out, finals)


def to_onnx(layer: nn.Module, path: str | os.PathLike, example: Tensor, *, lengths: Optional[Tensor] = None,
            opset: int = OPSET) -> None:
    """Writes ``layer`` (an rnnkit RNN, LSTM, GRU or JordanRNN) as an ONNX graph to ``path``.

    The graph's inputs are ``input`` (the layer's layout: (T, B, I), or (B, T, I) with
    batch_first) and, when ``lengths`` is given, ``lengths`` (B,) int64; its outputs are
    ``output`` and the final states ``h_n`` (and ``c_n`` for an LSTM), each of the shape
    the layer returns. T and B are dynamic; ``example`` (and ``lengths``) only trace.
    """
    spec = networks.network_of(layer)
    if not isinstance(example, Tensor) or example.dim() != 3:
        raise ValueError(f"example: expected a 3-D input tensor, got "
                         f"{tuple(example.shape) if isinstance(example, Tensor) else type(example).__name__}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset: expected {MIN_OPSET} or later, got {opset}")
    register_onnx_symbolics()
    batch_axis, time_axis = (0, 1) if layer.batch_first else (1, 0)
    finals = [f"{s}_n" for s in spec.states]
    axes = {"input": {time_axis: "T", batch_axis: "B"}, "output": {time_axis: "T", batch_axis: "B"},
            **{f: {1: "B"} for f in finals}}
    inputs, names = (example,), ["input"]
    if lengths is not None:
        inputs, names = (example, torch.as_tensor(lengths, dtype=torch.int64)), ["input", "lengths"]
        axes["lengths"] = {0: "B"}
    was_training = layer.training
    layer.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The layers' input checks (sizes, T > 0) hold for every input of the graph's shapes.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(_Flat(layer, lengths is not None), inputs, os.fspath(path), dynamo=False,
                              opset_version=opset, input_names=names, output_names=["output", *finals],
                              dynamic_axes=axes)
    finally:
        layer.train(was_training)
