"""Long-memory benchmarks: ``rnnkit train adding`` and ``rnnkit train copy``.

The standard tests of the seeds' claim that gating (LSTM, GRU) keeps what a plain RNN
forgets (SPEC.md section 6): the answer depends on inputs ``--length`` steps back.

**Adding problem** (Hochreiter & Schmidhuber 1997, in the form of Le et al. 2015): each
step carries a number u_t ~ U(0, 1) and a marker m_t ∈ {0, 1}; exactly two markers are
1, one in the first half and one in the second. The target is the sum of the two marked
numbers, read from the final state::

    x_t = [u_t, m_t]                      (T, B, 2)
    ŷ   = W_out h_T + b_out               (B, 1)
    mse = mean (ŷ - Σ_t m_t u_t)²

Always answering 1 scores the variance of a sum of two U(0, 1), 1/6 ≈ 0.167
(``baseline_mse``); a model has *learned* the task when its validation MSE is below a
tenth of that (``--solved-below``, 0.0167).

**Copy memory** (Hochreiter & Schmidhuber 1997, in the form of Arjovsky et al. 2016):
10 symbols from an alphabet of 8, then ``--length`` - 1 blanks, a start marker, and 10
more blanks; the model must output blanks until the marker and then the 10 symbols::

    input   s_1 .. s_10  0 ... 0  9  0 ... 0       length T + 20, ids 0..9
    target  0 ...................... 0  s_1 .. s_10
    loss    mean cross-entropy over all T + 20 steps

A model that outputs blanks and then guesses uniformly scores 10 ln 8 / (T + 20)
(``baseline_loss``); ``accuracy`` is the share of the 10 copied symbols right (chance
1/8), and the task counts as learned at ``--solved-above`` (0.9).

Training batches are drawn afresh from a generator seeded by (seed, step); the
validation and test sets are fixed (``--eval-size`` sequences each, their own seeds).

``python -m rnnkit.tasks.sweep adding --lengths 50 100 200`` trains RNN, GRU and LSTM
at each length with the same budget and prints which of them learn.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..training.models import output_size, run_rnn
from ..training.options import add_option, nonneg_float, positive_int
from ..training.task import Batch, RunContext, StepResult, Task, UsageError, register
from ._common import recurrent_layer

BLANK, MARKER, SYMBOLS, COPY_N = 0, 9, 8, 10
VALID_SEED, TEST_SEED = 1_000_003, 2_000_029


def adding_batch(T: int, B: int, g: torch.Generator):
    """x (T, B, 2), y (B, 1): the adding problem."""
    u = torch.rand(T, B, generator=g)
    half = T // 2
    i = torch.randint(0, half, (B,), generator=g)
    j = torch.randint(half, T, (B,), generator=g)
    m = torch.zeros(T, B)
    cols = torch.arange(B)
    m[i, cols] = 1.0
    m[j, cols] = 1.0
    y = (u * m).sum(0, keepdim=True).t()                      # (B, 1)
    return torch.stack([u, m], dim=-1), y


def copy_batch(T: int, B: int, g: torch.Generator):
    """x (T + 20, B) ids, y (T + 20, B) ids: the copy-memory task."""
    s = torch.randint(1, SYMBOLS + 1, (COPY_N, B), generator=g)
    x = torch.zeros(T + 2 * COPY_N, B, dtype=torch.long)
    x[:COPY_N] = s
    x[T + COPY_N - 1] = MARKER
    y = torch.zeros_like(x)
    y[-COPY_N:] = s
    return x, y


class MemoryModel(nn.Module):
    """Recurrent layers and a linear head: on the final state (adding) or on every step (copy).

    forward(x) -> (B, 1) for adding (x (T, B, 2)); (T, B, 9) logits for copy (x (T, B) ids)
    """

    def __init__(self, kind: str, config: Dict[str, Any]):
        super().__init__()
        self.kind = kind
        n_in = 2 if kind == "adding" else SYMBOLS + 2
        self.rnn = recurrent_layer(config, n_in)
        self.head = nn.Linear(output_size(config), 1 if kind == "adding" else SYMBOLS + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "copy":
            x = F.one_hot(x, SYMBOLS + 2).float()              # (T, B, 10)
        h, _ = run_rnn(self.rnn, x, None)                       # (T, B, H)
        return self.head(h[-1]) if self.kind == "adding" else self.head(h)


class _MemoryTask(Task):
    kind = ""
    unit = "sequences"
    allows_bidirectional = False
    defaults = dict(length=100, eval_size=1000, hidden=128, layers=1, batch_size=50, lr=1e-3,
                    steps=2000, warmup=0, schedule="constant", eval_every=100, save_every=100,
                    log_every=20, clip=1.0)
    presets = {"tiny": dict(length=20, hidden=32, steps=60, eval_every=30, save_every=30, log_every=10,
                            eval_size=200, lr=1e-2),
               # docs/tasks.md: the LSTM (or --arch gru) with chrono initialisation (SPEC section 16)
               # learns the adding problem at T = 400 within 1500 steps.
               "chrono-400": dict(length=400, hidden=64, lr=3e-3, init="chrono", steps=10000, eval_every=500,
                                  save_every=500)}

    def __init__(self, config):
        super().__init__(config)
        self._sets: Dict[str, Any] = {}
        self.rank, self.world = 0, 1

    @classmethod
    def add_arguments(cls, parser, defaults):
        g = parser.add_argument_group(cls.name)
        add_option(g, "--length", defaults, "sequence length T (adding) / delay T (copy)",
                   type=positive_int, metavar="T")
        add_option(g, "--eval-size", defaults, "sequences in the validation and test sets",
                   type=positive_int, metavar="N")
        if cls.kind == "adding":
            add_option(g, "--solved-below", defaults, "validation MSE that counts as learned",
                       type=nonneg_float, metavar="MSE")
        else:
            add_option(g, "--solved-above", defaults, "copy accuracy that counts as learned",
                       type=nonneg_float, metavar="ACC")

    @classmethod
    def check_config(cls, config):
        if cls.kind == "adding" and config["length"] < 2:
            raise UsageError(f"--length: the adding problem needs at least 2 steps, got {config['length']}")

    def setup(self, ctx: RunContext) -> None:
        self.rank, self.world = ctx.rank, ctx.world_size

    def build_model(self) -> MemoryModel:
        return MemoryModel(self.kind, self.config)

    def _make(self, B: int, g: torch.Generator):
        T = self.config["length"]
        return adding_batch(T, B, g) if self.kind == "adding" else copy_batch(T, B, g)

    def batches(self, position: Optional[Dict[str, Any]]) -> Iterator[Batch]:
        step = (position or {}).get("step", 0)
        B = self.config["batch_size"]
        while True:
            g = torch.Generator().manual_seed(self.config["seed"] * 7_919 + step * 104_729 + self.rank)
            x, y = self._make(B, g)
            step += 1
            yield Batch(data=(x, y), size=B, position={"step": step})

    def _eval_set(self, split: str):
        if split not in ("train", "valid", "test"):
            raise UsageError(f"--split: expected train, valid or test, got {split!r}")
        if split not in self._sets:
            seed = {"valid": VALID_SEED, "test": TEST_SEED, "train": self.config["seed"] * 7_919}[split]
            self._sets[split] = self._make(self.config["eval_size"], torch.Generator().manual_seed(seed))
        return self._sets[split]

    @torch.no_grad()
    def evaluate(self, model, split: str, ctx: RunContext, limit: Optional[int] = None,
                 data: Optional[list] = None) -> Dict[str, float]:
        if data:
            raise UsageError(f"--data: the {self.name} task generates its data; evaluate --split valid or test")
        x, y = self._eval_set(split)
        n = y.shape[0] if self.kind == "adding" else y.shape[1]
        keep = list(range(n))[:limit or n][ctx.rank::ctx.world_size]
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        for s in range(0, len(keep), 500):
            b = keep[s:s + 500]
            if self.kind == "adding":
                out = model(x[:, b])
                sums[0] += ((out - y[b]) ** 2).sum().double()
                sums[1] += ((1.0 - y[b]) ** 2).sum().double()
            else:
                logits = model(x[:, b])                                    # (T, B, 9)
                yb = y[:, b]
                sums[0] += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                           reduction="sum").double() / yb.shape[0]
                sums[1] += (logits[-COPY_N:].argmax(-1) == yb[-COPY_N:]).sum().double() / COPY_N
            sums[2] += len(b)
        model.train(was_training)
        ctx.all_reduce_sum(sums)
        count = max(sums[2].item(), 1.0)
        if self.kind == "adding":
            mse = sums[0].item() / count
            return {"loss": mse, "mse": mse, "baseline_mse": sums[1].item() / count, "items": int(count)}
        T = self.config["length"] + 2 * COPY_N
        return {"loss": sums[0].item() / count, "accuracy": sums[1].item() / count,
                "baseline_loss": COPY_N * math.log(SYMBOLS) / T, "items": int(count)}

    def learned(self, res: Dict[str, float]) -> bool:
        if self.kind == "adding":
            return res["mse"] < self.config["solved_below"]
        return res["accuracy"] >= self.config["solved_above"]


@register
class AddingTask(_MemoryTask):
    name, kind = "adding", "adding"
    summary = "the adding problem (long memory): MSE, 0.167 for always answering 1"
    metric = "mse"
    metric_mode = "min"
    defaults = dict(_MemoryTask.defaults, solved_below=1 / 60)

    def step(self, model, batch: Batch, carry) -> StepResult:
        x, y = batch.data
        loss = F.mse_loss(model(x), y)
        return StepResult(loss=loss, count=y.shape[0], metrics={"mse": loss.item()})


@register
class CopyTask(_MemoryTask):
    name, kind = "copy", "copy"
    summary = "the copy-memory task (long memory): accuracy of the recalled symbols"
    metric = "accuracy"
    metric_mode = "max"
    defaults = dict(_MemoryTask.defaults, solved_above=0.9)
    presets = {**_MemoryTask.presets,
               # docs/tasks.md: the GRU with chrono initialisation (T_max = --length, SPEC section 16)
               # learns copy memory at T = 100 (90 % of the recalled symbols right) within 10,000 steps.
               "copy-100": dict(length=100, arch="gru", hidden=128, lr=2e-3, init="chrono", steps=10000,
                                eval_every=500, save_every=500)}

    def step(self, model, batch: Batch, carry) -> StepResult:
        x, y = batch.data
        logits = model(x)                                                   # (T, B, 9)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        acc = (logits[-COPY_N:].argmax(-1) == y[-COPY_N:]).float().mean().item()
        return StepResult(loss=loss, count=y.shape[1], metrics={"accuracy": acc})
