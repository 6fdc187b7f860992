"""Hostile checkpoints (issue 12): nothing that was not saved is ever loaded, and every
damaged or edited file ends in one line naming the file and the field, through every
entry point that reads checkpoints: `rnnkit evaluate`, `rnnkit sample`, `rnnkit.load`
and `rnnkit train --resume`.

Two kinds of probe:
* TAMPER: the file is edited and its digest left alone (what a bit flip or a careless
  edit does). Format version 2's digest covers the header, so every one is caught.
* CONFIG: the digest is recomputed (a file that is intact but describes something
  absurd). The configuration and trainer state are validated before anything is built.
"""
import hashlib
import json
import shutil
import struct
import time

import pytest
import torch

from cli_support import run_cli

from rnnkit.training import checkpoint as C
from cli_support import one_line_error as _one_line

ENTRY_POINTS = ["evaluate", "sample", "load", "resume"]


# ---- raw safetensors editing ----------------------------------------------------------------
def _parts(data: bytes):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _edit_meta(header: dict, field: str, fn) -> dict:
    md = header["__metadata__"]
    md[field] = json.dumps(fn(json.loads(md[field])))
    return header


def _swap_vocab(state):
    v = state["vocab"]
    i, j = v.index("a"), v.index("e")
    v[i], v[j] = v[j], v[i]
    return state


def _tamper(data: bytes, how: str) -> bytes:
    header, body = _parts(data)
    if how == "dtype_f32_to_i32":
        header["model.head.weight"]["dtype"] = "I32"
    elif how == "swap_vocab_chars":
        _edit_meta(header, "task_state", _swap_vocab)
    elif how == "swap_data_offsets":
        a, b = header["model.rnn.bias_ih_l0"], header["model.rnn.bias_hh_l0"]
        a["data_offsets"], b["data_offsets"] = b["data_offsets"], a["data_offsets"]
    elif how == "flip_bit_in_vocab":
        raw = bytearray(data)
        (n,) = struct.unpack("<Q", data[:8])
        k = data.index(b'vocab', 8, 8 + n) + 60
        while raw[k] not in b"abcdefghijklmnopqrstuvwxyz":
            k += 1
        raw[k] ^= 0x01                      # 'a' <-> 'b', 'd' <-> 'e', ...
        return bytes(raw)
    elif how == "metrics_offset_zero":
        _edit_meta(header, "trainer", lambda t: {**t, "metrics_offset": 0})
    elif how == "flip_bit_in_tensor":
        return data[:-5] + bytes([data[-5] ^ 0x10]) + data[-4:]
    elif how == "change_step":
        _edit_meta(header, "trainer", lambda t: {**t, "step": 3})
    elif how == "version_2_to_1":   # relabelled as the old format: the old digest does not match
        header["__metadata__"]["format_version"] = "1"
    else:
        raise AssertionError(how)
    return _join(header, body)


TAMPER = ["dtype_f32_to_i32", "swap_vocab_chars", "swap_data_offsets", "flip_bit_in_vocab",
          "metrics_offset_zero", "flip_bit_in_tensor", "change_step", "version_2_to_1"]


# ---- intact files with absurd contents (digest recomputed) -----------------------------------
def _config(**changes):
    return lambda tensors, meta: meta["config"].update(changes)


def _set(field, value):
    def apply(tensors, meta):
        meta[field] = value
    return apply


def _drop(field):
    return lambda tensors, meta: meta.pop(field)


def _deep(tensors, meta):
    meta["config"] = "[" * 100_000 + "]" * 100_000      # stored as is: JSON nested 100,000 deep


def _vocab(value):
    return lambda tensors, meta: meta["task_state"].update(vocab=value)


def _f64_weight(tensors, meta):
    tensors["model.head.weight"] = tensors["model.head.weight"].double()


def _trainer(**changes):
    return lambda tensors, meta: meta["trainer"].update(changes)


# (name, edit, what the one-line message must name, entry points it applies to)
CONFIG = [
    ("hidden_-1", _config(hidden=-1), "config.hidden", ENTRY_POINTS),
    ("hidden_0", _config(hidden=0), "config.hidden", ENTRY_POINTS),
    ("hidden_abc", _config(hidden="abc"), "config.hidden", ENTRY_POINTS),
    ("hidden_null", _config(hidden=None), "config.hidden", ENTRY_POINTS),
    ("hidden_1e7", _config(hidden=10 ** 7), "config.hidden", ENTRY_POINTS),
    ("hidden_float", _config(hidden=32.5), "config.hidden", ENTRY_POINTS),
    ("layers_-1", _config(layers=-1), "config.layers", ENTRY_POINTS),
    ("layers_100000", _config(layers=100_000), "config.layers", ENTRY_POINTS),
    ("dropout_5", _config(dropout=5), "config.dropout", ENTRY_POINTS),
    ("nonlinearity_gelu", _config(nonlinearity="gelu"), "config.nonlinearity", ENTRY_POINTS),
    ("bptt_true", _config(bptt=True), "config.bptt", ENTRY_POINTS),
    ("embed_huge", _config(embed=2 ** 31 - 1), "parameters", ENTRY_POINTS),
    ("config_list", _set("config", [1, 2, 3]), "config", ENTRY_POINTS),
    ("config_deep", _deep, "'config'", ENTRY_POINTS),
    ("task_mismatch", _config(task="classify"), "config.task", ENTRY_POINTS),
    ("unknown_task", _set("task", "translate"), "task 'translate'", ENTRY_POINTS),
    ("kind_other", _set("kind", "weights"), "kind", ENTRY_POINTS),
    ("vocab_number", _vocab(5), "task_state", ENTRY_POINTS),
    ("vocab_ints", _vocab([0, 1, 2]), "task_state", ENTRY_POINTS),
    ("task_state_list", _set("task_state", ["a"]), "task_state", ENTRY_POINTS),
    ("weight_float64", _f64_weight, "dtype", ENTRY_POINTS),
    ("missing_trainer", _drop("trainer"), "trainer", ["resume"]),
    ("trainer_step_neg", _trainer(step=-5), "trainer.step", ["resume"]),
    ("trainer_offset_str", _trainer(metrics_offset="0"), "trainer.metrics_offset", ["resume"]),
    ("trainer_offset_past_log", _trainer(metrics_offset=10 ** 9), "metrics.jsonl", ["resume"]),
    ("trainer_world_0", _trainer(world_size=0), "trainer.world_size", ["resume"]),
    ("trainer_optimizer_list", _trainer(optimizer=[]), "trainer.optimizer", ["resume"]),
    ("trainer_carry_9", _trainer(carry=9), "carried state", ["resume"]),
]


