"""The learned sampler on the flow literature's benchmark ladder (issue 40).

2D φ⁴ in the mass form, m² = −4, with λ chosen so that ξ ≈ L/4 (Albergo, Kanwar & Shanahan,
arXiv:1904.12072; Gerdes et al., arXiv:2207.00283): L = 8: λ = 6.008, 12: 5.276, 32: 4.572,
64: 4.398. One command per stage; every stage reuses what an earlier call finished and resumes
what it left unfinished, so the study spans sessions:

    python benchmarks/ladder.py classical --L 8 12   # HMC (saves configurations) and FA-HMC + SW
    python benchmarks/ladder.py dsm --L 8 12         # denoising score matching on the HMC data
    python benchmarks/ladder.py finetune --L 8 12    # the DSM model + the path objective
    python benchmarks/ladder.py path --L 8 12        # the path objective from the action alone
    python benchmarks/ladder.py sample --L 8 12      # path-MH runs of every model, measured
    python benchmarks/ladder.py report               # runs/ladder/results.md, ladder.png

Every run and training is an ordinary `lattice run` / `lattice train` of a config written to
runs/ladder/<name>.toml (``lattice resume runs/ladder/<name>`` continues one alone). Options:
``--path-steps`` (training steps of the path objective at L = 8; scaled by 8/L so that the
CPU time grows about like L), ``--K`` (reverse steps), ``--scale`` (run lengths).
The measured numbers are in docs/results.md ("The benchmark ladder").
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

ROOT = Path("runs/ladder")
LAMBDA = {8: 6.008, 12: 5.276, 32: 4.572, 64: 4.398}
M2 = -4.0
#: the continuous equivariant flow of Gerdes et al. (arXiv:2207.00283 v1) at L = 32
FLOW_ESS = 0.66

CLASSICAL = {
    "hmc": 'kind = "hmc"\ntrajectory_length = 1.0\nsteps = 10\ntarget_acceptance = 0.8',
    "fa_hmc_sw": (
        'kind = "hmc"\ntrajectory_length = 1.0\nsteps = 10\nfourier_acceleration = true\n'
        'cluster = "sw"\ntarget_acceptance = 0.8'
    ),
}
MODELS = ("dsm", "finetune", "path")


def _toml(name: str, L: int, sampler: str, chains: int, therm: int, samples: int,
          save_every: int = 0) -> str:  # fmt: skip
    return (
        f'name = "{name}"\n\n[lattice]\nshape = [{L}, {L}]\n\n[action]\nform = "mass"\n'
        f"m2 = {M2}\nlambda = {LAMBDA[L]}\n\n[sampler]\n{sampler}\n\n[run]\nchains = {chains}\n"
        f"seed = {L}\nthermalization = {therm}\nsamples = {samples}\nmeasure_every = 1\n"
        f"save_every = {save_every}\n"
    )


def _run(name: str, text: str) -> Path:
    """runs/ladder/<name>: reused when finished with this config, resumed when unfinished."""
    from lattice.app.console import make_reporter
    from lattice.config.run import parse_config
    from lattice.io.ensemble import EnsembleError
    from lattice.io.reader import open_ensemble
    from lattice.runs.sampling import resume_job, run_job

    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / f"{name}.toml").write_text(text)
    d = ROOT / name
    try:
        ens = open_ensemble(d / "ensemble.h5", load_observables=False)
        if parse_config(ens.config_toml).diff(parse_config(text)):
            raise SystemExit(f"{d}: a run of another config; rename or remove it")
        if not ens.complete:
            resume_job(d, reporter=make_reporter(False))
        return d
    except EnsembleError:
        pass
    run_job(parse_config(text), d, force=True, reporter=make_reporter(False))
    return d


def _train(name: str, text: str) -> Path:
    """runs/ladder/<name>: a model, trained (or its unfinished training resumed)."""
    from lattice.app.console import make_reporter
    from lattice.app.plots import write_training_plots
    from lattice.config.train import parse_train_config
    from lattice.runs.training import resume_training, train_model

    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / f"{name}.toml").write_text(text)
    d = ROOT / name
    import jax

    rep = make_reporter(False)
    if (d / "model.json").exists():
        return d
    with jax.enable_x64(False):  # as `lattice train` (float32; runs need x64)
        if (d / "checkpoint.h5").exists():
            resume_training(d, reporter=rep, on_trained=write_training_plots)
        else:
            train_model(parse_train_config(text), d, force=True, reporter=rep,
                        on_trained=write_training_plots)  # fmt: skip
    return d


def _measure(d: Path) -> dict:
    from lattice.io.reader import open_ensemble
    from lattice.results.measure import measure_ensemble

    ens = open_ensemble(d / "ensemble.h5")
    res = measure_ensemble(ens)
    obs = res.observables
    meas = ens.chains * res.samples
    sec_per_meas = ens.seconds * min(1.0, res.samples / max(ens.steps, 1)) / meas
    out = {
        o: [obs[o].value, obs[o].error, obs[o].tau_int, obs[o].tau_int_error]
        for o in ("abs_m", "chi", "m", "phi2")
        if o in obs
    }
    out["seconds"] = ens.seconds
    out["seconds_per_independent"] = 2 * obs["abs_m"].tau_int * sec_per_meas
    forces = float(ens.config_attrs.get("sampler.forces_per_step", 1))
    out["acceptance"] = float(np.mean(ens.diagnostics["acceptance"]))
    if res.diffusion is not None:
        out["ess"] = res.diffusion.ess_fraction
        forces = res.diffusion.score_evaluations
    out["evals_per_independent"] = 2 * obs["abs_m"].tau_int * forces
    return out


def _save(key: str, value) -> None:
    f = ROOT / "results.json"
    results = json.loads(f.read_text()) if f.exists() else {}
    results[key] = value
    f.write_text(json.dumps(results, indent=1) + "\n")


def stage_classical(Ls, scale: float) -> None:
    """HMC (tuned to acceptance 0.8; saves every 8th configuration, the DSM data) and
    FA-HMC + SW at every point, measured."""
    for L in Ls:
        n = int(4096 * scale)
        for name, sampler in CLASSICAL.items():
            save = 8 if name == "hmc" else 0
            d = _run(f"{name}_L{L}", _toml(f"{name}_L{L}", L, sampler, 8, 500, n, save))
            _save(f"{name}_L{L}", _measure(d))


def _dsm_config(L: int, steps: int) -> str:
    return (
        f'name = "dsm_L{L}"\n[train]\nensemble = "{ROOT / f"hmc_L{L}"}"\nsteps = {steps}\n'
        "checkpoint_every = 250\n"
    )


def stage_dsm(Ls, steps: int) -> None:
    """The default network trained by denoising score matching on the HMC data."""
    for L in Ls:
        _train(f"dsm_L{L}", _dsm_config(L, steps))


def _path_config(name: str, L: int, steps: int, K: int, init: Path | None) -> str:
    head = f'name = "{name}"\n[train]\nobjective = "path"\nsteps = {steps}\npath_steps = {K}\n'
    head += "warmup = 50\nlog_every = 25\ncheckpoint_every = 100\n"
    if init is not None:
        return head + f'init = "{init}"\n'
    return head + (
        f'\n[lattice]\nshape = [{L}, {L}]\n\n[action]\nform = "mass"\nm2 = {M2}\n'
        f"lambda = {LAMBDA[L]}\n"
    )


def stage_path(Ls, steps8: int, K: int, finetune: bool) -> None:
    """The path objective: from the DSM model (``finetune``) or from the action alone."""
    for L in Ls:
        steps = max(50, int(round(steps8 * 8 / L / 25)) * 25)
        if finetune:
            init = ROOT / f"dsm_L{L}"
            _train(f"finetune_L{L}", _path_config(f"finetune_L{L}", L, steps, K, init))
        else:
            _train(f"path_L{L}", _path_config(f"path_L{L}", L, steps, K, None))


def stage_sample(Ls, K: int, scale: float) -> None:
    """Path MH with every trained model at K (its training K), measured."""
    from lattice.io.model import load_model

    for L in Ls:
        for kind in MODELS:
            mdir = ROOT / f"{kind}_L{L}"
            if not (mdir / "model.json").exists():
                continue
            meta = load_model(mdir).meta
            k = (meta.get("training") or {}).get("path_steps", K)
            sampler = f'kind = "diffusion"\nmodel = "{mdir}"\nmethod = "sde"\nsteps = {k}'
            name = f"mh_{kind}_L{L}"
            d = _run(name, _toml(name, L, sampler, 8, 20, int(1000 * scale)))
            m = _measure(d)
            m["K"] = k
            m["training_seconds"] = meta["training"]["seconds"]
            if kind in ("dsm", "finetune"):
                hmc = json.loads((ROOT / "results.json").read_text()).get(f"hmc_L{L}", {})
                m["data_seconds"] = hmc.get("seconds")
            if kind == "finetune":
                dsm = load_model(ROOT / f"dsm_L{L}").meta["training"]["seconds"]
                m["training_seconds"] += dsm
            _save(name, m)


def _z(a, b) -> float:
    return (a[0] - b[0]) / math.hypot(a[1], b[1])


def stage_report() -> None:
    """The ladder table (Markdown) and the figure of ESS against L and training seconds."""
    from common import machine
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    res = json.loads((ROOT / "results.json").read_text())
    Ls = sorted({int(k.rsplit("_L", 1)[1]) for k in res})
    lines = [
        f"Machine: {machine()}",
        "",
        "| L | sampler | training s | K | acceptance | ESS/proposal | τ(\\|m\\|) | τ(χ) |"
        " evals/indep \\|m\\| | s/indep \\|m\\| | z(\\|m\\|), z(χ) vs FA-HMC+SW |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for L in Ls:
        ref = res.get(f"fa_hmc_sw_L{L}")
        for name in ("hmc", "fa_hmc_sw", *(f"mh_{k}" for k in MODELS)):
            r = res.get(f"{name}_L{L}")
            if r is None:
                continue
            tr, data = r.get("training_seconds"), r.get("data_seconds")
            cells = [
                str(L),
                name,
                "" if tr is None else f"{tr:.0f}" + (f" + {data:.0f} data" if data else ""),
                str(r.get("K", "")),
                f"{r['acceptance']:.3f}",
                f"{r['ess']:.3f}" if "ess" in r else "",
                f"{r['abs_m'][2]:.2f}",
                f"{r['chi'][2]:.2f}",
                f"{r['evals_per_independent']:.0f}",
                f"{r['seconds_per_independent']:.3g}",
                ""
                if ref is None or name == "fa_hmc_sw"
                else f"{_z(r['abs_m'], ref['abs_m']):+.2f}, {_z(r['chi'], ref['chi']):+.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Break-even against HMC (per independent |m|, training and data included):"]
    for L in Ls:
        hmc = res.get(f"hmc_L{L}")
        for kind in MODELS:
            r = res.get(f"mh_{kind}_L{L}")
            if r is None or hmc is None:
                continue
            cost = r["training_seconds"] + (r.get("data_seconds") or 0.0)
            gain = hmc["seconds_per_independent"] - r["seconds_per_independent"]
            ratio = r["seconds_per_independent"] / hmc["seconds_per_independent"]
            lines.append(
                f"- L = {L}, {kind}: {ratio:.2f}x HMC's seconds per independent |m|; "
                + (f"break-even after {cost / gain:.3g} independent |m|" if gain > 0 else
                   "no break-even (each independent |m| costs more than HMC's)")
            )  # fmt: skip
    (ROOT / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    a1, a2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for kind, mark in zip(MODELS, "osD", strict=True):
        pts = [(L, res[f"mh_{kind}_L{L}"]) for L in Ls if f"mh_{kind}_L{L}" in res]
        if not pts:
            continue
        a1.plot([p[0] for p in pts], [p[1]["ess"] for p in pts], marker=mark, label=kind)
        a2.plot([p[1]["training_seconds"] for p in pts], [p[1]["ess"] for p in pts], mark,
                label=kind)  # fmt: skip
        for L, p in pts:
            a2.annotate(f" L={L}", (p["training_seconds"], p["ess"]), fontsize=8)
    for ax in (a1, a2):
        ax.axhline(FLOW_ESS, color="k", ls="--", lw=1, label="continuous flow, L = 32 (0.66)")
        ax.set_ylim(0, 1)
        ax.set_ylabel("ESS per proposal (path MH run)")
        ax.legend(fontsize=8)
    a1.set_xscale("log", base=2)
    a1.set_xticks(sorted(LAMBDA), [str(L) for L in sorted(LAMBDA)])
    a1.minorticks_off()
    a1.set_xlabel("L (m² = −4, ξ ≈ L/4)")
    a2.set_xscale("log")
    a2.xaxis.set_minor_formatter(NullFormatter())
    a2.set_xlabel("training seconds (finetune: + its DSM model)")
    fig.suptitle("the learned path sampler on the benchmark ladder, K = 32 (2-core CPU)")
    fig.tight_layout()
    fig.savefig(ROOT / "ladder.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=["classical", "dsm", "finetune", "path", "sample", "report"])
    ap.add_argument("--L", type=int, nargs="+", default=[8, 12], choices=sorted(LAMBDA))
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every run length")
    ap.add_argument("--dsm-steps", type=int, default=2000)
    ap.add_argument("--path-steps", type=int, default=1200, help="path training steps at L = 8")
    ap.add_argument("--K", type=int, default=32, help="reverse steps of the path objective")
    a = ap.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)  # as the lattice command does (runs need it)
    if a.stage == "classical":
        stage_classical(a.L, a.scale)
    elif a.stage == "dsm":
        stage_dsm(a.L, a.dsm_steps)
    elif a.stage in ("finetune", "path"):
        stage_path(a.L, a.path_steps, a.K, a.stage == "finetune")
    elif a.stage == "sample":
        stage_sample(a.L, a.K, a.scale)
    else:
        stage_report()


if __name__ == "__main__":
    main()
