"""Files on the local machine: default data folders, compressed text, split file names."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import zlib
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


def check_regular_file(path: Path, option: str = "") -> Path:
    """``path`` when it is a regular file; UsageError when it is missing or a device, a
    pipe or a socket (``--data /dev/zero`` would be read without end)."""
    path = Path(path)
    where = f"{option} {path}".strip()
    if not path.exists():
        raise UsageError(f"{where}: no such file")
    if not path.is_file():
        kind = "folder" if path.is_dir() else "device, pipe or socket"
        raise UsageError(f"{where}: a {kind}, not a regular file; expected a data file")
    return path


# What reading a damaged file raises besides UsageError: a corrupt or truncated compressed
# stream (zlib.error, lzma.LZMAError, EOFError, gzip.BadGzipFile is an OSError), bytes that
# are not UTF-8, or a read error.
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, UnicodeDecodeError)


def _read_problem(path: Path, e: BaseException) -> UsageError:
    if isinstance(e, UnicodeDecodeError):
        return UsageError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start} of the "
                          f"{'decompressed ' if path.suffix.lower() in ('.xz', '.gz', '.bz2') else ''}text)")
    if isinstance(e, EOFError):
        return UsageError(f"{path}: the compressed file is truncated")
    if isinstance(e, (zlib.error, lzma.LZMAError)) or type(e).__name__ == "BadGzipFile":
        return UsageError(f"{path}: corrupt compressed file ({e})")
    return UsageError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})")


class _GuardedText:
    """A text stream whose read errors become one-line UsageErrors naming the file."""

    def __init__(self, stream: io.TextIOBase, path: Path):
        self._stream, self._path = stream, path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        try:
            self._stream.close()
        except _READ_ERRORS:
            pass

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            return next(self._stream)
        except _READ_ERRORS as e:
            raise _read_problem(self._path, e) from None

    def read(self, n: int = -1) -> str:
        try:
            return self._stream.read(n)
        except _READ_ERRORS as e:
            raise _read_problem(self._path, e) from None

    def readline(self, n: int = -1) -> str:
        try:
            return self._stream.readline(n)
        except _READ_ERRORS as e:
            raise _read_problem(self._path, e) from None


def open_text(path: Path):
    """A text stream of ``path``, decompressed by its suffix (.xz, .gz, .bz2); a damaged,
    truncated or non-UTF-8 file raises UsageError (file and reason) while it is read."""
    path = check_regular_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".xz":
            stream = lzma.open(path, "rt", encoding="utf-8")
        elif suffix == ".gz":
            stream = gzip.open(path, "rt", encoding="utf-8")
        elif suffix == ".bz2":
            stream = bz2.open(path, "rt", encoding="utf-8")
        else:
            stream = open(path, "r", encoding="utf-8")
    except _READ_ERRORS as e:
        raise _read_problem(path, e) from None
    return _GuardedText(stream, path)


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
