r"""Bures–Wasserstein geometry: the unregularised (``eps = 0``) case, MATH.md §1.

W2^2 = ||a - b||^2 + Tr A + Tr B - 2 Tr (A^{1/2} B A^{1/2})^{1/2}
T(x) = b + A^{-1/2} (A^{1/2} B A^{1/2})^{1/2} A^{-1/2} (x - a)
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from . import _checks
from .gaussians import AffineMap, Gaussian
from .linalg import (
    inv_sqrtm_unchecked as inv_sqrtm,
)
from .linalg import (
    sqrtm_unchecked as sqrtm,
)
from .linalg import (
    sym,
)
from .linalg import (
    trace_fn_unchecked as trace_fn,
)

__all__ = ["bures_wasserstein2", "mccann_interpolation", "monge_map"]


def check_pair(mu: Gaussian, nu: Gaussian, names: tuple[str, str] = ("mu", "nu")) -> None:
    """Both are single Gaussians of the same dimension (batch with ``jax.vmap``)."""
    for name, g in zip(names, (mu, nu)):
        _checks.check_single(name, g, Gaussian)
    if mu.dim != nu.dim:
        raise ValueError(f"dimensions differ: {names[0]} has d={mu.dim}, {names[1]} d={nu.dim}")


def _sqrt(lam):
    return jnp.sqrt(lam)


def bures_wasserstein2(mu: Gaussian, nu: Gaussian) -> Float[Array, ""]:
    r"""Squared 2-Wasserstein distance between Gaussians (MATH.md §1).

    ``W2^2 = ||a - b||^2 + Tr A + Tr B - 2 Tr (A^{1/2} B A^{1/2})^{1/2}``; the last term is
    :func:`gaussot_jax.trace_fn` of ``sqrt``, with gradients
    ``grad_A = I - B^{1/2} (B^{1/2} A B^{1/2})^{-1/2} B^{1/2}`` (and symmetrically for B):
    exact at repeated eigenvalues. At singular covariances ``W2^2`` itself is not
    differentiable (d = 1: ``(sqrt a - sqrt b)^2``); use the entropic cost there.

    Args:
        mu: ``N(a, A)``.
        nu: ``N(b, B)``.

    Returns:
        The scalar ``W2^2(mu, nu)``.

    Example:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mu = gj.Gaussian(jnp.zeros(2), jnp.eye(2))
        >>> nu = gj.Gaussian(jnp.ones(2), 4 * jnp.eye(2))
        >>> float(gj.bures_wasserstein2(mu, nu))  # 2 + 2 * (2 - 1)^2
        4.0
    """
    check_pair(mu, nu)
    A, B = mu.cov, nu.cov
    cross = trace_fn(_sqrt, A, B)
    return jnp.sum((mu.mean - nu.mean) ** 2) + jnp.trace(A) + jnp.trace(B) - 2.0 * cross


def monge_map(mu: Gaussian, nu: Gaussian) -> AffineMap:
    r"""The optimal (Monge) map from ``mu`` to ``nu`` for the squared distance.

    ``T(x) = b + A^{-1/2} (A^{1/2} B A^{1/2})^{1/2} A^{-1/2} (x - a)`` (MATH.md §1); needs
    ``A`` positive definite.
    """
    check_pair(mu, nu)
    _checks.check_cov("mu.cov", mu.cov, definite=True)
    XA, ZA = sqrtm(mu.cov), inv_sqrtm(mu.cov)
    T = sym(ZA @ sqrtm(sym(XA @ nu.cov @ XA)) @ ZA)
    return AffineMap(T, nu.mean - T @ mu.mean)


def mccann_interpolation(mu: Gaussian, nu: Gaussian, t) -> Gaussian:
    r"""The Wasserstein geodesic ``((1 - t) Id + t T)_# mu`` at time ``t`` in [0, 1].

    Mean ``(1 - t) a + t b``, covariance ``K A K`` with ``K = (1 - t) I + t T``.
    """
    T = monge_map(mu, nu)
    t = jnp.asarray(t, dtype=mu.mean.dtype)
    K = (1.0 - t) * jnp.eye(mu.dim, dtype=mu.mean.dtype) + t * T.matrix
    return Gaussian(
        (1.0 - t) * mu.mean + t * nu.mean, sym(K @ mu.cov @ K.T), validate=False
    )
