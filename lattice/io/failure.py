"""I/O failures in one line: what the system said, and about which file.

A full disk (ENOSPC), a read-only file system (EROFS) or a damaged file reach the caller as an
``OSError``, or — from inside HDF5 — as a ``RuntimeError`` raised in h5py's own code (e.g.
"Slist already enabled?" after a write failed). :func:`io_failure` tells those apart from
programming errors and words them; :func:`quiet_freed_hdf5` silences the same failure when
h5py reports it again, unraisably, as the objects of the failed file are freed.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import sys
from collections.abc import Iterator

__all__ = ["io_reason", "io_failure", "quiet_freed_hdf5"]


def io_reason(e: OSError) -> str:
    """One line for an I/O failure: the system's words and the file, without a traceback."""
    what = os.strerror(e.errno) if e.errno else (e.strerror or str(e).splitlines()[0][:120])
    name = getattr(e, "filename", None)
    if not name:  # h5py names the file inside its message
        m = re.search(r"filename = '([^']+)'", str(e))
        name = m.group(1) if m else None
    return f"{what}: {name}" if name else what


def _raised_by_h5py(e: BaseException) -> bool:
    """Whether the innermost frame of ``e``'s traceback is h5py's."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "h5py" in tb.tb_frame.f_code.co_filename


def io_failure(e: BaseException) -> str | None:
    """One line for ``e`` if it is an I/O failure (an ``OSError``, or HDF5's ``RuntimeError``
    raised inside h5py), else None."""
    if isinstance(e, OSError):
        return io_reason(e)
    if isinstance(e, RuntimeError) and _raised_by_h5py(e):
        return "HDF5: " + str(e).splitlines()[0][:120]
    return None


@contextlib.contextmanager
def quiet_freed_hdf5() -> Iterator[None]:
    """While inside, and as the objects left are freed on the way out, h5py's unraisable
    reports (of a write that already failed and was reported once) are not printed."""
    hook = sys.unraisablehook

    def quiet(unraisable) -> None:
        tb, frames = unraisable.exc_traceback, []
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        where = " ".join(frames) + repr(getattr(unraisable, "object", ""))
        if "h5py" not in where + str(unraisable.exc_value):
            hook(unraisable)

    sys.unraisablehook = quiet
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = hook
