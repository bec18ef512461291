"""Observables with Γ-method errors from an ensemble (DESIGN.md §1 and §3).

Primary observables are analysed directly; ``chi_conn = V(⟨m²⟩ − ⟨|m|⟩²)`` and
``binder = 1 − ⟨m⁴⟩/(3⟨m²⟩²)`` by linear error propagation through the Γ-method of the
projected fluctuations (hep-lat/0306017 §3). Independent chains are replica.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lattice.io.ensemble import Ensemble
from lattice.numerics.analysis import gamma_method, gamma_method_derived

__all__ = [
    "OBSERVABLES",
    "measure_ensemble",
    "exact_reference",
    "free_field_reference",
    "to_pyerrors",
]

# the order of DESIGN.md §1
MIN_MEASUREMENTS = 20

OBSERVABLES = ("action", "phi2", "phi4", "m", "abs_m", "m2", "chi", "chi_conn", "binder", "sd")


def _entry(r) -> dict[str, float]:
    return {
        "value": float(r.value),
        "error": float(r.error),
        "tau_int": float(r.tau_int),
        "tau_int_error": float(r.tau_int_error),
        "window": int(r.window),
    }


def measure_ensemble(ens: Ensemble, discard: int = 0, S: float = 1.5) -> dict[str, Any]:
    """Analyse the committed measurements after discarding the first ``discard`` per chain.

    Returns ``{"observables": {name: {value, error, tau_int, tau_int_error, window}, ...,
    "G": {"value": [...], "error": [...]}}, "chains", "samples", "exactness", "results"}``
    where ``results`` maps names to the full :class:`GammaResult` (for plots).
    """
    if discard < 0:
        raise ValueError(f"--discard must be >= 0 (got {discard})")
    if discard >= ens.committed:
        raise ValueError(
            f"--discard {discard} >= the {ens.committed} committed measurements "
            f"per chain of {ens.path}"
        )
    n = ens.committed - discard
    if n * ens.chains < MIN_MEASUREMENTS:
        raise ValueError(
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
    results = {}
    for name in OBSERVABLES:
        if name == "chi_conn":
            results[name] = est.derived(
                lambda m2, am: V * (m2 - am * am), [obs["m2"], obs["abs_m"]]
            )
        elif name == "binder":
            results[name] = est.derived(
                lambda m4, m2: 1.0 - m4 / (3.0 * m2 * m2), [obs["m4"], obs["m2"]]
            )
        else:
            results[name] = est.primary(obs[name])
    out = {name: _entry(r) for name, r in results.items()}
    g = [est.primary(obs["G"][..., t]) for t in range(obs["G"].shape[-1])]
    out["G"] = {"value": [float(r.value) for r in g], "error": [float(r.error) for r in g]}
    exact = exact_reference(ens)
    if exact is not None:
        for name, val in exact[0].items():
            out[name]["exact"] = val
    reweighting = None
    if weights is not None:
        w = weights[np.isfinite(weights)]
        reweighting = {
            "ess": float(w.sum() ** 2 / np.sum(w * w)),
            "samples": int(w.size),
            "dropped": int(weights.size - w.size),
        }
    return {
        "reweighting": reweighting,
        "exact_kind": None if exact is None else exact[1],
        "observables": out,
        "chains": ens.chains,
        "samples": n,
        "exactness": ens.config_attrs.get("sampler.exactness", "unknown"),
        "results": results,
        "G_results": g,
    }


def _normalized_weights(log_w: np.ndarray) -> np.ndarray:
    """w = e^{log w − max log w}: the constant cancels in every self-normalized average.
    Non-finite log w (a failed ODE solve) gets weight 0."""
    finite = np.isfinite(log_w)
    if not finite.any():
        raise ValueError("every importance weight is non-finite; nothing to reweight")
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


def exact_reference(ens: Ensemble) -> tuple[dict[str, Any], str] | None:
    """Exact values for a free-field (λ = 0) ensemble: at the run's step size and scheme for
    Langevin (the exact finite-ε values), the exact e^{−S} values for exact samplers.
    Returns (values, description) or None."""
    from lattice.config.run import parse_config

    return free_field_reference(parse_config(ens.config_toml))


def free_field_reference(cfg) -> tuple[dict[str, Any], str] | None:
    """(exact values of what the config's sampler samples, description) for a free field;
    None for λ ≠ 0. For Langevin these are the exact finite-ε values of its scheme (with
    Fourier acceleration if used), for exact samplers the e^{−S} values."""
    from lattice.numerics.exact import free_field_observables
    from lattice.numerics.fourier import fourier_mass2_auto
    from lattice.runs.sampling import build_theory

    if cfg.action.lam != 0.0:
        return None
    theory = build_theory(cfg)
    s = cfg.sampler
    if s.kind != "langevin":
        return free_field_observables(theory), "exact free field"
    m2 = None
    if s.fourier_acceleration:
        m2 = fourier_mass2_auto(theory) if s.fourier_mass2 == "auto" else s.fourier_mass2
    vals = free_field_observables(theory, step_size=s.step_size, scheme=s.scheme, fourier_mass2=m2)
    return vals, f"exact free field at the run's step size ({s.scheme}, eps = {s.step_size})"


def to_pyerrors(ens: Ensemble, observable: str, discard: int = 0, name: str | None = None):
    """The series of one observable as a ``pyerrors.Obs``, one replica per chain named
    ``<name>|r<chain>`` (name defaults to the run directory's name). Needs the optional
    extra: ``pip install lattice-sq[pyerrors]``."""
    try:
        import pyerrors
    except ImportError:
        msg = "to_pyerrors needs pyerrors: pip install 'lattice-sq[pyerrors]'"
        raise ImportError(msg) from None
    data = np.asarray(ens.observables[observable][:, discard:], np.float64)
    if data.ndim != 2:
        raise ValueError(f"{observable} is not a scalar observable")
    base = name or ens.path.parent.name or "ensemble"
    return pyerrors.Obs(list(data), [f"{base}|r{c}" for c in range(data.shape[0])])
