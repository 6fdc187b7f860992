"""Bad input: one line on stderr naming the file or option and what was expected, a
non-zero exit, and no run folder or partial file left behind."""
import os

import pytest

from cli_support import TINY, run_cli, train_tiny, write_corpus


def _check_one_line(rc, out, err, *needles):
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert str(n) in lines[0], lines[0]
    assert "Traceback" not in err


def _train(tmp_path, *args):
    out_dir = tmp_path / "out"
    rc, out, err = run_cli(["train", "lm", *TINY, "--out", out_dir, *args])
    assert not out_dir.exists(), "a run folder was left behind"
    return rc, out, err


def test_missing_data_path(tmp_path):
    rc, out, err = _train(tmp_path, "--data", tmp_path / "nope.txt")
    _check_one_line(rc, out, err, "--data", tmp_path / "nope.txt", "no such file")


def test_empty_data_file(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    rc, out, err = _train(tmp_path, "--data", tmp_path / "empty.txt")
    _check_one_line(rc, out, err, "--data", "empty.txt", "empty", "expected UTF-8 text")


def test_empty_folder(tmp_path):
    (tmp_path / "d").mkdir()
    rc, out, err = _train(tmp_path, "--data", tmp_path / "d")
    _check_one_line(rc, out, err, "--data", tmp_path / "d", "no files")


def test_binary_file(tmp_path):
    good = write_corpus(tmp_path)
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 40)
    rc, out, err = _train(tmp_path, "--data", good, tmp_path / "blob.bin")
    _check_one_line(rc, out, err, "blob.bin", "binary", "expected UTF-8 text")


def test_undecodable_file(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1") * 500)
    rc, out, err = _train(tmp_path, "--data", tmp_path / "latin1.txt")
    _check_one_line(rc, out, err, "latin1.txt", "not UTF-8", "offset 3")


def test_too_little_text_for_the_batch(tmp_path):
    (tmp_path / "short.txt").write_text("hello world\n" * 5)
    rc, out, err = _train(tmp_path, "--data", tmp_path / "short.txt")
    _check_one_line(rc, out, err, "--batch-size", "--bptt", "needs at least")


@pytest.mark.parametrize("args, needles", [
    (["--arch", "transformer"], ["--arch", "expected one of", "lstm", "gru-rb", "'transformer'"]),
    (["--optimizer", "adam9"], ["--optimizer", "invalid choice"]),
    (["--hidden", "0"], ["--hidden", "expected an integer >= 1"]),
    (["--dropout", "1.5"], ["--dropout", "[0, 1)"]),
    (["--lr", "fast"], ["--lr", "expected a number"]),
    (["--bidirectional"], ["--bidirectional"]),            # a language model must not see the future
    (["--preset", "huge"], ["--preset", "invalid choice"]),
    (["--arch", "jordan", "--backend", "torch"], ["--backend torch", "Jordan"]),
    (["--arch", "gru", "--gru-form", "before", "--backend", "torch"], ["--backend torch", "reset before", "gru-rb"]),
    (["--arch", "gru-rb", "--backend", "torch"], ["--backend torch", "reset before", "gru-rb"]),
    (["--arch", "rnn", "--nonlinearity", "identity", "--backend", "torch"], ["--nonlinearity identity", "tanh, relu"]),
    (["--corpus", "wikipedia"], ["--corpus", "invalid choice"]),
])
def test_unknown_or_invalid_option_values(tmp_path, args, needles):
    data = write_corpus(tmp_path / "data")
    rc, out, err = _train(tmp_path, "--data", data, *args)
    _check_one_line(rc, out, err, *needles)


def test_existing_run_folder_is_not_overwritten(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    data = write_corpus(tmp_path / "data")
    rc, out, err = run_cli(["train", "lm", *TINY, "--data", data, "--out", out_dir])
    _check_one_line(rc, out, err, "--out", out_dir, "--overwrite")
    assert os.listdir(out_dir) == ["keep.txt"]


def test_prime_outside_the_vocabulary(tmp_path):
    rc, _, err, run_dir = train_tiny(tmp_path, "--steps", "5", "--eval-every", "5", "--sample-length", "0")
    assert rc == 0, err
    rc, out, err = run_cli(["sample", run_dir, "--prime", "def \u4f60\u597d():"])
    _check_one_line(rc, out, err, "--prime", "'\u4f60'", "vocabulary")
    assert out == ""
    rc, out, err = run_cli(["sample", run_dir, "--length", "-3"])
    _check_one_line(rc, out, err, "--length")
    rc, out, err = run_cli(["evaluate", run_dir, "--data", tmp_path / "missing.txt"])
    _check_one_line(rc, out, err, "--data", "missing.txt")


def test_missing_checkpoint(tmp_path):
    for cmd in ("evaluate", "sample"):
        rc, out, err = run_cli([cmd, tmp_path / "none.safetensors"])
        _check_one_line(rc, out, err, "none.safetensors", "no such file")
        (tmp_path / "emptydir").mkdir(exist_ok=True)
        rc, out, err = run_cli([cmd, tmp_path / "emptydir"])
        _check_one_line(rc, out, err, "emptydir", "checkpoint.safetensors")


def test_train_without_task(tmp_path):
    rc, out, err = run_cli(["train"])
    _check_one_line(rc, out, err, "TASK", "--resume")
