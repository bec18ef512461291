"""The orthonormal Haar decomposition of a lattice field: φ ↔ (coarse field, 2^d − 1 detail
channels) on the lattice with halved extents, applied recursively (issue 26, the multilevel
sampler; docs/multilevel.md).

Per axis, a pair of sites (φ_{2y}, φ_{2y+1}) maps to

    a_y = (φ_{2y} + φ_{2y+1}) / √2,        b_y = (φ_{2y} − φ_{2y+1}) / √2,            (1)

an orthogonal 2×2 map. In d dimensions the map is the tensor product of (1) over the axes: each
2^d block of sites becomes one coarse value (every axis "a") and 2^d − 1 details (the other
a/b patterns), channel c = Σ_i c_i 2^{d−1−i} with c_i = 1 for "b" along axis i. So

    c = 2^{−d/2} Σ_{block} φ,    i.e. the coarse field is 2^{d/2} × the block mean,         (2)

and the whole map W is orthogonal: W Wᵀ = 1, |det W| = 1, ‖φ‖² = ‖c‖² + ‖d‖².

Why Haar, and orthogonal: the Jacobian is 1, so a density of (c, d) is the density of φ with
no correction, and the Lebesgue measure of log Z is kept at every level; white noise stays
white, so the variance-exploding noising of the score models acts on every level's channels
independently with the same σ; and the blocks do not overlap, so the details given the coarse
field are local, and a shift of φ by two sites is a shift of (c, d) by one. The price: Haar is
not a smooth wavelet, so the details keep some correlation with neighbouring coarse values,
which the conditional models must learn.

A shift s ∈ {0, 1}^d of the fine lattice before (1) gives 2^d different decompositions of one
configuration (:func:`shifted_split`): the training pairs of the multilevel models use them.
The extents must be even at every level the decomposition reaches.
"""

from __future__ import annotations

import itertools
import math

import jax.numpy as jnp

__all__ = [
    "haar_split",
    "haar_merge",
    "decompose",
    "compose",
    "shifted_split",
    "shifts",
    "coarse_shape",
]

_R = 1.0 / math.sqrt(2.0)


def coarse_shape(shape, levels: int = 1) -> tuple[int, ...]:
    """The lattice extents after ``levels`` halvings; ValueError naming the first odd extent."""
    shape = tuple(int(n) for n in shape)
    for level in range(levels):
        for axis, n in enumerate(shape):
            if n % 2:
                raise ValueError(
                    f"the Haar decomposition needs even extents: axis {axis} has {n} sites at "
                    f"level {level} (shape {list(shape)})"
                )
        shape = tuple(n // 2 for n in shape)
    return shape


def haar_split(phi, ndim: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(coarse, details) of eq. (1)–(2) over the last ``ndim`` axes of ``phi``: coarse has the
    halved extents, details a channel axis of 2^d − 1 before them."""
    batch = phi.shape[: phi.ndim - ndim]
    coarse_shape(phi.shape[phi.ndim - ndim :])
    parts = [phi]
    for i in range(ndim):
        axis = len(batch) + i
        new = []
        for p in parts:
            even = jnp.take(p, jnp.arange(0, p.shape[axis], 2), axis=axis)
            odd = jnp.take(p, jnp.arange(1, p.shape[axis], 2), axis=axis)
            new += [(even + odd) * _R, (even - odd) * _R]
        parts = new  # index in binary: bit i (from the top) is "b" along axis i
    return parts[0], jnp.stack(parts[1:], axis=len(batch))


def haar_merge(coarse, details, ndim: int) -> jnp.ndarray:
    """The inverse (and transpose) of :func:`haar_split`."""
    batch = coarse.ndim - ndim
    parts = [coarse] + [jnp.take(details, c, axis=batch) for c in range(details.shape[batch])]
    for i in reversed(range(ndim)):
        axis = batch + i
        merged = []
        for a, b in zip(parts[0::2], parts[1::2], strict=True):
            even, odd = (a + b) * _R, (a - b) * _R
            shape = list(a.shape)
            shape[axis] *= 2
            out = jnp.stack([even, odd], axis=axis + 1).reshape(shape)
            merged.append(out)
        parts = merged
    return parts[0]


def decompose(phi, ndim: int, levels: int) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
    """The coarsest field after ``levels`` splits and the details, finest first."""
    coarse_shape(phi.shape[phi.ndim - ndim :], levels)
    details = []
    for _ in range(levels):
        phi, d = haar_split(phi, ndim)
        details.append(d)
    return phi, details


def compose(coarsest, details, ndim: int) -> jnp.ndarray:
    """The inverse of :func:`decompose` (details finest first)."""
    phi = coarsest
    for d in reversed(details):
        phi = haar_merge(phi, d, ndim)
    return phi


def shifts(ndim: int) -> list[tuple[int, ...]]:
    """The 2^d offsets s ∈ {0, 1}^d of the fine lattice."""
    return list(itertools.product((0, 1), repeat=ndim))


def shifted_split(phi, ndim: int, shift) -> tuple[jnp.ndarray, jnp.ndarray]:
    """:func:`haar_split` of φ(x + s): the decomposition with blocks offset by ``shift``."""
    axes = tuple(range(phi.ndim - ndim, phi.ndim))
    return haar_split(jnp.roll(phi, tuple(-int(s) for s in shift), axis=axes), ndim)
