"""Checkpoints: named arrays and attributes in one HDF5 file, replaced atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lattice.io.atomic import fsync_dir
from lattice.io.ensemble import EnsembleError, plain_value, short_error

__all__ = ["write_checkpoint", "read_checkpoint"]


def write_checkpoint(
    path: str | Path, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
) -> None:
    """Write a checkpoint atomically: temporary file, fsync, ``os.replace``, fsync the dir."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=np.asarray(v))
        for k, v in attrs.items():
            f.attrs[k] = v
        f.flush()
        os.fsync(f.id.get_vfd_handle())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with h5py.File(path, "r") as f:
            arrays: dict[str, np.ndarray] = {}
            f.visititems(
                lambda name, obj: (
                    arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
            )
            return arrays, {k: plain_value(v) for k, v in f.attrs.items()}
    except OSError as e:
        raise EnsembleError(f"{path}: unreadable checkpoint ({short_error(e)})") from None
