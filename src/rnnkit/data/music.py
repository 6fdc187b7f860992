"""Polyphonic music as piano rolls (JSB Chorales and the other sets of Boulanger-Lewandowski
et al. 2012).

A file holds splits ``train``, ``valid`` and optionally ``test``; a split is a list of
songs, a song a list of time steps, a time step a list of the MIDI pitches sounding
(possibly none). Two containers are read:

* JSON, ``{"train": [[[60, 64, 67], [62, 65]], ...], "valid": [...], "test": [...]}`` (the
  ``jsb-chorales-*.json`` files of czhuang/JSB-Chorales-dataset; ``validation`` is
  accepted for ``valid``);
* the pickles of Boulanger-Lewandowski et al. (``JSB_Chorales.pickle``; pitches may be
  floats), read with an unpickler that accepts only lists, tuples, dicts, strings and
  numbers, so a pickle cannot run code.

A piano roll is (T, 88) with key k = pitch - 21 (A0 = 21 ... C8 = 108).
"""
from __future__ import annotations

import io
import json
import math
import pickle
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..errors import UsageError
from ._files import check_regular_file

LOWEST, KEYS = 21, 88
Song = np.ndarray          # (T, 88) uint8


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise UsageError(f"refusing to unpickle {module}.{name}: only lists, dicts and numbers are read")


def _load_container(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix.lower() in (".pickle", ".pkl"):
        try:
            data = _SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
        except UsageError as e:
            raise UsageError(f"{path}: {e}") from None
        except Exception as e:
            raise UsageError(f"{path}: not a readable pickle ({e})") from None
    else:
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise UsageError(f"{path}: not UTF-8 JSON ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
        except RecursionError:
            raise UsageError(f"{path}: JSON nested too deeply; expected splits of songs of time steps "
                             "of pitches") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected an object with keys train, valid [, test], "
                         f"got {type(data).__name__}")
    if "validation" in data and "valid" not in data:
        data["valid"] = data.pop("validation")
    return data


def _roll(song, where: str) -> Song:
    if not isinstance(song, (list, tuple)) or not song:
        raise UsageError(f"{where}: expected a non-empty list of time steps, got {str(song)[:40]}")
    roll = np.zeros((len(song), KEYS), dtype=np.uint8)
    for t, step in enumerate(song):
        if not isinstance(step, (list, tuple)):
            raise UsageError(f"{where} step {t}: expected a list of MIDI pitches, got {str(step)[:40]}")
        for p in step:
            if (isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p)
                    or p != int(p)):
                raise UsageError(f"{where} step {t}: expected integer MIDI pitches, got {p!r}")
            k = int(p) - LOWEST
            if not 0 <= k < KEYS:
                raise UsageError(f"{where} step {t}: pitch {int(p)} outside the piano's range "
                                 f"{LOWEST}-{LOWEST + KEYS - 1}")
            roll[t, k] = 1
    return roll


def load_piano_rolls(path: Path) -> Dict[str, List[Song]]:
    """{split: [(T, 88) uint8 piano rolls]} of a JSON or pickle file (see the module doc).

    ``path`` may be a folder holding exactly one ``.json`` / ``.pickle`` / ``.pkl`` file.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".json", ".pickle", ".pkl"))
        if len(files) != 1:
            raise UsageError(f"--data {path}: expected one .json or .pickle file of piano rolls in the "
                             f"folder, found {len(files)}" + (f" ({', '.join(p.name for p in files)})"
                                                             if files else ""))
        path = files[0]
    check_regular_file(path, "--data")
    data = _load_container(path)
    out: Dict[str, List[Song]] = {}
    for split in ("train", "valid", "test"):
        if split not in data:
            continue
        songs = data[split]
        if not isinstance(songs, list) or not songs:
            raise UsageError(f"{path}: split {split!r} must be a non-empty list of songs")
        out[split] = [_roll(song, f"{path}: {split} song {i}") for i, song in enumerate(songs)]
    for split in ("train", "valid"):
        if split not in out:
            raise UsageError(f"{path}: no {split!r} split; expected keys train, valid [, test], "
                             f"got {', '.join(map(str, data)) or 'none'}")
    return out
