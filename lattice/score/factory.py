"""One factory for every score network: :func:`build_network` makes the network(s) a
:class:`~lattice.score.network.NetworkSpec` describes — for training, for loading a model
directory (the skeleton its weights are read into) and for the tests and benchmarks.

The architecture is data: ``spec.architecture`` names an entry of :data:`ARCHITECTURES`, the
classes that implement it, called as

- ``single(spec, theory, sigma_data, *, key)``: ŝ_θ(y, σ) of the whole field. The module has
  ``batch(y [B, *shape], σ)``, ``__call__(y, σ)``, the static fields ``spec``, ``theory`` and
  ``sigma_data`` (what ``model.json`` records) and ``receptive_field`` (None: global);
- ``conditional(spec, ndim, sigma_data, sigma_coarse, theory_or_None, *, key)``: ŝ_θ(y, σ | c)
  of one Haar level of the multilevel model (``conditional.py``), ``batch(y, σ, c)``; None for
  an architecture without one (multilevel training refuses it).

Adding an architecture is its module (or class) and one entry here (docs/architecture.md).

One network (``levels = None``): ``single(spec, theory, σ_d, key=k)``. The multilevel model
(``levels = n``, ``multilevel.py`` eq. (1)) is the tuple that a ``MultilevelModel`` holds and
``model.eqx`` stores, with σ_d = (σ_d,0 … σ_d,n) finest first and σ_c = (σ_c,0 … σ_c,n−1)::

    (single(plain, coarse_theory(theory, n), σ_d,n, key=fold_in(k, 1)),
     conditional(spec if j = 0 else plain, d, σ_d,j, σ_c,j, theory if j = 0 and physics else
                 None, key=fold_in(k, 10 + j))   for j = 0 … n − 1)                         (1)

with ``plain`` the spec with ``physics = False`` (only the finest level's conditional law is
e^{−S}) and ``physics`` = ``spec.physics`` unless given (model.json records it). ``k`` is
``key``, else ``jax.random.key(seed)``: the keys of ``lattice train`` since before this module
(``train.py`` passes fold_in(key(seed), 1), ``multilevel_train.py`` key(seed)), so trained
weights are unchanged bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax

from lattice.numerics.phi4 import Phi4
from lattice.score.conditional import ConditionalNet
from lattice.score.multilevel import coarse_theory
from lattice.score.network import DEFAULT_ARCHITECTURE, NetworkSpec, ScoreNet

__all__ = ["Architecture", "ARCHITECTURES", "architecture", "build_network"]


@dataclass(frozen=True)
class Architecture:
    """The classes of one architecture (their call signatures: the module docstring)."""

    single: Callable[..., Any]
    conditional: Callable[..., Any] | None = None


#: name (``[network] architecture``, model.json ``network.architecture``) → its classes
ARCHITECTURES: dict[str, Architecture] = {
    DEFAULT_ARCHITECTURE: Architecture(ScoreNet, ConditionalNet),
}


def architecture(name: str) -> Architecture:
    """The registry entry of ``name``; ValueError naming the known ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown network architecture {name!r} (known: {known})") from None


def build_network(
    spec: NetworkSpec,
    theory: Phi4,
    sigma_data: float | Sequence[float],
    seed: int | Sequence[int] = 0,
    *,
    key: jax.Array | None = None,
    levels: int | None = None,
    sigma_coarse: Sequence[float] = (),
    physics: bool | None = None,
):
    """A freshly initialized network of ``spec`` (float32 weights): one network for
    ``levels = None``, else the tuple (coarse, conditional_0 … conditional_{n−1}) of eq. (1),
    ``sigma_data`` then having n + 1 entries and ``sigma_coarse`` n. The key is ``key``, else
    ``jax.random.key(seed)``. ValueError for an unknown architecture, one without a conditional
    network asked for levels, or tables of the wrong lengths."""
    arch = architecture(spec.architecture)
    k = jax.random.key(seed) if key is None else key
    if levels is None:
        return arch.single(spec, theory, sigma_data, key=k)
    if arch.conditional is None:
        raise ValueError(f"the {spec.architecture!r} network has no multilevel (conditional) form")
    sd, sc = [float(v) for v in sigma_data], [float(v) for v in sigma_coarse]
    if not (len(sd) == levels + 1 and len(sc) == levels):
        raise ValueError(
            f"{levels} levels need {levels + 1} sigma_data and {levels} sigma_coarse"
            f" (got {len(sd)} and {len(sc)})"
        )
    physics = spec.physics if physics is None else physics
    plain = dataclasses.replace(spec, physics=False)
    coarse = arch.single(plain, coarse_theory(theory, levels), sd[-1], key=jax.random.fold_in(k, 1))
    conditionals = (
        arch.conditional(
            spec if j == 0 else plain,
            theory.ndim,
            sd[j],
            sc[j],
            theory if (j == 0 and physics) else None,
            key=jax.random.fold_in(k, 10 + j),
        )
        for j in range(levels)
    )
    return (coarse, *conditionals)
