"""Text corpora on the local machine, split deterministically, and a character vocabulary.

Sources (``rnnkit train lm --corpus / --data``):

    stdlib     the Python standard library's own ``*.py`` files (found via ``sysconfig``;
               test suites and site-packages excluded): present wherever Python is
    bible-kjv  the King James Bible, read through the ``bible`` command of Debian's
               ``bible-kjv`` package (``apt-get install bible-kjv``)
    --data     any UTF-8 text files or folders

Splits are deterministic and never look at random state:

* by file, when there are at least :data:`MIN_FILES_FOR_FILE_SPLIT` files: a file goes to
  valid when ``crc32(relative path) % 20 == 0``, to test when it is 1, else to train
  (about 90 / 5 / 5 per cent);
* by position otherwise (one file, the Bible): the first 90 % of the characters train,
  the next 5 % valid, the last 5 % test.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sysconfig
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..errors import UsageError

CORPORA = ("stdlib", "bible-kjv")
MIN_FILES_FOR_FILE_SPLIT = 10
SPLITS = ("train", "valid", "test")
_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


@dataclass
class Corpus:
    """Raw text of the three splits and where it came from."""

    name: str
    train: str
    valid: str
    test: str
    files: Dict[str, int] = field(default_factory=dict)  # split -> number of files
    how: str = ""                                        # "by file" | "by position"

    def split(self, name: str) -> str:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


# ---- reading --------------------------------------------------------------------------
def read_text(path: Path, option: str = "--data") -> str:
    """The UTF-8 text of ``path`` (newlines normalised); UsageError names the file if it is
    missing, empty, binary or not UTF-8."""
    if path.exists() and not path.is_file():
        raise UsageError(f"{option} {path}: a device, pipe or socket, not a regular file; expected UTF-8 text")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{option} {path}: no such file or folder") from None
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot read ({e.strerror})") from None
    if not raw.strip():
        raise UsageError(f"{option} {path}: file is empty; expected UTF-8 text")
    if b"\x00" in raw[:65536]:
        raise UsageError(f"{option} {path}: binary file (contains NUL bytes); expected UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{option} {path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                         f"{e.start}); expected UTF-8 text") from None
    return text.lstrip("\ufeff").replace("\r\n", "\n")


def collect_files(paths: Sequence[str], glob: str = "*", option: str = "--data") -> List[Path]:
    """Files named in ``paths``; folders are walked (hidden entries skipped) for files
    matching ``glob`` (comma-separated patterns)."""
    patterns = [g.strip() for g in glob.split(",") if g.strip()] or ["*"]
    files: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*")
                if f.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                           for part in f.relative_to(p).parts)
                and any(fnmatch.fnmatch(f.name, g) for g in patterns))
            if not found:
                raise UsageError(f"{option} {p}: folder has no files matching {glob!r}; expected "
                                 "UTF-8 text files")
            files += found
        elif p.is_file():
            files.append(p)
        elif p.exists():
            raise UsageError(f"{option} {p}: a device, pipe or socket, not a regular file; expected UTF-8 "
                             "text files")
        else:
            raise UsageError(f"{option} {p}: no such file or folder")
    if not files:
        raise UsageError(f"{option}: no files given")
    return files


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> List[Path]:
    """The standard library's ``*.py`` files, test suites excluded, in sorted order."""
    root = stdlib_root()
    return sorted(f for f in root.rglob("*.py")
                  if not (_EXCLUDED_DIRS & set(f.relative_to(root).parts[:-1])))


def bible_available() -> bool:
    return shutil.which("bible") is not None


def bible_text() -> str:
    """The King James Bible through Debian's ``bible`` command (80-column lines)."""
    exe = shutil.which("bible")
    if exe is None:
        raise UsageError("--corpus bible-kjv: the `bible` command is not installed; "
                         "install it with `apt-get install bible-kjv`, or use --corpus stdlib")
    proc = subprocess.run([exe, "-l80", "Gen1:1-Rev22:21"], stdin=subprocess.DEVNULL,
                          capture_output=True, env={**os.environ, "COLUMNS": "80"})
    text = proc.stdout.decode("utf-8", errors="replace").strip("\n")
    if proc.returncode != 0 or len(text) < 1_000_000:
        raise UsageError(f"--corpus bible-kjv: `bible` failed (exit {proc.returncode}, "
                         f"{len(text)} characters); expected the whole text")
    return text + "\n"


