"""A trained score model on disk, and the checks that it fits the theory it is asked to sample.

A model directory (``docs/score.md``) holds::

    config.toml           the resolved training config
    model.eqx             the EMA weights (equinox.tree_serialise_leaves)
    model.json            what the weights mean: format, theory and lattice shape, SDE, σ_d,
                          network spec, data provenance, losses, diagnostics, sha256 of model.eqx
    history.csv           the loss history
    loss.png, val_loss_sigma.png   diagnostic plots
    train.log             the log

``model.json`` is written last, atomically: a directory without it holds an unfinished training
run (with ``checkpoint.h5``), never a model.

The model's score in the SDE's own variable x = α(t) y (``sde.py`` eq. (2))::

    ∇_x log p_t(x) = ŝ_θ(x/α(t), σ(t)) / α(t)
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from ..ensemble import write_file_atomic
from ..phi4 import Phi4
from .network import NetworkSpec, ScoreNet, build_network
from .sde import SDE, make_sde

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelError",
    "ScoreModel",
    "save_model",
    "load_model",
    "check_compatible",
    "provenance",
    "theory_to_dict",
    "theory_from_dict",
]

FORMAT = "lattice-score-model"
FORMAT_VERSION = 1
WEIGHTS = "model.eqx"
META = "model.json"


class ModelError(Exception):
    """A missing, corrupt or incompatible model; the CLI prints it and exits with status 2."""

    exit_code = 2


def theory_to_dict(theory: Phi4) -> dict[str, Any]:
    """The theory as model.json stores it: shape, form and the couplings of that form."""
    d: dict[str, Any] = {"shape": list(theory.shape), "form": theory.form, "lambda": theory.lam}
    d["kappa" if theory.form == "kappa" else "m2"] = (
        theory.kappa if theory.form == "kappa" else theory.m2
    )
    return d


def theory_from_dict(d: dict[str, Any]) -> Phi4:
    if d["form"] == "kappa":
        return Phi4.kappa_form(d["shape"], d["kappa"], d["lambda"])
    if d["form"] == "mass":
        return Phi4.mass_form(d["shape"], d["m2"], d["lambda"])
    raise ValueError(f"unknown action form {d['form']!r}")


@dataclass(frozen=True)
class ScoreModel:
    """A trained network with its SDE: ``score(x, t)`` ≈ ∇_x log p_t(x) for a batch x."""

    net: ScoreNet
    sde: SDE
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def theory(self) -> Phi4:
        return self.net.theory

    @property
    def shape(self) -> tuple[int, ...]:
        return self.net.theory.shape

    @property
    def receptive_field(self) -> int | None:
        """The network's receptive field R (None: global), see ``network.py``."""
        return getattr(self.net, "receptive_field", None)

    def score(self, x: jnp.ndarray, t) -> jnp.ndarray:
        """∇_x log p_t(x) = ŝ_θ(x/α, σ(t))/α for x [B, *shape], t scalar or [B]."""
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        a = self.sde.alpha(t).astype(x.dtype)
        a = a.reshape((-1,) + (1,) * (x.ndim - 1))
        return self.net.batch(x / a, self.sde.sigma(t).astype(x.dtype)) / a


def _sha256(path: Path) -> str:
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


def save_model(directory: str | Path, net: ScoreNet, sde: SDE, meta: dict[str, Any]) -> Path:
    """Write ``model.eqx`` then ``model.json`` (atomically, in that order); returns the dir."""
    import io

    import equinox as eqx

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, net)
    write_file_atomic(directory / WEIGHTS, buf.getvalue())
    from .. import __version__

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lattice_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "theory": theory_to_dict(net.theory),
        "sde": sde_to_dict(sde),
        "sigma_data": net.sigma_data,
        "network": net.spec.to_dict(),
        "receptive_field": net.spec.receptive_field,
        **meta,
        "weights": {"file": WEIGHTS, "sha256": _sha256(directory / WEIGHTS)},
    }
    write_file_atomic(directory / META, json.dumps(doc, indent=2, allow_nan=True) + "\n")
    return directory


def load_model(directory: str | Path) -> ScoreModel:
    """Read a model directory; :class:`ModelError` names what is missing or damaged."""
    import equinox as eqx

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
    weights = d / WEIGHTS
    if not weights.exists():
        raise ModelError(f"{d}: the weights file {WEIGHTS} is missing")
    try:
        expected = meta["weights"]["sha256"]
        theory = theory_from_dict(meta["theory"])
        spec = NetworkSpec.from_dict(meta["network"])
        sde = sde_from_dict(meta["sde"])
        sigma_data = float(meta["sigma_data"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{meta_path}: damaged metadata ({type(e).__name__}: {e})") from None
    if _sha256(weights) != expected:
        raise ModelError(
            f"{weights}: the weights do not match the checksum in {META} (corrupt or replaced)"
        )
    like = build_network(spec, theory, sigma_data, seed=0)
    try:
        net = eqx.tree_deserialise_leaves(weights, like)
    except Exception as e:  # equinox/numpy raise assorted errors for a bad file
        raise ModelError(f"{weights}: unreadable weights ({type(e).__name__}: {e})") from None
    return ScoreModel(net=net, sde=sde, meta=meta, path=d)


def provenance(model: ScoreModel) -> dict[str, Any]:
    """Where a model came from, as flat scalars for an ensemble's ``/config`` attrs: its
    directory (resolved), the sha256 of its weights, when and by which lattice it was trained,
    on which ensemble (path and uuid) and for how long (seconds, optimizer steps)."""
    meta = model.meta
    data = meta.get("data") or {}
    training = meta.get("training") or {}
    out: dict[str, Any] = {
        "path": str(model.path.resolve()) if model.path else "",
        "sha256": str((meta.get("weights") or {}).get("sha256", "")),
        "created": str(meta.get("created", "")),
        "lattice_version": str(meta.get("lattice_version", "")),
        "data_ensemble": str(data.get("ensemble", "")),
        "data_uuid": str(data.get("uuid") or ""),
        "training_seconds": float(training.get("seconds", float("nan"))),
        "training_steps": int(training.get("steps", -1)),
        "parameters": int(meta.get("parameters", -1)),
    }
    return out


def check_compatible(model: ScoreModel, theory: Phi4, *, rtol: float = 1e-12) -> None:
    """Refuse (:class:`ModelError`) a theory the model was not trained for: the lattice shape,
    the action's form and its couplings must all match."""
    mine = model.theory
    where = str(model.path) if model.path else "the model"
    if tuple(theory.shape) != tuple(mine.shape):
        raise ModelError(
            f"{where} was trained on a {list(mine.shape)} lattice; it cannot sample shape "
            f"{list(theory.shape)} (train a model on that shape)"
        )
    if theory.form != mine.form:
        raise ModelError(
            f"{where} was trained in the {mine.form} form ({mine.describe()}); the requested "
            f"theory is in the {theory.form} form (the field normalizations differ)"
        )
    a, b = theory_to_dict(mine), theory_to_dict(theory)
    bad = [
        k
        for k in ("kappa", "m2", "lambda")
        if k in a and not math.isclose(a[k], b[k], rel_tol=rtol, abs_tol=1e-15)
    ]
    if bad:
        got = ", ".join(f"{k} = {b[k]:g}" for k in bad)
        want = ", ".join(f"{k} = {a[k]:g}" for k in bad)
        raise ModelError(f"{where} was trained for {want}; it cannot sample {got}")
