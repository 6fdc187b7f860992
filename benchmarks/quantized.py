"""Reduced-precision inference (rnnkit.quantize_dynamic, rnnkit.Stream(dtype=...)): error and
speed of rnnkit's int8 and bf16 weights against rnnkit float32 and torch.ao's dynamic int8,
measured in one run; prints markdown tables.

    .venv/bin/python benchmarks/quantized.py                  # the grid, Stream, proj_size
    .venv/bin/python benchmarks/quantized.py --bpc runs/demo  # also the demo LM's bpc
    .venv/bin/python benchmarks/quantized.py --quick          # H 64, 256 only

Grid: LSTM, GRU, RNN (tanh) with I = H in {64, 256, 1024}, B in {1, 16}, T = 100,
torch.nn's initialisation, inputs N(0, 1), one layer. Each contender is one forward call
under torch.inference_mode; contenders run in interleaved rounds (one call each per round,
the order rotating), and a contender's time is its median over the rounds. Error: max
|y - y_fp32| over the outputs (T, B, H), y_fp32 rnnkit's float32 module (torch.ao's:
against torch.nn's float32 module with the same weights, which equals rnnkit's within 1e-6).
torch.ao.quantization.quantize_dynamic converts torch.nn.LSTM and GRU, not torch.nn.RNN.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import torch

import rnnkit

warnings.simplefilter("ignore")  # torch.ao's deprecation notice


CLOCK = time.perf_counter  # --clock cpu: time.process_time (the process's CPU seconds)


def timed_rounds(fns: dict, budget: float, min_rounds: int = 3, max_rounds: int = 25) -> dict:
    """Median seconds per call of each fn, measured in interleaved rounds (rotating order)."""
    for f in fns.values():  # warm-up (packing, first-call costs)
        f()
    one = {}
    for k, f in fns.items():
        t0 = CLOCK()
        f()
        one[k] = CLOCK() - t0
    rounds = int(max(min_rounds, min(max_rounds, budget / max(sum(one.values()), 1e-9))))
    times = {k: [] for k in fns}
    keys = list(fns)
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0 = CLOCK()
            fns[k]()
            times[k].append(CLOCK() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def torch_ao(name: str, module):
    """torch.ao's dynamically quantised int8 copy of the torch.nn twin of ``module``, and the twin."""
    cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}.get(name)
    if cls is None:
        return None, None
    twin = cls(module.input_size, module.hidden_size)
    twin.load_state_dict(module.state_dict())
    return ao_int8(twin), twin


def ao_int8(layer: torch.nn.Module) -> torch.nn.Module:
    """torch.ao.quantization.quantize_dynamic of a torch.nn recurrent layer (it converts
    children only, so the layer goes in as a child and comes back converted)."""
    holder = torch.nn.Module()
    holder.rnn = layer
    converted = torch.ao.quantization.quantize_dynamic(holder, {type(layer)}, dtype=torch.qint8).rnn
    assert type(converted) is not type(layer), "torch.ao did not convert the layer"
    return converted


