"""The comparison report of ``lattice compare --report``: one standalone HTML page rendered
from ``templates/report.html.j2`` (Jinja2, autoescaped; no script, no external request) or
Markdown, chosen by the file's suffix. Both open with the computed verdict
(:mod:`lattice.results.verdict`), show the same tables (:func:`report_tables`) and embed the
plots as PNG data URIs, so that the one file stands alone."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from lattice.app.output import write_output
from lattice.results.compare import (
    Comparison,
    RunSummary,
    cost_per_independent_sample,
    unsure_note,
)
from lattice.results.measure import Estimate
from lattice.results.verdict import Verdict, verdict

__all__ = ["Table", "render_html", "report_markdown", "report_tables", "write_report"]

REPORT_OBSERVABLES = ("abs_m", "phi2", "chi", "chi_conn", "binder", "action")
#: the observables' names in the report's headers (the JSON's name under each)
LABELS = {
    "abs_m": "|m|",
    "phi2": "φ²",
    "chi": "χ",
    "chi_conn": "χ_conn",
    "binder": "Binder U",
    "action": "S/V",
}
#: the figures of :func:`lattice.app.plots.write_compare_plots`, by file stem
CAPTIONS = {
    "compare_hist_m": "Distribution of the magnetization m",
    "compare_rho": "Autocorrelation ρ(t) of |m| and S/V",
    "compare_tau_int": "Integrated autocorrelation times τ_int",
    "compare_G": "Time-slice correlator G(t)",
    "compare_cost": "Cost per independent |m|",
}


@dataclass(frozen=True)
class Row:
    """A table row: its cells, each a list of lines (a value, then its error, then its
    τ_int), and the run's status state when the run is not complete (else None)."""

    cells: list[list[str]]
    broken: str | None = None


@dataclass(frozen=True)
class Table:
    """One table of the report, rendered as HTML or Markdown: its title, a note under it,
    the header cells (lines, like the cells), which columns hold numbers (right-aligned) and
    the rows."""

    title: str
    note: str
    header: list[list[str]]
    numeric: list[bool]
    rows: list[Row] = field(default_factory=list)


def _g(x: float | None, spec: str = ".3g") -> str:
    return "—" if x is None else format(x, spec)


def _estimate(o: Estimate) -> list[str]:
    """The lines of an observable's cell: value, ± error, τ_int ± its error."""
    return [f"{o.value:.6g}", f"± {o.error:.2g}", f"τ_int {o.tau_int:.3g} ± {o.tau_int_error:.2g}"]


def _paren(text: str, broken: bool) -> str:
    """A cost of a run that is not complete is not a finished run's: in parentheses."""
    return f"({text})" if broken else text


def _runs_table(runs: tuple[RunSummary, ...]) -> Table:
    t = Table(
        "Runs",
        "A run that is not complete is marked; its cost is in parentheses and left out of "
        "the verdict.",
        [["#"], ["run"], ["sampler"], ["exactness"], ["status"], ["chains × measurements"],
         ["acceptance"]],
        [True, False, False, False, False, True, True],
    )  # fmt: skip
    for i, r in enumerate(runs, 1):
        st = r.status
        t.rows.append(
            Row(
                [[str(i)], [r.path], [r.sampler], [r.exactness], [st.state, st.detail],
                 [f"{r.chains} × {r.samples}"], [_g(r.acceptance)]],
                None if st.ok else st.state,
            )
        )  # fmt: skip
    return t


def _observables_table(runs: tuple[RunSummary, ...]) -> Table:
    names = [n for n in REPORT_OBSERVABLES if n in runs[0].measurement.observables]
    t = Table(
        "Observables",
        "Each cell: the value, its error, and τ_int ± its error in measurements.",
        [["#"], *([LABELS[n], n] for n in names)],
        [True] * (len(names) + 1),
    )
    for i, r in enumerate(runs, 1):
        obs = r.measurement.observables
        cells = [[str(i)], *(_estimate(obs[n]) for n in names)]
        t.rows.append(Row(cells, None if r.status.ok else r.status.state))
    return t


def _cost_table(runs: tuple[RunSummary, ...]) -> Table:
    t = Table(
        "Cost",
        "Per measurement and chain, thermalization excluded; per independent |m|: 2 τ_int × "
        "the cost per measurement. Model training is shown apart, never folded in.",
        [["#"], ["s", "per measurement"], ["evaluations", "per measurement"],
         ["training", "s"], ["s", "per independent |m|"], ["evaluations", "per independent |m|"],
         ["ESS/s", "of |m|"]],
        [True] * 7,
    )  # fmt: skip
    for i, r in enumerate(runs, 1):
        c, broken = r.cost, not r.status.ok
        s, e = cost_per_independent_sample(r)
        t.rows.append(
            Row(
                [[str(i)], [_paren(f"{c.seconds_per_measurement:.3g}", broken)],
                 [f"{c.evals_per_measurement:.3g}", c.evals_unit],
                 [_g(c.training_seconds, ".0f")], [_paren(f"{s:.3g}", broken)], [f"{e:.3g}"],
                 [_g(r.ess_per_second.get("abs_m"))]],
                r.status.state if broken else None,
            )
        )  # fmt: skip
    return t


