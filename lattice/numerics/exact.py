"""Exact free-field (λ = 0) results, including the exact finite-step bias of Langevin schemes.

At λ = 0 the action is S = ½ Σ_p |φ̃_p|² A(p)/V with A(p) of :meth:`Phi4.kernel`
(A = 2 − 4κ Σ_μ cos p_μ in the kappa form). Every mode is an independent Gaussian, so::

    ⟨φ_x²⟩ = (1/V) Σ_p v(p),   χ = V⟨m²⟩ = v(0),   G(t) = (1/L0) Σ_{p0} e^{i p0 t} v(p0, 0⃗)

with v(p) = 1/A(p) exactly, and for a discretized Langevin evolution of step ε the stationary
mode variance (a = A(p), ε → ε(p) under Fourier acceleration)::

    Euler–Maruyama:  v = 1 / (a (1 − εa/2))                       (docs/conventions.md §1)
    RK2 (Heun):      v = (2 − εa) / (a (2 − εa + (εa)²/2))          (lattice.samplers.langevin)

and the partition function, a Gaussian integral over the V real site variables::

    log Z = log ∫ Π_x dφ_x e^{−S} = Σ_p [½ log 2π − ½ log A(p)]                          (1)
"""

from __future__ import annotations

import numpy as np

from lattice.numerics.fourier import fourier_step_factor
from lattice.numerics.phi4 import Phi4

__all__ = [
    "mode_variance",
    "free_phi2",
    "free_chi",
    "free_G",
    "free_relaxation_rates",
    "free_field_observables",
    "free_log_z",
]


def mode_variance(
    theory: Phi4,
    step_size: float | None = None,
    scheme: str = "exact",
    fourier_mass2: float | None = None,
) -> np.ndarray:
    """Stationary variance v(p) of each Fourier mode (per unit V), numpy float64.

    ``scheme``: ``"exact"`` (e^{−S}, any exact sampler), ``"euler"`` or ``"rk2"``;
    ``fourier_mass2``: M² of Fourier acceleration, or None for none.
    """
    if theory.lam != 0.0:
        raise ValueError("exact results need a free field (lambda = 0)")
    a = theory.kernel()
    if np.any(a <= 0):
        raise ValueError("the free action is not positive definite")
    if scheme == "exact":
        return 1.0 / a
    eps = step_size * _fa_factor(theory, fourier_mass2)
    x = eps * a
    if scheme == "euler":
        if np.any(x >= 2):
            raise ValueError("Euler-Maruyama is unstable at this step size (eps*A >= 2)")
        return 1.0 / (a * (1.0 - 0.5 * x))
    if scheme == "rk2":
        return (2.0 - x) / (a * (2.0 - x + 0.5 * x * x))
    raise ValueError(f"unknown scheme {scheme!r}")


def _fa_factor(theory: Phi4, fourier_mass2: float | None):
    if fourier_mass2 is None:
        return 1.0
    return fourier_step_factor(theory.shape, fourier_mass2, half=False)


def free_phi2(theory: Phi4, **kw) -> float:
    """⟨φ_x²⟩ = (1/V) Σ_p v(p)."""
    return float(np.mean(mode_variance(theory, **kw)))


def free_chi(theory: Phi4, **kw) -> float:
    """χ = V⟨m²⟩ = v(p = 0)."""
    return float(mode_variance(theory, **kw).flat[0])


def free_G(theory: Phi4, **kw) -> np.ndarray:
    """G(t) = (1/L0) Σ_{p0} cos(p0 t) v(p0, 0⃗), t = 0..L0−1."""
    v = mode_variance(theory, **kw)
    v0 = v[(slice(None),) + (0,) * (theory.ndim - 1)]
    return np.real(np.fft.ifft(v0))


def free_relaxation_rates(theory: Phi4, step_size: float, fourier_mass2: float | None = None):
    """Per-step contraction 1 − ε(p)A(p) of each mode's mean under Euler Langevin."""
    a = theory.kernel()
    return 1.0 - step_size * _fa_factor(theory, fourier_mass2) * a


def free_field_observables(theory: Phi4, **kw) -> dict[str, float | list[float]]:
    """Every observable of docs/conventions.md §1 for a free field, exactly (same keywords as
    :func:`mode_variance`, so also at the finite step of a Langevin scheme).

    With v(p) the mode variances and A(p) the kernel, all modes Gaussian::

        phi2 = Σ_p v/V          phi4 = 3 phi2²           action = ½ Σ_p A v / V
        m2 = v(0)/V             m4 = 3 m2²               chi = v(0)
        abs_m = √(2 m2/π)       chi_conn = chi (1 − 2/π)  binder = 0 (⟨m⁴⟩ = 3⟨m²⟩²)
        sd = Σ_p A v / V        dsdphi = 0 (∂S/∂φ = Aφ is linear and ⟨φ⟩ = 0)
    """
    v = mode_variance(theory, **kw)
    a = theory.kernel()
    V = theory.volume
    phi2 = float(np.mean(v))
    chi = float(v.flat[0])
    m2 = chi / V
    return {
        "action": float(0.5 * np.mean(a * v)),
        "phi2": phi2,
        "phi4": 3.0 * phi2 * phi2,
        "m": 0.0,
        "abs_m": float(np.sqrt(2.0 * m2 / np.pi)),
        "m2": m2,
        "m4": 3.0 * m2 * m2,
        "chi": chi,
        "chi_conn": chi * (1.0 - 2.0 / np.pi),
        "binder": 0.0,
        "sd": float(np.mean(a * v)),
        "dsdphi": 0.0,
        "G": free_G(theory, **kw).tolist(),
    }


def free_log_z(theory: Phi4) -> float:
    """Eq. (1): log ∫ Π_x dφ_x e^{−S} of a massive free field (Lebesgue measure in the
    theory's own field, so the kappa and mass forms differ by (V/2) log κ)."""
    A = np.asarray(theory.kernel(), dtype=np.float64)
    if theory.lam != 0 or not np.all(A > 0):
        raise ValueError("log Z in closed form needs a free field with A(p) > 0 at every p")
    return float(np.sum(0.5 * np.log(2.0 * np.pi) - 0.5 * np.log(A)))
