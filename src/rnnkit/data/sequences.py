"""Labelled variable-length multivariate sequences, for ``rnnkit train classify``.

A split is a list of (T_i, F) float arrays and a list of string labels. Three file
formats are read (the suffix decides; ``.xz`` / ``.gz`` compression is allowed for text):

* ``.npz`` (numpy): either ``x`` (N, T_max, F) padded with ``lengths`` (N,), or ``x``
  (Σ T_i, F) the sequences one after another with ``lengths`` (N,); and ``y`` (N,) the
  labels (numbers or strings). Written with e.g.
  ``np.savez(path, x=np.concatenate(seqs), lengths=[len(s) for s in seqs], y=labels)``.
  Read without pickle (object arrays are refused).
* ``.csv``: a header ``id,label,<feature>,<feature>,...`` then one row per time step, in
  time order; consecutive rows with the same ``id`` form one sequence.
* ``.ts``: the sktime / UEA-UCR archive format (``@`` header lines, then one sequence a
  line, dimensions separated by ``:``, values by ``,``, the class label last), as in
  ``JapaneseVowels_TRAIN.ts``.

A malformed line raises :class:`~rnnkit.training.task.UsageError` with the file and the
line number.

Built-in: :func:`japanese_vowels` finds ``JapaneseVowels_TRAIN.ts`` / ``_TEST.ts``
inside an installed ``sktime`` or ``aeon`` package (both ship the files in their
wheels; nothing is downloaded): 9 speakers, 12 LPC cepstrum coefficients, 7-29 frames,
270 training and 370 test utterances (Kudo et al. 1999).
"""
from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..errors import UsageError
from ._files import check_regular_file, open_text, strip_compression

Split = Tuple[List[np.ndarray], List[str]]        # (sequences (T_i, F) float32, labels)


def _number(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"{where}: expected a number, got {text.strip()[:30]!r}") from None
    if not math.isfinite(v):
        raise UsageError(f"{where}: expected a finite number, got {text.strip()!r}")
    return v


def read_ts(path: Path) -> Split:
    """Sequences and labels of an sktime/UEA ``.ts`` file."""
    seqs: List[np.ndarray] = []
    labels: List[str] = []
    in_data = False
    dims = None
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{lineno}"
            if not in_data:
                if line.lower().startswith("@data"):
                    in_data = True
                elif line.lower().startswith("@dimensions"):
                    value = line.split()[1] if len(line.split()) > 1 else ""
                    if not value.isdigit() or int(value) < 1:
                        raise UsageError(f"{where}: expected '@dimensions N' with an integer N >= 1, "
                                         f"got {line[:60]!r}")
                    dims = int(value)
                elif not line.startswith("@"):
                    raise UsageError(f"{where}: expected an @ header line or @data before the data")
                continue
            parts = line.split(":")
            if len(parts) < 2:
                raise UsageError(f"{where}: expected dimensions separated by ':' and a class label last")
            label = parts[-1].strip()
            channels = [[_number(v, f"{where}, dimension {d + 1}") for v in p.split(",")]
                        for d, p in enumerate(parts[:-1])]
            if dims is not None and len(channels) != dims:
                raise UsageError(f"{where}: expected {dims} dimensions (@dimensions), got {len(channels)}")
            n = {len(c) for c in channels}
            if len(n) != 1:
                raise UsageError(f"{where}: the dimensions have different lengths {sorted(n)}")
            seqs.append(np.array(channels, dtype=np.float32).T)          # (T, F)
            labels.append(label)
    if not in_data:
        raise UsageError(f"{path}: no @data line; not a .ts file")
    return seqs, labels


def read_csv(path: Path) -> Split:
    """Sequences and labels of a long-format CSV (id, label, features...)."""
    with open_text(path) as f:
        reader = csv.reader(f)
        try:
            return _read_csv_rows(path, reader)
        except csv.Error as e:  # a NUL byte, a field over csv.field_size_limit(), ...
            raise UsageError(f"{path}:{reader.line_num}: not readable as CSV ({e})") from None


