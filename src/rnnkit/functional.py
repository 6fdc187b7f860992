"""Single-layer, single-direction recurrent layers on the native core.

Same signatures and results as :mod:`rnnkit.reference` (the per-step oracle), but
the recurrence runs in C++: the input projection for all steps is one matrix
product before the call, the weight and input gradients for all steps are one
matrix product each after the backward call, and only the recurrence is
sequential (SPEC.md section 5). Python never loops over time here.

All functions are time-major: ``x`` is (T, B, I). ``lengths`` is None or B
integers in [1, T]; past its length a sequence keeps its state and emits zeros
(PackedSequence semantics). With ``return_internals=True`` a dict of per-step
internals (gate activations, cell states; shapes (T, B, H)) is returned as well,
read from the buffers the backward pass keeps anyway: no extra cost otherwise.
With ``grad_recorder=some_dict``, the backward pass also stores there the total
gradient of the loss with respect to every step's state, computed by the native
BPTT in the same pass: ``"dh"`` (T, B, H) (Elman, LSTM, GRU), ``"dc"`` (LSTM cell
state), ``"dy"`` (T, B, O) (Jordan's fed-back output).

Example::

    >>> T, B, I, H = 5, 2, 3, 4
    >>> x = torch.randn(T, B, I)
    >>> w_ih, w_hh = torch.randn(4 * H, I), torch.randn(4 * H, H)
    >>> out, (h_n, c_n) = lstm(x, None, None, w_ih, w_hh)
    >>> out.shape, h_n.shape
    (torch.Size([5, 2, 4]), torch.Size([2, 4]))
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _backend, _core
from ._checks import lengths_tensor

__all__ = ["elman", "lstm", "gru", "jordan"]

_NONLINEARITIES = ("tanh", "relu", "identity")
_OUTPUT_NONLINEARITIES = ("identity", "tanh", "sigmoid")


# ----------------------------------------------------------------------------- helpers
def _c(t: Optional[Tensor]):
    """A detached, contiguous tensor as the NumPy view the core reads (None passes through).

    The binding accepts any array that exports its buffer; a NumPy view of the same
    memory crosses into C++ about 3x faster than a torch tensor through DLPack.
    """
    return None if t is None else t.detach().contiguous().numpy()


def _np(t: Optional[Tensor]):
    """NumPy view of a tensor the core writes into (allocated here, so contiguous)."""
    return None if t is None else t.numpy()


def _project(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """xw = x W^T + bias for all steps at once: (T, B, I) -> (T, B, G)."""
    T, B, I = x.shape
    x2 = x.detach().reshape(T * B, I)
    w = weight.detach()
    out = _backend.gemm_nt(x2, w, None if bias is None else bias.detach())
    return out.view(T, B, w.shape[0])


def _sum_bias(*biases: Optional[Tensor]) -> Optional[Tensor]:
    present = [b.detach() for b in biases if b is not None]
    if not present:
        return None
    total = present[0]
    for b in present[1:]:
        total = total + b
    return total




def _flat(t: Tensor) -> Tensor:
    """(T, B, G) -> (T*B, G)."""
    return t.reshape(-1, t.shape[-1])


def _input_grads(ctx, da: Tensor, x: Tensor, w_ih: Tensor):
    """dx = da W_ih and dW_ih = da^T x, each one matrix product over all steps."""
    T, B, _ = x.shape
    dx = _backend.gemm_nt(_flat(da), w_ih.detach().t()).view(T, B, w_ih.shape[1]) if ctx.needs_input_grad[0] else None
    dw_ih = _weight_grad(da, x) if ctx.needs_input_grad[ctx.w_ih_index] else None
    return dx, dw_ih


def _weight_grad(da: Tensor, inp: Tensor) -> Tensor:
    """dW = da^T inp summed over all steps: (T, B, G), (T, B, K) -> (G, K)."""
    return _backend.gemm_nt(_flat(da).t(), _flat(inp.detach()).t())


def _record(recorder: Optional[dict], key: str, like: Tensor, T: int, B: int, H: int) -> Optional[Tensor]:
    """A (T, B, H) buffer for the per-step state gradient ``key`` when a recorder is given."""
    if recorder is None:
        return None
    recorder[key] = like.new_empty(T, B, H)
    return recorder[key]


def _grad_or_none(needed: bool, value: Optional[Tensor]) -> Optional[Tensor]:
    return value if needed else None


def _regular(zoneout, recurrent_mask, x: Tensor):
    """The core's keyword arguments for zoneout and recurrent dropout (SPEC section 16),
    and the buffers of the states before zoneout that the forward fills, one per state
    (None where that state is not zoned out). ``({}, None)`` when neither is given: the
    plain call."""
    if zoneout is None and recurrent_mask is None:
        return {}, None
    kw, raw = {}, []
    for suffix, z in zip(("", "_c"), zoneout or ()):
        r = None if z is None else x.new_empty(z.shape)  # (T, B, W)
        if z is not None:
            kw["zone" + suffix], kw["raw" + suffix] = _c(z), _np(r)
        raw.append(r)
    if recurrent_mask is not None:
        kw["drop"] = _c(recurrent_mask)
    return kw, raw


def _dropped(h_prev: Tensor, recurrent_mask: Optional[Tensor]) -> Tensor:
    """(T, B, W) the states that entered the W_hh products: m h_{t-1} with recurrent dropout."""
    return h_prev if recurrent_mask is None else h_prev * recurrent_mask


def _check_regular(name: str, zoneout, recurrent_mask, T: int, B: int, widths, x: Tensor):
    """Checks the functional API's zoneout (one (T, B, W) tensor or None per state) and
    recurrent_mask ((B, W) or None); returns zoneout as a tuple or None."""
    if zoneout is not None:
        if isinstance(zoneout, Tensor):
            zoneout = (zoneout,)
        zoneout = tuple(zoneout)
        if len(zoneout) != len(widths):
            raise ValueError(f"zoneout: expected {len(widths)} tensor(s) or None (one per state of the {name}), "
                             f"got {len(zoneout)}")
        for z, w in zip(zoneout, widths):
            if z is not None and (tuple(z.shape) != (T, B, w) or z.dtype != x.dtype):
                raise ValueError(f"zoneout: expected tensors of shape {(T, B, w)} and dtype {x.dtype}, "
                                 f"got {tuple(z.shape)} {z.dtype}")
        if all(z is None for z in zoneout):
            zoneout = None
    if recurrent_mask is not None and (tuple(recurrent_mask.shape) != (B, widths[0])
                                       or recurrent_mask.dtype != x.dtype):
        raise ValueError(f"recurrent_mask: expected shape {(B, widths[0])} and dtype {x.dtype}, "
                         f"got {tuple(recurrent_mask.shape)} {recurrent_mask.dtype}")
    return zoneout


class _NoGrad:
    """Stands in for autograd's ctx when no gradient is needed (inference, no_grad):
    the Function's forward then runs as a plain function, without autograd's
    bookkeeping, which at small sizes costs more than the recurrence itself."""

    def save_for_backward(self, *tensors):
        pass

    def mark_non_differentiable(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


def _apply(fn, *args, regular=()):
    """fn.apply(*args) when a gradient can flow, else fn's forward as a plain call; while a
    graph is captured (torch.compile, torch.export, ONNX), the same through its custom op.
    ``regular``: (zoneout, recurrent_mask) when either is given, passed after ``args``."""
    if _ops.capturing(args[0]):
        if regular:
            raise NotImplementedError("zoneout / recurrent dropout: not supported while a graph is captured "
                                      "(torch.compile, torch.export, ONNX); run the layer eagerly")
        return fn.op_apply(*args)  # set by rnnkit._ops
    args = args + tuple(regular)
    if torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args):
        return fn.apply(*args)
    return fn.forward(_NoGrad(), *args)


# ----------------------------------------------------------------------------- Elman
class _Elman(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, act: int, isa: int, recorder, zoneout=None,
                recurrent_mask=None):
        ctx.set_materialize_grads(False)  # unread outputs: None, not zero-filled
        T, B, _ = x.shape
        H = w_hh.shape[0]
        xw = _project(x, w_ih, _sum_bias(b_ih, b_hh))  # (T, B, H)
        hs = x.new_empty(T + 1, B, H)  # states, hs[0] = h0
        out = x.new_empty(T, B, H) if lengths is not None else None
        w_hh_c = w_hh.detach().contiguous()
        ctx.reg, _ = _regular(zoneout, recurrent_mask, x)
        _core.elman_forward(isa, act, _np(xw), _np(w_hh_c), _c(h0), _np(lengths), _np(hs), _np(out),
                            _backend.num_threads(B, H, 1), **ctx.reg)
        ctx.recurrent_mask = recurrent_mask
        ctx.save_for_backward(x, w_ih, w_hh_c, hs, lengths)
        ctx.act, ctx.isa, ctx.w_ih_index, ctx.recorder = act, isa, 2, recorder
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        ctx.mark_non_differentiable(hs)
        return (hs[1:] if out is None else out), hs[T].clone(), hs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, dh_n, _):
        x, w_ih, w_hh, hs, lengths = ctx.saved_tensors
        T, B, _ = x.shape
        H = w_hh.shape[0]
        da = x.new_empty(T, B, H)
        dh0 = x.new_empty(B, H)
        dhs = _record(ctx.recorder, "dh", x, T, B, H)
        _core.elman_backward(ctx.isa, ctx.act, _np(w_hh), _np(hs), _np(lengths), _c(d_out), _c(dh_n), _np(da),
                             _np(dh0), _np(dhs), _backend.num_threads(B, H, 1), **getattr(ctx, "reg", {}))
        dx, dw_ih = _input_grads(ctx, da, x, w_ih)
        h_in = _dropped(hs[:-1], getattr(ctx, "recurrent_mask", None))
        dw_hh = _weight_grad(da, h_in) if ctx.needs_input_grad[3] else None
        db = _flat(da).sum(0) if any(ctx.has_bias) else None
        return (dx, _grad_or_none(ctx.needs_input_grad[1], dh0), dw_ih, dw_hh,
                _grad_or_none(ctx.has_bias[0], db), _grad_or_none(ctx.has_bias[1], db), None, None, None, None,
                None, None)


def elman(x: Tensor, h0: Optional[Tensor], weight_ih: Tensor, weight_hh: Tensor, bias_ih: Optional[Tensor] = None,
                bias_hh: Optional[Tensor] = None, nonlinearity: str = "tanh", lengths=None, return_internals: bool = False,
          grad_recorder: Optional[dict] = None, zoneout=None, recurrent_mask: Optional[Tensor] = None):
    """Elman RNN over a sequence (SPEC section 1)::

        a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh,   h_t = f(a_t)

    Args: x (T, B, I); h0 (B, H) or None; weight_ih (H, I); weight_hh (H, H);
    biases (H) or None; nonlinearity in tanh | relu | identity.
    Returns (out (T, B, H), h_n (B, H)) [, {"a": pre-activation (T, B, H)} with
    return_internals].
    Regularisers (SPEC section 16; module options fill them, see rnnkit.LSTM):
    ``zoneout``: one (T, B, W) tensor of weights z in [0, 1] or None per state
    (``s_t = z s_{t-1} + (1 - z) s~_t``); ``recurrent_mask``: (B, W) m, the W_hh
    product reads ``m * h_{t-1}`` (recurrent dropout).
    """
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected one of {_NONLINEARITIES}, got {nonlinearity!r}")
    T, B, _ = x.shape
    lengths = lengths_tensor(lengths, T, B)
    zoneout = _check_regular("Elman RNN", zoneout, recurrent_mask, T, B, (weight_hh.shape[0],), x)
    regular = () if zoneout is None and recurrent_mask is None else (zoneout, recurrent_mask)
    out, h_n, hs = _apply(_Elman, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths,
                          _backend.ACT_CODES[nonlinearity], _backend.current_isa(), grad_recorder, regular=regular)
    if return_internals:
        # a_t = xw_t + W_hh h_{t-1} for all steps in two matrix products, only on request.
        with torch.no_grad():
            h_in = _dropped(hs[:-1], recurrent_mask)  # what the W_hh product read
            a = _project(x, weight_ih, _sum_bias(bias_ih, bias_hh)) + h_in @ weight_hh.detach().t()
            if lengths is not None:
                a = a * _active_mask(lengths, T, a.dtype)
        return out, h_n, {"a": a}
    return out, h_n


# ----------------------------------------------------------------------------- LSTM
class _LSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ch, w_hr, lengths, isa: int, recorder, zoneout=None,
                recurrent_mask=None):
        ctx.set_materialize_grads(False)  # unread outputs: None, not zero-filled
        T, B, _ = x.shape
        H, K = w_hh.shape[0] // 4, w_hh.shape[1]  # K: the width of h (P with a projection, else H)
        xw = _project(x, w_ih, _sum_bias(b_ih, b_hh))  # (T, B, 4H)
        hs = x.new_empty(T + 1, B, K)
        cs = x.new_empty(T + 1, B, H)
        gates = x.new_empty(T, B, 4 * H)  # activated i, f, g, o
        out = x.new_empty(T, B, K) if lengths is not None else None
        w_hh_c = w_hh.detach().contiguous()
        w_ch_c = None if w_ch is None else w_ch.detach().contiguous()  # (3H) peepholes i, f, o
        w_hr_c = None if w_hr is None else w_hr.detach().contiguous()  # (P, H) projection
        ctx.reg, raw = _regular(zoneout, recurrent_mask, x)
        _core.lstm_forward(isa, _np(xw), _np(w_hh_c), _c(h0), _c(c0), _np(lengths), _np(hs), _np(cs), _np(gates),
                           _np(out), _backend.num_threads(B, H, 4), _np(w_ch_c), _np(w_hr_c), **ctx.reg)
        ctx.recurrent_mask = recurrent_mask
        ctx.c_raw = raw[1] if raw else None  # (T, B, H) c~_t before zoneout, which o's peephole sees
        ctx.save_for_backward(x, w_ih, w_hh_c, w_ch_c, w_hr_c, hs, cs, gates, lengths)
        ctx.isa, ctx.w_ih_index, ctx.recorder = isa, 3, recorder
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        ctx.mark_non_differentiable(cs, gates)
        return (hs[1:] if out is None else out), hs[T].clone(), cs[T].clone(), cs, gates

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, dh_n, dc_n, _cs, _gates):
        x, w_ih, w_hh, w_ch, w_hr, hs, cs, gates, lengths = ctx.saved_tensors
        T, B, _ = x.shape
        H, K = w_hh.shape[0] // 4, w_hh.shape[1]
        da = x.new_empty(T, B, 4 * H)
        dr = None if w_hr is None else x.new_empty(T, B, K)  # dL/dh_t through the projection
        dh0 = x.new_empty(B, K)
        dc0 = x.new_empty(B, H)
        dhs = _record(ctx.recorder, "dh", x, T, B, K)
        dcs = _record(ctx.recorder, "dc", x, T, B, H)
        _core.lstm_backward(ctx.isa, _np(w_hh), _np(hs), _np(cs), _np(gates), _np(lengths), _c(d_out), _c(dh_n),
                            _c(dc_n), _np(da), _np(dh0), _np(dc0), _np(dhs), _np(dcs), _backend.num_threads(B, H, 4),
                            _np(w_ch), _np(w_hr), _np(dr), **getattr(ctx, "reg", {}))
        dx, dw_ih = _input_grads(ctx, da, x, w_ih)
        h_in = _dropped(hs[:-1], getattr(ctx, "recurrent_mask", None))
        dw_hh = _weight_grad(da, h_in) if ctx.needs_input_grad[4] else None
        db = _flat(da).sum(0) if any(ctx.has_bias) else None
        dw_ch = None
        c_new = cs[1:] if getattr(ctx, "c_raw", None) is None else ctx.c_raw  # c~_t: before zoneout
        if ctx.needs_input_grad[7]:  # SPEC section 13: p_i, p_f see c_{t-1}, p_o sees c_t; summed over all steps
            da_i, da_f, _, da_o = da.chunk(4, dim=2)
            dw_ch = torch.cat([(da_i * cs[:-1]).sum((0, 1)), (da_f * cs[:-1]).sum((0, 1)),
                               (da_o * c_new).sum((0, 1))])
        dw_hr = None
        if w_hr is not None and ctx.needs_input_grad[8]:  # SPEC section 14: dW_hr = sum_t dr_t^T m_t
            m = gates[..., 3 * H:] * torch.tanh(c_new)  # (T, B, H) m_t = o_t tanh(c~_t), 0 where inactive
            dw_hr = _flat(dr).t() @ _flat(m)
        return (dx, _grad_or_none(ctx.needs_input_grad[1], dh0), _grad_or_none(ctx.needs_input_grad[2], dc0),
                dw_ih, dw_hh, _grad_or_none(ctx.has_bias[0], db), _grad_or_none(ctx.has_bias[1], db), dw_ch, dw_hr,
                None, None, None, None, None)


LAYER_NORM_EPS = 1e-5  # torch.nn.functional.layer_norm's, and the core's (csrc/cells/ln_lstm.h)


def _normalise(v: Tensor):
    """(v - mean) * rho over the last dimension, rho = 1 / sqrt(var + eps): (v^, rho (..., 1))."""
    mu = v.mean(-1, keepdim=True)
    rho = torch.rsqrt(v.var(-1, unbiased=False, keepdim=True) + LAYER_NORM_EPS)
    return (v - mu) * rho, rho


def _normalised_input(x: Tensor, w_ih: Tensor):
    """(LN(x W_ih^T), rho) for all steps, (T, B, G*H) and (T, B, 1): the input side of the
    layer-normalised cells. The product runs on the core's packed GEMM, as the Stream and
    the Stack compute it (csrc/layer.h), not on the fastest GEMM of _backend.gemm_nt:
    oneDNN's float32 sums over I lose about twice as much there (I = 256: 3.5e-6 against
    1.9e-6 for the core's and torch's BLAS), and the normalisation divides that error by
    std(W_ih x) while the normalised network carries it on (the float32 LN-LSTM was 3x
    less accurate than the reference for it; tests/test_layer_norm.py checks both)."""
    T, B, I = x.shape
    v = _backend.matmul_nt(x.detach().reshape(T * B, I), w_ih.detach())
    return _normalise(v.view(T, B, w_ih.shape[0]))


def _normalise_backward(d_hat: Tensor, v_hat: Tensor, rho: Tensor) -> Tensor:
    """dL/dv from dL/dv^ through v^ = (v - mean) * rho, over the last dimension."""
    return rho * (d_hat - d_hat.mean(-1, keepdim=True) - v_hat * (d_hat * v_hat).mean(-1, keepdim=True))


class _LNLSTM(torch.autograd.Function):
    """The layer-normalised LSTM (SPEC section 15): the input side g_ih LN(W_ih x) for all
    steps here, before the call and (its backward) after it; the recurrence in the core."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, lengths, isa: int, recorder):
        ctx.set_materialize_grads(False)  # unread outputs: None, not zero-filled
        T, B, _ = x.shape
        H = w_hh.shape[1]
        x_hat, rho = _normalised_input(x, w_ih)  # (T, B, 4H), (T, B, 1)
        xw = x_hat * g_ih.detach()
        bias = _sum_bias(b_ih, b_hh)
        if bias is not None:
            xw = xw + bias
        hs = x.new_empty(T + 1, B, H)
        cs = x.new_empty(T + 1, B, H)
        gates = x.new_empty(T, B, 4 * H)  # activated i, f, g, o
        raw = x.new_empty(T, B, 4 * H)  # W_hh h_{t-1}, before its normalisation
        out = x.new_empty(T, B, H) if lengths is not None else None
        w_hh_c, g_hh_c, g_c_c, b_c_c = (t.detach().contiguous() for t in (w_hh, g_hh, g_c, b_c))
        _core.ln_lstm_forward(isa, _np(xw.contiguous()), _np(w_hh_c), _np(g_hh_c), _np(g_c_c), _np(b_c_c), _c(h0),
                              _c(c0), _np(lengths), _np(hs), _np(cs), _np(gates), _np(raw), _np(out),
                              _backend.num_threads(B, H, 4))
        ctx.save_for_backward(x, w_ih, w_hh_c, g_ih, g_hh_c, g_c_c, b_c_c, x_hat, rho, hs, cs, gates, raw, lengths)
        ctx.isa, ctx.w_ih_index, ctx.recorder = isa, 3, recorder
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        ctx.mark_non_differentiable(cs, gates)
        return (hs[1:] if out is None else out), hs[T].clone(), cs[T].clone(), cs, gates

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, dh_n, dc_n, _cs, _gates):
        x, w_ih, w_hh, g_ih, g_hh, g_c, b_c, x_hat, rho, hs, cs, gates, raw, lengths = ctx.saved_tensors
        T, B, _ = x.shape
        H = w_hh.shape[1]
        dv = x.new_empty(T, B, 4 * H)  # dL/d pre-activations (= dL/d xw)
        dA = x.new_empty(T, B, 4 * H)  # dL/d W_hh h_{t-1}
        dh0, dc0 = x.new_empty(B, H), x.new_empty(B, H)
        dhs = x.new_empty(T, B, H)  # dL/dh_t: the gradient of LN(c)'s gain and bias reads it
        dcs = _record(ctx.recorder, "dc", x, T, B, H)
        _core.ln_lstm_backward(ctx.isa, _np(w_hh), _np(g_hh), _np(g_c), _np(b_c), _np(hs), _np(cs), _np(gates),
                               _np(raw), _np(lengths), _c(d_out), _c(dh_n), _c(dc_n), _np(dv), _np(dA), _np(dh0),
                               _np(dc0), _np(dhs), _np(dcs), _backend.num_threads(B, H, 4))
        if ctx.recorder is not None:
            ctx.recorder["dh"] = dhs
        need = ctx.needs_input_grad
        dP = _normalise_backward(dv * g_ih.detach(), x_hat, rho)  # through g_ih LN(W_ih x)
        dx = (_flat(dP) @ w_ih.detach()).view(x.shape[0], B, w_ih.shape[1]) if need[0] else None
        dw_ih = _flat(dP).t() @ _flat(x.detach()) if need[3] else None
        dw_hh = _flat(dA).t() @ _flat(hs[:-1]) if need[4] else None
        db = _flat(dv).sum(0) if any(ctx.has_bias) else None
        dg_ih = (dv * x_hat).sum((0, 1)) if need[7] else None
        dg_hh = (dv * _normalise(raw)[0]).sum((0, 1)) if need[8] else None  # raw = 0 where inactive: dv = 0 there
        dg_c = db_c = None
        if need[9] or need[10]:  # dy = dh o (1 - tanh^2 y), y = g_c LN(c) + b_c; o = 0 where inactive
            c_hat = _normalise(cs[1:])[0]
            dy = dhs * gates[..., 3 * H:] * (1 - torch.tanh(c_hat * g_c + b_c) ** 2)
            dg_c, db_c = (dy * c_hat).sum((0, 1)), dy.sum((0, 1))
        return (dx, _grad_or_none(need[1], dh0), _grad_or_none(need[2], dc0), dw_ih, dw_hh,
                _grad_or_none(ctx.has_bias[0], db), _grad_or_none(ctx.has_bias[1], db), dg_ih, dg_hh,
                _grad_or_none(need[9], dg_c), _grad_or_none(need[10], db_c), None, None, None)


