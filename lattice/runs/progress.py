"""Progress reporting for long jobs: the protocol the library takes, a quiet reporter and plain
log lines (the rich progress bar is the app's, :mod:`lattice.app.console`)."""

from __future__ import annotations

import os
import time
from typing import Protocol

__all__ = ["Reporter", "QuietReporter", "process_seconds"]

_IMPORTED = time.monotonic()


def process_seconds() -> float:
    """Seconds since this process started: on Linux, the start time of /proc/self/stat
    (field 22, clock ticks since boot) against /proc/uptime (10 ms resolution); elsewhere
    since this module was imported (after the interpreter's and the imports' own time)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - _IMPORTED


class Reporter(Protocol):
    def start(self, phase: str, total: int, done: int) -> None: ...
    def advance(self, done: int, acceptance: float | None = None, note: str | None = None) -> None:
        """``note`` is a short status (e.g. the loss) shown next to the bar."""
        ...

    def log(self, message: str) -> None: ...
    def finish(self) -> None: ...


class QuietReporter:
    def start(self, phase: str, total: int, done: int) -> None:
        pass

    def advance(self, done: int, acceptance: float | None = None, note: str | None = None) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def finish(self) -> None:
        pass
