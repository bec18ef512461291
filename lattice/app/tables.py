"""The terminal tables of ``lattice compare``, ``measure`` and ``levels``, laid out for the
console's width so that no cell and no header is cut.

Every table is built from :class:`Column` s: short headers (their units in a note line below),
key columns that start every table (the run's label, the observable's name) and groups of
columns that belong together (observables, autocorrelation, cost). :func:`fit` lays them out:
one table when every column fits the width at its natural size, else the groups packed in
order into as many tables as needed, a group wider than the width column by column. A column
that cannot fit even alone folds its text onto more lines (never "…").

Titles and notes are lines of text (they wrap at the console's width, never cut); each builder
returns what to print, in order: the title, the tables, the notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from lattice.results.compare import cost_per_independent_sample

__all__ = ["Column", "fit", "natural_width", "compare_tables", "measure_tables", "levels_tables"]

#: headers of the compare tables (the note under them says what each is)
COMPARE_HEADERS = ("#", "sampler", "status", "|m|", "chi", "S/V", "tau |m|", "tau chi", "acc",
                   "s/meas", "evals", "s/indep")  # fmt: skip
#: headers of the measure table
MEASURE_HEADERS = ("observable", "value", "error", "tau_int", "tau err", "window", "exact", "z")
#: headers of the levels table
LEVELS_HEADERS = ("redrawn up to", "acceptance", "error", "var log w", "evals")

#: a console wide enough to measure any table at its natural width
_MEASURE = Console(width=100_000)


@dataclass(frozen=True)
class Column:
    """One column: its header, its cells (rich markup, one per row) and their justification."""

    header: str
    cells: Sequence[str]
    justify: str = "right"


def _table(columns: Sequence[Column]) -> Table:
    t = Table()
    for c in columns:
        t.add_column(c.header, justify=c.justify, overflow="fold")
    for row in zip(*(c.cells for c in columns), strict=True):
        t.add_row(*row)
    return t


def natural_width(columns: Sequence[Column]) -> int:
    """The width of the table of ``columns`` with no cell wrapped: the widest cell or header
    of each column plus its padding (2) and rule (1), plus the table's left rule."""
    return Measurement.get(_MEASURE, _MEASURE.options, _table(columns)).maximum


def fit(
    keys: Sequence[Column],
    groups: Sequence[Sequence[Column]],
    width: int,
    lead: Sequence[Column] = (),
) -> list[Table]:
    """Tables no wider than ``width`` (module docstring): ``keys`` start each one, ``lead``
    (e.g. a sampler's name, which the legend also gives) follows them in the first table when
    it fits, and the ``groups`` are packed in order."""
    every = [c for g in groups for c in g]
    if natural_width([*keys, *every]) <= width:
        first = [*keys, *lead, *every]
        return [_table(first if natural_width(first) <= width else [*keys, *every])]
    packed: list[list[Column]] = []
    cur: list[Column] = []
    for g in groups:
        if natural_width([*keys, *cur, *g]) > width and cur:
            packed.append(cur)
            cur = []
        for c in g:  # the whole group when it fits alone, else column by column
            if cur and natural_width([*keys, *cur, c]) > width:
                packed.append(cur)
                cur = []
            cur.append(c)
    packed.append(cur)
    first = [*keys, *lead, *packed[0]]
    tables = [_table(first if natural_width(first) <= width else [*keys, *packed[0]])]
    return tables + [_table([*keys, *p]) for p in packed[1:]]


def _pm(value: float, error: float, digits: int) -> str:
    return f"{value:.{digits}g} ± {error:.2g}"


def _z(o) -> float:
    """z = (value − exact) / error of an observable with an exact value (NaN without error)."""
    return (o.value - o.exact) / o.error if o.error > 0 else float("nan")


