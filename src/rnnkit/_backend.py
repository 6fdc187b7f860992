"""Which native kernel path runs: instruction set and thread count.

The C++ core is compiled for several instruction sets (generic SIMD, AVX2, AVX-512)
and the best one this CPU supports is used by default. ``RNNKIT_ISA`` in the
environment, or the :func:`use_isa` context manager (per thread), forces another,
e.g. to check the fallback path. Nothing here is process-global mutable state that
a second thread could observe half-changed.
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch

from . import _core

# The codes the core's functions take, read from the binding (csrc/rnnkit.h defines them).
ISA_CODES = {isa.name: isa.value for isa in _core.Isa}  # generic, avx2, avx512: best last
ISA_NAMES = {code: name for name, code in ISA_CODES.items()}
ACT_CODES = {act.name: act.value for act in _core.Act}
ARCH_CODES = {arch.name: arch.value for arch in _core.Arch}


def available_isas() -> list[str]:
    """Instruction sets compiled into this build and supported by this CPU, best last."""
    return [name for name, code in ISA_CODES.items() if _core.isa_supported(code)]


def _isa_code(name: str) -> int:
    if name not in ISA_CODES:
        raise ValueError(f"isa: expected one of {sorted(ISA_CODES)}, got {name!r}")
    code = ISA_CODES[name]
    if not _core.isa_supported(code):
        raise ValueError(f"isa: {name!r} is not supported on this CPU/build; available: {available_isas()}")
    return code


def _default_isa() -> int:
    forced = os.environ.get("RNNKIT_ISA")
    return _isa_code(forced) if forced else _core.best_isa()


_DEFAULT_ISA = _default_isa()


class _Local(threading.local):
    """This thread's settings; the class attributes are the defaults (so reading an unset
    one is a plain lookup, not a caught AttributeError: it happens on every call)."""

    isa = _DEFAULT_ISA
    threads = None


_local = _Local()


def current_isa() -> int:
    """Code of the instruction set the kernels use in this thread."""
    return getattr(_local, "isa", _DEFAULT_ISA)


def current_isa_name() -> str:
    return ISA_NAMES[current_isa()]


@contextlib.contextmanager
def use_isa(name: str):
    """Run the native kernels with instruction set ``name`` inside the block (this thread).

    >>> with rnnkit.use_isa("generic"):
    ...     out, h = rnn(x)
    """
    code = _isa_code(name)
    previous = getattr(_local, "isa", None)
    _local.isa = code
    try:
        yield
    finally:
        if previous is None:
            del _local.isa
        else:
            _local.isa = previous


# Below this many multiply-adds per step (B * G*H * H, about 4 M: e.g. an LSTM with
# H = 256, B = 16) one thread is faster: the team meets at a barrier every step, and a
# step must be long enough that a late thread (another process on the core) costs
# little next to it.
PARALLEL_MIN_MACS_PER_STEP = 1 << 22


@contextlib.contextmanager
def use_threads(n: int):
    """Run the native recurrence with ``n`` threads inside the block (this thread).

    By default rnnkit uses ``torch.get_num_threads()`` threads for problems large enough
    to gain from them, one otherwise. Results are bit-identical for any thread count.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive integer thread count, got {n!r}")
    previous = getattr(_local, "threads", None)
    _local.threads = n
    try:
        yield
    finally:
        if previous is None:
            del _local.threads
        else:
            _local.threads = previous


def num_threads(batch: int = 1, hidden: int = 1, gates: int = 1, min_macs: int = PARALLEL_MIN_MACS_PER_STEP) -> int:
    """Threads for the native recurrence of a (batch, gates*hidden, hidden) step product."""
    forced = getattr(_local, "threads", None)
    if forced is not None:
        return forced
    if batch * gates * hidden * hidden < min_macs:
        return 1
    return max(1, torch.get_num_threads())
