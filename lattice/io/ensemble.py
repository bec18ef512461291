"""The HDF5 ensemble file (docs/conventions.md §4) and the atomic checkpoint.

Layout of ``ensemble.h5`` (``format_version`` 1)::

    /                      attrs: format = "lattice-ensemble", format_version, created,
                                  lattice_version, committed, saved_committed, complete,
                                  samples (planned measurements per chain)
    /config                attrs: sha256 (of every other attribute, :func:`_config_digest`),
                                  toml (the resolved run config), and flattened
                                  "section.key" parameters, sampler.name, sampler.exactness,
                                  sampler.order, sampler.forces_per_step; with a step-size
                                  tuner (sampler.target_acceptance) also sampler.tuned_step_size,
                                  sampler.tuned_trajectory_length, sampler.tuned_steps (the
                                  thermalization steps it tuned over), sampler.tuned_acceptance
                                  with a path-length pilot (diffusion, target_acceptance) also
                                  sampler.tuned_path_steps (the K chosen; sampler.steps is the
                                  cap), sampler.pilot_path_steps and sampler.pilot_acceptance
                                  (the ladder and each K's estimate), sampler.pilot_proposals
    /observables/<name>    [chains, samples]          (G: [chains, samples, L0])
    /diagnostics/acceptance [chains, samples]         mean acceptance since the last measurement
    /diagnostics/exp_minus_dh [chains, samples]       mean e^{−ΔH} since the last measurement
    /diagnostics/cluster_iterations, cluster_size     with cluster updates: their mean labelling
                           [chains, samples]          iterations and V / N_clusters (NaN: none ran)
    /diagnostics/proposal_log_w, score_evaluations   diffusion sampler: log(e^{−S}/q) of the
                           [chains, samples]          last proposal and its score evaluations
    /weights/log_w         [chains, samples]          importance weights log(e^{−S}/q) of the
                                                      measured fields (diffusion, reweighting)
    /configs               [chains, saved, *shape]    one configuration per chunk
    /configs_index         [saved]                    measurement index of each saved config
    /timing                attrs: seconds, steps (sampler steps done in this file's runs)

Crash safety. Every dataset is chunked, resizable along its sample axis, and *allocated at
creation* for the planned number of samples. Appending a block therefore writes raw chunk data
at fixed offsets and never restructures HDF5 metadata; the only metadata that changes is the
``committed`` attribute, updated after the block's data has been flushed. A reader trusts
``[:, :committed]`` only, so a process killed at any moment leaves a file that opens and whose
committed part is intact. ``checkpoint.h5`` holds the chain states, the keys
(``jax.random.key_data``), the next step and the committed counts; it is written to a temporary
file, fsynced and moved into place with ``os.replace``, so it is always the old or the new one.

Writing configurations. Saving every measurement streams ~1 GB per 10⁹ site-updates to disk.
Through the page cache that costs ~2 ms of CPU per MB on a small VM — CPU the sampler needs.
The file is therefore laid out with 4 KiB-aligned allocations and large metadata blocks, so
that each chain's configuration chunks are consecutive and aligned, and whole runs of chunks
are written with ``O_DIRECT`` (no page cache; ~0.2 ms/MB), see :class:`_DirectChunks`. Where
the file system or the chunk size does not allow it, the writes go through HDF5 as usual. The
bytes on disk are the same either way.
"""

from __future__ import annotations

import datetime
import errno
import functools
import hashlib
import json
import mmap
import os
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from lattice._version import __version__
from lattice.config.base import ConfigError, load_toml

if TYPE_CHECKING:
    from lattice.config.run import RunConfig
from lattice.errors import LatticeError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "EnsembleError",
    "EnsembleWriter",
    "Ensemble",
    "open_ensemble_file",
    "short_error",
    "plain_value",
]

