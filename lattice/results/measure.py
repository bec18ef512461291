"""Observables with Γ-method errors from an ensemble (docs/conventions.md §1 and §3).

Primary observables are analysed directly; ``chi_conn = V(⟨m²⟩ − ⟨|m|⟩²)`` and
``binder = 1 − ⟨m⁴⟩/(3⟨m²⟩²)`` by linear error propagation through the Γ-method of the
projected fluctuations (hep-lat/0306017 §3). Independent chains are replica.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any

import numpy as np

from lattice.config.run import build_theory
from lattice.errors import InputError
from lattice.io.ensemble import Ensemble
from lattice.numerics.analysis import (
    GammaResult,
    gamma_method,
    gamma_method_derived,
    kish_ess,
    log_mean_exp,
)
from lattice.numerics.observables import observable_shapes
from lattice.numerics.phi4 import Phi4
from lattice.results.status import RunStatus, run_status

__all__ = [
    "observable_names",
    "DERIVED",
    "Correlator",
    "Estimate",
    "Measurement",
    "Proposals",
    "Reweighting",
    "measure_ensemble",
    "free_field_reference",
    "to_pyerrors",
]

MIN_MEASUREMENTS = 20

#: quantities derived from the means of stored scalars: name -> (inputs, f(V, *means));
#: chi_conn = V (<m²> − <|m|>²), the Binder cumulant U = 1 − <m⁴> / (3 <m²>²)
#: (docs/conventions.md §1)
DERIVED = {
    "chi_conn": (("m2", "abs_m"), lambda V, m2, am: V * (m2 - am * am)),
    "binder": (("m4", "m2"), lambda V, m4, m2: 1.0 - m4 / (3.0 * m2 * m2)),
}


def observable_names(stored: Iterable[str], theory: Phi4) -> tuple[str, ...]:
    """The scalars ``lattice measure`` reports for an ensemble that stores ``stored``: every
    scalar of :func:`lattice.numerics.observables.observable_shapes` it holds, in that
    order, then each :data:`DERIVED` quantity whose inputs it holds. A new observable is
    picked up here without a change."""
    have = set(stored)
    shapes = observable_shapes(theory)
    scalars = [k for k, shape in shapes.items() if shape == () and k in have]
    derived = [k for k, (inputs, _) in DERIVED.items() if set(inputs) <= set(scalars)]
    return (*scalars, *derived)


@dataclass(frozen=True)
class Estimate:
    """One observable: its Γ-method result (:class:`GammaResult`, kept whole for plots) and,
    for a free field, the exact value."""

    gamma: GammaResult = field(repr=False)
    exact: Any = None

    @property
    def value(self) -> float:
        return float(self.gamma.value)

    @property
    def error(self) -> float:
        return float(self.gamma.error)

    @property
    def tau_int(self) -> float:
        return float(self.gamma.tau_int)

    @property
    def tau_int_error(self) -> float:
        return float(self.gamma.tau_int_error)

    @property
    def window(self) -> int:
        return int(self.gamma.window)

    def to_json(self) -> dict[str, Any]:
        """``{value, error, tau_int, tau_int_error, window}`` (:meth:`GammaResult.as_dict`),
        and ``exact`` when known."""
        out: dict[str, Any] = self.gamma.as_dict()
        if self.exact is not None:
            out["exact"] = self.exact
        return out


@dataclass(frozen=True)
class Correlator:
    """The time-slice correlator G(t), t = 0..L0−1: one Γ-method result per t, and, for a
    free field, the exact G(t)."""

    gammas: tuple[GammaResult, ...] = field(repr=False)
    exact: Any = None

    @property
    def value(self) -> list[float]:
        return [float(r.value) for r in self.gammas]

    @property
    def error(self) -> list[float]:
        return [float(r.error) for r in self.gammas]

    def to_json(self) -> dict[str, Any]:
        """``{value: [...], error: [...]}``, and ``exact: [...]`` when known."""
        out: dict[str, Any] = {"value": self.value, "error": self.error}
        if self.exact is not None:
            out["exact"] = self.exact
        return out


@dataclass(frozen=True)
class Reweighting:
    """The importance weights of a weighted ensemble: Kish's ESS = (Σ w)²/Σ w² of the ``samples``
    finite weights, and the ``dropped`` non-finite ones (failed solves, weight 0)."""

    ess: float
    samples: int
    dropped: int

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Proposals:
    """The recorded proposals of a diffusion sampler (every step, no discard): acceptance, the
    mean and standard deviation of log w = log(e^{−S}/q) over the finite ones, the importance
    ESS per proposal (Σ w)²/(n Σ w²) with w = e^{log w − max log w}, the mean score evaluations
    and the wall seconds per proposal (T / (steps · chains)). Without a finite log w (a method
    without a density, ``pc`` or ``annealed``) the three log-w statistics are None."""

    acceptance: float
    proposals: int
    failed: int
    log_w_mean: float | None
    log_w_std: float | None
    ess_fraction: float | None
    score_evaluations: float
    seconds: float
    #: a multilevel sampler: the standard deviation of each level's part of log w
    #: (``level_log_w_<level>``, which sum to log w), finest first; empty for the others
    level_log_w_std: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class LogZ:
    """The log partition function log Z = log ∫ Π_x dφ_x e^{−S} (Lebesgue measure in the
    config's field) from the exact weights w = e^{−S}/q of a diffusion sampler's proposals:
    log Z = log mean(w) over every recorded finite proposal, with a blocked jackknife error
    (:func:`lattice.numerics.analysis.log_mean_exp`), the free-energy density f = −log Z / V
    with its error, the proposals used and their Kish ESS (an estimate from an ESS of a few is
    dominated by its largest weights: biased low, and its error too small)."""

    value: float
    error: float
    density: float
    density_error: float
    proposals: int
    ess: float

    def to_json(self) -> dict[str, Any]:
        """``observables.log_z`` of ``measure --json`` (docs/conventions.md §3): value and error."""
        return {"value": self.value, "error": self.error}


@dataclass(frozen=True)
class Measurement:
    """What :func:`measure_ensemble` returns; :meth:`to_json` is the object of
    ``lattice measure --json`` (docs/conventions.md §3).

    Attributes:
        observables: the scalar observables in the order of :func:`observable_names`.
        G: the time-slice correlator.
        chains, samples: chains, and measurements per chain after the discard.
        config: the run's resolved config (``RunConfig.to_dict()``).
        exactness: the sampler's exactness ("exact", "asymptotic", ...).
        reweighting: the importance weights' summary, for a weighted ensemble.
        diffusion: the diffusion proposals' summary, for a diffusion sampler.
        exact_kind: what the exact values are (free field only); not in the JSON.
    """

    observables: dict[str, Estimate]
    G: Correlator
    chains: int
    samples: int
    config: dict[str, Any] = field(repr=False)
    exactness: str
    reweighting: Reweighting | None = None
    diffusion: Proposals | None = None
    exact_kind: str | None = None
    log_z: LogZ | None = None
    #: complete, incomplete, diverged or stuck (:mod:`lattice.results.status`)
    status: RunStatus | None = None
    committed: int | None = None
    planned: int | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"observables": {name: {value, error, tau_int, tau_int_error, window[, exact]},
        ..., "G": {value, error[, exact]}}, "chains", "samples", "config", "exactness",
        "status", "status_detail", "committed", "planned"}``, then ``"reweighting"`` and
        ``"diffusion"`` where they apply. Non-finite numbers are written as ``null`` by the
        CLI (:func:`lattice.app.console.json_line`)."""
        obs = {name: e.to_json() for name, e in self.observables.items()}
        obs["G"] = self.G.to_json()
        if self.log_z is not None:
            obs["log_z"] = self.log_z.to_json()
        out: dict[str, Any] = {
            "observables": obs,
            "chains": self.chains,
            "samples": self.samples,
            "config": self.config,
            "exactness": self.exactness,
        }
        if self.status is not None:
            out.update(self.status.to_json(), committed=self.committed, planned=self.planned)
        if self.reweighting is not None:
            out["reweighting"] = self.reweighting.to_json()
        if self.diffusion is not None:
            out["diffusion"] = self.diffusion.to_json()
        return out


def measure_ensemble(ens: Ensemble, discard: int = 0, S: float = 1.5) -> Measurement:
    """Analyse the committed measurements after discarding the first ``discard`` per chain
    (:class:`Measurement`; ``.to_json()`` is the object of ``lattice measure --json``)."""
    if discard < 0:
        raise InputError(f"--discard must be >= 0 (got {discard})")
    if not S >= 0:
        raise InputError(f"--S must be >= 0 (got {S})")
    status = run_status(ens)
    if ens.committed == 0:
        raise InputError(f"{ens.path}: no measurements committed; the run is {status.state}: "
                         f"{status.detail}")  # fmt: skip
    if discard >= ens.committed:
        raise InputError(
            f"--discard {discard} >= the {ens.committed} committed measurements "
            f"per chain of {ens.path}"
        )
    n = ens.committed - discard
    if n * ens.chains < MIN_MEASUREMENTS:
        raise InputError(
            f"{ens.path}: {n} measurements per chain x {ens.chains} chains after discarding "
            f"{discard}; the Γ-method needs at least {MIN_MEASUREMENTS}"
        )
    obs = {k: np.asarray(v[:, discard:], np.float64) for k, v in ens.observables.items()}
    shape = ens.config_attrs["lattice.shape"]
    V = math.prod(shape if isinstance(shape, list) else [shape])
    weights = None
    if ens.weights is not None:
        weights = _normalized_weights(np.asarray(ens.weights[:, discard:], np.float64))
    est = _Estimator(weights, S)
    cfg = ens.run_config
    results = {}
    for name in observable_names(obs, build_theory(cfg)):
        if name in DERIVED:
            inputs, f = DERIVED[name]
            results[name] = est.derived(partial(f, V), [obs[k] for k in inputs])
        else:
            results[name] = est.primary(obs[name])
    g = tuple(est.primary(obs["G"][..., t]) for t in range(obs["G"].shape[-1]))
    exact = free_field_reference(cfg)
    values = {} if exact is None else exact[0]
    reweighting = None
    if weights is not None:
        w = weights[np.isfinite(weights)]
        reweighting = Reweighting(
            ess=float(kish_ess(w)), samples=int(w.size), dropped=int(weights.size - w.size)
        )
    return Measurement(
        observables={name: Estimate(r, values.get(name)) for name, r in results.items()},
        G=Correlator(g, values.get("G")),
        chains=ens.chains,
        samples=n,
        config=cfg.to_dict(),
        exactness=ens.config_attrs.get("sampler.exactness", "unknown"),
        reweighting=reweighting,
        diffusion=_proposals(ens),
        exact_kind=None if exact is None else exact[1],
        log_z=_log_z(ens, V),
        status=status,
        committed=ens.committed,
        planned=ens.samples,
    )


def _log_z(ens: Ensemble, V: int) -> LogZ | None:
    """:class:`LogZ` from the recorded proposal weights of a sampler with a density (path or
    ODE weights); None for every other sampler. The proposals are independent draws of q
    whatever the chain does, so all of them count (no discard)."""
    d = ens.diagnostics or {}
    if "proposal_log_w" not in d:
        return None
    lw = np.asarray(d["proposal_log_w"], np.float64)
    ok = np.isfinite(lw)
    if ok.sum() < 2:  # a method without a density records NaN
        return None
    value, error = log_mean_exp(lw)
    w = np.exp(lw[ok] - lw[ok].max())
    return LogZ(value, error, -value / V, error / V, int(ok.sum()), float(kish_ess(w)))


def _proposals(ens: Ensemble) -> Proposals | None:
    """The :class:`Proposals` summary of a diffusion sampler's ensemble; None for others."""
    d = ens.diagnostics or {}
    if "proposal_log_w" not in d:
        return None
    lw = np.asarray(d["proposal_log_w"], np.float64)
    ok = np.isfinite(lw)
    w = np.exp(lw[ok] - lw[ok].max()) if ok.any() else None
    steps = max(ens.steps * ens.chains, 1)
    return Proposals(
        acceptance=float(np.mean(d["acceptance"])),
        proposals=int(lw.size),
        failed=int(lw.size - ok.sum()),
        log_w_mean=float(lw[ok].mean()) if w is not None else None,
        log_w_std=float(lw[ok].std()) if w is not None else None,
        ess_fraction=float(kish_ess(w) / w.size) if w is not None else None,
        score_evaluations=float(np.mean(d["score_evaluations"])),
        seconds=ens.seconds / steps,
        level_log_w_std={
            k: float(np.std(np.asarray(d[f"level_log_w_{k}"], np.float64)[ok]))
            for k in sorted(
                (k[len("level_log_w_") :] for k in d if k.startswith("level_log_w_")),
                key=_finest_first,
            )
            if w is not None
        },
    )


def _finest_first(level: str) -> tuple[int, int]:
    """Order of a multilevel sampler's levels: added (transfer) levels from the top, then
    level0, level1, …, then coarse."""
    if level.startswith("added"):
        return (0, -int(level[5:]))
    if level.startswith("level"):
        return (1, int(level[5:]))
    return (2, 0)


def _normalized_weights(log_w: np.ndarray) -> np.ndarray:
    """w = e^{log w − max log w}: the constant cancels in every self-normalized average.
    Non-finite log w (a failed ODE solve) gets weight 0."""
    finite = np.isfinite(log_w)
    if not finite.any():
        raise InputError("every importance weight is non-finite; nothing to reweight")
    top = log_w[finite].max()
    return np.where(finite, np.exp(np.where(finite, log_w, top) - top), 0.0)


class _Estimator:
    """Plain Γ-method averages, or, with importance weights w, the self-normalized
    ⟨O⟩ = ⟨w O⟩/⟨w⟩ as a derived quantity of the primaries w O and w (its error by linear
    propagation through the Γ-method, like any ratio)."""

    def __init__(self, weights: np.ndarray | None, S: float):
        self.w, self.S = weights, S

    def primary(self, a: np.ndarray):
        if self.w is None:
            return gamma_method(a, S=self.S)
        return gamma_method_derived(lambda wa, w: wa / w, [self.w * a, self.w], S=self.S)

    def derived(self, f, data: list[np.ndarray]):
        if self.w is None:
            return gamma_method_derived(f, data, S=self.S)
        n = len(data)

        def g(*m):
            return f(*(x / m[n] for x in m[:n]))

        return gamma_method_derived(g, [self.w * a for a in data] + [self.w], S=self.S)


def free_field_reference(cfg) -> tuple[dict[str, Any], str] | None:
    """(exact values of what the config's sampler samples, description) for a free field;
    None for λ ≠ 0. The sampler's schema says what it samples
    (:meth:`lattice.config.sampler.SamplerSchema.free_field_reference`): the exact finite-ε
    values of its scheme for Langevin, the e^{−S} values for exact samplers."""
    if cfg.action.lam != 0.0:
        return None
    return cfg.sampler.free_field_reference(build_theory(cfg))


def to_pyerrors(ens: Ensemble, observable: str, discard: int = 0, name: str | None = None):
    """The series of one observable as a ``pyerrors.Obs``, one replica per chain named
    ``<name>|r<chain>`` (name defaults to the run directory's name). Needs the optional
    extra: ``pip install lattice-sq[pyerrors]``."""
    try:
        import pyerrors  # an optional extra: only this function needs it
    except ImportError:
        msg = "to_pyerrors needs pyerrors: pip install 'lattice-sq[pyerrors]'"
        raise ImportError(msg) from None
    data = np.asarray(ens.observables[observable][:, discard:], np.float64)
    if data.ndim != 2:
        raise InputError(f"{observable} is not a scalar observable")
    base = name or ens.path.parent.name or "ensemble"
    return pyerrors.Obs(list(data), [f"{base}|r{c}" for c in range(data.shape[0])])
