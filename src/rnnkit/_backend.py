"""Which native kernel path runs: instruction set, thread count and thread team.

The C++ core is compiled for several instruction sets (generic SIMD, AVX2, AVX-512)
and the best one this CPU supports is used by default. ``RNNKIT_ISA`` in the
environment, or the :func:`use_isa` context manager (per thread), forces another,
e.g. to check the fallback path. Nothing here is process-global mutable state that
a second thread could observe half-changed.
"""

from __future__ import annotations

import contextlib
import ctypes
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


# Below this many multiply-adds per step (B * G*H * H, 65,536: e.g. an LSTM with H = 128,
# B = 1, or H = 64, B = 4) one thread: the team meets at a barrier every step. Measured
# on the 2-core development machine, quiet, T = 100, rnnkit.use_threads(2) against (1),
# interleaved medians: at 65,536 inference 1.26-1.54x and training 1.02-1.18x faster (LSTM
# H = 128 B = 1, Elman H = 256 B = 1, Elman H = 128 B = 4, LSTM H = 64 B = 4); below it
# mixed (GRU H = 128 B = 1: inference 1.40x, training 1.00x; Elman H = 64 B = 4 training
# 0.88x). It was 2^18 when teams were std::threads started per call. On a loaded
# machine, where a member is often descheduled, the core's barrier shrinks the team to
# one thread after a few long waits (csrc/parallel.cpp), so a team costs little there.
PARALLEL_MIN_MACS_PER_STEP = 1 << 16


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


# ---- Where a thread team runs ------------------------------------------------------------
# With torch's parallel backend OpenMP (its CPU wheels: libgomp), the core forks a
# recurrence's team on torch's own OpenMP workers (csrc/parallel.h): they exist already,
# are hot, and are the very workers that spin for a while after each parallel torch op,
# which would otherwise take the core from a team of the core's own threads. Otherwise,
# or with RNNKIT_TEAM=threads in the environment, a team is std::threads started per call.
# Results are bit-identical either way (the tests run both).
TEAMS = ("openmp", "threads")