FORMAT = "lattice-ensemble"
FORMAT_VERSION = 1
DIAGNOSTICS = ("acceptance", "exp_minus_dh")
_ALIGN = 4096  # O_DIRECT offset/size/buffer alignment, and the file's allocation alignment
_FILE_LAYOUT = dict(alignment_threshold=_ALIGN, alignment_interval=_ALIGN, meta_block_size=1 << 20)


class EnsembleError(LatticeError):
    """A file that is not a readable lattice ensemble (foreign, truncated, corrupt)."""


def _early_dcpl() -> h5py.h5p.PropDCID:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def _reserve(path: Path) -> None:
    """Make the file's disk space real before anything is appended. Early allocation fixes
    every chunk's offset, but on most file systems the untouched parts stay sparse, so a full
    disk would otherwise strike in the middle of a block or of a metadata flush and leave a
    file that does not open. With the blocks reserved, a full disk can only stop a run here,
    before it writes (ENOSPC, reported by the caller), or in the atomic checkpoint."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        os.close(fd)


def _checksummed(f: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    """The per-measurement datasets that carry a CRC-32 per block: ``observables/<name>``,
    ``diagnostics/<name>``, ``weights/log_w``."""
    return [
        (f"{g}/{name}", ds)
        for g in ("observables", "diagnostics", "weights")
        if g in f
        for name, ds in f[g].items()
    ]


def _crc(a: np.ndarray, index: int | None = None) -> int:
    """CRC-32 of an array's bytes (C order, its stored dtype), and of a configuration's
    measurement index when given."""
    crc = zlib.crc32(np.ascontiguousarray(a).tobytes())
    return crc if index is None else zlib.crc32(np.int64(index).tobytes(), crc)


def _verify(path: Path, f: h5py.File, loaded: Mapping[str, np.ndarray], committed: int) -> None:
    """Refuse a file whose committed data do not match their checksums (a damaged disk, or an
    edit), naming the dataset and the measurements. Files without ``/checksums`` pass."""
    if "checksums" not in f:
        return
    sums = f["checksums"]
    block = int(sums.attrs["block"])
    for name, data in loaded.items():
        want = sums[name][: -(-committed // block)]
        for k, w in enumerate(want):
            a, b = k * block, min((k + 1) * block, committed)
            if _crc(data[:, a:b]) != w:
                raise EnsembleError(
                    f"{path}: /{name} does not match its checksum (measurements {a}-{b - 1}): "
                    "the file is damaged or was edited"
                )


def _config_digest(attrs: h5py.AttributeManager) -> str:
    """SHA-256 of ``/config``'s attributes (all but ``sha256``): the canonical JSON of
    ``{name: plain value}`` with sorted names. Python floats print exactly (``repr``), so any
    edit of the TOML text or of a flattened parameter changes the digest."""
    plain = {k: plain_value(v) for k, v in attrs.items() if k != "sha256"}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _verify_config(path: Path, cfg: h5py.Group) -> None:
    """Refuse a ``/config`` whose attributes were edited since the run wrote them: the run's
    lattice shape, couplings and sampler are read from there by every measurement. Files of
    before the digest (no ``sha256`` attribute) are read unchecked, as before."""
    want = cfg.attrs.get("sha256")
    if want is not None and str(want) != _config_digest(cfg.attrs):
        raise EnsembleError(
            f"{path}: /config does not match its checksum (its TOML text or a parameter was "
            "edited or damaged); the run's parameters cannot be trusted"
        )
    try:
        load_toml(str(cfg.attrs["toml"]), f"{path}: /config's toml attribute")
    except ConfigError as e:
        raise EnsembleError(str(e)) from None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class EnsembleWriter:
    """Creates an ensemble file and appends committed blocks to it."""

    def __init__(self, path: str | Path, direct: bool = True):
        self.path = Path(path)
        self._f: h5py.File | None = None
        self._want_direct = direct
        self._direct: _DirectChunks | None = None

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        config_toml: str,
        config_attrs: Mapping[str, Any],
        chains: int,
        samples: int,
        shape: tuple[int, ...],
        n_saved: int,
        dtype: np.dtype,
        observable_shapes: Mapping[str, tuple[int, ...]],
        block: int,
        diagnostics: tuple[str, ...] = DIAGNOSTICS,
        write_block: int | None = None,
        weights: bool = False,
        ensemble_uuid: str | None = None,
    ) -> EnsembleWriter:
        """A new file (``ensemble_uuid``: its id, a random one if None)."""
        w = cls(path)
        with h5py.File(path, "w", **_FILE_LAYOUT) as f:
            f.attrs.update(
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "created": _now(),
                    "uuid": ensemble_uuid or str(uuid.uuid4()),
                    "lattice_version": __version__,
                    "committed": 0,
                    "saved_committed": 0,
                    "complete": False,
                    "samples": samples,
                }
            )
            cfg = f.create_group("config")
            cfg.attrs["toml"] = config_toml
            for k, v in config_attrs.items():
                cfg.attrs[k] = v
            cfg.attrs["sha256"] = _config_digest(cfg.attrs)
            obs = f.create_group("observables")
            blk = max(1, min(block, samples))
            for name, extra in observable_shapes.items():
                obs.create_dataset(
                    name,
                    (chains, samples, *extra),
                    dtype=dtype,
                    chunks=(chains, blk, *extra),
                    maxshape=(chains, None, *extra),
                    dcpl=_early_dcpl(),
                )
            diag = f.create_group("diagnostics")
            for name in dict.fromkeys((*DIAGNOSTICS, *diagnostics)):
                diag.create_dataset(
                    name,
                    (chains, samples),
                    dtype=dtype,
                    chunks=(chains, blk),
                    maxshape=(chains, None),
                    dcpl=_early_dcpl(),
                )
            if weights:
                f.create_group("weights").create_dataset(
                    "log_w",
                    (chains, samples),
                    dtype=dtype,
                    chunks=(chains, blk),
                    maxshape=(chains, None),
                    dcpl=_early_dcpl(),
                )
            if n_saved > 0:
                f.create_dataset(
                    "configs",
                    (chains, n_saved, *shape),
                    dtype=dtype,
                    chunks=(1, 1, *shape),
                    maxshape=(chains, None, *shape),
                    dcpl=_early_dcpl(),
                )
                f.create_dataset(
                    "configs_index",
                    (n_saved,),
                    dtype=np.int64,
                    chunks=(max(1, min(n_saved, 4096)),),
                    maxshape=(None,),
                    dcpl=_early_dcpl(),
                )
            # one CRC-32 per block of measurements as the run writes them (default: a chunk)
            sums = f.create_group("checksums")
            per = sums.attrs["block"] = max(1, min(write_block or blk, samples))
            for name, _ in _checksummed(f):
                sums.create_dataset(
                    name, (-(-samples // per),), dtype=np.uint32, dcpl=_early_dcpl()
                )
            if n_saved > 0:
                sums.create_dataset(
                    "configs", (chains, n_saved), dtype=np.uint32, dcpl=_early_dcpl()
                )
            t = f.create_group("timing")
            t.attrs["seconds"] = 0.0
            t.attrs["steps"] = 0
            f.flush()
            os.fsync(f.id.get_vfd_handle())
        return w

    # ------------------------------------------------------------------ appending
    def open(self) -> EnsembleWriter:
        _reserve(self.path)
        self._f = h5py.File(self.path, "r+")
        if self._want_direct and "configs" in self._f:
            self._direct = _DirectChunks.try_open(self.path, self._f["configs"])
        return self

    @property
    def direct(self) -> bool:
        """Whether configurations are written with ``O_DIRECT`` (see the module docstring)."""
        return self._direct is not None

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> EnsembleWriter:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def write_block(
        self, start: int, obs: Mapping[str, np.ndarray], diag: Mapping[str, np.ndarray]
    ) -> None:
        """Write measurements ``start : start + n`` of the observables and the diagnostics
        (arrays ``[chains, n, ...]``); not yet committed. Writing an existing range again is
        allowed and overwrites it (a resumed run regenerates bitwise the same data)."""
        f = self._f
        n = diag["acceptance"].shape[1]
        sums = f.get("checksums")
        for name, arr in obs.items():
            f["observables"][name][:, start : start + n] = arr
        for name, arr in diag.items():
            group = "weights" if name == "log_w" and "weights" in f else "diagnostics"
            f[group][name][:, start : start + n] = arr
        if sums is not None:  # files of before the checksums have none
            block = int(sums.attrs["block"])
            if start % block or (n != block and start + n != f.attrs["samples"]):
                raise ValueError(f"blocks are of {block} measurements (got {start}:{start + n})")
            for name, ds in _checksummed(f):
                sums[name][start // block] = _crc(ds[:, start : start + n])

    def write_configs(self, saved: np.ndarray, start: int, index: np.ndarray) -> None:
        """Write saved configurations ``saved[k]`` (each ``[chains, *shape]``, as the sampler
        returns them: no transposed copy) to slots ``start + k``; not yet committed."""
        ds = self._f["configs"]
        if self._direct is not None:
            try:
                self._direct.write(saved, start)
            except OSError:  # the file system refused after all: HDF5 from now on
                self._direct.close()
                self._direct = None
        if self._direct is None:
            for k in range(saved.shape[0]):
                ds[:, start + k] = saved[k]
        self._f["configs_index"][start : start + len(index)] = index
        if "checksums/configs" in self._f:
            crcs = np.array(
                [
                    [_crc(np.asarray(c, ds.dtype), i) for c in cfg]
                    for cfg, i in zip(saved, index, strict=True)
                ],
                np.uint32,
            ).reshape(len(index), -1)
            self._f["checksums/configs"][:, start : start + len(index)] = crcs.T

    def commit(
        self,
        committed: int,
        saved_committed: int,
        seconds: float,
        steps: int,
        complete: bool = False,
    ) -> None:
        """Flush the data, then mark it committed (the only metadata that changes)."""
        f = self._f
        f.flush()
        os.fsync(f.id.get_vfd_handle())
        f["timing"].attrs["seconds"] = float(seconds)
        f["timing"].attrs["steps"] = int(steps)
        f.attrs["saved_committed"] = int(saved_committed)
        f.attrs["committed"] = int(committed)
        if complete:
            f.attrs["complete"] = True
        f.flush()
        os.fsync(f.id.get_vfd_handle())

    def record_config_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Add attributes to ``/config`` that the run learns after its start (the step size
        its tuner froze, ``sampler.tuned_*``), durably."""
        f = self._f
        cfg = f["config"]
        _verify_config(self.path, cfg)
        for k, v in attrs.items():
            cfg.attrs[k] = v
        if "sha256" in cfg.attrs:  # files of before the digest stay without one
            cfg.attrs["sha256"] = _config_digest(cfg.attrs)
        f.flush()
        os.fsync(f.id.get_vfd_handle())

    def mark_diverged(self, message: str) -> None:
        """Record that the run diverged (root attribute ``diverged``, the message): the file
        stays what it committed before, and is never marked complete."""
        f = self._f
        f.attrs["diverged"] = message
        f.flush()
        os.fsync(f.id.get_vfd_handle())


