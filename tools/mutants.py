"""Mutation check: plant realistic bugs in a copy of the package; the tests must catch each.

    make mutants                          # every mutant below, against this checkout's tests
    python tools/mutants.py --only clip-noop,best-every-eval
    python tools/mutants.py --tests-ref main --whole-files   # the same mutants against main's tests
    python tools/mutants.py --list

For every mutant: copy ``src/rnnkit`` (with the compiled ``_core`` found next to the
installed package) to a temporary folder, replace one exact snippet of one file, and run
the tests named for that mutant (``pytest -x -q -m "not slow"``) with the copy first on
the import path (a ``sitecustomize`` there disables the editable install's redirect, so
child processes such as ``python -m rnnkit`` import the copy too). The mutant is *caught*
when pytest reports a failure (or times out), *survived* when the tests pass. Before the
mutants, the union of the selected tests runs once on the unmutated copy and must pass.

Exit status 1 when a mutant survives, when a snippet no longer occurs exactly once in its
file (so this list cannot rot silently as the code changes), or when a selection errors.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "rnnkit"


@dataclass
class Mutant:
    name: str
    file: str           # relative to src/rnnkit
    old: str            # must occur exactly once in the file
    new: str
    tests: Tuple[str, ...]  # pytest node ids (files or file::test) expected to catch it
    why: str = ""       # the realistic bug it stands for


E = "training/engine.py"
MUTANTS: List[Mutant] = [
    # --- the survivors listed in issue 13 ---------------------------------------------
    Mutant("clip-noop", E,
           'max_norm = config["clip"] if config["clip"] > 0 else float("inf")',
           'max_norm = float("inf")',
           ("tests/test_engine_rules.py", "tests/test_cli_train.py"), "gradient clipping never clips"),
    Mutant("best-every-eval", E,
           "                        save_best()\n                    else:\n                        bad_evals += 1\n",
           "                    else:\n                        bad_evals += 1\n                    save_best()\n",
           ("tests/test_engine_rules.py", "tests/test_cli_train.py", "tests/test_checkpoint.py"),
           "best.safetensors rewritten at every evaluation"),
    Mutant("dropout-after-last-layer", "modules.py",
           "module.training and layer_index < module.num_layers - 1:",
           "module.training and layer_index < module.num_layers:",
           ("tests/test_dropout.py", "tests/test_parity_torch.py"), "dropout also on the top layer's output"),
    Mutant("dropout-no-rescale", "modules.py",
           "x = nn.functional.dropout(x, module.dropout, training=True)",
           "x = nn.functional.dropout(x, module.dropout, training=True) * (1 - module.dropout)",
           ("tests/test_dropout.py", "tests/test_parity_torch.py"), "dropout without the 1/(1-p) rescale"),
    Mutant("gradflow-backward-lags", "introspect/gradflow.py",
           "lags = (lens[None, :] - 1 - t) if direction == 0 else t.expand(T, B)",
           "lags = lens[None, :] - 1 - t",
           ("tests/test_introspect_gradflow.py",), "backward direction's lags counted as forward"),
    # --- kernel-level mutants the issue reports as caught (kept as regression guards) ---
    Mutant("lstm-swap-dh0-dc0", "functional.py",
           "_grad_or_none(ctx.needs_input_grad[1], dh0), _grad_or_none(ctx.needs_input_grad[2], dc0)",
           "_grad_or_none(ctx.needs_input_grad[1], dc0), _grad_or_none(ctx.needs_input_grad[2], dh0)",
           ("tests/test_parity_torch.py",), "LSTM initial-state gradients swapped"),
    Mutant("jordan-drop-bias", "functional.py",
           "xw = _project(x, w_ih, _sum_bias(b_ih, b_yh))",
           "xw = _project(x, w_ih, _sum_bias(b_ih, None))",
           ("tests/test_against_reference.py",), "Jordan bias b_yh dropped"),
    Mutant("reverse-ignores-lengths", "modules.py",
           "    if lengths is None:\n        return x.flip(0)",
           "    if True:\n        return x.flip(0)",
           ("tests/test_parity_torch.py",), "reverse direction flips the padding in"),
    Mutant("gru-reset-after-ignored", "networks.py",
           "return {name: getattr(module, name) for name in self.hyper}",
           "return {name: True if name == 'reset_after' else getattr(module, name) for name in self.hyper}",
           ("tests/test_against_reference.py", "tests/test_parity_torch.py"), "GRU form ignored"),
    Mutant("resume-without-optimizer", E,
           'load_optimizer_state(optimizer, ckpt_tensors, trainer["optimizer"])',
           "pass",
           ("tests/test_checkpoint.py::test_sigkill_then_resume_equals_uninterrupted_run",),
           "resume restarts the optimizer"),
    Mutant("gradflow-norms-x2", "introspect/gradflow.py",
           'n = call.gradient(k, key).detach().to(torch.float64).norm(dim=-1)',
           'n = 2 * call.gradient(k, key).detach().to(torch.float64).norm(dim=-1)',
           ("tests/test_introspect_gradflow.py",), "gradient norms scaled"),
    # --- more, across engine, modules, introspection, checkpoints, tasks, data ------------
    Mutant("clip-logs-post-clip-norm", E,
           "grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))",
           "grad_norm = min(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)), max_norm)",
           ("tests/test_engine_rules.py", "tests/test_cli_train.py"), "the logged norm is the clipped one"),
    Mutant("patience-off-by-one", E,
           'bad_evals >= config["patience"]', 'bad_evals > config["patience"]',
           ("tests/test_engine_rules.py", "tests/test_cli_train.py::test_early_stopping"),
           "early stopping one evaluation late"),
    Mutant("metric-mode-ignored", E,
           'value < best if task.metric_mode == "min"', "value < best if True",
           ("tests/test_engine_rules.py", "tests/test_cli_train.py"),
           "accuracy-like metrics treated as losses"),
    Mutant("warmup-off-by-one", E,
           "return peak * (step + 1) / warm", "return peak * step / warm",
           ("tests/test_cli_basic.py::test_lr_schedules",), "first warm-up step at lr 0"),
    Mutant("resume-without-rng", E,
           'torch.set_rng_state(rank_state["rng"][ctx.rank].clone())', "pass",
           ("tests/test_checkpoint.py::test_sigkill_then_resume_equals_uninterrupted_run",),
           "dropout masks differ after resume"),
    Mutant("reverse-internals-not-reordered", "modules.py",
           "internals.append({k: batch.per_step(v, direction == 1) for k, v in inner.items()})",
           "internals.append({k: batch.per_step(v) for k, v in inner.items()})",
           ("tests/test_introspect_gradflow.py",), "backward direction's gates in processing order"),
    Mutant("reverse-recorder-not-reordered", "modules.py",
           "recorder = StateGradients(batch, reverse=direction == 1)",
           "recorder = StateGradients(batch, reverse=False)",
           ("tests/test_introspect_gradflow.py",), "backward direction's dh in processing order"),
    Mutant("saturation-counts-padding", "introspect/saturation.py",
           "lo = ((a < low) & active).sum(dim=(0, 1)).double()",
           "lo = (a < low).sum(dim=(0, 1)).double()",
           ("tests/test_introspect_gradflow.py",), "padding steps counted as saturated"),
    Mutant("checkpoint-checksum-unchecked", "training/checkpoint.py",
           'if raw.get("sha256") != digest:', "if False:",
           ("tests/test_checkpoint.py",), "a damaged checkpoint loads"),
    Mutant("lm-target-not-shifted", "tasks/lm.py",
           "y_all = ids[shift + 1:shift + 1 + B * W * L].view(B * W, L)[rows]",
           "y_all = ids[shift:shift + B * W * L].view(B * W, L)[rows]",
           ("tests/test_data_and_tasks.py", "tests/test_cli_train.py"), "the LM learns to copy its input"),
    Mutant("lm-eval-drops-state", "tasks/lm.py",
           "logits, state = model(x, state)", "logits, state = model(x, None)",
           ("tests/test_data_and_tasks.py", "tests/test_cli_train.py"),
           "evaluation forgets the state at every chunk"),
    Mutant("text-test-overlaps-valid", "data/text.py",
           '"test": text[b:]}', '"test": text[a:]}',
           ("tests/test_data_and_tasks.py", "tests/test_cli_train.py"),
           "test split contains the validation text"),
    Mutant("vocab-min-count-strict", "data/text.py",
           "keep = np.nonzero(counts >= max(1, min_count))[0]",
           "keep = np.nonzero(counts > max(1, min_count))[0]",
           ("tests/test_data_and_tasks.py", "tests/test_cli_train.py"),
           "characters seen exactly min_count times dropped"),
    Mutant("music-pitch-off-by-one", "data/music.py",
           "k = int(p) - LOWEST\n", "k = int(p) - LOWEST + 1\n",
           ("tests/test_data_and_tasks.py", "tests/test_task_music.py"), "piano roll shifted a semitone"),
    Mutant("conll-entity-end", "data/conll.py",
           "out.add((kind, start, i + 1))", "out.add((kind, start, i))",
           ("tests/test_data_and_tasks.py", "tests/test_task_tag.py::test_entities_follow_conlleval"),
           "E-/S- entities one token short"),
]


def installed_core() -> Path:
    """The compiled extension the installed package imports."""
    code = "import rnnkit._core as c; print(c.__file__)"
    path = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                          check=True).stdout.strip()
    return Path(path)


def make_copy(dest: Path, core: Path) -> Path:
    """src/rnnkit and its _core in dest/rnnkit, and a sitecustomize that drops the editable
    install's import redirect so that dest comes first for this and child interpreters."""
    shutil.copytree(PACKAGE, dest / "rnnkit", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy2(core, dest / "rnnkit" / core.name)
    (dest / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith('_editable')]\n")
    return dest


def apply(mutant: Mutant, copy: Path) -> None:
    path = copy / "rnnkit" / mutant.file
    text = path.read_text().replace(mutant.old, mutant.new, 1)
    compile(text, str(path), "exec")  # a mutant that does not even parse would be caught for free
    path.write_text(text)


def check_snippets(mutants: List[Mutant]) -> List[str]:
    problems = []
    for m in mutants:
        text = (PACKAGE / m.file).read_text()
        n = text.count(m.old)
        if n != 1:
            problems.append(f"{m.name}: the snippet occurs {n} times in src/rnnkit/{m.file} (expected once); "
                            f"update the mutant list")
    return problems


def run_pytest(copy: Path, tests_root: Path, selection: List[str], timeout: float) -> Tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout' | 'error', seconds, last lines of output)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), os.environ.get("PYTHONPATH", "")]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)  # a skip is not a kill: strict-skip mode would count it as one
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-m", "not slow", "-p", "no:cacheprovider",
           "--rootdir", str(tests_root), *selection]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=tests_root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.time() - t0, ""
    tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-3:])
    # 0 passed; 1 tests failed; 2 interrupted (e.g. an import broken by the mutant);
    # 4 usage error (a node id that does not exist); 5 nothing collected
    outcome = {0: "pass", 1: "fail", 2: "fail"}.get(p.returncode, "error")
    return outcome, time.time() - t0, tail


