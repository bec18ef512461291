"""The persistent XLA compilation cache of the ``lattice`` command (docs/PERFORMANCE.md,
"Compilation").

Every command is a new process, and XLA would compile the same loops again in each. With JAX's
persistent compilation cache a second run of the same shape, dtype and sampler reads its
executables from disk instead. A cached executable is the one a fresh compilation gives (the
key hashes the program, the compile options, the backend and the devices), so results are the
same bits with a warm cache and a cold one (tests/test_cache.py).

* Where: ``$LATTICE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/lattice/xla`` (``~/.cache`` when
  ``XDG_CACHE_HOME`` is unset).
* Off: ``LATTICE_CACHE=off`` (or ``0``, ``no``, ``false``).
* Every compilation is cached, however short (``jax_persistent_cache_min_compile_time_secs =
  0``): a run's start-up is dozens of small programs.
* It never fails a command. A directory that cannot be made or written turns the cache off with
  one warning; a write that fails later (a full disk), or an entry another process is still
  writing, is one warning per process and a compilation as without the cache.
* ``lattice cache`` shows its place, entries and size; ``lattice cache --clear`` empties it.

Only the app turns it on, like x64 (:func:`enable_cache`); the library never does.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CacheInfo", "cache_dir", "enable_cache", "cache_info", "clear_cache"]

OFF = ("off", "0", "no", "false")
#: what JAX's warnings about its persistent cache begin with (jax._src.compiler)
_JAX_CACHE_WARNING = "persistent compilation cache entry"


def cache_dir() -> Path | None:
    """The cache's directory (module docstring), or None when it is turned off."""
    if os.environ.get("LATTICE_CACHE", "").strip().lower() in OFF:
        return None
    if os.environ.get("LATTICE_CACHE_DIR"):
        return Path(os.environ["LATTICE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lattice" / "xla"


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _writable(d: Path) -> str | None:
    """None if files can be made in ``d`` (made if missing), else the system's reason."""
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".probe-"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


class _OneWarning:
    """A ``warnings.showwarning`` that shows JAX's first persistent-cache warning of the
    process as one line and drops the later ones; every other warning goes on as before."""

    def __init__(self, previous, where: Path):
        self.previous, self.where, self.shown = previous, where, False

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if _JAX_CACHE_WARNING not in text:
            return self.previous(message, category, filename, lineno, file, line)
        if not self.shown:
            self.shown = True
            first = text.splitlines()[0][:200]
            _warn(
                f"compilation cache {self.where}: {first}; compiling without it where it "
                "fails (the results are the same; further cache warnings are not shown)"
            )
        return None


def enable_cache() -> Path | None:
    """Turn JAX's persistent compilation cache on at :func:`cache_dir` for this process, before
    anything is compiled; returns the directory, or None (off, or not writable: one warning)."""
    import jax  # here: the app's commands import JAX only when they compute (cli docstring)

    d = cache_dir()
    if d is None:
        return None
    reason = _writable(d)
    if reason is not None:
        _warn(f"compilation cache off: cannot write {d} ({reason}); set LATTICE_CACHE_DIR")
        return None
    jax.config.update("jax_compilation_cache_dir", str(d))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if not isinstance(warnings.showwarning, _OneWarning):
        warnings.showwarning = _OneWarning(warnings.showwarning, d)
    return d


@dataclass(frozen=True)
class CacheInfo:
    """The cache's directory (None: off), its entries and their bytes."""

    directory: Path | None
    entries: int
    bytes: int


def _entries(d: Path) -> list[Path]:
    """JAX's cache files in ``d`` (``<program>-<key>-cache``, ``…-atime``) and our probes."""
    return [
        p
        for p in d.iterdir()
        if p.is_file() and (p.name.endswith(("-cache", "-atime")) or p.name.startswith(".probe-"))
    ]


def cache_info() -> CacheInfo:
    """What :func:`cache_dir` holds now."""
    d = cache_dir()
    if d is None or not d.is_dir():
        return CacheInfo(d, 0, 0)
    files = [p for p in _entries(d) if p.name.endswith("-cache")]
    return CacheInfo(d, len(files), sum(p.stat().st_size for p in files))


def clear_cache() -> CacheInfo:
    """Remove the cache's entries (only JAX's cache files: ``LATTICE_CACHE_DIR`` may name a
    directory that holds other things), and the directory if that leaves it empty; returns
    what it held."""
    info = cache_info()
    if info.directory is not None and info.directory.is_dir():
        for p in _entries(info.directory):
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            info.directory.rmdir()
    return info
