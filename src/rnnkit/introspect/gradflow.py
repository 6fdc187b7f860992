"""How far back does the gradient reach? (SPEC section 6)

:func:`gradient_flow` runs a model once forward and once backward and returns, for
every layer and direction of its recurrent module, the norm of the total gradient of
the loss with respect to the recurrent state at every step::

    ||dL/dh_k||   (and ||dL/dc_k|| for an LSTM, ||dL/dy_k|| for a Jordan network)

taken straight from the native BPTT (one backward pass, no Python loop over time),
optionally with the norm of the one-step Jacobian ``||ds_t/ds_{t-1}||``
(:mod:`rnnkit.introspect.jacobian`). The summary is the average change of
``log10 ||dL/dh_k||`` per step of lag, and a verdict:

    decay < -tolerance   vanishing      (default tolerance 0.01: a factor 10 per 100 steps)
    decay > +tolerance   exploding
    otherwise            stable

:func:`compare` measures several models at once; ``rnnkit gradflow`` draws them in one
PNG (:func:`plot_gradient_flow`) and prints the table behind it (:func:`format_table`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import networks
from ..errors import IntrospectError
from ._recording import arch_of, find_recurrent, recording
from .jacobian import step_jacobian_norms

__all__ = ["LayerFlow", "GradientFlow", "gradient_flow", "verdict", "format_table", "table_note", "plot_gradient_flow",
           "compare", "checkpoint_gradient_flow", "parse_archs"]

DEFAULT_TOLERANCE = 0.01  # log10 per step: a factor of 10 over 100 steps
PLOT_SIZE_PX = (900, 540)  # width, height of the gradflow PNG
_PLOT_DPI = 100


def verdict(decay: float, tolerance: float = DEFAULT_TOLERANCE) -> str:
    """'vanishing', 'stable' or 'exploding' for an average log10 change per step."""
    if decay is None or not math.isfinite(decay):
        return "undetermined"
    if decay < -tolerance:
        return "vanishing"
    if decay > tolerance:
        return "exploding"
    return "stable"


@dataclass
class LayerFlow:
    """Gradient flow through one layer and direction.

    norms[key]: (T, B) norm over units of the recorded state gradient ``key`` ("dh",
      "dc" for an LSTM, "dy" for a Jordan network) at every step, in the caller's time
      order; NaN past a sequence's length.
    lags: (T, B) lag of each step: how many recurrent steps separate it from the end of
      its sequence in this direction's processing order (T_b - 1 - k forward, k backward).
    jacobian: (T, B) ``||ds_k/ds_{k-1}||_2`` or None.
    """

    layer: int
    direction: int
    norms: Dict[str, Tensor]
    lags: Tensor
    jacobian: Optional[Tensor] = None

    @property
    def state_key(self) -> str:
        return next(iter(self.norms))

    def by_lag(self, key: Optional[str] = None) -> Tensor:
        """(L, B) norms re-indexed by lag (row j = lag j), NaN where a sequence is shorter."""
        n = self.norms[key or self.state_key]
        T, B = n.shape
        out = torch.full_like(n, float("nan"))
        valid = ~torch.isnan(n)
        lag = torch.where(valid, self.lags, torch.zeros_like(self.lags))
        cols = torch.arange(B).expand(T, B)
        out[lag[valid], cols[valid]] = n[valid]
        return out

    def curve(self, key: Optional[str] = None) -> Tensor:
        """(L,) log10 of the geometric mean over rows of the norm at each lag (NaN: none)."""
        log = self.by_lag(key).log10()
        log = torch.where(torch.isfinite(log), log, torch.full_like(log, float("nan")))
        return log.nanmean(dim=1)

    def decay(self, key: Optional[str] = None) -> float:
        """Average change of log10 ||dL/ds|| per step of lag (negative: shrinking).

        Per row: (log10 n[lag m] - log10 n[lag 0]) / m, m the last lag before the norm
        first underflows to 0 (or the sequence ends); then the mean over rows."""
        log = self.by_lag(key).log10()  # (L, B): -inf where the gradient is exactly 0
        rates = []
        for b in range(log.shape[1]):  # rows, not time
            col = log[:, b]
            ok = torch.isfinite(col)
            m = int(ok.long().cumprod(0).sum()) - 1  # last lag of the leading finite run
            if m >= 1:
                rates.append(float(col[m] - col[0]) / m)
        return sum(rates) / len(rates) if rates else float("nan")

    def jacobian_log_mean(self) -> float:
        """Mean of log10 ||ds_k/ds_{k-1}|| over steps and rows (NaN without Jacobians)."""
        if self.jacobian is None:
            return float("nan")
        log = self.jacobian.log10()
        log = log[torch.isfinite(log)]
        return float(log.mean()) if log.numel() else float("nan")


@dataclass
class GradientFlow:
    """What :func:`gradient_flow` measured: one :class:`LayerFlow` per layer and direction
    (index l * D + d), the loss value, and the sequence length."""

    arch: str
    layers: List[LayerFlow]
    loss: float
    steps: int
    tolerance: float = DEFAULT_TOLERANCE
    label: str = field(default="")

    def layer(self, layer: int = 0, direction: int = 0) -> LayerFlow:
        for flow in self.layers:
            if flow.layer == layer and flow.direction == direction:
                return flow
        raise IndexError(f"layer/direction: no layer {layer} direction {direction} "
                         f"(have {[(f.layer, f.direction) for f in self.layers]})")

    @property
    def decay(self) -> float:
        """Average log10 change per step of ||dL/dh_k|| in layer 0, forward direction."""
        return self.layers[0].decay()

    @property
    def verdict(self) -> str:
        return verdict(self.decay, self.tolerance)

    def rows(self) -> List[dict]:
        """One dict per layer, direction and recorded state: the table's data."""
        rows = []
        for flow in self.layers:
            for key in flow.norms:
                curve = flow.curve(key)
                finite = curve[torch.isfinite(curve)]
                d = flow.decay(key)
                rows.append({
                    "model": self.label or self.arch, "layer": flow.layer, "direction": flow.direction,
                    "state": key[1:], "steps": self.steps,
                    "log10_norm_lag0": float(curve[0]) if curve.numel() else float("nan"),
                    "log10_norm_last": float(finite[-1]) if finite.numel() else float("nan"),
                    "decay": d, "factor_per_step": 10 ** d if math.isfinite(d) else float("nan"),
                    "jacobian_log10": flow.jacobian_log_mean() if key in ("dh", "dy") else float("nan"),
                    "verdict": verdict(d, self.tolerance),
                })
        return rows

    def table(self, header: bool = True) -> str:
        return format_table([self], header=header)


