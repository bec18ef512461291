"""The report of a bug: an exception the CLI did not anticipate (docs/conventions.md §3).

The user sees one line and the path of a file with the traceback; the file holds what a bug
report needs (the command line, the versions, the traceback)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from lattice._version import __version__

__all__ = ["crash_report"]


def crash_report(e: BaseException, argv: list[str]) -> Path:
    """Write the traceback of an unanticipated exception, with the command line and the
    versions, to ``$XDG_CACHE_HOME/lattice/crashes/`` (``~/.cache`` if unset; the temporary
    directory if that cannot be written) and return its path."""
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    head = f"lattice {__version__}, Python {sys.version.split()[0]}\ncommand: {' '.join(argv)}\n"
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for d in (cache / "lattice" / "crashes", Path(tempfile.gettempdir())):
        try:
            d.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(head + text)
            return d / name
        except OSError:
            continue
    return Path("(nowhere: no writable directory)")
