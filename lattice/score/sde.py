"""Forward noising SDEs of score-based diffusion (Song et al., arXiv:2011.13456, eqs. 9–11).

A forward SDE dx = f(t) x dt + g(t) dw on t ∈ [0, 1] turns the field distribution
p_0 = e^{−S}/Z into p_t with a Gaussian perturbation kernel::

    x_t = α(t) φ + α(t) σ(t) z,   z ~ N(0, 1)                                  (1)

so p_t(x) = α^{−V} q_{σ(t)}(x / α), where q_σ = p_0 ∗ N(0, σ²) is the *variance-exploding*
picture of the same noise. ``α`` is the signal scale and ``σ`` the noise-to-signal ratio; the
score network is always asked for the score of q_σ at y = x/α (see ``network.py``), and::

    ∇_x log p_t(x) = ∇_y log q_σ(y) / α                                        (2)

VE (variance exploding, Song et al. eq. 30)::

    σ(t) = σ_min (σ_max/σ_min)^t,  α = 1,  f = 0,  g(t) = σ(t) √(2 ln(σ_max/σ_min))

VP (variance preserving, linear β, Song et al. eq. 32)::

    β(t) = β_min + t (β_max − β_min),  f = −β/2,  g = √β,
    α(t) = exp(−¼ t² (β_max − β_min) − ½ t β_min),  marginal std s = √(1 − α²),
    σ(t) = s/α

The prior p_1 is N(0, σ_max²) for VE and N(0, 1) for VP. Training draws t uniformly on
[t_min, 1]: t_min = 0 for VE (σ(0) = σ_min) and, for VP, the t at which σ(t) = ``sigma_min``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

__all__ = ["SDE", "VESDE", "VPSDE", "make_sde"]


class SDE:
    """Interface shared by :class:`VESDE` and :class:`VPSDE` (all methods are jnp-traceable)."""

    name: str
    t_min: float

    def sigma(self, t):
        """Noise-to-signal ratio σ(t) of eq. (1)."""
        raise NotImplementedError

    def alpha(self, t):
        """Signal scale α(t) of eq. (1)."""
        raise NotImplementedError

    def drift(self, x, t):
        """f(t) x."""
        raise NotImplementedError

    def diffusion(self, t):
        """g(t)."""
        raise NotImplementedError

    def marginal(self, t):
        """(mean factor, std) of p_t given φ: x_t ~ N(α φ, (α σ)²)."""
        a = self.alpha(t)
        return a, a * self.sigma(t)

    def prior_std(self) -> float:
        raise NotImplementedError

    def prior_sample(self, key, shape, dtype=jnp.float32):
        """x_1 ~ N(0, prior_std²)."""
        return self.prior_std() * jax.random.normal(key, shape, dtype)

    def prior_logp(self, x, ndim: int):
        """log N(x; 0, prior_std²) summed over the last ``ndim`` axes."""
        s = self.prior_std()
        axes = tuple(range(-ndim, 0))
        n = math.prod(x.shape[-ndim:])
        return -0.5 * jnp.sum(x * x, axis=axes) / s**2 - n * (
            math.log(s) + 0.5 * math.log(2 * math.pi)
        )


@dataclass(frozen=True)
class VESDE(SDE):
    """Variance exploding: dx = √(dσ²/dt) dw, σ(t) = σ_min (σ_max/σ_min)^t."""

    sigma_min: float
    sigma_max: float
    name: str = "ve"
    t_min: float = 0.0

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max (got {self.sigma_min}, {self.sigma_max})"
            )

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t))  # t's dtype: a float32 path stays float32

    def drift(self, x, t):
        return jnp.zeros_like(x)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def prior_std(self) -> float:
        return self.sigma_max


@dataclass(frozen=True)
class VPSDE(SDE):
    """Variance preserving with linear β(t); ``sigma_min`` fixes the smallest training time."""

    beta_min: float
    beta_max: float
    sigma_min: float
    name: str = "vp"

    def __post_init__(self):
        if not 0 <= self.beta_min < self.beta_max:
            raise ValueError(
                f"need 0 <= beta_min < beta_max (got {self.beta_min}, {self.beta_max})"
            )
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma(1) = {self.sigma_max:.4g} (got {self.sigma_min})"
            )

    def _log_alpha(self, t):
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t):
        return jnp.exp(self._log_alpha(t))

    def sigma(self, t):
        # s/α = √(1 − α²)/α = √(α^{−2} − 1) = √(expm1(−2 log α))
        return jnp.sqrt(jnp.expm1(-2.0 * self._log_alpha(t)))

    @property
    def sigma_max(self) -> float:
        return math.sqrt(math.expm1(0.5 * (self.beta_max - self.beta_min) + self.beta_min))

    @property
    def t_min(self) -> float:
        """The t with σ(t) = sigma_min: solve ¼ Δβ t² + ½ β_min t = ½ log(1 + σ_min²)."""
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        c = 0.5 * math.log1p(self.sigma_min**2)
        return (-b + math.sqrt(b * b + 4 * a * c)) / (2 * a)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def drift(self, x, t):
        return -0.5 * self.beta(t) * x

    def diffusion(self, t):
        return jnp.sqrt(self.beta(t))

    def prior_std(self) -> float:
        return 1.0


def make_sde(
    kind: str, sigma_min: float, sigma_max: float, beta_min: float = 0.1, beta_max: float = 20.0
) -> SDE:
    """The SDE a model was trained with (``kind`` = "ve" or "vp")."""
    if kind == "ve":
        return VESDE(sigma_min, sigma_max)
    if kind == "vp":
        return VPSDE(beta_min, beta_max, sigma_min)
    raise ValueError(f"unknown SDE {kind!r} (allowed: ve, vp)")
