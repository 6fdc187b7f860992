"""The training engine's rules, checked by what they must do to a real run rather than by
what it logs about itself: gradient clipping against a plain-SGD update, and the best
checkpoint and early stopping against a scripted sequence of validation scores."""
import json

import pytest
import torch

from cli_support import header_meta, model_weights, records, train_tiny, write_corpus

from rnnkit.training.task import get_task

ONE_SGD_STEP = ["--optimizer", "sgd", "--momentum", "0", "--weight-decay", "0", "--warmup", "0", "--steps", "1",
                "--eval-every", "1", "--log-every", "1", "--sample-length", "0"]


def _flat(weights):
    return torch.cat([weights[k].reshape(-1).double() for k in sorted(weights)])


def test_clipping_scales_an_sgd_update_to_the_clip_norm_and_logs_the_norm_before_clipping(tmp_path):
    data = write_corpus(tmp_path / "data")
    runs = {}
    for name, lr, clip in (("start", "0", "0"), ("free", "1", "0")):
        rc, _, err, run_dir = train_tiny(tmp_path, *ONE_SGD_STEP, "--lr", lr, "--clip", clip, name=name, data=data)
        assert rc == 0, err
        runs[name] = run_dir
    start = _flat(model_weights(runs["start"] / "checkpoint.safetensors"))   # lr 0: the initial weights
    free_update = _flat(model_weights(runs["free"] / "checkpoint.safetensors")) - start
    norm = free_update.norm().item()  # lr 1, no clipping: the update is the whole gradient
    [free_log] = records(runs["free"], "train")
    assert free_log["grad_norm"] == pytest.approx(norm, rel=1e-4) and free_log["clipped"] == 0.0
    clip = norm / 4
    rc, _, err, run_dir = train_tiny(tmp_path, *ONE_SGD_STEP, "--lr", "1", "--clip", repr(clip), name="clipped",
                                     data=data)
    assert rc == 0, err
    update = _flat(model_weights(run_dir / "checkpoint.safetensors")) - start
    assert update.norm().item() == pytest.approx(clip, rel=1e-4)          # scaled to the clip norm
    torch.testing.assert_close(update, free_update * (clip / norm), rtol=0, atol=1e-6)  # same direction
    [log] = records(run_dir, "train")
    assert log["grad_norm"] == pytest.approx(norm, rel=1e-4)                # the norm before clipping
    assert log["clipped"] == 1.0


# (metric_mode, validation scores, index of the best, index of the evaluation that stops)
SCRIPTS = {
    "min": ([3.0, 2.0, 2.5, 1.5, 1.6, 1.55, 1.7, 1.0], 3, 6),
    "max": ([0.1, 0.3, 0.2, 0.5, 0.4, 0.45, 0.35, 0.9], 3, 6),
}


@pytest.mark.parametrize("mode", list(SCRIPTS))
def test_scripted_validation_scores_pick_the_best_checkpoint_and_stop(tmp_path, monkeypatch, mode):
    """Validation every 5 steps with patience 3: the best checkpoint holds the weights of
    the best evaluation (not the last), and training stops at the third evaluation
    without improvement after it."""
    scores, best_at, stop_at = SCRIPTS[mode]
    cls = get_task("lm")
    seen = []   # the model's weights at each evaluation

    def scripted_evaluate(self, model, split, ctx, limit=None, data=None):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        value = scores[min(len(seen), len(scores)) - 1]
        return {"loss": value, cls.metric: value, "items": 1}

    monkeypatch.setattr(cls, "evaluate", scripted_evaluate)
    monkeypatch.setattr(cls, "metric_mode", mode)
    rc, _, err, run_dir = train_tiny(tmp_path, "--steps", "60", "--eval-every", "5", "--patience", "3",
                                     "--save-every", "100", "--sample-length", "0")
    assert rc == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped"] == "early_stop"
    assert summary["step"] == 5 * (stop_at + 1)
    assert summary[f"best_{cls.metric}"] == scores[best_at]
    assert [r[cls.metric] for r in records(run_dir, "valid")] == scores[:stop_at + 1]
    assert header_meta(run_dir / "best.safetensors")["step"] == 5 * (best_at + 1)
    best = model_weights(run_dir / "best.safetensors")
    assert best.keys() == seen[best_at].keys()
    for k in best:
        assert torch.equal(best[k], seen[best_at][k]), k
    assert any(not torch.equal(best[k], seen[stop_at][k]) for k in best)  # training moved on after the best
