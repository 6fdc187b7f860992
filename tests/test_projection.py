"""The LSTM with projections (``proj_size``, SPEC section 14, LSTMP of Sak et al. 2014):
beyond the registry-driven checks of test_networks.py (oracle, torch.nn, gradcheck,
stream, threads, ISA paths and internals for the ``proj_size=3`` example), torch.nn's
state_dict loads both ways and gives the same outputs and gradients in float32 and
float64 for every layout; an identity projection is the plain LSTM bit for bit; the
ONNX export is a Loop; the command line trains, saves and reloads one."""
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit

from conftest import rel_err

T, B, I, H, P = 7, 3, 4, 6, 3
LENGTHS = torch.tensor([7, 2, 5])
# Relative error to torch.nn.LSTM(proj_size=...) on outputs and every gradient; torch's
# kernel sums in another order, so the float32 bound is a few ulps of the largest value.
PARITY_TOL = {torch.float32: 5e-6, torch.float64: 1e-12}


def _loss_and_grads(outputs, leaves):
    g = torch.Generator().manual_seed(3)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(loss, leaves)


def _run(module, x, hx, form):
    """outputs (out in (T, B, .) form, h_n, c_n) and the gradients of x, hx and every parameter."""
    if form == "packed":
        out, (h, c) = module(pack_padded_sequence(x, LENGTHS, enforce_sorted=False), hx)
        out = pad_packed_sequence(out, total_length=T)[0]
    elif form == "batch_first":
        out, (h, c) = module(x.transpose(0, 1), hx)
        out = out.transpose(0, 1)
    else:
        out, (h, c) = module(x, hx)
    outputs = [out, h, c]
    return outputs, _loss_and_grads(outputs, [x, *hx, *module.parameters()])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("form", ["plain", "packed", "batch_first"])
@pytest.mark.parametrize("direction", ["torch-to-rnnkit", "rnnkit-to-torch"])
def test_matches_torch_nn_lstm_with_proj_size(dtype, form, direction):
    kw = dict(num_layers=2, bidirectional=True, proj_size=P, batch_first=form == "batch_first")
    t, r = torch.nn.LSTM(I, H, **kw).to(dtype), rnnkit.LSTM(I, H, **kw).to(dtype)
    src, dst = (t, r) if direction == "torch-to-rnnkit" else (r, t)
    dst.load_state_dict(src.state_dict())
    assert [n for n, _ in t.named_parameters()] == [n for n, _ in r.named_parameters()]
    assert r.weight_hr_l1_reverse.shape == (P, H) and r.weight_hh_l0.shape == (4 * H, P)
    assert r.weight_ih_l1.shape == (4 * H, 2 * P)  # layer 1 reads both directions' P units
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    hx = (torch.randn(4, B, P, dtype=dtype, requires_grad=True), torch.randn(4, B, H, dtype=dtype, requires_grad=True))
    (theirs, their_grads), (ours, our_grads) = _run(t, x, hx, form), _run(r, x, hx, form)
    assert [o.shape for o in ours] == [(T, B, 2 * P), (4, B, P), (4, B, H)]
    for k, (a, b) in enumerate(zip(ours + list(our_grads), theirs + list(their_grads))):
        assert a.shape == b.shape, k
        assert rel_err(a, b) <= PARITY_TOL[dtype], f"tensor {k}: relative error {rel_err(a, b):.3g}"


def test_unbatched_input_and_the_state_shapes_it_names():
    m = rnnkit.LSTM(I, H, proj_size=P)
    out, (h, c) = m(torch.randn(T, I))
    assert out.shape == (T, P) and h.shape == (1, P) and c.shape == (1, H)
    with pytest.raises(ValueError, match=r"hx\[0\] \(h_0\): expected shape \(1, 3, 3\), got \(1, 3, 6\)"):
        m(torch.randn(T, B, I), (torch.zeros(1, B, H), torch.zeros(1, B, H)))
    with pytest.raises(ValueError, match=r"hx\[1\] \(c_0\): expected shape \(1, 3, 6\), got \(1, 3, 3\)"):
        m(torch.randn(T, B, I), (torch.zeros(1, B, P), torch.zeros(1, B, P)))


@pytest.mark.parametrize("isa", rnnkit.available_isas())
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_identity_projection_equals_the_plain_lstm_bit_for_bit(isa, lengths):
    """W_hr = I (P = H) through the projected kernels: h_t = m_t and dm = dh exactly, so
    every output and gradient equals the plain LSTM's bit for bit."""
    m = rnnkit.LSTM(I, H)
    params = [p.detach().clone().requires_grad_() for p in (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0,
                                                             m.bias_hh_l0)]
    x = torch.randn(T, B, I, requires_grad=True)
    h0, c0 = torch.randn(B, H, requires_grad=True), torch.randn(B, H, requires_grad=True)
    eye = torch.eye(H, requires_grad=True)
    runs = []
    with rnnkit.use_isa(isa):
        for w_hr in (None, eye):
            rec: dict = {}
            out, (h, c) = rnnkit.functional.lstm(x, h0, c0, *params, weight_hr=w_hr, lengths=lengths,
                                                 grad_recorder=rec)
            grads = _loss_and_grads([out, h, c], [x, h0, c0, *params])
            runs.append([out.detach(), h.detach(), c.detach(), *grads, rec["dh"], rec["dc"]])
    for k, (a, b) in enumerate(zip(*runs)):
        assert torch.equal(a, b), f"tensor {k} differs"


