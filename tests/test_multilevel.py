"""The multilevel (coarse-to-fine) sampler of issue 26: the conditional network's symmetries and
its σ → 0 limit, exact weights for a deliberately poor model (log Z of the free field, of an
interacting strip's transfer matrix, and after transfer to twice the extents; MH against the
exact free field), per-level parts of log w that sum to it, and `lattice train` / `run` /
`info` with [train] method = "multilevel", its resume and its errors."""

from __future__ import annotations

import dataclasses
import json
import shutil

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stats import assert_free_field
from test_jobs import cli

from lattice import Phi4, run_chains
from lattice.config.sampler import Diffusion
from lattice.io.model import load_model, save_multilevel
from lattice.numerics.analysis import kish_ess, log_mean_exp
from lattice.numerics.exact import free_log_z
from lattice.numerics.transfer import strip_log_z
from lattice.numerics.wavelet import haar_merge, haar_split
from lattice.score.conditional import ConditionalNet
from lattice.score.factory import build_network
from lattice.score.gaussian import free_field_samples
from lattice.score.model import ModelError
from lattice.score.multilevel import (
    MultilevelModel,
    coarse_theory,
    level_contributions,
    multilevel_proposal,
    resample_table,
)
from lattice.score.multilevel_train import split_levels
from lattice.score.network import NetworkSpec, ScoreNet
from lattice.score.sde import VESDE
from lattice.score.spectral import measure_spectral, spectral_from_dict

SPEC = NetworkSpec(channels=4, blocks=1, embedding=8, fourier_features=4)


def _poor_model(theory: Phi4, levels: int, data_theory: Phi4 | None = None, seed: int = 0):
    """Untrained networks (a deliberately poor model) with spectral tables measured on 256
    exact free-field draws of ``data_theory`` (default: ``theory``, which must be free then)."""
    nd = theory.ndim
    src = data_theory or theory
    x = jnp.asarray(free_field_samples(src, jax.random.key(seed), 256), jnp.float32)
    pairs, cn = split_levels(x, nd, levels)
    rms = lambda a: float(jnp.sqrt(jnp.mean(a * a)))  # noqa: E731
    key = jax.random.key(seed + 1)
    plain = dataclasses.replace(SPEC, physics=False)
    sdes = tuple(VESDE(0.01 * rms(a), 6.0 * np.sqrt(a[0].size) * rms(a))
                 for a in [d for d, _ in pairs] + [cn])  # fmt: skip
    conds = tuple(
        ConditionalNet(SPEC if j == 0 else plain, nd, rms(d), rms(c),
                       theory if j == 0 else None, key=jax.random.fold_in(key, j))
        for j, (d, c) in enumerate(pairs)
    )  # fmt: skip
    coarse = ScoreNet(plain, coarse_theory(theory, levels), rms(cn), key=key)
    tables = []
    for j, (d, c) in enumerate(pairs):
        t = measure_spectral(conds[j].batch, sdes[j], d, context=c, ndim=nd)
        tables.append(spectral_from_dict(t, "test"))
    tables.append(spectral_from_dict(measure_spectral(coarse.batch, sdes[-1], cn), "test"))
    scale = rms(pairs[0][1]) / rms(x)
    return MultilevelModel(coarse, conds, sdes, theory, scale, tuple(tables))


def _log_w(model, theory, K, n=512, seed=0):
    """log w [n] and the per-level parts [n, levels + 1] of ``n`` independent proposals."""
    propose, info = multilevel_proposal(model, theory.shape, K, jnp.float64)
    levels = len(info["levels"]) - 1

    @jax.jit
    @jax.vmap
    def one(k):
        r = propose(k)
        parts = level_contributions(theory, r.phi, levels, r.log_ratios)
        return -theory.action(r.phi) + jnp.sum(r.log_ratios), jnp.stack(parts)

    lw, parts = one(jax.random.split(jax.random.key(seed), n))
    return np.asarray(lw), np.asarray(parts)


