"""The multilevel (coarse-to-fine) diffusion model and its exact proposal (issue 26;
docs/multilevel.md).

Split φ on the fine lattice n times with the orthonormal Haar map (``numerics/wavelet.py``)::

    φ = c_0 → (c_1, d_0) → (c_2, d_1) → … → (c_n, d_{n−1}),                          (1)

c_{j+1} the coarse field and d_j the 2^D − 1 detail channels of level j (finest first). The map
is orthogonal, so p(φ) = p(c_n) Π_j p(d_j | c_{j+1}) with no Jacobian. The model has one score
per factor: a :class:`~lattice.score.network.ScoreNet` for the coarsest field c_n (plain form,
``network.py`` eq. (1): no action is known for it) and a
:class:`~lattice.score.conditional.ConditionalNet` per level for d_j given c_{j+1} (the finest
one physics-informed), each with its own variance-exploding SDE.

**The proposal** is a reverse path (``path.py`` eq. (1)) for c_n, then one conditional reverse
path per level, coarse to fine, each with K_ℓ steps (one K for all, or one per level) and the
spectral kernel of ``spectral.py`` (per momentum mode, and per channel for the details: the
table M_j(σ, ch, p), C_j(ch, p) of each level is measured on its training pairs). Its
weight is the product of the levels' path weights::

    log w = −S(φ) + Σ_{levels ℓ} [Σ_k log Q_ℓ − log π_ℓ − Σ_k log P_ℓ]                    (2)

the ratio of "φ ~ e^{−S}, then every level's forward noising" to the sampler's joint density of
all the paths. Independence Metropolis–Hastings on it is exact for any networks and any K
(each level's forward chain is exact noising of that level's variable given the coarser ones,
whose law under e^{−S} is the factor of (1)); so are reweighting and log Z = log E[w]. The
bracket of every level is recorded apart (``level_log_w_<ℓ>``) to show which level limits the
acceptance.

**Transfer to 2^k L.** A model trained on L samples a lattice of extents 2^k L: the field of
the trained shape, rescaled by a, is taken as the coarse field of one more level, whose details
come from the finest level's network (local, periodic, and physics-informed with the same
couplings on any extent; its spectral table is resampled to the new momentum grid at the
nearest momentum). a = RMS(c_1)/RMS(φ) on the training data: at the critical fixed point the
ratio of a coarse field's scale to its parent's is the same at every scale. The rescaling
c = a φ' has the constant Jacobian a^{V_c}, which enters that level's bracket as + V_c log a,
so the weight (2) stays exact and log Z keeps the Lebesgue measure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lattice.numerics.phi4 import Phi4
from lattice.numerics.wavelet import coarse_shape, haar_merge, haar_split
from lattice.score.conditional import ConditionalNet
from lattice.score.network import ScoreNet
from lattice.score.path import noise_levels, sample_spectral_path
from lattice.score.sde import SDE
from lattice.score.spectral import SpectralTable, spectral_variances

__all__ = [
    "MultilevelModel",
    "MultilevelResult",
    "auto_levels",
    "level_names",
    "transfer_levels",
    "resample_table",
    "multilevel_proposal",
    "multilevel_redraw",
    "MIN_COARSE",
    "coarse_theory",
    "level_contributions",
    "level_steps",
]

#: the smallest extent of the coarsest lattice that ``levels = "auto"`` goes down to
MIN_COARSE = 4


def auto_levels(shape) -> int:
    """The most halvings that keep every extent even at each split and the coarsest lattice at
    least :data:`MIN_COARSE` sites along every axis (0: none possible)."""
    n = 0
    shape = tuple(shape)
    while all(s % 2 == 0 and s // 2 >= MIN_COARSE for s in shape):
        shape = tuple(s // 2 for s in shape)
        n += 1
    return n


def level_names(levels: int) -> list[str]:
    """``level0`` … ``level{n−1}`` (the details, finest first), then ``coarse``."""
    return [f"level{j}" for j in range(levels)] + ["coarse"]


@dataclass(frozen=True)
class MultilevelModel:
    """The networks of eq. (1) with their SDEs and spectral tables (in the order of
    :func:`level_names`: the conditionals finest first, then the coarsest field's)."""

    coarse: ScoreNet
    conditionals: tuple[ConditionalNet, ...]
    sdes: tuple[SDE, ...]
    theory: Phi4
    scale: float
    tables: tuple[SpectralTable, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def levels(self) -> int:
        return len(self.conditionals)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.theory.shape

    @property
    def coarse_shape(self) -> tuple[int, ...]:
        return coarse_shape(self.shape, self.levels)

    @property
    def sde(self) -> SDE:
        """The coarsest field's SDE (what code written for one SDE reads)."""
        return self.sdes[-1]

    @property
    def receptive_field(self) -> int | None:
        return None  # the coarse network is global


def coarse_theory(theory: Phi4, levels: int) -> Phi4:
    """A theory object on the coarsest lattice: the coarse network takes its shape and
    dimension from it (it is plain, so its couplings are not used)."""
    shape = tuple(s >> levels for s in theory.shape)
    return dataclasses.replace(theory, shape=shape)


def transfer_levels(model_shape, shape) -> int | None:
    """k with ``shape`` = 2^k × ``model_shape`` on every axis (the same k), else None."""
    model_shape, shape = tuple(model_shape), tuple(shape)
    if len(model_shape) != len(shape):
        return None
    for k in range(0, 16):
        if tuple(m << k for m in model_shape) == shape:
            return k
    return None


def resample_table(table: SpectralTable, shape, ndim: int) -> SpectralTable:
    """A per-mode table on a lattice of extents ``shape`` (the last ``ndim`` axes; leading
    channel axes kept): each momentum takes the value of the nearest momentum of the table's
    grid, per axis, with ties rounded half to even so that the table stays even in p."""
    old = np.asarray(table.power).shape
    lead, spatial = old[: len(old) - ndim], old[len(old) - ndim :]
    index = []
    for n_new, n_old in zip(shape, spatial, strict=True):
        f = np.fft.fftfreq(n_new) * n_new  # signed integer frequencies
        index.append((np.round(f * n_old / n_new).astype(int)) % n_old)
    sel = (Ellipsis, *np.ix_(*index))

    def error(s):
        return table.error(s)[sel]

    power = np.asarray(table.power)[sel]
    assert power.shape == lead + tuple(shape)
    return SpectralTable(
        error, power, f"{table.source}; resampled to {list(shape)}", table.levels, table.fields
    )


class MultilevelResult(NamedTuple):
    phi: jax.Array  # the proposal on the fine lattice
    log_ratios: jax.Array  # per level, eq. (2)'s bracket: added levels (top first), levels, coarse


def multilevel_proposal(
    model: MultilevelModel, shape, steps, dtype
) -> tuple[Callable[[jax.Array], MultilevelResult], dict[str, Any]]:
    """``propose(key)`` → :class:`MultilevelResult` for the lattice ``shape`` (the model's, or
    2^k times it: transfer), with K = ``steps`` at every level or ``steps`` = (K_0, …, K_n)
    per level of the model (finest first, :func:`level_steps`; added levels take K_0), and a
    summary: ``levels`` (the names of ``log_ratios``' entries), ``added`` (k), ``evaluations``
    (network evaluations per proposal, each counted as its level's share of the fine lattice's
    V), ``shares`` (those shares per level) and ``steps`` (K per level)."""
    propose, _, info = _level_chain(model, shape, steps, dtype)
    return propose, info


def multilevel_redraw(
    model: MultilevelModel, shape, steps, dtype
) -> tuple[Callable[[jax.Array, jax.Array, int], MultilevelResult], dict[str, Any]]:
    """``redraw(key, phi, top)`` → :class:`MultilevelResult`: the levels ``top`` … 0 (in the
    order of ``info["levels"]``, finest first) of the fine field ``phi`` drawn afresh by their
    conditional reverse paths, the field above them kept; ``log_ratios`` [top + 1] are the
    redrawn levels' brackets of eq. (2). ``top`` is static. The same keys as
    :func:`multilevel_proposal` (level idx draws from ``fold_in(key, idx)``)."""
    _, redraw, info = _level_chain(model, shape, steps, dtype)
    return redraw, info


def level_steps(model: MultilevelModel, steps) -> tuple[int, ...]:
    """K per level of the model (level0 … coarse): ``steps`` for every level, or a sequence of
    ``model.levels + 1`` of them (ValueError naming ``sampler.level_steps`` otherwise)."""
    if isinstance(steps, int | np.integer):
        return (int(steps),) * (model.levels + 1)
    ks = tuple(int(k) for k in steps)
    if len(ks) != model.levels + 1:
        names = ", ".join(level_names(model.levels))
        raise ValueError(
            f"sampler.level_steps: {len(ks)} values for a model of {model.levels + 1} levels "
            f"(one per level, finest first: {names})"
        )
    return ks


def _level_chain(model: MultilevelModel, shape, steps, dtype):
    ks = level_steps(model, steps)
    k_add = transfer_levels(model.shape, shape)
    if k_add is None:
        raise ValueError(
            f"a multilevel model trained on {list(model.shape)} samples that shape or 2^k times "
            f"it on every axis (got {list(shape)})"
        )
    if len(model.tables) != model.levels + 1:
        raise ValueError("the multilevel model carries no spectral tables (model.json)")
    nd = len(shape)
    V = float(np.prod(shape))
    plans = []  # (kind, net, levels σ, variances, prior variance, coarse shape, log a)

    def plan(net, sde, table, cshape, log_a, kind, k):
        lv = noise_levels(sde, k)
        var = spectral_variances(lv, table)
        prior = table.power + lv[-1] ** 2
        return (kind, net, lv, var, prior, tuple(cshape), log_a)

    fine0 = model.conditionals[0]
    for i in range(k_add, 0, -1):  # the added levels, top first: coarse shape = L 2^(i−1)
        cs = tuple(s << (i - 1) for s in model.shape)
        table = resample_table(model.tables[0], cs, nd)
        log_a = float(np.log(model.scale))
        plans.append(plan(fine0, model.sdes[0], table, cs, log_a, "cond", ks[0]))
    for j, net in enumerate(model.conditionals):
        cs = coarse_shape(model.shape, j + 1)
        plans.append(plan(net, model.sdes[j], model.tables[j], cs, 0.0, "cond", ks[j]))
    cs = model.coarse_shape
    plans.append(plan(model.coarse, model.sdes[-1], model.tables[-1], cs, 0.0, "coarse", ks[-1]))
    names = [f"added{i}" for i in range(k_add, 0, -1)] + level_names(model.levels)
    share = [2**nd * float(np.prod(p[5])) / V for p in plans[:-1]] + [float(np.prod(cs)) / V]
    per_plan = (ks[0],) * k_add + ks  # the added levels take level0's K
    evaluations = float(sum(k * sh for k, sh in zip(per_plan, share, strict=True)))

    def run_level(p, key, c):
        kind, net, lv, var, prior, cshape, log_a = p
        z_shape = cshape if kind == "coarse" else (2**nd - 1, *cshape)
        z = jax.random.normal(jax.random.fold_in(key, 1 << 20), z_shape, dtype)
        if kind == "coarse":

            def score(y, s):
                return net.batch(y[None], s)[0]
        else:

            def score(y, s):
                return net(y, s, c)

        r = sample_spectral_path(score, lv, var, prior, key, z, nd)
        return r.y, r.log_ratio

    def descend(key, c, top: int):
        """Levels ``top`` … 0 (finest last) from the field c above level ``top``: the fine
        field and those levels' brackets of eq. (2), finest first."""
        ratios = [None] * (top + 1)
        for idx in range(top, -1, -1):
            p = plans[idx]
            log_a = p[6]
            if log_a:
                c = c * jnp.asarray(np.exp(log_a), dtype)
            d, lr = run_level(p, jax.random.fold_in(key, idx), c)
            ratios[idx] = lr + jnp.asarray(log_a * float(np.prod(p[5])), dtype)
            c = haar_merge(c, d.astype(dtype), nd)
        return c, ratios

    def propose(key) -> MultilevelResult:
        c, top = run_level(plans[-1], jax.random.fold_in(key, len(plans) - 1), None)
        phi, ratios = descend(key, c.astype(dtype), len(plans) - 2)
        return MultilevelResult(phi, jnp.stack([r.astype(dtype) for r in ratios + [top]]))

    def above(phi, top: int):
        """The field above level ``top`` of the fine field ``phi``: the inverse of
        :func:`descend`'s merges and rescalings down to there."""
        c = phi
        for idx in range(top + 1):
            c, _ = haar_split(c, nd)
            if plans[idx][6]:
                c = c * jnp.asarray(np.exp(-plans[idx][6]), dtype)
        return c

    def redraw(key, phi, top: int) -> MultilevelResult:
        """Levels ``top`` … 0 of ``phi`` drawn afresh, the field above them kept (a
        conditional move of eq. (1)); ``log_ratios`` are the redrawn levels' brackets."""
        out, ratios = descend(key, above(phi, top), top)
        return MultilevelResult(out, jnp.stack([r.astype(dtype) for r in ratios]))

    info = {"levels": names, "added": k_add, "evaluations": evaluations, "shares": share,
            "steps": list(per_plan)}  # fmt: skip
    return propose, redraw, info


def level_contributions(theory: Phi4, phi, levels: int, brackets) -> list:
    """The per-level parts of log w of ``multilevel.py`` eq. (2), which sum to it exactly.
    With S_j = S(φ_j), φ_j the fine field rebuilt from the level-j coarse field c_j alone
    (every finer detail zero: c_j / 2^{jD/2} on each block of 2^j sites per axis; φ_0 = φ),
    level j gets its bracket + S_{j+1} − S_j and the coarsest field its bracket − S_n.
    ``brackets`` [levels + 1] are in that order (finest first)."""
    nd = theory.ndim
    S = [theory.action(phi)]
    c = phi
    for j in range(1, levels + 1):
        c, _ = haar_split(c, nd)
        up = c * (2.0 ** (-0.5 * j * nd))
        for ax in range(nd):
            up = jnp.repeat(up, 2**j, axis=ax)
        S.append(theory.action(up))
    S.append(jnp.zeros((), phi.dtype))
    return [brackets[j] + S[j + 1] - S[j] for j in range(levels + 1)]
