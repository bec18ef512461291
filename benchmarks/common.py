"""Shared helpers for the benchmarks: machine description and timing."""

from __future__ import annotations

import os
import platform
import time


def machine() -> str:
    import jax

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, jax {jax.__version__} "
        f"({jax.default_backend()}, {jax.device_count()} device(s))"
    )


def best_of(fn, repeat: int = 3) -> float:
    """Minimum wall time of ``fn()`` over ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
