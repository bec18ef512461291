"""The diffusion model as a sampler: independent proposals from a trained score model, made
exact by an independence Metropolis–Hastings step, or weighted for reweighting.

Every step draws x(1) from the SDE's prior (stream 0 of the step key) and generates a field φ'
with one of the methods of ``lattice.score.path`` / ``flow`` / ``reverse``. Two methods come
with an exact weight w(φ') = e^{−S(φ')}/q(φ'):

- ``"sde"``: a reverse trajectory of K Gaussian steps down to σ = 0, with the *path* weight of
  ``path.py`` eq. (2) in place of e^{−S}/q (exact for any score and any K; K score
  evaluations per proposal);
- ``"multilevel"``: a coarse-to-fine proposal of a multilevel model, one reverse path per
  Haar level with the weight of ``multilevel.py`` eq. (2) (exact for any networks and K; its
  per-level parts are recorded as ``level_log_w_<level>``, below; with ``transfer`` a model
  trained on L samples 2^k L);
- ``"ode"``: the probability-flow ODE, with log q from the exact divergence (``flow.py``
  eq. (2); K·(1 + P) score evaluations with P = V probes, or m^d for a local network of
  receptive field R = m − 1; exact up to the solver tolerance, which is recorded).

The chain is then an independence sampler (Tierney 1994) with target e^{−S}::

    log w(φ) = −S(φ) − log q(φ),    accept with min(1, e^{log w(φ') − log w(φ)})      (1)

which leaves e^{−S} invariant whatever the quality of the model. Without Metropolis every
step's output is a fresh, independent draw, and these two methods still record log w, so
observables can be reweighted with the self-normalized weights w/Σw; ``pc`` and ``annealed``
have no density and are approximate.

The chain starts with log w = −∞, so the first proposal is always accepted.
"""

from __future__ import annotations

import functools
import hashlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lattice.numerics import noise
from lattice.numerics.phi4 import Phi4
from lattice.samplers.base import ByIdentity, Exactness, Sampler, StepInfo, Traits, metropolis

__all__ = [
    "DiffusionState",
    "diffusion",
    "traits",
    "METHODS",
    "OPTIONS",
    "DENSITY_METHODS",
    "PATH_METHODS",
]

METHODS = ("ode", "sde", "pc", "annealed", "multilevel")
#: the methods whose proposals carry an exact weight (Metropolis or reweighting)
DENSITY_METHODS = ("sde", "ode", "multilevel")
#: the methods whose number of reverse steps the path-length pilot can choose
PATH_METHODS = ("sde", "multilevel")
#: the options of each method
OPTIONS = {
    "ode": ("rtol", "atol", "max_steps", "divergence", "solver"),
    "sde": ("kernel",),
    "multilevel": ("transfer", "level_steps"),
    "pc": ("snr", "corrector_steps"),
    "annealed": ("steps_per_level", "step_scale"),
}
#: per-chain values recorded at every measurement under /diagnostics (see lattice.samplers.chains)
DIAGNOSTICS = ("proposal_log_w", "score_evaluations")


class DiffusionState(NamedTuple):
    phi: jax.Array
    action: jax.Array
    log_w: jax.Array  # −S − log q of the current field (NaN without a density)
    proposal_log_w: jax.Array  # of the last proposal
    score_evaluations: jax.Array  # score evaluations of the last proposal

    def grad_S(self) -> None:
        return None  # not carried: a measurement computes it


@functools.cache
def multilevel_state(names: tuple[str, ...]) -> type:
    """The state of a multilevel sampler: :class:`DiffusionState`'s fields and one
    ``level_log_w_<name>`` per level (one class per tuple of level names)."""
    fields = [(f, jax.Array) for f in DiffusionState._fields]
    fields += [(f"level_log_w_{n}", jax.Array) for n in names]
    base = NamedTuple("MultilevelState", fields)

    class MultilevelState(base):
        __slots__ = ()

        def grad_S(self) -> None:
            return None

    return MultilevelState


