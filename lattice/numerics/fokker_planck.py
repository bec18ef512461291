"""Fokker–Planck picture of stochastic quantization for one site, checked against walkers.

The d = 0 limit of the kappa-form action (no hopping term) is a single degree of freedom with

    S(φ) = (1 − 2λ) φ² + λ φ⁴,      S'(φ) = 2(1 − 2λ) φ + 4λ φ³.

Langevin evolution in fictitious time τ, dφ = −S'(φ) dτ + √2 dW, carries the density P(φ, τ)
by the Fokker–Planck equation

    ∂P/∂τ = ∂/∂φ ( S'(φ) P + ∂P/∂φ ) = −∂J/∂φ,     J = −(S' P + ∂P/∂φ) = −e^{−S} ∂(e^{S} P)/∂φ,

whose stationary solution (J = 0) is P_eq = e^{−S}/Z. Under P = e^{−S/2} ψ the generator
becomes −H with the Schrödinger operator H = −∂² + S'²/4 − S''/2 ≥ 0, whose ground state
e^{−S/2} has energy 0. The spectrum 0 = Λ₀ < Λ₁ < Λ₂ < … of H (of −FP) gives the relaxation
rates; for an even action the eigenfunctions alternate in parity, so

* Λ₁ (odd mode, the *spectral gap*) is the slowest rate of all; ⟨φ⟩ (odd) decays as e^{−Λ₁τ}
  for any start that is not mirror-symmetric;
* Λ₂ (lowest even nonzero) governs a mirror-symmetric start, e.g. ⟨φ²⟩ from φ₀ = 0.

For λ = 0 (Ornstein–Uhlenbeck, S = φ², S' = 2φ) the rates are exactly Λ_n = 2n.

Discretization (``fp_operator``): cell-centred uniform grid φ_i = −L + (i + ½)h, i = 0..N−1,
h = 2L/N, zero-flux walls at ±L. A finite-volume master equation with nearest-neighbour rates

    dP_i/dτ = Σ_{j=i±1} (w_{j→i} P_j − w_{i→j} P_i),   w_{i→j} = h⁻² exp(−(S_j − S_i)/2)

(the "square-root approximation", Lie, Fackeldey, Weber, SIAM J. Matrix Anal. Appl. 34 (2013)
738; ``scheme="sqra"``, default), or the Scharfetter–Gummel flux (IEEE Trans. Electron Devices
16 (1969) 64; ``scheme="sg"``) w_{i→j} = h⁻² B(S_j − S_i), B(x) = x/(eˣ − 1). Both satisfy
detailed balance w_{i→j} e^{−S_i} = w_{j→i} e^{−S_j} exactly (B(−x) = eˣ B(x)), so the
discrete net flux vanishes on P_i ∝ e^{−S_i}: the discrete equilibrium is *exactly*
e^{−S(φ_i)}, with no O(h²) error. Expanding the flux h(w_{i→i+1}P_i − w_{i+1→i}P_{i+1}) for
small h gives J = −(S'P + P') + O(h²), so both converge to the FP equation at second order
(the tests check Λ_n → 2n for λ = 0 at rate h²). Columns of M sum to zero: probability is
conserved. Detailed balance makes M similar to a symmetric matrix,

    A = Π^{−1/2} M Π^{1/2},  Π = diag(e^{−S_i}),   A_{i,i±1} = h⁻² (sqra) or h⁻² (x/2)/sinh(x/2),

(x = S_{i±1} − S_i), which is a discrete −H; it is diagonalized with
``scipy.linalg.eigh_tridiagonal`` for stable eigenvalues and for P(τ) = Π^{1/2} V e^{−Λτ} Vᵀ
Π^{−1/2} P(0).

Densities on the grid are per unit φ: Σ_i P_i h = 1. The CDF at the faces is the cumulative
sum; between faces it is linear (exact for the piecewise-constant density of the FV scheme).

Walkers (``walkers``): Euler–Maruyama φ ← φ − ε S'(φ) + √(2ε) ξ, vectorized over walkers,
``lax.scan`` over the recording times with an inner ``fori_loop`` over steps. The noise of
step t is ``noise.normal(fold_in(k_step, t), (n_walkers,))`` with (k_init, k_step) =
split(key(seed)): deterministic in (seed, n_walkers, ε). The stationary law of the walkers
differs from e^{−S} at O(ε) (for a Gaussian mode of precision a the variance is
1/(a(1 − εa/2))), and the relaxation rate of a Gaussian mode is −ln(1 − εa)/ε = a(1 + εa/2 + …).

Decay rate from walkers (``compare``): m(τ) = ⟨φ⟩(τ) − ⟨φ⟩_eq from an off-centre start,
fitted to A e^{−γτ} by weighted least squares over a window [τ_lo, τ_hi]. The fit is in m, not
in ln|m|, so there is no −σ²/(2m²) bias from the logarithm of a noisy mean; for |m| ≫ σ it is
the same as the weighted log fit. The window opens where the faster odd modes (Λ₃, …) are below
a relative 1e-3 of the Λ₁ term in the FP prediction, and closes where the predicted |m| drops
below 3 standard errors of the walker mean. γ's error is a delete-one jackknife over blocks of
walkers (walkers are independent, and the jackknife keeps the correlation between times, which
are measured on the same walkers). The same fit applied to the FP curve gives the window's
systematic, which is reported (``rate_fp_fit``) and is ≪ the statistical error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.special
import scipy.stats
from jax import lax
from scipy.linalg import eigh_tridiagonal

from lattice.numerics import noise

__all__ = [
    "action",
    "force",
    "make_grid",
    "fp_operator",
    "equilibrium",
    "initial_density",
    "relax",
    "eigenvalues",
    "spectral_gap",
    "walkers",
    "compare",
]

SCHEMES = ("sqra", "sg")
EDGE_ACTION = 40.0  # S(±L) − min S: e^{−40} ≈ 4e-18 of the mass lies beyond the walls
KS_ALPHA = 1e-3


# ----------------------------------------------------------------------------- the action
def _check_lam(lam: float) -> float:
    lam = float(lam)
    if not lam >= 0.0:
        raise ValueError(f"lam must be >= 0 for a normalizable e^-S, got {lam}")
    return lam


def action(lam: float, phi):
    """S(φ) = (1 − 2λ) φ² + λ φ⁴ (numpy or jax arrays).

    >>> float(action(0.5, 2.0))  # 0·4 + 0.5·16
    8.0
    """
    return (1.0 - 2.0 * lam) * phi**2 + lam * phi**4


def force(lam: float, phi):
    """S'(φ) = 2(1 − 2λ) φ + 4λ φ³ (the Langevin drift is −S')."""
    return 2.0 * (1.0 - 2.0 * lam) * phi + 4.0 * lam * phi**3


def _action_min(lam: float) -> float:
    a = 1.0 - 2.0 * lam
    return 0.0 if a >= 0.0 else -(a * a) / (4.0 * lam)


def _edge(lam: float, edge_action: float) -> float:
    """L > 0 with S(L) = min S + edge_action (largest root of λu² + au − T = 0, u = L²)."""
    a, t = 1.0 - 2.0 * lam, _action_min(lam) + edge_action
    if a > 0.0:
        u = 2.0 * t / (a + math.sqrt(a * a + 4.0 * lam * t))
    else:
        u = (-a + math.sqrt(a * a + 4.0 * lam * t)) / (2.0 * lam)
    return math.sqrt(u)


# ------------------------------------------------------------------------------- the grid
def make_grid(
    lam: float,
    n_grid: int = 800,
    half_width: float | None = None,
    p0_center: float = 0.0,
    p0_width: float = 0.0,
) -> np.ndarray:
    """Cell centres φ_i = −L + (i + ½) h, h = 2L/N, of a uniform grid on [−L, L].

    By default L is where S(±L) − min S = 40 (the equilibrium mass outside is ~1e-18), widened
    to |p0_center| + 10 p0_width so that the initial Gaussian fits. (λ = 0.5: L ≈ 3.0;
    λ = 0: L ≈ 6.3.)
    """
    lam = _check_lam(lam)
    if n_grid < 3:
        raise ValueError(f"n_grid must be >= 3, got {n_grid}")
    if half_width is None:
        half_width = max(_edge(lam, EDGE_ACTION), abs(p0_center) + 10.0 * p0_width)
    if not half_width > 0:
        raise ValueError(f"half_width must be > 0, got {half_width}")
    h = 2.0 * half_width / n_grid
    return -half_width + (np.arange(n_grid) + 0.5) * h


def _spacing(grid) -> tuple[np.ndarray, float, np.ndarray]:
    """(grid, h, faces) of a uniform cell-centred grid."""
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 3:
        raise ValueError("grid must be a 1-D array of at least 3 cell centres")
    h = float(grid[1] - grid[0])
    if not h > 0 or not np.allclose(np.diff(grid), h, rtol=1e-9, atol=0.0):
        raise ValueError("grid must be uniform and increasing")
    faces = np.concatenate([grid - 0.5 * h, [grid[-1] + 0.5 * h]])
    return grid, h, faces


def _bernoulli(x: np.ndarray) -> np.ndarray:
    """B(x) = x / (eˣ − 1), B(0) = 1."""
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < 1e-8
    safe = np.where(small, 1.0, x)
    return np.where(small, 1.0 - 0.5 * x, safe / np.expm1(safe))


def _rates(lam: float, grid, scheme: str):
    """(up, down, off, h): w_{i→i+1}, w_{i+1→i} and the symmetrized off-diagonal A_{i,i+1}."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    grid, h, _ = _spacing(grid)
    ds = np.diff(action(_check_lam(lam), grid))
    if scheme == "sqra":
        up, down = np.exp(-0.5 * ds), np.exp(0.5 * ds)
        off = np.ones_like(ds)
    else:
        up, down = _bernoulli(ds), _bernoulli(-ds)
        off = np.sqrt(up * down)  # = (x/2)/sinh(x/2), the geometric mean of the two rates
    return up / h**2, down / h**2, off / h**2, h