# ------------------------------------------------------------------ the conditional network
def test_conditional_net_is_z2_odd_periodic_and_tends_to_the_force():
    """ŝ(−y | −c) = −ŝ(y | c) exactly; a shift of the fine field by two sites (one coarse
    site) shifts ŝ; the physics-informed form tends to the details of the force F as σ → 0."""
    theory = Phi4.kappa_form([8, 8], 0.26, 0.02)
    net = ConditionalNet(SPEC, 2, 0.7, 1.3, theory, key=jax.random.key(0))
    k1, k2 = jax.random.split(jax.random.key(1))
    phi = jax.random.normal(k1, (8, 8), jnp.float64)
    c, d = haar_split(phi, 2)
    s = net(d, 0.3, c)
    assert s.shape == (3, 4, 4)
    np.testing.assert_array_equal(np.asarray(net(-d, 0.3, -c)), -np.asarray(s))
    cs, ds = haar_split(jnp.roll(phi, (2, 2), (0, 1)), 2)
    np.testing.assert_allclose(net(ds, 0.3, cs), jnp.roll(s, (1, 1), (1, 2)), atol=1e-5)
    _, f_d = haar_split(theory.force(haar_merge(c, d, 2)), 2)
    gap = [float(jnp.max(jnp.abs(net(d, sig, c) - f_d))) for sig in (1e-1, 1e-2, 1e-3)]
    assert gap[2] < 1e-3 * float(jnp.max(jnp.abs(f_d))) and gap[0] > 10 * gap[2], gap


