"""What ``lattice info`` shows of a trained model directory (:mod:`lattice.results.info` for the
other kinds): model.json's records, checked by :func:`lattice.io.model.load_model`, as
``lattice info --json`` (:meth:`ModelInfo.to_json`, docs/score.md) and as text lines
(:meth:`ModelInfo.rows`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModelInfo", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """A trained model directory: its model.json (``meta``, checked by ``load_model``) and what
    the loaded model adds: the theory in words, the network in words and its receptive field
    (None: global)."""

    path: str
    meta: dict[str, Any] = field(repr=False)
    theory_text: str
    network_text: str
    receptive_field: int | None

    def to_json(self) -> dict[str, Any]:
        """``lattice info --json`` of a model (docs/score.md): model.json's records, the tables
        by their sizes."""
        meta = self.meta
        tr = meta.get("training") or {}
        ml = meta.get("multilevel")
        diag = meta.get("diagnostics") or {}
        norms = meta.get("score_norms")
        return {
            "kind": "model",
            "path": self.path,
            "method": "multilevel" if ml else "single",
            "theory": meta.get("theory"),
            "sde": None if ml else meta.get("sde"),
            "multilevel": None
            if not ml
            else {k: ml.get(k) for k in ("levels", "coarse_shape", "physics", "scale", "sdes")},
            "network": {
                **(meta.get("network") or {}),
                "parameters": meta.get("parameters"),
                "receptive_field": self.receptive_field,
            },
            "data": meta.get("data"),
            "training": meta.get("training"),
            "cosine_similarity": diag.get("cosine_similarity"),
            "path_weights": diag.get("path") if tr.get("objective") == "path" else None,
            "score_norm_levels": len(norms["sigma"]) if norms else None,
            "spectral": [_table_size(t) for t in ml["spectral"]]
            if ml
            else _table_size(meta.get("spectral")),
            "created": meta.get("created"),
            "lattice_version": meta.get("lattice_version"),
            "weights_sha256": (meta.get("weights") or {}).get("sha256"),
        }

    def rows(self) -> list[tuple[str, str]]:
        """The (name, text) lines of ``lattice info`` on a model; a record the model.json lacks
        (a model saved through the Python API, not by ``lattice train``) is "not recorded"."""
        meta, rf = self.meta, self.receptive_field
        tr, data = meta.get("training") or {}, meta.get("data") or {}
        cs = (meta.get("diagnostics") or {}).get("cosine_similarity") or {}
        ml = meta.get("multilevel")
        rows = [("score model", self.path), ("theory", self.theory_text)]
        if ml:
            sdes = ", ".join(f"{x['sigma_max']:.4g}" for x in ml["sdes"])
            rows += [
                ("multilevel", f"{ml['levels']} Haar levels down to {list(ml['coarse_shape'])}:"
                 " a conditional network per level (the finest "
                 + ("physics-informed" if ml["physics"] else "plain")
                 + f"), a plain one for the coarse field; transfer scale a = {ml['scale']:.4g}"),
                ("SDEs", f"VE per level, sigma_max {sdes} (details finest first, then the "
                 "coarse field)"),
            ]  # fmt: skip
        else:
            sde = meta["sde"]
            rows.append(("SDE", f"{sde['kind'].upper()}, sigma {sde['sigma_min']:.4g} .. "
                                f"{sde['sigma_max']:.4g}"))  # fmt: skip
        rows.append(_row("network", lambda: (
            f"{self.network_text}, {meta['parameters']:,} parameters, receptive field "
            + (f"R = {rf}" if rf is not None else "global"))))  # fmt: skip
        if tr.get("objective") == "path":
            rows += _path_rows(meta)
        else:
            rows += [
                _row("data", lambda: (
                    f"{data['ensemble']} (uuid {data['uuid']}), {data['train_configs']} + "
                    f"{data['validation_configs']} held out")),
                _row("training", lambda: (
                    f"{tr['steps']} steps x batch {tr['batch_size']} in {tr['seconds']:.0f} s")),
                _row("loss", lambda: (
                    f"train {tr['train_loss']:.4f}, validation {tr['val_loss']:.4f}")),
                _row("cos(s, -dS/dphi)", lambda: (
                    f"{cs['mean']:.4f} (min {cs['min']:.4f}) at sigma {cs['sigma']:.3g}")),
            ]  # fmt: skip
        norms = meta.get("score_norms")
        rows.append((
            "score norms",
            f"u(sigma) at {len(norms['sigma'])} noise levels (analytic path kernel)"
            if norms
            else "none stored (measured from the training ensemble when the sampler is built)"
            if tr.get("objective") != "path"
            else "none (trained without an ensemble: the analytic kernel is not available)",
        ))  # fmt: skip
        if ml:
            sizes = ", ".join(
                f"{len(t['sigma'])} noise levels x {len(t['power'])} modes" for t in ml["spectral"]
            )
            src = ml["spectral"][0].get("source")
            rows.append(("spectral tables", f"{sizes} (per level, finest first); {src}"))
        else:
            rows.append(("spectral table", _spectral_text(meta.get("spectral"))))
        rows.append(_row("created", lambda: f"{meta['created']} by lattice "
                                           f"{meta['lattice_version']}"))  # fmt: skip
        return rows


def _row(name: str, text) -> tuple[str, str]:
    """(name, ``text()``), or (name, "not recorded") when a record it reads is missing."""
    try:
        return name, text()
    except (KeyError, TypeError, ValueError):
        return name, "not recorded"


def _path_rows(meta: dict) -> list[tuple[str, str]]:
    """The rows on a model trained on the path weight: its start, the objective with K and the
    noise levels, and the final Var log w, MH acceptance and ESS of its path weights."""
    tr, data = meta["training"], meta.get("data") or {}
    fin = (meta.get("diagnostics") or {}).get("path") or {}

    def start():
        origin = (
            f"the action alone (Hartree mu^2 = {data['hartree_mu2']:.4g})"
            if data.get("from") == "action"
            else f"the ensemble {data.get('ensemble')}"
        )
        if "init" not in data:
            return f"none: trained from {origin}"
        init = data["init"]
        return f"fine-tuned from {init['model']} (sha256 {init['sha256'][:12]}...; from {origin})"

    def levels():
        lv = tr["noise_levels"]
        return (
            f"path objective (Var log w) at K = {tr['path_steps']}, sigma_1..sigma_K "
            f"{lv[1]:.4g}..{lv[-1]:.4g}; {tr['steps']} steps x {tr['batch_size']} paths in "
            f"{tr['seconds']:.0f} s (run it with sampler.steps = {tr['path_steps']})"
        )

    def weights():
        return (
            f"Var log w {fin['var_log_w']:.4g}, MH acceptance {fin['acceptance_pairs']:.3f}"
            f" (pairs; {fin['acceptance_gauss']:.3f} Gaussian), ESS per path {fin['ess']:.3f}"
            f" on {fin['paths']} fresh paths"
        )

    return [_row("data", start), _row("training", levels), _row("path weights", weights)]


def _spectral_text(table: dict | None) -> str:
    """The line on a model's per-mode kernel table: its size and origin."""
    if not table:
        return (
            "none stored (kernel = 'spectral' measures it from the training ensemble when the"
            " sampler is built; the default kernel is then 'analytic')"
        )
    return (
        f"M(sigma, p) at {len(table['sigma'])} noise levels x {len(table['power'])} modes, C(p) "
        f"(spectral path kernel, the default); {table.get('source', 'origin not recorded')}"
    )


