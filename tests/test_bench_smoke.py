"""Smoke tests of the benchmark harness: it runs, prints its tables and checks its contenders
against each other. No timing is asserted; each test takes a few seconds."""

from rnnkit import bench


def test_quick_bench_prints_every_table(tmp_path, capsys):
    out = tmp_path / "bench.md"
    code = bench.main(["--quick", "--hidden", "8", "--batch", "2", "--seq-len", "4", "--repeats", "2",
                       "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert out.read_text(encoding="utf-8") == text
    assert "fp32 GEMM peak" in text and "memory bandwidth" in text and "CPU:" in text
    sections = _sections(text)
    rows = []
    for mode, columns in bench.COLUMNS.items():
        assert sections[mode][0] == "| " + " | ".join(columns) + " |"
        rows += [line for line in sections[mode][2:] if line.startswith("| ")]
    # inference and training: 5 archs x 1 H x 1 B; streaming: 5 archs x 1 H (B = 1)
    assert len(rows) == 15
    for mode in bench.PARTS:
        lines = sections[f"where rnnkit's time goes: {mode}"]
        assert lines[0] == "| " + " | ".join(bench.parts_columns(mode)) + " |"
        assert len([line for line in lines[2:] if line.startswith("| ")]) == 5
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[4] != "—", f"rnnkit did not run: {line}"
        assert cells[6] != "—", f"the peer did not run: {line}"
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
