"""Ensemble jobs through the real CLI: layout, bad input, refusals, and crash safety with real
SIGKILLs followed by ``resume`` — the result must equal an uninterrupted run bitwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from lattice.io.reader import open_ensemble

TINY = """
name = "tiny"
[lattice]
shape = [6, 4]
[action]
kappa = 0.2
lambda = 0.1
[sampler]
kind = "{kind}"
[run]
chains = 3
seed = 5
thermalization = 20
samples = 30
measure_every = 2
save_every = 4
checkpoint_every = 8
"""


#: Every command runs in this process by default, through typer's CliRunner: the same app,
#: exit status and separate stdout/stderr, without a Python start and JAX's imports per call
#: (about 2.5 s each; the suite's time budget) and with the programs this process compiled
#: already. The test process computes in x64 mode, as `run`, `resume` of a run, `check` and
#: `levels` do in their own process (conftest.py); `train` and `resume` of a training run with
#: x64 off, as in a process of their own (the augmentation's flips depend on the mode, so the
#: bits of a model do). A test about the process itself -- a signal or a kill, the os._exit
#: after an I/O failure (a full disk), forced host devices, the exit of the interpreter --
#: passes ``process=True``.
def cli(*args, check=None, timeout=300, process=False):
    args = [str(a) for a in args]
    if process:
        p = subprocess.run(
            [sys.executable, "-m", "lattice", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    else:
        p = _in_process(args)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p


def _trains(args: list[str]) -> bool:
    """Whether ``lattice ARGS`` trains: `train`, or `resume` of a directory whose config has a
    [train] table (how the command tells a model directory from a run directory)."""
    import tomllib

    if args[:1] == ["train"]:
        return True
    if args[:1] != ["resume"] or len(args) < 2:
        return False
    try:
        return "train" in tomllib.loads((Path(args[1]) / "config.toml").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def _in_process(args: list[str]) -> subprocess.CompletedProcess:
    """``lattice ARGS`` in this process; an exception that escapes the app is reported as the
    command line would show it: a traceback on stderr and exit status 1."""
    import contextlib
    import traceback

    import jax
    from typer.testing import CliRunner

    from lattice.app.cli import app

    mode = jax.enable_x64(False) if _trains(args) else contextlib.nullcontext()
    with mode:
        r = CliRunner().invoke(app, args)
    stderr, code = r.stderr, r.exit_code
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        exc = r.exception
        stderr += "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        code = 1
    return subprocess.CompletedProcess(["lattice", *args], code, r.stdout, stderr)


def write(tmp_path: Path, text: str, name="c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def datasets(path: Path) -> dict[str, np.ndarray]:
    """Every dataset's committed part, for bitwise comparison."""
    out = {}
    with h5py.File(path, "r") as f:
        n, ns = int(f.attrs["committed"]), int(f.attrs["saved_committed"])
        for name in f["observables"]:
            out[f"observables/{name}"] = f["observables"][name][:, :n]
        out["acceptance"] = f["diagnostics/acceptance"][:, :n]
        if "configs" in f:
            out["configs"] = f["configs"][:, :ns]
            out["configs_index"] = f["configs_index"][:ns]
    return out


@pytest.mark.parametrize("kind", ["langevin", "hmc"])
def test_run_writes_the_documented_layout(tmp_path, kind):
    cfg = write(tmp_path, TINY.format(kind=kind))
    cli("run", cfg, check=0)
    run_dir = tmp_path / "c"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.h5",
        "config.toml",
        "ensemble.h5",
        "run.log",
    ]
    with h5py.File(run_dir / "ensemble.h5", "r") as f:
        assert f.attrs["format"] == "lattice-ensemble" and f.attrs["format_version"] == 1
        assert f.attrs["complete"] and f.attrs["committed"] == 30
        assert "[sampler]" in f["config"].attrs["toml"]
        assert f["config"].attrs["sampler.exactness"] == (
            "exact" if kind == "hmc" else "asymptotic"
        )
        assert f["observables/phi2"].shape == (3, 30)
        assert f["observables/G"].shape == (3, 30, 6)
        assert f["observables/phi2"].maxshape == (3, None)
        assert f["configs"].shape == (3, 8, 6, 4) and f["configs"].chunks == (1, 1, 6, 4)
        np.testing.assert_array_equal(f["configs_index"][:], np.arange(0, 30, 4))
        # the saved configurations are the measured ones
        phi2 = np.mean(f["configs"][:] ** 2, axis=(2, 3))
        np.testing.assert_allclose(phi2, f["observables/phi2"][:, ::4], rtol=1e-12)
        G = f["observables/G"][:]
        np.testing.assert_allclose(G.sum(-1), f["observables/chi"][:], rtol=1e-10)
    # start-up, each loop's compilation and each loop's own rate are lines of their own, in order
    log = (run_dir / "run.log").read_text()
    marks = [
        "start-up: ",
        "compiled the thermalization loop in ",
        "thermalized after 20 steps: 20 steps in ",
        "compiled the sampling loop in ",
        "sampled 60 steps in ",
        "complete: 30 measurements",
    ]
    at = [log.find(m) for m in marks]
    assert -1 not in at and at == sorted(at), log
    p = cli("info", run_dir, check=0)
    assert "complete" in p.stdout and "[6, 4]" in p.stdout


