"""The training engine shared by every task (see :mod:`rnnkit.training.task`).

One optimiser step::

    lr      = schedule(step)                       # warm-up, then constant/cosine/linear/step
    result  = task.step(model, batch, carry)       # forward + loss
    result.loss.backward()
    g       = ||grad||_2 over all parameters       # logged every step window
    grad   *= min(1, clip / g)                     # clipping, on by default (SPEC.md section 6)
    optimizer.step()                               # adamw | sgd | rmsprop
    carry   = result.carry.detach()                # truncated BPTT: state crosses batches

and around it: validation every ``eval_every`` steps with early stopping on the task's
metric, ``best.safetensors`` at each improvement, a resumable ``checkpoint.safetensors``
every ``save_every`` steps, ``metrics.jsonl`` / ``metrics.csv`` / ``loss.png``, a progress
bar, and SIGINT/SIGTERM handling (finish the step, save, exit 130).

Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel over
gloo, each task shards its data by rank, logged metrics are averaged over processes, and
only rank 0 writes files; per-process state (RNG, carried hidden state) is gathered into
the checkpoint so that a distributed run resumes exactly too.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from . import metrics as M
from .checkpoint import (BEST_FILE, TRAIN_FILE, load_optimizer_state, load_weights, optimizer_state,
                         prefixed, read_checkpoint, save_checkpoint, write_atomic)
from .models import check_model_config, count_parameters
from .task import RunContext, Task, UsageError, get_task

EXIT_INTERRUPTED = 130


# ---- processes and threads ---------------------------------------------------------------
def init_context(seed: int) -> RunContext:
    """The RunContext of this process; joins the torchrun process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
    return RunContext(rank=rank, world_size=world, seed=seed)


def configure_threads(threads: int) -> int:
    """``threads`` torch threads, or (0) this machine's cores split between the processes
    that torchrun started on it."""
    if threads <= 0:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = max(1, (os.cpu_count() or 1) // local)
    torch.set_num_threads(threads)
    return threads


def _all_reduce(ctx: RunContext, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    if ctx.world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                               "min": dist.ReduceOp.MIN}[op])
    return t


def _gather(ctx: RunContext, t: torch.Tensor) -> torch.Tensor:
    """(W, ...) stack of every process's ``t`` (same shape everywhere)."""
    if ctx.world_size == 1:
        return t.unsqueeze(0)
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.stack(parts)


