"""The step-size tuner (lattice.samplers.tuning): eq. (1) finds the root of a known acceptance
curve; a tuned run reaches its target acceptance, records the frozen step, samples exactly
(free field within 4σ), resumes bitwise from a crash inside or after tuning, and gives the same
bits on 1 and 2 devices; bad keys exit 2 naming the key."""

import os
import subprocess
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stats import assert_free_field
from test_jobs import _CrashAt, cli, datasets

from lattice.config.run import ConfigError, parse_config
from lattice.io.reader import open_ensemble
from lattice.numerics.phi4 import Phi4
from lattice.runs.sampling import resume_job, run_job
from lattice.samplers.tuning import dual_averaging, pooled, restart, update

FREE = Phi4.kappa_form([8, 8], 0.2, 0.0)
TUNED = """
name = "tuned"
[lattice]
shape = [8, 8]
[action]
kappa = 0.2
lambda = 0.0
[sampler]
kind = "hmc"
steps = 4
trajectory_length = 0.4
target_acceptance = {target}
{extra}
[run]
chains = 8
seed = 5
thermalization = {therm}
samples = {samples}
measure_every = 1
save_every = 0
checkpoint_every = 20
"""


def _cfg(target=0.7, therm=400, samples=400, extra=""):
    return parse_config(TUNED.format(target=target, therm=therm, samples=samples, extra=extra))


def test_dual_averaging_finds_the_step_of_a_known_acceptance_curve():
    """α(ε) = exp(−(ε/0.3)⁴), the leapfrog shape (⟨ΔH⟩ ∝ ε⁴): with exact (noise-free) α the
    two windows of eq. (1) converge to the root ε* = 0.3 (−log δ)^{1/4} from a step 20× too
    small and one 5× too large."""
    target = 0.75
    root = 0.3 * (-np.log(target)) ** 0.25
    for eps0 in (root / 20, 5 * root):
        da = dual_averaging(eps0, 3)
        for window in range(2):
            if window:
                da = restart(da)
            for m in range(1, 301):
                alpha = jnp.exp(-((jnp.exp(da.log_eps) / 0.3) ** 4))
                da = update(da, jnp.float64(m), alpha, target)
        got = float(np.exp(da.log_eps_bar[0]))
        assert abs(got / root - 1) < 0.02, (eps0, got, root)


def test_pooled_acceptance_is_exact_in_any_order():
    """The integer pooling gives one mean for every chain, the same bits under any
    permutation of the chains; a NaN acceptance counts as 0."""
    a = jax.random.uniform(jax.random.key(0), (64,), jnp.float64)
    p = pooled(a)
    assert np.all(np.asarray(p) == np.asarray(p)[0])
    perm = jax.random.permutation(jax.random.key(1), 64)
    assert float(pooled(a[perm])[0]) == float(p[0])
    assert abs(float(p[0]) - float(a.mean())) < 2**-24
    assert float(pooled(jnp.asarray([1.0, jnp.nan]))[0]) == 0.5


@pytest.mark.parametrize("fa", [False, True])
def test_a_tuned_run_reaches_its_target_and_samples_exactly(tmp_path, fa):
    """HMC and FA-HMC from a step far from the target: the frozen step is recorded in the
    ensemble and the log; the sampling acceptance is within 0.07 of the target (the tuner's
    own tolerance, measured 0.01–0.05), and the free field's φ², χ, G(t) are exact within 4σ."""
    target = 0.7
    extra = "fourier_acceleration = true" if fa else ""
    d = tmp_path / "r"
    run_job(_cfg(target, extra=extra), d)
    ens = open_ensemble(d / "ensemble.h5")
    attrs = ens.config_attrs
    eps = attrs["sampler.tuned_step_size"]
    assert attrs["sampler.tuned_steps"] == 200 and eps != 0.1
    assert abs(attrs["sampler.tuned_trajectory_length"] - 4 * eps) < 1e-12
    assert "sampler.target_acceptance" in attrs  # the config as given, with its target
    assert f"tuned the step over 200 steps: {eps:.6g} x 4 steps" in (d / "run.log").read_text()
    p = cli("info", d)
    assert f"{eps:.6g} x 4 steps over 200 steps (target acceptance 0.7" in p.stdout, p.stdout
    with h5py.File(d / "ensemble.h5") as f:
        acc = float(f["diagnostics/acceptance"][...].mean())
    print(f"fa={fa}: tuned step {eps:.4f}, acceptance {acc:.3f} (target {target})")
    assert abs(acc - target) < 0.07, acc
    assert_free_field(ens.observables, FREE)


def test_a_crash_inside_or_after_tuning_resumes_bitwise(tmp_path):
    """Report 2 falls inside the tuning (50 steps in blocks of 20; the tuner keeps no
    checkpoint, so the resumed run tunes again from step 0), report 5 after it (the checkpoint
    holds the frozen step): both resume to the uninterrupted run's bits."""
    cfg = _cfg(therm=100, samples=60)
    run_job(cfg, tmp_path / "ref")
    ref = datasets(tmp_path / "ref" / "ensemble.h5")
    for n in (2, 5):
        d = tmp_path / f"crash{n}"
        with pytest.raises(RuntimeError, match="crash"):
            run_job(cfg, d, reporter=_CrashAt(n))
        resume_job(d)
        got = datasets(d / "ensemble.h5")
        assert got.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], f"crash at report {n}: {k}")
        with h5py.File(d / "ensemble.h5") as f, h5py.File(tmp_path / "ref" / "ensemble.h5") as g:
            for k in ("sampler.tuned_step_size", "sampler.tuned_acceptance"):
                assert f["config"].attrs[k] == g["config"].attrs[k], k


def test_tuning_on_two_devices_gives_the_one_device_bits(tmp_path):
    """The one-device run in this process (one CPU device), the two-device run in a process
    with two forced host devices."""
    cfg = tmp_path / "t.toml"
    cfg.write_text(TUNED.format(target=0.8, therm=60, samples=20, extra=""))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    cli("run", cfg, "-o", tmp_path / "1", "-q", "--set", "run.devices=1", check=0)
    p = subprocess.run(
        [sys.executable, "-m", "lattice", "run", cfg, "-o", tmp_path / "2", "-q"]
        + ["--set", "run.devices=2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    out = {n: datasets(tmp_path / n / "ensemble.h5") for n in ("1", "2")}
    for k in out["1"]:
        np.testing.assert_array_equal(out["2"][k], out["1"][k], k)


@pytest.mark.parametrize(
    "target, therm, key",
    [
        (1.0, 400, "sampler.target_acceptance"),
        (0.0, 400, "sampler.target_acceptance"),
        (0.7, 10, "run.thermalization"),
    ],
)
def test_bad_tuning_keys_exit_2_naming_the_key(tmp_path, target, therm, key):
    cfg = tmp_path / "t.toml"
    cfg.write_text(TUNED.format(target=target, therm=therm, samples=10, extra=""))
    p = cli("run", cfg, "-o", tmp_path / "r")
    assert p.returncode == 2 and key in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_only_hmc_takes_a_target(tmp_path):
    text = TUNED.format(target=0.7, therm=400, samples=10, extra="").replace(
        'kind = "hmc"\nsteps = 4\ntrajectory_length = 0.4', 'kind = "mala"'
    )
    with pytest.raises(ConfigError, match="target_acceptance"):
        parse_config(text)
