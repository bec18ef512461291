"""The shared run-directory lifecycle (lattice/runs/directory.py) and the pytree checkpoint
format (lattice/io/checkpoint.py): round trips, the structure check, the older training
format, refusals (another command's directory even with --force), and the x64 requirement."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import h5py
import jax
import numpy as np
import pytest
from test_jobs import TINY, cli, write

from lattice.io.checkpoint import CheckpointError, leaf_names, read_checkpoint, write_checkpoint
from lattice.runs.directory import RunDirectory, RunError
from lattice.runs.sampling import run_directory
from lattice.runs.training import model_directory


class _State(NamedTuple):
    phi: np.ndarray
    momentum: np.ndarray


def _tree(rng):
    return {
        "state": _State(rng.normal(size=(3, 4, 4)), rng.normal(size=(3, 4, 4)).astype(np.float32)),
        "keys": rng.integers(0, 2**32, size=(3, 2), dtype=np.uint32),
        "opt": (np.arange(5, dtype=np.int64), {"mu": rng.normal(size=7)}),
    }


def test_checkpoint_round_trip_names_leaves_by_path(tmp_path):
    rng = np.random.default_rng(0)
    tree = _tree(rng)
    write_checkpoint(tmp_path / "c.h5", tree, {"step": 7, "note": "x"})
    with h5py.File(tmp_path / "c.h5") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    assert sorted(names) == sorted(leaf_names(tree))
    assert {"state/phi", "state/momentum", "keys", "opt/0", "opt/1/mu"} == set(names)
    got, attrs = read_checkpoint(tmp_path / "c.h5", tree)
    assert attrs == {"step": 7, "note": "x"}
    assert isinstance(got["state"], _State)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(tree), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert not (tmp_path / "c.h5.tmp").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda t: t["state"]._replace(phi=np.zeros((3, 4, 5))),
            r"state/phi is float64\[3, 4, 4\]",
        ),
        (lambda t: t["state"]._replace(momentum=np.zeros((3, 4, 4))), "state/momentum is float32"),
        (lambda t: _State(t["state"].phi, t["state"].momentum), None),
    ],
)
def test_checkpoint_structure_check(tmp_path, change, message):
    """A template whose leaf has another shape or dtype is refused, naming the leaf; the same
    structure is accepted."""
    tree = _tree(np.random.default_rng(1))
    write_checkpoint(tmp_path / "c.h5", tree, {})
    template = {**tree, "state": change(tree)}
    if message is None:
        read_checkpoint(tmp_path / "c.h5", template)
        return
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(tmp_path / "c.h5", template)


def test_checkpoint_with_a_missing_leaf_is_refused(tmp_path):
    tree = _tree(np.random.default_rng(2))
    write_checkpoint(tmp_path / "c.h5", {k: v for k, v in tree.items() if k != "keys"}, {})
    with pytest.raises(CheckpointError, match="another structure .no keys"):
        read_checkpoint(tmp_path / "c.h5", tree)


def test_older_training_checkpoints_read_in_flattening_order(tmp_path):
    """Training checkpoints before the path names held leaf_00000, leaf_00001, …"""
    tree = _tree(np.random.default_rng(3))
    leaves = jax.tree_util.tree_leaves(tree)
    with h5py.File(tmp_path / "old.h5", "w") as f:
        for i, x in enumerate(leaves):
            f[f"leaf_{i:05d}"] = x
        f.attrs["step"] = 20
    got, attrs = read_checkpoint(tmp_path / "old.h5", tree)
    assert attrs["step"] == 20
    for a, b in zip(jax.tree_util.tree_leaves(got), leaves, strict=True):
        assert np.array_equal(a, b)
    # one leaf more than the template has: written for another network
    with h5py.File(tmp_path / "old.h5", "a") as f:
        f[f"leaf_{len(leaves):05d}"] = np.zeros(1)
    with pytest.raises(CheckpointError, match="more leaves than expected"):
        read_checkpoint(tmp_path / "old.h5", tree)


def _dir(root: Path) -> RunDirectory:
    return RunDirectory(
        root, "run", "run.log", "run", products=("ensemble.h5",), foreign=("model.json",)
    )


def test_claim_refuses_a_directory_in_use_unless_forced(tmp_path):
    d = _dir(tmp_path / "r")
    d.claim("[run]\nseed = 1\n", force=False, describe=lambda: "a run is there")
    (d.root / "ensemble.h5").write_text("e")
    (d.root / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="a run is there"):
        d.claim("[run]\nseed = 2\n", force=False, describe=lambda: "a run is there")
    assert d.config.read_text() == "[run]\nseed = 1\n"
    d.claim("[run]\nseed = 2\n", force=True, describe=lambda: "unused")
    assert d.config.read_text() == "[run]\nseed = 2\n"
    assert not (d.root / "ensemble.h5").exists()  # the command's own files go
    assert (d.root / "notes.txt").read_text() == "mine"  # nothing else does


@pytest.mark.parametrize("what", ["foreign file", "config of another command"])
def test_claim_never_takes_another_commands_directory(tmp_path, what):
    d = _dir(tmp_path / "r")
    d.root.mkdir()
    if what == "foreign file":
        (d.root / "model.json").write_text("{}")
    else:
        (d.root / "config.toml").write_text('[train]\nensemble = "x"\n')
    before = {p.name: p.read_bytes() for p in d.root.iterdir()}
    with pytest.raises(RunError, match="not a run directory"):
        d.claim("[run]\n", force=True, describe=lambda: "unused")
    assert {p.name: p.read_bytes() for p in d.root.iterdir()} == before


def test_the_two_commands_mark_each_others_directories():
    run, model = run_directory("x"), model_directory("x")
    assert "ensemble.h5" in run.products and "ensemble.h5" in model.foreign
    assert "model.json" in model.products and "model.json" in run.foreign
    assert (run.table, model.table) == ("run", "train")


def test_run_into_a_model_directory_is_refused_even_with_force(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name, text in [("config.toml", '[train]\nensemble = "e"\n'), ("model.json", "{}")]:
        (model / name).write_text(text)
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    p = cli("run", cfg, "-o", model, "--force", check=2)
    assert "not a run directory" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "Traceback" not in p.stderr
    assert (model / "config.toml").read_text() == '[train]\nensemble = "e"\n'
    assert sorted(x.name for x in model.iterdir()) == ["config.toml", "model.json"]


def test_train_into_a_run_directory_is_refused_even_with_force(tmp_path):
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    cli("run", cfg, "-o", tmp_path / "run", "--quiet", check=0)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    tcfg = write(tmp_path, f'[train]\nensemble = "{tmp_path / "run"}"\nsteps = 200\n', "t.toml")
    p = cli("train", tcfg, "-o", tmp_path / "run", "--force", check=2)
    assert "not a model directory" in p.stderr and "Traceback" not in p.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_the_library_asks_for_x64_instead_of_setting_it(tmp_path):
    """run_job with x64 off raises one clear error and writes nothing; x64 stays off."""
    code = f"""
