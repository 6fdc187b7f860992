"""Tests of rnnkit.reference, the per-step oracle, against torch.nn and hand computations."""

import doctest
import math

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit.reference as ref
from conftest import pairs

T, B, I, H, O = 5, 3, 4, 6, 2
LENGTHS = [5, 2, 3]  # unsorted on purpose; one row runs the full length
TOL = dict(rtol=1e-12, atol=1e-12)

# the architectures torch.nn also has: its class and constructor kwargs
ARCHS = {
    "elman_tanh": (torch.nn.RNN, dict(nonlinearity="tanh")),
    "elman_relu": (torch.nn.RNN, dict(nonlinearity="relu")),
    "lstm": (torch.nn.LSTM, {}),
    "gru": (torch.nn.GRU, {}),
}


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed, dtype=torch.float64, requires_grad=False):
    # drawn in float64 and cast, so the same seed gives the same values in every dtype
    t = torch.randn(*shape, generator=_generator(seed), dtype=torch.float64).to(dtype)
    return t.requires_grad_(requires_grad)


def _torch_module(arch, seed=0):
    cls, kwargs = ARCHS[arch]
    torch.manual_seed(seed)
    return cls(I, H, **kwargs).double()


def _weights(module):
    return dict(
        weight_ih=module.weight_ih_l0,
        weight_hh=module.weight_hh_l0,
        bias_ih=module.bias_ih_l0,
        bias_hh=module.bias_hh_l0,
    )


def _initial_state(arch, with_state, seed=1):
    """(torch.nn hx, reference positional state args)."""
    if not with_state:
        return None, (None, None) if arch == "lstm" else (None,)
    h0 = _randn(B, H, seed=seed)
    if arch == "lstm":
        c0 = _randn(B, H, seed=seed + 1)
        return (h0[None], c0[None]), (h0, c0)
    return h0[None], (h0,)


def _reference(arch, x, state, weights, **kwargs):
    """Run the reference for arch; returns (out, final hidden state h_n (B, H), c_n or None)."""
    if arch.startswith("elman"):
        out, h_n = ref.elman(x, *state, **weights, nonlinearity=arch.split("_")[1], **kwargs)
        return out, h_n, None
    if arch == "lstm":
        out, (h_n, c_n) = ref.lstm(x, *state, **weights, **kwargs)
        return out, h_n, c_n
    out, h_n = ref.gru(x, *state, **weights, **kwargs)
    return out, h_n, None


def _torch_final(arch, final):
    if arch == "lstm":
        return final[0][0], final[1][0]
    return final[0], None


# ----------------------------------------------------------------------------------------
# against torch.nn


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_matches_torch_nn(arch, with_state):
    module = _torch_module(arch)
    x = _randn(T, B, I, seed=2)
    hx, state = _initial_state(arch, with_state)
    with torch.no_grad():
        expected_out, expected_final = module(x, hx)
        out, h_n, c_n = _reference(arch, x, state, _weights(module))
    expected_h, expected_c = _torch_final(arch, expected_final)
    torch.testing.assert_close(out, expected_out, **TOL)
    torch.testing.assert_close(h_n, expected_h, **TOL)
    if arch == "lstm":
        torch.testing.assert_close(c_n, expected_c, **TOL)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_lengths_match_packed_sequence(arch, with_state):
    module = _torch_module(arch)
    x = _randn(T, B, I, seed=3)
    hx, state = _initial_state(arch, with_state)
    lengths = torch.tensor(LENGTHS, dtype=torch.int64)
    with torch.no_grad():
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        packed_out, expected_final = module(packed, hx)
        expected_out, _ = pad_packed_sequence(packed_out, total_length=T)
        out, h_n, c_n = _reference(arch, x, state, _weights(module), lengths=lengths)
    expected_h, expected_c = _torch_final(arch, expected_final)
    torch.testing.assert_close(out, expected_out, **TOL)
    torch.testing.assert_close(h_n, expected_h, **TOL)
    if arch == "lstm":
        torch.testing.assert_close(c_n, expected_c, **TOL)


