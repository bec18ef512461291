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
from dataclasses import dataclass, field, fields
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from lattice.errors import LatticeError
from lattice.io.ensemble import Ensemble, EnsembleError
from lattice.io.reader import open_ensemble
from lattice.numerics.analysis import family_z
from lattice.results.measure import Measurement, measure_ensemble
from lattice.results.status import RunStatus

__all__ = [
    "CompareError",
    "Comparison",
    "Cost",
    "Flag",
    "Pair",
    "RunSummary",
    "compare_runs",
    "Z_FLAG",
    "THEORY_KEYS",
]

Z_FLAG = 4.0
#: the config attrs that define the theory: runs that differ in any are refused
THEORY_KEYS = ("lattice.shape", "action.form", "action.kappa", "action.m2", "action.lambda")


class CompareError(LatticeError):
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


@dataclass(frozen=True)
class Cost:
    """The cost of one measurement per chain, eq. (2), and the model training (not included)."""

    seconds_per_measurement: float
    evals_per_measurement: float
    evals_unit: str
    training_seconds: float | None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RunSummary:
    """One compared run: its :class:`Measurement` (the numbers of ``lattice measure``), the
    acceptance (None without an accept/reject step), the cost, the effective samples per
    second N / (2 τ_int) / T_meas of each observable, and its provenance (not in the JSON)."""

    path: str
    sampler: str
    exactness: str
    parameters: dict[str, Any]
    measurement: Measurement = field(repr=False)
    acceptance: float | None
    cost: Cost
    ess_per_second: dict[str, float | None]
    chains: int
    samples: int
    provenance: dict[str, Any] = field(repr=False)
    #: complete, incomplete, diverged or stuck: only a complete run's cost is compared
    status: RunStatus = RunStatus("complete", "")

    def to_json(self) -> dict[str, Any]:
        """The run's entry of ``lattice compare --json`` (everything but the provenance)."""
        return {
            "path": self.path,
            **self.status.to_json(),
            "sampler": self.sampler,
            "exactness": self.exactness,
            "parameters": self.parameters,
            "observables": self.measurement.to_json()["observables"],
            "acceptance": self.acceptance,
            "cost": self.cost.to_json(),
            "ess_per_second": self.ess_per_second,
            "chains": self.chains,
            "samples": self.samples,
        }


@dataclass(frozen=True)
class Pair:
    """The z-scores, eq. (1), of every observable between runs ``a`` and ``b`` (paths)."""

    a: str
    b: str
    z: dict[str, float]


