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
    sha256                  digest of the tensor bytes: a flipped or missing byte is caught

Writing goes to a temporary file in the same folder, fsync, then ``os.replace``: a reader
(or a run killed mid-write) sees the old file or the new one, never a torn one.

:func:`load` is the public entry point (``rnnkit.load``)::

    model = rnnkit.load("runs/demo")          # a run folder (best.safetensors) or a file
    text = model.generate("def ", 200)        # language models
    lstm = torch.nn.LSTM(model.rnn.input_size, model.rnn.hidden_size)
    lstm.load_state_dict(model.rnn.state_dict())   # same names, same gate order
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .task import UsageError

__all__ = ["load", "save_checkpoint", "read_checkpoint", "resolve_checkpoint", "CheckpointError",
           "FORMAT", "FORMAT_VERSION", "TRAIN_FILE", "BEST_FILE"]

FORMAT = "rnnkit.checkpoint"
FORMAT_VERSION = 1
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
    except ValueError:
        raise CheckpointError(f"{where}: not a safetensors file (unreadable header); expected an "
                              "rnnkit checkpoint") from None
    end = max((v["data_offsets"][1] for k, v in header.items()
               if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
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
    _, start = _split_header(first, str(path))
    metadata["sha256"] = hashlib.sha256(first[start:]).hexdigest()
    write_atomic(path, _serialize(tensors, metadata))


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
    return p


def read_checkpoint(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(tensors, meta) of a checkpoint, every check done; never unpickles anything."""
    path = Path(path)
    where = str(path)
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
    if version != str(FORMAT_VERSION):
        raise CheckpointError(f"{where}: checkpoint format version {version}, but this rnnkit "
                              f"({_version()}) reads version {FORMAT_VERSION}")
    digest = hashlib.sha256(data[start:]).hexdigest()
    if raw.get("sha256") != digest:
        raise CheckpointError(f"{where}: corrupt (checksum mismatch); the tensor data was changed "
                              "or damaged, use an earlier checkpoint")
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(data)
    except Exception as e:  # pragma: no cover - caught by the checks above
        raise CheckpointError(f"{where}: unreadable tensors ({e})") from None
    meta: Dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("format", "format_version", "rnnkit_version", "kind", "task", "sha256"):
            meta[key] = value
        else:
            try:
                meta[key] = json.loads(value)
            except ValueError:
                raise CheckpointError(f"{where}: metadata field {key!r} is not valid JSON") from None
    for key in ("task", "config", "kind"):
        if key not in meta:
            raise CheckpointError(f"{where}: metadata has no {key!r}; not written by `rnnkit train`")
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
        if own[key].shape != value.shape:
            raise CheckpointError(f"{where}: weights do not match the model its configuration describes "
                                  f"({key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}); "
                                  "the file is damaged or from another architecture")
    model.load_state_dict(weights)


def model_from_checkpoint(tensors, meta, where: str, backend: Optional[str] = None,
                          arch: Optional[str] = None):
    """(task, model) rebuilt from a read checkpoint; model in eval mode."""
    from .models import ARCHS, check_model_config
    from .task import get_task

    try:
        cls = get_task(meta["task"])
    except UsageError:
        raise CheckpointError(f"{where}: written for task {meta['task']!r}, which this rnnkit "
                              "does not have") from None
    from .options import DEFAULTS

    # options added after the checkpoint was written take their defaults
    config = {**DEFAULTS, **cls.defaults, **meta["config"]}
    if config.get("arch") not in ARCHS:
        raise CheckpointError(f"{where}: architecture {config.get('arch')!r} is not one of "
                              f"{', '.join(ARCHS)}")
    if arch is not None and arch != config["arch"]:
        raise CheckpointError(f"{where}: checkpoint holds a {config['arch']} model, expected {arch}")
    if backend is not None:
        config["backend"] = backend
    check_model_config(config, cls.allows_bidirectional)
    task = cls(config)
    task.load_state_dict(meta.get("task_state") or {})
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
