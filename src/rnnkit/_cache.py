"""Native plans (packed weights) cached on a module, rebuilt when a parameter changes.

A plan is whatever the core built from a module's parameters (their values packed
into its own layout, a copy). It stays valid while every parameter is the same
object, over the same storage, with the same shape, strides and dtype, holding the
same bytes. The bytes are compared with a copy taken when the plan was built (one
``memcmp`` per parameter in the core, about a microsecond for an LSTM of 64 units):
torch's version counter would be cheaper but misses writes through ``p.data``
(``p.data.add_(...)``, the update of many hand-written training loops) and through
NumPy views, which bump no counter. A new storage shows as a new data pointer
(``p.data = t``, ``module.to(dtype)``, a new Parameter object); the cache holds a view
of every watched storage while its plan lives, so no later tensor can be allocated at
a watched address and pass as the old one. A parameter that is not contiguous is
never known unchanged: its plan is rebuilt on every use (correct, slower).
"""

from __future__ import annotations

import operator
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from . import _core

_data_ptr = Tensor.data_ptr
_layout = operator.attrgetter("shape", "dtype")
_stride = Tensor.stride
_NEVER = (object(),)


def _watch(present: Sequence[Tensor]) -> tuple:
    """Where each tensor's storage is and how it is laid out: (data pointers, (shapes, dtypes)
    and strides)."""
    return list(map(_data_ptr, present)), (list(map(_layout, present)), list(map(_stride, present)))


class PlanCache:
    """One cached plan, rebuilt by ``build()`` whenever ``params`` changed since the last build."""

    __slots__ = ("_params", "_ids", "_present", "_state", "_sizes", "_copy", "_copy_ptr", "_keep", "plan", "builds")

    def __init__(self) -> None:
        self.clear()
        self.builds = 0  # how many times a plan was built (tests read it)

    def get(self, params: Sequence[Optional[Tensor]], build: Callable[[], object]):
        """The plan for ``params`` (parameters or None, in a fixed order)."""
        # The same objects (``_params`` holds them, so an id cannot be reused meanwhile),
        # over the same storages laid out the same way, holding the same bytes.
        if self.plan is not None and list(map(id, params)) == self._ids:
            ptrs, layout = _watch(self._present)
            if ptrs == self._state[0] and layout == self._state[1] \
                    and _core.same_bytes(ptrs, self._sizes, self._copy_ptr):
                return self.plan
        params = tuple(params)
        self.plan = None
        plan = build()
        self._params, self._ids = params, list(map(id, params))
        present = tuple(p for p in params if p is not None)
        self._present = present
        if all(p.is_contiguous() for p in present):
            self._state = _watch(present)
            self._sizes = [p.numel() * p.element_size() for p in present]
            with torch.inference_mode(False), torch.no_grad():
                self._copy = torch.cat([p.detach().reshape(-1).view(torch.uint8) for p in present]) if present \
                    else torch.empty(0, dtype=torch.uint8)
            self._copy_ptr = self._copy.data_ptr()
        else:
            self._state, self._sizes, self._copy, self._copy_ptr = (_NEVER, _NEVER), [], None, 0
        self._keep = tuple(p.detach() for p in present)  # pins the storages
        self.plan = plan
        self.builds += 1
        return plan

    def clear(self) -> None:
        """Forget the plan (the next ``get`` rebuilds it)."""
        self.plan, self._params, self._ids, self._present, self._keep = None, (), None, (), ()
        self._state, self._sizes, self._copy, self._copy_ptr = (_NEVER, _NEVER), [], None, 0