def fp_operator(lam: float, grid, scheme: str = "sqra") -> scipy.sparse.csr_array:
    """The tridiagonal generator M with dP/dτ = M P (module docstring for the scheme).

    M_{i+1,i} = w_{i→i+1}, M_{i,i+1} = w_{i+1→i}, M_{ii} = −Σ_j w_{i→j}; no rates through the
    walls (zero flux). Columns sum to zero; M e^{−S} = 0 exactly (detailed balance).
    """
    up, down, _, _ = _rates(lam, grid, scheme)
    n = up.size + 1
    diag = np.zeros(n)
    diag[:-1] -= up
    diag[1:] -= down
    return scipy.sparse.diags_array([up, diag, down], offsets=[-1, 0, 1], shape=(n, n)).tocsr()


def equilibrium(lam: float, grid) -> np.ndarray:
    """The discrete stationary density e^{−S(φ_i)}/Z, Z = h Σ_i e^{−S(φ_i)}."""
    grid, h, _ = _spacing(grid)
    s = action(_check_lam(lam), grid)
    p = np.exp(-(s - s.min()))
    return p / (p.sum() * h)


def initial_density(grid, p0_center: float, p0_width: float) -> np.ndarray:
    """Cell averages of the N(p0_center, p0_width²) density (exact mass per cell)."""
    grid, h, faces = _spacing(grid)
    if not p0_width > 0:
        raise ValueError(f"p0_width must be > 0, got {p0_width}")
    z = (faces - p0_center) / p0_width
    # lower tail from ndtr, upper tail from the survival function: no cancellation 1 − 1
    lo = scipy.special.ndtr(z[1:]) - scipy.special.ndtr(z[:-1])
    hi = scipy.special.ndtr(-z[:-1]) - scipy.special.ndtr(-z[1:])
    return np.where(z[:-1] > 0, hi, lo) / h


