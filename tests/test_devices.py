"""Chains sharded over devices: bitwise the results of one device (forced CPU host devices)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_jobs import cli

CONFIG = """
name = "dev"
[lattice]
shape = [8, 6]
[action]
kappa = 0.27
lambda = 0.022
[sampler]
kind = "{kind}"
cluster = "{cluster}"
cluster_every = 2
[run]
chains = 8
thermalization = 10
samples = 24
measure_every = 2
save_every = 3
checkpoint_every = 8
dtype = "float32"
"""


def _cli(*args, devices=4):
    """`lattice ARGS` in a process with ``devices`` forced host devices; a one-device run
    (``--set run.devices=1``) runs in this process (one CPU device) instead."""
    if "run.devices=1" in map(str, args):
        return cli(*args)
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.run(
        [sys.executable, "-m", "lattice", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path) as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[...]

        f.visititems(visit)
    return out


@pytest.mark.long  # processes of their own, with forced host devices
def test_sharded_runs_equal_one_device_bitwise(tmp_path):
    for kind, cluster, counts in (
        # HMC + SW over 4 devices: test_sharded_32x32_hmc_with_clusters_equals_one_device
        ("langevin", "none", ("1", None)),
        ("hmc-fa", "none", ("1", "2")),
    ):
        cfg = tmp_path / f"{kind}.toml"
        text = CONFIG.format(kind=kind.removesuffix("-fa"), cluster=cluster)
        if kind.endswith("-fa"):
            text = text.replace("[sampler]\n", "[sampler]\nfourier_acceleration = true\n")
            assert "fourier_acceleration = true" in text
        cfg.write_text(text)
        out = {}
        for devices in counts:
            run = tmp_path / f"{kind}-{devices}"
            args = ["run", cfg, "-o", run] + (
                [] if devices is None else ["--set", f"run.devices={devices}"]
            )
            p = _cli(*args)
            assert p.returncode == 0, p.stderr
            log = (run / "run.log").read_text()
            assert f"on {devices or 4} device(s)" in log  # default: all 4 (they divide 8)
            out[devices] = _datasets(run / "ensemble.h5")
        ref = out["1"]
        assert "configs" in ref and "observables/G" in ref
        for devices, data in out.items():
            assert data.keys() == ref.keys()
            for name in ref:
                np.testing.assert_array_equal(data[name], ref[name], f"{kind} {devices} {name}")


@pytest.mark.long  # a process of its own, with forced host devices
def test_sharded_32x32_hmc_with_clusters_equals_one_device(tmp_path):
    """A lattice large enough that XLA's batched site reductions would round differently per
    device batch (fixed by geometry.site_sum): still bitwise."""
    cfg = tmp_path / "c.toml"
    text = CONFIG.format(kind="hmc", cluster="sw").replace("[8, 6]", "[32, 32]")
    cfg.write_text(text.replace("samples = 24", "samples = 16"))
    out = {}
    for devices in ("1", "4"):
        p = _cli("run", cfg, "-o", tmp_path / devices, "--set", f"run.devices={devices}")
        assert p.returncode == 0, p.stderr
        out[devices] = _datasets(tmp_path / devices / "ensemble.h5")
    for name in out["1"]:
        np.testing.assert_array_equal(out["4"][name], out["1"][name], name)


def test_impossible_device_requests_exit_2_before_any_work(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(kind="langevin", cluster="none"))
    p = _cli("run", cfg, "-o", tmp_path / "a", "--set", "run.devices=5")
    assert p.returncode == 2
    assert "run.devices: 5 requested but only 4 local device(s)" in p.stderr
    p = _cli("run", cfg, "-o", tmp_path / "b", "--set", "run.devices=3")
    assert p.returncode == 2 and "run.devices: 3 must divide run.chains = 8" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    p = _cli("run", cfg, "-o", tmp_path / "c", "--set", "run.devices=0")
    assert p.returncode == 2 and "run.devices" in p.stderr


@pytest.mark.long  # a process of its own, with forced host devices
def test_domain_decomposition_is_bitwise_the_unsharded_run():
    """One lattice split along its first axis over 4 forced host devices
    (benchmarks/domain_decomposition.py): the rolls become collective-permutes and the
    fields of Langevin and HMC are bitwise those of one device."""
    script = Path(__file__).parents[1] / "benchmarks" / "domain_decomposition.py"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    p = subprocess.run(
        [sys.executable, str(script), "--L", "48", "--steps", "8", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    import json

    rows = json.loads(p.stdout)
    assert [r["kind"] for r in rows] == ["langevin", "hmc", "fa-hmc"]
    # FA-HMC's FFTs on a split lattice fail inside XLA:CPU (docs/scaling.md); it runs on
    # sharded chains (test_sharded_runs_equal_one_device_bitwise)
    for row in rows[:2]:
        assert row["sharding"] == "P(None, 'lattice')"
        assert row["evolve_bitwise"] and row["sample_fields_bitwise"], row["kind"]
        assert row["collectives"]["collective-permute"] >= 2  # the halo exchange of the rolls
