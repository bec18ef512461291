"""The path-length pilot (lattice.samplers.pilot, ``[sampler] target_acceptance`` of the
diffusion sampler): the ladder and the rule; a run records a ladder and a K that follow the
rule, its recorded estimates are the pilot's proposals recomputed from the seed, it samples at
K and its acceptance agrees with the pilot's estimate; a crash during or after the pilot
resumes to the same bits; other methods refuse the key."""

import h5py
import jax
import numpy as np
import pytest
from stats import estimate
from test_jobs import _CrashAt, cli, datasets
from test_spectral import RUN as SPECTRAL_RUN
from test_spectral import _saved_network_model

from lattice.config.run import ConfigError, parse_config
from lattice.numerics.analysis import independence_acceptance
from lattice.numerics.phi4 import Phi4
from lattice.runs.assemble import build_sampler
from lattice.runs.sampling import resume_job, run_job
from lattice.samplers.pilot import (
    PILOT_PROPOSALS,
    choose,
    choose_cheapest,
    cost,
    ladder,
    pilot_keys,
)
from lattice.samplers.pilot import proposal_log_weights as log_weights

THEORY = Phi4.kappa_form([4, 4], 0.2, 0.0)
TARGET = 0.5
#: test_spectral's 4×4 free-field diffusion run, with the pilot (cap 32) and 5 checkpoints
RUN = SPECTRAL_RUN.replace(
    "steps = 16",
    'kernel = "analytic"\nsteps = 32\ntarget_acceptance = {target}\n{extra}',
).replace("save_every = 0", "save_every = 0\ncheckpoint_every = 20")


def _cfg(model, target=TARGET, extra=""):
    return parse_config(RUN.format(model=model, target=target, extra=extra))


@pytest.fixture(scope="session")
def piloted(tmp_path_factory):
    """An untrained network with the isotropic kernel, whose acceptance rises with K, and one
    run with the pilot (target 0.5, cap 32)."""
    tmp = tmp_path_factory.mktemp("pilot")
    model = _saved_network_model(tmp / "m", THEORY, True)
    run_job(_cfg(model), tmp / "ref")
    return model, tmp / "ref"


def test_ladder_and_rule():
    assert ladder(32) == (4, 8, 16, 32)
    assert ladder(48) == (4, 8, 16, 32, 48)
    assert ladder(4) == (4,) and ladder(3) == (3,)
    assert choose((4, 8, 16), (0.2, 0.55, 0.7), 0.5) == (8, True)
    assert choose((4, 8, 16), (0.2, 0.3, 0.4), 0.5) == (16, False)
    assert choose((4, 8, 16, 32), (0.1, 0.27, 0.25, 0.28), 0.5) == (8, False)  # the plateau
    # "cost": the fewest K (2 − α)/α among the K with α ≥ 0.1 (all when none has)
    ks, acc = (4, 8, 16, 32, 64, 128), (0.083, 0.148, 0.238, 0.400, 0.417, 0.454)
    assert choose_cheapest(ks, acc) == 8  # K = 4 (92.4) is below the floor; 8: 100 < 16: 118
    assert cost(8, 0.148) == pytest.approx(8 * 1.852 / 0.148)
    assert choose_cheapest((4, 8), (0.05, 0.09)) == 4 and choose_cheapest((4, 8), (0, 0)) == 8
    assert choose_cheapest((4, 8, 16), (0.5, 0.7, 0.7)) == 4  # 12 against 14.9 and 29.7
    assert choose_cheapest((4, 8), (0.2, 0.6)) == 8  # 36 against 18.7


