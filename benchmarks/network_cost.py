"""Seconds per score evaluation and per training step of the score networks of the issue-24
sweep, on a quiet machine (docs/PERFORMANCE.md, "The cheapest network that keeps the
acceptance").

The cost of an evaluation depends on the architecture and the lattice, not on the weights, so
untrained networks are timed: 8 chains of a spectral-kernel reverse path (the sampler's own
``sample_spectral_path`` under ``vmap``, K = 16 steps, float64 fields, float32 trunk) per
evaluation, and one optimizer step of ``lattice.score.train.Trainer`` (batch 64) per training
step. Best of 5 after compilation.

    python benchmarks/network_cost.py --nets 16:24x4 16:16x2 16:8x2 16:16x4 16:32x2 16:16x4l \
        32:16x2 32:16x4 32:8x2 8:24x3 8:16x2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from common import best_of  # noqa: E402

from lattice.config.train import parse_train_config  # noqa: E402
from lattice.numerics.phi4 import Phi4  # noqa: E402
from lattice.score import path, spectral  # noqa: E402
from lattice.score.factory import build_network  # noqa: E402
from lattice.score.gaussian import exact_gaussian_model  # noqa: E402
from lattice.score.network import NetworkSpec  # noqa: E402
from lattice.score.sde import VESDE  # noqa: E402
from lattice.score.train import Trainer, TrainingData  # noqa: E402

KAPPA, LAMBDA, K, CHAINS = 0.2709, 0.022, 16, 8


def cost(L: int, channels: int, blocks: int, local: bool) -> dict:
    theory = Phi4.kappa_form([L, L], KAPPA, LAMBDA)
    spec = NetworkSpec(channels=channels, blocks=blocks, global_channel=not local)
    net = build_network(spec, theory, 1.0, seed=0)
    sde = VESDE(0.01, 3.0 * L)
    free = Phi4.kappa_form([L, L], 0.2, 0.0)
    table = spectral.stored_spectral_table(exact_gaussian_model(free, sde))  # any valid table
    lv = path.noise_levels(sde, K)
    var = path.kernel_variances(lv, "spectral", table=table)
    prior = table.power + lv[-1] ** 2

    def one(k):
        z = jax.random.normal(k, theory.shape, jnp.float64)
        r = path.sample_spectral_path(
            lambda y, s: net.batch(y[None], s)[0], lv, var, prior, jax.random.fold_in(k, 1), z
        )
        return r.y, r.log_ratio

    f = jax.jit(jax.vmap(one))
    keys = jax.random.split(jax.random.key(0), CHAINS)
    per_eval = best_of(lambda: jax.block_until_ready(f(keys)), 5) / (K * CHAINS)

    x = np.random.default_rng(0).normal(size=(256, L, L)).astype(np.float32)
    data = TrainingData(x, x[:16], theory, 1.0, Path("-"), None, 1, 0)
    cfg = parse_train_config(
        f'[train]\nensemble = "-"\n[network]\nchannels = {channels}\nblocks = {blocks}\n'
        + ("global_channel = false\n" if local else "")
    )
    tr = Trainer(cfg, data, sde)
    state = tr.init_state
    train_data = tr.train_data

    def step():
        nonlocal state
        state, o = tr.step(state, train_data)
        jax.block_until_ready(o)

    per_step = best_of(step, 5)
    return {"s_per_eval": per_eval, "s_per_train_step": per_step}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", nargs="+", required=True, help="L:CxB, CxBl for a local network")
    ap.add_argument("--out", default="runs/network_cost.json")
    args = ap.parse_args()
    results = {}
    for item in args.nets:
        L, arch = item.split(":")
        local = arch.endswith("l")
        c, b = arch.rstrip("l").split("x")
        r = cost(int(L), int(c), int(b), local)
        results[item] = r
        print(f"{item:>10}: {r['s_per_eval'] * 1e3:.3f} ms per evaluation (per chain), "
              f"{r['s_per_train_step']:.3f} s per training step")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
