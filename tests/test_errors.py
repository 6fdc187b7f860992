"""Bad input gets a clear TypeError / ValueError naming the argument, the expected and
the received value; edge cases (empty batch, non-contiguous input, NaN/Inf) behave."""
import warnings

import pytest
import torch

import rnnkit

I, H, T, B = 4, 6, 5, 3


@pytest.fixture(params=["rnn", "lstm", "gru", "gru_before", "jordan"])
def module(request):
    return {"rnn": lambda: rnnkit.RNN(I, H), "lstm": lambda: rnnkit.LSTM(I, H), "gru": lambda: rnnkit.GRU(I, H),
            "gru_before": lambda: rnnkit.GRU(I, H, reset_after=False),
            "jordan": lambda: rnnkit.JordanRNN(I, H, 2)}[request.param]()


def test_wrong_feature_size(module):
    with pytest.raises(ValueError, match=r"input: expected input_size=4 .* got 7"):
        module(torch.randn(T, B, 7))


def test_wrong_rank(module):
    with pytest.raises(ValueError, match=r"input: expected a 3-D .* got shape \(2, 3, 4, 4\)"):
        module(torch.randn(2, 3, 4, 4))


def test_integer_input(module):
    with pytest.raises(TypeError, match=r"input: expected a floating-point tensor .* got dtype torch.int64"):
        module(torch.ones(T, B, I, dtype=torch.int64))


def test_mismatched_dtype(module):
    with pytest.raises(TypeError, match=r"input: dtype torch.float64 does not match .*torch.float32"):
        module(torch.randn(T, B, I, dtype=torch.float64))


def test_zero_length_sequence(module):
    with pytest.raises(ValueError, match="at least one time step"):
        module(torch.randn(0, B, I))


@pytest.mark.parametrize("bad", [[5, 0, 2], [5, -1, 2], [5, 6, 2]])
def test_bad_lengths(module, bad):
    with pytest.raises(ValueError, match=r"lengths: every length must be in \[1, T=5\], got " + str(bad[1])):
        module(torch.randn(T, B, I), lengths=torch.tensor(bad))


def test_lengths_wrong_count_and_dtype(module):
    with pytest.raises(ValueError, match=r"lengths: expected shape \(3,\)"):
        module(torch.randn(T, B, I), lengths=torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="lengths: expected an integer tensor"):
        module(torch.randn(T, B, I), lengths=torch.tensor([1.0, 2.0, 3.0]))


def test_wrong_state_shape():
    with pytest.raises(ValueError, match=r"hx: expected shape \(2, 3, 6\), got \(1, 3, 6\)"):
        rnnkit.GRU(I, H, num_layers=2)(torch.randn(T, B, I), torch.zeros(1, B, H))
    with pytest.raises(ValueError, match=r"hx\[1\] \(c_0\): expected shape \(1, 3, 6\), got \(1, 3, 5\)"):
        rnnkit.LSTM(I, H)(torch.randn(T, B, I), (torch.zeros(1, B, H), torch.zeros(1, B, 5)))
    with pytest.raises(ValueError, match=r"y0: expected shape \(3, 2\), got \(3, 6\)"):
        rnnkit.JordanRNN(I, H, 2)(torch.randn(T, B, I), torch.zeros(B, H))
    with pytest.raises(ValueError, match=r"hx: expected shape \(1, 6\)"):  # unbatched input, batched state
        rnnkit.RNN(I, H)(torch.randn(T, I), torch.zeros(1, B, H))


def test_wrong_state_dtype():
    with pytest.raises(TypeError, match=r"hx: expected dtype torch.float32 like the input, got torch.float64"):
        rnnkit.RNN(I, H)(torch.randn(T, B, I), torch.zeros(1, B, H, dtype=torch.float64))


def test_lstm_state_must_be_pair():
    with pytest.raises(TypeError, match=r"hx: expected a tuple \(h_0, c_0\)"):
        rnnkit.LSTM(I, H)(torch.randn(T, B, I), torch.zeros(1, B, H))


def test_cell_errors():
    with pytest.raises(ValueError, match=r"input: expected input_size=4 .* got 3"):
        rnnkit.LSTMCell(I, H)(torch.randn(B, 3))
    with pytest.raises(ValueError, match=r"hx: expected shape \(3, 6\), got \(2, 6\)"):
        rnnkit.GRUCell(I, H)(torch.randn(B, I), torch.zeros(2, H))
    with pytest.raises(TypeError, match="got dtype torch.int32"):
        rnnkit.RNNCell(I, H)(torch.ones(B, I, dtype=torch.int32))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"nonlinearity: expected 'tanh', 'relu' or 'identity', got 'sigmoid'"):
        rnnkit.RNN(I, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"output_nonlinearity: expected one of .* got 'relu'"):
        rnnkit.JordanRNN(I, H, 2, output_nonlinearity="relu")
    with pytest.raises(ValueError, match=r"output_size: expected a positive integer, got 0"):
        rnnkit.JordanRNN(I, H, 0)