def _broadcast_str(ctx: RunContext, text: str) -> str:
    if ctx.world_size == 1:
        return text
    import torch.distributed as dist

    buf = torch.zeros(4096, dtype=torch.uint8)
    raw = text.encode()[:4096]
    buf[:len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    dist.broadcast(buf, src=0)
    return bytes(buf[buf != 0].tolist()).decode()


def _agree(ctx: RunContext, error: Optional[UsageError]) -> None:
    """Raise on every process when any process failed a check (so none waits forever)."""
    failed = _all_reduce(ctx, torch.tensor([1.0 if error else 0.0]), "max").item() > 0
    if error is not None:
        raise error
    if failed:
        raise UsageError("another process rejected the run (see its message)")


# ---- learning-rate schedule -------------------------------------------------------------
def lr_at(step: int, config: Dict[str, Any], elapsed: Optional[float] = None) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up to ``lr``, then
    constant, cosine or linear decay to ``lr * min_lr``, or ``step``: times ``min_lr`` at
    each third of the run.

    With a time budget (``max_time`` > 0) and ``elapsed`` seconds of training, progress
    through the schedule is the larger of the step fraction and the time fraction, so a
    run stopped by the clock still ends its decay (such runs depend on the machine's
    speed and are not bit-reproducible)."""
    peak, warm, total = config["lr"], config["warmup"], max(1, config["steps"])
    if warm and step < warm:
        return peak * (step + 1) / warm
    frac = min(1.0, (step - warm) / max(1, total - warm))
    if config.get("max_time") and elapsed is not None:
        frac = min(1.0, max(frac, elapsed / config["max_time"]))
    floor = config["min_lr"]
    kind = config["schedule"]
    if kind == "cosine":
        return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))
    if kind == "linear":
        return peak * (1 - (1 - floor) * frac)
    if kind == "step":
        return peak * floor ** min(2, int(frac * 3))
    return peak


def make_optimizer(params, config: Dict[str, Any]) -> torch.optim.Optimizer:
    kind, lr, wd = config["optimizer"], config["lr"], config["weight_decay"]
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config["momentum"], weight_decay=wd)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=config["momentum"], weight_decay=wd)
    raise UsageError(f"--optimizer: expected adamw, sgd or rmsprop, got {kind!r}")


# ---- signals ----------------------------------------------------------------------------
class _StopFlag:
    """SIGINT/SIGTERM set a flag the loop reads after each step; a second SIGINT aborts."""

    def __init__(self):
        self.signal: Optional[int] = None
        self._old: Dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---- small helpers ----------------------------------------------------------------------
def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def _detach(carry):
    if carry is None:
        return None
    return tuple(t.detach() for t in carry)


def default_run_dir(config: Dict[str, Any]) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config['task']}-{config['arch']}-{stamp}"


def _check_run_dir(path: Path, overwrite: bool) -> Optional[UsageError]:
    if path.exists() and not path.is_dir():
        return UsageError(f"--out {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        return UsageError(f"--out {path}: folder exists and is not empty; pass --overwrite to replace "
                          f"it, or resume it with `rnnkit train --resume {path}`")
    return None


class _Window:
    """Per-process sums over the steps since the last training record."""

    FIXED = ("loss", "count", "gn_sum", "gn_max", "clipped", "items", "steps", "time")

    def __init__(self, keys: List[str]):
        self.keys = keys
        self.v = torch.zeros(len(self.FIXED) + len(keys), dtype=torch.float64)

    def add(self, result, grad_norm: float, clipped: bool, items: int, dt: float):
        if not self.keys and result.metrics:
            self.keys = sorted(result.metrics)
            self.v = torch.cat([self.v, torch.zeros(len(self.keys), dtype=torch.float64)])
        n = result.count
        vals = [result.loss.item() * n, n, grad_norm, 0.0, float(clipped), items, 1, dt]
        vals += [result.metrics.get(k, 0.0) * n for k in self.keys]
        new = torch.tensor(vals, dtype=torch.float64)
        self.v[3] = max(self.v[3].item(), grad_norm)
        new[3] = 0.0
        self.v += new

    def record(self, ctx: RunContext) -> Dict[str, float]:
        total = _all_reduce(ctx, self.v.clone())
        gmax = _all_reduce(ctx, self.v[3:4].clone(), "max").item()
        f = dict(zip(self.FIXED, total.tolist()))
        n = max(f["count"], 1.0)
        steps = max(f["steps"] / ctx.world_size, 1.0)
        rec = {"loss": f["loss"] / n}
        rec.update({k: total[len(self.FIXED) + i].item() / n for i, k in enumerate(self.keys)})
        rec.update(grad_norm=f["gn_sum"] / ctx.world_size / steps, grad_norm_max=gmax,
                   clipped=f["clipped"] / ctx.world_size / steps,
                   throughput=f["items"] / max(f["time"] / ctx.world_size, 1e-9))
        self.v.zero_()
        return rec


# ---- the engine -------------------------------------------------------------------------
def train(config: Dict[str, Any], resume: Optional[Path] = None,
          overrides: Optional[Dict[str, Any]] = None, out=sys.stdout) -> Dict[str, Any]:
    """Train a task; returns the run summary (also written to ``summary.json``).

    Args:
        config: the resolved options (``config["task"]`` names the task); ignored when
            resuming, where the checkpoint's configuration is used.
        resume: a run folder to continue from its ``checkpoint.safetensors``.
        overrides: options changed on resume (only ``options.RESUMABLE_OVERRIDES``).
        out: where result lines go (the progress bar goes to stderr).

    ``summary["stopped"]`` says why training ended: ``"steps"``, ``"early_stop"``,
    ``"max_time"`` or ``"interrupted"`` (the CLI then exits with status 130).
    """
    ckpt_tensors: Dict[str, torch.Tensor] = {}
    trainer: Dict[str, Any] = {}
    if resume is not None:
        resume = Path(resume)
        file = resume / TRAIN_FILE
        if not file.is_file():
            raise UsageError(f"--resume {resume}: no {TRAIN_FILE} there; expected the folder of a "
                             "run started by `rnnkit train`")
        ckpt_tensors, meta = read_checkpoint(file)
        if meta["kind"] != "train":
            raise UsageError(f"--resume {file}: a weights-only checkpoint cannot be resumed")
        from .options import DEFAULTS

        stored = meta["config"]
        try:
            task_defaults = get_task(stored.get("task", "")).defaults
        except UsageError:
            raise UsageError(f"--resume {file}: written for task {stored.get('task')!r}, which this "
                             "rnnkit does not have") from None
        # options added after the checkpoint was written take their defaults
        config = {**DEFAULTS, **task_defaults, **stored, **(overrides or {})}
        trainer = meta["trainer"]
        task_state = meta.get("task_state") or {}
    config = dict(config)
    cls = get_task(config["task"])
    ctx = init_context(config["seed"])
    config_threads = configure_threads(config["threads"])

    # --- every check before any file is written ---
    if resume is not None and trainer.get("world_size", 1) != ctx.world_size:
        raise UsageError(f"--resume {resume}: the run used {trainer['world_size']} processes, this "
                         f"launch has {ctx.world_size}; resume with the same --nproc_per_node")
    check_model_config(config, cls.allows_bidirectional)
    cls.check_config(config)
    if resume is not None:
        run_dir = resume
    else:
        run_dir = Path(_broadcast_str(ctx, str(Path(config["out"]) if config["out"]
                                                else default_run_dir(config))))
        _agree(ctx, _check_run_dir(run_dir, config["overwrite"]))
    task = cls(config)
    if resume is not None:
        task.load_state_dict(task_state)
    problem: Optional[UsageError] = None
    try:
        task.setup(ctx)
        if resume is not None:
            task.check_resume(task_state)
    except UsageError as e:
        problem = e
    _agree(ctx, problem)

    torch.manual_seed(config["seed"])
    model = task.build_model()
    n_params = count_parameters(model)
    optimizer = make_optimizer(model.parameters(), config)
    carry = None
    if resume is not None:
        where = str(resume / TRAIN_FILE)
        load_weights(model, prefixed(ckpt_tensors, "model"), where)
        load_optimizer_state(optimizer, ckpt_tensors, trainer["optimizer"])
        rank_state = prefixed(ckpt_tensors, "rank")
        torch.set_rng_state(rank_state["rng"][ctx.rank].clone())
        n_carry = trainer.get("carry", 0)
        if n_carry:
            carry = tuple(rank_state[f"carry.{i}"][ctx.rank].clone() for i in range(n_carry))
    else:
        torch.manual_seed(config["seed"] * 1000 + ctx.rank)  # dropout differs across processes

    net = model
    if ctx.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)

    step = trainer.get("step", 0)
    position = trainer.get("position")
    best = trainer.get("best")
    bad_evals = trainer.get("bad_evals", 0)
    elapsed = trainer.get("elapsed", 0.0)
    items_done = trainer.get("items", 0)
    window = _Window(trainer.get("window_keys", []))
    if resume is not None and "window" in prefixed(ckpt_tensors, "rank"):
        window.v = prefixed(ckpt_tensors, "rank")["window"][ctx.rank].clone()

    main = ctx.is_main
    log: Optional[M.MetricsLog] = None
    created = False
    if main:
        if resume is None:
            if run_dir.exists() and config["overwrite"]:
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            created = True
            write_atomic(run_dir / "config.json", (json.dumps(config, indent=2) + "\n").encode())
        log = M.MetricsLog(run_dir, truncate_at=trainer.get("metrics_offset"),
                           tensorboard=config["tensorboard"])
    saved_once = resume is not None

    def save(stop_reason: Optional[str] = None) -> None:
        nonlocal saved_once
        rank_tensors = {"rng": torch.get_rng_state(), "window": window.v}
        if carry is not None:
            for i, t in enumerate(carry):
                rank_tensors[f"carry.{i}"] = t
        gathered = {f"rank.{k}": _gather(ctx, v) for k, v in rank_tensors.items()}
        if not main:
            return
        opt_tensors, opt_meta = optimizer_state(optimizer)
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update(opt_tensors)
        tensors.update(gathered)
        state = dict(step=step, position=position, best=best, bad_evals=bad_evals, elapsed=elapsed,
                     items=items_done, world_size=ctx.world_size, optimizer=opt_meta,
                     scheduler={"name": config["schedule"], "step": step, "lr": optimizer.param_groups[0]["lr"]},
                     carry=0 if carry is None else len(carry), window_keys=window.keys,
                     metrics_offset=log.offset(), stopped=stop_reason)
        save_checkpoint(run_dir / TRAIN_FILE, tensors,
                        {"kind": "train", "task": config["task"], "config": config,
                         "task_state": task.state_dict(), "trainer": state})
        M.write_csv(run_dir)
        saved_once = True

    def save_best() -> None:
        if main:
            save_checkpoint(run_dir / BEST_FILE, {f"model.{k}": v for k, v in model.state_dict().items()},
                            {"kind": "model", "task": config["task"], "config": config,
                             "task_state": task.state_dict(), "step": step})

    def say(line: str) -> None:
        if main:
            if bar is not None:
                bar.write(line, file=out)
            else:
                print(line, file=out, flush=True)

    show = config["progress"] == "on" or (config["progress"] == "auto" and sys.stderr.isatty())
    bar = None
    metric = task.metric  # chosen by the task, which may look at its data (NER: entity F1)
    unit = cls.unit
    stopped: Optional[str] = None
    final_eval: Optional[Tuple[int, Dict[str, float]]] = None
    try:
        if main:
            say(f"{config['task']}: {config['arch']} ({config['backend']}), {n_params:,} parameters, "
                f"{ctx.world_size} process(es) x {config_threads} thread(s) -> {run_dir}")
            about = task.describe()
            if about:
                say(about)
            if resume is not None:
                say(f"resuming at step {step}/{config['steps']}")
            if show:
                from tqdm import tqdm

                bar = tqdm(total=config["steps"], initial=step, unit="step", dynamic_ncols=True,
                           file=sys.stderr, desc=config["task"], smoothing=0.1)
        if trainer.get("stopped") in ("steps", "early_stop") and step >= config["steps"]:
            say(f"the run already finished at step {step}; pass --steps N (> {step}) to extend it")
            stopped = trainer["stopped"]
        batches = task.batches(position)
        with _StopFlag() as flag:
            while stopped is None and step < config["steps"]:
                batch = next(batches)
                if batch.reset_carry:
                    carry = None
                lr = lr_at(step, config, elapsed)
                if ctx.world_size > 1 and config["max_time"]:  # the clocks differ: use rank 0's
                    lr = _all_reduce(ctx, torch.tensor([lr if main else 0.0], dtype=torch.float64)).item()
                for group in optimizer.param_groups:
                    group["lr"] = lr
                t0 = time.perf_counter()
                net.train()
                result = task.step(net, batch, carry)
                optimizer.zero_grad(set_to_none=True)
                result.loss.backward()
                max_norm = config["clip"] if config["clip"] > 0 else float("inf")
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
                optimizer.step()
                carry = _detach(result.carry)
                position = batch.position
                dt = time.perf_counter() - t0
                step += 1
                elapsed += dt
                items_done += batch.size * ctx.world_size
                window.add(result, grad_norm, config["clip"] > 0 and grad_norm > config["clip"],
                           batch.size, dt)
                if step % config["log_every"] == 0 or step == config["steps"]:
                    rec = window.record(ctx)
                    if main:
                        log.write({"step": step, "split": "train", **rec, "lr": lr, "time": elapsed})
                        if bar is not None:
                            bar.set_postfix_str(f"loss {rec['loss']:.3f} {metric} {rec.get(metric, rec['loss']):.3f} "
                                                f"{_fmt_rate(rec['throughput'])} {unit}/s |g| {rec['grad_norm']:.2f}")
                if bar is not None:
                    bar.update(1)
                evaluated = False
                if step % config["eval_every"] == 0 or step == config["steps"]:
                    # the last validation reads the whole split; the summary reuses it
                    limit = None if step == config["steps"] else (config.get("eval_limit") or None)
                    res = task.evaluate(model, "valid", ctx, limit=limit)
                    if limit is None:
                        final_eval = (step, res)
                    evaluated = True
                    value = res[metric]
                    better = best is None or (value < best if task.metric_mode == "min" else value > best)
                    if better:
                        best, bad_evals = value, 0
                        save_best()
                    else:
                        bad_evals += 1
                    if main:
                        log.write({"step": step, "split": "valid", **res})
                        M.plot(run_dir, metric, title=f"{config['task']} {config['arch']}")
                    say(f"step {step:>6}/{config['steps']}  valid {metric} {value:.4f}"
                        f"{' *' if better else '  '}  train {_last_train(log, metric)}  "
                        f"{_fmt_rate(items_done / max(elapsed, 1e-9))} {unit}/s  {_fmt_time(elapsed)}")
                    if config["patience"] and bad_evals >= config["patience"]:
                        stopped = "early_stop"
                # every process must stop at the same step: vote on [diverged, signal, clock]
                # (the clock is rank 0's)
                votes = torch.tensor([float(not math.isfinite(result.loss.item())),
                                      float(flag.signal is not None),
                                      float(bool(config["max_time"]) and main and elapsed >= config["max_time"])])
                votes = _all_reduce(ctx, votes, "max")
                if votes[0]:
                    stopped = "diverged"
                elif stopped is None and votes[1]:
                    stopped = "interrupted"
                elif stopped is None and votes[2]:
                    stopped = "max_time"
                if evaluated or step % config["save_every"] == 0 or stopped or step == config["steps"]:
                    save(stopped or ("steps" if step >= config["steps"] else None))
            if stopped is None:
                stopped = "steps"
    except BaseException:
        if bar is not None:
            bar.close()
        if main and created and not saved_once:
            if log is not None:
                log.close()
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if bar is not None:
        bar.close()

    summary: Dict[str, Any] = {
        "task": config["task"], "arch": config["arch"], "backend": config["backend"],
        "run_dir": str(run_dir), "stopped": stopped, "step": step, "parameters": n_params,
        "world_size": ctx.world_size, "threads": config_threads, "train_time_s": elapsed,
        "throughput": items_done / max(elapsed, 1e-9), "unit": unit, "best_" + metric: best,
    }
    if stopped == "interrupted":
        say(f"interrupted at step {step}; checkpoint saved. Continue with: "
            f"rnnkit train --resume {run_dir}")
    else:
        if final_eval is not None and final_eval[0] == step:
            res = final_eval[1]
        else:
            res = task.evaluate(model, "valid", ctx, limit=None)
        summary["valid"] = res
        if main:
            log.write({"step": step, "split": "valid_final", **res})
        if ctx.world_size > 1:
            flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            every = _gather(ctx, flat)
            summary["ranks_max_abs_diff"] = float((every - every[0]).abs().max())
        say(f"done ({stopped}) at step {step}: valid {metric} {res[metric]:.4f} "
            f"(loss {res['loss']:.4f}) on {res.get('items', 0):,} {unit}; "
            f"{_fmt_time(elapsed)} training, {_fmt_rate(summary['throughput'])} {unit}/s")
        selected, weights = _selected_model(task, model, run_dir, step)
        if task.reports_test():
            test = task.evaluate(selected, "test", ctx, limit=None)
            summary["test"] = {**test, "weights": weights}
            extra = "".join(f", {k} {v:.4f}" for k, v in test.items() if k not in (metric, "loss", "items"))
            say(f"test split: {metric} {test[metric]:.4f} (loss {test['loss']:.4f}{extra}) on "
                f"{test.get('items', 0):,} {unit}; weights of {weights}")
        if main:
            text = task.demo_sample(model)
            if text is not None:
                summary["sample"] = text
                say("sample:\n" + text)
            summary["artefacts"] = [str(p) for p in task.write_artefacts(selected, run_dir)]
    if main:
        log.close()
        M.write_csv(run_dir)
        png = M.plot(run_dir, metric, title=f"{config['task']} {config['arch']}")
        write_atomic(run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        files = ", ".join(p.name for p in (run_dir / TRAIN_FILE, run_dir / BEST_FILE, png,
                                           *map(Path, summary.get("artefacts", []))) if p and p.exists())
        say(f"run folder: {run_dir} ({files})")
    return summary


def _selected_model(task: Task, model: torch.nn.Module, run_dir: Path, step: int) -> Tuple[torch.nn.Module, str]:
    """(the model selected on validation, what it is): the weights of best.safetensors,
    or ``model`` itself when they are its weights or no validation ever saved any."""
    file = run_dir / BEST_FILE
    if not file.is_file():
        return model, f"the last step ({step}; no validation selected a model)"
    tensors, meta = read_checkpoint(file)
    if meta.get("step") == step:
        return model, f"{BEST_FILE} (step {step}, the last)"
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten; leave the RNG be
        selected = task.build_model()
    load_weights(selected, prefixed(tensors, "model"), str(file))
    return selected, f"{BEST_FILE} (step {meta.get('step')})"


def _last_train(log: Optional[M.MetricsLog], metric: str) -> str:
    """``METRIC VALUE`` of the last training record, or its loss when training does not
    compute the metric (the tagger's entity F1 is a validation metric)."""
    if log is None:
        return f"{metric} nan"
    try:
        with open(log.path, "rb") as f:
            f.seek(max(0, os.path.getsize(log.path) - 4096))
            lines = f.read().decode(errors="replace").splitlines()
        for line in reversed(lines):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("split") == "train":
                return f"{metric} {r[metric]:.4f}" if metric in r else f"loss {r['loss']:.4f}"
    except OSError:
        pass
    return f"{metric} nan"
