"""The comparison report of ``lattice compare --report``: Markdown or one self-contained HTML
file with the plots embedded."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from lattice.app.output import write_output
from lattice.results.compare import Comparison, cost_per_independent_sample, unsure_note
from lattice.results.measure import Estimate

__all__ = ["report_markdown", "write_report"]

REPORT_OBSERVABLES = ("abs_m", "phi2", "chi", "chi_conn", "binder", "action")


def _fmt(o: Estimate) -> str:
    return f"{o.value:.6g} ± {o.error:.2g}"


def report_markdown(result: Comparison, images: dict[str, str]) -> str:
    """The comparison as Markdown: theory, the per-run table, τ_int, costs, consistency, the
    plots (``images``: title → an image reference, e.g. a data URI) and the provenance."""
    runs = result.runs
    lines = ["# Sampler comparison", ""]
    lines += ["Theory: " + ", ".join(f"{k} = {v}" for k, v in result.theory.items()), ""]
    lines += ["## Runs", ""]
    lines += ["| # | run | sampler | exactness | chains × measurements | acceptance |"]
    lines += ["|---|---|---|---|---|---|"]
    for i, r in enumerate(runs, 1):
        acc = "—" if r.acceptance is None else f"{r.acceptance:.3f}"
        lines.append(
            f"| {i} | `{r.path}` | {r.sampler} | {r.exactness} | {r.chains} × {r.samples} | {acc} |"
        )
    lines += ["", "## Observables (value ± error; τ_int ± error in measurements)", ""]
    names = [n for n in REPORT_OBSERVABLES if n in runs[0].measurement.observables]
    lines += ["| # | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, r in enumerate(runs, 1):
        cells = []
        for n in names:
            o = r.measurement.observables[n]
            cells.append(f"{_fmt(o)}<br>τ {o.tau_int:.3g} ± {o.tau_int_error:.2g}")
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    lines += ["", "## Cost", ""]
    lines += [
        "| # | s / measurement | evaluations / measurement | training s | "
        "s / independent \\|m\\| | evaluations / independent \\|m\\| | ESS/s (\\|m\\|) |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        c = r.cost
        s, e = cost_per_independent_sample(r)
        tr = "—" if c.training_seconds is None else f"{c.training_seconds:.0f}"
        ess = r.ess_per_second.get("abs_m")
        lines.append(
            f"| {i} | {c.seconds_per_measurement:.3g} | {c.evals_per_measurement:.3g} "
            f"({c.evals_unit}) | {tr} | {s:.3g} | {e:.3g} | "
            f"{'—' if ess is None else f'{ess:.3g}'} |"
        )
    weighted = [(i, r.measurement.log_z) for i, r in enumerate(runs, 1)]
    weighted = [(i, lz) for i, lz in weighted if lz is not None]
    if weighted:
        lines += ["", "## Free energy (runs with path or ODE weights)", ""]
        lines += [
            "log Z = log mean(e^{−S}/q) over all proposals (Lebesgue measure in the config's "
            "parametrization; blocked jackknife error), f = −log Z / V.",
            "",
            "| # | log Z | f = −log Z/V | proposals | importance ESS |",
            "|---|---|---|---|---|",
        ]
        for i, lz in weighted:
            lines.append(
                f"| {i} | {lz.value:.10g} ± {lz.error:.2g} | {lz.density:.8g} ± "
                f"{lz.density_error:.2g} | {lz.proposals} | {lz.ess:.1f} |"
            )
    z_flag = result.z_flag
    lines += ["", f"## Consistency (max |z| over pairs; flagged above {z_flag:.3g})", ""]
    lines += ["| observable | max \\|z\\| |", "|---|---|"]
    for n, z in result.consistency.items():
        flag = " **FLAGGED**" if z > z_flag else ""
        lines.append(f"| {n} | {z:.2f}{flag} |")
    if result.flagged:
        lines += ["", "Flagged pairs:", ""]
        for f in result.flagged:
            lines.append(f"- {f.observable}: `{f.a}` vs `{f.b}`: z = {f.z:+.2f}{unsure_note(f)}")
    if images:
        lines += ["", "## Plots", ""]
        for title, ref in images.items():
            lines += [f"### {title}", "", f"![{title}]({ref})", ""]
    lines += ["", "## Provenance", ""]
    for i, r in enumerate(runs, 1):
        p = r.provenance
        lines += [f"### {i}: `{r.path}`", ""]
        for k, v in p.items():
            if k != "config_toml":
                lines.append(f"- {k}: {v}")
        lines += ["", "```toml", p["config_toml"].rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


_PRE = "<pre style='white-space:pre-wrap'>"


def write_report(result: Comparison, path: str | Path, plot_files: list[Path]) -> Path:
    """A self-contained report (``.md`` or ``.html``): the plots are embedded as base64 PNG
    data URIs, so the single file carries the table, the figures and the provenance."""
    path = Path(path)
    images = {
        p.stem.removeprefix("compare_"): "data:image/png;base64,"
        + base64.b64encode(p.read_bytes()).decode()
        for p in plot_files
    }
    md = report_markdown(result, images)
    if path.suffix.lower() in (".html", ".htm"):
        body = []
        for line in md.splitlines():
            if line.startswith("!["):
                src = line[line.index("(") + 1 : -1]
                body.append(f'</pre><p><img src="{src}" style="max-width:100%"></p>{_PRE}')
            else:
                body.append(html.escape(line))
        text = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Sampler comparison"
            f"</title></head><body>{_PRE}\n" + "\n".join(body) + "\n</pre></body></html>\n"
        )
    else:
        text = md
    return write_output(path, text, "report")
