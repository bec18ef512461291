"""The probability-flow ODE's log-density against the closed form for the free field.

With the exact score of a Gaussian, the flow is linear and diagonal in momentum space: for VE,
x̃_p(t) = x̃_p(1) √(v_p(t)/v_p(1)) with v_p(t) = 1/A(p) + σ(t)², so the generated sample and its
density are known exactly: log q(x(t₀)) = log π(x(1)) − Σ_p log √(v_p(t₀)/v_p(1)). For VP,
x(t) = α(t) y(t) and the same holds with an extra factor α(t₀)/α(1) per mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice.numerics.phi4 import Phi4
from lattice.score.factory import build_network
from lattice.score.flow import exact_divergence, sample_with_density
from lattice.score.gaussian import GaussianScore
from lattice.score.network import NetworkSpec
from lattice.score.sde import VESDE, VPSDE


def _exact_flow(theory, sde, x1, t0):
    A = theory.kernel()
    s0, s1 = float(sde.sigma(t0)), float(sde.sigma(1.0))
    a0, a1 = float(sde.alpha(t0)), float(sde.alpha(1.0))
    r = (a0 / a1) * np.sqrt((1 / A + s0**2) / (1 / A + s1**2))
    x0 = np.real(np.fft.ifftn(r * np.fft.fftn(np.asarray(x1))))
    return x0, -np.log(r).sum()


@pytest.mark.parametrize("kind", ["ve", "vp"])
@pytest.mark.parametrize("shape", [[4, 4], [6], [3, 2, 4]])
def test_ode_log_density_equals_the_closed_form(kind, shape, seed):
    theory = Phi4.kappa_form(shape, 0.12, 0.0)
    sde = VESDE(0.01, 20.0) if kind == "ve" else VPSDE(0.1, 20.0, 0.01)
    gs = GaussianScore(theory)

    def score(x, t):  # ∇_x log p_t = ŝ(x/α, σ)/α
        a = sde.alpha(t)
        return gs(x / a, sde.sigma(t)) / a

    x1 = sde.prior_sample(jax.random.key(seed), tuple(shape), jnp.float64)
    res = jax.jit(lambda x: sample_with_density(score, sde, x, rtol=1e-9, atol=1e-9))(x1)
    x0, log_jac = _exact_flow(theory, sde, x1, sde.t_min)
    np.testing.assert_allclose(np.asarray(res.x), x0, atol=1e-6)
    assert abs(float(res.log_q) - (float(res.log_prior) + log_jac)) <= 1e-4
    assert int(res.steps) > 0


def test_exact_divergence_is_the_jacobian_trace():
    f = lambda x: jnp.sin(x) * jnp.roll(x, 1) + x**3  # noqa: E731 - a non-linear, coupled map
    x = jax.random.normal(jax.random.key(0), (3, 5), jnp.float64)
    fx, div = exact_divergence(f, x)
    J = jax.jacfwd(lambda v: f(v.reshape(3, 5)).ravel())(x.ravel())
    np.testing.assert_allclose(float(div), float(jnp.trace(J)), rtol=1e-12)
    np.testing.assert_array_equal(fx, f(x))


@pytest.mark.parametrize("shape", [(12, 12), (13, 7), (13, 6, 6)])
def test_probing_trace_equals_the_full_trace_for_a_local_network(shape):
    """A network without the global channel has a finite receptive field R; probing with the
    colours of probe_colors gives the full-Jacobian trace to round-off with far fewer
    products, also on axes that are not multiples of m = R + 1 (where the periodic wrap would
    otherwise bring two probed sites within R)."""
    import jax

    from lattice.score.flow import exact_divergence, probe_colors

    theory = Phi4.kappa_form(list(shape), 0.22, 0.3)
    spec = NetworkSpec(channels=4, blocks=1, dilations=(1,), embedding=8, global_channel=False)
    net = build_network(spec, theory, 0.6, seed=3)
    R = net.receptive_field
    assert R == 5  # force 1 + lift 1 + block (1 + 1) + head 1
    colors = probe_colors(theory.shape, R)
    # no two distinct sites of one colour within R along every axis (periodic distances)
    idx = np.indices(theory.shape).reshape(len(shape), -1).T
    c = colors.ravel()
    for i in range(len(c)):
        same = idx[(c == c[i]) & (np.arange(len(c)) != i)]
        d = np.abs(same - idx[i])
        d = np.minimum(d, np.asarray(shape) - d)
        assert np.all(np.any(d > R, axis=1))
    x = jax.random.normal(jax.random.key(0), theory.shape, jnp.float64)

    def f(y):
        return net(y, 0.3).astype(jnp.float64)

    _, full = jax.jit(lambda y: exact_divergence(f, y))(x)
    _, probed = jax.jit(lambda y: exact_divergence(f, y, colors))(x)
    n = int(colors.max()) + 1
    print(f"{shape}: {n} probes instead of {x.size}: {float(probed):.12g} vs {float(full):.12g}")
    assert float(probed) == pytest.approx(float(full), rel=1e-5, abs=1e-5)
    assert n < x.size
    # with the global channel the field is global: one colour per site
    assert build_network(NetworkSpec(channels=4, blocks=1), theory, 0.6).receptive_field is None


@pytest.mark.parametrize("solver", ["dopri5", "tsit5", "bosh3"])
def test_every_solver_gives_the_closed_form_and_counts_its_evaluations(solver, seed):
    """``sampler.solver`` (method = "ode"): each solver reaches the closed-form sample and
    log-density at its tolerance, and counts (new evaluations per step) × steps + 1."""
    theory = Phi4.kappa_form([4, 4], 0.12, 0.0)
    sde = VESDE(0.01, 20.0)
    gs = GaussianScore(theory)
    x1 = sde.prior_sample(jax.random.key(seed), (4, 4), jnp.float64)
    res = jax.jit(
        lambda x: sample_with_density(
            lambda y, t: gs(y, sde.sigma(t)), sde, x, rtol=1e-8, atol=1e-8, solver=solver
        )
    )(x1)
    x0, log_jac = _exact_flow(theory, sde, x1, sde.t_min)
    np.testing.assert_allclose(np.asarray(res.x), x0, atol=1e-5)
    assert abs(float(res.log_q) - (float(res.log_prior) + log_jac)) <= 1e-3
    per_step = {"dopri5": 6, "tsit5": 6, "bosh3": 3}[solver]
    assert int(res.evaluations) == per_step * int(res.steps) + 1


def test_an_unknown_solver_is_refused():
    sde = VESDE(0.01, 20.0)
    with pytest.raises(ValueError, match="unknown solver 'rk4' .allowed: dopri5, tsit5, bosh3"):
        sample_with_density(lambda y, t: -y, sde, jnp.zeros(4), solver="rk4")
