"""What each network is, said once: the registry every other part of rnnkit reads.

A :class:`Network` names one recurrent network (or one variant of it, such as the
seeds' reset-before GRU): its canonical name, which is the one vocabulary of the
command line (``--arch``), the benchmark, the introspection tools, the sweep, the
docs and the tests; its module and cell classes; its functional (native) and
reference (per-step oracle) functions; its recurrent states, per-step internals and
which of those are gates in [0, 1]; the per-layer parameter names; the kernel of the
C++ core it runs on; and the torch.nn module that computes the same equations, if any.

Adding a network or a variant is one entry in :data:`NETWORKS` (plus its kernel and
reference code); everything that iterates the registry, the tests included, picks
it up.

>>> from rnnkit import networks
>>> [n.name for n in networks.NETWORKS.values()]
['rnn', 'jordan', 'lstm', 'gru', 'gru-rb']
>>> spec = networks.get("gru-rb")
>>> spec.module_class, dict(spec.options)
(<class 'rnnkit.modules.GRU'>, {'reset_after': False})
>>> networks.network_of(rnnkit.GRU(4, 8, reset_after=False)).name
'gru-rb'
"""

from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from . import functional, reference

__all__ = ["Network", "NETWORKS", "ALIASES", "get", "network_of", "names"]


def _rnnkit():
    """The rnnkit package (imported by now whenever a class is asked for; sys.modules,
    unlike importlib, is something torch.compile traces)."""
    return sys.modules["rnnkit"] if "rnnkit" in sys.modules else importlib.import_module("rnnkit")