@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_gradients_match_torch_nn(arch, use_lengths):
    module = _torch_module(arch)
    x = _randn(T, B, I, seed=4, requires_grad=True)
    hx, state = _initial_state(arch, True)
    state = tuple(s.clone().requires_grad_(True) for s in state)
    hx = (state[0][None], state[1][None]) if arch == "lstm" else state[0][None]
    lengths = torch.tensor(LENGTHS) if use_lengths else None
    d_out = _randn(T, B, H, seed=5)  # random upstream gradients
    d_h = _randn(B, H, seed=6)
    d_c = _randn(B, H, seed=7)

    def loss(out, h_n, c_n):
        total = (out * d_out).sum() + (h_n * d_h).sum()
        return total + (c_n * d_c).sum() if c_n is not None else total

    # torch.nn
    if use_lengths:
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        packed_out, final = module(packed, hx)
        out_nn, _ = pad_packed_sequence(packed_out, total_length=T)
    else:
        out_nn, final = module(x, hx)
    inputs = [x, *state, *module.parameters()]
    expected = torch.autograd.grad(loss(out_nn, *_torch_final(arch, final)), inputs)

    # reference, with the same parameter tensors
    out, h_n, c_n = _reference(arch, x, state, _weights(module), lengths=lengths)
    got = torch.autograd.grad(loss(out, h_n, c_n), inputs)
    for g, e in pairs(got, expected):
        torch.testing.assert_close(g, e, **TOL)


# ----------------------------------------------------------------------------------------
# hand computations


def test_worked_example_spec_section_7():
    """SPEC section 7: every weight 1, no bias, identity activation, output head V = ones."""
    ones = torch.ones(2, 2, dtype=torch.float64)
    x = torch.tensor([[[1.0, 1.0]], [[1.0, 1.0]], [[2.0, 2.0]]], dtype=torch.float64)  # (3,1,2)
    hidden, h_n = ref.elman(x, None, ones, ones, nonlinearity="identity")
    outputs = hidden @ ones.T  # the output head O_t = V S_t
    f64 = torch.float64
    expected_hidden = torch.tensor([[[2.0, 2.0]], [[6.0, 6.0]], [[16.0, 16.0]]], dtype=f64)
    expected_outputs = torch.tensor([[[4.0, 4.0]], [[12.0, 12.0]], [[32.0, 32.0]]], dtype=f64)
    assert torch.equal(hidden, expected_hidden)
    assert torch.equal(h_n, expected_hidden[-1])
    assert torch.equal(outputs, expected_outputs)

    reversed_hidden, _ = ref.elman(x.flip(0), None, ones, ones, nonlinearity="identity")
    reversed_outputs = reversed_hidden @ ones.T
    # [2,2],[1,1],[1,1] -> hidden [4,4],[10,10],[22,22] -> outputs [8,8],[20,20],[44,44]
    assert torch.equal(
        reversed_outputs,
        torch.tensor([[[8.0, 8.0]], [[20.0, 20.0]], [[44.0, 44.0]]], dtype=torch.float64),
    )
    assert not torch.equal(reversed_outputs, expected_outputs)
    assert not torch.equal(reversed_outputs, expected_outputs.flip(0))


def test_identity_elman_by_hand():
    # W_ih = [[1, 0], [0, 2]], W_hh = [[0, 1], [1, 0]] (swap), b_ih = [1, 0], b_hh = [0, -1]
    W_ih = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    W_hh = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    b_ih = torch.tensor([1.0, 0.0], dtype=torch.float64)
    b_hh = torch.tensor([0.0, -1.0], dtype=torch.float64)
    x = torch.tensor([[[1.0, 1.0]], [[2.0, 3.0]]], dtype=torch.float64)  # (2, 1, 2)
    h0 = torch.tensor([[5.0, 7.0]], dtype=torch.float64)
    # t=1: W_ih x = [1, 2]; + b = [2, 1]; W_hh h0 = [7, 5] -> h1 = [9, 6]
    # t=2: W_ih x = [2, 6]; + b = [3, 5]; W_hh h1 = [6, 9] -> h2 = [9, 14]
    out, h_n, internals = ref.elman(
        x, h0, W_ih, W_hh, b_ih, b_hh, nonlinearity="identity", return_internals=True
    )
    expected = torch.tensor([[[9.0, 6.0]], [[9.0, 14.0]]], dtype=torch.float64)
    assert torch.equal(out, expected)
    assert torch.equal(h_n, expected[-1])
    assert torch.equal(internals["a"], expected)  # identity: h_t = a_t


