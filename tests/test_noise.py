"""The fused counter-based noise: bitwise Threefry, Gaussian moments, KS distance, and no
correlation between neighbouring sites, paired sites, streams or steps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32
from scipy import stats

from lattice.config.sampler import Langevin
from lattice.numerics import noise

N = 2**20


def test_threefry_is_bitwise_jax_threefry():
    key = jax.random.key(1234)
    kd = jax.random.key_data(key)
    x0 = jnp.arange(1000, dtype=jnp.uint32)
    x1 = x0 * jnp.uint32(7) + jnp.uint32(3)
    ref = threefry_2x32(kd, jnp.concatenate([x0, x1]))
    a, b = noise.threefry2x32(kd[0], kd[1], x0, x1)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(ref[:1000]))
    np.testing.assert_array_equal(np.asarray(b), np.asarray(ref[1000:]))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_normal_moments_and_distribution(dtype):
    z = np.asarray(noise.normal(jax.random.key(5), (N,), dtype), np.float64)
    assert np.isfinite(z).all()
    # exact sampling errors of the moments of N(0, 1): Var z = 1, Var z² = 2, Var z⁴ = 96
    assert abs(z.mean()) * math.sqrt(N) < 4
    assert abs((z**2).mean() - 1) / math.sqrt(2 / N) < 4
    assert abs((z**3).mean()) / math.sqrt(15 / N) < 4
    assert abs((z**4).mean() - 3) / math.sqrt(96 / N) < 4
    ks = stats.kstest(z, "norm")
    assert ks.pvalue > 1e-4, ks


@pytest.mark.parametrize("shape", [(64, 64), (7, 5, 3)])
def test_no_correlation_between_sites_steps_and_streams(shape):
    n = math.prod(shape)
    chain = jax.random.fold_in(jax.random.key(9), 3)
    fields = [
        np.asarray(noise.normal(jax.random.fold_in(chain, t), shape, jnp.float64)).ravel()
        for t in range(64)
    ]
    z = np.stack(fields)  # [step, site]
    other = np.stack(
        [
            np.asarray(
                noise.normal(jax.random.fold_in(chain, t), shape, jnp.float64, stream=1)
            ).ravel()
            for t in range(64)
        ]
    )
    half = (n + 1) // 2
    pairs = {
        "neighbouring sites": (z[:, :-1], z[:, 1:]),
        "the two words of one Threefry block": (z[:, : n - half], z[:, half:]),
        "consecutive steps": (z[:-1], z[1:]),
        "streams 0 and 1": (z, other),
    }
    for what, (a, b) in pairs.items():
        r = np.mean(a * b)  # both have mean 0 and variance 1
        assert abs(r) * math.sqrt(a.size) < 4, what


def test_noise_depends_only_on_key_and_site():
    """A chain's noise is the same whether generated alone or under vmap with others."""
    keys = jax.vmap(lambda c: jax.random.fold_in(jax.random.key(0), c))(jnp.arange(4))
    batch = jax.vmap(lambda k: noise.normal(k, (6, 6), jnp.float32))(keys)
    alone = noise.normal(keys[2], (6, 6), jnp.float32)
    np.testing.assert_array_equal(np.asarray(batch[2]), np.asarray(alone))


def test_uniform_is_in_the_open_unit_interval():
    keys = jax.vmap(lambda c: jax.random.fold_in(jax.random.key(0), c))(jnp.arange(20000))
    u = np.asarray(jax.vmap(lambda k: noise.uniform(k, jnp.float64))(keys))
    assert (u > 0).all() and (u < 1).all()
    assert stats.kstest(u, "uniform").pvalue > 1e-4


def test_other_key_implementations_fall_back_to_jax_random():
    key = jax.random.key(0, impl="rbg")
    z = noise.normal(key, (1000,), jnp.float64)
    assert z.shape == (1000,) and abs(float(z.mean())) < 0.2


