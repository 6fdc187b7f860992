"""The one-call forward (rnnkit._stack, csrc/stack.cpp): when no gradient is needed, a
layer's forward pass is one native call, and it equals the layer-by-layer autograd path
for every network of the registry, every form of input and state, on every instruction
set, bit-identically for any thread count; its packed weights follow every change of a
parameter; its binding entry names the argument of any bad input."""
import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import _core

from conftest import NETWORK_CASES, TOL, rel_err


# Every setting of the registry that the core's Stack runs (the registry's not_streamed
# aside: none at present), but not a regulariser (SPEC section 16:
# zoneout acts at evaluation too, as its expected value, and the Stack applies none), which
# test_a_regulariser_that_acts_takes_the_layer_path checks.
@pytest.fixture(params=[c for c in NETWORK_CASES if c.streams and not c.regularised], ids=lambda c: c.name)
def network(request):
    return request.param

T, B, I, H = 6, 4, 5, 7
LENGTHS = torch.tensor([6, 2, 5, 1])


def flat(result):
    out, final = result
    out = out.data if hasattr(out, "batch_sizes") else out
    return [out] + (list(final) if isinstance(final, tuple) else [final])


def assert_close(got, expected, dtype, what):
    assert len(got) == len(expected), f"{what}: {len(got)} tensors vs {len(expected)}"
    for k, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape, f"{what}[{k}]: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        err = rel_err(a, b)
        assert err <= TOL[dtype], f"{what}[{k}]: relative error {err:.3g} > {TOL[dtype]:g}"


def _sequence_kernel(case) -> str:
    """The core's sequence kernel the layer path of this setting calls (layer_norm: its own)."""
    return ("ln_" if case.hyper.get("layer_norm") else "") + case.spec.kernel + "_forward"


class CallCounter:
    """Counts the calls of every native entry point: the Stack's (either entry counts as
    "Stack.run"; ``entries`` says which: run, NumPy arrays, or run_ptr, addresses) and each
    sequence kernel."""

    KERNELS = ("elman_forward", "lstm_forward", "gru_forward", "jordan_forward", "ln_lstm_forward", "ln_gru_forward")

    def __init__(self, monkeypatch):
        self.calls, self.entries = [], []
        for entry in ("run", "run_ptr"):
            monkeypatch.setattr(_core.Stack, entry, self._stack_entry(entry, getattr(_core.Stack, entry)))
        for name in self.KERNELS:
            monkeypatch.setattr(_core, name, self._wrap(name, getattr(_core, name)))

    def _stack_entry(self, entry, fn):
        def counted(stack, *args, **kwargs):
            self.calls.append("Stack.run")
            self.entries.append(entry)
            return fn(stack, *args, **kwargs)
        return counted

    def _wrap(self, name, fn):
        def counted(*args, **kwargs):
            self.calls.append(name)
            return fn(*args, **kwargs)
        return counted


def states_for(network, m, batch, dtype, requires_grad=False):
    D = 2 if m.bidirectional else 1
    states = [torch.randn(m.num_layers * D, batch, S, dtype=dtype, requires_grad=requires_grad)
              for S in network.spec.state_widths(m)]
    return tuple(states) if len(states) > 1 else states[0]


def detached(hx):
    if hx is None:
        return None
    return tuple(h.detach() for h in hx) if isinstance(hx, tuple) else hx.detach()


FORMS = ["plain", "lengths", "packed", "batch_first", "unbatched"]


def make_input(form, m_dtype, batch_first=False):
    if form == "unbatched":
        return torch.randn(T, I, dtype=m_dtype), {}
    x = torch.randn(T, B, I, dtype=m_dtype)
    if form == "lengths":
        return x, {"lengths": LENGTHS}
    if form == "packed":
        return pack_padded_sequence(x, LENGTHS, enforce_sorted=False), {}
    if form == "batch_first":
        return x.transpose(0, 1).contiguous(), {}
    return x, {}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("with_state", [False, True], ids=["no-state", "state"])
