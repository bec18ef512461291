"""Swendsen–Wang updates of the embedded Ising signs (Brower & Tamayo, PRL 62 (1989) 1087).

Embedding. Write φ_x = s_x |φ_x| with s_x = ±1. With the magnitudes held fixed, only the
hopping term of the canonical action (:mod:`lattice.numerics.phi4`, eq. 1) depends on the signs::

    S = const − Σ_{x,μ} h |φ_x| |φ_{x+μ̂}| s_x s_{x+μ̂}                                 (1)

so the signs are an Ising model with link couplings J_{x,μ} = h |φ_x||φ_{x+μ̂}| — one term per
site and forward direction, exactly as the action counts them. On an axis of length 2 the
forward links of x and x + μ̂ join the same pair, which therefore couples with 2J, and on an
axis of length 1 the "link" joins a site to itself and does not depend on the signs.

Bonds. Swendsen & Wang (PRL 58 (1987) 86): every link whose ends have equal signs is bonded
with probability::

    p_{x,μ} = 1 − exp(−2 J_{x,μ}) = 1 − exp(−2h φ_x φ_{x+μ̂})                           (2)

and links with opposite signs are never bonded. With h = 2κ (kappa form) this is
p = 1 − exp(−4κ φ_x φ_y); with h = 2 (mass form, S ⊃ Σ (φ_{x+μ̂} − φ_x)², no ½) it is
p = 1 − exp(−4 φ_x φ_y) — the same bond under φ_mass = √κ φ_kappa. Each link draws its own
bond, so a length-2 axis gets two independent chances to join the pair: the pair is joined
with probability 1 − exp(−2·2J), which is (2) for its total coupling 2J. A length-1 link
bonds a site to itself, which changes nothing.

Clusters and flips. Connected components of the bond graph (periodic) are labelled by their
smallest flat site index (:func:`label_clusters`), and every cluster flips with probability
½, the bit taken from the Threefry stream of the update's key at the cluster's label. The bits
therefore depend only on (seed, chain, step, cluster), never on batching.

Exactness. Given the magnitudes, the sign distribution ∝ exp(Σ J s_x s_y) is an Ising model
with non-negative couplings, which the SW update (the Fortuin–Kasteleyn joint
distribution of spins and bonds) leaves invariant; the magnitudes and the sign-independent
rest of S are untouched. Hence the update leaves e^{−S} invariant, and so does its composition
with any sampler that does (HMC, MALA). It is not ergodic alone (|φ| never changes): it is
meant to run every ``cluster_every`` steps of a local sampler.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lattice.numerics import noise
from lattice.numerics.phi4 import Phi4
from lattice.samplers.base import Sampler

__all__ = [
    "ClusterInfo",
    "bond_probabilities",
    "label_clusters",
    "swendsen_wang",
    "swendsen_wang_batch",
    "with_clusters",
]

#: fold_in tag deriving the cluster update's key from the step key (distinct from the
#: sampler's own streams, which use the step key's counters directly)
_SW_TAG = 0x5357


class ClusterInfo(NamedTuple):
    """What one SW update reports: labelling iterations and mean cluster size V / N_clusters."""

    iterations: jax.Array
    mean_size: jax.Array


def bond_probabilities(theory: Phi4, phi: jax.Array) -> jax.Array:
    """p_{x,μ} of eq. (2) for every site and forward direction: ``[d, *shape]``; zero for
    links whose ends have opposite signs."""
    h, _, _ = theory.coefficients
    axes = range(-theory.ndim, 0)
    prod = jnp.stack([phi * jnp.roll(phi, -1, axis=ax) for ax in axes])
    return jnp.where(prod > 0, -jnp.expm1(-2.0 * h * prod), 0.0)


def label_clusters(bonds: jax.Array, batch_dims: int = 0) -> tuple[jax.Array, jax.Array]:
    """Connected components of periodic bond graphs.

    ``bonds[..., μ, x]`` says whether x and x + μ̂ (periodic) are joined; the leading
    ``batch_dims`` axes are independent lattices (chains) and the lattice shape is
    ``bonds.shape[batch_dims + 1:]``. Returns ``(labels, iterations)``: ``labels[..., x]`` is
    the smallest flat (row-major) site index in the cluster of x, and ``iterations`` (one
    per lattice) counts the iterations until that lattice's labels stopped changing, plus the
    final one that confirmed it.

    Algorithm: labels start as the site indices (over all lattices of the batch, so one
    1-D gather and scatter serve every chain); each iteration (i) takes the minimum m over
    bonded neighbours' labels, (ii) hooks: the site each label points to adopts the minimum
    of m over the sites pointing to it (scatter-min), (iii) two pointer-jumping passes
    l ← l[l]. Labels only decrease and always name a site of the same cluster. At the fixed
    point (checked in a ``lax.while_loop``) no hook lowers a label and l = l[l], so every
    label is its own target and bonded neighbours carry equal labels: the cluster minimum.
    Hooking and pointer jumping make the number of iterations grow like the logarithm of
    the cluster diameter rather than the diameter.
    """
    batch = bonds.shape[:batch_dims]
    shape = bonds.shape[batch_dims + 1 :]
    d, n, nb = len(shape), math.prod(shape), math.prod(batch)
    bonds = bonds.reshape(nb, d, *shape)
    big = jnp.iinfo(jnp.int32).max
    fwd = [bonds[:, mu] for mu in range(d)]
    back = [jnp.roll(bonds[:, mu], 1, axis=1 + mu) for mu in range(d)]  # bond (x − μ̂, x)
    sites = tuple(range(1, 1 + d))

    def neighbour_min(lab):
        m = lab
        for mu in range(d):
            m = jnp.minimum(m, jnp.where(fwd[mu], jnp.roll(lab, -1, axis=1 + mu), big))
            m = jnp.minimum(m, jnp.where(back[mu], jnp.roll(lab, 1, axis=1 + mu), big))
        return m

    def body(carry):
        lab, _, it = carry
        m = neighbour_min(lab).ravel()
        flat = lab.ravel()
        # only the labels' targets take the neighbour minimum; the sites follow by jumping.
        # (Also taking min(·, m) per site recomputes the fused neighbour minimum: 2x slower.)
        new = flat.at[flat].min(m)
        new = new[new]
        new = new[new].reshape(lab.shape)
        changed = jnp.any(new != lab, axis=sites)
        return new, jnp.any(changed), it + changed.astype(jnp.int32)

    lab0 = jnp.arange(nb * n, dtype=jnp.int32).reshape(nb, *shape)
    it0 = jnp.ones(nb, jnp.int32)
    lab, _, it = lax.while_loop(lambda c: c[1], body, (lab0, jnp.array(True), it0))
    lab = lab - (jnp.arange(nb, dtype=jnp.int32) * n).reshape(nb, *([1] * d))
    return lab.reshape(*batch, *shape), it.reshape(batch)


def _bonds(theory: Phi4, key: jax.Array, phi: jax.Array) -> jax.Array:
    """Bonds of one field: stream 0 of ``key`` against eq. (2)."""
    p = bond_probabilities(theory, phi)
    return noise.uniforms(key, p.shape, phi.dtype, stream=0) < p


def _flip(theory: Phi4, key: jax.Array, phi: jax.Array, labels: jax.Array, it: jax.Array):
    """Flip every cluster of one field whose label's bit (stream 1 of ``key``) is set."""
    n = theory.volume
    flip = (noise.bits(key, n, stream=1) >> 31).astype(bool)[labels]
    n_clusters = jnp.sum(labels.ravel() == jnp.arange(n, dtype=labels.dtype))
    info = ClusterInfo(it, jnp.asarray(n, phi.dtype) / n_clusters.astype(phi.dtype))
    return jnp.where(flip, -phi, phi), info


