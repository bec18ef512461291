"""What an adversarial user broke in round two (issue 44), through the CLI: every stored byte
that changes a result is checked (the ensemble's /config, the checkpoint's place, model.json's
numbers), no report hides a broken run (diverged, incomplete, stuck), and every failure ends
in one line: exit 2 for what the user or the system did, exit 1 and "please report" for a bug.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import equinox as eqx
import h5py
import jax
import numpy as np
import pytest
from test_adversarial import reference  # noqa: F401  (the session's run and model)
from test_jobs import TINY, cli, write


def _one_line(p, code=2):
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr


def _strict_json(text: str):
    """JSON as RFC 8259 has it: NaN and Infinity are refused."""

    def refuse(name):
        raise AssertionError(f"bare {name} in the JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def run_copy(tmp_path, reference):  # noqa: F811
    d = tmp_path / "run"
    shutil.copytree(reference / "run", d)
    return d


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


# ------------------------------------------------------------------ A1: /config
@pytest.mark.parametrize("what", ["shape", "toml"])
def test_an_edited_config_group_is_refused_by_every_reader(run_copy, what):
    """A.1: editing /config's lattice.shape halved χ_conn with exit 0; editing its TOML text
    made info and measure disagree, and resume blamed config.toml."""
    d = run_copy
    before = _strict_json(cli("measure", d, "--json", check=0).stdout)

    def edit(f):
        c = f["config"]
        if what == "shape":
            c.attrs["lattice.shape"] = [6, 2]
        else:
            c.attrs["toml"] = str(c.attrs["toml"]).replace("kappa = 0.2", "kappa = 0.26")
        f.attrs["complete"] = False  # so that resume would run

    _edit(d / "ensemble.h5", edit)
    for args in (("measure", d), ("measure", d, "--json"), ("info", d), ("resume", d)):
        p = cli(*args)
        assert "/config does not match its checksum" in _one_line(p), args
        assert not p.stdout.strip()
    assert before["observables"]["chi_conn"]["value"] > 0


def test_a_config_group_of_before_the_digest_is_read_as_before(run_copy):
    """Old files (no /config sha256) stay readable, unchecked."""
    want = cli("measure", run_copy, "--json", check=0).stdout
    _edit(run_copy / "ensemble.h5", lambda f: f["config"].attrs.__delitem__("sha256"))
    assert cli("measure", run_copy, "--json", check=0).stdout == want


def test_malformed_toml_in_an_old_file_names_the_file(run_copy, tmp_path, reference):  # noqa: F811
    """B: a malformed /config TOML attribute gave ConfigError tracebacks in measure and
    compare, and `<string>` in resume and train."""

    def edit(f):
        del f["config"].attrs["sha256"]
        f["config"].attrs["toml"] = "name = [[[ broken"
        f.attrs["complete"] = False

    _edit(run_copy / "ensemble.h5", edit)
    (tmp_path / "t.toml").write_text(
        (reference / "t.toml").read_text().replace(str(reference / "run"), str(run_copy))
    )
    for args in (
        ("measure", run_copy),
        ("compare", run_copy, reference / "run"),
        ("resume", run_copy),
        ("train", tmp_path / "t.toml", "-o", tmp_path / "m"),
    ):
        msg = _one_line(cli(*args))
        assert f"{run_copy / 'ensemble.h5'}: /config's toml attribute: malformed TOML" in msg
        assert "<string>" not in msg
    assert not (tmp_path / "m" / "model.json").exists()


def test_a_damaged_configuration_block_stops_train_and_its_resume_in_one_line(
    run_copy,
    tmp_path,
    reference,  # noqa: F811
):
    """B: a configuration block whose checksum fails, met by `train` or by the `resume` of a
    training, let EnsembleError escape as a traceback."""
    from test_score import kill_training_after

    cfg = tmp_path / "t.toml"
    text = (reference / "t.toml").read_text().replace(str(reference / "run"), str(run_copy))
    cfg.write_text(text.replace("steps = 80", "steps = 4000"))
    m = tmp_path / "m"
    kill_training_after(cfg, m, 40)
    _edit(run_copy / "ensemble.h5", lambda f: f["configs"].__setitem__((0, 1), -f["configs"][0, 1]))
    for args in (("resume", m), ("train", cfg, "-o", tmp_path / "m2")):
        msg = _one_line(cli(*args))
        assert "/configs does not match its checksum (configuration 1 of chain 0" in msg, args
    assert not (m / "model.json").exists()


# ------------------------------------------------------------------ A2: checkpoints
def test_a_checkpoint_ahead_of_its_ensemble_or_of_another_is_refused(tmp_path, reference):  # noqa: F811
    """A.2: a finished run's checkpoint copied over a run that committed nothing made resume
    say "complete: 4000 measurements", none of them written."""
    done = reference / "run"
    ahead = tmp_path / "ahead"
    shutil.copytree(done, ahead)
    _edit(ahead / "ensemble.h5", lambda f: f.attrs.update(committed=0, complete=False))
    msg = _one_line(cli("resume", ahead))
    assert "checkpoint.h5: ahead of ensemble.h5 (30 measurements checkpointed, 0 committed)" in msg

    other = tmp_path / "other"  # the same config, another ensemble (uuid)
    cli("run", done / "config.toml", "-o", other, "--quiet", check=0)
    _edit(other / "ensemble.h5", lambda f: f.attrs.update(complete=False))
    shutil.copy(done / "checkpoint.h5", other / "checkpoint.h5")
    log = (other / "run.log").read_text()
    msg = _one_line(cli("resume", other))
    assert "checkpoint.h5: belongs to another ensemble (uuid" in msg
    assert (other / "run.log").read_text() == log  # nothing resumed, nothing "complete"


# ------------------------------------------------------------------ A3: model.json
def _model_copy(tmp_path, reference, edit, digest=True):  # noqa: F811
    m = tmp_path / "model"
    shutil.copytree(reference / "model", m)
    meta = json.loads((m / "model.json").read_text())
    edit(meta)
    if not digest:
        del meta["meta_sha256"]
    (m / "model.json").write_text(json.dumps(meta))
    return m


DIFFUSION = TINY.format(kind="diffusion").replace(
    'kind = "diffusion"', 'kind = "diffusion"\nmodel = "{model}"\nsteps = 8'
)


@pytest.mark.parametrize("digest", [True, False], ids=["digest", "old-file"])
def test_a_model_with_an_absurd_noise_scale_is_refused(tmp_path, reference, digest):  # noqa: F811
    """A.3: model.json's sigma_max set to 1e308 gave a "complete" run of rejected proposals
    that never left the hot start. Now the digest of the sampler's numbers refuses the edit;
    a file of before the digest has its numbers checked for range."""
    m = _model_copy(tmp_path, reference, lambda d: d["sde"].update(sigma_max=1e308), digest)
    cfg = write(tmp_path, DIFFUSION.format(model=m))
    p = cli("run", cfg, "-o", tmp_path / "r")
    msg = _one_line(p)
    assert msg.startswith("error: sampler.model: ") and str(m / "model.json") in msg
    if digest:
        assert "do not match their checksum meta_sha256" in msg
    else:
        assert "sigma_max = 1e+308 (allowed: 0 < sigma_min < sigma_max <= 1e+08)" in msg
    assert not (tmp_path / "r").exists()
    other = _model_copy(tmp_path / "x", reference, lambda d: d.update(sigma_data=2.0), digest)
    p = cli("info", other)
    if digest:  # any edit of a covered number; an old file's in-range edit goes unnoticed
        assert "meta_sha256" in _one_line(p)


def test_an_old_model_with_non_finite_tables_is_refused(tmp_path, reference):  # noqa: F811
    def edit(d):
        d["spectral"]["power"][1] = float("nan")  # json writes NaN

    m = _model_copy(tmp_path, reference, edit, digest=False)
    assert "spectral.power[1] = nan is not finite" in _one_line(cli("info", m))


# ------------------------------------------------------------------ A3/A4: dead weights
@pytest.fixture
def nan_model(tmp_path, reference):  # noqa: F811
    """A model file that is intact (its checksums hold) but whose network outputs NaN: every
    proposal's log-weight is NaN, every proposal is rejected."""
    from lattice.io.model import load_model, save_model

    m = load_model(reference / "model")
    net = jax.tree_util.tree_map(lambda x: x * np.nan if eqx.is_inexact_array(x) else x, m.net)
    return save_model(tmp_path / "nan_model", net, m.sde, dict(m.meta))


