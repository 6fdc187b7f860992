"""`torchrun --nproc_per_node=2 -m rnnkit train ...` on localhost (gloo): the processes
learn, end with identical weights, average their metrics, and only rank 0 writes files."""
import json
import os
import subprocess
import sys

import pytest
import torch

from cli_support import TINY, model_weights, records, write_corpus

from rnnkit.training.checkpoint import read_checkpoint


def _torchrun(args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "rnnkit", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_processes_learn_and_agree(tmp_path):
    data = write_corpus(tmp_path / "data")
    run_dir = tmp_path / "ddp"
    r = _torchrun(["train", "lm", *TINY, "--data", data, "--out", run_dir, "--steps", "40",
                   "--eval-every", "20", "--sample-length", "20"])
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["ranks_max_abs_diff"] == 0.0           # DDP kept both replicas identical
    # it learned
    train = records(run_dir, "train")
    assert train[-1]["loss"] < train[0]["loss"]
    assert summary["valid"]["bpc"] < records(run_dir, "valid")[0]["bpc"] + 1e-9
    # rank 0 alone wrote: one record per logging step, one header line, one result line
    steps = [r["step"] for r in train]
    assert steps == sorted(set(steps))
    assert r.stdout.count("done (steps)") == 1
    assert sorted(p for p in os.listdir(run_dir) if not p.startswith(".")) == sorted(
        ["best.safetensors", "checkpoint.safetensors", "config.json", "loss.png", "metrics.csv",
         "metrics.jsonl", "summary.json"])
    # per-process state (RNG, carried LSTM state) of both ranks is in the checkpoint
    tensors, meta = read_checkpoint(run_dir / "checkpoint.safetensors")
    assert meta["trainer"]["world_size"] == 2
    assert tensors["rank.rng"].shape[0] == 2 and tensors["rank.carry.0"].shape[0] == 2
    assert not torch.equal(tensors["rank.carry.0"][0], tensors["rank.carry.0"][1])  # different shards
    # evaluation in one process gives the metric the two processes averaged
    from cli_support import run_cli
    rc, out, err = run_cli(["evaluate", run_dir / "checkpoint.safetensors", "--split", "valid", "--json"])
    assert rc == 0, err
    assert json.loads(out)["bpc"] == pytest.approx(summary["valid"]["bpc"], rel=1e-4)


def test_resume_needs_the_same_number_of_processes(tmp_path):
    data = write_corpus(tmp_path / "data")
    run_dir = tmp_path / "ddp"
    r = _torchrun(["train", "lm", *TINY, "--data", data, "--out", run_dir, "--steps", "6",
                   "--eval-every", "6", "--sample-length", "0"])
    assert r.returncode == 0, r.stderr[-3000:]
    from cli_support import run_cli
    rc, out, err = run_cli(["train", "--resume", run_dir, "--steps", "8"])
    assert rc == 2 and "2 processes" in err and "--nproc_per_node" in err