# ---- splitting --------------------------------------------------------------------------
def split_of(relative: str) -> str:
    """Split of a file from its relative path: crc32 % 20 == 0 valid, 1 test, else train."""
    bucket = zlib.crc32(relative.encode("utf-8")) % 20
    return "valid" if bucket == 0 else "test" if bucket == 1 else "train"


def split_by_position(text: str) -> Dict[str, str]:
    a, b = int(len(text) * 0.90), int(len(text) * 0.95)
    return {"train": text[:a], "valid": text[a:b], "test": text[b:]}


def _join(texts: Iterable[str]) -> str:
    return "".join(t if t.endswith("\n") else t + "\n" for t in texts)


def split_files(files: Sequence[Path], root: Optional[Path], texts: Sequence[str], name: str) -> Corpus:
    parts: Dict[str, List[str]] = {s: [] for s in SPLITS}
    if len(files) >= MIN_FILES_FOR_FILE_SPLIT:
        for f, t in zip(files, texts):
            rel = f.relative_to(root).as_posix() if root is not None else f.as_posix()
            parts[split_of(rel)].append(t)
        if all(parts[s] for s in SPLITS):
            counts = {s: len(parts[s]) for s in SPLITS}
            return Corpus(name, *(_join(parts[s]) for s in SPLITS), files=counts, how="by file")
    pieces = split_by_position(_join(texts))
    return Corpus(name, pieces["train"], pieces["valid"], pieces["test"],
                  files={s: len(files) for s in SPLITS}, how="by position")


def load_corpus(corpus: str, data: Sequence[str] = (), glob: str = "*") -> Corpus:
    """The corpus named by ``--corpus`` or, when ``data`` is given, the files in ``data``."""
    if data:
        files = collect_files(data, glob)
        texts = [read_text(f) for f in files]
        root = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
        return split_files([f.resolve() for f in files], root, texts, "files")
    if corpus == "stdlib":
        root = stdlib_root()
        files, texts = [], []
        for f in stdlib_files():
            try:
                texts.append(read_text(f, "--corpus stdlib"))
                files.append(f)
            except UsageError:  # an odd file in a vendor's stdlib: skip it
                continue
        if not files:
            raise UsageError(f"--corpus stdlib: no *.py files under {root}")
        return split_files(files, root, texts, "stdlib")
    if corpus == "bible-kjv":
        pieces = split_by_position(bible_text())
        return Corpus("bible-kjv", pieces["train"], pieces["valid"], pieces["test"],
                      files={s: 1 for s in SPLITS}, how="by position")
    raise UsageError(f"--corpus: expected one of {', '.join(CORPORA)}, got {corpus!r}")


# ---- vocabulary -----------------------------------------------------------------------
def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class Vocab:
    """Characters <-> ids. Id 0 is ``UNK``: characters the training text did not have
    (they decode as U+FFFD). ``chars[0]`` is the empty string.

    >>> v = Vocab.build("abracadabra")
    >>> v.decode(v.encode("cab").tolist())
    'cab'
    """

    UNK = 0

    def __init__(self, chars: Sequence[str]):
        if (not isinstance(chars, (list, tuple)) or not chars or chars[0] != ""
                or not all(isinstance(c, str) and len(c) == 1 for c in chars[1:])
                or len(set(chars)) != len(chars)):
            raise ValueError(f"vocab: expected a list of distinct single characters after '' (UNK), got "
                             f"{str(chars)[:60]}")
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars) if c}
        self._lut: Optional[np.ndarray] = None

    @classmethod
    def build(cls, text: str, min_count: int = 1) -> "Vocab":
        counts = np.bincount(_codepoints(text), minlength=1)
        keep = np.nonzero(counts >= max(1, min_count))[0]
        return cls([""] + [chr(int(c)) for c in keep])

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """(N,) int64 ids; unknown characters become UNK."""
        if self._lut is None:
            lut = np.zeros(0x110000, dtype=np.int64)
            for c, i in self.index.items():
                lut[ord(c)] = i
            self._lut = lut
        return self._lut[_codepoints(text)]

    def unknown(self, text: str) -> List[str]:
        """Characters of ``text`` that are not in the vocabulary (in order of appearance)."""
        seen: List[str] = []
        for c in text:
            if c not in self.index and c not in seen:
                seen.append(c)
        return seen

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] if i else "\ufffd" for i in ids)