def _rewrite(src, dst, edit):
    tensors, meta = C.read_checkpoint(src)
    meta = {k: v for k, v in meta.items() if k not in ("format", "format_version", "rnnkit_version", "sha256")}
    edit(tensors, meta)
    C.save_checkpoint(dst, tensors, meta)


def _target(run, tmp_path, entry):
    """(file to damage, argument that names it) for an entry point."""
    if entry == "resume":
        folder = tmp_path / "resumed"
        shutil.copytree(run, folder)
        return folder / "checkpoint.safetensors", folder
    file = tmp_path / "probe.safetensors"
    return file, file


def _attempt(entry, arg):
    """(exit status, stderr) of reading ``arg`` through ``entry``."""
    if entry == "load":
        try:
            C.load(arg)
        except C.CheckpointError as e:
            return 2, f"rnnkit.load: error: {e}\n"
        return 0, ""
    if entry == "resume":
        rc, _, err = run_cli(["train", "--resume", arg, "--steps", "12", "--progress", "off"])
    else:
        rc, _, err = run_cli([entry, arg])
    return rc, err


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("how", TAMPER)
def test_tampered_checkpoint_is_refused(run, tmp_path, how, entry):
    file, arg = _target(run, tmp_path, entry)
    file.write_bytes(_tamper((run / "checkpoint.safetensors").read_bytes(), how))
    rc, err = _attempt(entry, arg)
    _one_line(rc, err, file, "checksum mismatch")


CONFIG_PROBES = [pytest.param(edit, field, entry, id=f"{name}-{entry}")
                 for name, edit, field, entries in CONFIG for entry in entries]


@pytest.mark.parametrize("edit, field, entry", CONFIG_PROBES)
def test_invalid_checkpoint_contents_are_one_line(run, tmp_path, edit, field, entry):
    file, arg = _target(run, tmp_path, entry)
    _rewrite(run / "checkpoint.safetensors", file, edit)
    t0 = time.perf_counter()
    rc, err = _attempt(entry, arg)
    assert time.perf_counter() - t0 < 20, "validation must not build the model first"
    _one_line(rc, err, file if entry != "resume" or "metrics.jsonl" not in field else arg, field)


def test_metrics_log_survives_a_resume_of_an_edited_offset(run, tmp_path):
    """The finding: trainer.metrics_offset=0 made --resume empty metrics.jsonl."""
    folder = tmp_path / "r"
    shutil.copytree(run, folder)
    log = (folder / "metrics.jsonl").read_bytes()
    ck = folder / "checkpoint.safetensors"
    ck.write_bytes(_tamper(ck.read_bytes(), "metrics_offset_zero"))
    rc, _, err = run_cli(["train", "--resume", folder, "--steps", "12", "--progress", "off"])
    assert rc == 2 and "checksum mismatch" in err
    assert (folder / "metrics.jsonl").read_bytes() == log


def _as_version_1(src, dst):
    """``src`` rewritten as rnnkit 0.1.0 wrote checkpoints: format_version 1, digest of the
    tensor bytes only."""
    from safetensors.torch import save

    tensors, meta = C.read_checkpoint(src)
    md = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items() if k != "sha256"}
    md["format_version"] = "1"
    first = save(tensors, metadata=md)
    (n,) = struct.unpack("<Q", first[:8])
    md["sha256"] = hashlib.sha256(first[8 + n:]).hexdigest()
    dst.write_bytes(save(tensors, metadata=md))


def test_version_1_checkpoints_still_load_with_their_own_check(run, tmp_path):
    old = tmp_path / "v1.safetensors"
    _as_version_1(run / "best.safetensors", old)
    a, b = C.load(old), C.load(run / "best.safetensors")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k
    rc, out, err = run_cli(["evaluate", old, "--split", "valid"])
    assert rc == 0, err
    data = old.read_bytes()
    old.write_bytes(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])    # its own check still works
    rc, _, err = run_cli(["evaluate", old])
    _one_line(rc, err, old, "checksum mismatch")


def test_new_checkpoints_are_format_version_2(run):
    _, meta = C.read_checkpoint(run / "checkpoint.safetensors")
    assert meta["format_version"] == "2"


def test_a_device_is_not_read_as_a_checkpoint():
    rc, _, err = run_cli(["evaluate", "/dev/zero"])
    _one_line(rc, err, "/dev/zero", "not a regular file")
