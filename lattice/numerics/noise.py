"""Counter-based Gaussian noise that XLA fuses into the sampler update.

``jax.random.normal`` materializes its random bits through a separate Threefry kernel; on the
CPU that costs several times the φ⁴ force. Here the same generator, Threefry-2x32 with 20
rounds (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011 —
bitwise identical to JAX's ``threefry_2x32``, which the tests check), is written in plain
``jnp`` integer ops, so XLA fuses the hash, the transform to a normal and the update into one
loop over sites.

Stream: the 2×32-bit key of a typed threefry key and the counter (word0, word1) = (stream, j)
give two 32-bit words, the normals of flat sites j and j + ⌈n/2⌉. So the noise of a site is a
pure function of (key, stream, site), and the sampler keys are k(seed, chain, step).

Chain-last layout (the batched Langevin and HMC steps): :func:`pair_words` hashes the blocks of
a whole batch of keys at once, :func:`site_bits` lays their words out as ``[*shape, chains]``
— every site bitwise the word :func:`normal` gives it — and :func:`carried_normals` computes
each block once per step by carrying the packed words through the loop.

Transform (inverse CDF): a word b becomes the odd dyadic x = (2b' + 1 − 2^B) 2^{−B} ∈ (−1, 1),
exactly representable in the target precision (B = 24 bits for float32, b' = b >> 8; B = 32
for float64), and z = √2 erfinv(x) (float32: Giles' approximation, :func:`erfinv32`). The
tails are truncated where the grid ends: at |z| = 5.4 for float32 (a variance deficit of
1e-6) and |z| = 6.3 for float64 (3e-8). The tests check the moments, a Kolmogorov–Smirnov
distance and correlations between neighbouring sites and steps.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

__all__ = [
    "threefry2x32",
    "normal",
    "uniform",
    "uniforms",
    "bits",
    "is_threefry",
    "erfinv32",
    "pair_counters",
    "pair_words",
    "pack_words",
    "unpack_words",
    "site_bits",
    "normal_from_words",
    "keep_alive",
    "carried_normals",
    "empty_words",
]

_ROT = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA


def _rotl(x, r: int):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32-20 block function on uint32 arrays (broadcasting)."""
    u = jnp.uint32
    ks = (k0, k1, k0 ^ k1 ^ u(_PARITY))
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for block in range(5):
        rots = _ROT[:4] if block % 2 == 0 else _ROT[4:]
        for r in rots:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + u(block + 1)
    return x0, x1


def _key_words(key):
    data = jax.random.key_data(key)
    if data.shape[-1] != 2:
        raise ValueError("lattice.random needs threefry keys")
    return data[..., 0], data[..., 1]


def _bits_pairs(key, n_pairs: int, stream: int):
    k0, k1 = _key_words(key)
    j = jnp.arange(n_pairs, dtype=jnp.uint32)
    return threefry2x32(k0, k1, jnp.full_like(j, stream), j)


def _unit(bits, dtype):
    """(bits + ½) 2⁻³² ∈ (0, 1)."""
    return (bits.astype(dtype) + 0.5) * dtype.type(2.0**-32)


# Giles, "Approximating the erfinv function", GPU Computing Gems Jade (2011), single
# precision: w = −ln((1 − x)(1 + x)); erfinv x = x·p₁(w − 2.5) for w < 5, else
# x·p₂(√w − 3), p₁ and p₂ of degree 8.
_GILES_CENTRAL = (
    2.81022636e-08,
    3.43273939e-07,
    -3.5233877e-06,
    -4.39150654e-06,
    2.1858087e-04,
    -1.25372503e-03,
    -4.17768164e-03,
    0.246640727,
    1.50140941,
)
_GILES_TAIL = (-2.00214257e-04, 1.00950558e-04, 1.34934322e-03, -3.67342844e-03,
               5.73950773e-03, -7.6224613e-03, 9.43887047e-03, 1.00167406, 2.83297682)  # fmt: skip


def _horner(coeffs, w):
    p = jnp.full_like(w, coeffs[0])
    for c in coeffs[1:]:
        p = p * w + np.float32(c)
    return p


def erfinv32(x: jax.Array) -> jax.Array:
    """erfinv of float32 ``x`` ∈ (−1, 1) by Giles' single-precision approximation.

    Over all 2²⁴ odd dyadic points of the float32 normal transform it is within 3.8 ulp of
    the float64 erfinv (``jax.scipy.special.erfinv`` in float32: 65 ulp), and ~2× cheaper
    on the CPU: the cheaper of the two is what makes the fused noise fast
    (docs/PERFORMANCE.md).
    """
    w = -jnp.log((1.0 - x) * (1.0 + x))
    central = _horner(_GILES_CENTRAL, w - np.float32(2.5))
    tail = _horner(_GILES_TAIL, jnp.sqrt(w) - np.float32(3.0))
    return jnp.where(w < np.float32(5.0), central, tail) * x


