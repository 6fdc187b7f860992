"""The peephole LSTM (SPEC section 13): beyond the registry-driven checks of
test_networks.py (oracle, gradcheck, cell, stream, threads, ISA paths for the
``peephole=True`` example), its neutral value is the plain LSTM bit for bit, and
onnxruntime's LSTM operator with its ``P`` input is a third, independent oracle."""
import numpy as np
import pytest
import torch

import rnnkit

T, B, I, H = 7, 3, 4, 6


def _run(m, x, lengths=None):
    out, (h, c) = m(x, lengths=lengths)
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + h.sum() + c.sum(),
                                [x, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0])
    return [out.detach(), h.detach(), c.detach(), *grads]


@pytest.mark.parametrize("isa", rnnkit.available_isas())
@pytest.mark.parametrize("lengths", [None, torch.tensor([7, 2, 5])], ids=["full", "lengths"])
def test_zero_peepholes_equal_the_plain_lstm_bit_for_bit(isa, lengths):
    plain = rnnkit.LSTM(I, H)
    peep = rnnkit.LSTM(I, H, peephole=True)
    with torch.no_grad():
        peep.weight_ch_l0.zero_()
    peep.load_state_dict({**plain.state_dict(), "weight_ch_l0": peep.weight_ch_l0.detach()})
    x = torch.randn(T, B, I, requires_grad=True)
    with rnnkit.use_isa(isa):
        a, b = _run(plain, x, lengths), _run(peep, x, lengths)
    assert len(a) == len(b)
    for k, (u, v) in enumerate(zip(a, b)):
        assert torch.equal(u, v), f"tensor {k} differs"


def test_peepholes_change_the_result_and_get_a_gradient():
    m = rnnkit.LSTM(I, H, peephole=True)
    x = torch.randn(T, B, I)
    out, _ = m(x)
    with torch.no_grad():
        plain_out = rnnkit.functional.lstm(x, None, None, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0,
                                           m.bias_hh_l0)[0]
    assert (out - plain_out).abs().max() > 1e-3
    (g,) = torch.autograd.grad(out.sum(), [m.weight_ch_l0])
    assert g.shape == (3 * H,) and g.abs().min() > 0


def test_matches_onnxruntime_lstm_operator_with_peepholes():
    onnx = pytest.importorskip("onnx", reason="the onnx package (the bench extra) is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the bench extra) is not installed")
    from onnx import TensorProto, helper

    m = rnnkit.LSTM(I, H, peephole=True).eval()
    x = torch.randn(T, B, I)

    def iofc(w):  # torch's gate rows i, f, g, o -> ONNX's i, o, f, c
        i, f, g, o = w.detach().numpy().reshape(4, H, *w.shape[1:])
        return np.concatenate([i, o, f, g])

    p_i, p_f, p_o = m.weight_ch_l0.detach().numpy().reshape(3, H)
    inits = {
        "W": iofc(m.weight_ih_l0)[None], "R": iofc(m.weight_hh_l0)[None],
        "B": np.concatenate([iofc(m.bias_ih_l0), iofc(m.bias_hh_l0)])[None],
        "P": np.concatenate([p_i, p_o, p_f])[None],  # ONNX stacks peepholes i, o, f
    }
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "", "", "P"], ["Y"], hidden_size=H)
    graph = helper.make_graph(
        [node], "peephole_lstm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 1, B, H])],
        [helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.astype(np.float32).ravel()) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"X": x.numpy()})
    with torch.no_grad():
        out, _ = m(x)
    err = np.abs(y[:, 0] - out.numpy()).max() / np.abs(out.numpy()).max()
    assert err < 1e-5, err


def test_command_line_trains_saves_and_reloads_a_peephole_lstm(tmp_path):
    from cli_support import model_weights, train_tiny

    rc, out, err, run_dir = train_tiny(tmp_path, "--arch", "lstm", "--peephole")
    assert rc == 0, err
    peepholes = [v for k, v in model_weights(run_dir / "best.safetensors").items() if k.endswith("rnn.weight_ch_l0")]
    assert len(peepholes) == 1 and peepholes[0].dim() == 1 and peepholes[0].shape[0] % 3 == 0
    model = rnnkit.load(run_dir)
    assert model.rnn.peephole and torch.equal(model.rnn.weight_ch_l0.detach(), peepholes[0])
    rc, out, err, _ = train_tiny(tmp_path, "--arch", "gru", "--peephole", name="gru")
    assert rc == 2 and err.count("\n") == 1 and "--peephole" in err and "--arch lstm" in err, err
