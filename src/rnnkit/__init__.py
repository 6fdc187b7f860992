"""rnnkit: exact, fast, transparent recurrent networks.

Elman RNN, Jordan RNN, LSTM and GRU whose sequential forward pass and hand-derived
back-propagation through time run in a compact C++ core, exposed as drop-in
replacements of torch.nn's modules.

>>> import torch, rnnkit
>>> lstm = rnnkit.LSTM(10, 20, num_layers=2)
>>> output, (h_n, c_n) = lstm(torch.randn(5, 3, 10))
"""

from . import functional, reference
from ._backend import available_isas, current_isa_name, use_isa, use_threads
from .cells import GRUCell, JordanCell, LSTMCell, RNNCell
from .modules import GRU, LSTM, RNN, JordanRNN
from .streaming import Stream
from .quantize import QuantizedRNN, quantize_dynamic
from .training.checkpoint import load

__version__ = "0.1.0"

__all__ = [
    "RNN",
    "LSTM",
    "GRU",
    "JordanRNN",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "JordanCell",
    "Stream",
    "load",
    "functional",
    "reference",
    "use_isa",
    "use_threads",
    "available_isas",
    "current_isa_name",
    "__version__",
    "quantize_dynamic",
    "QuantizedRNN",
]
