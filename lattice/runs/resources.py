"""What a run needs of the machine, decided before any file is written: the sharding of its
chains over the local devices, its blocks, and its disk and memory (refused when they do not
fit). A multi-process run (:mod:`lattice.runs.distributed`) splits the chains over processes;
within a process they are split over devices here."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lattice.config.run import RunConfig
from lattice.runs.directory import JobError, human_bytes

__all__ = ["chain_sharding", "block_size", "n_saved", "resource_needs", "check_resources"]


def chain_sharding(chains: int, devices: int | None):
    """The sharding of the chain axis over local devices, and the device count.

    ``devices = None`` uses every local device, or the largest count that divides
    ``chains``. The chain axis (axis 0 of keys, states and fields) is split with a
    ``NamedSharding`` over a one-axis mesh ``("chains",)``; every kernel is per chain, so
    the jitted loops run without communication and, since a chain's stream depends only on
    (seed, chain, step), the results are bitwise those of one device. Returns
    ``(None, 1)`` for one device. Raises :class:`JobError` (exit 2) for an impossible request.
    """

    local = jax.local_devices()
    if devices is None:
        n = math.gcd(chains, len(local))
    elif devices > len(local):
        raise JobError(
            f"run.devices: {devices} requested but only {len(local)} local device(s) "
            f"({local[0].platform}); allowed: 1 to {len(local)}"
        )
    elif chains % devices:
        raise JobError(f"run.devices: {devices} must divide run.chains = {chains}")
    else:
        n = devices
    if n == 1:
        return None, 1
    mesh = Mesh(np.array(local[:n]), ("chains",))
    return NamedSharding(mesh, PartitionSpec("chains")), n


def block_size(checkpoint_every: int, save_every: int) -> int:
    """Measurements per block: ``checkpoint_every`` rounded up to a multiple of
    ``save_every``, so that every block starts with a saved configuration."""
    if save_every <= 1:
        return checkpoint_every
    return -(-checkpoint_every // save_every) * save_every


def n_saved(samples: int, save_every: int) -> int:
    return 0 if save_every == 0 else (samples + save_every - 1) // save_every


#: arrays of the lattice's size a sampler keeps per chain, at most (field, momentum, force,
#: proposal, noise, RK2 stages, …): the bound the memory check uses
_FIELDS_PER_CHAIN = 8


def resource_needs(cfg: RunConfig) -> tuple[int, int]:
    """(bytes of the ensemble file, bytes of memory) a run needs, estimated from above: the
    saved configurations and the measurements; the chains' fields on the device and the
    block of saved configurations on the host."""
    r, V = cfg.run, math.prod(cfg.lattice.shape)
    item = np.dtype(r.dtype).itemsize
    saved = n_saved(r.samples, r.save_every)
    per_measurement = 8 * (8 + 2 * cfg.lattice.shape[0])  # scalars, G, G_sd, diagnostics
    disk = r.chains * (saved * V * item + r.samples * per_measurement)
    block = min(block_size(r.checkpoint_every, r.save_every), r.samples)  # no block is longer
    saved_block = 0 if not r.save_every else -(-block // r.save_every) * V * item
    memory = r.chains * (_FIELDS_PER_CHAIN * V * item + 2 * saved_block)
    return disk, memory


def check_resources(cfg: RunConfig, root: Path) -> None:
    """Refuse (exit 2, before any file is written) a run whose ensemble would not fit on the
    disk that holds ``root``, or whose chains would not fit in this machine's memory."""
    disk, memory = resource_needs(cfg)
    where = Path(root).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    if free is not None and disk > free:
        raise JobError(
            f"{root}: the ensemble needs about {human_bytes(disk)} and {where} has "
            f"{human_bytes(free)} free; lower run.samples, raise run.save_every (0: no "
            "configurations) or shrink lattice.shape"
        )
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        ram = None
    if ram and jax.default_backend() == "cpu" and memory > ram:
        raise JobError(
            f"lattice.shape: {cfg.run.chains} chains of {list(cfg.lattice.shape)} need about "
            f"{human_bytes(memory)} of memory and this machine has {human_bytes(ram)}; lower "
            "run.chains or shrink lattice.shape"
        )