class _DirectChunks:
    """Chunk-aligned ``O_DIRECT`` writes of ``/configs``, bypassing HDF5 and the page cache.

    Valid because every chunk is allocated at creation, unfiltered, at a fixed file offset
    (read once here with ``H5Dchunk_iter``), and HDF5 itself never writes those chunks: it
    neither fills them (``FILL_TIME_NEVER``) nor caches them (they are never read or written
    through it by the writer). Consecutive chunks of one chain lie back to back, so a block's
    configurations of one chain go out in one or a few large writes from an aligned buffer.
    """

    def __init__(self, fd: int, offsets: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]):
        self._fd, self._offsets, self._dtype, self._shape = fd, offsets, dtype, shape
        self._chunk = int(np.prod(shape)) * dtype.itemsize
        self._buf: mmap.mmap | None = None

    @classmethod
    def try_open(cls, path: Path, ds: h5py.Dataset) -> _DirectChunks | None:
        """The direct writer for ``ds``, or None where it cannot be used here."""
        flag = getattr(os, "O_DIRECT", None)
        shape = ds.shape[2:]
        chunk = int(np.prod(shape)) * ds.dtype.itemsize
        if flag is None or ds.chunks != (1, 1, *shape) or ds.compression or chunk % _ALIGN:
            return None
        offsets = np.full(ds.shape[:2], -1, dtype=np.int64)

        def visit(info):
            c, k = info.chunk_offset[:2]
            offsets[c, k] = info.byte_offset if info.size == chunk else -1

        try:
            ds.id.chunk_iter(visit)
            if (offsets < 0).any() or (offsets % _ALIGN).any():
                return None
            fd = os.open(path, os.O_WRONLY | flag)
        except (OSError, AttributeError, RuntimeError):
            return None
        return cls(fd, offsets, ds.dtype, shape)

    def write(self, saved: np.ndarray, start: int) -> None:
        """Write ``saved[k, c]`` into chunk ``(c, start + k)`` for all k and chains c."""
        n = saved.shape[0]
        if self._buf is None or len(self._buf) < n * self._chunk:
            if self._buf is not None:
                self._buf.close()
            self._buf = mmap.mmap(-1, n * self._chunk)  # page aligned
        out = np.frombuffer(
            self._buf, dtype=self._dtype, count=n * self._chunk // self._dtype.itemsize
        )
        out = out.reshape(n, *self._shape)
        for c in range(saved.shape[1]):
            offs = self._offsets[c, start : start + n]
            # runs of chunks that lie back to back in the file
            cuts = [0, *(np.flatnonzero(np.diff(offs) != self._chunk) + 1), n]
            for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                out[: b - a] = saved[a:b, c]
                self._pwrite_all(memoryview(self._buf)[: (b - a) * self._chunk], int(offs[a]))

    def _pwrite_all(self, view: memoryview, offset: int) -> None:
        while len(view):
            k = os.pwrite(self._fd, view, offset)
            view, offset = view[k:], offset + k

    def close(self) -> None:
        os.close(self._fd)
        if self._buf is not None:
            self._buf.close()
            self._buf = None


