"""Helpers of the command-line tests: a small text corpus, running `rnnkit` in-process or
as a child process, and reading checkpoints."""
from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from rnnkit.cli import main

# Small real trainings: seconds each, one thread, no progress bar, no TensorBoard.
TINY = ["--preset", "tiny", "--threads", "1", "--progress", "off", "--tensorboard", "off"]
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def write_corpus(folder: Path, name: str = "corpus.txt") -> Path:
    """About 33k characters of real Python (two standard-library modules) in one file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text((STDLIB / "textwrap.py").read_text("utf-8") + (STDLIB / "shlex.py").read_text("utf-8"),
                    encoding="utf-8")
    return path


def run_cli(args: List[str]) -> Tuple[int, str, str]:
    """(exit status, stdout, stderr) of `rnnkit ARGS` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(map(str, args)), out=out)
        except SystemExit as e:  # argparse: --help, usage errors
            rc = e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def train_tiny(tmp_path: Path, *extra, name: str = "run", data: Path = None) -> Tuple[int, str, str, Path]:
    data = data or write_corpus(tmp_path / "data")
    run_dir = tmp_path / name
    rc, out, err = run_cli(["train", "lm", *TINY, "--data", data, "--out", run_dir, *extra])
    return rc, out, err, run_dir


def spawn(args: List[str], **kw) -> subprocess.Popen:
    """`python -m rnnkit ARGS` as a child process (own process group)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "rnnkit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True, **kw)


def header_meta(path: Path) -> Dict:
    """The metadata of a safetensors file, JSON fields decoded (no tensors read)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = json.loads(f.read(n)).get("__metadata__", {})
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except ValueError:
            meta[k] = v
    return meta


def checkpoint_step(run_dir: Path) -> int:
    try:
        return header_meta(run_dir / "checkpoint.safetensors")["trainer"]["step"]
    except (OSError, KeyError, ValueError, struct.error):
        return -1


def wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 120.0) -> int:
    """Poll until the run's checkpoint reaches ``step``; returns the step seen."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        s = checkpoint_step(run_dir)
        if s >= step:
            return s
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.returncode}\n{proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint at step {step} after {timeout}s")


def model_weights(path: Path) -> Dict[str, torch.Tensor]:
    from rnnkit.training.checkpoint import prefixed, read_checkpoint

    tensors, _ = read_checkpoint(path)
    return prefixed(tensors, "model")


def records(run_dir: Path, split: str, drop=("time", "throughput")) -> List[Dict]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["split"] == split:
            out.append({k: v for k, v in r.items() if k not in drop})
    return out


def one_line_error(rc: int, err: str, *needles) -> None:
    """A user error: exit status 2, one line on stderr (no traceback) containing every needle."""
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
