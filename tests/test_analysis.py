"""The Γ-method (lattice.numerics.analysis) on AR(1) series with exact τ_int, its coverage, replica,
pyerrors as an oracle, the jackknife, degenerate data, the cosh effective mass and Kish's ESS.

Statistical assertions use |estimate − exact| < 4σ with σ from the analysis itself.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from statistics import NormalDist

import jax
import numpy as np
import pytest

from lattice.numerics.analysis import (
    GammaResult,
    ar1,
    ar1_tau_int,
    effective_mass,
    family_z,
    gamma_method,
    gamma_method_derived,
    independence_acceptance,
    jackknife,
    kish_ess,
)

jax.config.update("jax_enable_x64", True)

Z = 4.0


def binder(m2, m4):
    return 1.0 - m4 / (3.0 * m2 * m2)


def ratio(a, b):
    return a / b


# ------------------------------------------------------------------------------ exact AR(1)
@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_ar1_tau_int_value_and_error(phi, seed):
    n = 100_000
    r = gamma_method(ar1(seed, n, phi))
    tau = ar1_tau_int(phi)
    # the measurement issue asks for 3 tau_int_error here (stricter than the suite's 4σ)
    assert abs(r.tau_int - tau) < 3 * r.tau_int_error, (r.tau_int, r.tau_int_error, tau)
    assert abs(r.value) < Z * r.error  # exact mean 0
    # exact error of the mean of a unit-variance AR(1) series, up to O(τ/N)
    exact_error = math.sqrt(2.0 * tau / n)
    assert abs(r.error - exact_error) < Z * r.error_of_error, (r.error, exact_error)
    assert 4 * r.error_of_error < 0.15 * exact_error  # the test is sharp enough to matter
    assert not r.windowing_failed
    if r.tau_int_of_W[r.window] > 0.5:  # no clamping at ½: the curve passes through τ_int
        assert r.tau_int_of_W[r.window] == pytest.approx(r.tau_int, rel=1e-12)
    assert r.rho[0] == 1.0 and r.rho.size == n // 2 + 1


def test_coverage_ar1(seed):
    """|mean|/error < 1 in 68.3% of 1000 independent φ = 0.8 series (4 binomial σ = 0.06);
    a naive i.i.d. error (3× too small) would give ~26%."""
    sets = ar1(seed, 2000, 0.8, chains=1000)
    z = np.array([(lambda r: r.value / r.error)(gamma_method(x)) for x in sets])
    p = math.erf(1 / math.sqrt(2))
    frac = float(np.mean(np.abs(z) < 1.0))
    assert abs(frac - p) < Z * math.sqrt(p * (1 - p) / z.size), frac


def test_replica(seed):
    phi, n = 0.8, 25_000
    r = gamma_method(ar1(seed, n, phi, chains=4))
    tau = ar1_tau_int(phi)
    assert r.chains == 4 and r.n == 4 * n
    assert abs(r.tau_int - tau) < Z * r.tau_int_error
    assert abs(r.value) < Z * r.error
    assert abs(r.error - math.sqrt(2 * tau / r.n)) < Z * r.error_of_error


def test_replica_means_enter_the_error(seed):
    """Fluctuations are about the global mean: offset chains inflate the error."""
    x = ar1(seed, 2000, 0.5, chains=4)
    centred = gamma_method(x)
    shifted = gamma_method(x + np.array([[0.0], [1.0], [0.0], [1.0]]))
    assert shifted.error > 3 * centred.error


def test_one_dimensional_and_ragged_input(seed):
    x = ar1(seed, 3000, 0.5)
    a, b = gamma_method(x[0]), gamma_method(x)
    assert (a.value, a.error, a.tau_int, a.window) == (b.value, b.error, b.tau_int, b.window)
    ragged = gamma_method([x[0, :1000], x[0, 1000:]])
    assert ragged.chains == 2 and ragged.n == 3000 and ragged.rho.size == 1000 // 2 + 1


def test_windowing_failure_is_flagged(seed):
    """Many short, nearly frozen chains: g(W) stays positive up to W_max = n/2."""
    r = gamma_method(ar1(seed, 20, 0.999, chains=16))
    assert r.windowing_failed and r.window == 10 == r.rho.size - 1
    assert np.isfinite(r.error) and r.error > 0


def test_no_autocorrelation_assumed(seed):
    x = ar1(seed, 1000, 0.5)[0]
    r = gamma_method(x, S=0)
    assert r.window == 0 and r.tau_int == pytest.approx(0.5, rel=1e-12)
    assert r.error == pytest.approx(x.std() * math.sqrt((1 + 1 / x.size) / x.size), rel=1e-12)


def test_constant_data_give_zero_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = gamma_method(np.full((3, 100), 0.1))
        assert (r.value, r.error, r.error_of_error, r.tau_int, r.window) == (0.1, 0, 0, 0.5, 0)
        assert np.all(np.isfinite(r.rho)) and np.all(r.tau_int_of_W == 0.5)
        d = gamma_method_derived(ratio, [np.full((2, 50), 2.0), np.full((2, 50), 4.0)])
        assert (d.value, d.error, d.tau_int) == (0.5, 0.0, 0.5)
        assert jackknife(ratio, [np.full((2, 50), 2.0), np.full((2, 50), 4.0)]) == (0.5, 0.0)


def test_bad_input():
    with pytest.raises(ValueError):
        gamma_method(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError):
        gamma_method([1.0, np.nan, 2.0])
    with pytest.raises(ValueError):
        gamma_method([1.0, 2.0, 3.0], S=-1)
    with pytest.raises(ValueError):
        gamma_method_derived(ratio, [np.ones((2, 10)), np.ones((2, 11))])


def test_as_dict(seed):
    r = gamma_method(ar1(seed, 500, 0.3))
    d = r.as_dict()
    assert list(d) == ["value", "error", "tau_int", "tau_int_error", "window"]
    assert all(type(d[k]) is float for k in ("value", "error", "tau_int", "tau_int_error"))
    assert type(d["window"]) is int and d["window"] == r.window
    assert isinstance(gamma_method([1.0, 2.0]), GammaResult)


@pytest.mark.parametrize("T", [16, 7])
def test_effective_mass_recovers_the_mass_of_a_cosh(T):
    m, t = 0.3, np.arange(T)
    meff = effective_mass(2.5 * np.cosh(m * (t - T / 2)), T)
    assert meff.shape == (T // 2,)
    np.testing.assert_allclose(meff, m, rtol=0, atol=1e-10)


def test_effective_mass_is_nan_where_undefined():
    G = np.array([1.0, 2.0, -1.0, 0.5, 0.4, 0.5])  # rising, then negative
    meff = effective_mass(G)
    assert np.isnan(meff).all()
    assert effective_mass([1.0, 1.0, 1.0, 1.0])[0] == 0.0  # flat: m = 0


def test_kish_ess():
    """(Σ w)²/Σ w²: N for equal weights (any scale), 1 for one nonzero weight."""
    assert kish_ess(np.full(40, 3.5)) == pytest.approx(40.0, rel=1e-15)
    assert kish_ess(np.array([0.0, 2.0, 0.0])) == 1.0
    w = np.random.default_rng(0).exponential(size=500)
    assert kish_ess(w) == w.sum() ** 2 / np.sum(w * w)


@pytest.mark.parametrize("s", [0.5, 1.0, 1.5])
def test_independence_acceptance_of_log_normal_weights(s):
    """Log-normal weights of variance s²: the stationary independence-MH acceptance is
    exactly 2Φ(−s/√2) (log w(y) − log w(x) ~ N(−s², 2s²) with x ~ π, y ~ q). The estimate
    over 30 independent batches of 2000 draws agrees within 4σ of its batch spread."""
    rng = np.random.default_rng(int(10 * s))
    est = np.array([independence_acceptance(rng.normal(3.0, s, 2000)) for _ in range(30)])
    exact = 2 * NormalDist().cdf(-s / math.sqrt(2))
    z = (est.mean() - exact) / (est.std(ddof=1) / math.sqrt(est.size))
    assert abs(z) < Z, (est.mean(), exact, z)


def test_independence_acceptance_limits():
    """Equal weights accept always; one proposal carrying all the weight never lets go of it;
    NaN entries are dropped, −∞ is a weight of zero, and fewer than two are no estimate."""
    assert independence_acceptance(np.full(50, -7.0)) == pytest.approx(1.0, rel=1e-14)
    assert independence_acceptance(np.array([0.0, -800.0, -900.0])) < 1e-300
    lw = np.array([0.1, np.nan, -0.3, -np.inf, 0.2])
    assert independence_acceptance(lw) == independence_acceptance(lw[[0, 2, 3, 4]])
    assert independence_acceptance(lw[[0, 2, 4]]) * 2 == pytest.approx(
        independence_acceptance(lw[[0, 2, 3, 4]]) * 3
    )  # a zero weight adds no pair weight, one more proposal to each x
    assert math.isnan(independence_acceptance(np.array([1.0, np.nan])))


# ------------------------------------------------------------------------------ pyerrors
def _assert_matches_pyerrors(r, obs, name: str = "ens") -> None:
    """value, error, error of the error and window agree to round-off; τ_int after the
    documented convention change: pyerrors reports τ_raw (1 + (2W+1)/N)/(1 + 1/N), we report
    the τ_int of the bias-corrected Γ, τ_raw (1 + (2W+1)/N)/(1 + 2τ_raw/N)."""
    obs.gamma_method(S=1.5)
    N, W = r.n, r.window
    assert W == obs.e_windowsize[name]
    assert r.value == pytest.approx(obs.value, rel=1e-12, abs=1e-15)
    assert r.error == pytest.approx(obs.dvalue, rel=1e-10)
    assert r.error_of_error == pytest.approx(obs.ddvalue, rel=1e-10)
    tau_raw = obs.e_tauint[name] * (1 + 1 / N) / (1 + (2 * W + 1) / N)
    assert r.tau_int == pytest.approx(
        tau_raw * (1 + (2 * W + 1) / N) / (1 + 2 * tau_raw / N), rel=1e-10
    )
    # eq. (42) on the corrected vs the raw τ_int: equal up to O(τ/N)
    assert r.tau_int_error == pytest.approx(obs.e_dtauint[name], rel=50 * r.tau_int / N)


def _centre_replica(x: np.ndarray, mean: float) -> np.ndarray:
    """Give every replica the same mean, where pyerrors' per-replica centring and our
    global-mean centring coincide."""
    return x - x.mean(axis=-1, keepdims=True) + mean


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_pyerrors_one_chain(phi, seed):
    pe = pytest.importorskip("pyerrors")
    x = ar1(seed, 5000, phi)[0] + 0.7
    _assert_matches_pyerrors(gamma_method(x), pe.Obs([x], ["ens"]))


def test_pyerrors_replica(seed):
    pe = pytest.importorskip("pyerrors")
    x = ar1(seed, 3000, 0.8, chains=4)
    names = [f"ens|r{i}" for i in range(4)]
    # the general case: hand pyerrors our global-mean fluctuations (its `means` constructor,
    # whose Obs reports value 0)
    mean = float(x.mean())
    _assert_matches_pyerrors(
        dataclasses.replace(gamma_method(x), value=0.0),
        pe.Obs(list(x - mean), names, means=[mean] * 4),
    )
    assert gamma_method(x).value == pytest.approx(pe.Obs(list(x), names).value, rel=1e-12)
    # replica with a common mean, including ones of different lengths
    c = _centre_replica(x, 0.3)
    _assert_matches_pyerrors(gamma_method(c), pe.Obs(list(c), names))
    ragged = [c[0], c[1, :2000], c[2, :2500]]
    ragged = [_centre_replica(v, 0.3) for v in ragged]
    _assert_matches_pyerrors(gamma_method(ragged), pe.Obs(ragged, names[:3]))


@pytest.mark.parametrize("chains", [1, 3])
def test_pyerrors_derived_binder(chains, seed):
    pe = pytest.importorskip("pyerrors")
    m = ar1(seed, 4000, 0.7, chains=chains) + 0.5
    m2, m4 = m**2, m**4
    if chains > 1:
        m2, m4 = _centre_replica(m2, float(m2.mean())), _centre_replica(m4, float(m4.mean()))
    names = ["ens"] if chains == 1 else [f"ens|r{i}" for i in range(chains)]
    o2, o4 = pe.Obs(list(m2), names), pe.Obs(list(m4), names)
    r = gamma_method_derived(binder, [m2, m4])
    _assert_matches_pyerrors(r, 1.0 - o4 / (3.0 * o2**2))


# ------------------------------------------------------------------------------ derived
def test_derived_bias_correction(seed):
    x = ar1(seed, 1000, 0.5, chains=2) + 0.2
    plain = gamma_method_derived(lambda a: a * a, [x])
    corrected = gamma_method_derived(lambda a: a * a, [x], bias_correction=True)
    # R = 2: (2 f(ā) − ½ f(ā¹) − ½ f(ā²)) = ā¹ ā² for f(a) = a², which is unbiased
    a1, a2 = x.mean(axis=1)
    assert corrected.value == pytest.approx(a1 * a2, rel=1e-12)
    assert plain.value == pytest.approx(x.mean() ** 2, rel=1e-12)
    assert corrected.error == plain.error
    linear = gamma_method_derived(lambda a: 3 * a - 1, [x], bias_correction=True)
    assert linear.value == pytest.approx(3 * x.mean() - 1, rel=1e-12)


def test_jackknife_agrees_with_gamma_method(seed):
    """Correlated data (τ_int ≈ 9.5), 100 blocks of 1000 ≫ τ: the two errors agree within
    25% (the jackknife error alone is uncertain by ~7%)."""
    rng = np.random.default_rng(seed)
    x = ar1(rng, 25_000, 0.9, chains=4)
    y = ar1(rng, 25_000, 0.5, chains=4)
    a, b = 2.0 + x, 1.0 + 0.5 * x + 0.3 * y
    r = gamma_method_derived(ratio, [a, b])
    value, error = jackknife(ratio, [a, b], n_blocks=100)
    assert value == pytest.approx(r.value, rel=1e-12)
    assert error == pytest.approx(r.error, rel=0.25), (error, r.error)
    # numpy and jax f give the same
    assert jackknife(lambda p, q: np.divide(p, q), [a, b], n_blocks=100) == pytest.approx(
        (value, error), rel=1e-12
    )


def test_jackknife_block_size_one_is_the_standard_error(seed):
    x = ar1(seed, 400, 0.0, chains=2)
    value, error = jackknife(lambda a: a, [x], block_size=1)
    assert value == pytest.approx(x.mean(), rel=1e-12)
    assert error == pytest.approx(x.std(ddof=1) / math.sqrt(x.size), rel=1e-10)
    with pytest.raises(ValueError):
        jackknife(lambda a: a, [x], block_size=10, n_blocks=10)


@pytest.mark.parametrize("n_tests", [1, 10, 100])
def test_family_z_holds_the_family_wise_false_alarm_rate(n_tests, seed):
    """n independent N(0, 1) z's exceed z* = family_z(n, α, floor=0) somewhere with probability
    exactly 1 − (1 − 2Q(z*))^n ≤ α (Bonferroni), and ≈ α for independent tests. α = 0.02 so
    20000 families resolve it: the binomial σ is 1e-3."""
    alpha, fams = 0.02, 20000
    z_star = family_z(n_tests, alpha, floor=0.0)
    z = np.random.default_rng(seed).normal(size=(fams, n_tests))
    rate = np.mean(np.abs(z).max(1) >= z_star)
    exact = 1.0 - (1.0 - math.erfc(z_star / math.sqrt(2))) ** n_tests
    assert 0.99 * alpha < exact <= alpha * (1 + 1e-12)
    assert abs(rate - exact) / math.sqrt(exact * (1 - exact) / fams) < Z
    assert family_z(n_tests) >= 4.0 and family_z(10**6) > family_z(10**3) > 4.0