def test_empty_batch_returns_empty_outputs(module):
    x = torch.randn(T, 0, I, requires_grad=True)
    out, state = module(x)
    width = 2 if isinstance(module, rnnkit.JordanRNN) else H
    assert out.shape == (T, 0, width)
    states = state if isinstance(state, tuple) else (state,)
    assert all(s.numel() == 0 for s in states)
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_non_contiguous_and_batch_first_inputs():
    m = rnnkit.LSTM(I, H).double()
    mb = rnnkit.LSTM(I, H, batch_first=True).double()
    mb.load_state_dict(m.state_dict())
    base = torch.randn(B, T, 2 * I, dtype=torch.float64)
    x_nc = base[:, :, ::2]  # (B, T, I), non-contiguous
    assert not x_nc.is_contiguous()
    out_b, _ = mb(x_nc)
    out_t, _ = m(x_nc.transpose(0, 1))  # (T, B, I), also non-contiguous
    assert torch.allclose(out_b.transpose(0, 1), out_t, atol=1e-14)
    ref, _ = m(x_nc.transpose(0, 1).contiguous())
    assert torch.allclose(out_t, ref, atol=1e-14)


def test_nan_propagates(module):
    x = torch.randn(T, B, I)
    x[2, 1, 0] = float("nan")
    out, _ = module(x)
    assert torch.isfinite(out[:2]).all(), "steps before the bad value stay finite"
    assert torch.isfinite(out[:, [0, 2]]).all(), "other sequences stay finite"
    assert torch.isnan(out[2:, 1]).all(), "NaN reaches every later output of its sequence"


@pytest.mark.parametrize("value", [float("inf"), -float("inf")])
@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_inf_behaves_as_torch(arch, value):
    cls = {"rnn": (torch.nn.RNN, rnnkit.RNN), "lstm": (torch.nn.LSTM, rnnkit.LSTM),
           "gru": (torch.nn.GRU, rnnkit.GRU)}[arch]
    t, r = cls[0](I, H), cls[1](I, H)
    r.load_state_dict(t.state_dict())
    x = torch.randn(T, B, I)
    x[2, 1, 0] = value
    a, b = t(x)[0], r(x)[0]
    assert torch.equal(torch.isnan(a), torch.isnan(b))
    assert torch.allclose(a.nan_to_num(), b.nan_to_num(), atol=1e-5)


def test_bfloat16_and_reference_fallback():
    x = torch.randn(T, B, I)
    lstm = rnnkit.LSTM(I, H)
    expected = lstm(x)[0]
    out = lstm.to(torch.bfloat16)(x.to(torch.bfloat16))[0]  # torch's own kernel: same math
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), expected, atol=0.05)
    ident = rnnkit.RNN(I, H, nonlinearity="identity")
    expected = ident(x)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rnnkit.modules._warned.clear()
        out = ident.to(torch.bfloat16)(x.to(torch.bfloat16))[0]
    assert any("reference implementation" in str(w.message) for w in caught)
    assert torch.allclose(out.float(), expected, atol=0.1, rtol=0.05)


def test_core_binding_rejects_bad_buffers():
    """The binding checks shapes and dtypes itself: a wrong buffer never reaches a kernel."""
    from rnnkit import _core
    xw = torch.zeros(T, B, 4 * H)
    w = torch.zeros(4 * H, H)
    hs, cs, g = torch.zeros(T + 1, B, H), torch.zeros(T + 1, B, H), torch.zeros(T, B, 4 * H)
    with pytest.raises(ValueError, match=r"cs: expected shape \(6, 3, 6\), got \(5, 3, 6\)"):
        _core.lstm_forward(0, xw, w, None, None, None, hs, torch.zeros(T, B, H), g, None, 1)
    with pytest.raises(TypeError, match="gates: expected dtype float32"):
        _core.lstm_forward(0, xw, w, None, None, None, hs, cs, g.double(), None, 1)
    with pytest.raises(ValueError, match=r"lengths: every length must be in \[1, 5\], got 9"):
        _core.lstm_forward(0, xw, w, None, None, torch.tensor([1, 9, 2]), hs, cs, g, None, 1)


@pytest.mark.parametrize("bad, error", [([0, 2, 1], ValueError), ([1, 6, 1], ValueError), ([1, 2], ValueError),
                                        ([1.0, 2.0, 1.0], TypeError)])
def test_lengths_errors_say_the_same_on_every_path(bad, error):
    """The native path, the reference and the modules reject bad lengths in the same words."""
    x = torch.randn(5, 3, 2, dtype=torch.float64)
    w_ih, w_hh = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    messages = []
    for run in (lambda: rnnkit.functional.elman(x, None, w_ih, w_hh, lengths=bad),
                lambda: rnnkit.reference.elman(x, None, w_ih, w_hh, lengths=bad),
                lambda: rnnkit.RNN(2, 4).double()(x, lengths=bad)):
        with pytest.raises(error) as info:
            run()
        messages.append(str(info.value))
    assert messages[0].startswith("lengths: ") and len(set(messages)) == 1, messages
