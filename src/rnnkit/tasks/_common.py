"""Pieces shared by the built-in tasks (lm, tag, music, classify, forecast, adding, copy).

* :func:`recurrent_layer`: the recurrent layer that the model options of a run ask for.
* :func:`run_masked`: run any layer made by :func:`rnnkit.training.models.build_rnn` on
  padded sequences with their lengths. rnnkit modules take ``lengths=``; torch.nn ones get
  a PackedSequence. Either way a
  padded step never enters the state, bidirectional layers read each sequence backwards
  from its own last step, and outputs past a sequence's end are zero.
* :func:`last_hidden`: the last layer's final state(s) at each sequence's own length.
* :func:`split_file`: an evaluation ``--data`` path, a file or a folder of split files.
* :func:`epoch_order` / :func:`epoch_batches`: seeded, resumable batch order over a list
  of items, with positions ``{"epoch": e, "batch": b}`` and length bucketing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .. import networks
from ..data._files import find_split_files
from ..errors import UsageError
from ..training.models import build_rnn, variant_options


def recurrent_layer(config: Dict[str, Any], input_size: int, hidden: Optional[int] = None,
                    num_layers: Optional[int] = None) -> nn.Module:
    """:func:`rnnkit.training.models.build_rnn` with the run's model options: ``--arch``,
    ``--backend``, ``--hidden``, ``--layers``, ``--nonlinearity``, ``--dropout``,
    ``--bidirectional``, ``--gru-form``, ``--peephole``, ``--proj-size``, ``--layer-norm`` and the
    variants of SPEC section 16 (``--zoneout``, ``--recurrent-dropout``, ``--weight-drop``,
    ``--forget-bias``, ``--init chrono``) (``hidden`` and ``num_layers`` override the options,
    e.g. for the tagger's one-layer character encoder, which is then not projected:
    ``--proj-size`` is the main layer's)."""
    return build_rnn(config["arch"], input_size, config["hidden"] if hidden is None else hidden,
                     num_layers=config["layers"] if num_layers is None else num_layers,
                     nonlinearity=config["nonlinearity"], dropout=config["dropout"],
                     bidirectional=bool(config.get("bidirectional")),
                     gru_form=config.get("gru_form", "after"), backend=config["backend"],
                     peephole=bool(config.get("peephole")),
                     proj_size=int(config.get("proj_size") or 0) if hidden is None else 0,
                     layer_norm=bool(config.get("layer_norm")), variants=variant_options(config))


# ---- recurrent layers on padded batches --------------------------------------------------

def run_masked(rnn: nn.Module, x: torch.Tensor, lengths: torch.Tensor):
    """Run ``rnn`` on padded x (T, B, I) whose sequence b has ``lengths[b]`` steps.

    Returns (out (T, B, F) with zeros past each length, state tuple) where the state is
    what :func:`rnnkit.training.models.run_rnn` returns: ``(h_n,)``, ``(h_n, c_n)`` or
    ``(y_n,)``, each taken at the sequence's own last step.
    """
    T = x.shape[0]
    lengths = lengths.to(torch.int64).cpu()
    mask = (torch.arange(T)[:, None] < lengths[None, :]).to(x.dtype).unsqueeze(-1)  # (T, B, 1)
    if networks.network_of(rnn, None) is not None:
        out, state = rnn(x, lengths=lengths)
    else:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, state = rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    state = tuple(state) if isinstance(state, tuple) else (state,)
    return out * mask, state


def last_hidden(rnn: nn.Module, state: Tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(B, D*H): the last layer's final hidden state, both directions side by side."""
    h = state[0]                                       # (L*D, B, H)
    D = 2 if getattr(rnn, "bidirectional", False) else 1
    return torch.cat([h[-D + d] for d in range(D)], dim=-1)


def length_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(T, B) bool: True on real steps."""
    return torch.arange(T)[:, None] < lengths.cpu()[None, :]


# ---- evaluation data ---------------------------------------------------------------------
def split_file(path, split: str, suffixes: Sequence[str]) -> Path:
    """``rnnkit evaluate --data PATH``: a file as it is, or the ``split`` file of a folder
    whose file names say their split (the folders that ``rnnkit train --data`` reads)."""
    path = Path(path)
    if not path.is_dir():
        return path
    files = find_split_files(path, suffixes)
    if split not in files:
        named = {"train": "*train*", "valid": "*dev* or *valid*", "test": "*test*"}.get(split, split)
        raise UsageError(f"--data {path}: no {split} file ({named} with suffix {', '.join(suffixes)}); "
                         f"it has {', '.join(sorted(files)) or 'none'} (choose with --split)")
    return files[split]


# ---- batch order ---------------------------------------------------------------------------
def epoch_order(n: int, batch_size: int, seed: int, epoch: int, lengths: Optional[Sequence[int]] = None,
                bucket: int = 50) -> List[np.ndarray]:
    """The batches of one pass over ``n`` items, a pure function of (seed, epoch).

    Items are shuffled; with ``lengths``, each run of ``bucket`` batches is sorted by
    length before cutting (similar lengths share a batch: less padding), and the batches
    are shuffled again. The last batch may be smaller.
    """
    rng = np.random.default_rng([seed, epoch, 7919])
    order = rng.permutation(n)
    if lengths is not None:
        lengths = np.asarray(lengths)
        chunk = batch_size * bucket
        parts = [order[i:i + chunk] for i in range(0, n, chunk)]
        order = np.concatenate([p[np.argsort(lengths[p], kind="stable")] for p in parts])
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def epoch_batches(n: int, batch_size: int, seed: int, position, rank: int = 0, world: int = 1,
                  lengths: Optional[Sequence[int]] = None) -> Iterator[Tuple[np.ndarray, dict]]:
    """Endless (indices, position after them) over passes of ``n`` items.

    Under several processes each global batch of ``batch_size * world`` items is cut into
    ``world`` slices and this process takes slice ``rank``.
    """
    if n == 0:
        raise UsageError("the training split is empty")
    epoch = (position or {}).get("epoch", 0)
    b = (position or {}).get("batch", 0)
    while True:
        batches = epoch_order(n, batch_size * world, seed, epoch, lengths)
        while b < len(batches):
            idx = batches[b]
            if world > 1:
                idx = np.array_split(idx, world)[rank]
                if len(idx) == 0:
                    idx = batches[b][:1]
            b += 1
            nxt = {"epoch": epoch, "batch": b} if b < len(batches) else {"epoch": epoch + 1, "batch": 0}
            yield idx, nxt
        epoch, b = epoch + 1, 0


def shard(items: list, ctx) -> list:
    """This process's share of an evaluation list (every ``world_size``-th item)."""
    return items[ctx.rank::ctx.world_size]
