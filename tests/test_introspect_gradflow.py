"""rnnkit.introspect: per-step state gradients, step Jacobians, recorded gates, gate
saturation, the gradflow command.

The oracle for the gradient norms is autograd through ``rnnkit.reference``'s cells,
stepped by hand with a zero "probe" added to every step's state: dL/dprobe_t is the
total gradient dL/ds_t.
"""

import io
import struct

import pytest
import torch

import rnnkit
from rnnkit import reference
from rnnkit.introspect._recording import recording
from rnnkit.introspect.gradflow import PLOT_SIZE_PX, compare, format_table, gradient_flow, parse_archs, verdict
from rnnkit.introspect.jacobian import layer_states, step_jacobian_norms
from rnnkit.introspect.saturation import gate_saturation
from rnnkit import cli
from rnnkit.errors import IntrospectError

D64 = torch.float64
T, B, I, H = 6, 3, 3, 4
LENGTHS = [6, 4, 1]


def reverse_within_lengths(x, lengths):
    """Each sequence of x (T, B, ...) reversed within its own length; padding stays in place
    (written here, not taken from rnnkit, so the oracle does not share the code it checks)."""
    parts = []
    for b in range(x.shape[1]):
        n = x.shape[0] if lengths is None else int(lengths[b])
        parts.append(torch.cat([x[:n, b].flip(0), x[n:, b]]))
    return torch.stack(parts, dim=1)


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])  # (width, height)


def make(arch, **kw):
    torch.manual_seed(0)
    if arch == "rnn":
        return rnnkit.RNN(I, H, num_layers=2, bidirectional=True, **kw).double()
    if arch == "lstm":
        return rnnkit.LSTM(I, H, num_layers=2, bidirectional=True, **kw).double()
    if arch == "gru":
        return rnnkit.GRU(I, H, num_layers=2, bidirectional=True, **kw).double()
    if arch == "gru_before":
        return rnnkit.GRU(I, H, num_layers=2, bidirectional=True, reset_after=False, **kw).double()
    return rnnkit.JordanRNN(I, H, 2, output_nonlinearity="tanh").double()


