"""Speed benchmark: rnnkit against its peers, measured in one process, printed as markdown.

Contenders for each (mode, arch, H, B) cell (reference = rnnkit.reference):

    arch     peer (inference / training)       peer (streaming)      also (inference)
    rnn      torch.nn.RNN (tanh)               torch.nn.RNNCell      onnxruntime
    lstm     torch.nn.LSTM                     torch.nn.LSTMCell     onnxruntime
    gru      torch.nn.GRU (reset after)        torch.nn.GRUCell      onnxruntime
    gru-rb   reference.gru (reset before)      reference.gru_cell
    jordan   reference.jordan                  reference.jordan_cell

(arch: the networks of :mod:`rnnkit.networks`; the peer is the torch.nn module that
computes the same equations where there is one, else the reference.)

Modes:

    inference  one forward pass over x (T, B, I) under torch.inference_mode
    training   forward, loss = sum of all outputs, gradients to x and every weight
    streaming  B = 1, T calls from Python, each returning the new state (rnnkit: rnnkit.Stream;
               peers: their cells),
               under torch.inference_mode; reported per step

Every contender gets the same weights (one state_dict) and the same input; each repeat
runs all contenders once, in an order rotated from repeat to repeat, after a warm-up;
the table reports medians. The machine's fp32 GEMM peak and memory bandwidth are
measured in the same run, and its CPU, flags, threads and library versions head the
output. Run it as a script (``python benchmarks/bench.py``), as ``rnnkit bench`` or::

    >>> from rnnkit import bench
    >>> bench.main(["--quick", "--archs", "lstm", "--hidden", "32", "--batch", "1"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from . import networks

# ------------------------------------------------------------------------------- defaults
HIDDEN = (32, 64, 128, 256, 512, 1024)
BATCH = (1, 16, 64)
SEQ_LEN = 100
MODES = ("inference", "training", "streaming")
BUDGET_S = 1.0  # measured time per cell, all contenders together; sets the repeats
TOTAL_BUDGET_S = 720.0  # the whole run; cells get less than BUDGET_S when it runs short
MIN_REPEATS, MAX_REPEATS = 3, 30

QUICK_HIDDEN = (32, 128)
QUICK_BATCH = (1, 16)
QUICK_SEQ_LEN = 50
QUICK_BUDGET_S = 0.2
QUICK_TOTAL_BUDGET_S = 30.0
QUICK_MAX_REPEATS = 10

MIN_SAMPLE_S = 2e-3  # a call faster than this is looped inside one timed sample
SLOW_CALL_S = 0.5  # a first call slower than this is warm-up enough
GEMM_N = 2048  # square fp32 matrices for the GEMM peak
BANDWIDTH_BYTES = 256 * 2**20  # tensor size for the bandwidth measurement
MACHINE_REPEATS = 5  # best of this many for the peak and the bandwidth
QUICK_MACHINE_REPEATS = 3
SEED = 0


# ---------------------------------------------------------------------------- the archs
ARCHS = networks.names()


def _spec(arch: str) -> networks.Network:
    return networks.get(arch)


def _torch_peer(arch: str) -> bool:
    """torch.nn computes the same equations (with the default hyper-parameters)."""
    spec = _spec(arch)
    return spec.torch_computes_same(_hyper(spec))


def _hyper(spec: networks.Network) -> dict:
    """The hyper-parameters of the benchmarked layer: the first example setting (tanh)."""
    return {**spec.examples[0], **spec.options}


def forward_flops(arch: str, T: int, B: int, I: int, H: int, O: int) -> int:
    """Floating-point operations of one forward pass: matrix products only, 2 per multiply-add.

    The multiply-adds of one step are the sizes of the layer's weight matrices (Elman,
    LSTM, GRU: (I + H)·G·H with G = 1, 4, 3 gate blocks; Jordan: I·H + O·H + H·O),
    counted on a parameter-free ("meta") instance of the network.
    A training step (forward and backward) counts 3 × forward.
    """
    spec = _spec(arch)
    kwargs = {"output_size": O} if spec.state_size == "output_size" else {}
    module = spec.make(I, H, device="meta", **kwargs)
    return 2 * T * B * sum(p.numel() for p in module.parameters() if p.dim() == 2)


@dataclass(frozen=True)
class Case:
    """One cell of the grid. I = H, and O = H for Jordan."""

    mode: str
    arch: str
    H: int
    B: int
    T: int

    @property
    def I(self) -> int:  # noqa: E743 (the shape letter)
        return self.H

    @property
    def O(self) -> int:  # noqa: E743
        return self.H

    @property
    def flops(self) -> int:
        """Per timed unit: a whole sequence, or one step when streaming."""
        if self.mode == "streaming":
            return forward_flops(self.arch, 1, self.B, self.I, self.H, self.O)
        f = forward_flops(self.arch, self.T, self.B, self.I, self.H, self.O)
        return 3 * f if self.mode == "training" else f


class Unavailable(Exception):
    """A contender that cannot run here; the reason goes into the notes."""


# ---------------------------------------------------------------------- the contenders
@dataclass
class Runner:
    """A built contender: ``call()`` runs one timed unit and returns a tensor to check.

    The returned tensor is the output sequence (inference), dL/dx (training) or the final
    state (streaming); the harness compares it with rnnkit's on the warm-up call.
    """

    call: Callable[[], torch.Tensor]
    steps: int = 1  # the timed unit holds this many steps (streaming: T); times divide by it
    leaves: Optional[list] = None  # training: input and parameters, left out of the saved bytes


def _sizes(arch: str, I: int, H: int, O: int) -> tuple:
    return (I, H, O) if _spec(arch).state_size == "output_size" else (I, H)


def _torch_class(arch: str, streaming: bool):
    spec = _spec(arch)
    return getattr(torch.nn, spec.cell if streaming else spec.torch_module)


def _new_rnnkit(arch: str, streaming: bool, case: Case) -> torch.nn.Module:
    spec = _spec(arch)
    cls = spec.cell_class if streaming else spec.module_class
    return cls(*_sizes(arch, case.I, case.H, case.O), **_hyper(spec))


def source_state(case: Case) -> dict:
    """The weights every contender of this cell loads: a seeded torch.nn module where the
    peer is torch.nn, else a seeded rnnkit module. Same (arch, H, layer/cell) -> same weights."""
    streaming = case.mode == "streaming"
    torch.manual_seed(SEED)
    if _torch_peer(case.arch):
        module = _torch_class(case.arch, streaming)(case.I, case.H)
    else:
        module = _new_rnnkit(case.arch, streaming, case)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _first(value):
    """The tensor to check from a module's or a cell's result: out, h, or y for Jordan."""
    while isinstance(value, (tuple, list)):
        value = value[0]
    return value


def _module_runner(module: torch.nn.Module, case: Case, x: torch.Tensor) -> Runner:
    """Runner for a torch.nn-style layer or cell: rnnkit and torch.nn share this code."""
    module.eval()
    if case.mode == "inference":
        def call():
            with torch.inference_mode():
                return module(x)[0]  # out (T, B, H)
        return Runner(call)

    if case.mode == "training":
        params = list(module.parameters())
        xg = x.detach().clone().requires_grad_()

        def call():
            out = module(xg)[0]  # (T, B, H) or (T, B, O)
            return torch.autograd.grad(out.sum(), [xg, *params])[0]  # dL/dx (T, B, I)
        return Runner(call, leaves=[xg, *params])

    xs = x.unbind(0)  # T tensors (1, I)
    state0 = _zero_state(case)

    def call():
        with torch.inference_mode():
            state = state0  # (1, H), (h, c) for LSTM, (1, O) for Jordan
            for x_t in xs:
                state = module(x_t, state)
            return _first(state)
    return Runner(call, steps=case.T)


def _zero_state(case: Case):
    """The cell's state: (B, H), (h, c) for an LSTM, (B, O) for Jordan."""
    spec = _spec(case.arch)
    size = case.O if spec.state_size == "output_size" else case.H
    states = tuple(torch.zeros(case.B, size) for _ in spec.states)
    return states if len(states) > 1 else states[0]


