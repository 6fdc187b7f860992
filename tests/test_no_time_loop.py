"""Python never loops over time on the hot path: the number of Python-level function
calls in one forward + backward is the same at T = 10 and T = 1000."""
import sys

import pytest
import torch

import rnnkit


def _count_python_calls(fn) -> int:
    calls = 0

    def profiler(frame, event, arg):
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("make", [
    lambda: rnnkit.RNN(8, 16, num_layers=2, bidirectional=True),
    lambda: rnnkit.LSTM(8, 16, num_layers=2),
    lambda: rnnkit.GRU(8, 16, reset_after=False),
    lambda: rnnkit.JordanRNN(8, 16, 4),
], ids=["rnn", "lstm", "gru_before", "jordan"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_python_calls_do_not_grow_with_T(make, with_lengths):
    m = make()

    def step(T):
        x = torch.randn(T, 3, 8, requires_grad=True)
        lengths = torch.tensor([T, T // 2, 1]) if with_lengths else None

        def run():
            out = m(x, lengths=lengths)[0]
            out.sum().backward()
        return run

    step(10)()  # warm up lazy imports and caches
    short, long = _count_python_calls(step(10)), _count_python_calls(step(1000))
    assert short == long, f"Python calls: {short} at T=10, {long} at T=1000"