def test_erfinv32_within_4_ulp_of_float64_erfinv_on_the_whole_grid():
    """Every float32 normal comes from one of the 2²⁴ odd dyadic x = (2k + 1 − 2²⁴) 2⁻²⁴;
    Giles' approximation must be within 4 ulp of the float64 erfinv at all of them."""
    from scipy.special import erfinv

    k = np.arange(2**24, dtype=np.int64)
    x = ((2 * k + 1 - 2**24) * 2.0**-24).astype(np.float32)
    ref = erfinv(x.astype(np.float64))
    got = np.asarray(jax.jit(noise.erfinv32)(jnp.asarray(x)), dtype=np.float64)
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - ref) / ulp) < 4.0
    assert np.array_equal(np.sign(got), np.sign(ref))  # odd, no zero crossing moved


def test_single_precision_noise_is_the_float32_stream_cast():
    """A float64 Langevin step with noise_precision = "single" uses exactly the float32
    normals (so its stream is the float32 run's), "full" the float64 transform."""
    from lattice import Phi4
    from lattice.samplers.chains import chain_keys, evolve, init_states

    th = Phi4.kappa_form([6, 5], 0.2, 0.0)  # free field: force is linear, the step exact
    keys = chain_keys(3, 2)
    phi0 = jnp.zeros((2, 6, 5), jnp.float64)
    eps = 0.01
    out = {}
    for prec in ("single", "full"):
        s = Langevin(step_size=eps, noise_precision=prec).build(th)
        st, _ = evolve(s, keys, init_states(s, phi0), 0, 1)
        out[prec] = np.asarray(st.phi) / np.sqrt(2 * eps)  # one step from 0: the noise
    step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, 0)
    z32 = jax.vmap(lambda k: noise.normal(k, (6, 5), jnp.float32))(step_keys)
    z64 = jax.vmap(lambda k: noise.normal(k, (6, 5), jnp.float64))(step_keys)
    # the float32 normal may round differently by 1 ulp in another fusion (FMA contraction)
    np.testing.assert_allclose(out["single"], np.asarray(z32, np.float64), rtol=3e-7)
    np.testing.assert_allclose(out["full"], np.asarray(z64), rtol=1e-12)
    assert np.max(np.abs(np.asarray(z32, np.float64) - np.asarray(z64))) > 1e-9


@pytest.mark.parametrize("shape", [(16, 16), (5, 3), (7,), (4, 6, 3), (3, 4), (1, 9)])
def test_chain_last_words_are_the_same_stream(shape):
    """The chain-last noise of the batched Langevin step (pair_words → site_bits) gives every
    site of every chain bitwise the word of :func:`noise.normal`, packed or not."""
    from lattice.samplers.chains import chain_keys

    keys = chain_keys(5, 19)
    n, half = math.prod(shape), (math.prod(shape) + 1) // 2

    def flat_bits(k):
        b0, b1 = noise._bits_pairs(k, half, 0)
        return jnp.concatenate([b0, b1])[:n].reshape(shape)

    ref = np.asarray(jax.vmap(flat_bits)(keys))
    words = noise.pair_words(keys, shape)
    got = np.asarray(noise.site_bits(words, shape))
    assert got.shape == (*shape, 19)
    np.testing.assert_array_equal(np.moveaxis(got, -1, 0), ref)
    unpacked = noise.unpack_words(noise.pack_words(words))
    for a, b in zip(unpacked, words, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # and the normals: the same transform (1 ulp where XLA contracts differently)
    z = jax.jit(lambda k: noise.normal_from_words(noise.pair_words(k, shape), shape))(keys)
    zr = jax.jit(jax.vmap(lambda k: noise.normal(k, shape, jnp.float32)))(keys)
    np.testing.assert_allclose(np.moveaxis(np.asarray(z), -1, 0), np.asarray(zr), rtol=3e-7)
    # carried through a loop (keep_alive's salt is zero for every step t >= 0, never else)
    prev = noise.pack_words(noise.pair_words(chain_keys(6, 19), shape))
    for t, same in ((0, True), (7, True), (-1, False)):
        zc, wc = jax.jit(noise.carried_normals, static_argnums=(1, 2))(
            keys, shape, jnp.float32, t, prev
        )
        assert (np.asarray(wc) == np.asarray(noise.pack_words(words))).all() == same
        if same:
            np.testing.assert_array_equal(np.asarray(zc), np.asarray(z))
