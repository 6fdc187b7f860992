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
           layer_norm: bool = False, variants: Optional[dict] = None) -> dict:
    """The network's settings that the configuration chooses (its variant options
    aside): ``nonlinearity``, the Jordan output nonlinearity, the LSTM's peepholes,
    projection and layer normalisation, and the regularisers and gate initialisations of
    SPEC section 16 that are not off."""
    values = {"nonlinearity": nonlinearity, **_ENGINE_HYPER}
    chosen = {k: values[k] for k in spec.hyper if k not in spec.options}
    if peephole:
        chosen["peephole"] = True
    if proj_size:
        chosen["proj_size"] = proj_size
    if layer_norm:
        chosen["layer_norm"] = True
    chosen.update({k: v for k, v in (variants or {}).items() if v})
    return chosen


# Settings that torch.nn's constructor takes as rnnkit's does, without restricting them.
_TORCH_TAKES = ("proj_size",)


def variant_options(config: dict) -> dict:
    """The layer's keyword arguments for the run's ``--zoneout``, ``--recurrent-dropout``,
    ``--weight-drop``, ``--forget-bias`` and ``--init chrono`` (SPEC section 16)."""
    out = {k: float(config.get(k) or 0.0) for k in ("zoneout", "recurrent_dropout", "weight_drop")}
    if config.get("forget_bias") is not None:
        out["forget_bias"] = float(config["forget_bias"])
    if config.get("init", "default") == "chrono":
        out["chrono_tmax"] = float(config.get("chrono_tmax") or config.get("length") or 0)
    return out


def _check_variants(spec: networks.Network, variants: dict) -> None:
    gated = spec.kernel in ("lstm", "gru")
    if ("forget_bias" in variants or "chrono_tmax" in variants) and not gated:
        flag = "--forget-bias" if "forget_bias" in variants else "--init chrono"
        raise UsageError(f"{flag}: {spec.title} has no gate that keeps the state; use --arch lstm, gru or gru-rb")
    if "forget_bias" in variants and "chrono_tmax" in variants:
        raise UsageError("--forget-bias, --init chrono: expected one gate-bias initialisation, got both")
    if "chrono_tmax" in variants and not variants["chrono_tmax"] > 2:
        raise UsageError("--chrono-tmax: --init chrono needs T_max > 2 (give --chrono-tmax, or a task with "
                         f"--length), got {variants['chrono_tmax']:g}")


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
    variants = variant_options(config)
    _check_variants(spec, variants)
    if layer_norm and (variants["zoneout"] or variants["recurrent_dropout"]):
        raise UsageError(f"--layer-norm: not combined with {'--zoneout' if variants['zoneout'] else '--recurrent-dropout'}"
                         " yet; drop one of them")
    if backend == "torch":
        hyper = {**spec.options, **_hyper(spec, config["nonlinearity"], bool(config.get("peephole")), proj_size,
                                          layer_norm, variants)}
        if spec.torch_module is None:
            raise UsageError(f"--backend torch: torch.nn has no {spec.title} (--arch {spec.name}); "
                             "use --backend rnnkit")
        if "forget_bias" in variants or "chrono_tmax" in variants:
            raise UsageError(f"{'--forget-bias' if 'forget_bias' in variants else '--init chrono'}: an option of "
                             "rnnkit's layers; use --backend rnnkit")
        for key, allowed in spec.torch_supports.items():
            value = hyper.get(key, allowed[0])  # a setting left out has its default
            if value not in allowed:
                raise UsageError(f"--{key.replace('_', '-')} {value}: torch.nn.{spec.torch_module} supports "
                                 f"{', '.join(map(str, allowed))}; use --backend rnnkit")


def build_rnn(arch: str, input_size: int, hidden_size: int, *, num_layers: int = 1,
              nonlinearity: str = "tanh", dropout: float = 0.0, bidirectional: bool = False,
              gru_form: str = "after", backend: str = "rnnkit", peephole: bool = False,
              proj_size: int = 0, layer_norm: bool = False, variants: Optional[dict] = None) -> nn.Module:
    """The recurrent layer for ``arch`` from ``backend``, sequence-first (T, B, I).
    ``variants``: the layer's regularisers and gate initialisations (:func:`variant_options`)."""
    variants = dict(variants or {})
    check_model_config(dict(arch=arch, backend=backend, nonlinearity=nonlinearity, gru_form=gru_form,
                            bidirectional=bidirectional, peephole=peephole, proj_size=proj_size,
                            hidden=hidden_size, layer_norm=layer_norm,
                            **{k: v for k, v in variants.items() if k != "chrono_tmax"},
                            **({"init": "chrono", "chrono_tmax": variants["chrono_tmax"]}
                               if "chrono_tmax" in variants else {})))
    spec = network_for(arch, gru_form)
    common = dict(num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0,
                  bidirectional=bidirectional)
    hyper = _hyper(spec, nonlinearity, peephole, proj_size, layer_norm, variants)
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
