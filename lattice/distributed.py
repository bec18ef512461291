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
import uuid
from pathlib import Path

import numpy as np

from .config import RunConfig, parse_config
from .ensemble import Ensemble, EnsembleError, open_ensemble, write_file_atomic
from .jobs import JobError, RunPaths, resume_job, run_job
from .progress import QuietReporter, Reporter

__all__ = [
    "MANIFEST",
    "initialize",
    "shard_config",
    "run_sharded",
    "resume_sharded",
    "open_manifest",
    "is_sharded",
]

MANIFEST = "manifest.json"
FORMAT = "lattice-manifest"


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> tuple[int, int]:
    """``jax.distributed.initialize`` (arguments None: detected from Slurm / Open MPI) and
    return (process index, process count)."""
    import jax

    try:
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    except (RuntimeError, ValueError) as e:
        raise JobError(f"jax.distributed.initialize failed: {str(e).splitlines()[0]}") from None
    return jax.process_index(), jax.process_count()


def shard_name(p: int) -> str:
    return f"shard-{p:04d}"


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


def _manifest(cfg: RunConfig, n: int) -> dict:
    per = cfg.run.chains // n
    return {
        "format": FORMAT,
        "format_version": 1,
        "uuid": str(uuid.uuid4()),
        "config_toml": cfg.to_toml(),
        "processes": n,
        "shards": [
            {
                "path": shard_name(p),
                "first_chain": cfg.run.first_chain + p * per,
                "chains": per,
            }
            for p in range(n)
        ],
    }


def is_sharded(run_dir: str | Path) -> bool:
    return (Path(run_dir) / MANIFEST).exists()


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
        write_file_atomic(RunPaths(d).config, cfg.to_toml())
        write_file_atomic(existing, json.dumps(_manifest(cfg, processes), indent=1) + "\n")
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


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    try:
        man = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EnsembleError(f"{path}: not a readable manifest ({e})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise EnsembleError(f"{path}: not a lattice manifest (no format = '{FORMAT}')")
    return man


def open_manifest(path: str | Path, load_observables: bool = True) -> Ensemble:
    """The shards of a manifest joined along the chain axis, committed up to the least
    committed shard. ``seconds`` is the slowest shard's (the wall time of the run)."""
    path = Path(path)
    man = read_manifest(path)
    parts = []
    for s in man["shards"]:
        e = open_ensemble(path.parent / s["path"] / "ensemble.h5", load_observables)
        if e.chains != s["chains"]:
            raise EnsembleError(f"{e.path}: {e.chains} chains, the manifest says {s['chains']}")
        parts.append(e)
    n = min(e.committed for e in parts)

    def join(arrays):
        return np.concatenate([a[:, :n] for a in arrays])

    obs = {k: join([e.observables[k] for e in parts]) for k in parts[0].observables}
    diag = {k: join([e.diagnostics[k] for e in parts]) for k in parts[0].diagnostics}
    weights = None if parts[0].weights is None else join([e.weights for e in parts])
    cfg = parse_config(man["config_toml"])
    attrs = dict(parts[0].config_attrs)
    attrs.update({"run.chains": cfg.run.chains, "run.first_chain": cfg.run.first_chain})
    return Ensemble(
        path=path,
        config_toml=man["config_toml"],
        config_attrs=attrs,
        observables=obs,
        acceptance=diag["acceptance"],
        diagnostics=diag,
        committed=n,
        samples=parts[0].samples,
        complete=all(e.complete for e in parts),
        chains=sum(e.chains for e in parts),
        saved=min(e.saved for e in parts),
        created=parts[0].created,
        version=parts[0].version,
        seconds=max(e.seconds for e in parts),
        steps=parts[0].steps,
        weights=weights,
        uuid=man.get("uuid"),
        shards=tuple(parts),
    )