def compare_tables(res, width: int) -> list[RenderableType]:
    """The tables of ``lattice compare`` for a :class:`~lattice.results.compare.Comparison`:
    per run (labelled 1, 2, … as in the legend that follows them) |m|, χ and S/V ± error,
    τ_int of |m| and χ, the acceptance, and the cost: wall seconds and evaluations per
    measurement, and seconds per independent |m|, 2 τ_int(|m|) × s/meas. A run that is not
    complete has its status in a column and its seconds in parentheses."""
    runs = res.runs
    broken = any(not r.status.ok for r in runs)
    obs = [r.measurement.observables for r in runs]

    def cost(r, x: float) -> str:
        """A cost; in parentheses for a run that is not complete (not a finished run's)."""
        return f"{x:.3g}" if r.status.ok else f"({x:.3g})"

    keys = [Column("#", [str(i) for i in range(1, len(runs) + 1)])]
    if broken:
        state = ["" if r.status.ok else f"[bold red]{r.status.state.upper()}[/]" for r in runs]
        keys.append(Column("status", state, "left"))
    groups = [
        [Column(h, [_pm(o[n].value, o[n].error, 5) for o in obs])
         for h, n in (("|m|", "abs_m"), ("chi", "chi"), ("S/V", "action"))],
        [Column(h, [_pm(o[n].tau_int, o[n].tau_int_error, 3) for o in obs])
         for h, n in (("tau |m|", "abs_m"), ("tau chi", "chi"))],
        [
            Column("acc", ["—" if r.acceptance is None else f"{r.acceptance:.3f}" for r in runs]),
            Column("s/meas", [cost(r, r.cost.seconds_per_measurement) for r in runs]),
            Column("evals", [f"{r.cost.evals_per_measurement:.3g}" for r in runs]),
            Column("s/indep", [cost(r, cost_per_independent_sample(r)[0]) for r in runs]),
        ],
    ]  # fmt: skip
    lead = [Column("sampler", [r.sampler for r in runs], "left")]
    units = " or ".join(sorted({r.cost.evals_unit for r in runs}))
    title = "Sampler comparison: " + ", ".join(f"{k} = {v}" for k, v in res.theory.items())
    note = (
        "± one standard error (Γ method); tau: τ_int in measurements; acc: acceptance; "
        "s/meas: wall seconds per measurement and chain; evals: "
        f"{units} per measurement; s/indep: seconds per independent |m| (2 tau |m| × s/meas)"
        + ("; in parentheses: the cost of a run that is not complete" if broken else "")
    )
    return [Text(title, style="bold"), *fit(keys, groups, width, lead), Text(note, style="dim")]


def measure_tables(res, path, width: int) -> list[RenderableType]:
    """The tables of ``lattice measure`` for a :class:`~lattice.results.measure.Measurement`
    of the ensemble at ``path``: per observable its value, Γ-method error, τ_int ± its error
    and summation window W, and, where an exact value is known, it and z = (value − exact) /
    error; log Z and f = −log Z / V (no τ_int: independent proposals) where the run has them."""
    names = list(res.observables)
    o = [res.observables[n] for n in names]
    exact = res.exact_kind is not None
    cols = {
        "value": [f"{x.value:.6g}" for x in o],
        "error": [f"{x.error:.2g}" for x in o],
        "tau_int": [f"{x.tau_int:.2f}" for x in o],
        "tau err": [f"{x.tau_int_error:.2f}" for x in o],
        "window": [str(x.window) for x in o],
    }
    if exact:
        cols["exact"] = ["—" if x.exact is None else f"{x.exact:.6g}" for x in o]
        cols["z"] = ["—" if x.exact is None else f"{_z(x):+.2f}" for x in o]
    lz = res.log_z
    if lz is not None:  # from the proposals' exact weights: no τ_int (independent draws)
        names += ["log_z", "f = -log_z/V"]
        cols["value"] += [f"{lz.value:.10g}", f"{lz.density:.8g}"]
        cols["error"] += [f"{lz.error:.2g}", f"{lz.density_error:.2g}"]
        for h in ("tau_int", "tau err", "window"):
            cols[h] += ["—", "—"]
        for h in ("exact", "z") if exact else ():
            cols[h] += ["", ""]
    keys = [Column("observable", names, "left")]
    group = [["value", "error"], ["tau_int", "tau err", "window"], ["exact", "z"]]
    groups = [[Column(h, cols[h]) for h in g if h in cols] for g in group]
    st = res.status
    title = Text.assemble(
        (str(path), "bold"),
        f"  ({res.chains} chains x {res.samples} measurements, sampler exactness: {res.exactness})",
        ("" if st.ok else f"  {st.state.upper()}", "bold red"),
    )
    note = (
        "error: Γ-method standard error; tau_int ± tau err: integrated autocorrelation time "
        "in measurements; window: the summation window W"
        + ("; z = (value − exact) / error" if exact else "")
    )
    return [title, *fit(keys, [g for g in groups if g], width), Text(note, style="dim")]


def levels_tables(res, width: int) -> list[RenderableType]:
    """The table of ``lattice levels`` for a :class:`~lattice.results.levels.LevelDiagnostic`:
    per level (finest first; ``all`` redraws every level) the mean pairwise acceptance of
    the redraw below it (eq. 3 of ``results/levels.py``) ± its standard error, the mean
    conditional variance of log w, and the network evaluations per redraw."""
    lv = res.levels
    keys = [Column("redrawn up to", [r.level for r in lv], "left")]
    groups = [
        [Column("acceptance", [f"{r.acceptance:.3f}" for r in lv]),
         Column("error", [f"{r.error:.2g}" for r in lv])],
        [Column("var log w", [f"{r.log_w_var:.3g}" for r in lv])],
        [Column("evals", [f"{r.evaluations:.3g}" for r in lv])],
    ]  # fmt: skip
    title = f"redraw below each level: {res.source}, K = {res.steps_label}, M = {res.draws}"
    note = (
        "error: standard error over the configurations; var log w: mean conditional variance"
        " of log w; evals: network evaluations per redraw, each counted as its level's share of"
        " the fine lattice"
    )
    return [Text(title, style="bold"), *fit(keys, groups, width), Text(note, style="dim")]
