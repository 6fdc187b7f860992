"""``rnnkit visualize``: what a character language model's units do, character by character.

As in Karpathy, Johnson and Fei-Fei (2015), each character of a text is coloured by
the value one unit takes after reading it: an LSTM's cell state c or hidden state h,
or one of its gates i, f, o, g (GRU: h, z, r, n; Elman: h and the pre-activation a).
The result is one self-contained HTML page (inline CSS and script, no external
resources) with a selector for the quantity and the unit and the exact value on hover,
plus one PNG heatmap per quantity (units x characters).

Colours: gates (values in [0, 1]) from white (0) to green (1); signed quantities from
red (negative) through white to blue (positive), with intensity tanh(|v|) (so an
unbounded cell state saturates smoothly).

Values come from the native forward pass (``forward_with_internals``), one pass over
the whole text.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import networks
from ..errors import IntrospectError
from ._recording import arch_of, recording
from .jacobian import layer_states

__all__ = ["TRACKS", "HEATMAP_SIZE_PX", "text_activations", "activation_page", "write_heatmaps",
           "visualize_text", "load_language_model"]

def _tracks(spec) -> Dict[str, Tuple[str, str]]:
    """Menu order: the recorded states (the LSTM's cell state c), the layer's output state
    (h; y for Jordan), then the other internals: name -> (description, kind)."""
    recorded_states = tuple(n for n in spec.internals if n in spec.states)
    names = recorded_states + (spec.states[0],) + tuple(n for n in spec.internals if n not in spec.states)
    return {n: (spec.descriptions[n], "gate" if n in spec.unit_interval else "signed") for n in names}


# Quantities shown per network (rnnkit.networks), in menu order: name -> (description, kind).
TRACKS: Dict[str, Dict[str, Tuple[str, str]]] = {name: _tracks(spec) for name, spec in networks.NETWORKS.items()}
HEATMAP_SIZE_PX = (1200, 400)  # width, height of every heatmap PNG
_DPI = 100


# ----------------------------------------------------------------------------- values
def _recurrent_of(model: nn.Module, layer: int) -> Tuple[nn.Module, int]:
    """(recurrent module, internals index) of ``layer`` in a language model."""
    rnn = getattr(model, "rnn", model)
    try:
        arch_of(rnn)
    except TypeError:
        raise IntrospectError(f"model: its recurrent layer is a {type(rnn).__name__}, not an rnnkit module; "
                           "load the checkpoint with backend='rnnkit'") from None
    if not 0 <= layer < rnn.num_layers:
        raise IntrospectError(f"--layer: expected 0..{rnn.num_layers - 1}, got {layer}")
    return rnn, layer * (2 if rnn.bidirectional else 1)


@torch.no_grad()
def text_activations(model: nn.Module, text: str, *, layer: int = 0) -> Dict[str, Tensor]:
    """Per-character values of every unit for a character language model.

    Args:
      model: a language model with ``encode(text) -> ids`` whose forward takes ids
        (T, B) and whose ``rnn`` is an rnnkit recurrent layer (any network of
        :mod:`rnnkit.networks`), e.g. ``rnnkit.load(run)`` or ``rnnkit.tasks.lm.CharLM``.
      text: the characters to read (all in the model's vocabulary).
      layer: which recurrent layer.

    Returns:
      ``{name: (T, H) tensor}`` in the order of ``TRACKS[arch]``: value after reading
      character t.
    """
    if not text:
        raise IntrospectError("--text: expected at least one character, got an empty text")
    if not hasattr(model, "encode"):
        raise IntrospectError(f"model: a {type(model).__name__} has no encode(); expected a character language model")
    try:
        ids = model.encode(text)
    except ValueError as e:
        raise IntrospectError(f"--text: {e}") from None
    rnn, index = _recurrent_of(model, layer)
    arch = arch_of(rnn)
    was_training = model.training
    model.eval()
    try:
        with recording(rnn, gradients=False) as calls:
            model(ids.view(-1, 1))  # (T, 1)
    finally:
        model.train(was_training)
    if len(calls) != 1:
        raise RuntimeError(f"model: expected one call of its recurrent layer, got {len(calls)}")
    call = calls[0]
    states = layer_states(rnn, call.input, call.hx, lengths=call.lengths_argument)
    out: Dict[str, Tensor] = {}
    state_name = networks.get(arch).states[0]  # the layer's recurrent output
    for name in TRACKS[arch]:
        value = states[index] if name == state_name else call.internal(index, name)  # (T, 1, H)
        out[name] = value[:, 0].to(torch.float64)  # (T, H)
    return out


# ----------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.25em; margin: 0 0 .3em 0; }
p.info { color: #555; margin: 0 0 1em 0; font-size: .9em; }
.controls { display: flex; gap: 1.2em; align-items: center; flex-wrap: wrap; margin-bottom: .6em; }
.controls label { font-size: .95em; }
#readout { font-family: monospace; min-width: 24em; color: #333; }
#legend { font-size: .85em; color: #555; margin-bottom: .8em; }
#legend span.swatch { display: inline-block; width: 1.6em; height: .9em; vertical-align: middle;
                      border: 1px solid #ccc; }
#text { font-family: "DejaVu Sans Mono", "Courier New", monospace; font-size: 15px; line-height: 1.6;
        white-space: pre-wrap; word-break: break-all; border: 1px solid #ddd; padding: .8em; }
#text span.ch { cursor: default; }
#text span.nl { color: #aaa; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("rnnkit-data").textContent);
  var spans = document.querySelectorAll("#text span.ch");
  var trackSel = document.getElementById("track");
  var unitBox = document.getElementById("unit");
  var readout = document.getElementById("readout");
  var legend = document.getElementById("legend");

  function colour(v, kind) {
    if (kind === "gate") {            // 0 white .. 1 green
      var a = Math.max(0, Math.min(1, v));
      return "rgb(" + Math.round(255 - 200 * a) + "," + Math.round(255 - 75 * a) + "," + Math.round(255 - 200 * a) + ")";
    }
    var s = Math.tanh(Math.abs(v));   // signed: red < 0 < blue
    var fade = Math.round(255 - 200 * s);
    return v >= 0 ? "rgb(" + fade + "," + fade + ",255)" : "rgb(255," + fade + "," + fade + ")";
  }

  function label(t, name, unit, v) {
    var ch = data.chars[t] === "\n" ? "\\n" : data.chars[t] === "\t" ? "\\t" : data.chars[t];
    return "'" + ch + "' (t=" + t + ") " + name + "[" + unit + "] = " + v.toFixed(4);
  }

  function paint() {
    var name = trackSel.value;
    var track = data.tracks[name];
    var unit = parseInt(unitBox.value, 10);
    if (isNaN(unit) || unit < 0) unit = 0;
    if (unit >= track.values.length) unit = track.values.length - 1;  // a projected LSTM's h is narrower
    unitBox.value = unit;
    var values = track.values[unit];
    for (var t = 0; t < spans.length; t++) {
      spans[t].style.backgroundColor = colour(values[t], track.kind);
      spans[t].title = label(t, name, unit, values[t]);
    }
    legend.innerHTML = "";
    var parts = track.kind === "gate" ? [[0, "0"], [0.5, "0.5"], [1, "1"]] : [[-2, "-2"], [-0.5, "-0.5"], [0, "0"], [0.5, "0.5"], [2, "2"]];
    legend.appendChild(document.createTextNode(track.description + ", unit " + unit + ":  "));
    parts.forEach(function (p) {
      var sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.backgroundColor = colour(p[0], track.kind);
      legend.appendChild(sw);
      legend.appendChild(document.createTextNode(" " + p[1] + "  "));
    });
    document.body.setAttribute("data-track", name);
    document.body.setAttribute("data-unit", String(unit));
    if (history.replaceState) history.replaceState(null, "", "#track=" + name + "&unit=" + unit);
  }

  Array.prototype.forEach.call(spans, function (s) {
    s.addEventListener("mouseover", function () { readout.textContent = s.title; });
  });
  trackSel.addEventListener("change", paint);
  unitBox.addEventListener("input", paint);
  document.getElementById("prev").addEventListener("click", function () { unitBox.value = parseInt(unitBox.value, 10) - 1; paint(); });
  document.getElementById("next").addEventListener("click", function () { unitBox.value = parseInt(unitBox.value, 10) + 1; paint(); });

  var hash = {};                      // #track=f&unit=3 selects on load
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
    var p = kv.split("="); if (p.length === 2) hash[p[0]] = decodeURIComponent(p[1]);
  });
  trackSel.value = (hash.track && data.tracks[hash.track]) ? hash.track : data.initial.track;
  unitBox.value = hash.unit !== undefined ? hash.unit : data.initial.unit;
  paint();
})();
"""


def _char_html(ch: str) -> str:
    if ch == "\n":
        return '<span class="nl">↵</span>\n'
    return html.escape(ch)


def activation_page(text: str, tracks: Dict[str, Tensor], *, arch: str = "lstm", title: str = "rnnkit visualize",
                    info: str = "", unit: int = 0, track: Optional[str] = None, decimals: int = 4) -> str:
    """One self-contained HTML page colouring ``text`` by the chosen unit's values.

    Args:
      text: T characters.
      tracks: ``{name: (T, H)}``, e.g. from :func:`text_activations`; names known to
        ``TRACKS[arch]`` get their description and colour scale, others are signed.
      arch: the architecture (for descriptions and colour kinds).
      title, info: heading and a line of description.
      unit, track: the initial selection (the page's ``#track=NAME&unit=N`` overrides).
      decimals: values are stored rounded to this many decimals.

    Returns:
      The HTML text. Each character is a ``<span class="ch">``; the script colours it
      and sets its ``title`` to e.g. ``'e' (t=3) c[5] = 0.7340``.
    """
    if not tracks:
        raise IntrospectError("tracks: expected at least one quantity to show")
    names = list(tracks)
    track = track or names[0]
    if track not in tracks:
        raise IntrospectError(f"--track: expected one of {', '.join(names)} for {arch}, got {track!r}")
    T = next(iter(tracks.values())).shape[0]
    if len(text) != T:
        raise ValueError(f"text: {len(text)} characters but the values have {T} steps")
    for name, v in tracks.items():  # widths may differ: a projected LSTM's h has P units, c and the gates H
        if v.dim() != 2 or v.shape[0] != T:
            raise ValueError(f"tracks[{name!r}]: expected shape ({T}, units), got {tuple(v.shape)}")
    H = max(v.shape[1] for v in tracks.values())
    W = tracks[track].shape[1]
    if not 0 <= unit < W:
        raise IntrospectError(f"--unit: expected a unit index in 0..{W - 1} ({track} has {W} units), got {unit}")
    known = TRACKS.get(arch, {})
    payload = {
        "chars": list(text), "units": H, "initial": {"track": track, "unit": unit},
        "tracks": {name: {"description": known.get(name, (name, "signed"))[0],
                          "kind": known.get(name, (name, "signed"))[1],
                          "values": [[round(float(v), decimals) for v in row]
                                     for row in tracks[name].t().tolist()]}  # (H, T) unit-major
                   for name in names},
    }
    data = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")
    options = "".join(f'<option value="{html.escape(n)}"{" selected" if n == track else ""}>'
                      f'{html.escape(known.get(n, (n, ""))[0])}</option>' for n in names)
    chars = "".join(f'<span class="ch" data-t="{t}">{_char_html(ch)}</span>' for t, ch in enumerate(text))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p class=\"info\">{html.escape(info)}</p>\n"
        "<div class=\"controls\">\n"
        f"<label>Show <select id=\"track\">{options}</select></label>\n"
        f"<label>Unit <input id=\"unit\" type=\"number\" min=\"0\" max=\"{H - 1}\" value=\"{unit}\"> of {H}</label>\n"
        "<button id=\"prev\" type=\"button\">&#9664;</button><button id=\"next\" type=\"button\">&#9654;</button>\n"
        "<span id=\"readout\">hover over a character for its value</span>\n</div>\n"
        "<div id=\"legend\"></div>\n"
        f"<div id=\"text\">{chars}</div>\n"
        f"<script id=\"rnnkit-data\" type=\"application/json\">{data}</script>\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


# ----------------------------------------------------------------------------- PNG
def write_heatmaps(text: str, tracks: Dict[str, Tensor], prefix, *, arch: str = "lstm",
                   max_units: int = 64) -> List[Path]:
    """One PNG per quantity, ``{prefix}_{name}.png``, HEATMAP_SIZE_PX pixels: the first
    ``max_units`` units (rows) against the characters (columns)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    prefix = Path(prefix)
    known = TRACKS.get(arch, {})
    paths = []
    for name, values in tracks.items():
        v = values[:, :max_units].t().numpy()  # (units, T)
        description, kind = known.get(name, (name, "signed"))
        fig = Figure(figsize=(HEATMAP_SIZE_PX[0] / _DPI, HEATMAP_SIZE_PX[1] / _DPI), dpi=_DPI)
        ax = fig.subplots()
        if kind == "gate":
            im = ax.imshow(v, aspect="auto", interpolation="nearest", cmap="Greens", vmin=0.0, vmax=1.0)
        else:
            bound = max(1.0, float(abs(values).max())) if name == "c" else 1.0
            im = ax.imshow(v, aspect="auto", interpolation="nearest", cmap="RdBu", vmin=-bound, vmax=bound)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
        T = len(text)
        if T <= 100:
            ax.set_xticks(range(T))
            ax.set_xticklabels(["↵" if c == "\n" else ("␣" if c == " " else c) for c in text], fontsize=8)
        else:
            ax.set_xlabel("character index")
        ax.set_ylabel("unit")
        ax.set_title(f"{description} over the text ({v.shape[0]} of {values.shape[1]} units)", fontsize=10)
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.9)
        path = prefix.with_name(f"{prefix.name}_{name}.png")
        fig.savefig(path, dpi=_DPI)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- putting it together
def visualize_text(model: nn.Module, text: str, out, *, layer: int = 0, unit: int = 0,
                   track: Optional[str] = None, heatmaps: bool = True, max_units: int = 64,
                   title: Optional[str] = None) -> List[Path]:
    """Write the HTML page ``out`` (and ``{out stem}_{name}.png`` heatmaps) for ``text``.

    Returns the paths written, the page first.
    """
    if max_units < 1:
        raise IntrospectError(f"--max-units: expected a positive integer, got {max_units}")
    rnn, _ = _recurrent_of(model, layer)
    arch = arch_of(rnn)
    if track is not None and track not in TRACKS[arch]:
        raise IntrospectError(f"--track: expected one of {', '.join(TRACKS[arch])} for an {arch} model, got {track!r}")
    tracks = text_activations(model, text, layer=layer)
    W = tracks[track or next(iter(tracks))].shape[1]
    if not 0 <= unit < W:
        raise IntrospectError(f"--unit: expected a unit index in 0..{W - 1} (layer {layer} has {W} units), got {unit}")
    H = max(v.shape[1] for v in tracks.values())
    widths = "" if all(v.shape[1] == H for v in tracks.values()) else \
        " (" + ", ".join(f"{k}: {v.shape[1]}" for k, v in tracks.items() if v.shape[1] != H) + ")"
    info = (f"{arch} language model, layer {layer}, {H} units{widths}; {len(text)} characters. "
            "Each character is coloured by the value after reading it. Hover for the value.")
    page = activation_page(text, tracks, arch=arch, title=title or f"rnnkit visualize: {arch} layer {layer}",
                           info=info, unit=unit, track=track)
    out = Path(out)
    out.write_text(page, encoding="utf-8")
    paths = [out]
    if heatmaps:
        paths += write_heatmaps(text, tracks, out.with_suffix(""), arch=arch, max_units=max_units)
    return paths


def load_language_model(path) -> nn.Module:
    """A character language model from a checkpoint, with rnnkit's recurrent layers."""
    from ..training.checkpoint import model_from_checkpoint, read_checkpoint, resolve_checkpoint

    file = resolve_checkpoint(path)
    tensors, meta = read_checkpoint(file)
    if meta.get("task") != "lm":
        raise IntrospectError(f"{file}: holds a model for task {meta.get('task')!r}; `rnnkit visualize` needs a "
                           "character language model (a checkpoint of `rnnkit train lm`)")
    _, model = model_from_checkpoint(tensors, meta, str(file), backend="rnnkit")
    if not hasattr(model, "encode"):
        raise IntrospectError(f"{file}: the model has no character vocabulary; expected a character language model")
    return model