def oracle(module, x, lengths, loss_fn):
    """Total dL/ds_t for every layer/direction, by autograd through reference cells.

    Returns {(k, key): (T, B, S)} in the caller's time order (k = l * D + d)."""
    lens = None if lengths is None else torch.tensor(lengths)
    Tn, Bn = x.shape[0], x.shape[1]
    if isinstance(module, rnnkit.JordanRNN):
        layers, D = 1, 1
    else:
        layers, D = module.num_layers, 2 if module.bidirectional else 1
    probes = {}
    layer_input = x
    for layer in range(layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            xin = reverse_within_lengths(layer_input, lens) if d else layer_input
            if isinstance(module, rnnkit.JordanRNN):
                params = module._params()
                state = [torch.zeros(Bn, module.output_size, dtype=D64)]
                keys = ["dy"]
            else:
                sfx = "_reverse" if d else ""
                params = [getattr(module, f"{n}_l{layer}{sfx}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                state = [torch.zeros(Bn, H, dtype=D64)] * (2 if isinstance(module, rnnkit.LSTM) else 1)
                keys = ["dh", "dc"][:len(state)]
            for key in keys:
                probes[(k, key)] = [torch.zeros_like(state[0], requires_grad=True) for _ in range(Tn)]
            out = []
            for t in range(Tn):
                if isinstance(module, rnnkit.JordanRNN):
                    new = [reference.jordan_cell(xin[t], state[0], *params, nonlinearity=module.nonlinearity,
                                                 output_nonlinearity=module.output_nonlinearity)[1]]
                elif isinstance(module, rnnkit.LSTM):  # SPEC section 3, the c probe before h = o tanh(c)
                    W_ih, W_hh, b_ih, b_hh = params
                    a_i, a_f, a_g, a_o = (xin[t] @ W_ih.T + b_ih + state[0] @ W_hh.T + b_hh).chunk(4, dim=1)
                    c = torch.sigmoid(a_f) * state[1] + torch.sigmoid(a_i) * torch.tanh(a_g) + probes[(k, "dc")][t]
                    new = [torch.sigmoid(a_o) * torch.tanh(c), c - probes[(k, "dc")][t]]  # c's probe added below
                elif isinstance(module, rnnkit.GRU):
                    new = [reference.gru_cell(xin[t], state[0], *params, reset_after=module.reset_after)]
                else:
                    new = [reference.elman_cell(xin[t], state[0], *params, nonlinearity=module.nonlinearity)]
                new = [s + probes[(k, key)][t] for s, key in zip(new, keys)]
                active = torch.ones(Bn, 1, dtype=torch.bool) if lens is None else (t < lens)[:, None]
                state = [torch.where(active, n, s) for n, s in zip(new, state)]
                out.append(torch.where(active, new[0], torch.zeros_like(new[0])))
            out = torch.stack(out)
            outs.append(reverse_within_lengths(out, lens) if d else out)
        layer_input = torch.cat(outs, dim=2)
    loss = loss_fn(layer_input)
    flat = [(key, p) for key, ps in probes.items() for p in ps]
    grads = torch.autograd.grad(loss, [p for _, p in flat], allow_unused=True, materialize_grads=True)
    result = {}
    for key in probes:
        g = torch.stack([gr for (kk, _), gr in zip(flat, grads) if kk == key])  # processing order
        k = key[0]
        result[key] = reverse_within_lengths(g, lens) if (D == 2 and k % 2 == 1) else g
    return result


def last_step_sum(out, lengths):
    last = torch.full((out.shape[1],), out.shape[0] - 1) if lengths is None else torch.tensor(lengths) - 1
    return out[last, torch.arange(out.shape[1])].sum()


ARCHS = ["rnn", "lstm", "gru", "gru_before", "jordan"]


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_norms_equal_autograd_through_reference(arch, lengths):
    module = make(arch)
    x = torch.randn(T, B, I, dtype=D64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(T, B, 2 * H if arch != "jordan" else 2, dtype=D64, generator=torch.Generator().manual_seed(2))
    for loss_fn, flow_loss in ((lambda out: (out * w).sum(), lambda o: (o[0] * w).sum()),
                               (lambda out: last_step_sum(out, lengths), None)):
        expected = oracle(module, x, lengths, loss_fn)
        flow = gradient_flow(module, x, flow_loss, lengths=lengths, jacobian=False)
        D = 2 if arch != "jordan" else 1
        assert len(flow.layers) == (2 * D if arch != "jordan" else 1)
        active = torch.ones(T, B, dtype=torch.bool) if lengths is None else \
            torch.arange(T)[:, None] < torch.tensor(lengths)[None, :]
        for (k, key), g in expected.items():
            lf = flow.layers[k]
            assert (lf.layer, lf.direction) == divmod(k, D)
            want = g.norm(dim=-1)[active]
            got = lf.norms[key][active]
            torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-300)
            assert torch.isnan(lf.norms[key][~active]).all()


def test_batch_first_and_composite_model_give_the_same_norms():
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(I, H, batch_first=True).double()
    x = torch.randn(B, T, I, dtype=D64)
    flow_bf = gradient_flow(lstm, x, lengths=LENGTHS, jacobian=False)
    lstm_tm = rnnkit.LSTM(I, H).double()
    lstm_tm.load_state_dict(lstm.state_dict())
    flow_tm = gradient_flow(lstm_tm, x.transpose(0, 1), lengths=LENGTHS, jacobian=False)
    for key in ("dh", "dc"):
        torch.testing.assert_close(flow_bf.layers[0].norms[key], flow_tm.layers[0].norms[key], equal_nan=True)

    class Wrapped(torch.nn.Module):  # embedding -> rnn -> head, loss on the head
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(2, I).double()
            self.rnn = lstm_tm

        def forward(self, z):
            return self.rnn(self.proj(z))[0]

    model = Wrapped()
    z = torch.randn(T, B, 2, dtype=D64)
    flow = gradient_flow(model, z, jacobian=False)
    direct = gradient_flow(lstm_tm, model.proj(z).detach(), jacobian=False)
    torch.testing.assert_close(flow.layers[0].norms["dh"], direct.layers[0].norms["dh"])
    assert lstm_tm.weight_hh_l0.grad is None  # parameters' .grad untouched


def test_contractive_tanh_rnn_halves_the_gradient_every_step():
    torch.manual_seed(0)
    rnn = rnnkit.RNN(I, 16).double()
    with torch.no_grad():
        W = torch.randn(16, 16, dtype=D64)
        rnn.weight_hh_l0.copy_(W * 0.5 / torch.linalg.matrix_norm(W, ord=2))
    flow = gradient_flow(rnn, torch.randn(40, 4, I, dtype=D64))
    lf = flow.layers[0]
    by_lag = lf.by_lag()  # (L, B): row j = lag j
    assert (by_lag[1:] <= 0.5 * by_lag[:-1] * (1 + 1e-12)).all()
    assert lf.decay() <= -0.30103 and flow.verdict == "vanishing"
    assert float(torch.nanquantile(lf.jacobian.flatten(), 1.0)) <= 0.5 + 1e-12


def test_lstm_with_large_forget_bias_keeps_the_cell_gradient():
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(I, 16).double()
    with torch.no_grad():
        lstm.bias_ih_l0[16:32] = 10.0  # forget gate ~ 1 - 4.5e-5
    flow = gradient_flow(lstm, torch.randn(101, 4, I, dtype=D64))
    dc = flow.layers[0].by_lag("dc")  # (101, 4): lags 0..100 of each sequence
    assert (dc.max(dim=0).values / dc.min(dim=0).values < 10.0).all()
    assert verdict(flow.layers[0].decay("dc")) == "stable"


def test_expansive_tanh_rnn_with_small_inputs_explodes():
    torch.manual_seed(0)
    rnn = rnnkit.RNN(I, 16, bias=False).double()
    with torch.no_grad():
        Q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=D64))
        rnn.weight_hh_l0.copy_(3.0 * Q)  # every singular value 3
    x = 1e-7 * torch.randn(10, 4, I, dtype=D64)
    flow = gradient_flow(rnn, x)
    by_lag = flow.layers[0].by_lag()
    assert (by_lag[1:] > by_lag[:-1]).all()
    assert flow.decay > 0.4 and flow.verdict == "exploding"


def test_step_jacobian_exact_matches_closed_form_and_power_iteration():
    torch.manual_seed(0)
    rnn = rnnkit.RNN(I, 5, num_layers=2, bidirectional=True).double()
    x = torch.randn(T, B, I, dtype=D64)
    norms = step_jacobian_norms(rnn, x, lengths=LENGTHS)
    with torch.no_grad():
        _, _, inside = rnn.forward_with_internals(x, lengths=LENGTHS)
    for k in range(4):
        J = (1 - torch.tanh(inside[k]["a"]) ** 2).unsqueeze(-1) * getattr(
            rnn, f"weight_hh_l{k // 2}{'_reverse' if k % 2 else ''}").detach()
        want = torch.linalg.matrix_norm(J, ord=2)
        active = torch.arange(T)[:, None] < torch.tensor(LENGTHS)[None, :]
        torch.testing.assert_close(norms[k][active], want[active], rtol=1e-10, atol=0)
        assert torch.isnan(norms[k][~active]).all()
    lstm = rnnkit.LSTM(I, 6).double()
    exact = step_jacobian_norms(lstm, x)[0]
    power = step_jacobian_norms(lstm, x, exact_max_size=0, power_iterations=200)[0]
    torch.testing.assert_close(power, exact, rtol=1e-6, atol=0)
    outs = layer_states(lstm, x)
    torch.testing.assert_close(outs[0], lstm(x)[0])


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru", "gru_before", "jordan"])
def test_recorded_gates_equal_reference_inside_a_model(arch):
    torch.manual_seed(0)
    if arch == "jordan":
        rnn = rnnkit.JordanRNN(I, H, 2).double()
    else:
        cls = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU, "gru_before": rnnkit.GRU}[arch]
        rnn = cls(I, H, reset_after=False).double() if arch == "gru_before" else cls(I, H).double()
    model = torch.nn.Sequential(torch.nn.Linear(2, I).double(), rnn)
    z = torch.randn(T, B, 2, dtype=D64)
    with recording(rnn, gradients=False) as calls:
        model(z)
    x = model[0](z).detach()
    if arch == "jordan":
        _, _, want = reference.jordan(x, None, *rnn._params(), nonlinearity=rnn.nonlinearity,
                                      output_nonlinearity=rnn.output_nonlinearity, return_internals=True)
    else:
        params = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]
        if arch == "lstm":
            _, _, want = reference.lstm(x, None, None, *params, return_internals=True)
        elif arch == "rnn":
            _, _, want = reference.elman(x, None, *params, return_internals=True)
        else:
            _, _, want = reference.gru(x, None, *params, reset_after=rnn.reset_after, return_internals=True)
    assert len(calls) == 1 and set(calls[0].internals[0]) == set(want)
    for key, value in want.items():
        torch.testing.assert_close(calls[0].internal(0, key), value.detach(), rtol=1e-12, atol=1e-12)
    assert "forward" not in rnn.__dict__  # the module is restored


