"""Ratios that hold on any machine: lattice against its peers, timed in the same run.

`make bench` runs this. Every comparison is timed alternately, so a machine whose speed drifts
(docs/PERFORMANCE.md: about one process in five runs some loops 1.6–3× slower) slows both
sides of a pair, and the ratio of medians is what is reported.

1. **In the loop** (one process, float32 φ⁴ at κ = 0.27, λ = 0.022, 64² × 64 chains,
   `jax_enable_x64` on as in `lattice run`), ``--rounds`` alternated rounds, best of 3 in each:
   - Euler–Langevin steps: lattice's loop (`evolve`) against the plain-JAX peer
     (`benchmarks/peer.py`) and the plain NumPy loop, site-updates/s;
   - the same with the run's measurements every 10 steps: lattice's `sample` (every
     observable of `lattice run`) against the peer measuring m and φ² only;
   - HMC, trajectories of 10 leapfrog steps: force evaluations/s, lattice against the peer.
2. **Whole process** (``--pairs`` alternated triples, medians): `lattice run` of the job below
   with a cold compilation cache (an empty directory) and with a warm one (filled by an
   untimed run of the same job), against `python benchmarks/peer.py job`; wall time of each
   process from exec to exit, the start-up split from run.log (seconds to the first step, its
   compilations and how many came from the cache, the loop's compilation), and lattice's
   in-loop rate from its run.log against the in-process `sample` rate of (1).
   The job: 64² × 64 chains, 20000 Euler steps, float32, measured every 10 steps, no
   configurations saved.

    python benchmarks/ratios.py [--rounds 3] [--pairs 3] [--no-process] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import peer
from common import best_of, machine
from jobs import CONFIG
from langevin import lattice_rate, numpy_plain_rate, sample_rate

from lattice.config.sampler import Hmc

L, CHAINS = 64, 64
HERE = Path(__file__).resolve().parent

JOB = CONFIG.format(samples=2000, save_every=0)  # the job of benchmarks/jobs.py
JOB_STEPS = 20000


def peer_rate(steps: int) -> float:
    keys, phi = peer.start(L, CHAINS)
    return (
        L
        * L
        * CHAINS
        * steps
        / best_of(lambda: peer.langevin_bare(keys, phi, steps).block_until_ready())
    )


def peer_sample_rate(every: int, n_meas: int) -> float:
    keys, phi = peer.start(L, CHAINS)
    return (
        L
        * L
        * CHAINS
        * every
        * n_meas
        / best_of(lambda: peer.langevin(keys, phi, n_meas, every)[0].block_until_ready())
    )


def peer_hmc_rate(traj: int) -> float:
    keys, phi = peer.start(L, CHAINS)
    return (
        10
        * L
        * L
        * CHAINS
        * traj
        / best_of(lambda: peer.hmc(keys, phi, traj)[0].block_until_ready())
    )


def lattice_hmc_rate(traj: int) -> float:
    return 10 * lattice_rate(
        L, CHAINS, traj, sampler=lambda th: Hmc(trajectory_length=1.0, steps=10).build(th)
    )


def in_loop(rounds: int, steps: int) -> dict[str, list[float]]:
    """``rounds`` alternated rounds of every loop; lists of rates."""
    traj = max(steps // 20, 4)
    cases = {
        "lattice_euler": lambda: lattice_rate(L, CHAINS, steps),
        "peer_euler": lambda: peer_rate(steps),
        "numpy_euler": lambda: numpy_plain_rate(L, CHAINS, max(steps // 16, 10)),
        "lattice_sample_every_10": lambda: sample_rate(L, CHAINS, 10, steps // 10),
        "peer_sample_every_10": lambda: peer_sample_rate(10, steps // 10),
        "lattice_hmc_forces": lambda: lattice_hmc_rate(traj),
        "peer_hmc_forces": lambda: peer_hmc_rate(traj),
    }
    out: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for k, fn in cases.items():
            out[k].append(fn())
    return out


def _timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(
        cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    return time.perf_counter() - t


_SAMPLED = re.compile(r"sampled (\d+) steps in ([\d.]+) s .*compilation \(([\d.]+) s\)")
_COUNT = r"(\d+) compilations? in ([\d.]+) s"
_STARTUP = re.compile(r"start-up: ([\d.]+) s .*; " + _COUNT + r"(?:, (\d+) from)?")
_LOOP_COMPILE = re.compile(r"compiled the sampling loop in ([\d.]+) s \(" + _COUNT)
KINDS = ("cold", "warm")


def _cache_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "LATTICE_CACHE"))}
    return {**env, "LATTICE_CACHE_DIR": str(cache)}


def whole_process(pairs: int) -> dict[str, list[float]]:
    """``pairs`` alternated (cold `lattice run`, warm `lattice run`, peer job) triples: wall
    seconds of each process, and each run's start-up, compilation counts, loop compilation and
    in-loop seconds from its run.log. Cold: an empty compilation cache (lattice.app.cache);
    warm: the cache a run of the same job filled before the timed triples."""
    keys = ["peer_s"] + [
        f"{kind}_{k}"
        for kind in KINDS
        for k in ("s", "startup_s", "startup_programs", "startup_hits", "compile_s",
                  "loop_compile_s", "loop_s")
    ]  # fmt: skip
    out: dict[str, list[float]] = {k: [] for k in keys}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "job.toml"
        cfg.write_text(JOB)
        warm = Path(tmp) / "warm-cache"
        fill = [sys.executable, "-m", "lattice", "run", str(cfg), "-o", str(Path(tmp) / "fill")]
        _timed([*fill, "-q"], HERE, _cache_env(warm))  # fills the warm cache, untimed
        for i in range(pairs):
            for kind in KINDS:
                run_dir = Path(tmp) / f"{kind}{i}"
                cache = warm if kind == "warm" else Path(tmp) / f"cold-cache{i}"
                lat = [sys.executable, "-m", "lattice", "run", str(cfg), "-o", str(run_dir), "-q"]
                out[f"{kind}_s"].append(_timed(lat, HERE, _cache_env(cache)))
                log = (run_dir / "run.log").read_text()
                m, s, c = _SAMPLED.search(log), _STARTUP.search(log), _LOOP_COMPILE.search(log)
                if m is None or int(m.group(1)) != JOB_STEPS or s is None or c is None:
                    raise SystemExit(f"{run_dir}/run.log: no timing lines")
                out[f"{kind}_loop_s"].append(float(m.group(2)))
                out[f"{kind}_compile_s"].append(float(m.group(3)))
                out[f"{kind}_startup_s"].append(float(s.group(1)))
                out[f"{kind}_startup_programs"].append(float(s.group(2)))
                out[f"{kind}_startup_hits"].append(float(s.group(4) or 0))
                out[f"{kind}_loop_compile_s"].append(float(c.group(3)))
            out["peer_s"].append(_timed([sys.executable, str(HERE / "peer.py"), "job"], HERE))
    return out


def _med(v: list[float]) -> float:
    return float(np.median(v))


def _spread(v: list[float]) -> str:
    return f"{min(v):.3g}–{max(v):.3g}" if len(v) > 1 else f"{v[0]:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--no-process", action="store_true", help="skip the whole-process pairs")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    jax.config.update("jax_enable_x64", True)  # as in `lattice run`; float32 stays float32
    assert jnp.zeros(1, jnp.float32).dtype == jnp.float32
    res: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    if not a.json:
        print(res["machine"], res["date"], flush=True)
    loop = in_loop(a.rounds, a.steps)
    res["in_loop"] = loop
    med = {k: _med(v) for k, v in loop.items()}
    ratios = {
        "euler_vs_peer": med["lattice_euler"] / med["peer_euler"],
        "euler_vs_numpy": med["lattice_euler"] / med["numpy_euler"],
        "sample_vs_peer": med["lattice_sample_every_10"] / med["peer_sample_every_10"],
        "hmc_vs_peer": med["lattice_hmc_forces"] / med["peer_hmc_forces"],
    }
    if not a.json:
        print(f"in the loop, {L}^2 x {CHAINS} float32, medians of {a.rounds} rounds (spread):")
        for k, v in loop.items():
            unit = "force evals/s" if "hmc" in k else "site-updates/s"
            print(f"  {k:26s} {med[k]:.3g} {unit} ({_spread(v)})")
        print(
            f"  ratios: Euler {ratios['euler_vs_peer']:.2f}x the peer, "
            f"{ratios['euler_vs_numpy']:.0f}x NumPy; with measurements "
            f"{ratios['sample_vs_peer']:.2f}x the peer; HMC {ratios['hmc_vs_peer']:.2f}x the peer",
            flush=True,
        )
    if not a.no_process:
        proc = whole_process(a.pairs)
        res["whole_process"] = proc
        pm = {k: _med(v) for k, v in proc.items()}
        sites = L * L * CHAINS * JOB_STEPS
        run_loop_rate = sites / pm["warm_loop_s"]
        for kind in KINDS:
            ratios[f"process_vs_peer_{kind}"] = pm["peer_s"] / pm[f"{kind}_s"]
        ratios["process_vs_peer"] = ratios["process_vs_peer_warm"]
        ratios["run_loop_vs_sample"] = run_loop_rate / med["lattice_sample_every_10"]
        if not a.json:
            print(f"whole process, {JOB_STEPS} steps, medians of {a.pairs} alternated triples:")
            for kind in KINDS:
                print(
                    f"  lattice run, {kind} cache: {pm[f'{kind}_s']:.2f} s "
                    f"({_spread(proc[f'{kind}_s'])}): start-up {pm[f'{kind}_startup_s']:.2f} s "
                    f"({pm[f'{kind}_startup_programs']:.0f} compilations, "
                    f"{pm[f'{kind}_startup_hits']:.0f} from the cache), loop compilation "
                    f"{pm[f'{kind}_compile_s']:.2f} s (XLA {pm[f'{kind}_loop_compile_s']:.2f} s), "
                    f"loop {pm[f'{kind}_loop_s']:.2f} s = "
                    f"{sites / pm[f'{kind}_loop_s']:.3g} site-updates/s"
                )
            print(f"  peer job    {pm['peer_s']:.2f} s ({_spread(proc['peer_s'])})")
            print(
                f"  ratios: lattice run {ratios['process_vs_peer_cold']:.2f}x (cold) and "
                f"{ratios['process_vs_peer_warm']:.2f}x (warm) the peer, whole process; its loop "
                f"{ratios['run_loop_vs_sample']:.2f}x the bare `sample` loop"
            )
    res["ratios"] = ratios
    if a.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
