"""What the terminal shows: progress (a rich progress bar, or plain log lines when stderr is not
a tty) and the one line of strict JSON of ``--json`` (:func:`json_line`)."""

from __future__ import annotations

import json
import math
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lattice.runs.progress import QuietReporter, Reporter

__all__ = ["RichReporter", "PlainReporter", "make_reporter", "json_line"]


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


class RichReporter:
    """A rich progress bar: steps/s, ETA and the running acceptance."""

    def __init__(self, console=None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} steps/s"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[acc]}"),
            console=self.console,
            transient=False,
        )
        self.task = None

    def start(self, phase: str, total: int, done: int) -> None:
        if self.task is None:
            self.progress.start()
        else:
            self.progress.stop_task(self.task)
        self.t0, self.done0 = time.perf_counter(), done
        self.task = self.progress.add_task(phase, total=total, completed=done, rate="-", acc="")

    def advance(self, done: int, acceptance: float | None = None, note: str | None = None) -> None:
        rate = (done - self.done0) / max(time.perf_counter() - self.t0, 1e-9)
        acc = f"acc {acceptance:.3f}" if acceptance is not None else ""
        acc = f"{acc}  {note}".strip() if note else acc
        self.progress.update(self.task, completed=done, rate=f"{rate:,.0f}", acc=acc)

    def log(self, message: str) -> None:
        self.progress.console.log(message)

    def finish(self) -> None:
        if self.task is not None:
            self.progress.stop()


def make_reporter(quiet: bool = False) -> Reporter:
    """A progress bar when stderr is a terminal, plain log lines otherwise."""
    if quiet:
        return QuietReporter()
    if sys.stderr.isatty():
        return RichReporter()
    return PlainReporter()


def _finite(x):
    """``x`` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def json_line(obj) -> str:
    """One line of strict JSON (RFC 8259) for ``--json``: a number that is not finite (an
    error of a constant series, a z-score without an error) is written as ``null``."""
    return json.dumps(_finite(obj), allow_nan=False) + "\n"
