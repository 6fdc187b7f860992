"""The cells' fast paths: without autograd one native call on the cached plan, with
autograd a Function per step (the plan's forward, the layer's own backward). Each
equals the reference (SPEC, rnnkit.reference) and the general path (a non-contiguous
input takes it), its gradients pass gradcheck, its plan follows every change of a
parameter, and bad input still raises the general path's clear errors."""
import copy
import pickle

import pytest
import torch
from torch import nn

import rnnkit
from conftest import NETWORK_CASES, TOL, pairs, rel_err

I, H = 4, 6


# The fast paths run the one-step kernels: every setting of the registry those run
# (rnnkit.Stream's), which this module's ``network`` fixture yields; the others take the
# general path, checked at the end: zoneout (SPEC section 16: the fast
# step applies no regulariser, so a cell with zoneout draws z, or uses its expected value
# p at evaluation, on the general path).
@pytest.fixture(params=[c for c in NETWORK_CASES if c.streams and c.has_cell and not c.regularised],
                ids=lambda c: c.name)
def network(request):
    return request.param


def _states(network, cell, B, dtype, zeros=False):
    W = getattr(cell, network.spec.state_size)
    shape = (B, W) if B else (W,)
    make = torch.zeros if zeros else torch.randn
    return tuple(make(shape, dtype=dtype) for _ in network.spec.states)


def _call(cell, x, states):
    return cell(x, states if len(states) > 1 else states[0])


def _tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _reference(network, cell, x, states):
    params = [cell._parameters.get(r) for r in network.spec.param_roles]
    return _tuple(network.spec.reference_step(x, *states, *params, **network.spec.hyper_of(cell)))


def _strided(x):
    """x as a non-contiguous view with the same values (it takes the general path)."""
    wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
    wide[..., ::2] = x
    return wide[..., ::2]


MODES = {
    "inference_mode": torch.inference_mode,
    "no_grad": torch.no_grad,
    "frozen": None,  # grad enabled, nothing requires grad
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [3, 0], ids=["batched", "unbatched"])
def test_no_grad_steps_equal_reference_and_general_path(network, mode, dtype, B):
    cell = network.cell(I, H, dtype=dtype)
    if mode == "frozen":
        cell.requires_grad_(False)
    states = _states(network, cell, B, dtype)
    xs = torch.randn(5, *((B,) if B else ()), I, dtype=dtype)
    general = states
    with MODES[mode]() if MODES[mode] else torch.enable_grad():
        first = cell(xs[0])  # the states default to zeros
        for a, b in pairs(_tuple(first), _reference(network, cell, xs[0], _states(network, cell, B, dtype, True))):
            assert rel_err(a, b) < TOL[dtype]
        for t in range(5):
            want = _reference(network, cell, xs[t], states)
            states = _tuple(_call(cell, xs[t], states))
            general = _tuple(_call(cell, _strided(xs[t]), general))
            for a, b, c in zip(states, want, general):
                assert a.shape == b.shape and a.dtype == dtype and a.grad_fn is None
                assert rel_err(a, b) < TOL[dtype], f"step {t}"
                assert rel_err(a, c) < TOL[dtype], f"step {t}"
    assert cell._plans.builds == 1  # packed once for all the steps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_autograd_step_equals_reference(network, dtype):
    cell = network.cell(I, H, dtype=dtype)
    x = torch.randn(3, I, dtype=dtype, requires_grad=True)
    states = tuple(s.requires_grad_() for s in _states(network, cell, 3, dtype))
    got = _tuple(_call(cell, x, states))
    assert all(type(g.grad_fn).__name__.endswith("StepBackward") for g in got)  # the fast path ran
    want = _reference(network, cell, x, states)
    weights = [torch.randn_like(g) for g in got]
    inputs = [x, *states, *cell.parameters()]
    d_got = torch.autograd.grad(sum((w * g).sum() for w, g in zip(weights, got)), inputs)
    d_want = torch.autograd.grad(sum((w * g).sum() for w, g in zip(weights, want)), inputs)
    tol = TOL[dtype] if dtype == torch.float64 else 1e-4
    for a, b in pairs(got, want):
        assert rel_err(a, b) < TOL[dtype]
    for a, b in pairs(d_got, d_want):
        assert rel_err(a, b) < tol
    # and against the general path (a non-contiguous input), gradients included
    general = _tuple(_call(cell, _strided(x.detach()).requires_grad_(), states))
    d_general = torch.autograd.grad(sum((w * g).sum() for w, g in zip(weights, general)), inputs[1:])
    for a, b in pairs(d_got[1:], d_general):
        assert rel_err(a, b) < tol