def format_table(flows: Sequence[GradientFlow], header: bool = True) -> str:
    """The text table of several measurements, one line per layer / direction / state."""
    lines = []
    if header:
        lines.append(f"{'model':<14}{'layer':>6}{'state':>6}{'steps':>7}{'log10|g| lag0':>15}{'log10|g| last':>15}"
                     f"{'decay/step':>12}{'x/step':>8}{'log10|J|':>10}  verdict")
    for flow in flows:
        for r in flow.rows():
            layer = f"{r['layer']}{'r' if r['direction'] else ''}"
            lines.append(f"{r['model']:<14}{layer:>6}{r['state']:>6}{r['steps']:>7}{r['log10_norm_lag0']:>15.3f}"
                         f"{r['log10_norm_last']:>15.3f}{r['decay']:>12.4f}{r['factor_per_step']:>8.3f}"
                         f"{_fmt(r['jacobian_log10']):>10}  {r['verdict']}")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.3f}"


def _last_step_loss(output: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """L = sum over rows and features of the output at each row's last step: dL/dy_T = 1."""
    T, B = output.shape[0], output.shape[1]
    last = torch.full((B,), T - 1, dtype=torch.long) if lengths is None else lengths.to(torch.long) - 1
    return output[last.to(output.device), torch.arange(B, device=output.device)].sum()


def gradient_flow(model: nn.Module, input, loss: Optional[Callable] = None, *, hx=None, lengths=None,
                  module: Optional[nn.Module] = None, jacobian: bool = True, exact_max_size: int = 64,
                  power_iterations: int = 20, tolerance: float = DEFAULT_TOLERANCE, label: str = "") -> GradientFlow:
    """Per-step state-gradient norms of a recurrent model, from one native backward pass.

    Args:
      model: an rnnkit RNN / LSTM / GRU / JordanRNN, or any module containing exactly
        one of them (else pass ``module=``); it is called as ``model(input, hx,
        lengths=lengths)`` when it is the recurrent module, ``model(input)`` (plus
        ``lengths=`` if given) otherwise. It runs in eval mode (no dropout) and the
        parameters' ``.grad`` are left untouched.
      input: the model's input (for a bare recurrent module: (T, B, I), (B, T, I) with
        batch_first, unbatched (T, I) or a PackedSequence).
      loss: ``loss(model_output) -> scalar``; default: the sum of the recurrent module's
        output at each sequence's last step, ``L = sum_b sum_j y_{T_b}[b, j]``.
      hx, lengths: initial state and sequence lengths, as for the module.
      jacobian: also compute ``||ds_t/ds_{t-1}||_2`` (exact up to state size
        ``exact_max_size``, else ``power_iterations`` of power iteration).
      tolerance: the verdict's threshold on the average log10 change per step.

    Returns:
      A :class:`GradientFlow`; ``flow.layers[l * D + d].norms["dh"]`` is (T, B).

    >>> rnn = rnnkit.RNN(4, 32).double()
    >>> flow = gradient_flow(rnn, torch.randn(100, 2, 4, dtype=torch.float64))
    >>> flow.decay, flow.verdict          # e.g. (-0.08, 'vanishing')
    """
    rnn = find_recurrent(model, module)
    arch = arch_of(rnn)
    if hx is not None and model is not rnn:
        raise ValueError("hx: only supported when model is the recurrent module itself")
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), recording(rnn) as calls:
            if model is rnn:
                output = model(input, hx, lengths=lengths)
            else:
                output = model(input) if lengths is None else model(input, lengths=lengths)
            if len(calls) != 1:
                raise RuntimeError(f"model: expected one call of its {type(rnn).__name__} per forward, got {len(calls)}")
            call = calls[0]
            value = _last_step_loss(call.output_time_major(), call.lengths) if loss is None else loss(output)
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise ValueError(f"loss: expected a scalar tensor, got {type(value).__name__} "
                                 f"{tuple(getattr(value, 'shape', ()))}")
            params = [p for p in rnn.parameters() if p.requires_grad]
            if not params or not value.requires_grad:
                raise RuntimeError("loss: does not depend on any trainable parameter of the recurrent module, so the "
                                   "backward pass that records the gradients cannot run (requires_grad=False?)")
            torch.autograd.grad(value, params, allow_unused=True)  # fills the native recorders
    finally:
        model.train(was_training)

    T, B = call.x.shape[0], call.x.shape[1]
    D = 2 if rnn.bidirectional else 1
    lens = call.lengths if call.lengths is not None else torch.full((B,), T, dtype=torch.long)
    t = torch.arange(T)[:, None]
    active = t < lens[None, :]  # (T, B)
    jac = None
    if jacobian:
        jac = step_jacobian_norms(rnn, call.input, call.hx, lengths=call.lengths_argument,
                                  exact_max_size=exact_max_size, power_iterations=power_iterations)
    layers = []
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    for k in range(len(call.gradients)):
        layer, direction = divmod(k, D)
        norms = {}
        for key in networks.get(arch).gradient_keys():
            n = call.gradient(k, key).detach().to(torch.float64).norm(dim=-1)  # (T, B)
            norms[key] = torch.where(active, n, nan)
        lags = (lens[None, :] - 1 - t) if direction == 0 else t.expand(T, B)
        layers.append(LayerFlow(layer, direction, norms, torch.where(active, lags, torch.zeros_like(lags)),
                                None if jac is None else jac[k].to(torch.float64)))
    return GradientFlow(arch, layers, float(value.detach()), T, tolerance, label)