def _build_rnnkit(case: Case, state: dict, x: torch.Tensor, threads: int) -> Runner:
    module = _new_rnnkit(case.arch, case.mode == "streaming", case)
    module.load_state_dict(state)
    if case.mode == "streaming":
        return _stream_runner(module, case, x)
    return _module_runner(module, case, x)


def _stream_runner(cell: torch.nn.Module, case: Case, x: torch.Tensor) -> Runner:
    """rnnkit's streaming API: weights packed once, one native call per step."""
    from rnnkit import Stream

    stream = Stream(cell.eval(), batch_size=case.B)
    xs = x.unbind(0)  # T tensors (1, I)
    out = torch.empty(case.B, case.O if _spec(case.arch).state_size == "output_size" else case.H)

    def call():
        stream.reset()
        for x_t in xs:
            stream.step(x_t, out=out)
        return out
    return Runner(call, steps=case.T)


def _build_torch(case: Case, state: dict, x: torch.Tensor, threads: int) -> Runner:
    if not _torch_peer(case.arch):
        raise Unavailable(f"torch.nn has no {case.arch}")
    module = _torch_class(case.arch, case.mode == "streaming")(case.I, case.H)
    module.load_state_dict(state)
    return _module_runner(module, case, x)


def _state_entry(state: dict, name: str) -> torch.Tensor:
    for key in (name, name + "_l0"):
        if key in state:
            return state[key]
    raise Unavailable(f"no {name!r} in the state_dict (keys: {sorted(state)})")


