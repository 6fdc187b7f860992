"""Small calls: one cell step and one Stream step at B = 1, rnnkit against torch.nn.

Prints, per network and hidden size, the microseconds of one call (best of
``--repeats`` blocks of ``--steps`` calls, contenders interleaved block by block;
short blocks, many repeats, so that on a loaded machine some blocks run alone):

  * cells with autograd on (parameters require grad; forward only, as a decoder loop
    runs it), and under ``torch.inference_mode``: rnnkit's cell against torch.nn's
    (RNNCell / LSTMCell / GRUCell; for the Jordan cell torch.nn.RNNCell of the same H
    followed by a Linear H -> O, which computes the same amount; the peephole LSTM and
    the reset-before GRU against torch.nn's plain LSTMCell / GRUCell);
  * ``rnnkit.Stream.step`` with torch tensors (a new output each step, and ``out=``)
    and with NumPy arrays.

    python benchmarks/small_calls.py                 # H = 64 and 1024
    python benchmarks/small_calls.py --hidden 64 --steps 200 --repeats 30
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from torch import nn

import rnnkit
from rnnkit import networks


def best_us(fns: dict, steps: int, repeats: int) -> dict:
    """Microseconds per call of each fn, best of `repeats` blocks, contenders interleaved."""
    best = {k: float("inf") for k in fns}
    for fn in fns.values():  # warm up
        for _ in range(max(10, steps)):
            fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            best[k] = min(best[k], (time.perf_counter() - t0) / steps * 1e6)
    return best


def variants():
    """(label, network, constructor options) for every registry network and setting we time."""
    for spec in networks.NETWORKS.values():
        yield spec.name, spec, dict(spec.options)
        if spec.name == "lstm":
            yield "lstm-peephole", spec, {"peephole": True}


def make_cells(spec, options, H: int):
    """(rnnkit cell, torch reference callable's module) with the same weights where they compute the same."""
    torch.manual_seed(0)
    if spec.kernel == "jordan":
        cell = spec.cell_class(H, H, H, **options)
        peer = nn.Sequential(nn.RNNCell(H, H), nn.Linear(H, H))
        return cell, peer
    cell = spec.cell_class(H, H, **options)
    peer = getattr(nn, spec.torch_module + "Cell")(H, H) if spec.torch_module else nn.GRUCell(H, H)
    return cell, peer


def cell_rows(H: int, steps: int, repeats: int):
    rows = []
    for label, spec, options in variants():
        cell, peer = make_cells(spec, options, H)
        x = torch.randn(1, H)
        n_states = len(spec.states)
        state = tuple(torch.zeros(1, H) for _ in range(n_states))
        hx = state if n_states > 1 else state[0]
        peer_hx = (torch.zeros(1, H), torch.zeros(1, H)) if isinstance(peer, nn.LSTMCell) else torch.zeros(1, H)
        r = {"net": label, "H": H}
        # autograd on: parameters require grad (the default), forward builds the graph
        if isinstance(peer, nn.Sequential):  # Jordan: h = RNNCell(x, h), y = Linear(h)
            step = lambda: peer[1](peer[0](x, peer_hx))  # noqa: E731
        else:
            step = lambda: peer(x, peer_hx)  # noqa: E731
        r.update({f"{k} grad": v for k, v in best_us({"rnnkit": lambda: cell(x, hx), "torch": step},
                                                      steps, repeats).items()})
        with torch.inference_mode():
            r.update({f"{k} inf": v for k, v in best_us({"rnnkit": lambda: cell(x, hx), "torch": step},
                                                         steps, repeats).items()})
        rows.append(r)
    return rows


def stream_rows(H: int, steps: int, repeats: int):
    rows = []
    for label, spec, options in variants():
        module = spec.make(H, H, **{k: v for k, v in options.items() if k not in spec.options}).eval()
        stream = rnnkit.Stream(module)
        xt = torch.randn(H)
        xn = xt.numpy().copy()
        out_t = torch.empty(getattr(module, spec.state_size))
        out_n = np.empty(getattr(module, spec.state_size), dtype=np.float32)
        t = best_us({"torch": lambda: stream.step(xt), "torch out=": lambda: stream.step(xt, out=out_t),
                     "numpy": lambda: stream.step(xn), "numpy out=": lambda: stream.step(xn, out=out_n)},
                    steps, repeats)
        rows.append({"net": label, "H": H, **t})
    return rows


def table(rows, columns, ratios=()):
    head = ["net", "H"] + list(columns) + [name for name, _, _ in ratios]
    print(" | ".join(f"{h:>14}" for h in head))
    for r in rows:
        cells = [f"{r['net']:>14}", f"{r['H']:>14}"] + [f"{r[c]:>14.2f}" for c in columns]
        cells += [f"{r[b] / r[a]:>13.2f}x" for _, a, b in ratios]
        print(" | ".join(cells))
    print(flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 1024])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"rnnkit ISA {rnnkit._backend.current_isa_name()}, B = 1, load {os.getloadavg()}")
    print("# cells: microseconds per call; ratio = torch time / rnnkit time")
    for H in args.hidden:  # fewer calls per block for the large steps
        steps = max(3, args.steps // (H // 64 or 1))
        table(cell_rows(H, steps, args.repeats), ["rnnkit grad", "torch grad", "rnnkit inf", "torch inf"],
              [("grad ratio", "rnnkit grad", "torch grad"), ("inf ratio", "rnnkit inf", "torch inf")])
        print("# rnnkit.Stream.step: microseconds per step")
        table(stream_rows(H, steps, args.repeats), ["torch", "torch out=", "numpy", "numpy out="])
    print(f"# load after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
