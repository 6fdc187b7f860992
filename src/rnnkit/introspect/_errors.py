"""The one error class of rnnkit.introspect's user-facing functions."""

from ..training.task import UsageError

__all__ = ["IntrospectError"]


class IntrospectError(UsageError, ValueError):
    """Bad input (an unknown architecture, unit, layer or quantity; a checkpoint that is
    not a language model). The message names the option, what was expected and what was
    received; the command line prints it as one line and exits with status 2."""
