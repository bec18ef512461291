"""The plain-JAX peer: the Langevin and HMC loops a JAX user writes by hand.

What a competent user writes first with `jax.jit`, `jax.vmap` and `lax.scan` and nothing of
`lattice`: the φ⁴ force of the κ-form action

    S = Σ_x [−2κ Σ_μ φ_x φ_{x+μ} + (1 − 2λ) φ_x² + λ φ_x⁴],
    −∂S/∂φ_x = 2κ Σ_{±μ} φ_{x±μ} − 2(1 − 2λ) φ_x − 4λ φ_x³,

as four `jnp.roll`s; Euler–Langevin φ ← φ + ε F(φ) + √(2ε) η with η from
`jax.random.normal` under per-chain keys folded with the step; m and φ² measured every
``every`` steps inside the scan; HMC with leapfrog (half step in p, then ``n_leap`` full steps
in φ and p, the last one closed with a half step), Gaussian momenta and a Metropolis test.
Nothing here is tuned; that is the point of a peer.

    python benchmarks/peer.py job [--L 64 --chains 64 --steps 20000 --every 10]

runs the whole-process job of docs/PERFORMANCE.md (float32, measurements every ``every``
steps, nothing saved) and prints one JSON line with its seconds and ⟨φ²⟩;
`benchmarks/ratios.py` times it against `lattice run`, and imports the loops below to time
them against lattice's in one process. The whole-process job leaves JAX's default (no x64),
as the user's script would.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

KAPPA, LAMBDA, EPS = 0.27, 0.022, 0.01


def force(phi, kappa=KAPPA, lam=LAMBDA):
    """−∂S/∂φ of one field (any dimension), with rolls."""
    nb = sum(jnp.roll(phi, s, a) for a in range(phi.ndim) for s in (1, -1))
    return 2 * kappa * nb - 2 * (1 - 2 * lam) * phi - 4 * lam * phi**3


def action(phi, kappa=KAPPA, lam=LAMBDA):
    hop = sum(phi * jnp.roll(phi, -1, a) for a in range(phi.ndim))
    return jnp.sum(-2 * kappa * hop + (1 - 2 * lam) * phi**2 + lam * phi**4)


def langevin_chain(key, phi, n_meas, every, eps=EPS):
    """``n_meas`` measurements of one chain, ``every`` Euler steps apart: (φ, m, φ²)."""
    sq = jnp.sqrt(2 * eps).astype(phi.dtype)

    def step(phi, t):
        eta = jax.random.normal(jax.random.fold_in(key, t), phi.shape, phi.dtype)
        return phi + eps * force(phi) + sq * eta, None

    def measure(phi, j):
        phi, _ = lax.scan(step, phi, j * every + jnp.arange(every))
        return phi, (jnp.mean(phi), jnp.mean(phi * phi))

    phi, (m, phi2) = lax.scan(measure, phi, jnp.arange(n_meas))
    return phi, m, phi2


@partial(jax.jit, static_argnames=("n_meas", "every"))
def langevin(keys, phi, n_meas, every):
    """All chains (axis 0), vmapped."""
    return jax.vmap(langevin_chain, (0, 0, None, None))(keys, phi, n_meas, every)


@partial(jax.jit, static_argnames=("steps",))
def langevin_bare(keys, phi, steps):
    """``steps`` Euler steps of all chains, no measurements."""
    phi, _, _ = jax.vmap(langevin_chain, (0, 0, None, None))(keys, phi, 1, steps)
    return phi


def hmc_chain(key, phi, n_traj, tau=1.0, n_leap=10):
    """``n_traj`` HMC trajectories of one chain; returns (φ, acceptance per trajectory)."""
    dt = tau / n_leap

    def leapfrog(phi, p):
        p = p + 0.5 * dt * force(phi)

        def inner(c, _):
            phi, p = c
            phi = phi + dt * p
            return (phi, p + dt * force(phi)), None

        (phi, p), _ = lax.scan(inner, (phi, p), None, length=n_leap - 1)
        phi = phi + dt * p
        return phi, p + 0.5 * dt * force(phi)

    def trajectory(phi, t):
        kp, ku = jax.random.split(jax.random.fold_in(key, t))
        p = jax.random.normal(kp, phi.shape, phi.dtype)
        new, q = leapfrog(phi, p)
        dh = action(new) + 0.5 * jnp.sum(q * q) - action(phi) - 0.5 * jnp.sum(p * p)
        accept = jax.random.uniform(ku) < jnp.exp(-dh)
        return jnp.where(accept, new, phi), accept.astype(phi.dtype)

    return lax.scan(trajectory, phi, jnp.arange(n_traj))


@partial(jax.jit, static_argnames=("n_traj",))
def hmc(keys, phi, n_traj):
    return jax.vmap(hmc_chain, (0, 0, None))(keys, phi, n_traj)


def start(L, chains, seed=0, dtype=jnp.float32):
    """Per-chain keys and a hot start."""
    keys = jax.random.split(jax.random.PRNGKey(seed), chains)
    phi = jax.random.normal(jax.random.PRNGKey(seed + 1), (chains, L, L), dtype)
    return keys, phi


def job(L, chains, steps, every) -> dict:
    """The whole-process job: ``steps`` Euler steps, m and φ² every ``every``."""
    keys, phi = start(L, chains)
    phi, m, phi2 = langevin(keys, phi, steps // every, every)
    phi2 = float(jnp.mean(phi2))
    return {"phi2": phi2, "finite": math.isfinite(phi2)}


def main() -> None:
    t0 = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["job"])
    ap.add_argument("--L", type=int, default=64)
    ap.add_argument("--chains", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--every", type=int, default=10)
    a = ap.parse_args()
    out = job(a.L, a.chains, a.steps, a.every)
    out["seconds_in_process"] = time.perf_counter() - t0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