def test_one_call_equals_the_autograd_path(network, form, dtype, with_state, monkeypatch):
    m = network.layer(I, H, dtype, num_layers=2, bidirectional=True, batch_first=form == "batch_first")
    x, kwargs = make_input(form, dtype)
    hx = None
    if with_state:
        hx = states_for(network, m, 1 if form == "unbatched" else B, dtype)
        if form == "unbatched":
            hx = tuple(h[:, 0] for h in hx) if isinstance(hx, tuple) else hx[:, 0]
    expected = flat(m(x, hx, **kwargs))  # parameters require grad: the layer-by-layer autograd path
    assert expected[0].requires_grad
    counter = CallCounter(monkeypatch)
    with torch.inference_mode():
        got = flat(m(x, hx, **kwargs))
    assert counter.calls == ["Stack.run"]
    assert_close(got, [e.detach() for e in expected], dtype, f"{network.name} {form}")
    with torch.no_grad():
        again = flat(m(x, hx, **kwargs))
    assert counter.calls == ["Stack.run"] * 2
    for a, b in zip(again, got):
        assert torch.equal(a, b)


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (3, False), (1, True), (3, True)])
def test_depths_and_directions_against_the_autograd_path(network, layers, bidirectional):
    m = network.layer(I, H, torch.float64, num_layers=layers, bidirectional=bidirectional)
    x = torch.randn(T, B, I, dtype=torch.float64)
    hx = states_for(network, m, B, torch.float64)
    expected = [e.detach() for e in flat(m(x, hx, lengths=LENGTHS))]
    with torch.inference_mode():
        got = flat(m(x, hx, lengths=LENGTHS))
    assert_close(got, expected, torch.float64, f"{network.name} L={layers} D={1 + bidirectional}")


def test_nothing_requiring_grad_is_one_call_outside_no_grad(network, monkeypatch):
    m = network.layer(I, H, torch.float32, num_layers=2).requires_grad_(False)
    x = torch.randn(T, B, I)
    counter = CallCounter(monkeypatch)
    out = m(x)[0]
    assert counter.calls == ["Stack.run"] and not out.requires_grad
    x.requires_grad_(True)  # a gradient to record: the autograd path, one kernel per layer
    assert m(x)[0].requires_grad
    assert counter.calls[1:] == [_sequence_kernel(network)] * 2


def test_the_layer_by_layer_path_where_one_call_does_not_apply(network, monkeypatch):
    m = network.layer(I, H, torch.float32, num_layers=2, dropout=0.5)
    x = torch.randn(T, B, I)
    counter = CallCounter(monkeypatch)
    with torch.no_grad():
        m.train()
        m(x)  # dropout between layers in training
        assert "Stack.run" not in counter.calls
        m.eval()
        m(x)
        assert counter.calls[-1] == "Stack.run"
        calls = len(counter.calls)
        m.forward_with_internals(x)
        assert "Stack.run" not in counter.calls[calls:]


@pytest.mark.parametrize("case", [c for c in NETWORK_CASES if c.regularised], ids=lambda c: c.name)
def test_a_regulariser_that_acts_takes_the_layer_path(case, monkeypatch):
    m = case.layer(I, H, torch.float64, num_layers=2)  # evaluation (conftest): zoneout's expected value
    assert m.zoneout > 0 and not m.training
    x = torch.randn(T, B, I, dtype=torch.float64)
    counter = CallCounter(monkeypatch)
    with torch.no_grad():
        got = flat(m(x))
    assert counter.calls == [f"{case.spec.kernel}_forward"] * 2  # no Stack.run
    expected = flat(m(x.clone().requires_grad_()))
    assert_close(got, [e.detach() for e in expected], torch.float64, case.name)
    # Without zoneout, recurrent dropout and weight drop act in training only: one call at evaluation.
    m.zoneout, m.recurrent_dropout, m.weight_drop = 0.0, 0.3, 0.3
    with torch.no_grad():
        got = flat(m(x))
        assert counter.calls[-1] == "Stack.run"
        m.weight_drop = 0.0
        m.train()
        calls = len(counter.calls)
        m(x)
        assert "Stack.run" not in counter.calls[calls:]
        m.recurrent_dropout, m.weight_drop = 0.0, 0.3
        calls = len(counter.calls)
        m(x)
        assert "Stack.run" not in counter.calls[calls:]
    m.eval()
    expected = flat(m(x.clone().requires_grad_()))
    assert_close(got, [e.detach() for e in expected], torch.float64, case.name + " without zoneout")


@pytest.mark.parametrize("isa", rnnkit.available_isas())
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_bit_identical_for_any_thread_count(network, isa, lengths):
    m = network.layer(9, 70, torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, 9)
    runs = {}
    with rnnkit.use_isa(isa), torch.inference_mode():
        for n in (1, 2, 3, 5):
            with rnnkit.use_threads(n):
                runs[n] = flat(m(x, lengths=lengths))
    for n in (2, 3, 5):
        for k, (a, b) in enumerate(zip(runs[1], runs[n])):
            assert torch.equal(a, b), f"tensor {k}: {n} threads differ from 1"


