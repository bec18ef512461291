"""What a path-objective training (``[train] objective = "path"``) starts from, and the record
it leaves in model.json.

Two starts (``docs/score.md``, "Training on the path weight"):

- **From the action alone** (no ``train.init``): the theory of the config's ``[lattice]`` and
  ``[action]`` tables, and a sampler that is exact for its Hartree Gaussian
  (``numerics/hartree.py``): the network's ``"hartree"`` base with a zero output layer, and the
  Gaussian's closed-form spectral table, M(σ, p) = σ²/(1 + σ² A(p)), C(p) = 1/A(p)
  (``spectral.py``). The VE SDE has σ_d = √G, the Hartree ⟨φ²⟩; σ_min =
  :data:`SIGMA_MIN_FACTOR` · σ_d and σ_max = :data:`SIGMA_MAX_FACTOR` · √(V G) unless the config
  sets them.
- **Fine-tuning** (``train.init``, a model directory): that model's theory, network, SDE and
  spectral table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from lattice.config.run import build_theory
from lattice.config.train import TrainConfig
from lattice.io.model import load_model, save_model
from lattice.numerics.hartree import hartree_kernel, hartree_mass2
from lattice.numerics.phi4 import Phi4
from lattice.runs.directory import RunDirectory, RunError
from lattice.score.factory import build_network
from lattice.score.model import ModelError
from lattice.score.network import NetworkSpec, count_parameters
from lattice.score.path_train import PathTrainer
from lattice.score.sde import SDE, make_sde
from lattice.score.spectral import SpectralTable, gaussian_table, stored_spectral_table
from lattice.score.train import training_record

__all__ = ["PathSetup", "path_setup", "path_model_meta", "write_path_model", "SIGMA_MAX_FACTOR"]

#: fresh paths of the final model behind model.json's acceptance and ESS
FINAL_EVAL_PATHS = 1024

#: σ_min of a training from the action = this × σ_d: ten times DSM's 0.01 σ_d. Below it the
#: score is the force and the reverse steps are Langevin steps of negligible error, so steps
#: spent there are wasted (on the 8×8 ladder point, K = 32: Var log w 2.27 against 2.81 after
#: 400 steps, and 8.4 against 11.4 at the start; docs/PERFORMANCE.md)
SIGMA_MIN_FACTOR = 0.1

#: σ_max of a training from the action = this × √(V G): a few times the spread of the whole
#: field's norm under the Hartree Gaussian, so that the top of the path is close to Gaussian
SIGMA_MAX_FACTOR = 1.0


class _Error(RunError):
    """A path training that cannot start (exit status 2)."""


@dataclass(frozen=True)
class PathSetup:
    """The start of a path training: theory, SDE, network, table, and where they came from
    (``ensemble``/``uuid``: the init model's directory and weights' sha256, checked on resume;
    empty from the action)."""

    theory: Phi4
    sde: SDE
    net: Any
    table: SpectralTable
    ensemble: str
    uuid: str | None
    init_meta: dict | None
    hartree_mu2: float | None

    def describe(self, sde: SDE, steps: int) -> str:
        """The train.log line on the start."""
        start = (
            f"fine-tuning {self.ensemble}"
            if self.init_meta is not None
            else f"from the action alone (Hartree mu^2 = {self.hartree_mu2:.4g})"
        )
        return (
            f"path objective at K = {steps}, {start}; VE SDE, sigma "
            f"{sde.sigma_min:.4g}..{sde.sigma_max:.4g}"
        )


def _resolve_init(value: str, config_dir: Path | None) -> Path:
    cands = [Path(value)]
    if config_dir is not None and not Path(value).is_absolute():
        cands.append(config_dir / value)
    for c in cands:
        if (c / "model.json").exists():
            return c.resolve()
    tried = " or ".join(str(c) for c in cands)
    raise _Error(f"train.init: no model directory (with model.json) at {tried}")


def path_setup(cfg: TrainConfig, config_dir: Path | None = None, init: Path | None = None):
    """The :class:`PathSetup` of ``cfg`` (``init``: the model directory already resolved, as a
    resumed training recorded it)."""
    t = cfg.train
    if t.init is not None:
        where = init or _resolve_init(t.init, config_dir)
        try:
            model = load_model(where)
        except ModelError as e:
            raise _Error(f"train.init: {e}") from None
        if not hasattr(model, "net") or hasattr(model, "conditionals"):
            raise _Error(f"train.init: {where} is a multilevel model; the path objective "
                         "trains single networks")  # fmt: skip
        if model.sde.name != "ve":
            raise _Error(f"train.init: {where} has a {model.sde.name.upper()} SDE; the path "
                         "objective trains VE models")  # fmt: skip
        table = stored_spectral_table(model)
        if table is None:
            raise _Error(f"train.init: {where} has no spectral table in its model.json "
                         "(a model of an older lattice); retrain it")  # fmt: skip
        sha = str((model.meta.get("weights") or {}).get("sha256", ""))
        return PathSetup(model.theory, model.sde, model.net, table, str(where), sha,
                         model.meta, None)  # fmt: skip
    theory = build_theory(cfg)
    try:
        mu2 = hartree_mass2(theory)
    except ValueError as e:
        raise _Error(f"action: {e}") from None
    A = hartree_kernel(theory, mu2)
    G = float(np.mean(1.0 / A))
    sd = math.sqrt(G)
    lo = SIGMA_MIN_FACTOR * sd if t.sigma_min == "auto" else t.sigma_min
    hi = SIGMA_MAX_FACTOR * math.sqrt(theory.volume * G) if t.sigma_max == "auto" else t.sigma_max
    if not lo < hi:
        raise _Error(f"train.sigma_max: {hi:.4g} must exceed sigma_min = {lo:.4g}")
    sde = make_sde("ve", lo, hi)
    spec = NetworkSpec.from_dict(
        {**cfg.network.model_dump(), "base": cfg.network.base or "hartree"}
    )
    net = build_network(spec, theory, sd, key=_key(t.seed))
    net = net.zero_output() if hasattr(net, "zero_output") else net
    return PathSetup(
        theory, sde, net, gaussian_table(A, "closed form (Hartree Gaussian)"), "", None, None, mu2
    )


def _key(seed: int):
    return jax.random.fold_in(jax.random.key(seed), 1)


def path_model_meta(cfg: TrainConfig, data: PathSetup, tr, ema, ema_params, history,
                    seconds: float, final: dict) -> dict[str, Any]:  # fmt: skip
    """model.json's record of a path training: the objective, K and the noise levels, the
    trained spectral table at those levels, the start (action or init model) and the final
    acceptance and ESS on fresh paths."""
    t = cfg.train
    K = t.steps_per_path
    levels = tr.levels
    log_mass = getattr(ema, "log_mass", None)
    if data.init_meta is not None:
        d = dict(data.init_meta.get("data") or {})
        d["init"] = {"model": data.ensemble, "sha256": data.uuid,
                     "training": data.init_meta.get("training")}  # fmt: skip
    else:
        d = {"ensemble": None, "from": "action", "hartree_mu2": data.hartree_mu2}
    diag = {
        "path": {"steps": K, **final},
        "base_mu2": float(np.exp(float(log_mass))) if log_mass is not None else None,
    }
    return {
        "name": cfg.name,
        "parameters": count_parameters(ema),
        "data": d,
        "training": {
            "objective": "path",
            "path_steps": K,
            "noise_levels": [float(s) for s in levels],
            **training_record(t, seconds, history),
        },
        "spectral": eqx.combine(ema_params, tr.static)[1].to_dict(
            levels, f"trained by the path objective at K = {K} ({t.steps} steps)"
        ),
        "diagnostics": diag,
    }


def write_path_model(cfg, d: RunDirectory, data: PathSetup, tr: PathTrainer, state, history,
                      seconds, reporter, on_trained) -> Path:  # fmt: skip
    """The model directory of a path-trained network (history.csv already written): the
    app's plots, model.eqx and model.json (:func:`path_model_meta`); the checkpoint removed."""
    ema = tr.net(state[2])
    final = {"paths": FINAL_EVAL_PATHS,
             **tr.evaluate(state[2], cfg.train.steps + 1, FINAL_EVAL_PATHS)}  # fmt: skip
    meta = path_model_meta(cfg, data, tr, ema, state[2], history, seconds, final)
    if on_trained is not None:
        on_trained(d.root, history, meta["diagnostics"])
    save_model(d.root, ema, data.sde, meta)
    d.checkpoint.unlink(missing_ok=True)
    d.log(
        reporter,
        f"trained {cfg.train.steps} steps in {seconds:.0f} s: on {FINAL_EVAL_PATHS} fresh paths "
        f"at K = {cfg.train.steps_per_path}, var log w {final['var_log_w']:.3f}, predicted "
        f"acceptance {final['acceptance_pairs']:.3f}, ESS per path {final['ess']:.3f}",
    )
    return d.root
