"""The spectral (per-mode) path kernel against the isotropic one (issue 24's kernel targets).

    python benchmarks/spectral_kernel.py free            # free field, L = 16, exact score
    python benchmarks/spectral_kernel.py model runs/score_8x8_critical [--K 8 16 32]

``free``: κ = 0.24, λ = 0 on 16×16 with the exact score: var(log w) of 256 independent paths
and the MH acceptance of a path-MH run (8 chains × 200 proposals) for the isotropic analytic
kernel, the closed-form per-mode table and a table estimated from exact draws (C on 2048, M
on ``--m-fields`` of them, default 2048; ``measure_spectral``, as training does), K = 2 … 64.

``model``: a trained model directory (its theory is the model's): var(log w) and MH acceptance
(8 chains × 300 proposals after 20) with the analytic and the spectral kernel at each K; the
spectral table is the model's own (trained since issue 24) or measured from its training
ensemble (``lattice.score.tables.spectral_table_of``).

Results print as markdown rows and go to ``runs/spectral_kernel.json`` (merged per case).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

OUT = Path("runs/spectral_kernel.json")


def _mh(sampler, theory, chains: int, n: int, seed: int) -> tuple[float, float]:
    """(MH acceptance, var(log w) of the recorded proposals) of a path-MH run."""
    from lattice import run_chains

    res = run_chains(sampler, theory, chains=chains, seed=seed, n_meas=n, thermalization=20)
    lw = np.asarray(res["diagnostics"]["proposal_log_w"], np.float64)
    return float(res["acceptance"][:, 1:].mean()), float(lw[np.isfinite(lw)].var())


def free(Ks, m_fields: int = 2048) -> dict:
    from lattice import Phi4
    from lattice.config.sampler import Diffusion
    from lattice.score import spectral
    from lattice.score.gaussian import exact_gaussian_model, free_field_samples
    from lattice.score.sde import VESDE

    theory = Phi4.kappa_form([16, 16], 0.24, 0.0)
    model = exact_gaussian_model(theory, VESDE(0.01, 20.0))
    closed = spectral.stored_spectral_table(model)
    phi = free_field_samples(theory, jax.random.key(11), 2048)
    t0 = time.perf_counter()
    est = spectral.spectral_from_dict(
        spectral.measure_spectral(model.net.batch, model.sde, phi[:m_fields], phi), "draws"
    )
    print(f"table from 2048 exact draws (M on {m_fields}): {time.perf_counter() - t0:.1f} s")
    rows = {}
    for K in Ks:
        for name, kernel, table in (
            ("analytic", "analytic", None),
            ("spectral, closed form", "spectral", closed),
            ("spectral, from 2048 draws", "spectral", est),
        ):
            s = Diffusion(model="in-memory", method="sde", steps=K, kernel=kernel).build(
                theory, model=model, table=table
            )
            acc, var = _mh(s, theory, 8, 200, seed=K)
            rows[f"{name}:K{K}"] = {"K": K, "kernel": name, "acceptance": acc, "var_log_w": var}
            print(f"| {K} | {name} | {var:.3g} | {acc:.3f} |", flush=True)
    return {f"free_L16_M{m_fields}": rows}


def trained(model_dir: str, Ks) -> dict:
    from lattice.config.sampler import Diffusion
    from lattice.io.model import load_model, training_configs
    from lattice.score.tables import norm_function_of, spectral_table_of

    model = load_model(model_dir)
    theory = model.theory
    norm = norm_function_of(model, training_configs)
    table = spectral_table_of(model, training_configs)
    print(f"{model_dir}: {theory.describe()}; spectral table: {table.source}")
    rows = {}
    for K in Ks:
        for kernel in ("analytic", "spectral"):
            s = Diffusion(model=model_dir, method="sde", steps=K, kernel=kernel).build(
                theory, model=model, norm=norm, table=table
            )
            t0 = time.perf_counter()
            acc, var = _mh(s, theory, 8, 300, seed=K)
            sec = time.perf_counter() - t0
            rows[f"{kernel}:K{K}"] = {
                "K": K, "kernel": kernel, "acceptance": acc, "var_log_w": var, "seconds": sec,
            }  # fmt: skip
            print(f"| {K} | {kernel} | {var:.3g} | {acc:.3f} | {sec:.0f} s |", flush=True)
    return {Path(model_dir).name: rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=["free", "model"])
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("--K", type=int, nargs="+", default=None)
    ap.add_argument("--m-fields", type=int, default=2048, help="free: draws M is measured on")
    args = ap.parse_args()
    if args.case == "free":
        out = free(args.K or [2, 4, 8, 16, 32, 64], args.m_fields)
    else:
        if not args.model_dir:
            ap.error("model needs a model directory")
        out = trained(args.model_dir, args.K or [8, 16, 32])
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    old.update(out)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(old, indent=1) + "\n")


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)  # as the lattice command does
    main()
