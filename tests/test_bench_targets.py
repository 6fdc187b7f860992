"""The benchmark's targets section: each target checked over the cells it applies to,
from made-up results (no timing here: the numbers are given)."""

import pytest

from rnnkit import bench


def _result(mode, arch, H, B, times, section="", autograd=False, first_calls=None):
    T = 1 if mode == "cell" or section == "call" else 100
    case = bench.Case(mode, arch, H, B, T, autograd=autograd, section=section)
    r = bench.Result(case)
    r.times = {name: [t] for name, t in times.items()}
    r.first_calls = first_calls or {}
    return r


def _rows(results, peak=100.0):
    return {name: rest for name, *rest in bench.target_rows(results, peak)}


def test_worst_cell_and_count_per_target():
    results = [
        _result("training", "lstm", 64, 16, {"rnnkit": 1.0, "torch.nn": 2.0}),   # 2.0x
        _result("training", "lstm", 256, 16, {"rnnkit": 2.0, "torch.nn": 1.0}),  # 0.5x
        _result("training", "gru", 64, 16, {"rnnkit": 1.0, "torch.nn": 4.0}),    # 4.0x
        _result("training", "jordan", 64, 16, {"rnnkit": 1.0, "reference": 9.0}),
    ]
    rows = _rows(results)
    assert rows["training >= 1.0x the peer, every point"] == [3, 4, "lstm H=256 B=16", "0.50x", False]
    assert rows["LSTM training >= 1.5x torch.nn at H <= 256"] == [1, 2, "lstm H=256 B=16", "0.50x", False]
    assert rows["GRU and Elman training >= 3x torch.nn at H <= 256"] == [1, 1, "gru H=64 B=16", "4.00x", True]
    assert "inference >= 1.0x the faster of the peer and onnxruntime, every point" not in rows  # no such cell


def test_inference_compares_with_the_faster_peer_and_share_of_peak():
    case = bench.Case("training", "rnn", 512, 64, 100)
    flops = case.flops
    results = [
        _result("inference", "lstm", 64, 1, {"rnnkit": 1.0, "torch.nn": 3.0, "onnxruntime": 0.8}),
        _result("inference", "gru-rb", 64, 1, {"rnnkit": 1.0, "reference": 5.0}),
        _result("training", "rnn", 512, 64, {"rnnkit": flops / 60e9, "torch.nn": 1.0}),  # 60 GFLOP/s
    ]
    rows = _rows(results, peak=100.0)
    assert rows["inference >= 1.0x the faster of the peer and onnxruntime, every point"] == \
        [1, 2, "lstm H=64 B=1", "0.80x", False]
    assert rows["training at H >= 512, B = 64: >= 70 % of the fp32 peak"] == [0, 1, "rnn H=512 B=64", "60.0 %", False]


def test_upper_bounds_cells_and_call():
    results = [
        _result("streaming", "lstm", 64, 1, {"rnnkit": 3.5e-6, "torch.nn": 1e-5}),
        _result("streaming", "rnn", 64, 1, {"rnnkit": 2.0e-6, "torch.nn": 1e-5}),
        _result("streaming", "rnn", 128, 1, {"rnnkit": 9.0e-6, "torch.nn": 1e-5}),  # not H = 64
        _result("cell", "gru", 64, 1, {"rnnkit": 1.0, "torch.nn": 3.5}, section="cells"),
        _result("cell", "gru", 64, 1, {"rnnkit": 1.0, "torch.nn": 0.9}, section="cells", autograd=True),
        _result("inference", "lstm", 8, 1, {"rnnkit": 2.0, "torch.nn": 3.0, "onnxruntime": 1.0}, section="call",
                first_calls={"rnnkit": [0.5e-3, 0.7e-3, 2e-3]}),
    ]
    rows = _rows(results)
    assert rows["streaming (torch tensors) <= 3 us per step at H = 64"] == [1, 2, "lstm H=64 B=1", "3.50 us", False]
    assert rows["cells under inference_mode >= 3x the peer's cell"] == [1, 1, "gru autograd off", "3.50x", True]
    assert rows["cells with autograd >= 1.0x the peer's cell"] == [0, 1, "gru autograd on", "0.90x", False]
    assert rows["one call (LSTM H=8 T=1 B=1) >= 1.0x onnxruntime's session.run"] == \
        [0, 1, "lstm H=8 B=1 T=1", "0.50x", False]
    assert rows["first call of a fresh module <= 1 ms"] == [1, 1, "lstm H=8 B=1 T=1", "0.700 ms", True]
    # the grid tables' targets do not read the call table's inference cell
    assert "inference >= 1.0x the faster of the peer and onnxruntime, every point" not in rows


def test_markdown_marks_a_miss():
    text = bench.targets_table([_result("training", "lstm", 256, 16, {"rnnkit": 2.0, "torch.nn": 1.0})], 100.0)
    assert "| training >= 1.0x the peer, every point | 0 of 1 | lstm H=256 B=16 | 0.50x | **no** |" in text
    assert bench.targets_table([], 100.0) == ""


@pytest.mark.parametrize("target", bench.TARGETS, ids=lambda t: t.name)
def test_every_target_reads_a_cell_the_full_grid_has(target):
    hidden, batch = list(bench.HIDDEN), list(bench.BATCH)
    cases = bench.build_cases(list(bench.MODES), list(bench.ARCHS), hidden, batch, bench.SEQ_LEN)
    assert any(target.applies(c) for c in cases)
