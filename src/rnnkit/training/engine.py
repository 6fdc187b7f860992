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
from .checkpoint import (BEST_FILE, TRAIN_FILE, CheckpointError, check_model_size, check_trainer,
                         checkpoint_config, load_optimizer_state, load_weights, optimizer_state, prefixed,
                         read_checkpoint, restore_task, save_checkpoint, write_atomic)
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


# ---- run folders --------------------------------------------------------------------------
# A run folder holds only what the engine writes; that is how --overwrite tells a run
# folder (which it may replace) from any other folder (which it never touches).
LOCK_FILE = ".lock"
RUN_ENTRIES = frozenset({TRAIN_FILE, BEST_FILE, "config.json", "summary.json", M.JSONL, M.CSV, M.PNG,
                         "tensorboard", LOCK_FILE})


def _is_leftover_tmp(name: str) -> bool:
    """A temporary file of :func:`write_atomic` for one of the run's files."""
    return name.endswith(".tmp") and any(name.startswith(f".{entry}.") for entry in RUN_ENTRIES)


def foreign_entries(folder: Path) -> List[str]:
    """Names in ``folder`` that no rnnkit run writes (sorted)."""
    foreign = []
    for p in sorted(folder.iterdir()):
        if p.name == "tensorboard" and p.is_dir() and not p.is_symlink():
            foreign += [f"tensorboard/{q.name}" for q in sorted(p.iterdir())
                        if not (q.is_file() and q.name.startswith("events.out.tfevents."))]
        elif not ((p.name in RUN_ENTRIES and p.is_file() and not p.is_symlink()) or _is_leftover_tmp(p.name)):
            foreign.append(p.name)
    return foreign


def is_run_folder(folder: Path) -> bool:
    """True for a folder written by ``rnnkit train``: its config.json and nothing foreign."""
    try:
        config = json.loads((folder / "config.json").read_text("utf-8"))
        return isinstance(config, dict) and "task" in config and not foreign_entries(folder)
    except (OSError, ValueError):
        return False


def _aside_name(run_dir: Path) -> str:
    return f".{run_dir.name}.replaced-"


