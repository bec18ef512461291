"""The kernel contract (lattice/samplers/base.py): Phi4 is a Target, every state carries its
field and ∂S/∂φ with one sign, samplers declare their traits, and equal samplers are equal
by identity (kind, parameters, theory), so they share the jitted loops' compiled code."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import Phi4
from lattice.config.sampler import Hmc, Langevin, Mala
from lattice.samplers.base import Exactness, Target
from lattice.samplers.chains import chain_keys, evolve, init_states, initial_field

THEORY = Phi4.kappa_form([4, 4], kappa=0.2, lam=0.3)
SCHEMAS = [
    Langevin(step_size=0.01),
    Langevin(step_size=0.01, scheme="rk2"),
    Langevin(step_size=0.01, fourier_acceleration=True),
    Mala(step_size=0.05),
    Hmc(steps=4),
    Hmc(steps=4, scheme="omelyan"),
    Hmc(steps=4, cluster="sw"),
    Hmc(steps=4, fourier_acceleration=True),
    Hmc(steps=4, fourier_acceleration=True, cluster="sw"),
]


def test_phi4_is_a_target():
    assert isinstance(THEORY, Target)


@pytest.mark.parametrize(
    "schema",
    SCHEMAS,
    ids=lambda s: f"{s.kind}-{s.scheme}-{s.cluster}{'-fa' * s.fourier_acceleration}",
)
def test_states_carry_the_field_and_the_gradient_of_S(schema):
    """grad_S() is ∂S/∂φ at the state's field (never the force −∂S/∂φ), for every kind."""
    s = schema.build(THEORY)
    phi = initial_field(chain_keys(0, 2), THEORY, "hot", jnp.float64)
    states = init_states(s, phi)
    assert np.array_equal(states.phi, phi)
    want = jax.vmap(THEORY.grad)(phi)
    np.testing.assert_allclose(states.grad_S(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "schema, exactness, order, accept_reject",
    [
        (Langevin(step_size=0.01), Exactness.ASYMPTOTIC, 1, False),
        (Langevin(step_size=0.01, scheme="rk2"), Exactness.ASYMPTOTIC, 2, False),
        (Mala(step_size=0.05), Exactness.EXACT, None, True),
        (Hmc(steps=4), Exactness.EXACT, None, True),
    ],
)
def test_traits_are_declared_without_building(schema, exactness, order, accept_reject):
    t = schema.traits
    assert (t.exactness, t.order, t.accept_reject, t.weighted) == (
        exactness,
        order,
        accept_reject,
        False,
    )
    s = schema.build(THEORY)
    assert s.traits.exactness is exactness and s.exactness == exactness.value
    assert s.order == order


def test_equal_samplers_are_equal_and_share_compiled_code():
    a, b = Langevin(step_size=0.01).build(THEORY), Langevin(step_size=0.01).build(THEORY)
    assert a is not b and a == b and hash(a) == hash(b)
    assert a != Langevin(step_size=0.02).build(THEORY)
    assert a != Langevin(step_size=0.01).build(Phi4.kappa_form([4, 4], kappa=0.2, lam=0.31))
    assert Hmc(steps=4).build(THEORY) != Hmc(steps=5).build(THEORY)
    keys = chain_keys(0, 2)
    states = init_states(a, initial_field(keys, THEORY, "hot", jnp.float64))
    evolve(a, keys, states, 0, 3)
    size = evolve._cache_size()
    evolve(b, keys, init_states(b, states.phi), 0, 3)  # equal sampler: no new compilation
    assert evolve._cache_size() == size
    c = Langevin(step_size=0.02).build(THEORY)
    evolve(c, keys, init_states(c, states.phi), 0, 3)  # another sampler compiles anew
    assert evolve._cache_size() == size + 1
