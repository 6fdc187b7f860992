"""Classification of variable-length multivariate sequences: ``rnnkit train classify``.

    z_t    = (x_t - μ) / σ                 per feature, μ and σ from the training split
    h_n    = RNN(z_1..z_n)                 read up to each sequence's own length n (lengths=)
    logits = W_out dropout(h_n) + b_out    h_n: the last layer's final state, both
                                           directions side by side with --bidirectional
    loss   = -log softmax(logits)[label]

A batch pads sequences to the longest one, and the recurrent layers receive the lengths:
a padded step never enters the state, and the backward direction starts at each
sequence's own last step, so the logits do not depend on the padding (a test checks it).

Data: ``--dataset japanese-vowels`` (the default) reads JapaneseVowels from an installed
``sktime`` or ``aeon``; ``--data PATH`` reads a folder of split files named ``*train*``,
``*valid*`` / ``*dev*``, ``*test*`` (``.npz``, ``.csv`` or ``.ts``, see
:mod:`rnnkit.data.sequences`), or one file used as the training split. Without a
validation file, a stratified ``--valid-fraction`` of the training split (a fixed
permutation, the same for every --seed) is held out for validation.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.sequences import japanese_vowels_dir, read_sequences
from ..training.models import output_size
from ..training.options import add_option, probability
from ..training.task import Batch, RunContext, StepResult, Task, UsageError, register
from ..data._files import find_split_files
from ._common import epoch_batches, last_hidden, recurrent_layer, run_masked, split_file

DATASETS = ("japanese-vowels",)
SUFFIXES = (".npz", ".csv", ".ts")


class SequenceClassifier(nn.Module):
    """Standardise -> recurrent layers (with lengths) -> final state -> linear head.

    forward(x (T, B, F), lengths (B,)) -> logits (B, K)

    Example::

        >>> m = SequenceClassifier(3, 4, dict(arch="lstm", backend="torch", hidden=8, layers=1,
        ...     nonlinearity="tanh", gru_form="after", dropout=0.0, bidirectional=True))
        >>> tuple(m(torch.randn(6, 2, 3), torch.tensor([6, 2])).shape)
        (2, 4)
    """

    def __init__(self, n_features: int, n_classes: int, config: Dict[str, Any]):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.rnn = recurrent_layer(config, n_features)
        self.drop = nn.Dropout(config["dropout"])
        self.head = nn.Linear(output_size(config), n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std                        # (T, B, F)
        _, state = run_masked(self.rnn, z, lengths)
        return self.head(self.drop(last_hidden(self.rnn, state)))   # (B, K)


def pad(seqs: List[np.ndarray], pad_value: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x (T_max, B, F), lengths (B,)) of a list of (T_i, F) arrays."""
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.full((int(lengths.max()), len(seqs), seqs[0].shape[1]), pad_value)
    for b, s in enumerate(seqs):
        x[:len(s), b] = torch.from_numpy(s)
    return x, lengths


def stratified_holdout(labels: List[str], fraction: float, seed: int = 0) -> Tuple[List[int], List[int]]:
    """(train indices, held-out indices): ``fraction`` of every class, by a fixed permutation."""
    rng = np.random.default_rng([seed, 4242])
    keep, held = [], []
    for label in sorted(set(labels)):
        idx = [i for i, l in enumerate(labels) if l == label]
        idx = [idx[i] for i in rng.permutation(len(idx))]
        n = int(round(fraction * len(idx)))
        if len(idx) > 1:
            n = min(max(n, 1), len(idx) - 1)
        else:
            n = 0
        held += idx[:n]
        keep += idx[n:]
    return sorted(keep), sorted(held)


