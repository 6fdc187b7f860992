"""The Task interface: the problem-specific half of a training run.

rnnkit's engine (:mod:`rnnkit.training.engine`) knows how to optimise, clip, schedule,
validate, stop early, checkpoint, resume, log and run on several processes. It knows
nothing about text, music or tags. A *task* supplies the rest, by subclassing
:class:`Task` and registering itself in :data:`TASKS` (``rnnkit train NAME``) with the
:func:`register` decorator. The built-in tasks are the modules that
``rnnkit/tasks/__init__.py`` imports; :func:`load_builtin_tasks` imports that package.

What a task supplies, and when the engine calls it::

    cls.add_arguments(parser)   # its own command-line options (engine/model ones are added for it)
    task = cls(config)          # config: the resolved options, a JSON-able dict
    task.setup(ctx)             # read and split data, build vocabularies; UsageError on bad input
    task.check_resume(state)    # when resuming: the data's fingerprint is the checkpoint's
    model = task.build_model()  # an nn.Module (torch.manual_seed(seed) was called just before)
    for batch in task.batches(position):           # endless; resumes at `position`
        result = task.step(model, batch, carry)    # forward + loss, no backward
        carry = detached(result.carry)             # truncated BPTT: state crosses batches
    task.evaluate(model, "valid", ctx, limit=...)  # {"loss": ..., task.metric: ...}; limit is
                                                   # config["eval_limit"] between steps, None at the end
    task.sample(model, prime=..., ...)             # text for `rnnkit sample` (optional)
    # at the end of training; best: the model selected on validation (best.safetensors)
    task.evaluate(best, "test", ctx)               # when task.reports_test(): summary.json "test"
    task.demo_sample(model)                        # a line or two about the last weights (optional)
    task.write_artefacts(best, run_dir)            # e.g. forecast.png (optional)

Checkpoints store ``config`` and ``task.state_dict()`` (JSON-able: a vocabulary, label
names, a data fingerprint) next to the weights; ``rnnkit.load`` and ``rnnkit evaluate``
rebuild a model with ``cls(config)``, ``task.load_state_dict(state)``,
``task.build_model()`` and never call ``setup`` (so no training data is read).

Rules that keep a run exactly resumable:

* ``batches(position)`` is a pure function of ``(config, data, position)``: the same
  position yields the same batches. ``Batch.position`` is where the stream continues
  *after* that batch; it is JSON-able and stored in every checkpoint.
* Randomness in a step (dropout) comes from torch's global generator, whose state the
  engine saves; data order must come from generators seeded by ``config["seed"]`` and
  the position (e.g. the epoch), never from global state.
* ``StepResult.carry`` is ``None`` or a tuple of tensors; the engine detaches it, hands it
  to the next ``step`` and stores it in checkpoints (one copy per process).

Under ``torchrun`` the engine wraps the model in DistributedDataParallel and each task
shards its own data with ``ctx.rank`` / ``ctx.world_size``; ``evaluate`` adds its
per-process sums with ``ctx.all_reduce_sum`` so every process returns the global value.

Example (a complete, if small, task: predict the running mean of a noisy sequence)::

    class RunningMean(Task):
        name, summary, metric, unit = "mean", "running mean of a noisy sequence", "mse", "steps"
        defaults = {"steps": 200, "hidden": 16}

        def setup(self, ctx):
            self.rank = ctx.rank                     # nothing to read from disk

        def build_model(self):
            rnn = recurrent_layer(self.config, 1)    # --arch, --hidden, --layers, ... (rnnkit.tasks._common)
            return Regressor(rnn, nn.Linear(output_size(self.config), 1))   # forward(x, state) -> (y, state)

        def batches(self, position):
            step = (position or {}).get("step", 0)
            while True:
                g = torch.Generator().manual_seed(self.config["seed"] * 7919 + step * 131 + self.rank)
                x = torch.randn(20, self.config["batch_size"], 1, generator=g)   # (T, B, 1)
                step += 1
                yield Batch(data=x, size=x.shape[1], position={"step": step})

        def step(self, model, batch, carry):
            x = batch.data
            target = x.cumsum(0) / torch.arange(1, x.shape[0] + 1).view(-1, 1, 1)
            y, _ = model(x, None)
            loss = ((y - target) ** 2).mean()
            return StepResult(loss=loss, count=x.shape[1], metrics={"mse": loss.item()})

        def evaluate(self, model, split, ctx, limit=None, data=None):
            ...                                      # fixed seeded batches, no grad
            return {"loss": mse, "mse": mse}

    register(RunningMean)   # or @register above the class; built-in tasks are imported by
                            # rnnkit/tasks/__init__.py
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Tuple, Type

import torch

from ..errors import UsageError  # re-exported: rnnkit.training.task.UsageError

__all__ = ["Task", "Batch", "StepResult", "RunContext", "UsageError", "TASKS", "register", "get_task"]


@dataclass
class Batch:
    """One training batch as the engine sees it.

    data:        whatever :meth:`Task.step` consumes (e.g. ``(inputs, targets)`` tensors)
    size:        items in this process's batch, for throughput (e.g. characters)
    position:    JSON-able position of the stream *after* this batch (goes in checkpoints)
    reset_carry: drop the carried state before this batch (start of a new pass)
    """

    data: Any
    size: int
    position: Dict[str, Any]
    reset_carry: bool = False


@dataclass
class StepResult:
    """What :meth:`Task.step` returns.

    loss:    scalar tensor to minimise (a mean over ``count`` items)
    count:   number of items the loss averages over (weights the logged average)
    carry:   ``None`` or a tuple of tensors carried to the next batch (truncated BPTT)
    metrics: extra per-step numbers to show and log, e.g. ``{"bpc": 2.1}`` (means)
    """

    loss: torch.Tensor
    count: int
    carry: Optional[Tuple[torch.Tensor, ...]] = None
    metrics: Dict[str, float] = field(default_factory=dict)


@dataclass
class RunContext:
    """Where a task runs: this process's rank, the number of processes, the seed.

    ``all_reduce_sum`` adds a tensor over all processes in place and returns it (a no-op
    for one process); tasks use it in ``evaluate`` to return global sums.
    """

    rank: int = 0
    world_size: int = 1
    seed: int = 0
    device: torch.device = torch.device("cpu")

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Task:
    """Base class of a training task; see the module docstring for the life cycle.

    Class attributes a subclass sets:

    name:        the word after ``rnnkit train``
    summary:     one line for ``rnnkit train --help``
    metric:      validation metric used for early stopping and the best checkpoint; a task
                 may set ``self.metric`` in ``setup`` / ``load_state_dict`` when it depends
                 on the data (the tagger: entity F1 for BIO tags, else accuracy)
    metric_mode: ``"min"`` or ``"max"``
    unit:        what ``Batch.size`` counts, for the throughput figure (``"chars"``)
    defaults:    task-specific option defaults; may override engine/model defaults
    presets:     named bundles of option values for ``--preset NAME``
    allows_bidirectional: False for tasks that must not see the future (language models)
    data_name:   what the fingerprint covers, for the --resume error ("training text")

    A task sets ``self.fingerprint`` in ``setup`` (a hash of its training data) and keeps
    it in ``state_dict``; :meth:`check_resume` compares it with the checkpoint's.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    metric: ClassVar[str] = "loss"
    metric_mode: ClassVar[str] = "min"
    unit: ClassVar[str] = "items"
    defaults: ClassVar[Dict[str, Any]] = {}
    presets: ClassVar[Dict[str, Dict[str, Any]]] = {}
    allows_bidirectional: ClassVar[bool] = True
    data_name: ClassVar[str] = "training data"

    def __init__(self, config: Dict[str, Any]):
        self.config = config
        self.fingerprint = ""

    # --- command line -----------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, defaults: Dict[str, Any]) -> None:
        """Add the task's own options. Use :func:`rnnkit.training.options.add_option`
        so that help shows the default and presets can fill unset values."""

    @classmethod
    def check_config(cls, config: Dict[str, Any]) -> None:
        """Reject invalid option combinations with a :class:`UsageError` (before any
        file is written)."""

    # --- data and model ---------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        """Read and split the training and validation data, build vocabularies."""
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        """JSON-able state needed to rebuild the model without the data (vocabulary)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (from a checkpoint)."""

    def check_resume(self, state: Dict[str, Any]) -> None:
        """Called after ``setup`` when resuming, with the checkpoint's task state; raises
        :class:`UsageError` when the training data changed under the run (its fingerprint)."""
        old = state.get("fingerprint")
        if old and old != self.fingerprint:
            raise UsageError(f"--resume: the {self.data_name} changed since the checkpoint (fingerprint "
                             f"{self.fingerprint}, checkpoint {old}); resume needs the same data")

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def describe(self) -> str:
        """One line about the data printed when training starts (after ``setup``)."""
        return ""

    # --- training ---------------------------------------------------------------
    def batches(self, position: Optional[Dict[str, Any]]) -> Iterator[Batch]:
        """Endless iterator of training batches starting at ``position`` (None: start)."""
        raise NotImplementedError

    def step(self, model: torch.nn.Module, batch: Batch, carry) -> StepResult:
        """Forward pass and loss of one batch (the engine does backward and update)."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, split: str, ctx: RunContext,
                 limit: Optional[int] = None, data: Optional[list] = None) -> Dict[str, float]:
        """Metrics on ``split`` ("valid" or "test"), or on the files in ``data``; at most
        ``limit`` items when given. Must include ``"loss"`` and ``self.metric``."""
        raise NotImplementedError

    # --- after training -----------------------------------------------------------
    def reports_test(self) -> bool:
        """True when training ends by evaluating the test split, on the model selected on
        validation (best.safetensors), into ``summary.json["test"]`` and a ``test split:``
        line: tasks whose data has a held-out test split say so after ``setup``."""
        return False

    def write_artefacts(self, model: torch.nn.Module, run_dir: Path) -> List[Path]:
        """Write the task's own files into the run folder at the end of training (e.g.
        ``forecast.png``), from the model selected on validation; returns their paths."""
        return []

    def sample(self, model: torch.nn.Module, *, prime: Optional[str], length: int,
               temperature: float, top_k: int, generator: torch.Generator) -> str:
        """Generate from the model (``rnnkit sample``); tasks that cannot, raise UsageError."""
        raise UsageError(f"task {self.name!r} does not support sampling")

    def demo_sample(self, model: torch.nn.Module) -> Optional[str]:
        """A short sample printed at the end of ``rnnkit train`` (None: nothing)."""
        return None


TASKS: Dict[str, Type[Task]] = {}
"""The registry: ``rnnkit train NAME`` looks NAME up here."""


def register(cls: Type[Task]) -> Type[Task]:
    """Add a Task subclass to :data:`TASKS` (usable as a class decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}.name must be set")
    TASKS[cls.name] = cls
    return cls


def load_builtin_tasks() -> Dict[str, Type[Task]]:
    """:data:`TASKS` with the built-in tasks registered: importing :mod:`rnnkit.tasks`
    imports each task module, whose ``@register`` adds its class. (Imported here, not at
    the top: the tasks are built on this module.)"""
    import rnnkit.tasks  # noqa: F401

    return TASKS


def get_task(name: str) -> Type[Task]:
    tasks = load_builtin_tasks()
    if name not in tasks:
        raise UsageError(f"task: unknown task {name!r}; expected one of {', '.join(sorted(tasks))}")
    return tasks[name]
