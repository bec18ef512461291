"""The package's layers (docs/architecture.md): every import, including those inside
functions, goes from a layer to the same or a lower one; the module graph has no cycle; and
every module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lattice"

#: layer of each top-level part, lowest first (an import may only go to the same or a lower one)
LAYERS = {
    "_version": 0,
    "_lazy": 0,
    "errors": 0,
    "numerics": 1,
    "score": 2,
    "samplers": 3,
    "config": 4,
    "io": 5,
    "runs": 6,
    "results": 7,
    "app": 8,
    "__init__": 9,
    "__main__": 9,
}
#: third-party packages only the app layer may import (presentation and global config)
APP_ONLY = ("rich", "matplotlib", "typer", "jinja2")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every module ``name`` imports, anywhere in the file (absolute names, with the line)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, node.lineno))
            # `from lattice.numerics import exact` imports the submodule lattice.numerics.exact
            out += [(f"{mod}.{a.name}", node.lineno) for a in node.names]
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for target, _ in _imports(m, p):
            if target in mods and target != m:
                graph[m].add(target)
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS["__init__"]
    return LAYERS[parts[1]]


#: lines a module may have; a longer one must be one concept, named here in one line
MAX_LINES = 450
ONE_CONCEPT = {
    "lattice.app.cli": "the `lattice` command: one thin function per subcommand",
    "lattice.io.ensemble": "the HDF5 ensemble file: its writer and its reader",
    "lattice.numerics.analysis": "the Gamma-method error analysis of Monte-Carlo series",
    "lattice.numerics.fokker_planck": "the exact stationary law of a discretized Langevin step",
    "lattice.config.sampler": "the [sampler] schema: one pydantic class per sampler kind",
}


def test_modules_are_short_or_one_named_concept():
    """No module is longer than MAX_LINES unless it is one concept named in ONE_CONCEPT, and
    every name there is a module that needs the exception (no stale entries)."""
    mods = _modules()
    lines = {m: len(p.read_text().splitlines()) for m, p in mods.items()}
    long = sorted(
        f"{m}: {n} lines" for m, n in lines.items() if n > MAX_LINES and m not in ONE_CONCEPT
    )
    stale = sorted(m for m in ONE_CONCEPT if lines.get(m, 0) <= MAX_LINES)
    assert not long, "split these or name their one concept: " + ", ".join(long)
    assert not stale, "no longer long, drop from ONE_CONCEPT: " + ", ".join(stale)


def test_library_code_never_prints_or_exits():
    """Below the app layer no module calls print, sys.exit or os._exit, and none raises a bare
    SystemExit: a user error is a LatticeError, which the CLI turns into its one line and exit
    status in one place (docs/architecture.md)."""
    bad = []
    for m, p in _modules().items():
        if _layer(m) >= LAYERS["app"]:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else None
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                    name = f"{f.value.id}.{f.attr}"
                if name in ("print", "sys.exit", "os._exit", "exit", "quit", "SystemExit"):
                    bad.append(f"{p.relative_to(PACKAGE.parent)}:{node.lineno} calls {name}")
    assert not bad, "\n".join(bad)


def test_every_module_belongs_to_a_layer():
    for m in _modules():
        _layer(m)  # KeyError names a module outside the layers


def test_imports_go_down_the_layers():
    bad = []
    mods = _modules()
    for m, p in mods.items():
        for target, line in _imports(m, p):
            if target in mods and _layer(target) > _layer(m):
                bad.append(f"{p.relative_to(PACKAGE.parent)}:{line} imports {target}")
            top = target.split(".")[0]
            if top in APP_ONLY and _layer(m) < LAYERS["app"]:
                bad.append(f"{p.relative_to(PACKAGE.parent)}:{line} imports {target} (app only)")
    assert not bad, "\n".join(bad)


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    # the package face and a package's __init__ re-export their own submodules: leave the
    # edges from a package to its own children out (they are not a cycle of the code)
    for m in graph:
        graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, stack: list[str]) -> bool:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle.extend(stack[stack.index(t) :] + [m, t] if t in stack else [m, t])
                return True
            if t not in state and visit(t, [*stack, m]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if m not in state and visit(m, []):
            break
    assert not cycle, " -> ".join(cycle)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The two checks above can fail: a function-level import that closes a circle is found."""
    a = "from lattice.io import ensemble\n"
    b = "def f():\n    from lattice.numerics import phi4\n    return phi4\n"
    pa, pb = tmp_path / "a.py", tmp_path / "b.py"
    pa.write_text(a)
    pb.write_text(b)
    assert ("lattice.io.ensemble", 1) in _imports("lattice.numerics.phi4", pa)
    assert ("lattice.numerics.phi4", 2) in _imports("lattice.io.ensemble", pb)
    assert _layer("lattice.io.ensemble") > _layer("lattice.numerics.phi4")