def test_a_run_whose_every_proposal_weight_is_nan_stops_as_diverged(tmp_path, nan_model):
    d = tmp_path / "r"
    p = cli("run", write(tmp_path, DIFFUSION.format(model=nan_model)), "-o", d, "--quiet")
    msg = _one_line(p, code=3)
    assert "diverged: every proposal's log-weight in a block of chain 0 is not finite" in msg
    with h5py.File(d / "ensemble.h5") as f:
        assert not f.attrs["complete"] and "diverged" in f.attrs
    assert "complete:" not in (d / "run.log").read_text()
    msg = _one_line(cli("measure", d))
    assert "no measurements committed; the run is diverged: every proposal's log-weight" in msg


# ------------------------------------------------------------------ A4/A5: status in reports
def _status_copy(tmp_path, reference, name, edit):  # noqa: F811
    d = tmp_path / name
    shutil.copytree(reference / "run", d)
    _edit(d / "ensemble.h5", edit)
    return d


def test_measure_and_compare_mark_diverged_incomplete_and_stuck_runs(tmp_path, reference):  # noqa: F811
    """A.4, A.5: a diverged run (100 of 2000 measurements) was an ordinary compare row with
    the cheapest cost; measure said "incomplete", never "diverged", and its JSON had no
    completeness field; HMC with acceptance 0.000 gave finite numbers and no warning."""
    good = reference / "run"

    def diverge(f):
        f.attrs.update(committed=16, complete=False)
        f.attrs["diverged"] = "diverged: the field of chain 1 is not finite by step 60; ..."

    runs = {
        "diverged": _status_copy(tmp_path, reference, "div", diverge),
        "incomplete": _status_copy(
            tmp_path, reference, "inc", lambda f: f.attrs.update(committed=16, complete=False)
        ),
        "stuck": tmp_path / "stuck",
    }
    stuck = TINY.format(kind="hmc").replace('kind = "hmc"', 'kind = "hmc"\ntrajectory_length = 60')
    cli("run", write(tmp_path, stuck), "-o", runs["stuck"], "--quiet", "--set", "run.seed=6",
        check=0)  # fmt: skip
    for state, d in runs.items():
        m = _strict_json(cli("measure", d, "--json", check=0).stdout)
        assert m["status"] == state, (state, m["status_detail"])
        assert m["committed"] == (16 if state != "stuck" else 30) and m["planned"] == 30
        p = cli("measure", d, check=0)
        assert state.upper() in p.stdout and f"note: the run is {state}: " in p.stderr
    assert (
        "acceptance 0 over all 30 measurements in chain(s) 0, 1, 2"
        in (_strict_json(cli("measure", runs["stuck"], "--json", check=0).stdout)["status_detail"])
    )
    ok = _strict_json(cli("measure", good, "--json", check=0).stdout)
    assert ok["status"] == "complete" and ok["committed"] == ok["planned"] == 30

    c = _strict_json(cli("compare", good, *runs.values(), "--json", check=0).stdout)
    assert [r["status"] for r in c["runs"]] == ["complete", "diverged", "incomplete", "stuck"]
    assert c["cheapest"] == str(good)
    t = cli("compare", *runs.values(), good, check=0).stdout
    for state in runs:  # the row is marked (the word may be cut to the column) and noted
        assert f"   {state}: " in t, t
    assert "is not a finished run's and is left out of the cost verdict" in " ".join(t.split())
    assert "cheapest per independent |m| among the complete runs: 4 (" in t
    t = cli("compare", runs["diverged"], runs["stuck"], check=0).stdout
    assert "no complete run: no cost verdict" in " ".join(t.split())


