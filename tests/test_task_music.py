"""`rnnkit train music` on the real JSB Chorales: training beats the untrained model, a
file that also holds a `test` split (made from a slice of the real songs) is evaluated,
malformed files are reported clearly, and the NLL is the per-time-step sum over 88 keys."""
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_support import TINY as FAST, run_cli
from conftest import SHARED

from rnnkit.data.music import load_piano_rolls
from rnnkit.training.task import RunContext, UsageError, get_task

JSB = Path(SHARED) / "data" / "jsb-chorales"

pytestmark = pytest.mark.skipif(not JSB.is_dir(), reason="shared/data/jsb-chorales is not there")


def _songs():
    (path,) = [p for p in JSB.iterdir() if p.suffix == ".json"]
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def with_test(tmp_path_factory):
    """A JSON with train (60 real songs), valid (20) and test (20, taken from valid's tail)."""
    data = _songs()
    path = tmp_path_factory.mktemp("jsb") / "jsb-with-test.json"
    path.write_text(json.dumps({"train": data["train"][:60], "valid": data["valid"][:20],
                                "test": data["valid"][-20:]}))
    return path


def untrained(run_dir: Path, split: str = "valid"):
    config = json.loads((run_dir / "config.json").read_text())
    task = get_task(config["task"])(config)
    task.setup(RunContext())
    torch.manual_seed(config["seed"])
    return task.evaluate(task.build_model(), split, RunContext())


def test_music_learns_on_the_real_data_set(tmp_path):
    run_dir = tmp_path / "run"
    rc, out, err = run_cli(["train", "music", *FAST, "--out", run_dir])       # default: shared JSB
    assert rc == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    before, after = untrained(run_dir)["nll"], summary["valid"]["nll"]
    assert before > 50 and after < 13 < before, (before, after)   # 88 coin flips: 61 nats
    assert summary["valid"]["items"] == sum(len(s) - 1 for s in _songs()["valid"])


def test_file_with_test_split(tmp_path, with_test):
    run_dir = tmp_path / "run"
    rc, out, err = run_cli(["train", "music", *FAST, "--data", with_test, "--out", run_dir, "--arch", "gru",
                            "--gru-form", "before"])
    assert rc == 0, err
    assert "test split: nll" in out
    rc, out, err = run_cli(["evaluate", run_dir, "--split", "test", "--json"])
    assert rc == 0, err
    res = json.loads(out)
    assert res["items"] == sum(len(s) - 1 for s in _songs()["valid"][-20:])
    assert res["nll"] < untrained(run_dir, "test")["nll"]
    rc, _, err = run_cli(["evaluate", run_dir, "--split", "test", "--data", JSB])
    assert rc == 2 and "no 'test' split" in err


def test_nll_is_per_frame_sum_over_keys(tmp_path):
    """A model whose logits are all 0 scores 88 ln 2 per predicted frame."""
    from rnnkit.tasks.music import MusicModel, _nll_sum, _pad

    rolls = load_piano_rolls(JSB)["valid"][:5]
    x, y, lengths = _pad(rolls)
    assert int(lengths.sum()) == sum(len(r) - 1 for r in rolls)
    zeros = torch.zeros_like(y)
    assert _nll_sum(zeros, y, lengths).item() / lengths.sum().item() == pytest.approx(88 * math.log(2), rel=1e-6)
    # padding changes nothing: the first song alone scores the same as inside the batch
    m = MusicModel(dict(arch="lstm", backend="rnnkit", hidden=8, layers=1, nonlinearity="tanh",
                        gru_form="after", dropout=0.0)).eval()
    xa, ya, la = _pad(rolls[:1])
    with torch.no_grad():
        full = m(x, lengths)[:la[0], 0]
        alone = m(xa, la)[:, 0]
    assert torch.allclose(full, alone, atol=1e-6)


def test_reads_boulanger_lewandowski_pickles_safely(tmp_path):
    songs = _songs()
    p = tmp_path / "JSB_Chorales.pickle"
    p.write_bytes(pickle.dumps({k: [[tuple(float(n) for n in step) for step in s] for s in v[:3]]
                                for k, v in songs.items()} | {"test": [[(60.0, 64.0)], [(62.0,)] * 3]}))
    rolls = load_piano_rolls(p)
    assert set(rolls) == {"train", "valid", "test"} and rolls["test"][0].shape == (1, 88)
    assert np.array_equal(rolls["train"][0], load_piano_rolls(JSB)["train"][0])
    p.write_bytes(pickle.dumps({"train": [np.zeros(3)], "valid": []}))
    with pytest.raises(UsageError, match="refusing to unpickle numpy"):
        load_piano_rolls(p)


def test_malformed_files_are_named(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"train": [[[60, 64]]],\n "valid": [[[60, 200]]]}')
    with pytest.raises(UsageError, match=r"bad.json: valid song 0 step 0: pitch 200 outside"):
        load_piano_rolls(p)
    p.write_text('{"train": [[[60, 64]]],\n "valid": [[[60, 6')
    with pytest.raises(UsageError, match=r"bad.json:2:\d+: invalid JSON"):
        load_piano_rolls(p)
    p.write_text('{"train": [[[60]]]}')
    with pytest.raises(UsageError, match="no 'valid' split"):
        load_piano_rolls(p)
    rc, _, err = run_cli(["train", "music", *FAST, "--data", tmp_path / "missing.json", "--out", tmp_path / "r"])
    assert rc == 2 and "missing.json" in err and len(err.strip().splitlines()) == 1


def test_resume_is_exact(tmp_path, with_test):
    """20 steps + resume to 40 gives the weights of 40 steps in one go (seeded epoch order)."""
    from cli_support import model_weights

    common = [*FAST, "--data", with_test, "--eval-every", "20", "--save-every", "20", "--dropout", "0.2",
              "--schedule", "constant"]
    rc, _, err = run_cli(["train", "music", *common, "--out", tmp_path / "a", "--steps", "40"])
    assert rc == 0, err
    rc, _, err = run_cli(["train", "music", *common, "--out", tmp_path / "b", "--steps", "20"])
    assert rc == 0, err
    rc, _, err = run_cli(["train", "--resume", tmp_path / "b", "--steps", "40"])
    assert rc == 0, err
    a = model_weights(tmp_path / "a" / "checkpoint.safetensors")
    b = model_weights(tmp_path / "b" / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
