"""``rnnkit explain``: the equations, step by step, with numbers.

Three parts, every number computed by rnnkit's native kernels (through
``forward_with_internals``) and cross-checked against the hand computation shown:

1. the seeds' worked example (SPEC section 7): an Elman RNN with every weight 1,
   inputs [1,1], [1,1], [2,2], and the same inputs reversed;
2. one LSTM step (SPEC section 3) with every gate's pre-activation and value;
3. one GRU step (SPEC section 4), torch's "reset after" form or the seeds' form.

``explain_text()`` returns the walk-through as a string; ``rnnkit explain`` prints it.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from .. import GRU, LSTM, RNN
from ..errors import IntrospectError

__all__ = ["explain_text", "worked_example", "lstm_step", "gru_step", "PARTS"]

PARTS = ("rnn", "lstm", "gru")

# One LSTM / GRU step: input size 2, hidden size 2, small readable weights.
X = [1.0, 0.5]
H_PREV = [0.2, -0.1]
C_PREV = [0.5, -0.4]
LSTM_W_IH = [[0.5, -0.2], [0.1, 0.4],    # i
             [0.3, 0.3], [-0.2, 0.6],    # f
             [0.8, -0.5], [0.2, 0.7],    # g
             [0.4, 0.1], [-0.3, 0.5]]    # o
LSTM_W_HH = [[0.2, 0.1], [-0.1, 0.3],
             [0.1, -0.2], [0.4, 0.1],
             [-0.3, 0.2], [0.5, -0.1],
             [0.2, 0.2], [0.1, -0.4]]
LSTM_B = [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # forget-gate bias 1 (Jozefowicz et al. 2015)
GRU_W_IH = [[0.5, -0.2], [0.1, 0.4],     # r
            [0.3, 0.3], [-0.2, 0.6],     # z
            [0.8, -0.5], [0.2, 0.7]]     # n
GRU_W_HH = [[0.2, 0.1], [-0.1, 0.3],
            [0.1, -0.2], [0.4, 0.1],
            [-0.3, 0.2], [0.5, -0.1]]
GRU_B_HH = [0.0, 0.0, 0.0, 0.0, 0.1, -0.1]


class _Fmt:
    def __init__(self, digits: int):
        self.digits = digits

    def num(self, v: float) -> str:
        """Fixed-point with trailing zeros dropped: 0.5, 0.606, 12, -0.1."""
        text = f"{float(v):.{self.digits}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text

    def product(self, w: float, v: float) -> str:
        v_text = self.num(v)
        return f"{self.num(w)}*{'(' + v_text + ')' if v_text.startswith('-') else v_text}"

    @staticmethod
    def total(terms: List[str]) -> str:
        """Terms joined by + and -: ['0.5*1', '-0.2*0.5'] -> '0.5*1 - 0.2*0.5'."""
        out = terms[0]
        for t in terms[1:]:
            out += f" - {t[1:]}" if t.startswith("-") else f" + {t}"
        return out

    def vec(self, t) -> str:
        return "[" + ", ".join(self.num(v) for v in torch.as_tensor(t).flatten().tolist()) + "]"

    def mat(self, t) -> str:
        return "[" + ", ".join(self.vec(row) for row in torch.as_tensor(t)) + "]"


def _tensor(values) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _check(name: str, shown: Tensor, native: Tensor) -> None:
    if not torch.allclose(shown, native, rtol=0, atol=1e-12):
        raise AssertionError(f"explain: the hand computation of {name} {shown.tolist()} differs from rnnkit's "
                             f"native kernel {native.tolist()}")


# ----------------------------------------------------------------------------- 1. Elman
def _elman_run(inputs: List[List[float]]):
    """The worked example on rnnkit.RNN: (x (T, 2), U x (T, 2), W h_prev (T, 2), h (T, 2), o (T, 2))."""
    rnn = RNN(2, 2, nonlinearity="identity", bias=False).double()
    with torch.no_grad():
        rnn.weight_ih_l0.fill_(1.0)  # U
        rnn.weight_hh_l0.fill_(1.0)  # W
    V = torch.ones(2, 2, dtype=torch.float64)
    x = _tensor(inputs).unsqueeze(1)  # (T, 1, 2)
    with torch.no_grad():
        out, _, inside = rnn.forward_with_internals(x)
    h = out[:, 0]  # (T, 2)
    h_prev = torch.cat([torch.zeros(1, 2, dtype=torch.float64), h[:-1]])
    ux = x[:, 0] @ rnn.weight_ih_l0.detach().t()
    wh = h_prev @ rnn.weight_hh_l0.detach().t()
    _check("a_t = U x_t + W h_{t-1}", ux + wh, inside[0]["a"][:, 0])
    return x[:, 0], ux, wh, h, h @ V.t()


def worked_example(digits: int = 3) -> str:
    f = _Fmt(digits)
    lines = [
        "1. The worked example (SPEC section 7, seed 001): an Elman RNN by hand",
        "",
        "   input size 2, hidden size 2, output size 2; every weight 1, no bias,",
        "   identity activations, h_0 = [0, 0]:",
        "",
        "       h_t = U x_t + W h_{t-1}          U = W = [[1, 1], [1, 1]]",
        "       o_t = V h_t                      V = [[1, 1], [1, 1]]",
        "",
    ]
    forward = [[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]]
    results = []
    for title, inputs in (("inputs in order", forward), ("the same inputs reversed", forward[::-1])):
        x, ux, wh, h, o = _elman_run(inputs)
        results.append(o)
        lines.append(f"   {title}:")
        lines.append(f"   {'t':>3}  {'x_t':<10}{'U x_t':<10}{'W h_{t-1}':<12}{'h_t':<12}o_t = V h_t")
        for t in range(x.shape[0]):
            lines.append(f"   {t + 1:>3}  {f.vec(x[t]):<10}{f.vec(ux[t]):<10}{f.vec(wh[t]):<12}{f.vec(h[t]):<12}"
                         f"{f.vec(o[t])}")
        lines.append("")
    same = torch.equal(results[0], results[1])
    lines.append("   Outputs " + ("are the same" if same else "differ") + " when the order changes: "
                 + f"{', '.join(f.vec(r) for r in results[0])} against "
                 + f"{', '.join(f.vec(r) for r in results[1])}.")
    lines.append("   The hidden state carries the past into every step, so the network is order-sensitive.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- 2. LSTM
def _gate_lines(f: _Fmt, name: str, act: str, W_ih, W_hh, b, x, h, a, value, meaning: str) -> List[str]:
    """The equation of one gate, its weights, and every unit's arithmetic."""
    lines = [f"   {name} = {act}(W_i{name} x + W_h{name} h_prev + b_{name})      {meaning}",
             f"     W_i{name} = {f.mat(W_ih)},  W_h{name} = {f.mat(W_hh)},  b_{name} = {f.vec(b)}"]
    for j in range(a.numel()):
        terms = [f.product(W_ih[j, k], x[k]) for k in range(x.numel())]
        terms += [f.product(W_hh[j, k], h[k]) for k in range(h.numel())]
        if float(b[j]) != 0.0:
            terms.append(f.num(b[j]))
        lines.append(f"     unit {j}: {act}({f.total(terms)}) = {act}({f.num(a[j])}) = {f.num(value[j])}")
    return lines


