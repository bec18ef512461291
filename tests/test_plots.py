"""lattice.app.plots: the measure plots of a synthetic ensemble."""

import math

import numpy as np

from lattice.app.plots import write_measure_plots
from lattice.io.ensemble import EnsembleWriter
from lattice.io.reader import open_ensemble
from lattice.numerics.analysis import ar1
from lattice.results.measure import measure_ensemble

PNG = b"\x89PNG\r\n\x1a\n"

CONFIG = """
name = "synthetic"
[lattice]
shape = [8, 4]
[action]
kappa = 0.2
lambda = 0.5
[sampler]
kind = "hmc"
[run]
chains = 3
samples = 200
"""


def _synthetic_ensemble(path, seed, chains=3, n=200, shape=(8, 4)):
    V, L0 = math.prod(shape), shape[0]
    m = 0.3 + 0.1 * ar1(seed, n, 0.7, chains)
    rng = np.random.default_rng(seed)
    phi2 = 1.0 + 0.05 * ar1(seed + 1, n, 0.5, chains)
    t = np.arange(L0)
    g0 = 0.2 * np.cosh(0.5 * (t - L0 / 2)) / np.cosh(0.5 * L0 / 2)
    G = V * m[..., None] ** 2 / L0 + g0 * (1 + 0.05 * rng.standard_normal((chains, n, L0)))
    obs = {
        "action": 0.8 + 0.05 * ar1(seed + 2, n, 0.6, chains),
        "phi2": phi2,
        "phi4": 3 * phi2**2,
        "m": m,
        "abs_m": np.abs(m),
        "m2": m**2,
        "m4": m**4,
        "chi": V * m**2,
        "sd": 1.0 + 0.01 * rng.standard_normal((chains, n)),
        "G": G,
    }
    w = EnsembleWriter.create(
        path,
        config_toml=CONFIG,
        config_attrs={"lattice.shape": list(shape), "sampler.name": "synthetic"},
        chains=chains,
        samples=n,
        shape=shape,
        n_saved=0,
        dtype=np.float64,
        observable_shapes={k: v.shape[2:] for k, v in obs.items()},
        block=n,
    )
    ones = np.ones((chains, n))
    with w:
        w.write_block(0, obs, {"acceptance": ones, "exp_minus_dh": ones})
        w.commit(n, 0, 0.0, 0, complete=True)
    return open_ensemble(path)


def test_write_measure_plots_writes_six_pngs(tmp_path, seed):
    ens = _synthetic_ensemble(tmp_path / "ensemble.h5", seed)
    res = measure_ensemble(ens, discard=20)
    written = write_measure_plots(ens, res, tmp_path / "plots", discard=20)
    names = ["history.png", "hist_m.png", "rho.png", "tau_int.png", "G.png", "meff.png"]
    assert sorted(p.name for p in written) == sorted(names)
    for name in names:
        p = tmp_path / "plots" / name
        assert p.is_file() and p.stat().st_size > 1000
        assert p.read_bytes()[:8] == PNG
    import matplotlib.pyplot as plt  # the module never uses pyplot: no figures left behind

    assert plt.get_fignums() == []
