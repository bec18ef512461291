"""The exact diffusion-sampling routes, side by side (issue 11's table): acceptance, ESS/N and
cost per effective sample, in score evaluations and seconds.

    python benchmarks/diffusion_exact.py free --L 8 16 32 [--kappa 0.24] [--draws 256]
    python benchmarks/diffusion_exact.py model runs/score_16x16 [--draws 64]
        [--routes ode path-analytic:128 path-em:512 ode-hutchinson] [--json]

Every route draws independent proposals (``metropolis = false``), each with its log-weight
log w = −S − log q (the ODE's density, or the path weight of ``lattice/score/path.py``), and
reports from those weights:

- ESS/N = (Σw)²/(N Σw²), the importance-sampling efficiency;
- the acceptance an independence MH chain on these proposals has at stationarity,
  E_{φ~π, φ'~q} min(1, w(φ')/w(φ)), estimated as Σ_ij w̄_i min(1, w_j/w_i)/N with the
  self-normalized weights w̄;
- cost per effective sample = (cost per proposal)/(ESS/N), in score evaluations and seconds.

Routes: ``ode`` (exact divergence: the full trace, or probing for a local network),
``ode-full`` (the full trace even for a local network),
``ode-hutchinson`` (approximate: labelled so), ``path-analytic:K`` and ``path-em:K`` (K steps).
``free`` uses the closed-form free-field score (no network) on a VE SDE. Wall times exclude
compilation (the loop is compiled ahead of time). Run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np
from common import machine

jax.config.update("jax_enable_x64", True)

from lattice import Phi4  # noqa: E402
from lattice.config.sampler import Diffusion  # noqa: E402
from lattice.samplers.chains import chain_keys, init_states, initial_field, sample  # noqa: E402


def imh_acceptance(lw: np.ndarray) -> float:
    """Stationary acceptance of independence MH from N weighted draws (see the docstring)."""
    lw = lw[np.isfinite(lw)]
    wbar = np.exp(lw - lw.max())
    wbar /= wbar.sum()
    d = lw[None, :] - lw[:, None]  # log(w_j / w_i)
    return float(np.sum(wbar[:, None] * np.exp(np.minimum(d, 0.0))) / len(lw))


def route_sampler(theory, model, route: str):
    name, _, k = route.partition(":")
    if name == "ode":
        return Diffusion(model="in-memory", method="ode", metropolis=False).build(
            theory, model=model
        )
    if name == "ode-full":  # the full V-product trace even for a local network
        from dataclasses import fields

        from lattice.score.model import ScoreModel

        class FullTrace(ScoreModel):
            receptive_field = None

        view = FullTrace(**{f.name: getattr(model, f.name) for f in fields(model)})
        return Diffusion(model="in-memory", method="ode", metropolis=False).build(
            theory, model=view
        )
    if name == "ode-hutchinson":
        return Diffusion(
            model="in-memory", method="ode", metropolis=False, divergence="hutchinson"
        ).build(theory, model=model)
    if name in ("path-analytic", "path-em"):
        kernel = name.split("-")[1]
        return Diffusion(
            model="in-memory", method="sde", metropolis=False, steps=int(k), kernel=kernel
        ).build(theory, model=model)
    raise SystemExit(f"unknown route {route!r}")


def measure_route(theory, model, route: str, draws: int, chains: int, seed: int = 0) -> dict:
    s = route_sampler(theory, model, route)
    n = max(1, draws // chains)
    keys = chain_keys(seed, chains)
    states = init_states(s, initial_field(keys, theory, "hot", np.float64))
    compiled = sample.lower(s, theory, keys, states, 0, n, 1).compile()
    t = time.perf_counter()
    _, _, diag, _ = compiled(keys, states, 0)
    lw = np.asarray(jax.block_until_ready(diag["log_w"])).ravel()
    seconds = time.perf_counter() - t
    evals = float(np.mean(np.asarray(diag["score_evaluations"])))
    ok = np.isfinite(lw)
    w = np.exp(lw[ok] - lw[ok].max())
    ess_frac = float(w.sum() ** 2 / np.sum(w * w)) / lw.size
    sec = seconds / lw.size
    return {
        "route": route,
        "exact": s.exactness == "exact",
        "draws": int(lw.size),
        "acceptance": imh_acceptance(lw),
        "ess_per_draw": ess_frac,
        "log_w_std": float(np.std(lw[ok])),
        "evals_per_proposal": evals,
        "seconds_per_proposal": sec,
        "evals_per_effective_sample": evals / ess_frac,
        "seconds_per_effective_sample": sec / ess_frac,
    }


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(
        "| route | exact | draws | acceptance | ESS/N | std log w | evals/proposal | "
        "s/proposal | evals/eff. sample | s/eff. sample |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['route']} | {'yes' if r['exact'] else 'no (approx.)'} | {r['draws']} | "
            f"{r['acceptance']:.3f} | {r['ess_per_draw']:.3f} | {r['log_w_std']:.2f} | "
            f"{r['evals_per_proposal']:.3g} | {r['seconds_per_proposal']:.3g} | "
            f"{r['evals_per_effective_sample']:.3g} | {r['seconds_per_effective_sample']:.3g} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    f = sub.add_parser("free")
    f.add_argument("--L", type=int, nargs="+", default=[8, 16, 32])
    f.add_argument("--kappa", type=float, default=0.24)
    f.add_argument("--sigma", type=float, nargs=2, default=[0.01, 20.0])
    f.add_argument("--routes", nargs="+", default=None)
    m = sub.add_parser("model")
    m.add_argument("model")
    m.add_argument("--routes", nargs="+", default=None)
    for p in (f, m):
        p.add_argument("--draws", type=int, default=256)
        p.add_argument("--chains", type=int, default=16)
        p.add_argument("--ode-draws", type=int, default=None)
        p.add_argument("--json", action="store_true")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    out = []
    if args.what == "free":
        from lattice.score.gaussian import exact_gaussian_model
        from lattice.score.sde import VESDE

        for L in args.L:
            theory = Phi4.kappa_form([L, L], args.kappa, 0.0)
            model = exact_gaussian_model(theory, VESDE(*args.sigma))
            V = L * L
            routes = args.routes or [
                "ode",
                "ode-hutchinson",
                *(f"path-analytic:{k}" for k in (V // 4, V // 2, V, 2 * V)),
                *(f"path-em:{k}" for k in (4 * V, 16 * V)),
            ]
            rows = [measure_route(theory, model, r, _draws(args, r), args.chains) for r in routes]
            print_rows(f"free field L = {L}, kappa = {args.kappa}, exact score", rows)
            out.append({"theory": theory.describe(), "rows": rows})
    else:
        from lattice.io.model import load_model

        model = load_model(args.model)
        theory = model.theory
        V = theory.volume
        routes = args.routes or [
            "ode",
            *(f"path-analytic:{k}" for k in (V // 4, V // 2, V, 2 * V)),
            f"path-em:{4 * V}",
        ]
        rows = [measure_route(theory, model, r, _draws(args, r), args.chains) for r in routes]
        print_rows(f"model {args.model}: {theory.describe()}", rows)
        out.append({"model": args.model, "theory": theory.describe(), "rows": rows})
    if args.json:
        print(json.dumps(out, indent=2))


def _draws(args, route: str) -> int:
    if route.startswith("ode") and args.ode_draws:
        return args.ode_draws
    return args.draws


if __name__ == "__main__":
    main()
