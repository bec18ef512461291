"""The terminal tables of `compare`, `measure` and `levels` fit the width (COLUMNS) without
cutting a cell, a header or a sampler's name (issue 41): no line is wider than the console and
no "…" appears; a wide table is split, the runs carry short labels and a legend."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from rich.cells import cell_len
from rich.console import Console
from test_jobs import TINY, cli, write

from lattice.app.tables import Column as Col
from lattice.app.tables import compare_tables, fit, levels_tables, natural_width
from lattice.results.compare import compare_runs
from lattice.results.levels import LevelAcceptance, LevelDiagnostic
from lattice.results.status import RunStatus

WIDTHS = (80, 100, 160)
COMPARE = ("#", "|m|", "chi", "S/V", "tau |m|", "tau chi", "acc", "s/meas", "evals", "s/indep")
MEASURE = ("observable", "value", "error", "tau_int", "tau err", "window")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs: HMC and MALA of one theory, and a free-field HMC run (exact columns)."""
    d = tmp_path_factory.mktemp("tables")
    for kind in ("hmc", "mala"):
        cli("run", write(d, TINY.format(kind=kind), f"{kind}.toml"), "-q", check=0)
    free = TINY.format(kind="hmc").replace("lambda = 0.1", "lambda = 0.0")
    cli("run", write(d, free, "free.toml"), "-q", check=0)
    return d


def _fits(text: str, width: int) -> None:
    lines = text.splitlines()
    assert lines, "no output"
    widest = max(cell_len(line) for line in lines)
    assert widest <= width, f"a line of {widest} > {width} columns:\n{text}"
    assert "…" not in text, text


def _render(parts, width: int) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, highlight=False, color_system=None)
    for p in parts:
        console.print(p)
    return buf.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_fits_the_width(runs, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    out = cli("compare", runs / "hmc", runs / "mala", check=0).stdout
    _fits(out, width)
    for h in COMPARE:
        assert h in out, (h, out)
    for i, name in ((1, "hmc-leapfrog"), (2, "mala")):
        assert f"{i}: {name}, {runs / name.split('-')[0]} (exact)" in " ".join(out.split())
    # one table at 160 columns (with the sampler's name), two (observables, cost) below
    assert out.count("┏") == (1 if width == 160 else 2), out


@pytest.mark.parametrize("width", WIDTHS)
def test_measure_fits_the_width(runs, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    for name, exact in (("hmc", False), ("free", True)):
        out = cli("measure", runs / name, check=0).stdout
        _fits(out, width)
        for h in MEASURE + (("exact", "z") if exact else ()):
            assert h in out, (h, out)
        assert "3 chains x 30 measurements" in " ".join(out.split())  # wrapped, not cut
        assert out.count("┏") == (2 if exact and width == 80 else 1), out


def test_the_width_follows_columns_per_command(runs, monkeypatch):
    """The console's width is read when a command runs, not when the CLI is imported."""
    monkeypatch.setenv("COLUMNS", "160")
    wide = cli("compare", runs / "hmc", runs / "mala", check=0).stdout
    monkeypatch.setenv("COLUMNS", "80")
    narrow = cli("compare", runs / "hmc", runs / "mala", check=0).stdout
    assert max(map(cell_len, wide.splitlines())) > 100
    _fits(narrow, 80)


@pytest.mark.parametrize("width", WIDTHS)
def test_a_broken_runs_status_is_shown_uncut(runs, width):
    """A diverged run keeps its status word in every table and its costs in parentheses."""
    res = compare_runs([runs / "hmc", runs / "mala"])
    bad = replace(res.runs[1], status=RunStatus("diverged", "non-finite field"))
    out = _render(compare_tables(replace(res, runs=(res.runs[0], bad)), width), width)
    _fits(out, width)
    assert out.count("DIVERGED") == out.count("┏") >= 1, out
    assert f"({bad.cost.seconds_per_measurement:.3g})" in out
    assert "in parentheses: the cost of a run that is not complete" in " ".join(out.split())


def _levels(source: str) -> LevelDiagnostic:
    rows = [
        LevelAcceptance("level0", ["level0"], 0.8123, 0.011, 0.352, 12.5),
        LevelAcceptance("level1", ["level0", "level1"], 0.6012, 0.023, 1.02, 15.625),
        LevelAcceptance("all", ["level0", "level1", "coarse"], 0.4501, 0.031, 2.5, 16.0),
    ]
    return LevelDiagnostic(rows, configurations=32, draws=16, steps=[12, 6, 4],
                           shape=[16, 16], source=source)  # fmt: skip


@pytest.mark.parametrize("width", WIDTHS)
def test_levels_fits_the_width(width):
    source = "/a/rather/long/path/to/some/multilevel/run/directory/" * 2 + "ensemble.h5"
    out = _render(levels_tables(_levels(source), width), width)
    _fits(out, width)
    for h in ("redrawn up to", "acceptance", "error", "var log w", "evals"):
        assert h in out
    for x in ("level0", "level1", "all", "0.812", "0.601", "0.450", "K = [12, 6, 4]", "M = 16"):
        assert x in out, (x, out)
    assert source in out.replace("\n", "")  # the title wraps; nothing of it is cut


def test_fit_splits_by_group_then_by_column():
    """One table when everything fits; else the groups packed in order with the keys first;
    a group wider than the width split column by column; the lead only where it fits."""
    key = [Col("#", ["1", "2"])]
    lead = [Col("sampler", ["a-long-sampler-name", "b"], "left")]
    groups = [[Col(f"g{i}c{j}", ["x" * 10, "y"]) for j in range(3)] for i in range(2)]
    every = [c for g in groups for c in g]
    full = natural_width([*key, *lead, *every])
    assert len(fit(key, groups, full, lead)) == 1
    assert [c.header for c in fit(key, groups, full, lead)[0].columns][:2] == ["#", "sampler"]
    assert [c.header for c in fit(key, groups, full - 1, lead)[0].columns][1] == "g0c0"
    one = natural_width([*key, *groups[0]])
    split = fit(key, groups, one, lead)
    assert [[c.header for c in t.columns] for t in split] == [
        ["#", "g0c0", "g0c1", "g0c2"],
        ["#", "g1c0", "g1c1", "g1c2"],
    ]
    narrow = fit(key, groups, one - 1)
    assert [len(t.columns) for t in narrow] == [3, 2, 3, 2]
    for t in split + narrow:
        assert natural_width([Col(c.header, list(c.cells)) for c in t.columns]) <= one