def test_gate_saturation_counts_active_steps_only():
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(I, H).double()
    with torch.no_grad():
        lstm.bias_ih_l0[H:2 * H] = 20.0   # forget gate always open
        lstm.bias_ih_l0[:H] = -20.0       # input gate always closed
    data = [torch.randn(T, B, I, dtype=D64), (torch.randn(T, B, I, dtype=D64), LENGTHS)]
    sat = gate_saturation(lstm, data)
    assert sat.steps == T * B + sum(LENGTHS)
    assert sat.fraction("f", "right") == 1.0 and sat.fraction("f", "left") == 0.0
    assert sat.fraction("i", "left") == 1.0
    # o against a direct count from the reference internals
    o_lo = o_hi = 0
    for item in data:
        x, lengths = item if isinstance(item, tuple) else (item, None)
        _, _, inner = reference.lstm(x, None, None, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
                                     lstm.bias_hh_l0, lengths=lengths, return_internals=True)
        active = torch.ones(T, B, 1, dtype=torch.bool) if lengths is None else \
            (torch.arange(T)[:, None] < torch.tensor(lengths)[None, :]).unsqueeze(-1)
        o_lo += int(((inner["o"] < 0.1) & active).sum())
        o_hi += int(((inner["o"] > 0.9) & active).sum())
    assert sat.fraction("o", "left") == pytest.approx(o_lo / (sat.steps * H), abs=1e-12)
    assert sat.fraction("o", "right") == pytest.approx(o_hi / (sat.steps * H), abs=1e-12)
    assert "f" in sat.table()
    with pytest.raises(ValueError, match="sigmoid gates"):
        gate_saturation(rnnkit.RNN(I, H).double(), data[:1])


