"""Periodic lattice geometry: neighbour sums, lattice momenta and Fourier kernels.

Conventions (docs/conventions.md §1): a lattice of shape ``(L0, ..., L_{d-1})`` is periodic; a field
array has the lattice axes *last*, so ``phi.shape == batch + shape`` (the functions taking
``batch_last`` also work on the chain-last layout ``shape + batch`` of the samplers' batched
steps, with the same arithmetic). Lattice momenta are
``p_mu = 2 pi n_mu / L_mu`` and the lattice momentum squared is

    p̂² = Σ_μ 4 sin²(p_μ / 2),

the eigenvalue of minus the nearest-neighbour Laplacian.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "lattice_axes",
    "site_sum",
    "pairwise_sum",
    "neighbour_sum",
    "forward_product_sum",
    "momenta",
    "cos_sum",
    "phat2",
    "rfft_phat2",
]


def lattice_axes(ndim: int, batch_last: bool = False) -> tuple[int, ...]:
    """The last ``ndim`` axes of an array, as negative indices (the first ``ndim`` with
    ``batch_last``: the chain-last layout of a
    :class:`~lattice.samplers.base.BatchedStep`)."""
    return tuple(range(ndim)) if batch_last else tuple(range(-ndim, 0))


def site_sum(x: jnp.ndarray, ndim: int, batch_last: bool = False) -> jnp.ndarray:
    """Σ over the last ``ndim`` axes (the first with ``batch_last``) by a fixed pairwise
    tree of elementwise additions.

    XLA compiles ``jnp.sum`` over sites differently for different batch shapes (how many
    chains run together, how they are sharded), so its rounding — the last bit of an
    observable — would depend on the batch. Here the sites are flattened, zero-padded to a
    power of two and halved repeatedly (x[:h] + x[h:]): the same additions in the same order
    for every chain whatever the batch (and in either layout), so a chain's observables are
    bitwise those of the chain run alone. Pairwise summation also bounds the rounding error
    by O(ε log V).
    """
    if batch_last:  # the same tree along the leading (flattened) site axis (0 + a + b last)
        n = int(np.prod(x.shape[:ndim], dtype=np.int64))
        return pairwise_sum(x.reshape(n, *x.shape[ndim:]), 0, True)
    n = int(np.prod(x.shape[x.ndim - ndim :], dtype=np.int64))
    return pairwise_sum(x.reshape(*x.shape[: x.ndim - ndim], n), -1)


def pairwise_sum(y: jnp.ndarray, axis: int, reduce_last: bool = False) -> jnp.ndarray:
    """Σ along ``axis`` by the fixed tree of :func:`site_sum`: zero-pad to a power of two,
    then add the two halves until one element is left.

    ``reduce_last`` does the last addition as a reduction of two elements (0 + a + b, the
    same value). XLA then keeps the sum a separate kernel: it does not fuse a transpose of
    the result into the tree (which read the sites strided, 4× slower in
    :func:`lattice.numerics.observables.measure`), and it does not recompute the tree for every site
    of a per-chain consumer (HMC's accept/reject select: 2× slower at 16² × 1024,
    docs/PERFORMANCE.md). Used for the chain-last sums, where it is bitwise independent of
    the chain count and the devices (tested); the chain-first :func:`site_sum` keeps the
    plain tree, with which its results were tested bitwise across devices.
    """
    axis = axis % y.ndim
    n = y.shape[axis]
    p = 1 << max(n - 1, 0).bit_length()
    if p != n:
        shape = list(y.shape)
        shape[axis] = p - n
        y = jnp.concatenate([y, jnp.zeros(shape, y.dtype)], axis=axis)
    stop = 2 if reduce_last else 1
    while y.shape[axis] > stop:
        h = y.shape[axis] // 2
        y = lax.slice_in_dim(y, 0, h, axis=axis) + lax.slice_in_dim(y, h, 2 * h, axis=axis)
    if y.shape[axis] == 2:
        return jnp.sum(y, axis=axis)
    return lax.index_in_dim(y, 0, axis, keepdims=False)


def neighbour_sum(phi: jnp.ndarray, ndim: int, batch_last: bool = False) -> jnp.ndarray:
    """Σ_μ (φ_{x+μ̂} + φ_{x−μ̂}) over the last ``ndim`` axes (the first ``ndim`` with
    ``batch_last``), periodic.

    The terms are added in the same order in both layouts. On an axis of length 2 the two
    neighbours coincide (counted twice); on an axis of length 1 the site is its own
    neighbour (counted twice), exactly as ``jnp.roll`` gives.
    """
    total = jnp.zeros_like(phi)
    for ax in lattice_axes(ndim, batch_last):
        total = total + jnp.roll(phi, 1, axis=ax) + jnp.roll(phi, -1, axis=ax)
    return total


def forward_product_sum(phi: jnp.ndarray, ndim: int, batch_last: bool = False) -> jnp.ndarray:
    """Per-site Σ_μ φ_x φ_{x+μ̂} (forward directions only), periodic."""
    total = jnp.zeros_like(phi)
    for ax in lattice_axes(ndim, batch_last):
        total = total + jnp.roll(phi, -1, axis=ax)
    return phi * total


def momenta(shape: Sequence[int]) -> list[np.ndarray]:
    """Lattice momenta p_μ = 2π n/L_μ, broadcastable to ``shape`` (numpy, float64)."""
    d = len(shape)
    out = []
    for mu, L in enumerate(shape):
        p = 2.0 * np.pi * np.arange(L) / L
        out.append(p.reshape([L if nu == mu else 1 for nu in range(d)]))
    return out


def cos_sum(shape: Sequence[int]) -> np.ndarray:
    """Σ_μ cos p_μ on the full momentum grid (numpy, float64)."""
    return sum(np.cos(p) for p in momenta(shape)) * np.ones(tuple(shape))


def phat2(shape: Sequence[int]) -> np.ndarray:
    """p̂² = Σ_μ 4 sin²(p_μ/2) on the full momentum grid (numpy, float64).

    >>> float(phat2([4]).max())
    4.0
    """
    return sum(4.0 * np.sin(p / 2.0) ** 2 for p in momenta(shape)) * np.ones(tuple(shape))


def rfft_phat2(shape: Sequence[int]) -> np.ndarray:
    """p̂² on the half grid used by ``jnp.fft.rfftn`` (last axis has L//2 + 1 entries)."""
    full = phat2(shape)
    return full[..., : shape[-1] // 2 + 1]
