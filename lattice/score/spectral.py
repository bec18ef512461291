"""The per-mode (spectral) reverse kernel of the path sampler: one variance per momentum mode.

On a translation-invariant lattice the best Gaussian reverse kernel whose covariance does not
depend on the state is diagonal in momentum space. With the orthonormal FFT F (so that
Σ_x |a_x|² = Σ_p |(Fa)_p|²) and the Tweedie denoiser φ̂(y, σ) = y + σ² ŝ(y, σ) of the model,
the table of this module is::

    M(σ, p) = E |F[φ − φ̂(φ + σ z, σ)]_p|²,      C(p) = E |F[φ]_p|²                 (1)

the model's own denoising error per mode and the data's power spectrum, each averaged over the
lattice's point group (axis reflections p_i → −p_i and permutations of equal axes; the average
is what makes every table real and even, M(σ, p) = M(σ, −p)). M is interpolated linearly in
log σ as log M. Step k of the reverse chain (``path.py`` eq. (1)) then draws its noise with the
circulant covariance F⁻¹ diag v_k F, where::

    v_k(p) = λ_k² + c_k² M(σ_{k+1}, p),   c_k = Δ_k/σ_{k+1}²,  λ_k² = σ_k² Δ_k/σ_{k+1}²    (2)

— the variance that is optimal given the model's imperfect mean (Bao et al., ICML 2022,
arXiv:2206.07309, Thm. 1), per Fourier mode — and the path starts from the per-mode prior
N(0, C(p) + σ_K²). Measuring the error M directly avoids the cancellation of the isotropic form
1 − σ²Γ (``path.py`` eq. (3)) at large σ, where a 1% error in Γ is a 100% error in the variance.

A real field with circulant covariance F⁻¹ diag v F is r = F⁻¹[√v · F[z]] for white z (real,
since v is even); its log-density is −½‖z‖² − ½ Σ_p log v(p) − (V/2) log 2π (eq. (3)), the
Jacobian being Π_p √v(p).

For the exact free-field score (``gaussian.py``) both are known in closed form: M(σ, p) =
σ²/(1 + σ² A(p)), the posterior variance of mode p, and C(p) = 1/A(p). With them eq. (2) is the
exact reverse transition of the noised Gaussian, and the path weight is the constant Z at any K.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lattice.score.gaussian import GaussianScore
from lattice.score.sde import SDE

__all__ = [
    "SpectralTable",
    "point_group_average",
    "measure_spectral",
    "spectral_from_dict",
    "stored_spectral_table",
    "gaussian_table",
    "default_kernel",
    "spectral_variances",
    "color",
    "SPECTRAL_GRID",
    "SPECTRAL_FIELDS",
]

#: noise levels of the stored M(σ, p) table, and the most configurations it is measured on
#: (the table's sampling noise sets var(log w) of a near-perfect model: on the 16×16 free field
#: it was 0.17–0.29 with 512 exact draws, see docs/PERFORMANCE.md, hence 2048)
SPECTRAL_GRID, SPECTRAL_FIELDS = 33, 2048


@dataclass(frozen=True)
class SpectralTable:
    """M(σ, p) (``error``: σ [n] → [n, *shape]) and C(p) (``power``, [*shape]) of eq. (1), with
    where they came from (``source``, for ``lattice info``)."""

    error: Callable[[np.ndarray], np.ndarray]
    power: np.ndarray
    source: str
    levels: int = 0  # noise levels of a measured table (0: closed form)
    fields: int = 0  # configurations it was measured on


def point_group_average(a, ndim: int, xp=np):
    """The average of ``a`` (momentum index on its last ``ndim`` axes, FFT order) over the
    reflections p_i → −p_i of each axis and the permutations of axes of equal extent. With
    ``xp = jax.numpy`` it is traceable (the trained tables of ``path_train.py``); with numpy
    it is taken in float64."""
    if xp is np:
        a = np.asarray(a, dtype=np.float64)
    lead = a.ndim - ndim
    shape = a.shape[lead:]
    perms = [
        p
        for p in itertools.permutations(range(ndim))
        if all(shape[i] == shape[j] for i, j in enumerate(p))
    ]
    total = xp.zeros_like(a)
    count = 0
    for flips in itertools.product((False, True), repeat=ndim):
        b = a
        for ax, f in enumerate(flips):
            if f:  # index i → (−i) mod L
                b = xp.roll(xp.flip(b, lead + ax), 1, lead + ax)
        for p in perms:
            total = total + xp.transpose(b, tuple(range(lead)) + tuple(lead + i for i in p))
            count += 1
    return total / count


def measure_spectral(
    score_batch: Callable[[jax.Array, jax.Array], jax.Array],
    sde: SDE,
    fields,
    power_fields=None,
    *,
    key=None,
    batch: int = 256,
    context=None,
    ndim: int | None = None,
) -> dict:
    """Eq. (1) measured: M(σ, p) at ``SPECTRAL_GRID`` levels of the SDE's time grid on at most
    ``SPECTRAL_FIELDS`` of ``fields`` [N, *shape] (one z per field and level), and C(p) on
    ``power_fields`` (default: ``fields``). Returns the model.json ``spectral`` table:
    ``{"sigma": [G], "shape": [...], "log_error": [G·V], "power": [V], "fields": n}``.

    A conditional score (a multilevel detail level) is ``score_batch(y, σ, ctx)`` with
    ``context`` [N, ...] (the coarse fields, one per field), and ``ndim`` momentum axes last
    after channel axes: each channel gets its own spectrum, and no point-group average is
    taken (it would mix the channels; |F_p a|² of a real a is even in p per draw anyway)."""
    fields = jnp.asarray(fields)[:SPECTRAL_FIELDS]
    shape = tuple(fields.shape[1:])
    ndim = len(shape) if ndim is None else ndim
    channels = len(shape) > ndim
    axes = tuple(range(1 + len(shape) - ndim, len(shape) + 1))
    ctx = None if context is None else jnp.asarray(context)[: fields.shape[0]]
    wide = jnp.result_type(float)  # float64 when enabled
    key = jax.random.key(SPECTRAL_GRID) if key is None else key
    sigmas = [float(s) for s in sde.sigma(np.linspace(sde.t_min, 1.0, SPECTRAL_GRID))]

    @jax.jit
    def err2(phi, y, s, *c):
        d = (phi - (y + s * s * score_batch(y, s, *c))).astype(wide)
        return jnp.sum(jnp.abs(jnp.fft.fftn(d, axes=axes, norm="ortho")) ** 2, axis=0)

    M = []
    for j, s in enumerate(sigmas):
        total = jnp.zeros(shape, wide)
        for i in range(0, fields.shape[0], batch):
            phi = fields[i : i + batch]
            k = jax.random.fold_in(jax.random.fold_in(key, j), i)
            y = phi + s * jax.random.normal(k, phi.shape, phi.dtype)
            c = () if ctx is None else (ctx[i : i + batch],)
            total = total + err2(phi, y, jnp.asarray(s, phi.dtype), *c)
        M.append(np.asarray(total) / fields.shape[0])
    M = np.stack(M) if channels else point_group_average(np.stack(M), ndim)
    pf = fields if power_fields is None else jnp.asarray(power_fields)
    C = np.zeros(shape)
    for i in range(0, pf.shape[0], batch):
        f = jnp.fft.fftn(pf[i : i + batch].astype(wide), axes=axes, norm="ortho")
        C += np.asarray(jnp.sum(jnp.abs(f) ** 2, axis=0))
    C = C / pf.shape[0] if channels else point_group_average(C / pf.shape[0], ndim)
    tiny = np.finfo(np.float64).tiny
    return {
        "sigma": sigmas,
        "shape": list(shape),
        "log_error": [float(v) for v in np.log(np.maximum(M, tiny)).ravel()],
        "power": [float(v) for v in C.ravel()],
        "fields": int(fields.shape[0]),
        "power_fields": int(pf.shape[0]),
    }


def spectral_from_dict(table: dict, source: str) -> SpectralTable:
    """The :class:`SpectralTable` of a stored (or just measured) table: log M interpolated
    linearly in log σ between the measured levels, held constant outside them."""
    shape = tuple(table["shape"])
    ls = np.log(np.asarray(table["sigma"], dtype=np.float64))
    lm = np.asarray(table["log_error"], dtype=np.float64).reshape((len(ls), -1))
    order = np.argsort(ls)
    ls, lm = ls[order], lm[order]

    def error(s):
        x = np.log(np.atleast_1d(np.asarray(s, dtype=np.float64)))
        out = np.stack([np.interp(x, ls, lm[:, m]) for m in range(lm.shape[1])], axis=-1)
        return np.exp(out).reshape(x.shape + shape)

    power = np.asarray(table["power"], dtype=np.float64).reshape(shape)
    return SpectralTable(error, power, source, len(ls), int(table.get("fields", 0)))


def stored_spectral_table(model) -> SpectralTable | None:
    """The table a :class:`~lattice.score.model.ScoreModel` carries: closed form for the exact
    free-field score, else the ``spectral`` table of its model.json (written by training);
    None for an older model (:func:`lattice.score.tables.spectral_table_of` then measures it)."""
    if isinstance(model.net, GaussianScore):
        A = np.asarray(model.net.theory.kernel(), dtype=np.float64)
        return gaussian_table(A, "closed form (exact free-field score)")
    table = model.meta.get("spectral")
    if table:
        return spectral_from_dict(table, str(table.get("source", "model.json")))
    return None


def gaussian_table(A: np.ndarray, source: str) -> SpectralTable:
    """The closed-form table of a Gaussian N(0, A⁻¹) (kernel A(p) [*shape]): M(σ, p) =
    σ²/(1 + σ² A(p)), the posterior variance of mode p, and C(p) = 1/A(p)."""

    def error(s):
        s2 = np.atleast_1d(np.asarray(s, dtype=np.float64)) ** 2
        s2 = s2.reshape(s2.shape + (1,) * A.ndim)
        return s2 / (1.0 + s2 * A)

    return SpectralTable(error, 1.0 / A, source)


def default_kernel(model) -> str:
    """The path kernel a run gets when its config names none: ``"spectral"`` when the model
    carries its table (every model trained since the table exists, and the exact free-field
    score), else ``"analytic"`` (an older model keeps the kernel its runs had)."""
    return "spectral" if stored_spectral_table(model) is not None else "analytic"


def spectral_variances(levels: np.ndarray, table: SpectralTable) -> np.ndarray:
    """v_k(p), k = 0 … K−1, of eq. (2): [K, *shape], floored at 10⁻⁶ Δ_k."""
    lo, hi = levels[:-1], levels[1:]
    delta = hi**2 - lo**2
    M = table.error(hi)
    b = (slice(None),) + (None,) * (M.ndim - 1)
    c = (delta / hi**2)[b]
    v = (lo**2 * delta / hi**2)[b] + c * c * M
    return np.maximum(v, 1e-6 * delta[b])


def color(z: jax.Array, var: jax.Array, ndim: int | None = None) -> jax.Array:
    """r = F⁻¹[√var · F[z]]: white ``z`` made a real field of circulant covariance
    F⁻¹ diag(var) F (``var`` even in p; eq. (3)). The transform runs over the last ``ndim``
    axes (default: all of ``var``'s); leading ones are channels, each with its own spectrum."""
    axes = tuple(range(-(var.ndim if ndim is None else ndim), 0))
    out = jnp.fft.ifftn(jnp.sqrt(var) * jnp.fft.fftn(z, axes=axes), axes=axes)
    return jnp.real(out).astype(z.dtype)


def log_det(var: np.ndarray) -> float:
    """Σ_p log var(p), the log-determinant of the circulant covariance (eq. (3))."""
    return float(np.sum(np.log(var)))


LOG2PI = math.log(2.0 * math.pi)
