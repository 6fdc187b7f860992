"""The one place that maps ``--arch`` / ``--backend`` to a recurrent module.

``--arch`` takes the names of :mod:`rnnkit.networks` (rnn, jordan, lstm, gru, gru-rb).
:func:`build_rnn` returns the recurrent layer itself (``rnnkit.LSTM`` or
``torch.nn.LSTM``, ...), so a model's parameters keep torch.nn's names
(``rnn.weight_ih_l0``) and load into the matching torch.nn module unchanged.
:func:`run_rnn` calls any of them with one convention for the carried state: a tuple
of the network's states, ``(h,)``, ``(h, c)`` for an LSTM, ``(y,)`` for a Jordan
network, each (layers * directions, B, H).

``--backend torch`` builds the torch.nn module that computes the same equations,
where there is one (:attr:`rnnkit.networks.Network.torch_module`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .. import networks
from ..functional import _NONLINEARITIES
from .task import UsageError

ARCHS = networks.names()
BACKENDS = ("rnnkit", "torch")
NONLINEARITIES = _NONLINEARITIES

# The engine's Jordan layers emit y = tanh(W_hy h + b_hy), bounded like the other
# networks' outputs, and of the hidden size (``--hidden``).
_ENGINE_HYPER = {"output_nonlinearity": "tanh"}

State = Tuple[torch.Tensor, ...]


def network_for(arch: str, gru_form: str = "after") -> networks.Network:
    """The network that ``--arch`` names. ``gru_form='before'`` (the earlier
    ``--gru-form`` option, still in old checkpoints) turns ``gru`` into ``gru-rb``."""
    try:
        spec = networks.get(arch)
    except ValueError:
        raise UsageError(f"--arch: expected one of {', '.join(ARCHS)}, got {arch!r}") from None
    if spec.name == "gru" and gru_form == "before":
        spec = networks.get("gru-rb")
    return spec


def arch_option(text: str) -> str:
    """argparse type of ``--arch``: the canonical name (earlier spellings accepted)."""
    import argparse

    try:
        return networks.get(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("network: ", "")) from None


def _hyper(spec: networks.Network, nonlinearity: str, peephole: bool = False, proj_size: int = 0,
           layer_norm: bool = False) -> dict:
    """The network's settings that the configuration chooses (its variant options
    aside): ``nonlinearity``, the Jordan output nonlinearity, the LSTM's peepholes,
    projection and layer normalisation."""
    values = {"nonlinearity": nonlinearity, **_ENGINE_HYPER}
    chosen = {k: values[k] for k in spec.hyper if k not in spec.options}
    if peephole:
        chosen["peephole"] = True
    if proj_size:
        chosen["proj_size"] = proj_size
    if layer_norm:
        chosen["layer_norm"] = True
    return chosen


# Settings that torch.nn's constructor takes as rnnkit's does, without restricting them.
_TORCH_TAKES = ("proj_size",)


def check_model_config(config: dict, allows_bidirectional: bool = True) -> None:
    """Reject option combinations that have no module, before any file is written."""
    spec = network_for(config["arch"], config.get("gru_form", "after"))
    backend = config["backend"]
    if backend not in BACKENDS:
        raise UsageError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if config.get("bidirectional") and not allows_bidirectional:
        raise UsageError("--bidirectional: this task must not see the future; drop the option")
    if config.get("peephole") and "peephole" not in spec.settings():
        raise UsageError(f"--peephole: {spec.title} has no peepholes; they are an option of --arch lstm")
    proj_size = int(config.get("proj_size") or 0)
    if proj_size and "proj_size" not in spec.settings():
        raise UsageError(f"--proj-size: {spec.title} has no projection; it is an option of --arch lstm")
    if proj_size and config.get("hidden") is not None and proj_size >= config["hidden"]:
        raise UsageError(f"--proj-size: expected fewer units than --hidden {config['hidden']}, got {proj_size}")
    layer_norm = bool(config.get("layer_norm"))
    if layer_norm and "layer_norm" not in spec.settings():
        raise UsageError(f"--layer-norm: {spec.title} has no layer normalisation; it is an option of --arch lstm "
                         "and --arch gru")
    if layer_norm and (proj_size or config.get("peephole")):
        raise UsageError(f"--layer-norm: not combined with {'--proj-size' if proj_size else '--peephole'} yet; "
                         "drop one of them")
    if backend == "torch":
        hyper = {**spec.options, **_hyper(spec, config["nonlinearity"], bool(config.get("peephole")), proj_size,
                                          layer_norm)}
        if spec.torch_module is None:
            raise UsageError(f"--backend torch: torch.nn has no {spec.title} (--arch {spec.name}); "
                             "use --backend rnnkit")
        for key, allowed in spec.torch_supports.items():
            value = hyper.get(key, allowed[0])  # a setting left out has its default
            if value not in allowed:
                raise UsageError(f"--{key.replace('_', '-')} {value}: torch.nn.{spec.torch_module} supports "
                                 f"{', '.join(map(str, allowed))}; use --backend rnnkit")


def build_rnn(arch: str, input_size: int, hidden_size: int, *, num_layers: int = 1,
              nonlinearity: str = "tanh", dropout: float = 0.0, bidirectional: bool = False,
              gru_form: str = "after", backend: str = "rnnkit", peephole: bool = False,
              proj_size: int = 0, layer_norm: bool = False) -> nn.Module:
    """The recurrent layer for ``arch`` from ``backend``, sequence-first (T, B, I)."""
    check_model_config(dict(arch=arch, backend=backend, nonlinearity=nonlinearity, gru_form=gru_form,
                            bidirectional=bidirectional, peephole=peephole, proj_size=proj_size,
                            hidden=hidden_size, layer_norm=layer_norm))
    spec = network_for(arch, gru_form)
    common = dict(num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0,
                  bidirectional=bidirectional)
    hyper = _hyper(spec, nonlinearity, peephole, proj_size, layer_norm)
    if backend == "torch":  # torch.nn takes the hyper-parameters it restricts (RNN's nonlinearity)
        return spec.torch_class(input_size, hidden_size, **common,
                                **{k: v for k, v in hyper.items() if k in spec.torch_supports or k in _TORCH_TAKES})
    return spec.make(input_size, hidden_size, **common, **hyper)


def output_size(config: dict) -> int:
    """Features per time step that the recurrent layer emits (the projection's, if any)."""
    return (config.get("proj_size") or config["hidden"]) * (2 if config.get("bidirectional") else 1)


def _state_count(rnn: nn.Module) -> int:
    spec = networks.network_of(rnn, None)
    if spec is not None:
        return len(spec.states)
    return 2 if isinstance(rnn, nn.LSTM) else 1


def run_rnn(rnn: nn.Module, x: torch.Tensor, state: Optional[State]) -> Tuple[torch.Tensor, State]:
    """Run any module made by :func:`build_rnn` on x (T, B, I) with a tuple state."""
    several = _state_count(rnn) > 1
    out, final = rnn(x, None if state is None else (tuple(state) if several else state[0]))
    return out, (tuple(final) if several else (final,))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
