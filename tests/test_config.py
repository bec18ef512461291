"""Run config: defaults, both action forms, overrides, TOML round trip, diff, and errors."""

from __future__ import annotations

import pytest
import tomllib

from lattice.config.run import (
    ConfigError,
    RunConfig,
    apply_overrides,
    load_config,
    parse_config,
)

BASE = """
name = "test"

[lattice]
shape = [8, 8]

[action]
kappa = 0.2
lambda = 0.02

[sampler]
kind = "langevin"
"""


def cfg_with(*overrides: str) -> RunConfig:
    return parse_config(BASE, overrides)


def config_error(*overrides: str, source=BASE) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(source, overrides)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- valid configs
def test_defaults_are_filled():
    cfg = cfg_with()
    assert (cfg.name, cfg.description) == ("test", "")
    assert cfg.lattice.shape == (8, 8) and cfg.lattice.ndim == 2 and cfg.lattice.volume == 64
    a = cfg.action
    assert (a.form, a.kappa, a.m2, a.lam) == ("kappa", 0.2, None, 0.02)
    s = cfg.sampler
    assert (s.kind, s.step_size, s.scheme) == ("langevin", 0.01, "euler")
    assert (s.fourier_acceleration, s.fourier_mass2) == (False, "auto")
    # keys of other kinds are not part of a kind's schema
    assert (getattr(s, "trajectory_length", None), getattr(s, "steps", None)) == (None, None)
    assert s.leapfrog_step is None
    assert (s.cluster, s.cluster_every) == ("none", 1)
    r = cfg.run
    assert (r.chains, r.seed, r.thermalization, r.samples) == (8, 1, 1000, 2000)
    assert (r.measure_every, r.save_every, r.checkpoint_every) == (10, 10, 100)
    assert (r.dtype, r.start, r.prng) == ("float64", "hot", "threefry")


def test_minimal_config_gets_default_name():
    cfg = parse_config(
        {
            "lattice": {"shape": [4]},
            "action": {"kappa": 0.1, "lambda": 1},
            "sampler": {"kind": "mala"},
        }
    )
    assert cfg.name == "run" and cfg.sampler.scheme == "euler" and cfg.sampler.step_size == 0.01


def test_mass_form():
    raw = tomllib.loads(BASE)
    raw["action"] = {"form": "mass", "m2": 0.5, "lambda": 0}
    assert parse_config(raw).action.m2 == 0.5
    cfg = parse_config(raw, ["action.m2=-4", "action.lambda=8"])
    a = cfg.action
    assert (a.form, a.m2, a.kappa, a.lam) == ("mass", -4.0, None, 8.0)


def test_hmc_resolution():
    s = cfg_with("sampler.kind=hmc").sampler
    assert (s.scheme, s.trajectory_length, s.steps) == ("leapfrog", 1.0, 10)
    assert getattr(s, "step_size", None) is None
    assert s.leapfrog_step == pytest.approx(0.1)
    s = cfg_with("sampler.kind=hmc", "sampler.steps=4", "sampler.scheme=omelyan").sampler
    assert (s.scheme, s.leapfrog_step) == ("omelyan", 0.25)


def test_ints_are_accepted_as_floats():
    cfg = cfg_with("sampler.step_size=1", "action.kappa=0", "sampler.fourier_mass2=2")
    assert isinstance(cfg.sampler.step_size, float) and cfg.sampler.step_size == 1.0
    assert isinstance(cfg.action.kappa, float) and cfg.sampler.fourier_mass2 == 2.0


def test_overrides_of_every_section():
    cfg = cfg_with(
        "name=other",
        'description = "a b"',
        "lattice.shape=[4, 6, 2]",
        "action.kappa=0.15",
        "action.lambda=0",
        "sampler.scheme=rk2",
        "sampler.fourier_acceleration=true",
        "sampler.fourier_mass2=0.5",
        "run.chains=3",
        "run.dtype=float32",
        'run.start="cold"',
        "run.save_every=0",
    )
    assert (cfg.name, cfg.description, cfg.lattice.shape) == ("other", "a b", (4, 6, 2))
    assert (cfg.action.kappa, cfg.action.lam) == (0.15, 0.0)
    assert (cfg.sampler.scheme, cfg.sampler.fourier_acceleration) == ("rk2", True)
    assert cfg.sampler.fourier_mass2 == 0.5
    r = cfg.run
    assert (r.chains, r.dtype, r.start, r.save_every) == (3, "float32", "cold", 0)


