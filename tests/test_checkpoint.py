"""Checkpoints that can be trusted: atomic writes, no unpickling, every kind of damage
caught with a one-line error, and `rnnkit train --resume` continuing exactly, even after
SIGKILL."""
import json
import os
import pickle
import signal
import struct

import pytest
import torch

from cli_support import (TINY, header_meta, model_weights, records, run_cli, spawn, train_tiny, wait_for_step,
                         write_corpus)

from rnnkit.training import checkpoint as C


def _rewrite_meta(src, dst, **changes):
    """Copy a checkpoint with metadata fields changed (checksum recomputed)."""
    tensors, meta = C.read_checkpoint(src)
    meta = {k: v for k, v in meta.items() if k not in ("format", "format_version", "rnnkit_version", "sha256")}
    meta.update(changes)
    C.save_checkpoint(dst, tensors, meta)


def test_round_trip_and_contents(run):
    tensors, meta = C.read_checkpoint(run / "checkpoint.safetensors")
    assert meta["kind"] == "train" and meta["task"] == "lm"
    assert meta["config"]["arch"] == "lstm" and meta["trainer"]["step"] == 10
    assert "vocab" in meta["task_state"]
    names = set(tensors)
    assert {"model.rnn.weight_ih_l0", "model.rnn.weight_hh_l0", "model.embed.weight", "model.head.weight"} <= names
    assert any(n.startswith("optimizer.") and n.endswith(".exp_avg") for n in names)
    assert tensors["rank.rng"].dtype == torch.uint8 and tensors["rank.rng"].shape[0] == 1
    assert "rank.carry.0" in names and "rank.carry.1" in names  # LSTM (h, c) carried across batches
    assert meta["trainer"]["position"]["chunk"] >= 0
    best_tensors, best_meta = C.read_checkpoint(run / "best.safetensors")
    assert best_meta["kind"] == "model" and not any(n.startswith("optimizer.") for n in best_tensors)


