"""Norm of the one-step Jacobian of a recurrent layer (SPEC section 6).

For every layer, direction, step t and batch row b, the spectral norm (largest
singular value) of the Jacobian of the layer's recurrent state::

    J_t = ds_t / ds_{t-1}            s = h (Elman, GRU), (h, c) (LSTM), y (Jordan)

with the layer's input x_t held fixed. For a tanh Elman RNN
``J_t = diag(1 - h_t^2) W_hh``, so ``||J_t|| <= ||W_hh||``; the gradient reaching a step
k from step T is bounded by the product of these norms over the steps in between.

The LSTM's state is the pair (h, c): its 2H x 2H Jacobian contains the additive cell
path ``dc_t/dc_{t-1} = diag(f_t)`` that the hidden-state block ``dh_t/dh_{t-1}`` alone
misses, and it is the product of these full-state Jacobians that carries the
gradient back in time.

The states are computed once by the native forward pass (layer by layer, no Python
loop over time); the Jacobians are then evaluated for all (t, b) at once on the
reference cell (:mod:`rnnkit.reference`) by batched autograd: exactly (an SVD of
each S x S matrix, via the eigenvalues of J^T J) when the state size S is at most
``exact_max_size``, otherwise as
a power-iteration estimate of the largest singular value (a lower bound that
converges to it).
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import Tensor, nn

from .. import networks
from ..modules import _Batch, _layer_params, _reverse_time, _run_layer

__all__ = ["step_jacobian_norms", "layer_states"]

StepFn = Callable[[Tensor, Tensor], Tensor]  # (s (N, S), x (N, I)) -> s_new (N, S)

_MAX_CHUNK_ELEMENTS = 1 << 22  # N * S * S per batched Jacobian chunk (32 MiB in float64)


def _inits(module: nn.Module, spec, input, hx, lengths):
    """(batch, per layer and direction the initial states as (B, S) tensors or None),
    with the module's own input and state checks."""
    dtype = module._parameters[f"{spec.param_roles[0]}_l0"].dtype
    batch = _Batch(input, lengths, module.batch_first, module.input_size, dtype)
    D = 2 if module.bidirectional else 1
    shapes = [(module.num_layers * D, batch.B, S) for S in spec.state_widths(module)]
    states = module._initial_states(spec, batch, hx, shapes, dtype)
    return batch, [[None if s is None else s[k] for s in states] for k in range(module.num_layers * D)]


def _step_fn(spec, hyper: dict, params: list, sizes: List[int]) -> StepFn:
    """One step of the reference cell as a function of the (flattened) recurrent state."""
    def step(s, x):
        new = spec.reference_step(x, *s.split(sizes, dim=-1), *params, **hyper)
        return torch.cat(new, dim=-1) if isinstance(new, tuple) else new
    return step


def _trajectories(module: nn.Module, spec, x: Tensor, lengths: Optional[Tensor], inits: list):
    """Runs the stack natively; per layer and direction (processing time order):
    (layer input (T, B, I_l), previous states s_{t-1} side by side (T, B, S), parameters,
    output (T, B, H)). A state other than the layer's output (the LSTM's c) is read from
    the recorded internals."""
    D = 2 if module.bidirectional else 1
    widths = spec.state_widths(module)
    hyper = spec.hyper_of(module)
    result = []
    layer_input = x  # (T, B, I)
    for layer in range(module.num_layers):
        outs = []
        for direction in range(D):
            k = layer * D + direction
            params = [None if p is None else p.detach()
                      for p in _layer_params(module, spec.param_roles, layer, direction)]
            xin = _reverse_time(layer_input, lengths) if direction == 1 else layer_input
            init = [xin.new_zeros(xin.shape[1], S) if s is None else s for s, S in zip(inits[k], widths)]
            out, _, inner = _run_layer(spec, True, xin, init, params, hyper, lengths, True, None)
            paths = [out if i == 0 else inner[name] for i, name in enumerate(spec.states)]  # (T, B, S) each
            s_prev = torch.cat([torch.cat([s0[None], path[:-1]]) for s0, path in zip(init, paths)], dim=-1)
            result.append((xin, s_prev, params, out))
            outs.append(_reverse_time(out, lengths) if direction == 1 else out)
        layer_input = outs[0] if D == 1 else torch.cat(outs, dim=2)
    return result


