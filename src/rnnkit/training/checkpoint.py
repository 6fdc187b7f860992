"""Checkpoints: one safetensors file, written atomically, read without unpickling.

A checkpoint is a single ``.safetensors`` file. Its tensors are

    model.<name>            the model's state_dict (torch.nn names: model.rnn.weight_ih_l0)
    optimizer.<id>.<key>    optimiser state (exp_avg, step, ...)          training checkpoints only
    rank.<key>              per-process state stacked over processes (W, ...): the torch RNG
                            state, the carried hidden state of truncated BPTT

and its string metadata holds JSON documents:

    format, format_version  "rnnkit.checkpoint", "1"
    rnnkit_version          the library that wrote it
    kind                    "train" (resumable: optimiser, scheduler, RNG, data position)
                            or "model" (weights only, e.g. best.safetensors)
    task, config            the task name and every resolved option
    task_state              what the task needs to rebuild the model (the vocabulary)
    trainer                 step, data position, scheduler, early-stopping and optimiser
                            hyper-parameters, metrics-log offset ("train" only)
    sha256                  digest of the whole file but this field: the header (every
                            tensor's name, dtype, shape and offsets, every metadata field)
                            and the tensor bytes, so a flipped, missing or relabelled byte
                            anywhere is caught (format version 1 covered the tensor bytes
                            only; such files still load, with that weaker check)

Reading validates everything before building anything: the header's structure, the
digest, the configuration (types and ranges of every option, as ``rnnkit train`` would
accept them, and a parameter budget checked on the ``meta`` device before any memory is
allocated) and the trainer state. Any failure is one :class:`CheckpointError` line naming
the file and the field.

Writing goes to a temporary file in the same folder, fsync, then ``os.replace``: a reader
(or a run killed mid-write) sees the old file or the new one, never a torn one.

:func:`load` is the public entry point (``rnnkit.load``)::

    model = rnnkit.load("runs/demo")          # a run folder (best.safetensors) or a file
    text = model.generate("def ", 200)        # language models
    lstm = torch.nn.LSTM(model.rnn.input_size, model.rnn.hidden_size)
    lstm.load_state_dict(model.rnn.state_dict())   # same names, same gate order
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .task import UsageError

__all__ = ["load", "save_checkpoint", "read_checkpoint", "resolve_checkpoint", "checkpoint_config",
           "check_trainer", "check_model_size", "CheckpointError", "FORMAT", "FORMAT_VERSION",
           "MAX_PARAMETERS", "TRAIN_FILE", "BEST_FILE"]

FORMAT = "rnnkit.checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = ("1", "2")           # 1: the digest covers the tensor bytes only
MAX_PARAMETERS = 2 ** 30                 # refuse models above this before allocating them
TRAIN_FILE = "checkpoint.safetensors"   # latest resumable state of a run folder
BEST_FILE = "best.safetensors"          # weights with the best validation metric

PathLike = Union[str, os.PathLike]


class CheckpointError(UsageError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rnnkit")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


# ---- atomic files ---------------------------------------------------------------------
def write_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + rename (same folder)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass


# ---- save / read ----------------------------------------------------------------------
def _serialize(tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def _digest(header: dict, body: bytes) -> str:
    """SHA-256 of a canonical form of the header without its ``sha256`` field, then the
    tensor bytes (format version 2)."""
    header = dict(header)
    header["__metadata__"] = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != "sha256"}
    canon = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    h = hashlib.sha256(struct.pack("<Q", len(canon)))
    h.update(canon)
    h.update(body)
    return h.hexdigest()


_DTYPES = {"BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64",
           "F8_E4M3", "F8_E5M2"}


def _check_entries(header: dict, body_len: int, where: str) -> int:
    """Validate every tensor entry of a safetensors header; the end of the tensor bytes."""
    end = 0
    for name, v in header.items():
        if name == "__metadata__":
            if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
                raise CheckpointError(f"{where}: header field __metadata__ must map names to strings")
            continue
        ok = (isinstance(v, dict) and v.get("dtype") in _DTYPES and isinstance(v.get("shape"), list)
              and all(type(d) is int and d >= 0 for d in v["shape"])
              and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2
              and all(type(o) is int and o >= 0 for o in v["data_offsets"])
              and v["data_offsets"][0] <= v["data_offsets"][1])
        if not ok:
            raise CheckpointError(f"{where}: header entry of tensor {name!r} is malformed (expected dtype, "
                                  "shape and data_offsets); the file is damaged")
        end = max(end, v["data_offsets"][1])
    return end


def _split_header(data: bytes, where: str) -> Tuple[dict, int]:
    """(header dict, offset of the tensor bytes); CheckpointError if malformed."""
    if len(data) < 8:
        raise CheckpointError(f"{where}: truncated or empty ({len(data)} bytes); expected an rnnkit "
                              "checkpoint (.safetensors)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise CheckpointError(f"{where}: truncated (header claims {n} bytes, file has {len(data)}); "
                              "expected an rnnkit checkpoint (.safetensors)")
    try:
        header = json.loads(data[8:8 + n])
        if not isinstance(header, dict):
            raise ValueError
    except (ValueError, RecursionError):
        raise CheckpointError(f"{where}: not a safetensors file (unreadable header); expected an "
                              "rnnkit checkpoint") from None
    end = _check_entries(header, len(data) - 8 - n, where)
    if 8 + n + end > len(data):
        raise CheckpointError(f"{where}: truncated ({len(data)} bytes, expected {8 + n + end}); the "
                              "file was cut short, use an earlier checkpoint")
    return header, 8 + n


def save_checkpoint(path: PathLike, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> None:
    """Atomically write ``tensors`` and JSON-able ``meta`` (see the module docstring)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "rnnkit_version": _version()}
    for key, value in meta.items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    first = _serialize(tensors, metadata)
    header, start = _split_header(first, str(path))
    metadata["sha256"] = _digest(header, first[start:])
    data = _serialize(tensors, metadata)
    final, start2 = _split_header(data, str(path))
    if _digest(final, data[start2:]) != metadata["sha256"]:  # pragma: no cover - a safetensors change
        raise RuntimeError("safetensors laid the tensors out differently on the second write")
    write_atomic(path, data)


