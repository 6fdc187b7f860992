"""Layering: every module of rnnkit imports on its own in a fresh interpreter (an import
cycle fails there), and no library module imports the command line (rnnkit.cli)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import rnnkit

PACKAGE = Path(rnnkit.__file__).parent
# Layers below the command line: they may be imported by it, never the reverse.
LIBRARIES = ("introspect", "training", "tasks", "data")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def test_the_package_has_the_modules_this_test_walks():
    for name in ("rnnkit", "rnnkit.cli", "rnnkit.errors", "rnnkit.training.engine", "rnnkit.tasks.tag",
                 "rnnkit.introspect.gradflow", "rnnkit.data.conll"):
        assert name in MODULES


# One child per module, forked from an interpreter that has loaded the third-party
# libraries (torch takes seconds to import) but nothing of rnnkit.
_FORK_EACH = r"""
import os, sys, traceback
import numpy, torch
assert not [m for m in sys.modules if m.split(".")[0] == "rnnkit"]
failed = 0
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(name)
        except BaseException:
            print(name + ": " + traceback.format_exc().strip().splitlines()[-1], flush=True)
            os._exit(1)
        os._exit(0)
    failed += os.waitpid(pid, 0)[1] != 0
sys.exit(1 if failed else 0)
"""


def import_each_alone(names):
    """(exit status, output): every name imported in a fresh child of its own."""
    res = subprocess.run([sys.executable, "-c", _FORK_EACH, *names], capture_output=True, text=True, timeout=600)
    return res.returncode, res.stdout + res.stderr


def test_every_module_imports_alone():
    rc, output = import_each_alone(MODULES)
    assert rc == 0, output


def test_a_module_that_fails_to_import_is_reported():
    rc, output = import_each_alone(["rnnkit.errors", "rnnkit.no_such_module"])
    assert rc == 1 and "rnnkit.no_such_module: ModuleNotFoundError" in output, output


def imported_modules(source: str, module: str, is_package: bool = False):
    """Absolute names of the modules (and names) that ``source``, the text of ``module``,
    imports anywhere, relative imports resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            yield name
            yield from (f"{name}.{a.name}" for a in node.names)


def imports_of(path: Path):
    return imported_modules(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")


def imports_cli(names) -> bool:
    return any(n == "rnnkit.cli" or n.startswith("rnnkit.cli.") for n in names)


@pytest.mark.parametrize("layer", LIBRARIES)
def test_libraries_never_import_the_command_line(layer):
    offenders = [str(p.relative_to(PACKAGE.parent)) for p in sorted((PACKAGE / layer).rglob("*.py"))
                 if imports_cli(imports_of(p))]
    assert not offenders


def test_the_static_check_sees_every_form_of_import():
    """The check above is not vacuous: each way of importing the CLI is caught, and
    neighbouring modules are not."""
    where = "rnnkit.introspect.gradflow"
    for source in ("def main():\n    from ..cli import main\n", "from .. import cli\n", "import rnnkit.cli\n",
                   "from rnnkit.cli import main\n", "from rnnkit import cli\n"):
        assert imports_cli(imported_modules(source, where)), source
    assert imports_cli(imported_modules("from .cli import main\n", "rnnkit", is_package=True))
    for source in ("from ..errors import UsageError\n", "from .cli_tools import x\n", "import rnnkit.client\n"):
        assert not imports_cli(imported_modules(source, where)), source
    names = set(imports_of(PACKAGE / "introspect" / "gradflow.py"))
    assert "rnnkit.errors.IntrospectError" in names and "rnnkit.introspect.jacobian" in names