def _build_reference(case: Case, state: dict, x: torch.Tensor, threads: int) -> Runner:
    from rnnkit import reference

    spec = _spec(case.arch)
    training = case.mode == "training"
    params = [_state_entry(state, n).clone().requires_grad_(training) for n in spec.param_roles]
    kwargs = _hyper(spec)
    n_states = len(spec.states)  # (h0, c0) or h0 or y0
    if case.mode == "inference":
        def call():
            with torch.inference_mode():
                return spec.reference(x, *[None] * n_states, *params, **kwargs)[0]
        return Runner(call)

    if training:
        xg = x.detach().clone().requires_grad_()

        def call():
            out = spec.reference(xg, *[None] * n_states, *params, **kwargs)[0]
            return torch.autograd.grad(out.sum(), [xg, *params])[0]
        return Runner(call, leaves=[xg, *params])

    xs = x.unbind(0)
    state0 = _zero_state(case)

    def call():
        with torch.inference_mode():
            s = state0
            for x_t in xs:
                s = spec.reference_step(x_t, *(s if isinstance(s, tuple) else (s,)), *params, **kwargs)
            return _first(s)
    return Runner(call, steps=case.T)


# (session, exporter) or Unavailable, once per run, per key: (arch, H) for the TorchScript
# exporter (T and B dynamic), (arch, H, T, B) for the dynamo one (it bakes T into the graph).
_ORT_SESSIONS: dict = {}


def _onnx_session(case: Case, state: dict, threads: int):
    """An onnxruntime session of the torch.nn layer with these weights, exported to ONNX.

    torch.onnx.export(dynamo=False) first: ONNX's own RNN / LSTM / GRU operators, one export
    for every T and B. If it fails (it is deprecated), the dynamo exporter, per shape.
    """
    keys = ((case.arch, case.H), (case.arch, case.H, case.T, case.B))
    for key, dynamo in zip(keys, (False, True)):
        if key not in _ORT_SESSIONS:
            try:
                _ORT_SESSIONS[key] = _export_and_open(case, state, threads, dynamo)
            except Unavailable as e:
                _ORT_SESSIONS[key] = e  # fail once, not once per cell
        if not isinstance(_ORT_SESSIONS[key], Unavailable):
            return _ORT_SESSIONS[key]
    raise Unavailable("; ".join(str(_ORT_SESSIONS[k]) for k in keys))


