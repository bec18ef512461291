"""Multi-process runs (jax.distributed, 2 processes on localhost): the shards joined by the
manifest are bitwise the one-process ensemble, for measure, compare and configurations."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest
from test_jobs import cli

from lattice import open_ensemble

CONFIG = """
name = "dist"
[lattice]
shape = [8, 6]
[action]
kappa = 0.27
lambda = 0.022
[sampler]
kind = "langevin"
[run]
chains = 8
thermalization = 10
samples = 24
measure_every = 2
save_every = 3
checkpoint_every = 8
dtype = "float32"
"""


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "lattice", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(command, cfg_or_dir, out=None):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lattice", command, str(cfg_or_dir)]
            + (["-o", str(out)] if out else [])
            + ["-q", "--coordinator", f"127.0.0.1:{port}", "--processes", "2"]
            + ["--process-id", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stderr


@pytest.mark.long  # two jax.distributed processes, twice
def test_two_processes_write_the_one_process_ensemble(tmp_path):
    cfg = tmp_path / "dist.toml"
    cfg.write_text(CONFIG)
    ref, dist = tmp_path / "ref", tmp_path / "dist"
    cli("run", cfg, "-o", ref, "-q", check=0)  # the one-process run, in this process
    _two_processes("run", cfg, dist)

    man = json.loads((dist / "manifest.json").read_text())
    assert [s["first_chain"] for s in man["shards"]] == [0, 4]
    a, b = open_ensemble(ref), open_ensemble(dist)
    assert b.chains == 8 and b.complete and b.committed == a.committed
    for name in a.observables:
        assert np.array_equal(a.observables[name], b.observables[name]), name
    for x, y in zip(a.configs(), b.configs(), strict=True):
        assert np.array_equal(x, y)
    assert np.array_equal(
        a.configs(slice(3, 6), slice(1, 3))[0], b.configs(slice(3, 6), slice(1, 3))[0]
    )

    ma, mb = (json.loads(cli("measure", d, "--json").stdout) for d in (ref, dist))
    assert ma["observables"] == mb["observables"]
    cmp = json.loads(cli("compare", ref, dist, "--json").stdout)
    assert max(cmp["consistency"].values()) == 0.0

    # a sharded run resumes with its processes (here: already complete), not as one run
    p = cli("resume", dist)
    assert p.returncode == 2 and "multi-process run" in p.stderr
    _two_processes("resume", dist)
    # and it is never overwritten
    p = cli("run", cfg, "-o", dist / "shard-0001", "-q")
    assert p.returncode == 2 and "finished run" in p.stderr


def test_bad_process_options_are_refused_before_waiting(tmp_path):
    cfg = tmp_path / "dist.toml"
    cfg.write_text(CONFIG.replace("chains = 8", "chains = 7"))
    explicit = ["--coordinator", "127.0.0.1:1", "--processes", "2", "--process-id"]
    for options, named in (
        (explicit + ["0"], "run.chains"),
        (["--processes", "2"], "--coordinator"),
        (explicit + ["2"], "--process-id"),
    ):
        p = _cli("run", cfg, *options, timeout=60)
        assert p.returncode == 2 and named in p.stderr and "Traceback" not in p.stderr
