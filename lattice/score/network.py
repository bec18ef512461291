"""Score network ŝ_θ(y, σ) ≈ ∇_y log q_σ(y), q_σ = e^{−S} ∗ N(0, σ²), with the lattice's symmetries.

Symmetries, by construction:

- **translations**: every layer is a periodic (circularly padded) convolution or a function of
  site averages, so shifting y shifts ŝ (to round-off; zero padding would break this);
- **Z₂**: ŝ(y) = ½ [T(u(y)) − T(−u(y))] where u(y) are the input channels, odd in y, and T the
  trunk, so ŝ(−y, σ) = −ŝ(y, σ) exactly (IEEE negation is exact);
- reflections and axis permutations are taught by data augmentation (``train.py``).

Parametrization, with σ_d² = ⟨φ²⟩ of the training data and c_in = 1/√(σ_d² + σ²)::

    plain:    ŝ = −y/(σ_d² + σ²) + σ_d/(σ √(σ_d² + σ²)) · N_θ(c_in y; σ)                   (1)
    physics:  ŝ = [σ_d² F(y) + σ N_θ(c_in y, asinh(σ_d G); σ)] / (σ_d² + σ²),  G = σ_d² F/(σ_d² + σ²)   (2)

with F = −∂S/∂φ the Langevin force. (1) is the exact score of white Gaussian data of variance
σ_d² plus a learned correction (the output scaling of Karras et al., arXiv:2206.00364, Table 1);
σ ŝ is O(1) for all σ, which the σ²-weighted loss needs. (2) tends to F(y) = −∂S/∂φ *exactly*
as σ → 0, whatever θ, because the network's factor σ/(σ_d² + σ²) vanishes; at large σ it is
a learned correction to a Gaussian-like decay. N_θ is a residual network of periodic
convolutions conditioned on Fourier features of log σ, with a global (site-averaged) channel
in every block so that the magnetization is seen at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..phi4 import Phi4

__all__ = ["NetworkSpec", "ScoreNet", "build_network", "count_parameters"]


@dataclass(frozen=True)
class NetworkSpec:
    """Hyperparameters that rebuild a network's skeleton (stored with the model)."""

    channels: int = 32
    blocks: int = 4
    kernel: int = 3
    dilations: tuple[int, ...] = (1, 2)
    fourier_features: int = 8
    embedding: int = 64
    physics: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetworkSpec:
        d = dict(d)
        d["dilations"] = tuple(d["dilations"])
        return cls(**d)


def _wrap_pad(h: jnp.ndarray, pad: int) -> jnp.ndarray:
    """Periodic padding of every spatial axis of a (C, *spatial) array."""
    return jnp.pad(h, [(0, 0)] + [(pad, pad)] * (h.ndim - 1), mode="wrap")


