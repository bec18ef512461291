"""The accelerator check: does the package run unchanged on this backend, and how fast?

One short, prepared script for a lent GPU (or any backend; on the CPU it is a smoke test):

1. **Correctness.** A free-field Langevin run (float64, RK2) against the exact finite-step
   ⟨φ²⟩ (`lattice.numerics.exact.free_phi2`), and HMC on an interacting theory (float32 and float64)
   for ⟨e^{−ΔH}⟩ = 1; z-scores with Γ-method errors, |z| < 4 to pass.
2. **Speed.** Langevin float32 / float64 site-updates/s, the force alone, and HMC's force
   evaluations per second (10 leapfrog steps, float32) on lattices from the CPU benchmark
   cases up to sizes that fill an accelerator, with the fraction of the memory-bandwidth limit
   (8 bytes per float32 site-update) when the device's bandwidth is known or given.

    python benchmarks/device.py [--quick] [--bandwidth-gbs 3350] [--json]

Exit status 1 if a correctness check fails. ``--quick`` keeps the two CPU benchmark cases
only (~1 min on the 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
from langevin import force_only_sampler, lattice_rate  # noqa: E402

from lattice import Phi4, run_chains  # noqa: E402
from lattice.config.sampler import Hmc, Langevin
from lattice.numerics import exact  # noqa: E402
from lattice.numerics.analysis import gamma_method  # noqa: E402
from lattice.samplers.chains import chain_keys, evolve, init_states, initial_field, trace  # noqa: E402

# (L, chains): the CPU benchmark cases, then accelerator-sized ones (sites x chains = 2^24, 2^26)
CASES = [(64, 64), (16, 1024), (512, 64), (1024, 64)]
# memory bandwidth in GB/s by device kind (vendor figures), for the fraction of the limit
BANDWIDTH_GBS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0, "GH200": 4000.0}


def bandwidth_of(kind: str) -> float | None:
    for name, gbs in BANDWIDTH_GBS.items():
        if name in kind:
            return gbs
    return None


def correctness() -> list[dict]:
    """Exact answers the package must reproduce on this backend."""
    out = []
    # free field, RK2: <phi^2> against the exact finite-step value
    th = Phi4.kappa_form([8, 8], 0.2, 0.0)
    res = run_chains(
        Langevin(step_size=0.05, scheme="rk2").build(th), th, chains=32, seed=0, n_meas=1000,
        measure_every=2, thermalization=200,
    )  # fmt: skip
    est = gamma_method(np.asarray(res["obs"]["phi2"]))
    want = exact.free_phi2(th, step_size=0.05, scheme="rk2")
    out.append({"check": "free-field <phi^2>, RK2 float64", "value": est.value,
                "error": est.error, "exact": want})  # fmt: skip
    # HMC: <exp(-dH)> = 1 on an interacting theory, float32 (chain-last loop) and float64
    th = Phi4.kappa_form([16, 16], 0.25, 0.5)
    for dtype in (jnp.float32, jnp.float64):
        s = Hmc(trajectory_length=1.0, steps=10).build(th)
        keys = chain_keys(1, 64)
        st = init_states(s, initial_field(keys, th, "hot", dtype))
        st, _ = evolve(s, keys, st, 0, 100)
        _, info = trace(s, keys, st, 100, 200)
        e = np.exp(-np.asarray(info.delta_h, np.float64)).T  # [chains, steps]
        est = gamma_method(e)
        out.append({"check": f"HMC <exp(-dH)>, {jnp.dtype(dtype).name}", "value": est.value,
                    "error": est.error, "exact": 1.0})  # fmt: skip
    for row in out:
        row["z"] = (row["value"] - row["exact"]) / row["error"]
        row["pass"] = bool(abs(row["z"]) < 4)
    return out


def speed(cases, bandwidth_gbs: float | None) -> list[dict]:
    rows = []
    for L, chains in cases:
        sites = L * L * chains
        steps = max(20, min(400, int(4e8 // sites)))
        row = {
            "L": L,
            "chains": chains,
            "langevin_float32": lattice_rate(
                L, chains, steps, sampler=lambda th: Langevin(step_size=0.01).build(th)
            ),
            "langevin_float64": lattice_rate(
                L,
                chains,
                steps // 2,
                sampler=lambda th: Langevin(step_size=0.01).build(th),
                dtype=jnp.float64,
            ),
            "force_alone": lattice_rate(L, chains, steps, sampler=force_only_sampler),
            "hmc_forces_float32": 10
            * lattice_rate(
                L,
                chains,
                max(steps // 20, 2),
                sampler=lambda th: Hmc(trajectory_length=1.0, steps=10).build(th),
            ),
        }
        row["hmc_over_force"] = row["force_alone"] / row["hmc_forces_float32"]
        if bandwidth_gbs:
            limit = bandwidth_gbs * 1e9 / 8  # 8 bytes per float32 site-update
            row["limit"] = limit
            row["langevin_float32_of_limit"] = row["langevin_float32"] / limit
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the two CPU benchmark cases only")
    ap.add_argument("--bandwidth-gbs", type=float, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)  # as in `lattice run`; float32 stays float32
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", str(dev))
    bw = args.bandwidth_gbs or bandwidth_of(kind)
    t0 = time.perf_counter()
    checks = correctness()
    cases = CASES[:2] if args.quick else CASES
    result = {
        "machine": machine(),
        "backend": jax.default_backend(),
        "device_kind": kind,
        "bandwidth_gbs": bw,
        "checks": checks,
        "speed": speed(cases, bw),
        "seconds": time.perf_counter() - t0,
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['machine']}; device: {kind}" + (f", {bw:g} GB/s" if bw else ""))
        for c in checks:
            ok = "pass" if c["pass"] else "FAIL"
            print(f"  {c['check']}: {c['value']:.6g} ± {c['error']:.2g} "
                  f"(exact {c['exact']:.6g}, z = {c['z']:+.2f}) {ok}")  # fmt: skip
        for r in result["speed"]:
            frac = (
                f" ({r['langevin_float32_of_limit']:.1%} of {r['limit']:.2g})"
                if "limit" in r
                else ""
            )
            print(
                f"  {r['L']}² × {r['chains']}: Langevin float32 {r['langevin_float32']:.3g}"
                f"{frac}, float64 {r['langevin_float64']:.3g}, force alone "
                f"{r['force_alone']:.3g}, HMC {r['hmc_forces_float32']:.3g} force evals/s "
                f"({r['hmc_over_force']:.2f}x below the force alone)"
            )
        print(f"  {result['seconds']:.0f} s")
    return 0 if all(c["pass"] for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
