"""The diffusion sampler: exact with the closed-form free-field score, exact with a poor model
(Metropolis does not care about model quality), reweighting, the visible bias of raw samples,
and bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from stats import assert_consistent, zscore
from test_jobs import cli

from lattice import Phi4, run_chains
from lattice.config.sampler import Diffusion
from lattice.numerics import exact
from lattice.results.measure import _Estimator, _normalized_weights
from lattice.samplers.diffusion import diffusion
from lattice.score.factory import build_network
from lattice.score.gaussian import exact_gaussian_model
from lattice.score.network import NetworkSpec
from lattice.score.sde import VESDE

THEORY = Phi4.kappa_form([4, 4], 0.2, 0.0)
SDE = VESDE(0.01, 20.0)


def _save_model(path, seed=2, channels=4):
    """A small untrained network saved as a model, with the score-norm table the analytic
    path kernel needs (measured on exact free-field draws, as training would)."""
    import jax

    from lattice.io.model import save_model
    from lattice.score.gaussian import free_field_samples
    from lattice.score.path import score_norms

    spec = NetworkSpec(channels=channels, blocks=1, embedding=8)
    net = build_network(spec, THEORY, 0.8, seed=seed)
    sig = [float(v) for v in SDE.sigma(np.linspace(0.0, 1.0, 9))]
    phi = free_field_samples(THEORY, jax.random.key(seed), 64).astype(np.float32)
    u = score_norms(net.batch, phi, sig, jax.random.key(0))
    save_model(path, net, SDE, {"name": path.name, "score_norms": {"sigma": sig, "u": list(u)}})
    return path


def _run(sampler, n, seed, chains=8):
    return run_chains(
        sampler, THEORY, chains=chains, seed=seed, n_meas=n, measure_every=1, thermalization=1
    )


def test_exact_score_ode_mh_accepts_almost_always_and_is_exact(seed):
    s = Diffusion(model="in-memory", method="ode", rtol=1e-7, atol=1e-7).build(
        THEORY, model=exact_gaussian_model(THEORY, SDE)
    )
    assert s.exactness == "exact"
    res = _run(s, 150, seed)
    assert res["acceptance"].mean() >= 0.99, res["acceptance"].mean()
    ref = exact.free_field_observables(THEORY)
    assert_consistent(res["obs"]["phi2"], ref["phi2"], "phi2")
    assert_consistent(res["obs"]["chi"], ref["chi"], "chi")


FREE_RUN = """
[lattice]
shape = [4, 4]
[action]
kappa = 0.2
lambda = 0.0
[sampler]
kind = "hmc"
[run]
chains = 4
seed = 3
thermalization = 50
samples = 400
measure_every = 1
save_every = 1
checkpoint_every = 400
"""

POOR_TRAIN = """
[train]
ensemble = "{ensemble}"
steps = 20
warmup = 5
log_every = 20
checkpoint_every = 20
learning_rate = 3e-3
[network]
physics = false
channels = 8
blocks = 2
fourier_features = 4
embedding = 16
"""


@pytest.fixture(scope="session")
def poor_model(tmp_path_factory):
    """A plain network trained for only 20 steps on HMC free-field configurations."""
    from lattice.config.train import parse_train_config
    from lattice.io.model import load_model
    from lattice.runs.training import train_model

    d = tmp_path_factory.mktemp("poor")
    (d / "free.toml").write_text(FREE_RUN)
    cli("run", d / "free.toml", "-o", d / "free", "-q", check=0)
    train_model(parse_train_config(POOR_TRAIN.format(ensemble=d / "free")), d / "m")
    return load_model(d / "m")


def test_metropolis_makes_a_poor_model_exact(poor_model, seed):
    """A briefly trained model as the proposal: the acceptance is low, the observables are
    still those of e^{−S} within 4σ (τ_int from the Γ-method absorbs the rejections)."""
    s = Diffusion(model="in-memory", method="ode").build(THEORY, model=poor_model)
    assert s.exactness == "exact"
    res = _run(s, 150, seed)
    acc = float(res["acceptance"][:, 1:].mean())
    print(f"acceptance of the 20-step model: {acc:.3f}")
    assert 0.05 < acc < 0.7
    ref = exact.free_field_observables(THEORY)
    for name in ("phi2", "chi", "action"):
        assert_consistent(res["obs"][name], ref[name], name)


def test_reweighting_with_the_exact_ode_density(seed):
    s = Diffusion(model="in-memory", method="ode", metropolis=False, rtol=1e-7, atol=1e-7).build(
        THEORY, model=exact_gaussian_model(THEORY, SDE)
    )
    assert s.weighted and s.exactness == "approximate"  # the raw draws; weights fix them
    res = _run(s, 100, seed)
    assert float(res["acceptance"].mean()) == 1.0  # nothing is rejected without Metropolis
    # log w = −S − log q: with the exact score the ODE pushes the prior onto e^{−S}/Z up to
    # the solver's tolerance, so log w = log Z = (V/2) log 2π − ½ Σ_p log A(p) for every draw
    # (measured: mean off by 1.2e-4 = 0.6σ, spread 0.006), the weights are flat (ESS/N ≈ 1)
    # and the self-normalized ⟨φ²⟩ is the exact value within 4σ
    lw = res["diagnostics"]["log_w"]
    a = THEORY.kernel()
    log_z = 0.5 * a.size * np.log(2 * np.pi) - 0.5 * np.sum(np.log(a))
    assert_consistent(lw, log_z, "log w = log Z")
    w = _normalized_weights(lw)
    assert float(w.sum() ** 2 / np.sum(w * w)) / w.size > 0.99
    ref = exact.free_field_observables(THEORY)["phi2"]
    rw = _Estimator(w, 1.5).primary(res["obs"]["phi2"])
    assert abs(rw.value - ref) / rw.error < 4, (rw.value, rw.error, ref)


def test_raw_reverse_path_samples_are_visibly_biased_and_their_weights_say_so(seed):
    """With 4 steps the reverse path is visibly biased even with the exact score: the raw
    ⟨φ²⟩ misses the exact value by far more than 4σ. The sampler records every draw's path
    weight (it is "weighted"), so measure reweights instead of hiding the bias; with many
    steps the raw bias shrinks below the noise of this sample."""
    s = Diffusion(
        model="in-memory", method="sde", kernel="analytic", metropolis=False, steps=4
    ).build(THEORY, model=exact_gaussian_model(THEORY, SDE))
    assert s.exactness == "approximate" and s.weighted
    res = _run(s, 200, seed)
    z = zscore(res["obs"]["phi2"], exact.free_field_observables(THEORY)["phi2"])
    print(f"phi2 z-score of raw 4-step reverse-path samples: {z:+.1f}")
    assert abs(z) > 4
    s = Diffusion(
        model="in-memory", method="sde", kernel="analytic", metropolis=False, steps=400
    ).build(THEORY, model=exact_gaussian_model(THEORY, SDE))
    res = _run(s, 200, seed)
    assert_consistent(res["obs"]["phi2"], exact.free_field_observables(THEORY)["phi2"], "phi2")


@pytest.mark.parametrize(
    ("method", "defaults", "converged"),
    [
        ("pc", dict(steps=50), dict(steps=100, snr=0.01)),
        ("annealed", dict(steps=50), dict(steps=200, steps_per_level=20)),
    ],
)
def test_other_raw_methods_are_approximate_and_converge(method, defaults, converged, seed):
    """pc and annealed Langevin have no density, so their draws are `approximate`. With the
    exact score their bias is visible at V = 16 with the defaults and 50 steps (pc +20%,
    annealed +150%: far beyond 4σ), and gone in their limits (snr → 0; more Langevin time per
    level), where ⟨φ²⟩ must be the exact value within 4σ (docs/diffusion.md)."""
    ref = exact.free_field_observables(THEORY)["phi2"]
    model = exact_gaussian_model(THEORY, SDE)
    s = Diffusion(model="in-memory", method=method, metropolis=False, **defaults).build(
        THEORY, model=model
    )
    assert s.exactness == "approximate" and not s.weighted
    z = zscore(_run(s, 100, seed)["obs"]["phi2"], ref)
    print(f"{method} at its defaults, 50 steps: phi2 z = {z:+.1f}")
    assert z > 4
    s = Diffusion(model="in-memory", method=method, metropolis=False, **converged).build(
        THEORY, model=model
    )
    assert_consistent(_run(s, 100, seed + 1)["obs"]["phi2"], ref, "phi2")


def test_metropolis_needs_a_density():
    with pytest.raises(ValueError, match="'ode' or 'sde'"):
        diffusion(
            THEORY,
            exact_gaussian_model(THEORY, SDE),
            method="pc",
            metropolis_step=True,
            steps=10,
            snr=0.16,
            corrector_steps=1,
        )


RUN = """
[lattice]
shape = [4, 4]
[action]
kappa = 0.2
lambda = 0.0
[sampler]
kind = "diffusion"
model = "{model}"
[run]
chains = 2
seed = 1
thermalization = 1
samples = 20
measure_every = 1
save_every = 0
checkpoint_every = 10
"""


def test_missing_or_incompatible_model_exits_2_before_work(tmp_path):
    cfg = tmp_path / "d.toml"
    cfg.write_text(RUN.format(model=tmp_path / "nowhere"))
    p = cli("run", cfg, check=2)
    assert "sampler.model" in p.stderr and "no such model" in p.stderr
    assert not (tmp_path / "d").exists()
    # a model trained for another shape
    from lattice.io.model import save_model

    other = Phi4.kappa_form([6, 6], 0.2, 0.0)
    net = build_network(NetworkSpec(channels=4, blocks=1, embedding=8), other, 0.6)
    save_model(tmp_path / "m6", net, SDE, {"name": "m6"})
    cfg.write_text(RUN.format(model=tmp_path / "m6"))
    p = cli("run", cfg, check=2)
    assert "[6, 6]" in p.stderr and "shape" in p.stderr and "Traceback" not in p.stderr
    # a model without the score-norm table of the analytic kernel, and no training ensemble
    net = build_network(NetworkSpec(channels=4, blocks=1, embedding=8), THEORY, 0.6)
    save_model(tmp_path / "bare", net, SDE, {"name": "bare"})
    cfg.write_text(RUN.format(model=tmp_path / "bare"))
    p = cli("run", cfg, check=2)
    assert "score_norms" in p.stderr and "kernel = 'em'" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "d").exists()


def test_lattice_run_with_a_model_writes_an_exact_ensemble_with_diagnostics(tmp_path):
    import json

    from lattice.io.reader import open_ensemble

    _save_model(tmp_path / "m")
    cfg = tmp_path / "d.toml"
    cfg.write_text(RUN.format(model=tmp_path / "m"))
    cli("run", cfg, "-q", check=0)
    ens = open_ensemble(tmp_path / "d" / "ensemble.h5")
    assert ens.config_attrs["sampler.exactness"] == "exact"
    assert ens.config_attrs["sampler.name"] == "diffusion-sde-mh"  # the default
    assert ens.config_attrs["sampler.kernel"] == "analytic"
    # the model's provenance: resolved path and the checksum of its weights
    sha = json.loads((tmp_path / "m" / "model.json").read_text())["weights"]["sha256"]
    assert ens.config_attrs["sampler.model_sha256"] == sha
    assert ens.config_attrs["sampler.model_path"] == str((tmp_path / "m").resolve())
    assert sha[:12] in cli("info", tmp_path / "d", check=0).stdout
    assert {"proposal_log_w", "score_evaluations"} <= set(ens.diagnostics)
    assert np.all(ens.diagnostics["score_evaluations"] == 100)  # K = steps
    assert ens.weights is None
    out = cli("measure", tmp_path / "d", "--json", check=0).stdout
    d = json.loads(out)["diffusion"]
    assert 0 <= d["acceptance"] <= 1 and d["proposals"] == 40
    # reweighting instead of Metropolis: /weights/log_w, and measure says it reweighted
    cli("run", cfg, "-o", tmp_path / "w", "--set", "sampler.metropolis=false", "-q", check=0)
    ens = open_ensemble(tmp_path / "w" / "ensemble.h5")
    assert ens.weights is not None and ens.weights.shape == (2, 20)
    res = json.loads(cli("measure", tmp_path / "w", "--json", check=0).stdout)
    assert 0 < res["reweighting"]["ess"] <= 40
    # the reported ESS is (Σw)²/Σw² of the stored log-weights
    w = np.exp(ens.weights - np.max(ens.weights))
    assert res["reweighting"]["ess"] == pytest.approx(w.sum() ** 2 / np.sum(w * w), rel=1e-9)


def test_weighted_measurement_matches_a_direct_computation():
    """The self-normalized estimate Σ w O / Σ w of measure_ensemble, against numpy."""
    from lattice.results.measure import _Estimator, _normalized_weights

    rng = np.random.default_rng(0)
    lw = rng.normal(size=(3, 400))
    o = rng.normal(size=(3, 400)) + 0.3 * lw
    w = _normalized_weights(lw)
    r = _Estimator(w, 1.5).primary(o)
    assert r.value == pytest.approx(float(np.sum(w * o) / np.sum(w)), rel=1e-12)
    assert r.error > 0
    lw[0, 0] = np.nan
    assert _normalized_weights(lw)[0, 0] == 0.0


@pytest.mark.long  # SIGKILL of a `lattice run` process of its own
def test_killed_diffusion_run_resumes_bitwise(tmp_path):
    """SIGKILL a diffusion run after its first checkpoint; `lattice resume` ends with every
    dataset (observables, diagnostics, saved fields) bitwise equal to an uninterrupted run."""
    import os
    import signal
    import time

    from test_jobs import _progress, datasets

    _save_model(tmp_path / "m", seed=3)
    text = RUN.format(model=tmp_path / "m").replace("save_every = 0", "save_every = 2")
    text = text.replace("samples = 20", "samples = 200").replace(
        'model = "', 'steps = 200\nmodel = "'
    )
    cfg = tmp_path / "d.toml"
    cfg.write_text(text.replace("checkpoint_every = 10", "checkpoint_every = 4"))
    cli("run", cfg, "-o", tmp_path / "ref", "-q", check=0)
    ref = datasets(tmp_path / "ref" / "ensemble.h5")
    d = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lattice", "run", str(cfg), "-o", str(d), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while _progress(d) <= 5:
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cli("resume", d, "-q", check=0)
    got = datasets(d / "ensemble.h5")
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], k)
