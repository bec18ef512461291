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

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import jax
import numpy as np

from lattice.io.atomic import fsync_dir, write_file_atomic
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


def _digest(a: np.ndarray) -> str:
    """SHA-256 of a leaf's dtype, shape and bytes."""
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def write_checkpoint(path: str | Path, tree: Any, attrs: Mapping[str, Any]) -> None:
    """Write ``tree`` (its leaves as datasets named by :func:`leaf_names`, each with the
    SHA-256 of its bytes as attribute ``sha256``) and ``attrs`` atomically.

    The file is built in memory and written with plain writes: temporary file, fsync,
    ``os.replace``, fsync of the directory. A full disk therefore fails as one ``OSError``
    before the old checkpoint is touched (HDF5 writing to disk itself would report part of
    the failure only as its objects are freed), and the temporary file is removed."""
    path = Path(path)
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        for name, leaf in zip(leaf_names(tree), jax.tree_util.tree_leaves(tree), strict=True):
            a = np.asarray(leaf)
            f.create_dataset(name, data=a).attrs["sha256"] = _digest(a)
        for k, v in attrs.items():
            f.attrs[k] = v
    write_file_atomic(path, image.getbuffer())
    fsync_dir(path.parent)


def _read_all(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every dataset and the attributes; a dataset whose bytes do not match its ``sha256``
    (files of before the digest have none) is a damaged checkpoint, named."""
    try:
        with h5py.File(path, "r") as f:
            arrays: dict[str, np.ndarray] = {}
            damaged: list[str] = []

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    arrays[name] = a = obj[()]
                    want = obj.attrs.get("sha256")
                    if want is not None and _digest(np.asarray(a)) != plain_value(want):
                        damaged.append(name)

            f.visititems(visit)
            attrs = {k: plain_value(v) for k, v in f.attrs.items()}
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({short_error(e)})") from None
    if damaged:
        raise CheckpointError(
            f"{path}: damaged checkpoint ({damaged[0]} does not match its checksum); "
            "start again with --force"
        )
    return arrays, attrs


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
        shape = tuple(np.shape(w))
        dtype = np.dtype(w.dtype) if hasattr(w, "dtype") else np.result_type(w)
        if a.shape != shape or a.dtype != dtype:
            raise CheckpointError(
                f"{path}: written for another structure ({n} is {a.dtype}{list(a.shape)}, "
                f"expected {dtype}{list(shape)}); start again with --force"
            )
        leaves.append(a)
    return jax.tree_util.tree_unflatten(treedef, leaves), attrs
