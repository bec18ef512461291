"""Boltzmann-equilibrium checks: does an evolution sample e^{−S}? (``lattice check``)

Every check is a statistic with a tolerance; statistical ones are z-scores
|estimate − reference| / σ < 4 with σ from the Γ-method (independent chains as replica).

1. Schwinger–Dyson identities, exact at any coupling in equilibrium:
   ⟨(1/V) Σ_x φ_x ∂S/∂φ_x⟩ = 1, ⟨∂S/∂φ_x⟩ = 0 and the two-point form
   ⟨φ_y ∂S/∂φ_x⟩ = δ_xy, summed like G(t): G_sd(t) = δ_{t,0}.
2. Step-size extrapolation (Langevin): the same theory at ε, ε/2, ε/4 (measurements equally
   far apart in fictitious time), a weighted fit y(ε) = y₀ + b ε^k with k the scheme's order
   (1 Euler, 2 RK2), y₀ compared with an HMC run of matching statistics; and the run at the
   user's ε compared with HMC directly, with the bias b ε^k reported beside the error.
3. Exact results: for λ = 0 the exact e^{−S} values of ⟨φ²⟩, χ and G(t) (and, for Langevin,
   the exact finite-ε values, which test the implementation); ⟨e^{−ΔH}⟩ = 1 for HMC and MALA.
4. Fokker–Planck relaxation of a single site (d = 0), see :mod:`lattice.numerics.fokker_planck`.
5. Thermalization: hot and ordered starts, their agreement time against τ_int.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import scipy.stats

from lattice.config.run import RunConfig, build_theory, load_config, parse_config
from lattice.errors import InputError
from lattice.io.reader import open_ensemble
from lattice.numerics import fokker_planck as fp
from lattice.numerics.analysis import family_z, gamma_method
from lattice.numerics.compile import require_x64
from lattice.numerics.exact import free_field_observables
from lattice.runs.assemble import build_sampler
from lattice.runs.progress import QuietReporter, Reporter
from lattice.samplers.base import Exactness
from lattice.samplers.chains import run_chains

__all__ = ["Check", "CheckReport", "run_checks", "Z_TOL"]

Z_TOL = 4.0
EXTRAPOLATED = ("action", "phi2", "chi", "abs_m")


@dataclass
class Check:
    """One line of the verdict table."""

    name: str
    statistic: float  # |z| for statistical checks
    tolerance: float
    passed: bool
    detail: str
    verdict: bool = True  # False: informational only, never fails the run
    relation: str = "<"  # passes when statistic <relation> tolerance

    def __post_init__(self):
        self.statistic, self.tolerance = float(self.statistic), float(self.tolerance)
        self.passed, self.verdict = bool(self.passed), bool(self.verdict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    target: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    plots: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # for plots

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks if c.verdict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "passed": self.passed,
            "seconds": self.seconds,
            "checks": [c.as_dict() for c in self.checks],
            "plots": self.plots,
            "fokker_planck": _fp_summary(self.data.get("fokker_planck")),
        }


def _fp_summary(res) -> dict[str, Any] | None:
    """Per-time distances of the single-site check, as plain lists."""
    if res is None:
        return None
    keys = ("times", "ks", "l1", "ks_eq_walkers", "ks_eq_fp")
    out = {k: np.asarray(res[k]).tolist() for k in keys if k in res}
    out.update({k: float(res[k]) for k in ("gap", "rate", "rate_error") if k in res})
    return out


def _est(series) -> tuple[float, float, float]:
    r = gamma_method(np.asarray(series, np.float64))
    return float(r.value), float(r.error), float(r.tau_int)


def _z_check(name: str, series, want: float, what: str, verdict: bool = True) -> Check:
    v, e, _ = _est(series)
    z = (v - want) / e if e > 0 else (0.0 if v == want else math.inf)
    detail = f"{what} = {v:.6g} ± {e:.2g}, expected {want:.6g}: off by {v - want:+.3g} ({z:+.2f}σ)"
    return Check(name, abs(z), Z_TOL, abs(z) < Z_TOL, detail, verdict)


# ---------------------------------------------------------------------- data sources
def _simulate(
    cfg: RunConfig,
    *,
    step_size=None,
    measure_every=None,
    kind=None,
    start=None,
    thermalization=None,
    samples=None,
    seed_offset=0,
) -> dict[str, np.ndarray]:
    """An in-memory run of (a variant of) the config; returns obs and diagnostics."""
    over = []
    if kind is not None and kind != cfg.sampler.kind:
        over.append(f"sampler.kind={kind}")
    if step_size is not None:
        over.append(f"sampler.step_size={step_size!r}")
    raw = parse_config(cfg.to_toml(), over)
    r = cfg.run
    theory = build_theory(raw)
    res = run_chains(
        build_sampler(raw, theory),
        theory,
        chains=r.chains,
        seed=r.seed + seed_offset,
        n_meas=samples or r.samples,
        measure_every=measure_every or r.measure_every,
        thermalization=r.thermalization if thermalization is None else thermalization,
        start=start or r.start,
        dtype=jnp.dtype(r.dtype),
        prng=r.prng,
    )
    return {**res["obs"], "exp_minus_dh": res["exp_minus_dh"]}


def _load_run(target: Path) -> tuple[RunConfig, dict[str, np.ndarray]]:
    ens = open_ensemble(target)  # a run directory, a sharded run, or an ensemble file
    if ens.committed < 20:
        raise InputError(f"{ens.path}: only {ens.committed} measurements committed")
    data = dict(ens.observables)
    data.update(ens.diagnostics or {})
    return ens.run_config, data


# ---------------------------------------------------------------------- the checks
def _schwinger_dyson(data) -> list[Check]:
    out = [_z_check("Schwinger–Dyson <(1/V) Σ φ ∂S/∂φ> = 1", data["sd"], 1.0, "<φ ∂S/∂φ>")]
    if "dsdphi" in data:
        out.append(_z_check("Schwinger–Dyson <∂S/∂φ_x> = 0", data["dsdphi"], 0.0, "<∂S/∂φ>"))
    if "G_sd" in data:
        g = data["G_sd"]
        zs = []
        for t in range(g.shape[-1]):
            v, e, _ = _est(g[..., t])
            zs.append((v - float(t == 0)) / e if e > 0 else 0.0)
        worst = int(np.argmax(np.abs(zs)))
        z_crit = family_z(len(zs), 1e-3, Z_TOL)  # 4.0 at 16 times, 4.32 at 64
        out.append(
            Check(
                "Schwinger–Dyson <φ_y ∂S/∂φ_x> = δ_xy (G_sd(t) = δ_t0)",
                float(abs(zs[worst])),
                z_crit,
                bool(np.max(np.abs(zs)) < z_crit),
                f"max |z| over t = 0..{g.shape[-1] - 1} at t = {worst}: {zs[worst]:+.2f}σ "
                "(family-wise α = 1e-3)",
            )
        )
    return out


def _exact_free(cfg: RunConfig, data) -> list[Check]:
    theory = build_theory(cfg)
    s = cfg.sampler
    boltz = free_field_observables(theory)
    out = []
    for name in ("phi2", "chi"):
        c = _z_check(f"free field: {name} vs e^-S", data[name], boltz[name], name)
        if not c.passed:
            c.detail += " — the stationary distribution differs from e^-S by more than the error"
        out.append(c)
    zs = []
    for t in (0, 1, theory.shape[0] // 2):
        v, e, _ = _est(data["G"][..., t])
        zs.append(abs(v - boltz["G"][t]) / e)
    out.append(
        Check(
            "free field: G(t) vs e^-S (t = 0, 1, L0/2)",
            max(zs),
            Z_TOL,
            max(zs) < Z_TOL,
            "max |z| = " + f"{max(zs):.2f}",
        )
    )
    if s.traits.exactness is Exactness.ASYMPTOTIC:  # its own law at the finite step too
        at_eps = s.free_field_reference(theory)[0]
        for name in ("phi2", "chi"):
            c = _z_check(
                f"free field: {name} vs exact {s.scheme} value at eps = {s.step_size:g}",
                data[name],
                at_eps[name],
                name,
            )
            c.detail += f"; the exact bias at this eps is {at_eps[name] - boltz[name]:+.3g}"
            out.append(c)
    return out


def _exp_dh(data) -> list[Check]:
    return [_z_check("<exp(-ΔH)> = 1", data["exp_minus_dh"], 1.0, "<exp(-ΔH)>")]


def _extrapolation(cfg: RunConfig, data, samples, reporter: Reporter, report: CheckReport):
    s, r = cfg.sampler, cfg.run
    k = 1 if s.scheme == "euler" else 2
    factors = (1.0, 0.5, 0.25)
    runs = {1.0: data}
    for f in factors[1:]:
        reporter.log(f"check: Langevin at eps = {s.step_size * f:g}")
        runs[f] = _simulate(
            cfg,
            step_size=s.step_size * f,
            measure_every=max(1, round(r.measure_every / f)),
            thermalization=round(r.thermalization / f),
            samples=samples,
            seed_offset=int(1 / f),
        )
    reporter.log("check: HMC reference run")
    ref = _simulate(
        cfg,
        kind="hmc",
        measure_every=1,
        thermalization=max(100, r.thermalization // 10),
        samples=samples,
        seed_offset=100,
    )
    eps = np.array([s.step_size * f for f in factors])
    out, plot = [], {"eps": eps.tolist(), "order": k, "observables": {}}
    for name in EXTRAPOLATED:
        est = [_est(runs[f][name])[:2] for f in factors]
        y, e = np.array([a for a, _ in est]), np.array([b for _, b in est])
        X = np.stack([np.ones_like(eps), eps**k], 1)
        w = 1.0 / e**2
        cov = np.linalg.inv(X.T @ (w[:, None] * X))
        y0, b = cov @ X.T @ (w * y)
        s0 = math.sqrt(cov[0, 0])
        hv, he, _ = _est(ref[name])
        z0 = (y0 - hv) / math.hypot(s0, he)
        out.append(
            Check(
                f"eps -> 0 extrapolation ({'eps' if k == 1 else 'eps^2'} fit) of {name} vs HMC",
                abs(z0),
                Z_TOL,
                abs(z0) < Z_TOL,
                f"extrapolated {y0:.6g} ± {s0:.2g}, HMC {hv:.6g} ± {he:.2g} ({z0:+.2f}σ)",
            )
        )
        bias = b * s.step_size**k
        bias_err = math.sqrt(cov[1, 1]) * s.step_size**k
        z1 = (y[0] - hv) / math.hypot(e[0], he)
        out.append(
            Check(
                f"{name} at the run's eps = {s.step_size:g} vs HMC",
                abs(z1),
                Z_TOL,
                abs(z1) < Z_TOL,
                f"run {y[0]:.6g} ± {e[0]:.2g}, HMC {hv:.6g} ± {he:.2g} ({z1:+.2f}σ); "
                f"fitted bias at "
                f"this eps {bias:+.3g} ± {bias_err:.2g} = {bias / e[0]:+.1f} × the run's error"
                + (
                    " — the stationary distribution differs from e^-S by more than the error"
                    if abs(z1) >= Z_TOL
                    else ""
                ),
            )
        )
        plot["observables"][name] = {
            "y": y.tolist(),
            "e": e.tolist(),
            "y0": float(y0),
            "b": float(b),
            "s0": s0,
            "hmc": [hv, he],
        }
    report.data["extrapolation"] = plot
    return out


def agreement_time(a: np.ndarray, b: np.ndarray, block: int, alpha: float = 1e-3):
    """Where two sets of histories ``a``, ``b`` (chains × measurements) agree for good.

    Both are cut into ``nb`` blocks of ``block`` measurements; block k's chain-averaged means
    differ by d_k with error σ_k = (v_a/C_a + v_b/C_b)^{1/2}, where v is the variance of block
    means over chains (over time for a single chain), pooled over the second half of the blocks
    (where both are thermalized if they ever are; a block-by-block variance from few chains would
    make d_k/σ_k Student-t-distributed with heavy tails). Block k disagrees if |d_k|/σ_k ≥ z* =
    ``family_z(nb, alpha)``, the Bonferroni threshold for a family-wise false-alarm rate
    ``alpha`` over the nb blocks (at least ``Z_TOL``). Returns (agreement block = one past the
    last disagreeing block, nb, z*)."""
    nb = a.shape[1] // block
    if nb == 0:
        return 0, 0, Z_TOL
    am = a[:, : nb * block].reshape(a.shape[0], nb, block).mean(2)
    bm = b[:, : nb * block].reshape(b.shape[0], nb, block).mean(2)
    late = slice(nb // 2, None)

    def v(m):  # one chain: the variance of its late block means over time
        return m[:, late].var(0, ddof=1).mean() if len(m) > 1 else m[0, late].var(ddof=1)

    err = math.sqrt(v(am) / a.shape[0] + v(bm) / b.shape[0])
    z_crit = family_z(nb, alpha, Z_TOL)
    bad = np.nonzero(np.abs(am.mean(0) - bm.mean(0)) >= z_crit * (err + 1e-300))[0]
    return (0 if len(bad) == 0 else int(bad[-1]) + 1), nb, z_crit


def _thermalization(cfg: RunConfig, samples, data, reporter: Reporter, report: CheckReport):
    """Hot and ordered starts with no thermalization; the thermalization time is where their
    chain-averaged action agrees for good (:func:`agreement_time`), compared with the run's
    thermalization and with 5 τ_int of the slowest stored observable."""
    r = cfg.run
    n = samples or r.samples
    reporter.log("check: hot and ordered starts")
    hist = {
        s: _simulate(cfg, start=s, thermalization=0, samples=n, seed_offset=200 + i)
        for i, s in enumerate(("hot", "ordered"))
    }
    a, b = hist["hot"]["action"], hist["ordered"]["action"]
    tau = max(_est(data[name])[2] for name in ("action", "abs_m"))
    block = max(1, math.ceil(2 * tau))
    agree_block, nb, z_crit = agreement_time(a, b, block)
    measured = agree_block * block * r.measure_every
    needed = max(measured, math.ceil(5 * tau * r.measure_every))
    ok = agree_block < nb and r.thermalization >= needed
    report.data["thermalization"] = {
        "hot": a.mean(0).tolist(),
        "ordered": b.mean(0).tolist(),
        "measure_every": r.measure_every,
        "thermalization": r.thermalization,
        "needed": needed,
    }
    agree = f"after {measured} steps" if agree_block else "from the first block on"
    detail = (
        f"hot and ordered starts agree {agree} (blocks of {block * r.measure_every} steps "
        f"within {z_crit:.2f}σ, family-wise α = 1e-3); 5 τ_int = "
        f"{5 * tau * r.measure_every:.0f} steps; the run thermalizes {r.thermalization}"
    )
    if agree_block >= nb:
        detail = f"hot and ordered starts did not agree within {n * r.measure_every} steps"
    elif not ok:
        detail += " — too short"
    return [
        Check(
            "thermalization (hot vs ordered start), steps",
            float(r.thermalization),
            float(needed),
            ok,
            detail,
            relation=">=",
        )
    ]


def _fokker_planck(cfg: RunConfig, reporter: Reporter, report: CheckReport) -> list[Check]:
    lam = build_theory(cfg).to_kappa().lam if cfg.action.form == "mass" else cfg.action.lam
    reporter.log(f"check: single-site Fokker–Planck relaxation at lambda = {lam:g}")
    res = fp.compare(lam)
    report.data["fokker_planck"] = res

    # Bonferroni over the times: the max KS of len(times) comparisons at family level 1e-3
    n_t = len(res["ks"])
    ks = float(np.max(res["ks"]))
    crit = float(scipy.stats.kstwo.ppf(1.0 - 1e-3 / n_t, int(res["n_walkers"])))
    return [
        Check(
            "Fokker–Planck (d = 0): walkers vs P(φ, τ), max KS over τ",
            ks,
            crit,
            ks < crit,
            f"{n_t} times up to τ = {float(np.max(res['times'])):g}; KS critical value "
            f"{crit:.3g} (family-wise α = 1e-3); distance to e^-S/Z at the end: KS "
            f"{float(res['equilibrium_ks']):.3g}",
        ),
        Check(
            "Fokker–Planck (d = 0): relaxation rate vs lowest eigenvalue",
            abs(float(res["rate_z"])),
            Z_TOL,
            abs(float(res["rate_z"])) < Z_TOL,
            f"walkers {float(res['rate']):.4g} ± {float(res['rate_error']):.2g}, FP gap "
            f"{float(res['gap']):.4g} ({float(res['rate_z']):+.2f}σ)",
        ),
    ]


def run_checks(
    target: str | Path,
    *,
    samples: int | None = None,
    overrides: tuple[str, ...] = (),
    extrapolate: bool = True,
    thermalization: bool = True,
    fokker_planck: bool = True,
    reporter: Reporter | None = None,
) -> CheckReport:
    """Run every check that applies to a config (it is run first, in memory) or a run
    directory (its ensemble is used); auxiliary runs use ``samples`` measurements per chain
    (default: the config's)."""
    require_x64(ValueError)
    reporter = reporter or QuietReporter()
    t0 = time.perf_counter()
    target = Path(target)
    report = CheckReport(str(target))
    if target.is_file() and target.suffix == ".toml":
        cfg = load_config(target, overrides)
        reporter.log(f"check: running {cfg.name} ({cfg.sampler.kind})")
        data = _simulate(cfg, samples=samples)
    else:
        cfg, data = _load_run(target)
    checks = _schwinger_dyson(data)
    if cfg.action.lam == 0.0:
        checks += _exact_free(cfg, data)
    traits = cfg.sampler.traits
    if traits.energy_identity:
        checks += _exp_dh(data)
    if traits.exactness is Exactness.ASYMPTOTIC and extrapolate:
        checks += _extrapolation(cfg, data, samples, reporter, report)
    if thermalization:
        checks += _thermalization(cfg, samples, data, reporter, report)
    if fokker_planck:
        checks += _fokker_planck(cfg, reporter, report)
    report.checks = checks
    report.data["data"] = {k: data[k] for k in ("G_sd",) if k in data}
    report.seconds = time.perf_counter() - t0
    return report
