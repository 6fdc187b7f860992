"""rnnkit's LSTM against torch.nn.LSTM on the same character language model.

Both runs use the same configuration and seed, so they start from identical weights
(rnnkit's modules initialise exactly as torch.nn's) and see identical batches; only the
recurrent layer's implementation differs (``--backend rnnkit | torch``). Prints a
Markdown table: validation bits per character on the whole validation split, training
time (optimiser steps only), throughput, and wall time including data loading and
evaluation, for every run; then a paired step timing (the two models stepping
alternately), which is robust to load from other processes.

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


def paired_step_times(cfg, n):
    """Median seconds of one full training step (forward, loss, backward, clip, AdamW) for
    each backend, the two models stepping alternately on the same batches, so that load
    from other processes hits both alike."""
    import torch.nn.functional as F

    from rnnkit.tasks.lm import CharLM

    torch.set_num_threads(cfg["threads"] or os.cpu_count())
    vocab = [""] + [chr(i) for i in range(32, 127)]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, len(vocab), (cfg["bptt"], cfg["batch_size"]), generator=g)
    y = torch.randint(1, len(vocab), (cfg["bptt"], cfg["batch_size"]), generator=g)
    runs = {}
    for backend in ("rnnkit", "torch"):
        torch.manual_seed(0)
        model = CharLM(vocab, dict(cfg, backend=backend))
        runs[backend] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    times = {b: [] for b in runs}
    for i in range(n + 4):
        for backend in (("rnnkit", "torch") if i % 2 == 0 else ("torch", "rnnkit")):
            model, opt = runs[backend]
            t0 = time.perf_counter()
            logits, _ = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if i >= 4:  # warm-up
                times[backend].append(time.perf_counter() - t0)
    return {b: sorted(t)[len(t) // 2] for b, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bptt", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs per backend, alternating the order")
    p.add_argument("--paired-steps", type=int, default=40, help="alternating steps for the paired timing")
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

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])

    paired = paired_step_times(base, args.paired_steps)

    threads = results["rnnkit"][0]["threads"]
    print(f"# rnnkit {rnnkit.__version__} vs torch.nn {torch.__version__}: character LSTM language model")
    print(f"# {_cpu_model()}, {os.cpu_count()} cores, {threads} torch thread(s), native ISA "
          f"{rnnkit.current_isa_name()}, python {platform.python_version()}")
    print(f"# lstm hidden {args.hidden}, embed {base['embed']}, batch {args.batch_size} x bptt {args.bptt}, "
          f"{args.steps} AdamW steps (lr {base['lr']}, cosine), seed {args.seed}, corpus stdlib, "
          f"{args.repeats} run(s) per backend in alternating order")
    print()
    print("| backend | run | valid bpc | training time (s) | throughput (chars/s) | wall time incl. eval (s) |")
    print("|---|---|---|---|---|---|")
    for backend in ("rnnkit", "torch"):
        for r, s in enumerate(results[backend]):
            print(f"| {'rnnkit.LSTM' if backend == 'rnnkit' else 'torch.nn.LSTM'} | {r} | {s['valid']['bpc']:.4f} | "
                  f"{s['train_time_s']:.1f} | {s['throughput']:,.0f} | {s['wall_s']:.1f} |")
    print()
    tr = {b: median([s["train_time_s"] for s in results[b]]) for b in results}
    print(f"median training time, rnnkit / torch.nn: {tr['rnnkit'] / tr['torch']:.2f}")
    print(f"paired step time ({args.paired_steps} alternating training steps of the two models on the same "
          f"batches, medians): rnnkit {paired['rnnkit'] * 1e3:.1f} ms, torch.nn {paired['torch'] * 1e3:.1f} ms, "
          f"ratio {paired['rnnkit'] / paired['torch']:.2f}")
    results["paired_step_s"] = paired
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
