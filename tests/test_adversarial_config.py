"""Adversarial config input (issue 44, "Nothing silent"): step counts beyond the step counter,
TOML nested thousands of levels deep, a FIFO or an oversize file as the config, and a --set
entry with a line break. Each is refused with exit status 2 and one line naming the key or
the file, with no traceback and no run directory made."""

from __future__ import annotations

import os

import pytest
from test_jobs import TINY, cli, write

from lattice.config.base import MAX_CONFIG_BYTES, ConfigError
from lattice.config.run import MAX_STEPS, load_config, parse_config


def _one_line(p):
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr


def _refused(p, *names):
    assert p.returncode == 2, (p.returncode, p.stderr)
    msg = _one_line(p)
    for name in names:
        assert name in msg, msg
    return msg


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["run.measure_every=4611686018427387904"], "run.measure_every"),
        (["run.thermalization=4611686018427387904"], "run.thermalization"),
        (["run.samples=4611686018427387904", "run.measure_every=4"], "run.samples"),
        ([f"run.samples={MAX_STEPS // 2}"], "run.samples"),  # × measure_every = 2: just over
    ],
)
def test_a_step_count_beyond_the_step_counter_is_refused_before_any_file(tmp_path, overrides, key):
    """Was: a TypeError/OverflowError traceback from the jitted step after the run directory
    (config, ensemble, checkpoint) had been written."""
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    sets = [a for o in overrides for a in ("--set", o)]
    msg = _refused(cli("run", cfg, "-o", tmp_path / "out", *sets), key)
    assert "2**31" in msg
    assert not (tmp_path / "out").exists()


def test_the_largest_step_count_is_accepted():
    text = TINY.format(kind="hmc")
    cfg = parse_config(text, [f"run.thermalization={MAX_STEPS - 60 - 1}"])
    assert cfg.run.thermalization + cfg.run.samples * cfg.run.measure_every == MAX_STEPS - 1


def test_a_checkpoint_cadence_beyond_the_samples_is_not_refused_for_memory(tmp_path):
    """A checkpoint_every larger than the samples makes one block of all of them: the memory
    check used the cadence, not the block, and refused a 6×4 lattice for 1e6 PB."""
    from lattice.runs.resources import resource_needs

    cfg = parse_config(TINY.format(kind="hmc"), ["run.checkpoint_every=4611686018427387904"])
    small = parse_config(TINY.format(kind="hmc"), ["run.checkpoint_every=30"])
    assert resource_needs(cfg) == resource_needs(small)


@pytest.mark.parametrize(
    "deep",
    [
        "a = " + "[" * 5000 + "]" * 5000 + "\n",
        "[" + ".".join(["a"] * 5000) + "]\nx = 1\n",
        "[lattice]\nshape = " + "[" * 400 + "4" + "]" * 400 + "\n",
    ],
    ids=["arrays", "tables", "key-value"],
)
def test_toml_nested_thousands_deep_is_refused_naming_the_file(tmp_path, deep):
    """Was: a RecursionError traceback (tomllib, copy.deepcopy, the error message)."""
    cfg = write(tmp_path, TINY.format(kind="hmc") + deep if "[lattice]" not in deep else deep)
    _refused(cli("run", cfg, "-o", tmp_path / "out"), str(cfg), "nested too deeply")
    assert not (tmp_path / "out").exists()
    # the text an ensemble stores is parsed the same way: a ConfigError naming its source
    with pytest.raises(ConfigError, match="^ensemble.h5: nested too deeply"):
        parse_config(deep, origin="ensemble.h5")


def test_a_deep_set_value_is_refused_naming_the_key(tmp_path):
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    p = cli("run", cfg, "-o", tmp_path / "out", "--set", "name=" + "[" * 5000 + "]" * 5000)
    _refused(p, "name", "nested too deeply")
    assert not (tmp_path / "out").exists()


def test_a_fifo_as_the_config_is_refused_without_waiting(tmp_path):
    """Was: `lattice run fifo.toml` and `lattice resume DIR` (config.toml a FIFO) waited
    forever for a writer."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    p = cli("run", fifo, "-o", tmp_path / "out", process=True, timeout=60)
    _refused(p, str(fifo), "not a regular file")
    assert not (tmp_path / "out").exists()
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    os.mkfifo(run_dir / "config.toml")
    p = cli("resume", run_dir, process=True, timeout=60)
    _refused(p, str(run_dir / "config.toml"), "not a regular file")
    assert sorted(x.name for x in run_dir.iterdir()) == ["config.toml"]


def test_a_directory_or_device_as_the_config_is_refused(tmp_path):
    for path in (tmp_path, "/dev/null"):
        with pytest.raises(ConfigError, match=f"^{path}: not a regular file"):
            load_config(path)


def test_an_oversize_config_is_refused_before_it_is_read(tmp_path):
    """Was: a 200 MB config read whole (2 GB of memory) before the TOML error."""
    big = tmp_path / "big.toml"
    with open(big, "w") as f:
        f.write(TINY.format(kind="hmc"))
        f.write(("#" * 1023 + "\n") * (MAX_CONFIG_BYTES // 1024 + 1))
    msg = _refused(cli("run", big, "-o", tmp_path / "out"), str(big), "1 MiB")
    assert "larger than" in msg
    assert not (tmp_path / "out").exists()
    # the same limit for a run directory's config.toml (resume)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    os.replace(big, run_dir / "config.toml")
    _refused(cli("resume", run_dir), str(run_dir / "config.toml"), "1 MiB")


def test_the_size_limit_holds_while_reading(tmp_path, monkeypatch):
    """A file that grows after its size was looked at is still read only up to the limit."""
    import lattice.config.base as base

    path = write(tmp_path, TINY.format(kind="hmc"))
    monkeypatch.setattr(base, "MAX_CONFIG_BYTES", 64)
    real = os.fstat

    def small(fd):  # the file as it looked before it grew
        st = real(fd)
        return os.stat_result((st.st_mode, *st[1:6], 10, *st[7:]))

    monkeypatch.setattr(base.os, "fstat", small)
    with pytest.raises(ConfigError, match="larger than 64 bytes"):
        load_config(path)


@pytest.mark.parametrize("sep", ["\n", "\r\n", "\r"])
def test_a_set_entry_with_a_line_break_is_refused(tmp_path, sep):
    """Was: `--set $'run.seed=5\\nrun.chains=7'` set the seed and silently dropped the rest."""
    cfg = write(tmp_path, TINY.format(kind="hmc"))
    p = cli("run", cfg, "-o", tmp_path / "out", "--set", f"run.seed=5{sep}run.chains=7")
    msg = _refused(p, "run.seed", "line break")
    assert "run.chains=7" in msg
    assert not (tmp_path / "out").exists()
