"""The training-time regularisers and gate initialisations of issue 10 (SPEC section 16),
as the layers and cells use them.

Regularisers (each a rate in [0, 1), 0 = off, so the default layer is torch.nn's exactly):

* ``zoneout`` (Krueger et al. 2016): in training each unit of each state keeps its
  previous value with probability p, ``s_t = z_t s_{t-1} + (1 - z_t) s~_t`` with
  z_t ~ Bernoulli(p) drawn per step, unit and sequence; at evaluation the expected
  value, z_t = p. Every state: h (Elman, GRU), h and c (LSTM), y (Jordan).
* ``recurrent_dropout`` (Gal & Ghahramani 2016, variational): one mask per sequence
  and layer, m ~ Bernoulli(1 - p) / (1 - p), the W_hh product reads ``m h_{t-1}`` at
  every step; nothing at evaluation.
* ``weight_drop`` (DropConnect on W_hh, the weight drop of AWD-LSTM, Merity et al.
  2018): one mask per forward on the recurrent weight matrix, W_hh ~ dropout(W_hh, p)
  (scaled by 1 / (1 - p)); the full W_hh at evaluation. Applied in torch before the
  native call, so autograd carries its gradient.

All masks come from torch's generator, one call per kind and forward (no Python per
step), so a run is repeatable under ``torch.manual_seed``.

Initialisations (of the gate biases; no parameter is added):

* ``forget_bias`` (Gers et al. 2000; Jozefowicz et al. 2015): the bias of the gate that
  keeps the old state. LSTM: b_f = forget_bias. GRU: the update gate z, whose meaning
  depends on the form: torch's reset-after GRU keeps the old state with z
  (h = (1 - z) n + z h_prev), so b_z = +forget_bias; the seeds' reset-before GRU keeps
  it with 1 - z (h = (1 - z) h_prev + z n), so b_z = -forget_bias. Both mean "keep the
  state with probability sigmoid(forget_bias) at the start".
* ``chrono_tmax`` (Tallec & Ollivier 2018, chrono initialisation for dependencies of up
  to T_max steps): LSTM b_f ~ log(U(1, T_max - 1)) and b_i = -b_f; GRU the keep gate's
  bias ~ log(U(1, T_max - 1)) with the sign above. The value is put in ``bias_ih``;
  the same rows of ``bias_hh`` are set to zero (only the sum enters the gate).
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import Tensor, nn

RATES = ("zoneout", "recurrent_dropout", "weight_drop")
RECURRENT_ROLES = ("weight_hh", "weight_yh")  # the weight that multiplies the carried state


def check_rate(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}")
    return float(value)


def set_rates(module: nn.Module, zoneout=0.0, recurrent_dropout=0.0, weight_drop=0.0) -> None:
    """Checks and stores the three rates on a layer."""
    module.zoneout = check_rate("zoneout", zoneout)
    module.recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout)
    module.weight_drop = check_rate("weight_drop", weight_drop)


def rates_repr(module: nn.Module) -> str:
    return "".join(f", {k}={getattr(module, k)}" for k in RATES if getattr(module, k, 0.0))


def active(module: nn.Module) -> bool:
    """Whether a regulariser changes this module's forward now: zoneout (its expected value
    at evaluation too), recurrent dropout or weight drop in training. The one-call paths
    (rnnkit._stack, the cells' no-grad step) run none of them and leave such a forward to
    the layer path."""
    return bool(getattr(module, "zoneout", 0.0)) or (module.training and bool(
        getattr(module, "recurrent_dropout", 0.0) or getattr(module, "weight_drop", 0.0)))


def layer_masks(module: nn.Module, spec, K: int, T: int, B: int, like: Tensor) -> Optional[List[dict]]:
    """For each of the K = layers x directions single-direction layers, the keyword
    arguments ``zoneout`` / ``recurrent_mask`` of its functional call, or None when no
    regulariser is on (the plain call)."""
    pz = getattr(module, "zoneout", 0.0)
    pd = getattr(module, "recurrent_dropout", 0.0) if module.training else 0.0  # nothing dropped at evaluation
    if not pz and not pd:
        return None
    widths = spec.state_widths(module)  # a projected LSTM's h is P wide, its c H
    kw: List[dict] = [{} for _ in range(K)]
    if pz:
        zs = []
        for W in widths:
            if module.training:
                zs.append(torch.empty(K, T, B, W, dtype=like.dtype, device=like.device).bernoulli_(pz))
            else:  # the expected value
                zs.append(torch.full((K, T, B, W), pz, dtype=like.dtype, device=like.device))
        for k in range(K):
            kw[k]["zoneout"] = tuple(z[k] for z in zs)
    if pd:
        m = torch.empty(K, B, widths[0], dtype=like.dtype, device=like.device).bernoulli_(1 - pd).div_(1 - pd)
        for k in range(K):
            kw[k]["recurrent_mask"] = m[k]
    return kw


def drop_weights(module: nn.Module, roles, params: list) -> list:
    """The layer's parameters with DropConnect on its recurrent weight (training only)."""
    p = getattr(module, "weight_drop", 0.0)
    if not p or not module.training:
        return params
    return [nn.functional.dropout(w, p, training=True) if role in RECURRENT_ROLES else w
            for role, w in zip(roles, params)]


# ---- gate initialisations -------------------------------------------------------------------
def check_init(forget_bias, chrono_tmax, bias: bool):
    if forget_bias is not None and (isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float))
                                    or not math.isfinite(forget_bias)):
        raise ValueError(f"forget_bias: expected a finite number or None, got {forget_bias!r}")
    if chrono_tmax is not None and (isinstance(chrono_tmax, bool) or not isinstance(chrono_tmax, (int, float))
                                    or not 2 < chrono_tmax < float("inf")):
        raise ValueError(f"chrono_tmax: expected a number > 2 (the longest dependency, in steps) or None, "
                         f"got {chrono_tmax!r}")
    if forget_bias is not None and chrono_tmax is not None:
        raise ValueError("forget_bias, chrono_tmax: expected at most one of the two initialisations, got both")
    if (forget_bias is not None or chrono_tmax is not None) and not bias:
        raise ValueError("forget_bias / chrono_tmax: initialise gate biases, so bias=True is needed, got bias=False")


