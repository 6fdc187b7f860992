"""rnnkit.LSTM against torch.nn.LSTM (oneDNN) per grid point: inference and training.

One layer, T = 100, fp32, the same weights in both. Each contender is timed in its own
block (all its repeats together, never interleaved with the other's calls), and the
blocks alternate ``--rounds`` times; the table gives the median of every call of each
contender and the ratio torch time / rnnkit time (> 1: rnnkit is faster).

``--clock wall`` (default) times calls with their threads (torch's and rnnkit's
default counts). On a machine shared with other processes wall time mostly measures
the scheduler; ``--clock cpu`` runs both contenders on one thread
(``torch.set_num_threads(1)``, ``rnnkit.use_threads(1)``) and times the CPU time of
that thread, which measures each kernel's work per core and hardly depends on the load.

    .venv/bin/python benchmarks/lstm_kernel.py                # the whole grid
    .venv/bin/python benchmarks/lstm_kernel.py --H 256 --B 16  # one point
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import rnnkit
from rnnkit import _backend


def _time_block(fn, repeats: int, clock) -> list[float]:
    fn()  # warm: plans, allocator
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return times


def _contenders(H: int, B: int, T: int, training: bool):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(H, H)
    ours = rnnkit.LSTM(H, H)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, H, requires_grad=training)

    def run(m):
        if not training:
            with torch.inference_mode():
                m(x)
            return
        out, (h, c) = m(x)
        out.sum().backward()

    return (lambda: run(ours)), (lambda: run(ref))


def measure(H: int, B: int, T: int, training: bool, repeats: int, rounds: int, clock) -> tuple[float, float]:
    ours, ref = _contenders(H, B, T, training)
    t_ours, t_ref = [], []
    for _ in range(rounds):
        t_ours += _time_block(ours, repeats, clock)
        t_ref += _time_block(ref, repeats, clock)
    return statistics.median(t_ours), statistics.median(t_ref)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--H", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--B", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--mode", choices=["inference", "training", "both"], default="both")
    p.add_argument("--repeats", type=int, default=5, help="calls per block")
    p.add_argument("--rounds", type=int, default=3, help="alternating blocks per contender")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: default threads, wall time; cpu: one thread each, that thread's CPU time")
    args = p.parse_args()
    clock = time.perf_counter
    if args.clock == "cpu":
        torch.set_num_threads(1)
        clock = time.thread_time
    load = os.getloadavg()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, rnnkit ISA "
          f"{_backend.current_isa_name()}, torch threads {torch.get_num_threads()}, clock {args.clock}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    modes = ["inference", "training"] if args.mode == "both" else [args.mode]
    print("| mode | H | B | rnnkit ms | torch.nn ms | ratio torch/rnnkit |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        for H in args.H:
            for B in args.B:
                if args.clock == "cpu":
                    with rnnkit.use_threads(1):
                        ours, ref = measure(H, B, args.T, mode == "training", args.repeats, args.rounds, clock)
                else:
                    ours, ref = measure(H, B, args.T, mode == "training", args.repeats, args.rounds, clock)
                print(f"| {mode} | {H} | {B} | {ours * 1e3:.2f} | {ref * 1e3:.2f} | {ref / ours:.2f} |", flush=True)
    load = os.getloadavg()
    print(f"# load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
