"""Progress on a terminal: a rich progress bar, or plain log lines when stderr is not a tty."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lattice.runs.progress import PlainReporter, QuietReporter, Reporter

__all__ = ["RichReporter", "make_reporter"]


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
