"""The built-in training tasks of ``rnnkit train``.

Each module decorates its :class:`rnnkit.training.task.Task` subclass with ``@register``;
importing this package imports them all, which is how they get into
:data:`rnnkit.training.task.TASKS` (:func:`rnnkit.training.task.load_builtin_tasks`).
A new built-in task is a new module here and one more name in the import below.
"""
from . import classify, forecast, lm, memory, music, tag  # noqa: F401