def test_a_multilevel_model_from_the_factory_round_trips_through_load(tmp_path):
    """build_network(levels = n) makes the networks of a multilevel model; save_multilevel then
    load_model (which rebuilds the skeleton with the same factory) gives the same pytree, every
    weight bit for bit (perturbed away from the skeleton, so a no-op load would fail); an
    architecture this lattice does not know is refused (ModelError)."""
    theory = Phi4.kappa_form([8, 8], 0.2, 0.0)
    nets = build_network(SPEC, theory, [0.5, 0.9], seed=3, levels=1, sigma_coarse=[1.1])
    nets = jax.tree_util.tree_map(lambda x: x * 1.5 if eqx.is_inexact_array(x) else x, nets)
    coarse, cond = nets
    assert cond.theory == theory and coarse.spec == dataclasses.replace(SPEC, physics=False)
    x = jnp.asarray(free_field_samples(theory, jax.random.key(0), 8), jnp.float32)
    [(d, c)], cn = split_levels(x, 2, 1)
    sdes = (VESDE(0.005, 4.0), VESDE(0.01, 9.0))
    tables = [
        measure_spectral(cond.batch, sdes[0], d, context=c, ndim=2),
        measure_spectral(coarse.batch, sdes[1], cn),
    ]
    read = tuple(spectral_from_dict(t, "test") for t in tables)
    model = MultilevelModel(coarse, (cond,), sdes, theory, 0.9, read)
    save_multilevel(tmp_path / "ml", model, SPEC, {"name": "ml", "spectral_levels": tables})
    loaded = load_model(tmp_path / "ml")
    got = (loaded.coarse, *loaded.conditionals)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(nets)
    leaves = [jax.tree_util.tree_leaves(eqx.filter(t, eqx.is_array)) for t in (nets, got)]
    for a, b in zip(*leaves, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    meta = json.loads((tmp_path / "ml" / "model.json").read_text())
    assert "architecture" not in meta["network"]  # the default writes the table of old models
    meta["network"]["architecture"] = "nope"
    (tmp_path / "ml" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not match their checksum meta_sha256"):
        load_model(tmp_path / "ml")
    del meta["meta_sha256"]  # a file of before the digest: read, and its numbers checked
    (tmp_path / "ml" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="unknown network architecture 'nope'"):
        load_model(tmp_path / "ml")


# ------------------------------------------------------------------ exact weights
def test_a_poor_model_gives_the_free_field_log_z_and_its_level_parts_sum_to_log_w():
    """Free field 8×8 (κ = 0.2), two Haar levels, untrained networks: log mean(w) over 512
    proposals is the exact log Z within 4σ (jackknife σ); the per-level parts of log w
    (level_contributions) sum to it to round-off; the weights are far from constant (the
    model is poor), so the test is not trivially passed."""
    theory = Phi4.kappa_form([8, 8], 0.2, 0.0)
    model = _poor_model(theory, 2)
    lw, parts = _log_w(model, theory, K=8)
    np.testing.assert_allclose(parts.sum(1), lw, rtol=0, atol=1e-8)
    value, error = log_mean_exp(lw)
    exact = free_log_z(theory)
    print(f"log Z = {value:.4f} ± {error:.4f} (exact {exact:.4f}); var log w {lw.var():.3f}")
    assert abs(value - exact) / error < 4
    assert lw.var() > 0.05 and kish_ess(np.exp(lw - lw.max())) > 50
    # one K per level (sampler.level_steps): still exact
    lw, _ = _log_w(model, theory, K=(12, 6, 4), seed=1)
    value, error = log_mean_exp(lw)
    print(f"K = (12, 6, 4): log Z = {value:.4f} ± {error:.4f}")
    assert abs(value - exact) / error < 4


def test_level_steps_are_checked_against_the_model_and_the_pilot():
    """sampler.level_steps: one K per level of the model (else ModelError naming the key and
    the levels), refused beside the pilot and by other methods; the cost counts each level's
    K times its share of V."""
    from lattice.config import ConfigError
    from lattice.score.model import ModelError

    theory = Phi4.kappa_form([8, 8], 0.2, 0.0)
    model = _poor_model(theory, 2)
    s = Diffusion(model="m", method="multilevel", steps=8, level_steps=[16, 4, 2])
    sampler = s.build(theory, model=model)
    assert dict(sampler.metadata)["multilevel_levels"] == "level0,level1,coarse"
    with pytest.raises(ModelError, match="sampler.level_steps: 2 values for a model of 3"):
        Diffusion(model="m", method="multilevel", level_steps=[8, 8]).build(theory, model=model)
    from lattice.config.run import parse_config

    base = RUN.format(L=8, model="m", extra="{extra}")
    for extra, message in (
        ("level_steps = [8, 8, 8]\ntarget_acceptance = 0.5", "picks one K for all of them"),
        ("level_steps = [8, 1, 8]", "integers >= 2"),
    ):
        with pytest.raises(ConfigError, match="^sampler.level_steps: .*" + message):
            parse_config(base.format(extra=extra))
    with pytest.raises(ConfigError, match="sampler.level_steps: only used by method = 'multil"):
        parse_config(base.format(extra="level_steps = [8, 8]").replace('method = "multilevel"', ""))
    _, info = multilevel_proposal(model, theory.shape, (16, 4, 2), jnp.float64)
    assert info["evaluations"] == 16 * 1 + 4 / 4 + 2 / 16 and info["steps"] == [16, 4, 2]


def test_log_z_of_an_interacting_strip_agrees_with_the_transfer_matrix():
    """Interacting [8, 2] strip (κ = 0.25, λ = 0.1), one Haar level, proposed by untrained
    networks with tables from a free field at κ = 0.2: log Z within 4σ of the transfer
    matrix, and that free field's log Z is not (so the test can fail)."""
    theory = Phi4.kappa_form([8, 2], 0.25, 0.1)
    free = Phi4.kappa_form([8, 2], 0.2, 0.0)
    model = _poor_model(theory, 1, data_theory=free)
    lw, _ = _log_w(model, theory, K=8, n=1024, seed=3)
    value, error = log_mean_exp(lw)
    ref = strip_log_z(theory)
    print(f"log Z = {value:.5f} ± {error:.5f}, transfer matrix {ref:.5f}")
    assert abs(value - ref) / error < 4
    assert abs(free_log_z(free) - ref) / error > 10


def test_transfer_to_twice_the_extents_keeps_log_z_exact():
    """A model of the 8×8 free field samples 16×16 (one added level with the finest network
    and its table resampled): log Z within 4σ of the exact one at 16×16."""
    small = Phi4.kappa_form([8, 8], 0.2, 0.0)
    big = Phi4.kappa_form([16, 16], 0.2, 0.0)
    model = _poor_model(small, 1)
    lw, parts = _log_w(model, big, K=8, n=512, seed=4)
    assert parts.shape == (512, 3)
    value, error = log_mean_exp(lw)
    print(f"transfer: log Z = {value:.4f} ± {error:.4f} (exact {free_log_z(big):.4f})")
    assert abs(value - free_log_z(big)) / error < 4


def test_resampled_table_is_even_and_keeps_the_values():
    """The nearest-momentum resampling of a per-mode table: even in p (so the coloured noise
    is real), equal to the old table at the momenta both grids have."""
    rng = np.random.default_rng(0)
    a = rng.uniform(1, 2, (3, 4, 4))
    a = 0.5 * (a + np.roll(np.flip(a, (1, 2)), 1, (1, 2)))  # even in p
    log_m = list(np.log(np.stack([a, a])).ravel())
    table = {"sigma": [0.1, 1.0], "shape": [3, 4, 4], "log_error": log_m, "power": list(a.ravel())}
    t = spectral_from_dict(table, "t")
    r = resample_table(t, (8, 8), 2)
    p = r.power
    assert p.shape == (3, 8, 8)
    np.testing.assert_array_equal(p, np.roll(np.flip(p, (1, 2)), 1, (1, 2)))
    np.testing.assert_array_equal(p[:, ::2, ::2], a)
    assert r.error(np.array([0.5])).shape == (1, 3, 8, 8)


def test_multilevel_mh_on_the_free_field_is_exact():
    """Independence MH with the poor two-level model on the 8×8 free field: φ², χ and G(t)
    within 4σ of their exact values (Γ-method). The `coarse` row of `lattice levels`'
    diagnostic (fresh proposals, results/levels.py eq. (3)) estimates the acceptance this
    chain has, within 4σ (Γ-method over the chain ⊕ the diagnostic's standard error); its rows
    are named and costed finest first."""
    from lattice.numerics.analysis import gamma_method
    from lattice.results.levels import level_acceptance

    theory = Phi4.kappa_form([8, 8], 0.2, 0.0)
    model = _poor_model(theory, 2, seed=5)
    s = Diffusion(model="in-memory", method="multilevel", steps=8).build(theory, model=model)
    res = run_chains(s, theory, chains=8, seed=2, n_meas=300, thermalization=10)
    acc = gamma_method(np.asarray(res["acceptance"], np.float64))
    print(f"acceptance {acc.value:.3f} ± {acc.error:.3f}")
    assert 0.05 < acc.value < 0.99
    assert_free_field(res["obs"], theory)
    d = res["diagnostics"]
    assert {"level_log_w_level0", "level_log_w_level1", "level_log_w_coarse"} <= set(d)
    configs = free_field_samples(theory, jax.random.key(12), 48)
    diag = level_acceptance(model, theory, configs, 8, draws=32, seed=1)
    rows = {r.level: r for r in diag.levels}
    assert list(rows) == ["level0", "level1", "coarse"] and rows["coarse"].redrawn[-1] == "coarse"
    full = rows["coarse"]
    z = (full.acceptance - acc.value) / np.hypot(full.error, acc.error)
    print({k: (r.acceptance, r.error, r.log_w_var) for k, r in rows.items()}, z)
    assert abs(z) < 4
    assert (
        rows["level0"].evaluations
        < rows["level1"].evaluations
        < full.evaluations
        == 8 * (1 + 1 / 4 + 1 / 16)
    )


# ------------------------------------------------------------------ the CLI
DATA = """
name = "data"
[lattice]
shape = [8, 8]
[action]
kappa = 0.25
lambda = 0.02
[sampler]
kind = "hmc"
steps = 8
[run]
chains = 4
seed = 1
thermalization = 50
samples = 200
measure_every = 2
save_every = 1
"""

TRAIN = """
name = "ml"
[train]
ensemble = "{ensemble}"
method = "multilevel"
steps = {steps}
warmup = 10
log_every = 20
checkpoint_every = 20
[network]
channels = 4
blocks = 1
embedding = 8
"""

RUN = """
name = "mlrun"
[lattice]
shape = [{L}, {L}]
[action]
kappa = 0.25
lambda = 0.02
[sampler]
kind = "diffusion"
model = "{model}"
method = "multilevel"
steps = 8
{extra}
[run]
chains = 2
seed = 2
thermalization = 2
samples = 30
measure_every = 1
save_every = 0
"""


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("ml")
    (d / "data.toml").write_text(DATA)
    cli("run", d / "data.toml", "-o", d / "data", "-q", check=0)
    (d / "t.toml").write_text(TRAIN.format(ensemble=d / "data", steps=40))
    cli("train", d / "t.toml", "-o", d / "ml", "-q", check=0)
    return d


def test_train_writes_a_multilevel_model_with_per_level_losses(trained):
    """model.json has kind = "multilevel", its levels, SDEs and one spectral table per level;
    history.csv has every level's losses; info shows the levels; the plots are written."""
    m = trained / "ml"
    meta = json.loads((m / "model.json").read_text())
    assert meta["kind"] == "multilevel"
    ml = meta["multilevel"]
    assert ml["levels"] == 1 and ml["coarse_shape"] == [4, 4] and ml["physics"] is True
    assert len(ml["sdes"]) == len(ml["spectral"]) == 2
    assert ml["spectral"][0]["shape"] == [3, 4, 4] and ml["spectral"][1]["shape"] == [4, 4]
    head = (m / "history.csv").read_text().splitlines()[0].split(",")
    for name in ("level0", "coarse"):
        assert f"train_loss_{name}" in head and f"val_loss_{name}" in head, head
    assert (m / "loss.png").stat().st_size > 10_000
    info = cli("info", m, check=0).stdout
    assert "multilevel" in info and "[4, 4]" in info, info


def test_a_multilevel_run_records_its_level_parts_and_transfers(trained):
    """`lattice run` with method = "multilevel" records level_log_w_<level> for every
    proposal, and measure reports log_z; the same model samples 16×16 with transfer = true
    (and is refused without it, exit 2, one line naming sampler.transfer)."""
    m = trained / "ml"
    cfg = trained / "r.toml"
    cfg.write_text(RUN.format(L=8, model=m, extra=""))
    cli("run", cfg, "-o", trained / "r8", "-q", check=0)
    with h5py.File(trained / "r8" / "ensemble.h5") as f:
        g = f["diagnostics"]
        parts = sum(np.asarray(g[f"level_log_w_{n}"]) for n in ("level0", "coarse"))
        np.testing.assert_allclose(parts, np.asarray(g["proposal_log_w"]), rtol=1e-9, atol=1e-9)
    out = json.loads(cli("measure", trained / "r8", "--json", check=0).stdout)
    assert out["observables"]["log_z"]["error"] > 0
    assert list(out["diffusion"]["level_log_w_std"]) == ["level0", "coarse"], out["diffusion"]
    assert "per-level std of log(e^-S/q)" in cli("measure", trained / "r8", check=0).stdout
    # `lattice levels`: the run saved no configurations, so it needs --ensemble (exit 2, one
    # line); with the training ensemble, one row per level and a plot; an HMC run is refused
    p = cli("levels", trained / "r8", check=2)
    assert "--ensemble" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    png = trained / "levels.png"
    args = ("--ensemble", trained / "data", "--configs", "4", "--draws", "4", "--plot", png)
    lv = json.loads(cli("levels", trained / "r8", *args, "--json", check=0).stdout)
    assert [r["level"] for r in lv["levels"]] == ["level0", "coarse"] and lv["steps"] == [8, 8]
    assert all(0 <= r["acceptance"] <= 1 and r["log_w_var"] > 0 for r in lv["levels"]), lv
    assert lv["configurations"] == 4 and png.stat().st_size > 10_000
    p = cli("levels", trained / "data", check=2)
    assert "not a multilevel run" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    damaged = trained / "damaged"  # issue 44: a configuration block failing its checksum
    shutil.copytree(trained / "data", damaged)
    with h5py.File(damaged / "ensemble.h5", "r+") as f:
        f["configs"][0, 1] = f["configs"][0, 1] + 1e-9
    p = cli("levels", trained / "r8", "--ensemble", damaged, "--configs", "4", check=2)
    assert "/configs does not match its checksum" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    cfg.write_text(RUN.format(L=16, model=m, extra=""))
    p = cli("run", cfg, "-o", trained / "r16x", "-q", check=2)
    assert "transfer" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    cfg.write_text(RUN.format(L=16, model=m, extra="transfer = true"))
    cli("run", cfg, "-o", trained / "r16", "-q", check=0)
    with h5py.File(trained / "r16" / "ensemble.h5") as f:
        assert "level_log_w_added1" in f["diagnostics"]
        assert np.all(np.isfinite(f["diagnostics"]["proposal_log_w"][()]))
    out = json.loads(cli("measure", trained / "r16", "--json", check=0).stdout)
    assert list(out["diffusion"]["level_log_w_std"]) == ["added1", "level0", "coarse"]


def test_killed_multilevel_training_resumes_bitwise(trained):
    """A multilevel training stopped after its step-20 checkpoint (in this process, with x64
    off as under `lattice train`) and finished by `lattice resume` ends with the weights and
    history of the uninterrupted `lattice train`."""
    from lattice.config.train import load_train_config
    from lattice.runs.progress import QuietReporter
    from lattice.runs.training import train_model

    class Killer(QuietReporter):  # stops after the step-20 checkpoint, before step 40's
        def advance(self, step, note=""):
            if step >= 40:
                raise SystemExit(3)

    d = trained / "killed"
    with jax.enable_x64(False), pytest.raises(SystemExit) as stop:
        train_model(load_train_config(trained / "t.toml"), d, reporter=Killer())
    assert stop.value.code == 3
    assert (d / "checkpoint.h5").exists() and not (d / "model.json").exists()
    cli("resume", d, "-q", check=0)
    assert (d / "model.eqx").read_bytes() == (trained / "ml" / "model.eqx").read_bytes()
    strip = lambda rows: [r.rsplit(",", 1)[0] for r in rows]  # noqa: E731 - drop seconds
    ref = (trained / "ml" / "history.csv").read_text().splitlines()
    assert strip((d / "history.csv").read_text().splitlines()) == strip(ref)


@pytest.mark.parametrize(
    ("train_extra", "needle"),
    [
        ("levels = 4", "train.levels"),
        ('sde = "vp"', "train.sde"),
    ],
)
def test_bad_multilevel_training_configs_exit_2_naming_the_key(tmp_path, trained, train_extra,
                                                               needle):  # fmt: skip
    cfg = tmp_path / "t.toml"
    text = TRAIN.format(ensemble=trained / "data", steps=40).replace(
        'method = "multilevel"', f'method = "multilevel"\n{train_extra}'
    )
    cfg.write_text(text)
    p = cli("train", cfg, "-o", tmp_path / "m", "-q", check=2)
    assert needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_levels_without_multilevel_and_a_single_model_are_refused(tmp_path, trained):
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        TRAIN.format(ensemble=trained / "data", steps=40).replace(
            'method = "multilevel"', "levels = 2"
        )
    )
    p = cli("train", cfg, "-o", tmp_path / "m", "-q", check=2)
    assert "train.levels" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    from pathlib import Path

    single = Path(__file__).resolve().parent.parent / "lattice" / "models" / "score_8x8_critical"
    run = tmp_path / "r.toml"
    run.write_text(RUN.format(L=8, model=single, extra="").replace("0.25", "0.27").replace(
        "0.02\n", "0.022\n"))  # fmt: skip
    p = cli("run", run, "-o", tmp_path / "r", "-q", check=2)
    assert "multilevel" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


# ------------------------------------------------------------------ which level limits it
def _conditional_log_z(theory: Phi4, c, levels: int) -> float:
    """log ∫ Π dd e^{−S(φ)} over every detail of ``levels`` Haar levels, the level-``levels``
    coarse field fixed at ``c``: a Gaussian integral for the free field. With the orthonormal
    rows B of φ ↦ c and a complement D, φ = Bᵀc + Dᵀd and S = ½ φᵀAφ, it is
    (n_d/2) log 2π − ½ log det(DADᵀ) − ½ cᵀ(BABᵀ − BADᵀ(DADᵀ)⁻¹DABᵀ)c."""
    n = int(np.prod(theory.shape))
    flat = lambda v: theory.action(v.reshape(theory.shape))  # noqa: E731
    A = np.asarray(jax.hessian(flat)(jnp.zeros(n, jnp.float64)))
    assert float(flat(jnp.zeros(n))) == 0.0
    eye = jnp.eye(n, dtype=jnp.float64).reshape((n, *theory.shape))
    _, top = split_levels(eye, theory.ndim, levels)
    B = np.asarray(top).reshape(n, -1).T  # [n_c, n]: c = B φ
    D = np.linalg.svd(B, full_matrices=True)[2][B.shape[0] :]  # the orthonormal complement
    Add, Adc = D @ A @ D.T, D @ A @ B.T
    c = np.asarray(c, np.float64).ravel()
    schur = B @ A @ B.T - Adc.T @ np.linalg.solve(Add, Adc)
    sign, logdet = np.linalg.slogdet(Add)
    assert sign > 0
    return 0.5 * len(D) * np.log(2 * np.pi) - 0.5 * logdet - 0.5 * c @ schur @ c


def test_a_redraw_below_a_level_has_the_exact_conditional_weight():
    """Free field 8×8, two levels, the poor model: redraw levels 0 … top of an exact draw φ,
    its field above them kept (top = 0, 1). E[w] over the redraws, w = e^{−S(φ')}/q(redrawn
    levels), is the conditional partition function ∫ Π dd e^{−S} at that coarse field, a
    Gaussian integral: log mean(w) of 2048 redraws agrees within 4σ (jackknife), and the
    redraws do keep the coarse field."""
    from lattice.score.multilevel import multilevel_redraw

    theory = Phi4.kappa_form([8, 8], 0.2, 0.0)
    model = _poor_model(theory, 2, seed=3)
    phi = jnp.asarray(free_field_samples(theory, jax.random.key(11), 1)[0], jnp.float64)
    redraw, info = multilevel_redraw(model, theory.shape, 8, jnp.float64)
    assert info["levels"] == ["level0", "level1", "coarse"]

    for top in (0, 1):

        @jax.jit
        @jax.vmap
        def one(k, top=top):
            r = redraw(k, phi, top)
            return r.phi, -theory.action(r.phi) + jnp.sum(r.log_ratios)

        out, lw = one(jax.random.split(jax.random.fold_in(jax.random.key(4), top), 2048))
        lw = np.asarray(lw)
        _, c_new = split_levels(out, 2, top + 1)
        _, c_old = split_levels(phi[None], 2, top + 1)
        np.testing.assert_allclose(
            np.asarray(c_new), np.broadcast_to(c_old, c_new.shape), atol=1e-12
        )
        assert float(jnp.std(out[:, 0, 0])) > 0.1  # the levels below were redrawn
        value, error = log_mean_exp(lw)
        exact = _conditional_log_z(theory, c_old[0], top + 1)
        print(f"top {top}: log Z(c) = {value:.4f} ± {error:.4f} (exact {exact:.4f})")
        assert abs(value - exact) / error < 4
        assert lw.var() > 0.01


def test_pairwise_acceptance_is_the_mean_over_pairs():
    """Eq. (3) of results/levels.py against the direct sum over ordered pairs, and 1 for equal
    weights."""
    from lattice.results.levels import pairwise_acceptance

    lw = np.random.default_rng(0).normal(0.0, 1.5, (5, 7))
    w = np.exp(lw)
    direct = [
        sum(min(r[a], r[b]) for a in range(7) for b in range(7) if a != b) / (6 * r.sum())
        for r in w
    ]
    np.testing.assert_allclose(pairwise_acceptance(lw), direct, rtol=1e-12)
    np.testing.assert_allclose(pairwise_acceptance(np.full((2, 4), 3.0)), 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        pairwise_acceptance(np.zeros((3, 1)))


# ------------------------------------------------------------------ target score matching
def test_the_force_target_has_the_noisy_score_as_its_mean():
    """Target score matching (multilevel_train.py eq. (2)): at every level the Haar part t_j
    of the force F = −∂S/∂φ has E[t_j | y, c] = ∇_y log q_σ(y | c), so the mixed loss and the
    denoising loss differ by a constant independent of the score. Free field 8×8, two levels,
    exact draws: for two different scores (an untrained network and −y/(σ_d²/2 + σ²)), the
    difference of their losses is the same under both objectives (paired draws, within 4σ at
    each level, family of 3), while the losses themselves differ between the objectives.
    At level 1 and the coarsest field t_j averages over the finer details: this is where
    the identity is not trivial."""
    from lattice.score.multilevel_train import tsm_loss
    from lattice.score.train import dsm_loss

    theory = Phi4.kappa_form([8, 8], 0.2, 0.0)
    model = _poor_model(theory, 2, seed=7)
    n = 4096
    x = jnp.asarray(free_field_samples(theory, jax.random.key(21), n), jnp.float32)
    pairs, cn = split_levels(x, 2, 2)
    fp, fn = split_levels(theory.force(x), 2, 2)
    conds = zip(model.conditionals, pairs, strict=True)
    nets = [lambda y, s, c=c, m=m: m.batch(y, s, c) for m, (_, c) in conds]
    nets.append(model.coarse.batch)
    xs, ts = [d for d, _ in pairs] + [cn], [f for f, _ in fp] + [fn]
    k1, k2 = jax.random.split(jax.random.key(22))
    for j, (net, xj, tj) in enumerate(zip(nets, xs, ts, strict=True)):
        sd2 = float(jnp.mean(xj * xj))
        sig = (
            model.sdes[j]
            .sigma(jax.random.uniform(jax.random.fold_in(k1, j), (n,)))
            .astype(jnp.float32)
        )
        z = jax.random.normal(jax.random.fold_in(k2, j), xj.shape, jnp.float32)
        w = 1.0 / (1.0 + float(jnp.mean(tj * tj)) * sig * sig)
        gauss = lambda y, s, sd2=sd2: -y / (0.5 * sd2 + s.reshape((-1,) + (1,) * (y.ndim - 1)) ** 2)  # noqa: E731
        d_tsm = tsm_loss(net, xj, sig, z, tj, w) - tsm_loss(gauss, xj, sig, z, tj, w)
        d_dsm = dsm_loss(net, xj, sig, z) - dsm_loss(gauss, xj, sig, z)
        diff = np.asarray(d_tsm - d_dsm, np.float64)
        zs = diff.mean() / (diff.std(ddof=1) / np.sqrt(n))
        gap = np.asarray(tsm_loss(net, xj, sig, z, tj, w) - dsm_loss(net, xj, sig, z))
        print(f"level {j}: mean {diff.mean():.3g}, z {zs:+.2f}; loss gap {gap.mean():.3g}")
        assert abs(zs) < 4
        assert abs(float(np.mean(d_dsm))) > 4 * float(np.std(d_dsm) / np.sqrt(n))
        assert abs(gap.mean()) > 4 * gap.std() / np.sqrt(n)
    zero = jnp.zeros((n,), jnp.float32)
    np.testing.assert_array_equal(  # w = 0 is the denoising loss
        np.asarray(tsm_loss(nets[-1], xs[-1], sig, z, ts[-1], zero)),
        np.asarray(dsm_loss(nets[-1], xs[-1], sig, z)),
    )


def test_the_objective_is_a_multilevel_key():
    from lattice.config import ConfigError
    from lattice.config.train import parse_train_config

    text = '[train]\nensemble = "x"\nobjective = "tsm"\n'
    with pytest.raises(
        ConfigError, match="^train.objective: 'tsm' is only used by method = 'multilevel'"
    ):
        parse_train_config(text)
    with pytest.raises(ConfigError, match="train.objective"):
        parse_train_config(text.replace('"tsm"', '"nce"') + 'method = "multilevel"\n')
    cfg = parse_train_config(text + 'method = "multilevel"\n')
    assert cfg.train.objective == "tsm"