def _exact_norms(step: StepFn, s: Tensor, x: Tensor) -> Tensor:
    """Largest singular value of ds_new/ds for every row: s (N, S), x (N, I) -> (N,)."""
    N, S = s.shape
    chunk = max(1, _MAX_CHUNK_ELEMENTS // (S * S))
    norms = []
    for start in range(0, N, chunk):  # chunks of samples, not of time
        s_c, x_c = s[start:start + chunk], x[start:start + chunk]
        _, vjp_fn = torch.func.vjp(lambda s_: step(s_, x_c), s_c)
        basis = torch.eye(S, dtype=s.dtype).unsqueeze(1).expand(S, s_c.shape[0], S)
        (rows,) = torch.func.vmap(vjp_fn)(basis)  # (S, n, S): rows[j, n] = e_j^T J_n
        jac = rows.transpose(0, 1)  # (n, S, S)
        # sigma_max = sqrt(largest eigenvalue of J^T J): as exact as an SVD, several times faster.
        norms.append(torch.linalg.eigvalsh(jac.transpose(1, 2) @ jac)[:, -1].clamp_min(0).sqrt())  # (n,)
    return torch.cat(norms)


def _power_norms(step: StepFn, s: Tensor, x: Tensor, iterations: int, seed: int) -> Tensor:
    """Power-iteration estimate of the largest singular value of ds_new/ds per row.

    ``J^T u`` is a vector-Jacobian product; ``J v`` the vector-Jacobian product of that
    (linear) map, so only reverse mode is used."""
    _, vjp_fn = torch.func.vjp(lambda s_: step(s_, x), s)  # u -> J^T u
    _, jv_fn = torch.func.vjp(lambda u: vjp_fn(u)[0], torch.zeros_like(s))  # v -> J v
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(s.shape, generator=generator, dtype=s.dtype)
    tiny = torch.finfo(s.dtype).tiny
    for _ in range(iterations):
        (u,) = jv_fn(v / v.norm(dim=1, keepdim=True).clamp_min(tiny))  # J v
        (v,) = vjp_fn(u)  # J^T J v
    (u,) = jv_fn(v / v.norm(dim=1, keepdim=True).clamp_min(tiny))
    return u.norm(dim=1)


@torch.no_grad()
def _run(module, input, hx, lengths, exact_max_size, power_iterations, seed) -> List[Tensor]:
    spec = networks.network_of(module)
    batch, inits = _inits(module, spec, input, hx, lengths)
    x, lengths = batch.x.detach(), batch.lengths
    T, B = x.shape[0], x.shape[1]
    D = 2 if module.bidirectional else 1
    sizes = list(spec.state_widths(module))
    results = []
    for k, (xin, s_prev, params, _) in enumerate(_trajectories(module, spec, x, lengths, inits)):
        step = _step_fn(spec, spec.hyper_of(module), params, sizes)
        S = s_prev.shape[-1]
        s_flat, x_flat = s_prev.reshape(T * B, S), xin.reshape(T * B, -1)
        with torch.enable_grad():
            if S <= exact_max_size:
                norms = _exact_norms(step, s_flat, x_flat)
            else:
                norms = _power_norms(step, s_flat, x_flat, power_iterations, seed)
        norms = norms.view(T, B)  # processing order
        if lengths is not None:
            active = torch.arange(T)[:, None] < lengths[None, :]
            norms = torch.where(active, norms, torch.full_like(norms, float("nan")))
        results.append(_reverse_time(norms.unsqueeze(-1), lengths).squeeze(-1) if k % D == 1 else norms)
    return results


def step_jacobian_norms(module: nn.Module, input, hx=None, *, lengths=None, exact_max_size: int = 64,
                        power_iterations: int = 30, seed: int = 0) -> List[Tensor]:
    """``||ds_t/ds_{t-1}||_2`` for every layer, direction, step and batch row.

    Args:
      module: an rnnkit recurrent layer (any network of :mod:`rnnkit.networks`).
      input, hx, lengths: as for ``module(input, hx, lengths=...)``.
      exact_max_size: state sizes S up to this get the exact norm (from the eigenvalues
        of J^T J for every S x S Jacobian); larger ones a power-iteration estimate.
      power_iterations: iterations of ``v <- J^T J v`` for the estimate.
      seed: seed of the power iteration's start vectors.

    Returns:
      A list with one (T, B) tensor per layer and direction (index l * D + d),
      in the caller's time order, NaN past a sequence's length.

    >>> rnn = rnnkit.RNN(3, 8)
    >>> norms = step_jacobian_norms(rnn, torch.randn(20, 2, 3))   # [(20, 2)]
    """
    networks.network_of(module)
    if exact_max_size < 0 or power_iterations < 1:
        raise ValueError(f"exact_max_size / power_iterations: expected >= 0 / >= 1, "
                         f"got {exact_max_size} / {power_iterations}")
    return _run(module, input, hx, lengths, exact_max_size, power_iterations, seed)


@torch.no_grad()
def layer_states(module: nn.Module, input, hx=None, *, lengths=None) -> List[Tensor]:
    """The recurrent output of every layer and direction, (T, B, H) each (T, B, O for a
    Jordan network), time-major in the caller's time order, zero past a length.

    The last entries (top layer) equal the module's own output; the others are the
    hidden states of the lower layers, which the module does not return.
    """
    spec = networks.network_of(module)
    batch, inits = _inits(module, spec, input, hx, lengths)
    D = 2 if module.bidirectional else 1
    return [_reverse_time(out, batch.lengths) if k % D == 1 else out
            for k, (_, _, _, out) in enumerate(_trajectories(module, spec, batch.x.detach(), batch.lengths, inits))]
