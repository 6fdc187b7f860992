import os
import sys

import pytest
import torch

# Tests run on a 2-core machine next to other work: one intra-op thread keeps them
# predictable, and small sizes keep the suite fast.
torch.set_num_threads(1)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 for two empty or all-zero tensors)."""
    if a.numel() == 0 and b.numel() == 0:
        return 0.0
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
