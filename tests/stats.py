"""Statistical assertions for the tests: |estimate − exact| / σ < 4 with σ from the Γ-method
(independent chains as replica)."""

from __future__ import annotations

import numpy as np

from lattice.numerics.analysis import gamma_method

Z_MAX = 4.0


def estimate(series) -> tuple[float, float]:
    """(mean, Γ-method error) of a [chains, n] series."""
    r = gamma_method(np.asarray(series))
    return float(r.value), float(r.error)


def zscore(series, exact: float) -> float:
    value, err = estimate(series)
    return (value - exact) / err


def assert_consistent(series, exact: float, what: str = "") -> float:
    """Assert |z| < 4 and return z (tests print it, so a log shows how close it was)."""
    z = zscore(series, exact)
    value, err = estimate(series)
    assert abs(z) < Z_MAX, f"{what}: {value:.6g} ± {err:.2g} vs exact {exact:.6g} (z = {z:.2f})"
    return z


def z_between(a, b) -> float:
    va, ea = estimate(a)
    vb, eb = estimate(b)
    return (va - vb) / np.hypot(ea, eb)


def assert_free_field(obs, theory, times=(0, 1, 4)) -> None:
    """φ², χ and G(t) at ``times`` of a free-field run, each within 4σ of its exact value."""
    from lattice.numerics import exact

    assert_consistent(obs["phi2"], exact.free_phi2(theory), "phi2")
    assert_consistent(obs["chi"], exact.free_chi(theory), "chi")
    g = exact.free_G(theory)
    for t in times:
        assert_consistent(obs["G"][..., t], g[t], f"G({t})")


def assert_energy_identity(sampler, theory, seed, max_acceptance: float) -> None:
    """⟨e^{−ΔH}⟩ = 1 within 4σ over 300 steps of 32 chains after 50, in a regime where e^{−ΔH}
    fluctuates visibly (mean acceptance in (0.3, ``max_acceptance``))."""
    import jax.numpy as jnp

    from lattice.samplers.chains import chain_keys, evolve, init_states, initial_field, trace

    keys = chain_keys(seed, 32)
    st, _ = evolve(sampler, keys, init_states(sampler, initial_field(keys, theory)), 0, 50)
    _, info = trace(sampler, keys, st, 50, 300)
    acc = float(jnp.mean(info.acceptance))
    assert 0.3 < acc < max_acceptance, acc
    assert_consistent(np.exp(-np.asarray(info.delta_h)).T, 1.0, "<exp(-dH)>")