def _table_size(table: dict | None) -> dict[str, Any] | None:
    """A kernel table by its size: noise levels, modes and where it was measured."""
    if not table:
        return None
    return {"noise_levels": len(table["sigma"]), "modes": len(table["power"]),
            "source": table.get("source")}  # fmt: skip


def model_info(directory: Path) -> ModelInfo:
    """The :class:`ModelInfo` of a trained model directory (:class:`~lattice.score.model.
    ModelError` names what is missing or damaged)."""
    # here: loading a model imports jax and equinox, which a run's info must not
    from lattice.io.model import load_model
    from lattice.score.network import DEFAULT_ARCHITECTURE  # jax and equinox, likewise

    m = load_model(directory)
    multilevel = m.meta.get("kind") == "multilevel"
    spec = m.conditionals[0].spec if multilevel else m.net.spec
    # the network's own receptive field (any architecture; the finest level's spec for multilevel)
    rf = spec.receptive_field if multilevel else m.receptive_field
    sizes = (
        f"{'physics-informed' if spec.physics else 'plain'}, {spec.channels} channels"
        f" x {spec.blocks} blocks"
        if spec.architecture == DEFAULT_ARCHITECTURE
        else f"architecture {spec.architecture!r}"
    )
    return ModelInfo(str(directory), m.meta, m.theory.describe(), sizes, rf)