# --------------------------------------------------------------------------- the spectrum
def _symmetric(lam: float, grid, scheme: str):
    """(diagonal, off-diagonal) of −A = −Π^{−1/2} M Π^{1/2}, symmetric tridiagonal, ≥ 0."""
    up, down, off, _ = _rates(lam, grid, scheme)
    diag = np.zeros(up.size + 1)
    diag[:-1] += up
    diag[1:] += down
    return diag, -off


def _spectrum(lam: float, grid, scheme: str):
    """All eigenpairs of −A and Π^{1/2} = e^{−(S − min S)/2}."""
    d, e = _symmetric(lam, grid, scheme)
    # implicit QR ('stev'): orthogonal to ~1e-15, where MRRR ('stemr') gives only ~1e-13
    vals, vecs = eigh_tridiagonal(d, e, lapack_driver="stev")
    s = action(lam, np.asarray(grid, dtype=np.float64))
    s = s - s.min()
    # the ground state of −A is Π^{1/2} exactly (A Π^{1/2} = Π^{−1/2} M e^{−S} = 0): use it
    ground = np.exp(-0.5 * s)
    vals[0], vecs[:, 0] = 0.0, ground / np.linalg.norm(ground)
    return vals, vecs, s


def relax(
    lam: float,
    times: Sequence[float],
    p0_center: float = 1.0,
    p0_width: float = 0.1,
    n_grid: int = 800,
    half_width: float | None = None,
    scheme: str = "sqra",
) -> tuple[np.ndarray, np.ndarray]:
    """P(φ_i, τ) from the cell-averaged N(p0_center, p0_width²) start.

    P(τ) = Π^{1/2} V e^{−Λτ} Vᵀ Π^{−1/2} P(0), with −A = V Λ Vᵀ (module docstring). The
    transform to ψ = Π^{−1/2} P is done in log space; round-off in P_i is ~1e-16 ·
    e^{(S(p0_center) − S(φ_i))/2} relative to max P(0), negligible unless the start sits far
    up the potential.

    Returns:
        ``(grid, P)``, P of shape ``[len(times), n_grid]``, densities (Σ_i P_i h = 1).
    """
    lam = _check_lam(lam)
    times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if np.any(times < 0):
        raise ValueError("times must be >= 0")
    grid = make_grid(lam, n_grid, half_width, p0_center, p0_width)
    p0 = initial_density(grid, p0_center, p0_width)
    vals, vecs, s = _spectrum(lam, grid, scheme)
    with np.errstate(divide="ignore"):
        psi0 = np.exp(np.log(p0) + 0.5 * s)
    coef = vecs.T @ psi0
    p = (np.exp(-np.outer(times, vals)) * coef) @ vecs.T * np.exp(-0.5 * s)
    return grid, p


