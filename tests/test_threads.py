"""Threads in the recurrence. Bit-identical results for any thread count, for every
network on every ISA path and team backend, are checked by tests/test_networks.py; here:
a threaded run against torch.nn, threads from several Python threads at once, and the
team on torch's OpenMP workers (csrc/parallel.h): found in torch's own libgomp, switched
off by RNNKIT_TEAM=threads, called from inside an OpenMP parallel region, and after fork."""
import ctypes
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

import rnnkit
from rnnkit import _backend

OPENMP = "openmp" in _backend.team_backends()
needs_openmp = pytest.mark.skipif(not OPENMP, reason="torch's parallel backend is not a loaded libgomp here")


def _run(m, x, lengths):
    out, state = m(x, lengths=lengths)
    states = list(state) if isinstance(state, tuple) else [state]
    g = torch.Generator().manual_seed(3)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in [out] + states)
    grads = torch.autograd.grad(loss, [x] + list(m.parameters()))
    return [out.detach()] + [s.detach() for s in states] + list(grads)


def test_threaded_matches_torch(team):
    t = torch.nn.LSTM(16, 96)
    r = rnnkit.LSTM(16, 96)
    r.load_state_dict(t.state_dict())
    x = torch.randn(7, 9, 16)
    with rnnkit.use_threads(2):
        assert torch.allclose(r(x)[0], t(x)[0], rtol=1e-5, atol=1e-6)


def test_concurrent_calls_from_python_threads(team):
    """No global state: two Python threads running different models at once (on OpenMP,
    each Python thread forks its team on its own workers)."""
    models = [rnnkit.GRU(8, 40), rnnkit.LSTM(8, 40)]
    x = torch.randn(20, 4, 8)
    expected = [m(x)[0] for m in models]
    errors = []

    def work(i):
        try:
            for _ in range(20):
                with rnnkit.use_threads(2):
                    if not torch.equal(models[i](x)[0], expected[i]):
                        errors.append(i)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_bad_thread_count():
    with pytest.raises(ValueError, match="n: expected a positive integer thread count, got 0"):
        with rnnkit.use_threads(0):
            pass


def test_team_backend_names():
    assert _backend.team_backend() in _backend.team_backends()
    assert "threads" in _backend.team_backends()
    with pytest.raises(ValueError, match=r"team: expected one of .*, got 'fibres'"):
        _backend.set_team_backend("fibres")


def test_openmp_is_torchs_own_libgomp():
    """Where torch's parallel backend is OpenMP, the team runs on the libgomp torch loaded
    (its code lies in that file's mapping), by default."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        assert not OPENMP
        return
    assert OPENMP, "torch runs on OpenMP, but its libgomp was not found"
    path, start, end = _backend._loaded_libgomp()
    assert os.path.dirname(os.path.realpath(path)) == os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib"))
    assert all(start <= address < end for address in _backend._OPENMP)
    if "RNNKIT_TEAM" not in os.environ:
        assert _backend.team_backend() == "openmp"


def _import_rnnkit_with(team):
    code = "import rnnkit._backend as b; print(b.team_backend())"
    env = {**os.environ, "RNNKIT_TEAM": team}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_environment_switch():
    run = _import_rnnkit_with("threads")
    assert run.returncode == 0 and run.stdout.strip() == "threads", run.stderr
    run = _import_rnnkit_with("fibres")
    assert run.returncode != 0 and "RNNKIT_TEAM: expected one of ['openmp', 'threads'], got 'fibres'" in run.stderr
    run = _import_rnnkit_with("openmp")
    if OPENMP:
        assert run.returncode == 0 and run.stdout.strip() == "openmp", run.stderr
    else:
        assert run.returncode != 0 and "RNNKIT_TEAM: 'openmp' asked" in run.stderr


def _training_results(m, x):
    out, (h, c) = m(x)
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), [x, *m.parameters()])
    return [out.detach(), h.detach(), c.detach(), *grads]


@needs_openmp
@pytest.mark.parametrize("levels", [1, 2], ids=["nested-inactive", "nested-active"])
def test_call_from_inside_an_openmp_region(levels):
    """Each member of an OpenMP parallel region of torch's runtime calls rnnkit with two
    threads: with nesting off the runtime grants each call a team of one (which the core
    must use as such, not wait for a second member), with nesting on a fresh team of two;
    either way the results are the single thread's bits."""
    gomp = ctypes.CDLL(_backend._loaded_libgomp()[0], mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    gomp.omp_get_thread_num.restype = ctypes.c_int
    gomp.omp_get_max_active_levels.restype = ctypes.c_int
    m = rnnkit.LSTM(16, 96)
    x = torch.randn(9, 5, 16, requires_grad=True)
    with rnnkit.use_threads(1):
        expected = _training_results(m, x)
    results, errors = {}, []

    @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    def member(_):
        try:
            with rnnkit.use_threads(2):
                results[gomp.omp_get_thread_num()] = _training_results(m, x)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    previous = gomp.omp_get_max_active_levels()
    gomp.omp_set_max_active_levels(levels)
    try:
        gomp.GOMP_parallel(member, None, 2, 0)
    finally:
        gomp.omp_set_max_active_levels(previous)
    assert not errors
    assert sorted(results) == [0, 1]
    for tid, got in results.items():
        for k, (a, b) in enumerate(zip(expected, got)):
            assert torch.equal(a, b), f"member {tid}: tensor {k} differs from one thread's"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_after_fork(team):
    """A forked child (a stale copy of the parent's OpenMP workers, which do not exist
    there) runs its teams on std::threads, without hanging, to the same bits. The child
    leaves torch's own parallel ops alone: torch's libgomp itself hangs in a child whose
    parent ran a parallel region (conftest sets one torch thread)."""
    m = rnnkit.LSTM(16, 96)
    x = torch.randn(9, 5, 16, requires_grad=True)
    with rnnkit.use_threads(2):
        expected = _training_results(m, x)  # the parent's team ran on `team`
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 = same bits on std::threads, 1 = not, 2 = error
        code = 2
        try:
            with rnnkit.use_threads(2):
                got = _training_results(m, x)
            code = 0 if _backend.team_backends() == ["threads"] and _backend.team_backend() == "threads" and all(
                torch.equal(a, b) for a, b in zip(expected, got)) else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0


def test_jordan_recurrence_threads_by_the_common_threshold():
    """The Jordan step (two products of B H O multiply-adds) gets a team above the same
    per-step threshold as the other cells, on the layer path and the one-call stack."""
    from rnnkit import _stack, functional
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert functional._jordan_threads(64, 64, 64) == 2       # 2 * 64 * 64 * 64 = 524,288: above it
        assert functional._jordan_threads(1, 64, 64) == 1        # 8,192: below
        m = rnnkit.JordanRNN(64, 64, 64)
        with torch.inference_mode():
            m(torch.randn(3, 64, 64))  # builds the one-call stack's plan
        plan = m.__dict__[_stack._ATTR]
        assert _stack._threads(plan, 64) == 2 and _stack._threads(plan, 1) == 1
    finally:
        torch.set_num_threads(previous)