_ALONE = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m == "lattice" or m.startswith("lattice.")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_on_its_own():
    """Each module imports with no lattice module loaded before it (one interpreter; the
    lattice modules are dropped from sys.modules between imports)."""
    names = [m for m in _modules() if m != "lattice.__main__"]
    r = subprocess.run(
        [sys.executable, "-c", _ALONE, *names], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


@pytest.mark.parametrize("heavy", ["matplotlib", "equinox", "diffrax", "scipy.signal", "rich"])
def test_import_lattice_is_light(heavy):
    """``import lattice`` loads none of the heavy dependencies (they load on first use)."""
    code = f"import sys, lattice; print({heavy!r} in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


_RUN_PATH = """
import sys
from lattice.config.run import parse_config
from lattice.runs.assemble import prepare
cfg = parse_config('[lattice]\\nshape = [4, 4]\\n[action]\\nkappa = 0.2\\nlambda = 0.1\\n'
                   '[sampler]\\nkind = "hmc"\\n[run]\\nchains = 2\\n')
prepare(cfg)
heavy = ("equinox", "optax", "diffrax", "scipy", "matplotlib")
print(" ".join(m for m in heavy if m in sys.modules))
"""


def test_a_run_without_a_model_does_not_import_the_score_layer():
    """A sampling run of a classical sampler imports neither equinox, optax, diffrax nor
    scipy: the config, the theory, the sampler and its keys are built without them."""
    r = subprocess.run(
        [sys.executable, "-c", _RUN_PATH], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "", r.stdout


def test_reading_an_ensemble_does_not_import_jax():
    """What ``lattice info`` imports to describe a run (the reader of a single run's ensemble
    and the directory kinds) loads no jax: its start-up was 1.6 s, 0.8 s of them jax."""
    code = (
        "import sys, lattice.io.reader, lattice.runs.kinds, lattice.app.cli; "
        "print('jax' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def _nested_imports(path: Path) -> list[ast.stmt]:
    """The import statements inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    out.append(sub)
    return out


def test_imports_inside_functions_say_why():
    """Imports go at the top of a module; one inside a function says why in a comment on its
    line or the line above (docs/architecture.md). The CLI's commands say it once, in the
    module docstring of lattice/app/cli.py, with the measured start-up cost."""
    bare = []
    for m, p in _modules().items():
        if m == "lattice.app.cli":
            continue
        lines = p.read_text().splitlines()
        for node in set(_nested_imports(p)):
            here, above = lines[node.lineno - 1], lines[node.lineno - 2]
            if "#" not in here and not above.strip().startswith("#"):
                bare.append(f"{p.relative_to(PACKAGE.parent)}:{node.lineno}: {here.strip()}")
    assert not bare, "imports inside functions without a reason:\n" + "\n".join(sorted(bare))
    assert "lattice --help" in (PACKAGE / "app" / "cli.py").read_text().split('"""')[1]


def _declared() -> set[str]:
    import re

    from lattice.config.base import tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_every_imported_package_is_declared():
    """Every third-party package the library imports is a declared dependency of
    pyproject.toml (an optional one only behind an ImportError, like pyerrors)."""
    import importlib.metadata as md

    dists = md.packages_distributions()
    stdlib = set(sys.stdlib_module_names) | {"__future__", "tomli"}  # tomli: Python < 3.11
    declared = _declared()
    missing = set()
    for m, p in _modules().items():
        for target, line in _imports(m, p):
            top = target.split(".")[0]
            if not top or top == "lattice" or top in stdlib:
                continue
            names = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
            if not names & declared:
                missing.add(f"{top} ({p.relative_to(PACKAGE.parent)}:{line})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
