"""Measures rnnkit's parity errors: max relative error (max|a-b| / max|b|) of outputs,
final states and all gradients (input, initial states, every parameter), against
torch.nn with the same weights and against rnnkit.reference, in float32 and float64.

    python benchmarks/parity.py            # prints a markdown table
"""
import argparse

import torch

import rnnkit
from rnnkit import reference as R


def rel(a, b):
    s = b.abs().max().item()
    return (a - b).abs().max().item() / (s if s > 0 else 1.0)


def worst(fast, ref, leaves, ref_leaves=None):
    """(max output error, max gradient error) of fast() against ref() for a random loss."""
    of, orf = fast(), ref()
    flat_f, flat_r = _flat(of), _flat(orf)
    g = torch.Generator().manual_seed(0)
    w = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in flat_r]
    gf = torch.autograd.grad(sum((o * x).sum() for o, x in zip(flat_f, w)), leaves)
    gr = torch.autograd.grad(sum((o * x).sum() for o, x in zip(flat_r, w)), ref_leaves or leaves)
    return max(rel(a, b) for a, b in zip(flat_f, flat_r)), max(rel(a, b) for a, b in zip(gf, gr))


def _flat(res):
    out = []
    for r in res:
        out.extend(r if isinstance(r, tuple) else [r])
    return out


def torch_case(name, dtype, T, B, I, H):
    tc, rc, kw = {"RNN tanh": (torch.nn.RNN, rnnkit.RNN, {}), "RNN relu": (torch.nn.RNN, rnnkit.RNN, {"nonlinearity": "relu"}),
                  "LSTM": (torch.nn.LSTM, rnnkit.LSTM, {}), "GRU": (torch.nn.GRU, rnnkit.GRU, {}),
                  "LSTM proj_size=H/2": (torch.nn.LSTM, rnnkit.LSTM, {"proj_size": H // 2})}[name]
    t = tc(I, H, num_layers=2, bidirectional=True, **kw).to(dtype)
    r = rc(I, H, num_layers=2, bidirectional=True, **kw).to(dtype)
    r.load_state_dict(t.state_dict())
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h = torch.randn(4, B, kw.get("proj_size") or H, dtype=dtype, requires_grad=True)
    hx = (h, torch.randn(4, B, H, dtype=dtype, requires_grad=True)) if name.startswith("LSTM") else h
    states = list(hx) if isinstance(hx, tuple) else [hx]
    # the same input and states; each module's own (equal) parameters
    return worst(lambda: r(x, hx), lambda: t(x, hx), [x] + states + list(r.parameters()),
                 [x] + states + list(t.parameters()))


def reference_case(name, dtype, T, B, I, H, O=7):
    lengths = torch.randint(1, T + 1, (B,))
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    if name == "Jordan":
        ps = [torch.randn(s, dtype=dtype, requires_grad=True) for s in [(H, I), (H, O), (O, H), (H,), (H,), (O,)]]
        y0 = torch.randn(B, O, dtype=dtype, requires_grad=True)
        kw = dict(output_nonlinearity="sigmoid", lengths=lengths)
        return worst(lambda: rnnkit.functional.jordan(x, y0, *ps, **kw), lambda: R.jordan(x, y0, *ps, **kw),
                     [x, y0] + ps)
    ps = [torch.randn(s, dtype=dtype, requires_grad=True) * 0.3 for s in [(3 * H, I), (3 * H, H), (3 * H,), (3 * H,)]]
    ps = [p.detach().requires_grad_() for p in ps]
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    return worst(lambda: rnnkit.functional.gru(x, h0, *ps, reset_after=False, lengths=lengths),
                 lambda: R.gru(x, h0, *ps, reset_after=False, lengths=lengths), [x, h0] + ps)


def layer_norm_case(name, dtype, T, B, I, H):
    """A layer-normalised LSTM / GRU (SPEC section 15), gains and bias moved off 1 and 0, with
    random lengths: the native layer against the reference with the same parameters."""
    lengths = torch.randint(1, T + 1, (B,))
    m = {"LSTM layer_norm": rnnkit.LSTM, "GRU layer_norm": rnnkit.GRU}[name](I, H, layer_norm=True).to(dtype)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.startswith("ln_"):
                p.add_(0.3 * torch.randn_like(p))
    spec = m.network
    params = [getattr(m, f"{r}_l0", None) for r in spec.param_roles]
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    init = [None] * len(spec.states)
    return worst(lambda: spec.functional(x, *init, *params, **spec.hyper_of(m), lengths=lengths),
                 lambda: spec.reference(x, *init, *params, **spec.hyper_of(m), lengths=lengths),
                 [x] + list(m.parameters()))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=50)
    p.add_argument("--B", type=int, default=8)
    p.add_argument("--I", type=int, default=32)
    p.add_argument("--H", type=int, default=64)
    a = p.parse_args()
    torch.manual_seed(0)
    print(f"T={a.T} B={a.B} I={a.I} H={a.H}, 2 layers bidirectional with initial states (torch.nn cases), "
          f"random lengths (reference cases); ISA {rnnkit.current_isa_name()}\n")
    print("| network | oracle | float32 outputs | float32 gradients | float64 outputs | float64 gradients |")
    print("|---|---|---|---|---|---|")
    for name in ["RNN tanh", "RNN relu", "LSTM", "GRU", "LSTM proj_size=H/2"]:
        r32, r64 = torch_case(name, torch.float32, a.T, a.B, a.I, a.H), torch_case(name, torch.float64, a.T, a.B, a.I, a.H)
        print(f"| {name} | torch.nn | {r32[0]:.1e} | {r32[1]:.1e} | {r64[0]:.1e} | {r64[1]:.1e} |")
    for name in ["GRU reset-before", "Jordan"]:
        r32 = reference_case(name, torch.float32, a.T, a.B, a.I, a.H)
        r64 = reference_case(name, torch.float64, a.T, a.B, a.I, a.H)
        print(f"| {name} | rnnkit.reference | {r32[0]:.1e} | {r32[1]:.1e} | {r64[0]:.1e} | {r64[1]:.1e} |")
    for name in ["LSTM layer_norm", "GRU layer_norm"]:
        r32 = layer_norm_case(name, torch.float32, a.T, a.B, a.I, a.H)
        r64 = layer_norm_case(name, torch.float64, a.T, a.B, a.I, a.H)
        print(f"| {name} | rnnkit.reference | {r32[0]:.1e} | {r32[1]:.1e} | {r64[0]:.1e} | {r64[1]:.1e} |")


if __name__ == "__main__":
    main()
