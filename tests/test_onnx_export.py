"""ONNX export (rnnkit.export.to_onnx) run in onnxruntime against the module, float32,
at T and B different from the ones that traced it; every network and variant of the
registry, with lengths, both layouts, stacked and bidirectional."""

import pytest
import torch

import rnnkit
from rnnkit import _variants, export, networks

onnx = pytest.importorskip("onnx", reason="onnx is not installed (the 'bench' extra)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the 'bench' extra)")

pytestmark = pytest.mark.skipif(not __import__("rnnkit")._ops.HAVE_OPS, reason="torch < 2.4: no torch.library register_fake / register_autograd, rnnkit runs eagerly only")

# a setting with a regulariser (SPEC section 16) has no standard operator (tests/test_variants.py)
CASES = [(spec.name, dict(hyper)) for spec in networks.NETWORKS.values() for hyper in spec.examples
         if not any(hyper.get(k) for k in _variants.RATES)]
FORMS = {"plain": {}, "stacked-bidirectional": {"num_layers": 2, "bidirectional": True},
         "batch-first": {"batch_first": True}, "no-bias": {"bias": False}}


def roundtrip(name, hyper, form, with_lengths, path):
    """Exports a layer at (T, B) = (6, 3) and runs it at (11, 4); returns (onnx outputs, module outputs)."""
    torch.manual_seed(0)
    layer = networks.get(name).make(5, 7, **hyper, **FORMS[form])
    trace_lengths = torch.tensor([6, 2, 4]) if with_lengths else None
    layout = (lambda t: t.transpose(0, 1).contiguous()) if layer.batch_first else (lambda t: t)
    export.to_onnx(layer, path, layout(torch.randn(6, 3, 5)), lengths=trace_lengths)
    x = layout(torch.randn(11, 4, 5))
    lengths = torch.tensor([11, 1, 7, 4])
    feed = {"input": x.numpy()}
    if with_lengths:
        feed["lengths"] = lengths.numpy()
    got = ort.InferenceSession(str(path)).run(None, feed)
    with torch.no_grad():
        out, finals = layer(x, lengths=lengths if with_lengths else None)
    expected = (out, *(finals if isinstance(finals, tuple) else (finals,)))
    return [torch.from_numpy(g) for g in got], expected


@pytest.mark.parametrize("name,hyper", CASES, ids=[f"{n}-{'-'.join(map(str, h.values()))}" for n, h in CASES])
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_onnx_matches_module(name, hyper, form, with_lengths, tmp_path):
    got, expected = roundtrip(name, hyper, form, with_lengths, tmp_path / "m.onnx")
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", networks.names())
def test_onnx_uses_standard_operator(name, tmp_path):
    """LSTM, GRU (both forms) and RNN become ONNX's own operators; Jordan a Loop."""
    spec = networks.get(name)
    export.to_onnx(spec.make(5, 7, num_layers=2), tmp_path / "m.onnx", torch.randn(6, 3, 5))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops.count(export.ONNX_OPERATOR[spec.kernel]) == 2
    assert not any(op.startswith("rnnkit") for op in ops)


def test_onnx_errors(tmp_path):
    with pytest.raises(ValueError, match="example: expected a 3-D input tensor"):
        export.to_onnx(rnnkit.LSTM(5, 7), tmp_path / "m.onnx", torch.randn(6, 5))
    with pytest.raises(TypeError, match="module: expected an rnnkit"):
        export.to_onnx(torch.nn.Linear(2, 2), tmp_path / "m.onnx", torch.randn(6, 3, 2))


def test_cli_export_trained_run(tmp_path):
    """`rnnkit export RUN --format onnx`: the trained language model's recurrent layer as
    a graph that computes what the loaded layer computes; kept unless --overwrite."""
    from cli_support import run_cli, train_tiny

    from rnnkit.training.checkpoint import load

    rc, _, err, run_dir = train_tiny(tmp_path, "--arch", "gru-rb", "--layers", "2")
    assert rc == 0, err
    rc, out, err = run_cli(["export", run_dir, "--format", "onnx", "--out", tmp_path / "onnx"])
    assert rc == 0, err
    path = tmp_path / "onnx" / "rnn.onnx"
    assert f"{path}: gru-rb layer (GRU)" in out
    layer = load(run_dir, backend="rnnkit").rnn
    x = torch.randn(9, 2, layer.input_size)
    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected, h_n = layer(x)
    torch.testing.assert_close(torch.from_numpy(got[0]), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(got[1]), h_n, rtol=1e-5, atol=1e-6)

    before = path.read_bytes()
    rc, _, err = run_cli(["export", run_dir, "--format", "onnx", "--out", tmp_path / "onnx"])
    assert rc == 2 and "exists; pass --overwrite" in err and len(err.strip().splitlines()) == 1
    assert path.read_bytes() == before
    rc, _, err = run_cli(["export", run_dir, "--format", "onnx", "--out", tmp_path / "onnx", "--overwrite"])
    assert rc == 0, err
    rc, _, err = run_cli(["export", tmp_path / "nothing", "--format", "onnx"])
    assert rc == 2 and "no such file or folder" in err


def test_docs_interop_examples_run(tmp_path):
    """Every python block of docs/interop.md runs as written (in its own process)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    import importlib.util

    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed (the 'interop' extra)")
    text = (Path(__file__).parent.parent / "docs" / "interop.md").read_text("utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    for i, block in enumerate(blocks):
        res = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, f"block {i}:\n{block}\n{res.stderr[-2000:]}"


@pytest.mark.parametrize("name", networks.names())
def test_direct_torch_onnx_export(name, tmp_path):
    """The issue's case: torch.onnx.export(layer, (x,), dynamo=False) called directly on a
    2-layer layer (no rnnkit.export): standard operators, right at other T and B."""
    torch.manual_seed(0)
    layer = networks.get(name).make(8, 16, num_layers=2).eval()
    path = str(tmp_path / "m.onnx")
    torch.onnx.export(layer, (torch.randn(7, 4, 8),), path, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "T", 1: "B"}})
    x = torch.randn(13, 5, 8)
    got = ort.InferenceSession(path).run(None, {"x": x.numpy()})
    with torch.no_grad():
        out, finals = layer(x)
    expected = [out, *(finals if isinstance(finals, tuple) else (finals,))]
    assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
    for g, e in zip(got, expected):
        torch.testing.assert_close(torch.from_numpy(g), e, rtol=1e-5, atol=1e-6)