@pytest.mark.parametrize("isa", rnnkit.available_isas())
def test_every_isa_against_the_autograd_path(network, isa):
    m = network.layer(9, 40, torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, 9)
    with rnnkit.use_isa(isa):
        expected = [e.detach() for e in flat(m(x, lengths=LENGTHS))]
        with torch.inference_mode():
            got = flat(m(x, lengths=LENGTHS))
    assert_close(got, expected, torch.float32, f"{network.name} {isa}")


# ---- the cached plan follows every change of a parameter -----------------------------------
def _optimizer_step(m):
    m(torch.randn(T, B, I, dtype=torch.float64))[0].sum().backward()
    torch.optim.SGD(m.parameters(), lr=0.5).step()


def _load_state_dict(m):
    m.load_state_dict({k: v * 1.5 for k, v in m.state_dict().items()})


def _data_assignment(m):
    w = m.weight_ih_l0
    w.data = w.data * 2


def _in_place_no_grad(m):
    with torch.no_grad():
        next(iter(m.parameters())).add_(0.25)


def _to_float64_and_back(m):
    m.to(torch.float32)
    m.to(torch.float64)


def _new_parameter(m):
    m.weight_ih_l1 = nn.Parameter(torch.randn_like(m.weight_ih_l1))


def _nonlinearity(m):  # a hyper-parameter changed on the module: a different plan
    if hasattr(m, "nonlinearity"):
        m.nonlinearity = "relu" if m.nonlinearity != "relu" else "tanh"
    else:
        _new_parameter(m)


@pytest.mark.parametrize("change", [_optimizer_step, _load_state_dict, _data_assignment, _in_place_no_grad,
                                    _to_float64_and_back, _new_parameter, _nonlinearity])
def test_the_plan_follows_every_change_of_a_parameter(network, change):
    m = network.layer(I, H, torch.float64, num_layers=2)
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.inference_mode():
        before = flat(m(x))
        assert all(torch.equal(a, b) for a, b in zip(flat(m(x)), before))
    change(m)
    expected = [e.detach() for e in flat(m(x))]  # the autograd path reads the parameters as they are
    assert not all(torch.equal(a, b) for a, b in zip(expected, before)), "the change changed nothing"
    with torch.inference_mode():
        assert_close(flat(m(x)), expected, torch.float64, f"after {change.__name__}")


def test_the_plan_is_built_once_and_per_dtype():
    m = rnnkit.LSTM(I, H, num_layers=2)
    x = torch.randn(T, B, I)
    with torch.inference_mode():
        for _ in range(3):
            m(x)
    assert m._rnnkit_stack.cache.builds == 1
    m.double()
    with torch.inference_mode():
        out = m(x.double())[0]
    assert out.dtype == torch.float64 and m._rnnkit_stack.cache.builds == 2


def test_a_module_made_in_inference_mode_follows_its_changes():
    # Inference tensors have no version counter: the plan cache compares contents.
    with torch.inference_mode():
        m = rnnkit.GRU(I, H)
        x = torch.randn(T, B, I)
        first = m(x)[0]
        assert torch.equal(m(x)[0], first) and m._rnnkit_stack.cache.builds == 1
        m.weight_hh_l0.mul_(2)
        second = m(x)[0]
        expected = torch.nn.GRU(I, H)
        expected.load_state_dict(m.state_dict())
        assert not torch.equal(first, second) and m._rnnkit_stack.cache.builds == 2
        assert rel_err(second, expected(x)[0]) <= TOL[torch.float32]


def test_a_write_through_data_is_seen():
    # p.data.add_() bumps no version counter (the update of hand-written training loops).
    m = rnnkit.LSTM(I, H)
    x = torch.randn(T, B, I)
    with torch.no_grad():
        first = m(x)[0]
    m.weight_hh_l0.data.add_(0.5)
    with torch.no_grad():
        second = m(x)[0]
    expected = torch.nn.LSTM(I, H)
    expected.load_state_dict(m.state_dict())
    assert not torch.equal(first, second)
    assert rel_err(second, expected(x)[0].detach()) <= TOL[torch.float32]


def test_copies_and_pickles_carry_no_plan():
    m = rnnkit.LSTM(I, H)
    x = torch.randn(T, B, I)
    with torch.inference_mode():
        out = m(x)[0]
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        with torch.no_grad():
            other.weight_hh_l0.mul_(0.5)
        with torch.inference_mode():
            assert not torch.equal(other(x)[0], out)
            assert torch.equal(m(x)[0], out)


