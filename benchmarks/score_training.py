"""Score-model training: wall time, loss and the σ_min cosine diagnostic, plain against
physics-informed on the same data, steps and seed (issue 6's acceptance measurements).

    python benchmarks/score_training.py runs/score_8x8.toml [--set key=value ...]
        [--variants physics plain] [--out DIR] [--json]

Each variant trains a fresh model into ``DIR/<variant>`` (default ``/tmp/score_bench``) with
``network.physics`` set accordingly and everything else from the config. Run nothing else on
the machine meanwhile: the wall time is the point.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import machine

from lattice.config.train import load_train_config
from lattice.runs.training import train_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", type=Path)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--variants", nargs="+", default=["physics", "plain"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/score_bench"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for v in args.variants:
        flag = "true" if v == "physics" else "false"
        cfg = load_train_config(args.config, [*args.overrides, f"network.physics={flag}"])
        t0 = time.perf_counter()
        d = train_model(cfg, args.out / v, force=True, config_dir=args.config.parent)
        wall = time.perf_counter() - t0
        meta = json.loads((d / "model.json").read_text())
        tr, cs = meta["training"], meta["diagnostics"]["cosine_similarity"]
        grid = meta["diagnostics"]["val_loss_sigma"]
        rows.append(
            {
                "variant": v,
                "shape": meta["theory"]["shape"],
                "parameters": meta["parameters"],
                "steps": tr["steps"],
                "batch_size": tr["batch_size"],
                "train_seconds": tr["seconds"],
                "wall_seconds": round(wall, 1),
                "train_loss": tr["train_loss"],
                "val_loss": tr["val_loss"],
                "val_loss_sigma_min": grid[0]["loss"],
                "val_loss_sigma_max": grid[-1]["loss"],
                "cos_mean": cs["mean"],
                "cos_min": cs["min"],
                "sigma_min": cs["sigma"],
            }
        )
        if not args.json:
            r = rows[-1]
            print(
                f"{v:8s} {r['shape']} {r['parameters']:,} params, {r['steps']} steps x "
                f"{r['batch_size']}: {r['train_seconds']:.0f} s training ({r['wall_seconds']:.0f}"
                f" s wall), val loss {r['val_loss']:.4f}, cos {r['cos_mean']:.4f} "
                f"(min {r['cos_min']:.4f})",
                flush=True,
            )
    paired = _paired(args) if len(args.variants) == 2 else None
    if args.json:
        out = {"machine": machine(), "config": str(args.config), "rows": rows, "paired": paired}
        print(json.dumps(out))
    else:
        if paired:
            print(
                f"paired validation loss {paired['a']} - {paired['b']}: "
                f"{paired['mean']:+.5f} ± {paired['error']:.5f} ({paired['n']} samples); "
                f"at sigma <= {paired['small_sigma']:.3g}: {paired['small_mean']:+.5f} ± "
                f"{paired['small_error']:.5f}"
            )
        print(machine())


def _paired(args) -> dict:
    """Loss difference of the two trained models with common random numbers: the held-out
    configurations of the config's ensemble, σ log-uniform over the SDE's range and the same
    noise for both (8 draws per configuration)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lattice.io.model import load_model
    from lattice.runs.training import load_training_data
    from lattice.score.train import dsm_loss

    a, b = (load_model(args.out / v) for v in args.variants)
    cfg = load_train_config(args.config, args.overrides)
    val = np.repeat(load_training_data(cfg, args.config.parent).validation, 8, axis=0)
    n = len(val)
    k1, k2 = jax.random.split(jax.random.key(1234))
    lo, hi = np.log(a.sde.sigma_min), np.log(a.sde.sigma_max)
    sigma = jnp.exp(jax.random.uniform(k1, (n,), jnp.float32, lo, hi))
    z = jax.random.normal(k2, val.shape, jnp.float32)
    f = eqx.filter_jit(lambda m, p, s, zz: dsm_loss(m.batch, p, s, zz))

    def losses(model):
        return np.concatenate(
            [
                np.asarray(f(model.net, val[i : i + 512], sigma[i : i + 512], z[i : i + 512]))
                for i in range(0, n, 512)
            ]
        )

    d = (losses(a) - losses(b)).reshape(-1, 8)
    small = (np.asarray(sigma) <= np.exp(lo + 0.25 * (hi - lo))).reshape(-1, 8)

    def se(x, w):
        """Mean and its error over configurations (each configuration's draws averaged first;
        held-out configurations of one chain are treated as independent)."""
        keep = w.sum(1) > 0
        per = (x * w).sum(1)[keep] / w.sum(1)[keep]
        return float(np.average(per, weights=w.sum(1)[keep])), float(
            per.std(ddof=1) / np.sqrt(len(per))
        )

    m_all, e_all = se(d, np.ones_like(d))
    m_small, e_small = se(d, small.astype(float))
    return {
        "a": args.variants[0],
        "b": args.variants[1],
        "n": n,
        "mean": m_all,
        "error": e_all,
        "small_sigma": float(np.exp(lo + 0.25 * (hi - lo))),
        "small_mean": m_small,
        "small_error": e_small,
    }


if __name__ == "__main__":
    main()
