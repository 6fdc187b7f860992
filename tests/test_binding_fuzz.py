"""Every sequence entry point of the binding (rnnkit._core; Stack.run too), driven with random shapes,
strides, dtypes, absent optionals and sizes: each call either equals the same call on
clean, contiguous copies of the same values or raises a TypeError / ValueError that
names the argument. Never a crash, never a silent wrong answer (issue 12).

Inputs that are not C-contiguous are read through a contiguous copy (they must give the
clean result); outputs must be C-contiguous, of the input's dtype and shape, or the call
raises (a converted copy would take the result and the caller's array stay unchanged).
"""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit import _backend, _core

ACT = _backend.ACT_CODES
ARCH = _backend.ARCH_CODES


def _kernels(T, B, H, O, dtype, g):
    """name -> (function, arguments in order as {name: (value, kind)}), kind one of
    'in', 'opt' (optional input), 'out', 'optout', or a plain value."""
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    e = lambda *s: torch.zeros(*s, dtype=dtype)  # noqa: E731
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    common = {"lengths": (lengths, "opt")}
    # A two-layer bidirectional LSTM with peepholes: five weights per layer and direction.
    stack_params = [a for I in (3, 3, 2 * H, 2 * H)
                    for a in (r(4 * H, I).numpy(), r(4 * H).numpy(), r(4 * H, H).numpy(), r(3 * H).numpy(), None)]
    stack = _core.Stack(0, ARCH["lstm"], ACT["tanh"], ACT["identity"], True, 2, [3, H, 0, 2 * H, H, 0], stack_params)
    return {
        "stack_run": (stack.run, [("x", (r(T, B, 3), "in")), ("lengths", common["lengths"]),
                      ("init0", (r(4, B, H), "opt")), ("init1", (r(4, B, H), "opt")),
                      ("out", (e(T, B, 2 * H), "out")), ("final0", (e(4, B, H), "out")),
                      ("final1", (e(4, B, H), "out")), ("nthreads", 2)]),
        "elman_forward": (_core.elman_forward, [("isa", 0), ("act", ACT["tanh"]), ("xw", (r(T, B, H), "in")),
                          ("w_hh", (r(H, H), "in")), ("h0", (r(B, H), "opt")), ("lengths", common["lengths"]),
                          ("hs", (e(T + 1, B, H), "out")), ("out", (e(T, B, H), "optout")), ("nthreads", 2)]),
        "elman_backward": (_core.elman_backward, [("isa", 0), ("act", ACT["tanh"]), ("w_hh", (r(H, H), "in")),
                           ("hs", (r(T + 1, B, H).tanh(), "in")), ("lengths", common["lengths"]),
                           ("d_out", (r(T, B, H), "opt")), ("dh_n", (r(B, H), "opt")), ("da", (e(T, B, H), "out")),
                           ("dh0", (e(B, H), "out")), ("dhs", (e(T, B, H), "optout")), ("nthreads", 2)]),
        "lstm_forward": (_core.lstm_forward, [("isa", 0), ("xw", (r(T, B, 4 * H), "in")), ("w_hh", (r(4 * H, H), "in")),
                         ("h0", (r(B, H), "opt")), ("c0", (r(B, H), "opt")), ("lengths", common["lengths"]),
                         ("hs", (e(T + 1, B, H), "out")), ("cs", (e(T + 1, B, H), "out")),
                         ("gates", (e(T, B, 4 * H), "out")), ("out", (e(T, B, H), "optout")), ("nthreads", 2),
                         ("w_ch", (r(3 * H), "opt"))]),
        "gru_forward": (_core.gru_forward, [("isa", 0), ("reset_after", True), ("xw", (r(T, B, 3 * H), "in")),
                        ("w_hh", (r(3 * H, H), "in")), ("b_hn", (r(H), "opt")), ("h0", (r(B, H), "opt")),
                        ("lengths", common["lengths"]), ("hs", (e(T + 1, B, H), "out")),
                        ("gates", (e(T, B, 3 * H), "out")), ("hn", (e(T, B, H), "out")),
                        ("out", (e(T, B, H), "optout")), ("nthreads", 2)]),
        "lstm_backward": (_core.lstm_backward, [("isa", 0), ("w_hh", (r(4 * H, H), "in")),
                          ("hs", (r(T + 1, B, H).tanh(), "in")), ("cs", (r(T + 1, B, H), "in")),
                          ("gates", (r(T, B, 4 * H).sigmoid(), "in")), ("lengths", common["lengths"]),
                          ("d_out", (r(T, B, H), "opt")), ("dh_n", (r(B, H), "opt")), ("dc_n", (r(B, H), "opt")),
                          ("da", (e(T, B, 4 * H), "out")), ("dh0", (e(B, H), "out")), ("dc0", (e(B, H), "out")),
                          ("dhs", (e(T, B, H), "optout")), ("dcs", (e(T, B, H), "optout")), ("nthreads", 2),
                          ("w_ch", (r(3 * H), "opt"))]),
        "gru_backward": (_core.gru_backward, [("isa", 0), ("reset_after", False), ("w_hh", (r(3 * H, H), "in")),
                         ("hs", (r(T + 1, B, H).tanh(), "in")), ("gates", (r(T, B, 3 * H).sigmoid(), "in")),
                         ("hn", (r(T, B, H), "in")), ("lengths", common["lengths"]), ("d_out", (r(T, B, H), "opt")),
                         ("dh_n", (r(B, H), "opt")), ("da", (e(T, B, 3 * H), "out")), ("da_hn", (e(T, B, H), "out")),
                         ("dh0", (e(B, H), "out")), ("dhs", (e(T, B, H), "optout")), ("nthreads", 2)]),
        "jordan_backward": (_core.jordan_backward, [("isa", 0), ("act", ACT["tanh"]), ("out_act", ACT["sigmoid"]),
                            ("w_yh", (r(H, O), "in")), ("w_hy", (r(O, H), "in")), ("hs", (r(T, B, H).tanh(), "in")),
                            ("ys", (r(T + 1, B, O).sigmoid(), "in")), ("lengths", common["lengths"]),
                            ("d_out", (r(T, B, O), "opt")), ("dy_n", (r(B, O), "opt")), ("da", (e(T, B, H), "out")),
                            ("d_o", (e(T, B, O), "out")), ("dy0", (e(B, O), "out")), ("dys", (e(T, B, O), "optout")),
                            ("nthreads", 2)]),
        "jordan_forward": (_core.jordan_forward, [("isa", 0), ("act", ACT["tanh"]), ("out_act", ACT["sigmoid"]),
                           ("xw", (r(T, B, H), "in")), ("w_yh", (r(H, O), "in")), ("w_hy", (r(O, H), "in")),
                           ("b_hy", (r(O), "opt")), ("y0", (r(B, O), "opt")), ("lengths", common["lengths"]),
                           ("hs", (e(T, B, H), "out")), ("ys", (e(T + 1, B, O), "out")),
                           ("out", (e(T, B, O), "optout")), ("nthreads", 2)]),
    }


