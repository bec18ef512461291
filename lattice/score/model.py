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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from lattice.errors import LatticeError
from lattice.numerics.phi4 import Phi4
from lattice.score.network import ScoreNet
from lattice.score.sde import SDE

__all__ = [
    "ModelError",
    "ScoreModel",
    "check_compatible",
    "check_couplings",
    "provenance",
    "theory_to_dict",
    "theory_from_dict",
]


class ModelError(LatticeError):
    """A missing, corrupt or incompatible model; the CLI prints it and exits with status 2."""


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
    the action's form and its couplings must all match. A multilevel model (it has
    ``conditionals``) is checked for the form and couplings only: its sampler checks the shape,
    which may be 2^k times the model's (``multilevel.py``, transfer)."""
    mine = model.theory
    where = str(model.path) if model.path else "the model"
    if not hasattr(model, "conditionals") and tuple(theory.shape) != tuple(mine.shape):
        raise ModelError(
            f"{where} was trained on a {list(mine.shape)} lattice; it cannot sample shape "
            f"{list(theory.shape)} (train a model on that shape)"
        )
    check_couplings(model, theory, rtol=rtol)


def check_couplings(model, theory: Phi4, *, rtol: float = 1e-12) -> None:
    """Refuse (:class:`ModelError`) a theory of another action form or other couplings."""
    mine = model.theory
    where = str(model.path) if model.path else "the model"
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
