"""Chains sharded over 1, 2 and 4 forced host devices: site-updates/s and efficiency.

Each device count runs in its own process (``--xla_force_host_platform_device_count`` must be
set before jax starts) on the Langevin benchmark case (64² × 64 chains, float32, Euler) and
on HMC (same lattice, float64, 10 leapfrog steps). Efficiency = rate(n) / rate(1). On a
machine with fewer cores than devices the devices share the cores, so efficiency above 1/n·
cores is all one can expect.

    python benchmarks/scaling.py [--devices 1 2 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from lattice import Hmc, Langevin, Phi4
from lattice.samplers.chains import chain_keys, evolve, init_states, initial_field
L, C = 64, 64
th = Phi4.kappa_form([L, L], 0.27, 0.022)
n = len(jax.devices())
sh = NamedSharding(Mesh(np.array(jax.devices()), ("chains",)), PartitionSpec("chains"))
out = {"devices": n}
CASES = (("langevin", Langevin(step_size=0.01).build(th), jnp.float32, 400),
         ("hmc", Hmc(trajectory_length=1.0, steps=10).build(th), jnp.float64, 20))
for name, s, dt, steps in CASES:
    keys = jax.device_put(chain_keys(0, C), sh)
    st = jax.device_put(init_states(s, initial_field(keys, th, "hot", dt)), sh)
    def go():
        evolve(s, keys, st, 0, steps)[0].phi.block_until_ready()
    go()
    best = 1e9
    for _ in range(3):
        t = time.perf_counter(); go(); best = min(best, time.perf_counter() - t)
    out[name] = L * L * C * steps / best
    out[name + "_forces_per_s"] = out[name] * s.forces_per_step
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for n in args.devices:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        p = subprocess.run(
            [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
        )
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    base = rows[0]
    for r in rows:
        for k in ("langevin", "hmc"):
            r[k + "_efficiency"] = r[k] / base[k]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{os.cpu_count()} CPU cores")
    for r in rows:
        print(
            f"{r['devices']} device(s): Langevin {r['langevin']:.3g} site-updates/s "
            f"(efficiency {r['langevin_efficiency']:.2f}), HMC {r['hmc_forces_per_s']:.3g} "
            f"force evaluations/s (efficiency {r['hmc_efficiency']:.2f})"
        )


if __name__ == "__main__":
    main()
