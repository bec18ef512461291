"""Fourier acceleration: a step size per lattice momentum (Batrouni et al., PRD 32 (1985) 2736).

With the mass M² of the preconditioner, every mode p moves with the step

    ε(p) = ε (p̂²_max + M²) / (p̂² + M²),    p̂² = Σ_μ 4 sin²(p_μ/2)                      (1)

so the slow infrared modes move as fast as the ultraviolet ones. Langevin uses eq. (1) as its
step (exact only as ε → 0); :mod:`lattice.numerics.exact` gives that step's equilibrium bias
on the free field.
"""

from __future__ import annotations

import math

import numpy as np

from lattice.numerics.geometry import phat2, rfft_phat2
from lattice.numerics.phi4 import Phi4

__all__ = ["fourier_mass2_auto", "fourier_step_factor"]


def fourier_mass2_auto(theory: Phi4) -> float:
    """Default M²: the bare mass² of the Gaussian part if positive, else p̂² of the smallest
    nonzero lattice momentum, 4 sin²(π / L_max)."""
    m2 = theory.bare_mass2
    if m2 > 0:
        return m2
    return 4.0 * math.sin(math.pi / max(theory.shape)) ** 2


def fourier_step_factor(shape, mass2: float, half: bool = True) -> np.ndarray:
    """ε(p)/ε = (p̂²_max + M²)/(p̂² + M²) on the rfft half grid (or the full grid)."""
    p2 = rfft_phat2(shape) if half else phat2(shape)
    return (phat2(shape).max() + mass2) / (p2 + mass2)