def test_gradflow_command_writes_the_png_and_prints_the_table(tmp_path):
    out = tmp_path / "flow.png"
    text = io.StringIO()
    assert cli.main(["gradflow", "--arch", "rnn,gru,lstm", "--length", "40", "--hidden", "8", "--batch", "2",
                     "--out", str(out)], out=text) == 0
    table = text.getvalue()
    for name in ("rnn (fresh)", "gru (fresh)", "lstm (fresh)"):
        assert name in table
    assert table.count("lstm (fresh)") == 2  # h and c rows
    assert png_size(out) == PLOT_SIZE_PX and out.stat().st_size > 10_000


def test_gradflow_bad_input_is_a_clear_error():
    with pytest.raises(IntrospectError, match=r"--arch: unknown architecture 'transformer'"):
        parse_archs("rnn,transformer")
    with pytest.raises(IntrospectError, match="--length: expected at least 2"):
        compare(["lstm"], length=1)
    with pytest.raises(ValueError, match="exactly one rnnkit"):
        gradient_flow(torch.nn.Linear(2, 2), torch.zeros(2, 2))
    assert verdict(float("nan")) == "undetermined"
    assert "verdict" in format_table([])


def test_packed_sequence_input_equals_lengths():
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    gru = rnnkit.GRU(I, H).double()
    x = torch.randn(T, B, I, dtype=D64)
    lengths = [4, 6, 2]  # unsorted: packing reorders the batch internally
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    a = gradient_flow(gru, packed)
    b = gradient_flow(gru, x, lengths=lengths)
    torch.testing.assert_close(a.layers[0].norms["dh"], b.layers[0].norms["dh"], equal_nan=True)
    torch.testing.assert_close(a.layers[0].jacobian, b.layers[0].jacobian, equal_nan=True)


