"""Every network of the registry (rnnkit.networks), checked the same way.

The ``network`` fixture (conftest.py) yields each network and variant with each of its
example hyper-parameter settings, so a new entry of the registry is tested here without
edits: against an independent per-step oracle (the layer stack written out below from
``rnnkit.reference``, with the time reversal of the backward direction written in the
test), against torch.nn where it computes the same equations, by float64 gradcheck
through the native kernels, cell against layer, stream against layer, on every
instruction-set path, for any thread count, and with no Python loop over time.
"""
import gc
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import networks

from conftest import NETWORK_CASES, TOL, rel_err

T, B, I, H = 6, 4, 5, 7
LENGTHS = torch.tensor([6, 2, 5, 1])


def reverse_within_lengths(t, lengths):
    """Each sequence b reversed over its first lengths[b] steps; padding stays in place."""
    out = t.clone()
    for b, n in enumerate(lengths.tolist()):
        out[:n, b] = t[:n, b].flip(0)
    return out


def oracle_stack(spec, module, x, states, lengths, masks=None):
    """The whole layer stack from the per-step reference, independently of rnnkit.modules.
    ``masks``: per layer and direction, the zoneout / recurrent_mask arguments (SPEC
    section 16) to use; by default zoneout's expected value at evaluation, z = p."""
    hyper = spec.hyper_of(module)
    D = 2 if module.bidirectional else 1
    finals = [[] for _ in spec.states]
    inp = x
    p = getattr(module, "zoneout", 0.0)
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            suffix = "_reverse" if d else ""
            params = [getattr(module, f"{role}_l{layer}{suffix}", None) for role in spec.param_roles]
            init = [None if s is None else s[layer * D + d] for s in states]
            xin = reverse_within_lengths(inp, lengths) if d else inp
            if masks is not None:
                extra = masks[layer * D + d]
            elif p and not module.training:
                width = getattr(module, spec.state_size)
                extra = {"zoneout": tuple(torch.full((x.shape[0], x.shape[1], width), p, dtype=x.dtype)
                                          for _ in spec.states)}
            else:
                extra = {}
            out, fin = spec.reference(xin, *init, *params, **hyper, lengths=lengths, **extra)[:2]
            outs.append(reverse_within_lengths(out, lengths) if d else out)
            for i, f in enumerate(fin if isinstance(fin, tuple) else (fin,)):
                finals[i].append(f)
        inp = torch.cat(outs, dim=-1)
    return inp, [torch.stack(f) for f in finals]


def initial_states(case, module, dtype):
    D = 2 if module.bidirectional else 1
    return [torch.randn(module.num_layers * D, B, S, dtype=dtype, requires_grad=True)
            for S in case.spec.state_widths(module)]


def as_hx(states):
    return tuple(states) if len(states) > 1 else states[0]


def as_list(final):
    return list(final) if isinstance(final, tuple) else [final]


def grads_of(outputs, leaves):
    g = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(loss, leaves)


def assert_close(a_list, b_list, tol, what):
    assert len(a_list) == len(b_list), f"{what}: {len(a_list)} tensors vs {len(b_list)}"
    for k, (a, b) in enumerate(zip(a_list, b_list)):
        assert a.shape == b.shape, f"{what}[{k}]: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        err = rel_err(a, b)
        assert err <= tol, f"{what}[{k}]: relative error {err:.3g} > {tol:g}"


# ---- the registry itself ------------------------------------------------------------------
def test_registry_names_classes_and_lookup(network):
    spec = network.spec
    assert networks.get(spec.name) is spec
    assert networks.network_of(network.layer(I, H)) is spec
    assert networks.network_of(network.cell(I, H)) is spec
    assert set(spec.unit_interval) <= set(spec.internals)
    assert set(spec.states[1:]) <= set(spec.internals), "a state other than the output must be recorded"
    assert set(spec.states) | set(spec.internals) <= set(spec.descriptions)


