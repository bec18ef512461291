"""What an adversarial user broke (issue 27), through the CLI where a user meets it: float32
diffusion runs, divergence, a live writer's lock, out-of-range values, bad paths, damaged
files and whole tables in --set. Each must end in a clear one-line error (exit 2; 3 for a
diverged run), with nothing lost."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import h5py
import jax.numpy as jnp
import numpy as np
import pytest
from test_jobs import TINY, cli, write

from lattice import Phi4, run_chains
from lattice.config.sampler import Diffusion, Hmc, Langevin, Mala
from lattice.score.gaussian import exact_gaussian_model
from lattice.score.sde import VESDE

THEORY = Phi4.kappa_form([4, 4], kappa=0.2, lam=0.0)
MODEL = exact_gaussian_model(THEORY, VESDE(0.01, 10.0))
SCHEMAS = {
    "langevin": Langevin(step_size=0.01),
    "langevin-rk2": Langevin(step_size=0.01, scheme="rk2"),
    "mala": Mala(step_size=0.05),
    "hmc": Hmc(steps=4),
    "hmc-sw": Hmc(steps=4, cluster="sw"),
    "hmc-fa": Hmc(steps=4, fourier_acceleration=True),
    "hmc-fa-sw": Hmc(steps=4, fourier_acceleration=True, cluster="sw"),
    "diffusion-sde-mh": Diffusion(model="in-memory", method="sde", kernel="analytic", steps=8),
    "diffusion-sde-weighted": Diffusion(
        model="in-memory", method="sde", kernel="analytic", steps=8, metropolis=False
    ),
    "diffusion-ode-mh": Diffusion(model="in-memory", method="ode", rtol=1e-3, atol=1e-3),
    "diffusion-pc": Diffusion(model="in-memory", method="pc", steps=8, metropolis=False),
    "diffusion-annealed": Diffusion(
        model="in-memory", method="annealed", steps=8, metropolis=False
    ),
}


def _one_line(p):
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr


@pytest.mark.parametrize(
    "name, dtype",
    [(n, "float32") for n in SCHEMAS] + [(n, "float64") for n in SCHEMAS if "diffusion" in n],
)
def test_every_sampler_runs_in_both_dtypes(name, dtype):
    """Defect 1: a float32 diffusion run crashed (its log weights came out float64). Every
    sampler in float32 here; in float64 the classical ones are run by every other test."""
    s = SCHEMAS[name].build(THEORY, model=MODEL) if name.startswith("diffusion") else None
    s = s or SCHEMAS[name].build(THEORY)
    res = run_chains(
        s,
        THEORY,
        chains=2,
        seed=1,
        n_meas=4,
        measure_every=1,
        thermalization=2,
        dtype=jnp.dtype(dtype),
    )
    assert res["states"].phi.dtype == jnp.dtype(dtype)
    for k in ("phi2", "action"):
        assert np.all(np.isfinite(res["obs"][k])), (k, res["obs"][k])
    for k, v in res["diagnostics"].items():
        assert np.asarray(v).dtype == jnp.dtype(dtype), (k, np.asarray(v).dtype)


DIVERGING = TINY.format(kind="langevin").replace(
    'kind = "langevin"', 'kind = "langevin"\nstep_size = 5.0'
)


def test_a_diverging_run_stops_and_says_so(tmp_path):
    """Defect 3: NaN fields were reported as a complete run."""
    cfg = write(tmp_path, DIVERGING)
    d = tmp_path / "r"
    p = cli("run", cfg, "-o", d, "--quiet")
    assert p.returncode == 3, (p.returncode, p.stderr)
    msg = _one_line(p)
    assert "diverged" in msg and "chain" in msg and "sampler.step_size (now 5)" in msg
    with h5py.File(d / "ensemble.h5") as f:
        assert not f.attrs["complete"] and "diverged" in f.attrs
        n = int(f.attrs["committed"])
        assert np.all(np.isfinite(f["observables/phi2"][:, :n]))  # nothing non-finite kept
    assert "diverged" in (d / "run.log").read_text()
    assert "complete" not in (d / "run.log").read_text().replace("not complete", "")
    info = cli("info", d, check=0)
    assert "diverged" in info.stdout
    r = cli("resume", d)
    assert r.returncode == 2 and "diverged" in _one_line(r)


def test_a_live_run_holds_its_directory(tmp_path):
    """Defect 4: --force deleted a live run's files; resume of a live run logged a false line."""
    long = TINY.format(kind="hmc").replace("samples = 30", "samples = 400000")
    long = long.replace("checkpoint_every = 8", "checkpoint_every = 200")
    cfg = write(tmp_path, long)
    d = tmp_path / "r"
    live = subprocess.Popen(
        [sys.executable, "-m", "lattice", "run", str(cfg), "-o", str(d), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (d / "checkpoint.h5").exists():
            assert live.poll() is None, live.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        log = (d / "run.log").read_text()
        for args in (("run", cfg, "-o", d, "--force"), ("resume", d)):
            p = cli(*args)
            assert p.returncode == 2, p.stderr
            assert f"process {live.pid} is writing there" in _one_line(p)
        assert live.poll() is None  # the live run goes on
        assert (d / "run.log").read_text().startswith(log)
        assert "resume" not in (d / "run.log").read_text()
    finally:
        live.kill()
        live.wait()
    assert (d / "checkpoint.h5").exists() and (d / "config.toml").exists()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["run.seed=99999999999999999999999"], "run.seed"),
        (["run.seed=9223372036854775808"], "run.seed: must be < 2**63"),
        (["run.first_chain=2147483647"], "run.first_chain"),
        (["run={chains=2}"], "run: --set takes one key at a time"),
        (["run=2"], "run: expected a table"),
        (["lattice.shape=[31623,31623]"], "needs about"),
    ],
)
def test_out_of_range_values_are_refused_before_any_file(tmp_path, overrides, key):
    """Defects 6 and 8."""
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    args = [a for o in overrides for a in ("--set", o)]
    p = cli("run", cfg, "-o", tmp_path / "r", *args)
    assert p.returncode == 2, p.stderr
    assert key in _one_line(p)
    assert not (tmp_path / "r").exists()