def test_overrides_apply_to_any_key(tmp_path):
    cfg = write(tmp_path, TINY.format(kind="langevin"))
    cli(
        "run",
        cfg,
        "-o",
        tmp_path / "r",
        "--set",
        "run.samples=9",
        "--set",
        "sampler.scheme=rk2",
        "--set",
        "lattice.shape=[4,4,2]",
        check=0,
    )
    ens = open_ensemble(tmp_path / "r" / "ensemble.h5")
    assert ens.committed == 9 and ens.config_attrs["sampler.scheme"] == "rk2"
    assert ens.observables["G"].shape == (3, 9, 4)
    assert "samples = 9" in (tmp_path / "r" / "config.toml").read_text()


BAD = {
    "malformed": ("[lattice\nshape = [4]", "malformed TOML"),
    "unknown section": (TINY + "\n[extra]\nx = 1\n", "extra"),
    "unknown key": (TINY.replace("seed = 5", "seed = 5\nsed = 1"), "run.sed"),
    "wrong type": (TINY.replace("chains = 3", 'chains = "3"'), "run.chains"),
    "shape entry < 1": (TINY.replace("[6, 4]", "[6, 0]"), "lattice.shape"),
    "step size <= 0": (TINY + "", "sampler.step_size"),
    "chains <= 0": (TINY.replace("chains = 3", "chains = 0"), "run.chains"),
    "free field kappa >= 1/(2d)": (
        TINY.replace("kappa = 0.2", "kappa = 0.25").replace("lambda = 0.1", "lambda = 0"),
        "action.kappa",
    ),
    "negative lambda": (TINY.replace("lambda = 0.1", "lambda = -0.1"), "action.lambda"),
    "missing kind": (TINY.replace('kind = "{kind}"', ""), "sampler.kind"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_config_exits_2_with_one_line_naming_the_key(tmp_path, case):
    text, key = BAD[case]
    text = text.replace("{kind}", "langevin")
    if case == "step size <= 0":
        text = text.replace('kind = "langevin"', 'kind = "langevin"\nstep_size = -0.01')
    cfg = write(tmp_path, text)
    p = cli("run", cfg)
    assert p.returncode == 2, p.stderr
    assert key in p.stderr, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "c").exists()  # refused before any work


def test_finished_run_is_never_overwritten_without_force(tmp_path):
    cfg = write(tmp_path, TINY.format(kind="langevin"))
    cli("run", cfg, check=0)
    before = datasets(tmp_path / "c" / "ensemble.h5")
    p = cli("run", cfg, "--set", "run.seed=6")
    assert p.returncode == 2 and "finished run" in p.stderr and "--force" in p.stderr
    after = datasets(tmp_path / "c" / "ensemble.h5")
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    cli("run", cfg, "--set", "run.seed=6", "--force", check=0)
    forced = datasets(tmp_path / "c" / "ensemble.h5")
    assert not np.array_equal(forced["observables/phi2"], before["observables/phi2"])


def test_resume_refuses_an_edited_config(tmp_path):
    cfg = write(tmp_path, TINY.format(kind="langevin"))
    cli("run", cfg, check=0)
    conf = tmp_path / "c" / "config.toml"
    conf.write_text(
        conf.read_text()
        .replace("step_size = 0.01", "step_size = 0.02")
        .replace("seed = 5", "seed = 7")
    )
    p = cli("resume", tmp_path / "c")
    assert p.returncode == 2
    assert "sampler.step_size" in p.stderr and "run.seed" in p.stderr


@pytest.mark.parametrize("content", ["foreign", "truncated", "text"])
def test_info_on_bad_files_is_a_clear_error(tmp_path, content):
    bad = tmp_path / "bad.h5"
    if content == "foreign":
        with h5py.File(bad, "w") as f:
            f["x"] = np.arange(3)
    elif content == "text":
        bad.write_text("not hdf5")
    else:
        cfg = write(tmp_path, TINY.format(kind="langevin"))
        cli("run", cfg, check=0)
        data = (tmp_path / "c" / "ensemble.h5").read_bytes()
        bad.write_bytes(data[: len(data) // 3])
    p = cli("info", bad)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and str(bad) in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


KILL = TINY.replace("samples = 30", "samples = 2000").replace(
    "checkpoint_every = 8", "checkpoint_every = 10"
)
KILL = KILL.replace("thermalization = 20", "thermalization = 800")
KILL = KILL.replace("measure_every = 2", "measure_every = 40").replace("[6, 4]", "[16, 16]")


def _progress(run_dir: Path) -> int:
    """Sampler steps recorded in the checkpoint (replaced atomically, so safe to read)."""
    try:
        with h5py.File(run_dir / "checkpoint.h5", "r") as f:
            return int(f.attrs["next_step"])
    except (OSError, KeyError):
        return -1


@pytest.mark.long  # five processes of their own, killed at random moments of a long run
def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path, seed):
    """Kill `lattice run`/`resume` with SIGKILL at random moments; after every kill the file
    opens, the committed part is a prefix of the uninterrupted result and never shrinks;
    the resumed run ends bitwise equal to the uninterrupted one.

    Each cycle waits until the process has advanced past the previous checkpoint, then kills
    it after a random 0-1.5 s, so the kills land at random points of sampling, writing and
    checkpointing whatever the speed of the machine."""
    cfg = write(tmp_path, KILL.format(kind="mala"))
    cli("run", cfg, "-o", tmp_path / "ref", check=0)
    ref = datasets(tmp_path / "ref" / "ensemble.h5")

    rng = np.random.default_rng(seed)
    run_dir = tmp_path / "killed"
    committed, kills, last, during_sampling = 0, 0, -1, 0
    cmd = [sys.executable, "-m", "lattice", "run", str(cfg), "-o", str(run_dir)]
    while kills < 4:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _progress(run_dir) <= last:
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is not None:
            break  # finished
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        last = _progress(run_dir)
        ens = open_ensemble(run_dir / "ensemble.h5")  # the file opens
        assert ens.committed >= committed  # nothing committed is lost
        committed = ens.committed
        during_sampling += 0 < committed < ens.samples
        print(f"kill {kills}: step {last}, {committed}/{ens.samples} committed")
        for k, v in datasets(run_dir / "ensemble.h5").items():
            want = ref[k][: len(v)] if k == "configs_index" else ref[k][:, : v.shape[1]]
            np.testing.assert_array_equal(v, want, k)
        cmd = [sys.executable, "-m", "lattice", "resume", str(run_dir)]
    assert kills >= 3, f"the run finished after {kills} kills"
    assert during_sampling >= 2, "no kill landed while measurements were being written"
    cli("resume", run_dir, check=0)
    final = datasets(run_dir / "ensemble.h5")
    assert final.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(final[k], ref[k], k)
    assert open_ensemble(run_dir / "ensemble.h5").complete
    assert "resume" in (run_dir / "run.log").read_text()


class _CrashAt:
    """A reporter whose ``n``-th progress report raises: a crash in the middle of a run."""

    def __init__(self, n: int):
        self.n = n

    def start(self, phase, total, done):
        pass

    def advance(self, done, acceptance=None, note=None):
        self.n -= 1
        if self.n == 0:
            raise RuntimeError("crash")

    def log(self, message):
        pass

    def finish(self):
        pass


@pytest.mark.parametrize("kind", ["langevin", "hmc"])
def test_chain_last_run_crashed_mid_sampling_resumes_bitwise(tmp_path, kind):
    """float32 Langevin and HMC run their loops chain-last (docs/physics.md, "Layout"): a
    run stopped in thermalization or sampling resumes from its checkpoint to bitwise the
    uninterrupted result (in process, through the Python API)."""
    from lattice.config.run import parse_config
    from lattice.runs.sampling import resume_job, run_job

    text = TINY.format(kind=kind).replace("chains = 3", 'chains = 3\ndtype = "float32"')
    cfg = parse_config(text.replace("[6, 4]", "[8, 5]"))
    run_job(cfg, tmp_path / "ref")
    ref = datasets(tmp_path / "ref" / "ensemble.h5")
    assert ref["configs"].dtype == np.float32
    partial = 0
    for n in (1, 3, 6):
        run_dir = tmp_path / f"crash{n}"
        with pytest.raises(RuntimeError, match="crash"):
            run_job(cfg, run_dir, reporter=_CrashAt(n))
        if (run_dir / "ensemble.h5").exists():
            with h5py.File(run_dir / "ensemble.h5", "r") as f:
                partial += 0 < int(f.attrs["committed"]) < 30
        resume_job(run_dir)
        got = datasets(run_dir / "ensemble.h5")
        assert got.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], f"crash at report {n}: {k}")
    assert partial >= 1, "no crash landed after a part of the samples was committed"
