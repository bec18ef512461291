"""The documentation site (mkdocs.yml, `make docs`): the docs/ pages and the API reference built
from the docstrings. The strict build fails on any warning: a docstring mkdocstrings cannot
parse, a Sphinx role naming a ``lattice.`` object that is not on the API pages, a broken anchor.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site``; its output in ``.stdout``."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


def _warnings(out: str) -> list[str]:
    return [line for line in out.splitlines() if "WARNING" in line]


def test_the_site_builds_without_a_warning(tmp_path):
    """The whole site builds strictly with no WARNING line, and the API pages hold the
    docstrings, with the Sphinx roles turned into links (docs/api/roles.py)."""
    r = _build(ROOT / "mkdocs.yml", tmp_path)
    assert r.returncode == 0 and not _warnings(r.stdout), r.stdout[-4000:]
    page = (tmp_path / "api" / "numerics.html").read_text()
    assert "lattice.numerics.analysis.family_z" in page
    assert "Φ⁻¹(1 − α / (2 n_tests))" in page  # a docstring's formula, as written
    roles = re.findall(r":(?:mod|class|func|meth|attr|data|exc):<code>", page)
    assert not roles, f"{len(roles)} Sphinx roles left as text"
    link = '"numerics.html#lattice.numerics.phi4.Phi4"><code>lattice.numerics.phi4.Phi4</code></a>'
    assert link in (tmp_path / "api" / "samplers.html").read_text()  # a role became a link
    assert (tmp_path / "index.html").exists()


def _documented() -> set[str]:
    names = set()
    for page in API.glob("*.md"):
        names |= set(re.findall(r"^::: (lattice[\w.]*)$", page.read_text(), flags=re.M))
    return names


def test_every_public_module_is_on_its_layers_page():
    """Each public module of a layer has its ``::: lattice.<layer>.<module>`` block on
    docs/api/<layer>.md, and every block names a module that exists."""
    pkg = ROOT / "lattice"
    modules = {
        f"lattice.{p.parent.name}.{p.stem}"
        for p in pkg.glob("*/*.py")
        if not p.stem.startswith("_") and p.parent.name != "models"
    }
    documented = _documented()
    missing = sorted(m for m in modules if m not in documented)
    assert not missing, "add to docs/api/<layer>.md: " + ", ".join(f"::: {m}" for m in missing)
    for name in documented:
        path = pkg.joinpath(*name.split(".")[1:])
        assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), name
    for name in documented - {"lattice", "lattice.errors"}:
        layer = name.split(".")[1]
        assert f"::: {name}\n" in (API / f"{layer}.md").read_text(), f"{name}: not on {layer}.md"


BAD_DOCSTRINGS = {
    "a parameter not in the signature": (
        'def f(x):\n    """Twice x.\n\n    Args:\n        y: the input.\n    """\n',
        "Parameter 'y' does not appear in the function signature",
    ),
    "a role naming no lattice object": (
        'def f(x):\n    """Twice x, as :func:`lattice.numerics.nowhere`."""\n',
        "Could not find cross-reference target 'lattice.numerics.nowhere'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCSTRINGS))
def test_a_bad_docstring_fails_the_build(tmp_path, case):
    """The site's own config (its handler options and hook) on a one-function package whose
    docstring is wrong: the strict build fails and names the fault."""
    source, message = BAD_DOCSTRINGS[case]
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(source)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# pkg\n\n::: pkg\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["nav"] = ["index.md"]
    config["hooks"] = [str(ROOT / h) for h in config["hooks"]]
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            plugin["mkdocstrings"]["handlers"]["python"]["paths"] = ["."]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config, allow_unicode=True))
    r = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert r.returncode != 0, r.stdout[-2000:]
    assert any(message in line for line in _warnings(r.stdout)), r.stdout[-2000:]
