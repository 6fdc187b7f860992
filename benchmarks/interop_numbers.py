"""The numbers of docs/interop.md, measured in one run: torch.compile graph breaks
(rnnkit vs torch.nn, a 2-layer LSTM model), ONNX round-trip errors per module and form
(onnxruntime vs the module, float32, run at T, B other than traced), Keras round-trip
errors (Keras 3 on its torch backend vs rnnkit), and the eager per-call cost of the
custom-op path vs the direct path at T=1, B=1, H=8.

    .venv/bin/python benchmarks/interop_numbers.py
"""
import os
import subprocess
import sys
import tempfile
import timeit
import warnings

warnings.simplefilter("ignore")

BREAKS = r'''
import sys, warnings, torch
warnings.simplefilter("ignore")
lib = sys.argv[1]
if lib == "rnnkit":
    import rnnkit as mod
else:
    mod = torch.nn
class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = mod.LSTM(8, 16, num_layers=2), torch.nn.Linear(16, 2)
    def forward(self, x):
        return self.head(self.rnn(x)[0])
e = torch._dynamo.explain(Model())(torch.randn(7, 3, 8))
reasons = sorted({r.reason.splitlines()[0][:70] for r in e.break_reasons})
torch._dynamo.reset()
try:
    torch.compile(Model(), fullgraph=True, backend="aot_eager")(torch.randn(7, 3, 8))
    full = "compiles"
except Exception as err:
    full = "fails: " + str(err).splitlines()[0][:60]
print(f"{lib:8s} {e.graph_count:6d} {e.graph_break_count:6d}  fullgraph {full}; {'; '.join(reasons) or '-'}")
'''


def graph_breaks():
    print("== torch.compile of Linear(LSTM(8, 16, num_layers=2)), torch", __import__("torch").__version__)
    print(f"{'layers':8s} {'graphs':>6s} {'breaks':>6s}")
    for lib in ("torch.nn", "rnnkit"):  # each in a fresh process: rnnkit sets Dynamo's allow_rnn on import
        res = subprocess.run([sys.executable, "-c", BREAKS, lib], capture_output=True, text=True)
        print(res.stdout.strip() or res.stderr.strip().splitlines()[-1])


def onnx_errors():
    import onnxruntime as ort
    import torch

    from rnnkit import export, networks

    print("\n== ONNX round trip (onnxruntime vs module, float32, traced at T=6, B=3, run at T=11, B=4)")
    print(f"{'network':8s} {'hyper':22s} {'form':24s} {'operator':8s} {'max |diff|':>10s} {'/ max|y|':>9s}")
    forms = {"plain": {}, "2 layers, bidirectional": {"num_layers": 2, "bidirectional": True},
             "batch_first": {"batch_first": True}, "lengths": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        for spec in networks.NETWORKS.values():
            for hyper in spec.examples:
                for form, kw in forms.items():
                    torch.manual_seed(0)
                    layer = spec.make(5, 7, **hyper, **kw)
                    lay = (lambda t: t.transpose(0, 1).contiguous()) if layer.batch_first else (lambda t: t)
                    lengths = form == "lengths"
                    export.to_onnx(layer, path, lay(torch.randn(6, 3, 5)),
                                   lengths=torch.tensor([6, 2, 4]) if lengths else None)
                    x, L = lay(torch.randn(11, 4, 5)), torch.tensor([11, 1, 7, 4])
                    feed = {"input": x.numpy(), **({"lengths": L.numpy()} if lengths else {})}
                    got = ort.InferenceSession(path).run(None, feed)
                    with torch.no_grad():
                        out, fin = layer(x, lengths=L if lengths else None)
                    ref = [out, *(fin if isinstance(fin, tuple) else (fin,))]
                    diff = max(float((torch.from_numpy(g) - r).abs().max()) for g, r in zip(got, ref))
                    rel = max(float((torch.from_numpy(g) - r).abs().max() / r.abs().max())
                              for g, r in zip(got, ref))  # relative to the largest value
                    h = ",".join(f"{v}" for v in hyper.values()) or "-"
                    print(f"{spec.name:8s} {h:22s} {form:24s} {export.ONNX_OPERATOR[spec.kernel]:8s} "
                          f"{diff:10.2e} {rel:9.2e}")


def keras_errors():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    import numpy as np
    import torch

    from rnnkit import interop, networks

    print(f"\n== Keras {keras.__version__} ({keras.backend.backend()} backend) vs rnnkit, float32, B=3, T=8")
    print(f"{'network':8s} {'direction':18s} {'max |diff|':>10s}")
    for name in ("lstm", "gru", "gru-rb"):
        kw = {} if name == "lstm" else {"reset_after": name == "gru"}
        cls = keras.layers.LSTM if name == "lstm" else keras.layers.GRU
        keras.utils.set_random_seed(0)
        layer = cls(16, return_sequences=True, **kw)
        x = torch.randn(3, 8, 5)
        ref = torch.as_tensor(np.asarray(layer(x.numpy()).detach().cpu()))
        with torch.no_grad():
            diff = float((interop.from_keras(layer)(x)[0] - ref).abs().max())
        print(f"{name:8s} {'Keras -> rnnkit':18s} {diff:10.2e}")
        torch.manual_seed(0)
        module = networks.get(name).make(5, 16, batch_first=True)
        layer.set_weights(interop.to_keras_weights(module))
        with torch.no_grad():
            diff = float((torch.as_tensor(np.asarray(layer(x.numpy()).detach().cpu())) - module(x)[0]).abs().max())
        print(f"{name:8s} {'rnnkit -> Keras':18s} {diff:10.2e}")


def op_overhead():
    import torch

    from rnnkit import _backend, functional as F

    print("\n== per call, functional LSTM layer, T=1, B=1, I=H=8 (best of 5 x 3000)")
    torch.manual_seed(0)
    x, w_ih, w_hh, b = torch.randn(1, 1, 8), torch.randn(32, 8), torch.randn(32, 8), torch.randn(32)
    xg = x.clone().requires_grad_()
    isa = _backend.current_isa()
    rows = [("no grad: Function.forward (eager path)", lambda: F._apply(F._LSTM, x, None, None, w_ih, w_hh, b, b, None, isa, None)),
            ("no grad: custom op", lambda: F._LSTM.op_apply(x, None, None, w_ih, w_hh, b, b, None, isa, None)),
            ("grad: Function.apply (eager path)", lambda: F._apply(F._LSTM, xg, None, None, w_ih, w_hh, b, b, None, isa, None)),
            ("grad: custom op", lambda: F._LSTM.op_apply(xg, None, None, w_ih, w_hh, b, b, None, isa, None))]
    for name, f in rows:
        t = min(timeit.repeat(f, number=3000, repeat=5)) / 3000
        print(f"{name:42s} {t * 1e6:7.1f} us")


if __name__ == "__main__":
    graph_breaks()
    onnx_errors()
    keras_errors()
    op_overhead()
