"""Checks of user input shared by the native path and the modules, with one message
each. The reference (the independent oracle, which imports nothing of rnnkit) and the
binding in csrc/bindings.cpp (the native boundary's last line of defence) check again
in the same words; tests/test_errors.py holds the messages equal."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def lengths_tensor(lengths, T: int, B: int, device=None) -> Optional[Tensor]:
    """``lengths`` (None, or B integers in [1, T]) as an int64 tensor (B,) on ``device``
    (CPU by default); raises TypeError / ValueError naming ``lengths`` otherwise."""
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
        raise TypeError(f"lengths: expected an integer tensor, got dtype {lengths.dtype}")
    lengths = lengths.to(device=device or "cpu", dtype=torch.int64).contiguous()
    if lengths.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (one length per batch row), got {tuple(lengths.shape)}")
    # (While torch.compile traces, the values are unknown: the binding checks them when it runs.)
    if B and not torch.compiler.is_compiling() and (int(lengths.min()) < 1 or int(lengths.max()) > T):
        bad = lengths[(lengths < 1) | (lengths > T)][0].item()
        raise ValueError(f"lengths: every length must be in [1, T={T}], got {bad}")
    return lengths