def _call(fn, args):
    values = [a[1][0] if isinstance(a[1], tuple) else a[1] for a in args]
    fn(*values)
    return [a[1][0] for a in args if isinstance(a[1], tuple) and a[1][1] in ("out", "optout") and a[1][0] is not None]


def _strided_copy(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout (every other element of a larger buffer)."""
    big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    view = big[..., ::2]
    view.copy_(t)
    return view


MUTATIONS = ("none", "strided", "absent", "dtype64", "dtype_int", "shape", "numpy_strided", "transposed")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel=st.sampled_from(["elman_forward", "elman_backward", "lstm_forward", "lstm_backward", "gru_forward",
                               "gru_backward", "jordan_forward", "jordan_backward", "stack_run"]),
       T=st.integers(1, 5), B=st.integers(1, 4), H=st.integers(1, 19), O=st.integers(1, 5),
       dtype=st.sampled_from([torch.float32, torch.float64]), which=st.integers(0, 20),
       mutation=st.sampled_from(MUTATIONS), seed=st.integers(0, 2**16))
def test_binding_equals_the_clean_call_or_names_the_argument(kernel, T, B, H, O, dtype, which, mutation, seed):
    g = torch.Generator().manual_seed(seed)
    fn, clean = _kernels(T, B, H, O, dtype, g)[kernel]
    arrays = [i for i, a in enumerate(clean) if isinstance(a[1], tuple)]
    k = arrays[which % len(arrays)]
    name, (value, kind) = clean[k]

    def with_value(v):
        m = [(n, (a[0].clone(), a[1]) if isinstance(a, tuple) else a) for n, a in clean]
        m[k] = (name, (v, kind))
        return m

    must_work = mutation == "none"
    if mutation == "none":
        mutated = with_value(value.clone())
    elif mutation == "strided":
        view = _strided_copy(value)
        mutated = with_value(view)
        # an input is read through a copy; an output must refuse, unless the view is
        # contiguous after all (its strided dimension has size 1)
        must_work = kind in ("in", "opt") or view.is_contiguous()
    elif mutation == "numpy_strided":
        view = _strided_copy(value)
        mutated = with_value(view.numpy())
        must_work = kind in ("in", "opt") or view.is_contiguous()
    elif mutation == "transposed":
        if value.dim() < 2 or value.shape[-1] == 1 or value.shape[-2] == 1:
            mutated = with_value(value.clone())  # a transposed view of such a shape is contiguous
            must_work = True
        else:
            view = value.transpose(-1, -2).contiguous().transpose(-1, -2)
            mutated = with_value(view)
            must_work = kind in ("in", "opt") or view.is_contiguous()
    elif mutation == "absent":
        mutated = with_value(None)
        must_work = kind in ("opt", "optout")
    elif mutation == "dtype64":
        other = torch.float64 if dtype == torch.float32 else torch.float32
        mutated = with_value(value.to(other))
    elif mutation == "dtype_int":
        mutated = with_value(value.to(torch.int32))
    elif mutation == "shape":
        shape = list(value.shape)
        shape[-1] += 1
        mutated = with_value(torch.zeros(shape, dtype=value.dtype))
    if must_work:
        got = _call(fn, mutated)
        # the clean call on contiguous copies (absent arguments stay absent)
        reference = [(n, (None if a[0] is None else
                          torch.as_tensor(np.ascontiguousarray(a[0])).clone(), a[1]) if isinstance(a, tuple) else a)
                     for n, a in mutated]
        want = _call(fn, reference)
        assert len(got) == len(want)
        for u, v in zip(got, want):
            assert np.array_equal(np.asarray(u), np.asarray(v), equal_nan=True), (kernel, name, mutation)
    else:
        with pytest.raises((TypeError, ValueError)) as info:
            _call(fn, mutated)
        message = str(info.value)
        if mutation.startswith("dtype"):  # the first array sets the dtype: the message may name another
            assert "dtype" in message, (kernel, name, mutation, message)
        elif mutation == "absent":  # a required array given as None: nanobind's TypeError with the signature
            assert f"{name}:" in message or "incompatible function arguments" in message, (kernel, name, message)
        elif mutation == "shape":  # the sizes come from some arguments: another may be the one that disagrees
            named = message.split(":")[0]
            assert named in {n for n, _ in clean} and "expected" in message, (kernel, name, message)
        else:
            assert message.startswith(name + ":"), (kernel, name, mutation, message)


@settings(max_examples=150, deadline=None)
@given(arch=st.sampled_from(["elman", "lstm", "gru", "jordan"]), B=st.integers(1, 3), H=st.integers(1, 9),
       dtype=st.sampled_from([torch.float32, torch.float64]), target=st.sampled_from(["x", "out", "state"]),
       mutation=st.sampled_from(MUTATIONS), seed=st.integers(0, 2**16))
def test_stream_step_and_state_equal_the_clean_call_or_name_the_argument(arch, B, H, dtype, target, mutation, seed):
    """rnnkit.Stream's binding: step(x, out) and state(buffer) with random layouts."""
    import rnnkit
    from rnnkit import networks

    torch.manual_seed(seed)
    spec = networks.get({"elman": "rnn"}.get(arch, arch))
    module = spec.make(3, H).to(dtype).eval()
    W = getattr(module, spec.state_size)
    streams = [rnnkit.Stream(module, batch_size=B)._core for _ in range(2)]
    x = torch.randn(B, 3, dtype=dtype)
    value = {"x": x, "out": torch.zeros(B, W, dtype=dtype), "state": torch.randn(B, W, dtype=dtype)}[target]
    if mutation in ("strided", "numpy_strided", "transposed"):
        view = _strided_copy(value) if mutation != "transposed" else value.t().contiguous().t()
        bad = view.numpy() if mutation == "numpy_strided" else view
        must_work = target == "x" or view.is_contiguous()
    elif mutation == "none":
        bad, must_work = value.clone(), True
    elif mutation == "absent":
        bad, must_work = None, False
    elif mutation == "dtype64":
        bad, must_work = value.to(torch.float64 if dtype == torch.float32 else torch.float32), False
    elif mutation == "dtype_int":
        bad, must_work = value.to(torch.int32), False
    else:  # shape
        bad, must_work = torch.zeros(B, value.shape[1] + 1, dtype=dtype), False

    def run(core, arg):
        out = torch.zeros(B, W, dtype=dtype)
        if target == "state":
            core.state(0, 0, arg, True)
            core.step(x, out, 1)
        else:
            core.step(arg if target == "x" else x, arg if target == "out" else out, 1)
            out = arg if target == "out" else out
        return np.asarray(out).copy()

    if must_work:
        clean = value if mutation != "none" else bad
        assert np.array_equal(run(streams[0], bad), run(streams[1], clean))
    else:
        with pytest.raises((TypeError, ValueError)) as info:
            run(streams[0], bad)
        name = {"x": "x", "out": "out", "state": "state"}[target]
        message = str(info.value)
        assert message.startswith(name + ":") or "incompatible function arguments" in message, message
