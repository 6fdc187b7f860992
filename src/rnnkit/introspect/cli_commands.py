"""The ``gradflow``, ``explain`` and ``visualize`` subcommands of ``rnnkit``.

Registered by :mod:`rnnkit.cli` (``add_subparsers(sub)`` and ``COMMANDS``).

Each command follows the CLI's convention ``cmd(ns, out) -> exit status`` and raises a
``UsageError`` (:class:`rnnkit.introspect.IntrospectError`, ``CheckpointError``) on bad
input, which ``rnnkit.cli.main`` prints as one line with exit status 2.
``python -m rnnkit.introspect.gradflow`` / ``.explain`` / ``.visualize`` run them too.
"""

from __future__ import annotations

import argparse
from typing import Callable, Dict

from . import explain, gradflow, visualize

__all__ = ["add_subparsers", "COMMANDS", "cmd_gradflow", "cmd_explain", "cmd_visualize"]


def cmd_gradflow(ns: argparse.Namespace, out) -> int:
    gradflow.run(ns, out)
    return 0


def cmd_explain(ns: argparse.Namespace, out) -> int:
    explain.run(ns, out)
    return 0


def cmd_visualize(ns: argparse.Namespace, out) -> int:
    visualize.run(ns, out)
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace, object], int]] = {
    "gradflow": cmd_gradflow,
    "explain": cmd_explain,
    "visualize": cmd_visualize,
}


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=34, width=100)


def add_subparsers(subparsers) -> None:
    """Registers ``gradflow``, ``explain`` and ``visualize`` on an argparse subparsers object."""
    p = subparsers.add_parser("gradflow", help="plot how the gradient decays back through time, per architecture",
                              description=gradflow.__doc__, formatter_class=_formatter)
    gradflow.add_arguments(p)
    p = subparsers.add_parser("explain", help="walk through the RNN, LSTM and GRU equations with numbers",
                              description=explain.__doc__, formatter_class=_formatter)
    explain.add_arguments(p)
    p = subparsers.add_parser("visualize", help="colour a text by a language model's cells and gates (HTML, PNG)",
                              description=visualize.__doc__, formatter_class=_formatter)
    visualize.add_arguments(p)
