"""Fourier-accelerated HMC (lattice.samplers.hmc eq. (1)) against exact answers: reversibility
to round-off, |ΔH| ∝ ε², ⟨e^{−ΔH}⟩ = 1, the free field's φ², χ and G(t), agreement with plain
HMC on an interacting theory, and the point of it: the zero mode decorrelates in one
trajectory where plain HMC's does not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stats import Z_MAX, assert_energy_identity, assert_free_field, z_between

from lattice.config.sampler import Hmc
from lattice.numerics.fourier import fourier_mass2_auto
from lattice.numerics.phi4 import Phi4
from lattice.samplers.chains import chain_keys, evolve, init_states, initial_field, run_chains
from lattice.samplers.hmc import fourier_mass, hmc_trajectory

FREE = Phi4.kappa_form([8, 8], 0.2, 0.0)
INTERACTING = Phi4.kappa_form([8, 8], 0.25, 0.5)
#: a light free field (m² = 1/κ − 4 = 0.082, correlation length 3.5): plain HMC's zero mode is slow
LIGHT = Phi4.kappa_form([16, 16], 0.245, 0.0)


def fa(theory, tau=1.0, steps=10, scheme="leapfrog", **kw):
    return Hmc(
        trajectory_length=tau, steps=steps, scheme=scheme, fourier_acceleration=True, **kw
    ).build(theory)


def kinetic(pi, mass):
    return 0.5 * jnp.sum(pi * mass.inverse(pi))


def test_the_mass_is_the_formula():
    """M⁻¹ multiplies mode p by (p̂²_max + M²)/(p̂² + M²), and the momenta have covariance M:
    the colouring applied twice is M itself."""
    th = LIGHT
    m2 = fourier_mass2_auto(th)
    mass = fourier_mass(th, m2)
    L = th.shape[0]
    p = 2 * np.pi * np.array([3, 5]) / L
    plane = jnp.asarray(np.cos(p[0] * np.arange(L))[:, None] * np.cos(p[1] * np.arange(L)))
    phat2 = 4 * np.sum(np.sin(p / 2) ** 2)
    want = (8 + m2) / (phat2 + m2)
    np.testing.assert_allclose(np.asarray(mass.inverse(plane)), want * np.asarray(plane), 0, 1e-12)
    np.testing.assert_allclose(
        np.asarray(mass.momenta(mass.momenta(plane))), np.asarray(plane) / want, 0, 1e-12
    )
    # the same multipliers chain-last, on a batch of one
    last = fourier_mass(th, m2, batch_last=True)
    np.testing.assert_allclose(
        np.asarray(last.inverse(plane[..., None]))[..., 0],
        np.asarray(mass.inverse(plane)),
        0,
        1e-12,
    )


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_fa_hmc_is_reversible_to_roundoff(integrator):
    th = INTERACTING
    mass = fourier_mass(th, 0.5)
    phi = jax.random.normal(jax.random.key(1), th.shape)
    pi = mass.momenta(jax.random.normal(jax.random.key(2), th.shape))
    p1, q1, g1 = hmc_trajectory(th, phi, pi, th.grad(phi), 0.02, 40, integrator, mass=mass)
    assert float(jnp.max(jnp.abs(p1 - phi))) > 0.1  # it moved
    p2, q2, _ = hmc_trajectory(th, p1, -q1, g1, 0.02, 40, integrator, mass=mass)
    assert float(jnp.max(jnp.abs(p2 - phi))) < 1e-11
    assert float(jnp.max(jnp.abs(q2 + pi))) < 1e-11


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_fa_hmc_energy_violation_scales_as_eps_squared(integrator):
    """RMS ΔH (with the kinetic energy of eq. (1)) over fixed configurations and momenta at
    fixed trajectory length: halving ε divides it by 4."""
    th = INTERACTING
    s = fa(th)
    keys = chain_keys(7, 32)
    st, _ = evolve(s, keys, init_states(s, initial_field(keys, th)), 0, 50)
    mass = fourier_mass(th, fourier_mass2_auto(th))
    pi = jax.vmap(mass.momenta)(jax.random.normal(jax.random.key(3), st.phi.shape))

    def rms_dh(n):
        def one(p, q, g):
            p1, q1, _ = hmc_trajectory(th, p, q, g, 1.0 / n, n, integrator, mass=mass)
            return kinetic(q1, mass) - kinetic(q, mass) + th.action(p1) - th.action(p)

        return float(jnp.sqrt(jnp.mean(jax.vmap(one)(st.phi, pi, st.grad) ** 2)))

    r = [rms_dh(n) for n in (16, 32, 64)]
    for ratio in (r[0] / r[1], r[1] / r[2]):
        assert ratio == pytest.approx(4.0, rel=0.1), r


@pytest.mark.parametrize("integrator,steps", [("leapfrog", 6), ("omelyan", 5)])
def test_fa_hmc_exp_minus_delta_h_averages_to_one(integrator, steps, seed):
    th = INTERACTING
    assert_energy_identity(fa(th, tau=1.0, steps=steps, scheme=integrator), th, seed, 0.98)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fa_hmc_reproduces_the_free_field(dtype, seed):
    """φ², χ and G(t) of the free field, exact (float32 runs chain-last, its fast path)."""
    res = run_chains(
        fa(FREE, tau=1.2, steps=8),
        FREE,
        chains=16,
        seed=seed,
        n_meas=200,
        measure_every=1,
        thermalization=50,
        dtype=jnp.dtype(dtype),
    )
    assert_free_field(res["obs"], FREE)


def test_fa_hmc_agrees_with_plain_hmc_on_an_interacting_theory(seed):
    th = INTERACTING
    kw = dict(chains=16, n_meas=600, measure_every=1, thermalization=100)
    a = run_chains(fa(th, tau=1.0, steps=8), th, seed=seed, **kw)["obs"]
    b = run_chains(Hmc(trajectory_length=1.0, steps=8).build(th), th, seed=seed + 1, **kw)["obs"]
    zs = {k: z_between(a[k], b[k]) for k in ("phi2", "abs_m", "chi", "action")}
    print(zs)
    # a family of 4: Bonferroni at the suite's 4σ per test stays below 4.5σ
    assert max(abs(z) for z in zs.values()) < Z_MAX + 0.5, zs


def _lag1(m: np.ndarray) -> tuple[float, float]:
    """Lag-1 autocorrelation of a [chains, n] series, with its error over the chains."""
    x = m - m.mean()
    per_chain = (x[:, 1:] * x[:, :-1]).mean(1) / (x * x).mean(1)
    return float(per_chain.mean()), float(per_chain.std(ddof=1) / np.sqrt(len(per_chain)))


def test_the_zero_mode_decorrelates_in_one_trajectory(seed):
    """On a light free field (correlation length 3.5 on 16²), the zero mode m moves by the
    angle ω₀τ per trajectory: plain HMC with τ = 1 has ω₀ = (2κm²)^½ = 0.2, so its lag-1
    autocorrelation is ≈ cos² 0.2 = 0.96; FA-HMC with M² = m² moves every mode at
    ω = (2κ(p̂²_max + m²))^½ = 2.0, ρ₁ ≈ cos 2.0 < 0. The bound ρ₁ < 0.5 holds for FA-HMC and
    fails for plain HMC, both resolved by > 4σ."""
    kw = dict(chains=16, n_meas=200, measure_every=1, thermalization=200)
    rho_fa, e_fa = _lag1(np.asarray(run_chains(fa(LIGHT), LIGHT, seed=seed, **kw)["obs"]["m"]))
    plain = Hmc(trajectory_length=1.0, steps=10).build(LIGHT)
    rho_hmc, e_hmc = _lag1(np.asarray(run_chains(plain, LIGHT, seed=seed, **kw)["obs"]["m"]))
    print(f"lag-1 of m: FA-HMC {rho_fa:.3f} ± {e_fa:.3f}, HMC {rho_hmc:.3f} ± {e_hmc:.3f}")
    assert (0.5 - rho_fa) / e_fa > Z_MAX
    assert (rho_hmc - 0.5) / e_hmc > Z_MAX