def test_a_run_records_the_pilot_and_samples_at_its_k(piloted):
    """The recorded ladder is ladder(cap) up to the first K at the target (else all of it),
    K follows the rule, the estimates are those of the seed's pilot proposals recomputed here
    (same bits), every measurement used K score evaluations, and the run's mean acceptance
    agrees with the pilot's estimate at K within 4σ (Γ-method ⊕ delete-one jackknife)."""
    model, d = piloted
    with h5py.File(d / "ensemble.h5") as f:
        a = dict(f["config"].attrs)
        acc = f["diagnostics/acceptance"][:]
        evals = f["diagnostics/score_evaluations"][:]
    ks, accs = a["sampler.pilot_path_steps"], a["sampler.pilot_acceptance"]
    k = int(a["sampler.tuned_path_steps"])
    print(f"pilot: {dict(zip(ks.tolist(), np.round(accs, 3).tolist(), strict=True))}, K = {k}")
    assert int(a["sampler.pilot_proposals"]) == PILOT_PROPOSALS and a["sampler.steps"] == 32
    full = ladder(32)
    reached = np.flatnonzero(np.asarray(accs) >= TARGET)
    assert tuple(ks) == full[: (reached[0] + 1 if len(reached) else len(full))]
    assert (k, len(reached) > 0) == choose(ks, accs, TARGET)
    assert 1 < len(ks), "the test needs a ladder of more than one rung"
    np.testing.assert_array_equal(evals, k)

    cfg = parse_config((d / "config.toml").read_text())  # the resolved config, with the cap
    keys = pilot_keys(cfg.run.seed, PILOT_PROPOSALS, cfg.run.prng)
    at_k = None
    for kk, recorded in zip(ks, accs, strict=True):
        c = cfg.model_copy(update={"sampler": cfg.sampler.with_path_steps(int(kk))})
        lw = log_weights(build_sampler(c, THEORY), keys, THEORY.shape, np.float64)
        assert independence_acceptance(lw) == recorded, kk
        at_k = lw if kk == k else at_k
    n = len(at_k)
    jack = np.array([independence_acceptance(np.delete(at_k, i)) for i in range(n)])
    err_pilot = np.sqrt((n - 1) / n * np.sum((jack - jack.mean()) ** 2))
    value, err_run = estimate(acc)
    z = (value - accs[list(ks).index(k)]) / np.hypot(err_run, err_pilot)
    print(f"run acceptance {value:.3f} ± {err_run:.3f}, pilot {accs[-1]:.3f} ± {err_pilot:.3f}")
    assert abs(z) < 4, z


@pytest.mark.parametrize("crash_at", [1, 7])
def test_a_crash_during_or_after_the_pilot_resumes_bitwise(piloted, tmp_path, crash_at):
    """Report 1 is the pilot's first K (nothing of the pilot is checkpointed: the resumed run
    pilots again); report 7 is in the sampling (the checkpoint holds K)."""
    model, ref = piloted
    d = tmp_path / "r"
    with pytest.raises(RuntimeError, match="crash"):
        run_job(_cfg(model), d, reporter=_CrashAt(crash_at))
    resume_job(d)
    got, want = datasets(d / "ensemble.h5"), datasets(ref / "ensemble.h5")
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], name)
    with h5py.File(d / "ensemble.h5") as f, h5py.File(ref / "ensemble.h5") as g:
        for name in ("sampler.tuned_path_steps", "sampler.pilot_acceptance"):
            np.testing.assert_array_equal(f["config"].attrs[name], g["config"].attrs[name])


def test_the_cost_pilot_tries_the_whole_ladder_and_keeps_the_cheapest_k(piloted, tmp_path):
    """target_acceptance = "cost": every rung of ladder(cap) is tried, whatever its
    acceptance, and K is choose_cheapest of the recorded estimates; run.log says why."""
    model, _ = piloted
    cfg = _cfg(model, target='"cost"').model_copy()
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"samples": 4})})
    run_job(cfg, tmp_path / "c")
    with h5py.File(tmp_path / "c" / "ensemble.h5") as f:
        a = dict(f["config"].attrs)
    ks, accs = tuple(int(k) for k in a["sampler.pilot_path_steps"]), a["sampler.pilot_acceptance"]
    assert ks == ladder(32)
    assert int(a["sampler.tuned_path_steps"]) == choose_cheapest(ks, accs)
    assert "the fewest steps per independent proposal" in (tmp_path / "c" / "run.log").read_text()


def test_info_shows_the_pilot(piloted):
    with h5py.File(piloted[1] / "ensemble.h5") as f:
        k = int(f["config"].attrs["sampler.tuned_path_steps"])
    out = cli("info", piloted[1], check=0).stdout
    assert "path steps" in out and f"K = {k} by the pilot" in out, out


@pytest.mark.parametrize(
    "extra, target, message",
    [
        ('method = "ode"', TARGET, "method = 'sde' or 'multilevel' with metropolis = true"),
        ("metropolis = false", TARGET, "method = 'sde' or 'multilevel' with metropolis = true"),
        ("", 1.0, "between 0 and 1"),
        ("", '"cheapest"', "or 'cost'"),
    ],
)
def test_bad_pilot_keys_name_the_key(tmp_path, extra, target, message):
    text = RUN.format(model=tmp_path, target=target, extra=extra)
    if "ode" in extra:  # kernel is a key of method = "sde" only
        text = text.replace('kernel = "analytic"\n', "")
    with pytest.raises(ConfigError, match="sampler.target_acceptance") as e:
        parse_config(text)
    assert message in str(e.value)


def test_the_pilot_keys_do_not_depend_on_the_chains():
    """One stream per seed: every process of a multi-process run picks the same K."""
    a = jax.random.key_data(pilot_keys(3, 8))
    assert np.array_equal(a, jax.random.key_data(pilot_keys(3, 8)))
    assert not np.array_equal(a, jax.random.key_data(pilot_keys(4, 8)))