def _read_csv_rows(path: Path, reader) -> Split:
    seqs: List[np.ndarray] = []
    labels: List[str] = []
    try:
        header = next(reader)
    except StopIteration:
        raise UsageError(f"{path}: empty file") from None
    if len(header) < 3 or header[0].strip().lower() != "id" or header[1].strip().lower() != "label":
        raise UsageError(f"{path}:1: expected the header id,label,<feature>,...; got {','.join(header)[:60]!r}")
    nf = len(header) - 2
    cur_id, cur_label, rows = None, None, []
    for lineno, row in enumerate(reader, 2):
        if not row or not any(c.strip() for c in row):
            continue
        where = f"{path}:{lineno}"
        if len(row) != nf + 2:
            raise UsageError(f"{where}: expected {nf + 2} comma-separated fields like the header, "
                             f"got {len(row)}")
        sid, label = row[0].strip(), row[1].strip()
        values = [_number(v, f"{where}, column {header[i + 2]!r}") for i, v in enumerate(row[2:])]
        if sid != cur_id:
            if rows:
                seqs.append(np.array(rows, dtype=np.float32))
                labels.append(cur_label)
            cur_id, cur_label, rows = sid, label, []
        elif label != cur_label:
            raise UsageError(f"{where}: sequence {sid!r} has label {label!r} here and {cur_label!r} "
                             "on its earlier rows")
        rows.append(values)
    if rows:
        seqs.append(np.array(rows, dtype=np.float32))
        labels.append(cur_label)
    return seqs, labels


def read_npz(path: Path) -> Split:
    """Sequences and labels of an ``.npz`` file (see the module doc)."""
    try:
        z = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise UsageError(f"{path}: {e} (object arrays are not read; store labels as numbers or "
                         "fixed-width strings)") from None
    except Exception as e:
        raise UsageError(f"{path}: not a readable .npz file ({e})") from None
    with z:
        for key in ("x", "lengths", "y"):
            if key not in z.files:
                raise UsageError(f"{path}: missing array {key!r}; expected x, lengths and y "
                                 f"(found {', '.join(z.files) or 'none'})")
        try:
            x, lengths, y = z["x"], z["lengths"], z["y"]
        except ValueError as e:
            raise UsageError(f"{path}: {e}") from None
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer) or (lengths < 1).any():
        raise UsageError(f"{path}: 'lengths' must be a 1-D array of integers >= 1")
    if np.ndim(y) != 1:
        raise UsageError(f"{path}: 'y' must be a 1-D array of labels, got shape {np.shape(y)}")
    if len(y) != len(lengths):
        raise UsageError(f"{path}: 'y' has {len(y)} labels, 'lengths' {len(lengths)} entries")
    if len(lengths) == 0:
        raise UsageError(f"{path}: no sequences ('lengths' is empty)")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UsageError(f"{path}: 'x' must hold real numbers (integers or floats), got dtype {x.dtype}")
    if x.ndim in (2, 3) and x.shape[-1] == 0:
        raise UsageError(f"{path}: 'x' has 0 features (shape {x.shape}); expected at least one")
    if x.ndim == 3:
        if x.shape[0] != len(lengths) or lengths.max() > x.shape[1]:
            raise UsageError(f"{path}: 'x' {x.shape} (N, T_max, F) does not fit 'lengths' "
                             f"(N={len(lengths)}, max {lengths.max()})")
        seqs = [x[i, :n].astype(np.float32) for i, n in enumerate(lengths)]
    elif x.ndim == 2:
        if x.shape[0] != lengths.sum():
            raise UsageError(f"{path}: 'x' has {x.shape[0]} rows but the lengths add up to {lengths.sum()}")
        ends = np.cumsum(lengths)
        seqs = [x[e - n:e].astype(np.float32) for e, n in zip(ends, lengths)]
    else:
        raise UsageError(f"{path}: 'x' must be (N, T_max, F) or (sum of lengths, F), got shape {x.shape}")
    bad = [i for i, s in enumerate(seqs) if not np.isfinite(s).all()]
    if bad:
        raise UsageError(f"{path}: sequence {bad[0]} holds NaN or Inf")
    return seqs, [str(v) for v in y.tolist()]


def read_sequences(path: Path) -> Split:
    """A split file of any supported format; UsageError when empty or ragged in F."""
    path = check_regular_file(path)
    name = strip_compression(path.name).lower()
    if name.endswith(".ts"):
        seqs, labels = read_ts(path)
    elif name.endswith(".csv"):
        seqs, labels = read_csv(path)
    elif name.endswith(".npz"):
        seqs, labels = read_npz(path)
    else:
        raise UsageError(f"{path}: unknown format; expected .npz, .csv or .ts")
    if not seqs:
        raise UsageError(f"{path}: no sequences found")
    widths = {s.shape[1] for s in seqs}
    if len(widths) != 1:
        raise UsageError(f"{path}: sequences have different numbers of features {sorted(widths)}")
    return seqs, labels


def japanese_vowels_dir() -> Optional[Path]:
    """The folder of JapaneseVowels_*.ts inside an installed sktime or aeon, or None."""
    for pkg in ("sktime", "aeon"):
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            d = Path(root) / "datasets" / "data" / "JapaneseVowels"
            if (d / "JapaneseVowels_TRAIN.ts").is_file():
                return d
    return None
