"""Symmetric matrices: the symmetric part and PSD eigendecompositions (library internal).

Cyclic Jacobi on scalars for ``d <= 3``, LAPACK / cuSOLVER ``eigh`` above, chosen
statically by :func:`_resolve`. Everything here is differentiated only through the rules
of ``_sqrtm``, ``_frechet`` and ``_trace``, never directly.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

Matrix = Float[Array, "d d"]


def sym(S: Matrix) -> Matrix:
    """Symmetric part ``(S + S^T) / 2`` (over the last two axes)."""
    return 0.5 * (S + jnp.swapaxes(S, -1, -2))


# --------------------------------------------------------------------------------------
# Eigendecompositions, dispatched on the (static) dimension.
#
# For d <= 3 a cyclic Jacobi method on scalars replaces LAPACK: under ``vmap`` every
# entry is a vector over the batch, so the whole decomposition is a few fused
# elementwise loops (no per-matrix library call). One rotation is exact for d = 2 (the
# closed form); d = 3 converges quadratically and a fixed number of sweeps reaches
# round-off. Each rotation (Golub & Van Loan, Alg. 8.5.2) zeroes ``S_pq`` with
#   t = 2 S_pq sgn(delta) / (|delta| + (delta^2 + 4 S_pq^2)^{1/2}),  delta = S_qq - S_pp,
#   c = (1 + t^2)^{-1/2},  s = t c,  |t| <= 1,
# written without dividing by ``S_pq``: smooth at a zero off-diagonal, stable at repeated
# and tiny eigenvalues (Jacobi is even relatively accurate on graded matrices).
# --------------------------------------------------------------------------------------
_JACOBI_MAX_D = 3
# Sweeps for d = 3: on 4000 matrices (condition numbers to 1e12 and indefinite ones) the
# reconstruction error reached round-off after 4 sweeps in float64 and float32.
_JACOBI_SWEEPS = {jnp.dtype(jnp.float32): 4, jnp.dtype(jnp.float64): 5}
_METHODS = ("auto", "eigh", "jacobi")


def _resolve(method: str, d: int, allowed: tuple[str, ...] = _METHODS) -> str:
    """Static choice of the eigensolver: ``jacobi`` for d <= 3, LAPACK ``eigh`` above."""
    if method not in allowed:
        names = ", ".join(repr(m) for m in allowed)
        raise ValueError(f"method must be one of {names}, got {method!r}")
    if method == "auto":
        return "jacobi" if d <= _JACOBI_MAX_D else "eigh"
    return method


def _jacobi_rotate(a: list, V: list, p: int, q: int) -> None:
    """One Jacobi rotation zeroing ``a[p][q]`` (in place on lists of scalars)."""
    d = len(a)
    b, delta = a[p][q], a[q][q] - a[p][p]
    r2 = delta**2 + 4.0 * b**2
    r = jnp.where(r2 > 0, jnp.sqrt(cast(Array, jnp.where(r2 > 0, r2, 1.0))), 0.0)
    den = jnp.abs(delta) + r
    # Both branches derived from delta: with two Python-scalar branches, jax 0.9.2 gives
    # the result a sharding that fails under jit on sharded inputs.
    one = 0.0 * delta + 1.0
    sgn = jnp.where(delta >= 0, one, -one)
    t = cast(Array, jnp.where(den > 0, 2.0 * b * sgn / jnp.where(den > 0, den, 1.0), 0.0))
    c = jax.lax.rsqrt(1.0 + t**2)
    s = t * c
    app, aqq = a[p][p] - t * b, a[q][q] + t * b
    for k in range(d):
        if k not in (p, q):
            akp, akq = a[k][p], a[k][q]
            a[k][p] = a[p][k] = c * akp - s * akq
            a[k][q] = a[q][k] = s * akp + c * akq
        vkp, vkq = V[k][p], V[k][q]
        V[k][p], V[k][q] = c * vkp - s * vkq, s * vkp + c * vkq
    a[p][p], a[q][q] = app, aqq
    a[p][q] = a[q][p] = 0.0 * b  # not zeros_like: keeps b's batching and sharding


# Jitted for its trace: the rotations are some hundred scalar operations, which every
# caller under vmap and differentiation would re-trace through each transformation (a
# debiased barycenter's implicit gradient called it 46 times: 21 s of Python). A jitted
# function is traced once per input type and transformation, then reused; XLA inlines it.
@jax.jit
def _jacobi_eigh(S: Matrix) -> tuple[Float[Array, " d"], Matrix]:
    """Cyclic Jacobi eigendecomposition of a small symmetric matrix, ascending order."""
    d = S.shape[-1]

    def sweep(_, carry):
        a, V = [list(row) for row in carry[0]], [list(row) for row in carry[1]]
        for p in range(d - 1):
            for q in range(p + 1, d):
                _jacobi_rotate(a, V, p, q)
        return a, V

    # Derived from S, not zeros_like/ones_like: under vmap those are unbatched constants,
    # and stacking them with sharded entries fails under explicit sharding.
    zero = 0.0 * S[0, 0]
    one = zero + 1.0
    # Scale invariance: rotate S / m with m = max |S_ij|, so the squares
    # delta^2 + 4 S_pq^2 in _jacobi_rotate neither overflow nor underflow at any scale of
    # S; eigenvectors are unchanged and eigenvalues scale back (one rounding each). Not
    # frexp/ldexp: under jit on CPU, jnp.ldexp halved some results (0.25 -> 0.125 at
    # d = 2, jax 0.9.2), while eager calls were right.
    m = jax.lax.stop_gradient(jnp.max(jnp.abs(S)))
    m = jnp.where(m > 0, m, one)
    S = S / m
    a = [[S[i, j] for j in range(d)] for i in range(d)]
    V = [[one if i == j else zero for j in range(d)] for i in range(d)]
    if d <= 2:  # one rotation is exact
        a, V = sweep(0, (a, V))
    else:
        sweeps = _JACOBI_SWEEPS.get(jnp.dtype(S.dtype), 5)
        a, V = jax.lax.fori_loop(0, sweeps, sweep, (a, V))
    w = [a[i][i] * m for i in range(d)]
    cols = [[V[k][i] for k in range(d)] for i in range(d)]
    # Sorting network (ascending, as LAPACK): compare-swap eigenvalues with their vectors.
    for i, j in [(0, 1), (1, 2), (0, 1)][: {1: 0, 2: 1}.get(d, 3)]:
        swap = w[i] > w[j]
        w[i], w[j] = jnp.where(swap, w[j], w[i]), jnp.where(swap, w[i], w[j])
        ci, cj = cols[i], cols[j]
        cols[i] = [jnp.where(swap, y, x) for x, y in zip(ci, cj)]
        cols[j] = [jnp.where(swap, x, y) for x, y in zip(ci, cj)]
    return jnp.stack(w), jnp.stack([jnp.stack(c) for c in cols], axis=-1)


def _eigh_psd(S: Matrix, method: str = "auto") -> tuple[Float[Array, " d"], Matrix]:
    """Eigendecomposition of the symmetric part of S, eigenvalues clipped at 0."""
    S = sym(S)
    if _resolve(method, S.shape[-1]) == "jacobi":
        w, V = _jacobi_eigh(S)
    else:
        w, V = jnp.linalg.eigh(S)
    return jnp.maximum(w, 0.0), V


def _lapack_eigvals(M):
    """Eigenvalues of symmetric ``M`` (lower triangle), ascending, without eigenvectors.

    CPU: LAPACK ``syevd`` with ``jobz = 'N'`` through jaxlib's own FFI target (the one
    ``jnp.linalg.eigh`` calls with ``'V'``); elsewhere :func:`jnp.linalg.eigvalsh`.
    A failed call (``info != 0``) gives NaN, as ``eigh`` does.
    """
    try:
        from jaxlib import lapack  # noqa: PLC0415 (the module jax.numpy.linalg lowers to)

        target = lapack.prepare_lapack_call("syevd_ffi", M.dtype)
    except Exception:  # noqa: BLE001 (no jaxlib LAPACK target: the public route)
        return jnp.linalg.eigvalsh(M)

    def cpu(M):
        call = jax.ffi.ffi_call(
            target,
            (
                jax.ShapeDtypeStruct(M.shape, M.dtype),
                jax.ShapeDtypeStruct(M.shape[:-1], M.dtype),
                jax.ShapeDtypeStruct(M.shape[:-2], jnp.int32),
            ),
            input_output_aliases={0: 0},
            vmap_method="broadcast_all",
        )
        _, w, info = call(M, mode=np.uint8(ord("N")), uplo=np.uint8(ord("L")))
        return jnp.where((info == 0)[..., None], w, jnp.nan)

    return jax.lax.platform_dependent(M, cpu=cpu, default=jnp.linalg.eigvalsh)


def _eigvalsh_psd(S: Matrix, method: str = "auto") -> Float[Array, " d"]:
    """Eigenvalues of the symmetric part of S, clipped at 0 (no eigenvectors computed).

    Not differentiable itself (LAPACK's ``jobz = 'N'`` call has no derivative rule): it
    serves the primal of functions with their own rules (``_trace``).
    """
    S = sym(S)
    if _resolve(method, S.shape[-1]) == "jacobi":
        w = _jacobi_eigh(S)[0]
    else:
        w = _lapack_eigvals(S)
    return jnp.maximum(w, 0.0)


def _rebuild(V: Matrix, w: Float[Array, " d"]) -> Matrix:
    return sym((V * w) @ V.T)
