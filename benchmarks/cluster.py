"""Swendsen–Wang at the critical point: cost of an update, τ_int(|m|) against L, and the cost
per independent sample of |m| against HMC alone.

Theory: 2D, κ = 0.2709 ≈ κ_c, λ = 0.022 (REFERENCES.md), float32, 64 chains, hot start.
(Not ordered: from φ = 1 HMC's energy error grows ∝ V, ΔH ≈ 10 at L = 64, and the chains
never accept.)
Samplers: HMC (trajectory length 1, 10 leapfrog steps) alone, and HMC + one SW update per
trajectory (a "step" = one trajectory + one SW update). τ_int(|m|) is in steps, from the
Γ-method over the chains as replica (S = 1.5), measured every step after ``--therm`` steps.

Cost per independent sample = 2 τ_int × (wall seconds per step of one chain, i.e. the time
of one vectorized step over all chains / chains), and in force evaluations 2 τ_int × 10 (+1
per SW update, the state rebuild) — the SW labelling itself is not a force evaluation, which
is why the wall-clock figure is the one that counts.

    python benchmarks/cluster.py [--sizes 16 32 64] [--steps N] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import machine

from lattice.config.sampler import Hmc, Langevin
from lattice.numerics.analysis import gamma_method
from lattice.numerics.phi4 import Phi4
from lattice.samplers import with_clusters
from lattice.samplers.chains import chain_keys, evolve, init_states, initial_field, sample
from lattice.samplers.cluster import swendsen_wang_batch

KAPPA, LAM, CHAINS = 0.2709, 0.022, 64


def sw_cost(L: int) -> dict:
    """Seconds of one vectorized SW update and of one Euler-Langevin step (64 chains, f32)."""
    th = Phi4.kappa_form((L, L), KAPPA, LAM)
    keys = chain_keys(1, CHAINS)
    s = Hmc(trajectory_length=1.0, steps=10).build(th)
    st = init_states(s, initial_field(keys, th, "hot", jnp.float32))
    st, _ = evolve(s, keys, st, 0, 300)  # a critical configuration, not a trivial one
    f = jax.jit(lambda k, p: swendsen_wang_batch(th, k, p))
    ks = jax.vmap(jax.random.fold_in, (0, None))(keys, 7)
    jax.block_until_ready(f(ks, st.phi))
    n = 20
    t = time.perf_counter()
    for _ in range(n):
        out = f(ks, st.phi)
    jax.block_until_ready(out)
    t_sw = (time.perf_counter() - t) / n
    lg = Langevin(step_size=0.01).build(th)
    sl = init_states(lg, st.phi)
    jax.block_until_ready(evolve(lg, keys, sl, 0, 1000))
    t = time.perf_counter()
    jax.block_until_ready(evolve(lg, keys, sl, 0, 1000))
    t_l = (time.perf_counter() - t) / 1000
    return {"sw_seconds": t_sw, "langevin_seconds": t_l, "ratio": t_sw / t_l}


def tau_run(L: int, every: int, steps: int, therm: int) -> dict:
    """τ_int(|m|) of HMC (every = 0) or HMC + SW every ``every`` trajectories. Every run is
    thermalized with HMC + SW (fast at κ_c) so that HMC alone starts in equilibrium too."""
    th = Phi4.kappa_form((L, L), KAPPA, LAM)
    base = Hmc(trajectory_length=1.0, steps=10).build(th)
    warm = with_clusters(base, th, 1)
    s = with_clusters(base, th, every) if every else base
    keys = chain_keys(2, CHAINS)
    st = init_states(warm, initial_field(keys, th, "hot", jnp.float32))
    st, _ = evolve(warm, keys, st, 0, therm)
    st = init_states(s, st.phi)
    jax.block_until_ready(st)
    block = 500
    series, acc = [], []
    t = time.perf_counter()
    for b in range(0, steps, block):
        n = min(block, steps - b)
        st, obs, diag, _ = sample(s, th, keys, st, therm + b, n, 1)
        series.append(np.asarray(obs["abs_m"]).T)
        acc.append(np.asarray(diag["acceptance"]))
    secs = time.perf_counter() - t
    g = gamma_method(np.concatenate(series, axis=1))
    per_step = secs / steps / CHAINS
    forces = 10 + (1 / every if every else 0)
    return {
        "L": L,
        "sampler": s.name,
        "cluster_every": every,
        "abs_m": g.value,
        "abs_m_error": g.error,
        "tau_int": g.tau_int,
        "tau_int_error": g.tau_int_error,
        "acceptance": float(np.mean(np.concatenate(acc))),
        "seconds_per_step_per_chain": per_step,
        "cost_seconds": 2 * g.tau_int * per_step,
        "cost_forces": 2 * g.tau_int * forces,
    }


def fit_z(rows: list[dict]) -> tuple[float, float]:
    """Weighted least squares of log τ = z log L + c; returns (z, error)."""
    x = np.log([r["L"] for r in rows])
    y = np.log([r["tau_int"] for r in rows])
    w = 1.0 / np.square([r["tau_int_error"] / r["tau_int"] for r in rows])
    A = np.stack([x, np.ones_like(x)], axis=1)
    cov = np.linalg.inv(A.T @ (A * w[:, None]))
    z, _ = cov @ (A.T @ (w * y))
    return float(z), float(np.sqrt(cov[0, 0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--steps", type=int, default=4000, help="measured steps per chain")
    ap.add_argument("--therm", type=int, default=1000)
    ap.add_argument(
        "--every",
        type=int,
        nargs="+",
        default=[1, 2, 4],
        help="cluster_every values tried at the largest L",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = {"machine": machine(), "kappa": KAPPA, "lambda": LAM, "chains": CHAINS}
    res["cost"] = {L: sw_cost(L) for L in args.sizes}
    runs = []
    big = max(args.sizes)
    plan = [(L, 1, args.steps) for L in args.sizes]
    plan += [(big, e, args.steps) for e in args.every if e != 1]
    plan += [(L, 0, 2 * args.steps) for L in args.sizes]  # HMC alone: longer τ, longer runs
    for L, every, steps in plan:
        r = tau_run(L, every, steps, args.therm)
        runs.append(r)
        if not args.json:
            print(
                f"L={L:3d} {r['sampler']:8s} every={every} "
                f"|m|={r['abs_m']:.4f}±{r['abs_m_error']:.4f} "
                f"tau={r['tau_int']:.1f}±{r['tau_int_error']:.1f} acc={r['acceptance']:.3f} "
                f"cost={r['cost_seconds'] * 1e3:.2f} ms {r['cost_forces']:.0f} forces",
                flush=True,
            )
    res["runs"] = runs
    if len(args.sizes) > 1:
        res["z"] = {
            "hmc+sw (every 1)": fit_z([r for r in runs if r["cluster_every"] == 1]),
            "hmc": fit_z([r for r in runs if r["cluster_every"] == 0]),
        }
    if args.json:
        print(json.dumps(res))
        return
    print(res["machine"])
    for L, c in res["cost"].items():
        print(
            f"L={L:3d}: SW {c['sw_seconds'] * 1e3:.2f} ms, Langevin step "
            f"{c['langevin_seconds'] * 1e3:.3f} ms, ratio {c['ratio']:.1f}"
        )
    for name, (z, dz) in res.get("z", {}).items():
        print(f"z({name}) = {z:.2f} ± {dz:.2f}")
    b = next(r for r in runs if r["L"] == big and r["cluster_every"] == 0)
    for a in (r for r in runs if r["L"] == big and r["cluster_every"]):
        ratio = b["cost_seconds"] / a["cost_seconds"]
        print(
            f"L={big}: cost per independent |m|, HMC / (HMC + SW every {a['cluster_every']}): "
            f"{ratio:.1f}x"
        )


if __name__ == "__main__":
    main()
