"""The orthonormal Haar decomposition (lattice.numerics.wavelet): the map is orthogonal (its
matrix, built column by column, satisfies W Wᵀ = 1 to round-off), the inverse is exact, the
coarse field is 2^{d/2} × the block mean, a shift of φ by two sites shifts (c, d) by one, the
2^d shifted decompositions differ, and odd extents are refused naming the axis."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice.numerics.wavelet import (
    coarse_shape,
    compose,
    decompose,
    haar_merge,
    haar_split,
    shifted_split,
    shifts,
)


def _matrix(shape):
    """W as a dense matrix: column j is the split of the j-th unit field, flattened."""
    d, n = len(shape), int(np.prod(shape))
    cols = []
    for j in range(n):
        e = jnp.zeros(n).at[j].set(1.0).reshape(shape)
        c, det = haar_split(e, d)
        cols.append(np.concatenate([np.ravel(c), np.ravel(det)]))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("shape", [(4,), (4, 6), (2, 4, 2)])
def test_the_map_is_orthogonal(shape):
    w = _matrix(shape)
    np.testing.assert_allclose(w @ w.T, np.eye(len(w)), atol=1e-14)
    assert abs(abs(np.linalg.det(w)) - 1) < 1e-12


@pytest.mark.parametrize("shape, levels", [((8, 8), 3), ((4, 8, 4), 2), ((16,), 4)])
def test_inverse_norm_and_coarse_mean(shape, levels):
    d = len(shape)
    phi = jax.random.normal(jax.random.key(0), (3, *shape))  # a batch axis in front
    c, details = decompose(phi, d, levels)
    assert c.shape == (3, *coarse_shape(shape, levels))
    assert [t.shape[1] for t in details] == [2**d - 1] * levels
    np.testing.assert_allclose(compose(c, details, d), phi, atol=1e-13)
    norm = jnp.sum(c**2) + sum(jnp.sum(t**2) for t in details)
    np.testing.assert_allclose(norm, jnp.sum(phi**2), rtol=1e-13)
    c1, _ = haar_split(phi, d)
    block = phi.reshape(3, *[x for n in shape for x in (n // 2, 2)]).mean(
        axis=tuple(range(2, 2 + 2 * d, 2))
    )
    np.testing.assert_allclose(c1, 2 ** (d / 2) * block, atol=1e-13)
    np.testing.assert_allclose(haar_merge(*haar_split(phi, d), d), phi, atol=1e-13)


def test_a_shift_by_two_sites_is_a_shift_by_one_and_shifts_differ():
    phi = jax.random.normal(jax.random.key(1), (8, 6))
    c, det = haar_split(phi, 2)
    c2, det2 = haar_split(jnp.roll(phi, (2, -2), axis=(0, 1)), 2)
    np.testing.assert_allclose(c2, jnp.roll(c, (1, -1), axis=(0, 1)), atol=1e-14)
    np.testing.assert_allclose(det2, jnp.roll(det, (1, -1), axis=(1, 2)), atol=1e-14)
    coarse = [np.asarray(shifted_split(phi, 2, s)[0]) for s in shifts(2)]
    assert len(coarse) == 4
    for i in range(4):
        for j in range(i):
            assert not np.allclose(coarse[i], coarse[j])
    np.testing.assert_allclose(shifted_split(phi, 2, (0, 0))[0], c, atol=0)


def test_odd_extents_are_refused_naming_the_axis():
    with pytest.raises(ValueError, match="axis 1 has 5 sites at level 0"):
        haar_split(jnp.zeros((4, 5)), 2)
    with pytest.raises(ValueError, match="axis 0 has 3 sites at level 1"):
        decompose(jnp.zeros((6, 8)), 2, 2)