def diffusion(
    theory: Phi4,
    model,
    *,
    method: str,
    metropolis_step: bool,
    steps: int,
    norm=None,
    table=None,
    **options,
) -> Sampler:
    """A sampler over a trained :class:`lattice.score.model.ScoreModel` (see the module docstring).

    ``options`` are exactly the keys of the method (:data:`OPTIONS`; their defaults are
    :class:`lattice.config.sampler.Diffusion`'s). ``metropolis_step`` needs ``method = "sde"``
    or ``"ode"`` (the routes with a weight).
    ``norm`` is u(σ) = σ²Γ(σ), the table of the analytic path kernel (``path.py`` eq. (3)):
    by default the one the model carries (:func:`lattice.score.path.stored_norm_function`);
    the sampler reads no files, so for an older model without the table the caller measures
    it (:func:`lattice.score.tables.norm_function_of`). ``table`` is the per-mode table of the
    spectral kernel (:class:`lattice.score.spectral.SpectralTable`), likewise by default the
    model's own (:func:`lattice.score.spectral.stored_spectral_table`), else measured by the
    caller (:func:`lattice.score.tables.spectral_table_of`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (allowed: {', '.join(METHODS)})")
    if metropolis_step and method not in DENSITY_METHODS:
        raise ValueError("Metropolis needs method = 'ode' or 'sde' (the ones with a density)")
    if set(options) != set(OPTIONS[method]):
        raise ValueError(
            f"method = {method!r} takes the options {', '.join(OPTIONS[method])}"
            f" (got {', '.join(sorted(options)) or 'none'})"
        )
    if method == "multilevel":
        return _multilevel(
            theory, model, metropolis_step, steps, options["transfer"], options["level_steps"]
        )
    o = options
    # The score layer is imported here, by the builder: its models need equinox, and every run
    # config imports this module for OPTIONS (a Langevin run's start-up was 0.34 s longer).
    from lattice.score.flow import probe_colors, sample_with_density
    from lattice.score.model import check_compatible, provenance  # lazy (above)
    from lattice.score.path import (  # lazy (above)
        kernel_variances,
        noise_levels,
        sample_path,
        sample_spectral_path,
        stored_norm_function,
    )
    from lattice.score.reverse import annealed_langevin, predictor_corrector  # lazy (above)
    from lattice.score.spectral import default_kernel, stored_spectral_table  # lazy (above)

    check_compatible(model, theory)
    sde = model.sde

    def score(x, t):
        return model.score(x[None], t)[0]

    if method == "ode":  # one forward-mode product per colour: V (global net) or m^d (local)
        colors = probe_colors(theory.shape, model.receptive_field)
        probes = int(colors.max()) + 1
    if method == "sde":  # path space (lattice.score.path): VE variable, levels σ_0 = 0 … σ_K
        levels = noise_levels(sde, steps)
        kernel = o["kernel"] or default_kernel(model)
        if kernel == "analytic" and norm is None:
            norm = _stored(stored_norm_function(model), kernel, "score_norms", "norm_function_of")
        if kernel == "spectral" and table is None:
            table = _stored(stored_spectral_table(model), kernel, "spectral", "spectral_table_of")
        variances = kernel_variances(levels, kernel, norm, table)
        y_prior = float(sde.prior_std() / sde.alpha(1.0))
        if kernel == "spectral":  # the per-mode prior N(0, C(p) + σ_K²) of the VE variable
            prior_var = table.power + levels[-1] ** 2

        def ve_score(y, s):
            return model.net.batch(y[None], s)[0]

    def propose(key, z1, x1):
        """(φ', log q(φ') or NaN, score evaluations) from the prior draw x1 = prior_std · z1."""
        k = jax.random.fold_in(key, 3)
        nan = jnp.full((), jnp.nan, x1.dtype)
        if method == "ode":
            r = sample_with_density(
                score,
                sde,
                x1,
                rtol=o["rtol"],
                atol=o["atol"],
                max_steps=o["max_steps"],
                divergence=o["divergence"],
                solver=o["solver"],
                key=k,
                initial_steps=steps,
                colors=colors,
            )
            per_eval = (1 + probes) if o["divergence"] == "exact" else 2
            return r.x, r.log_q, (r.evaluations * per_eval).astype(x1.dtype)
        if method == "sde" and kernel == "spectral":
            r = sample_spectral_path(ve_score, levels, variances, prior_var, k, z1)
            return r.y, -r.log_ratio, jnp.asarray(steps, x1.dtype)
        if method == "sde":
            r = sample_path(ve_score, levels, variances, y_prior, k, x1 / sde.alpha(1.0))
            return r.y, -r.log_ratio, jnp.asarray(steps, x1.dtype)
        if method == "pc":
            x = predictor_corrector(score, sde, x1, k, steps, o["snr"], o["corrector_steps"])
            return x, nan, jnp.asarray(steps * (1 + o["corrector_steps"]), x1.dtype)
        x = annealed_langevin(score, sde, x1, k, steps, o["steps_per_level"], o["step_scale"])
        return x, nan, jnp.asarray(steps * o["steps_per_level"], x1.dtype)

    def init(phi):
        z = jnp.zeros((), phi.dtype)
        return DiffusionState(phi, theory.action(phi), z - jnp.inf, z + jnp.nan, z)

    def step(key, state):
        dtype = state.phi.dtype
        # the run's dtype throughout: the SDE's constants (e.g. a float64 prior_std) and the
        # path's log-density must not promote a float32 run's state to float64
        z1 = noise.normal(key, theory.shape, dtype, stream=0)
        x1 = (sde.prior_std() * z1).astype(dtype)
        prop, log_q, evals = propose(key, z1, x1)
        prop = prop.astype(dtype)
        s1 = theory.action(prop)
        lw = (-s1 - log_q).astype(dtype)
        evals = evals.astype(dtype)
        new = DiffusionState(prop, s1, lw, lw, evals)
        return _independence_step(key, state, new, metropolis_step, ())

    if method == "sde":  # the kernel enters the closures through its variances
        params = (method, metropolis_step, steps, kernel, _digest(variances))
    else:
        params = (method, metropolis_step, steps, tuple(sorted(o.items())))
    return Sampler(
        init=init,
        step=step,
        name=f"diffusion-{method}" + ("-mh" if metropolis_step else ""),
        traits=traits(method, metropolis_step, o.get("divergence")),
        identity=("diffusion", params, theory, _model_identity(model)),
        forces_per_step=0,
        diagnostics=DIAGNOSTICS,
        metadata=tuple((f"model_{k}", v) for k, v in provenance(model).items()),
    )


def _independence_step(key, state, new, metropolis_step: bool, recorded: tuple[str, ...]):
    """Eq. (1): the proposal state ``new`` (with its log w) kept by independence MH against
    ``state`` (or taken as is without Metropolis); a rejected step keeps the old field but
    records the proposal's ``proposal_log_w``, ``score_evaluations`` and ``recorded``."""
    dtype = state.phi.dtype
    if not metropolis_step:
        one = jnp.ones((), dtype)
        return new, StepInfo(one, jnp.ones((), bool), jnp.zeros((), dtype))
    log_ratio = new.log_w - state.log_w
    accepted, acceptance = metropolis(key, log_ratio)
    names = ("proposal_log_w", "score_evaluations", *recorded)
    kept = state._replace(**{n: getattr(new, n) for n in names})
    out = jax.tree_util.tree_map(lambda a, b: jnp.where(accepted, a, b), new, kept)
    return out, StepInfo(acceptance.astype(dtype), accepted, -log_ratio)