def test_apply_overrides_copies_and_creates_sections():
    raw = {"lattice": {"shape": [8]}}
    out = apply_overrides(raw, ["run.chains=2", "lattice.shape=[4]", "name=x y", "run.prng=rbg"])
    assert raw == {"lattice": {"shape": [8]}}
    assert out == {"lattice": {"shape": [4]}, "run": {"chains": 2, "prng": "rbg"}, "name": "x y"}


def test_load_config(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text(BASE)
    assert load_config(path) == cfg_with()
    assert load_config(str(path), ["run.seed=7"]).run.seed == 7


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("sampler.kind=hmc", "sampler.scheme=omelyan", "sampler.trajectory_length=0.5"),
        ("sampler.kind=mala", "sampler.cluster_every=3"),
        ("action.form=mass", "action.m2=-4", "action.lambda=8"),
        ("sampler.fourier_acceleration=true", "sampler.fourier_mass2=1e-05"),
        ('description="quote \\" backslash \\\\ tab \\t nl \\n del \\u007F é"', "name=ü"),
        ("lattice.shape=[3]", "action.lambda=0", "action.kappa=-0.9", "run.start=ordered"),
    ],
)
def test_to_toml_round_trip(overrides):
    raw = tomllib.loads(BASE)
    if "action.form=mass" in overrides:
        del raw["action"]["kappa"]
    cfg = parse_config(raw, overrides)
    text = cfg.to_toml()
    assert parse_config(text) == cfg
    assert parse_config(cfg.to_dict()) == cfg
    assert tomllib.loads(text) == cfg.to_dict()
    assert "lambda =" in text and "lam =" not in text


def test_to_toml_omits_keys_that_do_not_apply():
    text = cfg_with("sampler.kind=hmc").to_toml()
    assert "step_size" not in text and "steps = 10" in text and "m2" not in text
    text = cfg_with().to_toml()
    assert "step_size = 0.01" in text and "trajectory_length" not in text


def test_the_ode_solver_is_written_only_when_given():
    """``sampler.solver`` is unset (Dopri5) unless given, so that the resolved config of an
    ode run made before the key existed is unchanged; a given solver is kept and round-trips."""
    ode = ("sampler.kind=diffusion", "sampler.method=ode", "sampler.model='m'")
    text = cfg_with(*ode).to_toml()
    assert "solver" not in text and "rtol = " in text
    cfg = cfg_with(*ode, "sampler.solver='bosh3'")
    assert 'solver = "bosh3"' in cfg.to_toml() and parse_config(cfg.to_toml()) == cfg
    assert cfg.sampler.options()["solver"] == "bosh3"
    assert cfg_with(*ode).diff(cfg) == ["sampler.solver"]


def test_diffusion_defaults_name_the_kernels_options():
    """The schema's defaults are for keys the kernel takes, and every kernel option is a field
    of the schema (one list of names, the kernel's)."""
    from lattice.config.sampler import Diffusion
    from lattice.samplers.diffusion import METHODS, OPTIONS

    assert set(Diffusion.METHOD_DEFAULTS) == set(METHODS)
    for method, defaults in Diffusion.METHOD_DEFAULTS.items():
        assert set(defaults) <= set(OPTIONS[method]), method
        assert set(OPTIONS[method]) <= set(Diffusion.model_fields), method


def test_diff():
    a = cfg_with()
    assert a.diff(cfg_with()) == []
    b = cfg_with("run.chains=2", "action.lambda=0.5", "sampler.kind=hmc")
    assert a.diff(b) == [
        "action.lambda",
        "sampler.kind",
        "sampler.step_size",
        "sampler.scheme",
        "sampler.noise_precision",
        "sampler.trajectory_length",
        "sampler.steps",
        "run.chains",
    ]
    assert cfg_with("name=x").diff(a) == ["name"]