def swendsen_wang(theory: Phi4, key: jax.Array, phi: jax.Array) -> tuple[jax.Array, ClusterInfo]:
    """One SW update of the signs of one field (eqs. 1–2); returns the new field and info.

    Streams of ``key``: 0 for the bond uniforms, 1 for the cluster flip bits (word = label).
    :func:`swendsen_wang_batch` gives bitwise the same result for each chain of a batch.
    """
    labels, it = label_clusters(_bonds(theory, key, phi))
    return _flip(theory, key, phi, labels, it)


def swendsen_wang_batch(
    theory: Phi4, keys: jax.Array, phi: jax.Array
) -> tuple[jax.Array, ClusterInfo]:
    """:func:`swendsen_wang` on every chain of ``phi`` [chains, *shape] with ``keys``
    [chains], labelling all chains in one loop (faster than ``vmap``, same result)."""
    bonds = jax.vmap(lambda k, p: _bonds(theory, k, p))(keys, phi)
    labels, it = label_clusters(bonds, batch_dims=1)
    return jax.vmap(lambda k, p, lab, i: _flip(theory, k, p, lab, i))(keys, phi, labels, it)


def cluster_key(step_key: jax.Array) -> jax.Array:
    """The SW update's key, derived from the sampler step key k(seed, chain, step)."""
    return jax.random.fold_in(step_key, _SW_TAG)


def with_clusters(sampler: Sampler, theory: Phi4, every: int = 1) -> Sampler:
    """``sampler`` followed by one SW update after every ``every``-th step.

    The update runs on the field after global step t when (t + 1) % every == 0 (see
    :func:`lattice.samplers.chains.evolve`), with the key derived from that step's key; the
    sampler's state is then rebuilt from the flipped field (one force evaluation).
    """
    if every < 1:
        raise ValueError("cluster_every must be >= 1")

    def update(keys, states):
        """Batched: step keys [chains] and states [chains] -> (states, ClusterInfo)."""
        ckeys = jax.vmap(cluster_key)(keys)
        phi, info = swendsen_wang_batch(theory, ckeys, states.phi)
        return jax.vmap(sampler.init)(phi), info

    return sampler.replace(
        identity=None if sampler.identity is None else ("sw", sampler.identity, int(every)),
        name=f"{sampler.name}+sw",
        forces_per_step=sampler.forces_per_step + 1.0 / every,
        cluster=update,
        cluster_every=int(every),
    )