def test_introspect_commands_run_through_the_rnnkit_cli(capsys):
    out = io.StringIO()
    assert cli.main(["explain", "--only", "rnn"], out=out) == 0
    assert "[32, 32]" in out.getvalue()
    assert cli.main(["gradflow", "--arch", "rnn,cnn"], out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err == ("rnnkit gradflow: error: --arch: unknown architecture 'cnn'; expected a comma-separated list "
                   "of rnn, jordan, lstm, gru, gru-rb\n")


def reference_stack(module, x, lengths):
    """(internals per layer and direction, output) of a bidirectional stack by
    rnnkit.reference: the backward direction runs the reference on its input reversed
    within each length, and its results are reversed back to the caller's time order."""
    lens = torch.tensor(lengths)
    active = (torch.arange(x.shape[0])[:, None] < lens[None, :]).unsqueeze(-1)  # (T, B, 1)
    internals, layer_input = [], x
    for layer in range(module.num_layers):
        outs = []
        for d in range(2):
            params = [getattr(module, f"{n}_l{layer}{'_reverse' if d else ''}").detach()
                      for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            xin = reverse_within_lengths(layer_input, lens) if d else layer_input
            if isinstance(module, rnnkit.LSTM):
                res = reference.lstm(xin, None, None, *params, lengths=lens, return_internals=True)
            elif isinstance(module, rnnkit.GRU):
                res = reference.gru(xin, None, *params, reset_after=module.reset_after, lengths=lens,
                                    return_internals=True)
            else:
                res = reference.elman(xin, None, *params, nonlinearity=module.nonlinearity, lengths=lens,
                                      return_internals=True)
            out = torch.where(active, res[0], torch.zeros_like(res[0]))
            internals.append({k: reverse_within_lengths(v, lens) if d else v for k, v in res[-1].items()})
            outs.append(reverse_within_lengths(out, lens) if d else out)
        layer_input = torch.cat(outs, dim=2)
    return internals, layer_input


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru", "gru_before"])
def test_internals_of_every_layer_and_direction_equal_reference(arch):
    module = make(arch)  # 2 layers, bidirectional
    x = torch.randn(T, B, I, dtype=D64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out, _, inside = module.forward_with_internals(x, lengths=LENGTHS)
        want, want_out = reference_stack(module, x, LENGTHS)
    active = torch.arange(T)[:, None] < torch.tensor(LENGTHS)[None, :]
    assert len(inside) == len(want) == 4
    for k, (got, expected) in enumerate(zip(inside, want)):
        assert set(got) == set(expected), k
        for key in expected:
            torch.testing.assert_close(got[key][active], expected[key][active], rtol=1e-12, atol=1e-12,
                                       msg=f"layer {k // 2} direction {k % 2} {key}")
            assert (got[key][~active] == 0).all(), f"layer {k // 2} direction {k % 2} {key}: padding"
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", ARCHS)
def test_grad_recorders_of_every_layer_and_direction_equal_autograd(arch):
    module = make(arch)
    x = torch.randn(T, B, I, dtype=D64, generator=torch.Generator().manual_seed(4))
    w = torch.randn(T, B, 2 * H if arch != "jordan" else 2, dtype=D64, generator=torch.Generator().manual_seed(5))
    recorders = []
    out, _, _ = module.forward_with_internals(x, lengths=LENGTHS, grad_recorders=recorders)
    (out * w).sum().backward()
    expected = oracle(module, x, LENGTHS, lambda o: (o * w).sum())
    assert len(recorders) == len({k for k, _ in expected})
    active = torch.arange(T)[:, None] < torch.tensor(LENGTHS)[None, :]
    for (k, key), g in expected.items():
        torch.testing.assert_close(recorders[k][key][active], g[active], rtol=1e-10, atol=1e-13,
                                   msg=f"recorder {k} {key}")


def test_lags_follow_each_directions_processing_order():
    """A contractive bidirectional tanh RNN (||W_hh|| = 0.5 both ways) with the loss on each
    direction's last processed step: the forward direction's last step is t = T_b - 1, the
    backward direction's is t = 0, so a step's lag is T_b - 1 - t forward and t backward,
    and the norm at least halves with every step of lag in both."""
    torch.manual_seed(0)
    Hs, lengths = 16, [30, 17, 24, 9]
    rnn = rnnkit.RNN(I, Hs, bidirectional=True).double()
    with torch.no_grad():
        for name in ("weight_hh_l0", "weight_hh_l0_reverse"):
            W = torch.randn(Hs, Hs, dtype=D64)
            getattr(rnn, name).copy_(W * 0.5 / torch.linalg.matrix_norm(W, ord=2))
    Tn = max(lengths)
    x = torch.randn(Tn, len(lengths), I, dtype=D64)

    def loss(result):
        out = result[0]  # (T, B, 2H): forward half, then backward half
        return sum(out[n - 1, b, :Hs].sum() + out[0, b, Hs:].sum() for b, n in enumerate(lengths))

    flow = gradient_flow(rnn, x, loss, lengths=lengths, jacobian=False)
    t = torch.arange(Tn)[:, None].expand(Tn, len(lengths))
    lens = torch.tensor(lengths)[None, :].expand(Tn, len(lengths))
    active = t < lens
    for direction, lag in ((0, lens - 1 - t), (1, t)):
        lf = flow.layer(0, direction)
        assert torch.equal(lf.lags[active], lag[active]), f"direction {direction}"
        by_lag = lf.by_lag()  # (L, B): row j = lag j
        for b, n in enumerate(lengths):
            col = by_lag[:n, b]
            assert (col[1:] <= 0.5 * col[:-1] * (1 + 1e-12)).all(), f"direction {direction} row {b}"
            assert torch.isnan(by_lag[n:, b]).all()
        assert lf.decay() <= -0.30103, f"direction {direction}"
