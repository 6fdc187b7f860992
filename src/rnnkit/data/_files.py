"""Files on the local machine: default data folders, compressed text, split file names."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UsageError

SPLITS = ("train", "valid", "test")


def shared_data(name: str) -> Path:
    """The default location of a data set of ``shared/data`` (see its README).

    Looks in ``$RNNKIT_DATA/NAME``, ``../shared/data/NAME`` from the working directory,
    then beside the source tree; returns the working-directory path when none exists, so
    that an error message names the place a user expects.
    """
    cwd = Path("..") / "shared" / "data" / name
    candidates = []
    if os.environ.get("RNNKIT_DATA"):
        candidates.append(Path(os.environ["RNNKIT_DATA"]) / name)
    candidates.append(cwd)
    candidates.append(Path(__file__).resolve().parents[4] / "shared" / "data" / name)
    for c in candidates:
        if c.exists():
            return c
    return cwd


def missing_data(option: str, path: Path, what: str) -> UsageError:
    return UsageError(f"{option} {path}: not found; expected {what} "
                      "(the project's data lives in ../shared/data beside the repository, see its README)")


def open_text(path: Path) -> io.TextIOBase:
    """A text stream of ``path``, decompressed by its suffix (.xz, .gz, .bz2)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".xz":
            return lzma.open(path, "rt", encoding="utf-8")
        if suffix == ".gz":
            return gzip.open(path, "rt", encoding="utf-8")
        if suffix == ".bz2":
            return bz2.open(path, "rt", encoding="utf-8")
        return open(path, "r", encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror or e})") from None


def strip_compression(name: str) -> str:
    for s in (".xz", ".gz", ".bz2"):
        if name.lower().endswith(s):
            return name[:-len(s)]
    return name


def split_of(name: str) -> Optional[str]:
    """The split a file name says it holds: train, valid (dev, valid, testa) or test."""
    stem = strip_compression(name).lower()
    for ext in (".conllu", ".conll", ".txt", ".bio", ".iob", ".iob2", ".tsv", ".ts", ".npz", ".csv",
                ".json"):
        if stem.endswith(ext):
            stem = stem[:-len(ext)]
            break
    words = stem.replace("-", "_").replace(".", "_").split("_")
    if "train" in words:
        return "train"
    if "dev" in words or "valid" in words or "validation" in words or "testa" in words:
        return "valid"
    if "test" in words or "testb" in words:
        return "test"
    return None


def find_split_files(folder: Path, suffixes: Sequence[str], option: str = "--data") -> dict:
    """{split: file} for the files in ``folder`` whose names end with one of ``suffixes``
    (compressed or not) and name a split; UsageError when a split has two files."""
    found: dict = {}
    for p in sorted(Path(folder).iterdir()):
        name = strip_compression(p.name).lower()
        if not p.is_file() or not any(name.endswith(s) for s in suffixes):
            continue
        split = split_of(p.name)
        if split is None:
            continue
        if split in found:
            raise UsageError(f"{option} {folder}: two {split} files, {found[split].name} and {p.name}; "
                             "keep one")
        found[split] = p
    return found