def test_the_c_apply_equals_function_apply(network, monkeypatch):
    """A step's Function is applied by torch's C entry (rnnkit.cells._step_apply): the
    same outputs, grad_fn and gradients, bit for bit, as through Function.apply, which
    also runs while a functorch transform is active."""
    from rnnkit import cells
    cell = network.cell(I, H, dtype=torch.float64)
    x = torch.randn(3, I, dtype=torch.float64, requires_grad=True)
    states = tuple(s.requires_grad_() for s in _states(network, cell, 3, torch.float64))
    inputs = [x, *states, *cell.parameters()]
    table = cells._LN_STEP_FUNCTIONS if getattr(cell, "layer_norm", False) else cells._STEP_FUNCTIONS
    fn = table[network.spec.kernel][0]
    assert fn.c_apply is not None  # this torch has the entry
    results = []
    for c_apply in (fn.c_apply, None):
        monkeypatch.setattr(fn, "c_apply", c_apply)
        got = _tuple(_call(cell, x, states))
        assert all(type(g.grad_fn) is fn._backward_cls for g in got)
        weights = [torch.full_like(g, 0.5) for g in got]
        results.append((got, torch.autograd.grad(sum((w * g).sum() for w, g in zip(weights, got)), inputs)))
    (a, da), (b, db) = results
    for u, v in pairs(a + da, b + db):
        assert torch.equal(u, v)


def test_autograd_step_gradcheck(network):
    """float64 gradcheck through the fast path, the parameters included (passed through
    torch.func.functional_call as fresh tensors, so every call builds a plan of its own)."""
    cell = network.cell(3, 4)
    names = [n for n, _ in cell.named_parameters()]
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    states = tuple(s.requires_grad_() for s in _states(network, cell, 2, torch.float64))
    params = tuple(p.detach().clone().requires_grad_() for p in cell.parameters())
    n = len(states)

    def step(x, *rest):
        hx, ps = rest[:n], rest[n:]
        out = torch.func.functional_call(cell, {k: p.clone() for k, p in zip(names, ps)}, (x, hx if n > 1 else hx[0]))
        assert all(type(o.grad_fn).__name__.endswith("StepBackward") for o in _tuple(out))
        return out

    assert torch.autograd.gradcheck(step, (x, *states, *params))


def test_a_chain_of_steps_backpropagates_like_the_layer(network):
    """Cells stepped by hand under autograd give the layer's gradients over the sequence."""
    layer = network.layer(I, H)
    cell = network.cell(I, H)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
    x = torch.randn(6, 2, I, dtype=torch.float64)
    out, _ = layer(x)
    states = None
    outs = []
    for t in range(6):
        states = cell(x[t], states)
        outs.append(states[0] if isinstance(states, tuple) else states)
    w = torch.randn_like(out)
    d_layer = torch.autograd.grad((w * out).sum(), list(layer.parameters()))
    d_cell = torch.autograd.grad((w * torch.stack(outs)).sum(), list(cell.parameters()))
    for a, b in pairs(d_cell, d_layer):
        assert rel_err(a, b) < TOL[torch.float64]


def _optimizer_step(cell):
    out = _tuple(cell(torch.randn(2, cell.input_size, dtype=cell.weight_ih.dtype)))
    sum(o.sum() for o in out).backward()
    torch.optim.SGD(cell.parameters(), lr=0.5).step()


def _load_state_dict(cell):
    cell.load_state_dict({k: torch.randn_like(v) for k, v in cell.state_dict().items()})


