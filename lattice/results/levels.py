"""Which level limits a multilevel sampler's acceptance? (``lattice levels``; docs/multilevel.md
§6.)

For a level ℓ of the multilevel proposal (``score/multilevel.py``: levels finest first), the
*redraw below ℓ* keeps the field above ℓ of a configuration φ ~ e^{−S} and draws levels ℓ … 0
afresh by their conditional reverse paths. Given that field, the redraw is an independence
proposal for the conditional law of those levels, with the weight

    log w_ℓ(φ') = −S(φ') + Σ_{j ≤ ℓ} [Σ_k log Q_j − log π_j − Σ_k log P_j] + const,        (1)

eq. (2) of ``multilevel.py`` restricted to the redrawn levels (what the kept field contributes
is a constant, which cancels in every ratio). Its Metropolis acceptance, for the current
levels drawn from the target, is

    A_ℓ = E_c E_{x ~ p(·|c), y ~ q(·|c)} min(1, w(y)/w(x))
        = E_c [E_{x, y ~ q(·|c)} min(w(x), w(y)) / E_{q(·|c)} w],                          (2)

the second form by importance sampling (x's weight w/E w turns q into p in path space). With
M redraws y_1 … y_M of each configuration's levels, sorted so that w_(1) ≤ … ≤ w_(M),

    Â_ℓ(c) = Σ_{a ≠ b} min(w_a, w_b) / ((M − 1) Σ_a w_a)
           = 2 Σ_a (M − a) w_(a) / ((M − 1) Σ_a w_a),                                        (3)

a ratio estimator: consistent as M → ∞, and biased upward at small M when the weights are
heavy-tailed (the rare large weights that lower the acceptance are then missed). Â_ℓ is the
mean of (3) over N configurations, with the standard error of that mean; beside it, the mean
conditional variance of log w_ℓ (a Gaussian log w of variance s² accepts 2Φ(−s/√2)).

A_ℓ falls as ℓ grows (more levels redrawn, more mismatch); the level where it drops is the one
that limits the acceptance. The top entry, ``all``, redraws every level, the coarsest field
included: M fresh proposals per group, whose (3) estimates the sampler's own acceptance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lattice.config.run import build_theory
from lattice.errors import InputError
from lattice.io.ensemble import EnsembleError
from lattice.io.model import load_model
from lattice.io.reader import open_ensemble
from lattice.numerics.analysis import independence_acceptance
from lattice.numerics.compile import require_x64
from lattice.numerics.phi4 import Phi4
from lattice.score.model import ModelError
from lattice.score.multilevel import MultilevelModel, multilevel_proposal, multilevel_redraw

__all__ = [
    "LevelAcceptance",
    "LevelDiagnostic",
    "level_acceptance",
    "pairwise_acceptance",
    "diagnose_run",
]


def pairwise_acceptance(log_w: np.ndarray) -> np.ndarray:
    """Eq. (3) per row of ``log_w`` [N, M] (M ≥ 2): the estimated independence-MH acceptance
    of proposals with those log-weights, the pilot's estimator
    (:func:`lattice.numerics.analysis.independence_acceptance`) applied to each row."""
    lw = np.asarray(log_w, np.float64)
    if lw.shape[-1] < 2:
        raise InputError("the pairwise acceptance needs at least 2 redraws per configuration")
    return np.array([independence_acceptance(row) for row in lw.reshape(-1, lw.shape[-1])])


@dataclass(frozen=True)
class LevelAcceptance:
    """One row: levels 0 … ``level`` (by name, finest first) redrawn given the rest."""

    level: str
    redrawn: list[str]
    acceptance: float
    error: float
    log_w_var: float  # mean over configurations of the conditional variance of log w_ℓ
    evaluations: float  # network evaluations per redraw (shares of V, ``multilevel.py``)


@dataclass(frozen=True)
class LevelDiagnostic:
    """What ``lattice levels --json`` prints."""

    levels: list[LevelAcceptance]
    configurations: int
    draws: int
    steps: list[int]  # K per level, in the order of ``levels``
    shape: list[int]
    source: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def steps_label(self) -> str:
        """K as the table and the plot title show it: one number, or the list per level."""
        return str(self.steps[0] if len(set(self.steps)) == 1 else self.steps)


def level_acceptance(
    model,
    theory: Phi4,
    configs: np.ndarray,
    steps,
    *,
    draws: int = 16,
    seed: int = 0,
    source: str = "",
    progress=None,
) -> LevelDiagnostic:
    """Eqs. (1)–(3) for every level of ``model`` (a ``MultilevelModel``) sampling ``theory``
    (its lattice or 2^k times it) with K = ``steps`` at every level (or one per level of the
    model, finest first): ``configs`` [N, *shape] are
    configurations of e^{−S} (an exact sampler's ensemble), ``draws`` = M redraws of each.
    ``progress(i, n, name)`` is called before each level. Needs JAX's x64 mode (float64
    weights)."""
    require_x64(ValueError)
    if draws < 2:
        raise InputError(f"draws: at least 2 redraws per configuration are needed (got {draws})")
    configs = np.asarray(configs, np.float64)
    if configs.ndim != theory.ndim + 1 or tuple(configs.shape[1:]) != tuple(theory.shape):
        raise InputError(
            f"the configurations have shape {list(configs.shape[1:])}; the theory's lattice is "
            f"{list(theory.shape)}"
        )
    dtype = jnp.float64
    redraw, info = multilevel_redraw(model, theory.shape, steps, dtype)
    propose, _ = multilevel_proposal(model, theory.shape, steps, dtype)
    names = list(info["levels"])
    shares, ks = list(info["shares"]), list(info["steps"])
    n = len(configs)
    base = jax.random.key(seed)
    rows = []
    for top in range(len(names)):
        if progress is not None:
            progress(top, len(names), names[top])
        full = top == len(names) - 1

        def one(key, phi, top=top, full=full):
            r = propose(key) if full else redraw(key, phi, top)
            return -theory.action(r.phi) + jnp.sum(r.log_ratios)

        @jax.jit
        def all_configs(key, phis, one=one):
            """[N, M] log-weights: configuration i redrawn with keys from fold_in(key, i)."""

            def per_config(args):
                i, phi = args
                keys = jax.random.split(jax.random.fold_in(key, i), draws)
                return jax.vmap(lambda kk: one(kk, phi))(keys)

            return jax.lax.map(per_config, (jnp.arange(phis.shape[0]), phis))

        lw = np.asarray(all_configs(jax.random.fold_in(base, top), jnp.asarray(configs)))
        if not np.all(np.isfinite(lw)):
            raise InputError(f"non-finite weights when redrawing up to {names[top]}")
        acc = pairwise_acceptance(lw)
        err = float(np.std(acc, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        rows.append(
            LevelAcceptance(
                level=names[top],
                redrawn=names[: top + 1],
                acceptance=float(np.mean(acc)),
                error=err,
                log_w_var=float(np.mean(np.var(lw, axis=1, ddof=1))),
                evaluations=float(
                    sum(kl * sh for kl, sh in zip(ks[: top + 1], shares, strict=False))
                ),
            )
        )
    notes = [
        f"{draws} redraws of each of {n} configurations; the ratio estimator (3) is biased "
        "upward when M is small against the spread of the weights"
    ]
    return LevelDiagnostic(rows, n, draws, ks, list(theory.shape), source, notes)


def diagnose_run(
    run: str | Path,
    ensemble: str | Path | None = None,
    *,
    configurations: int = 32,
    draws: int = 16,
    steps: int | None = None,
    seed: int = 0,
    progress=None,
) -> LevelDiagnostic:
    """:func:`level_acceptance` for a multilevel run directory (or its ensemble.h5): its model,
    theory and K (the pilot's choice when it ran one, else ``sampler.steps``; or ``steps``),
    on ``configurations`` configurations spread evenly over the saved ones of ``ensemble``
    (any ensemble of the same theory, e.g. the exact one the model was trained on) or, without
    it, of the run itself. ValueError names what does not fit."""
    try:
        ens = open_ensemble(run, load_observables=False)
    except EnsembleError as e:
        raise InputError(str(e)) from None
    cfg = ens.run_config
    s = cfg.sampler
    if not s.is_multilevel():
        raise InputError(
            f"{ens.path}: not a multilevel run (sampler.kind = 'diffusion' with method = "
            "'multilevel' is needed)"
        )
    theory = build_theory(cfg)
    try:
        model = load_model(s.model)
    except ModelError as e:
        raise InputError(f"sampler.model: {e}") from None
    if not isinstance(model, MultilevelModel):
        raise InputError(f"sampler.model: {s.model} is not a multilevel model")
    if steps is None:
        tuned = ens.config_attrs.get("sampler.tuned_path_steps")
        steps = int(tuned) if tuned is not None else int(s.steps)
        if s.level_steps is not None:
            steps = tuple(s.level_steps)
    elif steps < 1:
        raise InputError(f"steps: at least 1 step per level is needed (got {steps})")
    src = ens
    if ensemble is not None:
        try:
            src = open_ensemble(ensemble, load_observables=False)
        except EnsembleError as e:
            raise InputError(f"--ensemble: {e}") from None
        other = build_theory(src.run_config)
        if other != theory:
            raise InputError(
                f"--ensemble: {src.path} samples {other.describe()} on {list(other.shape)}; "
                f"the run samples {theory.describe()} on {list(theory.shape)}"
            )
    if src.saved == 0:
        raise InputError(
            f"{src.path} saved no configurations (run.save_every = 0); pass --ensemble with an "
            "ensemble of the same theory that did (e.g. the model's training ensemble)"
        )
    phi, _ = src.configs()
    phi = np.asarray(phi).reshape((-1,) + tuple(theory.shape))
    if configurations < 1:
        raise InputError(f"configurations: at least 1 is needed (got {configurations})")
    pick = np.unique(np.linspace(0, len(phi) - 1, min(configurations, len(phi))).astype(int))
    return level_acceptance(
        model,
        theory,
        phi[pick],
        steps,
        draws=draws,
        seed=seed,
        source=f"{len(pick)} configurations of {src.path}",
        progress=progress,
    )
