"""The files the app writes for a reader (plots, reports): each one written atomically
(:func:`lattice.io.atomic.write_file_atomic`: a reader, or a process killed mid-write, never
leaves a truncated file), and a directory or file that cannot be written ends in one line
naming it and the system's reason (an :class:`OutputError`, exit status 2)."""

from __future__ import annotations

import errno
import io
from pathlib import Path

from matplotlib.figure import Figure

from lattice.errors import LatticeError
from lattice.io.atomic import write_file_atomic
from lattice.io.failure import io_reason

__all__ = ["OutputError", "output_dir", "save_figure", "write_output"]


class OutputError(LatticeError):
    """A plot or report that could not be written: where, and the system's words."""


def _named(e: OSError, path: Path) -> str:
    """:func:`io_reason` of ``e``, naming ``path`` where the system named no file or named
    the atomic writer's temporary file."""
    name = e.filename if e.filename and not str(e.filename).endswith(".tmp") else path
    return io_reason(OSError(e.errno, e.strerror, str(name)))


def output_dir(path: str | Path) -> Path:
    """Create the directory ``path`` and its parents if missing; a file in the way, a
    read-only or missing file system is an :class:`OutputError`."""
    d = Path(path)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file (or a dangling link) where the directory should be
        reason = io_reason(OSError(errno.ENOTDIR, "", str(d)))
        raise OutputError(f"cannot create directory: {reason}") from None
    except OSError as e:
        raise OutputError(f"cannot create directory: {_named(e, d)}") from None
    return d


def write_output(path: str | Path, data: bytes | str, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically, its directory created if missing; returns
    ``path``. ``what`` ("plot", "report") words the one line of a failure."""
    path = Path(path)
    output_dir(path.parent)
    try:
        write_file_atomic(path, data)
    except OSError as e:  # a full disk, a read-only mount, a directory at ``path``
        raise OutputError(f"cannot write {what}: {_named(e, path)}") from None
    return path


def save_figure(fig: Figure, path: str | Path, dpi: int) -> Path:
    """Render ``fig`` in the format of ``path``'s suffix (PNG without one) and write it with
    :func:`write_output`; returns ``path``."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise OutputError(
            f"cannot write plot {path}: no image format '.{fmt}' (use .png, .pdf or .svg)"
        )
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return write_output(path, buf.getvalue(), "plot")
