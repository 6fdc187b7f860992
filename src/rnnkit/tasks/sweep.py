"""The long-memory comparison: ``python -m rnnkit.tasks.sweep adding|copy``.

Trains every architecture of ``--archs`` (default RNN, GRU, LSTM) at every length of
``--lengths`` (default 50, 100, 200) on the adding problem or the copy-memory task of
:mod:`rnnkit.tasks.memory`, all with the same budget (steps, batch, hidden units,
learning rate, seed), prints one line per run and which of them learned, and writes
``OUT/TASK-results.json``::

    python -m rnnkit.tasks.sweep adding --lengths 50 100 200 --steps 1500 --hidden 64 --lr 3e-3

A run has learned the adding problem when its validation MSE is below a tenth of the
0.167 of always answering 1, and the copy task when it recalls 90 % of the symbols.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..training.models import ARCHS, arch_option
from ..errors import UsageError
from .memory import AddingTask, CopyTask


def sweep(task: str, lengths: List[int], archs: List[str], options: Dict[str, Any], out_dir: Path,
          out=None) -> List[Dict[str, Any]]:
    """Train every (arch, length) with the same options; returns one row per run."""
    out = out or sys.stdout
    from ..training.engine import train
    from ..training.options import DEFAULTS

    import io

    cls = AddingTask if task == "adding" else CopyTask
    options = dict(options)
    quiet = options.pop("quiet", False)
    rows = []
    for T in lengths:
        for arch in archs:
            config = {"task": task, **DEFAULTS, **cls.defaults, **options, "arch": arch, "length": T,
                      "out": str(out_dir / f"{task}-{arch}-T{T}"), "overwrite": True, "progress": "off",
                      "tensorboard": "off"}
            t0 = time.time()
            summary = train(config, out=io.StringIO() if quiet else out)
            res = summary["valid"]
            probe = cls(config)
            rows.append({"task": task, "arch": arch, "length": T, "steps": summary["step"],
                         "parameters": summary["parameters"], "train_time_s": summary["train_time_s"],
                         "wall_s": time.time() - t0, **{k: v for k, v in res.items() if k != "items"},
                         "learned": probe.learned(res)})
            print_table(rows[-1:], out, header=len(rows) == 1)
    return rows


def print_table(rows: List[Dict[str, Any]], out=None, header: bool = True) -> None:
    out = out or sys.stdout
    if not rows:
        return
    adding = rows[0]["task"] == "adding"
    if header:
        print(f"{'task':<7} {'arch':<5} {'T':>5} {'steps':>6} {'params':>8} {'train s':>8} "
              + (f"{'valid mse':>10} {'baseline':>9}" if adding else f"{'accuracy':>9} {'loss':>8} {'baseline':>9}")
              + "  learned", file=out)
    for r in rows:
        print(f"{r['task']:<7} {r['arch']:<5} {r['length']:>5} {r['steps']:>6} {r['parameters']:>8,} "
              f"{r['train_time_s']:>8.0f} "
              + (f"{r['mse']:>10.4f} {r['baseline_mse']:>9.4f}" if adding
                 else f"{r['accuracy']:>9.3f} {r['loss']:>8.4f} {r['baseline_loss']:>9.4f}")
              + f"  {'yes' if r['learned'] else 'no'}", file=out, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnnkit.tasks.sweep",
                                description="Train RNN, GRU and LSTM on a long-memory task at several "
                                            "lengths with the same budget; print which of them learn.")
    p.add_argument("task", choices=("adding", "copy"))
    p.add_argument("--lengths", type=int, nargs="+", default=[50, 100, 200], metavar="T")
    p.add_argument("--archs", nargs="+", default=["rnn", "gru", "lstm"], type=arch_option, choices=ARCHS,
                   help="networks to compare (rnnkit.networks)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="rnnkit", choices=("rnnkit", "torch"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/memory", help="folder of the runs and results.json")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    a = p.parse_args(argv)
    options = dict(steps=a.steps, hidden=a.hidden, batch_size=a.batch_size, lr=a.lr, eval_every=a.eval_every,
                   save_every=a.eval_every, threads=a.threads, backend=a.backend, seed=a.seed, quiet=a.quiet)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        rows = sweep(a.task, a.lengths, a.archs, options, out_dir)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (out_dir / f"{a.task}-results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{a.task}: learned = " + ("validation MSE < 0.0167 (a tenth of the 0.167 of always answering 1)"
                                       if a.task == "adding" else "copy accuracy >= 0.9"))
    print_table(rows)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
