"""Open whatever a user points at as an ensemble: a file, a run directory or a manifest."""

from __future__ import annotations

from pathlib import Path

from lattice.io.ensemble import Ensemble, open_ensemble_file
from lattice.io.manifest import MANIFEST, open_manifest

__all__ = ["open_ensemble"]


def open_ensemble(path: str | Path, load_observables: bool = True) -> Ensemble:
    """Open an ensemble for reading: an ``ensemble.h5``, a run directory, or a multi-process
    run (its directory or ``manifest.json``: the shards joined, :mod:`lattice.io.manifest`).
    Raises :class:`~lattice.io.ensemble.EnsembleError` with a clear message for a missing,
    foreign, truncated or corrupt file."""
    path = Path(path)
    if path.is_dir():
        path = path / (MANIFEST if (path / MANIFEST).exists() else "ensemble.h5")
    if path.suffix == ".json":
        return open_manifest(path, load_observables)
    return open_ensemble_file(path, load_observables)
