"""The big products (input projection, dx, dW) on the core's own packed GEMM and the
per-machine choice among GEMMs: rnnkit._backend.matmul_nt equals a float64 product on
every ISA path, for awkward shapes and strided views, bit-identically for any thread
count; gemm_nt's choice is one of the measured candidates and can be forced."""
import pytest
import torch

import rnnkit
from rnnkit import _backend

PATHS = rnnkit.available_isas()
SHAPES = [(1, 1, 1), (7, 5, 3), (9, 33, 17), (130, 70, 300), (600, 129, 40)]  # (M, N, K): tails in every dimension


def _operands(M, N, K, dtype, transposed):
    g = torch.Generator().manual_seed(M * 10007 + N * 101 + K)
    a = torch.randn(K, M, generator=g, dtype=dtype).t() if transposed else torch.randn(M, K, generator=g, dtype=dtype)
    w = torch.randn(K, N, generator=g, dtype=dtype).t() if transposed else torch.randn(N, K, generator=g, dtype=dtype)
    return a, w, torch.randn(N, generator=g, dtype=dtype)


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("transposed", [False, True], ids=["rows", "strided"])
def test_matmul_nt_equals_float64_product(isa, dtype, shape, transposed):
    M, N, K = shape
    a, w, bias = _operands(M, N, K, dtype, transposed)
    expected = a.double() @ w.double().t() + bias.double()
    with rnnkit.use_isa(isa):
        got = _backend.matmul_nt(a, w, bias)
        plain = _backend.matmul_nt(a, w)
    assert got.dtype == dtype and got.shape == (M, N)
    # float32: each element a sum of K products of unit normals (error ~ sqrt(K) eps |terms|).
    tol = (1e-5 if dtype == torch.float32 else 1e-13) * (K ** 0.5 + 1) * 4
    assert (got.double() - expected).abs().max().item() <= tol
    assert (plain.double() - (expected - bias.double())).abs().max().item() <= tol


@pytest.mark.parametrize("transposed", [False, True], ids=["rows", "strided"])
def test_matmul_nt_is_the_same_for_any_thread_count(transposed):
    a, w, bias = _operands(1000, 300, 200, torch.float32, transposed)
    before = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(_backend.matmul_nt(a, w, bias))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_matmul_nt_empty_sum_is_the_bias():
    a, w, bias = torch.empty(4, 0), torch.empty(3, 0), torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(_backend.matmul_nt(a, w, bias), bias.expand(4, 3))
    assert torch.equal(_backend.matmul_nt(a, w), torch.zeros(4, 3))


def test_matmul_nt_bad_input():
    with pytest.raises(ValueError, match=r"w: expected shape \(N, 3\) to match a's columns, got \(4, 2\)"):
        _backend.matmul_nt(torch.ones(5, 3), torch.ones(4, 2))
    with pytest.raises(TypeError, match="w: expected dtype float32 like a, got float64"):
        _backend.matmul_nt(torch.ones(5, 3), torch.ones(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"bias: expected shape \(4,\), got \(3,\)"):
        _backend.matmul_nt(torch.ones(5, 3), torch.ones(4, 3), torch.ones(3))
    with pytest.raises(ValueError, match="a, w: expected 2-D tensors"):
        _backend.matmul_nt(torch.ones(5), torch.ones(4, 3))


def test_gemm_choice_follows_the_rule_and_matches(monkeypatch):
    monkeypatch.delenv("RNNKIT_GEMM", raising=False)
    monkeypatch.setattr(_backend, "_chosen", {})
    candidates = _backend._candidates()
    for form in ("rows", "transposed"):  # the first available of the rule: the same in every process
        assert _backend.gemm_backend(form) == next(n for n in _backend._RULE[form] if n in candidates)
    a, w, bias = _operands(600, 80, 50, torch.float32, True)
    expected = a.double() @ w.double().t() + bias.double()
    assert (_backend.gemm_nt(a, w, bias).double() - expected).abs().max().item() < 1e-4
    for name, fn in _backend._candidates().items():  # every candidate computes the same product
        assert (fn(a, w, bias).double() - expected).abs().max().item() < 1e-4, name


def test_a_transposed_weight_over_few_rows_counts_as_transposed():
    """dx = da W_ih (W_ih read transposed): on torch's BLAS, which reads it in place, below
    COPY_PAYS_ROWS rows of da; from there on in the rows form (oneDNN copies it first)."""
    w_t = torch.randn(64, 32).t()  # (32, 64), columns contiguous
    short, long = torch.randn(_backend.COPY_PAYS_ROWS - 1, 64), torch.randn(_backend.COPY_PAYS_ROWS, 64)
    assert _backend._form(short, w_t) == "transposed" and _backend._form(long, w_t) == "rows"
    assert _backend._form(short, w_t.contiguous()) == "rows"
    assert _backend._form(long.t().contiguous().t(), w_t) == "transposed"  # a transposed: always


def test_gemm_nt_float64_stays_on_torch_blas():
    a, w, bias = _operands(20, 10, 30, torch.float64, False)
    assert torch.equal(_backend.gemm_nt(a, w, bias), torch.addmm(bias, a, w.t()))


def test_rnnkit_gemm_forces_a_backend(monkeypatch):
    monkeypatch.setattr(_backend, "_chosen", {})
    monkeypatch.setenv("RNNKIT_GEMM", "torch")
    assert _backend.gemm_backend() == "torch" and _backend.gemm_backend("transposed") == "torch"
    monkeypatch.setattr(_backend, "_chosen", {})
    monkeypatch.setenv("RNNKIT_GEMM", "nope")
    with pytest.raises(ValueError, match="RNNKIT_GEMM: expected one of .*, got 'nope'"):
        _backend.gemm_backend()
