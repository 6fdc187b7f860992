"""Gate saturation statistics (Karpathy, Johnson and Fei-Fei 2015, "Visualizing and
Understanding Recurrent Networks", section 4.2).

A sigmoid gate is *left-saturated* when its activation is below 0.1 (the gate is
closed: an LSTM forget gate that erases the cell) and *right-saturated* above 0.9
(open: a forget gate that carries the cell on, unchanged). For every layer, direction,
gate (LSTM i, f, o; GRU r, z) and unit, :func:`gate_saturation` counts the fraction of
(step, sequence) pairs in each regime over a whole dataset, steps past a sequence's
length excluded. The activations come from the native forward pass
(``forward_with_internals``): no Python loop over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import networks
from ._recording import arch_of, find_recurrent, recording

__all__ = ["GateSaturation", "gate_saturation"]


@dataclass
class GateSaturation:
    """Per layer/direction index ``k = l * D + d`` and gate name, per-unit fractions.

    left[k][gate]:  (H,) fraction of active steps with activation < low
    right[k][gate]: (H,) fraction of active steps with activation > high
    steps: number of (step, sequence) pairs counted.
    """

    arch: str
    low: float
    high: float
    steps: int
    left: List[Dict[str, Tensor]]
    right: List[Dict[str, Tensor]]
    num_directions: int = 1

    def fraction(self, gate: str, side: str = "right", layer: int = 0, direction: int = 0) -> float:
        """Fraction over all units and steps of ``gate`` on ``side`` ('left' or 'right')."""
        table = {"left": self.left, "right": self.right}.get(side)
        if table is None:
            raise ValueError(f"side: expected 'left' or 'right', got {side!r}")
        k = layer * self.num_directions + direction
        if not 0 <= k < len(table):
            raise IndexError(f"layer/direction: no layer {layer} direction {direction} (have {len(table)} entries)")
        if gate not in table[k]:
            raise KeyError(f"gate: {self.arch} has sigmoid gates {sorted(table[k])}, got {gate!r}")
        return float(table[k][gate].mean())

    def table(self) -> str:
        """Text table: per layer and gate, the mean fractions and how many units are
        saturated (left or right) more than half of the time."""
        lines = [f"{'layer':>6}{'gate':>6}{f'< {self.low:g}':>9}{f'> {self.high:g}':>9}"
                 f"{'units mostly <':>16}{'units mostly >':>16}   ({self.steps} steps counted)"]
        for k, gates in enumerate(self.left):
            layer, direction = divmod(k, self.num_directions)
            name = f"{layer}{'r' if direction else ''}"
            for gate, left in gates.items():
                right = self.right[k][gate]
                lines.append(f"{name:>6}{gate:>6}{float(left.mean()):>9.3f}{float(right.mean()):>9.3f}"
                             f"{int((left > 0.5).sum()):>10}/{left.numel():<5}"
                             f"{int((right > 0.5).sum()):>10}/{right.numel():<5}")
        return "\n".join(lines)


def _as_batch(item) -> Tuple[object, Optional[object]]:
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    return item, None


@torch.no_grad()
def gate_saturation(model: nn.Module, data: Iterable, *, module: Optional[nn.Module] = None,
                    low: float = 0.1, high: float = 0.9) -> GateSaturation:
    """Fraction of each sigmoid gate's activations below ``low`` / above ``high``.

    Args:
      model: an rnnkit LSTM or GRU, or a module containing exactly one (else pass
        ``module=``), called as ``model(input)`` (``model(input, lengths=...)``).
      data: an iterable of model inputs, or of ``(input, lengths)`` pairs.
      low, high: the saturation thresholds (default 0.1 and 0.9).

    Returns:
      A :class:`GateSaturation`.

    >>> sat = gate_saturation(lstm, [torch.randn(50, 4, 8) for _ in range(3)])
    >>> sat.fraction("f", "right")         # how often forget gates are wide open
    """
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"low, high: expected 0 < low < high < 1, got low={low}, high={high}")
    rnn = find_recurrent(model, module)
    arch = arch_of(rnn)
    gates = networks.get(arch).unit_interval
    if not gates:
        raise ValueError(f"model: a {type(rnn).__name__} has no sigmoid gates; gate saturation needs an LSTM or GRU")
    left: List[Dict[str, Tensor]] = []
    right: List[Dict[str, Tensor]] = []
    steps = 0
    was_training = model.training
    model.eval()
    try:
        for item in data:
            input, lengths = _as_batch(item)
            with recording(rnn, gradients=False) as calls:
                if model is rnn:
                    model(input, lengths=lengths)
                else:
                    model(input) if lengths is None else model(input, lengths=lengths)
            for call in calls:
                T, B = call.x.shape[0], call.x.shape[1]
                lens = call.lengths if call.lengths is not None else torch.full((B,), T, dtype=torch.long)
                active = (torch.arange(T)[:, None] < lens[None, :]).unsqueeze(-1)  # (T, B, 1)
                steps += int(active.sum())
                for k in range(len(call.internals)):
                    if len(left) <= k:
                        left.append({}), right.append({})
                    for gate in gates:
                        a = call.internal(k, gate)  # (T, B, H)
                        lo = ((a < low) & active).sum(dim=(0, 1)).double()
                        hi = ((a > high) & active).sum(dim=(0, 1)).double()
                        left[k][gate] = left[k].get(gate, 0) + lo
                        right[k][gate] = right[k].get(gate, 0) + hi
    finally:
        model.train(was_training)
    if steps == 0:
        raise ValueError("data: no batches (or no steps) to count")
    left = [{g: v / steps for g, v in d.items()} for d in left]
    right = [{g: v / steps for g, v in d.items()} for d in right]
    return GateSaturation(arch, low, high, steps, left, right, 2 if rnn.bidirectional else 1)
