"""The tables of the path sampler's kernels for a model: u(σ) = σ²Γ(σ) of the analytic kernel
(``path.py`` eq. (3)) and M(σ, p), C(p) of the spectral kernel (``spectral.py`` eq. (1)).

A model trained by this lattice carries both in its model.json. For an older model they are
measured here, deterministically (a resumed run rebuilds the same kernel), on the saved
configurations φ [chains, saved, *shape] of its training ensemble:

- u(σ) on the last ≈ ``NORM_FIELDS`` configurations, the same number from every chain;
- M(σ, p) on the last ≈ ``SPECTRAL_FIELDS``, C(p) on all of them.

The measurements are pure functions of arrays (:func:`measure_norm_function`,
:func:`measure_spectral_table`). :func:`norm_function_of` and :func:`spectral_table_of` take
the stored table, else call ``read_configs(model)`` → (φ, source), a reader given by the
caller (:func:`lattice.io.model.training_configs`; this layer reads no files), only when the
model carries no table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lattice.score.model import ModelError
from lattice.score.path import NORM_FIELDS, norm_function, norm_table, stored_norm_function
from lattice.score.spectral import (
    SPECTRAL_FIELDS,
    SpectralTable,
    measure_spectral,
    spectral_from_dict,
    stored_spectral_table,
)

__all__ = [
    "last_fields",
    "measure_norm_function",
    "measure_spectral_table",
    "norm_function_of",
    "spectral_table_of",
]

#: reads a model's training configurations: model → (φ [chains, saved, *shape], source);
#: raises ModelError when it cannot
ConfigReader = Callable[[Any], tuple[np.ndarray, str]]


def last_fields(phi, n: int, shape) -> np.ndarray:
    """The last ≈ n configurations of ``phi`` [chains, saved, *shape] (the same number,
    max(1, n // chains), from every chain), float32 [N, *shape]."""
    last = np.asarray(phi[:, -max(1, n // phi.shape[0]) :]).reshape((-1,) + tuple(shape))
    return last.astype(np.float32)


def measure_norm_function(model, phi) -> Callable[[np.ndarray], np.ndarray]:
    """u(σ) of ``model`` (a :class:`~lattice.score.model.ScoreModel`) measured on the last
    ``NORM_FIELDS`` configurations of ``phi`` [chains, saved, *shape]
    (:func:`~lattice.score.path.norm_table`), interpolated in log σ."""
    table = norm_table(model.net.batch, model.sde, last_fields(phi, NORM_FIELDS, model.shape))
    return norm_function(table["sigma"], table["u"])


def measure_spectral_table(model, phi, source: str) -> SpectralTable:
    """M(σ, p) of ``model`` measured on the last ``SPECTRAL_FIELDS`` configurations of ``phi``
    [chains, saved, *shape] and C(p) on all of them (:func:`~lattice.score.spectral.
    measure_spectral`); ``source`` (the ensemble's path) goes into the table's description."""
    every = np.asarray(phi).reshape((-1,) + model.shape).astype(np.float32)
    last = last_fields(phi, SPECTRAL_FIELDS, model.shape)
    table = measure_spectral(model.net.batch, model.sde, last, every)
    return spectral_from_dict(
        table, f"measured at run start on {source} ({table['fields']} configs)"
    )


def norm_function_of(model, read_configs: ConfigReader) -> Callable[[np.ndarray], np.ndarray]:
    """u(σ) of a model for the analytic path kernel: what it carries
    (:func:`~lattice.score.path.stored_norm_function`), else measured on its training
    configurations (:func:`measure_norm_function`)."""
    stored = stored_norm_function(model)
    if stored is not None:
        return stored
    phi, _ = _configs(model, read_configs, "score_norms", "analytic path kernel", "em")
    return measure_norm_function(model, phi)


def spectral_table_of(model, read_configs: ConfigReader) -> SpectralTable:
    """M(σ, p) and C(p) of a model for the spectral path kernel: what it carries
    (:func:`~lattice.score.spectral.stored_spectral_table`), else measured on its training
    configurations (:func:`measure_spectral_table`)."""
    stored = stored_spectral_table(model)
    if stored is not None:
        return stored
    phi, src = _configs(model, read_configs, "spectral table", "spectral path kernel", "analytic")
    return measure_spectral_table(model, phi, src)


def _configs(model, read_configs: ConfigReader, table: str, user: str, other: str):
    """``read_configs(model)``, its :class:`ModelError` restated naming the missing ``table``,
    its ``user`` and the ``other`` kernel, which needs no table."""
    try:
        return read_configs(model)
    except ModelError:
        where = model.path or "the model"
        src = (model.meta.get("data") or {}).get("ensemble")
        raise ModelError(
            f"{where}: no {table} in model.json, which the {user} needs, and its training"
            f" ensemble ({src}) cannot be read to measure it; retrain with this lattice, or"
            f" use kernel = '{other}'"
        ) from None