def test_loading_never_unpickles(run, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model = C.load(run)
    assert model.config["arch"] == "lstm"


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "x.safetensors"
    C.save_checkpoint(path, {"a": torch.ones(3)}, {"kind": "model", "task": "lm", "config": {}})
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(C.os, "replace", boom)
    with pytest.raises(OSError):
        C.save_checkpoint(path, {"a": torch.zeros(3)}, {"kind": "model", "task": "lm", "config": {}})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["x.safetensors"]  # no temporary file left


@pytest.mark.parametrize("damage, message", [
    ("truncate", "truncated"),
    ("flip", "corrupt (checksum mismatch)"),
    ("garbage", "not a safetensors file"),
    ("empty", "truncated or empty"),
    ("version", "format version 99"),
    ("arch", "weights do not match"),
    ("unknown_arch", "architecture 'transformer'"),
    ("task", "task 'tagging-v9'"),
    ("foreign", "not an rnnkit checkpoint"),
])
@pytest.mark.parametrize("command", ["evaluate", "sample"])
def test_damaged_checkpoints_are_refused_in_one_line(run, tmp_path, damage, message, command):
    src = run / "best.safetensors"
    bad = tmp_path / "bad.safetensors"
    data = src.read_bytes()
    if damage == "truncate":
        bad.write_bytes(data[:len(data) // 2])
    elif damage == "flip":
        b = bytearray(data)
        b[-5] ^= 0xFF
        bad.write_bytes(bytes(b))
    elif damage == "garbage":
        bad.write_bytes(struct.pack("<Q", 20) + b"this is not json at all" + b"\0" * 50)
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "version":
        tensors, meta = C.read_checkpoint(src)
        meta = {k: v for k, v in meta.items() if k not in ("format", "format_version", "rnnkit_version", "sha256")}
        from safetensors.torch import save
        md = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
        md.update(format=C.FORMAT, format_version="99")
        bad.write_bytes(save(tensors, metadata=md))
    elif damage == "arch":
        cfg = dict(C.read_checkpoint(src)[1]["config"], arch="gru")
        _rewrite_meta(src, bad, config=cfg)
    elif damage == "unknown_arch":
        cfg = dict(C.read_checkpoint(src)[1]["config"], arch="transformer")
        _rewrite_meta(src, bad, config=cfg)
    elif damage == "task":
        _rewrite_meta(src, bad, task="tagging-v9")
    elif damage == "foreign":
        from safetensors.torch import save
        bad.write_bytes(save({"w": torch.ones(2)}))
    rc, out, err = run_cli([command, bad])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(bad) in lines[0] and message in lines[0], lines[0]
    assert out == ""


def test_load_checks_expected_architecture(run):
    with pytest.raises(C.CheckpointError, match="holds a lstm model, expected gru"):
        C.load(run, arch="gru")


def _kill_and_resume(tmp_path, common, stop_at):
    proc = spawn(["train", "lm", *common, "--out", tmp_path / "killed"])
    seen = wait_for_step(proc, tmp_path / "killed", stop_at)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    step = header_meta(tmp_path / "killed" / "checkpoint.safetensors")["trainer"]["step"]
    assert seen <= step < int(common[common.index("--steps") + 1])  # killed mid-way
    # a kill may leave a torn temporary file (hidden, .tmp), never a torn checkpoint: the file
    # under the real name passes every check, its checksum included
    leftovers = [p for p in os.listdir(tmp_path / "killed") if p.endswith(".tmp")]
    assert all(p.startswith(".") for p in leftovers), leftovers
    C.read_checkpoint(tmp_path / "killed" / "checkpoint.safetensors")
    rc, out, err = run_cli(["train", "--resume", tmp_path / "killed"])
    assert rc == 0, err
    assert f"resuming at step {step}" in out
    rc, _, err = run_cli(["train", "lm", *common, "--out", tmp_path / "straight"])
    assert rc == 0, err


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    data = write_corpus(tmp_path / "data")
    # dropout exercises the saved RNG state; an odd save interval leaves a partial log window
    common = [*TINY, "--data", data, "--steps", "300", "--eval-every", "50", "--save-every", "7",
              "--dropout", "0.2", "--layers", "2", "--sample-length", "0"]
    _kill_and_resume(tmp_path, common, 30)
    a = model_weights(tmp_path / "killed" / "checkpoint.safetensors")
    b = model_weights(tmp_path / "straight" / "checkpoint.safetensors")
    assert a.keys() == b.keys()
    for k in b:
        assert torch.equal(a[k], b[k]), k
    # the optimiser state and the metrics log agree too
    ta, _ = C.read_checkpoint(tmp_path / "killed" / "checkpoint.safetensors")
    tb, _ = C.read_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")
    for k in tb:
        if k.startswith("optimizer."):
            assert torch.equal(ta[k], tb[k]), k
    assert records(tmp_path / "killed", "train") == records(tmp_path / "straight", "train")
    assert records(tmp_path / "killed", "valid") == records(tmp_path / "straight", "valid")


def test_resume_rules(tmp_path):
    rc, _, err, run_dir = train_tiny(tmp_path, "--steps", "10", "--eval-every", "10", "--sample-length", "0")
    assert rc == 0, err
    rc, out, err = run_cli(["train", "--resume", run_dir])
    assert rc == 0 and "already finished" in out
    rc, _, err = run_cli(["train", "lm", "--resume", run_dir, "--hidden", "64"])
    assert rc == 2 and "--hidden: cannot be changed when resuming" in err
    rc, out, err = run_cli(["train", "--resume", run_dir, "--steps", "15"])
    assert rc == 0, err
    assert header_meta(run_dir / "checkpoint.safetensors")["trainer"]["step"] == 15
    rc, _, err = run_cli(["train", "--resume", tmp_path / "nothing"])
    assert rc == 2 and "no checkpoint.safetensors" in err
