"""`rnnkit train forecast`: a real series (statsmodels' sunspots / co2; the tests that need
statsmodels skip without it) trains past the untrained model and the naive baseline,
writes forecast.png, and the CSV reader names malformed lines."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_support import TINY as FAST, run_cli

from rnnkit.data.series import estimate_season, read_csv_series
from rnnkit.training.task import RunContext, UsageError, get_task

needs_statsmodels = pytest.mark.skipif(importlib.util.find_spec("statsmodels") is None,
                                       reason="statsmodels is not installed")


def untrained(run_dir: Path, split: str = "valid"):
    config = json.loads((run_dir / "config.json").read_text())
    task = get_task(config["task"])(config)
    task.setup(RunContext())
    torch.manual_seed(config["seed"])
    return task.evaluate(task.build_model(), split, RunContext())


@needs_statsmodels
def test_co2_beats_untrained_and_naive_and_plots(tmp_path):
    run_dir = tmp_path / "run"
    rc, out, err = run_cli(["train", "forecast", *FAST, "--series", "co2", "--out", run_dir,
                            "--steps", "150", "--eval-every", "50"])
    assert rc == 0, err
    res = json.loads((run_dir / "summary.json").read_text())["valid"]
    assert res["rmse"] < untrained(run_dir)["rmse"]
    assert res["rmse"] < res["naive_rmse"] and res["mae"] < res["naive_mae"]
    png = run_dir / "forecast.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "snaive rmse" in out and "(season 12)" in out
    rc, out, err = run_cli(["evaluate", run_dir, "--split", "test", "--json"])
    assert rc == 0, err
    test = json.loads(out)
    assert test["items"] == 79 and {"naive_rmse", "snaive_mae"} <= set(test)


@needs_statsmodels
def test_csv_multivariate_with_horizon(tmp_path):
    """Sunspots written to a CSV with a second (lagged) column; horizon 3."""
    import statsmodels.datasets as sd

    df = sd.sunspots.load_pandas().data
    y = df["SUNACTIVITY"].to_numpy()
    lines = ["year,spots,spots_lag1"] + [f"{int(t)},{v},{y[i - 1] if i else y[0]}"
                                         for i, (t, v) in enumerate(zip(df["YEAR"], y))]
    csv = tmp_path / "sunspots.csv"
    csv.write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    rc, out, err = run_cli(["train", "forecast", *FAST, "--data", csv, "--target", "spots", "--horizon", "3",
                            "--window", "12", "--out", run_dir, "--steps", "100", "--test-fraction", "0"])
    assert rc == 0, err
    res = json.loads((run_dir / "summary.json").read_text())["valid"]
    assert res["rmse"] < untrained(run_dir)["rmse"]
    assert "test" not in out.split("sample:")[1].split("run folder:")[0]
    rc, _, err = run_cli(["evaluate", run_dir, "--split", "test"])
    assert rc == 2 and "no test part" in err
    rc, out, err = run_cli(["evaluate", run_dir, "--data", csv, "--json"])
    assert rc == 0, err
    assert json.loads(out)["items"] == len(y) - 12 - 3 + 1


def test_csv_errors_name_file_line_and_column(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("date,a,b\n2000,1,2\n2001,,3\n")
    with pytest.raises(UsageError, match=r"s.csv:3: column 'a': expected a number, got an empty cell"):
        read_csv_series(p)
    p.write_text("date,a,b\n2000,1,2\n2001,3\n")
    with pytest.raises(UsageError, match=r"s.csv:3: expected 3 comma-separated fields"):
        read_csv_series(p)
    with pytest.raises(UsageError, match=r"--columns: 'c' not in"):
        read_csv_series(p, ["c"])
    p.write_text("date,a,b\n2000,1,2\n2001,3,4\n")
    s = read_csv_series(p)
    assert s.columns == ["a", "b"] and s.index == ["2000", "2001"]
    rc, _, err = run_cli(["train", "forecast", *FAST, "--data", tmp_path / "no.csv", "--out", tmp_path / "r"])
    assert rc == 2 and "no.csv" in err


def test_season_is_estimated_from_the_data():
    t = np.arange(400)
    assert estimate_season(np.sin(2 * np.pi * t / 12) + 0.01 * t) == 12


def test_builtin_series_without_statsmodels_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "statsmodels.datasets", None)     # import fails
    rc, _, err = run_cli(["train", "forecast", *FAST, "--series", "co2", "--out", tmp_path / "r"])
    assert rc == 2 and "pip install statsmodels" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
