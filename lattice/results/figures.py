"""What the figures show, computed: the curves and error bands the plots of ``lattice measure``,
``check`` and ``compare`` draw (:mod:`lattice.app.plots` only draws them).

Each function returns plain arrays in frozen dataclasses; nothing here draws or prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lattice.numerics.analysis import (
    GammaResult,
    effective_mass_jackknife,
    gamma_method,
    rho_error,
)

__all__ = [
    "Autocorrelation",
    "Series",
    "autocorrelation",
    "effective_mass",
    "sd_correlator",
    "t_max",
    "walker_density",
]


@dataclass(frozen=True)
class Autocorrelation:
    """ρ(t) ± δρ(t) (hep-lat/0306017 eq. (E.11)) and τ_int(W) ± δτ_int(W) (eq. (42)) for
    t, W = 0..t_max, with the chosen window and its τ_int."""

    t: np.ndarray
    rho: np.ndarray
    rho_error: np.ndarray
    tau_int: np.ndarray
    tau_int_error: np.ndarray
    window: int
    tau: float
    tau_error: float


@dataclass(frozen=True)
class Series:
    """Values with errors at points t (NaN where undefined)."""

    t: np.ndarray
    value: np.ndarray
    error: np.ndarray


def t_max(r: GammaResult) -> int:
    """How far to show ρ(t) and τ_int(W): a few windows, at least 20, at most W_max."""
    return min(r.rho.size - 1, max(4 * int(r.window), 20))


def autocorrelation(r: GammaResult) -> Autocorrelation:
    """The autocorrelation curves of one Γ-method result, up to :func:`t_max`."""
    t = np.arange(t_max(r) + 1)
    return Autocorrelation(
        t,
        np.asarray(r.rho)[t],
        rho_error(r)[t],
        np.asarray(r.tau_int_of_W)[t],
        np.asarray(r.tau_int_error_of_W)[t],
        int(r.window),
        float(r.tau_int),
        float(r.tau_int_error),
    )


def effective_mass(G: np.ndarray, g_results) -> Series:
    """The cosh effective mass of the mean G(t) with blocked-jackknife errors
    (:func:`lattice.numerics.analysis.effective_mass_jackknife`); ``G`` is [chains, n, T]."""
    t, m, e = effective_mass_jackknife(np.asarray(G, np.float64), g_results)
    return Series(t, m, e)


def sd_correlator(g: np.ndarray) -> Series:
    """The two-point Schwinger–Dyson correlator G_sd(t) (exactly δ_t0 in equilibrium) with
    Γ-method errors, from its series ``g`` [chains, n, T]."""
    res = [gamma_method(g[..., t]) for t in range(g.shape[-1])]
    t = np.arange(len(res))
    return Series(t, np.array([r.value for r in res]), np.array([r.error for r in res]))


def walker_density(positions, edges: np.ndarray, n: int) -> np.ndarray:
    """The histogram of ``n`` walkers' positions (one row per time) on the bins ``edges``, as
    a density: counts / (n · bin width)."""
    width = np.diff(edges)
    return np.stack([np.histogram(p, bins=edges)[0] / (n * width) for p in positions])
