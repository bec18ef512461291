"""A background writer: one thread that runs a job's host work (HDF5 writes, fsyncs,
checkpoints) in submission order while the main thread keeps the device busy.

While the device computes block k+1 of a run, this thread writes block k, commits it and
checkpoints the states after it (:func:`lattice.runs.phases.measure`), so writing never stalls
the sampler (docs/PERFORMANCE.md, "Writing does not slow the job"). At most two blocks wait in
its queue, which bounds the memory; an exception raised on the thread is re-raised in the
caller at the next :meth:`BackgroundWriter.submit` or at :meth:`BackgroundWriter.drain`.
"""

from __future__ import annotations

import os
import queue
import threading

__all__ = ["BackgroundWriter"]


def _lower_thread_priority() -> None:
    """Run the calling thread at the lowest CPU priority (Linux: per-thread nice 19).

    XLA splits each step over its worker threads and waits for the slowest; a writer that
    preempts one of them stalls the whole step. At nice 19 the writer runs in the gaps XLA
    leaves instead. Without per-thread priorities (non-Linux) this does nothing."""

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


class BackgroundWriter:
    """The writer thread (module docstring); use it as a context manager."""

    def __init__(self):
        self._q: queue.Queue = queue.Queue(maxsize=2)
        self._results: list = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)

    def _work(self):
        _lower_thread_priority()
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is None:
                try:
                    fn, args = item
                    self._results.append(fn(*args))
                except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                    self._error = e

    def submit(self, fn, *args) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((fn, args))

    def drain(self) -> list:
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._results

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
