"""Exact diffusion sampling in path space: a whole reverse trajectory as the proposal, with a
weight that is exact for any score, any number of steps and any kernel variance.

Everything is written in the variance-exploding variable y = x/α(t) of ``sde.py`` eq. (1), in
which the noising of φ ~ e^{−S}/Z is y_σ = φ + σ z. Take noise levels::

    0 = σ_0 < σ_1 = σ(t_min) < σ_2 < … < σ_K = σ(1),   σ_k = σ(t_min + (k−1)(1 − t_min)/(K−1))

(uniform in the SDE's time; geometric in σ for the VE SDE). The *forward* chain adds
independent noise, Q(y_{k+1} | y_k) = N(y_k, Δ_k), Δ_k = σ_{k+1}² − σ_k², so its marginal at
level k is exactly q_{σ_k} and y_0 = φ. The *reverse* chain, the sampler, starts from the prior
π(y_K) = N(0, s_π²) (s_π = prior_std/α(1)) and steps down with Gaussian kernels::

    P_θ(y_k | y_{k+1}) = N(μ_k, v_k),   μ_k = y_{k+1} + Δ_k ŝ_θ(y_{k+1}, σ_{k+1})       (1)

μ_k is the mean of the forward posterior q(y_k | y_{k+1}, φ) with φ replaced by its Tweedie
estimate φ̂ = y_{k+1} + σ_{k+1}² ŝ (for σ_k = 0 it is φ̂ itself). The path weight::

    log w = −S(y_0) + Σ_k log Q(y_{k+1} | y_k) − log π(y_K) − Σ_k log P_θ(y_k | y_{k+1})   (2)

is the ratio of the joint density of (y_0, …, y_K) under "φ ~ e^{−S}, then noise" to that under
the sampler. Independence Metropolis–Hastings on whole paths with min(1, w'/w) therefore
leaves the target path measure invariant, and its y_0 marginal is e^{−S}/Z — exactly, with no
solver error, whatever the score (Tierney 1994; the path-space form of Wu et al. /
Phillips et al.). Self-normalized weights w/Σw reweight the same draws instead.

Three kernel variances v_k (all exact; they only change the variance of log w):

- ``"em"``, Euler–Maruyama: v_k = Δ_k, the reverse SDE's step in the variable σ²;
- ``"analytic"``, the optimal isotropic variance of Analytic-DPM (Bao et al., ICLR 2022,
  Thm. 1) in VE form. With c_k = Δ_k/σ_{k+1}² and λ_k² = σ_k² Δ_k/σ_{k+1}² (the posterior
  variance for known φ), and Tweedie's Cov(φ | y) = σ² (1 + σ² ∇² log q_σ)::

      v_k = λ_k² + c_k² σ_{k+1}² (1 − σ_{k+1}² Γ(σ_{k+1})),   Γ(σ) = E ‖ŝ(y_σ, σ)‖² / V    (3)

  with 1 − σ²Γ clipped to [0, 1]. Γ is measured once per model on its validation data
  (:func:`score_norms`, stored in model.json) and interpolated in log σ; for the exact free
  field it is known in closed form, σ²Γ = 1 − ℓ*(σ) (``gaussian.py`` eq. (2)).

- ``"spectral"``, one variance per momentum mode, v_k(p) = λ_k² + c_k² M(σ_{k+1}, p) with the
  model's measured denoising error per mode M, and the per-mode prior N(0, C(p) + σ_K²)
  (``spectral.py``; exact for any table, and with the closed-form table of the free field the
  exact reverse transition, so that log w is constant). The noise of each step is then coloured
  in momentum space, and the log-densities of eq. (2) are those of ``spectral.py`` eq. (3).

The last step, σ_1 → σ_0 = 0, is a Gaussian around the Tweedie denoiser φ̂(y_1): c_0 = 1,
λ_0 = 0, so v_0 = σ_1² (1 − σ_1² Γ(σ_1)) (analytic) or σ_1² (em); with the physics-informed
network ŝ → F = −∂S/∂φ as σ → 0 it is a Langevin step of size σ_1². The sample is y_0 itself: no
noise level is left over, so the Metropolis target is e^{−S} exactly.

A proposal costs K score evaluations. The log-densities are accumulated in the field's dtype
(float64 when enabled) from the drawn z, ‖y_{k+1} − y_k‖² = ‖Δ_k ŝ + √v_k z‖², so that no
large terms cancel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lattice.score import spectral
from lattice.score.gaussian import GaussianScore, exact_dsm_loss
from lattice.score.sde import SDE

__all__ = [
    "KERNELS",
    "PathResult",
    "noise_levels",
    "kernel_variances",
    "sample_path",
    "sample_spectral_path",
    "score_norms",
    "norm_function",
    "stored_norm_function",
]

KERNELS = ("spectral", "analytic", "em")
_LOG2PI = math.log(2.0 * math.pi)

#: ŝ(y, σ) for one field y and scalar σ (the VE score, as the network computes it)
Score = Callable[[jax.Array, jax.Array], jax.Array]


class PathResult(NamedTuple):
    y: jax.Array  # the sample y_0 (lattice shape)
    log_ratio: jax.Array  # Σ log Q − log π − Σ log P_θ: eq. (2) without −S(y_0)


def noise_levels(sde: SDE, steps: int) -> np.ndarray:
    """σ_0 = 0, σ_1 … σ_K on the uniform grid in t from t_min to 1 (K = ``steps`` ≥ 2)."""
    if steps < 2:
        raise ValueError(f"a path needs steps >= 2 (got {steps})")
    t = np.linspace(sde.t_min, 1.0, steps)
    return np.concatenate([[0.0], np.asarray(sde.sigma(t), dtype=np.float64)])


def kernel_variances(
    levels: np.ndarray, kernel: str, norm: Callable | None = None, table=None
) -> np.ndarray:
    """v_k, k = 0 … K−1, of eq. (3) (``"analytic"``, with u(σ) = σ² Γ(σ) = ``norm(σ)``), Δ_k
    (``"em"``), or v_k(p) [K, *shape] of ``spectral.py`` eq. (2) (``"spectral"``, with its
    :class:`~lattice.score.spectral.SpectralTable` ``table``)."""
    lo, hi = levels[:-1], levels[1:]
    delta = hi**2 - lo**2
    if kernel == "em":
        return delta
    if kernel == "spectral":
        if table is None:
            raise ValueError("the spectral kernel needs the model's spectral table")
        return spectral.spectral_variances(levels, table)
    if kernel != "analytic":
        raise ValueError(f"unknown kernel {kernel!r} (allowed: {', '.join(KERNELS)})")
    if norm is None:
        raise ValueError("the analytic kernel needs the model's score norms")
    u = np.clip(np.asarray(norm(hi), dtype=np.float64), 0.0, 1.0)
    c = delta / hi**2
    v = lo**2 * delta / hi**2 + c * c * hi**2 * (1.0 - u)
    return np.maximum(v, 1e-6 * delta)  # a score with σ²Γ ≥ 1 must not give v = 0


def _gauss_logpdf(sq_norm, var, n: int):
    """log N(r; 0, var·1) of an n-vector r with ‖r‖² = ``sq_norm``."""
    return -0.5 * sq_norm / var - 0.5 * n * (_LOG2PI + jnp.log(var))


def sample_path(
    score: Score,
    levels: np.ndarray,
    variances: np.ndarray,
    prior_std: float,
    key: jax.Array,
    y_top: jax.Array,
) -> PathResult:
    """Run the reverse chain (1) from y_K = ``y_top`` (drawn by the caller from N(0,
    ``prior_std``²)) to y_0; step k's noise is ``normal(fold_in(key, k))``. One field."""
    n = y_top.size
    log_prior = _gauss_logpdf(jnp.sum(y_top * y_top), prior_std**2, n)
    return _reverse(score, levels, jnp.asarray(variances, y_top.dtype), key, y_top, log_prior)