def _matvec(W, v):
    return [sum(w * x for w, x in zip(row, v)) for row in W]


def _sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


def test_gru_reset_before_one_step_by_hand():
    """SPEC section 4, Cho's form, computed on Python floats row by row."""
    Hs, Is = 2, 3
    W_ih = _randn(3 * Hs, Is, seed=10)
    W_hh = _randn(3 * Hs, Hs, seed=11)
    b_ih = _randn(3 * Hs, seed=12)
    b_hh = _randn(3 * Hs, seed=13)
    x = _randn(1, Is, seed=14)
    h = _randn(1, Hs, seed=15)

    Wi, Wh, bi, bh = W_ih.tolist(), W_hh.tolist(), b_ih.tolist(), b_hh.tolist()
    xs, hs = x[0].tolist(), h[0].tolist()
    r_rows, z_rows, n_rows = range(0, Hs), range(Hs, 2 * Hs), range(2 * Hs, 3 * Hs)

    def pre(rows, hidden):
        return [
            _matvec([Wi[k]], xs)[0] + bi[k] + _matvec([Wh[k]], hidden)[0] + bh[k] for k in rows
        ]

    z = [_sigmoid(a) for a in pre(z_rows, hs)]
    r = [_sigmoid(a) for a in pre(r_rows, hs)]
    rh = [rj * hj for rj, hj in zip(r, hs)]
    n = [math.tanh(a) for a in pre(n_rows, rh)]
    expected = [(1 - zj) * hj + zj * nj for zj, hj, nj in zip(z, hs, n)]

    got = ref.gru_cell(x, h, W_ih, W_hh, b_ih, b_hh, reset_after=False)
    torch.testing.assert_close(got, torch.tensor([expected], dtype=torch.float64), **TOL)

    # the same step through the sequence function, with its internals
    out, h_n, internals = ref.gru(
        x[None], h, W_ih, W_hh, b_ih, b_hh, reset_after=False, return_internals=True
    )
    torch.testing.assert_close(h_n, got, **TOL)
    torch.testing.assert_close(internals["z"][0, 0], torch.tensor(z, dtype=torch.float64), **TOL)
    torch.testing.assert_close(internals["r"][0, 0], torch.tensor(r, dtype=torch.float64), **TOL)
    torch.testing.assert_close(internals["n"][0, 0], torch.tensor(n, dtype=torch.float64), **TOL)


def test_gru_reset_before_vs_after_z_relation():
    """Negating the z rows maps z to 1 - z; with W_hn diagonal and b_hn = 0 the candidates
    agree too, so the seeds' form equals torch.nn.GRU exactly."""
    torch.manual_seed(0)
    module = torch.nn.GRU(I, H).double()
    with torch.no_grad():
        module.weight_hh_l0[2 * H :] = torch.diag(_randn(H, seed=20))
        module.bias_hh_l0[2 * H :] = 0.0
    x = _randn(T, B, I, seed=21)
    h0 = _randn(B, H, seed=22)
    flip = torch.ones(3 * H, dtype=torch.float64)
    flip[H : 2 * H] = -1.0  # negate the z rows
    w = _weights(module)
    with torch.no_grad():
        expected_out, expected_h = module(x, h0[None])
        out, h_n, internals = ref.gru(
            x,
            h0,
            w["weight_ih"] * flip[:, None],
            w["weight_hh"] * flip[:, None],
            w["bias_ih"] * flip,
            w["bias_hh"] * flip,
            reset_after=False,
            return_internals=True,
        )
        _, _, internals_after = ref.gru(x, h0, **w, return_internals=True)
    torch.testing.assert_close(out, expected_out, **TOL)
    torch.testing.assert_close(h_n, expected_h[0], **TOL)
    torch.testing.assert_close(internals["z"], 1 - internals_after["z"], **TOL)

    # Without those conditions the two forms differ.
    module_w = {k: v.detach() for k, v in _weights(_torch_module("gru")).items()}
    before, _ = ref.gru(x, h0, **module_w, reset_after=False)
    after, _ = ref.gru(x, h0, **module_w, reset_after=True)
    assert not torch.allclose(before, after)


