"""The exact score of the noised free field, and the exact minimum of the DSM loss.

At λ = 0 the field is Gaussian with ⟨|φ̃_p|²⟩ = V/A(p) (``Phi4.kernel``, eq. (3) of
``phi4.py``), so q_σ = p_0 ∗ N(0, σ²) is Gaussian with covariance A⁻¹ + σ², diagonal in momentum
space, and its score is::

    ∇ log q_σ(y) = F⁻¹[ −A(p) / (1 + σ² A(p)) · ỹ_p ]                              (1)

For the σ²-weighted denoising loss per site, ℓ(s; σ) = E ‖σ s(φ + σz) + z‖² / V, the exact
score is the minimizer (Vincent 2011), ℓ(s; σ) = ℓ* (σ) + E ‖σ (s − s*)‖²/V, and the minimum
follows mode by mode from (1)::

    ℓ*(σ) = (1/V) Σ_p 1 / (1 + σ² A(p))                                           (2)

(the variance of σ s* + z = −σ M φ + (1 − σ² M) z with M = A/(1 + σ² A) is 1/(1 + σ² A)).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lattice.numerics.phi4 import Phi4
from lattice.score.model import ScoreModel

__all__ = ["GaussianScore", "exact_gaussian_model", "exact_dsm_loss", "free_field_samples"]


@dataclass(frozen=True)
class GaussianScore:
    """Eq. (1) as a callable with the network's signature ``score(y, sigma)``."""

    theory: Phi4
    #: the exact score couples every site to every other (a global receptive field)
    receptive_field = None

    def __post_init__(self):
        if self.theory.lam != 0:
            raise ValueError("the exact Gaussian score needs a free field (lambda = 0)")

    def __call__(self, y: jnp.ndarray, sigma) -> jnp.ndarray:
        axes = tuple(range(-self.theory.ndim, 0))
        A = jnp.asarray(self.theory.kernel(), dtype=y.dtype)
        A = A.reshape((1,) * (y.ndim - A.ndim) + A.shape)
        sigma = jnp.asarray(sigma, y.dtype)
        if sigma.ndim:
            sigma = sigma.reshape(sigma.shape + (1,) * (y.ndim - sigma.ndim))
        yt = jnp.fft.fftn(y, axes=axes)
        return jnp.real(jnp.fft.ifftn(-A / (1.0 + sigma * sigma * A) * yt, axes=axes)).astype(
            y.dtype
        )

    def batch(self, y: jnp.ndarray, sigma) -> jnp.ndarray:
        sigma = jnp.asarray(sigma, y.dtype)
        sigma = jnp.reshape(jnp.broadcast_to(sigma, y.shape[:1]), (-1,) + (1,) * self.theory.ndim)
        return self(y, sigma)


def exact_dsm_loss(theory: Phi4, sigma) -> np.ndarray:
    """ℓ*(σ) of eq. (2), the smallest σ²-weighted DSM loss per site (numpy, any σ shape)."""
    if theory.lam != 0:
        raise ValueError("the exact DSM loss needs a free field (lambda = 0)")
    A = theory.kernel().ravel()
    s2 = np.asarray(sigma, dtype=float)[..., None] ** 2
    return np.mean(1.0 / (1.0 + s2 * A), axis=-1)


def free_field_samples(theory: Phi4, key, n: int, dtype=jnp.float64) -> jnp.ndarray:
    """``n`` independent exact draws of the free field: φ = F⁻¹[A(p)^{−1/2} F[η]], η white
    noise, so that ⟨φ φᵀ⟩ = A⁻¹ (eq. (1) at σ = 0). Needs A(p) > 0 for every p."""
    A = theory.kernel()
    if theory.lam != 0 or not np.all(A > 0):
        raise ValueError("exact samples need a free field with A(p) > 0 (a massive free field)")
    axes = tuple(range(-theory.ndim, 0))
    eta = jax.random.normal(key, (n,) + theory.shape, dtype)
    amp = jnp.asarray(A**-0.5, dtype)[None]
    return jnp.real(jnp.fft.ifftn(amp * jnp.fft.fftn(eta, axes=axes), axes=axes)).astype(dtype)


def exact_gaussian_model(theory: Phi4, sde):
    """A :class:`~lattice.score.model.ScoreModel` whose "network" is the exact score of eq. (1): a
    model without training, for tests and for measuring the samplers with a perfect score."""
    return ScoreModel(net=GaussianScore(theory), sde=sde)
