"""Samplers against exact answers: the free field (with the exact Euler/RK2 bias), the
Schwinger–Dyson identity, HMC reversibility, |ΔH| ∝ ε², ⟨e^{−ΔH}⟩ = 1, and stream properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stats import (
    Z_MAX,
    assert_consistent,
    assert_energy_identity,
    assert_free_field,
    estimate,
    z_between,
)

from lattice.config.sampler import Hmc, Langevin, Mala
from lattice.numerics import exact
from lattice.numerics.fourier import fourier_mass2_auto
from lattice.numerics.phi4 import Phi4
from lattice.samplers.chains import (
    chain_keys,
    evolve,
    init_states,
    initial_field,
    run_chains,
    sample,
)
from lattice.samplers.hmc import hmc_trajectory

FREE = Phi4.kappa_form([8, 8], 0.2, 0.0)
INTERACTING = Phi4.kappa_form([8, 8], 0.25, 0.5)  # docs/conventions.md's m² = −4, λ = 8 point


def run(sampler, theory, seed, n=600, every=2, chains=16, therm=200, **kw):
    return run_chains(
        sampler,
        theory,
        chains=chains,
        seed=seed,
        n_meas=n,
        measure_every=every,
        thermalization=therm,
        **kw,
    )


@pytest.mark.parametrize(
    "sampler",
    [
        Mala(step_size=0.15).build(FREE),
        Hmc(trajectory_length=1.0, steps=8, scheme="leapfrog").build(FREE),
        Hmc(trajectory_length=1.0, steps=4, scheme="omelyan").build(FREE),
    ],
    ids=lambda s: s.name,
)
def test_exact_samplers_reproduce_free_field(sampler, seed):
    assert_free_field(run(sampler, FREE, seed)["obs"], FREE)


def test_euler_langevin_has_the_exact_finite_step_bias(seed):
    eps = 0.12
    obs = run(Langevin(step_size=eps).build(FREE), FREE, seed)["obs"]
    biased = exact.free_phi2(FREE, step_size=eps, scheme="euler")
    assert_consistent(obs["phi2"], biased, "phi2 (Euler, exact biased value)")
    assert_consistent(obs["chi"], exact.free_chi(FREE, step_size=eps, scheme="euler"), "chi")
    # the test resolves the bias: the unbiased value is excluded
    value, err = estimate(obs["phi2"])
    assert abs(value - exact.free_phi2(FREE)) / err > 2 * Z_MAX


def test_rk2_bias_is_second_order_and_matches_its_formula(seed):
    eps = 0.12
    obs = run(Langevin(step_size=eps, scheme="rk2").build(FREE), FREE, seed)["obs"]
    assert_consistent(obs["phi2"], exact.free_phi2(FREE, step_size=eps, scheme="rk2"), "phi2")
    # exact formulas: the RK2 bias is O(ε²), far below the O(ε) Euler bias
    true = exact.free_phi2(FREE)
    b_rk2 = exact.free_phi2(FREE, step_size=eps, scheme="rk2") - true
    b_euler = exact.free_phi2(FREE, step_size=eps, scheme="euler") - true
    # per mode the ratio is (εA)²/4 ÷ εA/2 = εA/2, i.e. 0.05-0.2 here
    assert abs(b_rk2) < 0.2 * abs(b_euler)
    b_rk2_half = exact.free_phi2(FREE, step_size=eps / 2, scheme="rk2") - true
    assert b_rk2 / b_rk2_half == pytest.approx(4.0, rel=0.1)


@pytest.mark.parametrize("scheme", ["euler", "rk2"])
def test_fourier_acceleration_free_field_values(scheme, seed):
    eps = 0.05
    m2 = fourier_mass2_auto(FREE)
    obs = run(
        Langevin(step_size=eps, scheme=scheme, fourier_acceleration=True).build(FREE), FREE, seed
    )["obs"]
    want = exact.free_phi2(FREE, step_size=eps, scheme=scheme, fourier_mass2=m2)
    assert_consistent(obs["phi2"], want, "phi2 (Fourier accelerated)")


def _mode_lag1(sampler, theory, seed, n_steps=400, chains=32):
    """Lag-1 autocorrelation of Re φ̃(p) for p = 0 and p = p_max, and its jackknife error over
    chains. ρ̂ = Σ x_t x_{t−1} / Σ ½(x_t² + x_{t−1}²) over all chains, uncentred (⟨φ̃(p)⟩ = 0
    exactly): on exact AR(1) (4000 replicas of 32 × 400, ρ = 0.96 and 0.64) z has mean −0.02
    and 0.01, sd 1.03–1.05, P(|z| > 4) = 2.5e-4. (Per-chain estimates centred on each chain's
    mean are biased by −(1 + 3ρ)/n: −3.5σ at ρ = 0.96.)"""
    keys = chain_keys(seed, chains)
    st = init_states(sampler, initial_field(keys, theory, "hot"))
    st, _ = evolve(sampler, keys, st, 0, 200)

    def body(st, i):
        st, _ = jax.vmap(sampler.step)(jax.vmap(jax.random.fold_in, (0, None))(keys, i), st)
        ft = jnp.fft.fftn(st.phi, axes=(1, 2)).real
        return st, jnp.stack([ft[:, 0, 0], ft[:, 4, 4]], -1)

    _, modes = jax.lax.scan(body, st, jnp.arange(1000, 1000 + n_steps))
    x = np.asarray(modes)
    num = (x[1:] * x[:-1]).sum(0)  # [chains, 2]
    den = 0.5 * (x[1:] ** 2 + x[:-1] ** 2).sum(0)
    jack = (num.sum(0) - num) / (den.sum(0) - den)  # leave one chain out
    err = np.sqrt((chains - 1) / chains * ((jack - jack.mean(0)) ** 2).sum(0))
    return num.sum(0) / den.sum(0), err


def test_fourier_acceleration_decorrelates_every_mode_equally(seed):
    """Euler on the free field: each mode is AR(1) with ρ(1) = 1 − ε(p)A(p). With Fourier
    acceleration at M² = m² that is the same number for p = 0 and p = p_max."""
    eps = 0.1
    m2 = fourier_mass2_auto(FREE)
    rates = exact.free_relaxation_rates(FREE, eps, fourier_mass2=m2)
    assert np.ptp(rates) < 1e-12  # exact: every mode relaxes at the same rate
    plain = exact.free_relaxation_rates(FREE, eps)
    # without it, p = 0 relaxes 9x slower than p = (π, π): τ ∝ 1/(1 − ρ(1)) = 1/(εA)
    assert (1 - plain[4, 4]) / (1 - plain[0, 0]) > 5
    rho, err = _mode_lag1(
        Langevin(step_size=eps, fourier_acceleration=True).build(FREE), FREE, seed
    )
    for i in range(2):
        assert abs(rho[i] - rates[0, 0]) / err[i] < Z_MAX, (rho, err, rates[0, 0])
    rho_plain, err_plain = _mode_lag1(Langevin(step_size=eps).build(FREE), FREE, seed)
    for i, p in enumerate([(0, 0), (4, 4)]):
        assert abs(rho_plain[i] - plain[p]) / err_plain[i] < Z_MAX


@pytest.mark.parametrize(
    "sampler",
    [
        Mala(step_size=0.05).build(INTERACTING),
        Hmc(trajectory_length=1.0, steps=10).build(INTERACTING),
        Hmc(trajectory_length=1.0, steps=5, scheme="omelyan").build(INTERACTING),
    ],
    ids=lambda s: s.name,
)
def test_schwinger_dyson_exact_samplers(sampler, seed):
    res = run(sampler, INTERACTING, seed)
    obs = res["obs"]
    assert_consistent(obs["sd"], 1.0, "<(1/V) sum phi dS/dphi>")
    assert_consistent(obs["dsdphi"], 0.0, "<dS/dphi_x>")
    for t in range(INTERACTING.shape[0]):  # <phi_y dS/dphi_x> = delta_xy, summed like G(t)
        assert_consistent(obs["G_sd"][..., t], float(t == 0), f"G_sd({t})")
    assert_consistent(res["exp_minus_dh"], 1.0, "<exp(-dH)>")


def test_schwinger_dyson_langevin_extrapolates_to_one(seed):
    """Euler Langevin violates SD at O(ε); a linear fit in ε over three step sizes must
    extrapolate to exactly 1."""
    eps = np.array([0.01, 0.02, 0.03])
    vals, errs = [], []
    for i, e in enumerate(eps):
        obs = run(
            Langevin(step_size=float(e)).build(INTERACTING), INTERACTING, seed + i, n=800, every=3
        )["obs"]
        v, s = estimate(obs["sd"])
        vals.append(v)
        errs.append(s)
    vals, errs = np.array(vals), np.array(errs)
    w = 1 / errs**2
    X = np.stack([np.ones_like(eps), eps], 1)
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    intercept, slope = cov @ X.T @ (w * vals)
    z = (intercept - 1.0) / np.sqrt(cov[0, 0])
    assert abs(z) < Z_MAX, (vals, errs, intercept, np.sqrt(cov[0, 0]))
    assert slope > 0 and abs(vals[-1] - 1) / errs[-1] > Z_MAX  # the bias is resolved at ε = 0.03


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_hmc_is_reversible_to_roundoff(integrator):
    th = INTERACTING
    phi = jax.random.normal(jax.random.key(1), th.shape)
    pi = jax.random.normal(jax.random.key(2), th.shape)
    p1, q1, g1 = hmc_trajectory(th, phi, pi, th.grad(phi), 0.05, 40, integrator)
    p2, q2, _ = hmc_trajectory(th, p1, -q1, g1, 0.05, 40, integrator)
    assert float(jnp.max(jnp.abs(p2 - phi))) < 1e-12
    assert float(jnp.max(jnp.abs(q2 + pi))) < 1e-12


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_merged_kicks_are_the_textbook_integrator(integrator, n):
    """The integrators merge the kicks of consecutive steps; the map is the textbook one
    (written out step by step here) to round-off, for 1, 2 and 7 steps."""
    from lattice.samplers.integrators import OMELYAN_LAMBDA as lam

    th = INTERACTING
    phi = jax.random.normal(jax.random.key(3), th.shape)
    pi = jax.random.normal(jax.random.key(4), th.shape)
    eps = 0.07
    p, q = phi, pi
    for _ in range(n):
        if integrator == "leapfrog":
            q = q - 0.5 * eps * th.grad(p)
            p = p + eps * q
            q = q - 0.5 * eps * th.grad(p)
        else:
            q = q - lam * eps * th.grad(p)
            p = p + 0.5 * eps * q
            q = q - (1 - 2 * lam) * eps * th.grad(p)
            p = p + 0.5 * eps * q
            q = q - lam * eps * th.grad(p)
    p1, q1, g1 = hmc_trajectory(th, phi, pi, th.grad(phi), eps, n, integrator)
    np.testing.assert_allclose(np.asarray(p1), np.asarray(p), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(q1), np.asarray(q), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(th.grad(p)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="n_steps >= 1"):
        hmc_trajectory(th, phi, pi, th.grad(phi), eps, 0, integrator)


@pytest.mark.parametrize("integrator,order", [("leapfrog", 2), ("omelyan", 2)])
def test_hmc_energy_violation_scales_as_eps_squared(integrator, order):
    """RMS ΔH over fixed configurations and momenta at fixed trajectory length: halving ε
    divides it by 2^order."""
    th = INTERACTING
    keys = chain_keys(7, 32)
    s = Hmc(trajectory_length=1.0, steps=10).build(th)
    st, _ = evolve(s, keys, init_states(s, initial_field(keys, th)), 0, 100)
    pi = jax.random.normal(jax.random.key(3), st.phi.shape)

    def rms_dh(n):
        f = jax.vmap(lambda p, q, g: hmc_trajectory(th, p, q, g, 1.0 / n, n, integrator))
        p1, q1, _ = f(st.phi, pi, st.grad)
        dh = 0.5 * jnp.sum(q1**2 - pi**2, (1, 2)) + th.action(p1) - th.action(st.phi)
        return float(jnp.sqrt(jnp.mean(dh**2)))

    r = [rms_dh(n) for n in (16, 32, 64)]
    ratios = [r[0] / r[1], r[1] / r[2]]
    print(f"{integrator}: rms dH at n=16,32,64: {r}; ratios {ratios}")
    for ratio in ratios:
        assert ratio == pytest.approx(2.0**order, rel=0.1)


@pytest.mark.parametrize("integrator,steps", [("leapfrog", 5), ("omelyan", 3)])
def test_hmc_exp_minus_delta_h_averages_to_one(integrator, steps, seed):
    th = INTERACTING
    s = Hmc(trajectory_length=1.0, steps=steps, scheme=integrator).build(th)
    assert_energy_identity(s, th, seed, max_acceptance=0.95)


@pytest.mark.parametrize("shape", [[32], [16, 4]], ids=str)
def test_hmc_and_mala_agree_on_chains_and_non_square_lattices(shape, seed):
    th = Phi4.kappa_form(shape, 0.3 if len(shape) == 1 else 0.2, 0.3)
    a = run(Hmc(trajectory_length=1.0, steps=8).build(th), th, seed)["obs"]
    b = run(Mala(step_size=0.1).build(th), th, seed + 1, every=4)["obs"]
    for name in ("phi2", "chi"):
        z = z_between(a[name], b[name])
        assert abs(z) < Z_MAX, (name, z)


def test_hot_cold_and_ordered_starts_reach_one_equilibrium(seed):
    s = Mala(step_size=0.05).build(INTERACTING)
    res = [
        run(s, INTERACTING, seed, start=start, therm=400)["obs"]["phi2"]
        for start in ("hot", "cold", "ordered")
    ]
    for other in res[1:]:
        assert abs(z_between(res[0], other)) < Z_MAX


def test_float32_runs_and_is_correct(seed):
    obs = run(Hmc(trajectory_length=1.0, steps=8).build(FREE), FREE, seed, dtype=jnp.float32)["obs"]
    assert obs["phi2"].dtype == np.float32
    assert_consistent(obs["phi2"].astype(np.float64), exact.free_phi2(FREE), "phi2 (float32)")


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])  # float32: chain-last loops
def test_a_chains_stream_depends_only_on_seed_chain_and_step(dtype):
    """Chains 2 and 5 give bitwise the same history whether run among 8 chains or alone,
    and whether the run is done in one block or two."""
    th, s = INTERACTING, Langevin(step_size=0.02).build(INTERACTING)

    def history(idx, blocks):
        keys = chain_keys(11, jnp.asarray(idx))
        st = init_states(s, initial_field(keys, th, "hot", dtype))
        out, step = [], 0
        for n in blocks:
            st, obs, _, _ = sample(s, th, keys, st, step, n, 3)
            out.append(np.asarray(obs["phi2"]))
            step += 3 * n
        return np.concatenate(out), np.asarray(st.phi)

    full, phi_full = history(list(range(8)), [20])
    sub, phi_sub = history([2, 5], [7, 13])
    np.testing.assert_array_equal(full[:, [2, 5]], sub)
    np.testing.assert_array_equal(phi_full[[2, 5]], phi_sub)


@pytest.mark.parametrize("n,every", [(10, 3), (9, 3), (4, 1), (2, 5)])
def test_saved_configurations_are_the_measured_ones(n, every):
    th, s = FREE, Langevin(step_size=0.05).build(FREE)
    keys = chain_keys(3, 4)
    st = init_states(s, initial_field(keys, th))
    _, obs, _, saved = sample(s, th, keys, st, 0, n, 2, save_every=every)
    idx = np.arange(0, n, every)
    assert saved.shape == (len(idx), 4, *th.shape)
    np.testing.assert_allclose(
        np.mean(np.asarray(saved) ** 2, (2, 3)), np.asarray(obs["phi2"])[idx], rtol=1e-12
    )
    _, obs0, _, none = sample(s, th, keys, st, 0, n, 2)
    assert none is None
    np.testing.assert_array_equal(np.asarray(obs0["phi2"]), np.asarray(obs["phi2"]))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_a_chain_alone_measures_bitwise_what_it_measures_in_a_batch(dtype):
    """Fields *and observables* of chain 2 run alone equal those of chain 2 among 8, on a
    lattice (32x32) where XLA's batched ``jnp.sum`` over sites rounds differently (fixed by
    ``geometry.site_sum``)."""
    from lattice.samplers import with_clusters
    from lattice.samplers.chains import chain_keys, init_states, initial_field, sample

    th = Phi4.kappa_form((32, 32), 0.27, 0.022)
    for s in (
        Langevin(step_size=0.01).build(th),
        Hmc(trajectory_length=1.0, steps=5).build(th),
        with_clusters(Hmc(trajectory_length=1.0, steps=5).build(th), th, 2),
    ):
        keys, one = chain_keys(1, 8), chain_keys(1, jnp.array([2]))
        a, oa, da, _ = sample(
            s, th, keys, init_states(s, initial_field(keys, th, "hot", dtype)), 0, 4, 3
        )
        b, ob, db, _ = sample(
            s, th, one, init_states(s, initial_field(one, th, "hot", dtype)), 0, 4, 3
        )
        np.testing.assert_array_equal(np.asarray(a.phi[2]), np.asarray(b.phi[0]))
        for k in oa:
            np.testing.assert_array_equal(np.asarray(oa[k][:, 2]), np.asarray(ob[k][:, 0]), k)
        # the acceptance means may differ in the last bits (HMC's ΔH on a 32x32 batch):
        # fields and observables are what must be bitwise
        for k in da:
            np.testing.assert_allclose(
                np.asarray(da[k][:, 2]), np.asarray(db[k][:, 0]), rtol=1e-12, err_msg=k
            )


@pytest.mark.parametrize("scheme", ["euler", "rk2", "hmc"])
@pytest.mark.parametrize("shape", [(16, 16), (7,), (4, 6, 3)])  # odd extents: (7,), (4, 6, 3)
def test_chain_last_loops_compute_the_vmapped_steps(scheme, shape):
    """float32 Langevin and HMC run their loops chain-last (the sampler's BatchedStep,
    measured there too): the fields, observables, acceptances and saved configurations of
    vmap(step), up to how XLA contracts a·b + c into fused multiply-adds in each layout
    (≤ a few ulp)."""
    from lattice.samplers.chains import _batched

    th = Phi4.kappa_form(shape, 0.27, 0.022)
    s = (
        Hmc(trajectory_length=1.0, steps=5).build(th)
        if scheme == "hmc"
        else Langevin(step_size=0.01, scheme=scheme).build(th)
    )
    plain = s.replace(batched=None)
    keys = chain_keys(3, 7)
    st = init_states(s, initial_field(keys, th, "hot", jnp.float32))
    assert _batched(s, keys, st) is not None
    assert _batched(s, keys, init_states(s, initial_field(keys, th, "hot", jnp.float64))) is None
    assert _batched(s, chain_keys(3, 7, "rbg"), st) is None
    e1, _ = evolve(s, keys, st, 5, 6)
    e2, _ = evolve(plain, keys, st, 5, 6)
    a = sample(s, th, keys, e1, 11, 5, 3, save_every=2)
    b = sample(plain, th, keys, e2, 11, 5, 3, save_every=2)
    for x, y in [*zip(e1, e2, strict=True), *zip(a[0], b[0], strict=True), (a[3], b[3])]:
        assert x.shape == y.shape
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=2e-5)
    for k in a[1]:
        assert a[1][k].shape == b[1][k].shape, k
        np.testing.assert_allclose(np.asarray(a[1][k]), np.asarray(b[1][k]), 1e-5, 1e-6, k)
    for k in a[2]:  # min(1, e^{-ΔH}): ΔH is a difference of float32 sums over the sites
        np.testing.assert_allclose(np.asarray(a[2][k]), np.asarray(b[2][k]), 0, 1e-4, k)


@pytest.mark.parametrize("shape", [(7,), (8, 8), (5, 6), (3, 4, 5), (1, 9)])
def test_site_sum_is_the_sum(shape, seed):
    from lattice.numerics.geometry import site_sum

    x = np.random.default_rng(seed).standard_normal((3, *shape))
    got = np.asarray(site_sum(jnp.asarray(x), len(shape)))
    np.testing.assert_allclose(got, x.reshape(3, -1).sum(-1), rtol=1e-13, atol=1e-13)
    got1 = np.asarray(site_sum(jnp.asarray(x[0]), len(shape)))
    assert got1.shape == () and got1 == got[0]
    last = np.asarray(site_sum(jnp.asarray(np.moveaxis(x, 0, -1)), len(shape), True))
    np.testing.assert_array_equal(last, got)  # the same tree of additions, chain axis last
