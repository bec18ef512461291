"""The lattice φ⁴ action in both parametrizations of docs/conventions.md §1, and its force.

Hopping ("kappa") form::

    S = Σ_x [ −2κ Σ_μ φ_x φ_{x+μ̂} + (1 − 2λ) φ_x² + λ φ_x⁴ ]

Mass form (no ½ factors)::

    S = Σ_x [ Σ_μ (φ_{x+μ̂} − φ_x)² + m² φ_x² + λ φ_x⁴ ]

Both are instances of one canonical form, which is what the code evaluates::

    S = Σ_x [ −h Σ_μ φ_x φ_{x+μ̂} + a φ_x² + g φ_x⁴ ]                    (1)

with (h, a, g) = (2κ, 1 − 2λ, λ) in the kappa form and (2, 2d + m², λ) in the mass form
(expand (φ_{x+μ̂} − φ_x)² and sum over x). The derivative of (1) is the stencil::

    ∂S/∂φ_x = −h Σ_μ (φ_{x+μ̂} + φ_{x−μ̂}) + 2a φ_x + 4g φ_x³               (2)

and the Gaussian part is S₂ = ½ Σ_p |φ̃_p|² A(p)/V with the kernel::

    A(p) = 2a − 2h Σ_μ cos p_μ                                              (3)

(kappa form: A = 2 − 4κ Σ_μ cos p_μ at λ = 0; mass form: A = 2 (p̂² + m²)).

The two forms are the same theory under φ_mass = √κ φ_kappa, λ_kappa = λ_mass κ²,
(2d + m²) κ = 1 − 2λ_kappa, which :meth:`Phi4.to_mass` and :meth:`Phi4.to_kappa` implement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from lattice.numerics.geometry import cos_sum, forward_product_sum, neighbour_sum, site_sum

__all__ = ["Phi4"]


@dataclass(frozen=True)
class Phi4:
    """φ⁴ theory on a periodic lattice of any shape and dimension.

    Build it with :meth:`kappa_form` or :meth:`mass_form`. Instances are hashable, so they can
    be closed over or passed as static arguments to ``jax.jit``. Every method accepts one field
    (``phi.shape == shape``) or a batch (``phi.shape == batch + shape``).

    >>> th = Phi4.mass_form([8, 8], m2=-4.0, lam=8.0)
    >>> k = th.to_kappa()
    >>> round(k.kappa, 12), round(k.lam, 12)
    (0.25, 0.5)
    """

    shape: tuple[int, ...]
    form: str
    kappa: float | None
    m2: float | None
    lam: float

    # ----------------------------------------------------------------- constructors
    @classmethod
    def kappa_form(cls, shape: Sequence[int], kappa: float, lam: float) -> Phi4:
        """S = Σ_x [−2κ Σ_μ φ_x φ_{x+μ̂} + (1 − 2λ) φ_x² + λ φ_x⁴]."""
        return cls(_check_shape(shape), "kappa", float(kappa), None, float(lam))

    @classmethod
    def mass_form(cls, shape: Sequence[int], m2: float, lam: float) -> Phi4:
        """S = Σ_x [Σ_μ (φ_{x+μ̂} − φ_x)² + m² φ_x² + λ φ_x⁴]."""
        return cls(_check_shape(shape), "mass", None, float(m2), float(lam))

    # ----------------------------------------------------------------- geometry
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def volume(self) -> int:
        return math.prod(self.shape)

    @property
    def coefficients(self) -> tuple[float, float, float]:
        """(h, a, g) of the canonical form (1)."""
        if self.form == "kappa":
            return 2.0 * self.kappa, 1.0 - 2.0 * self.lam, self.lam
        return 2.0, 2.0 * self.ndim + self.m2, self.lam

    # ----------------------------------------------------------------- action and force
    def action(self, phi: jnp.ndarray, batch_last: bool = False) -> jnp.ndarray:
        """S[φ] of eq. (1), summed over the lattice axes (one value per configuration;
        lattice axes last, first with ``batch_last``)."""
        h, a, g = self.coefficients
        phi2 = phi * phi
        d = self.ndim
        dens = -h * forward_product_sum(phi, d, batch_last) + a * phi2 + g * phi2 * phi2
        return site_sum(dens, d, batch_last)

    def action_from_grad(self, phi, grad, batch_last: bool = False) -> jnp.ndarray:
        """S[φ] of eq. (1) from φ and its gradient (2), without a stencil.

        The hopping and mass terms of (1) are of degree 2 in φ and the quartic term of
        degree 4, so Σ_x φ_x ∂S/∂φ_x = 2 S₂ + 4 S₄ (Euler's theorem) and

            S = Σ_x φ_x (½ ∂S/∂φ_x − g φ_x³),                                  (4)

        a per-site expression of φ and ∂S/∂φ only. HMC has both at the end of a trajectory;
        computing S by (4) saves the stencil pass of :meth:`action` (docs/PERFORMANCE.md).
        Equal to :meth:`action` up to rounding (tested).
        """
        _, _, g = self.coefficients
        return site_sum(phi * (0.5 * grad - g * phi * phi * phi), self.ndim, batch_last)

    def grad(self, phi: jnp.ndarray, batch_last: bool = False) -> jnp.ndarray:
        """∂S/∂φ_x by the hand-written stencil of eq. (2) (lattice axes last; first with
        ``batch_last``)."""
        h, a, g = self.coefficients
        nb = neighbour_sum(phi, self.ndim, batch_last)
        return -h * nb + phi * (2.0 * a + 4.0 * g * phi * phi)

    def force(self, phi: jnp.ndarray, batch_last: bool = False) -> jnp.ndarray:
        """The Langevin drift −∂S/∂φ_x (lattice axes last; first with ``batch_last``)."""
        h, a, g = self.coefficients
        nb = neighbour_sum(phi, self.ndim, batch_last)
        return h * nb - phi * (2.0 * a + 4.0 * g * phi * phi)

    # ----------------------------------------------------------------- Gaussian part
    def kernel(self) -> np.ndarray:
        """A(p) = 2a − 2h Σ_μ cos p_μ of eq. (3) on the momentum grid (numpy, float64).

        At λ = 0 the field is Gaussian with ⟨|φ̃_p|²⟩ = V / A(p).
        """
        h, a, _ = self.coefficients
        return 2.0 * a - 2.0 * h * cos_sum(self.shape)

    @property
    def bare_mass2(self) -> float:
        """m² of the Gaussian part in units of the hopping term: A(p) = h (p̂² + m²)."""
        h, a, _ = self.coefficients
        return (2.0 * a - 2.0 * h * self.ndim) / h

    # ----------------------------------------------------------------- parametrizations
    def to_mass(self) -> Phi4:
        """The same theory in the mass form (needs κ > 0)."""
        if self.form == "mass":
            return self
        if self.kappa <= 0:
            raise ValueError("the mass form needs kappa > 0")
        k, lk = self.kappa, self.lam
        return Phi4.mass_form(self.shape, (1.0 - 2.0 * lk) / k - 2.0 * self.ndim, lk / k**2)

    def to_kappa(self) -> Phi4:
        """The same theory in the kappa form: κ solves 2λ_m κ² + (2d + m²) κ − 1 = 0."""
        if self.form == "kappa":
            return self
        b, lm = 2.0 * self.ndim + self.m2, self.lam
        if lm == 0.0:
            if b <= 0:
                raise ValueError("a free field with 2d + m2 <= 0 has no kappa form")
            k = 1.0 / b
        else:
            k = (-b + math.sqrt(b * b + 8.0 * lm)) / (4.0 * lm)
        return Phi4.kappa_form(self.shape, k, lm * k * k)

    def describe(self) -> str:
        if self.form == "kappa":
            c = f"kappa={self.kappa:g}, lambda={self.lam:g}"
        else:
            c = f"m2={self.m2:g}, lambda={self.lam:g}"
        return f"phi4 {list(self.shape)} ({self.form} form: {c})"


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shp = tuple(int(s) for s in shape)
    if not shp or any(s < 1 for s in shp):
        raise ValueError(f"lattice shape must be a non-empty list of entries >= 1, got {shape}")
    return shp
