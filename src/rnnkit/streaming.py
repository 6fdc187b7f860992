"""Step-by-step inference: one native call per time step, no autograd, no allocation.

For online use (audio frames, sensor readings, text generation) where inputs arrive
one step at a time. A :class:`Stream` packs the module's weights once into the core's
layout, keeps every layer's state, and advances all layers one step per
:meth:`Stream.step` call.

Example::

    >>> lstm = rnnkit.LSTM(8, 64, num_layers=2).eval()
    >>> stream = rnnkit.Stream(lstm)                 # batch_size=1
    >>> for frame in frames:                          # each (8,), torch or NumPy
    ...     h = stream.step(frame)                    # (64,): the top layer's new h
    >>> h_n, c_n = stream.state()                     # (2, 1, 64) each, as torch.nn

The stream equals the module run over the whole sequence (a test checks it). It copies
the weights when it is made: after changing the module, make a new stream.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from . import _backend, _core
from .cells import GRUCell, LSTMCell, RNNCell
from .functional import _sum_bias
from .modules import GRU, LSTM, RNN, JordanRNN

__all__ = ["Stream"]

_ARCH = _backend.ARCH_CODES


def _describe(module: nn.Module):
    """(arch code, act, out_act, reset_after, layers, sizes, params) of a supported module.

    params holds five entries per layer, as the core's Stream takes them: W_ih, the
    input-side bias (every bias that adds to W_ih x), then the cell's own weights.
    """
    def d(t: Optional[Tensor]):
        return None if t is None else t.detach().contiguous()

    if isinstance(module, JordanRNN):  # JordanCell too
        params = [d(module.weight_ih), _fold(module.bias_ih, module.bias_yh), d(module.weight_yh),
                  d(module.weight_hy), d(module.bias_hy)]
        return (_ARCH["jordan"], _backend.ACT_CODES[module.nonlinearity],
                _backend.ACT_CODES[module.output_nonlinearity], True, 1,
                [module.input_size, module.hidden_size, module.output_size], params)

    def layer(w_ih, w_hh, b_ih, b_hh, arch, reset_after):
        if arch == "gru" and reset_after and b_hh is not None:
            H = w_hh.shape[1]  # b_hn stays inside r * (W_hn h + b_hn)
            return [d(w_ih), _fold(b_ih, torch.cat([b_hh.detach()[:2 * H], b_hh.new_zeros(H)])), d(w_hh),
                    d(b_hh[2 * H:]), None]
        return [d(w_ih), _fold(b_ih, b_hh), d(w_hh), None, None]

    if isinstance(module, (RNNCell, LSTMCell, GRUCell)):
        arch = "elman" if isinstance(module, RNNCell) else "lstm" if isinstance(module, LSTMCell) else "gru"
        act = _backend.ACT_CODES[getattr(module, "nonlinearity", "tanh")]
        reset_after = getattr(module, "reset_after", True)
        params = layer(module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh, arch, reset_after)
        return _ARCH[arch], act, 0, reset_after, 1, [module.input_size, module.hidden_size, 0], params
    if isinstance(module, (RNN, LSTM, GRU)):
        if module.bidirectional:
            raise ValueError("module: a bidirectional layer needs the whole sequence and cannot be streamed; "
                             "expected a unidirectional module")
        arch = "elman" if isinstance(module, RNN) else "lstm" if isinstance(module, LSTM) else "gru"
        module._check_supported()
        reset_after = getattr(module, "reset_after", True)
        sizes, params = [], []
        for l in range(module.num_layers):
            sizes += [module.input_size if l == 0 else module.hidden_size, module.hidden_size, 0]
            params += layer(getattr(module, f"weight_ih_l{l}"), getattr(module, f"weight_hh_l{l}"),
                            getattr(module, f"bias_ih_l{l}", None), getattr(module, f"bias_hh_l{l}", None), arch,
                            reset_after)
        act = _backend.ACT_CODES[getattr(module, "nonlinearity", "tanh")]
        return _ARCH[arch], act, 0, reset_after, module.num_layers, sizes, params
    raise TypeError(f"module: expected an rnnkit RNN, LSTM, GRU, JordanRNN or one of their cells, "
                    f"got {type(module).__name__}")


def _fold(*biases: Optional[Tensor]) -> Optional[Tensor]:
    """The sum of the biases that are present (None if none is), contiguous."""
    total = _sum_bias(*biases)
    return None if total is None else total.contiguous()


class Stream:
    """Holds a module's state and advances it one time step per :meth:`step` call.

    Args:
        module: an rnnkit ``RNN``, ``LSTM``, ``GRU`` (unidirectional, any number of
            layers), ``JordanRNN``, or one of the cells. Its weights are copied and packed
            now; inter-layer dropout is not applied (inference).
        batch_size: B, the number of independent streams advanced together (default 1).

    ``step(x)`` takes x of shape (B, I), or (I,) when B = 1, as a torch tensor or a
    NumPy array of the module's dtype (float32 or float64), and returns the top
    layer's new hidden state (a Jordan network's output y) of shape (B, H) or (H,), of
    the same kind as x. Pass ``out=`` (a C-contiguous array of that shape) to write
    into it without allocating.
    """

    def __init__(self, module: nn.Module, batch_size: int = 1):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        arch, act, out_act, reset_after, layers, sizes, params = _describe(module)
        dtype = params[0].dtype
        if dtype not in (torch.float32, torch.float64) or params[0].device.type != "cpu":
            raise TypeError(f"module: a stream runs on the CPU in float32 or float64, got {dtype} on "
                            f"{params[0].device}")
        self.batch_size = batch_size
        self.dtype = dtype
        self.layers = layers
        self.input_size = sizes[0]
        self._lstm = arch == _ARCH["lstm"]
        self._jordan = arch == _ARCH["jordan"]
        self._width = sizes[2] if arch == _ARCH["jordan"] else sizes[1]
        self._core = _core.Stream(_backend.current_isa(), arch, act, out_act, bool(reset_after), batch_size, sizes,
                                  params)
        # A team of threads is started for every step: worth it only for large steps.
        self._threads = _backend.num_threads(batch_size, sizes[1], 2 * _core.gate_count(arch), min_macs=1 << 23)
        self._np_dtype = np.float32 if dtype == torch.float32 else np.float64
        self._out = self._out_np = None  # the last `out=` buffer and its NumPy view

    def step(self, x, out=None):
        """Advance one time step with input ``x``; returns the new top-layer state."""
        B = self.batch_size
        if isinstance(x, Tensor):
            if x.dtype != self.dtype:
                raise TypeError(f"x: expected dtype {self.dtype} like the module, got {x.dtype}")
            if x.device.type != "cpu":
                raise TypeError(f"x: expected a CPU tensor, got device {x.device}")
            xn = x.detach().numpy()  # a view: NumPy arrays cross into C++ cheaply
            as_torch = True
        elif isinstance(x, np.ndarray):
            if x.dtype != self._np_dtype:
                raise TypeError(f"x: expected dtype {np.dtype(self._np_dtype).name} like the module, got {x.dtype}")
            xn, as_torch = x, False
        else:
            raise TypeError(f"x: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
        unbatched = xn.ndim == 1
        if unbatched:
            if B != 1:
                raise ValueError(f"x: expected shape ({B}, {self.input_size}) for batch_size={B}, "
                                 f"got {tuple(x.shape)}")
            xn = xn.reshape(1, -1)
        if xn.shape != (B, self.input_size):
            raise ValueError(f"x: expected shape ({B}, {self.input_size}), got {tuple(x.shape)}")
        if out is None:
            y = torch.empty(B, self._width, dtype=self.dtype) if as_torch else \
                np.empty((B, self._width), dtype=self._np_dtype)
            yn = y.numpy() if as_torch else y
        else:
            y = out
            if out is self._out:  # the same buffer as last call: reuse its NumPy view
                yn = self._out_np
            else:
                yn = out.numpy() if isinstance(out, Tensor) else out
                self._out, self._out_np = out, yn
            yn = yn.reshape(B, self._width) if unbatched else yn
        self._core.step(xn if xn.flags.c_contiguous else np.ascontiguousarray(xn), yn, self._threads)
        return y.reshape(-1) if unbatched and out is None else y

    def state(self):
        """The current state as torch.nn returns it: h (L, B, H); (h, c) for an LSTM; y (B, O) for Jordan."""
        def read(which):
            buf = torch.empty(self.layers, self.batch_size, self._width, dtype=self.dtype)
            for l in range(self.layers):
                self._core.state(l, which, buf[l], False)
            return buf

        h = read(0)
        if self._lstm:
            return h, read(1)
        return h[0] if self._jordan else h

    def reset(self, state=None) -> None:
        """Set the state (zeros if None); same layout as :meth:`state` returns."""
        parts = [state] if not self._lstm else (list(state) if state is not None else [None, None])
        for which, part in enumerate(parts):
            for l in range(self.layers):
                if part is None:
                    value = torch.zeros(self.batch_size, self._width, dtype=self.dtype)
                else:
                    part = torch.as_tensor(part, dtype=self.dtype)
                    value = part if self._jordan else part[l]
                    if tuple(value.shape) != (self.batch_size, self._width):
                        raise ValueError(f"state: expected shape {self._state_shape()}, got {tuple(part.shape)}")
                self._core.state(l, which, value.contiguous(), True)

    def _state_shape(self):
        return (self.batch_size, self._width) if self._jordan else (self.layers, self.batch_size, self._width)