# ----------------------------------------------------------------------------- picture
def plot_gradient_flow(flows: Sequence[GradientFlow], path, title: Optional[str] = None) -> None:
    """One PNG (PLOT_SIZE_PX pixels) of log10 ||dL/ds_k|| against the lag T - k: a solid
    line per model and layer for h (y for Jordan), dashed for an LSTM's cell state c."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    fig = Figure(figsize=(PLOT_SIZE_PX[0] / _PLOT_DPI, PLOT_SIZE_PX[1] / _PLOT_DPI), dpi=_PLOT_DPI)
    ax = fig.subplots()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    line = 0
    for flow in flows:
        name = flow.label or flow.arch
        for lf in flow.layers:
            color = colors[line % len(colors)]
            line += 1
            suffix = "" if len(flow.layers) == 1 else f" L{lf.layer}{'r' if lf.direction else ''}"
            for key in lf.norms:
                curve = lf.curve(key)
                lags = torch.arange(curve.numel())
                ok = torch.isfinite(curve)
                style = "--" if key == "dc" else "-"
                label = f"{name}{suffix} ({key[1:]}, {lf.decay(key):+.3f}/step)"
                ax.plot(lags[ok].numpy(), curve[ok].numpy(), style, color=color, label=label, linewidth=1.6)
    ax.set_xlabel("lag T - k (steps back from the loss)")
    ax.set_ylabel("log10 ||dL/dh_k||  (geometric mean over the batch)")
    ax.set_title(title or "Gradient flow back through time")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=_PLOT_DPI)


# ----------------------------------------------------------------------------- several models
ARCHS = networks.names()


def fresh_model(arch: str, input_size: int, hidden_size: int, num_layers: int = 1) -> nn.Module:
    """A freshly initialised float64 rnnkit model of the named network (:mod:`rnnkit.networks`)."""
    try:
        spec = networks.get(arch)
    except ValueError:
        raise IntrospectError(f"--arch: unknown architecture {arch!r}; expected a comma-separated list of "
                              f"{', '.join(ARCHS)}") from None
    return spec.make(input_size, hidden_size, num_layers=num_layers).double()


def parse_archs(text: str) -> List[str]:
    archs = [a.strip().lower() for a in text.split(",") if a.strip()]
    if not archs:
        raise IntrospectError(f"--arch: expected a comma-separated list of {', '.join(ARCHS)}, got {text!r}")
    for a in archs:
        if a not in ARCHS and a not in networks.ALIASES:
            raise IntrospectError(f"--arch: unknown architecture {a!r}; expected a comma-separated list of {', '.join(ARCHS)}")
    return [networks.get(a).name for a in archs]


def checkpoint_gradient_flow(path, length: int, batch: int = 8, seed: int = 0, *, jacobian: bool = True,
                             text: Optional[str] = None) -> GradientFlow:
    """Gradient flow of a trained character language model (a checkpoint of ``rnnkit
    train lm``), in float64, on ``batch`` sequences of ``length`` characters: ``text``
    repeated (each row starting at a different offset) or random characters of its
    vocabulary. Loss: the default one on the recurrent layer's last output."""
    from pathlib import Path

    from .visualize import _recurrent_of, load_language_model

    model = load_language_model(path).double()
    rnn, _ = _recurrent_of(model, 0)
    V = len(model.vocab)
    if text is not None:
        if not text:
            raise IntrospectError("--text: expected at least one character, got an empty text")
        try:
            ids = model.encode(text)
        except ValueError as e:
            raise IntrospectError(f"--text: {e}") from None
        reps = (length + batch * 7) // len(ids) + 1
        long = ids.repeat(reps)
        x = torch.stack([long[7 * b:7 * b + length] for b in range(batch)], dim=1)  # (T, B)
    else:
        if V < 2:
            raise IntrospectError(f"{path}: the model's vocabulary is empty")
        generator = torch.Generator().manual_seed(seed)
        x = torch.randint(1, V, (length, batch), generator=generator)  # (T, B), never the unknown id 0
    name = Path(path).stem if Path(path).is_file() else Path(path).name
    return gradient_flow(model, x, module=rnn, jacobian=jacobian, label=f"{arch_of(rnn)} ({name})")


