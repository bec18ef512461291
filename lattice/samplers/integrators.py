"""Symplectic, reversible integrators for H = ½ Σ π² + S[φ].

Both take ``grad`` = ∂S/∂φ at the starting point and return it at the end point, so a
trajectory of n steps costs n (leapfrog) or 2n (Omelyan) gradient evaluations.

* Leapfrog (velocity Verlet): π ← π − ε/2 ∂S; φ ← φ + ε π; π ← π − ε/2 ∂S.
  Energy error ΔH = O(ε²) over a trajectory of fixed length.
* Omelyan 2MN (Omelyan, Mryglod, Folk, Comput. Phys. Commun. 151 (2003) 272, eq. (31)):
  π ← π − λε ∂S; φ ← φ + ε/2 π; π ← π − (1 − 2λ)ε ∂S; φ ← φ + ε/2 π; π ← π − λε ∂S,
  λ = 0.1931833275037836, which minimizes the norm of the ε³ error terms.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax import lax

__all__ = ["leapfrog", "omelyan", "INTEGRATORS", "OMELYAN_LAMBDA"]

OMELYAN_LAMBDA = 0.1931833275037836

GradFn = Callable[[jax.Array], jax.Array]


def leapfrog(grad_fn: GradFn, phi, pi, grad, eps: float, n_steps: int):
    """n leapfrog steps of size ε; returns (φ, π, ∂S/∂φ) at the end."""

    def body(_, carry):
        phi, pi, grad = carry
        pi = pi - 0.5 * eps * grad
        phi = phi + eps * pi
        grad = grad_fn(phi)
        pi = pi - 0.5 * eps * grad
        return phi, pi, grad

    return lax.fori_loop(0, n_steps, body, (phi, pi, grad))


def omelyan(grad_fn: GradFn, phi, pi, grad, eps: float, n_steps: int):
    """n Omelyan 2MN steps of size ε; returns (φ, π, ∂S/∂φ) at the end."""
    lam = OMELYAN_LAMBDA

    def body(_, carry):
        phi, pi, grad = carry
        pi = pi - lam * eps * grad
        phi = phi + 0.5 * eps * pi
        grad = grad_fn(phi)
        pi = pi - (1.0 - 2.0 * lam) * eps * grad
        phi = phi + 0.5 * eps * pi
        grad = grad_fn(phi)
        pi = pi - lam * eps * grad
        return phi, pi, grad

    return lax.fori_loop(0, n_steps, body, (phi, pi, grad))


INTEGRATORS = {"leapfrog": (leapfrog, 1), "omelyan": (omelyan, 2)}  # name -> (fn, grads/step)