def _multilevel(
    theory: Phi4, model, metropolis_step: bool, steps: int, transfer: bool, level_steps=None
):
    """The ``"multilevel"`` method: proposals of ``multilevel.py``'s model, K = ``steps`` at
    every level or ``level_steps`` (one K per level of the model, finest first), on the
    model's lattice or (``transfer``) on 2^k times it."""
    from lattice.score.model import ModelError, check_couplings, provenance  # lazy (below)
    from lattice.score.multilevel import (  # lazy (above)
        MultilevelModel,
        level_contributions,
        multilevel_proposal,
        transfer_levels,
    )
    from lattice.score.multilevel import level_steps as steps_per_level  # lazy (above)

    if not isinstance(model, MultilevelModel):
        raise ModelError(
            f"{model.path or 'the model'} is a single-level model; method = 'multilevel' needs"
            " one trained with [train] method = 'multilevel'"
        )
    check_couplings(model, theory)
    k = transfer_levels(model.shape, theory.shape)
    where = str(model.path) if model.path else "the model"
    if k is None or (k > 0 and not transfer):
        hint = " (set transfer = true to sample 2^k times its extents)" if k else ""
        raise ModelError(
            f"{where} was trained on a {list(model.shape)} lattice; it cannot sample shape "
            f"{list(theory.shape)}{hint}"
        )
    ks = steps  # one K for every level
    if level_steps is not None:
        try:
            ks = steps_per_level(model, level_steps)
        except ValueError as e:
            raise ModelError(f"{e} ({where})") from None
    _, info = multilevel_proposal(model, theory.shape, ks, jnp.float64)
    names = tuple(info["levels"])
    State = multilevel_state(names)
    recorded = tuple(f"level_log_w_{n}" for n in names)
    n_levels = len(names) - 1
    evaluations = info["evaluations"]

    def init(phi):
        z = jnp.zeros((), phi.dtype)
        nan = z + jnp.nan
        return State(phi, theory.action(phi), z - jnp.inf, nan, z, *([nan] * len(names)))

    def step(key, state):
        dtype = state.phi.dtype
        propose, _ = multilevel_proposal(model, theory.shape, ks, dtype)
        r = propose(jax.random.fold_in(key, 3))
        prop = r.phi.astype(dtype)
        parts = level_contributions(theory, prop, n_levels, r.log_ratios.astype(dtype))
        s1 = theory.action(prop)
        lw = (-s1 + jnp.sum(r.log_ratios)).astype(dtype)
        evals = jnp.asarray(evaluations, dtype)
        new = State(prop, s1, lw, lw, evals, *[p.astype(dtype) for p in parts])
        return _independence_step(key, state, new, metropolis_step, recorded)

    return Sampler(
        init=init,
        step=step,
        name="diffusion-multilevel" + ("-mh" if metropolis_step else ""),
        traits=traits("multilevel", metropolis_step),
        identity=(
            "diffusion",
            ("multilevel", metropolis_step, steps, transfer)
            + (() if level_steps is None else (tuple(level_steps),)),
            theory,
            _model_identity(model),
        ),  # fmt: skip
        forces_per_step=0,
        diagnostics=DIAGNOSTICS + recorded,
        metadata=tuple((f"model_{k}", v) for k, v in provenance(model).items())
        + (("multilevel_levels", ",".join(names)), ("multilevel_added_levels", k)),
    )


