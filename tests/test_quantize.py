"""Reduced-precision inference (rnnkit.quantize_dynamic, csrc/lowp.h): int8 and bf16 weights.

The oracle is plain torch in float64 with the same arithmetic written from the
documented rules: int8 weights per output row and activations per input row,
symmetric, round half to even (float32 scales, as the core); bf16 rounding of both
operands. The sequence oracle runs the cell equations of SPEC.md in float64 on those
products, fed (teacher-forced) with the module's own previous outputs, since the
quantisation of a state depends on its exact float32 value.
"""

from __future__ import annotations

import os

import pytest
import torch

import rnnkit
from conftest import NETWORK_CASES
from rnnkit import _core, networks


# The settings the reduced-precision layers run: every one the one-step kernels run but
# zoneout and the registry's not_quantized (layer_norm), refused by name: tested at the end.
def _converts(case) -> bool:
    return case.streams and not case.hyper.get("zoneout") and not any(case.hyper.get(k)
                                                                      for k in case.spec.not_quantized)


@pytest.fixture(params=[c for c in NETWORK_CASES if _converts(c)], ids=lambda c: c.name)
def network(request):
    return request.param

DTYPES = [torch.qint8, torch.bfloat16]
IDS = ["int8", "bf16"]
CODES = {torch.qint8: 0, torch.bfloat16: 1}


# ----------------------------------------------------------------------------- the oracle
def _q8_rows(a: torch.Tensor):
    """Per-row symmetric int8 of a float32 (R, K): (q as float64, scale as float64)."""
    m = a.abs().amax(1)
    inv = torch.where(m > 0, torch.full_like(m, 127.0) / m, torch.zeros_like(m))
    q = torch.round(a * inv[:, None]).clamp(-127, 127)
    return q.double(), (m / torch.full_like(m, 127.0)).double()


def lowp_product(a: torch.Tensor, w: torch.Tensor, dtype) -> torch.Tensor:
    """a (R, K) W (N, K)^T in float64 with a and W as the core stores them."""
    a, w = a.float(), w.float()
    if dtype is None:  # unquantised (for error bounds)
        return a.double() @ w.double().t()
    if dtype == torch.bfloat16:
        return a.to(torch.bfloat16).double() @ w.to(torch.bfloat16).double().t()
    qa, sa = _q8_rows(a)
    qw, sw = _q8_rows(w)
    return (qa @ qw.t()) * (sa[:, None] * sw[None, :])


def _param(module, role):
    return module._parameters.get(f"{role}_l0")


def teacher_forced(module, x, out, init, lengths, dtype) -> torch.Tensor:
    """Each step of a one-layer unidirectional module in float64 (SPEC's equations), from
    the module's own output at the previous step; returns the outputs (T, B, W)."""
    spec, T, B = networks.network_of(module), x.shape[0], x.shape[1]
    P = {r: (None if _param(module, r) is None else _param(module, r).detach()) for r in spec.param_roles}
    b = lambda r: 0.0 if P.get(r) is None else P[r].double()  # noqa: E731
    act = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda v: v, "sigmoid": torch.sigmoid}
    xw = lowp_product(x.reshape(T * B, -1), P["weight_ih"], dtype).reshape(T, B, -1)
    prev = init[0].double() if init[0] is not None else torch.zeros(B, out.shape[2], dtype=torch.float64)
    H = module.hidden_size
    c = (init[1].double() if init[1] is not None else torch.zeros(B, H, dtype=torch.float64)) \
        if spec.kernel == "lstm" else None
    ys = torch.zeros(T, B, out.shape[2], dtype=torch.float64)
    for t in range(T):
        h_in = prev.float() if t == 0 else out[t - 1]  # the module's h_{t-1} (its y_{t-1} for Jordan)
        if spec.kernel == "lstm":
            a = xw[t] + b("bias_ih") + b("bias_hh") + lowp_product(h_in, P["weight_hh"], dtype)
            ai, af, ag, ao = a.chunk(4, 1)
            if P.get("weight_ch") is not None:
                pi, pf, po = P["weight_ch"].double().chunk(3)
                ai, af = ai + pi * c, af + pf * c
            i, f, g = torch.sigmoid(ai), torch.sigmoid(af), torch.tanh(ag)
            c_new = f * c + i * g
            if P.get("weight_ch") is not None:
                ao = ao + po * c_new
            y = torch.sigmoid(ao) * torch.tanh(c_new)
            if P.get("weight_hr") is not None:  # LSTMP: h = W_hr m, one more quantised product
                y = lowp_product(y.float(), P["weight_hr"], dtype)
        elif spec.kernel == "gru":
            bih, bhh = b("bias_ih"), b("bias_hh")
            xr, xz, xn = (xw[t] + bih).chunk(3, 1)
            br, bz, bn = (bhh.chunk(3) if isinstance(bhh, torch.Tensor) else (0.0, 0.0, 0.0))
            hr, hz, hn = lowp_product(h_in, P["weight_hh"], dtype).chunk(3, 1)
            r, z = torch.sigmoid(xr + hr + br), torch.sigmoid(xz + hz + bz)
            hp = h_in.double()
            if module.reset_after:
                y = (1 - z) * torch.tanh(xn + r * (hn + bn)) + z * hp
            else:
                u = (r * hp).float()
                n = torch.tanh(xn + bn + lowp_product(u, P["weight_hh"][2 * H:], dtype))
                y = (1 - z) * hp + z * n
        elif spec.kernel == "jordan":
            a = xw[t] + b("bias_ih") + b("bias_yh") + lowp_product(h_in, P["weight_yh"], dtype)
            h = act[module.nonlinearity](a)
            y = act[module.output_nonlinearity](lowp_product(h.float(), P["weight_hy"], dtype) + b("bias_hy"))
        else:
            a = xw[t] + b("bias_ih") + b("bias_hh") + lowp_product(h_in, P["weight_hh"], dtype)
            y = act[module.nonlinearity](a)
        on = torch.ones(B, dtype=torch.bool) if lengths is None else torch.as_tensor(lengths) > t
        ys[t] = torch.where(on[:, None], y, torch.zeros_like(y))
        if c is not None:
            c = torch.where(on[:, None], c_new, c)
        prev = torch.where(on[:, None], y, prev)
    return ys


