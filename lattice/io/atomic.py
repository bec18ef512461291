"""Atomic file replacement: a reader sees the old file or the new one, never a mix."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_file_atomic", "fsync_dir"]


def write_file_atomic(path: str | Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` atomically: temporary file, fsync, ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_dir(path: str | Path) -> None:
    """fsync a directory, so that a rename into it survives a crash."""
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
