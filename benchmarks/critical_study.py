"""The critical-slowing-down study (issue 8): 2D φ⁴ at λ = 0.022 near κ_c, L = 8, 16, 32 (64).

    python benchmarks/critical_study.py binder   # HMC scan in κ, Binder crossings → κ_c
    python benchmarks/critical_study.py tau      # Langevin (Euler, RK2, ± Fourier acc.), HMC at κ_c
    python benchmarks/critical_study.py diffusion  # HMC data → score model → path MH, per L
    python benchmarks/critical_study.py report   # fits of z, figures and tables → runs/critical/
    python benchmarks/critical_study.py frontier --kappa-c 0.2709   # issue 25's rows, L ≤ 128
    python benchmarks/critical_study.py spectral --kappa-c 0.2709   # issue 24's diffusion rows
    python benchmarks/critical_study.py multilevel --kappa-c 0.2709 --L 16 32 --transfer 64 128
                                                      # issue 26's rows (16 x 2 networks)
    python benchmarks/critical_study.py learned_figure --series KEY ...  # docs/img figure
    python benchmarks/critical_study.py all      # the four in order

Options: ``--L 8 16 32`` (add 64 on a GPU), ``--kappa-c`` (default: the Binder crossing of the
largest pair of L found by ``binder``, else 0.2709 from REFERENCES.md), ``--scale`` (multiplies
every run length; 1 = the CPU budget of docs/results.md).

Every run is an ordinary ``lattice run`` of a config written to ``runs/critical/<name>.toml``
(committed, so each can be rerun or resumed alone: ``lattice resume runs/critical/<name>``);
a finished run is reused, never overwritten, so an interrupted study continues where it
stopped. Results go to ``runs/critical/results.json`` and ``runs/critical/*.png``; the reading
is in ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

ROOT = Path("runs/critical")
LAMBDA = 0.022
KAPPA_C_REF = 0.2709
BINDER_KAPPAS = (0.262, 0.266, 0.268, 0.270, 0.272, 0.274, 0.278)

SAMPLERS = {
    # name: ([sampler] TOML, measure_every, steps per chain at L = 8; scaled by (L/8)^2)
    "langevin_euler": ('kind = "langevin"\nscheme = "euler"\nstep_size = 0.01', 10, 200_000),
    "langevin_rk2": ('kind = "langevin"\nscheme = "rk2"\nstep_size = 0.01', 10, 200_000),
    "langevin_euler_fa": (
        'kind = "langevin"\nscheme = "euler"\nstep_size = 0.01\nfourier_acceleration = true',
        10,
        200_000,
    ),
    "hmc": ('kind = "hmc"\ntrajectory_length = 1.0\nsteps = 10', 1, 8_000),
    # exact Fourier-accelerated HMC (issue 25), same trajectory as HMC's; ± Swendsen–Wang
    "fa_hmc": (
        'kind = "hmc"\ntrajectory_length = 1.0\nsteps = 10\nfourier_acceleration = true',
        1,
        8_000,
    ),
    "fa_hmc_sw": (
        'kind = "hmc"\ntrajectory_length = 1.0\nsteps = 10\nfourier_acceleration = true\n'
        'cluster = "sw"',
        1,
        8_000,
    ),
    "hmc_sw": (
        'kind = "hmc"\ntrajectory_length = 1.0\nsteps = 10\ncluster = "sw"',
        1,
        8_000,
    ),
    # FA-HMC (± SW) with ε tuned for 75% acceptance at 10 steps (the published data generator's
    # setting); the trajectory length is then 10 ε, recorded per run
    "fa_hmc_tuned": (
        'kind = "hmc"\ntrajectory_length = 1.0\nsteps = 10\nfourier_acceleration = true\n'
        "target_acceptance = 0.75",
        1,
        8_000,
    ),
    "fa_hmc_sw_tuned": (
        'kind = "hmc"\ntrajectory_length = 1.0\nsteps = 10\nfourier_acceleration = true\n'
        'cluster = "sw"\ntarget_acceptance = 0.75',
        1,
        8_000,
    ),
    # the same at a trajectory length ≈ 1 at every L: `steps` per L is ⌈1/ε⌉ of the tuned
    # ε of fa_hmc_tuned at κ = 0.2709 (0.32, 0.19, 0.14, 0.080, 0.050 at L = 8 … 128), so the
    # tuner lands near ε = 1/steps; it separates the shrinking trajectory from critical
    # slowing down (fa_hmc_tuned's length falls from 3.2 to 0.5)
    "fa_hmc_tuned_len1": (
        'kind = "hmc"\ntrajectory_length = 1.0\nsteps = {steps}\nfourier_acceleration = true\n'
        "target_acceptance = 0.75",
        1,
        8_000,
    ),
    # RK2 + FA at a 4× smaller step: its O(ε²) bias 16× smaller than at ε = 0.01
    "langevin_rk2_fa_eps0.0025": (
        'kind = "langevin"\nscheme = "rk2"\nstep_size = 0.0025\nfourier_acceleration = true',
        10,
        200_000,
    ),
    # the Fourier-accelerated bias at equal cost: RK2 (O(ε²)) and a 4× smaller Euler step
    "langevin_rk2_fa": (
        'kind = "langevin"\nscheme = "rk2"\nstep_size = 0.01\nfourier_acceleration = true',
        10,
        200_000,
    ),
    "langevin_euler_fa_eps0.0025": (
        'kind = "langevin"\nscheme = "euler"\nstep_size = 0.0025\nfourier_acceleration = true',
        10,
        200_000,
    ),
}


def _target(text: str) -> float | str:
    """``--target``: an acceptance in (0, 1) or "cost" (the pilot's cheapest K)."""
    return text if text == "cost" else float(text)


def _toml(name: str, L: int, kappa: float, sampler: str, chains: int, therm: int, samples: int,
          every: int, save_every: int = 0) -> str:  # fmt: skip
    return (
        f'name = "{name}"\n\n[lattice]\nshape = [{L}, {L}]\n\n[action]\nkappa = {kappa}\n'
        f"lambda = {LAMBDA}\n\n[sampler]\n{sampler}\n\n[run]\nchains = {chains}\nseed = {L}\n"
        f"thermalization = {therm}\nsamples = {samples}\nmeasure_every = {every}\n"
        f"save_every = {save_every}\n"
    )


SCALE = 1.0


def _run(name: str, text: str) -> Path:
    """Write runs/critical/<name>.toml and run it unless a finished run is there (names carry
    ``--scale`` when it is not 1, so a longer study never reuses a shorter run)."""
    if SCALE != 1.0:
        name = f"{name}_x{SCALE:g}"
        text = text.replace('name = "', f'name = "x{SCALE:g}_', 1)
    from lattice.app.console import make_reporter
    from lattice.config.run import parse_config
    from lattice.io.ensemble import EnsembleError
    from lattice.io.reader import open_ensemble
    from lattice.runs.sampling import resume_job, run_job

    ROOT.mkdir(parents=True, exist_ok=True)
    cfg_path = ROOT / f"{name}.toml"
    cfg_path.write_text(text)
    d = ROOT / name
    try:
        ens = open_ensemble(d / "ensemble.h5", load_observables=False)
        changed = parse_config(ens.config_toml).diff(parse_config(text))
        if changed:  # never reuse a run of another config under the same name
            raise SystemExit(f"{d}: a run of another config ({', '.join(changed)}); rename it")
        if ens.complete:
            print(f"{d}: finished, reused")
            return d
        print(f"{d}: resuming")
        resume_job(d, reporter=make_reporter(False))
        return d
    except EnsembleError:
        pass
    print(f"{d}: running")
    run_job(parse_config(text), d, force=True, reporter=make_reporter(False))
    return d


def _measure(d: Path) -> dict:
    from lattice.io.reader import open_ensemble
    from lattice.results.measure import measure_ensemble

    ens = open_ensemble(d / "ensemble.h5")
    res = measure_ensemble(ens)
    out = {k: e.to_json() for k, e in res.observables.items()}
    out["_seconds"] = ens.seconds
    out["_steps"] = ens.steps
    out["_chains"] = ens.chains
    out["_samples"] = res.samples
    out["_forces"] = float(ens.config_attrs.get("sampler.forces_per_step", 1))
    if "acceptance" in ens.diagnostics and ens.config_attrs.get("sampler.kind") != "langevin":
        out["_acceptance"] = float(np.mean(ens.diagnostics["acceptance"]))
    if "sampler.tuned_step_size" in ens.config_attrs:
        out["_tuned_step"] = float(ens.config_attrs["sampler.tuned_step_size"])
    return out


def _load() -> dict:
    f = ROOT / "results.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _save(results: dict) -> None:
    (ROOT / "results.json").write_text(json.dumps(results, indent=1) + "\n")


def _save_entry(key: str, value: dict) -> None:
    """Write one top-level entry of results.json, re-reading the file first: stages that run
    at the same time (each in its own process) keep each other's entries."""
    results = _load()
    results[key] = value
    _save(results)


def stage_binder(Ls, scale: float, sampler: str = "hmc", kappas=BINDER_KAPPAS) -> None:
    """U_L(κ) on a κ grid per L, then the crossings of consecutive L. Any exact sampler gives
    the same U_L; ``sampler`` (a key of SAMPLERS) picks one whose τ_int stays small at large L
    (the L = 64, 128 scans use FA-HMC + SW); its runs are named ``binder_<sampler>_L…`` unless
    it is plain HMC, and the scan merges every sampler's points by L."""
    results = _load()
    scan = results.setdefault("binder", {})
    for L in Ls:
        for k in kappas:
            n = int(4000 * scale * (L / 8) ** 0.5)
            tag = "" if sampler == "hmc" else f"{sampler}_"
            name = f"binder_{tag}L{L}_k{k:g}"
            text = _toml(name, L, k, SAMPLERS[sampler][0], 8, 500, n, 1)
            b = _measure(_run(name, text))["binder"]
            scan.setdefault(str(L), {})[f"{k:g}"] = [b["value"], b["error"]]
            _save(results)
    results["kappa_c"] = _binder_crossings(scan)
    _save(results)
    print(json.dumps(results["kappa_c"], indent=1))


def _binder_crossings(scan: dict) -> dict:
    """κ where U_L(κ) − U_{L'}(κ) changes sign, by linear interpolation between scan points,
    for consecutive pairs of L; the error from the errors of the differences at the two
    bracketing points (linear propagation)."""
    Ls = sorted(int(L) for L in scan)
    out = {}
    for a, b in zip(Ls, Ls[1:], strict=False):
        ka = sorted(set(scan[str(a)]) & set(scan[str(b)]), key=float)
        d = [(float(k), scan[str(b)][k][0] - scan[str(a)][k][0],
              math.hypot(scan[str(b)][k][1], scan[str(a)][k][1])) for k in ka]  # fmt: skip
        for (k0, d0, e0), (k1, d1, e1) in zip(d, d[1:], strict=False):
            if d0 * d1 <= 0 and d0 != d1:
                kc = k0 + (k1 - k0) * d0 / (d0 - d1)
                slope = (d1 - d0) / (k1 - k0)
                err = math.hypot(e0, e1) / abs(slope) / math.sqrt(2)
                out[f"{a}-{b}"] = [kc, err]
                break
    return out


def _kappa_c(args) -> float:
    if args.kappa_c:
        return args.kappa_c
    kc = _load().get("kappa_c", {})
    if kc:
        last = sorted(kc, key=lambda s: int(s.split("-")[1]))[-1]
        return round(kc[last][0], 4)
    return KAPPA_C_REF


#: integrator steps per L of the samplers whose [sampler] text has a ``{steps}`` field
LEN1_STEPS = {8: 4, 16: 6, 32: 7, 64: 13, 128: 20}

#: the κ of the first study (docs/results.md §2): its runs and results keep their names
KAPPA_FIRST = 0.2695


def _series(kappa: float) -> str:
    """The results.json key of the τ rows at ``kappa``."""
    return "tau" if kappa == KAPPA_FIRST else f"tau_k{kappa:g}"


def stage_tau(Ls, kappa: float, scale: float, samplers=None, steps_fixed=None) -> None:
    """τ_int rows per sampler and L at ``kappa``. Steps per chain follow steps8·scale·(L/8)²
    (a z = 2 budget), or are ``steps_fixed`` at every L (for samplers whose τ barely grows)."""
    results = _load()
    tau = results.setdefault(_series(kappa), {})
    results["kappa_study"] = kappa
    for L in Ls:
        for s, (text, every, steps8) in SAMPLERS.items():
            if samplers and s not in samplers:
                continue
            if "{steps}" in text:
                text = text.replace("{steps}", str(LEN1_STEPS[L]))
            steps = steps_fixed or int(steps8 * scale * (L / 8) ** 2)
            n = max(200, steps // every)
            name = f"{s}_L{L}"
            if kappa != KAPPA_FIRST:
                name += f"_k{kappa:g}"
            if steps_fixed:
                name += f"_n{steps_fixed}"
            t = _toml(name, L, kappa, text, 8, max(n * every // 10, 100), n, every)
            m = _measure(_run(name, t))
            tau.setdefault(s, {})[str(L)] = _summary(m, every)
            _save(results)


def _summary(m: dict, every: int, evals_per_step: float | None = None) -> dict:
    evals = evals_per_step if evals_per_step is not None else m["_forces"]
    meas = m["_chains"] * m["_samples"]
    sec_per_meas = m["_seconds"] * min(1.0, m["_samples"] * every / max(m["_steps"], 1)) / meas
    out = {}
    for o in ("abs_m", "chi", "binder", "phi2", "action"):
        out[o] = [m[o]["value"], m[o]["error"], m[o]["tau_int"] * every,
                  m[o]["tau_int_error"] * every]  # fmt: skip
    for k in ("acceptance", "tuned_step"):
        if f"_{k}" in m:
            out[k] = m[f"_{k}"]
    t = m["abs_m"]["tau_int"]
    out["seconds_per_independent"] = 2 * t * sec_per_meas
    out["evals_per_independent"] = 2 * t * every * evals
    return out


def stage_diffusion(
    Ls, kappa: float, scale: float, train_scale: float = 1.0, proposals: int | None = None
) -> None:
    """Per L: an HMC ensemble with saved configurations, a score model trained on it, and a
    path-space MH run with K = V/2 steps. ``train_scale`` multiplies the training steps only
    (2000·L/8 by default), so a CPU budget can shorten the one expensive piece; ``proposals``
    the measured proposals per chain (300 by default)."""
    from lattice.config.train import parse_train_config
    from lattice.io.model import load_model
    from lattice.runs.training import resume_training, train_model

    results = _load()
    diff = results.setdefault("diffusion", {})
    for L in Ls:
        V = L * L
        data = _run(
            f"data_L{L}",
            _toml(f"data_L{L}", L, kappa, SAMPLERS["hmc"][0], 8, 1000,
                  int(8192 * scale), 1, save_every=8),
        )  # fmt: skip
        mdir = ROOT / f"score_L{L}"
        if (mdir / "checkpoint.h5").exists() and not (mdir / "model.json").exists():
            resume_training(mdir)  # an interrupted training continues where it stopped
        if not (mdir / "model.json").exists():
            steps = int(2000 * scale * train_scale * (L / 8))
            tcfg = (
                f'name = "score_L{L}"\n[train]\nensemble = "{data}"\nsteps = {steps}\n'
                "batch_size = 64\ncheckpoint_every = 250\n[network]\nchannels = 24\n"
                f"blocks = {3 if L <= 8 else 4}\n"
            )
            (ROOT / f"score_L{L}.toml").write_text(tcfg)
            train_model(parse_train_config(tcfg), mdir, force=True)
        model = load_model(mdir)
        K = max(16, V // 2)
        sampler = f'kind = "diffusion"\nmodel = "{mdir}"\nmethod = "sde"\nsteps = {K}'
        n = int((proposals or 300) * scale)
        d = _run(f"diffusion_L{L}", _toml(f"diffusion_L{L}", L, kappa, sampler, 8, 20, n, 1))
        m = _measure(d)
        from lattice.io.reader import open_ensemble

        ens = open_ensemble(d / "ensemble.h5")
        acc = float(np.mean(ens.diagnostics["acceptance"]))
        s = _summary(m, 1, evals_per_step=K)
        s["acceptance"] = acc
        s["K"] = K
        s["training_seconds"] = model.meta["training"]["seconds"]
        diff[str(L)] = s
        _save(results)


#: issue 24's study: training steps and network blocks per L (24 channels; the CPU budget)
SPECTRAL_TRAIN = {8: (2000, 3), 16: (4000, 4), 32: (3000, 4), 64: (2000, 4)}


def stage_spectral(Ls, kappa: float, target: float, sample: bool = True, proposals: int = 300,
                   net: tuple[int, int, int] | None = None,
                   local: bool = False) -> None:  # fmt: skip
    """Issue 24's diffusion rows at ``kappa``: per L an FA-HMC + SW ensemble (tuned to 75%,
    every 8th configuration saved), a score model trained on it (:data:`SPECTRAL_TRAIN`; the
    model carries its spectral table), and a path-MH run with the spectral kernel and K picked
    by the pilot for ``target`` acceptance (``[sampler] target_acceptance``, at most V/2).
    Results go to results.json under ``spectral_k<κ>``. ``net`` = (channels, blocks, steps)
    replaces the default network and training (names and results keys get ``_c<C>b<B>s<S>``);
    ``local`` drops the site-averaged channel (``global_channel = false``: a finite receptive
    field, tag ``_loc``)."""
    from lattice.config.train import parse_train_config
    from lattice.io.model import load_model
    from lattice.runs.training import resume_training, train_model

    results = _load()
    tag = ("" if net is None else f"_c{net[0]}b{net[1]}s{net[2]}") + ("_loc" if local else "")
    key = f"spectral_k{kappa:g}{tag}"
    out = results.setdefault(key, {})
    for L in Ls:
        V = L * L
        data = _run(
            f"data_fa_sw_L{L}_k{kappa:g}",
            _toml(f"data_fa_sw_L{L}_k{kappa:g}", L, kappa, SAMPLERS["fa_hmc_sw_tuned"][0], 8,
                  800, 8192, 1, save_every=8),
        )  # fmt: skip
        mdir = ROOT / f"score_spectral_L{L}_k{kappa:g}{tag}"
        if (mdir / "checkpoint.h5").exists() and not (mdir / "model.json").exists():
            resume_training(mdir)  # an interrupted training continues where it stopped
        if not (mdir / "model.json").exists():
            channels, (steps, blocks) = 24, SPECTRAL_TRAIN[L]
            if net is not None:
                channels, blocks, steps = net
            tcfg = (
                f'name = "{mdir.name}"\n[train]\nensemble = "{data}"\nsteps = {steps}\n'
                "batch_size = 64\ncheckpoint_every = 250\n[network]\n"
                f"channels = {channels}\n"
                f"blocks = {blocks}\n" + ("global_channel = false\n" if local else "")
            )
            (ROOT / f"{mdir.name}.toml").write_text(tcfg)
            print(f"{mdir}: training {steps} steps")
            train_model(parse_train_config(tcfg), mdir, force=True)
        if not sample:
            continue
        model = load_model(mdir)
        cap = max(64, V // 2)
        sampler = (
            f'kind = "diffusion"\nmodel = "{mdir}"\nmethod = "sde"\nsteps = {cap}\n'
            f"target_acceptance = {json.dumps(target)}"
        )
        name = f"spectral_L{L}_k{kappa:g}{tag}_t{target if target == 'cost' else f'{target:g}'}"
        d = _run(name, _toml(name, L, kappa, sampler, 8, 20, proposals, 1))
        m = _measure(d)
        from lattice.io.reader import open_ensemble

        ens = open_ensemble(d / "ensemble.h5")
        K = int(ens.config_attrs["sampler.tuned_path_steps"])
        s = _summary(m, 1, evals_per_step=K)
        s["acceptance"] = float(np.mean(ens.diagnostics["acceptance"]))
        s["K"] = K
        s["training_seconds"] = model.meta["training"]["seconds"]
        s["log_w_var"] = float(np.var(ens.diagnostics["proposal_log_w"]))
        out[str(L)] = s
        _save_entry(key, out)


#: FA-HMC + SW at κ = 0.2709 (docs/results.md §6): ⟨|m|⟩, its error, χ, its error
FA_SW_REF = {8: (0.9354, 0.0026, 65.64, 0.31), 16: (0.8492, 0.0020, 207.14, 0.81),
             32: (0.7836, 0.0021, 684.7, 2.9), 64: (0.7180, 0.0020, 2276, 10),
             128: (0.6625, 0.0022, 7698, 42)}  # fmt: skip


def stage_multilevel(Ls, kappa: float, target: float, net: tuple[int, int, int],
                     proposals: int = 300, transfer=(), local: bool = False,
                     objective: str = "tsm") -> None:  # fmt: skip
    """Issue 26's rows: per L a multilevel model ([train] method = "multilevel", levels
    "auto", ``net`` = (channels, blocks, steps)) trained on the FA-HMC + SW ensemble of the
    spectral stage, and a path-MH run with K chosen by the pilot (target ``target``, cap V/2
    but at most 256) with its per-level log-w variances; then, for each size in ``transfer``,
    the same model at that size (``transfer = true``, K fixed at the trained size's pilot K).
    Results under ``multilevel_k<κ>_c<C>b<B>s<S>`` in results.json, z against FA-HMC + SW."""
    from lattice.config.train import parse_train_config
    from lattice.io.model import load_model
    from lattice.io.reader import open_ensemble
    from lattice.runs.training import resume_training, train_model

    tag = f"_c{net[0]}b{net[1]}s{net[2]}" + ("_loc" if local else "")
    tag += "_tsm" if objective == "tsm" else ""  # the rows of before the key are "dsm"
    key = f"multilevel_k{kappa:g}{tag}"
    out = _load().get(key, {})

    def row(d, K, model, L):
        m = _measure(d)
        ens = open_ensemble(d / "ensemble.h5")
        per_prop = float(np.mean(ens.diagnostics["score_evaluations"]))
        s = _summary(m, 1, evals_per_step=per_prop)
        s["acceptance"] = float(np.mean(ens.diagnostics["acceptance"]))
        s["K"] = K
        s["evals_per_proposal"] = per_prop
        s["training_seconds"] = model.meta["training"]["seconds"]
        s["log_w_var"] = float(np.var(ens.diagnostics["proposal_log_w"]))
        p2 = np.asarray(ens.observables["phi2"])  # a change of φ² is an accepted proposal
        s["accepted_per_chain"] = float(np.mean(np.sum(np.diff(p2, axis=1) != 0, axis=1)))
        s["level_log_w_var"] = {
            k[len("level_log_w_"):]: float(np.var(v))
            for k, v in ens.diagnostics.items() if k.startswith("level_log_w_")
        }  # fmt: skip
        ref = FA_SW_REF.get(L)
        if ref:
            s["z_abs_m"] = (s["abs_m"][0] - ref[0]) / float(np.hypot(s["abs_m"][1], ref[1]))
            s["z_chi"] = (s["chi"][0] - ref[2]) / float(np.hypot(s["chi"][1], ref[3]))
        exact = ROOT / f"data_fa_sw_L{L}_k{kappa:g}"
        if (exact / "ensemble.h5").exists():  # which level limits it (`lattice levels`)
            from lattice.results.levels import diagnose_run

            t0 = time.perf_counter()
            lv = diagnose_run(d, exact, configurations=32, draws=16)
            s["levels"] = [
                {k: getattr(r, k) for k in ("level", "acceptance", "error", "log_w_var")}
                for r in lv.levels
            ]
            s["levels_seconds"] = time.perf_counter() - t0
            print("levels: " + ", ".join(f"{r.level} {r.acceptance:.3f}" for r in lv.levels))
        return s

    for L in Ls:
        V = L * L
        data = ROOT / f"data_fa_sw_L{L}_k{kappa:g}"
        if not (data / "ensemble.h5").exists():
            data = _run(
                f"data_fa_sw_L{L}_k{kappa:g}",
                _toml(f"data_fa_sw_L{L}_k{kappa:g}", L, kappa, SAMPLERS["fa_hmc_sw_tuned"][0], 8,
                      800, 8192, 1, save_every=8),
            )  # fmt: skip
        mdir = ROOT / f"ml_L{L}_k{kappa:g}{tag}"
        if (mdir / "checkpoint.h5").exists() and not (mdir / "model.json").exists():
            resume_training(mdir)
        if not (mdir / "model.json").exists():
            tcfg = (
                f'name = "{mdir.name}"\n[train]\nensemble = "{data}"\nmethod = "multilevel"\n'
                f'objective = "{objective}"\nsteps = {net[2]}\nbatch_size = 64\n'
                f"checkpoint_every = 250\n[network]\n"
                f"channels = {net[0]}\nblocks = {net[1]}\n"
                + ("global_channel = false\n" if local else "")
            )
            (ROOT / f"{mdir.name}.toml").write_text(tcfg)
            print(f"{mdir}: training {net[2]} steps")
            train_model(parse_train_config(tcfg), mdir, force=True)
        model = load_model(mdir)
        cap = min(256, max(64, V // 2))
        sampler = (
            f'kind = "diffusion"\nmodel = "{mdir}"\nmethod = "multilevel"\nsteps = {cap}\n'
            f"target_acceptance = {json.dumps(target)}"
        )
        name = f"ml_L{L}_k{kappa:g}{tag}_t{target if target == 'cost' else f'{target:g}'}"
        d = _run(name, _toml(name, L, kappa, sampler, 8, 20, proposals, 1))
        K = int(open_ensemble(d / "ensemble.h5").config_attrs["sampler.tuned_path_steps"])
        out[str(L)] = row(d, K, model, L)
        _save_entry(key, out)
        print(json.dumps(out[str(L)], indent=1))
        for L2 in transfer:
            if L2 <= L:
                continue
            sampler = (
                f'kind = "diffusion"\nmodel = "{mdir}"\nmethod = "multilevel"\nsteps = {K}\n'
                "transfer = true"
            )
            name = f"ml_L{L}to{L2}_k{kappa:g}{tag}_K{K}"
            d = _run(name, _toml(name, L2, kappa, sampler, 8, 20, proposals, 1))
            out[f"{L}to{L2}"] = row(d, K, model, L2)
            _save_entry(key, out)
            print(json.dumps(out[f"{L}to{L2}"], indent=1))


#: §6 of docs/results.md at κ = 0.2709 (evaluations and seconds per independent |m|) and §2's
#: analytic-kernel diffusion rows (κ = 0.2695), for the learned-sampler figure
CLASSICAL = {
    "hmc": {8: (500, 0.0017), 16: (1.28e3, 0.0058), 32: (3.50e3, 0.026), 64: (2.11e4, 0.39),
            128: (1.58e5, 11)},
    "fa_hmc_sw_tuned": {8: (30.4, 0.00023), 16: (31.3, 0.00034), 32: (55.5, 0.0012),
                        64: (73.3, 0.0058), 128: (113, 0.033)},
    "diffusion, analytic kernel (§2)": {8: (375, 0.052), 16: (1.35e3, 0.64),
                                        32: (4.97e3, 13.1)},
}  # fmt: skip


def stage_learned_figure(keys, out: Path) -> None:
    """docs/img/critical_learned.png: evaluations and seconds per independent |m| (seconds with
    training amortized over 10⁴ independent samples, dashed) and MH acceptance against L for
    the results.json series ``keys`` (spectral_… and multilevel_…), beside HMC, FA-HMC + SW and
    §2's diffusion rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = _load()
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for name, rows in CLASSICAL.items():
        Ls = sorted(rows)
        ax1.plot(Ls, [rows[L][0] for L in Ls], "k" + ("o-" if "hmc" == name else "s--"
                 if "sw" in name else "^:"), label=name, alpha=0.7)  # fmt: skip
        ax2.plot(Ls, [rows[L][1] for L in Ls], "k" + ("o-" if "hmc" == name else "s--"
                 if "sw" in name else "^:"), label=name, alpha=0.7)  # fmt: skip
    for key in keys:
        by = {int(L): d for L, d in results.get(key, {}).items() if L.isdigit()}
        if not by:
            continue
        Ls = sorted(by)
        (line,) = ax1.plot(Ls, [by[L]["evals_per_independent"] for L in Ls], "o-", label=key)
        ax2.plot(Ls, [by[L]["seconds_per_independent"] for L in Ls], "o-", color=line.get_color())
        amort = [by[L]["seconds_per_independent"] + by[L]["training_seconds"] / 1e4 for L in Ls]
        ax2.plot(Ls, amort, "x--", color=line.get_color())
        ax3.plot(Ls, [by[L]["acceptance"] for L in Ls], "o-", color=line.get_color(), label=key)
    for ax, lab in ((ax1, "evaluations per independent |m|"),
                    (ax2, "s per independent |m| (dashed: + training / 10⁴)"),
                    (ax3, "MH acceptance")):  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xlabel("L")
        ax.set_ylabel(lab)
        if ax is not ax3:
            ax.set_yscale("log")
    ax3.set_ylim(0, 1)
    ax1.legend(fontsize=6)
    ax3.legend(fontsize=6)
    fig.suptitle("learned samplers at κ = 0.2709, λ = 0.022 (docs/results.md §2b, §7)")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def _amortized(L: str, d: dict) -> float:
    """Seconds per independent |m| with the model's training spread over the run's
    independent samples: (run + training seconds) / (N / 2τ_int)."""
    from lattice.io.reader import open_ensemble

    ens = open_ensemble(ROOT / f"diffusion_L{L}" / "ensemble.h5", load_observables=False)
    n_indep = ens.chains * ens.committed / (2 * d["abs_m"][2])
    return d["seconds_per_independent"] + d["training_seconds"] / n_indep


def stage_report() -> None:
    """Fit τ_int(|m|) ∝ L^z per sampler (weighted least squares in log–log) and plot τ_int,
    cost per independent sample and the diffusion acceptance against L."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = _load()
    fits = {}
    series = dict(results.get("tau", {}))
    if results.get("diffusion"):
        series["diffusion_path_mh"] = results["diffusion"]
    for L, d in results.get("diffusion", {}).items():
        d["seconds_per_independent_amortized"] = _amortized(L, d)
    fig = Figure(figsize=(15, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for name, by_L in series.items():
        Ls = np.array(sorted(int(L) for L in by_L))
        for obs in ("abs_m", "chi"):
            t = np.array([by_L[str(L)][obs][2] for L in Ls])
            dt = np.array([by_L[str(L)][obs][3] for L in Ls])
            if len(Ls) >= 2:
                fits[f"{name}:{obs}"] = _fit_z(Ls, t, dt)
            if obs == "abs_m":
                ax1.errorbar(Ls, t, yerr=dt, fmt="o-", capsize=2, label=name)
        cost = [by_L[str(L)]["seconds_per_independent"] for L in Ls]
        (line,) = ax2.plot(Ls, cost, "o-", label=name)
        if name == "diffusion_path_mh":
            amort = [by_L[str(L)]["seconds_per_independent_amortized"] for L in Ls]
            ax2.plot(Ls, amort, "s--", color=line.get_color(), label=f"{name} + training")
            acc = [by_L[str(L)]["acceptance"] for L in Ls]
            ax3.plot(Ls, acc, "o-", color=line.get_color(), label=f"{name}, K = V/2")
    ax3.set_ylim(0, 1)
    for ax, lab in (
        (ax1, "τ_int(|m|) [sampler steps]"),
        (ax2, "s per independent |m|"),
        (ax3, "MH acceptance"),
    ):
        ax.set_xscale("log", base=2)
        if ax is not ax3:
            ax.set_yscale("log")
        ax.set_xlabel("L")
        ax.set_ylabel(lab)
        ax.legend(fontsize=7)
    fig.savefig(ROOT / "tau_cost_vs_L.png", dpi=110)
    results["z_fits"] = fits
    _save(results)
    print(json.dumps(fits, indent=1))
    print(_markdown_table(series))


def _fit_z(Ls, t, dt) -> list[float]:
    """z and its error of τ ∝ L^z: weighted least squares of log τ on log L (1/σ² of log τ
    = (τ/δτ)²)."""
    Ls, t, dt = (np.asarray(a, float) for a in (Ls, t, dt))
    w = (t / np.maximum(dt, 1e-12)) ** 2
    A = np.vstack([np.log(Ls), np.ones_like(Ls)]).T * np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(A, np.log(t) * np.sqrt(w), rcond=None)
    cov = np.linalg.inv(A.T @ A)
    return [float(coef[0]), float(np.sqrt(cov[0, 0]))]


#: the diffusion rows of docs/results.md §2 (κ = 0.2695; their runs are not in this checkout's
#: results.json): τ_int(χ) [proposals] ± error, score evaluations and seconds per independent |m|
DIFFUSION_SECTION2 = {
    8: (8.0, 1.8, 375, 0.052),
    16: (6.4, 1.3, 1.35e3, 0.64),
    32: (5.1, 1.5, 4.97e3, 13.0),
}


def stage_frontier(kappa: float) -> None:
    """The classical frontier at ``kappa`` (issue 25): z fits of τ_int(|m|) and τ_int(χ) per
    sampler over every L and over L ≥ 32, the table of docs/results.md §6, and
    runs/critical/frontier_k<κ>.png (τ_int(χ), force evaluations and seconds per independent
    |m| against L, with §2's diffusion rows beside them)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = _load()
    series = results.get(_series(kappa), {})
    fits = {}
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for name, by_L in series.items():
        Ls = np.array(sorted(int(L) for L in by_L))
        for obs in ("abs_m", "chi"):
            t = np.array([by_L[str(L)][obs][2] for L in Ls])
            dt = np.array([by_L[str(L)][obs][3] for L in Ls])
            if len(Ls) >= 2:
                fits[f"{name}:{obs}"] = _fit_z(Ls, t, dt) + [int(Ls[0]), int(Ls[-1])]
            big = Ls >= 32
            if big.sum() >= 2:
                fits[f"{name}:{obs}:L>=32"] = _fit_z(Ls[big], t[big], dt[big]) + [32, int(Ls[-1])]
            if obs == "chi":
                ax1.errorbar(Ls, t, yerr=dt, fmt="o-", capsize=2, label=name)
        ax2.plot(Ls, [by_L[str(L)]["evals_per_independent"] for L in Ls], "o-", label=name)
        ax3.plot(Ls, [by_L[str(L)]["seconds_per_independent"] for L in Ls], "o-", label=name)
    dL = sorted(DIFFUSION_SECTION2)
    lab = "diffusion path MH, K = V/2 (§2, κ = 0.2695)"
    tau_d = [DIFFUSION_SECTION2[L][0] for L in dL]
    err_d = [DIFFUSION_SECTION2[L][1] for L in dL]
    ax1.errorbar(dL, tau_d, yerr=err_d, fmt="k^--", capsize=2, label=lab)
    ax2.plot(dL, [DIFFUSION_SECTION2[L][2] for L in dL], "k^--", label=lab)
    ax3.plot(dL, [DIFFUSION_SECTION2[L][3] for L in dL], "k^--", label=lab)
    for ax, ylab in (
        (ax1, "τ_int(χ) [sampler steps]"),
        (ax2, "force (score) evaluations per independent |m|"),
        (ax3, "s per independent |m|"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("L")
        ax.set_ylabel(ylab)
        ax.legend(fontsize=6)
    fig.suptitle(f"2D φ⁴, λ = {LAMBDA}, κ = {kappa:g} (Binder crossing of L = 64, 128)")
    out = ROOT / f"frontier_k{kappa:g}.png"
    fig.savefig(out, dpi=110)
    results[f"z_fits_k{kappa:g}"] = fits
    _save(results)
    print(json.dumps(fits, indent=1))
    print(_markdown_table(series))
    print(f"figure: {out}")


def _fmt(v: float, e: float) -> str:
    """v(e) with the error's two leading digits."""
    if not (np.isfinite(e) and e > 0):
        return f"{v:.4g}"
    d = max(0, 1 - int(np.floor(np.log10(e))))
    return f"{v:.{d}f}({round(e * 10**d):d})"


def _markdown_table(series: dict) -> str:
    """The results.md table: observables, z against HMC at the same L, τ_int, costs."""
    hmc = series.get("hmc", {})
    rows = [
        "| sampler | L | ⟨\\|m\\|⟩ | z vs HMC | χ | τ_int(\\|m\\|) [steps] | τ_int(χ) [steps] "
        "| evals per independent \\|m\\| | s per independent \\|m\\| | acceptance |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_L in series.items():
        for L in sorted(by_L, key=int):
            d = by_L[L]
            m, c = d["abs_m"], d["chi"]
            z = "—"
            if name != "hmc" and L in hmc:
                h = hmc[L]["abs_m"]
                z = f"{(m[0] - h[0]) / np.hypot(m[1], h[1]):+.1f}"
            sec = f"{d['seconds_per_independent']:.2g}"
            if "seconds_per_independent_amortized" in d:
                sec += f" ({d['seconds_per_independent_amortized']:.2g} with training)"
            acc = f"{d['acceptance']:.3f}" if "acceptance" in d else "—"
            if "tuned_step" in d:
                acc += f" (ε = {d['tuned_step']:.3g})"
            rows.append(
                f"| {name} | {L} | {_fmt(m[0], m[1])} | {z} | {_fmt(c[0], c[1])} "
                f"| {_fmt(m[2], m[3])} | {_fmt(c[2], c[3])} | {d['evals_per_independent']:.3g} "
                f"| {sec} | {acc} |"
            )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "stage",
        choices=[
            "binder",
            "tau",
            "diffusion",
            "spectral",
            "multilevel",
            "learned_figure",
            "report",
            "frontier",
            "all",
        ],  # fmt: skip
    )
    ap.add_argument("--L", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--kappa-c", type=float, default=None)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--samplers", nargs="+", default=None, choices=list(SAMPLERS))
    ap.add_argument("--steps", type=int, default=None, help="tau: steps per chain at every L")
    ap.add_argument("--binder-sampler", default="hmc", choices=list(SAMPLERS))
    ap.add_argument("--kappas", type=float, nargs="+", default=None, help="binder: the κ grid")
    ap.add_argument("--train-scale", type=float, default=1.0, help="multiplies training steps")
    ap.add_argument("--proposals", type=int, default=None, help="diffusion: proposals per chain")
    ap.add_argument("--target", type=_target, default=0.5,
                    help='spectral, multilevel: the K pilot\'s target, or "cost"')  # fmt: skip
    ap.add_argument("--no-sample", action="store_true", help="spectral: data and training only")
    ap.add_argument("--net", type=int, nargs=3, default=None, metavar=("C", "B", "STEPS"),
                    help="spectral: channels, blocks, training steps")  # fmt: skip
    ap.add_argument("--local", action="store_true", help="spectral: no global channel")
    ap.add_argument("--series", nargs="*", default=[], help="learned_figure: results.json keys")
    ap.add_argument("--figure", default="docs/img/critical_learned.png", help="learned_figure")
    ap.add_argument("--transfer", type=int, nargs="*", default=(),
                    help="multilevel: sizes to sample with each trained model")  # fmt: skip
    ap.add_argument("--objective", default="tsm", choices=["dsm", "tsm"],
                    help="multilevel: the training objective")  # fmt: skip
    args = ap.parse_args()
    global SCALE
    SCALE = args.scale
    if args.stage in ("binder", "all"):
        stage_binder(args.L, args.scale, args.binder_sampler, args.kappas or BINDER_KAPPAS)
    if args.stage in ("tau", "all"):
        stage_tau(args.L, _kappa_c(args), args.scale, args.samplers, args.steps)
    if args.stage in ("diffusion", "all"):
        stage_diffusion(args.L, _kappa_c(args), args.scale, args.train_scale, args.proposals)
    if args.stage == "spectral":
        net = None if args.net is None else tuple(args.net)
        stage_spectral(args.L, _kappa_c(args), args.target, not args.no_sample,
                       args.proposals or 300, net, args.local)  # fmt: skip
    if args.stage == "multilevel":
        stage_multilevel(args.L, _kappa_c(args), args.target, tuple(args.net or (16, 2, 1500)),
                         args.proposals or 300, args.transfer, args.local,
                         args.objective)  # fmt: skip
    if args.stage == "learned_figure":
        stage_learned_figure(args.series, Path(args.figure))
    if args.stage in ("report", "all"):
        stage_report()
    if args.stage == "frontier":
        stage_frontier(_kappa_c(args))


if __name__ == "__main__":
    import jax

    jax.config.update("jax_enable_x64", True)  # as the lattice command does (runs need it)
    main()