def compare(archs: Optional[Sequence[str]] = None, *, length: int = 200, hidden: int = 64, input_size: int = 16,
            layers: int = 1, batch: int = 8, seed: int = 0, checkpoints: Sequence = (), text: Optional[str] = None,
            jacobian: bool = True) -> List[GradientFlow]:
    """What ``rnnkit gradflow`` measures: one :class:`GradientFlow` per freshly initialised
    model in ``archs`` (default: rnn, gru, lstm without ``checkpoints``, none with them), all
    fed the same ``batch`` random sequences of ``length`` steps, then one per checkpoint
    (:func:`checkpoint_gradient_flow`)."""
    if length < 2:
        raise IntrospectError(f"--length: expected at least 2 steps, got {length}")
    for name, value in (("hidden", hidden), ("input-size", input_size), ("layers", layers), ("batch", batch)):
        if value < 1:
            raise IntrospectError(f"--{name}: expected a positive integer, got {value}")
    if archs is None:
        archs = [] if checkpoints else ["rnn", "gru", "lstm"]
    flows = []
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(length, batch, input_size, generator=generator, dtype=torch.float64)
    for arch in archs:
        torch.manual_seed(seed)
        model = fresh_model(arch, input_size, hidden, layers)
        flows.append(gradient_flow(model, x, jacobian=jacobian, label=f"{arch} (fresh)"))
    for path in checkpoints:
        flows.append(checkpoint_gradient_flow(path, length, batch, seed, jacobian=jacobian, text=text))
    return flows


def table_note() -> str:
    """What the columns of :func:`format_table` mean."""
    return ("log10|g|: log10 ||dL/ds_k|| at lag 0 and at the longest lag (geometric mean over the batch); "
            "decay/step: its average\nchange per step (x/step = 10^decay); log10|J|: mean log10 of the "
            "one-step Jacobian's spectral norm\n(LSTM: of the (h, c) state); verdict: decay below "
            f"-{DEFAULT_TOLERANCE:g} vanishing, above +{DEFAULT_TOLERANCE:g} exploding.")