def test_aliases_and_unknown_names():
    assert len(set(networks.names())) == len(networks.NETWORKS)
    for alias, name in networks.ALIASES.items():
        assert alias not in networks.NETWORKS and networks.get(alias) is networks.NETWORKS[name]
    with pytest.raises(ValueError, match=r"network: expected one of rnn, jordan, lstm, gru, gru-rb, got 'cnn'"):
        networks.get("cnn")
    with pytest.raises(TypeError, match=r"module: expected an rnnkit .* got Linear"):
        networks.network_of(torch.nn.Linear(2, 2))


# ---- the native layer against the independent oracle, on every ISA path ---------------
@pytest.mark.parametrize("isa", rnnkit.available_isas())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_layer_stack_matches_per_step_oracle(network, isa, dtype):
    m = network.layer(I, H, dtype, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    states = initial_states(network, m, dtype)
    with rnnkit.use_isa(isa):
        out, final = m(x, as_hx(states), lengths=LENGTHS)
        ours = [out] + as_list(final)
        our_grads = grads_of(ours, [x, *states, *m.parameters()])
    theirs_out, theirs_final = oracle_stack(network.spec, m, x, states, LENGTHS)
    theirs = [theirs_out] + theirs_final
    assert_close(ours, theirs, TOL[dtype], "outputs")
    assert_close(our_grads, grads_of(theirs, [x, *states, *m.parameters()]), TOL[dtype], "gradients")


@pytest.mark.parametrize("network", [c for c in NETWORK_CASES if c.spec.torch_computes_same(c.hyper)],
                         ids=lambda c: c.name)
def test_matches_torch_nn_where_torch_has_it(network):
    spec = network.spec
    kwargs = {k: v for k, v in network.hyper.items() if k not in spec.options}
    t = spec.torch_class(I, H, num_layers=2, bidirectional=True, **kwargs).double()
    r = network.layer(I, H, num_layers=2, bidirectional=True)
    r.load_state_dict(t.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    states = initial_states(network, r, torch.float64)
    results = []
    for module in (t, r):
        out, final = module(pack_padded_sequence(x, LENGTHS, enforce_sorted=False), as_hx(states))
        outputs = [pad_packed_sequence(out, total_length=T)[0]] + as_list(final)
        results.append((outputs, grads_of(outputs, [x, *states, *module.parameters()])))
    assert_close(results[1][0], results[0][0], TOL[torch.float64], "outputs")
    assert_close(results[1][1], results[0][1], TOL[torch.float64], "gradients")


def test_float64_gradcheck_through_the_native_kernels(network):
    spec = network.spec
    m = network.layer(3, 4)
    roles = [r for r in spec.param_roles if getattr(m, f"{r}_l0", None) is not None]  # present, in signature order
    params = [getattr(m, f"{r}_l0").detach().clone().requires_grad_() for r in roles]
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    states = [torch.randn(2, S, dtype=torch.float64, requires_grad=True) for S in spec.state_widths(m)]
    hyper = spec.hyper_of(m)
    lengths = torch.tensor([4, 2])

    def f(x, *rest):
        st, ps = rest[:len(states)], dict(zip(roles, rest[len(states):]))
        out, final = spec.functional(x, *st, *[ps.get(r) for r in spec.param_roles], **hyper, lengths=lengths)
        return (out, *as_list(final))

    assert torch.autograd.gradcheck(f, (x, *states, *params), eps=1e-6, atol=1e-7)


# ---- cell, stream, threads -------------------------------------------------------------
@pytest.mark.parametrize("network", [c for c in NETWORK_CASES if c.has_cell], ids=lambda c: c.name)
def test_cell_stepped_by_hand_equals_the_layer(network):
    spec = network.spec
    cell, layer = network.cell(I, H), network.layer(I, H)
    with torch.no_grad():
        for role in spec.param_roles:  # a role the network does not have here is None on both
            if cell._parameters.get(role) is not None:
                getattr(layer, f"{role}_l0").copy_(cell._parameters[role])
    x = torch.randn(T, B, I, dtype=torch.float64)
    state = None
    for t in range(T):
        state = cell(x[t], state)
    out, final = layer(x)
    assert_close([s.unsqueeze(0) for s in as_list(state)], as_list(final), TOL[torch.float64], "final state")
    assert_close([as_list(state)[0]], [out[-1]], TOL[torch.float64], "last output")


@pytest.mark.parametrize("network", [c for c in NETWORK_CASES if c.streams], ids=lambda c: c.name)
def test_stream_equals_the_layer_over_the_sequence(network):
    m = network.layer(I, H, torch.float32, num_layers=2).eval()
    x = torch.randn(T, B, I)
    with torch.no_grad():
        out, final = m(x)
    stream = rnnkit.Stream(m, batch_size=B)
    steps = torch.stack([stream.step(x[t]).clone() for t in range(T)])
    assert_close([steps], [out], TOL[torch.float32], "stream outputs")
    assert_close(as_list(stream.state()), as_list(final), TOL[torch.float32], "stream state")


@pytest.mark.parametrize("isa", rnnkit.available_isas())
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_bit_identical_for_any_thread_count(network, isa, lengths, team):
    m = network.layer(9, 70, torch.float32)
    x = torch.randn(T, B, 9, requires_grad=True)
    runs = {}
    with rnnkit.use_isa(isa):
        for n in (1, 2, 3, 5):
            with rnnkit.use_threads(n):
                out, final = m(x, lengths=lengths)
                outputs = [out] + as_list(final)
                runs[n] = [o.detach() for o in outputs] + list(grads_of(outputs, [x, *m.parameters()]))
    for n in (2, 3, 5):
        assert len(runs[n]) == len(runs[1])
        for k, (a, b) in enumerate(zip(runs[1], runs[n])):
            assert torch.equal(a, b), f"tensor {k}: {n} threads differ from 1"


def _python_calls(fn) -> int:
    """Python-level calls made by fn(); garbage collection is off meanwhile, so that
    finalizers of earlier objects are not counted."""
    calls = 0

    def profiler(frame, event, arg):
        nonlocal calls
        calls += event == "call"

    gc.collect()
    gc.disable()
    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
        gc.enable()
    return calls


def test_no_python_loop_over_time(network):
    m = network.layer(I, H, torch.float32, num_layers=2, bidirectional=True)

    def run(steps):
        x = torch.randn(steps, 3, I, requires_grad=True)
        lengths = torch.tensor([steps, steps // 2, 1])
        return lambda: m(x, lengths=lengths)[0].sum().backward()

    run(10)()  # lazy imports and caches
    short, long = _python_calls(run(10)), _python_calls(run(1000))
    assert short == long, f"Python calls: {short} at T=10, {long} at T=1000"


# ---- what the network shows inside --------------------------------------------------------
def test_internals_and_state_gradients_are_the_registry_s(network):
    spec = network.spec
    m = network.layer(I, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    recorders: list = []
    out, final, internals = m.forward_with_internals(x, lengths=LENGTHS, grad_recorders=recorders)
    assert len(internals) == len(recorders) == 4
    for inside in internals:
        assert tuple(inside) == spec.internals or set(inside) == set(spec.internals)
        for name in spec.unit_interval:
            assert 0 <= inside[name].min() and inside[name].max() <= 1, name
    out.sum().backward()
    for rec in recorders:
        assert set(rec) == set(spec.gradient_keys())
        widths = dict(zip(spec.gradient_keys(), spec.state_widths(m)))
        assert all(rec[k].shape == (T, B, widths[k]) for k in rec)


def test_stream_names_a_setting_it_does_not_run(monkeypatch):
    """Every network streams every setting today; the rule for the next one that does not,
    with the registry made to say so of the LSTM's peepholes."""
    from rnnkit import networks
    monkeypatch.setattr(networks.Network, "not_streamed",
                        property(lambda n: ("peephole",) if n.name == "lstm" else ()))
    network = next(c for c in NETWORK_CASES if c.name == "lstm-peephole")
    with pytest.raises(NotImplementedError, match=r"module: rnnkit.Stream does not run peephole=True"):
        rnnkit.Stream(network.layer(I, H, torch.float32))
    rnnkit.Stream(next(c for c in NETWORK_CASES if c.name == "lstm").layer(I, H, torch.float32))  # the plain one runs