def _data_assignment(cell):
    cell.weight_ih.data = torch.randn_like(cell.weight_ih)


def _in_place_no_grad(cell):
    with torch.no_grad():
        cell.weight_ih.mul_(-2)


def _to_float64(cell):
    cell.to(torch.float64)


def _new_parameter(cell):
    cell.weight_ih = nn.Parameter(torch.randn_like(cell.weight_ih))


def _bias_removed(cell):
    cell.bias_ih = None


CHANGES = [_optimizer_step, _load_state_dict, _data_assignment, _in_place_no_grad, _to_float64, _new_parameter,
           _bias_removed]


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.lstrip("_"))
def test_plan_follows_every_parameter_change(network, change):
    cell = network.cell(I, H, dtype=torch.float32)
    x = torch.randn(2, I)
    with torch.no_grad():
        before = _tuple(cell(x))
    builds = cell._plans.builds
    change(cell)
    x = x.to(cell.weight_ih.dtype)
    with torch.no_grad():
        after = _tuple(cell(x))
        want = _reference(network, cell, x, _states(network, cell, 2, x.dtype, zeros=True))
    assert cell._plans.builds == builds + 1
    for a, b, c in zip(after, want, before):
        assert a.dtype == x.dtype and rel_err(a, b) < TOL[x.dtype]
        if change is _to_float64:  # the same values, now computed in float64
            assert a.dtype == torch.float64 and rel_err(a, c.double()) < 1e-5
        else:
            assert not torch.allclose(a, c)  # the change is visible


def test_batch_size_isa_and_hyper_parameters_key_the_plan(network):
    cell = network.cell(I, H)
    with torch.no_grad():
        for B in (1, 4, 1):
            x = torch.randn(B, I, dtype=torch.float64)
            for isa in rnnkit.available_isas():
                with rnnkit.use_isa(isa):
                    got = _tuple(cell(x))
                want = _reference(network, cell, x, _states(network, cell, B, x.dtype, zeros=True))
                for a, b in pairs(got, want):
                    assert rel_err(a, b) < TOL[torch.float64]
    assert cell._plans.builds == 1
    if "nonlinearity" in network.spec.hyper:  # a hyper-parameter changed after construction
        cell.nonlinearity = "relu" if cell.nonlinearity != "relu" else "tanh"
        with torch.no_grad():
            got = _tuple(cell(x))
        want = _reference(network, cell, x, _states(network, cell, 1, x.dtype, zeros=True))
        assert rel_err(got[0], want[0]) < TOL[torch.float64]


def test_copies_and_pickles_build_their_own_plan(network):
    cell = network.cell(I, H)
    x = torch.randn(2, I, dtype=torch.float64)
    with torch.no_grad():
        want = _tuple(cell(x))
        for other in (copy.deepcopy(cell), pickle.loads(pickle.dumps(cell))):
            for a, b in pairs(_tuple(other(x)), want):
                assert torch.equal(a, b)
            assert other._plans is not cell._plans


def test_bad_input_raises_clear_errors(network):
    cell = network.cell(I, H, dtype=torch.float32)
    W = getattr(cell, network.spec.state_size)
    arg = "y" if network.spec.state_size == "output_size" else "hx"
    two = len(network.spec.states) > 1
    bad_state = lambda s: (s, torch.zeros(2, W)) if two else s  # noqa: E731
    with torch.inference_mode():
        with pytest.raises(TypeError, match="input: dtype torch.float64 does not match"):
            cell(torch.randn(2, I, dtype=torch.float64))
        with pytest.raises(TypeError, match="input: expected a floating-point tensor"):
            cell(torch.ones(2, I, dtype=torch.int64))
        with pytest.raises(ValueError, match=f"input: expected input_size={I}"):
            cell(torch.randn(2, I + 1))
        with pytest.raises(ValueError, match="input: expected a 2-D"):
            cell(torch.randn(1, 2, I))
        with pytest.raises(ValueError, match="input: expected a 2-D"):
            cell(torch.tensor(1.0))
        with pytest.raises(TypeError, match="input: expected a Tensor"):
            cell([[0.0] * I])
        with pytest.raises(ValueError, match=rf"{arg}(\[0\] \(h\))?: expected shape \(2, {W}\), got \(3, {W}\)"):
            cell(torch.randn(2, I), bad_state(torch.zeros(3, W)))
        with pytest.raises(TypeError, match=rf"{arg}(\[0\] \(h\))?: expected dtype torch.float32"):
            cell(torch.randn(2, I), bad_state(torch.zeros(2, W, dtype=torch.float64)))
        x, s = torch.randn(2, I), torch.randn(2, W)
        want = _tuple(cell(x, bad_state(s)))
        got = _tuple(cell(_strided(x), bad_state(_strided(s))))  # non-contiguous: the general path, same answer
        for a, b in pairs(got, want):
            assert rel_err(a, b) < 1e-6