def export_tests(ref: str, dest: Path) -> Path:
    """dest/repo: this checkout with tests/ taken from git ``ref`` (dest/shared points at ../shared)."""
    repo = dest / "repo"
    repo.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name not in ("tests", ".git", ".venv", "build"):
            (repo / entry.name).symlink_to(entry)
    archive = subprocess.run(["git", "archive", ref, "tests"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive, check=True)
    shared = (ROOT.parent / "shared").resolve()
    if shared.exists():
        (dest / "shared").symlink_to(shared)
    return repo


def selection_for(m: Mutant, tests_root: Path, whole_files: bool) -> List[str]:
    picked = []
    for nodeid in m.tests:
        item = nodeid.split("::")[0] if whole_files else nodeid
        if (tests_root / item.split("::")[0]).is_file() and item not in picked:
            picked.append(item)
    return picked


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated mutant names (default: all)")
    p.add_argument("--list", action="store_true", help="print the mutants and exit")
    p.add_argument("--tests-ref", default="", help="run the tests of this git ref (e.g. main) instead")
    p.add_argument("--whole-files", action="store_true", help="run whole test files, not the named tests")
    p.add_argument("--suite", action="store_true", help="run the whole non-slow suite for every mutant (slow)")
    p.add_argument("--no-baseline", action="store_true", help="skip the run on the unmutated copy")
    p.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default 600)")
    args = p.parse_args(argv)

    mutants = MUTANTS
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in {m.name for m in MUTANTS}]
        if unknown:
            p.error(f"--only: unknown mutant(s) {', '.join(unknown)}; see --list")
        mutants = [m for m in MUTANTS if m.name in names]
    if args.list:
        for m in mutants:
            print(f"{m.name:34s} src/rnnkit/{m.file:26s} {m.why}")
        return 0
    problems = check_snippets(mutants)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1

    core = installed_core()
    with tempfile.TemporaryDirectory(prefix="rnnkit-mutants-") as tmp:
        tmp = Path(tmp)
        tests_root = export_tests(args.tests_ref, tmp / "ref") if args.tests_ref else ROOT
        selections = {m.name: (["tests"] if args.suite else selection_for(m, tests_root, args.whole_files))
                      for m in mutants}
        if not args.no_baseline:
            union = sorted({s for sel in selections.values() for s in sel})
            outcome, secs, tail = run_pytest(make_copy(tmp / "baseline", core), tests_root, union, args.timeout * 4)
            print(f"baseline (unmutated copy, {len(union)} selections): {outcome} in {secs:.0f} s", flush=True)
            if outcome != "pass":
                print(tail, file=sys.stderr)
                print("mutants: the selected tests fail without any mutant; fix that first", file=sys.stderr)
                return 1
        rows = []
        for m in mutants:
            sel = selections[m.name]
            if not sel:
                rows.append((m, "no tests", 0.0, ""))
                print(f"{m.name:34s} no tests", flush=True)
                continue
            copy = make_copy(tmp / m.name, core)
            try:
                apply(m, copy)
            except SyntaxError as e:
                rows.append((m, "ERROR", 0.0, f"the mutated file does not parse: {e}"))
                print(f"{m.name:34s} ERROR (the mutated file does not parse)", flush=True)
                continue
            outcome, secs, tail = run_pytest(copy, tests_root, sel, args.timeout)
            verdict = {"fail": "caught", "timeout": "caught (timeout)", "pass": "SURVIVED"}.get(outcome, "ERROR")
            rows.append((m, verdict, secs, tail))
            print(f"{m.name:34s} {verdict:16s} {secs:6.1f} s  {' '.join(sel)}", flush=True)
            shutil.rmtree(copy)

    caught = sum(r[1].startswith("caught") for r in rows)
    print()
    print("| mutant | file | bug | result |")
    print("|---|---|---|---|")
    for m, verdict, _, _ in rows:
        print(f"| {m.name} | {m.file} | {m.why} | {verdict} |")
    print(f"\n{caught}/{len(rows)} mutants caught" + (f" (tests of {args.tests_ref})" if args.tests_ref else ""))
    for m, verdict, _, tail in rows:
        if verdict == "ERROR":
            print(f"{m.name}: pytest could not run the selection:\n{tail}", file=sys.stderr)
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
