"""`rnnkit train lm`, `evaluate`, `sample` and `rnnkit.load` end to end, on small real
trainings (a 33k-character file of Python, tiny models, seconds each)."""
import json
import math
import os
import signal
import struct

import pytest
import torch

from cli_support import TINY, model_weights, records, run_cli, spawn, train_tiny, wait_for_step, write_corpus

import rnnkit
from rnnkit.training.checkpoint import load


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    """One tiny LSTM run shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("lstm")
    rc, out, err, run_dir = train_tiny(tmp, "--steps", "60", "--eval-every", "30", "--save-every", "30")
    assert rc == 0, err
    return run_dir, out


def test_train_writes_everything_and_learns(lstm_run):
    run_dir, out = lstm_run
    for name in ("checkpoint.safetensors", "best.safetensors", "loss.png", "metrics.jsonl", "metrics.csv",
                 "summary.json", "config.json"):
        assert (run_dir / name).is_file(), name
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp")]
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run_dir / "summary.json").read_text())
    vocab = len(load(run_dir).vocab)
    assert summary["stopped"] == "steps" and summary["step"] == 60
    # it learned: well below a uniform guess over the vocabulary, and below its first validation
    valid = records(run_dir, "valid")
    assert summary["valid"]["bpc"] < math.log2(vocab) - 1
    assert valid[-1]["bpc"] < valid[0]["bpc"]
    train = records(run_dir, "train")
    assert train[-1]["loss"] < train[0]["loss"]
    assert "valid bpc" in out and "sample:" in out
    csv_head = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"step", "split", "loss", "bpc", "lr", "grad_norm", "clipped", "throughput"} <= set(csv_head)


def test_gradient_clipping_is_logged(tmp_path):
    rc, _, err, run_dir = train_tiny(tmp_path, "--steps", "10", "--clip", "1e-3", "--eval-every", "10")
    assert rc == 0, err
    train = records(run_dir, "train")
    assert all(r["clipped"] == 1.0 and r["grad_norm"] > 1e-3 for r in train)
    rc, _, err, run_dir = train_tiny(tmp_path, "--steps", "10", "--clip", "0", "--eval-every", "10", name="noclip")
    assert rc == 0, err
    assert all(r["clipped"] == 0.0 for r in records(run_dir, "train"))


@pytest.mark.parametrize("extra", [
    ["--arch", "gru"],
    ["--arch", "gru", "--gru-form", "before"],
    ["--arch", "rnn"],
    ["--arch", "rnn", "--nonlinearity", "relu", "--optimizer", "sgd", "--lr", "0.1"],
    ["--arch", "jordan", "--optimizer", "rmsprop", "--lr", "3e-3"],
    ["--arch", "lstm", "--layers", "2", "--dropout", "0.1", "--schedule", "step"],
    ["--arch", "lstm", "--backend", "torch"],
])
def test_every_architecture_trains(tmp_path, extra):
    rc, out, err, run_dir = train_tiny(tmp_path, "--steps", "20", "--eval-every", "20", *extra)
    assert rc == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert math.isfinite(summary["valid"]["bpc"])
    first, last = records(run_dir, "train")[0], records(run_dir, "train")[-1]
    assert last["loss"] < first["loss"]
    model = load(run_dir)
    assert model.config["arch"] == extra[1]
    # RNN, LSTM and reset-after GRU weights load unchanged into the matching torch.nn module
    arch = model.config["arch"]
    if arch == "jordan" or (arch == "gru" and model.config["gru_form"] == "before"):
        return  # torch.nn has no equivalent module
    ref_cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[arch]
    kw = {"nonlinearity": model.config["nonlinearity"]} if arch == "rnn" else {}
    ref = ref_cls(model.config["embed"], model.config["hidden"], model.config["layers"], **kw)
    ref.load_state_dict(model.rnn.state_dict())
    x = model.embed(model.encode("def f(x):\n").view(-1, 1))
    with torch.no_grad():
        torch.testing.assert_close(model.rnn(x)[0], ref(x)[0], rtol=1e-4, atol=1e-5)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    data = write_corpus(tmp_path / "data")
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        rc, _, err, run_dir = train_tiny(tmp_path, "--steps", "12", "--eval-every", "12", "--seed", seed,
                                         name=name, data=data)
        assert rc == 0, err
        runs[name] = model_weights(run_dir / "checkpoint.safetensors")
    for k in runs["a"]:
        assert torch.equal(runs["a"][k], runs["b"][k]), k
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_early_stopping(tmp_path):
    # lr 0: validation never improves after the first one, so patience 2 stops at the third
    rc, out, err, run_dir = train_tiny(tmp_path, "--lr", "0", "--steps", "40", "--eval-every", "5",
                                       "--patience", "2")
    assert rc == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped"] == "early_stop" and summary["step"] == 15


def test_max_time_stops(tmp_path):
    rc, _, err, run_dir = train_tiny(tmp_path, "--steps", "100000", "--max-time", "0.2", "--eval-every", "100000")
    assert rc == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped"] == "max_time" and summary["step"] < 100000


def test_evaluate_and_sample(lstm_run):
    run_dir, _ = lstm_run
    rc, out, err = run_cli(["evaluate", run_dir, "--split", "valid", "--json"])
    assert rc == 0, err
    res = json.loads(out)
    best = json.loads((run_dir / "summary.json").read_text())["best_bpc"]
    assert res["bpc"] == pytest.approx(best, rel=1e-5)  # best.safetensors on the full valid split
    rc, out, err = run_cli(["evaluate", run_dir])  # default: the test split, one line
    assert rc == 0 and "test split: bpc" in out and len(out.strip().splitlines()) == 1

    args = ["sample", run_dir, "--prime", "def ", "--length", "50", "--seed", "1"]
    rc, a, err = run_cli(args)
    assert rc == 0, err
    rc, b, err = run_cli(args)
    assert rc == 0, err
    assert a == b and a.startswith("def ") and len(a.rstrip("\n")) >= 54  # repeatable with a seed
    rc, c, err = run_cli(args[:-1] + ["2"])
    assert rc == 0, err
    assert c != a and c.startswith("def ")

    def sample(*extra):
        rc, text, err = run_cli(["sample", run_dir, "--length", "30", *extra])
        assert rc == 0, err
        assert len(text.rstrip("\n")) >= 30, text
        return text

    greedy = sample("--prime", "import", "--temperature", "0")
    assert greedy.startswith("import")
    assert sample("--prime", "import", "--temperature", "0", "--seed", "9") == greedy  # temperature 0 is greedy
    assert sample("--top-k", "1", "--seed", "5") == sample("--temperature", "0")    # top-1 is greedy too


def test_load_in_plain_python_and_into_torch_nn(lstm_run):
    run_dir, _ = lstm_run
    model = rnnkit.load(run_dir) if hasattr(rnnkit, "load") else load(run_dir)
    assert isinstance(model.rnn, rnnkit.LSTM)
    x = model.encode("import os\n").view(-1, 1)                       # (T, 1)
    logits, (h, c) = model(x)
    # the recurrent weights load unchanged into torch.nn.LSTM and give the same states
    ref = torch.nn.LSTM(model.rnn.input_size, model.rnn.hidden_size, model.rnn.num_layers)
    ref.load_state_dict(model.rnn.state_dict())
    out_ref, (h_ref, c_ref) = ref(model.embed(x))
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=1e-5, atol=1e-6)
    # the same checkpoint with torch.nn layers gives the same predictions
    twin = load(run_dir, backend="torch")
    assert isinstance(twin.rnn, torch.nn.LSTM)
    torch.testing.assert_close(twin(x)[0], logits, rtol=1e-5, atol=1e-5)
    text = model.generate("def ", 20, temperature=0)
    assert text.startswith("def ") and len(text) == 24


def test_bible_corpus_when_installed(tmp_path):
    from rnnkit.data.text import bible_available

    if not bible_available():
        pytest.skip("Debian's bible-kjv is not installed")
    rc, out, err = run_cli(["train", "lm", *TINY, "--corpus", "bible-kjv", "--steps", "5", "--eval-every", "5",
                            "--eval-limit", "1000", "--out", tmp_path / "kjv", "--sample-length", "0"])
    assert rc == 0, err
    rc, out, err = run_cli(["evaluate", tmp_path / "kjv", "--limit", "2000"])
    assert rc == 0 and "bpc" in out


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path):
    """SIGINT mid-run: the step finishes, a checkpoint is written, exit 130; resuming
    reaches the same weights as a run never interrupted."""
    data = write_corpus(tmp_path / "data")
    common = [*TINY, "--data", data, "--steps", "400", "--eval-every", "100", "--save-every", "10",
              "--sample-length", "0"]
    proc = spawn(["train", "lm", *common, "--out", tmp_path / "int"])
    wait_for_step(proc, tmp_path / "int", 20)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "rnnkit train --resume" in out
    from cli_support import header_meta
    trainer = header_meta(tmp_path / "int" / "checkpoint.safetensors")["trainer"]
    assert trainer["stopped"] == "interrupted" and 20 <= trainer["step"] < 400
    rc, _, err = run_cli(["train", "--resume", tmp_path / "int"])
    assert rc == 0, err
    rc, _, err = run_cli(["train", "lm", *common, "--out", tmp_path / "ref"])
    assert rc == 0, err
    a = model_weights(tmp_path / "int" / "checkpoint.safetensors")
    b = model_weights(tmp_path / "ref" / "checkpoint.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_demo_preset_few_steps(tmp_path):
    """`make demo`'s preset for three steps: the same corpus, model, full validation split,
    files and sample, checked for what a reader of the README sees."""
    run_dir = tmp_path / "demo"
    rc, out, err = run_cli(["train", "lm", "--preset", "demo", "--steps", "3", "--warmup", "1", "--out", run_dir,
                            "--progress", "off", "--tensorboard", "off"])
    assert rc == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    model = load(run_dir)
    assert (model.config["arch"], model.config["hidden"], model.config["bptt"]) == ("lstm", 256, 100)
    assert summary["stopped"] == "steps" and summary["step"] == 3
    assert summary["valid"]["items"] > 100_000                         # the whole validation split
    assert summary["valid"]["bpc"] < math.log2(len(model.vocab))       # better than a uniform guess
    assert "done (steps) at step 3" in out and "sample:" in out
    for name in ("checkpoint.safetensors", "best.safetensors", "loss.png", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    rc, text, err = run_cli(["sample", run_dir, "--prime", "import ", "--length", "50", "--temperature", "0.7"])
    assert rc == 0, err
    assert text.startswith("import ") and len(text.rstrip("\n")) >= 57


@pytest.mark.slow
def test_demo_preset(tmp_path):
    """What `make demo` runs: a few minutes of LSTM training on the standard library."""
    rc, out, err = run_cli(["train", "lm", "--preset", "demo", "--out", tmp_path / "demo", "--progress", "off"])
    assert rc == 0, err
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["valid"]["bpc"] < 3.0 and summary["valid"]["items"] > 100_000
    assert (tmp_path / "demo" / "loss.png").is_file() and "sample:" in out
    rc, out, err = run_cli(["sample", tmp_path / "demo", "--prime", "import ", "--length", "100"])
    assert rc == 0 and out.startswith("import ")