def eigenvalues(
    lam: float,
    k: int = 4,
    n_grid: int = 2000,
    half_width: float | None = None,
    scheme: str = "sqra",
) -> np.ndarray:
    """The k smallest eigenvalues Λ₀ ≈ 0 < Λ₁ < … of −M, ascending.

    For the even action here, Λ₁ is the odd mode (the gap: ⟨φ⟩ decays as e^{−Λ₁τ}, which is
    what ``compare`` measures from the walkers) and Λ₂ the lowest even nonzero one (the rate
    for a mirror-symmetric start). λ = 0: Λ_n = 2n + O(h²).
    """
    d, e = _symmetric(_check_lam(lam), make_grid(lam, n_grid, half_width), scheme)
    return eigh_tridiagonal(d, e, eigvals_only=True, select="i", select_range=(0, k - 1))


def spectral_gap(
    lam: float, n_grid: int = 2000, half_width: float | None = None, scheme: str = "sqra"
) -> float:
    """Λ₁, the lowest nonzero eigenvalue of −M: the rate of the slowest (odd) mode."""
    return float(eigenvalues(lam, 2, n_grid, half_width, scheme)[1])


# ------------------------------------------------------------------------------- walkers
def _steps(times, step_size: float) -> np.ndarray:
    times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if times.ndim != 1 or np.any(times < 0) or np.any(np.diff(times) < 0):
        raise ValueError("times must be a non-decreasing 1-D sequence of values >= 0")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    return np.rint(times / step_size).astype(np.int64)