def traits(method: str, metropolis_step: bool, divergence: str | None = None) -> Traits:
    """Exact (docs/conventions.md §5): MH on the path weight, or on the exact ODE density (up to its
    tolerance). Without Metropolis the draws themselves are approximate; a run of a method with
    a density then records its weights, and ``measure`` reweights with /weights/log_w."""
    exact = metropolis_step and (method in PATH_METHODS or divergence == "exact")
    return Traits(
        Exactness.EXACT if exact else Exactness.APPROXIMATE,
        accept_reject=metropolis_step,
        weighted=method in DENSITY_METHODS and not metropolis_step,
    )


def _stored(table, kernel: str, key: str, measure: str):
    """The table a path kernel needs, as the model carries it, or the error naming the
    model.json key and the function that measures it for an older model."""
    if table is None:
        raise ValueError(
            f"the {kernel} path kernel needs the model's {key} table (none in its model.json);"
            f" measure it with lattice.score.tables.{measure}"
        )
    return table


def _digest(a) -> tuple:
    """A hashable identity of the kernel variances: the values of an isotropic kernel's [K]
    (as before), the sha256 of a per-mode kernel's [K, *shape] bytes."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        return tuple(map(float, a))
    return (a.shape, hashlib.sha256(a.tobytes()).hexdigest())


def _model_identity(model) -> tuple:
    """A trained model is identified by its weights' sha256 and directory; one in memory (the
    exact Gaussian score, a test's network) by the object itself."""
    sha = (model.meta.get("weights") or {}).get("sha256") if model.meta else None
    if sha and model.path is not None:
        return ("model", sha, str(model.path))
    return ("model", ByIdentity(model))
