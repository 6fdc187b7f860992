"""Threads in the recurrence. Bit-identical results for any thread count, for every
network on every ISA path, are checked by tests/test_networks.py; here: a threaded
run against torch.nn, and threads from several Python threads at once."""
import threading

import pytest
import torch

import rnnkit


def _run(m, x, lengths):
    out, state = m(x, lengths=lengths)
    states = list(state) if isinstance(state, tuple) else [state]
    g = torch.Generator().manual_seed(3)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in [out] + states)
    grads = torch.autograd.grad(loss, [x] + list(m.parameters()))
    return [out.detach()] + [s.detach() for s in states] + list(grads)


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
