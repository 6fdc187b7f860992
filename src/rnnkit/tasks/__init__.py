"""Built-in training tasks; each module registers its Task in rnnkit.training.task.TASKS."""

# Importing this package registers every built-in task (the engine imports rnnkit.tasks.lm,
# which imports this package first).
from . import classify, forecast, memory, music, tag  # noqa: E402,F401
