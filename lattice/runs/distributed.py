"""Multi-process runs: one ensemble written as per-process shards plus a manifest.

A run of ``chains`` chains on P processes (``jax.distributed.initialize``: Slurm, Open MPI or
an explicit coordinator) gives process p the chains ``first_chain + p·C/P … + (p+1)·C/P − 1``
with exactly those chains' random streams (keys fold_in(key(seed), c)), so the union of the
shards is bitwise the ensemble one process would write. Layout of the run directory::

    RUN_DIR/config.toml           the whole run's resolved config
    RUN_DIR/manifest.json         {"format": "lattice-manifest", "shards": [...], ...}
    RUN_DIR/shard-0000/           an ordinary run directory (config.toml with the shard's
    RUN_DIR/shard-0001/           chains and first_chain, ensemble.h5, checkpoint.h5, run.log)

Each shard is a complete run of its own: it checkpoints, resumes (``lattice resume RUN_DIR``
on the same processes, or ``lattice resume RUN_DIR/shard-0001`` on any machine) and is never
overwritten. :func:`open_manifest` joins the shards along the chain axis for ``measure``,
``compare`` and ``info``; the joined ensemble is committed up to the least committed shard.
Nothing is communicated between processes while they sample (the chains are independent);
the coordinator only assigns process indices.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax

from lattice.config.run import RunConfig, parse_config
from lattice.io.atomic import write_file_atomic
from lattice.io.manifest import MANIFEST, new_manifest, read_manifest, shard_name
from lattice.runs.directory import JobError
from lattice.runs.progress import QuietReporter, Reporter
from lattice.runs.sampling import resume_job, run_directory, run_job

__all__ = [
    "initialize",
    "shard_config",
    "run_sharded",
    "resume_sharded",
]


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> tuple[int, int]:
    """``jax.distributed.initialize`` (arguments None: detected from Slurm / Open MPI) and
    return (process index, process count)."""

    try:
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    except (RuntimeError, ValueError) as e:
        raise JobError(f"jax.distributed.initialize failed: {str(e).splitlines()[0]}") from None
    return jax.process_index(), jax.process_count()


def shard_config(cfg: RunConfig, p: int, n: int) -> RunConfig:
    """The config of shard ``p`` of ``n``: chains C/n from first_chain + p·C/n."""
    r = cfg.run
    if r.chains % n:
        raise JobError(
            f"run.chains: {r.chains} chains cannot be split over {n} processes "
            f"(allowed: a multiple of {n})"
        )
    per = r.chains // n
    data = cfg.to_dict()
    data["run"] = {**data["run"], "chains": per, "first_chain": r.first_chain + p * per}
    return parse_config(data)


def run_sharded(
    cfg: RunConfig,
    run_dir: str | Path,
    process: int,
    processes: int,
    *,
    force: bool = False,
    reporter: Reporter | None = None,
) -> Path:
    """This process's shard of a multi-process run. Process 0 writes the run's config and
    the manifest; every process refuses an existing shard unless ``force``."""
    d = Path(run_dir)
    scfg = shard_config(cfg, process, processes)
    if process == 0:
        existing = d / MANIFEST
        if existing.exists() and not force:
            raise JobError(
                f"{d}: a sharded run is there; pass --force to overwrite it, or continue it "
                f"with `lattice resume {d}`"
            )
        d.mkdir(parents=True, exist_ok=True)
        write_file_atomic(run_directory(d).config, cfg.to_toml())
        write_file_atomic(existing, json.dumps(new_manifest(cfg, processes), indent=1) + "\n")
    return run_job(scfg, d / shard_name(process), force=force, reporter=reporter)


def resume_sharded(
    run_dir: str | Path, process: int, processes: int, *, reporter: Reporter | None = None
) -> Path:
    """Continue this process's shard of an interrupted multi-process run."""
    d = Path(run_dir)
    man = read_manifest(d / MANIFEST)
    if len(man["shards"]) != processes:
        raise JobError(
            f"{d}: written by {len(man['shards'])} processes, resumed by {processes} "
            "(allowed: the same count; or resume each shard directory on its own)"
        )
    return resume_job(d / man["shards"][process]["path"], reporter=reporter or QuietReporter())
