"""`rnnkit train classify`: JapaneseVowels (when sktime or aeon ships it) trains past the
untrained model and reports its test split; the .npz / .csv / .ts readers agree and name
malformed lines; padding never reaches the state."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_support import TINY as FAST, run_cli

from rnnkit.data.sequences import japanese_vowels_dir, read_csv, read_npz, read_sequences, read_ts
from rnnkit.tasks.classify import SequenceClassifier, pad, stratified_holdout
from rnnkit.training.task import RunContext, UsageError, get_task

VOWELS = japanese_vowels_dir()
needs_vowels = pytest.mark.skipif(VOWELS is None, reason="neither sktime nor aeon is installed")


def untrained(run_dir: Path, split: str = "valid"):
    config = json.loads((run_dir / "config.json").read_text())
    task = get_task(config["task"])(config)
    task.setup(RunContext())
    torch.manual_seed(config["seed"])
    return task.evaluate(task.build_model(), split, RunContext())


@needs_vowels
def test_japanese_vowels_learns_and_reports_test(tmp_path):
    run_dir = tmp_path / "run"
    rc, out, err = run_cli(["train", "classify", *FAST, "--out", run_dir, "--steps", "60"])
    assert rc == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["valid"]["items"] == 54                     # 20 % of 270, stratified
    assert summary["valid"]["accuracy"] > untrained(run_dir)["accuracy"] + 0.3
    assert "test split: accuracy" in out
    rc, out, err = run_cli(["evaluate", run_dir, "--split", "test", "--json"])
    assert rc == 0, err
    res = json.loads(out)
    assert res["items"] == 370 and res["accuracy"] > 0.5


@needs_vowels
def test_the_three_formats_read_the_same_sequences(tmp_path):
    seqs, labels = read_ts(VOWELS / "JapaneseVowels_TRAIN.ts")
    assert len(seqs) == 270 and {s.shape[1] for s in seqs} == {12}
    assert min(len(s) for s in seqs) == 7 and max(len(s) for s in seqs) == 26
    seqs, labels = seqs[:40], labels[:40]
    np.savez(tmp_path / "a.npz", x=np.concatenate(seqs), lengths=[len(s) for s in seqs], y=np.array(labels))
    padded = np.zeros((40, 26, 12), np.float32)
    for i, s in enumerate(seqs):
        padded[i, :len(s)] = s
    np.savez(tmp_path / "b.npz", x=padded, lengths=[len(s) for s in seqs], y=np.array(labels).astype(int))
    rows = ["id,label," + ",".join(f"c{k}" for k in range(12))]
    for i, (s, l) in enumerate(zip(seqs, labels)):
        rows += [f"u{i},{l}," + ",".join(repr(float(v)) for v in step) for step in s]
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    for path in ("a.npz", "b.npz", "c.csv"):
        s2, l2 = read_sequences(tmp_path / path)
        assert l2 == labels and all(np.allclose(a, b) for a, b in zip(seqs, s2)), path


def test_folder_of_split_files_with_test(tmp_path):
    """Real-valued sequences in train/valid/test .npz files: the run reads all three."""
    rng = np.random.default_rng(0)

    def make(n):
        lengths = rng.integers(5, 30, n)
        y = rng.integers(0, 2, n)
        x = [rng.normal(size=(k, 3)).astype(np.float32) + (y_i * 2 - 1) * 0.8 for k, y_i in zip(lengths, y)]
        return dict(x=np.concatenate(x), lengths=lengths, y=y)

    for split, n in (("train", 200), ("valid", 60), ("test", 60)):
        np.savez(tmp_path / f"{split}.npz", **make(n))
    rc, out, err = run_cli(["train", "classify", *FAST, "--data", tmp_path, "--out", tmp_path / "r"])
    assert rc == 0, err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["valid"]["accuracy"] > 0.9
    assert "test split: accuracy" in out


def test_malformed_lines_are_named(tmp_path):
    p = tmp_path / "train.csv"
    p.write_text("id,label,a,b\n1,x,0.5,1\n1,x,0.25\n")
    with pytest.raises(UsageError, match=r"train.csv:3: expected 4 comma-separated fields"):
        read_csv(p)
    p.write_text("id,label,a,b\n1,x,0.5,1\n1,x,0.25,abc\n")
    with pytest.raises(UsageError, match=r"train.csv:3, column 'b': expected a number, got 'abc'"):
        read_csv(p)
    p.write_text("id,label,a,b\n1,x,0.5,1\n1,y,0.25,2\n")
    with pytest.raises(UsageError, match=r"train.csv:3: sequence '1' has label 'y'"):
        read_csv(p)
    t = tmp_path / "train.ts"
    t.write_text("@problemName x\n@dimensions 2\n@data\n1,2,3:4,5,6:a\n1,2:3,4,5:b\n")
    with pytest.raises(UsageError, match=r"train.ts:5: the dimensions have different lengths"):
        read_ts(t)
    t.write_text("@dimensions 2\n@data\n1,2,3:4,5,6:a\n1,2,x:3,4,5:b\n")
    with pytest.raises(UsageError, match=r"train.ts:4, dimension 1: expected a number, got 'x'"):
        read_ts(t)
    n = tmp_path / "train.npz"
    np.savez(n, x=np.zeros((5, 2)), lengths=[2, 2], y=[0, 1])
    with pytest.raises(UsageError, match=r"'x' has 5 rows but the lengths add up to 4"):
        read_npz(n)
    rc, _, err = run_cli(["train", "classify", *FAST, "--data", tmp_path / "none", "--out", tmp_path / "r"])
    assert rc == 2 and "none" in err


@pytest.mark.parametrize("arch,backend", [("lstm", "rnnkit"), ("gru", "rnnkit"), ("rnn", "torch"),
                                          ("jordan", "rnnkit")])
def test_logits_do_not_depend_on_padding(arch, backend):
    """Pad values never enter the state: garbage padding gives the same logits as zeros,
    and a sequence scores the same alone as in a padded batch."""
    torch.manual_seed(0)
    bi = arch != "jordan"
    m = SequenceClassifier(3, 4, dict(arch=arch, backend=backend, hidden=8, layers=2, nonlinearity="tanh",
                                      gru_form="after", dropout=0.0, bidirectional=bi)).eval()
    seqs = [np.random.default_rng(i).normal(size=(n, 3)).astype(np.float32) for i, n in enumerate((9, 4, 6))]
    x0, lengths = pad(seqs, 0.0)
    x1, _ = pad(seqs, 1e3)
    with torch.no_grad():
        a, b = m(x0, lengths), m(x1, lengths)
        alone = m(*pad(seqs[1:2]))
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(a[1], alone[0], atol=1e-5)


def test_stratified_holdout_keeps_every_class():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"]
    keep, held = stratified_holdout(labels, 0.2)
    assert sorted(keep + held) == list(range(16))
    assert sorted(labels[i] for i in held) == ["a", "a", "b"]
    assert stratified_holdout(labels, 0.2) == (keep, held)


def test_japanese_vowels_without_sktime_or_aeon_says_what_to_install(tmp_path, monkeypatch):
    import rnnkit.tasks.classify as classify

    monkeypatch.setattr(classify, "japanese_vowels_dir", lambda: None)
    rc, _, err = run_cli(["train", "classify", *FAST, "--out", tmp_path / "r"])
    assert rc == 2 and "pip install sktime" in err and len(err.strip().splitlines()) == 1
