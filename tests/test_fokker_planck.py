"""Fokker–Planck operator, its spectrum, and Euler–Maruyama walkers against it (single site)."""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse.linalg
import scipy.stats

from lattice.app.relaxation import plot_relaxation
from lattice.numerics import fokker_planck as fp

# One walker run shared by the statistical tests and the figure (a constant seed).
SEED = 314159
LAM = 0.5  # S = ½ φ⁴: purely quartic, nothing Gaussian about it
N_WALKERS = 20000
# Euler–Maruyama bias is O(ε): with S'' ≈ 6⟨φ²⟩ ≈ 3 at λ = ½ the width of the stationary law
# is off by ~εS''/4 ≈ 1e-3 relative, a CDF shift ≲ 3e-4, against a KS resolution
# 1.95/√n ≈ 1.4e-2 at n = 2e4; the rate of the slowest mode is off by ~εΛ₁/2 ≈ 1e-3 relative,
# against a statistical error of ~3 %. So ε = 1e-3 keeps the bias ≥ 40× below both
# resolutions, and 2500 steps of 2e4 walkers run in ~1 s.
STEP = 1e-3
TIMES = np.round(np.arange(0.0, 2.55, 0.1), 10)


@pytest.fixture(scope="module")
def result():
    return fp.compare(LAM, TIMES, N_WALKERS, STEP, SEED, p0_center=1.5, p0_width=0.1)


# ------------------------------------------------------------------------ the operator
@pytest.mark.parametrize("scheme", fp.SCHEMES)
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.9])
def test_discrete_equilibrium_is_exact(lam, scheme):
    grid = fp.make_grid(lam, 300)
    h = grid[1] - grid[0]
    m = fp.fp_operator(lam, grid, scheme).toarray()
    scale = np.abs(m).max()
    # probability conservation: every column sums to zero
    assert np.abs(m.sum(axis=0)).max() < 1e-12 * scale
    p_eq = np.exp(-fp.action(lam, grid))
    p_eq /= p_eq.sum() * h
    np.testing.assert_allclose(fp.equilibrium(lam, grid), p_eq, rtol=1e-12, atol=0)
    # M e^{−S} = 0 to round-off, row by row
    assert np.abs(m @ p_eq).max() < 1e-12 * scale * p_eq.max()
    # the null vector from a dense SVD (independent of the symmetrization) is e^{−S}/Z
    null = scipy.linalg.null_space(m, rcond=1e-10)
    assert null.shape[1] == 1
    v = null[:, 0] / (null[:, 0].sum() * h)
    assert np.abs(v - p_eq).max() < 1e-10 * p_eq.max()


def test_fp_solution_limits_and_mass():
    lam, c, w = LAM, 1.5, 0.1
    times = [0.0, 0.3, 1.0, 40.0]
    grid, p = fp.relax(lam, times, c, w, n_grid=600)
    h = grid[1] - grid[0]
    # mass: exact for M, round-off (~√N ε max ψ) through the eigenbasis
    np.testing.assert_allclose(p.sum(axis=1) * h, 1.0, rtol=1e-10)
    p0 = fp.initial_density(grid, c, w)
    assert np.abs(p[0] - p0).max() < 1e-10 * p0.max()
    # the cell averages are the Gaussian density up to O(h²) (h²/24 · f'')
    gauss = np.exp(-0.5 * ((grid - c) / w) ** 2) / (w * math.sqrt(2 * math.pi))
    assert np.abs(p0 - gauss).max() < 0.05 * h**2 * gauss.max() / w**2
    p_eq = fp.equilibrium(lam, grid)
    assert np.abs(p[-1] - p_eq).max() < 1e-10 * p_eq.max()
    # the eigen-decomposition against a Krylov/Taylor exponential of the sparse operator
    m = fp.fp_operator(lam, grid)
    for k in (1, 2):
        q = scipy.sparse.linalg.expm_multiply(m * times[k], p0)
        assert np.abs(q - p[k]).max() < 1e-8 * p[k].max()


def test_ornstein_uhlenbeck_spectrum():
    """λ = 0: S = φ², H = −∂² + φ² − 1, Λ_n = 2n; the scheme is second order in h."""
    ev = fp.eigenvalues(0.0, 4, n_grid=2000)
    assert abs(ev[0]) < 1e-8
    np.testing.assert_allclose(ev[1:], [2.0, 4.0, 6.0], rtol=1e-4)
    assert fp.spectral_gap(0.0, n_grid=2000) == pytest.approx(2.0, rel=1e-4)
    err = [abs(fp.spectral_gap(0.0, n_grid=n, half_width=6.5) - 2.0) for n in (200, 400, 800)]
    for a, b in zip(err[:-1], err[1:], strict=True):
        assert 3.8 < a / b < 4.2
    for scheme in fp.SCHEMES:
        assert fp.spectral_gap(0.0, 400, scheme=scheme) == pytest.approx(2.0, rel=1e-3)
    # ⟨φ⟩ of the FP solution decays exactly as e^{−2τ} for OU (up to O(h²))
    times = np.array([0.0, 0.5, 1.0, 2.0])
    grid, p = fp.relax(0.0, times, p0_center=1.0, p0_width=0.1, n_grid=1000)
    mean = p @ grid * (grid[1] - grid[0])
    # (Λ₁ is 2(1 − 4e-5) at this h, the cell-centred ⟨φ⟩ carries O(h²) too)
    np.testing.assert_allclose(mean, np.exp(-2.0 * times), rtol=5e-4)


