"""Options shared by every task, and their defaults in one visible block.

A task's own defaults (``Task.defaults``) override these; a preset (``--preset NAME``)
overrides both; an option given on the command line overrides everything. ``rnnkit
train TASK --help`` shows the effective default of every option and ``--show-config``
prints the fully resolved configuration without training.
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Dict, Optional

# ---- defaults -------------------------------------------------------------------------
DEFAULTS: Dict[str, Any] = dict(
    # model (rnnkit.training.models.build_rnn)
    arch="lstm",             # rnn | jordan | lstm | gru | gru-rb (rnnkit.networks)
    backend="rnnkit",        # rnnkit (C++ core) | torch (torch.nn, the reference)
    hidden=256,              # hidden units per layer and direction
    layers=1,                # stacked recurrent layers
    nonlinearity="tanh",     # rnn/jordan: tanh | relu | identity
    peephole=False,          # lstm: peephole connections from the cell state (SPEC section 13)
    proj_size=0,             # lstm: project h to this many units (LSTMP, SPEC section 14); 0: none
    layer_norm=False,        # lstm, gru: layer normalisation, haste's form (SPEC section 15)
    zoneout=0.0,             # zoneout rate of every state, in training (SPEC section 16)
    recurrent_dropout=0.0,   # variational dropout of h_{t-1} before W_hh, one mask per sequence
    weight_drop=0.0,         # DropConnect on W_hh, one mask per forward (AWD-LSTM)
    forget_bias=None,        # lstm/gru: initial bias of the gate that keeps the state (none: torch's)
    init="default",          # lstm/gru gate biases: default (torch's) | chrono (Tallec & Ollivier 2018)
    chrono_tmax=0,           # --init chrono: T_max, the longest dependency (0: the task's --length)
    gru_form="after",        # earlier spelling: before = --arch gru-rb (kept for old checkpoints)
    dropout=0.0,             # between stacked layers and before the output head
    bidirectional=False,     # only for tasks that may see the whole sequence
    # optimisation
    optimizer="adamw",       # adamw | sgd | rmsprop
    lr=2e-3,
    weight_decay=0.0,
    momentum=0.9,            # sgd / rmsprop
    clip=1.0,                # max global gradient norm; 0 disables (the norm is logged anyway)
    schedule="cosine",       # constant | cosine | linear | step
    warmup=50,               # linear warm-up steps
    min_lr=0.1,              # cosine/linear: final lr as a fraction of --lr; step: factor per decay
    batch_size=32,
    steps=2000,              # optimiser steps in total
    max_time=0.0,            # stop after this many seconds of training (0: no limit)
    # validation, early stopping, checkpoints, logs
    eval_every=200,          # validate every N steps (and at the end)
    patience=0,              # stop after N validations without improvement (0: never)
    save_every=200,          # write a resumable checkpoint every N steps (and at the end)
    log_every=10,            # write a training record to metrics.jsonl every N steps
    seed=0,
    threads=0,               # torch intra-op threads (0: cores / processes on this machine)
    out="",                  # run directory (empty: runs/TASK-ARCH-TIMESTAMP)
    overwrite=False,         # replace an existing run directory
    progress="auto",         # auto (when stderr is a terminal) | on | off
    tensorboard="auto",      # auto (when the tensorboard package is installed) | on | off
)

# Options that may be changed when resuming a run (``rnnkit train --resume DIR --steps N``);
# everything else would make the resumed run a different run.
RESUMABLE_OVERRIDES = frozenset(
    {"steps", "max_time", "eval_every", "save_every", "log_every", "patience", "threads",
     "progress", "tensorboard"})


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "" or value is None or value == []:
        return "none"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def add_option(parser: argparse.ArgumentParser, flag: str, defaults: Dict[str, Any], help: str,
               **kwargs) -> None:
    """Add ``flag`` whose default is ``defaults[dest]``, shown in the help text.

    The argparse default is SUPPRESS, so options the user did not give are absent from
    the namespace and a preset or a resumed configuration can fill them.
    """
    dest = kwargs.pop("dest", flag.lstrip("-").replace("-", "_"))
    default = defaults.get(dest)
    if kwargs.get("action") == "store_true":
        kwargs.pop("action")
        kwargs["action"] = argparse.BooleanOptionalAction
    parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS,
                        help=f"{help} (default: {_fmt(default)})", **kwargs)


# ---- bounded option types ---------------------------------------------------------------
# Every numeric option has bounds, checked by argparse on the command line and by
# :func:`check_config_values` on the configuration stored in a checkpoint.
MAX_COUNT = 2 ** 31 - 1      # upper bound of any count (steps, sizes, lengths)
MAX_HIDDEN = 65_536          # hidden units per layer (the parameter budget applies as well)
MAX_LAYERS = 256
MAX_THREADS = 1024
MAX_SEED = 2 ** 32 - 1
MAX_SAMPLE_LENGTH = 100_000  # characters of one `rnnkit sample`


def int_range(lo: int, hi: int = MAX_COUNT):
    """An argparse type: an integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}" + (f" and <= {hi}" if hi != MAX_COUNT
                                                                               else "") + f", got {text}")
        return value

    parse.__name__ = f"int_range_{lo}_{hi}"
    return parse


