"""Hostile data files (issue 12): every damaged, absurd or endless input ends in one line
naming the file (and the line where there is one), exit status 2, and no run folder left
behind; nothing is silently dropped or read without end.

Each probe writes one bad input for one task's reader and runs `rnnkit train TASK --data`
(the readers run before any training). The probe list is the count reported for data
files in the issue's closing note.
"""
import bz2
import gzip
import json
import lzma
import os

import numpy as np
import pytest

from cli_support import STDLIB, TINY, run_cli, train_tiny, write_corpus

QUIET = ["--threads", "1", "--progress", "off", "--tensorboard", "off"]


# ---- writers of bad inputs ------------------------------------------------------------------
def _csv_rows(n=60):
    return "t,a\n" + "".join(f"{i},{np.sin(i / 3):.4f}\n" for i in range(n))


def _corrupt(data: bytes) -> bytes:
    """The same compressed stream with bytes in its middle overwritten."""
    mid = len(data) // 2
    return data[:mid] + b"\xff\x00\xee\x11" * 4 + data[mid + 16:]


def forecast_non_utf8(d):
    p = d / "s.csv"
    p.write_bytes(_csv_rows().encode() + "12,caf\u00e9\n".encode("latin-1"))
    return p, ["not UTF-8"]


def forecast_huge_field(d):
    p = d / "s.csv"
    p.write_text(_csv_rows() + "99," + "7" * 200_000 + "\n")
    return p, ["s.csv:62", "field larger"]


def forecast_nul_byte(d):
    p = d / "s.csv"
    p.write_bytes(_csv_rows().encode() + b"61,0.\x005\n")
    return p, ["s.csv:62", "expected a number"]


def forecast_corrupt_gz(d):
    p = d / "s.csv.gz"
    p.write_bytes(_corrupt(gzip.compress(_csv_rows(4000).encode())))
    return p, ["s.csv.gz"]