def _free_energy_table(runs: tuple[RunSummary, ...]) -> Table | None:
    weighted = [(i, r.measurement.log_z) for i, r in enumerate(runs, 1)]
    weighted = [(i, lz) for i, lz in weighted if lz is not None]
    if not weighted:
        return None
    t = Table(
        "Free energy (runs with path or ODE weights)",
        "log Z = log mean(e^{−S}/q) over all proposals (Lebesgue measure in the config's "
        "parametrization; blocked jackknife error), f = −log Z / V.",
        [["#"], ["log Z"], ["f = −log Z / V"], ["proposals"], ["importance ESS"]],
        [True] * 5,
    )
    for i, lz in weighted:
        t.rows.append(
            Row(
                [[str(i)], [f"{lz.value:.10g}", f"± {lz.error:.2g}"],
                 [f"{lz.density:.8g}", f"± {lz.density_error:.2g}"], [str(lz.proposals)],
                 [f"{lz.ess:.1f}"]]
            )
        )  # fmt: skip
    return t


def _consistency_table(result: Comparison) -> Table:
    t = Table(
        "Consistency",
        f"z = (O_a − O_b) / √(σ_a² + σ_b²) between every pair of runs; max |z| over the "
        f"pairs, flagged above z* = {result.z_flag:.3g}.",
        [["observable"], ["max |z|"], ["flag"]],
        [False, True, False],
    )
    for n, z in result.consistency.items():
        bad = z > result.z_flag
        name = [LABELS[n], n] if n in LABELS else [n]
        t.rows.append(Row([name, [f"{z:.2f}"], ["FLAGGED" if bad else ""]]))
    return t


def report_tables(result: Comparison) -> list[Table]:
    """The report's tables: runs, observables, cost, free energy (weighted runs only) and
    consistency."""
    runs = result.runs
    tables = [_runs_table(runs), _observables_table(runs), _cost_table(runs)]
    fe = _free_energy_table(runs)
    return [*tables, *([fe] if fe else []), _consistency_table(result)]


def _context(result: Comparison, images: dict[str, str]) -> dict[str, Any]:
    """What both formats show: the theory, the verdict, the tables, the flagged pairs, the
    figures (caption → data URI) and each run's provenance and resolved config."""
    v: Verdict = verdict(result)
    return {
        "theory": [(k, str(val)) for k, val in result.theory.items()],
        "verdict": v,
        "tables": report_tables(result),
        "flagged": [
            f"{f.observable}: {f.a} vs {f.b}: z = {f.z:+.2f}{unsure_note(f)}"
            for f in result.flagged
        ],
        "broken": [
            (i, r.path, r.status.state, r.status.detail)
            for i, r in enumerate(result.runs, 1)
            if not r.status.ok
        ],
        "images": [(CAPTIONS.get(k, k), uri) for k, uri in images.items()],
        "runs": [
            {
                "number": i,
                "path": r.path,
                "sampler": r.sampler,
                "items": [(k, str(val)) for k, val in r.provenance.items() if k != "config_toml"],
                "config_toml": r.provenance["config_toml"].rstrip(),
            }
            for i, r in enumerate(result.runs, 1)
        ],
    }


def _md_cell(lines: list[str]) -> str:
    """A Markdown table cell: the lines joined on one line (" · "; an error follows its
    value), pipes escaped."""
    text = ""
    for k, line in enumerate(lines):
        text += ("" if k == 0 else " " if line.startswith("± ") else " · ") + line
    return text.replace("|", "\\|")


def report_markdown(result: Comparison, images: dict[str, str]) -> str:
    """The comparison as Markdown: the verdict, the theory, the tables of
    :func:`report_tables`, the flagged pairs, the plots (``images``: file stem → an image
    reference, e.g. a data URI) and every run's provenance and resolved config."""
    ctx = _context(result, images)
    lines = ["# Sampler comparison", "", "## Verdict", ""]
    lines += [f"- {s}" for s in ctx["verdict"].sentences()]
    lines += ["", "Theory: " + ", ".join(f"{k} = {v}" for k, v in ctx["theory"]), ""]
    for t in ctx["tables"]:
        lines += [f"## {t.title}", "", t.note, ""]
        lines.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
        lines.append("|" + "|".join("---:" if n else "---" for n in t.numeric) + "|")
        for row in t.rows:
            cells = [_md_cell(c) for c in row.cells]
            if row.broken:
                cells[0] += f" **{row.broken.upper()}**"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if ctx["flagged"]:
        lines += ["Flagged pairs:", "", *(f"- {f}" for f in ctx["flagged"]), ""]
    if ctx["images"]:
        lines += ["## Plots", ""]
        for title, ref in ctx["images"]:
            lines += [f"### {title}", "", f"![{title}]({ref})", ""]
    lines += ["## Provenance", ""]
    for r in ctx["runs"]:
        lines += [f"### {r['number']}: `{r['path']}`", ""]
        lines += [f"- {k}: {v}" for k, v in r["items"]]
        lines += ["", "```toml", r["config_toml"], "```", ""]
    return "\n".join(lines)


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lattice.app", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(result: Comparison, images: dict[str, str]) -> str:
    """The comparison as one standalone HTML page (templates/report.html.j2, autoescaped):
    what :func:`report_markdown` shows, in real tables, the provenance folded."""
    return _ENV.get_template("report.html.j2").render(**_context(result, images))


def write_report(result: Comparison, path: str | Path, plot_files: list[Path]) -> Path:
    """A self-contained report, HTML for a ``.html``/``.htm`` ``path`` and Markdown
    otherwise: the plots are embedded as base64 PNG data URIs, so the single file carries
    the verdict, the tables, the figures and the provenance."""
    path = Path(path)
    images = {
        p.stem: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
        for p in plot_files
    }
    html = path.suffix.lower() in (".html", ".htm")
    text = render_html(result, images) if html else report_markdown(result, images)
    return write_output(path, text, "report")
