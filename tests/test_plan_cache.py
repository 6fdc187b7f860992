"""rnnkit._cache.PlanCache: a plan is rebuilt after every way a parameter can change,
and only then."""
import pytest
import torch
from torch import nn

import rnnkit
from rnnkit._cache import PlanCache


def _plan_of(module, cache):
    """The 'plan' is a snapshot of the parameter values, so a stale one is visible."""
    params = list(module.parameters())
    return cache.get(params, lambda: [p.detach().clone() for p in params])


def _fresh(module, cache):
    plan = _plan_of(module, cache)
    return all(torch.equal(a, p.detach()) and a.dtype == p.dtype for a, p in zip(plan, module.parameters()))


@pytest.fixture
def lstm():
    torch.manual_seed(0)
    return rnnkit.LSTM(3, 4)


def test_unchanged_parameters_reuse_the_plan(lstm):
    cache = PlanCache()
    first = _plan_of(lstm, cache)
    assert _plan_of(lstm, cache) is first and cache.builds == 1
    lstm(torch.randn(2, 1, 3))[0].sum().backward()  # a gradient is not a change of the weights
    assert _plan_of(lstm, cache) is first and cache.builds == 1


def _optimizer_step(m):
    m(torch.randn(2, 1, 3))[0].sum().backward()
    torch.optim.SGD(m.parameters(), lr=0.1).step()


def _load_state_dict(m):
    m.load_state_dict({k: v + 1 for k, v in m.state_dict().items()})


def _data_assignment(m):
    m.weight_hh_l0.data = m.weight_hh_l0.data * 2


def _in_place_no_grad(m):
    with torch.no_grad():
        m.bias_ih_l0.add_(1)


def _init(m):
    nn.init.zeros_(m.weight_ih_l0)


def _new_parameter(m):
    m.weight_hh_l0 = nn.Parameter(torch.randn_like(m.weight_hh_l0))


def _to_double(m):
    m.to(torch.float64)


def _same_values_new_object(m):
    m.bias_hh_l0 = nn.Parameter(m.bias_hh_l0.detach().clone())


def _write_through_data(m):
    m.weight_hh_l0.data.add_(1)  # bumps no version counter (hand-written training loops do this)


def _write_through_numpy(m):
    m.bias_ih_l0.detach().numpy()[0] += 1  # neither does NumPy


def _manual_sgd(m):
    m(torch.randn(2, 1, 3))[0].sum().backward()
    for p in m.parameters():
        p.data -= 0.1 * p.grad


@pytest.mark.parametrize("change", [_optimizer_step, _load_state_dict, _data_assignment, _in_place_no_grad,
                                    _init, _new_parameter, _to_double, _same_values_new_object,
                                    _write_through_data, _write_through_numpy, _manual_sgd])
def test_every_way_a_parameter_changes_rebuilds_the_plan(lstm, change):
    cache = PlanCache()
    assert _fresh(lstm, cache) and cache.builds == 1
    change(lstm)
    assert _fresh(lstm, cache) and cache.builds == 2
    assert _fresh(lstm, cache) and cache.builds == 2  # and once only


def test_a_freed_storage_cannot_pass_as_the_watched_one(lstm):
    # Between two calls the watched storage is replaced twice: the first replacement
    # frees it (but for the cache's pin), and the second could then be allocated at its
    # address with the same version, and the stale plan would pass.
    cache = PlanCache()
    w = lstm.weight_hh_l0
    for _ in range(50):
        assert _fresh(lstm, cache)
        w.data = torch.randn_like(w)
        w.data = torch.randn_like(w)
    assert _fresh(lstm, cache)


def test_same_storage_and_bytes_in_another_layout_rebuilds():
    """A square weight replaced by its transpose: same address, shape and bytes, other values."""
    w = nn.Parameter(torch.arange(9.0).reshape(3, 3))
    cache = PlanCache()
    assert torch.equal(cache.get([w], lambda: w.detach().clone()), w)
    w.data = w.data.t()
    assert torch.equal(cache.get([w], lambda: w.detach().clone()), w) and cache.builds == 2
    assert torch.equal(cache.get([w], lambda: w.detach().clone()), w) and cache.builds == 3  # never known unchanged


def test_parameters_made_under_inference_mode_are_cached():
    with torch.inference_mode():
        m = rnnkit.LSTM(3, 4)
    cache = PlanCache()
    assert _fresh(m, cache) and _fresh(m, cache) and cache.builds == 1
    with torch.inference_mode():
        m.weight_ih_l0.add_(1)
    assert _fresh(m, cache) and cache.builds == 2


def test_absent_parameters_and_clear():
    cache = PlanCache()
    w = nn.Parameter(torch.ones(2))
    built = []
    plan = cache.get([w, None], lambda: built.append(1) or "p")
    assert plan == "p" and cache.get([w, None], lambda: "q") == "p"
    assert cache.get([w, w], lambda: "r") == "r"  # a different parameter list
    cache.clear()
    assert cache.get([w, w], lambda: "s") == "s" and cache.builds == 3
