"""Domain decomposition: one lattice split over devices along its first axis.

With the field ``[chains, L0, L1, …]`` placed with ``NamedSharding(mesh, P(None, "lattice"))``
the same jitted loops (``evolve``, ``sample``) run unchanged: XLA's SPMD partitioner turns
each ``jnp.roll`` along the split axis into a ``collective-permute`` of one boundary slice
(the halo), and the site sums of the measurements into all-reduces; the FFTs of
Fourier-accelerated HMC need the whole lattice per transform (XLA gathers or transposes it:
the collectives are listed). This script checks that
the sharded run is bitwise the unsharded one (fields after ``evolve``, fields and observables
after ``sample``), lists the collectives of the compiled step and times both.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python benchmarks/domain_decomposition.py

On this 2-core CPU the forced devices share the cores, so the timing shows overhead, not
speed-up; the point is the layout (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from lattice import Phi4  # noqa: E402
from lattice.config.sampler import Hmc, Langevin  # noqa: E402
from lattice.samplers.chains import chain_keys, evolve, init_states, initial_field, sample  # noqa: E402


def collectives(compiled_text: str) -> dict[str, int]:
    names = ("collective-permute", "all-gather", "all-reduce", "all-to-all")
    return {n: len(re.findall(rf"= [^=]*\b{n}\(", compiled_text)) for n in names}


def check(kind: str, L: int, chains: int, steps: int, devices: int, dtype) -> dict:
    theory = Phi4.kappa_form([L, L], 0.27, 0.022)
    sampler = {
        "langevin": lambda: Langevin(step_size=0.01),
        "hmc": lambda: Hmc(trajectory_length=1.0, steps=10),
        "fa-hmc": lambda: Hmc(trajectory_length=1.0, steps=10, fourier_acceleration=True),
    }[kind]().build(theory)
    keys = chain_keys(0, chains)
    states = init_states(sampler, initial_field(keys, theory, "hot", dtype))
    mesh = Mesh(np.array(jax.devices()[:devices]), ("lattice",))
    split = NamedSharding(mesh, PartitionSpec(None, "lattice"))
    rep = NamedSharding(mesh, PartitionSpec())
    s_keys = jax.device_put(keys, rep)
    s_states = jax.tree_util.tree_map(
        lambda a: jax.device_put(a, split if a.ndim >= 3 else rep), states
    )  # fields split, per-chain scalars (HMC's action) replicated

    out = {"kind": kind, "L": L, "chains": chains, "steps": steps, "devices": devices}
    ref, _ = evolve(sampler, keys, states, 0, steps)
    got, _ = evolve(sampler, s_keys, s_states, 0, steps)
    out["sharding"] = str(got.phi.sharding.spec)
    out["evolve_bitwise"] = bool(np.array_equal(np.asarray(ref.phi), np.asarray(got.phi)))
    ref_s = sample(sampler, theory, keys, states, 0, 4, steps // 4)
    got_s = sample(sampler, theory, s_keys, s_states, 0, 4, steps // 4)
    out["sample_fields_bitwise"] = bool(
        np.array_equal(np.asarray(ref_s[0].phi), np.asarray(got_s[0].phi))
    )
    out["observables_bitwise"] = {
        k: bool(np.array_equal(np.asarray(ref_s[1][k]), np.asarray(got_s[1][k]))) for k in ref_s[1]
    }
    out["collectives"] = collectives(
        evolve.lower(sampler, s_keys, s_states, 0, steps).compile().as_text()
    )
    for label, (k, st) in (("one_device", (keys, states)), ("sharded", (s_keys, s_states))):

        def go(k=k, st=st):
            evolve(sampler, k, st, 0, steps)[0].phi.block_until_ready()

        go()
        t = time.perf_counter()
        go()
        out[f"site_updates_per_s_{label}"] = L * L * chains * steps / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--L", type=int, default=512)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [
        check("langevin", args.L, args.chains, args.steps, args.devices, jnp.float32),
        check("hmc", args.L, args.chains, max(args.steps // 10, 4), args.devices, jnp.float64),
    ]
    try:
        rows.append(
            check(
                "fa-hmc", args.L, args.chains, max(args.steps // 10, 4), args.devices, jnp.float64
            )
        )
    except jax.errors.JaxRuntimeError as e:  # XLA:CPU's FFT refuses the split layout
        rows.append({"kind": "fa-hmc", "error": str(e).splitlines()[0][:200]})
    if args.json:
        print(json.dumps(rows))
        return
    for r in rows:
        if "error" in r:
            print(f"{r['kind']}: fails on a split lattice: {r['error']}")
            continue
        obs = r["observables_bitwise"]
        print(
            f"{r['kind']}: {r['L']}x{r['L']}, {r['chains']} chains, {r['devices']} devices "
            f"{r['sharding']}: evolve bitwise {r['evolve_bitwise']}, sample fields bitwise "
            f"{r['sample_fields_bitwise']}, observables bitwise "
            f"{sum(obs.values())}/{len(obs)} ({', '.join(k for k, v in obs.items() if not v)}"
            f" differ), collectives {r['collectives']}, site-updates/s "
            f"{r['site_updates_per_s_one_device']:.3g} (1 device) vs "
            f"{r['site_updates_per_s_sharded']:.3g} (sharded)"
        )


if __name__ == "__main__":
    main()