def resolve_checkpoint(path: PathLike, prefer: str = BEST_FILE) -> Path:
    """A file as is; a run folder as its ``prefer`` file, else its training checkpoint."""
    p = Path(path)
    if p.is_dir():
        for name in (prefer, TRAIN_FILE, BEST_FILE):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: folder has no {TRAIN_FILE} or {BEST_FILE}; expected a run "
                              "folder written by `rnnkit train`")
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or folder; expected a checkpoint or a run folder")
    if not p.is_file():
        raise CheckpointError(f"{p}: not a regular file; expected a checkpoint (.safetensors) or a run folder")
    return p


def read_checkpoint(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(tensors, meta) of a checkpoint, every check done; never unpickles anything."""
    path = Path(path)
    where = str(path)
    if path.exists() and not path.is_file():
        raise CheckpointError(f"{where}: not a regular file; expected a checkpoint (.safetensors)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{where}: cannot read ({e.strerror})") from None
    header, start = _split_header(data, where)
    raw = header.get("__metadata__") or {}
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not an rnnkit checkpoint (format {raw.get('format')!r}, "
                              f"expected {FORMAT!r})")
    version = raw.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"{where}: checkpoint format version {version}, but this rnnkit "
                              f"({_version()}) reads versions {', '.join(READABLE_VERSIONS)}")
    if version == "1":  # written before the digest covered the header
        digest = hashlib.sha256(data[start:]).hexdigest()
    else:
        digest = _digest(header, data[start:])
    if raw.get("sha256") != digest:
        raise CheckpointError(f"{where}: corrupt (checksum mismatch); the file was changed or damaged "
                              "(header or tensor data), use an earlier checkpoint")
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(data)
    except Exception as e:  # a version-1 file whose header lies about its tensors
        raise CheckpointError(f"{where}: unreadable tensors ({str(e).splitlines()[0][:200]})") from None
    meta: Dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("format", "format_version", "rnnkit_version", "kind", "task", "sha256"):
            meta[key] = value
        else:
            try:
                meta[key] = json.loads(value)
            except (ValueError, RecursionError):
                raise CheckpointError(f"{where}: metadata field {key!r} is not valid JSON (or nested "
                                      "too deeply)") from None
    for key in ("task", "config", "kind"):
        if key not in meta:
            raise CheckpointError(f"{where}: metadata has no {key!r}; not written by `rnnkit train`")
    if meta["kind"] not in ("train", "model"):
        raise CheckpointError(f"{where}: kind: expected 'train' or 'model', got {meta['kind']!r}")
    if not isinstance(meta["config"], dict):
        raise CheckpointError(f"{where}: config: expected an object of options, got "
                              f"{type(meta['config']).__name__}")
    if "task_state" in meta and not isinstance(meta["task_state"], (dict, type(None))):
        raise CheckpointError(f"{where}: task_state: expected an object, got "
                              f"{type(meta['task_state']).__name__}")
    return tensors, meta


def prefixed(tensors: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The tensors under ``prefix.``, with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_weights(model: torch.nn.Module, weights: Dict[str, torch.Tensor], where: str) -> None:
    """``model.load_state_dict`` with a one-line CheckpointError on any mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise CheckpointError(f"{where}: weights do not match the model its configuration describes "
                              f"({what}); the file is damaged or from another architecture")
    for key, value in weights.items():
        if own[key].dtype != value.dtype:
            raise CheckpointError(f"{where}: tensor model.{key} has dtype {value.dtype}, expected "
                                  f"{own[key].dtype}; the file is damaged")
        if own[key].shape != value.shape:
            raise CheckpointError(f"{where}: weights do not match the model its configuration describes "
                                  f"({key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}); "
                                  "the file is damaged or from another architecture")
    model.load_state_dict(weights)


def checkpoint_config(meta: Dict[str, Any], where: str, overrides: Optional[Dict[str, Any]] = None):
    """(task class, configuration) of a read checkpoint, every option validated.

    Options added to rnnkit after the checkpoint was written take their defaults; the
    checkpoint's ``task`` decides the task (its ``config["task"]`` must agree); every
    value must be one that ``rnnkit train`` accepts (type, range, choice). ``overrides``
    (the options that may change on ``--resume``) replace stored values.
    """
    from .models import ARCHS
    from .options import DEFAULTS, check_config_values
    from .task import get_task

    name = meta["task"]
    try:
        cls = get_task(name)
    except UsageError:
        raise CheckpointError(f"{where}: written for task {name!r}, which this rnnkit does not have") from None
    stored = meta["config"]
    if stored.get("task", name) != name:
        raise CheckpointError(f"{where}: config.task {stored.get('task')!r} differs from the checkpoint's "
                              f"task {name!r}; the file was edited or damaged")
    config = {**DEFAULTS, **cls.defaults, **stored, **(overrides or {}), "task": name}
    if config.get("arch") not in ARCHS:
        raise CheckpointError(f"{where}: architecture {config.get('arch')!r} is not one of "
                              f"{', '.join(ARCHS)}")
    problem = check_config_values(cls, config)
    if problem:
        raise CheckpointError(f"{where}: config.{problem}")
    return cls, config


def check_model_size(task, where: str) -> int:
    """The number of parameters of ``task.build_model()``, counted on the ``meta`` device
    (nothing allocated); UsageError above :data:`MAX_PARAMETERS`."""
    with torch.device("meta"):
        model = task.build_model()
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_PARAMETERS:
        raise UsageError(f"{where}: the model would have {n:,} parameters ({4 * n / 2 ** 30:,.1f} GiB as "
                         f"float32), more than the budget of {MAX_PARAMETERS:,}; lower --hidden, --layers "
                         "or --embed")
    return n


def _is_int(v: Any, lo: int = 0) -> bool:
    return type(v) is int and v >= lo


def _is_number(v: Any) -> bool:
    import math

    return type(v) in (int, float) and math.isfinite(v)


def check_trainer(trainer: Any, where: str) -> Dict[str, Any]:
    """The ``trainer`` state of a resumable checkpoint, each field's type and range checked."""
    if not isinstance(trainer, dict):
        raise CheckpointError(f"{where}: trainer: expected the training state (an object), got "
                              f"{type(trainer).__name__}; a weights-only file cannot be resumed")
    checks = {
        "step": (lambda v: _is_int(v), "an integer >= 0"),
        "world_size": (lambda v: _is_int(v, 1), "an integer >= 1"),
        "carry": (lambda v: _is_int(v), "an integer >= 0"),
        "bad_evals": (lambda v: _is_int(v), "an integer >= 0"),
        "items": (lambda v: _is_int(v), "an integer >= 0"),
        "metrics_offset": (lambda v: v is None or _is_int(v), "an integer >= 0 or null"),
        "elapsed": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        "best": (lambda v: v is None or _is_number(v), "a number or null"),
        "position": (lambda v: v is None or isinstance(v, dict), "an object or null"),
        "stopped": (lambda v: v is None or isinstance(v, str), "a string or null"),
        "window_keys": (lambda v: isinstance(v, list) and all(isinstance(k, str) for k in v), "a list of names"),
        "optimizer": (lambda v: isinstance(v, dict) and isinstance(v.get("param_groups"), list)
                      and isinstance(v.get("state"), dict), "an object with param_groups and state"),
    }
    for key, (ok, what) in checks.items():
        if key in trainer and not ok(trainer[key]):
            raise CheckpointError(f"{where}: trainer.{key}: expected {what}, got {trainer[key]!r:.60}")
    for key in ("step", "optimizer"):
        if key not in trainer:
            raise CheckpointError(f"{where}: trainer has no {key!r}; the file was edited or damaged")
    return trainer


# what a damaged configuration or task state can raise while a model is rebuilt from it
_REBUILD_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


@contextlib.contextmanager
def _rebuilding(where: str):
    """Errors of rebuilding a task or model from a checkpoint as one CheckpointError line."""
    try:
        yield
    except _REBUILD_ERRORS as e:
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise CheckpointError(f"{where}: task_state or config do not describe a model ({type(e).__name__}: "
                              f"{first}); the file was edited or damaged") from None
    except CheckpointError:
        raise
    except UsageError as e:
        raise CheckpointError(str(e)) from None


def restore_task(cls, config: Dict[str, Any], meta: Dict[str, Any], where: str):
    """``cls(config)`` with the checkpoint's task state loaded and the model's size checked
    against the budget (on the meta device); every failure one CheckpointError line."""
    task = cls(config)
    with _rebuilding(where):
        task.load_state_dict(meta.get("task_state") or {})
        check_model_size(task, f"{where}: config")
    return task


def model_from_checkpoint(tensors, meta, where: str, backend: Optional[str] = None,
                          arch: Optional[str] = None):
    """(task, model) rebuilt from a read checkpoint; model in eval mode."""
    from .models import check_model_config

    cls, config = checkpoint_config(meta, where)
    if arch is not None and arch != config["arch"]:
        raise CheckpointError(f"{where}: checkpoint holds a {config['arch']} model, expected {arch}")
    if backend is not None:
        config["backend"] = backend
    check_model_config(config, cls.allows_bidirectional)
    task = restore_task(cls, config, meta, where)
    with _rebuilding(where):
        model = task.build_model()
    load_weights(model, prefixed(tensors, "model"), where)
    model.eval()
    return task, model


def load(path: PathLike, *, backend: Optional[str] = None, arch: Optional[str] = None) -> torch.nn.Module:
    """Load a trained model from a checkpoint file or a run folder, in one call.

    Args:
        path: a ``.safetensors`` checkpoint written by ``rnnkit train``, or its run
            folder (then ``best.safetensors``, else ``checkpoint.safetensors``).
        backend: ``"rnnkit"`` or ``"torch"`` to choose the recurrent layers' implementation
            (default: the one the run was trained with). Weights are interchangeable.
        arch: when given, raise unless the checkpoint holds this architecture.

    Returns:
        The task's model in eval mode, with ``model.config`` (the run's options) and,
        for language models, ``model.vocab``, ``model.encode``, ``model.decode`` and
        ``model.generate``. ``model.rnn`` is the recurrent layer with torch.nn's
        parameter names.

    Raises:
        rnnkit.training.checkpoint.CheckpointError: missing, truncated, corrupt, from
            another format version, or weights that do not fit its configuration.

    Example::

        >>> model = rnnkit.load("runs/demo")                       # doctest: +SKIP
        >>> model.generate("import ", length=80, temperature=0.8)  # doctest: +SKIP
    """
    file = resolve_checkpoint(path)
    tensors, meta = read_checkpoint(file)
    _, model = model_from_checkpoint(tensors, meta, str(file), backend=backend, arch=arch)
    model.config = dict(meta["config"])
    return model


# ---- optimiser state without pickle ---------------------------------------------------
def optimizer_state(optimizer: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Split an optimiser state_dict into tensors and a JSON-able rest."""
    sd = optimizer.state_dict()
    tensors: Dict[str, torch.Tensor] = {}
    rest: Dict[str, Dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{key}"] = value
            else:
                rest.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": rest}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor],
                         meta: Dict[str, Any]) -> None:
    state: Dict[int, Dict[str, Any]] = {}
    for key, value in prefixed(tensors, "optimizer").items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["state"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