def _loaded_libgomp() -> tuple[str, int, int] | None:
    """(path, start, end) of the libgomp mapped into this process that torch runs on (the
    one in torch's own lib folder when several are mapped), or None."""
    maps: dict[str, list[int]] = {}
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                if len(fields) < 6 or not os.path.basename(fields[5].strip()).startswith("libgomp"):
                    continue
                start, end = (int(a, 16) for a in fields[0].split("-"))
                span = maps.setdefault(fields[5].strip(), [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
    except OSError:  # no /proc: not Linux
        return None
    torch_lib = os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib"))
    ours = [p for p in maps if os.path.dirname(os.path.realpath(p)) == torch_lib]
    if len(ours) == 1:
        path = ours[0]
    elif len(maps) == 1:
        path = next(iter(maps))
    else:  # none, or several runtimes none of which is torch's own: which one torch uses is unknown
        return None
    return path, maps[path][0], maps[path][1]


def _torch_openmp() -> tuple[int, int, int] | None:
    """Addresses of GOMP_parallel, omp_get_thread_num and omp_get_num_threads in the
    OpenMP runtime torch's parallel ops run on, or None where torch's parallel backend is
    not OpenMP or that runtime is not an already loaded libgomp."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    found = _loaded_libgomp()
    if found is None:
        return None
    path, start, end = found
    try:  # RTLD_NOLOAD: the handle of the copy already loaded, never a second copy
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
        names = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
        addresses = tuple(ctypes.cast(getattr(lib, n), ctypes.c_void_p).value for n in names)
    except (OSError, AttributeError):
        return None
    if not all(a is not None and start <= a < end for a in addresses):  # not the mapped copy's code
        return None
    return addresses


_OPENMP = _torch_openmp()
_team_lock = threading.Lock()


def team_backends() -> list[str]:
    """The places a thread team can run here: ``openmp`` (torch's OpenMP workers, where
    found) and ``threads`` (std::threads per call)."""
    return [t for t in TEAMS if t != "openmp" or _OPENMP is not None]


def team_backend() -> str:
    """Where the native recurrence's thread teams run now: ``openmp`` or ``threads``."""
    return "openmp" if _core.team_runtime_active() else "threads"


def set_team_backend(name: str) -> str:
    """Make the thread teams of calls that start from now on run on ``name`` (one of
    :func:`team_backends`), process-wide; returns the previous one. For tests and
    measurements: a call already running keeps its team, and results do not depend on it."""
    if name not in team_backends():
        raise ValueError(f"team: expected one of {team_backends()}, got {name!r}")
    with _team_lock:
        previous = team_backend()
        if not _core.set_team_runtime(*(_OPENMP if name == "openmp" else (0, 0, 0))):
            raise RuntimeError("team: the core already runs teams on another OpenMP runtime")
        return previous


def _default_team() -> str:
    forced = os.environ.get("RNNKIT_TEAM")
    if forced and forced not in TEAMS:
        raise ValueError(f"RNNKIT_TEAM: expected one of {list(TEAMS)}, got {forced!r}")
    if forced == "openmp" and _OPENMP is None:
        raise ValueError("RNNKIT_TEAM: 'openmp' asked, but torch's parallel backend is not a loaded libgomp here")
    return forced or team_backends()[0]


set_team_backend(_default_team())


def _after_fork_in_child() -> None:
    # A forked child has one thread: libgomp's record of the parent's workers is stale
    # there, and a team forked on it would wait for workers that do not exist (torch's own
    # parallel ops in such a child hang the same way). The child's teams run on std::threads.
    global _OPENMP
    _OPENMP = None
    _core.set_team_runtime(0, 0, 0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- The big products: C = A W^T on the fastest GEMM of this machine ----------------------
# The input projection for all steps and the weight and input gradients (SPEC section 5)
# are a few large matrix products per call. Which library runs them fastest depends on
# the CPU: torch's BLAS (MKL) may take its AVX2 path on an AVX-512 AMD CPU, while
# oneDNN's matmul and the core's own packed GEMM use AVX-512. The float32 products go to
# the one the rule below names; float64 ones (the exactness checks) stay on torch's BLAS.


def matmul_nt(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ w.T (+ bias)`` on the core's own packed GEMM (float32 or float64).

    a (M, K) and w (N, K) may be strided views (a transpose passes without a copy);
    bias (N) or None. Returns a new (M, N) tensor. Rows are shared between
    ``torch.get_num_threads()`` threads; the result is the same for any thread count.

    >>> a, w = torch.randn(5, 3), torch.randn(4, 3)
    >>> torch.allclose(matmul_nt(a, w), a @ w.T)
    True
    """
    a, w = a.detach(), w.detach()
    if a.dim() != 2 or w.dim() != 2:
        raise ValueError(f"a, w: expected 2-D tensors, got shapes {tuple(a.shape)} and {tuple(w.shape)}")
    out = a.new_empty(a.shape[0], w.shape[0])
    b = None if bias is None else bias.detach().contiguous().numpy()
    _core.matmul_nt(current_isa(), a.numpy(), w.numpy(), b, out.numpy(), max(1, torch.get_num_threads()))
    return out


def _torch_nt(a, w, bias):
    return a @ w.t() if bias is None else torch.addmm(bias, a, w.t())


def _onednn_nt(a, w, bias):
    # oneDNN's matmul through torch's inference op (dense tensors in and out).
    return torch.ops.mkldnn._linear_pointwise(a.contiguous(), w.contiguous(), bias, "none", [], "")


def _candidates() -> dict:
    found = {"torch": _torch_nt, "core": matmul_nt}
    try:
        probe = torch.ones(2, 2)
        if torch.backends.mkldnn.is_available() and torch.equal(_onednn_nt(probe, probe, None), probe @ probe):
            found["onednn"] = _onednn_nt
    except (RuntimeError, AttributeError):  # op absent in this torch build
        pass
    return found


# Which GEMM runs each form is a fixed rule, not a timing: a timing taken at first use
# could pick differently from one process to the next (the machine's load decides), and
# float32 results, which differ in the last bits between libraries, would then differ
# between two runs of the same program. Two forms: a with contiguous rows (the input
# projection, dx) goes to oneDNN where torch has it (on this AMD EPYC, one thread,
# 2048x1024x1024: oneDNN 100, the core 82, MKL 79 GFLOP/s; benchmarks/gemm_peak.py
# measures them), a transposed (the weight gradients da^T x, which oneDNN must copy
# first) to torch's BLAS, which reads it in place and measured fastest there.
# dx = da W_ih reads W_ih transposed, which oneDNN must copy first too: that copy (N x K
# values) is paid back by oneDNN's speed only over enough rows of a. Measured in one run
# (2 threads, quiet, interleaved blocks; da (M, 4H), W_ih (4H, H), M = 100 B): M = 100,
# H = 128 / 256 / 512: torch's BLAS 84 / 294 / 1249 us, oneDNN with the copy 150 / 487 /
# 2222 us; M = 1600: within 2 % of each other; M = 6400 (H = 256): oneDNN 11 % faster.
# So such a product with fewer than COPY_PAYS_ROWS rows counts as "transposed".
_RULE = {"rows": ("onednn", "torch"), "transposed": ("torch",)}  # first available wins
COPY_PAYS_ROWS = 1024
_chosen: dict = {}  # form -> (name, fn)


def _form(a: torch.Tensor, w: torch.Tensor) -> str:
    if a.stride(-1) != 1 or (w.stride(-1) != 1 and a.shape[0] < COPY_PAYS_ROWS):
        return "transposed"
    return "rows"


def gemm_backend(form: str = "rows") -> str:
    """Name of the GEMM the float32 big products of ``form`` run on here: ``torch`` (its
    BLAS), ``onednn`` or ``core``; form ``rows`` (the input projection, dx) or
    ``transposed`` (the weight gradients, and dx over fewer than ``COPY_PAYS_ROWS``
    rows), by the rule above; ``RNNKIT_GEMM`` in the
    environment forces one for both forms."""
    return _gemm(form)[0]


def _gemm(form: str) -> tuple:
    if form not in _chosen:
        forced = os.environ.get("RNNKIT_GEMM")
        if forced:
            candidates = _candidates()
            if forced not in candidates:
                raise ValueError(f"RNNKIT_GEMM: expected one of {sorted(candidates)}, got {forced!r}")
            _chosen[form] = (forced, candidates[forced])
        else:
            candidates = _candidates()
            name = next(n for n in _RULE[form] if n in candidates)
            _chosen[form] = (name, candidates[name])
    return _chosen[form]


# Below this many multiply-adds (a few tens of microseconds) a product is too small for
# the choice to matter, and torch's BLAS call costs the least around it (no packing).
SMALL_PRODUCT_MACS = 1 << 21


def gemm_nt(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ w.T (+ bias)`` for detached tensors on the fastest GEMM here (see
    :func:`gemm_backend`); float64 products and small ones on torch's BLAS."""
    if a.dtype != torch.float32 or a.shape[0] * w.shape[0] * a.shape[1] < SMALL_PRODUCT_MACS:
        return _torch_nt(a, w, bias)
    return _gemm(_form(a, w))[1](a, w, bias)
