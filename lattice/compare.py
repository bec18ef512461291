"""Sampler comparison: runs of one theory by different samplers, side by side.

For each run: every observable ± error and τ_int ± error (``measure.measure_ensemble``, so the
numbers are exactly those of ``lattice measure``), the acceptance, the cost per measurement and
the effective samples per second. Between every pair of runs and for every observable the
z-score::

    z_ab = (O_a − O_b) / √(σ_a² + σ_b²)                                              (1)

is computed; two correct samplers of one theory agree, so max |z| > 4 is flagged.

Cost per measurement (per chain) excludes thermalization, in proportion to the steps::

    seconds_per_measurement = T · (n_meas · measure_every / steps) / (chains · n_meas)    (2)

with T the run's wall seconds and ``steps`` all sampler steps per chain, and
``evals_per_measurement = measure_every × forces_per_step`` (force evaluations; for a
diffusion sampler the mean score evaluations per proposal). A diffusion sampler's model
training is reported separately (``training_seconds``), never folded in silently. The
effective samples per second of an observable are N / (2 τ_int) / T_meas with N = chains ×
n_meas and T_meas the measurement-phase seconds.
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import family_z
from .ensemble import Ensemble, open_ensemble
from .measure import measure_ensemble

__all__ = ["CompareError", "compare_runs", "Z_FLAG", "THEORY_KEYS"]

Z_FLAG = 4.0
#: the config attrs that define the theory: runs that differ in any are refused
THEORY_KEYS = ("lattice.shape", "action.form", "action.kappa", "action.m2", "action.lambda")


class CompareError(Exception):
    """Runs that cannot be compared (different theories, unreadable); exit status 2."""


def _theory(ens: Ensemble) -> dict[str, Any]:
    a = ens.config_attrs
    out = {}
    for k in THEORY_KEYS:
        if k in a:
            v = a[k]
            out[k] = [int(x) for x in np.atleast_1d(v)] if k == "lattice.shape" else v
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, np.floating)):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-15)
    return a == b


def _check_theories(ens: list[Ensemble]) -> None:
    ref = _theory(ens[0])
    for e in ens[1:]:
        t = _theory(e)
        diff = [
            f"{k} = {ref.get(k)!r} in {ens[0].path} but {t.get(k)!r} in {e.path}"
            for k in dict.fromkeys((*ref, *t))
            if not _same(ref.get(k), t.get(k))
        ]
        if diff:
            raise CompareError("the runs are of different theories: " + "; ".join(diff))


def _sampler_params(ens: Ensemble) -> dict[str, Any]:
    """The resolved [sampler] keys and the sampler's name and exactness."""
    out = {}
    for k, v in ens.config_attrs.items():
        if k.startswith("sampler.") and not k.startswith("sampler.model_"):
            out[k.removeprefix("sampler.")] = v.item() if hasattr(v, "item") else v
    return out


def _run_entry(ens: Ensemble, discard: int, S: float) -> tuple[dict[str, Any], dict[str, Any]]:
    res = measure_ensemble(ens, discard=discard, S=S)
    a = ens.config_attrs
    n_meas = res["samples"]
    chains = res["chains"]
    every = int(a.get("run.measure_every", 1))
    diag = ens.diagnostics or {}
    acc = float(np.mean(diag["acceptance"][:, discard:])) if "acceptance" in diag else None
    if a.get("sampler.kind") == "langevin" or (
        a.get("sampler.kind") == "diffusion" and not a.get("sampler.metropolis", False)
    ):
        acc = None  # no accept/reject step: no acceptance to report
    steps = max(int(ens.steps), 1)
    meas_seconds = float(ens.seconds) * min(1.0, ens.committed * every / steps)
    meas_seconds *= n_meas / max(ens.committed, 1)
    if "score_evaluations" in diag:
        evals = every * float(np.mean(diag["score_evaluations"][:, discard:]))
        unit = "score evaluations"
    else:
        evals = every * float(a.get("sampler.forces_per_step", 1))
        unit = "force evaluations"
    N = chains * n_meas
    obs = res["observables"]
    ess = {}
    for name, o in obs.items():
        if name == "G" or not o.get("tau_int"):
            continue
        ess[name] = N / (2.0 * o["tau_int"]) / meas_seconds if meas_seconds > 0 else None
    training = a.get("sampler.model_training_seconds")
    entry = {
        "path": str(ens.path.parent if ens.path.name == "ensemble.h5" else ens.path),
        "sampler": str(a.get("sampler.name", "?")),
        "exactness": str(a.get("sampler.exactness", "unknown")),
        "parameters": _sampler_params(ens),
        "observables": obs,
        "acceptance": acc,
        "cost": {
            "seconds_per_measurement": meas_seconds / N,
            "evals_per_measurement": evals,
            "evals_unit": unit,
            "training_seconds": None if training is None else float(training),
        },
        "ess_per_second": ess,
        "chains": chains,
        "samples": n_meas,
        "provenance": {
            "ensemble": str(ens.path),
            "uuid": ens.uuid,
            "created": ens.created,
            "lattice_version": ens.version,
            "complete": ens.complete,
            "config_toml": ens.config_toml,
            **{
                k.removeprefix("sampler."): (v.item() if hasattr(v, "item") else v)
                for k, v in a.items()
                if k.startswith("sampler.model_")
            },
        },
    }
    return entry, res


