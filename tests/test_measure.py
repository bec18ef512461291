"""`lattice measure` through the CLI: the JSON contract, agreement with exact free-field values
for an exact sampler and for Euler Langevin at its step size, and bad input."""

import json

import pytest
from test_jobs import cli

from lattice.config.run import build_theory, parse_config
from lattice.io.reader import open_ensemble
from lattice.numerics import exact
from lattice.results.compare import compare_runs
from lattice.results.measure import measure_ensemble, to_pyerrors

FREE = """
name = "free"
[lattice]
shape = [8, 8]
[action]
kappa = 0.2
lambda = 0.0
[sampler]
kind = "{kind}"
[run]
chains = 8
seed = 3
thermalization = 100
samples = 400
measure_every = {every}
save_every = 0
"""


@pytest.fixture(scope="module")
def hmc_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    cfg = d / "free.toml"
    cfg.write_text(FREE.format(kind="hmc", every=1))
    assert cli("run", cfg).returncode == 0
    return d / "free"


def test_measure_json_is_one_object_that_agrees_with_the_exact_free_field(hmc_run):
    p = cli("measure", hmc_run, "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)  # exactly one JSON object on stdout, nothing else
    assert set(data) >= {"observables", "chains", "samples", "config"}
    assert list(data) == ["observables", "chains", "samples", "config", "exactness", "status",
                          "status_detail", "committed", "planned"]  # fmt: skip
    assert data["status"] == "complete" and data["committed"] == data["planned"] == 400
    # the JSON is the one serialisation of the Measurement measure_ensemble returns
    res = measure_ensemble(open_ensemble(hmc_run))
    assert json.loads(json.dumps(res.to_json())) == data
    assert data["chains"] == 8 and data["samples"] == 400
    assert data["config"]["sampler"]["kind"] == "hmc"
    obs = data["observables"]
    # every stored scalar in the order of observable_shapes, then the derived ones, then G
    order = ["action", "phi2", "phi4", "m", "abs_m", "m2", "m4", "chi", "sd", "dsdphi"]
    order += ["chi_conn", "binder", "G"]
    assert list(obs) == order
    names = set(order)
    for name in names - {"G"}:
        assert set(obs[name]) >= {"value", "error", "tau_int", "tau_int_error"}
        assert list(obs[name]) == ["value", "error", "tau_int", "tau_int_error", "window", "exact"]
    assert list(obs["G"]) == ["value", "error", "exact"]
    th = build_theory(parse_config(data["config"]))
    want = exact.free_field_observables(th)
    for name in ("phi2", "chi", "action", "sd", "phi4", "abs_m", "chi_conn", "binder", "m"):
        o = obs[name]
        assert o["exact"] == pytest.approx(want[name])
        assert abs(o["value"] - want[name]) / o["error"] < 4, (name, o)
    assert len(obs["G"]["value"]) == 8
    for t in (0, 1, 4):
        z = (obs["G"]["value"][t] - want["G"][t]) / obs["G"]["error"][t]
        assert abs(z) < 4, (t, z)


def test_measure_table_discard_and_plots(hmc_run, tmp_path):
    p = cli("measure", hmc_run, "--discard", "100", "--plots", tmp_path / "pl")
    assert p.returncode == 0, p.stderr
    pngs = sorted(f.name for f in (tmp_path / "pl").iterdir())
    assert pngs == ["G.png", "hist_m.png", "history.png", "meff.png", "rho.png", "tau_int.png"]
    assert all((tmp_path / "pl" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in pngs)
    assert "chi_conn" in p.stdout and "tau_int" in p.stdout and "exact" in p.stdout
    assert "300 measurements" in " ".join(p.stdout.split())  # the title wraps, never cut
    assert "windowing failed" not in p.stdout  # every window was found


def test_a_too_short_run_is_told_its_errors_are_lower_bounds(hmc_run, tmp_path):
    """40 Langevin steps of ε = 0.001 from a hot start: τ_int ≫ N/2, so the Γ-method windowing
    fails; `measure` says so, and `compare` says it of every flagged pair it concerns."""
    cfg = tmp_path / "slow.toml"
    cfg.write_text(
        FREE.format(kind="langevin", every=1)
        .replace('kind = "langevin"', 'kind = "langevin"\nstep_size = 0.001')
        .replace("thermalization = 100", "thermalization = 0")
        .replace("samples = 400", "samples = 40")
    )
    assert cli("run", cfg, "-q").returncode == 0
    slow = open_ensemble(tmp_path / "slow" / "ensemble.h5")
    failed = {n for n, o in measure_ensemble(slow).observables.items() if o.gamma.windowing_failed}
    assert failed
    p = cli("measure", tmp_path / "slow")
    assert p.returncode == 0 and "windowing failed" in p.stdout, p.stdout
    assert all(n in p.stdout.split("windowing failed")[1] for n in failed)
    res = compare_runs([hmc_run, tmp_path / "slow"])
    assert res.flagged  # unthermalized and biased: something is flagged
    for f in res.flagged:
        assert f.unsure == ([str(tmp_path / "slow")] if f.observable in failed else [])


def test_euler_langevin_is_compared_with_its_exact_finite_step_values(tmp_path):
    cfg = tmp_path / "free.toml"
    cfg.write_text(
        FREE.format(kind="langevin", every=5).replace(
            'kind = "langevin"', 'kind = "langevin"\nstep_size = 0.1'
        )
    )
    assert cli("run", cfg).returncode == 0
    obs = json.loads(cli("measure", tmp_path / "free", "--json").stdout)["observables"]
    th = build_theory(parse_config(cfg.read_text()))
    assert obs["phi2"]["exact"] == pytest.approx(exact.free_phi2(th, step_size=0.1, scheme="euler"))
    assert abs(obs["phi2"]["value"] - obs["phi2"]["exact"]) / obs["phi2"]["error"] < 4


def test_pyerrors_export_matches_our_gamma_method(hmc_run):
    ens = open_ensemble(hmc_run / "ensemble.h5")
    o = to_pyerrors(ens, "phi2")
    o.gamma_method(S=1.5)
    from lattice.numerics.analysis import gamma_method

    r = gamma_method(ens.observables["phi2"])
    assert o.value == pytest.approx(r.value, rel=1e-12)
    assert sorted(o.e_content["free"]) == sorted(f"free|r{c}" for c in range(8))
    # pyerrors centres each replica on its own mean; ours on the global mean (Wolff)
    assert o.dvalue == pytest.approx(r.error, rel=0.2)


@pytest.mark.parametrize("case", ["no ensemble", "too few", "discard all", "negative discard"])
def test_bad_input_exits_2_with_a_clear_message(hmc_run, tmp_path, case):
    if case == "no ensemble":
        p = cli("measure", tmp_path)
        want = "no such file"
    elif case == "too few":
        cfg = tmp_path / "few.toml"
        cfg.write_text(
            FREE.format(kind="hmc", every=1)
            .replace("samples = 400", "samples = 2")
            .replace("chains = 8", "chains = 2")
        )
        assert cli("run", cfg).returncode == 0
        p = cli("measure", tmp_path / "few")
        want = "needs at least"
    elif case == "discard all":
        p = cli("measure", hmc_run, "--discard", "400")
        want = "--discard"
    else:
        p = cli("measure", hmc_run, "--discard", "-1")
        want = "--discard"
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert want in p.stderr and "Traceback" not in p.stderr
