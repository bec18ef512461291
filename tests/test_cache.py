"""The app's persistent compilation cache (issue 45, lattice.app.cache): a warm cache gives the
same bits as a cold one and says so in run.log; two processes filling one cache at once, a
read-only cache and a full one never fail a run (one warning at most); `lattice cache` shows
and clears it; the library never turns it on. Every run here is a process of its own with its
own cache directory (the suite's shared cache, conftest.py, must not stand in for it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from test_adversarial import tmpfs  # noqa: F401  (a small tmpfs: full and read-only disks)
from test_jobs import TINY, datasets, write


def lattice(*args, cache=None, extra_env=None, timeout=300):
    """``lattice ARGS`` in a process of its own, its cache at ``cache`` (None: turned off)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "LATTICE_CACHE"))}
    env.update({"LATTICE_CACHE_DIR": str(cache)} if cache is not None else {"LATTICE_CACHE": "off"})
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "lattice", *map(str, args)],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _start_up(run_dir) -> tuple[int, int]:
    """(compilations, of which from the persistent cache) of run.log's start-up line."""
    log = (run_dir / "run.log").read_text()
    m = re.search(r"start-up: .*; (\d+) compilations? in [\d.]+ s(?:, (\d+) from the)?", log)
    assert m, log
    return int(m.group(1)), int(m.group(2) or 0)


def _same_bits(a, b) -> None:
    want, got = datasets(a / "ensemble.h5"), datasets(b / "ensemble.h5")
    assert want.keys() == got.keys()
    for k in want:
        assert np.array_equal(want[k], got[k]), k


@pytest.fixture
def cfg(tmp_path):
    return write(tmp_path, TINY.format(kind="hmc"))


def test_a_warm_cache_gives_the_cold_bits_and_run_log_says_so(tmp_path, cfg):
    cache = tmp_path / "xla"
    cold, warm, off = tmp_path / "cold", tmp_path / "warm", tmp_path / "off"
    for d, c in ((cold, cache), (warm, cache), (off, None)):
        p = lattice("run", cfg, "-o", d, "--quiet", cache=c)
        assert p.returncode == 0 and not p.stderr, p.stderr
    n_cold, hits_cold = _start_up(cold)
    n_warm, hits_warm = _start_up(warm)
    assert n_cold > 0 and hits_cold == 0
    assert n_warm == n_cold and hits_warm == n_warm  # every start-up program from the cache
    assert "compiled the sampling loop in" in (warm / "run.log").read_text()
    assert ", 1 from the persistent cache" in (warm / "run.log").read_text()
    assert "from the persistent cache" not in (off / "run.log").read_text()
    _same_bits(cold, warm)
    _same_bits(cold, off)
    shown = lattice("cache", cache=cache)
    assert shown.returncode == 0
    m = re.search(r"compilation cache: .*: (\d+) programs, ([\d.]+) MB", shown.stdout)
    assert m and int(m.group(1)) >= n_cold, shown.stdout
    cleared = lattice("cache", "--clear", cache=cache)
    assert f"removed {m.group(1)} programs" in cleared.stdout
    assert not cache.exists()
    assert "off" in lattice("cache").stdout


def test_two_processes_filling_one_cache_at_once(tmp_path, cfg):
    cache = tmp_path / "xla"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "LATTICE_CACHE"))}
    env["LATTICE_CACHE_DIR"] = str(cache)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lattice", "run", str(cfg), "-o", str(tmp_path / f"r{i}"), "-q"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    for p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        assert len(stderr.strip().splitlines()) <= 1, stderr  # at most the one cache warning
    _same_bits(tmp_path / "r0", tmp_path / "r1")


def test_a_read_only_cache_warns_once_and_the_run_goes_on(tmp_path, tmpfs, cfg):  # noqa: F811
    ro = tmpfs("ro", "1m", "ro")
    p = lattice("run", cfg, "-o", tmp_path / "r", "--quiet", cache=ro / "xla")
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip().splitlines() == [
        f"warning: compilation cache off: cannot write {ro / 'xla'} (Read-only file system); "
        "set LATTICE_CACHE_DIR"
    ]
    lattice("run", cfg, "-o", tmp_path / "ref", "--quiet")
    _same_bits(tmp_path / "ref", tmp_path / "r")


def test_a_full_cache_disk_warns_once_and_the_run_goes_on(tmp_path, tmpfs, cfg):  # noqa: F811
    full = tmpfs("full", "64k")
    p = lattice("run", cfg, "-o", tmp_path / "r", "--quiet", cache=full)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: compilation cache {full}: "), lines
    assert "No space left on device" in lines[0] and "further cache warnings" in lines[0]
    lattice("run", cfg, "-o", tmp_path / "ref", "--quiet")
    _same_bits(tmp_path / "ref", tmp_path / "r")


def test_the_library_never_turns_the_cache_on(tmp_path):
    """Only the app sets JAX's cache directory, like x64."""
    code = (
        "import jax\n"
        "from lattice import Phi4, run_chains\n"
        "from lattice.config.sampler import Hmc\n"
        "th = Phi4.kappa_form([4, 4], kappa=0.2, lam=0.1)\n"
        "run_chains(Hmc(steps=4).build(th), th, chains=2, seed=1, n_meas=2, measure_every=1)\n"
        "print(jax.config.jax_compilation_cache_dir)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "home-cache")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "None"
    assert not (tmp_path / "home-cache").exists()


def test_the_default_place_is_the_users_cache_directory(tmp_path, monkeypatch):
    from lattice.app.cache import cache_dir

    monkeypatch.delenv("LATTICE_CACHE_DIR", raising=False)
    monkeypatch.delenv("LATTICE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "lattice" / "xla"
    monkeypatch.setenv("LATTICE_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    for off in ("off", "0", "no", "false", "OFF"):
        monkeypatch.setenv("LATTICE_CACHE", off)
        assert cache_dir() is None
