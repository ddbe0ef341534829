"""Square roots of PSD matrices and their derivative rules (library internal).

The eigh / Jacobi square root and inverse square root, whose tangents are Sylvester
solves, and the matmul-only Newton–Schulz square root; the public, validating wrappers
are :func:`gaussot_jax.linalg.sqrtm` and :func:`gaussot_jax.linalg.inv_sqrtm`.
"""

from __future__ import annotations

import functools
from typing import cast

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._eigh import _METHODS, Matrix, _eigh_psd, _rebuild, _resolve, sym


# --------------------------------------------------------------------------------------
# Sylvester solve  X Y + Y X = Q  for X = S^{1/2}.
#
# Solution in the eigenbasis of S (S = V diag(w) V^T, X = V diag(x) V^T, x = sqrt w):
#   Y = V [ (V^T Q V)_ij / (x_i + x_j) ] V^T.
# It is posed as ``lax.custom_linear_solve`` with matvec Y -> X Y + Y X, which is
# self-adjoint (<P, XQ + QX> = <XP + PX, Q>), hence ``symmetric=True``. JAX then
# differentiates it implicitly, X dY + dY X = dQ - (dX Y + Y dX), through the matvec
# (smooth in X) and never through the eigenbasis: every order of derivative, forward or
# reverse, is again this solve, exact at repeated eigenvalues. ``S`` is passed only so
# that the eigendecomposition is the one ``sqrtm(S)`` already computed (XLA merges the
# two ``eigh`` calls); its tangent is carried by ``dX`` in the matvec.
# --------------------------------------------------------------------------------------
def _sylvester(X: Matrix, Q: Matrix, S: Matrix, method: str = "auto") -> Matrix:
    def matvec(Y):
        return X @ Y + Y @ X

    def solve(_, R):
        w, V = _eigh_psd(jax.lax.stop_gradient(S), method)
        x = jnp.sqrt(w)
        return V @ ((V.T @ R @ V) / (x[:, None] + x[None, :])) @ V.T

    return jax.lax.custom_linear_solve(matvec, Q, solve, symmetric=True)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _sqrtm(S: Matrix, method: str = "auto") -> Matrix:
    w, V = _eigh_psd(S, method)
    return _rebuild(V, jnp.sqrt(w))


@_sqrtm.defjvp
def _sqrtm_jvp(method, primals, tangents):
    (S,), (dS,) = primals, tangents
    X = _sqrtm(S, method)
    return X, _sylvester(X, sym(dS), S, method)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _inv_sqrtm(S: Matrix, method: str = "auto") -> Matrix:
    w, V = _eigh_psd(S, method)
    return _rebuild(V, jax.lax.rsqrt(w))


@_inv_sqrtm.defjvp
def _inv_sqrtm_jvp(method, primals, tangents):
    # Z = X^{-1} with X = S^{1/2}:  dZ = -Z dX Z, dX the Sylvester solve.
    (S,), (dS,) = primals, tangents
    Z = _inv_sqrtm(S, method)
    dX = _sylvester(_sqrtm(S, method), sym(dS), S, method)
    return Z, -Z @ dX @ Z


# --------------------------------------------------------------------------------------
# Newton–Schulz square root (matmul only), for accelerators.
#
# Coupled iteration on Y0 = S / c, Z0 = I (c = ||S||_F >= lambda_max):
#   T = (3 I - Z Y) / 2,  Y <- Y T,  Z <- T Z,   Y -> (S/c)^{1/2}, Z -> (S/c)^{-1/2}.
# The Frechet derivative is the same iteration run on the block-triangular matrix
# [[S, dS], [0, S]], whose square root is [[X, dX], [0, X]] with X dX + dX X = dS: the
# Sylvester solve of the eigh path, computed with matmuls only. It is linear in dS.
# --------------------------------------------------------------------------------------
_NS_ITERS = 30


def _ns_scale(S: Matrix) -> Array:
    c = jnp.linalg.norm(S)
    return cast(Array, jnp.where(c > 0, c, jnp.ones_like(c)))


def _ns_pair(S: Matrix, E: Matrix, num_iters: int, precision) -> tuple[Matrix, Matrix]:
    mm = functools.partial(jnp.matmul, precision=precision)
    c = _ns_scale(S)
    eye = jnp.eye(S.shape[-1], dtype=S.dtype)

    def body(carry, _):
        Y, Z, dY, dZ = carry
        T = 0.5 * (3.0 * eye - mm(Z, Y))
        dT = -0.5 * (mm(Z, dY) + mm(dZ, Y))
        return (mm(Y, T), mm(T, Z), mm(Y, dT) + mm(dY, T), mm(T, dZ) + mm(dT, Z)), None

    init = (S / c, eye, E / c, jnp.zeros_like(S))
    (Y, _, dY, _), _ = jax.lax.scan(body, init, None, length=num_iters)
    r = jnp.sqrt(c)
    return sym(r * Y), sym(r * dY)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _sqrtm_ns(S: Matrix, num_iters: int, precision) -> Matrix:
    return _ns_pair(sym(S), jnp.zeros_like(S), num_iters, precision)[0]


@_sqrtm_ns.defjvp
def _sqrtm_ns_jvp(num_iters, precision, primals, tangents):
    (S,), (dS,) = primals, tangents
    return _ns_pair(sym(S), sym(dS), num_iters, precision)


def sqrtm_unchecked(
    S: Matrix,
    *,
    method: str = "auto",
    num_iters: int = _NS_ITERS,
    precision=jax.lax.Precision.HIGHEST,
) -> Matrix:
    """:func:`sqrtm` of one ``(d, d)`` matrix, without validation (library internal)."""
    if method == "newton_schulz":
        return _sqrtm_ns(S, num_iters, precision)
    return _sqrtm(S, _resolve(method, S.shape[-1], (*_METHODS, "newton_schulz")))


def inv_sqrtm_unchecked(S: Matrix, *, method: str = "auto") -> Matrix:
    """:func:`inv_sqrtm` of one ``(d, d)`` matrix, without validation (library internal)."""
    return _inv_sqrtm(S, _resolve(method, S.shape[-1]))
