"""Progress reporting for long jobs: the protocol the library takes, a quiet reporter and plain
log lines (the rich progress bar is the app's, :mod:`lattice.app.console`)."""

from __future__ import annotations

import os
import sys
import time
from typing import Protocol

__all__ = ["Reporter", "PlainReporter", "QuietReporter", "process_seconds"]

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


class PlainReporter:
    """One log line per phase start and at most one progress line every ``interval`` seconds."""

    def __init__(self, stream=None, interval: float = 10.0):
        self.stream = stream or sys.stderr
        self.interval = interval
        self._last = 0.0

    def _emit(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=self.stream, flush=True)

    def start(self, phase: str, total: int, done: int) -> None:
        self.phase, self.total, self.t0, self.done0 = phase, total, time.perf_counter(), done
        self._last = self.t0
        self._emit(f"{phase}: {done}/{total} steps")

    def advance(self, done: int, acceptance: float | None = None, note: str | None = None) -> None:
        now = time.perf_counter()
        if now - self._last < self.interval and done < self.total:
            return
        self._last = now
        rate = (done - self.done0) / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        acc = f", acceptance {acceptance:.3f}" if acceptance is not None else ""
        acc += f", {note}" if note else ""
        self._emit(
            f"{self.phase}: {done}/{self.total} steps, {rate:.1f} steps/s, ETA {eta:.0f} s{acc}"
        )

    def log(self, message: str) -> None:
        self._emit(message)

    def finish(self) -> None:
        pass