def sample_spectral_path(
    score: Score,
    levels: np.ndarray,
    variances: np.ndarray,
    prior_var: np.ndarray,
    key: jax.Array,
    z_top: jax.Array,
    ndim: int | None = None,
) -> PathResult:
    """The reverse chain (1) with the per-mode kernel of ``spectral.py``: ``variances`` are
    v_k(p) [K, *shape] (``spectral.py`` eq. (2)), the path starts at y_K = F⁻¹[√P F z_top]
    with P = ``prior_var`` = C(p) + σ_K² [*shape] and white ``z_top``, and every step's noise
    is coloured the same way (``spectral.py`` eq. (3)). One field; with ``ndim`` the momentum
    axes are its last ``ndim`` and the leading ones channels (a multilevel detail field)."""
    dtype = z_top.dtype
    n = z_top.size
    prior = jnp.asarray(prior_var, dtype)
    y_top = spectral.color(z_top, prior, ndim)
    log_prior = -0.5 * jnp.sum(z_top * z_top) - 0.5 * (spectral.log_det(prior_var) + n * _LOG2PI)
    log_dets = np.array([spectral.log_det(v) for v in variances])
    var = jnp.asarray(variances, dtype)
    return _reverse(score, levels, var, key, y_top, log_prior, jnp.asarray(log_dets, dtype), ndim)