def test_outputs_are_fresh_tensors_with_torch_nn_shapes():
    t = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
    m = rnnkit.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
    m.load_state_dict(t.state_dict())
    x = torch.randn(B, T, I)
    with torch.inference_mode():
        a, (h, c) = m(x)
        a2 = m(x)[0]
        ta, (th, tc) = t(x)
    assert a.shape == ta.shape and h.shape == th.shape and c.shape == tc.shape
    assert a.data_ptr() != a2.data_ptr()
    for got, exp in ((a, ta), (h, th), (c, tc)):
        assert rel_err(got, exp) <= TOL[torch.float32]


# ---- the binding entry -------------------------------------------------------------------------
def _stack(arch="lstm", D=1, dtype=np.float32, H_=3):
    code = getattr(_core.Arch, arch).value
    G = _core.gate_count(code)
    sizes = [2, H_, 0]
    params = []
    for _ in range(D):
        params += [np.ones((G * H_, 2), dtype), None, np.ones((G * H_, H_), dtype), None, None]
    return _core.Stack(0, code, 1, 0, True, D, sizes, params)


def test_binding_checks_name_the_argument():
    s = _stack()
    x = np.zeros((2, 1, 2), np.float32)
    out, f0, f1 = np.zeros((2, 1, 3), np.float32), np.zeros((1, 1, 3), np.float32), np.zeros((1, 1, 3), np.float32)
    s.run(x, None, None, None, out, f0, f1, 1)  # the clean call works
    cases = [
        (dict(x=np.zeros((2, 1, 4), np.float32)), ValueError, r"x: expected shape \(T, B, 2\)"),
        (dict(x=np.zeros((2, 1, 2), np.float64)), TypeError, "x: expected dtype float32"),
        (dict(lengths=np.array([3])), ValueError, r"lengths: every length must be in \[1, 2\]"),
        (dict(lengths=np.array([1.0])), TypeError, "lengths: expected dtype int64"),
        (dict(init0=np.zeros((2, 1, 3), np.float32)), ValueError, r"init0: expected shape \(1, 1, 3\)"),
        (dict(init1=np.zeros((1, 1, 3), np.float64)), TypeError, "init1: expected dtype float32"),
        (dict(out=np.zeros((2, 1, 4), np.float32)), ValueError, r"out: expected shape \(2, 1, 3\)"),
        (dict(out=np.zeros((2, 1, 6), np.float32)[:, :, ::2]), ValueError, "out: expected a C-contiguous"),
        (dict(final0=np.zeros((1, 1, 3), np.float64)), TypeError, "final0: expected dtype float32"),
        (dict(final1=None), ValueError, "final1: required for an LSTM"),
    ]
    for change, error, message in cases:
        args = dict(x=x, lengths=None, init0=None, init1=None, out=out, final0=f0, final1=f1, nthreads=1)
        args.update(change)
        with pytest.raises(error, match=message):
            s.run(**args)
    gru = _stack("gru")
    with pytest.raises(ValueError, match="final1: expected None"):
        gru.run(x, None, None, None, out, f0, f1, 1)
    with pytest.raises(ValueError, match="directions: expected 1 or 2, got 3"):
        _core.Stack(0, 1, 1, 0, True, 3, [2, 3, 0], [None] * 15)
    with pytest.raises(ValueError, match="params: expected five entries per layer and direction"):
        _core.Stack(0, 1, 1, 0, True, 2, [2, 3, 0], [None] * 5)
    with pytest.raises(ValueError, match=r"params\[5\]: a weight is required"):
        _core.Stack(0, 1, 1, 0, True, 2, [2, 3, 0], [np.ones((12, 2), np.float32), None,
                                                    np.ones((12, 3), np.float32), None, None] + [None] * 5)
    with pytest.raises(ValueError, match="times the number of directions"):
        _core.Stack(0, 1, 1, 0, True, 2, [2, 3, 0, 3, 3, 0],
                    [np.ones((12, 2), np.float32), None, np.ones((12, 3), np.float32), None, None] * 2
                    + [np.ones((12, 3), np.float32), None, np.ones((12, 3), np.float32), None, None] * 2)


def test_a_traced_graph_holds_the_ops_not_the_one_call(monkeypatch):
    """torch.jit.trace (torch.onnx.export's exporter) under no_grad records rnnkit's ops."""
    m = rnnkit.LSTM(I, H).eval()
    x = torch.randn(T, B, I)
    counter = CallCounter(monkeypatch)
    with torch.no_grad():
        traced = torch.jit.trace(m, (x,), check_trace=False)
    assert "Stack.run" not in counter.calls
    assert "rnnkit::lstm" in str(traced.graph)
    with torch.no_grad():
        assert rel_err(traced(x)[0], m(x)[0]) <= TOL[torch.float32]


