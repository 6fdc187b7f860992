"""Why the LSTM remembers: the pictures and numbers of the README section, measured.

Writes three PNGs into docs/img/ and the section's text, with every number measured
in this run, into docs/why_lstm_remembers.md:

1. gradflow_fresh.png: ||dL/dh_k|| against the lag T - k for freshly initialised tanh
   RNN, GRU and LSTM (T = 200), exactly what `rnnkit gradflow --arch rnn,gru,lstm
   --length 200` draws (same defaults, same seed, same numbers).
2. gradflow_gate_bias.png: the same for an LSTM whose forget-gate bias is raised
   (f -> 1) and a GRU whose update-gate bias is raised (z -> 1, keep h).
3. forget_gate_memory.png: a saturated forget gate carrying the first input across
   200 steps: the forget gate's values, and how much two sequences that differ only
   in their first input still differ in the state at every later step.

Run from the repository root (about a minute on two cores)::

    python examples/why_lstm_remembers.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.introspect import gradflow  # noqa: E402
from rnnkit.introspect.saturation import gate_saturation  # noqa: E402

# Defaults in one place (those of `rnnkit gradflow`).
T, B, I, H, SEED = 200, 8, 16, 64, 0
BIASES = (1.0, 3.0, 5.0)  # added to the forget / update gate bias
MEMORY_BIAS = 5.0         # the LSTM of figure 3
LOST = -14.0              # log10 relative difference at which only float64 rounding is left
DPI = 100


def fresh(arch: str) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return gradflow.fresh_model(arch, I, H)


def with_gate_bias(arch: str, bias: float) -> torch.nn.Module:
    """A fresh model with ``bias`` added to the LSTM forget gate (rows H..2H) or the GRU
    update gate (rows H..2H; z -> 1 keeps the old state in torch's form)."""
    model = fresh(arch)
    with torch.no_grad():
        model.bias_ih_l0[H:2 * H] += bias
    return model


def inputs(generator_seed: int = SEED) -> torch.Tensor:
    return torch.randn(T, B, I, generator=torch.Generator().manual_seed(generator_seed), dtype=torch.float64)


def figure_fresh(img: Path):
    # what `rnnkit gradflow --arch rnn,gru,lstm --length 200` computes, prints and draws
    flows = gradflow.compare(["rnn", "gru", "lstm"], length=T, hidden=H, input_size=I, batch=B, seed=SEED)
    table = gradflow.format_table(flows) + "\n" + gradflow.table_note()
    gradflow.plot_gradient_flow(flows, img / "gradflow_fresh.png", title=f"Gradient flow back through time (T = {T})")
    print(table)
    return flows, table


def figure_gate_bias(img: Path, fresh_flows):
    x = inputs()
    flows = [f for f in fresh_flows if f.arch == "lstm"]
    for b in BIASES:
        flows.append(gradflow.gradient_flow(with_gate_bias("lstm", b), x, jacobian=False, label=f"lstm b_f+{b:g}"))
    flows.append(gradflow.gradient_flow(with_gate_bias("gru", MEMORY_BIAS), x, jacobian=False,
                                        label=f"gru b_z+{MEMORY_BIAS:g}"))
    gradflow.plot_gradient_flow(flows, img / "gradflow_gate_bias.png",
                                title=f"Raising the forget (LSTM) / update (GRU) gate bias (T = {T})")
    text = gradflow.format_table(flows)
    print(text)
    return flows, text


def figure_memory(img: Path):
    """Two batches of sequences identical except for the first input: how long does the
    difference survive in the state?"""
    x_plus = inputs(SEED + 1)
    x_minus = x_plus.clone()
    x_minus[0] = -x_plus[0]
    models = {"tanh RNN (h)": fresh("rnn"), "GRU (h)": fresh("gru"), "LSTM (c)": fresh("lstm"),
              f"LSTM b_f+{MEMORY_BIAS:g} (c)": with_gate_bias("lstm", MEMORY_BIAS)}
    curves, forget = {}, {}
    with torch.no_grad():
        for name, model in models.items():
            states = []
            for x in (x_plus, x_minus):
                out, _, inside = model.forward_with_internals(x)
                states.append(inside[0]["c"] if "LSTM" in name else out)  # (T, B, H)
                if "LSTM" in name:
                    forget[name] = inside[0]["f"][:, 0]  # (T, H): the first sequence
            diff = (states[0] - states[1]).norm(dim=-1) / states[0].norm(dim=-1).clamp_min(1e-300)  # (T, B)
            curves[name] = diff.log10().mean(dim=1)  # geometric mean over the batch
    biased = f"LSTM b_f+{MEMORY_BIAS:g} (c)"
    saturation = gate_saturation(models[biased], [x_plus, x_minus])
    fresh_saturation = gate_saturation(models["LSTM (c)"], [x_plus, x_minus])

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), dpi=DPI, gridspec_kw={"height_ratios": [1, 1, 1.5]})
    for ax, name, sat in ((axes[0], "LSTM (c)", fresh_saturation), (axes[1], biased, saturation)):
        im = ax.imshow(forget[name][:, :32].t().numpy(), aspect="auto", interpolation="nearest", cmap="Greens",
                       vmin=0, vmax=1)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
        what = "a fresh LSTM" if name == "LSTM (c)" else f"the LSTM with forget bias +{MEMORY_BIAS:g}"
        ax.set_title(f"forget gate f_t of {what} (32 of {H} units, one sequence): "
                     f"{100 * sat.fraction('f', 'right'):.1f}% of values above 0.9", fontsize=10)
        ax.set_ylabel("unit")
    ax_d = axes[2]
    for name, curve in curves.items():
        ok = torch.isfinite(curve)
        ax_d.plot(torch.arange(T)[ok].numpy(), curve[ok].numpy(), label=name, linewidth=1.6)
    ax_d.axhspan(-17, LOST, color="0.9", zorder=0)
    ax_d.text(T - 3, LOST - 0.7, "float64 rounding: the first input is lost", ha="right", fontsize=8, color="0.3")
    ax_d.set_ylim(-17, 1)
    ax_d.set_xlabel("step t")
    ax_d.set_ylabel("log10 ||s_t(+x_0) - s_t(-x_0)|| / ||s_t||")
    ax_d.set_title("how much of the first input is still in the state at step t", fontsize=10)
    ax_d.grid(True, alpha=0.3)
    ax_d.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(img / "forget_gate_memory.png", dpi=DPI)
    plt.close(fig)
    print(saturation.table())
    at = {}
    for name, c in curves.items():  # first step where the difference is rounding noise, or its value at T
        lost = (~torch.isfinite(c)) | (c < LOST)
        at[name] = (int(lost.nonzero()[0]), None) if lost.any() else (None, float(c[T - 1]))
    print(saturation.table())
    return at, saturation, fresh_saturation


