"""Zoneout, recurrent dropout, weight drop, forget_bias and chrono initialisation (SPEC
section 16). The registry suite (test_networks.py) runs every check with the zoneout
examples at evaluation, where they are deterministic; here: the training-time masks
(the native kernels against the reference with the same masks, float64 gradcheck
through them, the whole stack with its own masks), the neutral values bit for bit,
evaluation against training, determinism under a seed, and the initial gate biases."""
import math

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit import _variants, networks
from conftest import TOL, rel_err
from test_networks import oracle_stack

T, B, I, H = 7, 3, 4, 5
LENGTHS = torch.tensor([7, 2, 5])
NAMES = networks.names()


def _masks(spec, W, dtype, p_zone=0.4, p_drop=0.3, T=T, B=B, seed=1):
    """Random zoneout weights (one per state) and a recurrent-dropout mask."""
    g = torch.Generator().manual_seed(seed)
    zone = tuple(torch.bernoulli(torch.full((T, B, W), p_zone, dtype=dtype), generator=g) for _ in spec.states)
    drop = torch.bernoulli(torch.full((B, W), 1 - p_drop, dtype=dtype), generator=g) / (1 - p_drop)
    return zone, drop


def _layer(spec, dtype, **kwargs):
    return spec.make(I, H, **kwargs).to(dtype)


def _params(spec, m):
    return [getattr(m, f"{r}_l0", None) for r in spec.param_roles]


def _width(spec, m):
    return getattr(m, spec.state_size)


def _run(fn, spec, m, x, states, lengths, **extra):
    """Outputs and the gradients of a fixed weighted sum with respect to x, states and weights."""
    params = _params(spec, m)
    res = fn(x, *states, *params, **spec.hyper_of(m), lengths=lengths, **extra)
    finals = res[1] if isinstance(res[1], tuple) else (res[1],)
    outs = [res[0], *finals]
    gen = torch.Generator().manual_seed(3)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    leaves = [x, *states, *[p for p in params if p is not None]]
    return [o.detach() for o in outs] + list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_native_equals_the_reference_with_the_same_masks(name, dtype, lengths):
    spec = networks.get(name)
    torch.manual_seed(0)
    m = _layer(spec, dtype)
    W = _width(spec, m)
    zone, drop = _masks(spec, W, dtype)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    states = [torch.randn(B, W, dtype=dtype, requires_grad=True) for _ in spec.states]
    a = _run(spec.functional, spec, m, x, states, lengths, zoneout=zone, recurrent_mask=drop)
    b = _run(spec.reference, spec, m, x, states, lengths, zoneout=zone, recurrent_mask=drop)
    for k, (u, v) in enumerate(zip(a, b)):
        assert rel_err(u, v) <= TOL[dtype], f"{name}: tensor {k}: relative error {rel_err(u, v):.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_float64_gradcheck_through_the_native_kernels_with_masks(name):
    spec = networks.get(name)
    torch.manual_seed(0)
    m = _layer(spec, torch.float64)
    W = _width(spec, m)
    T_, B_ = 4, 3
    zone, drop = _masks(spec, W, torch.float64, T=T_, B=B_)
    if spec.kernel == "lstm":  # h zoned out, c not: each state on its own
        zone = (zone[0], None)
    x = torch.randn(T_, B_, I, dtype=torch.float64, requires_grad=True)
    states = [torch.randn(B_, W, dtype=torch.float64, requires_grad=True) for _ in spec.states]
    params = [p.detach().clone().requires_grad_() for p in _params(spec, m) if p is not None]
    present = [i for i, p in enumerate(_params(spec, m)) if p is not None]
    n = len(states)

    def f(x, *args):
        full = [None] * len(spec.param_roles)
        for i, p in zip(present, args[n:]):
            full[i] = p
        res = spec.functional(x, *args[:n], *full, **spec.hyper_of(m), lengths=torch.tensor([4, 2, 3]),
                              zoneout=zone, recurrent_mask=drop)
        return (res[0], *(res[1] if isinstance(res[1], tuple) else (res[1],)))

    assert torch.autograd.gradcheck(f, (x, *states, *params))