def compare_runs(paths: list[str | Path], discard: int = 0, S: float = 1.5) -> dict[str, Any]:
    """Measure every run and compare them (module docstring). Returns ``{"runs": [...],
    "consistency": {name: max |z|}, "pairs": [{a, b, z: {name: z}}], "flagged": [...],
    "theory": {...}}``; the raw Γ-method results are under ``"_results"`` (for plots).
    Raises :class:`CompareError` for fewer than two runs or different theories."""
    from .ensemble import EnsembleError

    if len(paths) < 2:
        raise CompareError("compare needs at least two runs")
    ens = []
    for p in paths:
        p = Path(p)
        try:
            ens.append(open_ensemble(p))
        except EnsembleError as e:
            raise CompareError(str(e)) from None
    _check_theories(ens)
    runs, results = [], []
    for e in ens:
        try:
            entry, res = _run_entry(e, discard, S)
        except ValueError as err:
            raise CompareError(str(err)) from None
        runs.append(entry)
        results.append(res)
    names = [n for n in runs[0]["observables"] if n != "G"]
    # Bonferroni over observables × pairs at a family-wise 1e-3, at least Z_FLAG: 4 for 2 runs
    # (10 observables), 4.42 for 5 runs
    z_flag = family_z(len(names) * len(runs) * (len(runs) - 1) // 2, 1e-3, Z_FLAG)
    pairs, consistency, flagged = [], {n: 0.0 for n in names}, []
    for (a, ra), (b, rb) in combinations(zip(runs, results, strict=True), 2):
        zs = {}
        for n in names:
            oa, ob = a["observables"][n], b["observables"][n]
            den = math.hypot(oa["error"], ob["error"])
            z = (oa["value"] - ob["value"]) / den if den > 0 else float("nan")
            zs[n] = z
            if math.isfinite(z):
                consistency[n] = max(consistency[n], abs(z))
                if abs(z) > z_flag:
                    # a failed window makes the error a lower bound: z may be too large
                    unsure = [
                        r["path"] for r, m in ((a, ra), (b, rb)) if m["results"][n].windowing_failed
                    ]
                    flagged.append(
                        {"observable": n, "a": a["path"], "b": b["path"], "z": z, "unsure": unsure}
                    )
        pairs.append({"a": a["path"], "b": b["path"], "z": zs})
    return {
        "theory": _theory(ens[0]),
        "runs": runs,
        "consistency": consistency,
        "pairs": pairs,
        "flagged": flagged,
        "z_flag": z_flag,
        "_results": results,
        "_ensembles": ens,
    }


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of ``lattice compare --json`` (no private keys, no TOML text)."""
    runs = []
    for r in result["runs"]:
        r = {k: v for k, v in r.items() if k != "provenance"}
        runs.append(r)
    return {"runs": runs, "consistency": result["consistency"], "z_flag": result["z_flag"]}


def unsure_note(flag: dict[str, Any]) -> str:
    """The caveat of a flagged pair whose error is only a lower bound (failed Γ windowing)."""
    if not flag["unsure"]:
        return ""
    return (
        f" (Γ-method windowing failed in {', '.join(map(str, flag['unsure']))}: its error is a "
        "lower bound; run longer before reading this z)"
    )


def cost_per_independent_sample(run: dict[str, Any], name: str = "abs_m") -> tuple[float, float]:
    """(seconds, evaluations) per independent measurement of ``name``: 2 τ_int × the cost
    per measurement."""
    tau = run["observables"][name]["tau_int"]
    c = run["cost"]
    return 2.0 * tau * c["seconds_per_measurement"], 2.0 * tau * c["evals_per_measurement"]


# ---------------------------------------------------------------------------- the report
REPORT_OBSERVABLES = ("abs_m", "phi2", "chi", "chi_conn", "binder", "action")


def _fmt(o: dict[str, Any]) -> str:
    return f"{o['value']:.6g} ± {o['error']:.2g}"


def report_markdown(result: dict[str, Any], images: dict[str, str]) -> str:
    """The comparison as Markdown: theory, the per-run table, τ_int, costs, consistency, the
    plots (``images``: title → an image reference, e.g. a data URI) and the provenance."""
    runs = result["runs"]
    lines = ["# Sampler comparison", ""]
    lines += ["Theory: " + ", ".join(f"{k} = {v}" for k, v in result["theory"].items()), ""]
    lines += ["## Runs", ""]
    lines += ["| # | run | sampler | exactness | chains × measurements | acceptance |"]
    lines += ["|---|---|---|---|---|---|"]
    for i, r in enumerate(runs, 1):
        acc = "—" if r["acceptance"] is None else f"{r['acceptance']:.3f}"
        lines.append(
            f"| {i} | `{r['path']}` | {r['sampler']} | {r['exactness']} | "
            f"{r['chains']} × {r['samples']} | {acc} |"
        )
    lines += ["", "## Observables (value ± error; τ_int ± error in measurements)", ""]
    names = [n for n in REPORT_OBSERVABLES if n in runs[0]["observables"]]
    lines += ["| # | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, r in enumerate(runs, 1):
        cells = []
        for n in names:
            o = r["observables"][n]
            cells.append(f"{_fmt(o)}<br>τ {o['tau_int']:.3g} ± {o['tau_int_error']:.2g}")
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    lines += ["", "## Cost", ""]
    lines += [
        "| # | s / measurement | evaluations / measurement | training s | "
        "s / independent \\|m\\| | evaluations / independent \\|m\\| | ESS/s (\\|m\\|) |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        c = r["cost"]
        s, e = cost_per_independent_sample(r)
        tr = "—" if c["training_seconds"] is None else f"{c['training_seconds']:.0f}"
        ess = r["ess_per_second"].get("abs_m")
        lines.append(
            f"| {i} | {c['seconds_per_measurement']:.3g} | {c['evals_per_measurement']:.3g} "
            f"({c['evals_unit']}) | {tr} | {s:.3g} | {e:.3g} | "
            f"{'—' if ess is None else f'{ess:.3g}'} |"
        )
    z_flag = result["z_flag"]
    lines += ["", f"## Consistency (max |z| over pairs; flagged above {z_flag:.3g})", ""]
    lines += ["| observable | max \\|z\\| |", "|---|---|"]
    for n, z in result["consistency"].items():
        flag = " **FLAGGED**" if z > z_flag else ""
        lines.append(f"| {n} | {z:.2f}{flag} |")
    if result["flagged"]:
        lines += ["", "Flagged pairs:", ""]
        for f in result["flagged"]:
            lines.append(
                f"- {f['observable']}: `{f['a']}` vs `{f['b']}`: z = {f['z']:+.2f}{unsure_note(f)}"
            )
    if images:
        lines += ["", "## Plots", ""]
        for title, ref in images.items():
            lines += [f"### {title}", "", f"![{title}]({ref})", ""]
    lines += ["", "## Provenance", ""]
    for i, r in enumerate(runs, 1):
        p = r["provenance"]
        lines += [f"### {i}: `{r['path']}`", ""]
        for k, v in p.items():
            if k != "config_toml":
                lines.append(f"- {k}: {v}")
        lines += ["", "```toml", p["config_toml"].rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


_PRE = "<pre style='white-space:pre-wrap'>"


def write_report(result: dict[str, Any], path: str | Path, plot_files: list[Path]) -> Path:
    """A self-contained report (``.md`` or ``.html``): the plots are embedded as base64 PNG
    data URIs, so the single file carries the table, the figures and the provenance."""
    import base64
    import html

    from .ensemble import write_file_atomic

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
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, text)
    return path
