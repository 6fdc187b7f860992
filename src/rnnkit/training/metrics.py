"""A run's metrics: ``metrics.jsonl`` (one record a line), ``metrics.csv``, PNG curves and,
when the ``tensorboard`` package is installed, TensorBoard event files.

Records are dicts with ``step`` and ``split`` ("train" or "valid") and numbers::

    {"step": 200, "split": "train", "loss": 1.52, "bpc": 2.19, "lr": 0.002,
     "grad_norm": 0.83, "clipped": 0.1, "throughput": 51234.0, "time": 61.2}
    {"step": 200, "split": "valid", "loss": 1.49, "bpc": 2.15, "items": 50000}
    {"step": 1163, "split": "valid_final", ...}     the whole validation split, at the end

The JSONL file is the source of truth; on resume it is cut back to the byte offset
stored in the checkpoint, so a resumed run's log equals an uninterrupted one's.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Dict, List, Optional

from .checkpoint import write_atomic

JSONL, CSV, PNG = "metrics.jsonl", "metrics.csv", "loss.png"


class MetricsLog:
    """Append-only JSONL log of one run folder (only the main process writes)."""

    def __init__(self, run_dir: Path, truncate_at: Optional[int] = None, tensorboard: str = "auto"):
        self.path = Path(run_dir) / JSONL
        if truncate_at is not None and self.path.exists():
            with open(self.path, "r+b") as f:
                f.truncate(truncate_at)
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard != "off":
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except Exception:  # tensorboard not installed
                if tensorboard == "on":
                    raise
                self._tb = None

    def write(self, record: Dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{record['split']}/{key}", value, record["step"])

    def offset(self) -> int:
        """Bytes written so far (stored in checkpoints)."""
        self._file.flush()
        return os.path.getsize(self.path)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_records(run_dir: Path) -> List[Dict]:
    path = Path(run_dir) / JSONL
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_csv(run_dir: Path) -> None:
    """metrics.csv: the JSONL records as one table (empty cells where a split lacks a column)."""
    records = read_records(run_dir)
    columns: List[str] = []
    for r in records:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    write_atomic(Path(run_dir) / CSV, buf.getvalue().encode())


def plot(run_dir: Path, metric: str, title: str = "") -> Optional[Path]:
    """loss.png: training and validation ``metric`` against step, learning rate and
    gradient norm below (None when matplotlib is missing or there is nothing to plot)."""
    records = read_records(run_dir)
    train = [r for r in records if r["split"] == "train" and metric in r]
    valid = [r for r in records if r["split"] == "valid" and metric in r]
    if not train and not valid:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    fig, (ax, ax_lr, ax_g) = plt.subplots(3, 1, figsize=(7, 7), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1, 1]})
    if train:
        ax.plot([r["step"] for r in train], [r[metric] for r in train], label="train", lw=1)
    if valid:
        ax.plot([r["step"] for r in valid], [r[metric] for r in valid], "o-", label="valid", lw=1.5)
    final = [r for r in records if r["split"] == "valid_final" and metric in r]
    if final:
        ax.plot([final[-1]["step"]], [final[-1][metric]], "*", ms=14, color="tab:red",
                label=f"valid, whole split: {final[-1][metric]:.3f}")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per step")
    ax.grid(alpha=0.3)
    ax.legend()
    lr = [r for r in train if "lr" in r]
    ax_lr.plot([r["step"] for r in lr], [r["lr"] for r in lr], color="tab:green", lw=1)
    ax_lr.set_ylabel("lr")
    ax_lr.grid(alpha=0.3)
    gn = [r for r in train if "grad_norm" in r]
    ax_g.plot([r["step"] for r in gn], [r["grad_norm"] for r in gn], color="tab:red", lw=1,
              label="grad norm (before clipping)")
    ax_g.set_ylabel("grad norm")
    ax_g.set_xlabel("step")
    ax_g.grid(alpha=0.3)
    ax_g.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    out = Path(run_dir) / PNG
    write_atomic(out, buf.getvalue())
    return out
