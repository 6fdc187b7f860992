"""rnnkit in the compiler stack: custom ops (opcheck), torch.compile with no graph
break (outputs and gradients equal to eager), torch.export with dynamic T and B."""

import pytest
import torch

import rnnkit
from rnnkit import _backend, _core, _ops, _variants, networks

pytestmark = pytest.mark.skipif(not __import__("rnnkit")._ops.HAVE_OPS, reason="torch < 2.4: no torch.library register_fake / register_autograd, rnnkit runs eagerly only")


def _example(name):
    """The network with the settings of its examples that combine (an example joins when a
    layer takes it with those before; later values win): the LSTM with peepholes and a
    projection, the Elman RNN with identity, ..."""
    spec = networks.get(name)
    hyper: dict = {}
    for ex in spec.examples:
        if "layer_norm" in ex:  # its own ops (ln_lstm, ln_gru): test_compile_layer_norm_matches_eager
            continue
        if any(ex.get(k) for k in _variants.RATES):  # a training-time regulariser (SPEC section 16: random masks)
            continue
        try:
            spec.make(3, 5, **{**hyper, **ex})
        except ValueError:
            continue
        hyper.update(ex)
    return spec, hyper


def _make(name, **kwargs):
    spec, hyper = _example(name)
    torch.manual_seed(0)
    return spec.make(3, 5, **{**hyper, **kwargs})


def _op_args(kernel, T=4, B=2, I=3, H=5, lengths=False, P=0):
    """Random arguments of one custom op, in its schema's order (an LSTM projected to P
    units when P > 0)."""
    torch.manual_seed(1)
    k = _ops.KERNELS[kernel]
    O = 2
    G = _core.gate_count(_backend.ARCH_CODES[kernel.replace("ln_", "")]) * H  # ln_lstm: the LSTM's gates
    K = P or H  # the width of h
    shapes = {"x": (T, B, I), "h0": (B, K), "c0": (B, H), "y0": (B, O), "w_ih": (G, I), "w_hh": (G, K),
              "b_ih": (G,), "b_hh": (G,), "w_ch": (3 * H,), "w_hr": (P, H), "w_yh": (H, O), "w_hy": (O, H),
              "b_yh": (H,), "b_hy": (O,), "gamma_ih": (G,), "gamma_hh": (G,), "gamma_c": (H,), "beta_c": (H,)}
    args = []
    for a in k.args:
        name = a.rstrip("?")
        if name == "lengths":
            args.append(torch.tensor([T] + [max(1, T - 2)] * (B - 1)) if lengths else None)
        elif name == "w_hr" and not P:
            args.append(None)
        else:
            args.append((0.5 * torch.randn(shapes[name], dtype=torch.float64)).requires_grad_())
    config = {"act": 1, "out_act": 3, "isa": rnnkit._backend.current_isa(), "reset_after": 0}
    return args + [[config[c] for c in k.config]]


_OP_CASES = [(kernel, 0) for kernel in _ops.KERNELS] + [("lstm", 3)]  # and the projected LSTM (P = 3)


