"""Polyphonic music modelling: ``rnnkit train music``.

The model reads a piano roll x_1..x_t (88 keys, 1 where a key sounds) and predicts the
next frame, every key an independent Bernoulli variable::

    h_t      = RNN(x_t, h_{t-1})                   --arch, --layers, --hidden  (T, B, H)
    logits_t = W_out dropout(h_t) + b_out                                       (T, B, 88)
    nll      = mean over predicted frames of  Σ_k BCE(σ(logits_t,k), x_{t+1,k})

``nll`` is the benchmark's number (Boulanger-Lewandowski et al. 2012): the negative
log-likelihood per time step in nats, summed over the 88 keys and averaged over every
predicted frame of every song (frames 2..T of each song, as in the evaluation code of
Bai et al. 2018). Songs are batched with their lengths; padding never enters the state
or the loss.

Data (``--data PATH``, default ``../shared/data/jsb-chorales/``): a JSON or pickle file
(or a folder holding one) with splits train, valid and optionally test; see
:mod:`rnnkit.data.music`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.music import KEYS, load_piano_rolls
from ..training.models import output_size
from ..training.options import add_option, positive_int
from ..training.task import Batch, RunContext, StepResult, Task, UsageError, register
from ..data._files import missing_data, shared_data
from ._common import epoch_batches, length_mask, recurrent_layer, run_masked


class MusicModel(nn.Module):
    """Piano roll in, next-frame key logits out.

    forward(x (T, B, 88) float, lengths (B,)) -> logits (T, B, 88)

    Example::

        >>> m = MusicModel(dict(arch="gru", backend="torch", hidden=16, layers=1, nonlinearity="tanh",
        ...                     gru_form="after", dropout=0.0))
        >>> tuple(m(torch.zeros(5, 2, 88), torch.tensor([5, 3])).shape)
        (5, 2, 88)
    """

    def __init__(self, config: Dict[str, Any]):
        super().__init__()
        self.rnn = recurrent_layer(config, KEYS)
        self.drop = nn.Dropout(config["dropout"])
        self.head = nn.Linear(output_size(config), KEYS)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h, _ = run_masked(self.rnn, x, lengths)        # (T, B, H)
        return self.head(self.drop(h))                 # (T, B, 88)


def _pad(songs: List[np.ndarray]):
    """x (T, B, 88) = frames 1..T-1, y = frames 2..T, lengths (B,) = len - 1."""
    lengths = torch.tensor([len(s) - 1 for s in songs])
    T = int(lengths.max())
    x = torch.zeros(T, len(songs), KEYS)
    y = torch.zeros(T, len(songs), KEYS)
    for b, s in enumerate(songs):
        roll = torch.from_numpy(s.astype(np.float32))
        x[:len(s) - 1, b] = roll[:-1]
        y[:len(s) - 1, b] = roll[1:]
    return x, y, lengths


def _nll_sum(logits: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Σ over real frames and keys of the binary cross-entropy."""
    mask = length_mask(lengths, y.shape[0]).unsqueeze(-1).to(logits.dtype)      # (T, B, 1)
    return (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * mask).sum()


