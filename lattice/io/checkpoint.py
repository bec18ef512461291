"""Checkpoints: a pytree of arrays and some attributes in one HDF5 file, replaced atomically.

One format for every run directory (``lattice run`` and ``lattice train``): each leaf of the
pytree is a dataset named by its key path, the path's keys joined with ``/`` — a dict key or an
attribute by its name, a tuple entry by its index. A run's ``{"state": ChainState, "keys": …}``
gives ``state/phi``, ``state/momentum``, …, ``keys``; a training's ``(params, opt_state, ema)``
gives ``0/blocks/0/conv/weight``, …. Reading checks the file against a *template* of the
expected tree (arrays or ``jax.ShapeDtypeStruct``): every leaf must be there with the
template's shape and dtype, or :class:`CheckpointError` names the first that is not.

Older files stay readable: run checkpoints were already named by path (``state/<field>``);
training checkpoints of before this format named their leaves ``leaf_00000``, ``leaf_00001``,
… in flattening order, and are read in that order (with the same shape and dtype check).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import jax
import numpy as np

from lattice.io.atomic import fsync_dir
from lattice.io.ensemble import EnsembleError, plain_value, short_error

__all__ = [
    "CheckpointError",
    "leaf_names",
    "write_checkpoint",
    "read_checkpoint",
    "read_checkpoint_attrs",
]

#: dataset names of the format before path names (training checkpoints): leaf_00000, …
_LEGACY_LEAF = "leaf_{:05d}"


class CheckpointError(EnsembleError):
    """A checkpoint that cannot be read, or does not hold the expected tree."""


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey / FlattenedIndexKey
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def leaf_names(tree: Any) -> list[str]:
    """The dataset name of every leaf of ``tree``, in flattening order."""
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return ["/".join(_key_name(k) for k in path) or "leaf" for path, _ in paths]


def write_checkpoint(path: str | Path, tree: Any, attrs: Mapping[str, Any]) -> None:
    """Write ``tree`` (its leaves as datasets named by :func:`leaf_names`) and ``attrs``
    atomically: temporary file, fsync, ``os.replace``, fsync of the directory."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    leaves = jax.tree_util.tree_leaves(tree)
    with h5py.File(tmp, "w") as f:
        for name, leaf in zip(leaf_names(tree), leaves, strict=True):
            f.create_dataset(name, data=np.asarray(leaf))
        for k, v in attrs.items():
            f.attrs[k] = v
        f.flush()
        os.fsync(f.id.get_vfd_handle())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _read_all(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with h5py.File(path, "r") as f:
            arrays: dict[str, np.ndarray] = {}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    arrays[name] = obj[()]

            f.visititems(visit)
            return arrays, {k: plain_value(v) for k, v in f.attrs.items()}
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({short_error(e)})") from None


def read_checkpoint_attrs(path: str | Path) -> dict[str, Any]:
    """Only the attributes of a checkpoint (e.g. the ensemble a training started on)."""
    try:
        with h5py.File(path, "r") as f:
            return {k: plain_value(v) for k, v in f.attrs.items()}
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({short_error(e)})") from None


def read_checkpoint(path: str | Path, template: Any) -> tuple[Any, dict[str, Any]]:
    """The tree stored in ``path``, with the structure of ``template``, and the attributes.

    Every leaf of ``template`` must be stored with its shape and dtype (by its path name, or
    for the older training format by its position); otherwise :class:`CheckpointError` says
    which leaf differs. Leaves come back as numpy arrays."""
    path = Path(path)
    arrays, attrs = _read_all(path)
    names = leaf_names(template)
    want, treedef = jax.tree_util.tree_flatten(template)
    if not any(n in arrays for n in names) and _LEGACY_LEAF.format(0) in arrays:
        stored = [_LEGACY_LEAF.format(i) for i in range(len(want))]
        extra = _LEGACY_LEAF.format(len(want))
    else:
        stored, extra = names, None
    missing = [n for n, s in zip(names, stored, strict=True) if s not in arrays]
    if missing or (extra is not None and extra in arrays):
        what = f"no {', '.join(missing[:3])}" if missing else "more leaves than expected"
        raise CheckpointError(
            f"{path}: written for another structure ({what}); start again with --force"
        )
    leaves = []
    for n, s, w in zip(names, stored, want, strict=True):
        a = arrays[s]
        shape, dtype = tuple(np.shape(w)), np.result_type(w)
        if a.shape != shape or a.dtype != dtype:
            raise CheckpointError(
                f"{path}: written for another structure ({n} is {a.dtype}{list(a.shape)}, "
                f"expected {dtype}{list(shape)}); start again with --force"
            )
        leaves.append(a)
    return jax.tree_util.tree_unflatten(treedef, leaves), attrs
