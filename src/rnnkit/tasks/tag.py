"""Sequence labelling: ``rnnkit train tag``.

A bidirectional tagger reads a whole sentence and labels every word, so a word's tag can
depend on its context on both sides (the seeds' "apple" the fruit and Apple the
company). Each word w_t is represented by a learned embedding of its lower-cased form and
by character features from a recurrent encoder over its spelling (which sees case,
prefixes and suffixes, and gives unseen words a representation)::

    c_w      = [→h_last ; ←h_first] of RNN_char(E_char[w's characters])   (N, D*C)
    x_t      = dropout([E_word[lower(w_t)] ; c_{w_t}])                      (T, B, E + D*C)
    h_t      = BiRNN(x_1..x_T)_t          --arch, --layers, --hidden       (T, B, D*H)
    logits_t = W_out dropout(h_t) + b_out                                   (T, B, K)
    loss     = mean over words of -log softmax(logits_t)[tag_t]

Training replaces a word of training count n by the unknown word with probability
α / (α + n) (``--word-dropout`` α, Kiperwasser & Goldberg 2016) so that the unknown-word
embedding is learned. Metrics: token accuracy, and for BIO tag sets the entity-level
precision, recall and F1 of conlleval.

Data (``--data DIR``, default ``../shared/data/ud-english-ewt``): a folder whose file
names say their split, ``*train*``, ``*dev*`` / ``*valid*`` / ``*testa*`` and, when
present, ``*test*`` / ``*testb*``; CoNLL-U files (``.conllu``, also ``.xz`` / ``.gz``)
tagged with UPOS (``--tag-column xpos`` for XPOS), or CoNLL NER files (``.txt``,
``.conll``, ``.bio``, ...; word first, tag last). See :mod:`rnnkit.data.conll`.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data.conll import Sentence, entity_counts, is_bio, prf, read_tagged
from ..training.models import output_size
from ..training.options import add_option, nonneg_float, nonneg_int, positive_int
from ..training.task import Batch, RunContext, StepResult, Task, UsageError, register
from ..data._files import find_split_files, missing_data, shared_data
from ._common import epoch_batches, last_hidden, recurrent_layer, run_masked, split_file

SUFFIXES = (".conllu", ".conll", ".txt", ".bio", ".iob", ".iob2", ".tsv")
PAD, UNK = 0, 1            # word and character ids


class Tagger(nn.Module):
    """Word embeddings + a recurrent character encoder -> (bi)RNN -> linear head over tags.

    Args:
        n_words, n_chars, n_tags: vocabulary sizes (ids 0 = padding, 1 = unknown).
        config: ``arch, backend, hidden, layers, nonlinearity, gru_form, dropout,
            bidirectional, embed, char_embed, char_hidden``.

    forward(words (T, B) int64, lengths (B,), chars (Lc, N) int64, char_lengths (N,),
    forms (T, B) int64 index into the N character sequences) -> logits (T, B, K)

    Example::

        >>> cfg = dict(arch="lstm", backend="torch", hidden=8, layers=1, nonlinearity="tanh",
        ...            gru_form="after", dropout=0.0, bidirectional=True, embed=6, char_embed=4,
        ...            char_hidden=5)
        >>> m = Tagger(10, 12, 3, cfg)
        >>> words = torch.tensor([[2, 3], [4, 0]]); lengths = torch.tensor([2, 1])
        >>> chars = torch.tensor([[2, 3, 4], [5, 6, 0]]); char_lengths = torch.tensor([2, 2, 1])
        >>> forms = torch.tensor([[0, 1], [2, 0]])
        >>> tuple(m(words, lengths, chars, char_lengths, forms).shape)
        (2, 2, 3)
    """

    def __init__(self, n_words: int, n_chars: int, n_tags: int, config: Dict[str, Any]):
        super().__init__()
        bi = bool(config.get("bidirectional"))
        self.word_embed = nn.Embedding(n_words, config["embed"], padding_idx=PAD)
        self.char_embed = nn.Embedding(n_chars, config["char_embed"], padding_idx=PAD)
        self.char_rnn = recurrent_layer(config, config["char_embed"], config["char_hidden"], num_layers=1)
        char_out = config["char_hidden"] * (2 if bi else 1)
        self.rnn = recurrent_layer(config, config["embed"] + char_out)
        self.drop = nn.Dropout(config["dropout"])
        self.head = nn.Linear(output_size(config), n_tags)

    def forward(self, words, lengths, chars, char_lengths, forms):
        _, state = run_masked(self.char_rnn, self.char_embed(chars), char_lengths)
        c = last_hidden(self.char_rnn, state)                         # (N, D*C)
        x = torch.cat([self.word_embed(words), c[forms]], dim=-1)     # (T, B, E + D*C)
        h, _ = run_masked(self.rnn, self.drop(x), lengths)            # (T, B, D*H)
        return self.head(self.drop(h))                                # (T, B, K)


@register
class TagTask(Task):
    name = "tag"
    summary = "sequence labelling: POS tags (CoNLL-U) or BIO entities (token accuracy, entity F1)"
    metric = "accuracy"      # entity "f1" when the tags are BIO (set in _build_index)
    metric_mode = "max"
    unit = "words"
    data_name = "training file"
    defaults = dict(
        data="",                 # folder with *train* / *dev* [/ *test*] files (empty: shared EWT)
        tag_column="upos",       # CoNLL-U column: upos | xpos
        embed=100,               # word embedding size
        char_embed=32,           # character embedding size
        char_hidden=64,          # character encoder units per direction
        word_dropout=0.25,       # alpha: a training word seen n times becomes UNK w.p. alpha/(alpha+n)
        lowercase=True,          # word embeddings of lower-cased forms (characters keep the case)
        eval_batch=256,          # sentences per evaluation batch
        eval_limit=0,            # sentences per periodic validation (0: all)
        # model and optimisation
        bidirectional=True, hidden=128, layers=2, dropout=0.33,
        batch_size=32, lr=2e-3, steps=4000, warmup=100, eval_every=400, save_every=400,
        weight_decay=1e-5,
    )
    presets = {
        # The results table of docs/tasks.md: about 10 passes over EWT's training set.
        "ewt": dict(steps=4000, eval_every=400, save_every=400),
        # The cell-variant table of docs/tasks.md: the LSTM with a forget-gate bias of 1 and lr 3e-3.
        "ewt-fb": dict(arch="lstm", forget_bias=1.0, lr=3e-3, steps=4000, eval_every=400, save_every=400),
        # ewt-fb with DropConnect on W_hh (AWD-LSTM's weight drop): dev UPOS 95.32 % (seed 0), 95.18 % (seed 1)
        "ewt-wd": dict(arch="lstm", forget_bias=1.0, lr=3e-3, weight_drop=0.2, steps=4000, eval_every=400,
                       save_every=400),
        # ewt-wd with 256 units per direction (4,300,305 parameters; the same 4000 steps of 32
        # sentences): dev UPOS 95.51 / 95.33 / 95.47 % (seeds 0 / 1 / 2), best checkpoints
        "ewt-wide": dict(arch="lstm", hidden=256, forget_bias=1.0, lr=3e-3, weight_drop=0.2, steps=4000,
                         eval_every=400, save_every=400),
        # CI: seconds.
        "tiny": dict(hidden=32, layers=1, embed=32, char_embed=16, char_hidden=16, batch_size=16,
                     steps=60, eval_every=30, save_every=30, log_every=10, eval_limit=300,
                     lr=1e-2, warmup=5, dropout=0.1),
    }

    def __init__(self, config):
        super().__init__(config)
        self.words: List[str] = []
        self.chars: List[str] = []
        self.tags: List[str] = []
        self.word_count: Dict[str, int] = {}
        self.source: Dict[str, Any] = {}
        self.files: Dict[str, Path] = {}
        self.data: Dict[str, List[Sentence]] = {}
        self._index: Dict[str, Dict[str, int]] = {}
        self.rank, self.world = 0, 1

    # --- command line --------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser, defaults):
        g = parser.add_argument_group("tagging")
        add_option(g, "--data", defaults, "folder of *train* / *dev* [/ *test*] files: .conllu[.xz] "
                   "or CoNLL NER (.txt, .conll, .bio; word first, tag last) (none: ../shared/data/"
                   "ud-english-ewt)", metavar="DIR")
        add_option(g, "--tag-column", defaults, "CoNLL-U tag column", choices=("upos", "xpos"))
        add_option(g, "--embed", defaults, "word embedding size", type=positive_int, metavar="E")
        add_option(g, "--char-embed", defaults, "character embedding size", type=positive_int, metavar="E")
        add_option(g, "--char-hidden", defaults, "character encoder units per direction",
                   type=positive_int, metavar="N")
        add_option(g, "--word-dropout", defaults, "alpha of the UNK replacement alpha/(alpha+count)",
                   type=nonneg_float, metavar="A")
        add_option(g, "--lowercase", defaults, "lower-case the word-embedding vocabulary",
                   action="store_true")
        add_option(g, "--eval-batch", defaults, "sentences per evaluation batch", type=positive_int,
                   metavar="N")
        add_option(g, "--eval-limit", defaults, "sentences per periodic validation (0: all)",
                   type=nonneg_int, metavar="N")

    # --- data ------------------------------------------------------------------------------
    def _folder(self) -> Path:
        return Path(self.config.get("data") or shared_data("ud-english-ewt"))

    def _find_files(self) -> Dict[str, Path]:
        folder = self._folder()
        if not folder.exists():
            raise missing_data("--data", folder, "a folder of CoNLL-U or CoNLL NER files")
        if not folder.is_dir():
            raise UsageError(f"--data {folder}: expected a folder holding *train* and *dev* files, "
                             "got a file")
        files = find_split_files(folder, SUFFIXES)
        for split in ("train", "valid"):
            if split not in files:
                want = "*train*" if split == "train" else "*dev* or *valid*"
                raise UsageError(f"--data {folder}: no {split} file ({want} with suffix "
                                 f"{', '.join(SUFFIXES)}, optionally .xz/.gz)")
        return files

    def _read(self, path: Path) -> List[Sentence]:
        return read_tagged(path, self.config.get("tag_column", "upos"))

    def setup(self, ctx: RunContext) -> None:
        cfg = self.config
        self.rank, self.world = ctx.rank, ctx.world_size
        self.files = self._find_files()
        self.data = {s: self._read(p) for s, p in self.files.items() if s != "test"}
        train = self.data["train"]
        if not self.words:
            lower = cfg["lowercase"]
            counts = Counter(w.lower() if lower else w for ws, _ in train for w in ws)
            self.words = ["<pad>", "<unk>"] + sorted(counts, key=lambda w: (-counts[w], w))
            self.word_count = dict(counts)
            chars = Counter(c for ws, _ in train for w in ws for c in w)
            self.chars = ["<pad>", "<unk>"] + sorted(chars, key=lambda c: (-chars[c], c))
            self.tags = sorted({t for _, ts in train for t in ts})
        unknown = sorted({t for _, ts in self.data["valid"] for t in ts} - set(self.tags))
        if unknown:
            raise UsageError(f"--data {self.files['valid']}: tags not in the training file: "
                             + ", ".join(unknown[:10]))
        h = hashlib.sha256()
        for ws, ts in train:
            h.update(("\t".join(ws) + "\n" + "\t".join(ts) + "\n").encode())
        self.fingerprint = h.hexdigest()[:16]
        self.source = {"data": str(self._folder()), "files": {s: str(p) for s, p in self.files.items()},
                       "sentences": {s: len(v) for s, v in self.data.items()},
                       "tokens": {s: sum(len(w) for w, _ in v) for s, v in self.data.items()},
                       "bio": is_bio(self.tags)}
        self._build_index()

    def _build_index(self) -> None:
        self.metric = "f1" if is_bio(self.tags) else "accuracy"
        self._index = {"words": {w: i for i, w in enumerate(self.words)},
                       "chars": {c: i for i, c in enumerate(self.chars)},
                       "tags": {t: i for i, t in enumerate(self.tags)}}

    def _counts(self) -> torch.Tensor:
        """(V,) training count of every word id (1 for padding and UNK)."""
        if getattr(self, "_count_cache", None) is None or len(self._count_cache) != len(self.words):
            self._count_cache = torch.tensor([1.0, 1.0] + [float(self.word_count.get(w, 1))
                                                           for w in self.words[2:]])
        return self._count_cache

    def state_dict(self) -> Dict[str, Any]:
        return {"words": self.words, "chars": self.chars, "tags": self.tags, "word_count": self.word_count,
                "source": self.source, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for key in ("words", "chars", "tags", "word_count", "source", "fingerprint"):
            if key in state:
                setattr(self, key, state[key])
        self._build_index()

    def build_model(self) -> Tagger:
        return Tagger(len(self.words), len(self.chars), len(self.tags), self.config)

    # --- tensors -----------------------------------------------------------------------------
    def _encode(self, sents: List[Sentence], unk_drop: bool = False):
        """(words (T, B), tags (T, B) with -100 padding, lengths (B,), chars (Lc, N),
        char_lengths (N,), forms (T, B))."""
        wi, ci, ti = self._index["words"], self._index["chars"], self._index["tags"]
        lower = self.config.get("lowercase", True)
        B = len(sents)
        T = max(len(ws) for ws, _ in sents)
        words = torch.zeros(T, B, dtype=torch.long)
        tags = torch.full((T, B), -100, dtype=torch.long)
        forms = torch.zeros(T, B, dtype=torch.long)
        lengths = torch.tensor([len(ws) for ws, _ in sents])
        form_id: Dict[str, int] = {}
        for b, (ws, ts) in enumerate(sents):
            for t, (w, tag) in enumerate(zip(ws, ts)):
                key = w.lower() if lower else w
                words[t, b] = wi.get(key, UNK)
                tags[t, b] = ti.get(tag, -100)
                forms[t, b] = form_id.setdefault(w, len(form_id))
        if unk_drop and self.config["word_dropout"] > 0:
            alpha = self.config["word_dropout"]
            count = self._counts()[words]                                  # (T, B)
            drop = torch.rand(T, B) < alpha / (alpha + count)            # global generator: resumable
            words = torch.where(drop & (words > UNK), torch.full_like(words, UNK), words)
        Lc = max(len(f) for f in form_id)
        chars = torch.zeros(Lc, len(form_id), dtype=torch.long)
        char_lengths = torch.zeros(len(form_id), dtype=torch.long)
        for f, n in form_id.items():
            chars[:len(f), n] = torch.tensor([ci.get(c, UNK) for c in f])
            char_lengths[n] = len(f)
        return words, tags, lengths, chars, char_lengths, forms

    # --- training ----------------------------------------------------------------------------
    def batches(self, position: Optional[Dict[str, Any]]) -> Iterator[Batch]:
        train = self.data["train"]
        lengths = [len(ws) for ws, _ in train]
        for idx, nxt in epoch_batches(len(train), self.config["batch_size"], self.config["seed"], position,
                                      self.rank, self.world, lengths):
            sents = [train[i] for i in idx]
            yield Batch(data=sents, size=sum(len(ws) for ws, _ in sents), position=nxt)

    def step(self, model, batch: Batch, carry) -> StepResult:
        words, tags, lengths, chars, char_lengths, forms = self._encode(batch.data, unk_drop=True)
        logits = model(words, lengths, chars, char_lengths, forms)        # (T, B, K)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tags.reshape(-1), ignore_index=-100)
        with torch.no_grad():
            real = tags >= 0
            acc = (logits.argmax(-1)[real] == tags[real]).float().mean().item()
        return StepResult(loss=loss, count=int(real.sum()), metrics={"accuracy": acc})

    # --- evaluation --------------------------------------------------------------------------
    def _eval_sentences(self, split: str, data: Optional[list]) -> List[Sentence]:
        if data:
            out: List[Sentence] = []
            for p in data:
                out += self._read(split_file(p, split, SUFFIXES))
            return out
        if split not in ("train", "valid", "test"):
            raise UsageError(f"--split: expected train, valid or test, got {split!r}")
        if split not in self.data:
            files = self.files or self._find_files()
            if split not in files:
                raise UsageError(f"--split {split}: {self._folder()} has no {split} file "
                                 f"(*{'test' if split == 'test' else split}* with suffix "
                                 f"{', '.join(SUFFIXES)}); evaluate the valid split or pass --data FILE")
            self.data[split] = self._read(files[split])
        return self.data[split]

    @torch.no_grad()
    def evaluate(self, model, split: str, ctx: RunContext, limit: Optional[int] = None,
                 data: Optional[list] = None) -> Dict[str, float]:
        sents = self._eval_sentences(split, data)
        if limit:
            sents = sents[:limit]
        mine = sents[ctx.rank::ctx.world_size]
        order = sorted(range(len(mine)), key=lambda i: len(mine[i][0]))
        bio = is_bio(self.tags)
        sums = torch.zeros(6, dtype=torch.float64)    # [nll, tokens, correct, ent correct, predicted, gold]
        was_training = model.training
        model.eval()
        n = self.config.get("eval_batch", 256)
        for s in range(0, len(order), n):
            batch = [mine[i] for i in order[s:s + n]]
            words, tags, lengths, chars, char_lengths, forms = self._encode(batch)
            logits = model(words, lengths, chars, char_lengths, forms)
            real = tags >= 0
            # tags unseen in training count as errors and add no loss
            sums[0] += F.cross_entropy(logits[real], tags[real], reduction="sum").double()
            sums[1] += sum(len(ws) for ws, _ in batch)
            pred = logits.argmax(-1)
            sums[2] += (pred[real] == tags[real]).sum()
            if bio:
                for b, (_, gold) in enumerate(batch):
                    guess = [self.tags[i] for i in pred[:len(gold), b].tolist()]
                    sums[3:6] += torch.tensor(entity_counts(gold, guess), dtype=torch.float64)
        model.train(was_training)
        ctx.all_reduce_sum(sums)
        tokens = max(sums[1].item(), 1.0)
        res = {"loss": sums[0].item() / tokens, "accuracy": sums[2].item() / tokens, "items": int(sums[1])}
        if bio:
            res.update(prf(*sums[3:6].tolist()))
        return res

    def reports_test(self) -> bool:
        return "test" in self.files

    def demo_sample(self, model) -> Optional[str]:
        """The first validation sentence, tagged."""
        sents = self.data.get("valid") or []
        if not sents:
            return None
        words, _ = sents[0]
        enc = self._encode([sents[0]])
        was = model.training
        model.eval()
        with torch.no_grad():
            pred = model(enc[0], *enc[2:]).argmax(-1)[:, 0].tolist()
        model.train(was)
        return " ".join(f"{w}/{self.tags[p]}" for w, p in zip(words, pred))
