"""Smoke tests of the benchmark harness: it runs, prints its tables and checks its contenders
against each other. No timing is asserted; each test takes a few seconds."""

import pytest

from rnnkit import bench


def test_quick_bench_prints_every_table(tmp_path, capsys):
    out = tmp_path / "bench.md"
    code = bench.main(["--quick", "--mode", "inference,training,streaming", "--hidden", "8", "--batch", "2",
                       "--seq-len", "4", "--repeats", "2", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert out.read_text(encoding="utf-8") == text
    assert "fp32 GEMM peak" in text and "memory bandwidth" in text and "CPU:" in text
    sections = _sections(text)
    rows = []  # (columns, line)
    for mode in ("inference", "training", "streaming"):
        assert sections[mode][0] == "| " + " | ".join(bench.COLUMNS[mode]) + " |"
        rows += [(bench.COLUMNS[mode], line) for line in sections[mode][2:] if line.startswith("| ")]
    # inference and training: 5 archs x 1 H x 1 B; streaming: 5 archs x 1 H (B = 1)
    assert len(rows) == 15
    for mode in bench.PARTS:
        lines = sections[f"where rnnkit's time goes: {mode}"]
        assert lines[0] == "| " + " | ".join(bench.parts_columns(mode, mode)) + " |"
        assert len([line for line in lines[2:] if line.startswith("| ")]) == 5
    for columns, line in rows:
        cells = dict(zip(columns, (c.strip() for c in line.strip("|").split("|"))))
        for column in ("rnnkit", "rnnkit per step", "rnnkit NumPy per step", "peer time", "peer per step"):
            assert cells.get(column) != "—", f"{column} did not run: {line}"
    assert "differs from rnnkit" not in text


def _sections(text: str) -> dict:
    """"## title" -> the section's non-empty lines."""
    out = {}
    for part in ("\n" + text).split("\n## ")[1:]:
        title, *lines = part.splitlines()
        out[title] = [line for line in lines if line.strip()]
    return out


def test_bench_flags_a_peer_whose_output_differs(monkeypatch, capsys):
    build_torch = bench.CONTENDERS["torch.nn"]

    def perturbed(case, state, x, threads):
        return build_torch(case, {k: v + 0.1 for k, v in state.items()}, x, threads)

    monkeypatch.setitem(bench.CONTENDERS, "torch.nn", perturbed)
    bench.main(["--quick", "--archs", "lstm", "--mode", "inference", "--hidden", "8", "--batch", "2", "--seq-len", "4",
                "--repeats", "1", "--no-onnx"])
    assert "check: torch.nn differs from rnnkit" in capsys.readouterr().out


def test_quick_bench_prints_cells_call_and_variants(capsys):
    """The sections of issue 14's targets: cells (autograd on and off), the call cost with
    the first call of fresh modules, and one row per example setting of the registry."""
    from rnnkit import networks

    code = bench.main(["--quick", "--mode", "cells,call,variants", "--archs", "lstm,gru-rb", "--hidden", "8",
                       "--batch", "2", "--seq-len", "3", "--repeats", "2"])
    assert code == 0
    sections = _sections(capsys.readouterr().out)
    cells = [line for line in sections["cells"][2:] if line.startswith("| ")]
    assert sections["cells"][0] == "| " + " | ".join(bench.COLUMNS["cell"]) + " |"
    assert [line.split(" | ")[3] for line in cells] == ["off (inference_mode)", "on"] * 2
    assert cells[0].startswith("| lstm | 64 | 1 |") and "| torch.nn |" in cells[0] and "| reference |" in cells[2]
    call = sections["call"]
    assert call[2].startswith("| lstm | 8 | 1 | 1 |")
    assert call[3] == "| first call of a fresh module | rnnkit | torch.nn |"
    assert call[5].startswith(f"| lstm H=8 B=1 T=1, median (max) of {bench.FIRST_CALLS} | ")
    # the targets section reads these cells: the cells' two targets, the call's two
    targets = [line.split(" | ")[0][2:] for line in sections["targets"][3:] if line.startswith("| ")]
    assert targets == ["cells under inference_mode >= 3x the peer's cell", "cells with autograd >= 1.0x the peer's cell",
                       "one call (LSTM H=8 T=1 B=1) >= 1.0x onnxruntime's session.run",
                       "first call of a fresh module <= 1 ms"]
    for mode in ("inference", "training"):
        rows = [line for line in sections[f"variants: {mode}"][2:] if line.startswith("| ")]
        want = [(arch, " ".join(f"{k}={v}" for k, v in sorted(ex.items())) or "default")
                for arch in ("lstm", "gru-rb") for ex in networks.get(arch).examples]
        assert [tuple(line.split(" | ")[:2]) for line in rows] == [("| " + a, v) for a, v in want]
        for line in rows:
            assert line.split(" | ")[5] != "—" and line.split(" | ")[7] != "—", line  # rnnkit and its peer ran
    assert "| lstm | peephole=True | 8 | 2 | 3 |" in "\n".join(sections["variants: inference"])
    text = "\n".join(sum(sections.values(), []))
    assert "differs from rnnkit" not in text
    # torch.onnx cannot export an LSTM with projections: that row has no onnxruntime peer and
    # a note says why; nothing else may fail.
    failed = [line for line in text.splitlines() if "failed" in line]
    assert all("torch.onnx.export" in line for line in failed), failed
    assert not failed or "LSTMs with projections" in text


def test_bench_out_is_checked_before_the_run(tmp_path):
    """A --out the run could not write is refused at once (SystemExit from the argument
    check), not after minutes of timing (a FileNotFoundError at the end)."""
    with pytest.raises(SystemExit, match=r"--out .*: no folder .*missing to write it in"):
        bench.main(["--out", str(tmp_path / "missing" / "RESULTS.md")])
    with pytest.raises(SystemExit, match=r"--out .*: is a folder; expected the markdown file to write"):
        bench.main(["--out", str(tmp_path)])