def lstm_step(digits: int = 3) -> str:
    f = _Fmt(digits)
    lstm = LSTM(2, 2).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(_tensor(LSTM_W_IH))
        lstm.weight_hh_l0.copy_(_tensor(LSTM_W_HH))
        lstm.bias_ih_l0.copy_(_tensor(LSTM_B))
        lstm.bias_hh_l0.zero_()
        x, h, c = _tensor(X), _tensor(H_PREV), _tensor(C_PREV)
        out, (h_n, c_n), inside = lstm.forward_with_internals(x.view(1, 1, 2), (h.view(1, 1, 2), c.view(1, 1, 2)))
    gates = {k: v[0, 0] for k, v in inside[0].items()}  # native values, (H,) each
    W_ih, W_hh, b = lstm.weight_ih_l0.detach(), lstm.weight_hh_l0.detach(), lstm.bias_ih_l0.detach()
    a = W_ih @ x + W_hh @ h + b  # (4H,) stacked i, f, g, o
    lines = [
        "2. One LSTM step (SPEC section 3)",
        "",
        f"   x = {f.vec(x)},  h_prev = {f.vec(h)},  c_prev = {f.vec(c)}   (input size 2, hidden size 2;",
        "   weight rows stacked i, f, g, o as in torch.nn.LSTM; b = b_ih + b_hh, forget-gate bias 1)",
        "",
    ]
    meanings = {"i": "input gate: how much of the candidate to write",
                "f": "forget gate: how much of the old cell to keep",
                "g": "candidate cell (C~ in the seeds)",
                "o": "output gate: how much of the cell to show"}
    for k, name in enumerate("ifgo"):
        act = "tanh" if name == "g" else "σ"
        a_k = a[2 * k:2 * k + 2]
        value = torch.tanh(a_k) if name == "g" else torch.sigmoid(a_k)
        _check(name, value, gates[name])
        lines += _gate_lines(f, name, act, W_ih[2 * k:2 * k + 2], W_hh[2 * k:2 * k + 2], b[2 * k:2 * k + 2],
                             x, h, a_k, value, meanings[name])
    i, fg, g, o = (gates[n] for n in "ifgo")
    c_new = fg * c + i * g
    h_new = o * torch.tanh(c_new)
    _check("c", c_new, gates["c"])
    _check("h", h_new, out[0, 0])
    lines.append("   c = f ⊙ c_prev + i ⊙ g                 the additive cell path: dc/dc_prev = f")
    for j in range(2):
        lines.append(f"     unit {j}: {f.total([f.product(fg[j], c[j]), f.product(i[j], g[j])])} = {f.num(c_new[j])}")
    lines.append("   h = o ⊙ tanh(c)")
    for j in range(2):
        lines.append(f"     unit {j}: {f.num(o[j])}*tanh({f.num(c_new[j])}) = "
                     f"{f.product(o[j], torch.tanh(c_new[j]))} = {f.num(h_new[j])}")
    lines.append(f"   rnnkit.LSTM's native kernel gives i {f.vec(i)}, f {f.vec(fg)}, g {f.vec(g)}, o {f.vec(o)},")
    lines.append(f"   c {f.vec(c_n[0, 0])}, h {f.vec(h_n[0, 0])}: the same numbers.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- 3. GRU
def gru_step(digits: int = 3, form: str = "after") -> str:
    if form not in ("after", "before"):
        raise IntrospectError(f"--gru-form: expected 'after' (torch.nn.GRU) or 'before' (the seeds), got {form!r}")
    reset_after = form == "after"
    f = _Fmt(digits)
    gru = GRU(2, 2, reset_after=reset_after).double()
    with torch.no_grad():
        gru.weight_ih_l0.copy_(_tensor(GRU_W_IH))
        gru.weight_hh_l0.copy_(_tensor(GRU_W_HH))
        gru.bias_ih_l0.zero_()
        gru.bias_hh_l0.copy_(_tensor(GRU_B_HH))
        x, h = _tensor(X), _tensor(H_PREV)
        out, h_n, inside = gru.forward_with_internals(x.view(1, 1, 2), h.view(1, 1, 2))
    gates = {k: v[0, 0] for k, v in inside[0].items()}
    W_ih, W_hh, b_hh = gru.weight_ih_l0.detach(), gru.weight_hh_l0.detach(), gru.bias_hh_l0.detach()
    title = ("torch.nn.GRU's 'reset after' form, rnnkit's default" if reset_after
             else "the seeds' form (Cho et al. 2014), GRU(reset_after=False)")
    lines = [
        f"3. One GRU step (SPEC section 4), {title}",
        "",
        f"   x = {f.vec(x)},  h_prev = {f.vec(h)}   (input size 2, hidden size 2; rows stacked r, z, n; b_ih = 0)",
        "",
    ]
    meanings = {"r": "reset gate: how much of h_prev the candidate sees",
                "z": "update gate: " + ("how much of h_prev to keep" if reset_after else "how much of the candidate to take")}
    for k, name in enumerate("rz"):
        rows = slice(2 * k, 2 * k + 2)
        a_k = W_ih[rows] @ x + W_hh[rows] @ h + b_hh[rows]
        value = torch.sigmoid(a_k)
        _check(name, value, gates[name])
        lines += _gate_lines(f, name, "σ", W_ih[rows], W_hh[rows], b_hh[rows], x, h, a_k, value, meanings[name])
    r, z, n = gates["r"], gates["z"], gates["n"]
    Wn_x = W_ih[4:] @ x
    if reset_after:
        hn = W_hh[4:] @ h + b_hh[4:]
        n_calc = torch.tanh(Wn_x + r * hn)
        lines.append("   n = tanh(W_in x + r ⊙ (W_hn h_prev + b_hn))      candidate state")
        for j in range(2):
            lines.append(f"     unit {j}: tanh({f.total([f.num(Wn_x[j]), f.product(r[j], hn[j])])}) = {f.num(n_calc[j])}")
        h_new = (1 - z) * n + z * h
        lines.append("   h = (1 - z) ⊙ n + z ⊙ h_prev")
    else:
        rh = r * h
        n_calc = torch.tanh(Wn_x + W_hh[4:] @ rh + b_hh[4:])
        lines.append("   n = tanh(W_in x + W_hn (r ⊙ h_prev) + b_hn)      candidate state")
        for j in range(2):
            terms = [f.num(Wn_x[j]), f.num((W_hh[4:] @ rh)[j]), f.num(b_hh[4 + j])]
            lines.append(f"     unit {j}: tanh({f.total(terms)}) = {f.num(n_calc[j])}")
        h_new = (1 - z) * h + z * n
        lines.append("   h = (1 - z) ⊙ h_prev + z ⊙ n")
    _check("n", n_calc, n)
    _check("h", h_new, out[0, 0])
    for j in range(2):
        kept, taken = (n, h) if reset_after else (h, n)
        terms = [f"(1 - {f.num(z[j])})*{f.product(1, kept[j])[2:]}", f.product(z[j], taken[j])]
        lines.append(f"     unit {j}: {f.total(terms)} = {f.num(h_new[j])}")
    lines.append(f"   rnnkit.GRU's native kernel gives r {f.vec(r)}, z {f.vec(z)}, n {f.vec(n)}, h {f.vec(h_n[0, 0])}:")
    lines.append("   the same numbers." + (" (The seeds' form: rnnkit explain --gru-form before.)" if reset_after else ""))
    return "\n".join(lines)


def explain_text(parts: Sequence[str] = PARTS, digits: int = 3, gru_form: str = "after") -> str:
    """The walk-through as text; ``parts`` from ('rnn', 'lstm', 'gru')."""
    for p in parts:
        if p not in PARTS:
            raise IntrospectError(f"--only: unknown part {p!r}; expected one of {', '.join(PARTS)}")
    if not 0 <= digits <= 12:
        raise IntrospectError(f"--digits: expected 0..12, got {digits}")
    blocks = {"rnn": lambda: worked_example(digits), "lstm": lambda: lstm_step(digits),
              "gru": lambda: gru_step(digits, gru_form)}
    return "\n\n".join(blocks[p]() for p in PARTS if p in parts) + "\n"
