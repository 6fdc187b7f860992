"""The recurrence split across threads gives bit-identical results for any thread
count (each element is computed by one thread with a fixed summation order), on
every ISA path, with and without lengths, forward and backward."""
import threading

import pytest
import torch

import rnnkit
from conftest import pairs


def _run(m, x, lengths):
    out, state = m(x, lengths=lengths)
    states = list(state) if isinstance(state, tuple) else [state]
    g = torch.Generator().manual_seed(3)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in [out] + states)
    grads = torch.autograd.grad(loss, [x] + list(m.parameters()))
    return [out.detach()] + [s.detach() for s in states] + list(grads)


@pytest.mark.parametrize("isa", rnnkit.available_isas())
@pytest.mark.parametrize("make", [
    lambda: rnnkit.RNN(9, 70), lambda: rnnkit.LSTM(9, 70), lambda: rnnkit.GRU(9, 70),
    lambda: rnnkit.GRU(9, 70, reset_after=False)], ids=["rnn", "lstm", "gru", "gru_before"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_bit_identical_for_any_thread_count(isa, make, with_lengths):
    m = make()
    x = torch.randn(6, 5, 9, requires_grad=True)
    lengths = torch.tensor([6, 3, 1, 6, 2]) if with_lengths else None
    with rnnkit.use_isa(isa):
        results = {}
        for n in (1, 2, 3, 5):
            with rnnkit.use_threads(n):
                results[n] = _run(m, x, lengths)
    for n in (2, 3, 5):
        for a, b in pairs(results[1], results[n]):
            assert torch.equal(a, b), f"{n} threads differ from 1 thread"


def test_threaded_matches_torch():
    t = torch.nn.LSTM(16, 96)
    r = rnnkit.LSTM(16, 96)
    r.load_state_dict(t.state_dict())
    x = torch.randn(7, 9, 16)
    with rnnkit.use_threads(2):
        assert torch.allclose(r(x)[0], t(x)[0], rtol=1e-5, atol=1e-6)


def test_concurrent_calls_from_python_threads():
    """No global state: two Python threads running different models at once."""
    models = [rnnkit.GRU(8, 40), rnnkit.LSTM(8, 40)]
    x = torch.randn(20, 4, 8)
    expected = [m(x)[0] for m in models]
    errors = []

    def work(i):
        try:
            for _ in range(20):
                with rnnkit.use_threads(2):
                    if not torch.equal(models[i](x)[0], expected[i]):
                        errors.append(i)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_bad_thread_count():
    with pytest.raises(ValueError, match="n: expected a positive integer thread count, got 0"):
        with rnnkit.use_threads(0):
            pass
