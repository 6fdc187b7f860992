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
    streaming  B = 1, T calls from Python, each returning the new state (rnnkit: rnnkit.Stream,
               with torch tensors and with NumPy arrays; peers: their cells),
               under torch.inference_mode; reported per step
    cells      rnnkit's cells against torch.nn's (or the reference's) at H = 64, B = 1, one
               step per call, autograd on (the forward with gradients recorded, as in a
               decoder's training loop) and off (torch.inference_mode)
    call       the fixed cost of one call: an LSTM, 1 layer, H = 8, T = 1, B = 1, inference,
               against onnxruntime's session.run; and the first call of fresh modules
    variants   every example setting of the registry (networks.NETWORKS[...].examples) at
               H = 256, B = 16, inference and training

Every contender gets the same weights (one state_dict) and the same input; after a
warm-up the contenders run in interleaved blocks of back-to-back samples, every one once
right after each (itself included), and an order check compares a contender's time after
each predecessor; the table reports medians. For rnnkit, timers on torch's matrix products
and on the core's calls say where its time goes. The machine's fp32 GEMM peak (the fastest
of torch's BLAS, oneDNN and the core's own GEMM) and memory bandwidth are measured in the
same run, and its CPU, flags, threads and library versions head the output. Run it as a
script (``python benchmarks/bench.py``), as ``rnnkit bench`` or::

    >>> from rnnkit import bench
    >>> bench.main(["--quick", "--archs", "lstm", "--hidden", "32", "--batch", "1"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import datetime
import functools
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
from pathlib import Path
from typing import Callable, Optional

import torch

from . import networks

# ------------------------------------------------------------------------------- defaults
HIDDEN = (32, 64, 128, 256, 512, 1024)
BATCH = (1, 16, 64)
SEQ_LEN = 100
MODES = ("inference", "training", "streaming", "cells", "call", "variants")
CELL_H = 64  # cells: one step per call at H = 64, B = 1
CALL_CASE = ("lstm", 8, 1, 1)  # call: the fixed cost of one call (arch, H, B, T), inference
FIRST_CALLS = 5  # call: first calls of this many fresh modules
VARIANT_H, VARIANT_B = 256, 16  # variants: every example setting of the registry at this H and B
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
BLOCK_REPEATS = 5  # at most this many timed samples of one contender back to back
LEAD_IN_MAX_S = 0.05  # a block of samples shorter than this starts with one untimed call
PARTS_CALLS, PARTS_S = 7, 0.05  # rnnkit's parts: the median of up to 7 calls, about 50 ms
ORDER_MARGIN = 0.25  # order check: flag a contender 25 % slower after another than after itself
GEMM_SHAPE = (2048, 1024, 1024)  # M, K, N of the GEMM peak: (M, K) times (N, K)^T, fp32
QUICK_GEMM_SHAPE = (512, 256, 256)  # --quick: a smoke test of the harness, not a peak
BANDWIDTH_BYTES = 256 * 2**20  # tensor size for the bandwidth measurement
QUICK_BANDWIDTH_BYTES = 64 * 2**20  # --quick: still beyond the last-level cache of most CPUs
MACHINE_REPEATS = 5  # best of this many for the peak and the bandwidth
QUICK_MACHINE_REPEATS = 3
SEED = 0


# ---------------------------------------------------------------------------- the archs
ARCHS = networks.names()


def _spec(arch: str) -> networks.Network:
    return networks.get(arch)


def _torch_peer(case: "Case") -> bool:
    """torch.nn computes the same equations with the case's settings."""
    return _spec(case.arch).torch_computes_same(_hyper(case))


def _hyper(case: "Case") -> dict:
    """The constructor settings of the benchmarked layer: the case's variant (one of the
    registry's examples), by default the first example (tanh), and the network's options."""
    spec = _spec(case.arch)
    return {**(dict(case.settings) if case.settings else spec.examples[0]), **spec.options}


def _torch_settings(case: "Case") -> dict:
    """The settings to pass torch.nn for the case: those it restricts where they differ from
    its default (the first value it supports: nonlinearity="relu"; never peephole=False), and
    those it does not restrict (proj_size: it computes them itself), less the network's
    options (reset_after), which select the variant rather than configure torch.nn."""
    spec = _spec(case.arch)
    supports = spec.torch_supports
    return {k: v for k, v in _hyper(case).items()
            if k not in spec.options and (k not in supports or v != supports[k][0])}


def forward_flops(arch: str, T: int, B: int, I: int, H: int, O: int, settings: tuple = ()) -> int:
    """Floating-point operations of one forward pass: matrix products only, 2 per multiply-add.

    The multiply-adds of one step are the sizes of the layer's weight matrices (Elman,
    LSTM, GRU: (I + H)·G·H with G = 1, 4, 3 gate blocks; Jordan: I·H + O·H + H·O),
    counted on a parameter-free ("meta") instance of the network.
    A training step (forward and backward) counts 3 × forward.
    """
    spec = _spec(arch)
    kwargs = {"output_size": O} if spec.state_size == "output_size" else {}
    module = spec.make(I, H, device="meta", **{**dict(settings), **kwargs})
    return 2 * T * B * sum(p.numel() for p in module.parameters() if p.dim() == 2)


@dataclass(frozen=True)
class Case:
    """One cell of the grid. I = H, and O = H for Jordan."""

    mode: str  # inference, training, streaming, or cell (one step of a cell per call)
    arch: str
    H: int
    B: int
    T: int
    settings: tuple = ()  # a variant: sorted (name, value) items of one of the registry's examples
    autograd: bool = False  # cell: gradients recorded (else under torch.inference_mode)
    section: str = ""  # the output table it goes to (default: the mode)

    @property
    def one_step(self) -> bool:
        """Runs a cell (streaming, cell) rather than a layer over the sequence."""
        return self.mode in ("streaming", "cell")

    @property
    def table(self) -> str:
        return self.section or self.mode

    @property
    def variant(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.settings) or "default"

    @property
    def I(self) -> int:  # noqa: E743 (the shape letter)
        return self.H

    @property
    def O(self) -> int:  # noqa: E743
        return self.H

    @property
    def flops(self) -> int:
        """Per timed unit: a whole sequence, or one step when streaming."""
        if self.one_step:
            return forward_flops(self.arch, 1, self.B, self.I, self.H, self.O, self.settings)
        f = forward_flops(self.arch, self.T, self.B, self.I, self.H, self.O, self.settings)
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


def _new_torch(case: Case) -> torch.nn.Module:
    """torch.nn's layer (or cell, for one_step cases) with the case's settings. A setting
    torch.nn refuses as an unknown keyword is one it has no part in (an initialisation, such
    as forget_bias: the weights are loaded after), and is left out."""
    spec = _spec(case.arch)
    cls = getattr(torch.nn, spec.cell if case.one_step else spec.torch_module)
    kwargs = _torch_settings(case)
    while True:
        try:
            return cls(case.I, case.H, **kwargs)
        except TypeError as e:
            unknown = [k for k in kwargs if f"'{k}'" in str(e)]
            if not unknown:
                raise
            del kwargs[unknown[0]]


def _new_rnnkit(case: Case) -> torch.nn.Module:
    spec = _spec(case.arch)
    cls = spec.cell_class if case.one_step else spec.module_class
    return cls(*_sizes(case.arch, case.I, case.H, case.O), **_hyper(case))


def source_state(case: Case) -> dict:
    """The weights every contender of this cell loads: a seeded torch.nn module where the
    peer is torch.nn, else a seeded rnnkit module. Same (arch, H, layer/cell) -> same weights."""
    torch.manual_seed(SEED)
    module = _new_torch(case) if _torch_peer(case) else _new_rnnkit(case)
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
    if case.mode == "cell":
        return Runner(_cell_call(lambda: module(xs[0], state0), case.autograd))

    def call():
        with torch.inference_mode():
            state = state0  # (1, H), (h, c) for LSTM, (1, O) for Jordan
            for x_t in xs:
                state = module(x_t, state)
            return _first(state)
    return Runner(call, steps=case.T)


def _cell_call(step: Callable, autograd: bool) -> Callable[[], torch.Tensor]:
    """One step of a cell as a decoder's loop runs it: with autograd on, the forward with
    gradients recorded (parameters require grad; the backward, once per sequence, is not
    part of a step); else under torch.inference_mode."""
    if autograd:
        return lambda: _first(step())

    def call():
        with torch.inference_mode():
            return _first(step())
    return call


def _zero_state(case: Case):
    """The cell's state: (B, H), (h, c) for an LSTM, (B, O) for Jordan."""
    spec = _spec(case.arch)
    size = case.O if spec.state_size == "output_size" else case.H
    states = tuple(torch.zeros(case.B, size) for _ in spec.states)
    return states if len(states) > 1 else states[0]


def _build_rnnkit(case: Case, state: dict, x: torch.Tensor, threads: int) -> Runner:
    module = _new_rnnkit(case)
    module.load_state_dict(state)
    if case.mode == "streaming":
        return _stream_runner(module, case, x)
    return _module_runner(module, case, x)


def _stream_runner(cell: torch.nn.Module, case: Case, x: torch.Tensor, numpy: bool = False) -> Runner:
    """rnnkit's streaming API: weights packed once, one native call per step; torch tensors
    in and out, or NumPy arrays (``numpy``)."""
    from rnnkit import Stream

    stream = Stream(cell.eval(), batch_size=case.B)
    xs = x.unbind(0)  # T tensors (1, I)
    out = torch.empty(case.B, case.O if _spec(case.arch).state_size == "output_size" else case.H)
    if numpy:
        xs, out = [x_t.numpy() for x_t in xs], out.numpy()  # views of the same memory

    def call():
        stream.reset()
        for x_t in xs:
            stream.step(x_t, out=out)
        return torch.from_numpy(out) if numpy else out
    return Runner(call, steps=case.T)


def _build_rnnkit_numpy(case: Case, state: dict, x: torch.Tensor, threads: int) -> Runner:
    if case.mode != "streaming":
        raise Unavailable("rnnkit (NumPy): streaming only")
    cell = _new_rnnkit(case)
    cell.load_state_dict(state)
    return _stream_runner(cell, case, x, numpy=True)


def _build_torch(case: Case, state: dict, x: torch.Tensor, threads: int) -> Runner:
    if not _torch_peer(case):
        raise Unavailable(f"torch.nn has no {case.arch} {case.variant}")
    module = _new_torch(case)
    module.load_state_dict(state)
    return _module_runner(module, case, x)


def _state_entry(state: dict, name: str) -> Optional[torch.Tensor]:
    """A layer's or a cell's parameter by role, None where it has none (peepholes, biases)."""
    for key in (name, name + "_l0"):
        if key in state:
            return state[key]
    return None


def _build_reference(case: Case, state: dict, x: torch.Tensor, threads: int) -> Runner:
    from rnnkit import reference

    spec = _spec(case.arch)
    training = case.mode == "training"
    params = [_state_entry(state, n) for n in spec.param_roles]  # None: a role this layer has not
    params = [p if p is None else p.clone().requires_grad_(training or case.autograd) for p in params]
    kwargs = {k: v for k, v in _hyper(case).items() if k in spec.hyper}
    n_states = len(spec.states)  # (h0, c0) or h0 or y0
    p = float(_hyper(case).get("zoneout", 0.0))  # rnnkit runs in eval mode: zoneout's expected value
    if p and case.mode in ("inference", "training"):
        widths = spec.state_widths(_new_rnnkit(case))
        kwargs["zoneout"] = tuple(torch.full((x.shape[0], x.shape[1], w), p, dtype=x.dtype) for w in widths)
    if case.mode == "inference":
        def call():
            with torch.inference_mode():
                return spec.reference(x, *[None] * n_states, *params, **kwargs)[0]
        return Runner(call)

    if training:
        xg = x.detach().clone().requires_grad_()
        leaves = [xg, *(p for p in params if p is not None)]

        def call():
            out = spec.reference(xg, *[None] * n_states, *params, **kwargs)[0]
            return torch.autograd.grad(out.sum(), leaves)[0]
        return Runner(call, leaves=leaves)

    xs = x.unbind(0)
    state0 = _zero_state(case)

    def step(x_t, s):
        new = spec.reference_step(x_t, *(s if isinstance(s, tuple) else (s,)), *params, **kwargs)
        if not p:
            return new
        if isinstance(new, tuple):  # s_t = p s_{t-1} + (1 - p) s~_t
            return tuple(p * a + (1 - p) * b for a, b in zip(s, new))
        return p * s + (1 - p) * new

    if case.mode == "cell":
        return Runner(_cell_call(lambda: step(xs[0], state0), case.autograd))

    def call():
        with torch.inference_mode():
            s = state0
            for x_t in xs:
                s = step(x_t, s)
            return _first(s)
    return Runner(call, steps=case.T)


ONNX_SPINNING = False  # --onnx-spinning: onnxruntime's default, for the order check to show its effect

# (session, exporter) or Unavailable, once per run, per key: (arch, H) for the TorchScript
# exporter (T and B dynamic), (arch, H, T, B) for the dynamo one (it bakes T into the graph).
_ORT_SESSIONS: dict = {}


def _onnx_session(case: Case, state: dict, threads: int):
    """An onnxruntime session of the torch.nn layer with these weights, exported to ONNX.

    torch.onnx.export(dynamo=False) first: ONNX's own RNN / LSTM / GRU operators, one export
    for every T and B. If it fails (it is deprecated), the dynamo exporter, per shape.
    """
    keys = ((case.arch, case.settings, case.H), (case.arch, case.settings, case.H, case.T, case.B))
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
    module = _new_torch(Case("inference", case.arch, case.H, 1, 1, case.settings)).eval()
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
    # Idle worker threads sleep instead of spinning, so they leave the cores to whoever runs next.
    for pool in ("intra_op", "inter_op"):
        options.add_session_config_entry(f"session.{pool}.allow_spinning", "1" if ONNX_SPINNING else "0")
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise Unavailable(f"onnxruntime cannot load the {exporter} model: {type(e).__name__}: "
                          f"{str(e).strip()[:200]}") from None
    return session, exporter


def _build_onnxruntime(case: Case, state: dict, x: torch.Tensor, threads: int) -> Runner:
    if case.mode != "inference" or not _torch_peer(case):
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
    "rnnkit (NumPy)": _build_rnnkit_numpy,
}


def contenders_for(case: Case, onnx: bool) -> list:
    """Names of the contenders of a cell, rnnkit first."""
    names = ["rnnkit", "torch.nn" if _torch_peer(case) else "reference"]
    if onnx and case.mode == "inference" and _torch_peer(case):
        names.append("onnxruntime")
    if case.mode == "streaming":
        names.append("rnnkit (NumPy)")
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


def _gemm_kernels(a: torch.Tensor, w: torch.Tensor) -> dict:
    """The fp32 products a @ w.T on offer here: name -> a call, or the reason it cannot run.

    a (M, K), w (N, K): the shape of an input projection x W_ih^T. torch.mm goes through
    torch's BLAS (MKL on x86); the oneDNN ones through torch's mkldnn bindings, on mkldnn
    tensors (torch.utils.mkldnn's layout) and on plain ones; the last is the C++ core's own
    packed GEMM where this build has it (rnnkit._backend.matmul_nt).
    """
    kernels = {}
    c = torch.empty(a.shape[0], w.shape[0])
    kernels["torch.mm (BLAS)"] = lambda: torch.mm(a, w.t(), out=c)
    try:
        a_md, w_md = a.to_mkldnn(), w.to_mkldnn()
        kernels["oneDNN linear, mkldnn tensors"] = lambda: torch._C._nn.mkldnn_linear(a_md, w_md, None)
    except Exception as e:
        kernels["oneDNN linear, mkldnn tensors"] = f"{type(e).__name__}: {str(e).strip()[:100]}"
    pointwise = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if pointwise is not None:
        kernels["oneDNN linear, plain tensors"] = lambda: pointwise(a, w, None, "none", [], "")
    else:
        kernels["oneDNN linear, plain tensors"] = "torch.ops.mkldnn._linear_pointwise is missing"
    from . import _backend
    matmul_nt = getattr(_backend, "matmul_nt", None)
    if matmul_nt is not None:
        kernels["rnnkit core (_backend.matmul_nt)"] = lambda: matmul_nt(a, w)
    else:
        kernels["rnnkit core (_backend.matmul_nt)"] = "not in this build"
    return kernels


@dataclass
class Peaks:
    """GFLOP/s of every fp32 GEMM on offer, at 1 thread and at the run's thread count."""

    threads: int
    shape: tuple = GEMM_SHAPE  # M, K, N
    rates: dict = field(default_factory=dict)  # (kernel, threads) -> best GFLOP/s seen
    missing: dict = field(default_factory=dict)  # kernel -> why it did not run

    @property
    def best(self) -> tuple:
        """(kernel at threads, GFLOP/s): the fastest product at up to the run's thread count
        (a run may use fewer threads than it has; and another process may have held a core
        while N threads were measured), the "peak"."""
        if not self.rates:
            return "none", float("nan")
        kernel, threads = max(self.rates, key=self.rates.get)
        return f"{kernel}, {threads} thread{'s' if threads > 1 else ''}", self.rates[kernel, threads]

    @property
    def peak(self) -> float:
        return self.best[1]

    def measure(self, repeats: int = MACHINE_REPEATS) -> "Peaks":
        """Measure every kernel (best of repeats) and keep, per kernel and thread count, the
        best of this and earlier measurements (others may share the CPU)."""
        from . import _backend

        M, K, N = self.shape
        torch.manual_seed(SEED)
        a, w = torch.randn(M, K), torch.randn(N, K)
        want = None
        before = torch.get_num_threads()
        try:
            for threads in sorted({1, self.threads}):
                torch.set_num_threads(threads)
                with _backend.use_threads(threads):
                    for name, call in _gemm_kernels(a, w).items():
                        if isinstance(call, str):
                            self.missing[name] = call
                            continue
                        try:
                            got = call()
                            got = got.to_dense() if got.is_mkldnn else got
                            want = a @ w.t() if want is None else want
                            if not torch.allclose(got, want, rtol=1e-3, atol=1e-3):
                                self.missing[name] = "differs from torch.mm"
                                continue
                            best = min(_timed(call) for _ in range(repeats))
                        except Exception as e:
                            self.missing[name] = f"{type(e).__name__}: {str(e).strip()[:100]}"
                            continue
                        rate = 2 * M * K * N / best / 1e9
                        self.rates[name, threads] = max(rate, self.rates.get((name, threads), 0.0))
        finally:
            torch.set_num_threads(before)
        return self

    def describe(self, repeats: int) -> str:
        M, K, N = self.shape
        name, peak = self.best
        each = []
        for kernel in dict.fromkeys(k for k, _ in self.rates):
            rates = ", ".join(f"{t} thread{'s' if t > 1 else ''} {self.rates[kernel, t]:.1f}"
                              for t in sorted({1, self.threads}) if (kernel, t) in self.rates)
            each.append(f"{kernel} {rates}")
        each += [f"{kernel}: {why}" for kernel, why in self.missing.items() if not any(
            k == kernel for k, _ in self.rates)]
        return (f"- fp32 GEMM peak: {peak:.1f} GFLOP/s ({name}), the fastest at up to {self.threads} "
                f"thread{'s' if self.threads > 1 else ''} of these products of a {M}×{K} by a {K}×{N} fp32 matrix "
                f"(x W^T, best of {repeats}, at the start and at the end of the run), in GFLOP/s: "
                + "; ".join(each) + ". `% peak` is relative to it.")


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
    timed: dict = field(default_factory=dict)  # contender -> [(seconds, predecessor)] (time_blocks)
    parts: dict = field(default_factory=dict)  # rnnkit's time_parts: part -> seconds per call
    first_calls: dict = field(default_factory=dict)  # contender -> seconds of first calls (first_calls)
    order: list = field(default_factory=list)  # OrderCheck per contender

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
    samples = {name: estimate[name] * number[name] for name in runners}
    if repeats is None:
        cycle_s = len(runners) * sum(s * (1 + (s <= LEAD_IN_MAX_S)) for s in samples.values())
        repeats = min(max_repeats, max(MIN_REPEATS, int(budget / max(cycle_s, 1e-9) * len(runners))))
    block, cycles = block_plan(len(runners), repeats)
    calls = {name: _sample_call(r.call, number[name], r.steps) for name, r in runners.items()}
    lead_in = {name: samples[name] <= LEAD_IN_MAX_S for name in runners}
    result.timed = time_blocks(calls, block, cycles, lead_in)
    result.repeats = len(result.timed[next(iter(runners))])
    result.times = {name: [t for t, *_ in ts] for name, ts in result.timed.items()}
    result.order = order_check(result.timed)
    result.notes += [flag.note() for flag in result.order if flag.flagged]
    if "rnnkit" in runners and case.mode in PARTS:
        runner = runners["rnnkit"]
        result.parts = time_parts(runner.call, max(1, min(PARTS_CALLS, math.ceil(PARTS_S / estimate["rnnkit"]))),
                                  warm_up=estimate["rnnkit"] < PARTS_S)  # a long call hides those costs
    return result


def _sample_call(call: Callable, number: int, steps: int) -> Callable[[], float]:
    """A timed sample of ``call``: seconds per timed unit (per step when streaming)."""
    return lambda: _timed(call, number) / steps


def block_schedule(n: int) -> list:
    """Contender indices 0..n-1 in an order in which every ordered pair (a, b), a == b
    included, is adjacent exactly once, read cyclically (an Eulerian circuit of the
    complete directed graph with loops, by Hierholzer's algorithm): each contender runs n
    blocks, once after each contender, itself included.

    >>> block_schedule(2)
    [0, 1, 1, 0]
    """
    successors = {a: list(range(n)) for a in range(n)}  # popped from the end
    stack, circuit = [0], []
    while stack:
        v = stack[-1]
        if successors[v]:
            stack.append(successors[v].pop())
        else:
            circuit.append(stack.pop())
    return circuit[::-1][:-1]  # the circuit ends where it starts: cyclic, drop the repeat


def block_plan(n: int, repeats: int) -> tuple:
    """(block, cycles): timed samples per block and passes over block_schedule(n), giving
    every contender at least ``repeats`` samples (n blocks per pass, at most BLOCK_REPEATS
    each; two passes or more where there are samples enough)."""
    block = max(1, min(BLOCK_REPEATS, repeats // (2 * n)))
    return block, max(1, math.ceil(repeats / (n * block)))


def time_blocks(calls: dict, block: int, cycles: int, lead_in: Optional[dict] = None) -> dict:
    """Time the contenders in interleaved blocks: ``cycles`` passes over block_schedule,
    each block an untimed lead-in call (where ``lead_in[name]``) then ``block`` timed
    samples back to back. ``calls[name]()`` runs one sample and returns its time.

    Returns name -> [(seconds, predecessor, block)], predecessor being the contender whose
    block ran just before (its threads may still be busy), the contender itself included,
    and block the sample's block number.
    """
    names = list(calls)
    order = [names[i] for i in block_schedule(len(names))]
    timed = {name: [] for name in names}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        previous = order[-1]  # cyclic: the first block follows the last one's contender
        for cycle in range(cycles):
            for i, name in enumerate(order):
                if lead_in is None or lead_in[name]:
                    calls[name]()
                timed[name] += [(calls[name](), previous, cycle * len(order) + i) for _ in range(block)]
                previous = name
    finally:
        if gc_was_enabled:
            gc.enable()
    return timed


@dataclass(frozen=True)
class OrderCheck:
    """A contender's time after its slowest predecessor against after itself: the median,
    over its blocks after that predecessor, of the block's mean sample (a leftover busy
    thread slows a block's first samples most)."""

    name: str
    after_self: float  # median block mean, in blocks that follow its own
    worst: str  # the predecessor after which it is slowest
    after_worst: float
    margin: float = ORDER_MARGIN

    @property
    def ratio(self) -> float:
        return self.after_worst / self.after_self

    @property
    def flagged(self) -> bool:
        return self.ratio > 1 + self.margin

    def note(self) -> str:
        return (f"order check: {self.name} takes {self.ratio:.2f}x as long after {self.worst} "
                f"({_fmt_time(self.after_worst)}) as after itself ({_fmt_time(self.after_self)})")


def order_check(timed: dict, margin: float = ORDER_MARGIN) -> list:
    """For every contender of time_blocks' result: its time after each predecessor (the
    median of its block means), the slowest of them against the time after itself
    (flagged above 1 + margin)."""
    checks = []
    for name, samples in timed.items():
        blocks = {}  # block -> (predecessor, [seconds])
        for seconds, previous, block in samples:
            blocks.setdefault(block, (previous, []))[1].append(seconds)
        by = {}
        for previous, ts in blocks.values():
            by.setdefault(previous, []).append(statistics.fmean(ts))
        if name not in by or len(by) < 2:
            continue
        medians = {p: statistics.median(ts) for p, ts in by.items() if p != name}
        worst = max(medians, key=medians.get)
        checks.append(OrderCheck(name, statistics.median(by[name]), worst, medians[worst], margin))
    return checks


# ---------------------------------------------------------------- where rnnkit's time goes
PRODUCT_OPS = frozenset({"mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "linear", "mkldnn_linear",
                         "_linear_pointwise"})  # torch's matrix products, at the dispatcher
NATIVE_PRODUCT_WORDS = ("matmul", "gemm")  # a core function with one of these in its name is a product
PARTS = {
    "inference": ("projection", "recurrence"),
    "training": ("projection", "recurrence", "recurrence bwd", "grad products"),
}


def _in_backward() -> bool:
    return torch._C._current_graph_task_id() != -1


class _PartTimer:
    """Times, during one call of a contender, every matrix product torch runs (at the
    dispatcher, so however it is spelled: @, mm, addmm, linear, oneDNN) and every call into
    rnnkit's C++ core, by phase (forward, or inside autograd's backward).

    Parts: ``projection`` (products in the forward: the input projections), ``recurrence``
    (core calls in the forward), ``recurrence bwd`` (core calls in the backward),
    ``grad products`` (products in the backward: input and weight gradients). A core
    function whose name says matmul or gemm counts as a product.
    """

    def __init__(self):
        self.seconds = {}
        self._depth = 0  # a product inside a timed one is not counted twice

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    def timed(self, fn: Callable, product: Optional[bool], *args, **kwargs):
        if self._depth:
            return fn(*args, **kwargs)
        self._depth += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            self._depth -= 1
            backward = _in_backward()
            self.add(("grad products" if backward else "projection") if product else
                     ("recurrence bwd" if backward or "backward" in getattr(fn, "__name__", "") else "recurrence"),
                     dt)

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        timer = self

        class Products(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.overloadpacket.__name__ in PRODUCT_OPS:
                    return timer.timed(func, True, *args, **(kwargs or {}))
                return func(*args, **(kwargs or {}))

        self._mode = Products()
        self._patched = _patch_core(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        for owner, name, value in reversed(self._patched):
            setattr(owner, name, value)


def _patch_core(timer: _PartTimer) -> list:
    """Route every reference an rnnkit module holds to the core (``_core``, or a function
    imported from it) and every method of the core's classes (plans, streams: instances
    cached on a module included) through ``timer``; returns what to restore."""
    import enum

    try:
        from rnnkit import _core
    except ImportError:
        return []

    def timed_method(method, product):
        return lambda self, *a, **k: timer.timed(method, product, self, *a, **k)

    class TimedCore:
        def __getattr__(self, name):
            value = getattr(_core, name)
            if callable(value) and not isinstance(value, type):
                product = any(w in name for w in NATIVE_PRODUCT_WORDS)
                return functools.wraps(value)(lambda *a, **k: timer.timed(value, product, *a, **k))
            return value

    proxy = TimedCore()
    patched = []
    for cls in vars(_core).values():
        if isinstance(cls, type) and not issubclass(cls, enum.Enum):
            for name, method in list(vars(cls).items()):
                if not name.startswith("_") and callable(method):
                    patched.append((cls, name, method))
                    setattr(cls, name, timed_method(method, any(w in name for w in NATIVE_PRODUCT_WORDS)))
    for modname, module in list(sys.modules.items()):
        if not modname.startswith("rnnkit.") or modname == __name__ or module is None:
            continue
        for name, value in list(vars(module).items()):
            if value is _core:
                patched.append((module, name, value))
                setattr(module, name, proxy)
            elif callable(value) and not isinstance(value, type) and getattr(_core, name, None) is value:
                patched.append((module, name, value))
                setattr(module, name, getattr(proxy, name))
    return patched


def time_parts(call: Callable, calls: int, warm_up: bool = True) -> dict:
    """Seconds of each part of one ``call`` (see _PartTimer), the median over ``calls`` calls
    run under the timers, and ``"total"``: the median time of those (instrumented) calls.
    ``warm_up``: one untimed call first (the timers' first-use costs)."""
    timer = _PartTimer()
    per_call = []
    with timer:
        torch.ones(1, 1) @ torch.ones(1, 1)  # the dispatch mode's first use in the process (seconds)
        if warm_up:
            call()
        for _ in range(calls):
            timer.seconds = {}
            t0 = time.perf_counter()
            call()
            per_call.append({**timer.seconds, "total": time.perf_counter() - t0})
    return {part: statistics.median(c.get(part, 0.0) for c in per_call)
            for part in dict.fromkeys(k for c in per_call for k in c)}


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
                  "onnxruntime", "speed-up vs ORT", "GFLOP/s", "% peak", "repeats", "order"],
    "training": ["arch", "H", "B", "T", "rnnkit", "peer", "peer time", "speed-up",
                 "GFLOP/s", "% peak", "saved MiB rnnkit", "saved MiB peer", "repeats", "order"],
    "streaming": ["arch", "H", "B", "T", "rnnkit per step", "rnnkit NumPy per step", "peer", "peer per step",
                  "speed-up", "GFLOP/s", "% peak", "repeats", "order"],
    "cell": ["arch", "H", "B", "autograd", "rnnkit per step", "peer", "peer per step", "speed-up", "repeats",
             "order"],
}


def table_columns(table: str, mode: str) -> list:
    """A table's header: its mode's columns, with the variant after the arch in the variants tables."""
    head = list(COLUMNS[mode])
    return head[:1] + ["variant"] + head[1:] if table.startswith("variants") else head


def _row(result: Result, peak: float) -> list:
    c = result.case
    peer = "torch.nn" if _torch_peer(c) else "reference"
    ours, theirs = result.median("rnnkit"), result.median(peer)
    gflops = None if ours is None else c.flops / ours / 1e9
    if c.mode == "cell":
        return [c.arch, str(c.H), str(c.B), "on" if c.autograd else "off (inference_mode)",
                _fmt_time(ours, result.spread("rnnkit")), peer, _fmt_time(theirs, result.spread(peer)),
                _ratio(theirs, ours), str(result.repeats), _order_cell(result.order)]
    cells = [c.arch] + ([c.variant] if c.table.startswith("variants") else []) + [
        str(c.H), str(c.B), str(c.T), _fmt_time(ours, result.spread("rnnkit"))]
    if c.mode == "streaming":
        cells.append(_fmt_time(result.median("rnnkit (NumPy)"), result.spread("rnnkit (NumPy)")))
    cells += [peer, _fmt_time(theirs, result.spread(peer)), _ratio(theirs, ours)]
    if c.mode == "inference":
        ort = result.median("onnxruntime")
        cells += [_fmt_time(ort, result.spread("onnxruntime")), _ratio(ort, ours)]
    cells += [_number(gflops), _number(None if gflops is None else 100 * gflops / peak)]
    if c.mode == "training":
        cells += [_mib(result.saved.get("rnnkit")), _mib(result.saved.get(peer))]
    cells.append(str(result.repeats))
    cells.append(_order_cell(result.order))
    return cells


def _order_cell(checks: list) -> str:
    """The order check's largest ratio in a cell (flagged with a !)."""
    if not checks:
        return "—"
    worst = max(checks, key=lambda c: c.ratio)
    return f"{worst.ratio:.2f}{' !' if worst.flagged else ''}"


def markdown_table(table: str, results: list, peak: float) -> str:
    head = table_columns(table, results[0].case.mode)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_row(r, peak)) + " |" for r in results]
    return "\n".join(lines)


def parts_columns(table: str, mode: str) -> list:
    head = ["arch", "H", "B", "T", "rnnkit", *PARTS[mode], "rest", "instrumented call"]
    return head[:1] + ["variant"] + head[1:] if table.startswith("variants") else head


def parts_table(table: str, results: list) -> str:
    """Where rnnkit's time goes per cell: each part's seconds per call and its share of
    rnnkit's (uninstrumented) median; rest = that median less the parts."""
    mode = results[0].case.mode
    head = parts_columns(table, mode)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in results:
        total, c = r.median("rnnkit"), r.case
        if not r.parts or total is None:
            continue
        share = lambda s: f"{_fmt_time(s)} ({100 * s / total:.0f}%)"  # noqa: E731
        parts = [r.parts.get(p, 0.0) for p in PARTS[mode]]
        cells = list(map(share, parts))
        if not parts[0] and parts[1]:  # one core call does the projections too (whole-stack path)
            cells[0] = "in the core call"
        variant = [c.variant] if table.startswith("variants") else []
        lines.append("| " + " | ".join([c.arch, *variant, str(c.H), str(c.B), str(c.T), _fmt_time(total),
                                        *cells, share(total - sum(parts)),
                                        _fmt_time(r.parts["total"])]) + " |")
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


def header(args, threads: int, peaks: Peaks, bw: tuple, onnx_note: str) -> str:
    model, flags = _cpu_info()
    amx = any(f.startswith("amx") for f in flags)
    lines = [
        "# rnnkit benchmark",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `rnnkit bench {' '.join(args.argv)}`".rstrip(),
        f"- CPU: {model}; {os.cpu_count()} logical CPUs visible",
        f"- flags: {' '.join(flags) or 'none found'}; AMX: {'yes' if amx else 'no'}",
        f"- threads: torch.get_num_threads() = {torch.get_num_threads()}, onnxruntime intra_op_num_threads = "
        f"{threads}; "
        "OpenMP wait policy from the environment (idle torch threads spin or sleep by it): "
        + ", ".join(f"{k}={os.environ.get(k, 'unset')}"
                    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")),
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, numpy {_version('numpy')}, "
        f"onnxruntime {_version('onnxruntime')}, onnx {_version('onnx')}, rnnkit {_rnnkit_info()}",
        peaks.describe(args.machine_repeats),
        f"- memory bandwidth: copy {bw[0]:.1f} GB/s (dst.copy_(src) of {bw[2] // 2**20} MiB fp32, "
        f"bytes read + written), sum {bw[1]:.1f} GB/s (src.sum(), bytes read); best of {args.machine_repeats}",
        "- FLOPs: matrix products only, 2 per multiply-add; forward = Elman 2·T·B·(I+H)·H, "
        "LSTM 2·T·B·(I+H)·4H, GRU 2·T·B·(I+H)·3H, Jordan 2·T·B·(I·H + 2·O·H); I = H (= O); "
        "training = 3 × forward; streaming: one step (T = 1). GFLOP/s and % peak are rnnkit's.",
        "- inference: one forward pass under torch.inference_mode; training: forward, loss = sum of all "
        "outputs, torch.autograd.grad to the input and every weight; streaming: B = 1, one cell call "
        "per step from Python returning the new state, time per step (rnnkit.Stream with torch tensors in "
        "and out, and with NumPy arrays: `rnnkit NumPy per step`).",
        f"- cells: one step of a cell per call at H = {CELL_H}, B = 1 from a zero state; autograd on: the "
        "forward with gradients recorded (parameters require grad), as a decoder's training loop runs "
        "each step (the backward, once per sequence, is not timed); off: under torch.inference_mode.",
        f"- call: one call of an LSTM layer (1 layer, H = {CALL_CASE[1]}, B = {CALL_CASE[2]}, "
        f"T = {CALL_CASE[3]}), inference, timed as an inference cell; first call: the first call "
        f"(inference) of each of {FIRST_CALLS} freshly made modules loaded with the same weights, "
        "median (max).",
        f"- variants: every example setting of rnnkit.networks.NETWORKS[...].examples at H = {VARIANT_H} "
        f"and B = {VARIANT_B} (the grid's largest when those are not in it), inference and training; "
        "the peer is torch.nn where it computes the same equations with that setting, else the reference.",
        "- timing: same weights (state_dict) and input for all contenders; warm-up, then interleaved "
        "blocks: each block is one contender's untimed lead-in call (when its sample is under "
        f"{LEAD_IN_MAX_S * 1e3:g} ms) and up to {BLOCK_REPEATS} timed samples back to back; the blocks "
        "follow an order in which every contender runs once right after each contender, itself "
        "included (repeated as the budget allows); time = median over samples, ± half the "
        "interquartile range; samples per contender set per cell by a time budget "
        f"(at most {args.budget:g} s a cell, less when the run would exceed "
        f"{QUICK_TOTAL_BUDGET_S if args.quick else TOTAL_BUDGET_S:g} s; at least {MIN_REPEATS}, about "
        f"{args.max_repeats} at most) unless --repeats (at least that many).",
        "- order check (column `order`): for each contender, its time in blocks that follow another "
        "contender's, the slowest such predecessor, over its time in blocks that follow its own (time: "
        "the median over those blocks of the block's mean sample); the cell's largest ratio is shown, "
        f"`!` above {1 + ORDER_MARGIN:g} (then a note names the contender and the predecessor): a time "
        "must not depend on who ran before.",
        "- speed-up = peer time / rnnkit time (> 1: rnnkit is faster). Peers: torch.nn for rnn (tanh), "
        "lstm, gru (reset after); rnnkit.reference for gru-rb (reset before) and jordan.",
        "- where rnnkit's time goes: after the timing, a few more rnnkit calls (about "
        f"{PARTS_S * 1e3:g} ms, at most {PARTS_CALLS}) run with timers around every matrix product torch "
        "runs (at its dispatcher: @, mm, addmm, linear, oneDNN) and every call into the C++ core "
        "(its functions and the methods of its plans); per call: projection = the products of the "
        "forward (input projections; `in the core call` where none runs outside the core: then "
        "recurrence includes them), recurrence = the core's calls in the forward, recurrence bwd "
        "= its calls inside autograd's backward, grad products = the products in the backward (input "
        "and weight gradients); rest = rnnkit's median time less those parts: Python and torch glue "
        "(checks, allocation, autograd, copies). `instrumented call`: the median time of the calls under "
        "the timers, to judge their overhead; each part is the median over those calls. The gate epilogue "
        "(pointwise math) runs inside the "
        "core's recurrence call, interleaved with each step's product, and is not separated: timing a "
        "step's product alone from Python costs a call overhead as large as the product at small H.",
        "- saved MiB: memory a training step holds for backward, the distinct storages saved by "
        "autograd (torch.autograd.graph.saved_tensors_hooks), input and parameters excluded.",
        f"- onnxruntime: {onnx_note}",
    ]
    return "\n".join(lines)


def build_cases(modes: list, archs: list, hidden: list, batch: list, T: int) -> list:
    """The cells of the run, section by section.

    inference, training, streaming: the grid (streaming at B = 1); cells: every network's
    cell at H = CELL_H, B = 1, one step per call, autograd off and on; call: one LSTM call at
    H = 8, T = 1, B = 1 (inference); variants: every example setting of the registry
    (rnnkit.networks.NETWORKS[...].examples) at H = VARIANT_H and B = VARIANT_B (else the
    grid's largest), inference and training.
    """
    cases = []
    for mode in modes:
        if mode in ("inference", "training", "streaming"):
            cases += [Case(mode, arch, H, B, T) for arch in archs for H in hidden
                      for B in ([1] if mode == "streaming" else batch)]
        elif mode == "cells":
            cases += [Case("cell", arch, CELL_H, 1, 1, autograd=autograd, section="cells")
                      for arch in archs for autograd in (False, True)]
        elif mode == "call":
            cases.append(Case("inference", *CALL_CASE, section="call"))
        elif mode == "variants":
            H = VARIANT_H if VARIANT_H in hidden else max(hidden)
            B = VARIANT_B if VARIANT_B in batch else max(batch)
            for m in ("inference", "training"):
                cases += [Case(m, arch, H, B, T, settings=tuple(sorted(example.items())), section=f"variants: {m}")
                          for arch in archs for example in _spec(arch).examples]
    return cases


def first_calls(case: Case, n: int) -> dict:
    """Seconds of the first call (inference) of ``n`` freshly made modules, each loaded with
    the case's weights: rnnkit's and torch.nn's (when it computes the same)."""
    state = source_state(case)
    x = torch.randn(case.T, case.B, case.I)
    makers = {"rnnkit": _new_rnnkit}
    if _torch_peer(case):
        makers["torch.nn"] = _new_torch
    seconds = {name: [] for name in makers}
    for _ in range(n):
        for name, make in makers.items():
            module = make(case)
            module.load_state_dict(state)
            module.eval()
            t0 = time.perf_counter()
            with torch.inference_mode():
                module(x)
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def first_calls_table(results: list) -> str:
    lines = ["| first call of a fresh module | " + " | ".join(results[0].first_calls) + " |",
             "|---|" + "---|" * len(results[0].first_calls)]
    for r in results:
        c = r.case
        lines.append(f"| {c.arch} H={c.H} B={c.B} T={c.T}, median (max) of {len(next(iter(r.first_calls.values())))} | "
                     + " | ".join(f"{_fmt_time(statistics.median(ts))} ({_fmt_time(max(ts))})"
                                  for ts in r.first_calls.values()) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """One speed target, checked on the results of one run.

    ``value(result, peak)`` gives the figure of one cell (None where the cell does not
    count or a contender is missing); the target is met at a cell when ``value >= bound``
    (``at_most``: ``value <= bound``).
    """

    name: str
    applies: Callable[[Case], bool]
    value: Callable[["Result", float], Optional[float]]
    bound: float
    unit: str = "x"  # x: a speed-up; %: of the fp32 GEMM peak; us: microseconds
    at_most: bool = False

    def met(self, v: float) -> bool:
        return v <= self.bound if self.at_most else v >= self.bound


def _speedup(result: "Result", _peak: float = 0.0) -> Optional[float]:
    """Peer time / rnnkit time."""
    ours = result.median("rnnkit")
    theirs = result.median("torch.nn" if _torch_peer(result.case) else "reference")
    return None if ours is None or theirs is None else theirs / ours


def _vs_fastest_peer(result: "Result", _peak: float = 0.0) -> Optional[float]:
    """The faster of the peer and onnxruntime (where it ran), over rnnkit's time."""
    ours = result.median("rnnkit")
    peers = [result.median(n) for n in ("torch.nn", "reference", "onnxruntime")]
    peers = [t for t in peers if t is not None]
    return None if ours is None or not peers else min(peers) / ours


def _vs_onnxruntime(result: "Result", _peak: float = 0.0) -> Optional[float]:
    ours, ort = result.median("rnnkit"), result.median("onnxruntime")
    return None if ours is None or ort is None else ort / ours


def _share_of_peak(result: "Result", peak: float) -> Optional[float]:
    ours = result.median("rnnkit")
    return None if ours is None or not peak else 100 * result.case.flops / ours / 1e9 / peak


def _step_us(result: "Result", _peak: float = 0.0) -> Optional[float]:
    ours = result.median("rnnkit")
    return None if ours is None else ours * 1e6


def _first_call_ms(result: "Result", _peak: float = 0.0) -> Optional[float]:
    times = result.first_calls.get("rnnkit")
    return None if not times else statistics.median(times) * 1e3


def _grid(mode: str, archs=None, H=lambda h: True, B=lambda b: True) -> Callable[[Case], bool]:
    """Cells of a grid table (not the variants, cells or call tables)."""
    return lambda c: (c.table == mode and (archs is None or c.arch in archs) and H(c.H) and B(c.B))


# The speed targets rnnkit set itself (fp32; ratios are peer time / rnnkit time; the peer is
# torch.nn where it computes the same network, else rnnkit.reference).
TARGETS = (
    Target("training >= 1.0x the peer, every point", _grid("training"), _speedup, 1.0),
    Target("LSTM training >= 1.5x torch.nn at H <= 256", _grid("training", ("lstm",), H=lambda h: h <= 256),
           _speedup, 1.5),
    Target("GRU and Elman training >= 3x torch.nn at H <= 256",
           _grid("training", ("gru", "rnn"), H=lambda h: h <= 256), _speedup, 3.0),
    Target("training at H >= 512, B = 64: >= 70 % of the fp32 peak",
           _grid("training", H=lambda h: h >= 512, B=lambda b: b == 64), _share_of_peak, 70.0, "%"),
    Target("inference >= 1.0x the faster of the peer and onnxruntime, every point", _grid("inference"),
           _vs_fastest_peer, 1.0),
    Target("cells under inference_mode >= 3x the peer's cell",
           lambda c: c.table == "cells" and not c.autograd, _speedup, 3.0),
    Target("cells with autograd >= 1.0x the peer's cell", lambda c: c.table == "cells" and c.autograd,
           _speedup, 1.0),
    Target("streaming (torch tensors) <= 3 us per step at H = 64", _grid("streaming", H=lambda h: h == 64),
           _step_us, 3.0, "us", at_most=True),
    Target("one call (LSTM H=8 T=1 B=1) >= 1.0x onnxruntime's session.run", lambda c: c.table == "call",
           _vs_onnxruntime, 1.0),
    Target("first call of a fresh module <= 1 ms", lambda c: c.table == "call", _first_call_ms, 1.0, "ms",
           at_most=True),
)


def _label(c: Case) -> str:
    if c.table == "cells":
        return f"{c.arch} autograd {'on' if c.autograd else 'off'}"
    if c.table == "call":
        return f"{c.arch} H={c.H} B={c.B} T={c.T}"
    return f"{c.arch} H={c.H} B={c.B}"


def _fmt_value(v: float, unit: str) -> str:
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "%":
        return f"{v:.1f} %"
    return f"{v:.{3 if v < 10 else 1}f} {unit}" if unit == "ms" else f"{v:.2f} {unit}"


def target_rows(results: list, peak: float, targets=TARGETS) -> list:
    """Per target with at least one cell in the run: (name, cells met, cells, worst cell,
    its value, met everywhere)."""
    rows = []
    for t in targets:
        values = [(v, r.case) for r in results if t.applies(r.case)
                  for v in [t.value(r, peak)] if v is not None]
        if not values:
            continue
        worst = (max if t.at_most else min)(values, key=lambda vc: vc[0])
        met = sum(t.met(v) for v, _ in values)
        rows.append((t.name, met, len(values), _label(worst[1]), _fmt_value(worst[0], t.unit), met == len(values)))
    return rows


def targets_table(results: list, peak: float, targets=TARGETS) -> str:
    """The targets of this run: how many of its cells meet each, and the worst cell."""
    rows = target_rows(results, peak, targets)
    lines = ["| target | met at | worst cell | its value | met |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {met} of {n} | {where} | {value} | {'yes' if ok else '**no**'} |"
              for name, met, n, where, value, ok in rows]
    return "\n".join(lines) if rows else ""


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
    p.add_argument("--repeats", type=int,
                   help="at least this many timed samples per contender and cell (default: by time budget)")
    p.add_argument("--budget", type=float,
                   help=f"seconds of timing per cell (default {BUDGET_S}, quick {QUICK_BUDGET_S})")
    p.add_argument("--threads", type=int, help="intra-op threads for torch and onnxruntime (default: torch's)")
    p.add_argument("--out", metavar="FILE.md", help="also write the markdown to this file")
    p.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime contender")
    p.add_argument("--onnx-spinning", action="store_true",
                   help="let onnxruntime's idle threads spin (its default; off here so they do not slow the "
                        "next contender): shows what the order check catches")
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
    if args.out:  # checked now, not after a run of minutes
        out = Path(args.out)
        if out.is_dir():
            raise SystemExit(f"--out {out}: is a folder; expected the markdown file to write")
        if not out.parent.is_dir():
            raise SystemExit(f"--out {out}: no folder {out.parent} to write it in")

    global ONNX_SPINNING
    threads_before = torch.get_num_threads()
    threads = args.threads or threads_before
    torch.set_num_threads(threads)
    ONNX_SPINNING = args.onnx_spinning
    try:
        return _run(args, archs, modes, hidden, batch, T, threads)
    finally:
        torch.set_num_threads(threads_before)
        ONNX_SPINNING = False
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
                         "sequential execution, session.intra_op.allow_spinning and inter_op.allow_spinning = "
                         + ("1 (its default: --onnx-spinning)" if args.onnx_spinning else
                            "0 (idle threads sleep instead of spinning into the next contender's time)"))
        except ImportError:
            onnx, onnx_note = False, "skipped: onnxruntime is not installed"

    log(f"measuring the machine ({threads} threads) ...")
    peaks = Peaks(threads, QUICK_GEMM_SHAPE if args.quick else GEMM_SHAPE).measure(args.machine_repeats)
    nbytes = QUICK_BANDWIDTH_BYTES if args.quick else BANDWIDTH_BYTES
    bw = (*bandwidth(nbytes, repeats=args.machine_repeats), nbytes)

    cases = build_cases(modes, archs, hidden, batch, T)

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
        if case.table == "call":
            result.first_calls = first_calls(case, FIRST_CALLS)
        label = f"{case.table} {case.arch}{'' if not case.settings else ' ' + case.variant} H={case.H} B={case.B}" + (
            f" autograd={'on' if case.autograd else 'off'}" if case.mode == "cell" else f" T={case.T}")
        for note in result.notes:
            notes.setdefault(note, []).append(label)
        log(f"[{i}/{len(cases)}] {label}: {time.perf_counter() - t0:.1f} s")

    log("measuring the GEMM peak again ...")
    peak = peaks.measure(args.machine_repeats).peak  # the better of the two: others may share the CPU
    exporters = sorted({v[1] for v in _ORT_SESSIONS.values() if isinstance(v, tuple)})
    if exporters:
        how = {"torch.onnx.export(dynamo=False)": " (ONNX RNN/LSTM/GRU operators, T and B dynamic)",
               "torch.onnx.export(dynamo=True)": " (one export per T and B)"}
        onnx_note += "; exported with " + ", ".join(e + how.get(e, "") for e in exporters)
    problems = sorted({str(v) for v in _ORT_SESSIONS.values() if isinstance(v, Unavailable)})
    if problems:
        onnx_note += "; export problems: " + " | ".join(problems)
    parts = [header(args, threads, peaks, bw, onnx_note)]
    for table in dict.fromkeys(r.case.table for r in results):
        rows = [r for r in results if r.case.table == table]
        text = markdown_table(table, rows, peak)
        if table == "call":
            text += "\n\n" + first_calls_table(rows)
        parts.append(f"## {table}\n\n{text}")
        if rows[0].case.mode in PARTS and any(r.parts for r in rows):
            parts.append(f"## where rnnkit's time goes: {table}\n\n" + parts_table(table, rows))
    targets = targets_table(results, peak)
    if targets:
        parts.append("## targets\n\nEach target over the cells of this run it applies to; the worst cell is the one "
                     "furthest from it.\n\n" + targets)
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
