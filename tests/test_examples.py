"""Every program in examples/ (the README names why_lstm_remembers.py and
compare_lm_backends.py, docs/cli.md use_checkpoint.py) runs from the command line as a
reader would run it, with small arguments where it takes them, and prints what it promises."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from cli_support import train_tiny

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name, *args, cwd=None, timeout=600):
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True,
                            text=True, timeout=timeout, cwd=cwd or ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_example_is_tested_here():
    tested = set(re.findall(r'run_example\("([\w.]+)"', Path(__file__).read_text()))
    assert tested == {p.name for p in EXAMPLES.glob("*.py")}
    readme = set(re.findall(r"python examples/([\w.]+)", (ROOT / "README.md").read_text()))
    assert readme and readme <= tested


def test_streaming_example():
    assert "online == offline" in run_example("streaming.py")


def test_use_checkpoint_example(tmp_path):
    rc, _, err, run_dir = train_tiny(tmp_path, "--steps", "10", "--eval-every", "10", "--sample-length", "0")
    assert rc == 0, err
    out = run_example("use_checkpoint.py", run_dir)
    assert out.startswith("lstm 32 vocabulary:") and "after 'for i in range(':" in out


def test_compare_lm_backends_example(tmp_path):
    """Few small steps: both backends train from the same weights to the same validation bpc."""
    out = run_example("compare_lm_backends.py", "--steps", "4", "--hidden", "16", "--batch-size", "4", "--bptt",
                      "20", "--threads", "1", "--paired-steps", "2", "--out", tmp_path / "cmp")
    rows = [line for line in out.splitlines() if line.startswith(("| rnnkit.LSTM", "| torch.nn.LSTM"))]
    assert len(rows) == 2, out
    bpc = [float(row.split("|")[3]) for row in rows]
    assert abs(bpc[0] - bpc[1]) < 1e-3, rows
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert len(results["rnnkit"]) == len(results["torch"]) == 1 and "paired_step_s" in results


def test_why_lstm_remembers_example(tmp_path):
    """The README's section, regenerated in a temporary docs folder (about 10 s of CPU)."""
    out = run_example("why_lstm_remembers.py", "--docs", tmp_path)
    doc = (tmp_path / "why_lstm_remembers.md").read_text()
    images = sorted(p.name for p in (tmp_path / "img").glob("*.png"))
    assert images == ["forget_gate_memory.png", "gradflow_fresh.png", "gradflow_gate_bias.png"], images
    assert "vanishing" in out and "Reproduce: `python examples/why_lstm_remembers.py`" in doc
