"""The fixed cost of one module call (issue 14, item 1), measured in one run: an LSTM with
1 layer, H = I = 8, T = 1, B = 1 under torch.inference_mode, rnnkit (the one-call path of
rnnkit._stack) against onnxruntime's session.run of the same network (torch.nn.LSTM with
the same weights, torch.onnx.export(dynamo=False) as rnnkit.bench does) and torch.nn.LSTM;
then the first call of a freshly constructed module, in this process and in a new one.

Contenders run in interleaved blocks, each on one thread (onnxruntime with one intra-op
thread has no worker to spin and take the core from the next); each figure is the best
block's mean per call.

    .venv/bin/python benchmarks/fixed_cost.py [--blocks 15] [--calls 2000]
"""
import argparse
import os
import platform
import subprocess
import sys
import time

import torch

import rnnkit
from rnnkit import bench

FIRST_CALL = r'''
import time, torch
t0 = time.perf_counter()
import rnnkit
t1 = time.perf_counter()
m = rnnkit.LSTM(8, 8).eval()
x = torch.randn(1, 1, 8)
t2, c2 = time.perf_counter(), time.thread_time()
with torch.inference_mode():
    m(x)
t3, c3 = time.perf_counter(), time.thread_time()
with torch.inference_mode():
    m(x)
t4 = time.perf_counter()
print(f"{(t1 - t0) * 1e3:.1f} {(t3 - t2) * 1e6:.0f} {(c3 - c2) * 1e6:.0f} {(t4 - t3) * 1e6:.1f}")
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    H, T, B = 8, 1, 1
    case = bench.Case("inference", "lstm", H, B, T)
    state = bench.source_state(case)
    ours = rnnkit.LSTM(H, H).eval()
    ours.load_state_dict(state)
    peer = torch.nn.LSTM(H, H).eval()
    peer.load_state_dict(state)
    session, exporter = bench._export_and_open(case, state, 1, dynamo=False)
    name_in, name_out = session.get_inputs()[0].name, session.get_outputs()[0].name
    x = torch.randn(T, B, H)
    x_np = x.numpy()
    h0 = (torch.zeros(1, B, H), torch.zeros(1, B, H))
    with torch.inference_mode():
        ort_out = torch.from_numpy(session.run([name_out], {name_in: x_np})[0]).reshape(T, B, H)
        assert torch.allclose(ours(x)[0], ort_out, atol=1e-5), "onnxruntime and rnnkit disagree"
        calls = {
            "rnnkit lstm(x)": lambda: ours(x),
            "rnnkit lstm(x, (h0, c0))": lambda: ours(x, h0),
            "torch.nn lstm(x)": lambda: peer(x),
            "onnxruntime session.run": lambda: session.run([name_out], {name_in: x_np}),
        }
        best = {k: float("inf") for k in calls}
        cpu = {k: float("inf") for k in calls}
        for _ in range(args.blocks):
            for name, fn in calls.items():
                fn()
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                for _ in range(args.calls):
                    fn()
                cpu[name] = min(cpu[name], (time.thread_time_ns() - c0) / args.calls / 1e3)
                best[name] = min(best[name], (time.perf_counter_ns() - t0) / args.calls / 1e3)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, rnnkit {rnnkit.__version__}, "
          f"ISA {rnnkit.current_isa_name()}, onnx via {exporter}; load average {' '.join(load)}")
    print(f"# LSTM 1 layer, I = H = {H}, T = {T}, B = {B}, inference_mode, 1 thread; best of {args.blocks} blocks "
          f"x {args.calls} calls")
    ort, ort_cpu = best["onnxruntime session.run"], cpu["onnxruntime session.run"]
    print("# wall: elapsed time per call; CPU: this thread's CPU time per call (what a loaded machine distorts less)")
    print(f"{'call':32s} {'wall us':>8s} {'ORT / this':>11s} {'CPU us':>8s} {'ORT / this':>11s}")
    for name, us in best.items():
        print(f"{name:32s} {us:8.2f} {ort / us:10.2f}x {cpu[name]:8.2f} {ort_cpu / cpu[name]:10.2f}x")
    fresh = []
    for _ in range(3):
        m = rnnkit.LSTM(H, H).eval()
        t0 = time.perf_counter()
        with torch.inference_mode():
            m(x)
        fresh.append((time.perf_counter() - t0) * 1e6)
    print(f"first call of a fresh module, in this process: {', '.join(f'{v:.0f}' for v in fresh)} us")
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, text=True, check=True)
        imp, first, first_cpu, second = r.stdout.split()
        print(f"in a new process: import rnnkit {imp} ms, first call {first} us (CPU {first_cpu} us), "
              f"second call {second} us")


if __name__ == "__main__":
    main()