@partial(jax.jit, static_argnames=("n_walkers",))
def _walk(key, lam, step_size, center, width, bounds, n_walkers: int):
    dtype = jnp.result_type(float)
    k_init, k_step = jax.random.split(key)
    phi0 = center + width * noise.normal(k_init, (n_walkers,), dtype)
    amp = jnp.sqrt(2.0 * step_size)

    def step(t, phi):
        xi = noise.normal(jax.random.fold_in(k_step, t), (n_walkers,), dtype)
        return phi - step_size * force(lam, phi) + amp * xi

    def segment(phi, b):
        phi = lax.fori_loop(b[0], b[1], step, phi)
        return phi, phi

    _, out = lax.scan(segment, phi0, bounds)
    return out


def walkers(
    lam: float,
    n_walkers: int,
    step_size: float,
    times: Sequence[float],
    seed: int = 0,
    p0_center: float = 1.0,
    p0_width: float = 0.1,
) -> np.ndarray:
    """Euler–Maruyama walkers φ ← φ − ε S'(φ) + √(2ε) ξ from N(p0_center, p0_width²).

    ``times`` are rounded to the nearest step (round(τ/ε) steps). Runs in the default JAX
    float dtype (float64 with ``jax_enable_x64``).

    Returns:
        positions ``[len(times), n_walkers]`` at the recorded times.
    """
    lam = _check_lam(lam)
    steps = _steps(times, step_size)
    if n_walkers < 1:
        raise ValueError(f"n_walkers must be >= 1, got {n_walkers}")
    if steps[-1] >= 2**31:
        raise ValueError("too many steps for the int32 step counter")
    bounds = np.stack([np.concatenate([[0], steps[:-1]]), steps], axis=1).astype(np.int32)
    out = _walk(
        jax.random.key(seed),
        lam,
        float(step_size),
        float(p0_center),
        float(p0_width),
        jnp.asarray(bounds),
        int(n_walkers),
    )
    return np.asarray(out)


# ------------------------------------------------------------------------------ compare
def _cdf_faces(p: np.ndarray, h: float) -> np.ndarray:
    """CDF at the N + 1 faces, [..., N] → [..., N + 1]."""
    c = np.cumsum(p * h, axis=-1)
    return np.concatenate([np.zeros(c.shape[:-1] + (1,)), c], axis=-1)


def _ks(x: np.ndarray, faces: np.ndarray, cdf: np.ndarray) -> float:
    """sup_φ |F_n(φ) − F(φ)|, F piecewise linear between faces."""
    x = np.sort(x)
    n = x.size
    f = np.interp(x, faces, cdf, left=0.0, right=1.0)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))


def _l1(x: np.ndarray, edges: np.ndarray, prob: np.ndarray) -> float:
    """∫|f_hist − p| = Σ_b |n_b/n − p_b| (+ the walkers' mass outside the edges)."""
    counts, _ = np.histogram(x, bins=edges)
    frac = counts / x.size
    return float(np.abs(frac - prob).sum() + (1.0 - frac.sum()))


