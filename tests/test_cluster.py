"""Swendsen–Wang on the embedded Ising signs: labelling, bonds, streams and exactness."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from stats import Z_MAX as Z
from test_jobs import cli as jobs_cli

from lattice.config.sampler import Hmc, Langevin, Mala
from lattice.numerics import exact
from lattice.numerics.analysis import gamma_method
from lattice.numerics.phi4 import Phi4
from lattice.samplers import with_clusters
from lattice.samplers.chains import (
    chain_keys,
    evolve,
    init_states,
    initial_field,
    run_chains,
    sample,
)
from lattice.samplers.cluster import (
    bond_probabilities,
    label_clusters,
    swendsen_wang,
    swendsen_wang_batch,
)


def _scipy_labels(bonds: np.ndarray) -> np.ndarray:
    """Reference labelling: scipy connected components of the periodic graph, each
    component named by its smallest flat site index."""
    shape = bonds.shape[1:]
    n = math.prod(shape)
    idx = np.arange(n).reshape(shape)
    rows, cols = [], []
    for mu in range(len(shape)):
        rows.append(idx[bonds[mu]])
        cols.append(np.roll(idx, -1, axis=mu)[bonds[mu]])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1, n)
    np.minimum.at(smallest, comp, np.arange(n))
    return smallest[comp].reshape(shape)


@pytest.mark.parametrize("shape", [(17,), (8, 8), (6, 10), (4, 5, 3), (2, 5), (1, 7), (2, 2, 2)])
def test_labelling_matches_scipy(shape, seed):
    rng = np.random.default_rng(seed)
    label = jax.jit(label_clusters)
    for density in (0.2, 0.5, 0.65, 0.8):
        bonds = rng.random((len(shape), *shape)) < density
        lab, it = label(jnp.asarray(bonds))
        np.testing.assert_array_equal(np.asarray(lab), _scipy_labels(bonds))
        assert 1 <= int(it) <= math.prod(shape) + 1
    # a batch of independent lattices, labelled in one loop
    bonds = rng.random((5, len(shape), *shape)) < rng.uniform(
        0.2, 0.8, (5,) + (1,) * (1 + len(shape))
    )
    lab, it = jax.jit(lambda b: label_clusters(b, batch_dims=1))(jnp.asarray(bonds))
    for c in range(5):
        np.testing.assert_array_equal(np.asarray(lab[c]), _scipy_labels(bonds[c]))
        assert int(it[c]) == int(label(jnp.asarray(bonds[c]))[1])  # per-lattice counts


def test_labelling_of_a_lattice_spanning_cluster():
    """One long snake: the cluster winds through every site of a periodic 12x12 lattice."""
    L = 12
    bonds = np.zeros((2, L, L), bool)
    bonds[1, :, : L - 1] = True  # rows
    bonds[0, : L - 1, 0] = np.arange(L - 1) % 2 == 1
    bonds[0, : L - 1, L - 1] = np.arange(L - 1) % 2 == 0
    lab, _ = label_clusters(jnp.asarray(bonds))
    np.testing.assert_array_equal(np.asarray(lab), _scipy_labels(bonds))
    assert (np.asarray(lab) == 0).all()


def test_bond_probabilities_in_both_forms(seed):
    """p = 1 − exp(−4κ φ_x φ_y) (kappa form), 1 − exp(−4 φ_x φ_y) (mass form, h = 2), zero
    for opposite signs; and the same bonds for the same theory in the two forms."""
    th = Phi4.kappa_form((6, 5), 0.27, 0.022)
    phi = np.random.default_rng(seed).standard_normal((6, 5))
    p = np.asarray(bond_probabilities(th, jnp.asarray(phi)))
    for mu in range(2):
        prod = phi * np.roll(phi, -1, axis=mu)
        want = np.where(prod > 0, 1.0 - np.exp(-4.0 * 0.27 * prod), 0.0)
        np.testing.assert_allclose(p[mu], want, rtol=1e-12, atol=1e-15)
    tm = th.to_mass()
    phi_m = math.sqrt(0.27) * phi  # φ_mass = √κ φ_kappa
    pm = np.asarray(bond_probabilities(tm, jnp.asarray(phi_m)))
    for mu in range(2):
        prod = phi_m * np.roll(phi_m, -1, axis=mu)
        np.testing.assert_allclose(
            pm[mu], np.where(prod > 0, 1.0 - np.exp(-4.0 * prod), 0.0), rtol=1e-12, atol=1e-15
        )
    np.testing.assert_allclose(pm, p, rtol=1e-12, atol=1e-15)


def test_length_two_axis_joins_the_pair_with_its_total_coupling(seed):
    """On L = 2 the pair couples with J = 2h|φ_0 φ_1| (the action counts the link twice), so
    it must be joined with probability 1 − exp(−2J) — not 1 − exp(−J), which a single link
    would give."""
    th = Phi4.kappa_form((2,), 0.25, 0.0)
    phi = jnp.array([0.8, 0.75])
    J = 2 * (2 * 0.25) * 0.8 * 0.75
    p_exact, p_single = 1 - math.exp(-2 * J), 1 - math.exp(-J)
    n = 20_000
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))
    out, _ = jax.vmap(lambda k: swendsen_wang(th, k, phi))(keys)
    # both sites flip together exactly when they are one cluster, else independently
    # (3/4 of the time the pair ends aligned): P(aligned) = p + (1 − p)/2
    aligned = np.mean(np.sign(np.asarray(out[:, 0])) == np.sign(np.asarray(out[:, 1])))
    want = p_exact + (1 - p_exact) / 2
    sigma = math.sqrt(want * (1 - want) / n)
    assert abs(aligned - want) < Z * sigma, (aligned, want)
    assert abs(p_single + (1 - p_single) / 2 - want) > 10 * sigma  # the test can tell them apart


def test_batched_update_equals_the_single_chain_update(seed):
    th = Phi4.kappa_form((12, 10), 0.2709, 0.022)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(6))
    phi = jax.random.normal(jax.random.key(seed + 1), (6, 12, 10)) + 0.4
    one, info1 = jax.vmap(lambda k, p: swendsen_wang(th, k, p))(keys, phi)
    many, info = swendsen_wang_batch(th, keys, phi)
    np.testing.assert_array_equal(np.asarray(one), np.asarray(many))
    np.testing.assert_array_equal(np.asarray(info1.iterations), np.asarray(info.iterations))
    np.testing.assert_array_equal(np.asarray(info1.mean_size), np.asarray(info.mean_size))
    assert not np.array_equal(np.asarray(one), np.asarray(phi))


def test_streams_do_not_depend_on_batching_or_blocks(seed):
    """A chain's cluster flips depend on (seed, chain, step) only: the same chain alone or in
    a batch, and the same run in one piece or split, agree bitwise."""
    th = Phi4.kappa_form((8, 6), 0.27, 0.022)
    s = with_clusters(Hmc(trajectory_length=0.5, steps=5).build(th), th, every=3)
    keys = chain_keys(seed, 4)
    st = init_states(s, initial_field(keys, th, "hot"))
    whole, _ = evolve(s, keys, st, 0, 20)
    a, _ = evolve(s, keys, st, 0, 7)
    split, _ = evolve(s, keys, a, 7, 13)
    np.testing.assert_array_equal(np.asarray(whole.phi), np.asarray(split.phi))
    one_keys = chain_keys(seed, jnp.array([2]))
    st1 = init_states(s, initial_field(one_keys, th, "hot"))
    alone, _ = evolve(s, one_keys, st1, 0, 20)
    np.testing.assert_array_equal(np.asarray(alone.phi[0]), np.asarray(whole.phi[2]))
    # and the cluster update did act: without it the chains differ
    plain, _ = evolve(
        Hmc(trajectory_length=0.5, steps=5).build(th),
        keys,
        init_states(Hmc(trajectory_length=0.5, steps=5).build(th), st.phi),
        0,
        20,
    )
    assert not np.array_equal(np.asarray(plain.phi), np.asarray(whole.phi))


def test_cluster_diagnostics_are_recorded(seed):
    th = Phi4.kappa_form((8, 8), 0.27, 0.022)
    s = with_clusters(Mala(step_size=0.05).build(th), th, every=2)
    keys = chain_keys(seed, 3)
    st = init_states(s, initial_field(keys, th, "ordered"))
    _, _, diag, _ = sample(s, th, keys, st, 0, 6, 1)
    it, size = np.asarray(diag["cluster_iterations"]), np.asarray(diag["cluster_size"])
    # measurement j covers step j; updates run after steps 1, 3, 5 (every = 2)
    assert np.isnan(it[0::2]).all() and np.isnan(size[0::2]).all()
    assert (it[1::2] >= 1).all() and (size[1::2] >= 1).all() and (size[1::2] <= 64).all()


def _hmc_ensemble(th, seed, chains=32, n=400, therm=200):
    s = Hmc(trajectory_length=1.0, steps=8).build(th)
    return run_chains(
        s, th, chains=chains, seed=seed, n_meas=n, measure_every=1, thermalization=therm
    )


def _paired_z(th_bonds, th, phi, seed, updates=3):
    """z-scores of ⟨f(after) − f(before)⟩ for f = m, |m|, S/V, after ``updates`` SW updates
    (bonds from ``th_bonds``) of every configuration ``phi`` [chains, n, *shape]."""
    chains, n = phi.shape[:2]
    flat = jnp.asarray(phi.reshape(chains * n, *th.shape))
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(chains * n))
    sw = jax.jit(jax.vmap(lambda k, p: swendsen_wang(th_bonds, k, p)[0]))
    out = flat
    for u in range(updates):
        out = sw(jax.vmap(jax.random.fold_in, (0, None))(keys, u), out)
    axes = tuple(range(1, 1 + th.ndim))
    V = th.volume

    def obs(f):
        return {
            "m": jnp.mean(f, axis=axes),
            "abs_m": jnp.abs(jnp.mean(f, axis=axes)),
            "action": th.action(f) / V,
        }

    before, after = obs(flat), obs(out)
    z = {}
    for k in before:
        d = np.asarray(after[k] - before[k]).reshape(chains, n)
        g = gamma_method(d)
        z[k] = g.value / g.error
    return z


def test_cluster_update_alone_keeps_boltzmann_invariant(seed):
    """From an HMC-equilibrated ensemble near κ_c, SW updates alone leave the observables'
    distribution unchanged (paired differences consistent with 0); a SW with the wrong bond
    probability (half the coupling) fails the same test."""
    th = Phi4.kappa_form((8, 8), 0.27, 0.022)
    ens = _hmc_ensemble(th, seed)
    # configurations were not stored: regenerate them with the same streams
    s = Hmc(trajectory_length=1.0, steps=8).build(th)
    keys = chain_keys(seed, 32)
    st = init_states(s, initial_field(keys, th, "hot"))
    st, _ = evolve(s, keys, st, 0, 200)
    phis = []
    for j in range(0, 400, 100):
        st2, _, _, saved = sample(s, th, keys, st, 200 + j, 100, 1, save_every=1)
        phis.append(np.swapaxes(np.asarray(saved), 0, 1))
        st = st2
    phi = np.concatenate(phis, axis=1)
    np.testing.assert_allclose(
        np.abs(phi.mean(axis=(2, 3))), ens["obs"]["abs_m"], rtol=1e-12, atol=1e-14
    )
    z = _paired_z(th, th, phi, seed + 1)
    assert all(abs(v) < Z for v in z.values()), z
    wrong = Phi4.kappa_form((8, 8), 0.27 / 2, 0.022)
    z_wrong = _paired_z(wrong, th, phi, seed + 1)
    assert max(abs(v) for v in z_wrong.values()) > Z, z_wrong


@pytest.mark.parametrize("kind", ["langevin-rk2", "mala", "hmc"])
def test_composite_reproduces_free_field_and_schwinger_dyson(kind, seed):
    """λ = 0 (κ = 0.115 on 8x8): with one SW update every 2 steps, ⟨φ²⟩ and χ match the exact
    free-field values and ⟨φ ∂S/∂φ⟩/V = 1, within 4σ (Γ-method)."""
    th = Phi4.kappa_form((8, 8), 0.115, 0.0)
    if kind == "langevin-rk2":
        eps = 0.02
        base = Langevin(step_size=eps, scheme="rk2").build(th)
    elif kind == "mala":
        base = Mala(step_size=0.3).build(th)
    else:
        base = Hmc(trajectory_length=1.0, steps=8).build(th)
    s = with_clusters(base, th, every=2)
    out = run_chains(s, th, chains=32, seed=seed, n_meas=400, measure_every=5, thermalization=200)
    obs = out["obs"]
    for name, want in (("phi2", exact.free_phi2(th)), ("chi", exact.free_chi(th)), ("sd", 1.0)):
        g = gamma_method(obs[name])
        assert abs(g.value - want) < Z * g.error, (kind, name, g.value, want, g.error)
        if kind == "langevin-rk2" and name != "sd":
            # honest comparison: the O(ε²) bias of plain RK2 is far below the error
            biased = {"phi2": exact.free_phi2, "chi": exact.free_chi}[name](
                th, step_size=eps, scheme="rk2"
            )
            assert abs(biased - want) < 0.25 * g.error


def test_symmetry_restored_at_kappa_c_from_an_ordered_start(seed):
    """At κ_c on 16x16 from φ = 1 everywhere, HMC + SW gives ⟨m⟩ consistent with 0: the
    clusters flip the magnetization sign that local updates hold for long times."""
    th = Phi4.kappa_form((16, 16), 0.2709, 0.022)
    s = with_clusters(Hmc(trajectory_length=1.0, steps=8).build(th), th, every=1)
    out = run_chains(
        s,
        th,
        chains=16,
        seed=seed,
        n_meas=300,
        measure_every=1,
        thermalization=0,
        start="ordered",
    )
    g = gamma_method(out["obs"]["m"])
    assert abs(g.value) < Z * g.error, (g.value, g.error)
    assert np.mean(out["obs"]["abs_m"]) > 5 * g.error  # |m| is not small: the check has teeth


CLUSTER_RUN = """
name = "sw"
[lattice]
shape = [8, 6]
[action]
kappa = 0.27
lambda = 0.022
[sampler]
kind = "hmc"
cluster = "sw"
cluster_every = 3
[run]
chains = 2
thermalization = 9
samples = 20
measure_every = 2
save_every = 0
checkpoint_every = 8
"""


def test_cli_run_info_and_measure_with_clusters(tmp_path):
    import json

    import h5py

    cfg = tmp_path / "sw.toml"
    cfg.write_text(CLUSTER_RUN)

    def cli(*args):
        return jobs_cli(*args, check=0).stdout

    cli("run", cfg)
    run = tmp_path / "sw"
    with h5py.File(run / "ensemble.h5") as f:
        assert f["config"].attrs["sampler.name"] == "hmc-leapfrog+sw"
        assert f["config"].attrs["sampler.exactness"] == "exact"
        it = f["diagnostics/cluster_iterations"][:]
        size = f["diagnostics/cluster_size"][:]
    assert it.shape == (2, 20)
    # steps 9 + 2j + 1, 9 + 2j + 2 follow measurement j - 1: an update ran (t + 1) % 3 == 0
    ran = np.array([any((t + 1) % 3 == 0 for t in (9 + 2 * j, 10 + 2 * j)) for j in range(20)])
    assert np.isfinite(it[:, ran]).all() and np.isnan(it[:, ~ran]).all()
    assert (size[:, ran] >= 1).all()
    assert "clusters" in cli("info", run) and "sw, cluster_every = 3" in cli("info", run)
    out = json.loads(cli("measure", run, "--json"))
    assert out["exactness"] == "exact" and out["config"]["sampler"]["cluster"] == "sw"
