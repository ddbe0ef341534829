"""Cholesky factors of PSD matrices and what they give (library internal).

The factor of a PSD matrix that stays finite at singular ones (trace functions), and the
log-determinant from a Cholesky factor, the one place the library computes it.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._eigh import _JACOBI_MAX_D, Matrix, sym


def chol_logdet(L: Matrix) -> Array:
    """``log det(L L^T) = 2 sum_i log L_ii`` from a lower Cholesky factor ``L``."""
    return 2.0 * jnp.sum(jnp.log(jnp.diag(L)))


@jax.jit  # traced once per input type and transformation (see _eigh._jacobi_eigh)
def _small_cholesky(A: Matrix) -> Matrix:
    """Unrolled Cholesky of a small PSD matrix, on scalars (no library call).

    Semidefinite-safe: a pivot ``<= 0`` gives a zero column, and each entry is clipped to
    the Cauchy–Schwarz bound ``|L_ik| <= s_ii^{1/2}`` that holds for every PSD Schur
    complement ``s``, so round-off at a singular ``A`` cannot blow up.
    """
    d = A.shape[-1]
    s = [[A[i, j] for j in range(d)] for i in range(d)]
    zero = 0.0 * A[0, 0]  # batched and sharded like A (see _eigh._jacobi_eigh)
    L = [[zero] * d for _ in range(d)]
    for k in range(d):
        p = jnp.maximum(s[k][k], 0.0)
        inv = jnp.where(p > 0, jax.lax.rsqrt(jnp.where(p > 0, p, 1.0)), 0.0)
        L[k][k] = p * inv
        for i in range(k + 1, d):
            bound = jnp.sqrt(jnp.maximum(s[i][i], 0.0))
            L[i][k] = jnp.clip(s[i][k] * inv, -bound, bound)
        for i in range(k + 1, d):
            for j in range(k + 1, i + 1):
                s[i][j] = s[i][j] - L[i][k] * L[j][k]
    return jnp.stack([jnp.stack(row) for row in L])


def _psd_factor(A: Matrix) -> Matrix:
    """Lower-triangular ``F`` with ``F F^T = A`` (to round-off), finite for singular A.

    Unrolled on scalars for ``d <= 3``; above, :func:`chol_factor`'s two-stage Cholesky
    without a ``lax.cond`` (eager callers: a cond's branches are new closures at every
    call, which JAX would compile again).
    """
    A = sym(A)
    if A.shape[-1] <= _JACOBI_MAX_D:
        return _small_cholesky(A)
    return chol_factor(A, branchless=True)[0]


def chol_factor(A: Matrix, *, branchless: bool = False) -> tuple[Matrix, Array]:
    """``(F, delta)``: ``F F^T = A + delta I``, ``delta = 0`` where Cholesky of ``A`` succeeds.

    Two stages: where LAPACK's Cholesky breaks down (a singular A) the second factors
    ``A + delta I``, ``delta = max(d eps Tr A, tiny)`` (relative to A's scale, and never
    below the smallest normal number: at A = 0, a Dirac, d eps tiny is denormal, which XLA
    flushes to 0, and the Cholesky of 0 would be NaN; the factor tiny^{1/2} I then adds
    tiny B to F^T B F, below round-off of any B). The shift is returned so that error
    bounds can account for it (the certified routes of ``bures`` and ``_trace``).
    Unbatched, a cond skips the second stage where the first succeeded; under vmap (a
    select) the second still depends on the first through delta, so the two LAPACK calls
    never run concurrently (see _trace._stacked_value_grads on why that matters).
    ``branchless=True`` always runs the second stage (with ``delta = 0`` it repeats the
    first exactly): no cond, for callers outside a jitted kernel.
    """
    d = A.shape[-1]
    eps = jnp.finfo(A.dtype).eps
    L = jnp.linalg.cholesky(A)
    ok = jnp.all(jnp.isfinite(L))
    shift = jnp.maximum(d * eps * jnp.trace(A), jnp.finfo(A.dtype).tiny)
    delta = cast(Array, jnp.where(ok, 0.0, shift))
    if branchless:
        return jnp.linalg.cholesky(A + delta * jnp.eye(d, dtype=A.dtype)), delta
    F = jax.lax.cond(
        ok, lambda: L, lambda: jnp.linalg.cholesky(A + delta * jnp.eye(d, dtype=A.dtype))
    )
    return F, delta


def fro(S) -> Array:
    """Frobenius norm ``(sum S_ij^2)^{1/2}`` (of any array)."""
    return jnp.sqrt(jnp.sum(S * S))