def _lstm_not_streaming_peepholes(monkeypatch):
    """Every network of the registry streams every setting today; to keep the rule for the
    next one that does not, make the registry say so of the LSTM's peepholes."""
    from rnnkit import cells, networks
    monkeypatch.setattr(networks.Network, "not_streamed",
                        property(lambda n: ("peephole",) if n.name == "lstm" else ()))
    monkeypatch.setattr(cells, "_NOT_STREAMED", None)  # read again from the registry
    return next(c for c in NETWORK_CASES if c.name == "lstm-peephole")


def test_settings_the_one_step_kernels_lack_take_the_general_path(monkeypatch):
    case = _lstm_not_streaming_peepholes(monkeypatch)
    assert not case.streams
    cell = case.cell(I, H, dtype=torch.float64)
    x = torch.randn(3, I, dtype=torch.float64)
    states = _states(case, cell, 3, torch.float64)
    with torch.inference_mode():
        got = _tuple(_call(cell, x, states))
    assert "_plans" not in cell.__dict__  # no plan: the layer function's path ran
    for a, b in zip(got, _reference(case, cell, x, states)):
        assert rel_err(a, b) < TOL[torch.float64]


@pytest.mark.parametrize("case", [c for c in NETWORK_CASES if c.regularised and c.has_cell], ids=lambda c: c.name)
@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
def test_a_cell_with_zoneout_takes_the_general_path(case, grad):
    cell = case.cell(I, H, dtype=torch.float64)  # evaluation (conftest): z = p, the expected value
    p = cell.zoneout
    assert p > 0 and not cell.training
    x = torch.randn(3, I, dtype=torch.float64, requires_grad=grad)
    states = _states(case, cell, 3, torch.float64)
    with torch.set_grad_enabled(grad):
        got = _tuple(_call(cell, x, states))
    assert "_plans" not in cell.__dict__
    with torch.no_grad():
        new = _reference(case, cell, x, states)
    for a, n, s in zip(got, new, states):  # s_t = p s_{t-1} + (1 - p) s~_t
        assert rel_err(a.detach(), p * s + (1 - p) * n) < TOL[torch.float64]


def test_a_variant_seen_first_does_not_hide_another_s_settings(monkeypatch):
    """The per-class registry cache: a GRUCell(reset_after=False) (gru-rb, no gains) stepped
    first must not make a later layer-normalised GRUCell's fast step a plain GRU's."""
    from rnnkit import cells
    monkeypatch.setattr(cells, "_NETWORK_OF_CLASS", {})
    case = next(c for c in NETWORK_CASES if c.spec.name == "gru" and c.hyper.get("layer_norm"))
    x = torch.randn(3, I, dtype=torch.float64)
    with torch.no_grad():
        rnnkit.GRUCell(I, H, reset_after=False).double()(x, torch.randn(3, H, dtype=torch.float64))
        cell = case.cell(I, H, dtype=torch.float64)
        states = _states(case, cell, 3, torch.float64)
        got = _tuple(_call(cell, x, states))
    assert cell._plans.builds == 1  # the fast path ran
    for a, b in zip(got, _reference(case, cell, x, states)):
        assert rel_err(a, b) < TOL[torch.float64]
