"""Does writing slow the job? Steps/s of `run_job` against the bare sampler loop.

The Langevin benchmark case (2D L = 64, 64 chains, float32, Euler, measure_every = 10) is run
(a) as the bare jitted loop — the same `sample` blocks back to back, nothing written — and
as full jobs with (b) save_every = 0, (c) save_every = 10 (the default) and (d) every
measured configuration saved (1 MB per measurement, ~140 MB/s at this speed). Everything
runs once to compile; then ``--repeat`` rounds each time all four variants in turn
(interleaved, so that drifts of a shared machine hit them alike) and the best time of each
variant counts.

    python benchmarks/jobs.py [--samples N] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from common import machine  # noqa: E402

from lattice.config.run import build_theory, parse_config  # noqa: E402
from lattice.runs.assemble import build_sampler  # noqa: E402
from lattice.runs.sampling import run_job  # noqa: E402
from lattice.samplers.chains import chain_keys, init_states, initial_field, sample  # noqa: E402

CONFIG = """
name = "bench"
[lattice]
shape = [64, 64]
[action]
kappa = 0.27
lambda = 0.022
[sampler]
kind = "langevin"
step_size = 0.01
[run]
chains = 64
thermalization = 0
samples = {samples}
measure_every = 10
save_every = {save_every}
checkpoint_every = 100
dtype = "float32"
"""


def bare(cfg):
    """A function timing the bare loop once (compiled on the first call)."""
    th, r = build_theory(cfg), cfg.run
    s = build_sampler(cfg, th)
    keys = chain_keys(r.seed, r.chains)
    st0 = init_states(s, initial_field(keys, th, "hot", jax.numpy.float32))

    def go() -> float:
        t = time.perf_counter()
        st = st0
        for b in range(r.samples // r.checkpoint_every):
            st, obs, acc, _ = sample(s, th, keys, st, b * 1000, r.checkpoint_every, 10, 0)
        jax.block_until_ready((st, obs, acc))
        return time.perf_counter() - t

    go()
    return go


def job(cfg, tmp: Path):
    """A function timing one full job (compiled on the first call)."""

    def go() -> float:
        t = time.perf_counter()
        run_job(cfg, tmp / "timed", force=True)
        return time.perf_counter() - t

    go()
    return go


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = {"machine": machine()}
    with tempfile.TemporaryDirectory() as d:
        cfgs = {
            e: parse_config(CONFIG.format(samples=args.samples, save_every=e)) for e in (0, 10, 1)
        }
        timers = {"bare_steps_per_s": bare(cfgs[0])}
        for e, cfg in cfgs.items():
            timers[f"job_save{e}_steps_per_s"] = job(cfg, Path(d))
        best = {k: float("inf") for k in timers}
        for _ in range(args.repeat):
            for k, go in timers.items():
                best[k] = min(best[k], go())
        steps = args.samples * 10
        res.update({k: steps / v for k, v in best.items()})
    sites = 64 * 64 * 64
    if args.json:
        print(json.dumps(res))
        return
    print(res["machine"])
    for k in (
        "bare_steps_per_s",
        "job_save0_steps_per_s",
        "job_save10_steps_per_s",
        "job_save1_steps_per_s",
    ):
        v = res[k]
        print(
            f"{k:24s} {v:8.1f} steps/s  {v * sites:.3g} site-updates/s  "
            f"{v / res['bare_steps_per_s']:.3f} of bare"
        )


if __name__ == "__main__":
    main()
