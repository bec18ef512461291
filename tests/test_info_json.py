"""`lattice info --json` (issue 41): one strict JSON object per kind of directory (a run, a
trained model, a training in progress), with the same numbers as the text `info` prints; a
run's info imports no jax."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import h5py
import pytest
from test_adversarial import reference  # noqa: F401  (the session's run and model)
from test_jobs import TINY, cli, write

RUN_KEYS = ["kind", "path", "shape", "action", "sampler", "exactness", "chains", "committed",
            "planned", "saved", "status", "status_detail", "created", "lattice_version",
            "seconds", "steps", "clusters", "tuned", "pilot", "model"]  # fmt: skip
MODEL_KEYS = ["kind", "path", "method", "theory", "sde", "multilevel", "network", "data",
              "training", "cosine_similarity", "path_weights", "score_norm_levels", "spectral",
              "created", "lattice_version", "weights_sha256"]  # fmt: skip


def _strict(text: str) -> dict:
    """The one JSON object of ``text`` (one line), refusing NaN and Infinity."""
    assert text.endswith("\n") and text.count("\n") == 1, text

    def bad(c):
        raise AssertionError(f"non-strict JSON constant {c}")

    return json.loads(text, parse_constant=bad)


def _rows(text: str) -> dict[str, str]:
    """The ``name  value`` lines of `lattice info`'s text (a value may wrap onto more lines)."""
    rows: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"^ *(\S.*?)  (\S.*)$", line)
        if m and not line.startswith(" " * 20):
            name = m.group(1)
            rows[name] = m.group(2)
        elif name is not None:
            rows[name] += line.strip()
    return rows


def _info(path, monkeypatch) -> tuple[dict, dict[str, str]]:
    monkeypatch.setenv("COLUMNS", "400")  # one line per row
    data = _strict(cli("info", path, "--json", check=0).stdout)
    return data, _rows(cli("info", path, check=0).stdout)


def test_info_json_of_a_tuned_run(tmp_path, monkeypatch):
    text = TINY.format(kind="hmc").replace('kind = "hmc"', 'kind = "hmc"\ntarget_acceptance = 0.7')
    cli("run", write(tmp_path, text), "-o", tmp_path / "r", "-q", check=0)
    j, rows = _info(tmp_path / "r", monkeypatch)
    assert list(j) == RUN_KEYS
    assert j["kind"] == "run" and j["path"] == str(tmp_path / "r" / "ensemble.h5")
    assert j["shape"] == [6, 4] and j["action"] == {"form": "kappa", "kappa": 0.2, "lambda": 0.1}
    assert (j["sampler"], j["exactness"], j["chains"]) == ("hmc-leapfrog", "exact", 3)
    assert (j["committed"], j["planned"], j["saved"]) == (30, 30, 8)
    assert (j["status"], j["status_detail"]) == ("complete", "30/30 measurements")
    assert j["clusters"] is None and j["pilot"] is None and j["model"] is None
    # the text shows the same numbers
    assert rows["file"] == j["path"] and rows["lattice"] == str(j["shape"])
    assert rows["action"] == "kappa form, kappa = 0.2, lambda = 0.1"
    assert rows["sampler"] == f"{j['sampler']} ({j['exactness']})"
    assert rows["chains"] == str(j["chains"])
    assert rows["samples"] == f"{j['committed']} per chain (planned {j['planned']})"
    assert rows["saved configs"] == f"{j['saved']} per chain"
    assert rows["status"] == j["status"]
    assert rows["created"] == f"{j['created']} by lattice {j['lattice_version']}"
    assert rows["wall time"] == f"{j['seconds']:.1f} s for {j['steps']} sampler steps"
    t = j["tuned"]
    assert t["target_acceptance"] == 0.7 and t["steps"] == 10 and 0 < t["acceptance"] <= 1
    assert rows["tuned step"] == (
        f"{t['step_size']:.6g} x {t['steps']} steps over {t['tuning_steps']} steps (target "
        f"acceptance 0.7, last tuning block {t['acceptance']:.3f})"
    )