def _frozen(d: Optional[dict] = None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class Network:
    """One network (or variant) as every part of rnnkit sees it.

    Attributes:
      name: canonical name, e.g. ``"lstm"``; the ``--arch`` value and the key of
        :data:`NETWORKS`.
      title: human name, e.g. ``"LSTM"``.
      spec_section: section of docs/SPEC.md with its equations.
      module, cell: names of its layer and one-step cell classes in ``rnnkit``.
      options: constructor arguments that select this variant of the class
        (``{"reset_after": False}`` for the seeds' GRU); empty for the plain network.
      hyper: module attributes passed on to the functional and reference functions
        as keyword arguments (``nonlinearity``, ``reset_after``, ...).
      gates: the row blocks of the stacked weight matrices (``weight_ih``,
        ``weight_hh``), in storage order: ``("i", "f", "g", "o")`` for the LSTM, the
        one pre-activation ``("a",)`` for Elman and Jordan.
      states: names of the recurrent state(s) a layer carries, in the order of the
        functional signature (``("h", "c")`` for the LSTM, ``("y",)`` for Jordan).
        ``"d" + state`` is the key of its recorded per-step gradient.
      state_size: the module attribute giving the size of every state.
      internals: per-step quantities ``forward_with_internals`` records, in display
        order; a state other than the first (the LSTM's ``c``) is one of them.
      descriptions: a short description of every state and internal quantity.
      unit_interval: which of the internals are gates with values in [0, 1].
      param_roles: per-layer parameter names without the ``_l{k}`` suffix, in the
        order of the functional signature; a role a layer does not have (an optional
        parameter such as the LSTM's peephole weights) is passed as None.
      functional, reference: the layer over a sequence, native and per-step oracle,
        ``fn(x, *states, *params, **hyper, lengths=...)``.
      reference_step: one step of the oracle as a map of the states,
        ``step(x, *states, *params, **hyper) -> new state`` (a tuple for several).
      kernel: the C++ core's cell that runs it (csrc/cells/).
      torch_module: the torch.nn class that computes the same equations, or None.
      torch_supports: for each setting that torch.nn restricts, the values it
        supports (``{"nonlinearity": ("tanh", "relu")}``, ``{"peephole": (False,)}``).
      examples: constructor settings the test suite runs every check with (the
        hyper-parameters and the options that add parameters, such as ``peephole``;
        the regularisers of SPEC section 16, such as ``zoneout``, which the suite checks
        at evaluation, where they are deterministic).
      narrowed: for a state whose width can differ from ``state_size``, the module
        attribute giving it when > 0 (``{"h": "proj_size"}``: a projected LSTM's h is P
        wide, its c stays H); see :meth:`state_widths`.
      layer_only: settings the layer takes and the cell does not (``proj_size``: as in
        torch.nn, LSTMCell has no projection).
      not_streamed: settings :class:`rnnkit.Stream` (and the one-call paths on its
        kernels: the cells' native step, rnnkit._stack) does not run yet; it says so when
        made. None at present: ``layer_norm`` streams (csrc/layer.h normalises the input side).
      not_quantized: settings the reduced-precision kernels (rnnkit.quantize_dynamic, a
        Stream with int8 / bf16 weights) do not run yet, refused by name: ``layer_norm``.
    """

    name: str
    title: str
    spec_section: int
    module: str
    cell: str
    gates: Tuple[str, ...]
    states: Tuple[str, ...]
    state_size: str
    internals: Tuple[str, ...]
    descriptions: Mapping[str, str]
    unit_interval: Tuple[str, ...]
    param_roles: Tuple[str, ...]
    functional: Callable
    reference: Callable
    reference_step: Callable
    kernel: str
    options: Mapping = field(default_factory=_frozen)
    hyper: Tuple[str, ...] = ()
    torch_module: Optional[str] = None
    torch_supports: Mapping = field(default_factory=_frozen)
    examples: Tuple[Mapping, ...] = (_frozen(),)
    narrowed: Mapping = field(default_factory=_frozen)
    layer_only: Tuple[str, ...] = ()
    not_streamed: Tuple[str, ...] = ()
    not_quantized: Tuple[str, ...] = ()

    # ---- classes, resolved lazily (the modules import this file's users, not it)
    @property
    def module_class(self) -> type:
        return getattr(_rnnkit(), self.module)

    @property
    def cell_class(self) -> type:
        return getattr(_rnnkit(), self.cell)

    @property
    def torch_class(self) -> Optional[type]:
        return None if self.torch_module is None else getattr(nn, self.torch_module)

    # ---- questions about a module of this network
    def hyper_of(self, module) -> Dict[str, object]:
        """The keyword arguments of the functional / reference calls for ``module``."""
        return {name: getattr(module, name) for name in self.hyper}

    def torch_computes_same(self, settings) -> bool:
        """Whether ``torch_module`` computes these equations with these settings: a
        module of this network, or its constructor arguments (a mapping)."""
        if self.torch_module is None:
            return False
        get = settings.get if isinstance(settings, Mapping) else (lambda k, d: getattr(settings, k, d))
        return all(get(k, v[0]) in v for k, v in self.torch_supports.items())

    def settings(self) -> Tuple[str, ...]:
        """The constructor settings the network takes beyond its variant options (the keys
        of its examples): ``("nonlinearity",)``, ``("peephole",)``, ..."""
        return tuple(dict.fromkeys(k for ex in self.examples for k in ex if k not in self.options))

    def state_widths(self, module) -> Tuple[int, ...]:
        """The width of each of ``module``'s states, in the order of ``states``: its
        ``state_size``, or for a state in ``narrowed`` the attribute named there when > 0
        (``rnnkit.LSTM(4, 8, proj_size=3)``: ``(3, 8)``)."""
        size = getattr(module, self.state_size)
        return tuple((getattr(module, self.narrowed[s], 0) if s in self.narrowed else 0) or size
                     for s in self.states)

    def gradient_keys(self) -> Tuple[str, ...]:
        """Keys of the recorded per-step state gradients: ``("dh", "dc")`` for the LSTM."""
        return tuple("d" + s for s in self.states)

    def make(self, input_size: int, hidden_size: int, **kwargs) -> nn.Module:
        """A layer of this network: ``module_class(input_size, hidden_size, **options, **kwargs)``.

        The Jordan network also takes ``output_size`` (default: ``hidden_size``).
        """
        cls = self.module_class
        if self.state_size == "output_size":
            kwargs.setdefault("output_size", hidden_size)
        return cls(input_size, hidden_size, **{**self.options, **kwargs})


_ELMAN_ROLES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
# The regularisers of SPEC section 16 (rnnkit._variants): torch.nn has none of them.
_NO_REGULARISERS = {"zoneout": (0.0,), "recurrent_dropout": (0.0,), "weight_drop": (0.0,)}
_GRU_DESCRIPTIONS = _frozen({"h": "hidden state h", "z": "update gate z", "r": "reset gate r",
                             "n": "candidate state n"})


def _jordan_step(x, y, *params, **hyper):
    """reference.jordan_cell returns (h, y'); the recurrent state is y' alone."""
    return reference.jordan_cell(x, y, *params, **hyper)[1]


NETWORKS: Mapping[str, Network] = MappingProxyType({n.name: n for n in (
    Network(
        name="rnn", title="Elman RNN", spec_section=1, module="RNN", cell="RNNCell",
        gates=("a",), states=("h",), state_size="hidden_size",
        internals=("a",), descriptions=_frozen({"h": "hidden state h", "a": "pre-activation a"}),
        unit_interval=(), param_roles=_ELMAN_ROLES, functional=functional.elman, reference=reference.elman,
        reference_step=reference.elman_cell, kernel="elman", hyper=("nonlinearity",),
        torch_module="RNN", torch_supports=_frozen({"nonlinearity": ("tanh", "relu"), **_NO_REGULARISERS}),
        examples=(_frozen({"nonlinearity": "tanh"}), _frozen({"nonlinearity": "relu"}),
                  _frozen({"nonlinearity": "identity"}), _frozen({"nonlinearity": "tanh", "zoneout": 0.25})),
    ),
    Network(
        name="jordan", title="Jordan RNN", spec_section=2, module="JordanRNN", cell="JordanCell",
        gates=("a",), states=("y",), state_size="output_size",
        internals=("h",), descriptions=_frozen({"y": "fed-back output y", "h": "hidden layer h"}),
        unit_interval=(), param_roles=("weight_ih", "weight_yh", "weight_hy", "bias_ih", "bias_yh", "bias_hy"),
        functional=functional.jordan, reference=reference.jordan, reference_step=_jordan_step,
        kernel="jordan", hyper=("nonlinearity", "output_nonlinearity"),
        examples=(_frozen({"nonlinearity": "tanh", "output_nonlinearity": "identity"}),
                  _frozen({"nonlinearity": "relu", "output_nonlinearity": "tanh"}),
                  _frozen({"nonlinearity": "identity", "output_nonlinearity": "sigmoid"}),
                  _frozen({"nonlinearity": "tanh", "output_nonlinearity": "tanh", "zoneout": 0.25})),
    ),
    Network(
        name="lstm", title="LSTM", spec_section=3, module="LSTM", cell="LSTMCell",
        gates=("i", "f", "g", "o"), states=("h", "c"), state_size="hidden_size",
        internals=("c", "i", "f", "o", "g"),
        descriptions=_frozen({"h": "hidden state h", "c": "cell state c", "i": "input gate i",
                              "f": "forget gate f", "o": "output gate o", "g": "candidate cell g"}),
        unit_interval=("i", "f", "o"),
        param_roles=_ELMAN_ROLES + ("weight_ch", "weight_hr", "ln_gain_ih", "ln_gain_hh", "ln_gain_c", "ln_bias_c"),
        functional=functional.lstm, reference=reference.lstm, reference_step=reference.lstm_cell, kernel="lstm",
        torch_module="LSTM", torch_supports=_frozen({"peephole": (False,), "layer_norm": (False,), **_NO_REGULARISERS}),
        examples=(_frozen(), _frozen({"peephole": True}), _frozen({"proj_size": 3}), _frozen({"layer_norm": True}),
                  _frozen({"zoneout": 0.25, "forget_bias": 1.0})),
        narrowed=_frozen({"h": "proj_size"}), layer_only=("proj_size",), not_quantized=("layer_norm",),
    ),
    Network(
        name="gru", title="GRU (reset after, torch.nn's form)", spec_section=4, module="GRU", cell="GRUCell",
        gates=("r", "z", "n"), states=("h",), state_size="hidden_size",
        internals=("z", "r", "n"), descriptions=_GRU_DESCRIPTIONS, unit_interval=("r", "z"),
        param_roles=_ELMAN_ROLES + ("ln_gain_ih", "ln_gain_hh"), functional=functional.gru, reference=reference.gru,
        reference_step=reference.gru_cell, kernel="gru", options=_frozen({"reset_after": True}),
        hyper=("reset_after",), torch_module="GRU",
        torch_supports=_frozen({"reset_after": (True,), "layer_norm": (False,), **_NO_REGULARISERS}),
        examples=(_frozen(), _frozen({"layer_norm": True}), _frozen({"zoneout": 0.25, "forget_bias": 1.0})),
        not_quantized=("layer_norm",),
    ),
    Network(
        name="gru-rb", title="GRU (reset before, the seeds' form)", spec_section=4, module="GRU",
        cell="GRUCell", gates=("r", "z", "n"), states=("h",), state_size="hidden_size",
        internals=("z", "r", "n"), descriptions=_GRU_DESCRIPTIONS, unit_interval=("r", "z"),
        param_roles=_ELMAN_ROLES, functional=functional.gru, reference=reference.gru,
        reference_step=reference.gru_cell, kernel="gru", options=_frozen({"reset_after": False}),
        hyper=("reset_after",), examples=(_frozen(), _frozen({"zoneout": 0.25, "chrono_tmax": 20.0})),
    ),
)})

# Earlier spellings, accepted on input (command line, old checkpoints), never written.
ALIASES: Mapping[str, str] = MappingProxyType({
    "elman": "rnn", "gru-before": "gru-rb", "gru_before": "gru-rb", "gru-after": "gru",
})


def names() -> Tuple[str, ...]:
    """The canonical names, in registry order."""
    return tuple(NETWORKS)


def get(name: str) -> Network:
    """The network called ``name`` (a canonical name or an accepted earlier spelling)."""
    key = ALIASES.get(name, name) if isinstance(name, str) else name
    try:
        return NETWORKS[key]
    except (KeyError, TypeError):
        raise ValueError(f"network: expected one of {', '.join(NETWORKS)}, got {name!r}") from None


def network_of(module, default=...) -> Network:
    """The network an rnnkit layer or cell implements (``GRU(reset_after=False)``: ``gru-rb``).

    Raises TypeError for anything else, unless ``default`` is given.
    """
    # torch.compile traces through the cache (and warns that it does): the plain function then.
    lookup = _lookup.__wrapped__ if torch.compiler.is_compiling() else _lookup
    spec = lookup(type(module), tuple(getattr(module, k, None) for k in _OPTION_KEYS))
    if spec is not None:
        return spec
    if default is not ...:
        return default
    raise TypeError(f"module: expected an rnnkit {', '.join(sorted({n.module for n in NETWORKS.values()}))} "
                    f"or one of their cells, got {type(module).__name__}")


_OPTION_KEYS = tuple(sorted({k for spec in NETWORKS.values() for k in spec.options}))


@functools.lru_cache(maxsize=None)
def _lookup(cls: type, option_values: tuple) -> Optional[Network]:
    """network_of for a class and its values of the variant-selecting options (cached:
    a layer asks on every call)."""
    options = dict(zip(_OPTION_KEYS, option_values))
    for spec in NETWORKS.values():
        if issubclass(cls, (spec.module_class, spec.cell_class)) and all(
                options[k] == v for k, v in spec.options.items()):
            return spec
    return None