def grid(hidden, batches, T, budget):
    print(f"\n## Sequence inference (T = {T}, I = H, one layer; time: median ms per forward call)\n")
    print("| cell | H | B | fp32 ms | int8 ms | int8 x fp32 | int8 err | torch.ao int8 ms | rnnkit int8 x torch.ao "
          "| torch.ao err | bf16 ms | bf16 x fp32 | bf16 err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("LSTM", "GRU", "RNN"):
        for H in hidden:
            for B in batches:
                torch.manual_seed(0)
                m = getattr(rnnkit, name)(H, H).eval()
                x = torch.randn(T, B, H)
                q8 = rnnkit.quantize_dynamic(m, dtype=torch.qint8)
                qb = rnnkit.quantize_dynamic(m, dtype=torch.bfloat16)
                ao, twin = torch_ao(name, m)
                fns = {"fp32": lambda: m(x), "int8": lambda: q8(x), "bf16": lambda: qb(x)}
                if ao is not None:
                    fns["ao"] = lambda: ao(x)
                with torch.inference_mode():
                    t = timed_rounds(fns, budget)
                    ref = m(x)[0]
                    e8 = (q8(x)[0] - ref).abs().max().item()
                    eb = (qb(x)[0] - ref).abs().max().item()
                    if ao is not None:
                        e_ao = (ao(x)[0] - twin(x)[0]).abs().max().item()
                ms = {k: v * 1e3 for k, v in t.items()}
                ao_cols = (f"{ms['ao']:.2f} | {t['ao'] / t['int8']:.2f}x | {e_ao:.2e}" if ao is not None
                           else "n/a | n/a | n/a")
                print(f"| {name} | {H} | {B} | {ms['fp32']:.2f} | {ms['int8']:.2f} | {t['fp32'] / t['int8']:.2f}x | "
                      f"{e8:.2e} | {ao_cols} | {ms['bf16']:.2f} | {t['fp32'] / t['bf16']:.2f}x | {eb:.2e} |",
                      flush=True)
    print("\n`x fp32` = fp32 time / that time (above 1: faster than rnnkit's float32); "
          "`rnnkit int8 x torch.ao` = torch.ao time / rnnkit int8 time.")


def streaming(hidden, steps=200, budget=1.0):
    print(f"\n## Stream (B = 1, one step per call, torch tensors, `out=`; median µs per step over blocks of {steps})\n")
    print("| cell | H | fp32 µs | bf16 µs | bf16 / fp32 | int8 µs | int8 / fp32 |")
    print("|---|---|---|---|---|---|---|")
    for name in ("LSTM", "GRU", "RNN"):
        for H in hidden:
            torch.manual_seed(0)
            m = getattr(rnnkit, name)(H, H).eval()
            x, out = torch.randn(H), torch.empty(H)
            streams = {k: rnnkit.Stream(m, dtype=d) for k, d in
                       (("fp32", None), ("bf16", torch.bfloat16), ("int8", torch.qint8))}

            def block(s):
                return lambda: [s.step(x, out=out) for _ in range(steps)]

            t = timed_rounds({k: block(s) for k, s in streams.items()}, budget)
            us = {k: v / steps * 1e6 for k, v in t.items()}
            print(f"| {name} | {H} | {us['fp32']:.1f} | {us['bf16']:.1f} | {us['bf16'] / us['fp32']:.2f} | "
                  f"{us['int8']:.1f} | {us['int8'] / us['fp32']:.2f} |", flush=True)


def proj_size(budget: float = 1.0):
    print("\n## proj_size (LSTMP: h = W_hr (o * tanh c); T = 100, B = 16, I = H)\n")
    lstm = torch.nn.LSTM(32, 64, proj_size=16)
    try:
        q = ao_int8(lstm)
        with torch.inference_mode():
            q(torch.randn(5, 2, 32))
        print("- torch.ao: converts and runs")
    except Exception as err:  # pytorch#60008
        print(f"- torch.ao: fails: {type(err).__name__}: {str(err).splitlines()[0][:100]}")
    print("\n| H | P | fp32 ms | int8 ms | int8 x fp32 | int8 err | bf16 ms | bf16 x fp32 | bf16 err |")
    print("|---|---|---|---|---|---|---|---|---|")
    for H, P in ((256, 128), (1024, 256)):
        torch.manual_seed(0)
        m = rnnkit.LSTM(H, H, proj_size=P).eval()
        x = torch.randn(100, 16, H)
        mods = {"fp32": m, "int8": rnnkit.quantize_dynamic(m, dtype=torch.qint8),
                "bf16": rnnkit.quantize_dynamic(m, dtype=torch.bfloat16)}
        with torch.inference_mode():
            ref = m(x)[0]
            err = {k: (mods[k](x)[0] - ref).abs().max().item() for k in ("int8", "bf16")}

            def run(mod):
                return lambda: mod(x)

            t = timed_rounds({k: run(v) for k, v in mods.items()}, budget)
        ms = {k: v * 1e3 for k, v in t.items()}
        print(f"| {H} | {P} | {ms['fp32']:.2f} | {ms['int8']:.2f} | {ms['fp32'] / ms['int8']:.2f}x | {err['int8']:.2e} | "
              f"{ms['bf16']:.2f} | {ms['fp32'] / ms['bf16']:.2f}x | {err['bf16']:.2e} |", flush=True)


def bpc(run: str, limit: int):
    """The LM of a run folder evaluated on its validation split with its rnnkit layers in
    float32, bf16 and int8 (the same evaluation code, autograd off)."""
    from rnnkit.cli import _open_checkpoint
    from rnnkit.training.task import RunContext

    print(f"\n## Language model {run}: validation bpc ({f'first {limit:,} characters' if limit else 'whole split'})\n")
    print("| weights | bpc | bpc - fp32 | seconds |")
    print("|---|---|---|---|")
    base = None
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("int8", torch.qint8)):
        _, task, model = _open_checkpoint(run, None)
        if dtype is not None:
            swap_recurrent(model, dtype)
        t0 = time.perf_counter()
        with torch.no_grad():
            res = task.evaluate(model, "valid", RunContext(), limit=limit or None)
        dt = time.perf_counter() - t0
        base = res["bpc"] if base is None else base
        print(f"| {label} | {res['bpc']:.4f} | {res['bpc'] - base:+.5f} | {dt:.1f} |", flush=True)


def swap_recurrent(model: torch.nn.Module, dtype) -> None:
    """Replace every rnnkit recurrent layer inside ``model`` by its quantize_dynamic copy."""
    layers = (rnnkit.RNN, rnnkit.LSTM, rnnkit.GRU, rnnkit.JordanRNN)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, layers):
                setattr(parent, name, rnnkit.quantize_dynamic(child, dtype=dtype))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="H 64 and 256 only, short budget")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (torch and rnnkit)")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per grid point")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time; cpu: the process's CPU time (steadier on a shared machine, "
                         "meaningful with --threads 1)")
    ap.add_argument("--bpc", metavar="RUN", help="also evaluate this LM run folder (e.g. runs/demo)")
    ap.add_argument("--bpc-limit", type=int, default=0, help="validation characters for --bpc (0: the whole split)")
    ns = ap.parse_args(argv)
    if ns.threads:
        torch.set_num_threads(ns.threads)
    global CLOCK
    CLOCK = time.process_time if ns.clock == "cpu" else time.perf_counter
    from rnnkit import _core
    hidden = [64, 256] if ns.quick else [64, 256, 1024]
    budget = 0.5 if ns.quick else ns.budget
    print("# rnnkit reduced-precision inference")
    print(f"\nrnnkit {rnnkit.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}, "
          f"ISA {rnnkit.current_isa_name()}, AVX512-VNNI {'yes' if _core.lowp_dot_supported(0) else 'no'}, "
          f"AVX512-BF16 {'yes' if _core.lowp_dot_supported(1) else 'no'}, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} at start, clock {ns.clock}; command: {' '.join(sys.argv)}")
    grid(hidden, [1, 16], 100, budget)
    streaming([64, 256] if ns.quick else [64, 1024], budget=budget)
    proj_size(budget)
    if ns.bpc:
        bpc(ns.bpc, ns.bpc_limit)
    print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