@dataclass(frozen=True)
class Flag:
    """An observable whose |z| between runs ``a`` and ``b`` exceeds the threshold; ``unsure``
    lists the runs whose Γ-method windowing failed for it (their error is a lower bound)."""

    observable: str
    a: str
    b: str
    z: float
    unsure: list[str]


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare_runs` returns; :meth:`to_json` is the object of
    ``lattice compare --json``.

    Attributes:
        theory: the config attrs of :data:`THEORY_KEYS` (the same in every run).
        runs: one :class:`RunSummary` per run, in the order given.
        consistency: max |z| over the pairs, per observable.
        pairs: the z-scores of every pair of runs.
        flagged: the (observable, pair)s above ``z_flag``.
        z_flag: the family-wise threshold (:func:`lattice.numerics.analysis.family_z`).
        ensembles: the opened ensembles (for plots; not in the JSON).
    """

    theory: dict[str, Any]
    runs: tuple[RunSummary, ...]
    consistency: dict[str, float]
    pairs: tuple[Pair, ...]
    flagged: tuple[Flag, ...]
    z_flag: float
    ensembles: tuple[Ensemble, ...] = field(repr=False, compare=False)

    def cheapest(self, name: str = "abs_m") -> RunSummary | None:
        """The complete run with the fewest seconds per independent ``name``; runs that are
        incomplete, diverged or stuck are left out (their cost is not a finished run's)."""
        ok = [r for r in self.runs if r.status.ok]
        return min(ok, key=lambda r: cost_per_independent_sample(r, name)[0], default=None)

    def to_json(self) -> dict[str, Any]:
        """``{"runs": [...], "consistency": {name: max |z|}, "z_flag": z, "cheapest": path}``
        (``cheapest``: :meth:`cheapest` for |m|, null if no run is complete)."""
        best = self.cheapest()
        return {
            "runs": [r.to_json() for r in self.runs],
            "consistency": self.consistency,
            "z_flag": self.z_flag,
            "cheapest": None if best is None else best.path,
        }


def _summary(ens: Ensemble, discard: int, S: float) -> RunSummary:
    res = measure_ensemble(ens, discard=discard, S=S)
    a = ens.config_attrs
    n_meas = res.samples
    chains = res.chains
    every = int(a.get("run.measure_every", 1))
    diag = ens.diagnostics or {}
    acc = float(np.mean(diag["acceptance"][:, discard:])) if "acceptance" in diag else None
    if not ens.run_config.sampler.traits.accept_reject:
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
    ess = {}
    for name, o in res.observables.items():
        if not o.tau_int:
            continue
        ess[name] = N / (2.0 * o.tau_int) / meas_seconds if meas_seconds > 0 else None
    training = a.get("sampler.model_training_seconds")
    return RunSummary(
        path=str(ens.path.parent if ens.path.name == "ensemble.h5" else ens.path),
        sampler=str(a.get("sampler.name", "?")),
        exactness=str(a.get("sampler.exactness", "unknown")),
        parameters=_sampler_params(ens),
        measurement=res,
        acceptance=acc,
        cost=Cost(
            seconds_per_measurement=meas_seconds / N,
            evals_per_measurement=evals,
            evals_unit=unit,
            training_seconds=None if training is None else float(training),
        ),
        ess_per_second=ess,
        chains=chains,
        samples=n_meas,
        status=res.status,
        provenance={
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
    )


def compare_runs(paths: list[str | Path], discard: int = 0, S: float = 1.5) -> Comparison:
    """Measure every run and compare them (module docstring); ``.to_json()`` of the
    :class:`Comparison` is the object of ``lattice compare --json``. Raises
    :class:`CompareError` for fewer than two runs or different theories."""
    if len(paths) < 2:
        raise CompareError("compare needs at least two runs")
    seen: dict[Path, str | Path] = {}
    for p in paths:
        q = Path(p).resolve()
        q = q.parent if q.name == "ensemble.h5" else q
        if q in seen:
            raise CompareError(f"{p}: the same run as {seen[q]}; compare different runs")
        seen[q] = p
    ens = []
    for p in paths:
        p = Path(p)
        try:
            ens.append(open_ensemble(p))
        except EnsembleError as e:
            raise CompareError(str(e)) from None
    _check_theories(ens)
    runs = []
    for e in ens:
        try:
            runs.append(_summary(e, discard, S))
        except ValueError as err:
            raise CompareError(str(err)) from None
    names = list(runs[0].measurement.observables)
    # Bonferroni over observables × pairs at a family-wise 1e-3, at least Z_FLAG: 4 for 2 runs
    # (10 observables), 4.42 for 5 runs
    z_flag = family_z(len(names) * len(runs) * (len(runs) - 1) // 2, 1e-3, Z_FLAG)
    pairs, consistency, flagged = [], {n: 0.0 for n in names}, []
    for a, b in combinations(runs, 2):
        zs = {}
        for n in names:
            oa, ob = a.measurement.observables[n], b.measurement.observables[n]
            den = math.hypot(oa.error, ob.error)
            z = (oa.value - ob.value) / den if den > 0 else float("nan")
            zs[n] = z
            if math.isfinite(z):
                consistency[n] = max(consistency[n], abs(z))
                if abs(z) > z_flag:
                    # a failed window makes the error a lower bound: z may be too large
                    unsure = [
                        r.path
                        for r in (a, b)
                        if r.measurement.observables[n].gamma.windowing_failed
                    ]
                    flagged.append(Flag(n, a.path, b.path, z, unsure))
        pairs.append(Pair(a.path, b.path, zs))
    return Comparison(
        theory=_theory(ens[0]),
        runs=tuple(runs),
        consistency=consistency,
        pairs=tuple(pairs),
        flagged=tuple(flagged),
        z_flag=z_flag,
        ensembles=tuple(ens),
    )


def unsure_note(flag: Flag) -> str:
    """The caveat of a flagged pair whose error is only a lower bound (failed Γ windowing)."""
    if not flag.unsure:
        return ""
    return (
        f" (Γ-method windowing failed in {', '.join(map(str, flag.unsure))}: its error is a "
        "lower bound; run longer before reading this z)"
    )


def cost_per_independent_sample(run: RunSummary, name: str = "abs_m") -> tuple[float, float]:
    """(seconds, evaluations) per independent measurement of ``name``: 2 τ_int × the cost
    per measurement."""
    tau = run.measurement.observables[name].tau_int
    c = run.cost
    return 2.0 * tau * c.seconds_per_measurement, 2.0 * tau * c.evals_per_measurement
