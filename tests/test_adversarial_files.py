"""Plots and reports where they cannot be written (issue 44, "Nothing silent"): onto or under
a regular file, where no directory can be, on a read-only mount, on a full disk, or killed
mid-write. Each ends in exit status 2 and one line naming the place and the system's reason,
and leaves no truncated PNG and no temporary file behind (every file is written atomically)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from test_adversarial import _one_line, tmpfs  # noqa: F401  (tmpfs: a fixture)
from test_jobs import TINY, cli, write

from lattice.app.plots import plot_levels, write_check_plots, write_training_plots
from lattice.errors import LatticeError

IEND = b"IEND\xaeB`\x82"  # the last bytes of every complete PNG


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny HMC runs of one theory (seeds 5 and 6), shared by the module's tests."""
    d = tmp_path_factory.mktemp("runs")
    cfg = write(d, TINY.format(kind="hmc"))
    cli("run", cfg, "-o", d / "a", "-q", check=0)
    cli("run", cfg, "-o", d / "b", "--set", "run.seed=6", "-q", check=0)
    return d / "a", d / "b"


def _fails(p, *words: str) -> str:
    """Exit 2 and one line on stderr that has every one of ``words``."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    line = _one_line(p)
    for w in words:
        assert w in line, (w, line)
    return line


def _nothing_partial(d) -> None:
    """Every PNG under ``d`` is complete, and no temporary file is left."""
    for p in d.rglob("*"):
        assert not p.name.endswith(".tmp"), p
        if p.suffix == ".png" and p.is_file():
            assert p.read_bytes().endswith(IEND), f"truncated: {p}"


def _a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("keep me\n")
    return f


# ------------------------------------------------------------------------------ measure
@pytest.mark.parametrize("under", [False, True], ids=["onto", "under"])
def test_measure_plots_onto_or_under_a_file(runs, tmp_path, under):
    f = _a_file(tmp_path)
    target = f / "sub" if under else f
    p = cli("measure", runs[0], "--plots", target)
    _fails(p, "Not a directory", str(target))
    assert f.read_text() == "keep me\n"
    _nothing_partial(tmp_path)


def test_measure_plots_where_no_directory_can_be(runs):
    p = cli("measure", runs[0], "--plots", "/proc/lattice-no-such/plots")
    _fails(p, "cannot create directory: No such file or directory: /proc/lattice-no-such")


@pytest.mark.parametrize("sub", ["", "sub"], ids=["mount", "below"])
def test_measure_plots_on_a_read_only_mount(runs, tmpfs, sub):  # noqa: F811
    ro = tmpfs("ro", "1m", "ro")
    _fails(cli("measure", runs[0], "--plots", ro / sub), "Read-only file system", str(ro))
    assert list(ro.iterdir()) == []


def test_measure_plots_on_a_full_disk(runs, tmpfs):  # noqa: F811
    full = tmpfs("full", "64k")
    line = _fails(cli("measure", runs[0], "--plots", full), "No space left on device")
    assert str(full) in line and ".png" in line and ".tmp" not in line, line
    _nothing_partial(full)


# ------------------------------------------------------------------------------ compare
def test_compare_plots_onto_a_file(runs, tmp_path):
    f = _a_file(tmp_path)
    _fails(cli("compare", *runs, "--plots", f), "Not a directory", str(f))
    assert f.read_text() == "keep me\n"


@pytest.mark.parametrize("where", ["under-a-file", "onto-a-directory"])
def test_compare_report_under_a_file_or_onto_a_directory(runs, tmp_path, where):
    if where == "under-a-file":
        report, named = _a_file(tmp_path) / "r.md", tmp_path / "afile"
    else:
        report = named = tmp_path / "r.html"
        report.mkdir()
    _fails(cli("compare", *runs, "--report", report), str(named))
    assert report.is_dir() or not report.exists()
    _nothing_partial(tmp_path)


def test_compare_report_on_a_read_only_mount(runs, tmpfs):  # noqa: F811
    ro = tmpfs("ro", "1m", "ro")
    _fails(cli("compare", *runs, "--report", ro / "r.md"), "Read-only file system", "r.md")


def test_compare_plots_and_report_on_a_full_disk(runs, tmpfs):  # noqa: F811
    full = tmpfs("full", "64k")
    _fails(cli("compare", *runs, "--plots", full / "plots"), "No space left on device")
    _nothing_partial(full)
    # the plots go to a temporary directory; the report, with them embedded, fills the disk
    line = _fails(cli("compare", *runs, "--report", full / "r.html"), "No space left on device")
    assert str(full / "r.html") in line, line
    assert not (full / "r.html").exists()
    _nothing_partial(full)


def test_compare_plots_killed_mid_write_leave_no_truncated_png(runs, tmp_path):
    """SIGKILL as soon as anything appears in the plot directory: a PNG there is whole."""
    out = tmp_path / "plots"
    cmd = [sys.executable, "-m", "lattice", "compare", *map(str, runs), "--plots", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and any(os.scandir(out)):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
    finally:
        proc.kill()
        proc.wait()
    assert out.is_dir(), "the plots were never started"
    for p in out.glob("*.png"):
        assert p.read_bytes().endswith(IEND), f"truncated: {p}"


# ------------------------------------------------------------------------------- levels
def _levels_result():
    rows = [
        SimpleNamespace(level=n, acceptance=a, error=0.02, log_w_var=v)
        for n, a, v in (("level0", 0.8, 0.3), ("coarse", 0.5, 1.2))
    ]
    return SimpleNamespace(levels=rows, source="run", steps_label="[8, 8]", draws=4)


def test_levels_plot_under_a_file_fails_before_the_redraws(runs, tmp_path):
    target = _a_file(tmp_path) / "levels.png"
    _fails(cli("levels", runs[0], "--plot", target), "Not a directory", str(tmp_path / "afile"))


@pytest.mark.parametrize("where", ["onto-a-directory", "full-disk", "read-only"])
def test_levels_plot_writer_fails_in_one_line(tmp_path, tmpfs, where):  # noqa: F811
    if where == "onto-a-directory":
        d = tmp_path
        (path := d / "levels.png").mkdir()
    else:
        d = tmpfs("m", "16k", *(["ro"] if where == "read-only" else []))
        path = d / "levels.png"
    with pytest.raises(LatticeError) as e:
        plot_levels(_levels_result(), path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and ".tmp" not in msg, msg
    _nothing_partial(d)


def test_levels_plot_in_an_unknown_format(tmp_path):
    with pytest.raises(LatticeError, match="no image format '.xyz'"):
        plot_levels(_levels_result(), tmp_path / "levels.xyz")
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------- check
def test_check_plots_under_a_file_fails_before_the_checks(tmp_path):
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    target = _a_file(tmp_path) / "plots"
    _fails(cli("check", cfg, "--plots", target, "-q"), "Not a directory", str(target))


def _check_report():
    n = np.arange(1, 201)
    th = {"hot": 1 + 1 / n, "ordered": 1 - 1 / n, "measure_every": 1}
    th |= {"thermalization": 20, "needed": 10}
    return SimpleNamespace(target="c.toml", data={"thermalization": th})


def test_check_plots_on_a_full_disk_and_a_read_only_mount(tmpfs):  # noqa: F811
    for d in (tmpfs("full", "8k"), tmpfs("ro", "1m", "ro")):
        with pytest.raises(LatticeError) as e:
            write_check_plots(_check_report(), d / "plots")
        assert "\n" not in str(e.value) and str(d / "plots") in str(e.value), e.value
        _nothing_partial(d)


# ----------------------------------------------------------------------------- training
def test_training_plots_on_a_read_only_model_directory(tmpfs):  # noqa: F811
    d = tmpfs("ro", "1m", "ro")
    history = [{"step": s, "train_loss": 1 / s, "val_loss": 1.1 / s} for s in (1, 2, 3)]
    diagnostics = {
        "val_loss_sigma": [{"sigma": s, "loss": s, "error": 0.1} for s in (0.1, 1.0)],
        "cosine_similarity": {"mean": 0.9, "min": 0.8},
    }
    with pytest.raises(LatticeError, match=re.escape(f"Read-only file system: {d / 'loss.png'}")):
        write_training_plots(d, history, diagnostics)
