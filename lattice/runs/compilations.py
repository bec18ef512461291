"""How many XLA compilations a process asked for, and how many the persistent cache answered.

JAX reports every backend compilation request (``/jax/core/compile/backend_compile_duration``,
which a persistent-cache hit also passes through, with the retrieval's time) and every cache
hit and miss (``/jax/compilation_cache/cache_hits``, ``…/cache_misses``) through
``jax.monitoring``. :func:`count_compilations` registers listeners for them once per process;
:func:`compilations` returns the counts so far, which run.log writes at the end of the start-up
and after each loop's first call (docs/PERFORMANCE.md, "Compilation"). Counting changes no
setting: whether a cache is used is the app's choice (:mod:`lattice.app.cache`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import jax

__all__ = ["Compilations", "count_compilations", "compilations"]

_COMPILE = "/jax/core/compile/backend_compile_duration"
_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"


@dataclass(frozen=True)
class Compilations:
    """Counts since the listeners were registered: compilation requests (``programs``), the
    persistent cache's ``hits`` and ``misses`` (both 0 without a cache) and the seconds the
    requests took (a hit's is its retrieval)."""

    programs: int = 0
    hits: int = 0
    misses: int = 0
    seconds: float = 0.0

    def __sub__(self, other: Compilations) -> Compilations:
        return Compilations(
            self.programs - other.programs,
            self.hits - other.hits,
            self.misses - other.misses,
            self.seconds - other.seconds,
        )

    def describe(self) -> str:
        """``"38 compilations in 1.21 s, 35 from the persistent cache"``."""
        s = "" if self.programs == 1 else "s"
        text = f"{self.programs} compilation{s} in {self.seconds:.2f} s"
        if self.hits or self.misses:
            text += f", {self.hits} from the persistent cache"
        return text


_lock = threading.Lock()
_counts = {"programs": 0, "hits": 0, "misses": 0, "seconds": 0.0}
_registered = False


def _on_event(event: str, **_) -> None:
    key = {_HIT: "hits", _MISS: "misses"}.get(event)
    if key is not None:
        with _lock:
            _counts[key] += 1


def _on_duration(event: str, seconds: float, **_) -> None:
    if event == _COMPILE:
        with _lock:
            _counts["programs"] += 1
            _counts["seconds"] += seconds


def count_compilations() -> None:
    """Start counting (once per process; later calls do nothing)."""
    global _registered
    with _lock:
        if _registered:
            return
        _registered = True
    jax.monitoring.register_event_listener(_on_event)
    jax.monitoring.register_event_duration_secs_listener(_on_duration)


def compilations() -> Compilations:
    """The counts so far (all zero before :func:`count_compilations`)."""
    with _lock:
        return Compilations(**_counts)