def test_jordan_exact_tiny_case():
    # I = H = O = 1, identity f and g, no bias: h_t = x_t + y_{t-1}, y_t = 2 h_t
    one = torch.ones(1, 1, dtype=torch.float64)
    x = torch.tensor([[[1.0]], [[2.0]], [[-1.0]]], dtype=torch.float64)  # (3, 1, 1)
    out, y_n, internals = ref.jordan(
        x, None, one, one, 2 * one, nonlinearity="identity", return_internals=True
    )
    # h = 1, 2 + 2 = 4, -1 + 8 = 7;  y = 2, 8, 14
    assert torch.equal(internals["h"].flatten(), torch.tensor([1.0, 4.0, 7.0], dtype=torch.float64))
    assert torch.equal(out.flatten(), torch.tensor([2.0, 8.0, 14.0], dtype=torch.float64))
    assert torch.equal(y_n, torch.tensor([[14.0]], dtype=torch.float64))


def test_jordan_by_hand_with_biases_and_nonlinearities():
    """H = 2, O = 1, tanh hidden and sigmoid output, computed on Python floats."""
    W_ih, W_yh, W_hy = [[0.5], [-1.0]], [[1.5], [0.25]], [[2.0, -0.5]]
    b_ih, b_yh, b_hy = [0.1, 0.2], [-0.3, 0.4], [0.05]
    xs, y = [0.7, -1.2, 0.3], 0.6  # y_0 given
    expected = []
    for x_t in xs:
        h = [
            math.tanh(W_ih[k][0] * x_t + b_ih[k] + W_yh[k][0] * y + b_yh[k]) for k in range(2)
        ]
        y = _sigmoid(W_hy[0][0] * h[0] + W_hy[0][1] * h[1] + b_hy[0])
        expected.append(y)

    def t(v):
        return torch.tensor(v, dtype=torch.float64)

    out, y_n = ref.jordan(
        t(xs).reshape(3, 1, 1),
        t([[0.6]]),
        t(W_ih),
        t(W_yh),
        t(W_hy),
        t(b_ih),
        t(b_yh),
        t(b_hy),
        nonlinearity="tanh",
        output_nonlinearity="sigmoid",
    )
    torch.testing.assert_close(out.flatten(), t(expected), **TOL)
    torch.testing.assert_close(y_n, t([[expected[-1]]]), **TOL)


# ----------------------------------------------------------------------------------------
# structure: cells, lengths, internals


def _all_weights(arch, seed=30, dtype=torch.float64):
    """Random (state tensors, weight kwargs, extra kwargs) for the reference of arch."""
    G = {"elman": 1, "lstm": 4, "gru": 3, "gru_before": 3}.get(arch)
    if arch == "jordan":
        state = (_randn(B, O, seed=seed, dtype=dtype),)
        weights = dict(
            weight_ih=_randn(H, I, seed=seed + 1, dtype=dtype),
            weight_yh=_randn(H, O, seed=seed + 2, dtype=dtype),
            weight_hy=_randn(O, H, seed=seed + 3, dtype=dtype),
            bias_ih=_randn(H, seed=seed + 4, dtype=dtype),
            bias_yh=_randn(H, seed=seed + 5, dtype=dtype),
            bias_hy=_randn(O, seed=seed + 6, dtype=dtype),
        )
        return state, weights, dict(output_nonlinearity="tanh")
    n_states = 2 if arch == "lstm" else 1
    state = tuple(_randn(B, H, seed=seed + k, dtype=dtype) for k in range(n_states))
    weights = dict(
        weight_ih=_randn(G * H, I, seed=seed + 2, dtype=dtype),
        weight_hh=_randn(G * H, H, seed=seed + 3, dtype=dtype),
        bias_ih=_randn(G * H, seed=seed + 4, dtype=dtype),
        bias_hh=_randn(G * H, seed=seed + 5, dtype=dtype),
    )
    extra = dict(reset_after=False) if arch == "gru_before" else {}
    return state, weights, extra


