"""`rnnkit` command surface: help on every subcommand, version, info, presets and config
resolution, the console script and `python -m rnnkit`."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import run_cli

import rnnkit
from rnnkit.training.engine import lr_at
from rnnkit.training.options import DEFAULTS


@pytest.mark.parametrize("argv, expect", [
    (["--help"], "train"),
    (["train", "--help"], "--resume RUN_DIR"),
    (["train", "lm", "--help"], "--bptt T"),
    (["evaluate", "--help"], "--split"),
    (["sample", "--help"], "--temperature"),
    (["info", "--help"], "CPU"),
    (["bench", "--help"], "usage: rnnkit bench"),
])
def test_help_on_every_subcommand(argv, expect):
    rc, out, err = run_cli(argv)
    assert rc == 0, err
    assert expect in out


def test_train_help_shows_every_default_once():
    rc, out, _ = run_cli(["train", "lm", "--help"])
    assert rc == 0
    flat = " ".join(out.split())
    for flag, value in [("--arch", "lstm"), ("--hidden", "256"), ("--clip", "1.0"), ("--optimizer", "adamw"),
                        ("--schedule", "cosine"), ("--backend", "rnnkit"), ("--bptt", "100")]:
        pattern = re.escape(flag) + r" \S+ (?:(?!\(default:).){0,150}\(default: " + re.escape(value) + r"\)"
        assert re.search(pattern, flat), flag
    assert "demo" in out and "tiny" in out  # presets listed


def test_version_and_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "rnnkit", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"rnnkit {rnnkit.__version__}"


def test_console_script_installed():
    script = Path(sys.executable).parent / "rnnkit"
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "evaluate" in r.stdout


def test_info_reports_cpu_threads_and_kernel_path():
    rc, out, err = run_cli(["info"])
    assert rc == 0, err
    for word in ("cpu features", "native kernels", "active:", "threads", "rnnkit modules", rnnkit.__version__):
        assert word in out


def test_no_command_prints_help_and_fails():
    rc, out, _ = run_cli([])
    assert rc == 2 and "COMMAND" in out


def test_config_resolution_order():
    """defaults < task defaults < preset < explicit options; --show-config prints it."""
    rc, out, err = run_cli(["train", "lm", "--preset", "tiny", "--hidden", "48", "--show-config"])
    assert rc == 0, err
    cfg = json.loads(out)
    assert cfg["hidden"] == 48                # explicit beats preset (tiny: 32)
    assert cfg["steps"] == 40                 # preset beats default (2000)
    assert cfg["bptt"] == 32
    assert cfg["optimizer"] == DEFAULTS["optimizer"]
    assert cfg["task"] == "lm"


def test_lr_schedules():
    cfg = dict(lr=1.0, warmup=10, steps=110, min_lr=0.1, schedule="cosine")
    assert lr_at(0, cfg) == pytest.approx(0.1)      # warm-up starts low
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)     # then the peak
    assert lr_at(110, cfg) == pytest.approx(0.1)    # cosine ends at min_lr * lr
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, {**cfg, "schedule": "linear"}) == pytest.approx(0.1)
    assert lr_at(110, {**cfg, "schedule": "constant"}) == 1.0
    assert lr_at(109, {**cfg, "schedule": "step"}) == pytest.approx(0.01)


def test_bench_is_dispatched(monkeypatch):
    import rnnkit.bench as bench

    seen = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 0)
    rc, _, _ = run_cli(["bench", "--hidden", "8"])
    assert rc == 0 and seen == [["--hidden", "8"]]