_LAYER_NORM_ROLES = ("ln_gain_ih", "ln_gain_hh", "ln_gain_c", "ln_bias_c")


def lstm(x: Tensor, h0: Optional[Tensor], c0: Optional[Tensor], weight_ih: Tensor, weight_hh: Tensor,
         bias_ih: Optional[Tensor] = None, bias_hh: Optional[Tensor] = None, weight_ch: Optional[Tensor] = None,
         weight_hr: Optional[Tensor] = None, ln_gain_ih: Optional[Tensor] = None, ln_gain_hh: Optional[Tensor] = None,
         ln_gain_c: Optional[Tensor] = None, ln_bias_c: Optional[Tensor] = None, lengths=None,
         return_internals: bool = False, grad_recorder: Optional[dict] = None,
         zoneout=None, recurrent_mask: Optional[Tensor] = None):
    """LSTM over a sequence (SPEC section 3), gate rows stacked i, f, g, o::

        i, f, o = sigmoid(.), g = tanh(.)   of   W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
        c_t = f * c_{t-1} + i * g,          h_t = o * tanh(c_t)

    With peepholes ``weight_ch`` = (p_i, p_f, p_o) (3H), ``p_i * c_{t-1}`` and
    ``p_f * c_{t-1}`` join the pre-activations of i and f, ``p_o * c_t`` that of o
    (SPEC section 13). With a projection ``weight_hr`` (P, H) (torch.nn.LSTM's
    ``proj_size``, SPEC section 14), ``h_t = W_hr (o * tanh(c_t))`` is P wide. With the
    layer-normalisation gains and bias ``ln_gain_ih``, ``ln_gain_hh`` (4H), ``ln_gain_c``,
    ``ln_bias_c`` (H), all four or none (haste's LayerNormLSTM, SPEC section 15)::

        v = g_ih LN(W_ih x_t) + g_hh LN(W_hh h_{t-1}) + b_ih + b_hh,   h_t = o * tanh(g_c LN(c_t) + b_c)

    (not combined with peepholes or a projection).

    Args: x (T, B, I); h0 (B, K), c0 (B, H) or None, K = P with a projection, else H;
    weight_ih (4H, I); weight_hh (4H, K); biases (4H) or None; weight_ch (3H) or None;
    weight_hr (P, H) or None. Returns (out (T, B, K), (h_n (B, K), c_n (B, H))) [, internals
    {"i", "f", "g", "o", "c"} each (T, B, H) with return_internals].
    Regularisers (SPEC section 16; module options fill them, see rnnkit.LSTM):
    ``zoneout``: (z_h, z_c): a (T, B, H) tensor of weights z in [0, 1] or None per state
    (``s_t = z s_{t-1} + (1 - z) s~_t``); ``recurrent_mask``: (B, W) m, the W_hh
    product reads ``m * h_{t-1}`` (recurrent dropout).
    """
    T, B, _ = x.shape
    lengths = lengths_tensor(lengths, T, B)
    H, K = weight_hh.shape[0] // 4, weight_hh.shape[1]  # K: the width of h (P when projected)
    zoneout = _check_regular("LSTM", zoneout, recurrent_mask, T, B, (K, H), x)
    regular = () if zoneout is None and recurrent_mask is None else (zoneout, recurrent_mask)
    norms = (ln_gain_ih, ln_gain_hh, ln_gain_c, ln_bias_c)
    if any(t is not None for t in norms):
        missing = [name for name, t in zip(_LAYER_NORM_ROLES, norms) if t is None]
        if missing:
            raise ValueError(f"{missing[0]}: expected all of {', '.join(_LAYER_NORM_ROLES)} for a layer-normalised "
                             f"LSTM, got None")
        if weight_ch is not None or weight_hr is not None:
            raise ValueError(f"{'weight_ch' if weight_ch is not None else 'weight_hr'}: expected None with layer "
                             "normalisation (peepholes and projections are not combined with it), got a tensor")
        if regular:
            raise ValueError(f"{'zoneout' if zoneout is not None else 'recurrent_mask'}: expected None with layer "
                             "normalisation (the regularisers are not combined with it), got a tensor")
        out, h_n, c_n, cs, gates = _apply(_LNLSTM, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, *norms, lengths,
                                          _backend.current_isa(), grad_recorder)
    else:
        out, h_n, c_n, cs, gates = _apply(_LSTM, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_ch,
                                          weight_hr, lengths, _backend.current_isa(), grad_recorder, regular=regular)
    if return_internals:
        i, f, g, o = gates.detach().chunk(4, dim=2)
        c = cs.detach()[1:]
        if lengths is not None:
            c = c * _active_mask(lengths, T, c.dtype)
        return out, (h_n, c_n), {"i": i, "f": f, "g": g, "o": o, "c": c}
    return out, (h_n, c_n)


