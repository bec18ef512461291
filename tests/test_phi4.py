"""The action and force: stencil vs jax.grad vs finite differences vs a brute-force loop, and
the exact map between the two parametrizations."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice.numerics.phi4 import Phi4

SHAPES = [[5], [1], [2], [4, 6], [2, 3], [1, 4], [16, 4], [3, 4, 5], [2, 2, 1]]


def theories(shape):
    return [Phi4.kappa_form(shape, 0.23, 0.7), Phi4.mass_form(shape, -1.3, 0.4)]


def brute_action(th: Phi4, phi: np.ndarray) -> float:
    """S from its definition in docs/conventions.md §1, looping over sites and forward
    directions."""
    total = 0.0
    for x in itertools.product(*[range(L) for L in th.shape]):
        for mu in range(th.ndim):
            y = list(x)
            y[mu] = (y[mu] + 1) % th.shape[mu]
            if th.form == "kappa":
                total += -2 * th.kappa * phi[x] * phi[tuple(y)]
            else:
                total += (phi[tuple(y)] - phi[x]) ** 2
        quad = (1 - 2 * th.lam) if th.form == "kappa" else th.m2
        total += quad * phi[x] ** 2 + th.lam * phi[x] ** 4
    return total


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_action_matches_definition(shape):
    rng = np.random.default_rng(1)
    phi = rng.normal(size=shape)
    for th in theories(shape):
        assert float(th.action(jnp.asarray(phi))) == pytest.approx(brute_action(th, phi), 1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_action_from_the_gradient_matches_definition(shape):
    """S = Σ φ (½ ∂S/∂φ − g φ³) (eq. (4) of lattice.numerics.phi4, what HMC uses), in both
    layouts."""
    rng = np.random.default_rng(2)
    phi = rng.normal(size=(3, *shape))
    for th in theories(shape):
        p = jnp.asarray(phi)
        s = th.action_from_grad(p, th.grad(p))
        exact = [brute_action(th, f) for f in phi]
        np.testing.assert_allclose(np.asarray(s), exact, rtol=1e-12, atol=1e-12)
        last = jnp.moveaxis(p, 0, -1)
        s_last = th.action_from_grad(last, th.grad(last, True), True)
        np.testing.assert_allclose(np.asarray(s_last), exact, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_force_matches_autodiff(shape):
    phi = jax.random.normal(jax.random.key(0), (3, *shape))  # a batch of 3 chains
    for th in theories(shape):
        auto = jax.grad(lambda p, th=th: jnp.sum(th.action(p)))(phi)
        np.testing.assert_allclose(th.grad(phi), auto, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(th.force(phi), -auto, rtol=1e-12, atol=1e-12)
        assert th.action(phi).shape == (3,)


def test_force_matches_finite_differences():
    th = Phi4.kappa_form([4, 3], 0.3, 1.1)
    phi = np.random.default_rng(2).normal(size=th.shape)
    g = np.asarray(th.grad(jnp.asarray(phi)))
    h = 1e-5
    for x in [(0, 0), (3, 2), (1, 1)]:
        up, dn = phi.copy(), phi.copy()
        up[x] += h
        dn[x] -= h
        fd = (float(th.action(jnp.asarray(up))) - float(th.action(jnp.asarray(dn)))) / (2 * h)
        assert fd == pytest.approx(g[x], rel=1e-8, abs=1e-8)


@pytest.mark.parametrize("shape", [[8], [6, 6], [4, 3, 5]], ids=str)
def test_parametrizations_give_identical_weights(shape):
    """S_mass(√κ φ) = S_kappa(φ) for every field, and the maps invert each other."""
    rng = np.random.default_rng(3)
    k = Phi4.kappa_form(shape, 0.27, 0.022)
    m = k.to_mass()
    assert m.form == "mass"
    for _ in range(3):
        phi = jnp.asarray(rng.normal(size=shape))
        s_k = float(k.action(phi))
        s_m = float(m.action(math.sqrt(k.kappa) * phi))
        assert s_m == pytest.approx(s_k, rel=1e-12)
    back = m.to_kappa()
    assert back.kappa == pytest.approx(k.kappa, rel=1e-13)
    assert back.lam == pytest.approx(k.lam, rel=1e-13)


def test_design_example_mapping():
    """docs/conventions.md §1: d = 2, m² = −4, λ = 8 is κ = 0.25, λ_kappa = 0.5."""
    k = Phi4.mass_form([8, 8], -4.0, 8.0).to_kappa()
    assert (k.kappa, k.lam) == (pytest.approx(0.25), pytest.approx(0.5))
    free = Phi4.mass_form([8, 8], 0.5, 0.0).to_kappa()
    assert free.kappa == pytest.approx(1 / 4.5)


@pytest.mark.parametrize("shape", [[7], [4, 6], [2, 1, 3]], ids=str)
def test_gaussian_kernel_diagonalizes_the_free_action(shape):
    """At λ = 0, S = ½ Σ_p |φ̃_p|² A(p) / V with A(p) = 2 − 4κ Σ_μ cos p_μ."""
    th = Phi4.kappa_form(shape, 0.1, 0.0)
    phi = np.random.default_rng(4).normal(size=shape)
    ft = np.fft.fftn(phi)
    s_fourier = 0.5 * np.sum(np.abs(ft) ** 2 * th.kernel()) / ft.size
    assert float(th.action(jnp.asarray(phi))) == pytest.approx(s_fourier, rel=1e-12)
    mass = Phi4.mass_form(shape, 0.3, 0.0)
    s_fourier = 0.5 * np.sum(np.abs(ft) ** 2 * mass.kernel()) / ft.size
    assert float(mass.action(jnp.asarray(phi))) == pytest.approx(s_fourier, rel=1e-12)


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="shape"):
        Phi4.kappa_form([4, 0], 0.1, 0.0)
    with pytest.raises(ValueError, match="shape"):
        Phi4.kappa_form([], 0.1, 0.0)