def test_config_is_frozen_and_hashable():
    cfg = cfg_with()
    with pytest.raises(ValueError):
        cfg.run.chains = 3
    assert hash(cfg) == hash(cfg_with())


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # unknown sections and keys
        (["foo.bar=1"], "foo: unknown section (allowed: name, description, lattice,"),
        (["foo=1"], "foo: unknown key"),
        (["run.foo=1"], "run.foo: unknown key (allowed: chains, seed,"),
        (["sampler.model=x"], "sampler.model: only used by diffusion (kind = 'langevin')"),
        (["sampler.modle=x"], "sampler.modle: unknown key"),
        (["action.lam=0.1"], "action.lam: unknown key (allowed: form, kappa, m2, lambda)"),
        # wrong types
        (['run.chains="8"'], "run.chains: expected an integer (got '8')"),
        (["run.chains=true"], "run.chains: expected an integer (got true)"),
        (["run.seed=1.0"], "run.seed: expected an integer (got 1.0)"),
        (['sampler.step_size="0.1"'], "sampler.step_size: expected a number (got '0.1')"),
        (["action.kappa=true"], "action.kappa: expected a number"),
        (["name=3"], "name: expected a string (got 3)"),
        (["sampler.fourier_acceleration=1"], "sampler.fourier_acceleration: expected a boolean"),
        (["lattice.shape=8"], "lattice.shape: expected a list (got 8)"),
        (["lattice.shape=[8.0, 8]"], "lattice.shape[0]: expected an integer (got 8.0)"),
        (["lattice=3"], "lattice: expected a table"),
        (["sampler.fourier_mass2=foo"], "sampler.fourier_mass2: expected a number > 0 or"),
        # out of range
        (["lattice.shape=[8, 0]"], "lattice.shape[1]: must be >= 1 (got 0)"),
        (["lattice.shape=[]"], "lattice.shape: must have at least 1 entry"),
        (["sampler.step_size=0"], "sampler.step_size: must be > 0 (got 0)"),
        (["sampler.step_size=-0.1"], "sampler.step_size: must be > 0 (got -0.1)"),
        (["sampler.step_size=inf"], "sampler.step_size: must be a finite number"),
        (["sampler.fourier_mass2=0"], "sampler.fourier_mass2: must be > 0 or"),
        (["run.chains=0"], "run.chains: must be >= 1 (got 0)"),
        (["run.seed=-1"], "run.seed: must be >= 0"),
        (["run.save_every=-1"], "run.save_every: must be >= 0"),
        (["run.checkpoint_every=0"], "run.checkpoint_every: must be >= 1"),
        (["run.dtype=float16"], "run.dtype: must be one of float64, float32 (got 'float16')"),
        (["run.start=warm"], "run.start: must be one of hot, cold, ordered"),
        (["run.prng=mt"], "run.prng: must be one of threefry, rbg, unsafe_rbg"),
        # action
        (["action.lambda=-0.1"], "action.lambda: must be >= 0 (the action is unbounded below"),
        (["action.form=hopping"], "action.form: must be one of kappa, mass"),
        (["action.m2=1"], 'action.m2: not used by form = "kappa"'),
        (["action.form=mass", "action.m2=1"], 'action.kappa: not used by form = "mass"'),
        (["action.form=mass"], "action.kappa: not used"),
        # sampler
        (
            ["sampler.kind=foo"],
            "sampler.kind: must be one of langevin, mala, hmc, diffusion (got 'foo')",
        ),
        (
            ["sampler.kind=diffusion"],
            "sampler.model: required key is missing (kind = 'diffusion': a model directory)",
        ),
        (
            ["sampler.kind=diffusion", "sampler.step_size=0.1"],
            "sampler.step_size: not used by diffusion",
        ),
        (
            ["sampler.kind=hmc", "sampler.model='m'"],
            "sampler.model: only used by diffusion (kind = 'hmc')",
        ),
        (
            [
                "sampler.kind=diffusion",
                "sampler.method=pc",
                "sampler.metropolis=true",
                "sampler.model='m'",
            ],
            "sampler.metropolis: needs method = 'sde', 'multilevel' or 'ode', the ones with a"
            " density",
        ),
        (
            [
                "sampler.kind=diffusion",
                "sampler.method=ode",
                "sampler.kernel='em'",
                "sampler.model='m'",
            ],
            "sampler.kernel: only used by method = 'sde' (method = 'ode')",
        ),
        (
            [
                "sampler.kind=diffusion",
                "sampler.method=sde",
                "sampler.kernel='gauss'",
                "sampler.model='m'",
            ],
            "sampler.kernel: must be one of spectral, analytic, em",
        ),
        (
            [
                "sampler.kind=diffusion",
                "sampler.method=sde",
                "sampler.steps=1",
                "sampler.model='m'",
            ],
            "sampler.steps: must be >= 2 for method = 'sde' (got 1)",
        ),
        (
            ["sampler.kind=diffusion", "sampler.snr=0.1", "sampler.model='m'"],
            "sampler.snr: only used by method = 'pc' (method = 'sde')",
        ),
        (
            ["sampler.kind=diffusion", "sampler.solver='bosh3'", "sampler.model='m'"],
            "sampler.solver: only used by method = 'ode' (method = 'sde')",
        ),
        (
            [
                "sampler.kind=diffusion",
                "sampler.method=ode",
                "sampler.solver='rk4'",
                "sampler.model='m'",
            ],
            "sampler.solver: must be one of dopri5, tsit5, bosh3",
        ),
        (["sampler.cluster=wolff"], "sampler.cluster: must be one of none, sw (got 'wolff')"),
        (["sampler.cluster_every=0"], "sampler.cluster_every: must be >= 1"),
        (
            ["sampler.kind=hmc", "sampler.step_size=0.1"],
            "sampler.step_size: not used by hmc (its step is trajectory_length / steps)",
        ),
        (["sampler.steps=5"], "sampler.steps: only used by hmc"),
        (["sampler.kind=mala", "sampler.trajectory_length=1"], "sampler.trajectory_length: only"),
        (["sampler.kind=hmc", "sampler.steps=0"], "sampler.steps: must be >= 1"),
        (
            ["sampler.kind=mala", "sampler.fourier_acceleration=true"],
            "sampler.fourier_acceleration: only available for langevin, hmc",
        ),
        (
            ["sampler.kind=hmc", "sampler.fourier_mass2=-1"],
            "sampler.fourier_mass2: ",
        ),
        (["sampler.scheme=leapfrog"], "sampler.scheme: must be one of euler, rk2 for kind"),
        (["sampler.kind=mala", "sampler.scheme=rk2"], "sampler.scheme: must be one of euler for"),
        (["sampler.kind=hmc", "sampler.scheme=euler"], "sampler.scheme: must be one of leapfrog,"),
        # several errors are reported together
        (["run.chains=0", "run.seed=x"], "run.chains: must be >= 1 (got 0); run.seed: expected"),
    ],
)
def test_bad_values(overrides, expected):
    assert expected in config_error(*overrides)


