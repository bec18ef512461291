"""The CPU code-generation options of the hot loops change the speed, never the numbers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = """
import sys, numpy as np, jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from lattice import Hmc, Langevin, Phi4, run_chains
from lattice.numerics.compile import cpu_options
th = Phi4.kappa_form([12, 10], 0.26, 0.022)
out = {"options": np.array(str(cpu_options()))}
for name, s, dt in (("euler32", Langevin(step_size=0.01).build(th), jnp.float32),
                    ("euler64", Langevin(step_size=0.01).build(th), jnp.float64),
                    ("rk2", Langevin(step_size=0.01, scheme="rk2").build(th), jnp.float32),
                    ("hmc", Hmc(trajectory_length=1.0, steps=10).build(th), jnp.float64)):
    r = run_chains(s, th, chains=4, seed=2, n_meas=10, measure_every=4, dtype=dt)
    out[name] = np.asarray(r["states"].phi)
    out[name + "_phi2"] = r["obs"]["phi2"]
np.savez(sys.argv[1], **out)
"""


@pytest.mark.long  # two fresh interpreters compile every loop without the cache
def test_vector_width_does_not_change_results(tmp_path):
    runs = {}
    for width in ("0", "512"):
        # Compiled afresh: the suite's shared compilation cache must not stand in for either.
        env = dict(os.environ, LATTICE_VECTOR_WIDTH=width, JAX_ENABLE_COMPILATION_CACHE="false")
        path = tmp_path / f"w{width}.npz"
        p = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr
        runs[width] = np.load(path)
    assert str(runs["0"]["options"]) == "{}"
    assert "512" in str(runs["512"]["options"])
    for name in runs["0"].files:
        if name != "options":
            assert np.array_equal(runs["0"][name], runs["512"][name]), name
