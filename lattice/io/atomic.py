"""Atomic file replacement: a reader sees the old file or the new one, never a mix."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["write_file_atomic", "fsync_dir"]


def write_file_atomic(path: str | Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` atomically: temporary file, fsync, ``os.replace``. A
    failed write removes the temporary file and names it in the ``OSError``; a failed
    replacement (a directory at ``path``) removes it too and names ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # e.g. a full disk: no half-written temporary file stays behind
        _remove(tmp)
        raise OSError(e.errno, e.strerror, str(tmp)) from None
    try:
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise OSError(e.errno, e.strerror, str(path)) from None


def _remove(tmp: Path) -> None:
    """Remove a temporary file if it is there; the error being reported matters, not this."""
    with contextlib.suppress(OSError):
        tmp.unlink()


def fsync_dir(path: str | Path) -> None:
    """fsync a directory, so that a rename into it survives a crash."""
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
