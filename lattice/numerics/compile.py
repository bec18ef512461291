"""How the hot loops are compiled: ``jax.jit`` plus the CPU code-generation options measured
to pay (docs/PERFORMANCE.md).

On an x86 CPU with AVX-512, XLA's LLVM backend prefers 256-bit vectors by default; the fused
Threefry hash and the normal transform of the noise run ~1.6× faster with 512-bit vectors
(`xla_cpu_prefer_vector_width = 512`). The option is passed per compiled function (never
through ``XLA_FLAGS``, so a user's process is otherwise untouched), only on the CPU backend
and only where the CPU has AVX-512; ``LATTICE_VECTOR_WIDTH=256`` (or any width) overrides it,
``LATTICE_VECTOR_WIDTH=0`` leaves XLA's default.

The options change the speed, not the stream: results are bitwise the same either way
(tested).
"""

from __future__ import annotations

import functools
import os

import jax

__all__ = ["hot_jit", "cpu_options", "require_x64"]


@functools.cache
def _has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return False


def cpu_options() -> dict[str, int]:
    """The compiler options for the hot loops on this machine's default backend."""
    env = os.environ.get("LATTICE_VECTOR_WIDTH")
    if jax.default_backend() != "cpu":
        return {}
    if env is not None:
        width = int(env)
        return {"xla_cpu_prefer_vector_width": width} if width > 0 else {}
    return {"xla_cpu_prefer_vector_width": 512} if _has_avx512() else {}


def hot_jit(fun=None, *, static_argnames=()):
    """``jax.jit`` with :func:`cpu_options`, decided at the first call (so importing the
    package does not start a backend). ``.lower`` works as on a jitted function."""
    if fun is None:
        return functools.partial(hot_jit, static_argnames=static_argnames)

    @functools.cache
    def jitted():
        opts = cpu_options() or None
        return jax.jit(fun, static_argnames=static_argnames, compiler_options=opts)

    @functools.wraps(fun)
    def call(*args, **kwargs):
        return jitted()(*args, **kwargs)

    call.lower = lambda *a, **k: jitted().lower(*a, **k)
    call._cache_size = lambda: jitted()._cache_size()  # compiled variants (tests)
    return call


def require_x64(error: type[Exception] = RuntimeError) -> None:
    """Raise ``error`` unless JAX's x64 mode is on. Runs need it: their random streams carry
    64-bit words (:func:`lattice.numerics.noise.carried_normals`) and float64 runs compute in
    float64. The library never sets it (a global switch of the user's process): the
    ``lattice`` command does, and so must a script, before the first JAX array is made."""
    if not jax.config.jax_enable_x64:
        raise error(
            "jax_enable_x64 is off: call jax.config.update('jax_enable_x64', True) at the "
            "start of the program (the lattice command does)"
        )
