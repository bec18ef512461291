"""The model directory (``lattice train``'s output): ``model.eqx`` (the network's weights,
equinox serialisation) and ``model.json`` (format, theory, SDE, network spec, provenance,
training record, the sha256 of the weights and the kernel tables).

This module only reads and writes: a model is loaded into the skeleton that
:func:`~lattice.score.factory.build_network` makes from the stored spec, and the configurations
of a model's training ensemble are read here (:func:`training_configs`) for the kernel tables
that :mod:`lattice.score.tables` measures on them."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import numpy as np

from lattice._version import __version__
from lattice.io.atomic import write_file_atomic
from lattice.io.reader import open_ensemble
from lattice.score.factory import architecture, build_network
from lattice.score.model import ModelError, ScoreModel, theory_from_dict, theory_to_dict
from lattice.score.multilevel import MultilevelModel
from lattice.score.network import NetworkSpec
from lattice.score.sde import SDE, make_sde
from lattice.score.spectral import spectral_from_dict

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS",
    "META",
    "save_model",
    "save_multilevel",
    "load_model",
    "training_configs",
    "sde_to_dict",
    "sde_from_dict",
]

FORMAT = "lattice-score-model"
FORMAT_VERSION = 1
WEIGHTS = "model.eqx"
META = "model.json"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sde_to_dict(sde: SDE) -> dict[str, Any]:
    d = {"kind": sde.name, "sigma_min": float(sde.sigma_min), "sigma_max": float(sde.sigma_max)}
    if sde.name == "vp":
        d.update(beta_min=sde.beta_min, beta_max=sde.beta_max)
    d["t_min"] = float(sde.t_min)
    return d


def sde_from_dict(d: dict[str, Any]) -> SDE:
    return make_sde(
        d["kind"], d["sigma_min"], d["sigma_max"], d.get("beta_min", 0.1), d.get("beta_max", 20.0)
    )


def save_model(directory: str | Path, net, sde: SDE, meta: dict[str, Any]) -> Path:
    """Write ``model.eqx`` then ``model.json`` (atomically, in that order) of a network made
    by :func:`~lattice.score.factory.build_network` (any architecture); returns the dir."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, net)
    write_file_atomic(directory / WEIGHTS, buf.getvalue())
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lattice_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "theory": theory_to_dict(net.theory),
        "sde": sde_to_dict(sde),
        "sigma_data": net.sigma_data,
        "network": net.spec.to_dict(),
        "receptive_field": net.receptive_field,
        **meta,
    }
    return _write_meta(directory, doc)