@pytest.mark.parametrize("name", NAMES)
def test_neutral_masks_equal_the_plain_kernels_bit_for_bit(name):
    """z = 0 everywhere and m = 1: the regularised path of the core gives the plain result
    exactly (the GRU's backward with m adds the update's term of dh_{t-1} after the
    products' instead of before: equal to rounding there)."""
    spec = networks.get(name)
    torch.manual_seed(0)
    m = _layer(spec, torch.float32)
    W = _width(spec, m)
    x = torch.randn(T, B, I, requires_grad=True)
    states = [torch.randn(B, W, requires_grad=True) for _ in spec.states]
    zone = tuple(torch.zeros(T, B, W) for _ in spec.states)
    for lengths in (None, LENGTHS):
        plain = _run(spec.functional, spec, m, x, states, lengths)
        for extra in ({"zoneout": zone}, {"zoneout": zone, "recurrent_mask": torch.ones(B, W)}):
            regular = _run(spec.functional, spec, m, x, states, lengths, **extra)
            for k, (u, v) in enumerate(zip(plain, regular)):
                if spec.kernel == "gru" and "recurrent_mask" in extra and k > len(spec.states):
                    assert rel_err(v, u) <= TOL[torch.float32], f"{name}: gradient {k}"
                else:
                    assert torch.equal(u, v), f"{name}: tensor {k} differs with {sorted(extra)}"


def _rates(spec):
    return {"zoneout": 0.3, "weight_drop": 0.4, "recurrent_dropout": 0.3}


@pytest.mark.parametrize("name", NAMES)
def test_rates_of_zero_are_the_plain_layer_and_torch_nn_bit_for_bit(name):
    spec = networks.get(name)
    torch.manual_seed(0)
    plain = _layer(spec, torch.float32)
    zero = _layer(spec, torch.float32, zoneout=0.0, recurrent_dropout=0.0, weight_drop=0.0)
    zero.load_state_dict(plain.state_dict())
    x = torch.randn(T, B, I)
    assert torch.equal(plain(x)[0], zero(x)[0])
    if spec.torch_module is not None and spec.torch_computes_same(zero):
        assert spec.torch_computes_same(plain)
    regularised = _layer(spec, torch.float32, **_rates(spec))
    assert not spec.torch_computes_same(regularised)


@pytest.mark.parametrize("name", NAMES)
def test_stack_in_training_equals_the_oracle_with_its_masks(name):
    """Two layers, bidirectional, lengths: the module's masks (redrawn under the same seed)
    fed to the per-step oracle give the module's result, weight drop included."""
    spec = networks.get(name)
    torch.manual_seed(0)
    m = _layer(spec, torch.float64, num_layers=2, bidirectional=True, **_rates(spec))
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.manual_seed(5)
    out = m(x, lengths=LENGTHS)[0]
    torch.manual_seed(5)
    K = 4
    masks = _variants.layer_masks(m, spec, K, T, B, x)
    dropped = {}
    for layer in range(2):
        for d in range(2):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            roles = [r for r in spec.param_roles if r in _variants.RECURRENT_ROLES]
            for r in roles:
                dropped[r + suffix] = nn.functional.dropout(getattr(m, r + suffix), m.weight_drop, training=True)

    class View:  # the module with its recurrent weights dropped
        def __getattr__(self, key):
            return dropped[key] if key in dropped else getattr(m, key)

    view = View()
    ref = oracle_stack(spec, view, x, [None] * len(spec.states), LENGTHS, masks=masks)[0]
    assert rel_err(out.detach(), ref.detach()) <= TOL[torch.float64]


@pytest.mark.parametrize("name", NAMES)
def test_training_is_repeatable_under_a_seed_and_evaluation_is_deterministic(name):
    spec = networks.get(name)
    torch.manual_seed(0)
    m = _layer(spec, torch.float64, **_rates(spec))
    x = torch.randn(T, B, I, dtype=torch.float64)
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.append(m(x)[0])
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    m.eval()
    a, b = m(x)[0], m(x)[0]
    assert torch.equal(a, b)
    # evaluation: no dropout, no weight drop, zoneout's expected value z = p
    W = _width(spec, m)
    expected = spec.reference(x, *([None] * len(spec.states)), *_params(spec, m), **spec.hyper_of(m),
                              zoneout=tuple(torch.full((T, B, W), 0.3, dtype=torch.float64) for _ in spec.states))
    assert rel_err(a, expected[0]) <= TOL[torch.float64]


def test_zoneout_keeps_about_p_of_the_units_and_dropout_one_mask_per_sequence():
    torch.manual_seed(0)
    m = rnnkit.LSTM(I, 64, zoneout=0.3, recurrent_dropout=0.5)
    masks = _variants.layer_masks(m, networks.get("lstm"), 1, 50, 20, torch.zeros(1))
    z_h, z_c = masks[0]["zoneout"]
    assert z_h.shape == (50, 20, 64) and not torch.equal(z_h, z_c)
    assert abs(float(z_h.mean()) - 0.3) < 0.02
    drop = masks[0]["recurrent_mask"]
    assert drop.shape == (20, 64)  # one per sequence, the same at every step
    assert set(drop.unique().tolist()) <= {0.0, 2.0}
    m.eval()
    masks = _variants.layer_masks(m, networks.get("lstm"), 1, 5, 2, torch.zeros(1))
    assert "recurrent_mask" not in masks[0] and torch.all(masks[0]["zoneout"][0] == 0.3)


