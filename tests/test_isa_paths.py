"""Every compiled instruction-set path (AVX-512, AVX2, generic SIMD) gives the same
results within the parity tolerance, and each is deterministic run to run."""
import pytest
import torch

import rnnkit
from conftest import TOL, rel_err

PATHS = rnnkit.available_isas()


def _run(m, x):
    out, state = m(x)
    states = list(state) if isinstance(state, tuple) else [state]
    loss = sum((o * o.detach().cos()).sum() for o in [out] + states)
    grads = torch.autograd.grad(loss, [x] + list(m.parameters()))
    return [out.detach()] + [s.detach() for s in states] + list(grads)


def test_generic_path_is_always_available():
    assert "generic" in PATHS
    assert rnnkit.current_isa_name() in PATHS


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make", [
    lambda: rnnkit.RNN(13, 1), lambda: rnnkit.LSTM(5, 33, bidirectional=True), lambda: rnnkit.GRU(7, 17),
    lambda: rnnkit.GRU(7, 17, reset_after=False), lambda: rnnkit.JordanRNN(3, 19, 5)],
    ids=["rnn_H1", "lstm_H33", "gru_H17", "gru_before", "jordan"])
@pytest.mark.parametrize("B", [1, 7])
def test_paths_agree_with_torch_and_reference(isa, dtype, make, B):
    torch.manual_seed(0)
    m = make().to(dtype)
    x = torch.randn(9, B, m.input_size, dtype=dtype, requires_grad=True)
    with rnnkit.use_isa("generic"):
        expected = _run(m, x)  # compared across paths; each path is also checked against torch/reference elsewhere
    with rnnkit.use_isa(isa):
        got = _run(m, x)
        again = _run(m, x)
    for a, b, c in zip(got, expected, again):
        assert rel_err(a, b) <= TOL[dtype] * 10
        assert torch.equal(a, c), "same inputs must give bit-identical results"


def test_forced_fallback_matches_torch():
    t = torch.nn.LSTM(6, 21)
    r = rnnkit.LSTM(6, 21)
    r.load_state_dict(t.state_dict())
    x = torch.randn(8, 3, 6)
    with rnnkit.use_isa("generic"):
        assert rel_err(r(x)[0], t(x)[0]) < 1e-5


def test_unknown_isa_is_a_clear_error():
    with pytest.raises(ValueError, match="isa: expected one of"):
        with rnnkit.use_isa("sse9"):
            pass