SEQUENCE = {
    "elman": ref.elman,
    "lstm": ref.lstm,
    "gru": ref.gru,
    "gru_before": ref.gru,
    "jordan": ref.jordan,
}
CELL = {
    "elman": ref.elman_cell,
    "lstm": ref.lstm_cell,
    "gru": ref.gru_cell,
    "gru_before": ref.gru_cell,
    "jordan": ref.jordan_cell,
}
ALL = list(SEQUENCE)


def _final_state(arch, final):
    return final if arch == "lstm" else (final,)


def _cell_state(arch, result):
    """The recurrent state tuple a cell returns (Jordan's is y, not h)."""
    if arch == "lstm":
        return result
    if arch == "jordan":
        return (result[1],)
    return (result,)


@pytest.mark.parametrize("arch", ALL)
def test_cell_equals_sequence_of_length_one(arch):
    state, weights, extra = _all_weights(arch)
    x = _randn(1, B, I, seed=40)
    out, final = SEQUENCE[arch](x, *state, **weights, **extra)
    cell_state = _cell_state(arch, CELL[arch](x[0], *state, **weights, **extra))
    for got, expected in pairs(_final_state(arch, final), cell_state):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(out[0], cell_state[0], rtol=0, atol=0)


@pytest.mark.parametrize("arch", ALL)
def test_sequence_equals_cell_stepped_by_hand(arch):
    state, weights, extra = _all_weights(arch)
    x = _randn(T, B, I, seed=41)
    out, final = SEQUENCE[arch](x, *state, **weights, **extra)
    s = state
    for t in range(T):
        s = _cell_state(arch, CELL[arch](x[t], *s, **weights, **extra))
        torch.testing.assert_close(out[t], s[0], rtol=0, atol=0)
    for got, expected in pairs(_final_state(arch, final), s):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ALL)
def test_lengths_equal_each_row_run_alone(arch):
    """Row b with lengths[b] = L equals the reference on x[:L, b]; its padded rows are zero,
    and so are its internals there."""
    state, weights, extra = _all_weights(arch)
    x = _randn(T, B, I, seed=42)
    out, final, internals = SEQUENCE[arch](
        x, *state, **weights, **extra, lengths=LENGTHS, return_internals=True
    )
    finals = _final_state(arch, final)
    for b, L in enumerate(LENGTHS):
        row_state = tuple(s[b : b + 1] for s in state)
        row_out, row_final = SEQUENCE[arch](x[:L, b : b + 1], *row_state, **weights, **extra)
        # a batch of one may round differently in matmul, hence TOL rather than equality
        torch.testing.assert_close(out[:L, b : b + 1], row_out, **TOL)
        assert torch.all(out[L:, b] == 0)
        for value in internals.values():
            assert torch.all(value[L:, b] == 0)
        for got, expected in pairs(finals, _final_state(arch, row_final)):
            torch.testing.assert_close(got[b : b + 1], expected, **TOL)


