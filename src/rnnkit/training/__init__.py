"""Training machinery shared by every task: the Task interface and registry
(:mod:`.task`), the engine (:mod:`.engine`), checkpoints (:mod:`.checkpoint`), metrics
and plots (:mod:`.metrics`), options and their defaults (:mod:`.options`), and the
``--arch`` to module factory (:mod:`.models`)."""
from .checkpoint import load
from .task import TASKS, Batch, RunContext, StepResult, Task, UsageError, register

__all__ = ["Task", "Batch", "StepResult", "RunContext", "UsageError", "TASKS", "register", "load"]