def test_zoneout_of_one_keeps_the_initial_state_and_has_its_gradient():
    z = tuple(torch.ones(T, B, H, dtype=torch.float64) for _ in range(2))
    m = rnnkit.LSTM(I, H).double()
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    out, (h, c) = rnnkit.functional.lstm(x, h0, c0, *_params(networks.get("lstm"), m), zoneout=z)
    assert torch.equal(h, h0) and torch.equal(c, c0) and torch.equal(out, h0.expand(T, B, H))
    gx, gh = torch.autograd.grad(out.sum(), [x, h0])
    assert torch.count_nonzero(gx) == 0 and torch.equal(gh, torch.full((B, H), float(T), dtype=torch.float64))


def test_weight_drop_gradient_reaches_only_the_kept_weights():
    torch.manual_seed(0)
    m = rnnkit.LSTM(I, H, weight_drop=0.5)
    x = torch.randn(T, B, I)
    torch.manual_seed(3)
    m(x)[0].sum().backward()
    torch.manual_seed(3)
    kept = nn.functional.dropout(torch.ones_like(m.weight_hh_l0), 0.5, training=True) != 0
    g = m.weight_hh_l0.grad
    assert torch.count_nonzero(g[~kept]) == 0 and torch.count_nonzero(g[kept]) > 0


