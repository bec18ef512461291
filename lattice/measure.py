"""Observables with Γ-method errors from an ensemble (DESIGN.md §1 and §3).

Primary observables are analysed directly; ``chi_conn = V(⟨m²⟩ − ⟨|m|⟩²)`` and
``binder = 1 − ⟨m⁴⟩/(3⟨m²⟩²)`` by linear error propagation through the Γ-method of the
projected fluctuations (hep-lat/0306017 §3). Independent chains are replica.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .analysis import gamma_method, gamma_method_derived
from .ensemble import Ensemble

__all__ = ["OBSERVABLES", "measure_ensemble"]

# the order of DESIGN.md §1
OBSERVABLES = ("action", "phi2", "phi4", "m", "abs_m", "m2", "chi", "chi_conn", "binder", "sd")


def _entry(r) -> dict[str, float]:
    return {"value": float(r.value), "error": float(r.error), "tau_int": float(r.tau_int),
            "tau_int_error": float(r.tau_int_error), "window": int(r.window)}


def measure_ensemble(ens: Ensemble, discard: int = 0, S: float = 1.5) -> dict[str, Any]:
    """Analyse the committed measurements after discarding the first ``discard`` per chain.

    Returns ``{"observables": {name: {value, error, tau_int, tau_int_error, window}, ...,
    "G": {"value": [...], "error": [...]}}, "chains", "samples", "exactness", "results"}``
    where ``results`` maps names to the full :class:`GammaResult` (for plots).
    """
    if discard < 0:
        raise ValueError("--discard must be >= 0")
    n = ens.committed - discard
    if n < 2:
        raise ValueError(
            f"{ens.path}: {ens.committed} committed measurements per chain, "
            f"{discard} discarded: nothing left to analyse"
        )
    obs = {k: np.asarray(v[:, discard:], np.float64) for k, v in ens.observables.items()}
    shape = ens.config_attrs["lattice.shape"]
    V = math.prod(shape if isinstance(shape, list) else [shape])
    results = {}
    for name in OBSERVABLES:
        if name == "chi_conn":
            results[name] = gamma_method_derived(
                lambda m2, am: V * (m2 - am * am), [obs["m2"], obs["abs_m"]], S=S)
        elif name == "binder":
            results[name] = gamma_method_derived(
                lambda m4, m2: 1.0 - m4 / (3.0 * m2 * m2), [obs["m4"], obs["m2"]], S=S)
        else:
            results[name] = gamma_method(obs[name], S=S)
    out = {name: _entry(r) for name, r in results.items()}
    g = [gamma_method(obs["G"][..., t], S=S) for t in range(obs["G"].shape[-1])]
    out["G"] = {"value": [float(r.value) for r in g], "error": [float(r.error) for r in g]}
    return {
        "observables": out,
        "chains": ens.chains,
        "samples": n,
        "exactness": ens.config_attrs.get("sampler.exactness", "unknown"),
        "results": results,
        "G_results": g,
    }
