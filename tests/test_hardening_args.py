"""Hostile arguments (issue 12): every numeric option has bounds that argparse checks,
absurd models are refused before anything is allocated, and every bad value ends in one
line naming the option, exit status 2, and nothing written. The probe list is the count
reported for arguments in the issue's closing note."""
import sys
import time

import pytest

from cli_support import TINY, run_cli, train_tiny, write_corpus, one_line_error as _one_line

HUGE = str(2 ** 70)

# (arguments after `rnnkit train lm --preset tiny ... --data CORPUS --out OUT`, needles)
TRAIN = [
    (["--hidden", "100000000"], ["--hidden", "<= 65536"]),
    (["--hidden", "60000"], ["parameters", "budget"]),                 # in range, but the model is absurd
    (["--layers", "100000"], ["--layers", "<= 256"]),
    (["--embed", str(2 ** 31 - 1)], ["parameters", "budget"]),
    (["--threads", "100000"], ["--threads", "<= 1024"]),
    (["--seed", HUGE], ["--seed", "<= 4294967295"]),
    (["--seed", "-" + HUGE], ["--seed", ">= -4294967295"]),
    (["--lr", "inf"], ["--lr", "finite"]),
    (["--lr", "nan"], ["--lr", "finite"]),
    (["--lr", "-1"], ["--lr", ">= 0"]),
    (["--dropout", "nan"], ["--dropout", "finite"]),
    (["--max-time", "inf"], ["--max-time", "finite"]),
    (["--steps", HUGE], ["--steps", "expected an integer >= 1"]),
    (["--steps", "1.5"], ["--steps", "expected an integer"]),
    (["--batch-size", "0"], ["--batch-size", ">= 1"]),
    (["--bptt", "0"], ["--bptt", ">= 1"]),
    (["--clip", "-1"], ["--clip", ">= 0"]),
    (["--warmup", "-3"], ["--warmup", ">= 0"]),
    (["--momentum", "1e400"], ["--momentum", "finite"]),
    (["--sample-temperature", "nan"], ["--sample-temperature", "finite"]),
    (["--eval-every", "0"], ["--eval-every", ">= 1"]),
]


@pytest.mark.parametrize("args, needles", TRAIN, ids=[" ".join(a)[:40] for a, _ in TRAIN])
def test_train_option_out_of_bounds_is_one_line(tmp_path, args, needles):
    data = write_corpus(tmp_path / "data")
    out_dir = tmp_path / "out"
    t0 = time.perf_counter()
    rc, out, err = run_cli(["train", "lm", *TINY, "--data", data, "--out", out_dir, *args])
    assert time.perf_counter() - t0 < 30
    _one_line(rc, err, *needles)
    assert not out_dir.exists()


# (command with RUN standing for the run folder, needles)
OTHER = [
    (["sample", "RUN", "--temperature", "nan"], ["--temperature", "finite"]),
    (["sample", "RUN", "--temperature", "inf"], ["--temperature", "finite"]),
    (["sample", "RUN", "--temperature", "-1"], ["--temperature", ">= 0"]),
    (["sample", "RUN", "--length", str(10 ** 7)], ["--length", "<= 100000"]),
    (["sample", "RUN", "--length", "-1"], ["--length", ">= 0"]),
    (["sample", "RUN", "--top-k", "-1"], ["--top-k", ">= 0"]),
    (["sample", "RUN", "--seed", HUGE], ["--seed", "<= 4294967295"]),
    (["evaluate", "RUN", "--limit", "-5"], ["--limit", ">= 0"]),
    (["train", "--resume", "RUN", "--threads", "100000"], ["--threads", "<= 1024"]),
    (["train", "--resume", "RUN", "--steps", "0"], ["--steps", ">= 1"]),
    (["train", "--resume", "RUN", "--max-time", "nan"], ["--max-time", "finite"]),
    (["visualize", "RUN", "--text", "def f", "--out", "MISSING/page.html"], ["--out", "does not exist"]),
    (["visualize", "RUN", "--text", "def f", "--out", "RUN"], ["--out", "is a folder"]),
    (["visualize", "RUN", "--text", "def f", "--max-units", "0"], ["--max-units", ">= 1"]),
    (["visualize", "RUN", "--text", "def f", "--layer", "-1"], ["--layer", ">= 0"]),
    (["gradflow", "--hidden", "100000000"], ["--hidden", "<= 4096"]),
    (["gradflow", "--seed", HUGE], ["--seed", "<= 4294967295"]),
    (["gradflow", "--length", str(10 ** 9)], ["--length", "<= 100000"]),
    (["explain", "--digits", "100000"], ["--digits", "<= 17"]),
]


@pytest.mark.parametrize("args, needles", OTHER, ids=[" ".join(a)[:40] for a, _ in OTHER])
def test_other_command_option_out_of_bounds_is_one_line(run, tmp_path, args, needles):
    args = [str(run) if a == "RUN" else a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    rc, out, err = run_cli(args)
    _one_line(rc, err, *needles)


def test_visualize_without_matplotlib_writes_the_page_and_says_so(run, tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import matplotlib -> ImportError
    page = tmp_path / "page.html"
    rc, out, err = run_cli(["visualize", run, "--text", "def f(x):\n    return x\n", "--out", page])
    assert rc == 0, err
    assert page.is_file() and "matplotlib is not installed" in err
    assert list(tmp_path.glob("page_*.png")) == []


def test_sample_length_at_the_bound_is_accepted(run):
    rc, out, err = run_cli(["sample", run, "--length", "5", "--temperature", "0"])
    assert rc == 0, err


def test_a_file_error_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch):
    from rnnkit import cli

    def missing(ns, out):
        raise FileNotFoundError(2, "No such file or directory", "/data/notes.txt")

    monkeypatch.setitem(cli.COMMANDS, "info", missing)
    rc, out, err = run_cli(["info"])
    _one_line(rc, err, "/data/notes.txt", "No such file or directory")

    def bug(ns, out):
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "info", bug)
    with pytest.raises(ZeroDivisionError):
        run_cli(["info"])


def test_negative_seeds_still_train_and_load(tmp_path):
    """Seeds were always allowed to be negative; checkpoints with one must still load."""
    rc, out, err, run_dir = train_tiny(tmp_path, "--seed", "-7", "--steps", "4", "--eval-every", "4",
                                       "--sample-length", "0")
    assert rc == 0, err
    rc, out, err = run_cli(["sample", run_dir, "--length", "5", "--seed", "-3"])
    assert rc == 0, err
