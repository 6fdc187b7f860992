"""The one place that maps ``--arch`` / ``--backend`` to a recurrent module.

:func:`build_rnn` returns the recurrent layer itself (``rnnkit.LSTM`` or
``torch.nn.LSTM``, ...), so a model's parameters keep torch.nn's names
(``rnn.weight_ih_l0``) and load into the matching torch.nn module unchanged.
:func:`run_rnn` calls any of them with one convention for the carried state, a tuple of
tensors: ``(h,)`` for rnn and gru, ``(h, c)`` for lstm, ``(y_1, ..., y_L)`` for a stack of
Jordan layers (the fed-back outputs).

    arch    backend rnnkit                  backend torch
    rnn     rnnkit.RNN(nonlinearity)        torch.nn.RNN (tanh, relu)
    jordan  JordanStack of rnnkit.JordanRNN (none: torch.nn has no Jordan network)
    lstm    rnnkit.LSTM                     torch.nn.LSTM
    gru     rnnkit.GRU(reset_after)         torch.nn.GRU (reset after only)
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .task import UsageError

ARCHS = ("rnn", "jordan", "lstm", "gru")
BACKENDS = ("rnnkit", "torch")
NONLINEARITIES = ("tanh", "relu", "identity")

State = Tuple[torch.Tensor, ...]


def rnnkit_available(arch: str = "lstm") -> bool:
    """True when the C++-backed rnnkit module for ``arch`` can be imported."""
    try:
        import rnnkit
    except ImportError:  # pragma: no cover
        return False
    name = {"rnn": "RNN", "jordan": "JordanRNN", "lstm": "LSTM", "gru": "GRU"}[arch]
    return hasattr(rnnkit, name)


class JordanStack(nn.ModuleList):
    """Stacked Jordan layers: each layer's output y (size H) is the next layer's input
    and is fed back into its own recurrence (SPEC.md section 2).

    forward(x (T, B, I), y0 tuple of L tensors (B, H) or None) -> (out (T, B, H), (y_n,) * L)
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, nonlinearity: str,
                 dropout: float):
        import rnnkit

        layers = [rnnkit.JordanRNN(input_size if i == 0 else hidden_size, hidden_size, hidden_size,
                                   nonlinearity=nonlinearity, output_nonlinearity="tanh")
                  for i in range(num_layers)]
        super().__init__(layers)
        self.dropout = dropout
        self.hidden_size = hidden_size

    def forward(self, x: torch.Tensor, y0: Optional[State] = None):
        finals = []
        for i, layer in enumerate(self):
            if i > 0 and self.dropout > 0:
                x = nn.functional.dropout(x, self.dropout, self.training)
            x, y_n = layer(x, None if y0 is None else y0[i])
            finals.append(y_n)
        return x, tuple(finals)


def check_model_config(config: dict, allows_bidirectional: bool = True) -> None:
    """Reject option combinations that have no module, before any file is written."""
    arch, backend = config["arch"], config["backend"]
    if arch not in ARCHS:
        raise UsageError(f"--arch: expected one of {', '.join(ARCHS)}, got {arch!r}")
    if backend not in BACKENDS:
        raise UsageError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if config.get("bidirectional") and not allows_bidirectional:
        raise UsageError("--bidirectional: this task must not see the future; drop the option")
    if backend == "torch":
        if arch == "jordan":
            raise UsageError("--backend torch: torch.nn has no Jordan network; use --backend rnnkit")
        if arch == "rnn" and config["nonlinearity"] == "identity":
            raise UsageError("--nonlinearity identity: torch.nn.RNN supports tanh and relu; "
                             "use --backend rnnkit")
        if arch == "gru" and config["gru_form"] == "before":
            raise UsageError("--gru-form before: torch.nn.GRU only has the reset-after form; "
                             "use --backend rnnkit")
    else:
        if not rnnkit_available(arch):
            raise UsageError(f"--backend rnnkit: this rnnkit build has no module for --arch {arch}; "
                             "use --backend torch")
        if arch == "jordan" and config.get("bidirectional"):
            raise UsageError("--bidirectional: not available for --arch jordan")


def build_rnn(arch: str, input_size: int, hidden_size: int, *, num_layers: int = 1,
              nonlinearity: str = "tanh", dropout: float = 0.0, bidirectional: bool = False,
              gru_form: str = "after", backend: str = "rnnkit") -> nn.Module:
    """The recurrent layer for ``arch`` from ``backend``, sequence-first (T, B, I)."""
    check_model_config(dict(arch=arch, backend=backend, nonlinearity=nonlinearity,
                            gru_form=gru_form, bidirectional=bidirectional))
    common = dict(num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0,
                  bidirectional=bidirectional)
    if backend == "torch":
        if arch == "rnn":
            return nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, **common)
        if arch == "lstm":
            return nn.LSTM(input_size, hidden_size, **common)
        return nn.GRU(input_size, hidden_size, **common)
    import rnnkit

    if arch == "rnn":
        return rnnkit.RNN(input_size, hidden_size, nonlinearity=nonlinearity, **common)
    if arch == "lstm":
        return rnnkit.LSTM(input_size, hidden_size, **common)
    if arch == "gru":
        return rnnkit.GRU(input_size, hidden_size, reset_after=(gru_form == "after"), **common)
    return JordanStack(input_size, hidden_size, num_layers, nonlinearity, dropout)


def output_size(config: dict) -> int:
    """Features per time step that the recurrent layer emits."""
    return config["hidden"] * (2 if config.get("bidirectional") else 1)


def run_rnn(rnn: nn.Module, x: torch.Tensor, state: Optional[State]) -> Tuple[torch.Tensor, State]:
    """Run any module made by :func:`build_rnn` on x (T, B, I) with a tuple state."""
    if isinstance(rnn, JordanStack):
        return rnn(x, state)
    if isinstance(rnn, nn.LSTM) or type(rnn).__name__ == "LSTM":
        out, (h, c) = rnn(x, None if state is None else (state[0], state[1]))
        return out, (h, c)
    out, h = rnn(x, None if state is None else state[0])
    return out, (h,)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
