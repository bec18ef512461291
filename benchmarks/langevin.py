"""Euler–Langevin site-updates per second (sites × chains × steps / s), float32.

Cases (the core issue): 2D L = 64 with 64 chains, and 2D L = 16 with 1024 chains. Each case
also measures float64 (single- and full-precision noise), RK2, the step without noise (the
force alone) and HMC's force evaluations per second (trajectories of 10 leapfrog steps; these
two alternated three times, medians, and their ratio), and
runs two NumPy implementations of the same float32 step in the same process and prints
the ratios:

* ``numpy``: the plain loop a user writes first — np.roll stencil, force evaluated each step,
  ``rng.normal`` (float64, cast to float32);
* ``numpy_tuned``: the best NumPy we found — force carried between steps, in-place update,
  ``rng.standard_normal(dtype=float32)`` (the ziggurat).

    python benchmarks/langevin.py [--steps N] [--variants] [--json]

``--variants`` also times the alternatives that were measured when choosing the noise
generator (documented in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from common import best_of, machine

from lattice.config.sampler import Hmc, Langevin
from lattice.numerics.phi4 import Phi4
from lattice.samplers.base import BatchedStep, Sampler, chain_first, chain_last, exact_step_info
from lattice.samplers.chains import chain_keys, evolve, init_states, initial_field, sample
from lattice.samplers.langevin import LangevinState
from lattice.samplers.langevin import traits as langevin_traits

CASES = [(64, 64), (16, 1024)]
EPS = 0.01


def lattice_rate(L, chains, steps, prng="threefry", sampler=None, dtype=jnp.float32):
    """Sampler steps × sites × chains per second (for HMC: trajectories × sites × chains)."""
    th = Phi4.kappa_form([L, L], 0.27, 0.022)
    s = sampler(th) if sampler else Langevin(step_size=EPS).build(th)
    keys = chain_keys(0, chains, prng)
    st = init_states(s, initial_field(keys, th, "hot", dtype))

    def go():
        out, _ = evolve(s, keys, st, 0, steps)
        out.phi.block_until_ready()

    return L * L * chains * steps / best_of(go)


def sample_rate(L, chains, measure_every, n_meas, sampler=None):
    """Site-updates/s of ``sample`` with its measurements (float32 Euler by default)."""
    th = Phi4.kappa_form([L, L], 0.27, 0.022)
    s = sampler(th) if sampler else Langevin(step_size=EPS).build(th)
    keys = chain_keys(0, chains)
    st = init_states(s, initial_field(keys, th, "hot", jnp.float32))

    def go():
        out = sample(s, th, keys, st, 0, n_meas, measure_every)
        out[0].phi.block_until_ready()

    return L * L * chains * measure_every * n_meas / best_of(go)


def unfused_sampler(th):
    """The same Euler step with jax.random.normal (Threefry bits, then erfinv)."""
    sq = math.sqrt(2 * EPS)

    def step(key, state):
        phi, f = state
        new = phi + EPS * f + sq * jax.random.normal(key, phi.shape, phi.dtype)
        return LangevinState(new, th.force(new)), exact_step_info(phi.dtype)

    return Sampler(
        init=lambda phi: LangevinState(phi, th.force(phi)),
        step=step,
        name="unfused",
        traits=langevin_traits("euler"),
        identity=("unfused", EPS, th),
    )


def force_only_sampler(th):
    """The Euler step without noise: the force stencil and the update alone, in the layout
    the Langevin step uses (chain axis last for float32, :class:`BatchedStep`)."""

    def step(key, state):
        phi, f = state
        new = phi + EPS * f
        return LangevinState(new, th.force(new)), exact_step_info(phi.dtype)

    def batched_step(t, keys, c):
        new = c.phi + EPS * c.force
        return LangevinState(new, th.force(new, True)), exact_step_info(new.dtype)

    batched = BatchedStep(
        lambda st: LangevinState(chain_last(st.phi), chain_last(st.force)),
        batched_step,
        lambda c: LangevinState(chain_first(c.phi), chain_first(c.force)),
        ("float32",),
    )
    init = lambda phi: LangevinState(phi, th.force(phi))  # noqa: E731
    return Sampler(
        init=init,
        step=step,
        name="force",
        traits=langevin_traits("euler"),
        identity=("force", EPS, th),
        batched=batched,
    )


def chains_first(make):
    """The sampler of ``make`` with its loops as vmap(step) (chain axis first)."""
    return lambda th: make(th).replace(batched=None)


def extra_rows(L, chains, steps):
    """float64, RK2, the force alone, and HMC's force evaluations per second."""

    row = {
        "float64": lattice_rate(L, chains, steps // 2, dtype=jnp.float64),
        "float64_full_noise": lattice_rate(
            L,
            chains,
            steps // 4,
            sampler=lambda th: Langevin(step_size=EPS, noise_precision="full").build(th),
            dtype=jnp.float64,
        ),
        "rk2": lattice_rate(
            L,
            chains,
            steps // 2,
            sampler=lambda th: Langevin(step_size=EPS, scheme="rk2").build(th),
        ),
    }
    traj = max(steps // 20, 4)

    def hmc_rate(dt):
        return 10 * lattice_rate(
            L,
            chains,
            traj,
            sampler=lambda th: Hmc(trajectory_length=1.0, steps=10).build(th),
            dtype=dt,
        )

    # the ratio of the issue: force alone and HMC alternated three times, medians (either
    # rate alone varies ~10% between measurements, docs/PERFORMANCE.md)
    pairs = [
        (lattice_rate(L, chains, steps, sampler=force_only_sampler), hmc_rate(jnp.float32))
        for _ in range(3)
    ]
    row["force_alone"] = float(np.median([f for f, _ in pairs]))
    row["hmc_forces"] = float(np.median([h for _, h in pairs]))
    row["hmc_forces_float64"] = hmc_rate(jnp.float64)
    row["hmc_over_force"] = row["force_alone"] / row["hmc_forces"]
    return row


def numpy_plain_rate(L, chains, steps):
    rng = np.random.default_rng(0)
    phi0 = rng.standard_normal((chains, L, L)).astype(np.float32)
    h, a, g = 2 * 0.27, 1 - 2 * 0.022, 0.022

    def go():
        phi = phi0
        for _ in range(steps):
            nb = np.roll(phi, 1, 1) + np.roll(phi, -1, 1) + np.roll(phi, 1, 2) + np.roll(phi, -1, 2)
            grad = -h * nb + 2 * a * phi + 4 * g * phi**3
            noise = rng.normal(size=phi.shape).astype(np.float32)
            phi = (phi - EPS * grad + math.sqrt(2 * EPS) * noise).astype(np.float32)

    return L * L * chains * steps / best_of(go, repeat=2)


def numpy_rate(L, chains, steps):
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((chains, L, L), dtype=np.float32)
    h, a, g = 2 * 0.27, 1 - 2 * 0.022, 0.022

    def force(p):
        nb = np.roll(p, 1, 1) + np.roll(p, -1, 1) + np.roll(p, 1, 2) + np.roll(p, -1, 2)
        return np.float32(h) * nb - p * (np.float32(2 * a) + np.float32(4 * g) * p * p)

    sq = np.float32(math.sqrt(2 * EPS))

    def go():
        p, f = phi.copy(), force(phi)
        for _ in range(steps):
            p += np.float32(EPS) * f + sq * rng.standard_normal(p.shape, dtype=np.float32)
            f = force(p)

    return L * L * chains * steps / best_of(go, repeat=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)  # as in `lattice run`; float32 stays float32
    results = {"machine": machine(), "cases": []}
    if not args.json:
        print(results["machine"])
    for L, chains in CASES:
        row = {
            "L": L,
            "chains": chains,
            "lattice": lattice_rate(L, chains, args.steps),
            "numpy": numpy_plain_rate(L, chains, max(args.steps // 16, 10)),
            "numpy_tuned": numpy_rate(L, chains, max(args.steps // 8, 20)),
        }
        row.update(extra_rows(L, chains, args.steps))
        row["ratio"] = row["lattice"] / row["numpy"]
        row["ratio_tuned"] = row["lattice"] / row["numpy_tuned"]
        if args.variants:
            row["jax_random_threefry"] = lattice_rate(
                L, chains, args.steps, sampler=unfused_sampler
            )
            for impl in ("rbg", "unsafe_rbg"):
                row[f"jax_random_{impl}"] = lattice_rate(L, chains, args.steps // 4, impl)
            # the chain-first loops (vmap of the per-chain step) the float32 runs replaced
            row["vmap_euler"] = lattice_rate(
                L,
                chains,
                args.steps,
                sampler=chains_first(lambda th: Langevin(step_size=EPS).build(th)),
            )
            row["vmap_force_alone"] = lattice_rate(
                L, chains, args.steps, sampler=chains_first(force_only_sampler)
            )
            for every in (1, 10):  # with the measurements, both loop layouts
                n = max(args.steps // (2 * every), 10)
                row[f"sample_every_{every}"] = sample_rate(L, chains, every, n)
                row[f"vmap_sample_every_{every}"] = sample_rate(
                    L, chains, every, n, chains_first(lambda th: Langevin(step_size=EPS).build(th))
                )
            row["vmap_hmc_forces"] = 10 * lattice_rate(
                L,
                chains,
                max(args.steps // 20, 4),
                sampler=chains_first(lambda th: Hmc(trajectory_length=1.0, steps=10).build(th)),
            )
        results["cases"].append(row)
        if not args.json:
            extra = "".join(
                f", {k} {v:.3g}"
                for k, v in row.items()
                if k.startswith(("jax_", "vmap_", "sample_"))
            )
            print(
                f"L={L:3d} chains={chains:5d}: lattice {row['lattice']:.3g} site-updates/s, "
                f"numpy {row['numpy']:.3g} (ratio {row['ratio']:.1f}x), "
                f"tuned numpy {row['numpy_tuned']:.3g} (ratio {row['ratio_tuned']:.1f}x){extra}"
                f"\n    float64 {row['float64']:.3g} (noise_precision = full: "
                f"{row['float64_full_noise']:.3g}), rk2 {row['rk2']:.3g}, force alone "
                f"{row['force_alone']:.3g}; HMC {row['hmc_forces']:.3g} force evals/s float32 "
                f"({row['hmc_over_force']:.2f}x below the force alone), "
                f"{row['hmc_forces_float64']:.3g} float64"
            )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
