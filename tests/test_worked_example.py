"""SPEC section 7, the seeds' worked example, through the native modules exactly."""
import torch

import rnnkit


def _network():
    rnn = rnnkit.RNN(2, 2, nonlinearity="identity", bias=False)
    head = torch.nn.Linear(2, 2, bias=False)  # V, the output map
    with torch.no_grad():
        for p in list(rnn.parameters()) + list(head.parameters()):
            p.fill_(1.0)
    return rnn, head


def test_worked_example_exact():
    rnn, head = _network()
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]]).unsqueeze(1)  # (T=3, B=1, I=2)
    h, h_n = rnn(x)
    assert torch.equal(h.squeeze(1), torch.tensor([[2.0, 2.0], [6.0, 6.0], [16.0, 16.0]]))
    assert torch.equal(head(h).squeeze(1), torch.tensor([[4.0, 4.0], [12.0, 12.0], [32.0, 32.0]]))
    assert torch.equal(h_n.squeeze(), torch.tensor([16.0, 16.0]))


def test_worked_example_is_order_sensitive():
    rnn, head = _network()
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]]).unsqueeze(1)
    forward_out = head(rnn(x)[0])
    reversed_out = head(rnn(x.flip(0))[0])
    assert torch.equal(reversed_out.squeeze(1), torch.tensor([[8.0, 8.0], [20.0, 20.0], [44.0, 44.0]]))
    assert not torch.equal(forward_out, reversed_out)


def test_worked_example_cell_by_hand():
    rnn, _ = _network()
    cell = rnnkit.RNNCell(2, 2, bias=False, nonlinearity="identity")
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in rnn.state_dict().items()})
    h = None
    for x_t, expected in zip([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]], [2.0, 6.0, 16.0]):
        h = cell(torch.tensor(x_t), h)
        assert torch.equal(h, torch.tensor([expected, expected]))
