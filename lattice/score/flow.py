"""The probability-flow ODE and the exact log-density of the samples it generates.

For the forward SDE dx = f(x, t) dt + g(t) dw with marginals p_t, the ODE (Song et al.,
arXiv:2011.13456, eq. 13)::

    dx/dt = f̃(x, t) = f(x, t) − ½ g(t)² ∇_x log p_t(x)                          (1)

has the same marginals. Run from t = 1, x(1) ~ prior, down to t_0, it is a deterministic,
invertible map x(1) ↦ x(t_0), so the density of its output follows from the instantaneous
change of variables (Chen et al. 2018)::

    log q(x(t_0)) = log π(x(1)) + ∫_{t_0}^{1} ∇·f̃(x(t), t) dt                   (2)

With the learned score in (1), q is the density of what the sampler *actually* generates —
exactly, whatever the quality of the score — up to the ODE solver's error. That is what an
independence Metropolis–Hastings step needs. The divergence is evaluated exactly, as the trace
of the Jacobian from one forward-mode product per lattice site (``jax.jvp`` against every basis
vector, batched with ``vmap``) or, for a network with a finite receptive field R, per colour
of a colouring that puts same-coloured sites more than R apart (:func:`probe_colors`: m^d
products, m = R + 1, instead of V; Π_i ⌈L_i/⌊L_i/m⌋⌉ when the L_i are not multiples of m);
a Hutchinson estimate is offered only as an option that makes
the density, and so the sampler, approximate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lattice.score.sde import SDE

__all__ = ["FlowResult", "flow_field", "probe_colors", "exact_divergence", "sample_with_density"]

#: score(x, t) for one field x and scalar t (the model's score in the SDE's own variable)
Score = Callable[[jax.Array, jax.Array], jax.Array]


class FlowResult(NamedTuple):
    x: jax.Array  # the sample x(t_0), lattice shape
    log_q: jax.Array  # log q(x(t_0)) of eq. (2)
    log_prior: jax.Array  # log π(x(1))
    steps: jax.Array  # accepted + rejected solver steps
    evaluations: jax.Array  # vector-field evaluations (each costs 1 + V score evaluations)


def flow_field(score: Score, sde: SDE) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """f̃(x, t) of eq. (1) for one field."""

    def f(x, t):
        g = sde.diffusion(t)
        return sde.drift(x, t) - 0.5 * (g * g) * score(x, t)

    return f


def probe_colors(shape: tuple[int, ...], receptive_field: int | None) -> np.ndarray:
    """A colouring of the lattice sites (int array of ``shape``) such that two distinct sites
    of one colour are farther than R = ``receptive_field`` apart along some axis, with
    periodic distances; None (a global field) gives every site its own colour.

    Per axis of length L: n = ⌊L/(R + 1)⌋ segments of as equal lengths as possible (each ≥
    R + 1), and the colour of a coordinate is its offset within its segment, so equal
    colours sit in different segments, at least one whole segment (≥ R + 1 sites) apart both
    ways round the ring. With n ≤ 1 every coordinate is its own colour. The site colour is
    the mixed-radix product of the axis colours: Π_i ⌈L_i/n_i⌉ colours in all (m^d when every
    L_i is a multiple of m = R + 1)."""
    if receptive_field is None:
        return np.arange(math.prod(shape)).reshape(shape)
    per_axis = []
    for L in shape:
        n = max(1, L // (receptive_field + 1))
        starts = (np.arange(n + 1) * L) // n  # segment boundaries, lengths differ by ≤ 1
        seg = np.searchsorted(starts, np.arange(L), side="right") - 1
        per_axis.append(np.arange(L) - starts[seg])
    colors = np.zeros(shape, dtype=np.int64)
    for axis, c in enumerate(per_axis):
        width = int(c.max()) + 1
        idx = [None] * len(shape)
        idx[axis] = slice(None)
        colors = colors * width + c[tuple(idx)]
    return colors


def exact_divergence(f: Callable[[jax.Array], jax.Array], x: jax.Array, colors=None):
    """(f(x), ∇·f(x)): the exact trace of J = ∂f/∂x from one forward-mode product per colour,
    Σ_c Σ_{x ∈ c} (J e_c)_x with e_c the indicator of colour c (:func:`probe_colors`). Exact
    when J_xy = 0 for distinct sites of one colour; the default, one colour per site, is the
    full basis (V products), right for any f."""
    if colors is None:
        colors = np.arange(x.size).reshape(x.shape)
    colors = np.asarray(colors)
    n = int(colors.max()) + 1
    basis = jnp.asarray(colors[None] == np.arange(n).reshape((n,) + (1,) * x.ndim), x.dtype)
    fx = f(x)
    cols = jax.vmap(lambda e: jax.jvp(f, (x,), (e,))[1])(basis)  # [n, *shape]: J e_c
    return fx, jnp.sum(basis * cols)


def hutchinson_divergence(f, x, key):
    """(f(x), zᵀ (∂f/∂x) z) with Rademacher z: unbiased for ∇·f, but its noise makes e^{…}
    biased and a Metropolis step on it inexact (REFERENCES.md, pitfalls)."""
    z = jax.random.rademacher(key, x.shape, x.dtype)
    fx, jz = jax.jvp(f, (x,), (z,))
    return fx, jnp.sum(z * jz)


#: the adaptive Runge–Kutta solvers of :func:`sample_with_density`: name -> (diffrax class,
#: new vector-field evaluations per step; the last stage of each is the next step's first)
SOLVERS = {"dopri5": ("Dopri5", 6), "tsit5": ("Tsit5", 6), "bosh3": ("Bosh3", 3)}
#: the solver when none is named (``sampler.solver`` unset)
DEFAULT_SOLVER = "dopri5"


def sample_with_density(
    score: Score,
    sde: SDE,
    x1: jax.Array,
    *,
    t0: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    divergence: str = "exact",
    key: jax.Array | None = None,
    solver: str | None = None,
    initial_steps: int = 16,
    colors: np.ndarray | None = None,
) -> FlowResult:
    """Integrate eq. (1) with its log-density, eq. (2), from x(1) = ``x1`` down to ``t0``
    (default: the SDE's t_min), adaptively (diffrax: ``solver`` of :data:`SOLVERS`, default
    :data:`DEFAULT_SOLVER` — Dopri5,
    Tsit5 (both 5th order) or Bosh3 (3rd order, half the evaluations per step) — with a PID
    controller at the stated ``rtol``/``atol``, first step (1 − t0)/``initial_steps``).
    One field; ``vmap`` it over chains. ``colors`` (:func:`probe_colors`) makes the exact
    divergence use one product per colour instead of one per site."""
    import diffrax  # here, not at the top: it costs 0.35 s beyond equinox; only ODE runs use it

    solver = DEFAULT_SOLVER if solver is None else solver
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r} (allowed: {', '.join(SOLVERS)})")
    cls, per_step = SOLVERS[solver]
    t0 = sde.t_min if t0 is None else t0
    f = flow_field(score, sde)
    nd = x1.ndim
    if divergence == "exact":

        def div(fn, x, t):
            return exact_divergence(fn, x, colors)
    elif divergence == "hutchinson":
        if key is None:
            raise ValueError("the Hutchinson divergence needs a key")

        def div(fn, x, t):
            return hutchinson_divergence(
                fn, x, jax.random.fold_in(key, jnp.round(t * 1e6).astype(jnp.int32))
            )
    else:
        raise ValueError(f"unknown divergence {divergence!r} (allowed: exact, hutchinson)")

    def vf(t, state, args):
        x, _ = state
        fx, d = div(lambda y: f(y, t), x, t)
        return fx, d

    term = diffrax.ODETerm(vf)
    y0 = (x1, jnp.zeros((), x1.dtype))
    sol = diffrax.diffeqsolve(
        term,
        getattr(diffrax, cls)(),
        1.0,
        t0,
        -(1.0 - t0) / initial_steps,
        y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=False,
    )
    x, delta = sol.ys[0][-1], sol.ys[1][-1]  # delta = ∫_1^{t0} ∇·f̃ dt
    log_prior = sde.prior_logp(x1, nd)
    ok = sol.result == diffrax.RESULTS.successful
    log_q = jnp.where(ok, log_prior - delta, jnp.nan)
    stats = sol.stats
    n = stats["num_steps"]
    return FlowResult(x, log_q, log_prior, n, n * per_step + 1)
