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


def check_pair(
    mu: Gaussian, nu: Gaussian, names: tuple[str, str] = ("mu", "nu")
) -> tuple[Gaussian, Gaussian]:
    """Both are single Gaussians of the same dimension (batch with ``jax.vmap``).

    Returns ``(mu, nu)``, with their values checked at run time when traced inside
    ``gj.checks()`` (use the returned pair).
    """
    for name, g in zip(names, (mu, nu)):
        _checks.check_single(name, g, Gaussian)
    if mu.dim != nu.dim:
        raise ValueError(f"dimensions differ: {names[0]} has d={mu.dim}, {names[1]} d={nu.dim}")
    return _checks.check_measure(names[0], mu), _checks.check_measure(names[1], nu)


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
    mu, nu = check_pair(mu, nu)
    A, B = mu.cov, nu.cov
    cross = trace_fn(_sqrt, A, B)
    return jnp.sum((mu.mean - nu.mean) ** 2) + jnp.trace(A) + jnp.trace(B) - 2.0 * cross


def monge_map(mu: Gaussian, nu: Gaussian) -> AffineMap:
    r"""The optimal (Monge) map from ``mu`` to ``nu`` for the squared distance.

    ``T(x) = b + A^{-1/2} (A^{1/2} B A^{1/2})^{1/2} A^{-1/2} (x - a)`` (MATH.md §1); needs
    ``A`` positive definite. The map takes points of shape ``(..., d)``.

    Args:
        mu: ``N(a, A)``, ``A`` positive definite.
        nu: ``N(b, B)``.

    Returns:
        The :class:`gaussot_jax.AffineMap` ``T``.

    Raises:
        ValueError: not single Gaussians of one dimension; ``A`` not positive definite
            (concrete, or traced inside ``gj.checks()``).

    Example:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> T = gj.monge_map(gj.Gaussian(jnp.zeros(2), jnp.eye(2)),
        ...                  gj.Gaussian(jnp.ones(2), 4 * jnp.eye(2)))
        >>> T(jnp.zeros((5, 2))).shape  # x -> 1 + 2 x on a batch of points
        (5, 2)
    """
    mu, nu = check_pair(mu, nu)
    A = _checks.check_cov("mu.cov", mu.cov, definite=True)
    XA, ZA = sqrtm(A), inv_sqrtm(A)
    T = sym(ZA @ sqrtm(sym(XA @ nu.cov @ XA)) @ ZA)
    return AffineMap(T, nu.mean - T @ mu.mean)


def mccann_interpolation(mu: Gaussian, nu: Gaussian, t) -> Gaussian:
    r"""The Wasserstein geodesic ``((1 - t) Id + t T)_# mu`` at time ``t`` in [0, 1].

    Mean ``(1 - t) a + t b``, covariance ``K A K`` with ``K = (1 - t) I + t T``.

    Args:
        mu: ``N(a, A)``, ``A`` positive definite.
        nu: ``N(b, B)``.
        t: real scalar in ``[0, 1]`` (traced: vmap or differentiate it).

    Returns:
        The Gaussian at time ``t`` on the geodesic.

    Raises:
        ValueError: as :func:`monge_map`; ``t`` not a real scalar in ``[0, 1]`` (NaN
            included; values when concrete, or traced inside ``gj.checks()``).

    Example:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mid = gj.mccann_interpolation(gj.Gaussian(jnp.zeros(2), jnp.eye(2)),
        ...                               gj.Gaussian(jnp.ones(2), 4 * jnp.eye(2)), 0.5)
    """
    t = jnp.asarray(_checks.check_real("t", t), dtype=mu.mean.dtype)
    if t.ndim != 0:
        raise ValueError(f"t must be a scalar (vmap for many), got shape {t.shape}")
    t = _checks.check_interval("t", t, 0.0, 1.0)
    T = monge_map(mu, nu)
    K = (1.0 - t) * jnp.eye(mu.dim, dtype=mu.mean.dtype) + t * T.matrix
    return Gaussian(
        (1.0 - t) * mu.mean + t * nu.mean, sym(K @ mu.cov @ K.T), validate=False
    )