@pytest.mark.parametrize(
    "attr, value, status, detail",
    [
        ("complete", False, "incomplete", "30/30 measurements committed"),
        ("diverged", "diverged: NaN in chain 1; step 9", "diverged",
         "NaN in chain 1 (30/30 measurements committed)"),
    ],
)  # fmt: skip
def test_info_json_of_a_broken_run(tmp_path, reference, monkeypatch, attr, value, status, detail):  # noqa: F811
    d = tmp_path / "run"
    shutil.copytree(reference / "run", d)
    with h5py.File(d / "ensemble.h5", "r+") as f:
        f.attrs[attr] = value
    j, rows = _info(d, monkeypatch)
    assert (j["status"], j["status_detail"]) == (status, detail)
    assert rows["status"] == f"{status}: {detail}"


def test_info_json_of_a_model(reference, monkeypatch):  # noqa: F811
    m = reference / "model"
    meta = json.loads((m / "model.json").read_text())
    j, rows = _info(m, monkeypatch)
    assert list(j) == MODEL_KEYS
    assert (j["kind"], j["path"], j["method"]) == ("model", str(m), "single")
    assert j["theory"] == meta["theory"] and j["sde"] == meta["sde"] and j["multilevel"] is None
    assert j["network"]["channels"] == 4 and j["network"]["blocks"] == 1
    assert j["network"]["parameters"] == meta["parameters"]
    assert j["data"] == meta["data"] and j["training"] == meta["training"]
    assert j["path_weights"] is None and j["weights_sha256"] == meta["weights"]["sha256"]
    # the text shows the same numbers
    net, tr, data, sde = j["network"], j["training"], j["data"], j["sde"]
    assert rows["SDE"] == f"VE, sigma {sde['sigma_min']:.4g} .. {sde['sigma_max']:.4g}"
    assert rows["network"] == (
        f"physics-informed, {net['channels']} channels x {net['blocks']} blocks, "
        f"{net['parameters']:,} parameters, receptive field global"
    )
    assert net["receptive_field"] is None
    assert rows["data"].endswith(f"{data['train_configs']} + {data['validation_configs']} held out")
    assert rows["training"] == (
        f"{tr['steps']} steps x batch {tr['batch_size']} in {tr['seconds']:.0f} s"
    )
    assert rows["loss"] == f"train {tr['train_loss']:.4f}, validation {tr['val_loss']:.4f}"
    cs = j["cosine_similarity"]
    assert rows["cos(s, -dS/dphi)"].startswith(f"{cs['mean']:.4f} (min {cs['min']:.4f})")
    assert rows["score norms"].startswith(f"u(sigma) at {j['score_norm_levels']} noise levels")
    sp = j["spectral"]
    assert f"{sp['noise_levels']} noise levels x {sp['modes']} modes" in rows["spectral table"]
    assert rows["created"] == f"{j['created']} by lattice {j['lattice_version']}"


def test_info_json_of_a_training_in_progress(tmp_path, reference, monkeypatch):  # noqa: F811
    """Before its first checkpoint (step 0), and at the step its checkpoint holds."""
    m = tmp_path / "m"
    m.mkdir()
    (m / "config.toml").write_text(f'[train]\nensemble = "{reference / "run"}"\nsteps = 200\n')
    for step in (0, 40):
        if step:
            with h5py.File(m / "checkpoint.h5", "w") as f:
                f.attrs["step"] = step
        j = _strict(cli("info", m, "--json", check=0).stdout)
        assert j == {"kind": "training", "path": str(m), "step": step, "steps": 200}
        text = " ".join(cli("info", m, check=0).stdout.split())
        assert f"in training (unfinished): step {step} of 200 checkpointed" in text
    (m / "checkpoint.h5").write_bytes(b"not hdf5")
    p = cli("info", m, "--json")
    assert p.returncode == 2 and p.stdout == ""
    assert "an unfinished training with an unreadable state" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


_NO_JAX = """
import sys
from lattice.app.cli import main
sys.argv = ["lattice", "info", sys.argv[1], "--json"]
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
print("jax" in sys.modules, file=sys.stderr)
"""


def test_info_json_of_a_run_imports_no_jax(reference):  # noqa: F811
    r = subprocess.run(
        [sys.executable, "-c", _NO_JAX, str(reference / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "False", r.stderr
    assert _strict(r.stdout)["committed"] == 30