# ------------------------------------------------------------------ C: no density, locks
def test_measure_of_a_run_without_a_density_is_clean_json(tmp_path, reference):  # noqa: F811
    """C: `measure` of a `pc` or `annealed` run leaked a numpy RuntimeWarning and printed a
    bare NaN in its JSON."""
    pc = 'steps = 8\nmethod = "annealed"\nmetropolis = false'
    cfg = DIFFUSION.format(model=reference / "model").replace("steps = 8", pc)
    d = tmp_path / "pc"
    cli("run", write(tmp_path, cfg), "-o", d, "--quiet", check=0)
    p = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "lattice", "measure", d, "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0 and "Warning" not in p.stderr, p.stderr
    m = _strict_json(p.stdout)
    assert m["diffusion"]["log_w_mean"] is None and m["diffusion"]["ess_fraction"] is None
    assert "no density, so no weights" in cli("measure", d, check=0).stdout


def test_reading_a_run_that_is_being_written_says_so(run_copy):
    """C: measure or info while a run writes said "not a readable HDF5 file (unable to lock
    file)", which reads as damage."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import h5py, sys, time\nf = h5py.File(sys.argv[1], 'r+')\n"
         "print('open', flush=True)\ntime.sleep(120)", str(run_copy / "ensemble.h5")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        for cmd in ("measure", "info"):
            msg = _one_line(cli(cmd, run_copy))
            assert "a run is writing it now (the file is locked)" in msg, msg
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ one failure path
def test_a_bug_is_one_line_and_a_report_a_system_failure_is_exit_2(run_copy, tmp_path, monkeypatch):
    """B.1: an anticipated failure of the system (here ENOSPC raised where the library reads)
    is one line and exit 2; anything else is a bug: one line saying "please report", with
    the path of the traceback, and exit 1."""
    import lattice.results.measure as measure_module

    def broken(*a, **k):
        raise ZeroDivisionError("a planted bug")

    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(measure_module, "measure_ensemble", broken)
    msg = _one_line(cli("measure", run_copy), code=1)
    assert "internal error ZeroDivisionError: a planted bug (a bug: please report it" in msg
    crash = next((tmp_path / "cache" / "lattice" / "crashes").glob("crash-*.txt"))
    assert crash.name in msg and "Traceback" in crash.read_text()
    assert "a planted bug" in crash.read_text()
    monkeypatch.setattr(measure_module, "measure_ensemble", full)
    assert _one_line(cli("measure", run_copy)) == (
        f"error: No space left on device: {tmp_path / 'x'}\n"
    )
