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

from lattice.io.ensemble import Ensemble
from lattice.io.reader import open_ensemble
from lattice.numerics.analysis import family_z
from lattice.results.measure import measure_ensemble

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
    from lattice.io.ensemble import EnsembleError

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