def forecast_truncated_gz(d):
    p = d / "s.csv.gz"
    data = gzip.compress(_csv_rows(4000).encode())
    p.write_bytes(data[:len(data) // 2])
    return p, ["s.csv.gz", "truncated"]


def forecast_corrupt_xz(d):
    p = d / "s.csv.xz"
    p.write_bytes(_corrupt(lzma.compress(_csv_rows(4000).encode())))
    return p, ["s.csv.xz", "corrupt"]


def forecast_corrupt_bz2(d):
    p = d / "s.csv.bz2"
    p.write_bytes(_corrupt(bz2.compress(_csv_rows(4000).encode())))
    return p, ["s.csv.bz2"]


def forecast_nan_cell(d):
    p = d / "s.csv"
    p.write_text(_csv_rows() + "61,nan\n")
    return p, ["s.csv:62", "finite"]


def forecast_dev_zero(d):
    return "/dev/zero", ["/dev/zero", "not a regular file"]


def _songs(pitch):
    song = [[60, 64], [62], [pitch]]
    return {"train": [song, song], "valid": [song], "test": [song]}


def music_nan_pitch(d):
    p = d / "m.json"
    p.write_text(json.dumps(_songs(float("nan"))))      # JSON NaN, as json.dumps writes it
    return p, ["m.json", "train song 0 step 2", "integer MIDI pitches"]


def music_huge_pitch(d):
    p = d / "m.json"
    p.write_text(json.dumps(_songs(60)).replace("[60]", "[1e400]"))
    return p, ["m.json", "step 2", "integer MIDI pitches"]


def music_deep_json(d):
    p = d / "m.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    return p, ["m.json", "nested too deeply"]


def music_fifo(d):
    p = d / "m.json"
    os.mkfifo(p)
    return p, ["m.json", "not a regular file"]


def _npz(d, **arrays):
    p = d / "train.npz"
    np.savez(p, **arrays)
    return p


def classify_complex_x(d):
    x = (np.ones((6, 3)) + 1j * np.ones((6, 3)))
    return _npz(d, x=x, lengths=[3, 3], y=[0, 1]), ["train.npz", "real numbers", "complex"]


def classify_zero_features(d):
    return _npz(d, x=np.ones((2, 5, 0)), lengths=[5, 5], y=[0, 1]), ["train.npz", "0 features"]


def classify_empty(d):
    return (_npz(d, x=np.ones((0, 3)), lengths=np.zeros(0, dtype=int), y=np.zeros(0)),
            ["train.npz", "no sequences"])


def classify_scalar_y(d):
    return _npz(d, x=np.ones((6, 3)), lengths=[3, 3], y=np.array(1)), ["train.npz", "'y'"]


def classify_csv_non_utf8(d):
    p = d / "train.csv"
    p.write_bytes(b"id,label,f\n1,a,0.5\n1,a,0.7\n2,b,0.\xe9\n")
    return p, ["train.csv", "not UTF-8"]


def classify_csv_huge_field(d):
    p = d / "train.csv"
    p.write_text("id,label,f\n1,a,0.5\n2,b," + "1" * 200_000 + "\n")
    return p, ["train.csv:3", "field larger"]


def classify_ts_dimensions_missing(d):
    p = d / "train.ts"
    p.write_text("@problemName x\n@dimensions\n@data\n1,2,3:a\n")
    return p, ["train.ts:2", "@dimensions"]


def classify_ts_dimensions_word(d):
    p = d / "train.ts"
    p.write_text("@problemName x\n@dimensions two\n@data\n1,2,3:a\n")
    return p, ["train.ts:2", "@dimensions"]


def classify_ts_corrupt_xz(d):
    p = d / "train.ts.xz"
    rows = "".join(f"{i},{i + 1},{i + 2}:{'ab'[i % 2]}\n" for i in range(3000))
    p.write_bytes(_corrupt(lzma.compress(("@dimensions 1\n@data\n" + rows).encode())))
    return p, ["train.ts.xz", "corrupt"]


def classify_ts_corrupt_gz(d):
    p = d / "train.ts.gz"
    rows = "".join(f"{i},{i + 1},{i + 2}:{'ab'[i % 2]}\n" for i in range(3000))
    p.write_bytes(_corrupt(gzip.compress(("@dimensions 1\n@data\n" + rows).encode())))
    return p, ["train.ts.gz"]


def _conllu(n=200):
    return "".join(f"1\tw{i}\t_\tNOUN\t_\t_\t0\troot\t_\t_\n2\tv{i}\t_\tVERB\t_\t_\t1\tdep\t_\t_\n\n"
                   for i in range(n))


def tag_corrupt_xz(d):
    (d / "dev.conllu").write_text(_conllu(5))
    (d / "train.conllu.xz").write_bytes(_corrupt(lzma.compress(_conllu(3000).encode())))
    return d, ["train.conllu.xz", "corrupt"]


def tag_corrupt_gz(d):
    (d / "dev.conllu").write_text(_conllu(5))
    (d / "train.conllu.gz").write_bytes(_corrupt(gzip.compress(_conllu(3000).encode())))
    return d, ["train.conllu.gz"]


def lm_dev_zero(d):
    return "/dev/zero", ["--data /dev/zero", "not a regular file"]


def lm_fifo(d):
    p = d / "pipe.txt"
    os.mkfifo(p)
    return p, ["pipe.txt", "not a regular file"]


def lm_gz_text(d):
    p = d / "c.txt.gz"
    p.write_bytes(gzip.compress(b"hello\n" * 1000))
    return p, ["c.txt.gz", "expected UTF-8 text"]


PROBES = [
    ("forecast", forecast_non_utf8), ("forecast", forecast_huge_field), ("forecast", forecast_nul_byte),
    ("forecast", forecast_corrupt_gz), ("forecast", forecast_truncated_gz), ("forecast", forecast_corrupt_xz),
    ("forecast", forecast_corrupt_bz2), ("forecast", forecast_nan_cell), ("forecast", forecast_dev_zero),
    ("music", music_nan_pitch), ("music", music_huge_pitch), ("music", music_deep_json), ("music", music_fifo),
    ("classify", classify_complex_x), ("classify", classify_zero_features), ("classify", classify_empty),
    ("classify", classify_scalar_y), ("classify", classify_csv_non_utf8), ("classify", classify_csv_huge_field),
    ("classify", classify_ts_dimensions_missing), ("classify", classify_ts_dimensions_word),
    ("classify", classify_ts_corrupt_xz), ("classify", classify_ts_corrupt_gz),
    ("tag", tag_corrupt_xz), ("tag", tag_corrupt_gz),
    ("lm", lm_dev_zero), ("lm", lm_fifo), ("lm", lm_gz_text),
]


@pytest.mark.parametrize("task, make", PROBES, ids=[m.__name__ for _, m in PROBES])
def test_bad_data_file_is_one_line(tmp_path, task, make):
    d = tmp_path / "data"
    d.mkdir()
    path, needles = make(d)
    out_dir = tmp_path / "out"
    rc, out, err = run_cli(["train", task, *QUIET, "--steps", "2", "--data", path, "--out", out_dir])
    assert rc == 2, (rc, err[-2000:])
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    assert not out_dir.exists(), "a run folder was left behind"


# ---- the language model's own findings -------------------------------------------------------
@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hlm")
    rc, _, err, run_dir = train_tiny(tmp, "--steps", "10", "--eval-every", "10", "--sample-length", "0")
    assert rc == 0, err
    return run_dir


def test_evaluate_on_text_entirely_outside_the_vocabulary_is_refused(lm_run, tmp_path):
    foreign = tmp_path / "han.txt"
    foreign.write_text("\u4f60\u597d\u4e16\u754c" * 500)
    rc, out, err = run_cli(["evaluate", lm_run, "--data", foreign])
    assert rc == 2 and out == "", err
    assert "han.txt" in err and "none of its" in err and len(err.strip().splitlines()) == 1


def test_evaluate_counts_characters_outside_the_vocabulary(lm_run, tmp_path):
    mixed = tmp_path / "mixed.txt"
    mixed.write_text((STDLIB / "textwrap.py").read_text("utf-8")[:3000] + "\u4f60" * 300)
    rc, out, err = run_cli(["evaluate", lm_run, "--data", mixed, "--json"])
    assert rc == 0, err
    res = json.loads(out)
    assert 200 < res["unknown_chars"] <= res["items"]
    assert "not in the checkpoint's vocabulary" in err


def test_a_corpus_without_line_breaks_trains_samples_and_writes_its_summary(tmp_path):
    text = (STDLIB / "textwrap.py").read_text("utf-8").replace("\n", " ")
    d = tmp_path / "d"
    d.mkdir()
    (d / "one_line.txt").write_text(text)
    rc, out, err, run_dir = train_tiny(tmp_path, "--steps", "6", "--eval-every", "6", data=d / "one_line.txt")
    assert rc == 0, err
    assert (run_dir / "summary.json").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["sample"]) == 40 and "\n" not in summary["sample"]
    rc, out, err = run_cli(["sample", run_dir, "--length", "20"])     # no --prime
    assert rc == 0, err
    assert len(out.rstrip("\n")) == 20


def test_min_count_above_every_count_is_one_line(tmp_path):
    rc, out, err, run_dir = train_tiny(tmp_path, "--min-count", "1000000")
    assert rc == 2 and "--min-count 1000000" in err and len(err.strip().splitlines()) == 1, err
    assert not run_dir.exists()


@pytest.mark.parametrize("args, needles", [
    (["evaluate", "RUN", "--data", "/dev/zero"], ["/dev/zero", "not a regular file"]),
    (["visualize", "RUN", "--text-file", "/dev/zero", "--out", "OUT/p.html"], ["/dev/zero", "not a regular file"]),
    (["evaluate", "RUN", "--data", "MISSING"], ["MISSING", "no such file"]),
])
def test_other_commands_refuse_devices_and_missing_files(lm_run, tmp_path, args, needles):
    args = [str(lm_run) if a == "RUN" else a.replace("OUT", str(tmp_path)).replace("MISSING", str(tmp_path / "nope.txt"))
            for a in args]
    needles = [n.replace("MISSING", "nope.txt") for n in needles]
    rc, out, err = run_cli(args)
    assert rc == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
