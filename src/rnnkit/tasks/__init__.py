"""Built-in training tasks; each module registers its Task in rnnkit.training.task.TASKS."""
