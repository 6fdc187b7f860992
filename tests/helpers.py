"""Shared test helpers: build twin modules, run forward+backward, compare everything."""
import torch

from conftest import TOL, rel_err


def twin(torch_cls, rnnkit_cls, *args, dtype=torch.float64, **kwargs):
    """A torch.nn module and an rnnkit module with identical weights."""
    t = torch_cls(*args, **kwargs).to(dtype)
    r = rnnkit_cls(*args, **kwargs).to(dtype)
    r.load_state_dict(t.state_dict())
    return t, r


def flatten_outputs(result):
    """(output, state) with PackedSequence / tuples -> list of tensors."""
    out, state = result
    out = out.data if hasattr(out, "batch_sizes") else out
    states = list(state) if isinstance(state, tuple) else [state]
    return [out] + states


def forward_backward(module, inputs, call):
    """Runs call(module, *inputs); backprops a fixed random projection of all outputs;
    returns (outputs, grads of inputs that require grad, grads of parameters)."""
    outs = flatten_outputs(call(module, *inputs))
    g = torch.Generator().manual_seed(1234)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    leaves = [i for i in inputs if isinstance(i, torch.Tensor) and i.requires_grad]
    params = [p for p in module.parameters()]
    grads = torch.autograd.grad(loss, leaves + params, allow_unused=True)
    return outs, grads[: len(leaves)], grads[len(leaves):]


def assert_all_close(a_list, b_list, dtype, what):
    tol = TOL[dtype]
    assert len(a_list) == len(b_list), what
    for k, (a, b) in enumerate(zip(a_list, b_list)):
        if a is None or b is None:
            assert a is None and b is None, f"{what}[{k}]: one gradient is None"
            continue
        assert a.shape == b.shape, f"{what}[{k}]: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        err = rel_err(a, b)
        assert err <= tol, f"{what}[{k}]: relative error {err:.3g} > {tol:g}"