def _active_mask(lengths: Tensor, T: int, dtype) -> Tensor:
    """(T, B, 1) mask: 1 where step t is inside sequence b."""
    return (torch.arange(T)[:, None] < lengths[None, :]).to(dtype).unsqueeze(-1)


# ----------------------------------------------------------------------------- GRU
class _GRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reset_after: bool, isa: int, recorder, zoneout=None,
                recurrent_mask=None):
        ctx.set_materialize_grads(False)  # unread outputs: None, not zero-filled
        T, B, _ = x.shape
        H = w_hh.shape[1]
        b_hn = None
        if b_hh is not None and reset_after:
            # b_hn stays inside r * (W_hn h + b_hn); the r and z parts fold into xw.
            b_fold = torch.cat([b_hh.detach()[: 2 * H], b_hh.new_zeros(H)])
            b_hn = _c(b_hh[2 * H:])  # NumPy view for the core
        else:
            b_fold = b_hh
        xw = _project(x, w_ih, _sum_bias(b_ih, b_fold))  # (T, B, 3H)
        hs = x.new_empty(T + 1, B, H)
        gates = x.new_empty(T, B, 3 * H)  # activated r, z, n
        hn = x.new_empty(T, B, H)  # reset_after: W_hn h + b_hn; reset_before: r * h_prev
        out = x.new_empty(T, B, H) if lengths is not None else None
        w_hh_c = w_hh.detach().contiguous()
        ctx.reg, _ = _regular(zoneout, recurrent_mask, x)
        ctx.recurrent_mask = recurrent_mask
        _core.gru_forward(isa, reset_after, _np(xw), _np(w_hh_c), b_hn, _c(h0), _np(lengths), _np(hs), _np(gates),
                          _np(hn), _np(out), _backend.num_threads(B, H, 3), **ctx.reg)
        ctx.save_for_backward(x, w_ih, w_hh_c, hs, gates, hn, lengths)
        ctx.isa, ctx.reset_after, ctx.w_ih_index, ctx.recorder = isa, reset_after, 2, recorder
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        ctx.mark_non_differentiable(gates)
        return (hs[1:] if out is None else out), hs[T].clone(), gates

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, dh_n, _gates):
        x, w_ih, w_hh, hs, gates, hn, lengths = ctx.saved_tensors
        T, B, _ = x.shape
        H = w_hh.shape[1]
        da = x.new_empty(T, B, 3 * H)  # input-side pre-activations r, z, n
        da_hn = x.new_empty(T, B, H)  # hidden-side n term
        dh0 = x.new_empty(B, H)
        dhs = _record(ctx.recorder, "dh", x, T, B, H)
        _core.gru_backward(ctx.isa, ctx.reset_after, _np(w_hh), _np(hs), _np(gates), _np(hn), _np(lengths),
                           _c(d_out), _c(dh_n), _np(da), _np(da_hn), _np(dh0), _np(dhs), _backend.num_threads(B, H, 3),
                           **getattr(ctx, "reg", {}))
        dx, dw_ih = _input_grads(ctx, da, x, w_ih)
        dw_hh = None
        if ctx.needs_input_grad[3]:
            # rows r, z see h_prev; rows n see h_prev (reset_after) or r * h_prev (seed form).
            h_in = _dropped(hs[:-1], getattr(ctx, "recurrent_mask", None))
            n_input = h_in if ctx.reset_after else hn
            dw_hh = torch.cat([_weight_grad(da[..., : 2 * H], h_in), _weight_grad(da_hn, n_input)])
        db_ih = _flat(da).sum(0) if ctx.has_bias[0] else None
        db_hh = torch.cat([_flat(da[..., : 2 * H]).sum(0), _flat(da_hn).sum(0)]) if ctx.has_bias[1] else None
        return (dx, _grad_or_none(ctx.needs_input_grad[1], dh0), dw_ih, dw_hh, db_ih, db_hh, None, None, None, None,
                None, None)


