"""`lattice compare`: consistent values for two correct samplers of one theory, refusal of
different theories, τ_int equal to `measure`'s, and the plots and the self-contained report."""

from __future__ import annotations

import json

import pytest
from test_jobs import cli

from lattice.numerics.analysis import family_z
from lattice.results.compare import compare_runs
from lattice.results.verdict import comparison_json

RUN = """
name = "{name}"
[lattice]
shape = [6, 6]
[action]
kappa = 0.22
lambda = {lam}
[sampler]
{sampler}
[run]
chains = 4
seed = {seed}
thermalization = 200
samples = 1500
measure_every = 1
save_every = 0
"""

HMC = 'kind = "hmc"\ntrajectory_length = 1.0\nsteps = 8'
MALA = 'kind = "mala"\nstep_size = 0.05'


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    out = {}
    for name, sampler, lam, seed in (
        ("hmc", HMC, 0.1, 1),
        ("mala", MALA, 0.1, 2),
        ("other", HMC, 0.2, 3),
    ):
        cfg = d / f"{name}.toml"
        cfg.write_text(RUN.format(name=name, sampler=sampler, lam=lam, seed=seed))
        cli("run", cfg, "-q", check=0)
        out[name] = d / name
    return out


def test_two_exact_samplers_of_one_theory_agree(runs):
    res = json.loads(cli("compare", runs["hmc"], runs["mala"], "--json", check=0).stdout)
    assert [r["sampler"] for r in res["runs"]] == ["hmc-leapfrog", "mala"]
    assert list(res) == ["runs", "consistency", "z_flag", "cheapest", "verdict"]
    assert [r["status"] for r in res["runs"]] == ["complete", "complete"]
    keys = ["path", "status", "status_detail", "sampler", "exactness", "parameters"]
    keys += ["observables", "acceptance", "cost"]
    assert list(res["runs"][0]) == [*keys, "ess_per_second", "chains", "samples"]
    # the JSON is the one serialisation of the Comparison compare_runs returns, and its verdict
    c = compare_runs([runs["hmc"], runs["mala"]])
    assert json.loads(json.dumps(comparison_json(c))) == res
    print({k: round(v, 2) for k, v in res["consistency"].items()})
    assert set(res["consistency"]) >= {"abs_m", "phi2", "chi", "action", "binder"}
    assert all(z < 4 for z in res["consistency"].values())
    assert res["z_flag"] == family_z(len(res["consistency"])) == 4.0  # 2 runs: 4σ
    for r in res["runs"]:
        assert 0 < r["acceptance"] <= 1
        assert r["cost"]["seconds_per_measurement"] > 0
        assert r["cost"]["evals_per_measurement"] == (8 if r["sampler"].startswith("hmc") else 1)
        assert r["ess_per_second"]["abs_m"] > 0


def test_tau_int_is_the_one_measure_reports(runs):
    res = json.loads(cli("compare", runs["hmc"], runs["mala"], "--json", check=0).stdout)
    for r, name in zip(res["runs"], ("hmc", "mala"), strict=True):
        m = json.loads(cli("measure", runs[name], "--json", check=0).stdout)["observables"]
        for obs in ("abs_m", "chi", "action"):
            assert r["observables"][obs]["tau_int"] == m[obs]["tau_int"]
            assert r["observables"][obs]["value"] == m[obs]["value"]


def test_different_theories_are_refused(runs, tmp_path):
    p = cli("compare", runs["hmc"], runs["other"], check=2)
    assert "different theories" in p.stderr and "action.lambda" in p.stderr
    assert "Traceback" not in p.stderr
    p = cli("compare", runs["hmc"], check=2)
    assert "at least two runs" in p.stderr
    p = cli("compare", runs["hmc"], tmp_path / "missing", check=2)
    assert "Traceback" not in p.stderr


def test_plots_and_self_contained_report(runs, tmp_path):
    plots = tmp_path / "plots"
    cli(
        "compare", runs["hmc"], runs["mala"], "--plots", plots, "--report", tmp_path / "r.md",
        check=0,
    )  # fmt: skip
    names = {p.name for p in plots.iterdir()}
    assert names == {
        "compare_hist_m.png",
        "compare_rho.png",
        "compare_tau_int.png",
        "compare_G.png",
        "compare_cost.png",
    }
    md = (tmp_path / "r.md").read_text()
    assert "## Provenance" in md and md.count("data:image/png;base64,") == 5
    assert 'kind = "mala"' in md  # each run's resolved config
    cli("compare", runs["hmc"], runs["mala"], "--report", tmp_path / "r.html", check=0)
    assert '<img src="data:image/png;base64,' in (tmp_path / "r.html").read_text()
    p = cli("compare", runs["hmc"], runs["mala"], "--report", tmp_path / "r.pdf", check=2)
    assert ".md or .html" in p.stderr