def init_gate_biases(module: nn.Module) -> None:
    """Applies ``module.forget_bias`` / ``module.chrono_tmax`` (if set) to every layer and
    direction of an rnnkit LSTM / GRU or cell (see the module docstring)."""
    fb, tmax = getattr(module, "forget_bias", None), getattr(module, "chrono_tmax", None)
    if fb is None and tmax is None:
        return
    H = module.hidden_size
    w_hh = module.weight_hh_l0 if hasattr(module, "weight_hh_l0") else module.weight_hh  # a layer or a cell
    lstm = w_hh.shape[0] == 4 * H
    sign = 1.0 if lstm or getattr(module, "reset_after", True) else -1.0
    keep = slice(H, 2 * H)  # LSTM f (rows i, f, g, o); GRU z (rows r, z, n)
    with torch.no_grad():
        for name, b_ih in module.named_parameters():
            if not name.startswith("bias_ih"):
                continue
            b_hh = module.get_parameter("bias_hh" + name[len("bias_ih"):])
            if fb is not None:
                value = torch.full((H,), float(fb), dtype=b_ih.dtype)
            else:
                value = torch.empty(H, dtype=b_ih.dtype).uniform_(1, tmax - 1).log_()
            b_ih[keep] = sign * value
            b_hh[keep] = 0
            if tmax is not None and lstm:  # chrono: b_i = -b_f
                b_ih[:H] = -value
                b_hh[:H] = 0


def captured_masks_allowed() -> None:
    """While a graph is captured a regularised layer runs the per-step reference (the custom
    ops take no masks). Dynamo (torch.compile, torch.export) guards on the unrolled length;
    a trace (ONNX, TorchScript) would fix T silently, so it is refused."""
    if torch.jit.is_tracing():
        raise NotImplementedError("zoneout: no ONNX / TorchScript operator computes it, and a trace of the per-step "
                                  "reference would fix T; export a layer with zoneout=0, or use torch.compile / "
                                  "torch.export")
