"""The conditional score network of one level of the multilevel sampler:
ŝ_θ(y, σ | c) ≈ ∇_y log q_σ(y | c), the score of the noised details y = d + σ z given the coarse
field c of the Haar split (``numerics/wavelet.py``), with q_σ(· | c) = p(· | c) ∗ N(0, σ²).

Both live on the coarse lattice: c is [*coarse], d and y are [2^d − 1, *coarse] (channel first,
as ``haar_split`` gives them). With σ_d² = ⟨d²⟩ of the level's details, σ_c² = ⟨c²⟩ of its
coarse field and c_in = 1/√(σ_d² + σ²), the parametrizations are those of ``network.py``
eqs. (1)–(2), per detail channel::

    plain:    ŝ = −y/(σ_d² + σ²) + σ_d/(σ √(σ_d² + σ²)) · N_θ(u; σ),   u = (c_in y, c/σ_c)     (1)
    physics:  ŝ = c_F F_d − (1 − c_F) y/(σ_d² + σ²) + σ σ_d²/(σ_d² + σ²)^{3/2} · N_θ(u; σ),
              u = (c_in y, c/σ_c, asinh(σ_d c_F F_d)),   c_F = (σ_d²/(σ_d² + σ²))³            (2)

with F_d the detail channels of the Haar split of the Langevin force F = −∂S/∂φ at the fine
field φ = merge(c, y). The finest level's conditional law is p(d | c) ∝ e^{−S(merge(c, d))}
(the map is orthogonal, so the Jacobian is 1), whose score is exactly F_d: form (2) tends to it
as σ → 0 whatever θ. A coarser level's conditional law is a marginal with no closed form, so
it takes form (1). The action's force is a nearest-neighbour stencil, so form (2) applies on a
lattice of any extent with the same couplings (the transfer of the multilevel sampler).

Symmetries, by construction as in ``network.py``: periodic convolutions on the coarse lattice
(a shift of the fine field by two sites shifts (c, d) by one, and ŝ with them), and Z₂ odd
jointly in (y, c): ŝ(−y, σ | −c) = −ŝ(y, σ | c) exactly, since u is odd and the trunk is
antisymmetrized, ½ [T(u) − T(−u)]. With ``global_channel = false`` the network is local, of
the receptive field R of :attr:`NetworkSpec.receptive_field` (in coarse sites).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from lattice.numerics.phi4 import Phi4
from lattice.numerics.wavelet import haar_merge, haar_split
from lattice.score.network import (
    NetworkSpec,
    PeriodicConv,
    embedding_mlp,
    fourier_frequencies,
    make_blocks,
    sigma_embedding,
)

__all__ = ["ConditionalNet"]


class ConditionalNet(eqx.Module):
    """ŝ_θ(y, σ | c) of eqs. (1)–(2): :meth:`batch` for y [B, C, *coarse], c [B, *coarse] and σ
    [B] (or a scalar), C = 2^d − 1. ``theory`` (the fine lattice's action) is set for form (2)
    and None for form (1); it is used for its couplings only, on any lattice extent."""

    lift: PeriodicConv
    blocks: list
    head: PeriodicConv
    embed: eqx.nn.MLP
    freqs: tuple[float, ...] = eqx.field(static=True)
    spec: NetworkSpec = eqx.field(static=True)
    ndim: int = eqx.field(static=True)
    theory: Phi4 | None = eqx.field(static=True)
    sigma_data: float = eqx.field(static=True)
    sigma_coarse: float = eqx.field(static=True)

    def __init__(
        self,
        spec: NetworkSpec,
        ndim: int,
        sigma_data: float,
        sigma_coarse: float,
        theory: Phi4 | None,
        *,
        key,
    ):
        if ndim not in (1, 2, 3):
            raise ValueError(f"the score network supports d = 1, 2, 3 (got d = {ndim})")
        kl, kb, kh, ke = jax.random.split(key, 4)
        c = 2**ndim - 1
        cin = 2 * c + 1 if theory is not None else c + 1
        self.lift = PeriodicConv(ndim, cin, spec.channels, spec.kernel, 1, key=kl)
        self.blocks = make_blocks(spec, ndim, kb)
        head = PeriodicConv(ndim, spec.channels, c, spec.kernel, 1, key=kh)
        self.head = eqx.tree_at(lambda h: h.weight, head, head.weight * 0.1)
        self.freqs = fourier_frequencies(spec.fourier_features)
        self.embed = embedding_mlp(spec, key=ke)
        self.spec, self.ndim, self.theory = spec, int(ndim), theory
        self.sigma_data, self.sigma_coarse = float(sigma_data), float(sigma_coarse)

    @property
    def channels(self) -> int:
        return 2**self.ndim - 1

    def _trunk(self, u, emb):
        """½ [T(u) − T(−u)] for u [B, *coarse, C_in] (channels last) → [B, *coarse, C]."""
        n = u.shape[0]
        h = self.lift(jnp.concatenate([u, -u]))
        emb2 = jnp.concatenate([emb, emb])
        for b in self.blocks:
            h = b(h, emb2)
        out = self.head(jax.nn.silu(h))
        return 0.5 * (out[:n] - out[n:])

    def batch(self, y: jnp.ndarray, sigma, c: jnp.ndarray) -> jnp.ndarray:
        """ŝ for details ``y`` [B, C, *coarse] given ``c`` [B, *coarse], σ scalar or [B]."""
        nd = self.ndim
        sigma = jnp.broadcast_to(jnp.asarray(sigma, y.dtype), y.shape[:1])
        s = sigma.reshape((-1,) + (1,) * (nd + 1))
        sd2 = self.sigma_data**2
        den = sd2 + s * s
        c_in = jax.lax.rsqrt(den)
        emb = jax.vmap(lambda v: sigma_embedding(self.embed, self.freqs, v))(
            sigma.astype(jnp.float32)
        )
        last = (0,) + tuple(range(2, nd + 2)) + (1,)  # [B, C, *x] → [B, *x, C]
        first = (0, nd + 1) + tuple(range(1, nd + 1))  # and back
        parts = [jnp.transpose(c_in * y, last), (c / self.sigma_coarse)[..., None]]
        if self.theory is not None:
            c_f = (sd2 / den) ** 3
            fine = haar_merge(c, y, nd)
            _, f_d = haar_split(self.theory.force(fine), nd)
            skip = c_f * f_d - (1.0 - c_f) * y / den
            parts.append(jnp.transpose(jnp.arcsinh(self.sigma_data * c_f * f_d), last))
            u = jnp.concatenate(parts, axis=-1).astype(jnp.float32)
            net = jnp.transpose(self._trunk(u, emb), first).astype(y.dtype)
            return skip + (s * sd2 / (den * jnp.sqrt(den))) * net
        u = jnp.concatenate(parts, axis=-1).astype(jnp.float32)
        net = jnp.transpose(self._trunk(u, emb), first).astype(y.dtype)
        return -y / den + self.sigma_data / (s * jnp.sqrt(den)) * net

    def __call__(self, y: jnp.ndarray, sigma, c: jnp.ndarray) -> jnp.ndarray:
        """ŝ for one level's details ``y`` [C, *coarse] given ``c`` [*coarse], σ scalar."""
        return self.batch(y[None], jnp.reshape(jnp.asarray(sigma), (1,)), c[None])[0]