class PeriodicConv(eqx.Module):
    """A convolution on the torus: wrap-pad by dilation·(k//2), then a VALID convolution."""

    conv: eqx.nn.Conv
    pad: int = eqx.field(static=True)

    def __init__(self, ndim, cin, cout, kernel, dilation, *, key):
        self.conv = eqx.nn.Conv(ndim, cin, cout, kernel, dilation=dilation, padding=0, key=key)
        self.pad = dilation * (kernel // 2)

    def __call__(self, h):
        return self.conv(_wrap_pad(h, self.pad))


class Block(eqx.Module):
    """h + conv₂(act(conv₁(act(h)) + FiLM(emb) + W mean_x h)) / √2."""

    conv1: PeriodicConv
    conv2: PeriodicConv
    film: eqx.nn.Linear
    glob: eqx.nn.Linear

    def __init__(self, ndim, channels, kernel, dilation, embedding, *, key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.conv1 = PeriodicConv(ndim, channels, channels, kernel, dilation, key=k1)
        self.conv2 = PeriodicConv(ndim, channels, channels, kernel, 1, key=k2)
        self.film = eqx.nn.Linear(embedding, 2 * channels, key=k3)
        self.glob = eqx.nn.Linear(channels, channels, key=k4)

    def __call__(self, h, emb):
        nd = h.ndim - 1
        expand = (slice(None),) + (None,) * nd
        scale, shift = jnp.split(self.film(emb), 2)
        g = self.glob(jnp.mean(h, axis=tuple(range(1, h.ndim))))
        u = self.conv1(jax.nn.silu(h))
        u = u * (1.0 + scale[expand]) + shift[expand] + g[expand]
        return (h + self.conv2(jax.nn.silu(u))) * (1.0 / math.sqrt(2.0))


class ScoreNet(eqx.Module):
    """ŝ_θ(y, σ) of eqs. (1)–(2) for one field ``y`` (shape = the lattice shape), scalar σ.

    Batch it with ``jax.vmap`` (or :meth:`batch`). ``theory`` supplies F = −∂S/∂φ for the
    physics-informed form; ``sigma_data`` is σ_d.
    """

    lift: PeriodicConv
    blocks: list
    head: PeriodicConv
    embed: eqx.nn.MLP
    freqs: tuple[float, ...] = eqx.field(static=True)
    spec: NetworkSpec = eqx.field(static=True)
    theory: Phi4 = eqx.field(static=True)
    sigma_data: float = eqx.field(static=True)

    def __init__(self, spec: NetworkSpec, theory: Phi4, sigma_data: float, *, key):
        nd = theory.ndim
        if nd not in (1, 2, 3):
            raise ValueError(f"the score network supports d = 1, 2, 3 (got d = {nd})")
        kl, kb, kh, ke = jax.random.split(key, 4)
        cin = 2 if spec.physics else 1
        self.lift = PeriodicConv(nd, cin, spec.channels, spec.kernel, 1, key=kl)
        dil = spec.dilations or (1,)
        self.blocks = [
            Block(nd, spec.channels, spec.kernel, dil[i % len(dil)], spec.embedding, key=k)
            for i, k in enumerate(jax.random.split(kb, spec.blocks))
        ]
        head = PeriodicConv(nd, spec.channels, 1, spec.kernel, 1, key=kh)
        # start near the parametrization's skip term: a small output layer
        self.head = eqx.tree_at(lambda c: c.conv.weight, head, head.conv.weight * 0.1)
        nf = spec.fourier_features
        self.freqs = tuple(float(w) for w in np.pi * np.logspace(-2, 2, nf, base=2.0) / 4.0)
        self.embed = eqx.nn.MLP(2 * nf + 1, spec.embedding, spec.embedding, 2, jax.nn.silu, key=ke)
        self.spec, self.theory, self.sigma_data = spec, theory, float(sigma_data)

    # ------------------------------------------------------------------ pieces
    def embedding(self, sigma) -> jnp.ndarray:
        """Fourier features of log σ, [sin ω_k log σ, cos ω_k log σ, log σ / 4], then an MLP."""
        ls = jnp.log(sigma)
        w = jnp.asarray(self.freqs, dtype=ls.dtype) * ls
        return self.embed(jnp.concatenate([jnp.sin(w), jnp.cos(w), ls[None] / 4.0]))

    def trunk(self, u: jnp.ndarray, emb: jnp.ndarray) -> jnp.ndarray:
        h = self.lift(u)
        for b in self.blocks:
            h = b(h, emb)
        return self.head(jax.nn.silu(h))[0]

    def _antisym(self, u, emb):
        """½ [T(u) − T(−u)]: odd in u exactly."""
        both = jax.vmap(self.trunk, in_axes=(0, None))(jnp.stack([u, -u]), emb)
        return 0.5 * (both[0] - both[1])

    # ------------------------------------------------------------------ the score
    def __call__(self, y: jnp.ndarray, sigma) -> jnp.ndarray:
        sigma = jnp.asarray(sigma, y.dtype)
        sd2 = self.sigma_data**2
        den = sd2 + sigma * sigma
        c_in = jax.lax.rsqrt(den)
        emb = self.embedding(sigma)
        if self.spec.physics:
            skip = sd2 * self.theory.force(y) / den
            u = jnp.stack([c_in * y, jnp.arcsinh(self.sigma_data * skip)])
            return skip + (sigma / den) * self._antisym(u, emb)
        u = (c_in * y)[None]
        c_out = self.sigma_data / (sigma * jnp.sqrt(den))
        return -y / den + c_out * self._antisym(u, emb)

    def batch(self, y: jnp.ndarray, sigma) -> jnp.ndarray:
        """ŝ for a batch ``y`` [B, *shape] and σ scalar or [B]."""
        sigma = jnp.broadcast_to(jnp.asarray(sigma, y.dtype), y.shape[:1])
        return jax.vmap(self.__call__)(y, sigma)


def build_network(
    spec: NetworkSpec, theory: Phi4, sigma_data: float, seed: int | Sequence[int] = 0
) -> ScoreNet:
    """A freshly initialized network in float32 (the key is ``jax.random.key(seed)``)."""
    return ScoreNet(spec, theory, sigma_data, key=jax.random.key(seed))


def count_parameters(model: eqx.Module) -> int:
    """Number of trainable scalars."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(x.size for x in leaves))
