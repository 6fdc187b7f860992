"""Native plans (packed weights) cached on a module, rebuilt when a parameter changes.

A plan is whatever the core built from a module's parameters (their values packed
into its own layout, a copy). It stays valid while every parameter is the same
object, with the same storage, dtype and contents. Contents are watched through
torch's version counter, which every in-place change bumps: an optimizer step,
``load_state_dict`` (``copy_``), ``p.add_`` under ``no_grad``, ``init.*_``. A new
storage shows as a new data pointer: ``p.data = t``, ``module.to(dtype)``, a new
Parameter object. The cache holds a view of every parameter's storage while its
plan lives, so no later tensor can be allocated at a watched address and pass as
the old one.

What it cannot see is a write that bypasses torch (a NumPy view of ``p.data``
written in place); :meth:`PlanCache.clear` forgets the plan for such cases.
"""

from __future__ import annotations

import operator
from typing import Callable, Optional, Sequence

from torch import Tensor


_data_ptr = Tensor.data_ptr
_version = operator.attrgetter("_version")


def _watch(present: Sequence[Tensor]) -> tuple:
    """Where each tensor's storage is and how often it was written: (data pointers, versions)."""
    try:
        return list(map(_data_ptr, present)), list(map(_version, present))  # C-level loops: called every use
    except RuntimeError:  # an inference tensor has no version counter: never known unchanged
        return (object(),)


class PlanCache:
    """One cached plan, rebuilt by ``build()`` whenever ``params`` changed since the last build."""

    __slots__ = ("_params", "_ids", "_present", "_state", "_keep", "plan", "builds")

    def __init__(self) -> None:
        self.clear()
        self.builds = 0  # how many times a plan was built (tests read it)

    def get(self, params: Sequence[Optional[Tensor]], build: Callable[[], object]):
        """The plan for ``params`` (parameters or None, in a fixed order)."""
        # The same objects (``_params`` holds them, so an id cannot be reused meanwhile),
        # each with the same storage and version.
        if self.plan is not None and list(map(id, params)) == self._ids and _watch(self._present) == self._state:
            return self.plan
        params = tuple(params)
        self.plan = None
        plan = build()
        self._params, self._ids = params, list(map(id, params))
        self._present = tuple(p for p in params if p is not None)
        self._state = _watch(self._present)
        self._keep = tuple(p.detach() for p in self._present)  # pins the storages
        self.plan = plan
        self.builds += 1
        return plan

    def clear(self) -> None:
        """Forget the plan (the next ``get`` rebuilds it)."""
        self.plan, self._params, self._ids, self._present, self._state, self._keep = None, (), None, (), (), ()
