"""Data loaders and the language-model task, each checked against what it must compute:
splits that partition the text, the vocabulary's count rule, piano-roll keys, IOBES
entities, next-character targets, and an evaluation that carries the state through the
whole split."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cli_support import write_corpus

from rnnkit.data.conll import entities
from rnnkit.data.music import load_piano_rolls
from rnnkit.data.text import Vocab, split_by_position
from rnnkit.training.options import DEFAULTS
from rnnkit.training.task import RunContext, get_task


def test_position_split_partitions_the_text_90_5_5():
    text = "".join(chr(97 + i % 26) for i in range(2000))
    parts = split_by_position(text)
    assert parts["train"] + parts["valid"] + parts["test"] == text
    assert [len(parts[s]) for s in ("train", "valid", "test")] == [1800, 100, 100]


def test_vocabulary_keeps_characters_seen_at_least_min_count_times():
    text = "aaabbc"
    assert Vocab.build(text, 1).chars == ["", "a", "b", "c"]
    assert Vocab.build(text, 2).chars == ["", "a", "b"]
    assert Vocab.build(text, 3).chars == ["", "a"]
    assert Vocab.build(text, 2).encode("cab").tolist() == [0, 1, 2]  # rarer characters are UNK (0)


def test_piano_roll_key_is_the_midi_pitch_minus_21(tmp_path):
    p = tmp_path / "rolls.json"
    p.write_text(json.dumps({"train": [[[21, 108], [60]]], "valid": [[[64]]]}))
    rolls = load_piano_rolls(p)
    expected = np.zeros((2, 88), dtype=np.uint8)
    expected[0, 0] = expected[0, 87] = expected[1, 60 - 21] = 1  # A0 is key 0, C8 key 87
    assert np.array_equal(rolls["train"][0], expected)
    assert np.flatnonzero(rolls["valid"][0][0]).tolist() == [64 - 21]


def test_iobes_end_and_single_tags_close_their_entity():
    tags = "S-PER O B-LOC E-LOC B-ORG I-ORG E-ORG S-LOC S-LOC".split()
    # (type, first token, one past the last token)
    assert entities(tags) == {("PER", 0, 1), ("LOC", 2, 4), ("ORG", 4, 7), ("LOC", 7, 8), ("LOC", 8, 9)}


def _lm_task(tmp_path, **overrides):
    cls = get_task("lm")
    corpus = write_corpus(tmp_path / "data")
    config = {"task": "lm", **DEFAULTS, **cls.defaults, **cls.presets["tiny"], "data": [str(corpus)], **overrides}
    task = cls(config)
    task.setup(RunContext())
    return task


def test_lm_batches_target_the_next_character_of_continuing_streams(tmp_path):
    task = _lm_task(tmp_path)
    text = task.train_ids
    batches = task.batches(None)
    previous = None
    for _ in range(6):
        batch = next(batches)
        x, y = batch.data                                   # (T, B)
        assert torch.equal(y[:-1], x[1:])                   # the target is the next character
        windows = text.unfold(0, x.shape[0], 1)             # every run of T training characters
        for b in range(x.shape[1]):                         # each row is such a run, y the run after it
            start = int((windows == x[:, b]).all(1).nonzero()[0])
            assert torch.equal(y[:, b], text[start + 1:start + 1 + x.shape[0]])
        if previous is not None and not batch.reset_carry:
            assert torch.equal(previous[-1], x[0])         # the next batch continues each stream
        previous = y


def test_lm_evaluation_carries_the_state_through_the_split(tmp_path):
    """With one evaluation stream the validation bpc is the cross-entropy of one pass over
    the whole split, computed here in a single call (the task reads it in chunks)."""
    task = _lm_task(tmp_path, eval_batch=1)
    torch.manual_seed(0)
    model = task.build_model().eval()
    H = task.config["hidden"]
    with torch.no_grad():  # a long memory and sharp predictions: a dropped state shows
        model.rnn.bias_ih_l0[H:2 * H] += 5.0
        model.head.weight.mul_(20.0)
    ids = torch.from_numpy(task.vocab.encode(task.corpus.valid))
    assert len(ids) > 2 * max(task.config["bptt"], 256)     # several chunks
    res = task.evaluate(model, "valid", RunContext())
    with torch.no_grad():
        logits, _ = model(ids[:-1].view(-1, 1))             # (N-1, 1, V)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[1:], reduction="sum").item()
    assert res["items"] == len(ids) - 1
    assert res["bpc"] == pytest.approx(nll / (len(ids) - 1) / math.log(2), rel=1e-5)
