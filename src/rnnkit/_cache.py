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

from typing import Callable, Optional, Sequence

from torch import Tensor


def _watch(params: Sequence[Optional[Tensor]]) -> list:
    # id(p): the same object (the cache holds every watched one, so no other can take its id)
    return [None if p is None else (id(p), p.data_ptr(), p._version) for p in params]


class PlanCache:
    """One cached plan, rebuilt by ``build()`` whenever ``params`` changed since the last build."""

    __slots__ = ("_params", "_state", "_keep", "plan", "builds")

    def __init__(self) -> None:
        self._params: tuple = ()
        self._state: list = []
        self._keep: tuple = ()
        self.plan = None
        self.builds = 0  # how many times a plan was built (tests read it)

    def get(self, params: Sequence[Optional[Tensor]], build: Callable[[], object]):
        """The plan for ``params`` (parameters or None, in a fixed order)."""
        # Called once per step by the cells: the check is one list comparison.
        if not isinstance(params, (tuple, list)):
            params = tuple(params)  # a generator is read once
        if self.plan is not None and _watch(params) == self._state:
            return self.plan
        params = tuple(params)
        self.plan = None
        plan = build()
        self._params, self._state = params, _watch(params)  # _params keeps the watched objects alive
        self._keep = tuple(None if p is None else p.detach() for p in params)  # pins the storages
        self.plan = plan
        self.builds += 1
        return plan

    def clear(self) -> None:
        """Forget the plan (the next ``get`` rebuilds it)."""
        self.plan, self._params, self._state, self._keep = None, (), [], ()
