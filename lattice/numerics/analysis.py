"""Autocorrelation-aware error analysis: the Γ-method of U. Wolff, "Monte Carlo errors with
less errors", Comput. Phys. Commun. 156 (2004) 143, hep-lat/0306017.

Host-side numpy. Data are ``[chains, n]`` (a 1-D array is one chain; a list of chains of
different lengths is accepted too). Independent chains are *replica* r = 1..R of lengths
n_r, N = Σ_r n_r, and are combined as in Wolff's replica treatment (sec. 3):

- fluctuations are taken about the *global* mean ā = (1/N) Σ_r Σ_i a_i^r, so a spread of the
  replica means (e.g. unthermalized chains) shows up in Γ and in the error;
- Γ(t) = Σ_r Σ_{i=1}^{n_r−t} δ_i^r δ_{i+t}^r / Σ_r (n_r − t),  t = 0..W_max, W_max = ⌊min n_r/2⌋;
- one window W for all replica, from the automatic windowing of sec. 3.3 applied to the
  replica-summed Γ with the total N.

Conventions (τ_int in units of measurements, uncorrelated data give ½):

    τ_int(W) = ½ + Σ_{t=1}^{W} ρ(t),   ρ(t) = Γ(t)/Γ(0),   C_F(W) = 2 τ_int(W) Γ(0)
    σ_F = sqrt(C_F(W)/N)

with Γ bias-corrected as Γ(t) → Γ(t) + C_F(W)/N (hep-lat/0306017 eq. (49)) before ρ, τ_int and
σ_F are formed. The one departure from the letter of the paper: a raw τ_int(W) below ½
(anticorrelation or noise at the window) is raised to ½ before the bias correction, so the
error is never smaller than the naive one and never zero for fluctuating data.

Comparison with pyerrors (``Obs.gamma_method``), which the tests use as an oracle: ``value``,
``error``, ``error_of_error`` and ``window`` agree to round-off for one chain, and for replica whose
means coincide (pyerrors centres each replica on its own mean). pyerrors reports
τ_int = τ_raw (1 + (2W+1)/N) / (1 + 1/N); here τ_int = τ_raw (1 + (2W+1)/N) / (1 + 2τ_raw/N), the
τ_int of the bias-corrected Γ; both give the same error. pyerrors' largest window is
⌊n/2⌋ − 1, ours ⌊n/2⌋ (only matters when windowing fails).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import scipy.fft

__all__ = [
    "GammaResult",
    "ar1",
    "ar1_tau_int",
    "effective_mass",
    "effective_mass_jackknife",
    "log_mean_exp",
    "family_z",
    "independence_acceptance",
    "gamma_method",
    "gamma_method_derived",
    "jackknife",
    "kish_ess",
    "rho_error",
]


@dataclass(frozen=True, eq=False)
class GammaResult:
    """Outcome of a Γ-method analysis (module docstring for the conventions).

    Attributes:
        value: the estimate (mean, or f(means) for a derived quantity).
        error: σ_F = sqrt(C_F(W)/N) = sqrt(2 τ_int Γ(0)/N), Γ bias-corrected.
        error_of_error: σ_F sqrt((W + ½)/N), the statistical error of ``error``.
        tau_int: τ_int at the chosen window, in units of measurements.
        tau_int_error: 2 τ_int sqrt((W + ½ − τ_int)/N) (hep-lat/0306017 eq. (42)).
        window: the summation window W.
        rho: ρ(t) = Γ(t)/Γ(0) of the bias-corrected Γ, t = 0..W_max.
        tau_int_of_W: τ_int(W) = ½ + Σ_{t=1}^{W} ρ(t), W = 0..W_max (equals ``tau_int`` at
            ``window`` unless a raw τ_int below ½ was raised to ½).
        tau_int_error_of_W: eq. (42) applied to ``tau_int_of_W``, for an error band.
        n: total number of measurements N = Σ_r n_r.
        chains: number of replica R.
        windowing_failed: the criterion g(W) < 0 never held up to W_max, so W = W_max.
    """

    value: float
    error: float
    error_of_error: float
    tau_int: float
    tau_int_error: float
    window: int
    rho: np.ndarray
    tau_int_of_W: np.ndarray
    tau_int_error_of_W: np.ndarray
    n: int
    chains: int
    windowing_failed: bool = False

    def as_dict(self) -> dict[str, float | int]:
        """``{"value", "error", "tau_int", "tau_int_error", "window"}``, plain floats and an int:
        the one JSON entry of a Γ-method result (an observable of ``lattice measure --json``)."""
        return {
            "value": float(self.value),
            "error": float(self.error),
            "tau_int": float(self.tau_int),
            "tau_int_error": float(self.tau_int_error),
            "window": int(self.window),
        }


# ------------------------------------------------------------------------------ helpers
def _replica(data: Any) -> list[np.ndarray]:
    """Split ``data`` into a list of 1-D float64 chains (a 1-D array is one chain)."""
    try:
        a = np.asarray(data, dtype=np.float64)
    except ValueError:  # ragged: chains of different lengths
        chains = [np.asarray(c, dtype=np.float64).ravel() for c in data]
    else:
        if a.ndim > 2:
            raise ValueError(f"data must be [chains, n] or [n], got shape {a.shape}")
        chains = list(np.atleast_2d(a))
    if not chains or min(c.size for c in chains) < 1 or sum(c.size for c in chains) < 2:
        raise ValueError("need at least 2 measurements and no empty chain")
    if not all(np.all(np.isfinite(c)) for c in chains):
        raise ValueError("data contain NaN or inf")
    return chains


def _center(chains: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """Global mean ā and fluctuations a − ā; exact zeros for exactly constant data."""
    first = chains[0][0]
    if all(np.all(c == first) for c in chains):
        return float(first), [np.zeros_like(c) for c in chains]
    mean = sum(float(c.sum()) for c in chains) / sum(c.size for c in chains)
    return mean, [c - mean for c in chains]


def _autocovariance(deltas: list[np.ndarray], w_max: int) -> np.ndarray:
    """Replica-summed Γ(t), t = 0..w_max, normalised by Σ_r (n_r − t) (hep-lat/0306017 sec. 3)."""
    n_r = np.array([d.size for d in deltas])
    padded = np.zeros((len(deltas), int(n_r.max())))
    for r, d in enumerate(deltas):
        padded[r, : d.size] = d  # zeros past a chain's end add nothing to the sums
    # zero-padding to >= n + w_max turns the circular FFT correlation into the linear one
    size = scipy.fft.next_fast_len(padded.shape[1] + w_max, real=True)
    spec = scipy.fft.rfft(padded, size, axis=-1)
    acf = scipy.fft.irfft(spec.real**2 + spec.imag**2, size, axis=-1)[:, : w_max + 1].sum(0)
    pairs = np.maximum(n_r[:, None] - np.arange(w_max + 1), 0).sum(0)
    return acf / pairs


def _window(gamma: np.ndarray, n: int, S: float) -> tuple[int, bool]:
    """Automatic windowing (hep-lat/0306017 sec. 3.3): the first W with g(W) < 0, where

        g(W) = exp(−W/τ_W) − τ_W/sqrt(W N),   τ_W = S_τ / ln((2τ_int(W) + 1)/(2τ_int(W) − 1)),

    (τ_W is the exponential time a pure exponential ρ with this τ_int(W) would have, times S_τ);
    τ_int(W) ≤ ½ stops the sum at once. Returns (W, failed).
    """
    w_max = gamma.size - 1
    if S == 0.0 or w_max == 0:
        return 0, S != 0.0
    W = np.arange(1, w_max + 1)
    tau = 0.5 + np.cumsum(gamma[1:]) / gamma[0]
    positive = tau > 0.5
    t = np.where(positive, tau, 1.0)
    tau_w = S / np.log((2 * t + 1) / (2 * t - 1))
    g = np.where(positive, np.exp(-W / tau_w) - tau_w / np.sqrt(W * n), -1.0)
    hit = np.flatnonzero(g < 0)
    return (w_max, True) if hit.size == 0 else (int(hit[0]) + 1, False)


def _analyse(deltas: list[np.ndarray], value: float, S: float) -> GammaResult:
    """The Γ-method on fluctuations ``deltas`` (one array per replica) about ``value``."""
    if S < 0:
        raise ValueError(f"S must be >= 0, got {S}")
    n = sum(d.size for d in deltas)
    w_max = min(d.size for d in deltas) // 2
    gamma = _autocovariance(deltas, w_max)
    if not gamma[0] > 0.0:  # no fluctuations: nothing to window
        rho = np.zeros(w_max + 1)
        rho[0] = 1.0
        return GammaResult(
            value=value,
            error=0.0,
            error_of_error=0.0,
            tau_int=0.5,
            tau_int_error=0.0,
            window=0,
            rho=rho,
            tau_int_of_W=np.full(w_max + 1, 0.5),
            tau_int_error_of_W=np.zeros(w_max + 1),
            n=n,
            chains=len(deltas),
        )
    W, failed = _window(gamma, n, S)
    tau_raw = max(0.5 + float(np.sum(gamma[1 : W + 1])) / gamma[0], 0.5)
    c_f = 2.0 * tau_raw * gamma[0]
    gamma = gamma + c_f / n  # bias correction, hep-lat/0306017 eq. (49)
    c_f *= 1.0 + (2 * W + 1) / n  # = Γ(0) + 2 Σ_{t=1}^{W} Γ(t) of the corrected Γ
    tau = float(c_f / (2.0 * gamma[0]))
    rho = gamma / gamma[0]
    tau_of_w = np.cumsum(rho) - 0.5
    # hep-lat/0306017 eq. (42): (δτ_int)² ≈ 4 τ_int² (W + ½ − τ_int)/N
    dtau_of_w = (
        2.0 * np.abs(tau_of_w) * np.sqrt(np.maximum(np.arange(w_max + 1) + 0.5 - tau_of_w, 0.0) / n)
    )
    error = math.sqrt(float(c_f) / n)
    return GammaResult(
        value=value,
        error=error,
        # δC_F/C_F ≈ sqrt(2(2W+1)/N), so δσ_F/σ_F ≈ sqrt((W + ½)/N)
        error_of_error=error * math.sqrt((W + 0.5) / n),
        tau_int=tau,
        tau_int_error=2.0 * tau * math.sqrt(max(W + 0.5 - tau, 0.0) / n),
        window=W,
        rho=rho,
        tau_int_of_W=tau_of_w,
        tau_int_error_of_W=dtau_of_w,
        n=n,
        chains=len(deltas),
        windowing_failed=failed,
    )


def _observables(data_list: Sequence[Any]) -> list[list[np.ndarray]]:
    """Each entry of ``data_list`` as replica, checking they are measured on the same chains."""
    obs = [_replica(d) for d in data_list]
    if not obs:
        raise ValueError("data_list is empty")
    shape = [c.size for c in obs[0]]
    if any([c.size for c in o] != shape for o in obs):
        raise ValueError("all observables need the same [chains, n] layout")
    return obs


def _block_sums(chains: list[np.ndarray], shift: float, size: int) -> np.ndarray:
    """Sums of ``chain − shift`` over consecutive blocks of ``size`` within each chain."""
    return np.concatenate(
        [(c[: c.size // size * size] - shift).reshape(-1, size).sum(1) for c in chains]
    )


def _x64():
    """A context in which jax computes in float64 (whatever the global jax_enable_x64 says)."""
    import jax  # here, not at the top: jax costs 1.2 s to import, this module 0.3 s without it

    try:
        return jax.enable_x64(True)
    except (AttributeError, TypeError):  # older jax
        from jax.experimental import enable_x64  # the older name of jax.enable_x64

        return enable_x64()


# ------------------------------------------------------------------------------ public API
def gamma_method(data: Any, S: float = 1.5) -> GammaResult:
    """Mean of a primary observable with its Γ-method error.

    Args:
        data: ``[chains, n]`` (or ``[n]``, one chain); chains are independent replica.
        S: S_τ of the automatic windowing (0: assume no autocorrelation, W = 0).

    Exactly constant data give error 0, τ_int ½ and window 0.

    >>> r = gamma_method(ar1(0, 20_000, 0.5))
    >>> abs(r.tau_int - ar1_tau_int(0.5)) < 4 * r.tau_int_error
    True
    """
    value, deltas = _center(_replica(data))
    return _analyse(deltas, value, S)


def gamma_method_derived(
    f: Callable[..., Any],
    data_list: Sequence[Any],
    S: float = 1.5,
    bias_correction: bool = False,
) -> GammaResult:
    """A derived quantity F = f(⟨A⟩, ⟨B⟩, ...) by linear propagation (hep-lat/0306017 sec. 3).

    ``f(a, b, ...)`` takes scalars and is written with ``jax.numpy``; its gradient f_α at the
    global means ā_α comes from ``jax.grad`` (in float64). The projected fluctuations
    δ_i^r = Σ_α f_α (a_{α,i}^r − ā_α) are analysed by the Γ-method like a primary observable.

    The value is f(ā) by default. With ``bias_correction`` and R ≥ 2 replica it is Wolff's
    replica estimate with the O(1/N) bias cancelled,
    (R f(ā) − Σ_r (n_r/N) f(ā^r)) / (R − 1), ā^r the replica means (as in his UWerr code);
    for one replica the flag does nothing.

    Args:
        f: the function of the means.
        data_list: one ``[chains, n]`` array per argument of ``f``, all of the same layout.
        S: S_τ of the automatic windowing.
        bias_correction: cancel the O(1/N) bias of f(ā) with the replica means.
    """
    import jax  # here: jax costs 1.2 s to import, and `lattice measure` needs it only here

    obs = _observables(data_list)
    centered = [_center(o) for o in obs]
    means = [m for m, _ in centered]
    with _x64():
        value = float(f(*means))
        grad = jax.grad(f, argnums=tuple(range(len(means))))(*means)
        fgrad = [float(g) for g in grad]
        if bias_correction and len(obs[0]) > 1:
            n_r = np.array([c.size for c in obs[0]], dtype=np.float64)
            f_r = np.array([float(f(*[o[r].mean() for o in obs])) for r in range(n_r.size)])
            R = n_r.size
            value = (R * value - float(np.dot(n_r / n_r.sum(), f_r))) / (R - 1)
    deltas = [
        np.sum([g * d[r] for g, (_, d) in zip(fgrad, centered, strict=True)], axis=0)
        for r in range(len(obs[0]))
    ]
    return _analyse(deltas, value, S)


def jackknife(
    f: Callable[..., Any],
    data_list: Sequence[Any],
    block_size: int | None = None,
    n_blocks: int | None = None,
) -> tuple[float, float]:
    """Blocked delete-one jackknife of a derived quantity f(⟨A⟩, ⟨B⟩, ...).

    Each chain is cut into consecutive blocks of ``block_size`` measurements (blocks never
    straddle two chains; the < block_size measurements left at a chain's end stay in every
    jackknife sample). With K blocks and θ_k = f(means without block k),

        value = f(ā),   error² = (K − 1)/K Σ_k (θ_k − θ̄)²,   θ̄ = (1/K) Σ_k θ_k.

    The block size must exceed the autocorrelation time for the error to be right.

    Args:
        f: ``f(a, b, ...)`` of scalars, numpy or jax.
        data_list: one ``[chains, n]`` array per argument of ``f``.
        block_size: measurements per block; by default N // n_blocks (capped at the shortest
            chain).
        n_blocks: the number of blocks to aim for when ``block_size`` is not given (default 50).

    Returns:
        ``(value, error)`` as floats.
    """
    if block_size is not None and n_blocks is not None:
        raise ValueError("give block_size or n_blocks, not both")
    obs = _observables(data_list)
    n_r = [c.size for c in obs[0]]
    n = sum(n_r)
    if n_blocks is not None and n_blocks < 2:
        raise ValueError(f"n_blocks must be >= 2, got {n_blocks}")
    if block_size is None:
        block_size = min(max(1, n // (n_blocks or 50)), min(n_r))
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    k_r = [m // block_size for m in n_r]
    if sum(k_r) < 2:
        raise ValueError(f"block_size {block_size} leaves fewer than 2 blocks")
    # shift by the first measurement: exact for constant data, and less round-off
    shifts = np.array([o[0][0] for o in obs])
    totals = np.array(
        [sum(float((c - s).sum()) for c in o) for o, s in zip(obs, shifts, strict=True)]
    )
    block_sums = np.array(
        [_block_sums(o, s, block_size) for o, s in zip(obs, shifts, strict=True)]
    )  # [α, K]
    loo = shifts[:, None] + (totals[:, None] - block_sums) / (n - block_size)
    with _x64():
        value = float(f(*(shifts + totals / n)))
        theta = np.array([float(f(*loo[:, k])) for k in range(loo.shape[1])])
    K = theta.size
    return value, math.sqrt((K - 1) / K * float(np.sum((theta - theta.mean()) ** 2)))


def log_mean_exp(log_w: Any, n_blocks: int = 50) -> tuple[float, float]:
    """log of the mean of w = e^{log w} over the finite entries of ``log_w`` ([chains, n] or
    [n]), with a blocked delete-one jackknife error (:func:`jackknife` of f = log on the
    shifted weights e^{log w − max log w}, so nothing overflows):

        log Ẑ = max log w + log( (1/N) Σ_i e^{log w_i − max log w} ).

    With importance weights of independent draws, Ẑ is the unbiased estimate of Z = E_q[w]
    (the log partition function for w = e^{−S}/q). The log makes it biased low by about
    Var(w)/(2 N Z²) = (N/ESS − 1)/(2N) for heavy-tailed weights; the jackknife then also
    underestimates the error, since the largest weights have not been seen. Quote it with
    Kish's ESS (:func:`kish_ess`). When one block holds all the weight that the float64
    exponentials resolve (leaving it out leaves a mean of 0), the error is infinite: nothing
    but the largest weight has been seen."""
    lw = np.atleast_2d(np.asarray(log_w, np.float64))
    ok = np.isfinite(lw)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    top = float(lw[ok].max())
    rows = [np.exp(r[np.isfinite(r)] - top) for r in lw]
    rows = [r for r in rows if r.size]
    blocks = min(n_blocks, sum(r.size for r in rows))
    with np.errstate(divide="ignore", invalid="ignore"):  # log 0 of a leave-one-out mean
        value, error = jackknife(np.log, [rows], n_blocks=max(2, blocks))
    return top + value, error if math.isfinite(error) else math.inf


def independence_acceptance(log_w: Any) -> float:
    """The stationary acceptance of an independence Metropolis–Hastings chain (Tierney 1994)
    estimated from the log-weights log w = log(π̃/q) of independent proposals y_i ~ q.

    With x ~ π = q w / Z in the chain and a fresh y ~ q, the acceptance is

        α = E_{x~π, y~q}[min(1, w(y)/w(x))] = E_{q×q}[min(w(x), w(y))] / E_q[w],

    estimated by the ratio of the pair mean over i ≠ j and the mean of w (consistent; its
    noise grows with the weights' tails). For log-normal weights of variance s² it is
    α = 2Φ(−s/√2), the check of tests/test_analysis.py. NaN entries (failed proposals) are
    dropped; log w = −∞ is a proposal of weight zero and counts.
    """
    lw = np.asarray(log_w, np.float64).ravel()
    lw = lw[~np.isnan(lw)]
    n = lw.size
    if n < 2 or not np.isfinite(lw).any():
        return float("nan")
    w = np.exp(lw - lw.max())
    pairs = np.minimum(w[:, None], w[None, :]).sum() - w.sum()  # the diagonal is min(w, w) = w
    return float(pairs / ((n - 1) * w.sum()))


def family_z(n_tests: int, alpha: float = 1e-3, floor: float = 4.0) -> float:
    """The |z| threshold for ``n_tests`` simultaneous two-sided normal tests at a family-wise
    false-alarm rate ``alpha`` (Bonferroni), never below ``floor``, the single-test 4σ:

        z* = max(floor, Φ⁻¹(1 − α / (2 n_tests))).

    Examples:
        >>> [round(family_z(n), 2) for n in (1, 16, 64, 100, 1000)]
        [4.0, 4.0, 4.32, 4.42, 4.89]
    """
    return max(floor, NormalDist().inv_cdf(1.0 - alpha / (2 * max(int(n_tests), 1))))


def ar1_tau_int(phi: float) -> float:
    """Exact τ_int of an AR(1) process with coefficient φ: ρ(t) = φ^|t|, so

        τ_int = ½ + Σ_{t≥1} φ^t = (1 + φ) / (2 (1 − φ)).

    >>> ar1_tau_int(0.0), ar1_tau_int(0.5)
    (0.5, 1.5)
    """
    return (1.0 + phi) / (2.0 * (1.0 - phi))


def ar1(key_or_seed: Any, n: int, phi: float, chains: int = 1) -> np.ndarray:
    """``[chains, n]`` independent AR(1) series x_t = φ x_{t−1} + sqrt(1 − φ²) η_t, η_t ~ N(0, 1).

    Started in equilibrium (x_0 ~ N(0, 1)), so every x_t has mean 0, variance 1 and
    ⟨x_s x_t⟩ = φ^|s−t|: τ_int = ``ar1_tau_int(phi)`` and the exact error of the mean of N
    measurements is sqrt(2 τ_int / N) up to O(1/N).

    Args:
        key_or_seed: an int seed, a ``numpy.random.Generator`` or a jax PRNG key (its bits seed
            numpy).
        n: length of each series.
        phi: the coefficient, |φ| < 1.
        chains: number of independent series.
    """
    if not -1.0 < phi < 1.0:
        raise ValueError(f"need |phi| < 1, got {phi}")
    if isinstance(key_or_seed, np.random.Generator):
        rng = key_or_seed
    else:
        seed = key_or_seed
        if type(seed).__module__.startswith("jax"):
            import jax  # a jax key was passed: jax is loaded already

            seed = np.asarray(jax.random.key_data(seed)).ravel()
        rng = np.random.default_rng(seed)
    drive = rng.standard_normal((chains, n))
    drive[:, 1:] *= math.sqrt(1.0 - phi * phi)  # drive[:, 0] is x_0 itself
    from scipy.signal import lfilter  # here, not at the top: scipy.signal costs ~0.8 s to import

    return lfilter([1.0], [1.0, -phi], drive, axis=-1)


# ----------------------------------------------------------------- derived numbers of a run
def kish_ess(w: Any) -> Any:
    """Kish's effective sample size of importance weights w_i ≥ 0 (any normalization):

        ESS = (Σ_i w_i)² / Σ_i w_i²,

    N for equal weights, 1 when one weight dominates. Returns a numpy float64 (NaN when every
    weight is 0)."""
    w = np.asarray(w, np.float64)
    return w.sum() ** 2 / np.sum(w * w)


def rho_error(r: GammaResult) -> np.ndarray:
    """Approximate error of ρ(t), t = 0..W_max (hep-lat/0306017 eq. (E.11), as in UWerr):

        δρ(t)² ≈ (1/N) Σ_{k = max(1, t−W)}^{t+W} [ρ(k+t) + ρ(|k−t|) − 2 ρ(k) ρ(t)]²,

    with ρ = 0 beyond W_max and W the chosen window."""
    rho, W = np.asarray(r.rho, np.float64), int(r.window)
    w_max = rho.size - 1
    ext = np.zeros(2 * w_max + W + 2)
    ext[: rho.size] = rho
    out = np.zeros(rho.size)
    for t in range(1, rho.size):
        k = np.arange(max(1, t - W), t + W + 1)
        out[t] = np.sum((ext[k + t] + ext[np.abs(k - t)] - 2.0 * ext[t] * ext[k]) ** 2)
    return np.sqrt(out / r.n)


def _log_cosh(x: float) -> float:
    """log cosh x without overflow."""
    x = abs(x)
    return x + math.log1p(math.exp(-2.0 * x)) - math.log(2.0)


def _cosh_mass(g0: float, g1: float, t: int, T: int) -> float:
    """The m ≥ 0 with G(t)/G(t+1) = cosh(m (t − T/2)) / cosh(m (t + 1 − T/2)), else NaN."""
    if not (g0 > 0.0 and g1 > 0.0) or not 2 * (t + 1) <= T:
        return math.nan
    a, b = T / 2.0 - t, T / 2.0 - t - 1.0  # a = b + 1 > 0, b >= 0
    log_r = math.log(g0) - math.log(g1)
    if log_r == 0.0:
        return 0.0
    if not log_r > 0.0:  # cosh(m a)/cosh(m b) increases from 1 at m = 0: no solution
        return math.nan
    from scipy.optimize import brentq  # here: scipy.optimize costs ~0.3 s to import

    def f(m: float) -> float:
        return _log_cosh(m * a) - _log_cosh(m * b) - log_r

    # log cosh is 1-Lipschitz and a − b = 1, so f(m) <= m − log r: the root is >= log r
    hi = 2.0 * log_r
    while f(hi) < 0.0:
        hi *= 2.0
    return brentq(f, log_r, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)


def effective_mass(G: Any, T: int | None = None) -> np.ndarray:
    """Cosh effective mass of a periodic time-slice correlator.

    For t = 0..⌊T/2⌋ − 1, m_eff(t) is the root m ≥ 0 of

        G(t) / G(t+1) = cosh(m (t − T/2)) / cosh(m (t + 1 − T/2)),

    exact for G(t) = A cosh(m (t − T/2)) (a single state on a periodic lattice of extent T).
    The right side grows monotonically from 1 (m = 0), so a root exists iff G(t) ≥ G(t+1) > 0;
    elsewhere the entry is NaN.

    Args:
        G: the correlator G(0..T−1) (at least ⌊T/2⌋ + 1 entries).
        T: the time extent L0; default ``len(G)``.

    Returns:
        ``[⌊T/2⌋]`` array of m_eff(t), NaN where undefined.
    """
    g = np.asarray(G, dtype=np.float64).ravel()
    T = g.size if T is None else int(T)
    n = T // 2
    if g.size < n + 1:
        raise ValueError(f"need G(0..{n}) for T = {T}, got {g.size} values")
    return np.array([_cosh_mass(float(g[t]), float(g[t + 1]), t, T) for t in range(n)])


def effective_mass_jackknife(
    G: np.ndarray, g_results: Sequence[GammaResult]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """m_eff(t) (:func:`effective_mass`) of the mean correlator with blocked-jackknife errors.

    ``G`` is ``[chains, n, T]``, ``g_results`` the Γ-method results of its G(t). For each t the
    jackknife (:func:`jackknife`) resamples the per-measurement series G(t), G(t+1) jointly, so
    their correlation and the nonlinearity of the solver are accounted for. Blocks are
    max(N/50, ⌈4 max_t τ_int(G(t))⌉) measurements long (N = chains · n; at most n and N/2),
    and never straddle chains.

    Returns:
        ``(t, m_eff, error)``, t = 0..⌊T/2⌋ − 1, NaN where m_eff is undefined.
    """
    chains, n, T = G.shape
    tau = max((float(r.tau_int) for r in g_results), default=0.5)
    block = max(n * chains // 50, math.ceil(4.0 * tau), 1)
    block = max(1, min(block, n, (n * chains) // 2))
    t_all = np.arange(T // 2)
    val, err = np.full(t_all.size, np.nan), np.full(t_all.size, np.nan)
    for t in t_all:
        v, e = jackknife(
            lambda a, b, t=int(t): _cosh_mass(float(a), float(b), t, T),
            [G[..., t], G[..., t + 1]],
            block_size=block,
        )
        val[t], err[t] = v, e
    return t_all, val, err
