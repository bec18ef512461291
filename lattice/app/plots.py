"""Diagnostic plots of a measured ensemble (``lattice measure --plots DIR``).

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
pyplot, so no global matplotlib state (backend, open figures) is touched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lattice.app.output import output_dir, save_figure
from lattice.app.relaxation import plot_relaxation
from lattice.io.ensemble import Ensemble
from lattice.results.compare import cost_per_independent_sample
from lattice.results.figures import autocorrelation, effective_mass, sd_correlator, t_max

if TYPE_CHECKING:
    from lattice.results.compare import Comparison
    from lattice.results.measure import Measurement

__all__ = [
    "plot_levels",
    "write_check_plots",
    "write_compare_plots",
    "write_measure_plots",
    "write_training_plots",
]


# ------------------------------------------------------------------------------ figures
def _figure(ens: Ensemble, what: str, n_panels: int = 1, ncols: int = 1):
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(5.5 * ncols, 2.6 * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    sampler = ens.config_attrs.get("sampler.name", "?")
    fig.suptitle(f"{what}: {ens.path}\nsampler {sampler}", fontsize=9)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig: Figure, path: Path, written: list[Path]) -> None:
    written.append(save_figure(fig, path, dpi=110))


def write_measure_plots(
    ens: Ensemble,
    result: Measurement,
    out_dir: str | Path,
    discard: int = 0,
    observables: Sequence[str] = ("abs_m", "action", "phi2", "chi"),
) -> list[Path]:
    """Write diagnostic PNGs of a measured ensemble into ``out_dir`` (created if missing).

    ``result`` is what :func:`lattice.results.measure.measure_ensemble` returned for the same
    ``discard``. Files, each titled with the ensemble path and sampler name:

    - ``history.png``: Monte Carlo history of each of ``observables``, one line per chain,
      against the measurement index in the file (first ``discard`` dropped);
    - ``hist_m.png``: histogram of m (chains pooled) with ±⟨|m|⟩ and its error marked;
    - ``rho.png``: ρ(t) = Γ(t)/Γ(0) with the error band of
      :func:`lattice.numerics.analysis.rho_error` and the window W;
    - ``tau_int.png``: τ_int(W) ± δτ_int(W) (hep-lat/0306017 eq. (42)) and the chosen window;
    - ``G.png``: G(t) ± σ (Γ-method) on a log scale, positive values only;
    - ``meff.png``: the cosh effective mass of the mean G, errors by a blocked jackknife over
      the G(t), G(t+1) series (:func:`lattice.numerics.analysis.effective_mass_jackknife`).

    Names in ``observables`` without a stored series (derived ones such as ``chi_conn``) get
    no history panel. Returns the written paths.
    """
    out = output_dir(out_dir)
    results = {name: e.gamma for name, e in result.observables.items()}
    obs = {k: np.asarray(v[:, discard:], np.float64) for k, v in ens.observables.items()}
    names = [o for o in observables if o in results]
    written: list[Path] = []

    # 1. Monte Carlo history
    hist = [o for o in names if o in obs and obs[o].ndim == 2]
    fig, axes = _figure(ens, "Monte Carlo history", max(len(hist), 1))
    for ax, name in zip(axes, hist, strict=False):
        x = discard + np.arange(obs[name].shape[1])
        for c, series in enumerate(obs[name]):
            ax.plot(x, series, lw=0.4, alpha=0.8, label=f"chain {c}")
        ax.set_ylabel(name)
    axes[-1].set_xlabel("measurement index")
    _save(fig, out / "history.png", written)

    # 2. histogram of m
    fig, (ax,) = _figure(ens, "distribution of m")
    ax.hist(obs["m"].ravel(), bins="auto", density=True, color="C0", alpha=0.7)
    am = results["abs_m"]
    for sign in (-1.0, 1.0):
        ax.axvline(sign * am.value, color="C3", ls="--", lw=1)
        ax.axvspan(sign * am.value - am.error, sign * am.value + am.error, color="C3", alpha=0.2)
    ax.set_xlabel("m")
    ax.set_ylabel("density")
    ax.set_title(f"±⟨|m|⟩ = ±{am.value:.5g} ± {am.error:.2g}", fontsize=9)
    _save(fig, out / "hist_m.png", written)

    # 3. ρ(t) and 4. τ_int(W)
    ncols = 2 if len(names) > 1 else 1
    fig_r, axes_r = _figure(ens, "normalized autocorrelation ρ(t)", max(len(names), 1), ncols)
    fig_t, axes_t = _figure(ens, "τ_int(W)", max(len(names), 1), ncols)
    for ax_r, ax_t, name in zip(axes_r, axes_t, names, strict=False):
        a = autocorrelation(results[name])
        t, rho, drho = a.t, a.rho, a.rho_error
        ax_r.plot(t, rho, "o-", ms=2, lw=1)
        ax_r.fill_between(t, rho - drho, rho + drho, alpha=0.3)
        ax_r.axhline(0.0, color="k", lw=0.5)
        ax_r.set(xlabel="t", ylabel=f"ρ(t)  [{name}]")
        tau, dtau = a.tau_int, a.tau_int_error
        ax_t.plot(t, tau, lw=1)
        ax_t.fill_between(t, tau - dtau, tau + dtau, alpha=0.3)
        ax_t.set(xlabel="W", ylabel=f"τ_int(W)  [{name}]")
        label = f"W = {a.window}, τ_int = {a.tau:.3g} ± {a.tau_error:.2g}"
        for ax in (ax_r, ax_t):
            ax.axvline(a.window, color="C3", ls="--", lw=1, label=label)
            ax.legend(fontsize=7)
    _save(fig_r, out / "rho.png", written)
    _save(fig_t, out / "tau_int.png", written)

    # 5. G(t)
    g_res = result.G.gammas
    gv = np.array([float(r.value) for r in g_res])
    ge = np.array([float(r.error) for r in g_res])
    fig, (ax,) = _figure(ens, "time-slice correlator G(t)")
    pos = gv > 0
    ax.errorbar(np.arange(gv.size)[pos], gv[pos], ge[pos], fmt="o", ms=3, capsize=2)
    if pos.any():
        ax.set_yscale("log")
    ax.set(xlabel="t", ylabel="G(t)")
    _save(fig, out / "G.png", written)

    # 6. effective mass
    meff = effective_mass(obs["G"], g_res)
    t, mv, me = meff.t, meff.value, meff.error
    fig, (ax,) = _figure(ens, "cosh effective mass")
    ok = np.isfinite(mv) & np.isfinite(me)
    ax.errorbar(t[ok], mv[ok], me[ok], fmt="o", ms=3, capsize=2)
    if not ok.any():
        ax.text(0.5, 0.5, "m_eff undefined (G not decreasing)", ha="center", transform=ax.transAxes)
    ax.set(xlabel="t", ylabel="m_eff(t)")
    _save(fig, out / "meff.png", written)
    return written


# ---------------------------------------------------------------------- lattice check
def write_check_plots(report, out_dir) -> list[Path]:
    """Plots of ``lattice check``: the ε → 0 extrapolation against HMC, the hot/ordered
    thermalization histories, the two-point Schwinger–Dyson correlator G_sd(t) = δ_t0, and the
    single-site Fokker–Planck relaxation. Returns the written paths."""
    out = output_dir(out_dir)
    written: list[Path] = []
    title = f"lattice check {report.target}"

    ex = report.data.get("extrapolation")
    if ex:
        names = list(ex["observables"])
        fig = Figure(figsize=(4.2 * len(names), 3.6), layout="constrained")
        eps = np.asarray(ex["eps"])
        k = ex["order"]
        grid = np.linspace(0.0, eps.max() * 1.05, 100)
        for i, name in enumerate(names):
            ax = fig.add_subplot(1, len(names), i + 1)
            o = ex["observables"][name]
            ax.errorbar(eps, o["y"], o["e"], fmt="o", label="Langevin runs")
            ax.plot(grid, o["y0"] + o["b"] * grid**k, "-", lw=1, label=f"fit y0 + b eps^{k}")
            ax.errorbar([0.0], [o["y0"]], [o["s0"]], fmt="s", color="C1", label="eps -> 0")
            hv, he = o["hmc"]
            ax.axhspan(hv - he, hv + he, color="C2", alpha=0.3, label="HMC ± 1σ")
            ax.set_xlabel("step size eps")
            ax.set_title(name)
            if i == 0:
                ax.legend(fontsize=7)
        fig.suptitle(title + ": step-size extrapolation")
        _save(fig, out / "extrapolation.png", written)

    th = report.data.get("thermalization")
    if th:
        fig = Figure(figsize=(7, 4), layout="constrained")
        ax = fig.add_subplot()
        steps = (np.arange(len(th["hot"])) + 1) * th["measure_every"]
        ax.plot(steps, th["hot"], lw=0.8, label="hot start")
        ax.plot(steps, th["ordered"], lw=0.8, label="ordered start")
        ax.axvline(th["thermalization"], color="k", ls="--", label="run's thermalization")
        ax.axvline(th["needed"], color="r", ls=":", label="needed")
        ax.set_xscale("log")
        ax.set_xlabel("sampler steps")
        ax.set_ylabel("S/V (chain average)")
        ax.legend(fontsize=8)
        fig.suptitle(title + ": thermalization")
        _save(fig, out / "thermalization.png", written)

    g = report.data.get("data", {}).get("G_sd")
    if g is not None:
        sd = sd_correlator(g)
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        t = sd.t
        ax.errorbar(t, sd.value, sd.error, fmt="o", label="measured")
        ax.plot(t, (t == 0).astype(float), "x", color="C3", ms=10, label="exact δ_t0")
        ax.set_xlabel("t")
        ax.set_ylabel("G_sd(t) = (1/V) Σ <φ_y ∂S/∂φ_x>")
        ax.legend()
        fig.suptitle(title + ": two-point Schwinger–Dyson")
        _save(fig, out / "schwinger_dyson.png", written)

    fp = report.data.get("fokker_planck")
    if fp is not None:
        written.append(plot_relaxation(fp, out / "fokker_planck.png"))
    return written


def write_training_plots(directory, history, diagnostics) -> list[Path]:
    """``loss.png`` (training and validation loss against step) and ``val_loss_sigma.png``
    (validation DSM loss per site against σ, with the exact minimum ℓ*(σ) for a free field)
    in a model directory (``lattice train``)."""
    d = Path(directory)
    if "path" in diagnostics:
        return _path_training_plots(d, history, diagnostics)
    written: list[Path] = []
    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = [r["step"] for r in history]
    ax.plot(steps, [r["train_loss"] for r in history], label="training (batch mean)")
    ax.plot(steps, [r["val_loss"] for r in history], label="validation (EMA weights)")
    for key in history[0]:  # a multilevel model: every level's validation loss
        if key.startswith("val_loss_"):
            ax.plot(steps, [r[key] for r in history], ":", label=key[len("val_loss_") :])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("DSM loss per site, eq. (1)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("denoising score matching")
    _save(fig, d / "loss.png", written)

    grid = diagnostics["val_loss_sigma"]
    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sig = np.array([r["sigma"] for r in grid])
    for level in dict.fromkeys(r.get("level") for r in grid):  # one curve per level
        rows = [r for r in grid if r.get("level") == level]
        ax.errorbar(
            [r["sigma"] for r in rows],
            [r["loss"] for r in rows],
            yerr=[r["error"] for r in rows],
            marker="o",
            ms=3,
            capsize=2,
            label="model (validation)" if level is None else f"{level} (validation)",
        )
    if all("exact" in r for r in grid):
        ax.plot(sig, [r["exact"] for r in grid], "k--", label="exact minimum ℓ*(σ), free field")
    ax.set_xscale("log")
    ax.set_xlabel("σ")
    ax.set_ylabel("DSM loss per site")
    cs = diagnostics["cosine_similarity"]
    ax.set_title(f"cos(ŝ, −∂S/∂φ) at σ_min: mean {cs['mean']:.4f}, min {cs['min']:.4f}")
    ax.legend()
    _save(fig, d / "val_loss_sigma.png", written)
    return written


def _path_training_plots(d: Path, history, diagnostics) -> list[Path]:
    """A path-objective training (``path_train.py``): ``loss.png``, Var log w against step
    (the batches, and fresh paths of the EMA model), and ``path_weights.png``, the acceptance
    it predicts and the ESS per path."""
    written: list[Path] = []
    steps = [r["step"] for r in history]
    K = diagnostics["path"]["steps"]
    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, [r["train_loss"] for r in history], label="training paths (batch mean)")
    ax.plot(steps, [r["val_loss"] for r in history], label="fresh paths (EMA weights)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("Var log w, path_train.py eq. (1)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(f"path objective, K = {K} reverse steps")
    _save(fig, d / "loss.png", written)

    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, [r["acceptance_pairs"] for r in history], label="MH acceptance (pairs)")
    ax.plot(steps, [r["acceptance_gauss"] for r in history], ":",
            label="MH acceptance, 2Φ(−s/√2)")  # fmt: skip
    ax.plot(steps, [r["ess"] for r in history], label="ESS per path")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("fraction")
    fin = diagnostics["path"]
    ax.set_title(
        f"final, {fin['paths']} paths: acceptance {fin['acceptance_pairs']:.3f},"
        f" ESS {fin['ess']:.3f}"
    )
    ax.legend()
    _save(fig, d / "path_weights.png", written)
    return written


# ------------------------------------------------------------------------------ compare
def write_compare_plots(result: Comparison, out_dir: str | Path) -> list[Path]:
    """The figures of ``lattice compare`` (``result``: the :class:`Comparison` of
    :func:`lattice.results.compare.compare_runs`):

    - ``compare_hist_m.png``: overlaid normalized histograms of m (chains pooled);
    - ``compare_rho.png``: ρ(t) of |m| and of S/V per run, t in measurements of that run;
    - ``compare_tau_int.png``: τ_int ± error of |m|, χ and S/V, bars per run;
    - ``compare_G.png``: G(t) ± σ per run on a log scale (positive values);
    - ``compare_cost.png``: seconds and evaluations per independent |m| (2 τ_int × cost per
      measurement), log scale.
    """
    out = output_dir(out_dir)
    runs, ens = result.runs, result.ensembles
    labels = [f"{i + 1}: {r.sampler}" for i, r in enumerate(runs)]
    written: list[Path] = []

    def fig(n=1, title=""):
        f = Figure(figsize=(5.5 * n, 3.8), layout="constrained")
        FigureCanvasAgg(f)
        f.suptitle(title, fontsize=9)
        return f, f.subplots(1, n, squeeze=False).ravel()

    f, (ax,) = fig(1, "distribution of the magnetization m")
    for e, lab in zip(ens, labels, strict=True):
        m = np.asarray(e.observables["m"], np.float64).ravel()
        ax.hist(m, bins=60, density=True, histtype="step", label=lab)
    ax.set_xlabel("m")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    _save(f, out / "compare_hist_m.png", written)

    f, axes = fig(2, "normalized autocorrelation ρ(t) (Γ-method)")
    for ax, name in zip(axes, ("abs_m", "action"), strict=True):
        for run, lab in zip(runs, labels, strict=True):
            r = run.measurement.observables[name].gamma
            t = np.arange(t_max(r) + 1)
            ax.plot(t, r.rho[: t.size], label=f"{lab} (τ_int {r.tau_int:.3g})")
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set_xlabel("t [measurements]")
        ax.set_title("|m|" if name == "abs_m" else "S/V", fontsize=9)
        ax.legend(fontsize=7)
    _save(f, out / "compare_rho.png", written)

    f, (ax,) = fig(1, "integrated autocorrelation time τ_int [measurements]")
    names = ("abs_m", "chi", "action")
    width = 0.8 / len(runs)
    x = np.arange(len(names))
    for i, (r, lab) in enumerate(zip(runs, labels, strict=True)):
        tau = [r.measurement.observables[n].tau_int for n in names]
        dt = [r.measurement.observables[n].tau_int_error for n in names]
        ax.bar(x + i * width, tau, width, yerr=dt, label=lab, capsize=2)
    ax.set_xticks(x + 0.4 - width / 2, ["|m|", "χ", "S/V"])
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    _save(f, out / "compare_tau_int.png", written)

    f, (ax,) = fig(1, "correlator G(t)")
    for r, lab in zip(runs, labels, strict=True):
        g = r.measurement.G
        v, e = np.asarray(g.value), np.asarray(g.error)
        t = np.arange(v.size)
        ok = v > 0
        ax.errorbar(t[ok], v[ok], yerr=e[ok], fmt="o-", ms=3, lw=0.8, capsize=2, label=lab)
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.legend(fontsize=7)
    _save(f, out / "compare_G.png", written)

    f, axes = fig(2, "cost per independent |m| sample (2 τ_int × cost per measurement)")
    secs, evals = zip(*(cost_per_independent_sample(r) for r in runs), strict=True)
    y = np.arange(len(runs))
    axes[0].barh(y, secs)
    axes[0].set_xlabel("wall seconds")
    axes[1].barh(y, evals)
    axes[1].set_xlabel("force / score evaluations")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yticks(y, labels, fontsize=7)
    _save(f, out / "compare_cost.png", written)
    return written


def plot_levels(result, path) -> None:
    """``lattice levels --plot``: the acceptance of redrawing every level up to each one (with
    its standard error) and the conditional variance of log w, against the level."""
    fig = Figure(figsize=(6.0, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    names = [r.level for r in result.levels]
    x = np.arange(len(names))
    acc = [r.acceptance for r in result.levels]
    ax.errorbar(x, acc, yerr=[r.error for r in result.levels], marker="o", capsize=3,
                label="acceptance")  # fmt: skip
    ax.set_ylim(0.0, 1.05)
    ax.set_xticks(x, names)
    ax.set_xlabel("levels redrawn (finest first, up to)")
    ax.set_ylabel("MH acceptance of the redraw")
    ax2 = ax.twinx()
    ax2.semilogy(x, [max(r.log_w_var, 1e-6) for r in result.levels], "s--", color="C1",
                 label="var log w")  # fmt: skip
    ax2.set_ylabel("conditional var log w", color="C1")
    fig.suptitle(
        f"{result.source}\nK = {result.steps_label}, {result.draws} redraws each", fontsize=8
    )
    save_figure(fig, path, dpi=110)