@pytest.mark.parametrize(
    ("shape", "kappa"),
    [
        ("[8]", 0.5),
        ("[8]", 0.7),
        ("[8, 8]", 0.25),
        ("[4, 6]", 0.3),
        ("[4, 4, 4]", 1 / 6),
        ("[4, 4, 4]", 0.2),
        ("[3, 5]", 0.25),
    ],
)
def test_free_field_kappa_too_large(shape, kappa):
    d = shape.count(",") + 1
    msg = config_error(f"lattice.shape={shape}", f"action.kappa={kappa!r}", "action.lambda=0")
    assert msg.startswith(
        f"action.kappa: free field (lambda = 0) needs kappa < 1/(2d) = {1 / (2 * d):g}"
    )
    assert f"for d = {d}; the action is unbounded below" in msg


@pytest.mark.parametrize(
    ("shape", "kappa"), [("[8]", -0.5), ("[8, 8]", -0.25), ("[4, 2, 6]", -0.2), ("[3, 3]", -0.5)]
)
def test_free_field_kappa_too_negative(shape, kappa):
    msg = config_error(f"lattice.shape={shape}", f"action.kappa={kappa}", "action.lambda=0")
    assert msg.startswith("action.kappa: free field (lambda = 0) needs kappa > ")


@pytest.mark.parametrize(
    ("shape", "kappa"),
    [
        ("[8]", 0.49),
        ("[8, 8]", 0.249),
        ("[4, 4, 4]", 0.1666),
        ("[8, 8]", -0.249),
        ("[3, 3]", -0.49),
        ("[1]", -100.0),
        ("[1, 1]", 0.249),
    ],
)
def test_free_field_kappa_stable(shape, kappa):
    cfg = cfg_with(f"lattice.shape={shape}", f"action.kappa={kappa}", "action.lambda=0")
    assert cfg.action.kappa == kappa
    # with a quartic term any kappa is fine
    assert cfg_with(f"lattice.shape={shape}", "action.kappa=3").action.kappa == 3.0


