"""What ``lattice info`` describes: a run (or its ensemble file), a trained model directory, or a
model still in training. One object per kind; ``to_json()`` is ``lattice info --json`` and
``rows()`` the (name, text) lines the terminal shows, both from the same fields
(docs/ensembles.md, docs/score.md).

Describing a run reads its HDF5 file with :func:`lattice.io.reader.open_ensemble` and imports
no jax (``lattice info RUN_DIR`` stays fast): its status is therefore
``run_status(ens, stuck=False)`` (complete, incomplete or diverged; ``measure`` and ``compare``
also tell a stuck chain, which needs the validated config and so jax). A model is loaded with
:func:`lattice.io.model.load_model`, which checks its digests (and imports jax).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lattice.errors import LatticeError
from lattice.io.ensemble import Ensemble
from lattice.io.reader import open_ensemble
from lattice.results.model_info import ModelInfo, model_info
from lattice.results.status import RunStatus, run_status
from lattice.runs.kinds import is_training_dir

__all__ = ["InfoError", "RunInfo", "TrainingInfo", "describe"]


class InfoError(LatticeError):
    """A directory ``lattice info`` cannot describe (an unfinished training's unreadable state)."""


def _clusters(ens: Ensemble) -> dict[str, Any] | None:
    """The cluster updates of ``ens``: the algorithm, ``cluster_every``, and the mean cluster
    size (sites) and labelling iterations over chains and measurements (None where every
    entry is NaN); None without cluster updates."""
    d = ens.diagnostics or {}
    if "cluster_size" not in d or not d["cluster_size"].size:
        return None
    a = ens.config_attrs
    size, iters = d["cluster_size"], d["cluster_iterations"]
    blank = bool(np.isnan(size).all())
    return {
        "algorithm": a.get("sampler.cluster"),
        "every": a.get("sampler.cluster_every"),
        "mean_size": None if blank else float(np.nanmean(size)),
        "mean_iterations": None if blank else float(np.nanmean(iters)),
    }


def clusters_text(c: dict[str, Any]) -> str:
    """One line on the cluster updates of :func:`_clusters`."""
    head = f"{c['algorithm']}, cluster_every = {c['every']}"
    if c["mean_size"] is None:
        return head
    return (
        f"{head}; mean cluster size {c['mean_size']:.3g} sites, "
        f"{c['mean_iterations']:.3g} labelling iterations"
    )


def cluster_summary(ens: Ensemble) -> str | None:
    """The line on the cluster updates of ``ens`` (``info`` and ``measure``), or None."""
    c = _clusters(ens)
    return None if c is None else clusters_text(c)


@dataclass(frozen=True)
class RunInfo:
    """A run directory, ``manifest.json`` or ``ensemble.h5``: shape, action, sampler, chains,
    measurements per chain (committed and planned), saved configurations per chain, status,
    provenance, wall time; what a tuner, a pilot or a model contributed (None where absent)."""

    path: str
    shape: list[int]
    action: dict[str, Any]  # form and that form's couplings, as model.json's theory
    sampler: str
    exactness: str
    chains: int
    committed: int
    planned: int
    saved: int
    status: RunStatus
    created: str
    lattice_version: str
    seconds: float
    steps: int
    clusters: dict[str, Any] | None = None
    tuned: dict[str, Any] | None = None
    pilot: dict[str, Any] | None = None
    model: dict[str, Any] | None = None

    @classmethod
    def of(cls, ens: Ensemble) -> RunInfo:
        a = ens.config_attrs
        form = a.get("action.form")
        coupling = "kappa" if form == "kappa" else "m2"
        tuned = pilot = model = None
        if "sampler.tuned_step_size" in a:
            tuned = {
                "step_size": float(a["sampler.tuned_step_size"]),
                "steps": a.get("sampler.steps"),
                "tuning_steps": int(a["sampler.tuned_steps"]),
                "target_acceptance": a.get("sampler.target_acceptance"),
                "acceptance": float(a["sampler.tuned_acceptance"]),
            }
        if "sampler.tuned_path_steps" in a:
            tried = zip(a["sampler.pilot_path_steps"], a["sampler.pilot_acceptance"], strict=True)
            pilot = {
                "path_steps": int(a["sampler.tuned_path_steps"]),
                "target_acceptance": a.get("sampler.target_acceptance"),
                "cap": a.get("sampler.steps"),
                "proposals": int(a["sampler.pilot_proposals"]),
                "tried": [{"path_steps": int(k), "acceptance": float(x)} for k, x in tried],
            }
        if "sampler.model_sha256" in a:
            model = {
                "path": a.get("sampler.model_path"),
                "sha256": str(a["sampler.model_sha256"]),
                "training_seconds": float(a.get("sampler.model_training_seconds", "nan")),
                "data_ensemble": a.get("sampler.model_data_ensemble"),
            }
        return cls(
            path=str(ens.path),
            shape=list(a.get("lattice.shape") or []),
            action={
                "form": form,
                coupling: a.get(f"action.{coupling}"),
                "lambda": a.get("action.lambda"),
            },  # fmt: skip
            sampler=str(a.get("sampler.name")),
            exactness=str(a.get("sampler.exactness")),
            chains=ens.chains,
            committed=ens.committed,
            planned=ens.samples,
            saved=ens.saved,
            status=run_status(ens, stuck=False),
            created=ens.created,
            lattice_version=ens.version,
            seconds=ens.seconds,
            steps=ens.steps,
            clusters=_clusters(ens),
            tuned=tuned,
            pilot=pilot,
            model=model,
        )

    def to_json(self) -> dict[str, Any]:
        """``lattice info --json`` of a run (docs/ensembles.md)."""
        return {
            "kind": "run",
            "path": self.path,
            "shape": self.shape,
            "action": self.action,
            "sampler": self.sampler,
            "exactness": self.exactness,
            "chains": self.chains,
            "committed": self.committed,
            "planned": self.planned,
            "saved": self.saved,
            **self.status.to_json(),
            "created": self.created,
            "lattice_version": self.lattice_version,
            "seconds": self.seconds,
            "steps": self.steps,
            "clusters": self.clusters,
            "tuned": self.tuned,
            "pilot": self.pilot,
            "model": self.model,
        }

    def rows(self) -> list[tuple[str, str]]:
        """The (name, text) lines of ``lattice info`` on a run."""
        act, st = self.action, self.status
        coupling = "kappa" if act["form"] == "kappa" else "m2"
        state = "complete" if st.ok else f"{st.state}: {st.detail}"
        rows = [
            ("file", self.path),
            ("lattice", str(self.shape)),
            (
                "action",
                f"{act['form']} form, {coupling} = {act[coupling]}, lambda = {act['lambda']}",
            ),  # fmt: skip
            ("sampler", f"{self.sampler} ({self.exactness})"),
            ("chains", str(self.chains)),
            ("samples", f"{self.committed} per chain (planned {self.planned})"),
            ("saved configs", f"{self.saved} per chain"),
            ("status", state),
            ("created", f"{self.created} by lattice {self.lattice_version}"),
            ("wall time", f"{self.seconds:.1f} s for {self.steps} sampler steps"),
        ]
        if self.clusters is not None:
            rows.append(("clusters", clusters_text(self.clusters)))
        if (t := self.tuned) is not None:
            rows.append((
                "tuned step",
                f"{t['step_size']:.6g} x {t['steps']} steps over {t['tuning_steps']} steps "
                f"(target acceptance {t['target_acceptance']}, last tuning block "
                f"{t['acceptance']:.3f})",
            ))  # fmt: skip
        if (p := self.pilot) is not None:
            tried = ", ".join(f"{x['path_steps']}: {x['acceptance']:.3f}" for x in p["tried"])
            rows.append((
                "path steps",
                f"K = {p['path_steps']} by the pilot (target acceptance "
                f"{p['target_acceptance']}, cap {p['cap']}; K: acceptance over "
                f"{p['proposals']} proposals {tried})",
            ))  # fmt: skip
        if (m := self.model) is not None:
            rows.append((
                "model",
                f"{m['path']} (sha256 {m['sha256'][:12]}…, trained "
                f"{m['training_seconds']:.0f} s on {m['data_ensemble']})",
            ))  # fmt: skip
        return rows


@dataclass(frozen=True)
class TrainingInfo:
    """A model directory whose training has not finished: the step its checkpoint holds (0
    before the first) of the ``[train] steps`` planned."""

    path: str
    step: int
    steps: int

    def to_json(self) -> dict[str, Any]:
        """``lattice info --json`` of a training in progress (docs/score.md)."""
        return {"kind": "training", "path": self.path, "step": self.step, "steps": self.steps}

    def text(self) -> str:
        return (
            f"{self.path}: a score model in training (unfinished): step {self.step} of "
            f"{self.steps} checkpointed; continue it with `lattice resume {self.path}`"
        )


def training_info(directory: Path) -> TrainingInfo:
    """The :class:`TrainingInfo` of an unfinished model directory; :class:`InfoError` when its
    config or checkpoint cannot be read."""
    # here: the training config and the checkpoint import jax, which a run's info must not
    from lattice.config.base import ConfigError
    from lattice.config.train import load_train_config  # jax (module docstring)
    from lattice.io.checkpoint import CheckpointError, read_checkpoint_attrs  # jax, likewise

    try:
        steps = load_train_config(directory / "config.toml").train.steps
        ck = directory / "checkpoint.h5"
        step = int(read_checkpoint_attrs(ck)["step"]) if ck.exists() else 0
    except (ConfigError, CheckpointError, KeyError, ValueError) as e:
        raise InfoError(
            f"{directory}: an unfinished training with an unreadable state ({e})"
        ) from None
    return TrainingInfo(str(directory), step, int(steps))


def describe(path: str | Path) -> RunInfo | ModelInfo | TrainingInfo:
    """What ``lattice info PATH`` shows: a model in training (a directory with a ``[train]``
    config and no model.json), a trained model (model.json), else a run or ensemble file."""
    path = Path(path)
    if path.is_dir() and not (path / "model.json").exists() and is_training_dir(path):
        return training_info(path)
    if path.is_dir() and (path / "model.json").exists():
        return model_info(path)
    return RunInfo.of(open_ensemble(path, load_observables=False))
