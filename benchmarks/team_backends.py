"""The recurrence's thread team on torch's OpenMP workers against std::threads per call
(rnnkit._backend.set_team_backend), with torch.nn beside them, in one process: the
contenders take turns call by call (in an order where each follows each equally often), so a change of the machine's load
reaches all alike. Per contender and setting: the median wall time of a call and the
process CPU time per call (every thread's, spinning included), and torch.nn's time over
rnnkit's (> 1: rnnkit faster).

    .venv/bin/python benchmarks/team_backends.py [--threads 2] [--hidden 64,256] [--batch 16]
        [--archs lstm,gru] [--mode inference,training] [--calls 30] [--seq-len 100]
"""
import argparse
import os
import resource
import statistics
import time

import torch

import rnnkit
from rnnkit import _backend


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def balanced_order(n: int, length: int) -> list:
    """A sequence of the indices 0..n-1, each about equally often, in which every one
    follows every other about equally often (and never itself): a contender's time must
    not depend on who ran before (torch's OpenMP workers spin for a while after a torch op)."""
    seq, pairs = [0], {}
    while len(seq) < length:
        prev = seq[-1]
        count = {i: seq.count(i) for i in range(n)}
        nxt = min((i for i in range(n) if i != prev), key=lambda i: (pairs.get((prev, i), 0), count[i], i))
        pairs[prev, nxt] = pairs.get((prev, nxt), 0) + 1
        seq.append(nxt)
    return seq


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hidden", default="64,256")
    p.add_argument("--batch", default="16")
    p.add_argument("--archs", default="lstm,gru")
    p.add_argument("--mode", default="inference,training")
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--seq-len", type=int, default=100)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    teams = _backend.team_backends()
    print(f"# team backends: {teams}; torch {torch.__version__}, {a.threads} threads, T = {a.seq_len}, "
          f"{a.calls} calls each; load average before: {open('/proc/loadavg').read().split()[:3]}\n")
    print("| arch | H | B | mode | " + " | ".join(f"rnnkit {t} ms (CPU ms)" for t in teams)
          + " | torch.nn ms (CPU ms) | " + " | ".join(f"torch.nn / {t}" for t in teams) + " |")
    print("|---" * (5 + 2 * len(teams)) + "|")
    for arch in a.archs.split(","):
        for H in (int(h) for h in a.hidden.split(",")):
            for B in (int(b) for b in a.batch.split(",")):
                torch.manual_seed(0)
                ref = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[arch](H, H)
                ours = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[arch](H, H)
                ours.load_state_dict(ref.state_dict())
                x = torch.randn(a.seq_len, B, H)
                for mode in a.mode.split(","):
                    def call(m):
                        if mode == "inference":
                            with torch.inference_mode():
                                m(x)
                            return
                        xg = x.clone().requires_grad_()
                        out, _ = m(xg)
                        torch.autograd.grad(out.sum(), [xg, *m.parameters()])

                    contenders = [(t, ours) for t in teams] + [("torch.nn", ref)]
                    wall = {n: [] for n, _ in contenders}
                    cpu = {n: [] for n, _ in contenders}
                    for n, m in contenders:  # warm-up
                        if n in teams:
                            _backend.set_team_backend(n)
                        call(m)
                    for i in balanced_order(len(contenders), a.calls * len(contenders)):
                        for n, m in [contenders[i]]:
                            if n in teams:
                                _backend.set_team_backend(n)
                            c0, w0 = cpu_seconds(), time.perf_counter()
                            call(m)
                            wall[n].append(time.perf_counter() - w0)
                            cpu[n].append(cpu_seconds() - c0)
                    med = {n: statistics.median(v) * 1e3 for n, v in wall.items()}
                    cmed = {n: statistics.median(v) * 1e3 for n, v in cpu.items()}
                    cells = [f"{med[n]:.2f} ({cmed[n]:.1f})" for n, _ in contenders]
                    ratios = [f"{med['torch.nn'] / med[t]:.2f}" for t in teams]
                    print(f"| {arch} | {H} | {B} | {mode} | " + " | ".join(cells + ratios) + " |", flush=True)
    _backend.set_team_backend(teams[0])
    print(f"\nload average after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