def test_cells_zone_out_and_stream_uses_the_expected_value():
    torch.manual_seed(0)
    cell = rnnkit.LSTMCell(I, H, zoneout=0.5).double()
    x = torch.randn(B, I, dtype=torch.float64)
    h0, c0 = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    h_new, c_new = rnnkit.reference.lstm_cell(x, h0, c0, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    cell.eval()
    h, c = cell(x, (h0, c0))
    assert rel_err(h, 0.5 * h0 + 0.5 * h_new) <= 1e-12 and rel_err(c, 0.5 * c0 + 0.5 * c_new) <= 1e-12
    cell.train()
    torch.manual_seed(1)
    h, c = cell(x, (h0, c0))
    assert torch.all((h == h0) | (torch.abs(h - h_new) < 1e-12))
    with pytest.raises(TypeError):
        rnnkit.LSTMCell(I, H, recurrent_dropout=0.5)  # one mask per sequence: an option of the layers


@pytest.mark.parametrize("bad", [-0.1, 1.0, "0.5", True])
def test_bad_rates_name_the_argument(bad):
    for key in ("zoneout", "recurrent_dropout", "weight_drop"):
        with pytest.raises(ValueError, match=key):
            rnnkit.LSTM(I, H, **{key: bad})


def test_a_graph_capture_of_a_regularised_layer_runs_the_reference():
    """The custom ops take no masks: under torch.compile the layer runs the per-step
    reference (same result); a trace (ONNX, TorchScript), which would fix T, is refused, and
    so is a functional call with masks while a graph is captured."""
    torch.manual_seed(0)
    m = rnnkit.LSTM(I, H, zoneout=0.2).eval()
    x = torch.randn(3, B, I)
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    assert rel_err(compiled(x)[0], m(x)[0]) <= TOL[torch.float32]
    with pytest.raises(NotImplementedError, match="zoneout"):
        torch.jit.trace(m, x, check_trace=False)
    with pytest.raises(NotImplementedError, match="zoneout"):
        torch.jit.trace(rnnkit.GRUCell(I, H, zoneout=0.3).eval(), x[0], check_trace=False)
    zone = (torch.full((3, B, H), 0.2),) * 2
    params = [None if p is None else p.detach() for p in _params(networks.get("lstm"), m)]
    with pytest.raises(NotImplementedError, match="zoneout"):
        torch.jit.trace(lambda x: rnnkit.functional.lstm(x, None, None, *params, zoneout=zone)[0], x)


# ---- gate initialisations ------------------------------------------------------------------
def _biases(m):
    return [(getattr(m, n), getattr(m, n.replace("bias_ih", "bias_hh"))) for n, _ in m.named_parameters()
            if n.startswith("bias_ih")]


def test_forget_bias_sets_the_forget_gate_of_every_layer_and_direction():
    m = rnnkit.LSTM(I, H, num_layers=2, bidirectional=True, forget_bias=1.0)
    assert len(_biases(m)) == 4
    for b_ih, b_hh in _biases(m):
        assert torch.all(b_ih[H:2 * H] == 1.0) and torch.all(b_hh[H:2 * H] == 0)
        assert not torch.all(b_ih[:H] == 0)  # the other gates keep torch's initialisation
    cell = rnnkit.LSTMCell(I, H, forget_bias=2.0)
    assert torch.all(cell.bias_ih[H:2 * H] == 2.0) and torch.all(cell.bias_hh[H:2 * H] == 0)


@pytest.mark.parametrize("reset_after, sign", [(True, 1.0), (False, -1.0)], ids=["gru", "gru-rb"])
def test_gru_forget_bias_has_the_sign_of_its_form(reset_after, sign):
    """The keep gate: z in torch's reset-after GRU, 1 - z in the seeds' reset-before one."""
    m = rnnkit.GRU(I, H, reset_after=reset_after, forget_bias=1.5)
    b_ih, b_hh = _biases(m)[0]
    assert torch.all(b_ih[H:2 * H] == sign * 1.5) and torch.all(b_hh[H:2 * H] == 0)
    # at the start the state is kept with probability sigmoid(1.5) in both forms
    x = torch.zeros(1, 1, I)
    with torch.no_grad():
        for p in (m.weight_ih_l0, m.weight_hh_l0):
            p.zero_()
    z = m.forward_with_internals(x)[2][0]["z"]
    keep = z if reset_after else 1 - z
    assert torch.allclose(keep, torch.sigmoid(torch.tensor(1.5)).expand_as(keep))


@pytest.mark.parametrize("arch", ["lstm", "gru", "gru-rb"])
def test_chrono_initialisation(arch):
    spec = networks.get(arch)
    tmax = 100.0
    torch.manual_seed(4)
    m = spec.make(I, 400, chrono_tmax=tmax)
    H_ = 400
    b_ih, b_hh = _biases(m)[0]
    keep = b_ih.detach()[H_:2 * H_] * (-1 if arch == "gru-rb" else 1)  # log U(1, T_max - 1)
    assert torch.all(keep >= 0) and torch.all(keep <= math.log(tmax - 1) + 1e-6)
    assert float(keep.max()) > math.log(tmax - 1) - 0.1 and float(keep.min()) < 1.0  # spread over the range
    assert torch.all(b_hh[H_:2 * H_] == 0)
    if arch == "lstm":
        assert torch.equal(b_ih[:H_], -b_ih[H_:2 * H_]) and torch.all(b_hh[:H_] == 0)
    torch.manual_seed(4)
    again = spec.make(I, 400, chrono_tmax=tmax)
    assert torch.equal(_biases(again)[0][0], b_ih)  # repeatable under a seed
    m.reset_parameters()  # re-applied
    assert torch.all(_biases(m)[0][1][H_:2 * H_] == 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(forget_bias=1.0, chrono_tmax=50), "at most one"),
    (dict(forget_bias=1.0, bias=False), "bias=True"),
    (dict(chrono_tmax=2), "chrono_tmax"),
    (dict(forget_bias=float("nan")), "forget_bias"),
])
def test_bad_initialisations_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rnnkit.LSTM(I, H, **kwargs)


# ---- the command line ----------------------------------------------------------------------
def test_cli_trains_with_the_variants_and_restores_them(tmp_path):
    import json

    from cli_support import run_cli
    from rnnkit.training.checkpoint import load

    run = tmp_path / "run"
    rc, out, err = run_cli(["train", "adding", "--preset", "tiny", "--steps", "4", "--eval-every", "4",
                            "--save-every", "4", "--progress", "off", "--threads", "1", "--arch", "lstm",
                            "--zoneout", "0.1", "--recurrent-dropout", "0.25", "--weight-drop", "0.2",
                            "--init", "chrono", "--out", run])
    assert rc == 0, err
    config = json.loads((run / "config.json").read_text())
    assert (config["zoneout"], config["recurrent_dropout"], config["weight_drop"], config["init"]) == \
        (0.1, 0.25, 0.2, "chrono")
    model = load(run)
    rnn = model.rnn
    assert (rnn.zoneout, rnn.recurrent_dropout, rnn.weight_drop, rnn.chrono_tmax) == (0.1, 0.25, 0.2, 20.0)
    assert run_cli(["evaluate", run])[0] == 0
    rc, _, err = run_cli(["train", "--resume", run, "--steps", "6"])
    assert rc == 0, err