def test_a_change_of_instruction_set_repacks():
    m = rnnkit.GRU(I, 40, num_layers=2)
    x = torch.randn(T, B, I)
    expected = m(x)[0].detach()
    outs = []
    with torch.inference_mode():
        for isa in rnnkit.available_isas():
            with rnnkit.use_isa(isa):
                outs += [m(x)[0], m(x)[0]]  # packed once per instruction set
                assert m._rnnkit_stack.isa == rnnkit._backend.ISA_CODES[isa]
    assert m._rnnkit_stack.cache.builds == len(rnnkit.available_isas())
    for out in outs:
        assert rel_err(out, expected) <= TOL[torch.float32]


def _strided(t):
    """t as a non-contiguous view with the same values (the NumPy entry takes it)."""
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    wide[..., ::2] = t
    return wide[..., ::2]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_state", [False, True], ids=["no-state", "state"])
def test_the_pointer_entry_equals_the_numpy_entry(network, dtype, with_state, monkeypatch):
    """Contiguous tensors reach the plan by address (Stack.run_ptr), strided ones through
    NumPy (Stack.run): the same plan, bit-identical results, in every form the pointer
    entry takes ((B, T, I) only where B or T is 1: else it has not (T, B, I)'s memory)."""
    cases = [(False, (T, B, I), "run_ptr"), (False, (T, I), "run_ptr"), (True, (1, T, I), "run_ptr"),
             (True, (B, 1, I), "run_ptr"), (True, (B, T, I), "run")]
    for batch_first, shape, entry in cases:
        m = network.layer(I, H, dtype, num_layers=2, bidirectional=True, batch_first=batch_first)
        x = torch.randn(shape, dtype=dtype)
        hx = None
        if with_state:
            hx = states_for(network, m, 1 if len(shape) == 2 else shape[0 if batch_first else 1], dtype)
            if len(shape) == 2:
                hx = tuple(h[:, 0] for h in hx) if isinstance(hx, tuple) else hx[:, 0]
        strided = None if hx is None else tuple(map(_strided, hx)) if isinstance(hx, tuple) else _strided(hx)
        counter = CallCounter(monkeypatch)
        with torch.inference_mode():
            fast = flat(m(x, hx))
            slow = flat(m(_strided(x), strided))
        assert counter.entries == [entry, "run"], (batch_first, shape)
        expected = [e.detach() for e in flat(m(x, hx))]  # the layer-by-layer autograd path
        for a, b, e in zip(fast, slow, expected):
            assert a.shape == b.shape == e.shape and torch.equal(a, b)
            assert rel_err(a, e) <= TOL[dtype]
        monkeypatch.undo()


def test_the_pointer_entry_refuses_what_it_cannot_take():
    """Sizes that do not fit go to the modules' checks, which name them; the entry itself
    refuses missing buffers by name."""
    m = rnnkit.LSTM(I, H)
    with torch.inference_mode():
        for bad in (torch.randn(I), torch.randn(T, B, I + 1), torch.randn(0, B, I), torch.randn(1, T, B, I)):
            with pytest.raises((ValueError, RuntimeError)):
                m(bad)
        m(torch.randn(T, B, I))
    stack = m._rnnkit_stack.cache.plan
    with pytest.raises(ValueError, match="T, B: expected positive sizes"):
        stack.run_ptr(0, 1, 1, 0, 0, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="x, out, final0: expected the addresses"):
        stack.run_ptr(1, 1, 0, 0, 0, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="final1: required for an LSTM"):
        stack.run_ptr(1, 1, 1, 0, 0, 1, 1, 0, 1)
    gru = rnnkit.GRU(I, H)
    with torch.inference_mode():
        gru(torch.randn(T, B, I))
    with pytest.raises(ValueError, match="init1, final1: expected 0"):
        gru._rnnkit_stack.cache.plan.run_ptr(1, 1, 1, 0, 0, 1, 1, 1, 1)


def test_a_change_of_the_parameter_table_repacks():
    """The plan watches the module's parameter table: a key added, or a parameter set to
    None, packs it again (and the result is the layer path's)."""
    m = rnnkit.GRU(I, H)
    x = torch.randn(T, B, I)
    with torch.inference_mode():
        first = m(x)[0]
    m.register_parameter("extra", nn.Parameter(torch.zeros(1)))
    with torch.inference_mode():
        assert torch.equal(m(x)[0], first)
    assert m._rnnkit_stack.cache.builds == 2
    m.bias_hh_l0 = None
    expected = m(x)[0].detach()
    with torch.inference_mode():
        got = m(x)[0]
    assert m._rnnkit_stack.cache.builds == 3 and not torch.equal(got, first)
    assert rel_err(got, expected) <= TOL[torch.float32]
