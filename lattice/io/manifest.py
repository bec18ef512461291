"""The manifest of a multi-process run: one ensemble written as per-process shards.

Layout of the run directory (see :mod:`lattice.runs.distributed` for how it is written)::

    RUN_DIR/config.toml           the whole run's resolved config
    RUN_DIR/manifest.json         {"format": "lattice-manifest", "shards": [...], ...}
    RUN_DIR/shard-0000/           an ordinary run directory (config.toml with the shard's
    RUN_DIR/shard-0001/           chains and first_chain, ensemble.h5, checkpoint.h5, run.log)

:func:`open_manifest` joins the shards along the chain axis for ``measure``, ``compare`` and
``info``; the joined ensemble is committed up to the least committed shard.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np

from lattice.io.ensemble import Ensemble, EnsembleError, open_ensemble_file

__all__ = [
    "MANIFEST",
    "FORMAT",
    "shard_name",
    "new_manifest",
    "is_sharded",
    "read_manifest",
    "open_manifest",
]

MANIFEST = "manifest.json"
FORMAT = "lattice-manifest"


def shard_name(p: int) -> str:
    return f"shard-{p:04d}"


def new_manifest(cfg, n: int) -> dict:
    """The manifest of a run of ``cfg`` split over ``n`` processes."""
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
        e = open_ensemble_file(path.parent / s["path"] / "ensemble.h5", load_observables)
        if e.chains != s["chains"]:
            raise EnsembleError(f"{e.path}: {e.chains} chains, the manifest says {s['chains']}")
        parts.append(e)
    n = min(e.committed for e in parts)

    def join(arrays):
        return np.concatenate([a[:, :n] for a in arrays])

    obs = {k: join([e.observables[k] for e in parts]) for k in parts[0].observables}
    diag = {k: join([e.diagnostics[k] for e in parts]) for k in parts[0].diagnostics}
    weights = None if parts[0].weights is None else join([e.weights for e in parts])
    # the config layer imports jax (0.8 s); a single run's `lattice info` needs none of it
    from lattice.config.run import parse_config

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