def test_output_naming_a_file_is_a_clear_error(tmp_path):
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    (tmp_path / "f").write_text("mine")
    p = cli("run", cfg, "-o", tmp_path / "f")
    assert p.returncode == 2 and "is not a directory" in _one_line(p)
    assert (tmp_path / "f").read_text() == "mine"


def test_resume_of_a_truncated_ensemble_is_a_clear_error(tmp_path):
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    d = tmp_path / "r"
    cli("run", cfg, "-o", d, "--quiet", check=0)
    with h5py.File(d / "ensemble.h5", "r+") as f:
        f.attrs["complete"] = False
    data = (d / "ensemble.h5").read_bytes()
    (d / "ensemble.h5").write_bytes(data[: len(data) // 3])
    p = cli("resume", d)
    assert p.returncode == 2 and "cannot be resumed" in _one_line(p)


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of its own (CI runs as root, which may mount one); unmounted after."""
    mounts = []

    def mount(name: str, size: str, *options: str):
        d = tmp_path / name
        d.mkdir()
        opts = ",".join((f"size={size}", *options))
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], text=True, capture_output=True
        )
        assert r.returncode == 0, f"mounting a tmpfs needs root (CI runs as root): {r.stderr}"
        mounts.append(d)
        return d

    yield mount
    for d in reversed(mounts):
        subprocess.run(["umount", "-l", str(d)], check=False)


TRAIN = """
[train]
ensemble = "{ensemble}"
steps = 80
batch_size = 16
warmup = 20
log_every = 20
checkpoint_every = 40
seed = 11
[network]
channels = 4
blocks = 1
fourier_features = 2
embedding = 8
"""


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """An uninterrupted TINY HMC run and a model trained on it (TRAIN): the bits a run or a
    training stopped by a full disk must end with."""
    d = tmp_path_factory.mktemp("reference")
    cli("run", write(d, TINY.format(kind="hmc")), "-o", d / "run", "--quiet", check=0)
    (d / "t.toml").write_text(TRAIN.format(ensemble=d / "run"))
    cli("train", d / "t.toml", "-o", d / "model", "--quiet", check=0)
    return d


@pytest.mark.parametrize("size", ["48k", "96k"])
def test_a_full_disk_stops_with_one_line_and_resumes_bitwise(tmp_path, tmpfs, reference, size):
    """Defect 5: ENOSPC gave raw tracebacks, and at 96k the disk filled inside a commit's
    metadata flush and left an ensemble that did not open. The ensemble's space is reserved
    before anything is appended: whatever the size, the file opens, nothing committed is lost,
    and after space is freed, resume gives the uninterrupted run's bits."""
    from test_jobs import datasets

    from lattice.io.ensemble import open_ensemble_file

    cfg = write(tmp_path, TINY.format(kind="hmc"))
    disk = tmpfs("disk", size)
    d = disk / "r"
    p = cli("run", cfg, "-o", d, "--quiet", process=True)  # ends with os._exit
    assert p.returncode == 2, p.stderr
    msg = _one_line(p)
    assert "stopped by an I/O error (No space left on device" in msg or "HDF5" in msg, msg
    assert f"lattice resume {d}" in msg
    if (d / "ensemble.h5").exists() and (d / "checkpoint.h5").exists():
        e = open_ensemble_file(d / "ensemble.h5")  # raises if the file were damaged
        assert e.committed < 30 and not e.complete
    assert not (d / "checkpoint.h5.tmp").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    cli("resume", d, "--quiet", check=0)
    want, got = datasets(reference / "run" / "ensemble.h5"), datasets(d / "ensemble.h5")
    assert want.keys() == got.keys()
    for k in want:
        assert np.array_equal(want[k], got[k]), k


@pytest.mark.parametrize("size", ["16k", "128k"])
def test_training_on_a_full_disk_stops_with_one_line_and_resumes_bitwise(
    tmp_path, tmpfs, reference, size
):
    """Defect 5: `lattice train` on a 100 KiB tmpfs segfaulted after 66 tracebacks. Now: exit
    2 with one line, the last checkpoint intact, and resume gives the uninterrupted weights
    (16k: full before the first checkpoint; 128k: full at the second)."""
    cfg = reference / "t.toml"
    disk = tmpfs("disk", size)
    m = disk / "m"
    p = cli("train", cfg, "-o", m, "--quiet", process=True)  # ends with os._exit
    assert p.returncode == 2, p.stderr
    msg = _one_line(p)
    assert "stopped by an I/O error" in msg and f"lattice resume {m}" in msg
    assert not (m / "checkpoint.h5.tmp").exists() and not (m / "model.json").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    cli("resume", m, "--quiet", check=0)
    assert (m / "model.eqx").read_bytes() == (reference / "model" / "model.eqx").read_bytes()


def test_a_read_only_directory_is_a_clear_error(tmp_path, tmpfs):
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    ro = tmpfs("ro", "1m", "ro")
    p = cli("run", cfg, "-o", ro / "r")
    assert p.returncode == 2, p.stderr
    assert "cannot write there (Read-only file system" in _one_line(p)


def test_compare_of_a_run_with_itself_is_refused(tmp_path):
    """Defect 10: `compare A A` was accepted (z = 0 by construction)."""
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    cli("run", cfg, "-o", tmp_path / "a", "--quiet", check=0)
    for b in (tmp_path / "a", tmp_path / "a" / "ensemble.h5"):
        p = cli("compare", tmp_path / "a", b)
        assert p.returncode == 2 and "the same run as" in _one_line(p)


def test_info_of_a_model_in_training(tmp_path):
    """Defect 10: `info` on a model still in training said "not a trained model"."""
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    cli("run", cfg, "-o", tmp_path / "run", "--quiet", check=0)
    m = tmp_path / "m"
    m.mkdir()
    (m / "config.toml").write_text(f'[train]\nensemble = "{tmp_path / "run"}"\nsteps = 200\n')
    p = cli("info", m, check=0)
    assert "in training (unfinished): step 0 of 200" in p.stdout, p.stdout
    assert f"lattice resume {m}" in p.stdout


def test_an_edited_ensemble_is_refused_naming_the_dataset(tmp_path, reference):
    """Defect 9: multiplying 20 values of /observables/phi2 by 3 changed `measure`'s φ² with
    exit 0. Each block of measurements carries a CRC-32: the edit is found and named."""
    d = tmp_path / "run"
    shutil.copytree(reference / "run", d)
    cli("measure", d, check=0)
    with h5py.File(d / "ensemble.h5", "r+") as f:
        ds = f["observables/phi2"]
        ds[0, 3:23] = ds[0, 3:23] * 3
    p = cli("measure", d)
    assert p.returncode == 2
    assert "/observables/phi2 does not match its checksum (measurements 0-7)" in _one_line(p)


def test_edited_configurations_are_refused(tmp_path, reference):
    from lattice.io.ensemble import EnsembleError, open_ensemble_file

    d = tmp_path / "run"
    shutil.copytree(reference / "run", d)
    open_ensemble_file(d / "ensemble.h5").configs()  # intact: reads
    with h5py.File(d / "ensemble.h5", "r+") as f:
        f["configs"][1, 2] = f["configs"][1, 2] + 1e-12
    with pytest.raises(EnsembleError, match="configs does not match its checksum"):
        open_ensemble_file(d / "ensemble.h5").configs()


def test_a_damaged_checkpoint_is_refused_naming_the_leaf(tmp_path, reference):
    """Defect 9: flipped bytes in the checkpoint's state/phi let `resume` finish with 13 of 16
    datasets different. Each leaf carries its SHA-256; files without one still read."""
    from lattice.io.checkpoint import CheckpointError, read_checkpoint, write_checkpoint

    tree = {"state": {"phi": np.arange(12.0).reshape(3, 4)}, "keys": np.arange(6, dtype=np.uint32)}
    path = tmp_path / "checkpoint.h5"
    write_checkpoint(path, tree, {"next_step": 5})
    got, attrs = read_checkpoint(path, tree)
    assert np.array_equal(got["state"]["phi"], tree["state"]["phi"]) and attrs["next_step"] == 5
    with h5py.File(path, "r+") as f:
        f["state/phi"][1, 1] = -1.0  # the bytes change, the digest does not
    with pytest.raises(CheckpointError, match="state/phi does not match its checksum"):
        read_checkpoint(path, tree)
    with h5py.File(path, "r+") as f:  # a checkpoint of before the digests
        for name in ("state/phi", "keys"):
            del f[name].attrs["sha256"]
    assert read_checkpoint(path, tree)[0]["state"]["phi"][1, 1] == -1.0


def test_a_run_whose_config_was_deleted_resumes_from_its_recorded_config(
    tmp_path, tmpfs, reference
):
    """Defect 10: a run whose config.toml was deleted could not be resumed, although its
    ensemble holds the config text. A full disk leaves the run unfinished, deterministically."""
    from test_jobs import datasets

    disk = tmpfs("disk", "96k")
    d = disk / "r"
    cli("run", write(tmp_path, TINY.format(kind="hmc")), "-o", d, "--quiet", check=2, process=True)
    (d / "config.toml").unlink()
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    cli("resume", d, "--quiet", check=0)
    assert "config.toml was missing: written back from ensemble.h5" in (d / "run.log").read_text()
    want, got = datasets(reference / "run" / "ensemble.h5"), datasets(d / "ensemble.h5")
    assert all(np.array_equal(want[k], got[k]) for k in want) and want.keys() == got.keys()
    p = cli("resume", tmp_path / "nothing")  # nothing recorded: still refused, nothing made
    assert p.returncode == 2 and "no config.toml" in _one_line(p)
    assert not (tmp_path / "nothing").exists()


def test_a_run_killed_in_its_first_seconds_leaves_its_log(tmp_path):
    """Defect 10: a run killed in its first seconds (while it compiles) left no run.log."""
    import os
    import signal

    cfg = write(tmp_path, TINY.format(kind="hmc"))
    d = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lattice", "run", str(cfg), "-o", str(d), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (d / "config.toml").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (d / "checkpoint.h5").exists(), "killed too late to test the first seconds"
    assert "run started by process" in (d / "run.log").read_text()


def test_resume_refuses_a_damaged_checkpoint_naming_the_leaf(tmp_path, tmpfs):
    """Defect 9 through the CLI: an unfinished run (stopped by a full disk) whose checkpoint's
    state/phi was changed; `resume` exits 2 naming the leaf, and writes nothing."""
    disk = tmpfs("disk", "96k")
    d = disk / "r"
    cli("run", write(tmp_path, TINY.format(kind="hmc")), "-o", d, "--quiet", check=2, process=True)
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    with h5py.File(d / "checkpoint.h5", "r+") as f:
        f["state/phi"][0, 0, 0] = 7.0
    before = (d / "ensemble.h5").read_bytes()
    p = cli("resume", d)
    assert p.returncode == 2
    assert "state/phi does not match its checksum" in _one_line(p)
    assert (d / "ensemble.h5").read_bytes() == before
