"""`rnnkit train tag` on a slice of the real UD English EWT treebank (and a CoNLL NER
file made from it): training beats the untrained model, a test file beside the others is
evaluated, malformed lines are reported with file and line, entity scoring follows
conlleval."""
import json
import lzma
from pathlib import Path

import pytest
import torch

from cli_support import TINY as FAST, run_cli
from conftest import SHARED

from rnnkit.data.conll import entities, entity_counts, is_bio, prf, read_conll, read_conllu
from rnnkit.training.task import RunContext, UsageError, get_task

EWT = Path(SHARED) / "data" / "ud-english-ewt"

pytestmark = pytest.mark.skipif(not (EWT / "en_ewt-ud-train.conllu.xz").is_file(),
                                reason="shared/data/ud-english-ewt is not there")


def _blocks(path: Path, n: int, skip: int = 0):
    """The first ``n`` sentences (after ``skip``) of a CoNLL-U file, as text blocks."""
    text = lzma.open(path, "rt", encoding="utf-8").read()
    return [b + "\n" for b in text.split("\n\n") if b.strip()][skip:skip + n]


@pytest.fixture(scope="module")
def ewt_slice(tmp_path_factory):
    """train: 1200 EWT training sentences (xz); dev: 300 dev sentences; test: 200 others."""
    d = tmp_path_factory.mktemp("ewt")
    with lzma.open(d / "en_ewt-ud-train.conllu.xz", "wt", encoding="utf-8") as f:
        f.write("\n".join(_blocks(EWT / "en_ewt-ud-train.conllu.xz", 1200)))
    dev = _blocks(EWT / "en_ewt-ud-dev.conllu.xz", 500)
    (d / "en_ewt-ud-dev.conllu").write_text("\n".join(dev[:300]), encoding="utf-8")
    (d / "en_ewt-ud-test.conllu").write_text("\n".join(dev[300:]), encoding="utf-8")
    return d


def untrained(run_dir: Path, split: str = "valid"):
    """Metrics of the model the run started from (same seed, no training)."""
    config = json.loads((run_dir / "config.json").read_text())
    task = get_task(config["task"])(config)
    task.setup(RunContext())
    torch.manual_seed(config["seed"])
    return task.evaluate(task.build_model(), split, RunContext())