@pytest.mark.parametrize("args, message", [
    (["--arch", "rnn", "--forget-bias", "1"], "--forget-bias: Elman RNN has no gate"),
    (["--arch", "lstm", "--forget-bias", "1", "--init", "chrono"], "one gate-bias initialisation"),
    (["--arch", "lstm", "--backend", "torch", "--zoneout", "0.1"], "--zoneout 0.1: torch.nn.LSTM supports"),
    (["--arch", "gru", "--backend", "torch", "--forget-bias", "1"], "use --backend rnnkit"),
    (["--arch", "lstm", "--zoneout", "1"], "--zoneout"),
])
def test_cli_variant_errors_are_one_line(tmp_path, args, message):
    from cli_support import run_cli

    rc, _, err = run_cli(["train", "adding", "--preset", "tiny", "--out", tmp_path / "r", *args])
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err


def _projected_masks(P, dtype, T=T, B=B):
    """Zoneout weights for h (P wide) and c (H wide), and a recurrent-dropout mask on h."""
    g = torch.Generator().manual_seed(1)
    zone = (torch.bernoulli(torch.full((T, B, P), 0.4, dtype=dtype), generator=g),
            torch.bernoulli(torch.full((T, B, H), 0.4, dtype=dtype), generator=g))
    drop = torch.bernoulli(torch.full((B, P), 0.7, dtype=dtype), generator=g) / 0.7
    return zone, drop


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_a_projected_lstm_with_masks_equals_the_reference(dtype, lengths):
    """proj_size (SPEC section 14) with zoneout and recurrent dropout: h and its masks are
    P wide, c's zoneout H wide; h~_t = W_hr (o tanh(c~_t))."""
    spec, P = networks.get("lstm"), 3
    torch.manual_seed(0)
    m = _layer(spec, dtype, proj_size=P, peephole=True)
    zone, drop = _projected_masks(P, dtype)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    states = [torch.randn(B, P, dtype=dtype, requires_grad=True), torch.randn(B, H, dtype=dtype, requires_grad=True)]
    a = _run(spec.functional, spec, m, x, states, lengths, zoneout=zone, recurrent_mask=drop)
    b = _run(spec.reference, spec, m, x, states, lengths, zoneout=zone, recurrent_mask=drop)
    for k, (u, v) in enumerate(zip(a, b)):
        assert rel_err(u, v) <= TOL[dtype], f"tensor {k}: relative error {rel_err(u, v):.3g}"


def test_float64_gradcheck_of_a_projected_lstm_with_masks():
    spec, P, T_ = networks.get("lstm"), 3, 4
    torch.manual_seed(0)
    m = _layer(spec, torch.float64, proj_size=P)
    zone, drop = _projected_masks(P, torch.float64, T=T_)
    x = torch.randn(T_, B, I, dtype=torch.float64, requires_grad=True)
    states = [torch.randn(B, P, dtype=torch.float64, requires_grad=True),
              torch.randn(B, H, dtype=torch.float64, requires_grad=True)]
    roles = [r for r in spec.param_roles if getattr(m, f"{r}_l0", None) is not None]
    params = [getattr(m, f"{r}_l0").detach().clone().requires_grad_() for r in roles]

    def f(x, h0, c0, *ps):
        kw = dict(zip(roles, ps))
        out, (h, c) = spec.functional(x, h0, c0, kw["weight_ih"], kw["weight_hh"], kw["bias_ih"], kw["bias_hh"],
                                      weight_hr=kw["weight_hr"], lengths=torch.tensor([4, 2, 3]), zoneout=zone,
                                      recurrent_mask=drop)
        return out, h, c

    assert torch.autograd.gradcheck(f, (x, *states, *params))


def test_a_projected_lstm_module_with_regularisers_trains_and_streams():
    """The module draws P-wide masks for h (training); at evaluation the Stream's zoneout
    equals the module's expected value; layer_norm refuses zoneout by name."""
    torch.manual_seed(0)
    m = rnnkit.LSTM(I, H, proj_size=3, num_layers=2, zoneout=0.25, recurrent_dropout=0.2, weight_drop=0.2)
    x = torch.randn(T, B, I)
    out, (h, c) = m(x)
    assert out.shape == (T, B, 3) and h.shape == (2, B, 3) and c.shape == (2, B, H)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    with torch.no_grad():
        out, _ = m(x)
        stream = rnnkit.Stream(m, batch_size=B)
        for t in range(T):
            assert rel_err(stream.step(x[t]), out[t]) < 1e-5
    for k in ("zoneout", "recurrent_dropout"):
        with pytest.raises(ValueError, match=k):
            rnnkit.LSTM(I, H, layer_norm=True, **{k: 0.1})
        with pytest.raises(ValueError, match=k):
            rnnkit.GRU(I, H, layer_norm=True, **{k: 0.1})
