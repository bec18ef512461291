"""The ensemble file's configuration writes: O_DIRECT and HDF5 paths give the same file."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from lattice.io.ensemble import EnsembleWriter
from lattice.io.reader import open_ensemble


def _write(path, direct: bool, saved: np.ndarray, shape, dtype, blocks) -> EnsembleWriter:
    chains, n_saved = saved.shape[1], saved.shape[0]
    w = EnsembleWriter.create(
        path,
        config_toml="",
        config_attrs={},
        chains=chains,
        samples=n_saved,
        shape=shape,
        n_saved=n_saved,
        dtype=dtype,
        observable_shapes={"m": ()},
        block=blocks,
    )
    w = EnsembleWriter(path, direct=direct).open()
    used = w.direct
    for first in range(0, n_saved, blocks):
        part = saved[first : first + blocks]
        n = part.shape[0]
        w.write_block(
            first,
            {"m": np.zeros((chains, n), dtype)},
            {k: np.ones((chains, n), dtype) for k in ("acceptance", "exp_minus_dh")},
        )
        w.write_configs(part, first, np.arange(first, first + n))
        w.commit(first + n, first + n, 0.0, 0)
    w.close()
    return used


def _o_direct_works(path) -> bool:
    """Whether this file system takes an aligned O_DIRECT write (tmpfs does not)."""
    flag = getattr(os, "O_DIRECT", None)
    if flag is None:
        return False
    import mmap

    probe = path / "probe"
    probe.write_bytes(b"\0" * 4096)
    try:
        fd = os.open(probe, os.O_WRONLY | flag)
    except OSError:
        return False
    try:
        buf = mmap.mmap(-1, 4096)
        os.pwrite(fd, buf, 0)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("shape", "dtype"), [((32, 32), np.float32), ((16, 16), np.float64), ((5, 7), np.float64)]
)
def test_direct_and_hdf5_writes_store_the_same_configurations(tmp_path, seed, shape, dtype):
    rng = np.random.default_rng(seed)
    saved = rng.standard_normal((23, 3, *shape)).astype(dtype)  # [saved, chains, *shape]
    used = {}
    for direct in (True, False):
        path = tmp_path / f"e{int(direct)}.h5"
        used[direct] = _write(path, direct, saved, shape, dtype, blocks=5)
        with h5py.File(path) as f:
            np.testing.assert_array_equal(f["configs"][...], np.swapaxes(saved, 0, 1))
            np.testing.assert_array_equal(f["configs_index"][...], np.arange(23))
        assert open_ensemble(path).saved == 23
    assert used[False] is False
    chunk_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    # O_DIRECT is used exactly where the file system takes it and chunks are 4 KiB multiples
    assert used[True] is (_o_direct_works(tmp_path) and chunk_bytes % 4096 == 0)


def test_chunks_of_a_chain_lie_back_to_back_and_aligned(tmp_path):
    """The layout the direct writer relies on: aligned chunks, few breaks per chain."""
    path = tmp_path / "e.h5"
    shape, chains, n = (32, 32), 4, 300
    EnsembleWriter.create(
        path,
        config_toml="",
        config_attrs={},
        chains=chains,
        samples=n,
        shape=shape,
        n_saved=n,
        dtype=np.float32,
        observable_shapes={"m": ()},
        block=100,
    )
    with h5py.File(path) as f:
        ds = f["configs"]
        offsets = np.zeros((chains, n), np.int64)

        def visit(info):
            offsets[info.chunk_offset[0], info.chunk_offset[1]] = info.byte_offset

        ds.id.chunk_iter(visit)
    assert (offsets % 4096 == 0).all()
    breaks = np.count_nonzero(np.diff(offsets, axis=1) != 4096)
    assert breaks <= chains * 2, breaks
