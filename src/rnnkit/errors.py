"""rnnkit's error classes for bad user input.

Every layer raises these (data readers, the training engine, checkpoints, introspection)
and the command line turns them into one line on stderr with exit status 2; a library
caller catches them like any exception. This module imports nothing of rnnkit, so any
module may import it.
"""

__all__ = ["UsageError", "IntrospectError"]


class UsageError(Exception):
    """Bad input from the user (a path, an option value, a checkpoint).

    The command line prints ``str(error)`` as one line and exits with status 2; the
    message names the file or option, what was expected and what was received.
    """


class IntrospectError(UsageError, ValueError):
    """Bad input to :mod:`rnnkit.introspect` (an unknown architecture, unit, layer or
    quantity; a checkpoint that is not a language model). The message names the option,
    what was expected and what was received; the command line prints it as one line and
    exits with status 2."""