@dataclass(frozen=True)
class Ensemble:
    """What a reader may trust: the committed part of an ensemble file, loaded into memory."""

    path: Path
    config_toml: str
    config_attrs: dict[str, Any]
    observables: dict[str, np.ndarray]  # [chains, committed, ...]
    acceptance: np.ndarray
    committed: int
    samples: int
    complete: bool
    chains: int
    saved: int
    created: str
    version: str
    seconds: float
    steps: int
    weights: np.ndarray | None = None  # /weights/log_w [chains, committed], if present
    diagnostics: dict[str, np.ndarray] | None = None  # /diagnostics/<name> [chains, committed]
    uuid: str | None = None  # random id given at creation (None in files older than 0.1.0)
    #: why the run stopped, if it diverged (the chain, the measurement, the step)
    diverged: str | None = None
    #: a multi-process run joined from its shards (:mod:`lattice.runs.distributed`), in chain order
    shards: tuple[Ensemble, ...] = ()

    @functools.cached_property
    def run_config(self) -> RunConfig:
        """The run's resolved config, validated (errors name this file's ``/config``)."""
        # imported here: the config layer imports JAX, which reading an ensemble must not
        from lattice.config.run import parse_config

        return parse_config(self.config_toml, origin=f"{self.path}: /config")

    def configs(self, chains=slice(None), which=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Saved configurations ``[chains, saved, *shape]`` and their measurement indices."""
        if self.saved == 0:
            return np.zeros((0,)), np.zeros((0,), np.int64)
        if self.shards:
            parts = [s.configs(slice(None), slice(0, self.saved)) for s in self.shards]
            phi = np.concatenate([p[0] for p in parts])[chains]
            return phi[:, which], parts[0][1][which]
        with h5py.File(self.path, "r") as f:
            idx = f["configs_index"][: self.saved][which]
            phi = f["configs"][chains, : self.saved][:, which]
            if "checksums/configs" in f:
                want = f["checksums/configs"][chains, : self.saved][:, which]
                for c, k in np.ndindex(want.shape):
                    if _crc(phi[c, k], idx[k]) != want[c, k]:
                        raise EnsembleError(
                            f"{self.path}: /configs does not match its checksum (configuration"
                            f" {k} of chain {c} in this selection): the file is damaged or "
                            "was edited"
                        )
            return phi, idx


def open_ensemble_file(path: str | Path, load_observables: bool = True) -> Ensemble:
    """Open one ``ensemble.h5`` for reading (:func:`lattice.io.reader.open_ensemble` also takes
    run directories and manifests). Raises :class:`EnsembleError` with a clear message for a
    missing, foreign, truncated or corrupt file."""
    path = Path(path)
    if not path.exists():
        raise EnsembleError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        if "unable to lock file" in str(e):  # HDF5's lock: a writer has it open
            raise EnsembleError(
                f"{path}: a run is writing it now (the file is locked); read it when the run "
                "has finished or stopped"
            ) from None
        raise EnsembleError(f"{path}: not a readable HDF5 file ({short_error(e)})") from None
    try:
        with f:
            if f.attrs.get("format") != FORMAT:
                raise EnsembleError(f"{path}: not a lattice ensemble (no format = '{FORMAT}')")
            ver = int(f.attrs["format_version"])
            if ver > FORMAT_VERSION:
                raise EnsembleError(
                    f"{path}: format_version {ver} is newer than this lattice ({FORMAT_VERSION})"
                )
            n = int(f.attrs["committed"])
            obs = {}
            if load_observables:
                obs = {k: np.asarray(d[:, :n]) for k, d in f["observables"].items()}
            diag = {k: np.asarray(d[:, :n]) for k, d in f["diagnostics"].items()}
            weights = np.asarray(f["weights/log_w"][:, :n]) if "weights/log_w" in f else None
            loaded = {
                **{f"observables/{k}": v for k, v in obs.items()},
                **{f"diagnostics/{k}": v for k, v in diag.items()},
                **({"weights/log_w": weights} if weights is not None else {}),
            }
            _verify(path, f, loaded, n)
            _verify_config(path, f["config"])
            return Ensemble(
                path=path,
                config_toml=str(f["config"].attrs["toml"]),
                config_attrs={
                    k: plain_value(v)
                    for k, v in f["config"].attrs.items()
                    if k not in ("toml", "sha256")
                },
                observables=obs,
                acceptance=diag["acceptance"],
                diagnostics=diag,
                committed=n,
                samples=int(f.attrs["samples"]),
                complete=bool(f.attrs["complete"]),
                chains=int(f["diagnostics/acceptance"].shape[0]),
                saved=int(f.attrs["saved_committed"]),
                created=str(f.attrs["created"]),
                version=str(f.attrs["lattice_version"]),
                seconds=float(f["timing"].attrs["seconds"]),
                steps=int(f["timing"].attrs["steps"]),
                weights=weights,
                uuid=str(f.attrs["uuid"]) if "uuid" in f.attrs else None,
                diverged=str(f.attrs["diverged"]) if "diverged" in f.attrs else None,
            )
    except EnsembleError:
        raise
    except (KeyError, OSError, ValueError, TypeError) as e:
        raise EnsembleError(
            f"{path}: damaged or incomplete ensemble file ({short_error(e)})"
        ) from None


def short_error(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def plain_value(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode()
    return v