def float_range(lo: float, hi: float = float("inf"), hi_open: bool = False):
    """An argparse type: a finite number in [lo, hi] (or [lo, hi) when ``hi_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
        if not (lo <= value and (value < hi if hi_open else value <= hi)):
            upper = "" if hi == float("inf") else f", {hi:g}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}{upper}, got {text}"
                                             if upper else f"expected a number >= {lo:g}, got {text}")
        return value

    parse.__name__ = f"float_range_{lo}_{hi}"
    return parse


positive_int = int_range(1)
nonneg_int = int_range(0)
nonneg_float = float_range(0.0)
probability = float_range(0.0, 1.0, hi_open=True)
hidden_size = int_range(1, MAX_HIDDEN)
layer_count = int_range(1, MAX_LAYERS)
thread_count = int_range(0, MAX_THREADS)
seed_value = int_range(-MAX_SEED, MAX_SEED)   # negative seeds were always accepted


def option_parser(cls, defaults: Optional[Dict[str, Any]] = None) -> argparse.ArgumentParser:
    """A parser with every option of task ``cls`` (its own and the common ones)."""
    defaults = {**DEFAULTS, **cls.defaults} if defaults is None else defaults
    parser = argparse.ArgumentParser(add_help=False)
    cls.add_arguments(parser, defaults)
    add_common_options(parser, defaults, cls.allows_bidirectional)
    return parser


def check_config_values(cls, config: Dict[str, Any]) -> Optional[str]:
    """None when every option of ``config`` is a value ``rnnkit train`` accepts for task
    ``cls`` (type, range, choice), else ``"name: what was expected, got what"``.

    Values equal to the defaults are accepted as they are."""
    defaults = {**DEFAULTS, **cls.defaults}
    for action in option_parser(cls, defaults)._actions:
        key = action.dest
        if key not in config or (key in defaults and config[key] == defaults[key]
                                 and type(config[key]) is type(defaults[key])):
            continue
        value = config[key]
        if isinstance(action, argparse.BooleanOptionalAction):
            if not isinstance(value, bool):
                return f"{key}: expected true or false, got {value!r:.60}"
            continue
        if action.nargs in ("+", "*"):
            if not isinstance(value, list):
                return f"{key}: expected a list, got {value!r:.60}"
            items = value
        else:
            items = [value]
        for item in items:
            problem = _check_value(action, item)
            if problem:
                return f"{key}: {problem}"
    return None


def _check_value(action: argparse.Action, value: Any) -> Optional[str]:
    if action.type is None:
        if not isinstance(value, str):
            return f"expected a string, got {value!r:.60}"
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return f"expected a number, got {value!r:.60}"
        try:
            parsed = action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            return f"{e}"
        if isinstance(value, str) and not isinstance(parsed, str):
            return f"expected a number, got the string {value!r:.60}"
        if isinstance(parsed, int) and not isinstance(value, int):
            return f"expected an integer, got {value!r:.60}"
    if action.choices is not None and value not in action.choices:
        return f"expected one of {', '.join(map(str, action.choices))}, got {value!r:.60}"
    return None


def add_common_options(parser: argparse.ArgumentParser, defaults: Dict[str, Any],
                       allows_bidirectional: bool = True) -> None:
    """The model, optimisation and bookkeeping options every task has."""
    from .models import ARCHS, BACKENDS, NONLINEARITIES, arch_option

    m = parser.add_argument_group("model")
    add_option(m, "--arch", defaults, "recurrent network (gru: torch.nn's reset-after GRU; gru-rb: the seeds' "
               "reset-before GRU)", type=arch_option, choices=ARCHS)
    add_option(m, "--backend", defaults, "implementation of the recurrent layers", choices=BACKENDS)
    add_option(m, "--hidden", defaults, "hidden units per layer", type=hidden_size, metavar="N")
    add_option(m, "--layers", defaults, "stacked recurrent layers", type=layer_count, metavar="N")
    add_option(m, "--nonlinearity", defaults, "rnn/jordan activation", choices=NONLINEARITIES)
    add_option(m, "--peephole", defaults, "LSTM peepholes from the cell state to the gates (SPEC section 13)",
               action="store_true")
    add_option(m, "--proj-size", defaults, "LSTM projection of h to N < --hidden units (torch.nn.LSTM's "
               "proj_size, SPEC section 14); 0: none", type=nonneg_int, metavar="N")
    add_option(m, "--layer-norm", defaults, "LSTM / GRU layer normalisation in haste's LayerNormLSTM / "
               "LayerNormGRU form (SPEC section 15)", action="store_true")
    add_option(m, "--zoneout", defaults, "zoneout rate of every recurrent state (SPEC section 16)",
               type=probability, metavar="P")
    add_option(m, "--recurrent-dropout", defaults, "variational dropout of h_{t-1} before W_hh, one mask "
               "per sequence", type=probability, metavar="P")
    add_option(m, "--weight-drop", defaults, "DropConnect rate on W_hh, one mask per forward",
               type=probability, metavar="P")
    add_option(m, "--forget-bias", defaults, "lstm/gru: initial bias of the gate that keeps the state",
               type=float_range(-100.0, 100.0), metavar="B")
    add_option(m, "--init", defaults, "lstm/gru gate-bias initialisation", choices=("default", "chrono"))
    add_option(m, "--chrono-tmax", defaults, "--init chrono: the longest dependency in steps (0: --length)",
               type=nonneg_int, metavar="T")
    add_option(m, "--gru-form", defaults, "earlier spelling of the GRU form: --arch gru --gru-form before "
               "is --arch gru-rb", choices=("after", "before"))
    add_option(m, "--dropout", defaults, "dropout between layers and before the head",
               type=probability, metavar="P")
    if allows_bidirectional:
        add_option(m, "--bidirectional", defaults, "run each layer in both directions",
                   action="store_true")

    o = parser.add_argument_group("optimisation")
    add_option(o, "--optimizer", defaults, "optimiser", choices=("adamw", "sgd", "rmsprop"))
    add_option(o, "--lr", defaults, "peak learning rate", type=nonneg_float, metavar="LR")
    add_option(o, "--weight-decay", defaults, "weight decay", type=nonneg_float, metavar="WD")
    add_option(o, "--momentum", defaults, "momentum (sgd, rmsprop)", type=nonneg_float, metavar="M")
    add_option(o, "--clip", defaults, "clip the global gradient norm to this (0: off)",
               type=nonneg_float, metavar="NORM")
    add_option(o, "--schedule", defaults, "learning-rate schedule",
               choices=("constant", "cosine", "linear", "step"))
    add_option(o, "--warmup", defaults, "linear warm-up steps", type=nonneg_int, metavar="N")
    add_option(o, "--min-lr", defaults, "final lr / peak lr (step: decay factor)",
               type=nonneg_float, metavar="F")
    add_option(o, "--batch-size", defaults, "sequences per batch and process",
               type=positive_int, metavar="B")
    add_option(o, "--steps", defaults, "optimiser steps", type=positive_int, metavar="N")
    add_option(o, "--max-time", defaults, "stop after this many seconds of training (0: no limit)",
               type=nonneg_float, metavar="S")

    r = parser.add_argument_group("run")
    add_option(r, "--eval-every", defaults, "validate every N steps", type=positive_int, metavar="N")
    add_option(r, "--patience", defaults, "early stopping after N validations without improvement (0: off)",
               type=nonneg_int, metavar="N")
    add_option(r, "--save-every", defaults, "resumable checkpoint every N steps",
               type=positive_int, metavar="N")
    add_option(r, "--log-every", defaults, "training record every N steps", type=positive_int, metavar="N")
    add_option(r, "--seed", defaults, "random seed (a run is repeatable)", type=seed_value, metavar="S")
    add_option(r, "--threads", defaults, "torch threads (0: cores / processes)", type=thread_count, metavar="N")
    add_option(r, "--out", defaults, "run directory", metavar="DIR")
    add_option(r, "--overwrite", defaults, "replace an existing run directory", action="store_true")
    add_option(r, "--progress", defaults, "progress bar", choices=("auto", "on", "off"))
    add_option(r, "--tensorboard", defaults, "TensorBoard event files", choices=("auto", "on", "off"))