def test_quartic_spectrum_converged():
    """λ = ½: the gap and the parity ordering (Λ₁ odd < Λ₂ even) are grid-independent."""
    coarse, fine = fp.eigenvalues(LAM, 4, n_grid=1000), fp.eigenvalues(LAM, 4, n_grid=4000)
    np.testing.assert_allclose(coarse[1:], fine[1:], rtol=1e-4)
    assert fine[1] == pytest.approx(1.935482, abs=2e-6)
    grid = fp.make_grid(LAM, 401)
    d, e = fp._symmetric(LAM, grid, "sqra")
    _, vecs = scipy.linalg.eigh_tridiagonal(d, e, select="i", select_range=(0, 2))
    np.testing.assert_allclose(vecs[::-1, 1], -vecs[:, 1], atol=1e-10)  # odd
    np.testing.assert_allclose(vecs[::-1, 2], vecs[:, 2], atol=1e-10)  # even


# ------------------------------------------------------------------------------ walkers
def test_walkers_deterministic_and_start():
    times = [0.0, 0.0014, 0.0026]  # rounds to steps 0, 1, 3
    a = fp.walkers(LAM, 1000, STEP, times, seed=7, p0_center=1.5, p0_width=0.1)
    b = fp.walkers(LAM, 1000, STEP, times, seed=7, p0_center=1.5, p0_width=0.1)
    c = fp.walkers(LAM, 1000, STEP, times, seed=8, p0_center=1.5, p0_width=0.1)
    assert a.shape == (3, 1000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # the start is N(1.5, 0.1²): 4σ bounds from the i.i.d. sampling error
    assert abs(a[0].mean() - 1.5) < 4 * 0.1 / math.sqrt(1000)
    assert abs(a[0].std() / 0.1 - 1) < 4 / math.sqrt(2 * 1000)
    # one step by hand: φ₁ − φ₀ + ε S'(φ₀) = √(2ε) ξ, with |ξ| < 7
    xi = (a[1] - a[0] + STEP * fp.force(LAM, a[0])) / math.sqrt(2 * STEP)
    assert np.abs(xi).max() < 7 and abs(xi.std() - 1) < 4 / math.sqrt(2 * 1000)
    with pytest.raises(ValueError):
        fp.walkers(-0.1, 10, STEP, [0.0, 1.0])


def test_walkers_follow_fokker_planck(result):
    r = result
    assert r["ks_critical"] == pytest.approx(1.95 / math.sqrt(N_WALKERS), rel=0.01)
    # every time at once: KS below the Bonferroni critical value for the family-wise rate
    # 1e-3 over the times, as `lattice check` does (ks_critical is one time's 1e-3 value)
    crit = scipy.stats.kstwo.ppf(1.0 - 1e-3 / len(r["ks"]), N_WALKERS)
    assert crit > r["ks_critical"] and np.all(r["ks"] < crit), (r["ks"], crit)
    # L1 of the histogram is at its multinomial floor: E|δ_b| summed, spread √Σ(1−2/π)p(1−p)/n
    assert np.all(np.abs(r["l1"] - r["l1_floor"]) < 5 * r["l1_floor_error"]), r["l1"]
    # the FP distance to equilibrium decays at the gap at late times
    late = r["times"] > 1.0
    slope = np.polyfit(r["times"][late], np.log(r["ks_eq_fp"][late]), 1)[0]
    assert -slope == pytest.approx(r["gap"], rel=0.02)


def test_walker_decay_rate_matches_gap(result):
    """γ of ⟨φ⟩(τ) = A e^{−γτ} from the walkers equals the odd-mode gap Λ₁ within 4σ
    (σ: delete-one jackknife over 200 blocks of walkers: z is t-distributed with 199 degrees of
    freedom, P(|z| > 4) = 9e-5 against the normal 6e-5; with 50 blocks it was 2e-4)."""
    r = result
    gap = fp.spectral_gap(LAM)
    assert r["gap"] == pytest.approx(gap, rel=1e-9)
    # the fit window's systematic (the same fit on the FP curve) is far below σ
    assert abs(r["rate_fp_fit"] - gap) < 0.1 * r["rate_error"]
    # σ is the expected size: ≈ 3 % at n = 2e4 over τ ∈ [0.6, 2.2]
    assert 0.01 < r["rate_error"] / gap < 0.06
    assert abs(r["rate_z"]) < 4.0, (r["rate"], r["rate_error"], gap)


def test_plot_relaxation_writes_png(result, tmp_path):
    path = tmp_path / "relax.png"
    plot_relaxation(result, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
