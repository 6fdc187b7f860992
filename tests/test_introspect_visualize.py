"""rnnkit visualize (HTML page checked in headless Chromium, PNG heatmaps) and rnnkit explain.

Chromium comes from ``tests/setup_chromium.sh``; without it the browser tests skip.
"""

import html.parser
import io
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit import cli
from rnnkit.errors import IntrospectError
from rnnkit.introspect.explain import explain_text
from rnnkit.introspect.visualize import (HEATMAP_SIZE_PX, TRACKS, activation_page, load_language_model,
                                         text_activations, visualize_text)
from rnnkit.tasks.lm import CharLM
from rnnkit.training.task import UsageError

TEXT = "ab <c>&\nd'e\"a"
VOCAB = [""] + sorted(set(TEXT))
CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH; run "
                                                              "`sh tests/setup_chromium.sh` to install it")


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def char_lm(arch="lstm", layers=2, hidden=6):
    torch.manual_seed(0)
    return CharLM(VOCAB, dict(arch=arch, backend="rnnkit", hidden=hidden, layers=layers, nonlinearity="tanh",
                              gru_form="after", dropout=0.0, embed=4))


def chromium(*args, timeout=60):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


class _Spans(html.parser.HTMLParser):
    """Collects (text, title, style) of every <span class="ch"> in a dumped DOM."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.spans, self.depth, self.body = [], 0, {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "span" and a.get("class") == "ch":
            self.spans.append({"text": "", "title": a.get("title", ""), "style": a.get("style", "")})
            self.depth = 1
        elif tag == "span" and self.depth:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "span" and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.spans[-1]["text"] += data


def test_text_activations_match_the_recorded_internals():
    lm = char_lm("lstm")
    tracks = text_activations(lm, TEXT, layer=1)
    assert list(tracks) == list(TRACKS["lstm"])
    ids = lm.encode(TEXT).view(-1, 1)
    with torch.no_grad():
        e = lm.embed(ids)
        out, _, inside = lm.rnn.forward_with_internals(e)
    for name in ("c", "i", "f", "g", "o"):
        torch.testing.assert_close(tracks[name], inside[1][name][:, 0].double())
    torch.testing.assert_close(tracks["h"], out[:, 0].double())  # layer 1 is the top layer
    gru = text_activations(char_lm("gru", layers=1), TEXT)
    assert list(gru) == ["h", "z", "r", "n"] and gru["z"].shape == (len(TEXT), 6)
    jordan = text_activations(char_lm("jordan", layers=2), TEXT, layer=1)
    assert list(jordan) == ["y", "h"]


def test_heatmaps_and_page_are_written(tmp_path):
    paths = visualize_text(char_lm("gru", layers=1), TEXT, tmp_path / "page.html", unit=2, track="z")
    assert paths[0].name == "page.html"
    assert [p.name for p in paths[1:]] == [f"page_{n}.png" for n in TRACKS["gru"]]
    for p in paths[1:]:
        assert png_size(p) == HEATMAP_SIZE_PX and p.stat().st_size > 5_000
    page = paths[0].read_text(encoding="utf-8")
    assert "<script src" not in page and "<link" not in page and "@import" not in page and "http" not in page
    assert page.count('class="ch"') == len(TEXT)
    assert 'data-t="3">&lt;</span>' in page and 'data-t="6">&amp;</span>' in page  # characters escaped


def test_bad_unit_track_layer_and_text_are_clear_errors(tmp_path):
    lm = char_lm("lstm")
    with pytest.raises(IntrospectError, match=r"--unit: expected a unit index in 0\.\.5 .* got 6"):
        visualize_text(lm, TEXT, tmp_path / "p.html", unit=6)
    with pytest.raises(IntrospectError, match=r"--track: expected one of c, h, i, f, o, g .* got 'z'"):
        visualize_text(lm, TEXT, tmp_path / "p.html", track="z")
    with pytest.raises(IntrospectError, match=r"--layer: expected 0\.\.1, got 2"):
        visualize_text(lm, TEXT, tmp_path / "p.html", layer=2)
    with pytest.raises(IntrospectError, match=r"--text: characters not in the vocabulary.*'Z'"):
        visualize_text(lm, "aZ", tmp_path / "p.html")
    assert not (tmp_path / "p.html").exists()
    with pytest.raises(IntrospectError, match="--unit"):
        activation_page("ab", {"c": torch.zeros(2, 3)}, unit=-1)


@needs_chromium
def test_page_renders_in_headless_chromium(tmp_path):
    lm = char_lm("lstm")
    tracks = text_activations(lm, TEXT, layer=0)
    page = tmp_path / "page.html"
    visualize_text(lm, TEXT, page, layer=0, unit=1, heatmaps=False)

    # The initial selection (c, unit 1), then another one through the page's #fragment.
    for fragment, name, unit in (("", "c", 1), ("#track=f&unit=4", "f", 4)):
        parser = _Spans()
        parser.feed(chromium("--dump-dom", page.as_uri() + fragment))
        assert (parser.body.get("data-track"), parser.body.get("data-unit")) == (name, str(unit))
        assert len(parser.spans) == len(TEXT)
        for t, (span, ch) in enumerate(zip(parser.spans, TEXT)):
            assert span["text"] == ("↵\n" if ch == "\n" else ch)
            m = re.fullmatch(r"'(.+)' \(t=(\d+)\) (\w)\[(\d+)\] = (-?\d+\.\d{4})", span["title"])
            assert m, span["title"]
            assert m.group(1) == {"\n": "\\n"}.get(ch, ch) and int(m.group(2)) == t
            assert (m.group(3), int(m.group(4))) == (name, unit)
            assert abs(float(m.group(5)) - float(tracks[name][t, unit])) <= 1.5e-4
            assert "background-color: rgb(" in span["style"]

    shot = tmp_path / "shot.png"
    chromium("--window-size=900,500", f"--screenshot={shot}", page.as_uri() + "#track=f&unit=0")
    assert png_size(shot) == (900, 500)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]  # (500, 900, 3) in [0, 1]
    greenish = (pixels[..., 1] > pixels[..., 0] + 0.1) & (pixels[..., 1] > pixels[..., 2] + 0.1)
    assert greenish.sum() > 200  # the forget gate's green backgrounds are there
    dark = pixels.sum(axis=-1) < 1.0
    assert dark.sum() > 500  # and the text


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A real checkpoint: `rnnkit train lm` for 5 steps on a small corpus (a few seconds)."""
    from rnnkit.cli import main

    root = tmp_path_factory.mktemp("lm")
    corpus = root / "corpus.txt"
    corpus.write_text(Path(shutil.__file__).read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    out = io.StringIO()
    rc = main(["train", "lm", "--preset", "tiny", "--steps", "5", "--threads", "1", "--progress", "off",
               "--tensorboard", "off", "--data", str(corpus), "--out", str(root / "run")], out=out)
    assert rc == 0, out.getvalue()
    return root / "run"


def test_visualize_command_on_a_checkpoint(lm_run, tmp_path):
    out = io.StringIO()
    assert cli.main(["visualize", str(lm_run), "--text", "def f(x):\n    return x", "--unit", "3",
                     "--out", str(tmp_path / "v.html")], out=out) == 0
    assert "v.html" in out.getvalue() and (tmp_path / "v_f.png").exists()
    assert png_size(tmp_path / "v_c.png") == HEATMAP_SIZE_PX
    model = load_language_model(lm_run)
    H = model.rnn.hidden_size
    with pytest.raises(UsageError, match=rf"--unit: expected a unit index in 0\.\.{H - 1}"):
        visualize_text(model, "def", tmp_path / "w.html", unit=H)


def test_gradflow_command_on_a_checkpoint(lm_run, tmp_path):
    out = io.StringIO()
    assert cli.main(["gradflow", "--checkpoint", str(lm_run), "--length", "30", "--batch", "2", "--no-jacobian",
                     "--out", str(tmp_path / "g.png")], out=out) == 0
    assert "lstm (run)" in out.getvalue() and (tmp_path / "g.png").exists()


def test_checkpoint_that_is_not_a_language_model_is_a_clear_error(tmp_path):
    from rnnkit.training.checkpoint import save_checkpoint

    other = tmp_path / "tagger.safetensors"
    save_checkpoint(other, {"model.w": torch.zeros(2)}, {"kind": "model", "task": "tagger", "config": {}})
    with pytest.raises(UsageError, match=r"task 'tagger'; `rnnkit visualize` needs a character language model"):
        load_language_model(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    res = subprocess.run([sys.executable, "-m", "rnnkit", "visualize", str(junk), "--text", "a",
                          "--out", str(tmp_path / "x.html")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.startswith("rnnkit visualize: error: ") and "junk.safetensors" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.html").exists()


def test_explain_walks_the_worked_example_and_both_gated_cells():
    text = explain_text()
    for row in ("[1, 1]    [2, 2]    [0, 0]      [2, 2]      [4, 4]",
                "[1, 1]    [2, 2]    [4, 4]      [6, 6]      [12, 12]",
                "[2, 2]    [4, 4]    [12, 12]    [16, 16]    [32, 32]"):
        assert row in text
    assert "[8, 8], [20, 20], [44, 44]" in text and "Outputs differ" in text
    for gate in ("i = σ", "f = σ", "g = tanh", "o = σ", "c = f ⊙ c_prev + i ⊙ g", "h = o ⊙ tanh(c)",
                 "r = σ", "z = σ", "n = tanh", "h = (1 - z) ⊙ n + z ⊙ h_prev"):
        assert gate in text
    # The LSTM numbers shown are the native kernel's.
    lstm = rnnkit.LSTM(2, 2).double()
    from rnnkit.introspect import explain as ex

    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.tensor(ex.LSTM_W_IH))
        lstm.weight_hh_l0.copy_(torch.tensor(ex.LSTM_W_HH))
        lstm.bias_ih_l0.copy_(torch.tensor(ex.LSTM_B))
        lstm.bias_hh_l0.zero_()
        _, (h, c), _ = lstm.forward_with_internals(torch.tensor([[ex.X]], dtype=torch.float64),
                                                   (torch.tensor([[ex.H_PREV]]).double(),
                                                    torch.tensor([[ex.C_PREV]]).double()))
    assert f"c [{c[0, 0, 0]:.3f}".rstrip("0") in text and f"h [{h[0, 0, 0]:.3f}".rstrip("0") in text
    seed_form = explain_text(["gru"], gru_form="before")
    assert "h = (1 - z) ⊙ h_prev + z ⊙ n" in seed_form and "LSTM" not in seed_form
    with pytest.raises(IntrospectError, match="--only: unknown part 'cnn'"):
        explain_text(["cnn"])
    out = io.StringIO()
    assert cli.main(["explain", "--only", "rnn"], out=out) == 0
    assert "[16, 16]" in out.getvalue() and "LSTM" not in out.getvalue()
