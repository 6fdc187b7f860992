"""Time series for ``rnnkit train forecast``: CSV files and statsmodels' built-in sets.

CSV: a header row of column names, then one row per time step in time order, fields
separated by commas. Numeric columns are the series, except a first column that holds
the time (its first value is not a number, e.g. ``1958-03``, or its name is one of
:data:`TIME_NAMES`, e.g. ``year``); ``--columns`` names the series explicitly. Every selected cell must be a finite number: a
blank or malformed cell raises :class:`~rnnkit.training.task.UsageError` with the file,
the line number and the column (fill or drop missing values first).

Built-in series (need ``statsmodels``, which ships them; nothing is downloaded):

    sunspots   yearly mean sunspot number 1700-2008 (309 values), season 11
    co2        Mauna Loa CO2 (ppm), weekly 1958-2001 averaged to 526 months (missing
               weeks skipped, a month without data linearly interpolated), season 12
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..errors import UsageError
from ._files import check_regular_file, open_text

BUILTIN = {"sunspots": 11, "co2": 12}
TIME_NAMES = ("date", "time", "datetime", "timestamp", "year", "month", "week", "day", "period", "index", "t")


@dataclass
class Series:
    """A multivariate series: ``values`` (N, F) float64, ``columns`` names, ``index`` labels
    of the time steps (years, dates or row numbers) and a known ``season`` (0: unknown)."""

    values: np.ndarray
    columns: List[str]
    index: List[str]
    season: int = 0
    name: str = ""


def read_csv_series(path: Path, columns: Optional[List[str]] = None) -> Series:
    """The selected (default: all numeric) columns of a CSV file."""
    path = check_regular_file(path, "--data")
    with open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
            rows = [(n, r) for n, r in enumerate(reader, 2) if r and any(c.strip() for c in r)]
        except StopIteration:
            raise UsageError(f"{path}: empty file; expected a header row of column names") from None
        except csv.Error as e:
            raise UsageError(f"{path}:{reader.line_num}: not readable as CSV ({e})") from None
    if not rows:
        raise UsageError(f"{path}: no data rows after the header")
    if columns:
        missing = [c for c in columns if c not in header]
        if missing:
            raise UsageError(f"--columns: {', '.join(map(repr, missing))} not in {path}'s header "
                             f"({', '.join(header)})")
        chosen = [header.index(c) for c in columns]
    else:
        chosen = []
        for i, name in enumerate(header):
            if i == 0 and name.lower() in TIME_NAMES:
                continue
            try:
                float(rows[0][1][i])
                chosen.append(i)
            except (ValueError, IndexError):
                pass
        if not chosen:
            raise UsageError(f"{path}:2: no numeric column; name the series with --columns")
    values = np.empty((len(rows), len(chosen)))
    for k, (lineno, row) in enumerate(rows):
        if len(row) != len(header):
            raise UsageError(f"{path}:{lineno}: expected {len(header)} comma-separated fields like the "
                             f"header, got {len(row)}")
        for j, i in enumerate(chosen):
            cell = row[i].strip()
            try:
                v = float(cell)
            except ValueError:
                what = "an empty cell (missing value)" if not cell else repr(cell[:30])
                raise UsageError(f"{path}:{lineno}: column {header[i]!r}: expected a number, got {what}") from None
            if not math.isfinite(v):
                raise UsageError(f"{path}:{lineno}: column {header[i]!r}: expected a finite number, got {cell!r}")
            values[k, j] = v
    first = [i for i in range(len(header)) if i not in chosen]
    index = [rows[k][1][first[0]].strip() for k in range(len(rows))] if first else \
        [str(k) for k in range(len(rows))]
    return Series(values, [header[i] for i in chosen], index, 0, path.name)


def builtin_series(name: str) -> Series:
    """A series of ``statsmodels.datasets`` (see the module doc)."""
    if name not in BUILTIN:
        raise UsageError(f"--series: expected one of {', '.join(BUILTIN)}, got {name!r}")
    try:
        import statsmodels.datasets as sd
    except ImportError:
        raise UsageError(f"--series {name}: needs the statsmodels package, which ships it "
                         "(pip install statsmodels); or pass --data FILE.csv") from None
    if name == "sunspots":
        df = sd.sunspots.load_pandas().data
        return Series(df[["SUNACTIVITY"]].to_numpy(dtype=np.float64), ["sunspots"],
                      [str(int(y)) for y in df["YEAR"]], BUILTIN[name], name)
    s = sd.co2.load_pandas().data["co2"]
    monthly = s.resample("MS").mean().interpolate()
    return Series(monthly.to_numpy(dtype=np.float64)[:, None], ["co2"],
                  [d.strftime("%Y-%m") for d in monthly.index], BUILTIN[name], name)


def estimate_season(y: np.ndarray, max_lag: int = 400) -> int:
    """The lag in [2, len/3] with the largest autocorrelation of the differenced series
    (0 when the series is too short)."""
    d = np.diff(y)
    d = d - d.mean()
    top = min(max_lag, len(d) // 3)
    if top < 2 or not d.any():
        return 0
    denom = float((d * d).sum())
    acf = [float((d[:-k] * d[k:]).sum()) / denom for k in range(2, top + 1)]
    return int(np.argmax(acf)) + 2