def save_multilevel(directory: str | Path, model, spec: NetworkSpec, meta: dict[str, Any]):
    """Write a :class:`~lattice.score.multilevel.MultilevelModel`'s directory: ``model.eqx``
    (the networks, coarse first, as one tuple) then ``model.json`` with ``kind =
    "multilevel"`` and its ``multilevel`` table (levels, SDEs, σ_d, σ_c, the transfer scale
    and the spectral tables of every level)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, (model.coarse, *model.conditionals))
    write_file_atomic(directory / WEIGHTS, buf.getvalue())
    tables = meta.pop("spectral_levels")
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "multilevel",
        "lattice_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "theory": theory_to_dict(model.theory),
        "network": spec.to_dict(),
        "multilevel": {
            "levels": model.levels,
            "coarse_shape": list(model.coarse_shape),
            "physics": model.conditionals[0].theory is not None,
            "sigma_data": [model.conditionals[j].sigma_data for j in range(model.levels)]
            + [model.coarse.sigma_data],
            "sigma_coarse": [c.sigma_coarse for c in model.conditionals],
            "scale": model.scale,
            "sdes": [sde_to_dict(x) for x in model.sdes],
            "spectral": tables,
        },
        **meta,
    }
    return _write_meta(directory, doc)


#: the parts of model.json a sampler computes with, covered by ``meta_sha256``
SAMPLER_KEYS = ("format_version", "kind", "theory", "sde", "sigma_data", "network",
                "receptive_field", "multilevel", "score_norms", "spectral")  # fmt: skip
#: the largest noise scale a model may declare (σ_max = √(V G) is ~10³ on the largest
#: lattices in use; a larger one is a damaged or edited file, and its path weights overflow)
MAX_SIGMA = 1e8


def meta_digest(doc: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys) of ``doc``'s :data:`SAMPLER_KEYS`."""
    part = {k: doc[k] for k in SAMPLER_KEYS if k in doc}
    text = json.dumps(part, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_meta(directory: Path, doc: dict[str, Any]) -> Path:
    """``model.json``, last and atomically: ``doc`` with the weights' SHA-256 and the digest of
    the numbers a sampler uses (``meta_sha256``, :func:`meta_digest`)."""
    doc = {**doc, "weights": {"file": WEIGHTS, "sha256": sha256_of(directory / WEIGHTS)}}
    doc["meta_sha256"] = meta_digest(doc)
    write_file_atomic(directory / META, json.dumps(doc, indent=2, allow_nan=True) + "\n")
    return directory


def _nonfinite(x: Any, where: str) -> str | None:
    """The first non-finite number in a JSON value, named by its key path, else None."""
    if isinstance(x, dict):
        return next((w for k, v in x.items() if (w := _nonfinite(v, f"{where}.{k}"))), None)
    if isinstance(x, list):
        return next((w for i, v in enumerate(x) if (w := _nonfinite(v, f"{where}[{i}]"))), None)
    if isinstance(x, float) and not np.isfinite(x):
        return f"{where} = {x}"
    return None


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    """Refuse a model.json whose sampler numbers were edited (``meta_sha256``) or, in a file of
    before the digest, are not finite or out of range (σ_min > 0, σ_min < σ_max ≤
    :data:`MAX_SIGMA`, σ_d > 0)."""
    want = meta.get("meta_sha256")
    if want is not None and want != meta_digest(meta):
        raise ModelError(
            f"{path}: the numbers the sampler uses (theory, sde, network, tables) do not match "
            "their checksum meta_sha256: the file was edited or damaged"
        )
    for key in ("theory", "sde", "sigma_data", "multilevel", "score_norms", "spectral"):
        bad = _nonfinite(meta.get(key), key)
        if bad:
            raise ModelError(f"{path}: {bad} is not finite")
    ml = meta.get("multilevel") or {}
    sdes = ([meta["sde"]] if "sde" in meta else []) + list(ml.get("sdes", []))
    scales = [("sigma_data", meta.get("sigma_data"))] + [
        (f"multilevel.sigma_data[{i}]", v) for i, v in enumerate(ml.get("sigma_data", []))
    ]
    try:
        for i, sde in enumerate(sdes):
            lo, hi = float(sde["sigma_min"]), float(sde["sigma_max"])
            if not 0 < lo < hi <= MAX_SIGMA:
                name = "sde" if i == 0 and "sde" in meta else f"multilevel.sdes[{i}]"
                raise ModelError(
                    f"{path}: {name}: sigma_min = {lo:g}, sigma_max = {hi:g} (allowed: "
                    f"0 < sigma_min < sigma_max <= {MAX_SIGMA:g})"
                )
        for name, v in scales:
            if v is not None and not float(v) > 0:
                raise ModelError(f"{path}: {name} = {v} (allowed: > 0)")
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{path}: damaged metadata ({type(e).__name__}: {e})") from None


def _check_weights(weights: Path, expected: str) -> None:
    if sha256_of(weights) != expected:
        raise ModelError(
            f"{weights}: the weights do not match the checksum in {META} (corrupt or replaced)"
        )


def _load_multilevel(d: Path, meta: dict, weights: Path):
    """The :class:`~lattice.score.multilevel.MultilevelModel` of a checked model directory."""
    where = d / META
    try:
        ml = meta["multilevel"]
        theory = theory_from_dict(meta["theory"])
        spec = NetworkSpec.from_dict(meta["network"])
        n = int(ml["levels"])
        sd, sc = [float(v) for v in ml["sigma_data"]], [float(v) for v in ml["sigma_coarse"]]
        sdes = tuple(sde_from_dict(x) for x in ml["sdes"])
        tables = tuple(
            spectral_from_dict(t, str(t.get("source", "model.json"))) for t in ml["spectral"]
        )
        physics, scale = bool(ml["physics"]), float(ml["scale"])
        if not (len(sd) == len(sdes) == len(tables) == n + 1 and len(sc) == n):
            raise ValueError(f"{n} levels, but the tables have other lengths")
        # the skeleton the weights are read into (an unknown architecture: ValueError)
        like = build_network(spec, theory, sd, levels=n, sigma_coarse=sc, physics=physics)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{where}: damaged metadata ({type(e).__name__}: {e})") from None
    try:
        nets = eqx.tree_deserialise_leaves(weights, like)
    except Exception as e:  # equinox/numpy raise assorted errors for a bad file
        raise ModelError(f"{weights}: unreadable weights ({type(e).__name__}: {e})") from None
    return MultilevelModel(
        coarse=nets[0],
        conditionals=tuple(nets[1:]),
        sdes=sdes,
        theory=theory,
        scale=scale,
        tables=tables,
        meta=meta,
        path=d,
    )


def load_model(directory: str | Path) -> ScoreModel:
    """Read a model directory; :class:`ModelError` names what is missing or damaged."""
    d = Path(directory)
    if d.suffix == ".json" and d.is_file():
        d = d.parent
    if not d.is_dir():
        raise ModelError(f"{d}: no such model directory")
    meta_path = d / META
    if not meta_path.exists():
        hint = (
            " (training is unfinished: continue it with `lattice resume " + str(d) + "`)"
            if (d / "checkpoint.h5").exists()
            else ""
        )
        raise ModelError(f"{d}: not a trained model (no {META}){hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{meta_path}: unreadable ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{meta_path}: not a lattice score model (no format = '{FORMAT}')")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"{meta_path}: format_version {meta['format_version']} is newer than this lattice"
            f" ({FORMAT_VERSION})"
        )
    _check_meta(meta_path, meta)
    weights = d / WEIGHTS
    if not weights.exists():
        raise ModelError(f"{d}: the weights file {WEIGHTS} is missing")
    try:
        expected = meta["weights"]["sha256"]
    except (KeyError, TypeError) as e:
        raise ModelError(f"{meta_path}: damaged metadata ({type(e).__name__}: {e})") from None
    if meta.get("kind") == "multilevel":
        _check_weights(weights, expected)
        return _load_multilevel(d, meta, weights)
    try:
        theory = theory_from_dict(meta["theory"])
        spec = NetworkSpec.from_dict(meta["network"])
        sde = sde_from_dict(meta["sde"])
        sigma_data = float(meta["sigma_data"])
        architecture(spec.architecture)  # known to this lattice (ValueError)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{meta_path}: damaged metadata ({type(e).__name__}: {e})") from None
    _check_weights(weights, expected)
    like = build_network(spec, theory, sigma_data, seed=0)
    try:
        net = eqx.tree_deserialise_leaves(weights, like)
    except Exception as e:  # equinox/numpy raise assorted errors for a bad file
        raise ModelError(f"{weights}: unreadable weights ({type(e).__name__}: {e})") from None
    return ScoreModel(net=net, sde=sde, meta=meta, path=d)


def training_configs(model) -> tuple[np.ndarray, str]:
    """The saved configurations [chains, saved, *shape] of the ensemble a model was trained on
    (``data.ensemble`` of its model.json) and that path; :class:`ModelError` if none is
    recorded or it cannot be read. Only reads: :mod:`lattice.score.tables` measures."""
    src = (model.meta.get("data") or {}).get("ensemble")
    if src is None and (model.meta.get("data") or {}).get("from") == "action":
        raise ModelError(
            f"{model.path or 'the model'}: trained from the action alone (no ensemble): it has"
            " only its spectral table (use kernel = 'spectral', the default)"
        )
    try:
        phi, _ = open_ensemble(src, load_observables=False).configs()
    except Exception:  # no ensemble recorded, moved, or unreadable
        where = model.path or "the model"
        raise ModelError(f"{where}: its training ensemble ({src}) cannot be read") from None
    return phi, src
