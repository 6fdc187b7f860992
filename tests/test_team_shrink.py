"""The recurrence's thread team may shrink to one thread at any barrier (on a loaded
machine, csrc/parallel.cpp); RNNKIT_TEAM_SHRINK_AT=k forces that at the k-th barrier.
Outputs, final states and every gradient stay bit-identical to one thread's, wherever
in a step (forward or backward phase) the shrink falls, with and without lengths, on
every team backend (the ``team`` fixture)."""
import pytest
import torch

import rnnkit

T, B, I, H = 6, 4, 9, 70
LENGTHS = torch.tensor([6, 2, 5, 1])


def _results(m, x, lengths):
    out, final = m(x, lengths=lengths)
    outputs = [out] + (list(final) if isinstance(final, tuple) else [final])
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outputs)
    return [o.detach() for o in outputs] + list(torch.autograd.grad(loss, [x, *m.parameters()]))


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_shrink_anywhere_keeps_the_bits(network, lengths, team, monkeypatch):
    torch.manual_seed(0)
    m = network.layer(I, H, torch.float32)
    x = torch.randn(T, B, I, requires_grad=True)
    with rnnkit.use_threads(1):
        expected = _results(m, x, lengths)
    for at in (1, 2, 3, 5, 8):  # the first barriers fall in every phase of a step
        monkeypatch.setenv("RNNKIT_TEAM_SHRINK_AT", str(at))
        with rnnkit.use_threads(3):
            got = _results(m, x, lengths)
        for k, (a, b) in enumerate(zip(expected, got)):
            assert torch.equal(a, b), f"tensor {k} differs after a shrink at barrier {at}"


def test_a_stream_keeps_its_team(team, monkeypatch):
    """A stream step's team never shrinks (its body splits work once per step): the forced
    shrink applies to the sequence kernels only, and the stream still equals the module."""
    torch.manual_seed(0)
    m = rnnkit.LSTM(I, H, num_layers=2)
    x = torch.randn(5, 2, I)
    with torch.no_grad():
        expected = m(x)[0]
    monkeypatch.setenv("RNNKIT_TEAM_SHRINK_AT", "2")
    with rnnkit.use_threads(3):
        stream = rnnkit.Stream(m, batch_size=2)
        got = torch.stack([torch.as_tensor(stream.step(x[t])) for t in range(5)])
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", rnnkit.networks.names())
def test_shrink_with_training_masks_keeps_the_bits(name, team, monkeypatch):
    """Zoneout and recurrent dropout in training (SPEC section 16) add phases and barriers
    to a step (csrc/recurrence.h): a shrink at any of them changes no bit either."""
    spec = rnnkit.networks.get(name)
    torch.manual_seed(0)
    m = spec.make(I, H, zoneout=0.3, recurrent_dropout=0.3).train()
    x = torch.randn(T, B, I, requires_grad=True)
    torch.manual_seed(1)  # the masks: the same draws for every run
    with rnnkit.use_threads(1):
        expected = _results(m, x, LENGTHS)
    for at in (1, 2, 3, 4, 5, 6, 8, 11):
        monkeypatch.setenv("RNNKIT_TEAM_SHRINK_AT", str(at))
        torch.manual_seed(1)
        with rnnkit.use_threads(3):
            got = _results(m, x, LENGTHS)
        for k, (a, b) in enumerate(zip(expected, got)):
            assert torch.equal(a, b), f"{name}: tensor {k} differs after a shrink at barrier {at}"