def _to_normal(bits, dtype):
    if dtype == jnp.float32:
        k = (bits >> np.uint32(8)).astype(jnp.int32)
        x = (2 * k + (1 - 2**24)).astype(jnp.float32) * np.float32(2.0**-24)
        return np.float32(math.sqrt(2.0)) * erfinv32(x)
    x = (2.0 * bits.astype(dtype) + (1.0 - 2.0**32)) * dtype.type(2.0**-32)
    return dtype.type(math.sqrt(2.0)) * jax.scipy.special.erfinv(x)


def is_threefry(key) -> bool:
    """Whether a (batch of) typed key(s) is threefry, the generator this module computes."""
    return jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0))


def normal(key, shape, dtype=jnp.float32, stream: int = 0) -> jax.Array:
    """Standard normals of ``shape`` from one threefry key (fused Threefry + inverse CDF).

    Other key implementations (rbg, unsafe_rbg) fall back to ``jax.random.normal``.
    """
    dtype = jnp.dtype(dtype)
    if not is_threefry(key):
        return jax.random.normal(jax.random.fold_in(key, stream), shape, dtype)
    return normal_from_bits(normal_bits(key, shape, stream), shape, dtype)


def normal_bits(key, shape, stream: int = 0) -> jax.Array:
    """The 32-bit words :func:`normal` transforms (one threefry key; uint32, the two words of
    each counter concatenated). Integer arithmetic only: the same bits jitted or not."""
    b0, b1 = _bits_pairs(key, (math.prod(shape) + 1) // 2, stream)
    return jnp.concatenate([b0, b1])


def normal_from_bits(bits, shape, dtype=jnp.float32) -> jax.Array:
    """:func:`normal` from its words (``bits`` of :func:`normal_bits`)."""
    n = math.prod(shape)
    return _to_normal(bits, jnp.dtype(dtype))[:n].reshape(shape)


def pair_counters(shape) -> jax.Array:
    """Block counters j < ⌈n/2⌉ of a lattice of ``shape`` for the chain-last layout, with a
    trailing axis of length 1 for the chains: ``[shape[0]/2, *shape[1:], 1]`` when
    ``shape[0]`` is even (the two halves of the flat sites are then the two halves of the
    first axis), else ``[⌈n/2⌉, 1]``."""
    n = math.prod(shape)
    if shape[0] % 2 == 0:
        return jnp.arange(n // 2, dtype=jnp.uint32).reshape(shape[0] // 2, *shape[1:], 1)
    return jnp.arange((n + 1) // 2, dtype=jnp.uint32)[:, None]


def pair_words(keys, shape, stream: int = 0, salt=None) -> tuple[jax.Array, jax.Array]:
    """The Threefry words (word0, word1) at counters (stream, j), j < ⌈n/2⌉, of a batch of
    threefry keys, chain axis last: two uint32 arrays ``[*pair_counters(shape).shape[:-1],
    chains]``.

    With :func:`normal_from_words` these are, per chain, exactly the normals of
    :func:`normal` — the same stream in the chain-last layout. ``salt`` (None, or integers
    broadcastable to the words' shape) is XOR-ed into the block counters; a sampler passes
    zeros that XLA cannot prove zero, to keep a loop-carried value alive
    (:func:`keep_alive`).
    """
    k0, k1 = _key_words(keys)
    j = pair_counters(shape)
    lanes = (1,) * (j.ndim - 1) + (-1,)
    j = jnp.broadcast_to(j, (*j.shape[:-1], k0.shape[0]))
    if salt is not None:
        j = j ^ salt.astype(jnp.uint32)
    return threefry2x32(k0.reshape(lanes), k1.reshape(lanes), jnp.full_like(j, stream), j)


def pack_words(words: tuple[jax.Array, jax.Array]) -> jax.Array:
    """(word0, word1) as one uint64 (word0 high; needs ``jax_enable_x64``).

    A sampler that carries the packed words in its loop state makes XLA write each block
    once and read both words from it. Left to itself XLA fuses the hash into the transform
    of both halves of the lattice and computes every block twice (docs/PERFORMANCE.md).
    """
    w0, w1 = words
    return (w0.astype(jnp.uint64) << np.uint64(32)) | w1.astype(jnp.uint64)


def unpack_words(packed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Inverse of :func:`pack_words`."""
    return (packed >> np.uint64(32)).astype(jnp.uint32), packed.astype(jnp.uint32)


def keep_alive(t, carried) -> jax.Array:
    """uint32 zeros that XLA cannot prove zero, for the ``salt`` of :func:`pair_words`: per
    row of the ``carried`` array (its first axis) and chain, the count of nonzero words among
    the row's first two, under the condition t < 0, never true for a global step t.

    A value a sampler carries in its loop only so that XLA writes it to memory once (the
    packed words) is otherwise dropped from the loop as unused, and XLA goes back to
    recomputing it in every consumer (docs/PERFORMANCE.md).

    The reduction is its own small kernel that runs before the hash, so the new words
    overwrite the carried buffer in place (read inside the hash's kernel, XLA copied them
    into the loop carry every step); being per row of the first lattice axis, it stays on
    each device when that axis is split, and it reads 2 words per row (docs/PERFORMANCE.md).
    """
    m, c = carried.shape[0], carried.shape[-1]
    rows = carried.reshape(m, -1, c)[:, :2] != 0
    first = jnp.sum(rows.astype(jnp.uint32), axis=1, dtype=jnp.uint32)
    first = first.reshape((m,) + (1,) * (carried.ndim - 2) + (c,))
    return jnp.where(t < 0, first, jnp.uint32(0))


def carried_normals(keys, shape, dtype, t, words=None):
    """Standard normals ``[*shape, chains]`` of the step keys (:func:`normal`'s stream in
    the chain-last layout) and the packed words to carry to the next step.

    With ``words`` (the previous step's packed words, or None without ``jax_enable_x64``)
    each Threefry block is computed once and both of its words read from memory."""
    if words is None:
        return normal_from_words(pair_words(keys, shape), shape, dtype), None
    packed = pack_words(pair_words(keys, shape, salt=keep_alive(t, words)))
    return normal_from_words(unpack_words(packed), shape, dtype), packed


def empty_words(shape, chains: int) -> jax.Array | None:
    """The initial carried words of :func:`carried_normals` (None without x64)."""
    if not jax.config.jax_enable_x64:
        return None
    return jnp.zeros((*pair_counters(shape).shape[:-1], chains), jnp.uint64)


def site_bits(words, shape) -> jax.Array:
    """The 32-bit word of every site, ``[*shape, chains]``, from :func:`pair_words`: flat
    site j < ⌈n/2⌉ takes word0 of block j, site j ≥ ⌈n/2⌉ word1 of block j − ⌈n/2⌉, as in
    :func:`normal`. (With an even first axis that is a concatenation along it; a flat
    concatenation reshaped to the lattice is ~7× slower in XLA's CPU fusion.)"""
    w0, w1 = words
    if shape[0] % 2 == 0:
        return jnp.concatenate([w0, w1], axis=0)
    n = math.prod(shape)
    return jnp.concatenate([w0, w1[: n - w0.shape[0]]], axis=0).reshape(*shape, w0.shape[-1])


def normal_from_words(words, shape, dtype=jnp.float32) -> jax.Array:
    """Standard normals ``[*shape, chains]`` from :func:`pair_words` (:func:`site_bits`
    through the transform of :func:`normal`)."""
    return _to_normal(site_bits(words, shape), jnp.dtype(dtype))


def uniform(key, dtype=jnp.float32, stream: int = 1) -> jax.Array:
    """One uniform number in (0, 1) from a threefry key (for accept/reject)."""
    dtype = jnp.dtype(dtype)
    if not is_threefry(key):
        return jax.random.uniform(jax.random.fold_in(key, stream), (), dtype)
    b0, _ = _bits_pairs(key, 1, stream)
    return _unit(b0[0], dtype)


def uniforms(key, shape, dtype=jnp.float32, stream: int = 0) -> jax.Array:
    """Uniforms in (0, 1] of ``shape``, laid out like :func:`normal` (flat sites j and
    j + ⌈n/2⌉ share one Threefry call), so each is a pure function of (key, stream, site)."""
    dtype = jnp.dtype(dtype)
    if not is_threefry(key):
        return jax.random.uniform(jax.random.fold_in(key, stream), shape, dtype, minval=0.0)
    n = math.prod(shape)
    b0, b1 = _bits_pairs(key, (n + 1) // 2, stream)
    return _unit(jnp.concatenate([b0, b1]), dtype)[:n].reshape(shape)


def bits(key, n: int, stream: int = 0) -> jax.Array:
    """``n`` random 32-bit words; word j is the first output of Threefry at counter
    (stream, j), a pure function of (key, stream, j) for any ``n`` > j."""
    if not is_threefry(key):
        return jax.random.bits(jax.random.fold_in(key, stream), (n,), jnp.uint32)
    return _bits_pairs(key, n, stream)[0]
