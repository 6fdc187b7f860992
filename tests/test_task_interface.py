"""The Task interface and what the engine does with it: one registry of built-in tasks,
the --resume data check and the recurrent layer built from the options in the base,
the early-stopping metric chosen by the task, the test split reported from the model
selected on validation (best.safetensors), artefacts in the run folder, and
`rnnkit evaluate --data FOLDER` reading the folders that `rnnkit train --data` reads."""
import importlib
import inspect
import io
import json
import pkgutil
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from cli_support import TINY, model_weights, run_cli

import rnnkit
import rnnkit.tasks
from rnnkit.errors import UsageError
from rnnkit.tasks._common import recurrent_layer
from rnnkit.training.engine import train
from rnnkit.training.options import DEFAULTS
from rnnkit.training.task import TASKS, Batch, StepResult, Task, load_builtin_tasks


# ---- registry -----------------------------------------------------------------------------
def test_every_task_class_of_the_tasks_package_is_registered_once():
    tasks = load_builtin_tasks()
    defined = {}
    for info in pkgutil.iter_modules(rnnkit.tasks.__path__):
        module = importlib.import_module(f"rnnkit.tasks.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Task) and cls.name and cls.__module__ == module.__name__:  # not abstract bases
                defined[cls.name] = cls
    assert defined and {n: tasks[n] for n in defined} == defined
    assert {"lm", "tag", "music", "classify", "forecast", "adding", "copy"} <= set(tasks)


# ---- the base class -----------------------------------------------------------------------
class _Probe(Task):
    name, data_name = "probe", "training probes"


def test_check_resume_compares_the_data_fingerprint():
    task = _Probe({})
    task.fingerprint = "aaaa"
    task.check_resume({"fingerprint": "aaaa"})
    task.check_resume({})  # a checkpoint without one: nothing to compare
    with pytest.raises(UsageError, match=r"--resume: the training probes changed since the checkpoint "
                                         r"\(fingerprint aaaa, checkpoint bbbb\)"):
        task.check_resume({"fingerprint": "bbbb"})


def test_recurrent_layer_reads_every_model_option():
    config = {**DEFAULTS, "arch": "gru", "hidden": 7, "layers": 2, "dropout": 0.25, "bidirectional": True,
              "gru_form": "before", "backend": "rnnkit"}
    rnn = recurrent_layer(config, 3)
    assert isinstance(rnn, rnnkit.GRU) and not rnn.reset_after
    assert (rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.dropout, rnn.bidirectional) == (3, 7, 2, 0.25, True)
    small = recurrent_layer({**config, "arch": "rnn", "nonlinearity": "relu", "backend": "torch"}, 3, 5,
                            num_layers=1)
    assert isinstance(small, nn.RNN) and small.nonlinearity == "relu"
    assert (small.hidden_size, small.num_layers, small.bidirectional) == (5, 1, True)


# ---- the engine's end of training --------------------------------------------------------
class Drift(Task):
    """A weight w that SGD on loss -w raises by lr every step: validation (|w - 1|) is
    best half-way, and the test split reports w itself, so it shows which weights ran."""

    name, summary, unit = "drift", "a scripted run whose best weights are not its last", "steps"
    metric = "loss"  # the class default; setup chooses another

    def setup(self, ctx):
        self.metric = "distance"

    def build_model(self):
        model = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(model.weight)
        return model

    def batches(self, position):
        step = (position or {}).get("step", 0)
        while True:
            step += 1
            yield Batch(data=None, size=1, position={"step": step})

    def step(self, model, batch, carry):
        w = model.weight.sum()
        return StepResult(loss=-w, count=1, metrics={"distance": float(abs(w.item() - 1))})

    def evaluate(self, model, split, ctx, limit=None, data=None):
        w = float(model.weight.detach().sum())
        return {"loss": w, "distance": abs(w - 1.0), "w": w, "items": 1}

    def reports_test(self):
        return True

    def write_artefacts(self, model, run_dir):
        path = Path(run_dir) / "drift.txt"
        path.write_text(f"{float(model.weight.detach().sum()):.6f}\n")
        return [path]


@pytest.fixture
def drift_run(tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, "drift", Drift)
    config = {**DEFAULTS, "task": "drift", "optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
              "schedule": "constant", "warmup": 0, "clip": 0.0, "steps": 20, "eval_every": 2, "save_every": 20,
              "log_every": 2, "threads": 1, "progress": "off", "tensorboard": "off",
              "out": str(tmp_path / "run")}
    out = io.StringIO()
    summary = train(config, out=out)
    return tmp_path / "run", summary, out.getvalue()


def test_test_split_comes_from_the_model_selected_on_validation(drift_run):
    run_dir, summary, out = drift_run
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["test"] == summary["test"]
    assert summary["valid"]["w"] == pytest.approx(2.0, abs=1e-5)       # the last step's weights
    assert summary["test"]["w"] == pytest.approx(1.0, abs=1e-5)        # best.safetensors: step 10
    assert summary["test"]["weights"] == "best.safetensors (step 10)"
    assert "test split: distance 0.0000 (loss 1.0000, w 1.0000) on 1 steps; weights of best.safetensors (step 10)" \
        in out
    # `rnnkit evaluate` reads the same weights
    rc, text, err = run_cli(["evaluate", run_dir, "--split", "test", "--json"])
    assert rc == 0, err
    assert json.loads(text)["w"] == pytest.approx(summary["test"]["w"], abs=0)


def test_early_stopping_follows_the_metric_the_task_chose(drift_run):
    run_dir, summary, _ = drift_run
    assert summary["best_distance"] == pytest.approx(0.0, abs=1e-5) and "best_loss" not in summary
    # the class's own metric (loss = w, lower is better) would have kept step 2's weights (w = 0.2)
    assert float(model_weights(run_dir / "best.safetensors")["weight"].sum()) == pytest.approx(1.0, abs=1e-5)


def test_artefacts_are_written_into_the_run_folder_from_the_selected_model(drift_run):
    run_dir, summary, out = drift_run
    assert summary["artefacts"] == [str(run_dir / "drift.txt")]
    assert float((run_dir / "drift.txt").read_text()) == pytest.approx(1.0, abs=1e-5)
    assert out.strip().splitlines()[-1].endswith("drift.txt)")   # the "run folder: ..." line lists it


def test_the_last_weights_serve_when_they_are_the_best(tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, "drift", Drift)
    config = {**DEFAULTS, "task": "drift", "optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "schedule": "constant",
              "warmup": 0, "clip": 0.0, "steps": 6, "eval_every": 2, "threads": 1, "progress": "off",
              "tensorboard": "off", "out": str(tmp_path / "run")}
    summary = train(config, out=io.StringIO())
    assert summary["test"]["w"] == pytest.approx(0.6, abs=1e-5)
    assert summary["test"]["weights"] == "best.safetensors (step 6, the last)"


# ---- the tagger: entity F1 and evaluate --data FOLDER -------------------------------------------
def test_the_tagger_stops_on_entity_f1_for_bio_tags():
    from rnnkit.tasks.tag import TagTask

    task = TagTask({**DEFAULTS, **TagTask.defaults})
    task.load_state_dict({"tags": ["B-PER", "I-PER", "O"], "words": ["<pad>", "<unk>"], "chars": ["<pad>", "<unk>"]})
    assert task.metric == "f1"
    task.load_state_dict({"tags": ["NOUN", "VERB"]})
    assert task.metric == "accuracy" and TagTask.metric == "accuracy"


NAMES = ["Ada", "Alan", "Grace", "Linus", "Barbara", "Edsger", "Donald", "Frances"]
WORDS = ["the", "code", "runs", "and", "reads", "a", "file", "with", "said", "wrote", "on", "monday"]


def _ner_file(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["-DOCSTART- O", ""]
    for _ in range(n):
        for _ in range(rng.randint(3, 9)):
            if rng.random() < 0.25:
                lines.append(f"{rng.choice(NAMES)} B-PER")
                if rng.random() < 0.5:
                    lines.append(f"{rng.choice(NAMES)}son I-PER")
            else:
                lines.append(f"{rng.choice(WORDS)} O")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    data = root / "data"
    data.mkdir()
    _ner_file(data / "train.txt", 200, 0)
    _ner_file(data / "dev.txt", 60, 1)
    _ner_file(data / "test.txt", 50, 2)
    rc, out, err = run_cli(["train", "tag", *TINY, "--data", data, "--out", root / "run", "--steps", "20",
                            "--eval-every", "10"])
    assert rc == 0, err
    return root / "run", data, out


def test_ner_run_reports_entity_f1_and_its_test_split(ner_run):
    run_dir, _, out = ner_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "best_f1" in summary and "best_accuracy" not in summary
    assert {"f1", "precision", "recall", "accuracy", "weights"} <= set(summary["test"])
    assert "valid f1 " in out and "test split: f1 " in out
    assert "train loss " in out  # training computes no entity F1: the line shows the training loss


def test_evaluate_data_accepts_the_folder_that_train_read(ner_run):
    run_dir, data, _ = ner_run

    def evaluate(*args):
        rc, text, err = run_cli(["evaluate", run_dir, *args, "--json"])
        assert rc == 0, err
        return {k: v for k, v in json.loads(text).items() if k != "split"}

    assert evaluate("--data", data) == evaluate("--data", data / "test.txt") == evaluate("--split", "test")
    assert evaluate("--data", data, "--split", "valid") == evaluate("--data", data / "dev.txt")
    only_dev = data.parent / "only-dev"
    only_dev.mkdir()
    (only_dev / "dev.txt").write_bytes((data / "dev.txt").read_bytes())
    rc, _, err = run_cli(["evaluate", run_dir, "--data", only_dev])
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"--data {only_dev}: no test file (*test* with suffix" in err and "it has valid" in err
