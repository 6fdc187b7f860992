"""Tagged sentences from CoNLL-U files and CoNLL-style (BIO) named-entity files.

Formats (each may be compressed: ``.xz``, ``.gz``, ``.bz2``):

* **CoNLL-U** (``*.conllu``, Universal Dependencies): one token a line, 10 tab-separated
  columns (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC); ``#`` comment lines;
  a blank line ends a sentence. Multi-word token lines (ID ``3-4``) and empty nodes (ID
  ``5.1``) are skipped, as in the UD evaluation script. The tag is UPOS (column 4) or
  XPOS (column 5).
* **CoNLL NER** (any other suffix, e.g. ``.txt``, ``.conll``, ``.bio``): one token a
  line, whitespace-separated columns, the word first and the tag last (CoNLL-2003:
  ``EU NNP B-NP B-ORG``); ``-DOCSTART-`` lines and blank lines separate sentences.
  Tags are BIO (IOB2, or IOB1 where ``I-`` may start an entity) or plain labels.

A malformed line raises :class:`~rnnkit.training.task.UsageError` naming the file and
the line number.

Entity scoring follows the CoNLL-2000/2003 ``conlleval`` script: an entity is a maximal
run ``B-X I-X ... I-X`` (an ``I-X`` after ``O`` or after another type starts one), and a
predicted entity counts when its type, start and end all match a gold one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Set, Tuple

from ._files import open_text, strip_compression
from ..errors import UsageError

Sentence = Tuple[List[str], List[str]]          # (words, tags)


def is_conllu(path: Path) -> bool:
    return strip_compression(Path(path).name).lower().endswith(".conllu")


def read_conllu(path: Path, column: str = "upos") -> List[Sentence]:
    """Sentences of a CoNLL-U file, tagged with ``column`` (upos or xpos)."""
    col = {"upos": 3, "xpos": 4}[column]
    sentences: List[Sentence] = []
    words: List[str] = []
    tags: List[str] = []
    with open_text(path) as f:
        try:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip():
                    if words:
                        sentences.append((words, tags))
                        words, tags = [], []
                    continue
                if line.startswith("#"):
                    continue
                cols = line.split("\t")
                if len(cols) != 10:
                    raise UsageError(f"{path}:{lineno}: expected 10 tab-separated CoNLL-U columns, "
                                     f"got {len(cols)}: {line[:60]!r}")
                tid = cols[0]
                if "-" in tid or "." in tid:
                    continue                    # multi-word token / empty node
                if not tid.isdigit():
                    raise UsageError(f"{path}:{lineno}: expected an integer token ID in column 1, got {tid!r}")
                if not cols[1]:
                    raise UsageError(f"{path}:{lineno}: empty FORM (column 2)")
                tag = cols[col]
                if not tag or tag == "_":
                    raise UsageError(f"{path}:{lineno}: no {column.upper()} tag (column {col + 1} is {tag!r})")
                words.append(cols[1])
                tags.append(tag)
        except UnicodeDecodeError as e:
            raise UsageError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except EOFError:
            raise UsageError(f"{path}: the compressed file is truncated") from None
        except OSError as e:
            raise UsageError(f"{path}: cannot read ({e})") from None
    if words:
        sentences.append((words, tags))
    return sentences


def read_conll(path: Path) -> List[Sentence]:
    """Sentences of a whitespace-separated CoNLL file (word first, tag last)."""
    sentences: List[Sentence] = []
    words: List[str] = []
    tags: List[str] = []
    bio = None                                   # decided by the first tag that is not O
    with open_text(path) as f:
        try:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts or parts[0] == "-DOCSTART-":
                    if words:
                        sentences.append((words, tags))
                        words, tags = [], []
                    continue
                if len(parts) < 2:
                    raise UsageError(f"{path}:{lineno}: expected a word and a tag separated by whitespace, "
                                     f"got {line.strip()[:60]!r}")
                tag = parts[-1]
                if tag != "O":
                    has_prefix = len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES"
                    if bio is None:
                        bio = has_prefix
                    elif bio != has_prefix:
                        raise UsageError(f"{path}:{lineno}: tag {tag!r} is not "
                                         + ("of the form B-TYPE / I-TYPE like the tags before it"
                                            if bio else "a plain label like the tags before it"))
                words.append(parts[0])
                tags.append(tag)
        except UnicodeDecodeError as e:
            raise UsageError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except EOFError:
            raise UsageError(f"{path}: the compressed file is truncated") from None
    if words:
        sentences.append((words, tags))
    return sentences


def read_tagged(path: Path, column: str = "upos") -> List[Sentence]:
    """CoNLL-U or CoNLL NER by the file name; UsageError when empty."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    sents = read_conllu(path, column) if is_conllu(path) else read_conll(path)
    if not sents:
        raise UsageError(f"{path}: no sentences found")
    return sents


# ---- entity scoring ---------------------------------------------------------------------------
def is_bio(tags: Sequence[str]) -> bool:
    """True when every tag is O or has a B-/I-/E-/S- prefix, and at least one has one."""
    prefixed = [t for t in tags if t != "O"]
    return bool(prefixed) and all(len(t) > 2 and t[1] == "-" and t[0] in "BIES" for t in prefixed)


def entities(tags: Sequence[str]) -> Set[Tuple[str, int, int]]:
    """{(type, start, end)} of the entities in one sentence's tags (conlleval rules;
    E- and S- close an entity as in IOBES)."""
    out: Set[Tuple[str, int, int]] = set()
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, typ = tag.partition("-") if tag != "O" else ("O", "", "")
        begins = prefix in ("B", "S") or (prefix in ("I", "E") and typ != kind)
        if kind is not None and (prefix == "O" or begins):
            out.add((kind, start, i))
            kind = None
        if prefix != "O" and (begins or kind is None):
            kind, start = typ, i
        if prefix in ("E", "S") and kind is not None:
            out.add((kind, start, i + 1))
            kind = None
    return out


def entity_counts(gold: Sequence[str], pred: Sequence[str]) -> Tuple[int, int, int]:
    """(correct, predicted, gold) entity counts of one sentence."""
    g, p = entities(gold), entities(pred)
    return len(g & p), len(p), len(g)


def prf(correct: float, predicted: float, gold: float) -> Dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
