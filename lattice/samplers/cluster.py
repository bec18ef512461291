"""Swendsen–Wang updates of the embedded Ising signs (Brower & Tamayo, PRL 62 (1989) 1087).

Embedding. Write φ_x = s_x |φ_x| with s_x = ±1. With the magnitudes held fixed, only the
hopping term of the canonical action (:mod:`lattice.phi4`, eq. 1) depends on the signs::

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

from .. import noise
from ..phi4 import Phi4
from .base import Sampler

__all__ = ["ClusterInfo", "bond_probabilities", "label_clusters", "swendsen_wang", "with_clusters"]

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


def label_clusters(bonds: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Connected components of a periodic bond graph.

    ``bonds[μ, x]`` says whether x and x + μ̂ (periodic) are joined; the lattice shape is
    ``bonds.shape[1:]``. Returns ``(labels, iterations)``: ``labels[x]`` is the smallest flat
    (row-major) site index in the cluster of x.

    Algorithm: labels start as the site indices; each iteration (i) takes the minimum over
    bonded neighbours, (ii) hooks: the site a label points to adopts that minimum too
    (scatter-min), (iii) two pointer-jumping passes l ← l[l]. Labels only decrease and
    always name a site of the same cluster, so the fixed point (checked in a
    ``lax.while_loop``) is the cluster minimum. Pointer jumping makes the number of
    iterations grow like log of the cluster diameter rather than the diameter.
    """
    shape = bonds.shape[1:]
    d, n = len(shape), math.prod(shape)
    big = jnp.iinfo(jnp.int32).max
    back = [jnp.roll(bonds[mu], 1, axis=mu) for mu in range(d)]  # bond (x − μ̂, x)

    def neighbour_min(lab):
        m = lab
        for mu in range(d):
            m = jnp.minimum(m, jnp.where(bonds[mu], jnp.roll(lab, -1, axis=mu), big))
            m = jnp.minimum(m, jnp.where(back[mu], jnp.roll(lab, 1, axis=mu), big))
        return m

    def body(carry):
        lab, _, it = carry
        m = neighbour_min(lab).ravel()
        flat = lab.ravel()
        new = jnp.minimum(flat.at[flat].min(m), m)
        new = new[new]
        new = new[new]
        new = new.reshape(shape)
        return new, jnp.any(new != lab), it + 1

    lab0 = jnp.arange(n, dtype=jnp.int32).reshape(shape)
    lab, _, it = lax.while_loop(lambda c: c[1], body, (lab0, jnp.array(True), jnp.int32(0)))
    return lab, it


def swendsen_wang(theory: Phi4, key: jax.Array, phi: jax.Array) -> tuple[jax.Array, ClusterInfo]:
    """One SW update of the signs of one field (eqs. 1–2); returns the new field and info.

    Streams of ``key``: 0 for the bond uniforms, 1 for the cluster flip bits (word = label).
    """
    n = theory.volume
    p = bond_probabilities(theory, phi)
    u = noise.uniforms(key, p.shape, phi.dtype, stream=0)
    bonds = u < p
    labels, it = label_clusters(bonds)
    flip = (noise.bits(key, n, stream=1) >> 31).astype(bool)[labels]
    n_clusters = jnp.sum(labels.ravel() == jnp.arange(n, dtype=labels.dtype))
    info = ClusterInfo(it, jnp.asarray(n, phi.dtype) / n_clusters.astype(phi.dtype))
    return jnp.where(flip, -phi, phi), info


def cluster_key(step_key: jax.Array) -> jax.Array:
    """The SW update's key, derived from the sampler step key k(seed, chain, step)."""
    return jax.random.fold_in(step_key, _SW_TAG)


def with_clusters(sampler: Sampler, theory: Phi4, every: int = 1) -> Sampler:
    """``sampler`` followed by one SW update after every ``every``-th step.

    The update runs on the field after global step t when (t + 1) % every == 0 (see
    :func:`lattice.chains.evolve`), with the key derived from that step's key; the sampler's
    state is then rebuilt from the flipped field (one force evaluation).
    """
    if every < 1:
        raise ValueError("cluster_every must be >= 1")

    def update(key, state):
        phi, info = swendsen_wang(theory, cluster_key(key), state.phi)
        return sampler.init(phi), info

    return sampler._replace(
        name=f"{sampler.name}+sw",
        forces_per_step=sampler.forces_per_step + 1.0 / every,
        cluster=update,
        cluster_every=int(every),
    )
