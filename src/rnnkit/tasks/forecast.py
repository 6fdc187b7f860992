"""Forecasting: ``rnnkit train forecast``.

From the last W steps of a (multivariate) series the model predicts the next H values of
a target column. Inputs and outputs are relative to the last observed value, so a series
with a trend (CO2) is forecast as well as a stationary one (sunspots)::

    x_{t-k}  = [(v_{t-k} - v_t) / s ; (v_{t-k} - μ) / σ]     k = W-1 .. 0, every column
    h_t      = RNN(x_{t-W+1} .. x_t)                          --arch, --layers, --hidden
    ŷ_{t+h}  = y_t + s_y · (W_out h_t + b_out)_h              h = 1 .. H
    loss     = mean_h ((ŷ_{t+h} - y_{t+h}) / s_y)²

s is the standard deviation of a column's one-step differences and μ, σ its mean and
standard deviation, all on the training part (``--no-levels`` drops the second block).

The series is cut in time: the first ``1 - valid - test`` fraction trains, then valid,
then test. A window belongs to a split when all H of its targets lie in it (its inputs
may reach back into the previous split). Metrics, on the original scale over every
(window, h): ``rmse`` and ``mae``, beside two baselines on the same windows, the naive
forecast ŷ_{t+h} = y_t (``naive_rmse``, ``naive_mae``) and the seasonal naive forecast
ŷ_{t+h} = y_{t+h-m⌈h/m⌉} with season m (``snaive_rmse``, ``snaive_mae``).
At the end of training ``forecast.png`` in the run folder shows the forecasts against
the truth on the validation and test parts.

Data: ``--series sunspots|co2`` from statsmodels (the default: sunspots), or ``--data
FILE.csv`` with ``--columns`` and ``--target`` (see :mod:`rnnkit.data.series`).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.series import BUILTIN, Series, builtin_series, estimate_season, read_csv_series
from ..training.models import output_size
from ..training.options import add_option, nonneg_int, positive_int, probability
from ..training.task import Batch, RunContext, StepResult, Task, UsageError, register
from ._common import epoch_batches, recurrent_layer


class Forecaster(nn.Module):
    """Window of W steps in, H future changes of the target out (in units of s_y).

    forward(x (W, B, I)) -> (B, H)

    Example::

        >>> m = Forecaster(2, 3, dict(arch="gru", backend="torch", hidden=8, layers=1,
        ...                nonlinearity="tanh", gru_form="after", dropout=0.0))
        >>> tuple(m(torch.randn(12, 4, 2)).shape)
        (4, 3)
    """

    def __init__(self, n_inputs: int, horizon: int, config: Dict[str, Any]):
        super().__init__()
        self.rnn = recurrent_layer(config, n_inputs)
        self.drop = nn.Dropout(config["dropout"])
        self.head = nn.Linear(output_size(config), horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..training.models import run_rnn

        h, _ = run_rnn(self.rnn, x, None)                 # (W, B, H)
        return self.head(self.drop(h[-1]))               # (B, horizon)


def _ranges(n: int, valid: float, test: float) -> Dict[str, Tuple[int, int]]:
    n_test = int(round(n * test))
    n_valid = int(round(n * valid))
    a = n - n_valid - n_test
    out = {"train": (0, a), "valid": (a, a + n_valid)}
    if n_test:
        out["test"] = (a + n_valid, n)
    return out


@register
class ForecastTask(Task):
    name = "forecast"
    summary = "time-series forecasting (CSV or statsmodels sunspots/co2): RMSE, MAE vs naive baselines"
    metric = "rmse"
    metric_mode = "min"
    unit = "windows"
    data_name = "training series"
    allows_bidirectional = False
    defaults = dict(
        series="sunspots",       # built-in series (needs statsmodels); --data replaces it
        data="",                 # CSV file
        columns="",              # comma-separated CSV columns (empty: every numeric column)
        target="",               # column to forecast (empty: the first one)
        window=24,               # input steps W
        horizon=1,               # steps ahead H
        season=0,                # season m of the seasonal-naive baseline (0: built-in or estimated)
        levels=True,             # also feed standardised levels
        valid_fraction=0.15,
        test_fraction=0.15,
        hidden=32, layers=1, dropout=0.0, batch_size=16, lr=3e-3, steps=1000, warmup=20,
        eval_every=50, save_every=50, log_every=10, weight_decay=1e-4,
    )
    presets = {
        "tiny": dict(hidden=16, steps=60, eval_every=20, save_every=20, log_every=10, lr=1e-2, warmup=5),
    }

    def __init__(self, config):
        super().__init__(config)
        self.series: Optional[Series] = None
        self.stats: Dict[str, Any] = {}
        self.source: Dict[str, Any] = {}
        self.rank, self.world = 0, 1

    @classmethod
    def add_arguments(cls, parser, defaults):
        g = parser.add_argument_group("forecasting")
        add_option(g, "--series", defaults, "built-in series from statsmodels", choices=tuple(BUILTIN))
        add_option(g, "--data", defaults, "CSV file: header row, one row per time step (replaces --series)",
                   metavar="FILE")
        add_option(g, "--columns", defaults, "comma-separated CSV columns to read", metavar="A,B")
        add_option(g, "--target", defaults, "column to forecast", metavar="NAME")
        add_option(g, "--window", defaults, "input steps W", type=positive_int, metavar="W")
        add_option(g, "--horizon", defaults, "steps ahead H", type=positive_int, metavar="H")
        add_option(g, "--season", defaults, "season of the seasonal-naive baseline (0: known or estimated)",
                   type=nonneg_int, metavar="M")
        add_option(g, "--levels", defaults, "feed standardised levels besides the changes",
                   action="store_true")
        add_option(g, "--valid-fraction", defaults, "final share before the test part that validates",
                   type=probability, metavar="F")
        add_option(g, "--test-fraction", defaults, "final share of the series held out as test (0: none)",
                   type=probability, metavar="F")

    @classmethod
    def check_config(cls, config):
        if config["valid_fraction"] <= 0:
            raise UsageError(f"--valid-fraction: expected a number in (0, 1), got {config['valid_fraction']}")
        if config["valid_fraction"] + config["test_fraction"] >= 0.9:
            raise UsageError("--valid-fraction + --test-fraction: must leave at least 10% of the series "
                             f"for training, got {config['valid_fraction'] + config['test_fraction']}")

    # --- data ----------------------------------------------------------------------------------------
    def _load(self) -> Series:
        cfg = self.config
        if cfg.get("data"):
            cols = [c.strip() for c in cfg.get("columns", "").split(",") if c.strip()] or None
            s = read_csv_series(Path(cfg["data"]), cols)
        else:
            s = builtin_series(cfg["series"])
        return s

    def _target_index(self, s: Series) -> int:
        target = self.config.get("target") or s.columns[0]
        if target not in s.columns:
            raise UsageError(f"--target: {target!r} is not among the series' columns ({', '.join(s.columns)})")
        return s.columns.index(target)

    def setup(self, ctx: RunContext) -> None:
        cfg = self.config
        self.rank, self.world = ctx.rank, ctx.world_size
        s = self.series = self._load()
        n = len(s.values)
        ranges = _ranges(n, cfg["valid_fraction"], cfg["test_fraction"])
        a, b = ranges["train"]
        if not self.stats:
            tgt = self._target_index(s)
            train = s.values[a:b]
            if len(train) < cfg["window"] + cfg["horizon"] + 2:
                raise UsageError(f"--window {cfg['window']} + --horizon {cfg['horizon']}: the training part "
                                 f"has only {len(train)} steps")
            season = cfg["season"] or s.season or estimate_season(train[:, tgt])
            diff_sd = np.maximum(np.diff(train, axis=0).std(0), 1e-8)
            self.stats = {"target": tgt, "columns": s.columns, "season": int(season),
                          "diff_sd": diff_sd.tolist(), "mean": train.mean(0).tolist(),
                          "sd": np.maximum(train.std(0), 1e-8).tolist()}
        for split in ranges:
            if not self._anchors(split, n):
                raise UsageError(f"--{split.replace('valid', 'valid-fraction').replace('test', 'test-fraction')}"
                                 f": the {split} part ({ranges[split][1] - ranges[split][0]} steps) holds no "
                                 f"window of --horizon {cfg['horizon']}; make it larger")
        self.fingerprint = hashlib.sha256(s.values[a:b].tobytes()).hexdigest()[:16]
        self.source = {"data": cfg.get("data") or cfg["series"], "steps": n, "columns": s.columns,
                       "ranges": {k: [s.index[v[0]], s.index[v[1] - 1]] for k, v in ranges.items()},
                       "season": self.stats["season"]}

    def state_dict(self) -> Dict[str, Any]:
        return {"stats": self.stats, "source": self.source, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.stats = state.get("stats", {})
        self.source = state.get("source", {})
        self.fingerprint = state.get("fingerprint", "")

    def _n_inputs(self) -> int:
        return len(self.stats["columns"]) * (2 if self.config.get("levels", True) else 1)

    def build_model(self) -> Forecaster:
        return Forecaster(self._n_inputs(), self.config["horizon"], self.config)

    # --- windows -------------------------------------------------------------------------------------
    def _anchors(self, split: str, n: int) -> List[int]:
        """Last input index t of every window whose targets t+1..t+H lie in ``split``."""
        cfg = self.config
        ranges = _ranges(n, cfg["valid_fraction"], cfg["test_fraction"])
        if split not in ranges:
            return []
        lo, hi = ranges[split]
        H, W = cfg["horizon"], cfg["window"]
        first = max(W - 1, self.stats.get("season", 1) - 1, lo - 1)
        return list(range(first, hi - H))

    def _windows(self, values: np.ndarray, anchors: List[int]):
        """x (W, B, I) float32, targets (B, H) in units of s_y, last values y_t (B,), truth (B, H)."""
        cfg = self.config
        W, H = cfg["window"], cfg["horizon"]
        tgt = self.stats["target"]
        dsd, mean, sd = (np.asarray(self.stats[k]) for k in ("diff_sd", "mean", "sd"))
        idx = np.asarray(anchors)
        win = values[idx[:, None] + np.arange(-W + 1, 1)[None, :]]            # (B, W, F)
        last = win[:, -1:, :]                                                 # (B, 1, F)
        parts = [(win - last) / dsd]
        if cfg.get("levels", True):
            parts.append((win - mean) / sd)
        x = torch.from_numpy(np.concatenate(parts, -1).transpose(1, 0, 2).astype(np.float32))
        truth = values[idx[:, None] + np.arange(1, H + 1)[None, :], tgt]      # (B, H)
        y_t = values[idx, tgt]
        target = torch.from_numpy(((truth - y_t[:, None]) / dsd[tgt]).astype(np.float32))
        return x, target, y_t, truth

    def batches(self, position: Optional[Dict[str, Any]]) -> Iterator[Batch]:
        values = self.series.values
        anchors = self._anchors("train", len(values))
        for idx, nxt in epoch_batches(len(anchors), self.config["batch_size"], self.config["seed"], position,
                                      self.rank, self.world):
            x, target, _, _ = self._windows(values, [anchors[i] for i in idx])
            yield Batch(data=(x, target), size=len(idx), position=nxt)

    def step(self, model, batch: Batch, carry) -> StepResult:
        x, target = batch.data
        loss = F.mse_loss(model(x), target)
        rmse = math.sqrt(loss.item()) * self.stats["diff_sd"][self.stats["target"]]
        return StepResult(loss=loss, count=len(target), metrics={"rmse": rmse})

    # --- evaluation ------------------------------------------------------------------------------------
    def _values(self, data: Optional[list]) -> np.ndarray:
        if data:
            if len(data) != 1:
                raise UsageError("--data: expected one CSV file")
            cols = self.stats["columns"] if self.config.get("data") else None
            s = read_csv_series(Path(data[0]), cols)
            if len(s.columns) != len(self.stats["columns"]):
                raise UsageError(f"--data {data[0]}: {len(s.columns)} numeric columns, the model reads "
                                 f"{len(self.stats['columns'])} ({', '.join(self.stats['columns'])}); "
                                 "the file needs the same columns")
            return s.values
        if self.series is None:
            self.series = self._load()
        return self.series.values

    @torch.no_grad()
    def predict(self, model, values: np.ndarray, anchors: List[int]):
        """(forecasts (B, H), truth (B, H), naive (B, H), seasonal naive (B, H)) on the original scale."""
        was_training = model.training
        model.eval()
        x, _, y_t, truth = self._windows(values, anchors)
        tgt, H, m = self.stats["target"], self.config["horizon"], max(self.stats["season"], 1)
        pred = y_t[:, None] + model(x).double().numpy() * self.stats["diff_sd"][tgt]
        model.train(was_training)
        naive = np.repeat(y_t[:, None], H, axis=1)
        hs = np.arange(1, H + 1)
        back = np.asarray(anchors)[:, None] + hs[None, :] - m * np.ceil(hs / m).astype(int)[None, :]
        snaive = values[back, tgt]
        return pred, truth, naive, snaive

    def evaluate(self, model, split: str, ctx: RunContext, limit: Optional[int] = None,
                 data: Optional[list] = None) -> Dict[str, float]:
        values = self._values(data)
        if data:
            W, H = self.config["window"], self.config["horizon"]
            anchors = list(range(max(W, self.stats["season"]) - 1, len(values) - H))
            if not anchors:
                raise UsageError(f"--data {data[0]}: {len(values)} steps hold no window of --window {W} "
                                 f"and --horizon {H}")
        else:
            if split not in ("train", "valid", "test"):
                raise UsageError(f"--split: expected train, valid or test, got {split!r}")
            anchors = self._anchors(split, len(values))
            if not anchors:
                raise UsageError(f"--split {split}: this run has no {split} part (--test-fraction 0)")
        if limit:
            anchors = anchors[:limit]
        pred, truth, naive, snaive = self.predict(model, values, anchors)
        res: Dict[str, float] = {}
        for name, guess in (("", pred), ("naive_", naive), ("snaive_", snaive)):
            err = guess - truth
            res[name + "rmse"] = float(np.sqrt((err ** 2).mean()))
            res[name + "mae"] = float(np.abs(err).mean())
        res["loss"] = float((((pred - truth) / self.stats["diff_sd"][self.stats["target"]]) ** 2).mean())
        res["items"] = len(anchors)
        return res

    # --- the plot ----------------------------------------------------------------------------------------
    def plot(self, model, path: Path) -> Optional[Path]:
        """forecast.png: truth and the h=1 and h=H forecasts on the validation and test parts."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        values = self.series.values
        tgt, H = self.stats["target"], self.config["horizon"]
        splits = [s for s in ("valid", "test") if self._anchors(s, len(values))]
        fig, axes = plt.subplots(len(splits), 1, figsize=(10, 3.2 * len(splits)), squeeze=False)
        for ax, split in zip(axes[:, 0], splits):
            anchors = self._anchors(split, len(values))
            pred, truth, naive, _ = self.predict(model, values, anchors)
            t = np.asarray(anchors)
            lo = max(0, t[0] - 2 * self.config["window"])
            ax.plot(range(lo, t[-1] + H + 1), values[lo:t[-1] + H + 1, tgt], color="black", lw=1.2, label="truth")
            ax.plot(t + 1, pred[:, 0], color="tab:blue", lw=1.2, label=f"{self.config['arch']} h=1")
            if H > 1:
                ax.plot(t + H, pred[:, -1], color="tab:orange", lw=1.0, label=f"{self.config['arch']} h={H}")
            res = self.evaluate(model, split, RunContext())
            ax.set_title(f"{self.source.get('data')} {split}: RMSE {res['rmse']:.3g} (naive "
                         f"{res['naive_rmse']:.3g}, seasonal naive {res['snaive_rmse']:.3g})", fontsize=10)
            idx = self.series.index
            ticks = np.linspace(lo, t[-1] + H, 6).astype(int)
            ax.set_xticks(ticks, [idx[i] for i in ticks])
            ax.set_ylabel(self.stats["columns"][tgt])
            ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def reports_test(self) -> bool:
        return bool(self._anchors("test", len(self.series.values)))

    def write_artefacts(self, model, run_dir: Path) -> List[Path]:
        png = self.plot(model, Path(run_dir) / "forecast.png")
        return [] if png is None else [png]

    def demo_sample(self, model) -> Optional[str]:
        """The validation metrics of the last step's weights beside the baselines (the
        engine reports the test split from the model selected on validation)."""
        r = self.evaluate(model, "valid", RunContext())
        return (f"{'split':<6} {'rmse':>10} {'mae':>10} {'naive rmse':>11} {'naive mae':>10} "
                f"{'snaive rmse':>12} {'snaive mae':>11}  (season {self.stats['season']})\n"
                f"{'valid':<6} {r['rmse']:>10.4g} {r['mae']:>10.4g} {r['naive_rmse']:>11.4g} "
                f"{r['naive_mae']:>10.4g} {r['snaive_rmse']:>12.4g} {r['snaive_mae']:>11.4g}")
