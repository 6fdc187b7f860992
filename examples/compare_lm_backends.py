"""rnnkit's LSTM against torch.nn.LSTM on the same character language model.

Both runs use the same configuration and seed, so they start from identical weights
(rnnkit's modules initialise exactly as torch.nn's) and see identical batches; only the
recurrent layer's implementation differs (``--backend rnnkit | torch``). Prints a
Markdown table: validation bits per character on the whole validation split, training
time (optimiser steps only), throughput, and wall time including data loading and
evaluation.

    python examples/compare_lm_backends.py --steps 600 --threads 2
"""
import argparse
import json
import os
import platform
import sys
import time

import torch

import rnnkit
from rnnkit.cli import _cpu_model
from rnnkit.training.engine import train
from rnnkit.training.options import DEFAULTS
from rnnkit.training.task import get_task


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bptt", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs per backend, alternating the order")
    p.add_argument("--out", default="runs/compare")
    args = p.parse_args(argv)

    cls = get_task("lm")
    base = {"task": "lm", **DEFAULTS, **cls.defaults, **cls.presets["demo"]}
    base.update(steps=args.steps, hidden=args.hidden, batch_size=args.batch_size, bptt=args.bptt,
                threads=args.threads, seed=args.seed, max_time=0.0, progress="off", tensorboard="off",
                sample_length=0, eval_every=max(1, args.steps // 3), save_every=args.steps, overwrite=True)
    results = {"rnnkit": [], "torch": []}
    for r in range(args.repeats):
        order = ("rnnkit", "torch") if r % 2 == 0 else ("torch", "rnnkit")
        for backend in order:
            cfg = dict(base, backend=backend, out=os.path.join(args.out, f"{backend}-{r}"))
            t0 = time.perf_counter()
            s = train(cfg, out=open(os.devnull, "w"))
            s["wall_s"] = time.perf_counter() - t0
            results[backend].append(s)
            print(f"  {backend:6s} run {r}: valid bpc {s['valid']['bpc']:.4f}, {s['train_time_s']:.1f} s "
                  f"training, {s['throughput']:,.0f} chars/s", file=sys.stderr, flush=True)

    def mean(xs):
        return sum(xs) / len(xs)

    threads = results["rnnkit"][0]["threads"]
    print(f"# rnnkit {rnnkit.__version__} vs torch.nn {torch.__version__}: character LSTM language model")
    print(f"# {_cpu_model()}, {os.cpu_count()} cores, {threads} torch thread(s), native ISA "
          f"{rnnkit.current_isa_name()}, python {platform.python_version()}")
    print(f"# lstm hidden {args.hidden}, embed {base['embed']}, batch {args.batch_size} x bptt {args.bptt}, "
          f"{args.steps} AdamW steps (lr {base['lr']}, cosine), seed {args.seed}, corpus stdlib; "
          f"mean of {args.repeats} run(s) per backend")
    print()
    print("| backend | valid bpc | training time (s) | throughput (chars/s) | wall time incl. eval (s) |")
    print("|---|---|---|---|---|")
    for backend in ("rnnkit", "torch"):
        rs = results[backend]
        print(f"| {'rnnkit.LSTM' if backend == 'rnnkit' else 'torch.nn.LSTM'} | "
              f"{mean([s['valid']['bpc'] for s in rs]):.4f} | {mean([s['train_time_s'] for s in rs]):.1f} | "
              f"{mean([s['throughput'] for s in rs]):,.0f} | {mean([s['wall_s'] for s in rs]):.1f} |")
    speed = mean([s["throughput"] for s in results["rnnkit"]]) / mean([s["throughput"] for s in results["torch"]])
    print()
    print(f"rnnkit / torch.nn training throughput: {speed:.2f}x")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
