"""Training on whole reverse paths: the log-variance objective of the path weight.

The path sampler of ``path.py`` proposes a whole reverse chain y_K → … → y_0 and weighs it by
log w of ``path.py`` eq. (2). The acceptance and the effective sample size depend only on the
spread of log w, and log w is exact, cheap and differentiable in the parameters θ of the score
network and of the kernel table. The log-variance divergence (Nüsken & Richter,
arXiv:2005.05409; Richter, Berner & Liu, ICLR 2024, arXiv:2307.01198)::

    L(θ) = Var_{paths ~ R} [ log w_θ(path) ]                                          (1)

vanishes exactly when the sampler's path measure equals the target's (φ ~ e^{−S}/Z, then
noised): then log w = log Z for every path. The unknown log Z drops out of the variance, so (1)
needs the action alone: no ensemble. The reference R may be any path measure; here it is the
current sampler with its parameters held fixed (stopped gradients), so the gradient needs no
backpropagation through the chain. For a fixed path, log w depends on θ only through the prior
and the reverse kernels, g_θ = −log π_θ(y_K) − Σ_k log P_θ(y_k | y_{k+1}), so with the B paths
of a batch and w_b their weights::

    ∇L = (2/B) Σ_b (log w_b − mean log w) ∇g_θ(path_b)                              (2)

— the gradient of a surrogate that is linear in the g_b, evaluated on all K steps of all B paths
as one batch of K·B score evaluations (the paths are fixed, so the steps are independent).

The other divergence (``path_loss = "kl"``, the default) is the reverse KL of the path measures,
the objective of the Path Integral Sampler (Zhang & Chen, arXiv:2111.15141) and of DDS (Vargas,
Grathwohl & Doucet, arXiv:2302.13834)::

    KL(P_θ ‖ P) = E_{P_θ}[−log w_θ] + log Z                                            (3)

whose gradient is taken through the reparametrized chain (y_K = F⁻¹[√(C + σ_K²) F z_K],
y_k = y_{k+1} + Δ_k ŝ_θ(y_{k+1}) + F⁻¹[√v_k F z_k] at fixed z): each path then carries the
gradient of the action at its end, −∂S/∂φ(y_0), back through every step, a per-site signal where
(2) has one number per path. It costs 1.7× a step of (2) on 12×12 (backpropagation through the
K sequential steps) and lowered Var log w faster per CPU-second on the 8×8 ladder point
(docs/PERFORMANCE.md). It is mode-seeking; the sampler here cannot lose one of the two sectors
of φ → −φ, whose symmetry it has at every θ (``docs/score.md``).

Trained parameters: the network's weights, and the spectral kernel's table (``spectral.py``
eq. (1)), log-parametrized: log M(σ_k, p) at the K noise levels of the path and log C(p), each
averaged over the lattice's point group inside the loss (so the table stays real, even and
symmetric). The kernel variances are then ``spectral.py`` eq. (2), v_k = λ_k² + c_k² M_k > λ_k²,
and the prior N(0, C + σ_K²). With the exact free-field score and its closed-form table the
reverse chain is the exact reverse transition, log w = log Z for every path, and (1) and its
gradient vanish (tested). The σ → 0 limit of the physics-informed network stays F = −∂S/∂φ
exactly whatever θ (``network.py`` eq. (2)).

What the sampler is judged by, estimated on B fresh paths of the current parameters and logged:
s² = Var log w; the acceptance of independence Metropolis predicted from s for Gaussian log w,
2Φ(−s/√2), and from the pairs of paths, Σ_{i≠j} min(w_i, w_j)/((B − 1) Σ w) (the current state
weighted by w, the proposal not); and the
importance ESS per path, (Σw)²/(B Σw²).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from lattice.numerics.phi4 import Phi4
from lattice.score.path import noise_levels
from lattice.score.sde import SDE
from lattice.score.spectral import SpectralTable, color, point_group_average

__all__ = [
    "KernelTable",
    "draw_paths",
    "path_terms",
    "weight_statistics",
    "PathObjective",
]

_LOG2PI = math.log(2.0 * math.pi)
#: the floor of v_k relative to Δ_k, as in ``spectral.spectral_variances``
_FLOOR = 1e-6


class KernelTable(eqx.Module):
    """The trainable spectral table at the K levels of a path: log M(σ_k, p) [K, *shape]
    (k = 1 … K) and log C(p) [*shape] (module docstring)."""

    log_error: jnp.ndarray
    log_power: jnp.ndarray
    shape: tuple[int, ...] = eqx.field(static=True)

    @classmethod
    def from_table(cls, table: SpectralTable, levels: np.ndarray) -> KernelTable:
        """The trainable form of a stored (or closed-form) table at ``levels`` (σ_0 … σ_K)."""
        power = np.asarray(table.power, np.float64)
        err = np.asarray(table.error(np.asarray(levels[1:], np.float64)), np.float64)
        tiny = np.finfo(np.float32).tiny
        return cls(
            jnp.asarray(np.log(np.maximum(err, tiny)), jnp.float32),
            jnp.asarray(np.log(np.maximum(power, tiny)), jnp.float32),
            tuple(power.shape),
        )

    def error(self) -> jnp.ndarray:
        """M(σ_k, p), k = 1 … K."""
        return jnp.exp(point_group_average(self.log_error, len(self.shape), jnp))

    def power(self) -> jnp.ndarray:
        return jnp.exp(point_group_average(self.log_power, len(self.shape), jnp))

    def variances(self, levels: np.ndarray) -> jnp.ndarray:
        """v_k(p), k = 0 … K−1, of ``spectral.py`` eq. (2), floored at 10⁻⁶ Δ_k."""
        lo, hi = levels[:-1], levels[1:]
        delta = hi**2 - lo**2
        b = (slice(None),) + (None,) * len(self.shape)
        c = jnp.asarray(delta / hi**2, jnp.float32)[b]
        lam2 = jnp.asarray(lo**2 * delta / hi**2, jnp.float32)[b]
        return jnp.maximum(lam2 + c * c * self.error(), jnp.asarray(_FLOOR * delta, jnp.float32)[b])

    def prior_var(self, levels: np.ndarray) -> jnp.ndarray:
        """C(p) + σ_K²: the per-mode prior of the path."""
        return self.power() + jnp.float32(levels[-1] ** 2)

    def to_dict(self, levels: np.ndarray, source: str) -> dict[str, Any]:
        """The model.json ``spectral`` table (``spectral.measure_spectral``'s layout) with M at
        the path's own levels, so that a run at this K uses exactly the trained variances."""
        err = np.asarray(self.error(), np.float64).reshape(len(levels) - 1, -1)
        return {
            "sigma": [float(s) for s in levels[1:]],
            "shape": list(self.shape),
            "log_error": [float(v) for v in np.log(err).ravel()],
            "power": [float(v) for v in np.asarray(self.power(), np.float64).ravel()],
            "fields": 0,
            "source": source,
        }


def _fft2(r: jnp.ndarray, nd: int) -> jnp.ndarray:
    """|F r|² per mode, orthonormal FFT over the last ``nd`` axes."""
    f = jnp.fft.fftn(r, axes=tuple(range(-nd, 0)), norm="ortho")
    return jnp.real(f) ** 2 + jnp.imag(f) ** 2


def draw_paths(
    score_batch: Callable, table: KernelTable, levels: np.ndarray, key: jax.Array, n: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``n`` reverse paths of the spectral sampler (``path.py`` eq. (1)): the states
    ys [K+1, n, *shape] from ys[0] = y_K to ys[K] = y_0, and eq. (2) of ``path.py`` without
    −S(y_0) [n]. Step k's noise is ``normal(fold_in(key, k))``, the prior's fold_in(key, K)."""
    shape = table.shape
    nd = len(shape)
    K = len(levels) - 1
    V = math.prod(shape)
    var = table.variances(levels)
    prior = table.prior_var(levels)
    sig = jnp.asarray(levels, jnp.float32)
    delta = jnp.asarray(levels[1:] ** 2 - levels[:-1] ** 2, jnp.float32)
    log_dets = jnp.sum(jnp.log(var), axis=tuple(range(1, nd + 1)))
    z = jax.random.normal(jax.random.fold_in(key, K), (n, *shape), jnp.float32)
    y = color(z, prior[None])
    ax = tuple(range(1, nd + 1))
    log_prior = -0.5 * jnp.sum(z * z, ax) - 0.5 * (jnp.sum(jnp.log(prior)) + V * _LOG2PI)

    def body(carry, k):
        y, acc = carry
        s = score_batch(y, sig[k + 1])
        zk = jax.random.normal(jax.random.fold_in(key, k), y.shape, jnp.float32)
        step = delta[k] * s + color(zk, var[k][None])
        log_q = -0.5 * jnp.sum(step * step, ax) / delta[k] - 0.5 * V * (_LOG2PI + jnp.log(delta[k]))
        log_p = -0.5 * jnp.sum(zk * zk, ax) - 0.5 * (log_dets[k] + V * _LOG2PI)
        y = y + step
        return (y, acc + log_q - log_p), y

    (_, acc), ys = jax.lax.scan(body, (y, jnp.zeros((n,), jnp.float32)), jnp.arange(K)[::-1])
    return jnp.concatenate([y[None], ys]), acc - log_prior


def path_terms(
    score_batch: Callable, table: KernelTable, levels: np.ndarray, ys: jnp.ndarray
) -> jnp.ndarray:
    """g_θ of eq. (2) for fixed paths ys [K+1, n, *shape]: −log π_θ(y_K) − Σ_k log P_θ(y_k |
    y_{k+1}) [n], all K·n score evaluations in one batch."""
    shape = table.shape
    nd = len(shape)
    K, n = ys.shape[0] - 1, ys.shape[1]
    V = math.prod(shape)
    ax = tuple(range(-nd, 0))
    var = table.variances(levels)[::-1]  # step j = K−1−k
    prior = table.prior_var(levels)
    sig = jnp.asarray(levels[1:][::-1], jnp.float32)  # σ_{k+1}
    delta = jnp.asarray((levels[1:] ** 2 - levels[:-1] ** 2)[::-1], jnp.float32)
    log_pi = -0.5 * jnp.sum(_fft2(ys[0], nd) / prior[None], ax) - 0.5 * (
        jnp.sum(jnp.log(prior)) + V * _LOG2PI
    )
    hi, lo = ys[:-1], ys[1:]
    s = score_batch(hi.reshape((K * n, *shape)), jnp.repeat(sig, n)).reshape(hi.shape)
    b = (slice(None), None) + (None,) * nd
    r = lo - hi - delta[b] * s
    log_P = -0.5 * jnp.sum(_fft2(r, nd) / var[:, None], ax) - 0.5 * (
        jnp.sum(jnp.log(var), ax)[:, None] + V * _LOG2PI
    )
    return -log_pi - jnp.sum(log_P, axis=0)


def weight_statistics(log_w: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """What the sampler is judged by, from the log weights of n paths (module docstring):
    ``var_log_w``, ``acceptance_gauss`` 2Φ(−s/√2), ``acceptance_pairs`` and ``ess``."""
    lw = log_w - jnp.max(log_w)
    w = jnp.exp(lw)
    n = log_w.shape[0]
    var = jnp.var(log_w)
    # E[min(1, w'/w)] with w ~ the target (weight w) and w' ~ the sampler: over the pairs,
    # Σ_{i≠j} min(w_i, w_j) / ((n − 1) Σ w)
    pairs = (jnp.sum(jnp.minimum(w[:, None], w[None, :])) - jnp.sum(w)) / ((n - 1) * jnp.sum(w))
    return {
        "var_log_w": var,
        "acceptance_gauss": jax.scipy.special.erfc(jnp.sqrt(var) / 2.0),
        "acceptance_pairs": pairs,
        "ess": jnp.sum(w) ** 2 / (n * jnp.sum(w * w)),
    }


class PathObjective:
    """The objectives for one theory, SDE and K: the gradients of eq. (1) (log-variance, by (2))
    and eq. (3) (reverse KL, through the reparametrized paths), each on ``paths`` fresh paths
    of the current parameters, and the evaluation on fresh paths."""

    def __init__(self, theory: Phi4, sde: SDE, steps: int, static, paths: int):
        self.theory, self.sde, self.static, self.paths = theory, sde, static, paths
        self.levels = noise_levels(sde, steps)

    def model(self, params):
        """(network, KernelTable) of ``params``."""
        return eqx.combine(params, self.static)

    def log_weights(self, params, key, n: int):
        """Fresh paths of ``params``: (ys, log w [n])."""
        net, table = self.model(params)
        ys, log_ratio = draw_paths(net.batch, table, self.levels, key, n)
        return ys, log_ratio - self.theory.action(ys[-1])

    def loss_and_grad(self, params, key):
        """(Var log w of the batch, its gradient (2)) on ``paths`` fresh paths."""
        ys, log_w = self.log_weights(jax.lax.stop_gradient(params), key, self.paths)
        ys, log_w = jax.lax.stop_gradient((ys, log_w))
        ok = jnp.all(jnp.isfinite(log_w))
        lw = jnp.where(ok, log_w, 0.0)
        coef = 2.0 * (lw - jnp.mean(lw)) / lw.shape[0]

        def surrogate(p):
            net, table = self.model(p)
            return jnp.sum(coef * path_terms(net.batch, table, self.levels, ys))

        grads = jax.grad(surrogate)(params)
        grads = jax.tree_util.tree_map(lambda g: jnp.where(ok, g, 0.0), grads)
        loss = jnp.where(ok, jnp.var(lw), jnp.inf)
        return loss, grads

    def kl_loss_and_grad(self, params, key):
        """(Var log w of the batch, the gradient of the reverse KL E[−log w], eq. (3)) through
        the reparametrized paths."""

        def loss(p):
            lw = self.log_weights(p, key, self.paths)[1]
            return -jnp.mean(lw), lw

        (_, lw), grads = jax.value_and_grad(loss, has_aux=True)(params)
        ok = jnp.all(jnp.isfinite(lw))
        grads = jax.tree_util.tree_map(lambda g: jnp.where(ok, g, 0.0), grads)
        return jnp.where(ok, jnp.var(lw), jnp.inf), grads

    @functools.cached_property
    def evaluate(self):
        """Jitted: (params, key, n) → :func:`weight_statistics` of n fresh paths."""

        @functools.partial(jax.jit, static_argnums=2)
        def ev(params, key, n):
            return weight_statistics(self.log_weights(params, key, n)[1])

        return ev


def _labels(params) -> Any:
    """The optimizer group of every leaf: "table" for the kernel table and the base mass
    log μ², "net" for the network's weights."""
    net, table = params
    labels = jax.tree_util.tree_map(lambda _: "net", net)
    if getattr(net, "log_mass", None) is not None:
        labels = eqx.tree_at(lambda n: n.log_mass, labels, "table")
    return labels, jax.tree_util.tree_map(lambda _: "table", table)


class PathTrainer:
    """Jitted optimizer steps on eq. (1), plus evaluation: the interface of
    :class:`lattice.score.train.Trainer` that ``lattice train``'s loop drives.

    ``cfg`` is a :class:`lattice.config.train.TrainConfig` (read by attribute); ``net`` the
    starting network (a fresh one with a zero output layer, or a model's), ``table`` its
    :class:`~lattice.score.spectral.SpectralTable`. AdamW as for denoising score matching, the
    table and log μ² with their own learning rate. The paths of step k come from
    ``fold_in(fold_in(key(seed), 2), k)``, the logged evaluation's from ``fold_in(…, 3)``, so a
    resumed training is bitwise identical to an uninterrupted one.
    """

    def __init__(self, cfg: Any, theory: Phi4, sde: SDE, net, table: SpectralTable):
        import optax  # lazy: the sampler imports this module's functions without training

        from lattice.score.train import apply_step  # lazy: the DSM trainer (same layer)

        self.cfg, self.theory, self.sde = cfg, theory, sde
        t = cfg.train
        self.levels = noise_levels(sde, t.steps_per_path)
        params, static = eqx.partition((net, KernelTable.from_table(table, self.levels)),
                                       eqx.is_inexact_array)  # fmt: skip
        self.static = static
        self.objective = PathObjective(theory, sde, t.steps_per_path, static, t.batch_size)

        def schedule_of(lr):
            return optax.warmup_cosine_decay_schedule(0.0, lr, t.warmup, t.steps, lr * 0.01)

        self.schedule = schedule_of(t.learning_rate)
        self.optimizer = optax.chain(
            optax.clip_by_global_norm(t.grad_clip),
            optax.multi_transform(
                {
                    "net": optax.adamw(self.schedule, weight_decay=t.weight_decay),
                    "table": optax.adam(schedule_of(t.table_lr)),
                },
                _labels(params),
            ),
        )
        self.init_state = (params, self.optimizer.init(params), params, jnp.int32(0))
        base = jax.random.key(t.seed)
        self.step_key, self.eval_key = jax.random.fold_in(base, 2), jax.random.fold_in(base, 3)
        self._apply = functools.partial(apply_step, self.optimizer, t.ema)
        self._norm = optax.tree.norm

    def net(self, params):
        """The network of ``params``."""
        return self.objective.model(params)[0]

    def table(self, params) -> KernelTable:
        return self.objective.model(params)[1]

    @functools.cached_property
    def step(self):
        """One optimizer step, jitted: state → (state', (Var log w, |g|))."""

        obj = self.objective
        grad_fn = obj.kl_loss_and_grad if self.cfg.train.divergence == "kl" else obj.loss_and_grad

        @jax.jit
        def step(state):
            params, k = state[0], state[3]
            loss, grads = grad_fn(params, jax.random.fold_in(self.step_key, k))
            return self._apply(state, grads), (loss, self._norm(grads))

        return step

    def run(self, state, n: int):
        """``n`` steps, dispatched asynchronously (stacked losses and gradient norms)."""
        out = []
        for _ in range(n):
            state, o = self.step(state)
            out.append(o)
        return state, jnp.stack([o[0] for o in out]), jnp.stack([o[1] for o in out])

    def evaluate(self, params, step: int, n: int | None = None) -> dict[str, float]:
        """:func:`weight_statistics` of ``n`` (default ``eval_paths``) fresh paths."""
        n = n or self.cfg.train.paths_per_eval
        stats = self.objective.evaluate(params, jax.random.fold_in(self.eval_key, step), n)
        return {k: float(v) for k, v in stats.items()}

    def history_row(self, losses, ema_params, step: int) -> dict[str, float]:
        """The history.csv columns of one block: ``train_loss`` (the batches' mean Var log w,
        the finite ones), ``val_loss`` (Var log w of fresh paths of the EMA model) and that
        model's predicted acceptances and ESS."""
        lv = np.asarray(losses, np.float64)
        ok = lv[np.isfinite(lv)]
        ev = self.evaluate(ema_params, step)
        return {
            "train_loss": float(np.mean(ok)) if ok.size else float("nan"),
            "val_loss": ev["var_log_w"],
            "acceptance_gauss": ev["acceptance_gauss"],
            "acceptance_pairs": ev["acceptance_pairs"],
            "ess": ev["ess"],
        }

    @staticmethod
    def note(row: dict[str, float]) -> str:
        """The progress line's note."""
        return (
            f"var log w {row['train_loss']:.3f}  acc {row['acceptance_pairs']:.3f}"
            f"  ESS {row['ess']:.3f}"
        )