def _fit_exp(t: np.ndarray, m: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least squares of m = A e^{−γt} (Gauss–Newton from the log-linear fit)."""
    sign = np.sign(m.sum()) or 1.0
    y = sign * m
    pos = y > 0
    if pos.sum() >= 2:
        g0, la0 = np.polyfit(t[pos], np.log(y[pos]), 1, w=np.sqrt(w[pos]) * y[pos])
        amp, gamma = math.exp(la0), -g0
    else:
        amp, gamma = max(float(y.max()), 1e-300), 1.0
    for _ in range(50):
        e = np.exp(-gamma * t)
        r = y - amp * e
        jac = np.stack([e, -amp * t * e], axis=1)
        jw = jac * w[:, None]
        step = np.linalg.solve(jac.T @ jw, jw.T @ r)
        amp, gamma = amp + step[0], gamma + step[1]
        if abs(step[1]) < 1e-13 * max(1.0, abs(gamma)):
            break
    return sign * amp, gamma


def compare(
    lam: float = 0.5,
    times: Sequence[float] | None = None,
    n_walkers: int = 20000,
    step_size: float = 0.001,
    seed: int = 0,
    p0_center: float = 1.5,
    p0_width: float = 0.1,
    n_grid: int = 800,
    n_bins: int = 160,
    n_jack: int = 200,
    min_snr: float = 3.0,
    scheme: str = "sqra",
) -> dict[str, Any]:
    """Walkers against the Fokker–Planck solution at the same (step-rounded) times.

    Per time: ``ks`` (walkers vs the FP CDF; the KS critical value at α = 1e-3 is
    ``ks_critical``), ``l1`` (∫|f_hist − P| on ``n_bins`` grid-aligned bins; ``l1_floor`` is its
    expected value from multinomial noise alone, Σ_b √(2p_b(1 − p_b)/(πn)), ``l1_floor_error``
    its spread √(Σ_b (1 − 2/π) p_b(1 − p_b)/n), bins taken as independent), the distances to
    equilibrium ``ks_eq_walkers``/``ks_eq_fp`` and ``l1_eq_walkers``/``l1_eq_fp``, and the means
    ``mean_walkers ± mean_error`` and ``mean_fp``. ``equilibrium_ks``/``equilibrium_l1``: the
    last time's walkers against e^{−S}/Z.

    Rates: ``gap`` = Λ₁ from ``eigenvalues`` on a fine grid, ``eigenvalues`` the first four;
    ``rate ± rate_error`` is γ of ⟨φ⟩ − ⟨φ⟩_eq = A e^{−γτ} fitted over ``fit_window`` (module
    docstring), ``rate_fp_fit`` the same fit on the FP means (the window systematic), and
    ``rate_z`` = (rate − gap)/rate_error. Use an off-centre start (p0_center ≠ 0).
    """
    lam = _check_lam(lam)
    if times is None:
        times = np.round(np.arange(0.0, 2.55, 0.1), 10)
    steps = _steps(times, step_size)
    tt = steps * step_size
    pos = walkers(lam, n_walkers, step_size, tt, seed, p0_center, p0_width)
    grid, p = relax(lam, tt, p0_center, p0_width, n_grid, scheme=scheme)
    _, h, faces = _spacing(grid)
    p_eq = equilibrium(lam, grid)
    cdf, cdf_eq = _cdf_faces(p, h), _cdf_faces(p_eq, h)

    per_bin = max(1, round(grid.size / n_bins))
    cut = np.arange(0, grid.size + 1, per_bin)
    if cut[-1] != grid.size:
        cut = np.append(cut, grid.size)
    edges = faces[cut]  # bins are whole cells, so the FP bin masses are exact
    bin_prob = np.diff(cdf[:, cut], axis=1)
    bin_eq = np.diff(cdf_eq[cut])

    n = n_walkers
    ks = np.array([_ks(pos[k], faces, cdf[k]) for k in range(tt.size)])
    l1 = np.array([_l1(pos[k], edges, bin_prob[k]) for k in range(tt.size)])
    bin_var = np.clip(bin_prob * (1.0 - bin_prob), 0.0, None) / n
    l1_floor = np.sqrt(2.0 / math.pi * bin_var).sum(axis=1)  # E|δ_b| for Gaussian δ_b
    l1_floor_error = np.sqrt((1.0 - 2.0 / math.pi) * bin_var.sum(axis=1))
    ks_eq_walkers = np.array([_ks(pos[k], faces, cdf_eq) for k in range(tt.size)])
    l1_eq_walkers = np.array([_l1(pos[k], edges, bin_eq) for k in range(tt.size)])
    ks_eq_fp = np.abs(cdf - cdf_eq).max(axis=1)
    l1_eq_fp = np.abs(p - p_eq).sum(axis=1) * h

    # ⟨φ⟩(τ) and its decay: odd-mode amplitudes a_n of m(τ) = Σ a_n e^{−Λ_n τ} for the window
    vals, vecs, s = _spectrum(lam, grid, scheme)
    p0 = initial_density(grid, p0_center, p0_width)
    with np.errstate(divide="ignore"):
        coef = vecs.T @ np.exp(np.log(p0) + 0.5 * s)
    amps = coef * ((grid * np.exp(-0.5 * s) * h) @ vecs)
    mean_eq = float(np.sum(grid * p_eq) * h)
    mean_fp = p @ grid * h - mean_eq
    mean_w = pos.mean(axis=1) - mean_eq
    mean_err = pos.std(axis=1, ddof=1) / math.sqrt(n)
    lead = 1 + int(np.argmax(np.abs(amps[1:]) > 1e-12 * np.abs(amps[1:]).max()))
    rest = np.abs(
        (np.exp(-np.outer(tt, vals[lead + 1 :] - vals[lead])) * amps[lead + 1 :]).sum(axis=1)
    ) / abs(amps[lead])
    sigma_eq = math.sqrt(float(np.sum((grid - mean_eq) ** 2 * p_eq) * h) / n)
    win = (rest < 1e-3) & (np.abs(mean_fp) > min_snr * np.maximum(mean_err, sigma_eq))
    if win.sum() < 3:
        raise ValueError("fewer than 3 times in the fit window: give more times or walkers")
    t_w = tt[win]
    w = 1.0 / mean_err[win] ** 2
    amplitude, rate = _fit_exp(t_w, mean_w[win], w)
    _, rate_fp_fit = _fit_exp(t_w, mean_fp[win], w)
    # delete-one jackknife over blocks of walkers (the positions at all times move together)
    blocks = np.array_split(np.arange(n), n_jack)
    sums = np.stack([pos[win][:, b].sum(axis=1) for b in blocks])
    sizes = np.array([b.size for b in blocks])
    total = sums.sum(axis=0)
    jack = np.array(
        [_fit_exp(t_w, (total - sums[k]) / (n - sizes[k]) - mean_eq, w)[1] for k in range(n_jack)]
    )
    rate_error = float(math.sqrt((n_jack - 1) / n_jack * np.sum((jack - jack.mean()) ** 2)))

    ev = eigenvalues(lam, 4, scheme=scheme)
    gap = float(ev[lead])
    return {
        "lam": lam,
        "step_size": float(step_size),
        "n_walkers": int(n),
        "seed": int(seed),
        "p0_center": float(p0_center),
        "p0_width": float(p0_width),
        "times": tt,
        "grid": grid,
        "P": p,
        "P_eq": p_eq,
        "positions": pos,
        "bin_edges": edges,
        "ks": ks,
        "ks_alpha": KS_ALPHA,
        "ks_critical": float(scipy.stats.kstwo.ppf(1.0 - KS_ALPHA, n)),
        "l1": l1,
        "l1_floor": l1_floor,
        "l1_floor_error": l1_floor_error,
        "ks_eq_walkers": ks_eq_walkers,
        "ks_eq_fp": ks_eq_fp,
        "l1_eq_walkers": l1_eq_walkers,
        "l1_eq_fp": l1_eq_fp,
        "equilibrium_ks": float(ks_eq_walkers[-1]),
        "equilibrium_l1": float(l1_eq_walkers[-1]),
        "mean_walkers": mean_w,
        "mean_error": mean_err,
        "mean_fp": mean_fp,
        "mean_eq": mean_eq,
        "eigenvalues": ev,
        "gap": gap,
        "rate": float(rate),
        "rate_amplitude": float(amplitude),
        "rate_error": rate_error,
        "rate_fp_fit": float(rate_fp_fit),
        "rate_z": float((rate - gap) / rate_error),
        "fit_window": (float(t_w[0]), float(t_w[-1])),
        "fit_mask": win,
    }


# -------------------------------------------------------------------------------- figure