@pytest.mark.parametrize("arch", ALL)
def test_internals_reproduce_the_outputs(arch):
    state, weights, extra = _all_weights(arch)
    x = _randn(T, B, I, seed=43)
    out, _, k = SEQUENCE[arch](x, *state, **weights, **extra, return_internals=True)
    prev = torch.cat([state[0][None], out[:-1]])  # h_{t-1} (or y_{t-1}), (T, B, ·)
    if arch == "elman":
        expected = torch.tanh(k["a"])
    elif arch == "lstm":
        c_prev = torch.cat([state[1][None], k["c"][:-1]])
        torch.testing.assert_close(k["c"], k["f"] * c_prev + k["i"] * k["g"], **TOL)
        expected = k["o"] * torch.tanh(k["c"])
    elif arch == "gru":
        expected = (1 - k["z"]) * k["n"] + k["z"] * prev
    elif arch == "gru_before":
        expected = (1 - k["z"]) * prev + k["z"] * k["n"]
    else:
        expected = torch.tanh(k["h"] @ weights["weight_hy"].T + weights["bias_hy"])
    torch.testing.assert_close(out, expected, **TOL)


# ----------------------------------------------------------------------------------------
# autograd, dtypes, errors, docs


@pytest.mark.parametrize("arch", ["gru_before", "jordan"])
def test_gradcheck_without_torch_counterpart(arch):
    """The two recurrences torch.nn lacks: autograd against finite differences."""
    Ts, Bs = 3, 2
    state, weights, extra = _all_weights(arch)
    state = tuple(s[:Bs].clone().requires_grad_(True) for s in state)
    names = list(weights)
    params = [weights[n].clone().requires_grad_(True) for n in names]
    x = _randn(Ts, Bs, I, seed=44, requires_grad=True)

    def f(x, *args):
        s, p = args[: len(state)], args[len(state) :]
        out, final = SEQUENCE[arch](x, *s, **dict(zip(names, p)), **extra, lengths=[3, 2])
        return out, final

    assert torch.autograd.gradcheck(f, (x, *state, *params))


@pytest.mark.parametrize("arch", ALL)
def test_float32_keeps_dtype_and_differentiates(arch):
    state, weights, extra = _all_weights(arch, dtype=torch.float32)
    weights = {n: w.requires_grad_(True) for n, w in weights.items()}
    x = _randn(T, B, I, seed=45, dtype=torch.float32)
    out, final = SEQUENCE[arch](x, *state, **weights, **extra, lengths=torch.tensor(LENGTHS))
    assert out.dtype == torch.float32
    assert all(s.dtype == torch.float32 for s in _final_state(arch, final))
    out.sum().backward()
    assert all(w.grad is not None and w.grad.dtype == torch.float32 for w in weights.values())

    # float32 agrees with float64 to float32 precision
    state64, weights64, _ = _all_weights(arch)
    out64, _ = SEQUENCE[arch](x.double(), *state64, **weights64, **extra, lengths=LENGTHS)
    torch.testing.assert_close(out.detach().double(), out64, rtol=1e-4, atol=1e-5)


def test_errors_name_the_argument():
    x = torch.zeros(T, B, I)
    w_ih, w_hh = torch.zeros(H, I), torch.zeros(H, H)
    with pytest.raises(ValueError, match="nonlinearity"):
        ref.elman(x, None, w_ih, w_hh, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="output_nonlinearity"):
        ref.jordan(x, None, w_ih, torch.zeros(H, O), torch.zeros(O, H), output_nonlinearity="relu")
    with pytest.raises(ValueError, match="lengths"):
        ref.elman(x, None, w_ih, w_hh, lengths=[0, 1, 1])
    with pytest.raises(ValueError, match="lengths"):
        ref.elman(x, None, w_ih, w_hh, lengths=[T + 1, 1, 1])
    with pytest.raises(ValueError, match="lengths"):
        ref.elman(x, None, w_ih, w_hh, lengths=[1, 1])
    with pytest.raises(ValueError, match=r"\(T, B, I\)"):
        ref.elman(x[0], None, w_ih, w_hh)


def test_module_imports_only_torch_and_stdlib():
    import ast
    import sys

    tree = ast.parse(open(ref.__file__).read())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "reference.py must not use relative imports"
            roots.add(node.module.split(".")[0])
    assert roots <= {"torch"} | set(sys.stdlib_module_names)


def test_docstring_examples_run():
    torch.manual_seed(0)
    result = doctest.testmod(ref, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