class _LNGRU(torch.autograd.Function):
    """The layer-normalised GRU (SPEC section 15, reset after): the input side
    g_ih LN(W_ih x) + b_ih for all steps here, the recurrence in the core."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, lengths, isa: int, recorder):
        ctx.set_materialize_grads(False)  # unread outputs: None, not zero-filled
        T, B, _ = x.shape
        H = w_hh.shape[1]
        x_hat, rho = _normalised_input(x, w_ih)  # (T, B, 3H), (T, B, 1)
        xw = x_hat * g_ih.detach()
        if b_ih is not None:
            xw = xw + b_ih.detach()
        hs = x.new_empty(T + 1, B, H)
        gates = x.new_empty(T, B, 3 * H)  # activated r, z, n
        raw = x.new_empty(T, B, 3 * H)  # W_hh h_{t-1}, before its normalisation
        out = x.new_empty(T, B, H) if lengths is not None else None
        w_hh_c, g_hh_c = w_hh.detach().contiguous(), g_hh.detach().contiguous()
        b_hh_c = None if b_hh is None else b_hh.detach().contiguous()
        _core.ln_gru_forward(isa, _np(xw.contiguous()), _np(w_hh_c), _np(g_hh_c), _np(b_hh_c), _c(h0), _np(lengths),
                             _np(hs), _np(gates), _np(raw), _np(out), _backend.num_threads(B, H, 3))
        ctx.save_for_backward(x, w_ih, w_hh_c, g_ih, g_hh_c, b_hh_c, x_hat, rho, hs, gates, raw, lengths)
        ctx.isa, ctx.w_ih_index, ctx.recorder = isa, 2, recorder
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        ctx.mark_non_differentiable(gates)
        return (hs[1:] if out is None else out), hs[T].clone(), gates

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, dh_n, _gates):
        x, w_ih, w_hh, g_ih, g_hh, b_hh, x_hat, rho, hs, gates, raw, lengths = ctx.saved_tensors
        T, B, _ = x.shape
        H = w_hh.shape[1]
        da = x.new_empty(T, B, 3 * H)  # dL/d xw
        dA = x.new_empty(T, B, 3 * H)  # dL/d W_hh h_{t-1}
        dh0 = x.new_empty(B, H)
        dhs = _record(ctx.recorder, "dh", x, T, B, H)
        _core.ln_gru_backward(ctx.isa, _np(w_hh), _np(g_hh), _np(b_hh), _np(hs), _np(gates), _np(raw), _np(lengths),
                              _c(d_out), _c(dh_n), _np(da), _np(dA), _np(dh0), _np(dhs),
                              _backend.num_threads(B, H, 3))
        need = ctx.needs_input_grad
        dP = _normalise_backward(da * g_ih.detach(), x_hat, rho)  # through g_ih LN(W_ih x)
        dx = (_flat(dP) @ w_ih.detach()).view(T, B, w_ih.shape[1]) if need[0] else None
        dw_ih = _flat(dP).t() @ _flat(x.detach()) if need[2] else None
        dw_hh = _flat(dA).t() @ _flat(hs[:-1]) if need[3] else None
        db_ih = _flat(da).sum(0) if ctx.has_bias[0] else None
        dq = torch.cat([da[..., :2 * H], da[..., 2 * H:] * gates[..., :H]], dim=2)  # dL/d(g_hh LN(A) + b_hh)
        db_hh = _flat(dq).sum(0) if ctx.has_bias[1] else None
        dg_ih = (da * x_hat).sum((0, 1)) if need[6] else None
        dg_hh = (dq * _normalise(raw)[0]).sum((0, 1)) if need[7] else None  # raw = 0 where inactive: dq = 0 there
        return (dx, _grad_or_none(need[1], dh0), dw_ih, dw_hh, db_ih, db_hh, dg_ih, dg_hh, None, None, None)


def gru(x: Tensor, h0: Optional[Tensor], weight_ih: Tensor, weight_hh: Tensor, bias_ih: Optional[Tensor] = None,
        bias_hh: Optional[Tensor] = None, ln_gain_ih: Optional[Tensor] = None, ln_gain_hh: Optional[Tensor] = None,
        reset_after: bool = True, lengths=None, return_internals: bool = False,
        grad_recorder: Optional[dict] = None, zoneout=None, recurrent_mask: Optional[Tensor] = None):
    """GRU over a sequence (SPEC section 4), gate rows stacked r, z, n.

    reset_after=True (torch.nn.GRU's form)::

        n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),   h_t = (1 - z) * n + z * h_{t-1}

    reset_after=False (the seeds' form, Cho et al. 2014)::

        n = tanh(W_in x + b_in + W_hn (r * h) + b_hn),   h_t = (1 - z) * h_{t-1} + z * n

    With the layer-normalisation gains ``ln_gain_ih``, ``ln_gain_hh`` (3H), both or neither
    (haste's LayerNormGRU, reset after only, SPEC section 15)::

        r, z, n from  g_ih LN(W_ih x) + b_ih  and  q = g_hh LN(W_hh h) + b_hh

    Args: x (T, B, I); h0 (B, H) or None; weight_ih (3H, I); weight_hh (3H, H);
    biases (3H) or None. Returns (out (T, B, H), h_n (B, H)) [, internals
    {"r", "z", "n"} each (T, B, H) with return_internals].
    Regularisers (SPEC section 16; module options fill them, see rnnkit.LSTM):
    ``zoneout``: one (T, B, W) tensor of weights z in [0, 1] or None per state
    (``s_t = z s_{t-1} + (1 - z) s~_t``); ``recurrent_mask``: (B, W) m, the W_hh
    product reads ``m * h_{t-1}`` (recurrent dropout).
    """
    T, B, _ = x.shape
    lengths = lengths_tensor(lengths, T, B)
    zoneout = _check_regular("GRU", zoneout, recurrent_mask, T, B, (weight_hh.shape[1],), x)
    regular = () if zoneout is None and recurrent_mask is None else (zoneout, recurrent_mask)
    if ln_gain_ih is not None or ln_gain_hh is not None:
        if ln_gain_ih is None or ln_gain_hh is None:
            raise ValueError(f"{'ln_gain_ih' if ln_gain_ih is None else 'ln_gain_hh'}: expected both ln_gain_ih and "
                             "ln_gain_hh for a layer-normalised GRU, got None")
        if not reset_after:
            raise ValueError("reset_after: expected True with layer normalisation (haste's LayerNormGRU is the "
                             "reset-after form), got False")
        if regular:
            raise ValueError(f"{'zoneout' if zoneout is not None else 'recurrent_mask'}: expected None with layer "
                             "normalisation (the regularisers are not combined with it), got a tensor")
        out, h_n, gates = _apply(_LNGRU, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, ln_gain_ih, ln_gain_hh,
                                 lengths, _backend.current_isa(), grad_recorder)
    else:
        out, h_n, gates = _apply(_GRU, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, bool(reset_after),
                                 _backend.current_isa(), grad_recorder, regular=regular)
    if return_internals:
        r, z, n = gates.detach().chunk(3, dim=2)
        return out, h_n, {"r": r, "z": z, "n": n}
    return out, h_n


# ----------------------------------------------------------------------------- Jordan
def _jordan_threads(B: int, H: int, O: int) -> int:
    """Threads for the Jordan recurrence: its two step products (2 B H O multiply-adds)
    against the same threshold as the other cells.

    Its step meets at a barrier two (forward) or three (backward) times; measured on the
    2-core development machine, quiet, T = 100, H = O, ``rnnkit.use_threads(2)`` against
    ``(1)``: inference 1.18-1.89x, training 1.12-1.38x faster at every size measured,
    from H = 64, B = 64; H = 128, B = 16; H = 256, B = 4 to H = 1024.
    """
    return _backend.num_threads(B, 1, 2 * H * O)


class _Jordan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y0, w_ih, w_yh, w_hy, b_ih, b_yh, b_hy, lengths, act: int, out_act: int, isa: int, recorder,
                zoneout=None, recurrent_mask=None):
        ctx.set_materialize_grads(False)  # unread outputs: None, not zero-filled
        T, B, _ = x.shape
        H, O = w_yh.shape
        xw = _project(x, w_ih, _sum_bias(b_ih, b_yh))  # (T, B, H)
        hs = x.new_empty(T, B, H)  # hidden layer
        ys = x.new_empty(T + 1, B, O)  # outputs fed back, ys[0] = y0
        out = x.new_empty(T, B, O) if lengths is not None else None
        w_yh_c, w_hy_c = w_yh.detach().contiguous(), w_hy.detach().contiguous()
        ctx.reg, _ = _regular(zoneout, recurrent_mask, x)
        ctx.recurrent_mask = recurrent_mask
        _core.jordan_forward(isa, act, out_act, _np(xw), _np(w_yh_c), _np(w_hy_c), _c(b_hy), _c(y0), _np(lengths),
                             _np(hs), _np(ys), _np(out), _jordan_threads(B, H, O), **ctx.reg)
        ctx.save_for_backward(x, w_ih, w_yh_c, w_hy_c, hs, ys, lengths)
        ctx.act, ctx.out_act, ctx.isa, ctx.w_ih_index, ctx.recorder = act, out_act, isa, 2, recorder
        ctx.has_bias = (b_ih is not None, b_yh is not None, b_hy is not None)
        ctx.mark_non_differentiable(hs)
        return (ys[1:] if out is None else out), ys[T].clone(), hs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, dy_n, _hs):
        x, w_ih, w_yh, w_hy, hs, ys, lengths = ctx.saved_tensors
        T, B, _ = x.shape
        H, O = w_yh.shape
        da = x.new_empty(T, B, H)
        d_o = x.new_empty(T, B, O)
        dy0 = x.new_empty(B, O)
        dys = _record(ctx.recorder, "dy", x, T, B, O)
        _core.jordan_backward(ctx.isa, ctx.act, ctx.out_act, _np(w_yh), _np(w_hy), _np(hs), _np(ys), _np(lengths),
                              _c(d_out), _c(dy_n), _np(da), _np(d_o), _np(dy0), _np(dys), _jordan_threads(B, H, O),
                              **getattr(ctx, "reg", {}))
        dx, dw_ih = _input_grads(ctx, da, x, w_ih)
        need = ctx.needs_input_grad
        y_in = _dropped(ys[:-1], getattr(ctx, "recurrent_mask", None))
        dw_yh = _weight_grad(da, y_in) if need[3] else None
        dw_hy = _weight_grad(d_o, hs) if need[4] else None
        db = _flat(da).sum(0) if (ctx.has_bias[0] or ctx.has_bias[1]) else None
        db_hy = _flat(d_o).sum(0) if ctx.has_bias[2] else None
        return (dx, _grad_or_none(need[1], dy0), dw_ih, dw_yh, dw_hy, _grad_or_none(ctx.has_bias[0], db),
                _grad_or_none(ctx.has_bias[1], db), db_hy, None, None, None, None, None, None, None)


def jordan(x: Tensor, y0: Optional[Tensor], weight_ih: Tensor, weight_yh: Tensor, weight_hy: Tensor,
           bias_ih: Optional[Tensor] = None, bias_yh: Optional[Tensor] = None, bias_hy: Optional[Tensor] = None,
           nonlinearity: str = "tanh", output_nonlinearity: str = "identity", lengths=None,
           return_internals: bool = False, grad_recorder: Optional[dict] = None, zoneout=None,
           recurrent_mask: Optional[Tensor] = None):
    """Jordan RNN over a sequence (SPEC section 2): the previous output is fed back::

        a_t = W_ih x_t + b_ih + W_yh y_{t-1} + b_yh,   h_t = f(a_t),   y_t = g(W_hy h_t + b_hy)

    Args: x (T, B, I); y0 (B, O) or None; weight_ih (H, I); weight_yh (H, O);
    weight_hy (O, H); biases or None; nonlinearity f in tanh | relu | identity,
    output_nonlinearity g in identity | tanh | sigmoid.
    Returns (out (T, B, O) = every y_t, y_n (B, O)) [, {"h": (T, B, H)}].
    Regularisers (SPEC section 16; module options fill them, see rnnkit.LSTM):
    ``zoneout``: one (T, B, W) tensor of weights z in [0, 1] or None per state
    (``s_t = z s_{t-1} + (1 - z) s~_t``); ``recurrent_mask``: (B, W) m, the W_yh
    product reads ``m * y_{t-1}`` (recurrent dropout).
    """
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected one of {_NONLINEARITIES}, got {nonlinearity!r}")
    if output_nonlinearity not in _OUTPUT_NONLINEARITIES:
        raise ValueError(f"output_nonlinearity: expected one of {_OUTPUT_NONLINEARITIES}, got {output_nonlinearity!r}")
    T, B, _ = x.shape
    lengths = lengths_tensor(lengths, T, B)
    zoneout = _check_regular("Jordan RNN", zoneout, recurrent_mask, T, B, (weight_hy.shape[0],), x)
    regular = () if zoneout is None and recurrent_mask is None else (zoneout, recurrent_mask)
    out, y_n, hs = _apply(_Jordan, x, y0, weight_ih, weight_yh, weight_hy, bias_ih, bias_yh, bias_hy, lengths,
                          _backend.ACT_CODES[nonlinearity], _backend.ACT_CODES[output_nonlinearity],
                          _backend.current_isa(), grad_recorder, regular=regular)
    if return_internals:
        return out, y_n, {"h": hs.detach()}
    return out, y_n


from . import _ops  # noqa: E402  (defines the custom ops from the Functions above)