@register
class MusicTask(Task):
    name = "music"
    summary = "polyphonic music (JSB Chorales piano rolls): negative log-likelihood per time step"
    metric = "nll"
    metric_mode = "min"
    unit = "frames"
    data_name = "training songs"
    allows_bidirectional = False
    defaults = dict(
        data="",                 # JSON/pickle of piano rolls or a folder with one (empty: shared JSB)
        eval_batch=64,           # songs per evaluation batch
        hidden=200, layers=1, dropout=0.3, batch_size=8, lr=2e-3, steps=3000, warmup=50,
        eval_every=100, save_every=100, weight_decay=1e-4,
    )
    presets = {
        # The results table of docs/tasks.md.
        "jsb": dict(hidden=200, layers=1, dropout=0.3, batch_size=8, lr=2e-3, steps=3000,
                    eval_every=100),
        # Wider and more regularised: the one where the GRU reaches 8.5 (docs/tasks.md).
        "jsb-large": dict(hidden=320, layers=1, dropout=0.3, batch_size=8, lr=3e-3, weight_decay=1e-2,
                          steps=3000, eval_every=100),
        # jsb-large with zoneout 0.15 on h and c and DropConnect 0.25 on W_hh (SPEC section 16):
        # the best LSTM of docs/tasks.md.
        "jsb-zoneout": dict(hidden=320, layers=1, dropout=0.3, batch_size=8, lr=3e-3, weight_decay=1e-2,
                            steps=3000, eval_every=100, zoneout=0.15, weight_drop=0.25),
        # CI: seconds.
        "tiny": dict(hidden=32, batch_size=8, steps=40, eval_every=20, save_every=20, log_every=10,
                     lr=1e-2, warmup=5, dropout=0.0),
    }

    def __init__(self, config):
        super().__init__(config)
        self.rolls: Dict[str, List[np.ndarray]] = {}
        self.source: Dict[str, Any] = {}
        self.rank, self.world = 0, 1

    @classmethod
    def add_arguments(cls, parser, defaults):
        g = parser.add_argument_group("music")
        add_option(g, "--data", defaults, "JSON or pickle file of piano rolls with train, valid [, test] "
                   "(or a folder holding one) (none: ../shared/data/jsb-chorales)", metavar="PATH")
        add_option(g, "--eval-batch", defaults, "songs per evaluation batch", type=positive_int, metavar="N")

    def _path(self) -> Path:
        return Path(self.config.get("data") or shared_data("jsb-chorales"))

    def _load(self) -> Dict[str, List[np.ndarray]]:
        path = self._path()
        if not path.exists():
            raise missing_data("--data", path, "a JSON/pickle file of piano rolls (or its folder)")
        rolls = load_piano_rolls(path)
        for split, songs in rolls.items():
            short = [i for i, s in enumerate(songs) if len(s) < 2]
            if short:
                raise UsageError(f"--data {path}: {split} song {short[0]} has fewer than 2 time steps")
        return rolls

    def setup(self, ctx: RunContext) -> None:
        self.rank, self.world = ctx.rank, ctx.world_size
        self.rolls = self._load()
        h = hashlib.sha256()
        for s in self.rolls["train"]:
            h.update(np.packbits(s).tobytes() + len(s).to_bytes(4, "little"))
        self.fingerprint = h.hexdigest()[:16]
        self.source = {"data": str(self._path()), "songs": {k: len(v) for k, v in self.rolls.items()},
                       "frames": {k: int(sum(len(s) - 1 for s in v)) for k, v in self.rolls.items()}}

    def state_dict(self) -> Dict[str, Any]:
        return {"source": self.source, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.source = state.get("source", {})
        self.fingerprint = state.get("fingerprint", "")

    def build_model(self) -> MusicModel:
        return MusicModel(self.config)

    def batches(self, position: Optional[Dict[str, Any]]) -> Iterator[Batch]:
        train = self.rolls["train"]
        for idx, nxt in epoch_batches(len(train), self.config["batch_size"], self.config["seed"], position,
                                      self.rank, self.world, [len(s) for s in train]):
            x, y, lengths = _pad([train[i] for i in idx])
            yield Batch(data=(x, y, lengths), size=int(lengths.sum()), position=nxt)

    def step(self, model, batch: Batch, carry) -> StepResult:
        x, y, lengths = batch.data
        frames = int(lengths.sum())
        loss = _nll_sum(model(x, lengths), y, lengths) / frames
        return StepResult(loss=loss, count=frames, metrics={"nll": loss.item()})

    def _songs(self, split: str, data: Optional[list]) -> List[np.ndarray]:
        if data:
            songs: List[np.ndarray] = []
            for p in data:
                rolls = load_piano_rolls(Path(p))
                if split not in rolls:
                    raise UsageError(f"--data {p}: no {split!r} split (it has {', '.join(rolls)})")
                songs += rolls[split]
            return songs
        if split not in ("train", "valid", "test"):
            raise UsageError(f"--split: expected train, valid or test, got {split!r}")
        if not self.rolls:
            self.rolls = self._load()
        if split not in self.rolls:
            raise UsageError(f"--split {split}: {self._path()} has no {split!r} split (it has "
                             f"{', '.join(self.rolls)}); evaluate --split valid")
        return self.rolls[split]

    @torch.no_grad()
    def evaluate(self, model, split: str, ctx: RunContext, limit: Optional[int] = None,
                 data: Optional[list] = None) -> Dict[str, float]:
        songs = self._songs(split, data)
        if limit:
            songs = songs[:limit]
        mine = songs[ctx.rank::ctx.world_size]
        sums = torch.zeros(2, dtype=torch.float64)        # [Σ nll, frames]
        was_training = model.training
        model.eval()
        n = self.config.get("eval_batch", 64)
        for s in range(0, len(mine), n):
            x, y, lengths = _pad(mine[s:s + n])
            sums[0] += _nll_sum(model(x, lengths), y, lengths).double()
            sums[1] += int(lengths.sum())
        model.train(was_training)
        ctx.all_reduce_sum(sums)
        nll = sums[0].item() / max(sums[1].item(), 1.0)
        return {"loss": nll, "nll": nll, "items": int(sums[1])}

    def reports_test(self) -> bool:
        return "test" in self.rolls