@pytest.mark.parametrize("kernel,P", _OP_CASES, ids=[f"{k}-P{p}" if p else k for k, p in _OP_CASES])
@pytest.mark.parametrize("lengths", [False, True])
def test_opcheck(kernel, P, lengths):
    """torch.library.opcheck: schema, fake kernel, autograd registration and
    gradcheck of every kernel's op (float64)."""
    op = getattr(torch.ops.rnnkit, kernel)
    torch.library.opcheck(op, tuple(_op_args(kernel, lengths=lengths, P=P)),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


@pytest.mark.parametrize("kernel,P", _OP_CASES, ids=[f"{k}-P{p}" if p else k for k, p in _OP_CASES])
def test_op_gradcheck(kernel, P):
    """The op's registered backward equals finite differences (float64)."""
    op = getattr(torch.ops.rnnkit, kernel)
    args = _op_args(kernel, T=3, B=2, H=3, P=min(P, 2))
    n_user = 1 + _ops.KERNELS[kernel].n_finals

    def f(*tensors):
        return op(*tensors, args[-1])[:n_user]

    assert torch.autograd.gradcheck(f, tuple(args[:-1]), atol=1e-6)


class _Model(torch.nn.Module):
    """A model holding a 2-layer rnnkit layer and a linear head."""

    def __init__(self, name, **kwargs):
        super().__init__()
        self.rnn = _make(name, num_layers=2, **kwargs)
        width = self.rnn.network.state_widths(self.rnn)[0]  # what the layer emits (h, P wide when projected; y)
        self.head = torch.nn.Linear(width * (2 if kwargs.get("bidirectional") else 1), 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out)


def _graph_breaks(model, x) -> int:
    torch._dynamo.reset()
    return torch._dynamo.explain(model)(x).graph_break_count


@pytest.mark.parametrize("name", networks.names())
@pytest.mark.parametrize("bidirectional", [False, True])
def test_compile_fullgraph_matches_eager(name, bidirectional):
    model = _Model(name, bidirectional=bidirectional)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager", dynamic=True)
    for T, B in ((6, 3), (9, 2)):
        x = torch.randn(T, B, 3, requires_grad=True)
        y_eager = model(x)
        g_eager = torch.autograd.grad(y_eager.square().sum(), [x, *model.parameters()])
        y = compiled(x)
        g = torch.autograd.grad(y.square().sum(), [x, *model.parameters()])
        torch.testing.assert_close(y, y_eager, rtol=1e-6, atol=1e-6)
        for a, b in zip(g, g_eager):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [rnnkit.LSTM, rnnkit.GRU], ids=["lstm", "gru"])
def test_compile_layer_norm_matches_eager(cls):
    """The layer-normalised LSTM and GRU (their own ops, rnnkit::ln_lstm / ln_gru) under
    torch.compile, with lengths."""
    torch.manual_seed(0)
    model = cls(3, 5, num_layers=2, bidirectional=True, layer_norm=True)

    def f(x, lengths):
        return model(x, lengths=lengths)[0]

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x, lengths = torch.randn(6, 3, 3, requires_grad=True), torch.tensor([6, 2, 4])
    y_eager, y = f(x, lengths), compiled(x, lengths)
    torch.testing.assert_close(y, y_eager, rtol=1e-6, atol=1e-6)
    for a, b in zip(torch.autograd.grad(y.square().sum(), [x, *model.parameters()]),
                    torch.autograd.grad(y_eager.square().sum(), [x, *model.parameters()])):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_no_graph_break_lstm():
    """The issue's case: a 2-layer LSTM compiles as one graph."""
    assert _graph_breaks(_Model("lstm"), torch.randn(7, 3, 3)) == 0


@pytest.mark.parametrize("name", networks.names())
def test_export_dynamic_shapes(name):
    model = _Model(name).eval()
    x = torch.randn(6, 3, 3)
    T, B = torch.export.Dim("T", min=2), torch.export.Dim("B", min=2)
    with torch.no_grad():
        ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: T, 1: B}})
    run = ep.module()
    for T_, B_ in ((6, 3), (11, 5)):
        x = torch.randn(T_, B_, 3)
        with torch.no_grad():
            torch.testing.assert_close(run(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", networks.names())
def test_compile_with_lengths(name):
    """lengths= compiles with no graph break; the values are checked when the kernel runs."""
    model = _make(name, num_layers=2, bidirectional=True)

    def f(x, lengths):
        return model(x, lengths=lengths)[0]

    x, lengths = torch.randn(6, 3, 3), torch.tensor([6, 2, 4])
    assert _graph_breaks(lambda x: f(x, lengths), x) == 0
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, lengths), f(x, lengths), rtol=1e-6, atol=1e-6)
    with pytest.raises((ValueError, RuntimeError), match=r"lengths: every length must be in \[1, (T=)?6\], got 7"):
        compiled(x, torch.tensor([6, 7, 4]))


@pytest.mark.parametrize("order", ["rnnkit first", "dynamo first"])
def test_allow_rnn_set_without_importing_dynamo(order):
    """Importing rnnkit does not import Dynamo (2.5 s); Dynamo's allow_rnn is set whichever
    is imported first (rnnkit's layers subclass torch.nn's RNN classes)."""
    import subprocess
    import sys

    first = "import rnnkit, sys; assert 'torch._dynamo' not in sys.modules; import torch._dynamo" \
        if order == "rnnkit first" else "import torch._dynamo; import rnnkit"
    code = f"{first}; import torch; assert torch._dynamo.config.allow_rnn is True"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