def _check_run_dir(path: Path, overwrite: bool) -> Optional[UsageError]:
    if path.exists() and not path.is_dir():
        return UsageError(f"--out {path}: exists and is not a folder")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return UsageError(f"--out {path}: {parent} is a file, not a folder; choose another --out")
    if path.parent.is_dir():
        left = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(_aside_name(path)))
        if left:
            return UsageError(f"--out {path}: an earlier --overwrite of this folder was interrupted and the "
                              f"previous run is still in {path.parent / left[0]}; move it back or delete it")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            return UsageError(f"--out {path}: folder exists and is not empty; pass --overwrite to replace "
                              f"it, or resume it with `rnnkit train --resume {path}`")
        if not is_run_folder(path):
            foreign = foreign_entries(path)
            what = (f"it holds {foreign[0]!r}" + (f" and {len(foreign) - 1} more" if len(foreign) > 1 else "")
                    + ", which rnnkit did not write") if foreign else "it has no config.json of a run"
            return UsageError(f"--out {path}: --overwrite replaces only a run folder written by `rnnkit "
                              f"train`, and {what}; choose another --out")
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_run_dir(folder: Path, option: str) -> int:
    """Lock ``folder/.lock`` for this process (released when the descriptor is closed or
    the process dies, so a lock left by a killed run is stale and taken over); UsageError
    when another process holds it."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UsageError(f"{option} {folder}: cannot create {LOCK_FILE} ({e.strerror})") from None

    def holder() -> str:
        try:
            return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        except OSError:
            return "unknown"

    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = holder()
        os.close(fd)
        raise UsageError(f"{option} {folder}: the run folder is in use by another rnnkit process (pid {pid}); "
                         "wait for it to end or stop it") from None
    except (ImportError, OSError):  # no flock here: fall back to the recorded process id
        pid = holder()
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            os.close(fd)
            raise UsageError(f"{option} {folder}: the run folder is in use by another rnnkit process "
                             f"(pid {pid}); wait for it to end or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def remove_leftover_tmp(folder: Path) -> List[str]:
    """Delete the temporary files a killed run left in ``folder`` (call with the lock held)."""
    removed = []
    for p in folder.iterdir():
        if _is_leftover_tmp(p.name) and p.is_file():
            p.unlink()
            removed.append(p.name)
    return removed


def _prepare_run_dir(run_dir: Path, overwrite: bool, locks: List[int]) -> Tuple[Optional[Path], bool]:
    """Create (or take over) a new run's folder and lock it. An existing run folder
    (--overwrite, already checked by :func:`_check_run_dir`) is renamed aside, to be
    deleted once the new run has saved its first checkpoint. Returns (aside, existed)."""
    aside = None
    existed = run_dir.is_dir()
    if existed and any(run_dir.iterdir()):
        problem = _check_run_dir(run_dir, overwrite)  # it may have changed since the first check
        if problem is not None:
            raise problem
        old = lock_run_dir(run_dir, "--out")   # refuses a folder that a running process uses
        try:
            problem = _check_run_dir(run_dir, overwrite)   # and again, now that no one else writes it
            if problem is not None:
                raise problem
            aside = run_dir.with_name(f"{_aside_name(run_dir)}{os.getpid()}")
            os.replace(run_dir, aside)
        finally:
            os.close(old)
        existed = False
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if aside is not None:
            os.replace(aside, run_dir)
        raise UsageError(f"--out {run_dir}: cannot create the folder ({e.strerror})") from None
    try:
        locks.append(lock_run_dir(run_dir, "--out"))
    except UsageError:
        if aside is not None:
            os.replace(aside, run_dir)
        raise
    remove_leftover_tmp(run_dir)
    return aside, existed


def _discard_new_run(run_dir: Path, aside: Optional[Path], existed: bool, locks: List[int]) -> None:
    """Undo a new run that saved nothing: remove what it wrote, put back the run it was
    replacing (or keep the empty folder the user gave)."""
    while locks:
        os.close(locks.pop())
    if existed:
        for p in run_dir.iterdir():
            if p.name in RUN_ENTRIES or _is_leftover_tmp(p.name):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    if aside is not None:
        os.replace(aside, run_dir)


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
    ``"max_time"`` or ``"interrupted"`` (the CLI then exits with status 130). A run whose
    loss becomes inf/nan raises UsageError; its folder keeps the last finite checkpoint.

    The run folder is locked for the run (``.lock``): a second ``--resume`` of it fails
    at once. ``--overwrite`` replaces only a folder that ``rnnkit train`` wrote, and
    deletes the old run only after the new one has saved its first checkpoint.
    """
    locks: List[int] = []   # the run folder's lock (main process), released on return
    try:
        return _train(config, resume, overrides, out, locks)
    finally:
        for fd in locks:
            os.close(fd)