@pytest.mark.parametrize("m2", [0, -1, -0.5])
def test_free_field_mass_form(m2):
    raw = tomllib.loads(BASE)
    raw["action"] = {"form": "mass", "m2": m2, "lambda": 0}
    with pytest.raises(ConfigError, match=r"^action\.m2: free field \(lambda = 0\) needs m2 > 0"):
        parse_config(raw)
    assert parse_config(raw, ["action.lambda=0.1"]).action.m2 == m2  # a quartic term is fine


@pytest.mark.parametrize(
    ("delete", "expected"),
    [
        (("lattice", "shape"), "lattice.shape: required key is missing"),
        (("action", "kappa"), 'action.kappa: required key is missing (form = "kappa")'),
        (("action", "lambda"), "action.lambda: required key is missing"),
        (("sampler", "kind"), "sampler.kind: required key is missing"),
        (("sampler",), "sampler: required section is missing"),
    ],
)
def test_missing_keys(delete, expected):
    raw = tomllib.loads(BASE)
    if len(delete) == 1:
        del raw[delete[0]]
    else:
        del raw[delete[0]][delete[1]]
    with pytest.raises(ConfigError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
        parse_config(raw)


def test_malformed_toml(tmp_path):
    msg = config_error(source="name = \n[lattice]\n")
    assert msg.startswith("<string>: malformed TOML: ")
    path = tmp_path / "config.toml"
    path.write_text("[lattice\nshape = [8]\n")
    with pytest.raises(ConfigError, match=r"config\.toml: malformed TOML: "):
        load_config(path)
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("run.chains", "run.chains: bad override 'run.chains', expected section.key=value"),
        ("run..chains=1", "run..chains: bad override"),
        ("=1", "--set: bad override '=1'"),
        ("run.chains=", "run.chains: bad override 'run.chains=', the value after '=' is missing"),
        ("name.x=1", "name: is not a table, cannot set name.x"),
    ],
)
def test_bad_override_syntax(override, expected):
    assert expected in config_error(override)


def test_overrides_value_parsing():
    raw = apply_overrides({}, ["a.b=float32", "a.c=[1, 2]", 'a.d="x"', "a.e=1e-3", "a.f=true"])
    assert raw == {"a": {"b": "float32", "c": [1, 2], "d": "x", "e": 1e-3, "f": True}}


def test_changing_the_kind_by_override_drops_keys_the_new_kind_does_not_use():
    text = """
[lattice]
shape = [4, 4]
[action]
kappa = 0.2
lambda = 0.1
[sampler]
kind = "langevin"
step_size = 0.02
scheme = "rk2"
fourier_acceleration = true
"""
    cfg = parse_config(text, ["sampler.kind=hmc"])
    assert cfg.sampler.kind == "hmc" and cfg.sampler.scheme == "leapfrog"
    assert getattr(cfg.sampler, "step_size", None) is None
    assert cfg.sampler.fourier_acceleration  # hmc has it too (a Fourier mass)
    cfg = parse_config(text, ["sampler.kind=mala"])
    assert cfg.sampler.step_size == 0.02 and cfg.sampler.scheme == "euler"
    assert not cfg.sampler.fourier_acceleration  # mala has none: dropped with the kind
    # an explicit override that does not fit the new kind is still refused
    with pytest.raises(ConfigError, match="sampler.step_size"):
        parse_config(text, ["sampler.kind=hmc", "sampler.step_size=0.1"])
    # without a kind change nothing is dropped
    with pytest.raises(ConfigError, match="sampler.steps"):
        parse_config(text, ["sampler.steps=4"])


def test_every_shipped_run_config_is_valid():
    """The configs in runs/ (the README's commands use them) load without error."""
    from pathlib import Path

    from lattice.config.run import load_config
    from lattice.config.train import load_train_config

    paths = sorted((Path(__file__).parent.parent / "runs").glob("*.toml"))
    assert {p.name for p in paths} >= {"quickstart.toml", "critical_sw.toml", "score_8x8.toml"}
    import tomllib

    for p in paths:
        if "train" in tomllib.loads(p.read_text()):  # a training config (score_*, ml_8x8)
            t = load_train_config(p)  # data, or the theory of a training from the action
            assert t.train.ensemble or t.from_action
            continue
        cfg = load_config(p)
        assert cfg.lattice.shape
    assert load_config(paths[0].parent / "critical_sw.toml").sampler.cluster == "sw"