@pytest.fixture(scope="module")
def tag_run(ewt_slice, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tagrun") / "run"
    rc, out, err = run_cli(["train", "tag", *FAST, "--data", ewt_slice, "--out", run_dir,
                            "--steps", "80", "--eval-every", "40"])
    assert rc == 0, err
    return run_dir, out


def test_tagger_learns_and_reports_test_split(tag_run):
    run_dir, out = tag_run
    summary = json.loads((run_dir / "summary.json").read_text())
    before = untrained(run_dir)["accuracy"]
    after = summary["valid"]["accuracy"]
    assert after > before + 0.3, (before, after)      # 17 tags: chance is far below
    assert "test split: " in out and "accuracy" in out
    for name in ("best.safetensors", "checkpoint.safetensors", "metrics.jsonl", "loss.png"):
        assert (run_dir / name).is_file()


def test_evaluate_test_split_and_data_files(tag_run, ewt_slice):
    run_dir, _ = tag_run
    rc, out, err = run_cli(["evaluate", run_dir, "--split", "test", "--json"])
    assert rc == 0, err
    res = json.loads(out)
    assert res["split"] == "test" and res["items"] > 1000 and 0.5 < res["accuracy"] <= 1
    rc, out, err = run_cli(["evaluate", run_dir, "--data", ewt_slice / "en_ewt-ud-test.conllu", "--json"])
    assert rc == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(res["accuracy"])


def test_evaluate_without_test_file_says_so(tmp_path, ewt_slice):
    d = tmp_path / "notest"
    d.mkdir()
    for name in ("en_ewt-ud-train.conllu.xz", "en_ewt-ud-dev.conllu"):
        (d / name).write_bytes((ewt_slice / name).read_bytes())
    rc, _, err = run_cli(["train", "tag", *FAST, "--data", d, "--out", tmp_path / "r", "--steps", "2",
                          "--eval-every", "2", "--eval-limit", "20"])
    assert rc == 0, err
    rc, _, err = run_cli(["evaluate", tmp_path / "r", "--split", "test"])
    assert rc == 2 and "no test file" in err and len(err.strip().splitlines()) == 1


def test_missing_data_folder_is_one_line(tmp_path):
    rc, _, err = run_cli(["train", "tag", *FAST, "--data", tmp_path / "nowhere", "--out", tmp_path / "r"])
    assert rc == 2 and "nowhere" in err and "not found" in err
    assert not (tmp_path / "r").exists()


def test_malformed_conllu_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad-train.conllu"
    p.write_text("# sent_id = 1\n1\tHello\thello\tINTJ\tUH\t_\t0\troot\t_\t_\n2\tworld\tNOUN\n\n")
    with pytest.raises(UsageError, match=r"bad-train.conllu:3: expected 10 tab-separated"):
        read_conllu(p)
    p.write_text("1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n1\tdo\tdo\tAUX\tVBP\t_\t0\troot\t_\t_\n"
                 "2\tn't\tnot\tPART\tRB\t_\t1\tadvmod\t_\t_\n2.1\tx\t_\t_\t_\t_\t_\t_\t_\t_\n\n")
    assert read_conllu(p) == [(["do", "n't"], ["AUX", "PART"])]    # multi-word token and empty node skipped


def test_conll_ner_file_trains_with_entity_f1(tmp_path, ewt_slice):
    """A BIO file made from real EWT sentences: PROPN runs become NAME entities."""
    d = tmp_path / "ner"
    d.mkdir()
    for split, name in (("train", "en_ewt-ud-train.conllu.xz"), ("dev", "en_ewt-ud-dev.conllu")):
        sents = read_conllu(ewt_slice / name)
        lines = ["-DOCSTART- -X- O O", ""]
        for words, tags in sents:
            prev = "O"
            for w, t in zip(words, tags):
                bio = "O" if t != "PROPN" else ("I-NAME" if prev != "O" else "B-NAME")
                lines.append(f"{w} {t} {bio}")
                prev = bio
            lines.append("")
        (d / f"{split}.txt").write_text("\n".join(lines), encoding="utf-8")
    rc, out, err = run_cli(["train", "tag", *FAST, "--data", d, "--out", tmp_path / "r", "--steps", "150"])
    assert rc == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert {"precision", "recall", "f1"} <= set(summary["valid"])
    assert summary["valid"]["f1"] > untrained(tmp_path / "r")["f1"]


def test_conll_ner_reader_errors(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\nPeter\n")
    with pytest.raises(UsageError, match=r"train.txt:6: expected a word and a tag"):
        read_conll(p)
    p.write_text("EU B-ORG\nrejects VERB\n")
    with pytest.raises(UsageError, match=r"train.txt:2: tag 'VERB' is not of the form B-TYPE"):
        read_conll(p)


def test_entities_follow_conlleval():
    tags = "B-PER I-PER O I-LOC B-LOC B-ORG I-PER".split()
    assert entities(tags) == {("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 6), ("PER", 6, 7)}
    assert entity_counts("B-PER I-PER O".split(), "B-PER O O".split()) == (0, 1, 1)
    assert prf(1, 2, 4) == pytest.approx({"precision": 0.5, "recall": 0.25, "f1": 1 / 3})
    assert is_bio(["O", "B-X", "I-X"]) and not is_bio(["NOUN", "VERB"])


def test_tagger_ignores_padding():
    """A sentence's logits do not depend on the other sentences in its batch (lengths, not padding)."""
    from rnnkit.tasks.tag import Tagger

    cfg = dict(arch="gru", backend="rnnkit", hidden=8, layers=2, nonlinearity="tanh", gru_form="after",
               dropout=0.0, bidirectional=True, embed=6, char_embed=4, char_hidden=5)
    m = Tagger(20, 12, 3, cfg).eval()
    words = torch.tensor([[2, 3], [4, 5], [6, 0], [7, 0]])
    forms = torch.tensor([[0, 1], [2, 3], [4, 0], [5, 0]])
    chars = torch.randint(2, 12, (3, 6))
    char_lengths = torch.tensor([3, 2, 1, 3, 2, 2])
    both = m(words, torch.tensor([4, 2]), chars, char_lengths, forms)
    alone = m(words[:2, 1:], torch.tensor([2]), chars, char_lengths, forms[:2, 1:])
    assert torch.allclose(both[:2, 1], alone[:, 0], atol=1e-6)


@pytest.mark.parametrize("preset", sorted(set(get_task("tag").presets) - {"tiny"}))
def test_results_table_presets_few_steps(tmp_path, ewt_slice, preset):
    """Every preset of docs/tasks.md's EWT tables for three real steps on the EWT slice: the
    run takes the preset's options, and the tagger it saves has the preset's variants
    (forget_bias, recurrent dropout, zoneout, weight drop) on its sentence-level layers."""
    from rnnkit.training.checkpoint import load

    run_dir = tmp_path / "run"
    given = {"steps": 3, "warmup": 1, "eval_every": 3, "save_every": 3}
    flags = [a for k, v in given.items() for a in ("--" + k.replace("_", "-"), str(v))]
    rc, out, err = run_cli(["train", "tag", "--preset", preset, "--data", ewt_slice, *flags, "--threads", "1",
                            "--progress", "off", "--tensorboard", "off", "--out", run_dir])
    assert rc == 0, err
    values = get_task("tag").presets[preset]
    config = json.loads((run_dir / "config.json").read_text())
    assert {k: config[k] for k in values if k not in given} == {k: v for k, v in values.items() if k not in given}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 3 and summary["valid"]["items"] > 1000
    rnn = load(run_dir).rnn
    for name in ("forget_bias", "recurrent_dropout", "zoneout", "weight_drop"):
        if name in values:
            assert getattr(rnn, name) == values[name], name