@register
class ClassifyTask(Task):
    name = "classify"
    summary = "classify variable-length multivariate sequences (JapaneseVowels, .npz/.csv/.ts): accuracy"
    metric = "accuracy"
    metric_mode = "max"
    unit = "sequences"
    defaults = dict(
        dataset="japanese-vowels",   # built-in data set (needs sktime or aeon); --data replaces it
        data="",                     # folder of *train* / *valid* / *test* files, or one training file
        valid_fraction=0.2,          # held out of train when there is no validation file
        bidirectional=True, hidden=64, layers=1, dropout=0.2, batch_size=16, lr=3e-3, steps=800,
        warmup=20, eval_every=50, save_every=50, log_every=10, weight_decay=1e-4,
    )
    presets = {
        "tiny": dict(hidden=16, steps=40, eval_every=20, save_every=20, log_every=10, lr=1e-2, warmup=5),
    }

    def __init__(self, config):
        super().__init__(config)
        self.classes: List[str] = []
        self.n_features = 0
        self.mean: List[float] = []
        self.std: List[float] = []
        self.source: Dict[str, Any] = {}
        self.splits: Dict[str, Tuple[List[np.ndarray], List[str]]] = {}
        self.rank, self.world = 0, 1

    @classmethod
    def add_arguments(cls, parser, defaults):
        g = parser.add_argument_group("classification")
        add_option(g, "--dataset", defaults, "built-in data set (JapaneseVowels from an installed sktime "
                   "or aeon)", choices=DATASETS)
        add_option(g, "--data", defaults, "folder of *train* / *valid* / *test* files (.npz, .csv, .ts) "
                   "or one training file; replaces --dataset", metavar="PATH")
        add_option(g, "--valid-fraction", defaults, "share of train held out for validation when there "
                   "is no validation file", type=probability, metavar="F")

    # --- data ------------------------------------------------------------------------------------
    def _files(self) -> Dict[str, Path]:
        data = self.config.get("data")
        if data:
            path = Path(data)
            if not path.exists():
                raise UsageError(f"--data {path}: no such file or folder")
            if path.is_file():
                return {"train": path}
            files = find_split_files(path, SUFFIXES)
            if "train" not in files:
                raise UsageError(f"--data {path}: no training file (*train* with suffix "
                                 f"{', '.join(SUFFIXES)})")
            return files
        folder = japanese_vowels_dir()
        if folder is None:
            raise UsageError("--dataset japanese-vowels: needs the sktime or aeon package, which ship "
                             "the data set (pip install sktime); or pass --data PATH")
        return {"train": folder / "JapaneseVowels_TRAIN.ts", "test": folder / "JapaneseVowels_TEST.ts"}

    def _load_splits(self) -> Dict[str, Tuple[List[np.ndarray], List[str]]]:
        files = self._files()
        splits = {s: read_sequences(p) for s, p in files.items()}
        if "valid" not in splits:
            seqs, labels = splits["train"]
            keep, held = stratified_holdout(labels, self.config.get("valid_fraction", 0.2))
            if not held:
                raise UsageError(f"--valid-fraction {self.config.get('valid_fraction')}: holds out no "
                                 "sequence; raise it or give a validation file")
            splits["valid"] = ([seqs[i] for i in held], [labels[i] for i in held])
            splits["train"] = ([seqs[i] for i in keep], [labels[i] for i in keep])
        self._files_found = files
        return splits

    def setup(self, ctx: RunContext) -> None:
        self.rank, self.world = ctx.rank, ctx.world_size
        self.splits = self._load_splits()
        seqs, labels = self.splits["train"]
        widths = {s: v[0][0].shape[1] for s, v in self.splits.items()}
        if len(set(widths.values())) != 1:
            raise UsageError(f"--data: the splits have different numbers of features {widths}")
        if not self.classes:
            self.classes = sorted(set(labels), key=lambda c: (len(c), c))
            allx = np.concatenate(seqs)
            self.n_features = allx.shape[1]
            self.mean = allx.mean(0).tolist()
            self.std = np.maximum(allx.std(0), 1e-6).tolist()
        for split, (_, ls) in self.splits.items():
            unknown = sorted(set(ls) - set(self.classes))
            if unknown:
                raise UsageError(f"--data: the {split} split has labels not in the training split: "
                                 + ", ".join(unknown[:10]))
        h = hashlib.sha256()
        for s, l in zip(seqs, labels):
            h.update(s.tobytes() + l.encode())
        self.fingerprint = h.hexdigest()[:16]
        self.source = {"data": self.config.get("data") or self.config.get("dataset"),
                       "files": {s: str(p) for s, p in self._files_found.items()},
                       "sequences": {s: len(v[0]) for s, v in self.splits.items()}}

    def state_dict(self) -> Dict[str, Any]:
        return {"classes": self.classes, "n_features": self.n_features, "mean": self.mean, "std": self.std,
                "source": self.source, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for key in ("classes", "n_features", "mean", "std", "source", "fingerprint"):
            if key in state:
                setattr(self, key, state[key])

    def build_model(self) -> SequenceClassifier:
        m = SequenceClassifier(self.n_features, len(self.classes), self.config)
        m.mean.copy_(torch.tensor(self.mean))
        m.std.copy_(torch.tensor(self.std))
        return m

    # --- training ----------------------------------------------------------------------------------
    def _targets(self, labels: List[str]) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([index.get(l, -100) for l in labels])

    def batches(self, position: Optional[Dict[str, Any]]) -> Iterator[Batch]:
        seqs, labels = self.splits["train"]
        for idx, nxt in epoch_batches(len(seqs), self.config["batch_size"], self.config["seed"], position,
                                      self.rank, self.world):
            x, lengths = pad([seqs[i] for i in idx])
            y = self._targets([labels[i] for i in idx])
            yield Batch(data=(x, lengths, y), size=len(idx), position=nxt)

    def step(self, model, batch: Batch, carry) -> StepResult:
        x, lengths, y = batch.data
        logits = model(x, lengths)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean().item()
        return StepResult(loss=loss, count=len(y), metrics={"accuracy": acc})

    # --- evaluation ----------------------------------------------------------------------------------
    def _split(self, split: str, data: Optional[list]):
        if data:
            seqs, labels = [], []
            for p in data:
                s, l = read_sequences(split_file(p, split, SUFFIXES))
                seqs += s
                labels += l
            return seqs, labels
        if split not in ("train", "valid", "test"):
            raise UsageError(f"--split: expected train, valid or test, got {split!r}")
        if not self.splits:
            self.splits = self._load_splits()
        if split not in self.splits:
            raise UsageError(f"--split {split}: the data has no {split} file; evaluate --split valid "
                             "or pass --data FILE")
        return self.splits[split]

    @torch.no_grad()
    def evaluate(self, model, split: str, ctx: RunContext, limit: Optional[int] = None,
                 data: Optional[list] = None) -> Dict[str, float]:
        seqs, labels = self._split(split, data)
        if limit:
            seqs, labels = seqs[:limit], labels[:limit]
        if seqs and seqs[0].shape[1] != self.n_features:
            raise UsageError(f"--data: sequences have {seqs[0].shape[1]} features, the model "
                             f"{self.n_features}")
        seqs, labels = seqs[ctx.rank::ctx.world_size], labels[ctx.rank::ctx.world_size]
        sums = torch.zeros(3, dtype=torch.float64)        # [nll, correct, count]
        was_training = model.training
        model.eval()
        for s in range(0, len(seqs), 256):
            x, lengths = pad(seqs[s:s + 256])
            y = self._targets(labels[s:s + 256])
            logits = model(x, lengths)
            known = y >= 0
            sums[0] += F.cross_entropy(logits[known], y[known], reduction="sum").double() if known.any() else 0
            sums[1] += (logits.argmax(-1) == y).sum()
            sums[2] += len(y)
        model.train(was_training)
        ctx.all_reduce_sum(sums)
        n = max(sums[2].item(), 1.0)
        return {"loss": sums[0].item() / n, "accuracy": sums[1].item() / n, "items": int(sums[2])}

    def reports_test(self) -> bool:
        return "test" in self.splits
