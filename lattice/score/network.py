"""Score network ŝ_θ(y, σ) ≈ ∇_y log q_σ(y), q_σ = e^{−S} ∗ N(0, σ²), with the lattice's symmetries.

Symmetries, by construction:

- **translations**: every layer is a periodic (circularly padded) convolution or a function of
  site averages, so shifting y shifts ŝ (to round-off; zero padding would break this);
- **Z₂**: ŝ(y) = ½ [T(u(y)) − T(−u(y))] where u(y) are the input channels, odd in y, and T the
  trunk, so ŝ(−y, σ) = −ŝ(y, σ) exactly (IEEE negation is exact);
- reflections and axis permutations are taught by data augmentation (``train.py``).

Parametrization, with σ_d² = ⟨φ²⟩ of the training data and c_in = 1/√(σ_d² + σ²)::

    plain:    ŝ = −y/(σ_d² + σ²) + σ_d/(σ √(σ_d² + σ²)) · N_θ(c_in y; σ)                   (1)
    physics:  ŝ = c_F F(y) − (1 − c_F) y/(σ_d² + σ²) + σ σ_d²/(σ_d² + σ²)^{3/2} · N_θ(u; σ),
              u = (c_in y, asinh(σ_d c_F F(y))),  c_F = (σ_d²/(σ_d² + σ²))³                   (2)

with F = −∂S/∂φ the Langevin force. (1) is the exact score of white Gaussian data of variance
σ_d² plus a learned correction (the output scaling of Karras et al., arXiv:2206.00364, Table
1); σ ŝ is O(1) for all σ, which the σ²-weighted loss needs. (2) tends to F(y) = −∂S/∂φ *exactly* as
σ → 0, whatever θ, because c_F → 1 and the network's factor vanishes (∝ σ). At large σ it tends
to the Gaussian −y/σ²: c_F ∝ σ⁻⁶ switches the force off faster than its cubic term (F ~ λ y³ ~ λ
σ³) grows, so that σ c_F F → 0 (with c_F ∝ σ⁻⁴ it would leave an O(λ σ_d⁴ z³) term for the
network to cancel, which measurably hurt the large-σ loss), and the network's share of σ ŝ
decays like σ_d²/σ, as in (1). N_θ is a residual network of periodic convolutions conditioned on
Fourier features of log σ, with a global (site-averaged) channel in every block so that the
magnetization is seen at once.

With ``base = "hartree"`` the white Gaussian's score −y/(σ_d² + σ²) in (1) and (2) is replaced
by that of the Hartree Gaussian of the action (``numerics/hartree.py`` eqs. (1)–(2)), whose
mass is a trained parameter, log μ²::

    s_G(y, σ) = F⁻¹[ −A(p)/(1 + σ² A(p)) ỹ_p ],   A(p) = h (p̂² + e^{log μ²})              (3)

so that a network whose output layer is zero samples that Gaussian (the data-free start of
``path_train.py``), and σ → 0 still gives F exactly in (2).

This is the architecture ``"resnet"`` of the registry in ``factory.py``, whose
:func:`~lattice.score.factory.build_network` makes every network (single or multilevel) from a
:class:`NetworkSpec`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from lattice.numerics.geometry import phat2
from lattice.numerics.hartree import gaussian_score, hartree_mass2
from lattice.numerics.phi4 import Phi4

__all__ = ["DEFAULT_ARCHITECTURE", "NetworkSpec", "ScoreNet", "count_parameters"]

#: the architecture of a spec that names none: the network of this module (every model saved
#: before the key existed)
DEFAULT_ARCHITECTURE = "resnet"


@dataclass(frozen=True)
class NetworkSpec:
    """Hyperparameters that rebuild a network's skeleton (stored with the model): the name of
    its ``architecture`` (a key of :data:`lattice.score.factory.ARCHITECTURES`) and the sizes
    that architecture reads (those below are the ``"resnet"``'s; another may use a subset)."""

    #: the defaults are the cheapest network of the issue-24 sweep in seconds per independent
    #: |m| at κ_c, L = 16 and 32 (8 × 2; docs/PERFORMANCE.md). A model stores its own spec
    channels: int = 8
    blocks: int = 2
    kernel: int = 3
    dilations: tuple[int, ...] = (1, 2)
    fourier_features: int = 8
    embedding: int = 64
    physics: bool = True
    #: a site-averaged channel in every block (a global receptive field); without it the
    #: network is local, with the finite :attr:`receptive_field`
    global_channel: bool = True
    architecture: str = DEFAULT_ARCHITECTURE
    #: the Gaussian the network corrects: "white" (eq. (1)–(2): white noise of variance σ_d²,
    #: every model before the key existed) or "hartree" (eq. (3): the self-consistent Gaussian
    #: approximation of the action, with its mass μ² a trained parameter)
    base: str = "white"

    @property
    def receptive_field(self) -> int | None:
        """R of the ``"resnet"``: ∂ŝ_x/∂y_y = 0 when y is farther than R from x along some
        axis (None: global); samplers read a network's own ``receptive_field``. Radii add up:
        1 for the force input F (nearest neighbours), k//2 for the lift and the head,
        (dilation + 1)·(k//2) for each block's two convolutions."""
        if self.global_channel:
            return None
        h = self.kernel // 2
        dil = self.dilations or (1,)
        blocks = sum((dil[i % len(dil)] + 1) * h for i in range(self.blocks))
        return (1 if self.physics else 0) + 2 * h + blocks

    def to_dict(self) -> dict:
        """The model.json ``network`` table. The default architecture is left out, so that a
        model of it stores the table of a model saved before the key existed."""
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        if d["architecture"] == DEFAULT_ARCHITECTURE:
            del d["architecture"]
        if d["base"] == "white":
            del d["base"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetworkSpec:
        """The inverse of :meth:`to_dict`; a missing key (or ``architecture = None``, the
        unset config key) gets its default."""
        d = dict(d)
        for k in ("architecture", "base"):
            if d.get(k) is None:
                d.pop(k, None)
        d["dilations"] = tuple(d["dilations"])
        return cls(**d)  # models saved before global_channel existed get its default


#: lax.conv dimension numbers, channels last (the layout XLA:CPU convolves fastest)
_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _bcast(v: jnp.ndarray, nd: int) -> jnp.ndarray:
    """[B, C] → [B, 1, …, 1, C] against a [B, *spatial, C] activation."""
    return v.reshape(v.shape[:1] + (1,) * nd + v.shape[1:])


class PeriodicConv(eqx.Module):
    """A convolution on the torus for a batch [B, *spatial, C_in]: wrap-pad every spatial axis
    by dilation·(k//2), then a VALID convolution (so translations commute with it)."""

    weight: jnp.ndarray  # [k, …, k, C_in, C_out]
    bias: jnp.ndarray  # [C_out]
    dilation: int = eqx.field(static=True)

    def __init__(self, ndim, cin, cout, kernel, dilation, *, key):
        kw, kb = jax.random.split(key)
        lim = 1.0 / math.sqrt(cin * kernel**ndim)  # the usual fan-in uniform initialization
        shape = (kernel,) * ndim + (cin, cout)
        self.weight = jax.random.uniform(kw, shape, jnp.float32, minval=-lim, maxval=lim)
        self.bias = jax.random.uniform(kb, (cout,), jnp.float32, minval=-lim, maxval=lim)
        self.dilation = int(dilation)

    def __call__(self, h):
        nd = h.ndim - 2
        pad = self.dilation * (self.weight.shape[0] // 2)
        hp = jnp.pad(h, [(0, 0)] + [(pad, pad)] * nd + [(0, 0)], mode="wrap")
        out = jax.lax.conv_general_dilated(
            hp,
            self.weight,
            (1,) * nd,
            "VALID",
            rhs_dilation=(self.dilation,) * nd,
            dimension_numbers=_DIMS[nd],
        )
        return out + self.bias.reshape((1,) * (nd + 1) + self.bias.shape)


class Block(eqx.Module):
    """h + conv₂(act(conv₁(act(h)) ⊙ (1 + γ) + β + W mean_x h)) / √2, with (γ, β) = FiLM(emb)."""

    conv1: PeriodicConv
    conv2: PeriodicConv
    film: eqx.nn.Linear
    glob: eqx.nn.Linear | None

    def __init__(self, ndim, channels, kernel, dilation, embedding, *, key, glob=True):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.conv1 = PeriodicConv(ndim, channels, channels, kernel, dilation, key=k1)
        self.conv2 = PeriodicConv(ndim, channels, channels, kernel, 1, key=k2)
        self.film = eqx.nn.Linear(embedding, 2 * channels, key=k3, dtype=jnp.float32)
        self.glob = eqx.nn.Linear(channels, channels, key=k4, dtype=jnp.float32) if glob else None

    def __call__(self, h, emb):
        nd = h.ndim - 2
        scale, shift = jnp.split(jax.vmap(self.film)(emb), 2, axis=-1)
        u = self.conv1(jax.nn.silu(h))
        u = u * (1.0 + _bcast(scale, nd)) + _bcast(shift, nd)
        if self.glob is not None:
            u = u + _bcast(jax.vmap(self.glob)(jnp.mean(h, axis=tuple(range(1, nd + 1)))), nd)
        return (h + self.conv2(jax.nn.silu(u))) * (1.0 / math.sqrt(2.0))


def make_blocks(spec: NetworkSpec, ndim: int, key) -> list[Block]:
    """The residual blocks of a trunk, dilations cycling through ``spec.dilations``."""
    dil = spec.dilations or (1,)
    return [
        Block(
            ndim,
            spec.channels,
            spec.kernel,
            dil[i % len(dil)],
            spec.embedding,
            key=k,
            glob=spec.global_channel,
        )
        for i, k in enumerate(jax.random.split(key, spec.blocks))
    ]


def fourier_frequencies(n: int) -> tuple[float, ...]:
    """The ``n`` frequencies ω_k of the log σ features: π/4 · 2^{−2 … 2}, log-spaced."""
    return tuple(float(w) for w in np.pi * np.logspace(-2, 2, n, base=2.0) / 4.0)


def embedding_mlp(spec: NetworkSpec, *, key) -> eqx.nn.MLP:
    """The MLP of :func:`sigma_embedding`: 2n + 1 features → ``spec.embedding``, two layers."""
    nf = spec.fourier_features
    return eqx.nn.MLP(
        2 * nf + 1, spec.embedding, spec.embedding, 2, jax.nn.silu, key=key, dtype=jnp.float32
    )


def sigma_embedding(mlp: eqx.nn.MLP, freqs: tuple[float, ...], sigma) -> jnp.ndarray:
    """Fourier features of log σ, [sin ω_k log σ, cos ω_k log σ, log σ / 4], then an MLP."""
    ls = jnp.log(sigma)
    w = jnp.asarray(freqs, dtype=ls.dtype) * ls
    return mlp(jnp.concatenate([jnp.sin(w), jnp.cos(w), ls[None] / 4.0]))


class ScoreNet(eqx.Module):
    """ŝ_θ(y, σ) of eqs. (1)–(2): :meth:`batch` for y [B, *shape] and σ [B] (or a scalar),
    ``net(y, sigma)`` for one field.

    ``theory`` supplies F = −∂S/∂φ for the physics-informed form; ``sigma_data`` is σ_d. The
    network computes in float32; F and the skip term are evaluated in the dtype of ``y``.
    """

    lift: PeriodicConv
    blocks: list
    head: PeriodicConv
    embed: eqx.nn.MLP
    #: log μ² of the "hartree" base (eq. (3)); None for the "white" one (no leaf: the weights
    #: of every earlier model load unchanged)
    log_mass: jnp.ndarray | None
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
        self.blocks = make_blocks(spec, nd, kb)
        head = PeriodicConv(nd, spec.channels, 1, spec.kernel, 1, key=kh)
        # start near the parametrization's skip term: a small output layer
        self.head = eqx.tree_at(lambda c: c.weight, head, head.weight * 0.1)
        self.freqs = fourier_frequencies(spec.fourier_features)
        self.embed = embedding_mlp(spec, key=ke)
        self.spec, self.theory, self.sigma_data = spec, theory, float(sigma_data)
        if spec.base not in ("white", "hartree"):
            raise ValueError(f"unknown network base {spec.base!r} (known: white, hartree)")
        self.log_mass = (
            jnp.asarray(math.log(hartree_mass2(theory)), jnp.float32)
            if spec.base == "hartree"
            else None
        )

    @property
    def receptive_field(self) -> int | None:
        return self.spec.receptive_field

    def zero_output(self) -> ScoreNet:
        """This network with a zero output layer: ŝ is then the parametrization's Gaussian
        part alone (eqs. (1)–(3)), the start of a training from the action."""
        zero = (jnp.zeros_like(self.head.weight), jnp.zeros_like(self.head.bias))
        return eqx.tree_at(lambda n: (n.head.weight, n.head.bias), self, zero)

    def base_score(self, y: jnp.ndarray, sigma: jnp.ndarray, den: jnp.ndarray) -> jnp.ndarray:
        """The Gaussian part: −y/(σ_d² + σ²) (white) or s_G of eq. (3) (hartree)."""
        if self.log_mass is None:
            return -y / den
        h = self.theory.coefficients[0]
        A = h * (jnp.asarray(phat2(self.theory.shape), y.dtype) + jnp.exp(self.log_mass))
        return gaussian_score(y, sigma, A.astype(y.dtype))

    # ------------------------------------------------------------------ pieces
    def embedding(self, sigma) -> jnp.ndarray:
        return sigma_embedding(self.embed, self.freqs, sigma)

    def trunk(self, u: jnp.ndarray, emb: jnp.ndarray) -> jnp.ndarray:
        """T_θ: [B, *shape, C_in] → [B, *shape]."""
        h = self.lift(u)
        for b in self.blocks:
            h = b(h, emb)
        return self.head(jax.nn.silu(h))[..., 0]

    def _antisym(self, u, emb):
        """½ [T(u) − T(−u)]: odd in u exactly (both halves in one batch)."""
        n = u.shape[0]
        both = self.trunk(jnp.concatenate([u, -u]), jnp.concatenate([emb, emb]))
        return 0.5 * (both[:n] - both[n:])

    # ------------------------------------------------------------------ the score
    def batch(self, y: jnp.ndarray, sigma) -> jnp.ndarray:
        """ŝ for a batch ``y`` [B, *shape] and σ scalar or [B]."""
        nd = self.theory.ndim
        sigma = jnp.broadcast_to(jnp.asarray(sigma, y.dtype), y.shape[:1])
        s = sigma.reshape((-1,) + (1,) * nd)
        sd2 = self.sigma_data**2
        den = sd2 + s * s
        c_in = jax.lax.rsqrt(den)
        emb = jax.vmap(self.embedding)(sigma.astype(jnp.float32))
        if self.spec.physics:
            c_f = (sd2 / den) ** 3
            force = self.theory.force(y)
            if self.log_mass is None:  # the white base, in the operation order of every
                skip = c_f * force - (1.0 - c_f) * y / den  # model before "hartree" (its bits)
            else:
                skip = c_f * force + (1.0 - c_f) * self.base_score(y, sigma, den)
            u = jnp.stack([c_in * y, jnp.arcsinh(self.sigma_data * c_f * force)], axis=-1)
            net = self._antisym(u.astype(jnp.float32), emb).astype(y.dtype)
            return skip + (s * sd2 / (den * jnp.sqrt(den))) * net
        u = (c_in * y)[..., None]
        net = self._antisym(u.astype(jnp.float32), emb).astype(y.dtype)
        return self.base_score(y, sigma, den) + self.sigma_data / (s * jnp.sqrt(den)) * net

    def __call__(self, y: jnp.ndarray, sigma) -> jnp.ndarray:
        """ŝ for one field ``y`` (shape = the lattice shape) and a scalar σ."""
        return self.batch(y[None], jnp.reshape(jnp.asarray(sigma), (1,)))[0]


def count_parameters(model: eqx.Module) -> int:
    """Number of trainable scalars."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(x.size for x in leaves))
