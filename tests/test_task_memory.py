"""`rnnkit train adding` / `copy` and the sweep: the generated problems are the standard
ones, short trainings beat the untrained model, runs are resumable and evaluable."""
import json
import math
from pathlib import Path

import pytest
import torch

from cli_support import TINY as FAST, run_cli

from rnnkit.tasks.memory import COPY_N, MARKER, adding_batch, copy_batch
from rnnkit.tasks.sweep import main as sweep_main
from rnnkit.training.task import RunContext, get_task


def untrained(run_dir: Path, split: str = "valid"):
    config = json.loads((run_dir / "config.json").read_text())
    task = get_task(config["task"])(config)
    task.setup(RunContext())
    torch.manual_seed(config["seed"])
    return task.evaluate(task.build_model(), split, RunContext())


def test_adding_problem_data():
    x, y = adding_batch(50, 2000, torch.Generator().manual_seed(0))
    assert x.shape == (50, 2000, 2) and y.shape == (2000, 1)
    m = x[..., 1]
    assert (m.sum(0) == 2).all() and (m[:25].sum(0) == 1).all()          # one marker in each half
    assert torch.allclose(y[:, 0], (x[..., 0] * m).sum(0))
    assert ((y - 1) ** 2).mean().item() == pytest.approx(1 / 6, abs=0.015)   # the 0.167 baseline


def test_copy_data():
    x, y = copy_batch(30, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (50, 4)
    assert ((x[:COPY_N] >= 1) & (x[:COPY_N] <= 8)).all() and (x[29 + COPY_N - COPY_N] == 0).all()
    assert (x[30 + COPY_N - 1] == MARKER).all() and (x[COPY_N:].ne(0).sum(0) == 1).all()
    assert torch.equal(y[-COPY_N:], x[:COPY_N]) and (y[:-COPY_N] == 0).all()


def test_adding_learns_something(tmp_path):
    run_dir = tmp_path / "run"
    rc, out, err = run_cli(["train", "adding", *FAST, "--length", "10", "--arch", "gru", "--out", run_dir,
                            "--steps", "150", "--eval-every", "50"])
    assert rc == 0, err
    res = json.loads((run_dir / "summary.json").read_text())["valid"]
    assert res["mse"] < 0.5 * res["baseline_mse"] and res["mse"] < untrained(run_dir)["mse"]
    rc, out, err = run_cli(["evaluate", run_dir, "--split", "test", "--json"])
    assert rc == 0, err
    assert json.loads(out)["items"] == 200


def test_copy_learns_blanks_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    rc, out, err = run_cli(["train", "copy", *FAST, "--length", "10", "--arch", "gru", "--out", run_dir,
                            "--steps", "40", "--eval-every", "20"])
    assert rc == 0, err
    res = json.loads((run_dir / "summary.json").read_text())["valid"]
    assert res["loss"] < untrained(run_dir)["loss"] and res["baseline_loss"] == pytest.approx(10 * math.log(8) / 30)
    rc, out, err = run_cli(["train", "--resume", run_dir, "--steps", "60"])
    assert rc == 0, err
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 60
    rc, _, err = run_cli(["evaluate", run_dir, "--data", "x.txt"])
    assert rc == 2 and "generates its data" in err


def test_sweep_prints_which_learn(tmp_path, capsys):
    rc = sweep_main(["adding", "--lengths", "8", "--archs", "rnn", "gru", "--steps", "10", "--hidden", "8",
                     "--eval-every", "10", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "learned" in out and " rnn " in out and " gru " in out
    rows = json.loads((tmp_path / "adding-results.json").read_text())
    assert [(r["arch"], r["length"]) for r in rows] == [("rnn", 8), ("gru", 8)]
    assert all(isinstance(r["learned"], bool) and r["steps"] == 10 for r in rows)


def test_copy_100_preset_few_steps(tmp_path):
    """docs/tasks.md's copy-100 preset (the chrono-initialised GRU that learns copy memory at
    T = 100) for a few real steps: the preset's network, initialisation and task, evaluable."""
    from rnnkit.tasks.memory import CopyTask

    run_dir = tmp_path / "run"
    rc, out, err = run_cli(["train", "copy", "--preset", "copy-100", "--steps", "3", "--eval-every", "3",
                            "--save-every", "3", "--eval-size", "40", "--threads", "1", "--progress", "off",
                            "--tensorboard", "off", "--out", run_dir])
    assert rc == 0, err
    config = json.loads((run_dir / "config.json").read_text())
    preset = CopyTask.presets["copy-100"]
    given = {"steps", "eval_every", "save_every"}                 # set on the command line above
    assert {k: config[k] for k in preset if k not in given} == {k: v for k, v in preset.items() if k not in given}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 3 and summary["valid"]["items"] == 40
    assert summary["valid"]["baseline_loss"] == pytest.approx(10 * math.log(8) / (preset["length"] + 20))
    from rnnkit.training.checkpoint import load

    rnn = load(run_dir).rnn
    assert type(rnn).__name__ == "GRU" and rnn.hidden_size == preset["hidden"]
    assert rnn.chrono_tmax == preset["length"]
    assert "copy-100" not in get_task("adding").presets      # a copy preset only