def _reverse(score, levels, var, key, y_top, log_prior, log_dets=None, ndim=None) -> PathResult:
    """Eq. (2)'s sum along the reverse chain: isotropic kernels (``var`` [K]) or, with the
    kernels' log-determinants ``log_dets`` [K], per-mode ones (``var`` [K, *shape])."""
    dtype = y_top.dtype
    n = y_top.size
    sig = jnp.asarray(levels, dtype)
    delta = jnp.asarray(levels[1:] ** 2 - levels[:-1] ** 2, dtype)
    K = var.shape[0]

    def body(i, carry):
        y, acc = carry
        k = K - 1 - i  # step y_{k+1} → y_k
        s = score(y, sig[k + 1]).astype(dtype)
        z = jax.random.normal(jax.random.fold_in(key, k), y.shape, dtype)
        if log_dets is None:
            sv = jnp.sqrt(var[k])
            noise = sv * z
            log_p = _gauss_logpdf(var[k] * jnp.sum(z * z), var[k], n)
        else:
            noise = spectral.color(z, var[k], ndim)
            log_p = -0.5 * jnp.sum(z * z) - 0.5 * (log_dets[k] + n * _LOG2PI)
        step = delta[k] * s + noise  # y_k − y_{k+1}
        log_q = _gauss_logpdf(jnp.sum(step * step), delta[k], n)
        return y + step, acc + log_q - log_p

    y0, acc = jax.lax.fori_loop(0, K, body, (y_top, jnp.zeros((), dtype)))
    return PathResult(y0, acc - log_prior)


# ---------------------------------------------------------------------------- Γ(σ) of eq. (3)
def score_norms(
    score_batch: Callable[[jax.Array, jax.Array], jax.Array],
    fields: jax.Array,
    sigmas,
    key: jax.Array,
    batch: int = 256,
) -> np.ndarray:
    """u(σ) = σ² E ‖ŝ(φ + σ z, σ)‖² / V over ``fields`` [N, *shape] (one z per field) for each σ
    in ``sigmas``: the input of the analytic kernel, eq. (3). ``score_batch(y [B, *shape],
    σ)`` is the network's batched score."""
    fields = jnp.asarray(fields)
    V = math.prod(fields.shape[1:])
    out = []
    wide = jnp.result_type(float)  # float64 when enabled (no warning when it is not)
    f = jax.jit(lambda y, s: jnp.sum(score_batch(y, s).astype(wide) ** 2))
    for j, s in enumerate(np.asarray(sigmas, dtype=np.float64)):
        total = 0.0
        for i in range(0, fields.shape[0], batch):
            phi = fields[i : i + batch]
            k = jax.random.fold_in(jax.random.fold_in(key, j), i)
            y = phi + s * jax.random.normal(k, phi.shape, phi.dtype)
            total = total + f(y, jnp.asarray(s, phi.dtype))  # stays on the device
        out.append(s * s * float(total) / (fields.shape[0] * V))
    return np.asarray(out)


#: noise levels of the stored u(σ) table, and the most configurations it is measured on
NORM_GRID, NORM_FIELDS = 33, 512


def norm_table(score_batch, sde: SDE, fields) -> dict[str, list[float]]:
    """The model.json ``score_norms`` table: u(σ) (:func:`score_norms`) at ``NORM_GRID``
    levels of the SDE's time grid, on at most ``NORM_FIELDS`` of ``fields``."""
    sigmas = [float(s) for s in sde.sigma(np.linspace(sde.t_min, 1.0, NORM_GRID))]
    u = score_norms(score_batch, fields[:NORM_FIELDS], sigmas, jax.random.key(NORM_GRID))
    return {"sigma": sigmas, "u": [float(v) for v in u]}


def norm_function(sigmas, u) -> Callable[[np.ndarray], np.ndarray]:
    """u(σ) interpolated linearly in log σ between the measured points (held constant
    outside them)."""
    ls = np.log(np.asarray(sigmas, dtype=np.float64))
    u = np.asarray(u, dtype=np.float64)
    order = np.argsort(ls)
    ls, u = ls[order], u[order]
    return lambda s: np.interp(np.log(np.asarray(s, dtype=np.float64)), ls, u)


def stored_norm_function(model) -> Callable[[np.ndarray], np.ndarray] | None:
    """u(σ) = σ²Γ(σ) of a :class:`~lattice.score.model.ScoreModel`, where the model carries it: in
    closed form for the exact free-field score, else from the ``score_norms`` table of its
    model.json (written by training). None for an older model without the table
    (:func:`lattice.score.tables.norm_function_of` then measures it on the training ensemble)."""
    if isinstance(model.net, GaussianScore):
        theory = model.net.theory
        return lambda s: 1.0 - exact_dsm_loss(theory, s)
    table = model.meta.get("score_norms")
    if table:
        return norm_function(table["sigma"], table["u"])
    return None
