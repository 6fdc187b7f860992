"""Every compiled instruction-set path (AVX-512, AVX2, generic SIMD) equals
rnnkit.reference (outputs, final states, all gradients) within the parity tolerance,
agrees with the generic path, and is bit-deterministic run to run."""
import pytest
import torch

import rnnkit
from rnnkit import reference
from conftest import TOL, pairs, rel_err

PATHS = rnnkit.available_isas()


def _results(m, x, out, states):
    loss = sum((o * o.detach().cos()).sum() for o in [out] + states)
    grads = torch.autograd.grad(loss, [x] + list(m.parameters()))
    return [out.detach()] + [s.detach() for s in states] + list(grads)


def _run(m, x):
    out, state = m(x)
    return _results(m, x, out, list(state) if isinstance(state, tuple) else [state])


def _run_reference(m, x):
    """The same one-layer module computed by rnnkit.reference (per-step torch code from
    SPEC.md); a bidirectional layer's backward direction runs on x reversed in time."""
    assert m.num_layers == 1
    outs, finals = [], []
    for d in range(2 if m.bidirectional else 1):
        xin = x.flip(0) if d else x
        p = m._params(0, d) if isinstance(m, rnnkit.JordanRNN) else \
            [getattr(m, f"{n}_l0{'_reverse' if d else ''}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if isinstance(m, rnnkit.JordanRNN):
            out, final = reference.jordan(xin, None, *p, nonlinearity=m.nonlinearity,
                                          output_nonlinearity=m.output_nonlinearity)
        elif isinstance(m, rnnkit.LSTM):
            out, final = reference.lstm(xin, None, None, *p)
        elif isinstance(m, rnnkit.GRU):
            out, final = reference.gru(xin, None, *p, reset_after=m.reset_after)
        else:
            out, final = reference.elman(xin, None, *p, nonlinearity=m.nonlinearity)
        finals.append(final if isinstance(final, tuple) else (final,))
        outs.append(out.flip(0) if d else out)
    states = [torch.stack([f[i] for f in finals]) for i in range(len(finals[0]))]  # (D, B, S) each
    return _results(m, x, torch.cat(outs, dim=2), states)


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
def test_every_path_equals_reference_and_generic_path_and_is_deterministic(isa, dtype, make, B):
    torch.manual_seed(0)
    m = make().to(dtype)
    x = torch.randn(9, B, m.input_size, dtype=dtype, requires_grad=True)
    oracle = _run_reference(m, x)
    with rnnkit.use_isa("generic"):
        generic = _run(m, x)
    with rnnkit.use_isa(isa):
        got = _run(m, x)
        again = _run(m, x)
    for k, (a, r) in enumerate(pairs(got, oracle)):
        assert a.shape == r.shape and rel_err(a, r) <= TOL[dtype], f"result {k}: {rel_err(a, r):.3g} from reference"
    for k, (a, g) in enumerate(pairs(got, generic)):
        assert rel_err(a, g) <= TOL[dtype], f"result {k}: {rel_err(a, g):.3g} from the generic path"
    for a, c in pairs(got, again):
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