def test_projection_gradient_is_the_one_product_over_all_steps():
    """dW_hr against autograd through the reference, with lengths (padded steps add nothing)."""
    m = rnnkit.LSTM(I, H, proj_size=P).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, (h, c) = m(x, lengths=LENGTHS)
    (ours,) = _loss_and_grads([out, h, c], [m.weight_hr_l0])
    ref_out, (ref_h, ref_c) = rnnkit.reference.lstm(x, None, None, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0,
                                                    m.bias_hh_l0, weight_hr=m.weight_hr_l0, lengths=LENGTHS)
    (theirs,) = _loss_and_grads([ref_out, ref_h, ref_c], [m.weight_hr_l0])
    assert rel_err(ours, theirs) < 1e-12 and theirs.abs().min() > 0


def test_peepholes_and_projection_together_match_the_reference():
    m = rnnkit.LSTM(I, H, proj_size=P, peephole=True).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, (h, c) = m(x, lengths=LENGTHS)
    ref_out, (ref_h, ref_c) = rnnkit.reference.lstm(
        x, None, None, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0, weight_ch=m.weight_ch_l0,
        weight_hr=m.weight_hr_l0, lengths=LENGTHS)
    for a, b in ((out, ref_out), (h[0], ref_h), (c[0], ref_c)):
        assert rel_err(a, b) < 1e-12
    params = list(m.parameters())
    for a, b in zip(_loss_and_grads([out, h, c], params), _loss_and_grads([ref_out, ref_h, ref_c], params)):
        assert rel_err(a, b) < 1e-12


def test_stream_state_has_the_two_widths():
    m = rnnkit.LSTM(I, H, num_layers=2, proj_size=P).eval()
    stream = rnnkit.Stream(m, batch_size=B)
    x = torch.randn(T, B, I)
    steps = torch.stack([stream.step(x[t]).clone() for t in range(T)])
    with torch.no_grad():
        out, (h, c) = m(x)
    h_s, c_s = stream.state()
    assert steps.shape == (T, B, P) and h_s.shape == (2, B, P) and c_s.shape == (2, B, H)
    assert rel_err(steps, out) < 1e-5 and rel_err(c_s, c) < 1e-5
    stream.reset((h, c))
    assert torch.equal(stream.state()[1], c)


def test_onnx_export_is_a_loop_that_matches_onnxruntime(tmp_path):
    onnx = pytest.importorskip("onnx", reason="the onnx package (the bench extra) is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the bench extra) is not installed")
    m = rnnkit.LSTM(I, H, num_layers=2, proj_size=P, peephole=True).eval()
    from rnnkit import export

    export.to_onnx(m, tmp_path / "m.onnx", torch.randn(5, 2, I), lengths=torch.tensor([5, 3]))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops.count("Loop") == 2 and "LSTM" not in ops and not any(op.startswith("rnnkit") for op in ops)
    assert export.onnx_operator(m) == "Loop" and export.onnx_operator(rnnkit.LSTM(I, H)) == "LSTM"
    x = torch.randn(T, B, I)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x.numpy(),
                                                                     "lengths": LENGTHS.numpy()})
    with torch.no_grad():
        out, (h, c) = m(x, lengths=LENGTHS)
    for g, e in zip(got, (out, h, c)):
        assert np.abs(g - e.numpy()).max() <= 1e-5 * max(1.0, np.abs(e.numpy()).max())


def test_command_line_trains_saves_and_reloads_a_projected_lstm(tmp_path):
    from cli_support import model_weights, train_tiny

    rc, out, err, run_dir = train_tiny(tmp_path, "--arch", "lstm", "--proj-size", "5")
    assert rc == 0, err
    weights = model_weights(run_dir / "best.safetensors")
    (w_hr,) = [v for k, v in weights.items() if k.endswith("rnn.weight_hr_l0")]
    assert w_hr.shape[0] == 5
    model = rnnkit.load(run_dir)
    assert model.rnn.proj_size == 5 and torch.equal(model.rnn.weight_hr_l0.detach(), w_hr)
    rc, out, err, _ = train_tiny(tmp_path, "--arch", "gru", "--proj-size", "5", name="gru")
    assert rc == 2 and err.count("\n") == 1 and "--proj-size" in err and "--arch lstm" in err, err
    rc, out, err, _ = train_tiny(tmp_path, "--arch", "lstm", "--proj-size", "100000", name="wide")
    assert rc == 2 and err.count("\n") == 1 and "--proj-size" in err and "--hidden" in err, err


def test_visualize_page_takes_the_narrower_projected_h():
    """``rnnkit visualize``: a projected LSTM's h has P units, c and the gates H; each
    quantity keeps its own width and --unit is checked against the one shown."""
    from rnnkit.introspect import IntrospectError, visualize

    tracks = {"h": torch.zeros(2, P), "c": torch.ones(2, H)}
    page = visualize.activation_page("ab", tracks, arch="lstm", title="t", info="i", unit=H - 1, track="c")
    assert '"units":6' in page
    with pytest.raises(IntrospectError, match=r"--unit: expected a unit index in 0\.\.2 \(h has 3 units\), got 4"):
        visualize.activation_page("ab", tracks, arch="lstm", title="t", info="i", unit=4, track="h")
