import atexit
import gc
import os
import shutil
import tempfile
import zlib

import jax
import pytest

# One XLA compilation cache per test session, shared by the pytest-xdist workers and by the CLI
# subprocesses the tests start, so that a program compiles once per session. A cached executable
# is the one a fresh compile would give (the key hashes the program, the compile options and the
# backend), so no result changes. The directory is removed at exit: no session reuses another's.
# LATTICE_TESTS_XLA_CACHE=off runs the suite without any cache (to measure what it saves,
# docs/PERFORMANCE.md).
_CACHE = os.environ.get("LATTICE_TESTS_XLA_CACHE")
if _CACHE is None:  # the controlling process; workers and subprocesses inherit the variable
    _CACHE = tempfile.mkdtemp(prefix="lattice-tests-xla-")
    os.environ["LATTICE_TESTS_XLA_CACHE"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
if _CACHE == "off":
    os.environ["LATTICE_CACHE"] = "off"  # the app's cache (lattice.app.cache) too
else:
    os.environ.update(
        LATTICE_CACHE_DIR=_CACHE,  # the app's cache (lattice.app.cache): the same directory
        JAX_COMPILATION_CACHE_DIR=_CACHE,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

# The CLI wraps its tables and notes at the terminal's width (COLUMNS, else 120 off a tty): the
# tests that read its text get a wide one, so that the length of a tmp path never decides a
# line break; the tests of the widths themselves set theirs (tests/test_tables.py).
os.environ.setdefault("COLUMNS", "250")

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


# The run layer ends every run and training with a full garbage collection (gc.collect() in
# lattice/io/failure.py). In a test process that scans every object it holds, which grows to
# millions (compiled programs, traced functions, session fixtures) and took ~10% of the suite's
# time once runs went in-process. At the start of each test module one collection frees what
# the last module left, and gc.freeze() then moves what survived out of later collections, so
# those scan what the module itself makes. Only objects alive at that moment are frozen (at
# most they are never freed, if they die later); no result depends on it.
_frozen_at = [None]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.module is not _frozen_at[0]:
        _frozen_at[0] = item.module
        gc.collect()
        gc.freeze()


@pytest.fixture
def seed(request) -> int:
    """A fixed seed derived from the test's node id (stable across runs and machines)."""
    return zlib.crc32(request.node.nodeid.encode()) % (2**31)
