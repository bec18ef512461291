"""The single-site Fokker–Planck relaxation figure of ``lattice check`` (docs/checks.md):
the exact density P(φ, τ) against walker histograms, the distance to equilibrium, and the
relaxation of ⟨φ⟩ with its fitted rate."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lattice.app.output import save_figure
from lattice.results.figures import walker_density

__all__ = ["plot_relaxation"]


def plot_relaxation(result: dict[str, Any], path, n_curves: int = 6) -> Path:
    """Slide figure of a ``compare`` result, written to ``path`` (format from the suffix, by
    :func:`lattice.app.output.save_figure`); returns ``path``.

    (a) P(φ, τ) (lines) and walker histograms (steps) at up to ``n_curves`` times, e^{−S}/Z
    dashed; (b) KS distance to equilibrium vs τ, walkers and FP, with the slope e^{−Λ₁τ} and the
    finite-n noise floor √(π/2) ln2 / √n; (c) |⟨φ⟩ − ⟨φ⟩_eq| vs τ with the fit and its window.
    """
    r = result
    tt, grid, p, pos = r["times"], r["grid"], r["P"], r["positions"]
    edges, gap, n = r["bin_edges"], r["gap"], r["n_walkers"]
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.4, 1, 1]})

    idx = np.unique(np.round(np.geomspace(1, tt.size, n_curves) - 1).astype(int))
    colors = [_viridis(i / max(1, len(idx) - 1)) for i in range(len(idx))]
    density = walker_density([pos[k] for k in idx], edges, n)
    for c, k, dens in zip(colors, idx, density, strict=True):
        ax1.plot(grid, p[k], color=c, lw=1.6, label=f"τ = {tt[k]:.3g}")
        ax1.stairs(dens, edges, color=c, lw=0.9, alpha=0.8)
    ax1.plot(grid, r["P_eq"], "k--", lw=1.4, label="e$^{-S}$/Z")
    sup = grid[(r["P_eq"] > 1e-4 * r["P_eq"].max()) | (p.max(axis=0) > 1e-4 * p.max())]
    ax1.set_xlim(sup.min(), sup.max())
    top = 1.05 * min(p.max(), 4.0 * r["P_eq"].max())
    ax1.set_ylim(0, top)
    if p.max() > top:  # keep the late curves readable; say so
        ax1.text(
            0.98,
            0.97,
            f"peak {p.max():.3g} clipped",
            transform=ax1.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color="0.4",
        )
    ax1.set_xlabel("φ")
    ax1.set_ylabel("P(φ, τ)")
    ax1.set_title("FP (lines) vs walkers (steps)")
    ax1.legend(fontsize=8, frameon=False)

    floor = math.sqrt(math.pi / 2) * math.log(2) / math.sqrt(n)
    ax2.semilogy(tt, r["ks_eq_fp"], "C0-", label="FP: sup|F(τ) − F$_{eq}$|")
    ax2.semilogy(tt, r["ks_eq_walkers"], "C1o", ms=4, label="walkers: KS to e$^{-S}$/Z")
    late = tt >= r["fit_window"][0]
    k0 = int(np.argmax(late))
    ax2.semilogy(
        tt[late],
        r["ks_eq_fp"][k0] * np.exp(-gap * (tt[late] - tt[k0])),
        "k:",
        label=f"∝ exp(−Λ₁τ), Λ₁ = {gap:.4f}",
    )
    ax2.axhline(floor, color="0.5", lw=1, ls="--", label="KS noise floor ⟨D⟩ at n")
    ax2.axhline(r["ks_critical"], color="0.5", lw=1, ls="-.", label="KS critical (α = 1e-3)")
    ax2.set_xlabel("τ")
    ax2.set_ylabel("distance to equilibrium")
    ax2.legend(fontsize=8, frameon=False)
    ax2.set_ylim(0.3 * floor, 1.5)

    m, dm, mfp = np.abs(r["mean_walkers"]), r["mean_error"], np.abs(r["mean_fp"])
    lo, hi = r["fit_window"]
    ax3.axvspan(lo, hi, color="0.92", label="fit window")
    ax3.semilogy(tt, mfp, "C0-", label="FP")
    ax3.errorbar(tt, m, dm, fmt="C1o", ms=4, label="walkers")
    tw = tt[r["fit_mask"]]
    amp = abs(r["rate_amplitude"])
    ax3.semilogy(
        tw,
        amp * np.exp(-r["rate"] * tw),
        "k:",
        label=f"fit γ = {r['rate']:.3f} ± {r['rate_error']:.3f}",
    )
    ax3.set_ylim(0.3 * dm.min(), 2 * max(m.max(), mfp.max()))
    ax3.set_xlabel("τ")
    ax3.set_ylabel("|⟨φ⟩ − ⟨φ⟩$_{eq}$|")
    ax3.legend(fontsize=8, frameon=False)
    fig.suptitle(
        f"single-site Langevin vs Fokker–Planck: S = (1−2λ)φ² + λφ⁴, λ = {r['lam']:g}, "
        f"ε = {r['step_size']:g}, {n} walkers (Euler–Maruyama)"
    )
    return save_figure(fig, path, dpi=150)


def _viridis(x: float):
    return colormaps["viridis"](0.9 * x)