import jax
from lattice.config.run import parse_config
from lattice.runs.sampling import JobError, run_job
cfg = parse_config({TINY.format(kind="hmc")!r})
try:
    run_job(cfg, {str(tmp_path / "r")!r})
except JobError as e:
    print("error:", e)
print("x64", jax.config.jax_enable_x64)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "error: jax_enable_x64 is off" in r.stdout and "x64 False" in r.stdout
    assert not (tmp_path / "r").exists()


def test_a_directory_records_its_kind_and_refusals_name_it(tmp_path):
    """Issue 27: a directory's kind is data (its checkpoint records the command that wrote it),
    so even a run left with only its checkpoint is never taken by `lattice train --force`; every
    refusal names the kind that is there."""
    root = tmp_path / "kb"
    run_directory(root).claim("[run]\nseed = 1\n", force=False, describe=lambda: "unused")
    run_directory(root).save({"phi": np.zeros(3)}, {"next_step": 8})
    assert run_directory(root).checkpoint_attrs()["command"] == "run"
    (root / "config.toml").unlink()
    (root / "run.log").unlink()
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    model = model_directory(root)
    with pytest.raises(RunError, match="an ensemble run is there: its checkpoint.h5"):
        model.claim("[train]\n", force=True, describe=lambda: "unused")
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    (root / "model.json").write_text("{}")
    with pytest.raises(RunError, match=r"not a run directory \(a trained model is there"):
        run_directory(root).claim("[run]\n", force=True, describe=lambda: "unused")
