"""Run folders (issue 12, "data loss"): --overwrite replaces only a folder that rnnkit
wrote, and only once the new run has saved its first checkpoint; a run folder is locked
while a process trains in it; what a killed run leaves behind is detected and cleaned up;
a run that diverges ends in one line and keeps (or puts back) what was saved."""
import hashlib
import json
import os
import signal
import time

import pytest

from cli_support import TINY, run_cli, spawn, train_tiny, wait_for_step, write_corpus
from cli_support import one_line_error as _one_line


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _asides(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.replaced-"))


@pytest.fixture
def done_run(tmp_path):
    rc, _, err, run_dir = train_tiny(tmp_path, "--steps", "10", "--eval-every", "10", "--sample-length", "0")
    assert rc == 0, err
    return run_dir


def test_overwrite_never_deletes_a_folder_rnnkit_did_not_write(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("work")
    rc, out, err, _ = train_tiny(tmp_path, "--overwrite", name="victim")
    _one_line(rc, err, "--out", victim, "thesis.tex", "rnnkit did not write")
    assert (victim / "thesis.tex").read_text() == "work"
    assert sorted(os.listdir(victim)) == ["thesis.tex"]


def test_overwrite_never_deletes_a_file_a_user_put_in_a_run_folder(done_run, tmp_path):
    (done_run / "notes.md").write_text("my notes")
    before = _digest(done_run)
    rc, out, err, _ = train_tiny(tmp_path, "--overwrite")
    _one_line(rc, err, "--out", "notes.md")
    assert _digest(done_run) == before


def test_a_failing_new_run_leaves_the_old_run_as_it_was(done_run, tmp_path):
    before = _digest(done_run)
    rc, out, err, _ = train_tiny(tmp_path, "--overwrite", "--lr", "1e38")
    _one_line(rc, err, "--lr", "inf/nan", "nothing was saved")
    after = _digest(done_run)
    before.pop(".lock", None), after.pop(".lock", None)
    assert after == before
    assert _asides(done_run) == []


def test_overwrite_replaces_a_run_folder_after_the_first_save(done_run, tmp_path):
    old = json.loads((done_run / "config.json").read_text())
    rc, out, err, _ = train_tiny(tmp_path, "--overwrite", "--steps", "6", "--eval-every", "6", "--seed", "3")
    assert rc == 0, err
    assert json.loads((done_run / "config.json").read_text())["seed"] == 3 != old["seed"]
    assert _asides(done_run) == []


def test_a_killed_overwrite_keeps_the_old_run_and_says_where(done_run, tmp_path):
    old_ckpt = (done_run / "checkpoint.safetensors").read_bytes()
    data = write_corpus(tmp_path / "data")
    proc = spawn(["train", "lm", *TINY, "--data", data, "--out", done_run, "--overwrite", "--steps", "100000",
                  "--eval-every", "50000", "--save-every", "50000", "--log-every", "1"])
    try:
        t0 = time.time()
        # the old run moved aside, the new one logging into the folder, not yet saved
        while not (_asides(done_run) and (done_run / "metrics.jsonl").exists()
                   and (done_run / "metrics.jsonl").stat().st_size):
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() - t0 < 120
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    left = _asides(done_run)
    assert len(left) == 1
    assert (done_run.parent / left[0] / "checkpoint.safetensors").read_bytes() == old_ckpt
    rc, out, err, _ = train_tiny(tmp_path, "--overwrite")
    _one_line(rc, err, "--out", left[0], "interrupted")
    rc, out, err = run_cli(["train", "--resume", done_run])
    _one_line(rc, err, "--resume", left[0], "interrupted")


def test_two_resumes_of_one_run_folder_cannot_run_at_once(done_run):
    proc = spawn(["train", "--resume", done_run, "--steps", "100000", "--threads", "1", "--progress", "off",
                  "--save-every", "10", "--eval-every", "50000"])
    try:
        wait_for_step(proc, done_run, 20)
        rc, out, err = run_cli(["train", "--resume", done_run, "--steps", "100000", "--progress", "off"])
        _one_line(rc, err, "--resume", done_run, "in use by another rnnkit process", f"pid {proc.pid}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)


def test_a_dead_process_lock_and_its_temporary_files_are_cleaned_up(done_run):
    (done_run / ".lock").write_text("999999999\n")          # a process that no longer exists
    tmp = done_run / ".checkpoint.safetensors.k1ll3d.tmp"    # what SIGKILL during a write leaves
    tmp.write_bytes(b"\0" * 100)
    rc, out, err = run_cli(["train", "--resume", done_run, "--steps", "12", "--progress", "off",
                            "--tensorboard", "off"])
    assert rc == 0, err
    assert not tmp.exists()
    steps = [json.loads(line)["step"] for line in (done_run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == sorted(set(steps)), "metrics.jsonl holds duplicated records"


def test_a_lock_held_by_a_killed_process_is_stale(done_run):
    proc = spawn(["train", "--resume", done_run, "--steps", "100000", "--threads", "1", "--progress", "off",
                  "--save-every", "10", "--eval-every", "50000"])
    wait_for_step(proc, done_run, 20)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert (done_run / ".lock").read_text().strip() == str(proc.pid)
    rc, out, err = run_cli(["train", "--resume", done_run, "--steps", "30", "--progress", "off",
                            "--tensorboard", "off"])
    assert rc == 0, err


def test_out_under_a_file_or_in_proc_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    data = write_corpus(tmp_path / "data")
    rc, out, err = run_cli(["train", "lm", *TINY, "--data", data, "--out", tmp_path / "afile" / "run"])
    _one_line(rc, err, "--out", "afile", "not a folder")
    rc, out, err = run_cli(["train", "lm", *TINY, "--data", data, "--out", "/proc/rnnkit-run"])
    _one_line(rc, err, "--out", "/proc/rnnkit-run")


def test_a_diverged_run_ends_in_one_line_and_leaves_nothing(tmp_path):
    rc, out, err, run_dir = train_tiny(tmp_path, "--lr", "1e38")
    _one_line(rc, err, "--lr", "the loss became inf/nan")
    assert not run_dir.exists()