def _row(flows, label, key="dh"):
    for f in flows:
        if (f.label or f.arch) == label:
            for r in f.rows():
                if r["state"] == key[1:]:
                    return r
    raise KeyError(label)


def write_doc(doc: Path, fresh_flows, fresh_table, bias_flows, bias_table, memory):
    at, saturation, fresh_saturation = memory
    rnn, gru, lstm = (_row(fresh_flows, f"{a} (fresh)") for a in ("rnn", "gru", "lstm"))
    lstm_c = _row(fresh_flows, "lstm (fresh)", "dc")
    big = _row(bias_flows, f"lstm b_f+{MEMORY_BIAS:g}", "dc")
    gru_big = _row(bias_flows, f"gru b_z+{MEMORY_BIAS:g}")

    def per100(r):
        return f"10^{100 * r['decay']:.1f}"

    lines = [
        "## Why the LSTM remembers",
        "",
        "A recurrent network learns from the gradient that reaches step k from a loss at step T.",
        "By the chain rule (SPEC section 6) it is a product of one-step Jacobians,",
        "",
        "    dL/dh_k = dL/dh_T · Π_{j=k+1..T} ∂h_j/∂h_{j-1},      ∂h_j/∂h_{j-1} = diag(1 - h_j²) W_hh  (tanh RNN)",
        "",
        "so it shrinks or grows geometrically with the lag T - k. rnnkit measures it: the native",
        "BPTT records ||dL/dh_k|| for every step in one backward pass",
        "(`rnnkit.introspect.gradient_flow`, `rnnkit gradflow`).",
        "",
        f"![gradient flow of fresh models](docs/img/gradflow_fresh.png)",
        "",
        f"Freshly initialised models (torch.nn's initialisation, hidden size {H}, input size {I}, "
        f"{B} sequences of",
        f"T = {T} standard-normal inputs, loss = sum of the last step's output), as printed by "
        f"`rnnkit gradflow --arch rnn,gru,lstm --length {T}`:",
        "",
        "| model | average log10 decay of ‖dL/dh_k‖ per step | factor per step | over 100 steps | verdict |",
        "|---|---|---|---|---|",
    ]
    for name, r in (("tanh RNN", rnn), ("GRU", gru), ("LSTM (h)", lstm), ("LSTM (cell c)", lstm_c)):
        lines.append(f"| {name} | {r['decay']:+.3f} | {r['factor_per_step']:.3f} | {per100(r)} | {r['verdict']} |")
    lines += [
        "",
        "All three vanish at initialisation, the tanh RNN fastest. The norm of one step's Jacobian is",
        f"only an upper bound: its average log10 is {rnn['jacobian_log10']:+.3f} for the tanh RNN "
        "(a norm near 1), yet the",
        f"product over {T} steps shrinks by the factor above, since what one step stretches the next",
        "need not. Gating alone does not make an LSTM remember either: a fresh forget gate is",
        "σ(≈0) ≈ 0.5, and the cell path ∂c_t/∂c_{t-1} = diag(f_t) multiplies the gradient by it every",
        f"step (measured: ×{lstm_c['factor_per_step']:.3f} per step for the cell).",
        "",
        "What makes the difference is that this path is *additive* and controlled by a gate the",
        "network can open: with f_t ≈ 1 the cell is copied forward unchanged and so is its gradient.",
        "Raising the forget-gate bias shows it (the GRU's update gate does the same job, z → 1",
        "keeps h):",
        "",
        "![gradient flow with raised gate biases](docs/img/gradflow_gate_bias.png)",
        "",
        "| model | state | average log10 decay per step | over 100 steps | verdict |",
        "|---|---|---|---|---|",
    ]
    for f in bias_flows:
        for r in f.rows():
            lines.append(f"| {r['model']} | {r['state']} | {r['decay']:+.4f} | {per100(r)} | {r['verdict']} |")
    lines += [
        "",
        f"With the forget-gate bias raised by {MEMORY_BIAS:g}, the cell gradient changes by a factor "
        f"{per100(big)} over 100 steps",
        f"instead of {per100(lstm_c)}; the GRU with its update-gate bias raised by {MEMORY_BIAS:g}, by "
        f"{per100(gru_big)}.",
        "",
        "The same gate carries *information* forward. Below, two batches of sequences differ only in",
        "their first input (x_0 against -x_0); the curves show how much the states at step t still",
        "differ. The forget gate of the biased LSTM sits near 1 "
        f"({100 * saturation.fraction('f', 'right'):.1f}% of its values above 0.9, against "
        f"{100 * fresh_saturation.fraction('f', 'right'):.1f}% for the fresh LSTM;",
        "`rnnkit.introspect.gate_saturation`), and its cell still holds the first input at step "
        f"{T}, while the",
        "other states keep nothing of it beyond float64 rounding after a few dozen steps:",
        "",
        "![a saturated forget gate carrying the first input](docs/img/forget_gate_memory.png)",
        "",
        f"| model | what is left of x_0 in the state |",
        "|---|---|",
    ]
    for name, (lost, value) in at.items():
        lines.append(f"| {name} | lost (relative difference below 1e{LOST:.0f}) by step {lost} |" if lost is not None
                     else f"| {name} | relative difference 10^{value:.2f} at step {T} |")
    lines += [
        "",
        "In a trained network it is training that sets these gates; Karpathy, Johnson and Fei-Fei (2015)",
        "found LSTM cells of character models that track quotes, brackets and line length.",
        "`rnnkit visualize CHECKPOINT --text ...` colours a text by any cell or gate of your own",
        "model, character by character.",
        "",
        "Reproduce: `python examples/why_lstm_remembers.py` (writes these images and this text).",
        "",
        "<details><summary>The full gradflow table</summary>",
        "",
        "```",
        fresh_table.rstrip(),
        "```",
        "",
        "```",
        bias_table.rstrip(),
        "```",
        "</details>",
        "",
    ]
    doc.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", default="docs", help="folder for why_lstm_remembers.md and img/ (default docs)")
    args = parser.parse_args()
    docs = Path(args.docs)
    img = docs / "img"
    img.mkdir(parents=True, exist_ok=True)
    fresh_flows, fresh_table = figure_fresh(img)
    bias_flows, bias_table = figure_gate_bias(img, fresh_flows)
    memory = figure_memory(img)
    write_doc(docs / "why_lstm_remembers.md", fresh_flows, fresh_table, bias_flows, bias_table, memory)
    for p in sorted(img.glob("*.png")):
        print(f"{p}: {p.stat().st_size // 1024} KB")
    print(f"wrote {docs / 'why_lstm_remembers.md'}")


if __name__ == "__main__":
    main()
