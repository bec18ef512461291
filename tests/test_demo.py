"""The model shipped for `make demo` (lattice/models/score_8x8_critical): its weights are the
ones its model.json names (sha256), its recorded training config is the committed
runs/score_8x8_critical.toml resolved, it is package data, and the demo's configs fit it."""

import hashlib
import json
from pathlib import Path

from lattice.config.base import tomllib
from lattice.config.run import load_config
from lattice.config.train import parse_train_config
from lattice.io.model import load_model

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "lattice" / "models" / "score_8x8_critical"


def test_the_shipped_model_is_what_its_provenance_says():
    meta = json.loads((MODEL / "model.json").read_text())
    digest = hashlib.sha256((MODEL / meta["weights"]["file"]).read_bytes()).hexdigest()
    assert digest == meta["weights"]["sha256"]
    committed = parse_train_config((ROOT / "runs" / "score_8x8_critical.toml").read_text())
    assert (MODEL / "config.toml").read_text() == committed.to_toml()
    assert meta["training"]["steps"] == committed.train.steps
    assert "spectral" in meta, "the demo's sampler needs the per-mode table"
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = package_data["package-data"]["lattice"]
    for f in ("model.json", "model.eqx", "config.toml"):
        assert f"models/*/{f}" in globs, f


def test_the_demo_runs_fit_the_shipped_model():
    model = load_model(MODEL)
    theories = set()
    for name in ("langevin", "hmc", "diffusion"):
        cfg = load_config(ROOT / "runs" / "demo" / f"{name}.toml")
        theories.add((tuple(cfg.lattice.shape), cfg.action.kappa, cfg.action.lam))
    assert len(theories) == 1, theories
    (shape, kappa, lam), t = theories.pop(), model.theory
    assert (list(shape), kappa, lam) == (list(t.shape), t.kappa, t.lam)
    d = load_config(ROOT / "runs" / "demo" / "diffusion.toml")
    assert d.sampler.model == "lattice/models/score_8x8_critical"


def test_the_demo_trains_from_the_action_the_theory_it_compares():
    """runs/demo/path_train.toml trains (from the action alone) on the demo's theory, into the
    directory runs/demo/path.toml samples, at the K that run uses; the Makefile joins it to the
    comparison."""
    from lattice.config.run import build_theory

    train = parse_train_config((ROOT / "runs" / "demo" / "path_train.toml").read_text())
    run = load_config(ROOT / "runs" / "demo" / "path.toml")
    assert train.from_action
    assert build_theory(train) == build_theory(load_config(ROOT / "runs/demo/hmc.toml"))
    assert build_theory(run) == build_theory(train)
    assert run.sampler.steps == train.train.steps_per_path
    make = (ROOT / "Makefile").read_text()
    assert f"-o {run.sampler.model} " in make and "runs/demo/path --report" in make
