"""The partition function of φ⁴ on a thin periodic strip [L, w] by its transfer matrix.

Write the canonical action (``phi4.py`` eq. (1)) slice by slice along axis 0, ψ_t = φ_{t,·}
(w sites, periodic along axis 1 as in the action, so a strip of width 2 couples its two sites
twice and one of width 1 couples a site to itself)::

    S = Σ_t [ s(ψ_t) − h ψ_t · ψ_{t+1} ],   s(ψ) = Σ_j [ −h ψ_j ψ_{j+1 mod w} + a ψ_j² + g ψ_j⁴ ]

so that, with the symmetric kernel T(ψ, ψ') = exp(−½ s(ψ) + h ψ·ψ' − ½ s(ψ'))::

    Z = ∫ Π_{t,j} dψ_{t,j} Π_t T(ψ_t, ψ_{t+1}) = Tr T^L.                                 (1)

Each site variable is discretized on n equally spaced points of [−c, c] (the trapezoidal rule,
which converges exponentially for a smooth integrand that vanishes at ±c), so T becomes the
n^w × n^w matrix Δ^w T(ψ_i, ψ_k) with Δ = 2c/(n − 1), and log Z = log Σ_i λ_i^L over its
eigenvalues. The default n and c give log Z to ~1e-10 at the couplings of the tests; the caller
can check convergence by doubling n.
"""

from __future__ import annotations

import itertools

import numpy as np

from lattice.numerics.phi4 import Phi4

__all__ = ["strip_log_z"]


def strip_log_z(theory: Phi4, n: int = 48, cutoff: float | None = None) -> float:
    """log Z of eq. (1) for a theory on a [L, w] lattice with w ≤ 2 (Lebesgue measure in the
    theory's own field). ``cutoff`` c defaults to where (a − d h) φ² + g φ⁴ (a site's action per
    site with every neighbour at the same value) reaches 40."""
    if theory.ndim != 2 or theory.shape[1] > 2:
        raise ValueError(
            f"the transfer matrix needs an [L, w] strip with w <= 2 (got {theory.shape})"
        )
    L, w = theory.shape
    h, a, g = theory.coefficients
    c = cutoff if cutoff is not None else _cutoff(a - theory.ndim * h, g)
    x = np.linspace(-c, c, n)
    delta = x[1] - x[0]
    psi = np.array(list(itertools.product(x, repeat=w)))  # [n^w, w]
    if w == 1:
        hop = psi[:, 0] ** 2
    else:  # Σ_j ψ_j ψ_{j+1 mod 2} = 2 ψ_0 ψ_1
        hop = 2.0 * psi[:, 0] * psi[:, 1]
    s = np.sum(a * psi**2 + g * psi**4, axis=1) - h * hop
    log_t = -0.5 * s[:, None] - 0.5 * s[None, :] + h * psi @ psi.T + w * np.log(delta)
    shift = float(log_t.max())
    lam = np.linalg.eigvalsh(np.exp(log_t - shift))
    lam = lam[lam > 0]
    lg = L * np.log(lam)
    top = lg.max()
    return float(L * shift + top + np.log(np.sum(np.exp(lg - top))))


def _cutoff(mass: float, g: float, level: float = 40.0) -> float:
    """The φ where mass φ² + g φ⁴ first reaches ``level`` (a safe bound for mass < 0 too)."""
    if g > 0:
        # g u² + mass u − level = 0 for u = φ²
        u = (-mass + np.sqrt(mass * mass + 4.0 * g * level)) / (2.0 * g)
    elif mass > 0:
        u = level / mass
    else:
        raise ValueError("a free field needs a positive mass for its integral to exist")
    return float(np.sqrt(u))
