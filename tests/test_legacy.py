"""Bitwise compatibility with the code of commit f78ad5b (issue 23: the package restructure).

tests/fixtures/legacy/ holds what that commit's `lattice` wrote for one tiny config per
sampler variant (finished runs, runs stopped after their first checkpointed block, a trained
score model and a training stopped after its first checkpoint); README.md there says how they
were made. These tests run the same configs with the code under test and demand the same
bits: every dataset, every checkpoint array and every attribute except the few that depend on
the moment or the place of a run (``RUN_DEPENDENT`` and friends below).

Only stable interfaces are used: the `lattice` command (docs/conventions.md §3), the HDF5
layout (§4), the model directory's files (docs/score.md), h5py and numpy — no module of the
package is imported but the command's app, so the tests survive modules moving. The command
runs in the test process (``test_jobs.cli``: typer's CliRunner in the test's working directory,
with the x64 mode the command has in a process of its own), which saves a Python and JAX start
per call; set ``LATTICE_CLI`` to run another one, in processes of their own, e.g. the
fixtures' own commit:

    git worktree add /tmp/legacy f78ad5b
    cd /tmp/legacy && LATTICE_CLI="/work/main/.venv/bin/python -m lattice.cli" \
        PYTHONPATH=/tmp/legacy python -m pytest /work/main/tests/test_legacy.py -p no:cacheprovider

Bitwise equality holds on the machine and JAX/XLA version that made the fixtures (the float
results of XLA:CPU can change with either); regenerate them (README.md) after such an upgrade,
with the old code, never with the code under test.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy"
RUNS = sorted(p.stem for p in (FIXTURES / "configs").glob("*.toml") if p.stem != "train")
UNFINISHED = sorted(p.name for p in (FIXTURES / "runs_unfinished").iterdir() if p.is_dir())
MEASURED = sorted(p.stem for p in (FIXTURES / "measure").glob("*.json"))

# Attributes that differ between two runs of the same config by the same code, and only those:
#   /created, /uuid      the wall-clock time a file was created and its random identity
#                        (a model records the uuid of its training ensemble, so it must be new)
#   /timing seconds      wall-clock seconds spent (the step count beside it is compared)
#   checkpoint seconds   the same, in run and training checkpoints
RUN_DEPENDENT = {"/": {"created", "uuid"}, "/timing": {"seconds"}}
CHECKPOINT_RUN_DEPENDENT = {"/": {"seconds"}}
# Attributes that name where the fixture tree lies on disk: checked against the place the test
# put it instead of against the fixture (which names the directory it was generated in).
#   /config sampler.model_path   the resolved model directory of a diffusion run (a fresh run:
#                                the test's copy; a resumed run: the unfinished file's, since
#                                /config is written when a run starts)
LOCATION = {"/config": {"sampler.model_path"}}
# model.json keys (dotted) that depend on the moment or place of the training: its creation
# time, its wall-clock seconds and the resolved absolute path of its training ensemble
# (checked against the place of the test's copy). history.csv's `seconds` column likewise.
MODEL_RUN_DEPENDENT = {"created", "training.seconds", "data.ensemble"}
HISTORY_RUN_DEPENDENT = {"seconds"}
# model.json tables added since f78ad5b (the fixture's weights and every older key stay
# bitwise): the spectral path kernel's M(σ, p) and C(p) (issue 24), and the digest of the numbers
# a sampler uses (issue 44; a digest of those tables, so it is theirs to match)
MODEL_ADDED_SINCE = ("spectral.", "meta_sha256")


def lattice_cmd() -> list[str]:
    if os.environ.get("LATTICE_CLI"):
        return shlex.split(os.environ["LATTICE_CLI"])
    script = Path(sys.executable).with_name("lattice")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "lattice"]


def cli(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The `lattice` command in ``cwd`` (the diffusion configs name their model relative to
    the working directory, the training config its ensemble): in this process, or with
    ``LATTICE_CLI`` set, that command in a process of its own."""
    if os.environ.get("LATTICE_CLI"):
        p = subprocess.run(
            [*lattice_cmd(), *args], cwd=cwd, capture_output=True, text=True, timeout=600
        )
    else:
        from test_jobs import _in_process

        here = os.getcwd()
        os.chdir(cwd)
        try:
            p = _in_process(list(args))
        finally:
            os.chdir(here)
    if check and p.returncode != 0:
        pytest.fail(
            f"lattice {' '.join(args)}: exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        )
    return p


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> Path:
    """A copy of the fixture tree with the (gzipped) ensembles unpacked, as the runs wrote them."""
    root = tmp_path_factory.mktemp("legacy") / "legacy"
    shutil.copytree(FIXTURES, root, ignore=shutil.ignore_patterns("__pycache__"))
    for gz in root.rglob("*.h5.gz"):
        with gzip.open(gz, "rb") as src, open(gz.with_suffix(""), "wb") as dst:
            shutil.copyfileobj(src, dst)
        gz.unlink()
    return root


# ---------------------------------------------------------------------- comparisons
def _equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _tree(f: h5py.File) -> dict[str, h5py.HLObject]:
    objs = {"/": f}
    f.visititems(lambda name, obj: objs.__setitem__("/" + name, obj))
    return objs


#: what files gained after the fixtures (issue 27: checksums), checked by the readers instead
ADDED_OBJECTS = ("/checksums",)  # ensemble: CRC-32 per block (lattice.io.ensemble._verify)
#: checkpoints: each dataset's digest (lattice.io.checkpoint._read_all), the root's command (the
#: directory's kind, lattice.runs.directory.RunDirectory.save); issue 44: /config's digest
#: (sha256, lattice.io.ensemble._verify_config) and the checkpoint's ensemble_uuid (random, as
#: the ensemble's uuid; lattice.runs.sampling._restore)
ADDED_ATTRS = {"sha256", "command", "ensemble_uuid"}


def compare_h5(
    got: Path, want: Path, skip: dict[str, set[str]], location: dict[str, str] | None = None
) -> None:
    """Every group, dataset (dtype, shape, bits) and attribute of ``want`` in ``got`` and no more
    (but :data:`ADDED_OBJECTS` and :data:`ADDED_ATTRS`); attributes in ``skip`` are not
    compared, those in ``location`` must have the given value."""
    location = location or {}
    errors: list[str] = []
    with h5py.File(got, "r") as fg, h5py.File(want, "r") as fw:
        tg, tw = _tree(fg), _tree(fw)
        tg = {k: v for k, v in tg.items() if not k.startswith(ADDED_OBJECTS)}
        if set(tg) != set(tw):
            errors.append(
                f"objects: extra {sorted(set(tg) - set(tw))}, missing {sorted(set(tw) - set(tg))}"
            )
        for name in sorted(set(tg) & set(tw)):
            g, w = tg[name], tw[name]
            if isinstance(w, h5py.Dataset) != isinstance(g, h5py.Dataset):
                errors.append(f"{name}: a {type(g).__name__}, fixture has a {type(w).__name__}")
                continue
            if isinstance(w, h5py.Dataset):
                gv, wv = g[()], w[()]
                if not _equal(gv, wv):
                    errors.append(
                        f"{name}: {g.dtype}{g.shape} differs from the fixture's {w.dtype}{w.shape}"
                        + (
                            f" ({int(np.sum(~np.isclose(gv, wv, equal_nan=True)))} values "
                            f"beyond isclose)"
                            if gv.shape == wv.shape and gv.dtype.kind in "fc"
                            else ""
                        )
                    )
            ga = {k: v for k, v in g.attrs.items() if k not in ADDED_ATTRS}
            wa = dict(w.attrs)
            if set(ga) != set(wa):
                errors.append(
                    f"{name} attrs: extra {sorted(set(ga) - set(wa))}, "
                    f"missing {sorted(set(wa) - set(ga))}"
                )
            for k in sorted(set(ga) & set(wa)):
                where = f"{name}.attrs[{k!r}]"
                if where in location:
                    if ga[k] != location[where]:
                        errors.append(f"{where} = {ga[k]!r}, expected {location[where]!r}")
                elif k not in skip.get(name, ()) and not _equal(ga[k], wa[k]):
                    errors.append(f"{where} = {ga[k]!r}, fixture {wa[k]!r}")
    assert not errors, f"{got} differs from {want}:\n  " + "\n  ".join(errors)


def compare_run(got: Path, want: Path, model_dir: str) -> None:
    """A run directory against a fixture run: ensemble, checkpoint and resolved config.
    ``model_dir``: what ``LOCATION``'s attrs must say (where a diffusion run's model was)."""
    loc = {}
    with h5py.File(want / "ensemble.h5", "r") as f:
        for group, keys in LOCATION.items():
            for k in keys:
                if group in f and k in f[group].attrs:
                    loc[f"{group}.attrs[{k!r}]"] = model_dir
    compare_h5(got / "ensemble.h5", want / "ensemble.h5", RUN_DEPENDENT, loc)
    compare_h5(got / "checkpoint.h5", want / "checkpoint.h5", CHECKPOINT_RUN_DEPENDENT)
    assert (got / "config.toml").read_text() == (want / "config.toml").read_text()


def _same_json(got, want, path="", rtol: float = 0.0) -> list[str]:
    """``want``'s keys and values (floats bitwise, or within ``rtol``; NaN = NaN) in ``got``;
    new keys are allowed."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: {got!r} is not an object"]
        out = []
        for k, v in want.items():
            if k not in got:
                out.append(f"{path}.{k}: missing")
            else:
                out += _same_json(got[k], v, f"{path}.{k}", rtol)
        return out
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: {got!r} != {want!r}"]
        pairs = enumerate(zip(got, want, strict=True))
        return [e for i, (g, w) in pairs for e in _same_json(g, w, f"{path}[{i}]", rtol)]
    if isinstance(want, float) and isinstance(got, float) and math.isnan(want) and math.isnan(got):
        return []
    if rtol and isinstance(want, float) and isinstance(got, float):
        return (
            []
            if math.isclose(got, want, rel_tol=rtol, abs_tol=rtol)
            else [f"{path}: {got!r}, fixture {want!r} (beyond rtol {rtol})"]
        )
    if type(got) is not type(want) or got != want:
        return [f"{path}: {got!r}, fixture {want!r}"]
    return []


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def compare_model(got: Path, want: Path, tree: Path) -> None:
    """A model directory: the weights bit for bit, model.json except ``MODEL_RUN_DEPENDENT``,
    history.csv except its seconds, the resolved config.

    On a CPU whose XLA:CPU float32 kernels round differently from the fixture host's (the
    fixture README: measured on an AVX-512 AMD EPYC, 171 of the 693 weights differ, by at
    most 5.6e-5 against weights up to 0.53), the weights must instead agree to
    ``TRAIN_RTOL`` of the largest, and every float of model.json and history.csv to
    ``TRAIN_RTOL``; the float64 ensembles of the other tests stay bitwise on every host."""
    rtol = 0.0
    if (got / "model.eqx").read_bytes() != (want / "model.eqx").read_bytes():
        _close_weights(got, want)
        rtol = TRAIN_RTOL
    assert (got / "config.toml").read_text() == (want / "config.toml").read_text()
    gm, wm = (_flat(json.loads((d / "model.json").read_text())) for d in (got, want))
    assert gm["data.ensemble"] == str((tree / "runs/hmc_train/ensemble.h5").resolve())
    skip = MODEL_RUN_DEPENDENT | ({"weights.sha256"} if rtol else set())  # checked above
    errors = _same_json(
        {k: v for k, v in gm.items() if k not in skip},
        {k: v for k, v in wm.items() if k not in skip},
        rtol=rtol,
    )
    extra = {k for k in set(gm) - set(wm) if not k.startswith(MODEL_ADDED_SINCE)}
    assert not errors and not extra, f"model.json: {errors}, extra keys {sorted(extra)}"

    def history(d):
        with open(d / "history.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: v for k, v in r.items() if k not in HISTORY_RUN_DEPENDENT} for r in rows]

    hg, hw = history(got), history(want)
    if rtol:
        hg, hw = ([{k: float(v) for k, v in r.items()} for r in h] for h in (hg, hw))
    assert not _same_json(hg, hw, rtol=rtol), "history.csv"


#: the agreement of a training on another CPU with the fixture's (see compare_model)
TRAIN_RTOL = 1e-3


def _close_weights(got: Path, want: Path) -> None:
    import equinox as eqx
    import jax

    from lattice.io.model import load_model

    leaves = [
        jax.tree_util.tree_leaves(eqx.filter(load_model(d).net, eqx.is_inexact_array))
        for d in (got, want)
    ]
    scale = max(float(np.max(np.abs(w))) for w in leaves[1])
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(*leaves, strict=True))
    print(f"model.eqx: not bitwise on this CPU; max |dw| = {diff:.3g}, max |w| = {scale:.3g}")
    assert diff <= TRAIN_RTOL * scale, f"model.eqx: max |dw| = {diff:.3g} (max |w| {scale:.3g})"


def _finite_prefix(path: Path) -> int:
    """How many measurements of an ensemble come before its first non-finite observable."""
    with h5py.File(path, "r") as f:
        n = int(f.attrs["committed"])
        ok = np.ones(n, bool)
        for d in f["observables"].values():
            v = d[:, :n].reshape(d.shape[0], n, -1)
            ok &= np.isfinite(v).all(axis=(0, 2))
    return int(np.argmin(ok)) if not ok.all() else n


# ---------------------------------------------------------------------- the tests
@pytest.mark.parametrize("name", RUNS)
def test_run(name, tree, tmp_path):
    """A fresh run of every fixture config gives the fixture's ensemble and checkpoint.

    Two fixture runs diverged at f78ad5b (the barely trained model drives the raw pc and
    annealed samplers to NaN fields) and were marked complete; today a run stops at the first
    block with a non-finite value (exit 3, issue 27). For those, every measurement committed
    is the fixture's, bit for bit, and the committed part is all the finite blocks."""
    out = tmp_path / name
    want = tree / "runs" / name
    good = _finite_prefix(want / "ensemble.h5")
    with h5py.File(want / "ensemble.h5", "r") as f:
        total, a = int(f.attrs["samples"]), f["config"].attrs
        every, save = int(a["run.checkpoint_every"]), int(a["run.save_every"])
        block = every if save <= 1 else -(-every // save) * save  # measurements per block
    if good == total:
        cli(tree, "run", f"configs/{name}.toml", "-o", str(out), "--quiet")
        compare_run(out, want, str((tree / "model").resolve()))
        return
    p = cli(tree, "run", f"configs/{name}.toml", "-o", str(out), "--quiet", check=False)
    assert p.returncode == 3 and "diverged" in p.stderr, (p.returncode, p.stderr)
    with h5py.File(out / "ensemble.h5", "r") as g, h5py.File(want / "ensemble.h5", "r") as w:
        n = int(g.attrs["committed"])
        assert n == good // block * block and not g.attrs["complete"] and "diverged" in g.attrs
        for group in ("observables", "diagnostics"):
            for k in w[group]:
                assert _equal(g[group][k][:, :n], w[group][k][:, :n]), f"{group}/{k}"


@pytest.mark.parametrize("name", UNFINISHED)
def test_resume(name, tree, tmp_path):
    """A run that today's code left after its first checkpointed block resumes to the bits of
    the uninterrupted fixture run."""
    out = tmp_path / name
    shutil.copytree(tree / "runs_unfinished" / name, out)
    with h5py.File(out / "ensemble.h5", "r") as f:
        assert not f.attrs["complete"] and f.attrs["committed"] < f.attrs["samples"]
        # /config was written when the run started, naming the model where it was then
        model_dir = f["config"].attrs.get("sampler.model_path")
    cli(tree, "resume", str(out), "--quiet")
    compare_run(out, tree / "runs" / name, model_dir)
    with (
        h5py.File(out / "ensemble.h5", "r") as f,
        h5py.File(tree / "runs_unfinished" / name / "ensemble.h5", "r") as u,
    ):
        assert f.attrs["uuid"] == u.attrs["uuid"]  # resumed in place, not started again


@pytest.mark.parametrize("name", MEASURED)
def test_measure_old_file(name, tree):
    """`lattice measure --json` reads today's files and gives what today's code gave (every
    key of the fixture's JSON, values bitwise; keys added since are allowed)."""
    p = cli(tree, "measure", f"runs/{name}", "--json")
    got = json.loads(p.stdout)
    want = json.loads((tree / "measure" / f"{name}.json").read_text())
    errors = _same_json(got, want)
    assert not errors, "\n".join(errors)


def test_info_old_files(tree):
    p = cli(tree, "info", "model")
    assert "score model" in p.stdout and "693" in p.stdout.replace(",", ""), p.stdout
    p = cli(tree, "info", "runs/hmc_sw")
    assert "hmc" in p.stdout, p.stdout


def test_train(tree, tmp_path):
    """`lattice train` of the fixture's training config gives the fixture model bit for bit."""
    cli(tree, "train", "configs/train.toml", "-o", str(tmp_path / "model"), "--quiet")
    compare_model(tmp_path / "model", tree / "model", tree)


def test_resume_training(tree, tmp_path):
    """A training that today's code left after its first checkpoint resumes to the fixture
    model's weights and history."""
    out = tmp_path / "model"
    shutil.copytree(tree / "train_unfinished", out)
    assert not (out / "model.json").exists()
    # the checkpoint names its training ensemble by absolute path (the tree it was made in):
    # point it at this copy of the same file (same bytes, same uuid)
    with h5py.File(out / "checkpoint.h5", "r+") as f:
        assert int(f.attrs["step"]) > 0
        f.attrs["ensemble"] = str((tree / "runs/hmc_train/ensemble.h5").resolve())
    cli(tree, "resume", str(out), "--quiet")
    compare_model(out, tree / "model", tree)
    assert not (out / "checkpoint.h5").exists()