def _export_and_open(case: Case, state: dict, threads: int, dynamo: bool):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise Unavailable(f"onnxruntime is not installed ({e})") from None
    module = _torch_class(case.arch, False)(case.I, case.H).eval()
    module.load_state_dict(state)
    exporter = f"torch.onnx.export(dynamo={dynamo})"
    path = os.path.join(tempfile.mkdtemp(prefix="rnnkit-bench-"), f"{case.arch}-{case.H}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation, tracer warnings
        try:
            if dynamo:
                x = torch.randn(case.T, case.B, case.I)  # static shapes: the graph is per (T, B)
                torch.onnx.export(module, (x,), path, dynamo=True, input_names=["x"], verbose=False)
            else:
                x = torch.randn(3, 2, case.I)  # (T, B, I), both dynamic
                torch.onnx.export(module, (x,), path, dynamo=False, input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": {0: "T", 1: "B"}, "y": {0: "T", 1: "B"}})
        except Exception as e:
            raise Unavailable(f"{exporter} failed: {type(e).__name__}: {str(e).strip()[:200]}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise Unavailable(f"onnxruntime cannot load the {exporter} model: {type(e).__name__}: "
                          f"{str(e).strip()[:200]}") from None
    return session, exporter


def _build_onnxruntime(case: Case, state: dict, x: torch.Tensor, threads: int) -> Runner:
    if case.mode != "inference" or not _torch_peer(case.arch):
        raise Unavailable("onnxruntime: inference of the torch.nn layers only")
    session, _ = _onnx_session(case, state, threads)
    name_in = session.get_inputs()[0].name
    name_out = session.get_outputs()[0].name
    x_np = x.numpy()  # (T, B, I) float32, contiguous

    def call():
        return torch.from_numpy(session.run([name_out], {name_in: x_np})[0])  # (T, B, H)
    return Runner(call)


CONTENDERS = {
    "rnnkit": _build_rnnkit,
    "torch.nn": _build_torch,
    "reference": _build_reference,
    "onnxruntime": _build_onnxruntime,
}


def contenders_for(case: Case, onnx: bool) -> list:
    """Names of the contenders of a cell, rnnkit first."""
    names = ["rnnkit", "torch.nn" if _torch_peer(case.arch) else "reference"]
    if onnx and case.mode == "inference" and _torch_peer(case.arch):
        names.append("onnxruntime")
    return names


# ------------------------------------------------------------------------ measurements
def saved_for_backward(call: Callable, exclude: list) -> tuple:
    """(result of ``call()``, bytes of the distinct storages autograd saved for backward in it).

    Counted with torch.autograd.graph.saved_tensors_hooks, each storage once, leaving out
    the storages of ``exclude`` (the input and the parameters, which exist anyway).
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = call()
    return value, sum(seen.values())


def _timed(fn: Callable, number: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def gemm_peak(n: int = GEMM_N, repeats: int = MACHINE_REPEATS) -> float:
    """GFLOP/s of torch.mm on (n, n) fp32 matrices at the current thread count, best of repeats."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up
    best = min(_timed(lambda: torch.mm(a, b, out=c)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def bandwidth(nbytes: int = BANDWIDTH_BYTES, repeats: int = MACHINE_REPEATS) -> tuple:
    """(copy, sum) in GB/s on an fp32 tensor of nbytes, best of repeats.

    copy: dst.copy_(src), counting nbytes read + nbytes written; sum: src.sum(), nbytes read.
    """
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    src.sum()
    t_copy = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    t_sum = min(_timed(lambda: src.sum()) for _ in range(repeats))
    return 2 * nbytes / t_copy / 1e9, nbytes / t_sum / 1e9


@dataclass
class Result:
    case: Case
    times: dict = field(default_factory=dict)  # contender -> list of seconds per step/sequence
    saved: dict = field(default_factory=dict)  # contender -> bytes saved for backward
    repeats: int = 0
    notes: list = field(default_factory=list)

    def median(self, name: str) -> Optional[float]:
        return statistics.median(self.times[name]) if self.times.get(name) else None

    def spread(self, name: str) -> Optional[float]:
        """Half the interquartile range over the median."""
        t = self.times.get(name)
        if not t or len(t) < 2:
            return None
        q1, _, q3 = statistics.quantiles(t, n=4, method="inclusive")
        return (q3 - q1) / 2 / statistics.median(t)


def run_case(case: Case, names: list, threads: int, budget: float, repeats: Optional[int],
             max_repeats: int) -> Result:
    """Build, check and time the contenders of one cell, interleaved."""
    result = Result(case)
    state = source_state(case)
    torch.manual_seed(SEED + 1)
    x = torch.randn(case.T, case.B, case.I)  # (T, B, I)
    runners, checks, first = {}, {}, {}
    for name in names:
        try:
            runner = CONTENDERS[name](case, state, x, threads)
            t0 = time.perf_counter()
            if runner.leaves is None:  # first warm-up call, its result checked
                check = runner.call()
            else:  # and in training it counts the bytes saved for backward
                check, result.saved[name] = saved_for_backward(runner.call, runner.leaves)
            first[name] = time.perf_counter() - t0
            checks[name] = check.detach()
            runners[name] = runner
        except Unavailable as e:
            result.notes.append(f"{name}: {e}")
        except Exception as e:  # a contender that crashes is reported, not fatal
            first_line = (str(e).strip().splitlines() or [""])[0][:200]
            result.notes.append(f"{name} failed: {type(e).__name__}: {first_line}")
    if not runners:
        return result

    if "rnnkit" in checks:
        want = checks["rnnkit"]
        for name, got in checks.items():
            if got.shape != want.shape:
                result.notes.append(f"check: {name} differs from rnnkit in shape: "
                                    f"{tuple(got.shape)} vs {tuple(want.shape)}")
            elif not torch.allclose(got, want, rtol=1e-3, atol=1e-4):
                diff = (got - want).abs().max().item()
                result.notes.append(f"check: {name} differs from rnnkit by {diff:.2e} (max abs)")

    # A second warm-up call, timed, estimates a call: it sets the loop count and the repeats.
    # A call slower than SLOW_CALL_S is not repeated: its first call is the estimate.
    estimate, number = {}, {}
    for name, runner in runners.items():
        estimate[name] = first[name] if first[name] > SLOW_CALL_S else _timed(runner.call)
        number[name] = max(1, math.ceil(MIN_SAMPLE_S / max(estimate[name], 1e-9)))
    if repeats is None:
        round_s = sum(estimate[n] * number[n] for n in runners)
        repeats = min(max_repeats, max(MIN_REPEATS, int(budget / max(round_s, 1e-9))))
    result.repeats = repeats

    order = list(runners)
    times = {name: [] for name in order}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            k = r % len(order)
            for name in order[k:] + order[:k]:  # A,B,C / B,C,A / C,A,B ...
                times[name].append(_timed(runners[name].call, number[name]) / runners[name].steps)
    finally:
        if gc_was_enabled:
            gc.enable()
    result.times = times
    return result


# ------------------------------------------------------------------------------ output
def _fmt_time(s: Optional[float], spread: Optional[float] = None) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        text = f"{s * 1e6:.1f} µs"
    elif s < 1:
        text = f"{s * 1e3:.2f} ms"
    else:
        text = f"{s:.3f} s"
    return text if spread is None else f"{text} ±{spread * 100:.0f}%"


def _ratio(peer: Optional[float], ours: Optional[float]) -> str:
    return "—" if peer is None or ours is None else f"{peer / ours:.2f}×"


def _number(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _mib(n: Optional[int]) -> str:
    return "—" if n is None else f"{n / 2**20:.1f}"


COLUMNS = {
    "inference": ["arch", "H", "B", "T", "rnnkit", "peer", "peer time", "speed-up",
                  "onnxruntime", "speed-up vs ORT", "GFLOP/s", "% peak", "repeats"],
    "training": ["arch", "H", "B", "T", "rnnkit", "peer", "peer time", "speed-up",
                 "GFLOP/s", "% peak", "saved MiB rnnkit", "saved MiB peer", "repeats"],
    "streaming": ["arch", "H", "B", "T", "rnnkit per step", "peer", "peer per step", "speed-up",
                  "GFLOP/s", "% peak", "repeats"],
}


def _row(result: Result, peak: float) -> list:
    c = result.case
    peer = "torch.nn" if _torch_peer(c.arch) else "reference"
    ours, theirs = result.median("rnnkit"), result.median(peer)
    gflops = None if ours is None else c.flops / ours / 1e9
    cells = [c.arch, str(c.H), str(c.B), str(c.T), _fmt_time(ours, result.spread("rnnkit")),
             peer, _fmt_time(theirs, result.spread(peer)), _ratio(theirs, ours)]
    if c.mode == "inference":
        ort = result.median("onnxruntime")
        cells += [_fmt_time(ort, result.spread("onnxruntime")), _ratio(ort, ours)]
    cells += [_number(gflops), _number(None if gflops is None else 100 * gflops / peak)]
    if c.mode == "training":
        cells += [_mib(result.saved.get("rnnkit")), _mib(result.saved.get(peer))]
    cells.append(str(result.repeats))
    return cells


def markdown_table(mode: str, results: list, peak: float) -> str:
    head = COLUMNS[mode]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_row(r, peak)) + " |" for r in results]
    return "\n".join(lines)


_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def _cpu_info() -> tuple:
    """(model name, the flags of _CPU_FLAGS it has) from /proc/cpuinfo's first processor."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # end of the first processor's block
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    return model, [f for f in _CPU_FLAGS if f in flags]


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except Exception:
        return "not installed"
    return getattr(mod, "__version__", "?")


def _rnnkit_info() -> str:
    try:
        from importlib.metadata import version
        v = version("rnnkit")
    except Exception:
        v = "?"
    try:
        from rnnkit import _backend
        return (f"{v} (native ISA {_backend.current_isa_name()}, recurrence threads: torch's "
                f"{torch.get_num_threads()} from {_backend.PARALLEL_MIN_MACS_PER_STEP:,} multiply-adds per step, "
                "1 below)")
    except Exception as e:
        return f"{v} (native core: {type(e).__name__})"


def header(args, threads: int, peaks: tuple, bw: tuple, onnx_note: str) -> str:
    model, flags = _cpu_info()
    amx = any(f.startswith("amx") for f in flags)
    lines = [
        "# rnnkit benchmark",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `rnnkit bench {' '.join(args.argv)}`".rstrip(),
        f"- CPU: {model}; {os.cpu_count()} logical CPUs visible",
        f"- flags: {' '.join(flags) or 'none found'}; AMX: {'yes' if amx else 'no'}",
        f"- threads: torch.get_num_threads() = {torch.get_num_threads()}, onnxruntime intra_op_num_threads = {threads}",
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, numpy {_version('numpy')}, "
        f"onnxruntime {_version('onnxruntime')}, onnx {_version('onnx')}, rnnkit {_rnnkit_info()}",
        f"- fp32 GEMM peak: {max(peaks):.1f} GFLOP/s (torch.mm, {GEMM_N}×{GEMM_N} fp32, best of "
        f"{args.machine_repeats} at the start ({peaks[0]:.1f}) and at the end ({peaks[1]:.1f}) of the run)",
        f"- memory bandwidth: copy {bw[0]:.1f} GB/s (dst.copy_(src) of {BANDWIDTH_BYTES // 2**20} MiB fp32, "
        f"bytes read + written), sum {bw[1]:.1f} GB/s (src.sum(), bytes read); best of {args.machine_repeats}",
        "- FLOPs: matrix products only, 2 per multiply-add; forward = Elman 2·T·B·(I+H)·H, "
        "LSTM 2·T·B·(I+H)·4H, GRU 2·T·B·(I+H)·3H, Jordan 2·T·B·(I·H + 2·O·H); I = H (= O); "
        "training = 3 × forward; streaming: one step (T = 1). GFLOP/s and % peak are rnnkit's.",
        "- inference: one forward pass under torch.inference_mode; training: forward, loss = sum of all "
        "outputs, torch.autograd.grad to the input and every weight; streaming: B = 1, one cell call "
        "per step from Python returning the new state, time per step.",
        "- timing: same weights (state_dict) and input for all contenders; warm-up, then each repeat runs "
        "every contender once, order rotated per repeat; time = median over repeats, ± half the "
        "interquartile range; repeats set per cell by a time budget "
        f"(at most {args.budget:g} s a cell, less when the run would exceed "
        f"{QUICK_TOTAL_BUDGET_S if args.quick else TOTAL_BUDGET_S:g} s; {MIN_REPEATS}..{args.max_repeats} "
        "repeats) unless --repeats.",
        "- speed-up = peer time / rnnkit time (> 1: rnnkit is faster). Peers: torch.nn for rnn (tanh), "
        "lstm, gru (reset after); rnnkit.reference for gru-rb (reset before) and jordan.",
        "- saved MiB: memory a training step holds for backward, the distinct storages saved by "
        "autograd (torch.autograd.graph.saved_tensors_hooks), input and parameters excluded.",
        f"- onnxruntime: {onnx_note}",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- main
def _canonical(name: str) -> str:
    """A network's registry name; earlier spellings (elman) accepted, unknown names kept
    for the choices check to report."""
    try:
        return networks.get(name).name
    except ValueError:
        return name


def _csv(kind, choices=None):
    def parse(text: str):
        items = [s.strip() for s in text.split(",") if s.strip()]
        try:
            values = [kind(s) for s in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")
        if choices is not None:
            bad = [v for v in values if v not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"expected values in {', '.join(choices)}, got {', '.join(bad)}")
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value, got none")
        return values
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnkit bench",
        description="Time rnnkit against torch.nn, rnnkit.reference and onnxruntime; print a markdown table.")
    p.add_argument("--quick", action="store_true",
                   help=f"CI smoke subset: H {QUICK_HIDDEN}, B {QUICK_BATCH}, T {QUICK_SEQ_LEN}, small budget")
    p.add_argument("--archs", type=_csv(_canonical, ARCHS), help=f"comma list from {','.join(ARCHS)} (default all)")
    p.add_argument("--mode", type=_csv(str, MODES), help=f"comma list from {','.join(MODES)} (default all)")
    p.add_argument("--hidden", type=_csv(int), help=f"hidden sizes H (= I), default {HIDDEN}")
    p.add_argument("--batch", type=_csv(int), help=f"batch sizes B, default {BATCH} (streaming: always 1)")
    p.add_argument("--seq-len", type=int, help=f"sequence length T, default {SEQ_LEN}")
    p.add_argument("--repeats", type=int, help="fixed number of timed repeats per cell (default: by time budget)")
    p.add_argument("--budget", type=float, help=f"seconds of timing per cell (default {BUDGET_S}, quick {QUICK_BUDGET_S})")
    p.add_argument("--threads", type=int, help="intra-op threads for torch and onnxruntime (default: torch's)")
    p.add_argument("--out", metavar="FILE.md", help="also write the markdown to this file")
    p.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime contender")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    archs = args.archs or list(ARCHS)
    modes = args.mode or list(MODES)
    hidden = args.hidden or list(QUICK_HIDDEN if args.quick else HIDDEN)
    batch = args.batch or list(QUICK_BATCH if args.quick else BATCH)
    T = args.seq_len or (QUICK_SEQ_LEN if args.quick else SEQ_LEN)
    args.budget = args.budget if args.budget is not None else (QUICK_BUDGET_S if args.quick else BUDGET_S)
    args.max_repeats = QUICK_MAX_REPEATS if args.quick else MAX_REPEATS
    args.machine_repeats = QUICK_MACHINE_REPEATS if args.quick else MACHINE_REPEATS
    for name, values in (("--hidden", hidden), ("--batch", batch), ("--seq-len", [T])):
        if any(v < 1 for v in values):
            raise SystemExit(f"{name}: expected positive integers, got {values}")
    for name, value in (("--repeats", args.repeats), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise SystemExit(f"{name}: expected a positive integer, got {value}")

    threads_before = torch.get_num_threads()
    threads = args.threads or threads_before
    torch.set_num_threads(threads)
    try:
        return _run(args, archs, modes, hidden, batch, T, threads)
    finally:
        torch.set_num_threads(threads_before)
        _ORT_SESSIONS.clear()


def _run(args, archs, modes, hidden, batch, T, threads) -> int:
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    onnx = not args.no_onnx
    if args.no_onnx:
        onnx_note = "skipped (--no-onnx)"
    else:
        try:
            import onnxruntime  # noqa: F401
            onnx_note = ("torch.nn layer with the same weights exported to ONNX, CPU InferenceSession, "
                         "sequential execution")
        except ImportError:
            onnx, onnx_note = False, "skipped: onnxruntime is not installed"

    log(f"measuring the machine ({threads} threads) ...")
    peak_start = gemm_peak(repeats=args.machine_repeats)
    bw = bandwidth(repeats=args.machine_repeats)

    cases = []
    for mode in modes:
        for arch in archs:
            for H in hidden:
                for B in ([1] if mode == "streaming" else batch):
                    cases.append(Case(mode, arch, H, B, T))

    results, notes = [], {}  # note -> labels of the cells it applies to
    total = QUICK_TOTAL_BUDGET_S if args.quick else TOTAL_BUDGET_S
    for i, case in enumerate(cases, 1):
        t0 = time.perf_counter()
        # Share what is left of the total among the cells left, at most --budget each.
        left = total - (t0 - started)
        budget = min(args.budget, max(left, 0.0) / (len(cases) - i + 1))
        result = run_case(case, contenders_for(case, onnx), threads, budget, args.repeats,
                          args.max_repeats)
        results.append(result)
        label = f"{case.mode} {case.arch} H={case.H} B={case.B} T={case.T}"
        for note in result.notes:
            notes.setdefault(note, []).append(label)
        log(f"[{i}/{len(cases)}] {label}: {time.perf_counter() - t0:.1f} s")

    log("measuring the GEMM peak again ...")
    peaks = (peak_start, gemm_peak(repeats=args.machine_repeats))  # the better of the two is the peak: others may share the CPU
    peak = max(peaks)
    exporters = sorted({v[1] for v in _ORT_SESSIONS.values() if isinstance(v, tuple)})
    if exporters:
        how = {"torch.onnx.export(dynamo=False)": " (ONNX RNN/LSTM/GRU operators, T and B dynamic)",
               "torch.onnx.export(dynamo=True)": " (one export per T and B)"}
        onnx_note += "; exported with " + ", ".join(e + how.get(e, "") for e in exporters)
    problems = sorted({str(v) for v in _ORT_SESSIONS.values() if isinstance(v, Unavailable)})
    if problems:
        onnx_note += "; export problems: " + " | ".join(problems)
    parts = [header(args, threads, peaks, bw, onnx_note)]
    for mode in modes:
        rows = [r for r in results if r.case.mode == mode]
        if rows:
            parts.append(f"## {mode}\n\n" + markdown_table(mode, rows, peak))
    if notes:
        lines = []
        for note, labels in notes.items():
            where = labels[0] if len(labels) == 1 else f"{len(labels)} cells, first {labels[0]}"
            lines.append(f"- {note} ({where})")
        parts.append("## notes\n\n" + "\n".join(lines))
    parts.append(f"_total wall time {time.perf_counter() - started:.0f} s_")
    text = "\n\n".join(parts) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