def _train(config: Dict[str, Any], resume: Optional[Path], overrides: Optional[Dict[str, Any]], out,
           locks: List[int]) -> Dict[str, Any]:
    ckpt_tensors: Dict[str, torch.Tensor] = {}
    trainer: Dict[str, Any] = {}
    if resume is not None:
        resume = Path(resume)
        file = resume / TRAIN_FILE
        if not file.is_file():
            left = sorted(resume.parent.glob(_aside_name(resume) + "*")) if resume.parent.is_dir() else []
            raise UsageError(f"--resume {resume}: no {TRAIN_FILE} there; " + (
                f"an --overwrite of it was interrupted and the previous run is in {left[0]}" if left
                else "expected the folder of a run started by `rnnkit train`"))
        ckpt_tensors, meta = read_checkpoint(file)
        if meta["kind"] != "train":
            raise UsageError(f"--resume {file}: a weights-only checkpoint cannot be resumed")
        # options added after the checkpoint was written take their defaults
        _, config = checkpoint_config(meta, f"--resume {file}", overrides)
        trainer = check_trainer(meta.get("trainer"), f"--resume {file}")
        task_state = meta.get("task_state") or {}
    config = dict(config)
    cls = get_task(config["task"])
    ctx = init_context(config["seed"])
    config_threads = configure_threads(config["threads"])

    # --- every check before any file is written ---
    if resume is not None:
        problem: Optional[UsageError] = None
        if ctx.is_main:
            try:
                locks.append(lock_run_dir(resume, "--resume"))
                remove_leftover_tmp(resume)
            except UsageError as e:
                problem = e
        _agree(ctx, problem)
        jsonl = resume / M.JSONL
        offset = trainer.get("metrics_offset")
        if offset is not None and jsonl.exists() and jsonl.stat().st_size < offset:
            raise UsageError(f"--resume {resume}: {M.JSONL} has {jsonl.stat().st_size:,} bytes but the "
                             f"checkpoint was saved after {offset:,}; the log was edited, restore it")
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
    if resume is not None:
        task = restore_task(cls, config, meta, f"--resume {resume / TRAIN_FILE}")
    else:
        task = cls(config)
    problem = None
    try:
        task.setup(ctx)
        if resume is not None:
            task.check_resume(task_state)
        else:
            check_model_size(task, "model")
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
        try:
            load_optimizer_state(optimizer, ckpt_tensors, trainer["optimizer"])
            rank_state = prefixed(ckpt_tensors, "rank")
            torch.set_rng_state(rank_state["rng"][ctx.rank].clone())
            n_carry = trainer.get("carry", 0)
            if n_carry:
                carry = tuple(rank_state[f"carry.{i}"][ctx.rank].clone() for i in range(n_carry))
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
            raise CheckpointError(f"{where}: the optimiser, RNG or carried state does not fit the model "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                                  "the file was edited or damaged") from None
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
    aside: Optional[Path] = None        # the run that --overwrite replaces, until our first save
    existed = False
    problem = None
    if main and resume is None:
        try:
            aside, existed = _prepare_run_dir(run_dir, config["overwrite"], locks)
            created = True
        except UsageError as e:
            problem = e
    _agree(ctx, problem)
    saved_once = resume is not None
    last_saved = trainer.get("step", 0)

    def save(stop_reason: Optional[str] = None) -> None:
        nonlocal saved_once, aside, last_saved
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
        saved_once, last_saved = True, step
        if aside is not None:  # the new run is safe on disk: now the replaced one may go
            shutil.rmtree(aside, ignore_errors=True)
            aside = None

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
            if resume is None:
                write_atomic(run_dir / "config.json", (json.dumps(config, indent=2) + "\n").encode())
            log = M.MetricsLog(run_dir, truncate_at=trainer.get("metrics_offset"),
                               tensorboard=config["tensorboard"])
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
                    better = math.isfinite(value) and (best is None or (value < best if task.metric_mode == "min"
                                                                        else value > best))
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
                if stopped == "diverged":  # keep the last finite checkpoint; save nothing
                    raise UsageError(
                        f"--lr: the loss became inf/nan at step {step}; lower --lr or set --clip ("
                        + (f"{run_dir} keeps the checkpoint of step {last_saved})" if saved_once
                           else "nothing was saved)"))
                if evaluated or step % config["save_every"] == 0 or stopped or step == config["steps"]:
                    save(stopped or ("steps" if step >= config["steps"] else None))
            if stopped is None:
                stopped = "steps"
    except BaseException:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        if main and created and not saved_once:
            _discard_new_run(run_dir, aside, existed, locks)
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
            try:
                text = task.demo_sample(model)
            except UsageError as e:  # the run is saved; a sample it cannot draw is only a note
                text = None
                say(f"sample: skipped ({e})")
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
