r"""Transition kernels of linear SDEs, by Van Loan's block exponential (library internal).

The derivation (Van Loan's block, the short step and the doublings) is in the docstring
of :mod:`gaussot_jax.sde`.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
from jaxtyping import Array

from .linalg import sym

# Largest number of doublings: covers ||M||_1 T up to 2^39.
_MAX_DOUBLINGS = 40
# Taylor degree of the block exponential on the short step (see _block_expm).
_TAYLOR_DEGREE = 18


def _block_expm(F):
    """``e^F`` by its Taylor series (Horner), for ``F`` with ``||F||`` about ``1/2``.

    Used on Van Loan's block at the short step, where the scaling is already done by the
    doublings. The diagonal blocks have norm ``<= 1/2``, and ``c`` and ``G G^T`` enter each
    block of ``e^F`` linearly (the block below them is zero), so the truncation error of
    every block relative to its size is below ``(1/2)^18 / 19! ≈ 3e-23`` at degree
    ``_TAYLOR_DEGREE = 18``, whatever ``||c||`` and ``||G G^T||``. Matmuls only: small to
    compile and to differentiate (``jax.scipy.linalg.expm`` compiles every Padé branch,
    seconds per shape under ``grad``, and its own scaling would repeat the doublings').
    """
    eye = jnp.eye(F.shape[0], dtype=F.dtype)

    def horner(E, j):
        return eye + (F @ E) / j, None

    degrees = jnp.arange(_TAYLOR_DEGREE, 0, -1).astype(F.dtype)
    return jax.lax.scan(horner, eye, degrees)[0]


@jax.jit
def _transition(M, c, Q, h):
    """``(alpha, beta, tau)`` of ``dX = (M X + c) dt + Q^{1/2} dW`` over time ``h >= 0``."""
    d = M.shape[0]
    # Number of doublings k: ||M h / 2^k||_1 <= 1/2. An integer, so no gradient flows
    # through it; the result is the same smooth function of (M, c, Q, h) for every k.
    norm = jax.lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(M), axis=0)) * jnp.abs(h))
    k = jnp.clip(jnp.ceil(jnp.log2(2.0 * norm)), 0, _MAX_DOUBLINGS)
    k = jnp.where(jnp.isfinite(k), k, 0).astype(jnp.int32)
    step = h / (2.0 ** k.astype(h.dtype))

    # One Van Loan block for all three (block upper triangular, diagonal (0, -M, M^T)):
    #   F = [[0, 0, c^T], [0, -M, Q], [0, 0, M^T]],
    #   e^{F h} = [[1, 0, alpha(h)^T], [0, e^{-M h}, X], [0, 0, e^{M^T h}]],
    #   beta(h) = (e^{M^T h})^T,  tau(h) = beta(h) X.
    z1, zd = jnp.zeros((1, d), M.dtype), jnp.zeros((d, 1), M.dtype)
    F = jnp.block(
        [
            [jnp.zeros((1, 1), M.dtype), z1, c[None, :]],
            [zd, -M, Q],
            [zd, jnp.zeros_like(M), M.T],
        ]
    )
    E = _block_expm(F * step)
    alpha, beta = E[0, d + 1 :], E[d + 1 :, d + 1 :].T
    tau = sym(beta @ E[1 : d + 1, d + 1 :])

    def double(carry, i):
        a, b, t = carry
        new = (a + b @ a, b @ b, sym(t + b @ t @ b.T))
        keep = i < k
        return tuple(jnp.where(keep, n, o) for n, o in zip(new, carry)), None

    (alpha, beta, tau), _ = jax.lax.scan(double, (alpha, beta, tau), jnp.arange(_MAX_DOUBLINGS))
    return alpha, beta, tau


def _phi(x):
    """``(1 - e^{-x}) / x``, smooth through ``x = 0`` (value and derivatives)."""
    small = jnp.abs(x) < 1e-4
    xs = cast(Array, jnp.where(small, 1.0, x))
    series = 1.0 - x / 2.0 + x**2 / 6.0 - x**3 / 24.0
    return jnp.where(small, series, -jnp.expm1(-xs) / xs)
