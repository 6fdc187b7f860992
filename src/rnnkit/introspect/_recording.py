"""Capture what an rnnkit recurrent layer sees and does inside any model.

:func:`recording` temporarily routes a recurrent module's ``forward`` through
``forward_with_internals`` (so the native kernels record gates, cell states and,
during ``backward()``, the per-step state gradients) and keeps, for every call, the
module's input together with those records in time-major form. The model around the
module (embedding, head, loss) runs unchanged.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, List, Optional

from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from .. import networks
from .._checks import lengths_tensor

__all__ = ["arch_of", "recurrent_modules", "find_recurrent", "Capture", "recording", "time_major_input"]


def _is_layer(module: nn.Module) -> bool:
    """An rnnkit recurrent layer (not a cell: recording needs a sequence)."""
    spec = networks.network_of(module, None)
    return spec is not None and isinstance(module, spec.module_class)


def arch_of(module: nn.Module) -> str:
    """The registry name (:mod:`rnnkit.networks`) of an rnnkit recurrent layer: 'lstm', 'gru-rb', ..."""
    if not _is_layer(module):
        raise TypeError(f"module: expected an rnnkit recurrent layer "
                        f"({', '.join(sorted({n.module for n in networks.NETWORKS.values()}))}), "
                        f"got {type(module).__name__}")
    return networks.network_of(module).name


def recurrent_modules(model: nn.Module) -> List[nn.Module]:
    """Every rnnkit recurrent layer inside ``model`` (``model`` itself included)."""
    return [m for m in model.modules() if _is_layer(m)]


def find_recurrent(model: nn.Module, module: Optional[nn.Module] = None) -> nn.Module:
    """The recurrent module to inspect: ``module`` if given, else the only one in ``model``."""
    if module is not None:
        arch_of(module)
        return module
    found = recurrent_modules(model)
    if len(found) != 1:
        raise ValueError(f"model: expected exactly one rnnkit recurrent layer inside "
                         f"{type(model).__name__}, found {len(found)}; pass module= to choose one")
    return found[0]


def time_major_input(module: nn.Module, input, lengths=None):
    """(x (T, B, I), lengths (B,) or None) for an input as the module accepts it."""
    if isinstance(input, PackedSequence):
        x, lens = pad_packed_sequence(input)  # (T, B, I)
        return x, lens
    if input.dim() == 2:  # unbatched (T, I)
        return input.unsqueeze(1), None
    x = input.transpose(0, 1) if module.batch_first else input
    lens = None if lengths is None else lengths_tensor(lengths, x.shape[0], x.shape[1])
    return x, lens


def _to_time_major(module: nn.Module, t: Tensor, unbatched: bool) -> Tensor:
    """A recorded per-step tensor in the caller's layout -> (T, B, F)."""
    if unbatched:
        return t.unsqueeze(1)
    return t.transpose(0, 1) if module.batch_first else t


@dataclass
class Capture:
    """One call of the recorded module.

    x: its input, time-major (T, B, I); lengths: (B,) or None; hx: the initial state
    as passed; output: what the module returned first (caller's layout);
    internals[l*D+d]: dict of (T, B, H) tensors (time-major, caller's time order);
    gradients[l*D+d]: the StateGradients mapping, filled by ``backward()``.
    """

    module: nn.Module
    arch: str
    input: object
    x: Tensor
    lengths: Optional[Tensor]
    hx: object
    output: object
    internals: list
    gradients: list
    unbatched: bool = False
    lengths_argument: object = None  # the ``lengths=`` keyword as passed

    def internal(self, index: int, key: str) -> Tensor:
        """internals[index][key] as (T, B, H), time-major."""
        return _to_time_major(self.module, self.internals[index][key], self.unbatched)

    def gradient(self, index: int, key: str) -> Tensor:
        """The recorded per-step state gradient ``key`` ('dh', 'dc', 'dy') as (T, B, H)."""
        g = self.gradients[index]
        if key not in g:
            raise RuntimeError("gradients: empty; call backward() on a loss that depends on the recorded output")
        return _to_time_major(self.module, g[key], self.unbatched)

    def output_time_major(self) -> Tensor:
        """The module's output as (T, B, F) (padded for PackedSequence input)."""
        out = self.output
        if isinstance(out, PackedSequence):
            return pad_packed_sequence(out, total_length=self.x.shape[0])[0]
        return _to_time_major(self.module, out, self.unbatched)


@contextlib.contextmanager
def recording(module: nn.Module, *, gradients: bool = True) -> Iterator[List[Capture]]:
    """Record every call of ``module`` (an rnnkit recurrent module) inside the ``with``.

    Yields a list that receives one :class:`Capture` per call. ``gradients=True``
    also asks the native BPTT to keep the per-step state gradients of the next
    ``backward()``.

    >>> with recording(model.rnn) as calls:
    ...     loss = criterion(model(tokens), targets)
    ...     loss.backward()
    >>> calls[0].gradient(0, "dh").norm(dim=-1)       # (T, B) ||dL/dh_t||
    """
    arch = arch_of(module)
    captures: List[Capture] = []

    def forward(input, hx=None, *, lengths=None):
        recorders: Optional[list] = [] if gradients else None
        out, state, internals = module.forward_with_internals(input, hx, lengths=lengths, grad_recorders=recorders)
        unbatched = isinstance(input, Tensor) and input.dim() == 2
        x, lens = time_major_input(module, input, lengths)
        captures.append(Capture(module, arch, input, x, lens, hx, out, internals, recorders or [], unbatched,
                                lengths))
        return out, state

    if "forward" in module.__dict__:
        raise RuntimeError("module: already being recorded (nested recording of the same module)")
    module.forward = forward
    try:
        yield captures
    finally:
        del module.forward