def _portable(monkeypatch, module, dtype):
    monkeypatch.setenv("RNNKIT_LOWP_DOT", "portable")
    q = rnnkit.quantize_dynamic(module, dtype=dtype)
    monkeypatch.delenv("RNNKIT_LOWP_DOT")
    assert not q.native_dot
    return q


def _states(spec, module, B, L=1):
    init = [torch.randn(L, B, W) * 0.5 for W in spec.state_widths(module)]
    return init, (tuple(init) if len(init) > 1 else init[0])


# ----------------------------------------------------------------------------- products
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("I", [1, 7, 64, 301, 9001])  # 9001: past the on-stack rows (lowp.h)
@pytest.mark.parametrize("native", [True, False], ids=["native", "portable"])
def test_input_projection_matches_the_oracle(dtype, I, native, monkeypatch):
    lstm = rnnkit.LSTM(I, 19)
    if not native:
        monkeypatch.setenv("RNNKIT_LOWP_DOT", "portable")
    q = rnnkit.quantize_dynamic(lstm, dtype=dtype)
    M = 23  # tiles of 8 rows and a partial one
    x = torch.randn(M, I) * torch.logspace(-3, 2, M)[:, None]
    x[3] = 0.0  # an all-zero row: scale 0
    xw = torch.empty(M, 4 * 19)
    q._layers[0].project(x.numpy(), xw.numpy(), 1)
    w, bias = lstm.weight_ih_l0.detach(), (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().double()
    expected = lowp_product(x, w, dtype) + bias
    # float32 rounding of a sum of I + 1 terms: within (I + 2) ulp of the sum of their magnitudes
    magnitude = lowp_product(x.abs(), w.abs(), None) + bias.abs()
    assert ((xw.double() - expected).abs() <= (I + 2) * 2.0 ** -23 * magnitude).all()
    assert torch.equal(xw[3], (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach())


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_a_non_finite_weight_gives_nan_outputs(dtype):
    lstm = rnnkit.LSTM(3, 5)
    with torch.no_grad():
        lstm.weight_hh_l0[7, 2] = float("nan")  # forget-gate row of unit 2
    q = rnnkit.quantize_dynamic(lstm, dtype=dtype)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        out, _ = q(x)
        ref, _ = lstm(x)
    assert torch.equal(out.isnan(), ref.isnan()) and out[0, :, 2].isnan().all() and out[1:].isnan().all()


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_a_non_finite_input_is_not_silently_quantized(dtype):
    """int8 cannot scale a row holding inf or NaN: its outputs are NaN. bf16 keeps the
    float semantics: the same non-finite pattern as the float32 module."""
    rnn = rnnkit.RNN(4, 8)
    q = rnnkit.quantize_dynamic(rnn, dtype=dtype)
    x = torch.randn(5, 2, 4)
    x[2, 1, 0] = float("inf")
    with torch.no_grad():
        out, _ = q(x)
        ref, _ = rnn(x)
    assert out[:, 0].isfinite().all() and out[:2].isfinite().all()
    if dtype == torch.qint8:
        assert out[2:, 1].isnan().all()
    else:
        assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out[2, 1], ref[2, 1])


# ----------------------------------------------------------------------------- sequences
@pytest.mark.parametrize("isa", rnnkit.available_isas())
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_sequence_matches_the_oracle(network, dtype, isa):
    module = network.layer(6, 20, dtype=torch.float32)
    T, B = 9, 4
    x = torch.randn(T, B, 6)
    lengths = torch.tensor([9, 4, 1, 7])
    init, hx = _states(network.spec, module, B)
    with rnnkit.use_isa(isa):  # the instruction set is chosen at conversion
        q = rnnkit.quantize_dynamic(module, dtype=dtype)
    assert q.native_dot == (isa == "avx512" and _core.lowp_dot_supported(CODES[dtype]))
    with torch.no_grad():
        out, _ = q(x, hx, lengths=lengths)
    expected = teacher_forced(module, x, out, [s[0] for s in init] + [None], lengths, dtype)
    assert (out.double() - expected).abs().max() < 2e-5


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_native_dot_equals_portable_bit_for_bit(network, dtype, monkeypatch):
    if not _core.lowp_dot_supported(CODES[dtype]):
        pytest.skip(f"this CPU has no {'AVX512-VNNI' if dtype == torch.qint8 else 'AVX512-BF16'} dot instruction")
    module = network.layer(11, 40, dtype=torch.float32, num_layers=2, bidirectional=True)
    x, lengths = torch.randn(13, 10, 11), torch.tensor([13, 5, 1, 13, 8, 2, 9, 13, 3, 12])
    native = rnnkit.quantize_dynamic(module, dtype=dtype)
    assert native.native_dot
    portable = _portable(monkeypatch, module, dtype)
    with torch.no_grad():
        a, b = native(x, lengths=lengths), portable(x, lengths=lengths)
    assert torch.equal(a[0], b[0])
    for s, t in zip(a[1] if isinstance(a[1], tuple) else (a[1],), b[1] if isinstance(b[1], tuple) else (b[1],)):
        assert torch.equal(s, t)


# Max abs output difference from the float32 module allowed (2 layers, bidirectional,
# H = 64, T = 50, inputs N(0, 1), torch.nn's initialisation). Measured (seed 0) for the
# registry's networks: int8 0.0012 (LSTM) .. 0.020 (RNN, identity); bf16 0.0004 .. 0.0058.
BOUND_VS_FP32 = {torch.qint8: 0.05, torch.bfloat16: 0.02}


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_close_to_float32_multilayer_bidirectional(network, dtype):
    module = network.layer(16, 64, dtype=torch.float32, num_layers=2, bidirectional=True, batch_first=True)
    x, lengths = torch.randn(5, 50, 16), torch.tensor([50, 17, 3, 50, 31])
    _, hx = _states(network.spec, module, 5, L=4)
    q = rnnkit.quantize_dynamic(module, dtype=dtype)
    with torch.no_grad():
        out, final = q(x, hx, lengths=lengths)
        ref, ref_final = module(x, hx, lengths=lengths)
    err = (out - ref).abs().max().item()
    assert 0 < err < BOUND_VS_FP32[dtype], f"max |quantized - float32| = {err:.3g}"
    for s, r in zip(final if isinstance(final, tuple) else (final,), ref_final if isinstance(ref_final, tuple) else (ref_final,)):
        assert s.shape == r.shape and (s - r).abs().max() < BOUND_VS_FP32[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_input_forms_agree(dtype):
    from torch.nn.utils.rnn import pack_padded_sequence

    lstm = rnnkit.LSTM(5, 12, num_layers=2, bidirectional=True).eval()
    lstm_bf = rnnkit.LSTM(5, 12, num_layers=2, bidirectional=True, batch_first=True)
    lstm_bf.load_state_dict(lstm.state_dict())
    q, q_bf = rnnkit.quantize_dynamic(lstm, dtype=dtype), rnnkit.quantize_dynamic(lstm_bf, dtype=dtype)
    x, lengths = torch.randn(7, 3, 5), torch.tensor([7, 3, 5])
    with torch.no_grad():
        out, (h, c) = q(x, lengths=lengths)
        out_bf, (h_bf, _) = q_bf(x.transpose(0, 1), lengths=lengths)
        packed, (h_p, _) = q(pack_padded_sequence(x, lengths, enforce_sorted=False))
        one, (h_one, _) = q(x[:, 1])
        one_ref, _ = q(x[:, 1:2])
    assert torch.equal(out_bf.transpose(0, 1), out) and torch.equal(h_bf, h)
    assert torch.equal(h_p, h)
    assert h.shape == (4, 3, 12) and c.shape == (4, 3, 12)
    assert torch.equal(one, one_ref[:, 0]) and h_one.shape == (4, 12)


def test_thread_count_does_not_change_the_result():
    module = rnnkit.GRU(32, 96, num_layers=2)
    q = rnnkit.quantize_dynamic(module)
    x = torch.randn(6, 16, 32)
    with torch.no_grad():
        with rnnkit.use_threads(1):
            a, _ = q(x)
        with rnnkit.use_threads(3):
            b, _ = q(x)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- errors
def test_errors_name_the_argument():
    lstm = rnnkit.LSTM(4, 8)
    with pytest.raises(ValueError, match=r"dtype: expected torch.qint8 or torch.bfloat16, got torch.float16"):
        rnnkit.quantize_dynamic(lstm, dtype=torch.float16)
    with pytest.raises(TypeError, match=r"module: expected float32 parameters"):
        rnnkit.quantize_dynamic(rnnkit.LSTM(4, 8).double())
    with pytest.raises(TypeError, match=r"module: expected an rnnkit layer .* got LSTMCell"):
        rnnkit.quantize_dynamic(rnnkit.LSTMCell(4, 8))
    with pytest.raises(TypeError, match=r"module: expected an rnnkit layer .* got LSTM"):
        rnnkit.quantize_dynamic(torch.nn.LSTM(4, 8))
    q = rnnkit.quantize_dynamic(lstm)
    x = torch.randn(3, 2, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"input: a int8 quantized module is inference-only"):
        q(x)
    with pytest.raises(TypeError, match=r"input: dtype torch.float64 does not match"):
        q(x.detach().double())
    with pytest.raises(ValueError, match=r"expected input_size=4"):
        q(torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match=r"h_0|hx"):
        q(x.detach(), (torch.zeros(1, 3, 8), torch.zeros(1, 3, 8)))
    with pytest.raises(ValueError, match="RNNKIT_LOWP_DOT"):
        os.environ["RNNKIT_LOWP_DOT"] = "fast"
        try:
            rnnkit.quantize_dynamic(lstm)
        finally:
            del os.environ["RNNKIT_LOWP_DOT"]
    with pytest.raises(ValueError, match=r"sizes: int8 products take at most 65536 inputs \(int32 sums\), got 65537"):
        rnnkit.quantize_dynamic(rnnkit.RNN(65537, 2))
    assert rnnkit.quantize_dynamic(rnnkit.RNN(65537, 2), dtype=torch.bfloat16).hidden_size == 2
    import copy
    import io

    for attempt in (lambda: copy.deepcopy(q), lambda: torch.save(q, io.BytesIO())):
        with pytest.raises(TypeError, match=r"module: a quantized module .* cannot be pickled, saved or copied"):
            attempt()
    assert list(q.parameters()) == []
    with torch.no_grad():  # a gradient is not asked for: it runs
        assert q(x)[0].shape == (3, 2, 8)


# ----------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_stream_equals_the_quantized_sequence(network, dtype):
    """Stream(module, dtype=...) steps the same cells over the same weights: int8 bit for
    bit (exact integer sums); bf16 within float32 rounding (its input projection sums a
    1-row tile in 4 chains, the sequence's 8-row tiles in 1)."""
    module = network.layer(7, 24, dtype=torch.float32, num_layers=2)
    q = rnnkit.quantize_dynamic(module, dtype=dtype)
    x = torch.randn(6, 3, 7)
    stream = rnnkit.Stream(module, batch_size=3, dtype=dtype)
    steps = torch.stack([stream.step(x[t]) for t in range(6)])
    with torch.no_grad():
        out, final = q(x)
    state = stream.state()
    if dtype == torch.qint8:
        assert torch.equal(steps, out)
        assert all(torch.equal(a, b) for a, b in zip(_as_tuple(state), _as_tuple(final)))
    else:
        assert (steps - out).abs().max() < 1e-5


def _as_tuple(s):
    return s if isinstance(s, tuple) else (s,)


def test_stream_errors():
    with pytest.raises(TypeError, match=r"module: torch.bfloat16 weights are made from float32 parameters"):
        rnnkit.Stream(rnnkit.GRU(3, 4).double(), dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"dtype: expected torch.qint8 or torch.bfloat16"):
        rnnkit.Stream(rnnkit.GRU(3, 4), dtype=torch.float16)


# ----------------------------------------------------------------------------- docs
def test_the_docs_examples_run():
    """Every python block of docs/quantize.md runs as written (in its own process)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "quantize.md").read_text("utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for code in blocks:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert "int8 max |diff|" in res.stdout


@pytest.mark.parametrize("case", [c for c in NETWORK_CASES if not _converts(c)], ids=lambda c: c.name)
def test_settings_without_reduced_precision_kernels_are_refused_by_name(case):
    m = case.layer(3, 8, dtype=torch.float32)
    setting = next(k for k in case.hyper if k in case.spec.not_quantized or k == "zoneout")
    with pytest.raises(NotImplementedError, match=setting):
        rnnkit.quantize_dynamic(m)
    if setting != "zoneout":  # a reduced-precision Stream applies zoneout's expected value
        with pytest.raises(NotImplementedError, match=setting):
            rnnkit.Stream(m, dtype=torch.bfloat16)
