"""Functions of symmetric PSD matrices with exact, inverse-free derivative rules.

Everything in the library that needs a square root, a spectral function or a trace
``Tr g(AB)`` comes through this module (MATH.md §7). Three mechanisms:

* :func:`sqrtm` / :func:`inv_sqrtm`: eigendecomposition forward; the derivative solves
  the Sylvester equation ``X dX + dX X = dS`` in the eigenbasis. The solve is itself a
  ``custom_jvp`` function, so every order of derivative is a Sylvester solve: exact at
  repeated eigenvalues, where autodiff through ``eigh`` divides by ``w_i - w_j``.
* :func:`psd_fn`: ``f(S) = V f(w) V^T`` with the Daleckii–Krein rule
  ``df = V [F * (V^T dS V)] V^T``, ``F_ij = (f(w_i) - f(w_j)) / (w_i - w_j)``
  (``f'`` on and near the diagonal). The rule is linear in ``dS``, so reverse mode is
  its transpose and ``jax.hessian`` of anything built on it works.
* :func:`trace_fn`: ``Tr g(A^{1/2} B A^{1/2})`` (= ``Tr g(AB)``) with the gradients
  ``grad_A = B^{1/2} g'(B^{1/2} A B^{1/2}) B^{1/2}`` and
  ``grad_B = A^{1/2} g'(A^{1/2} B A^{1/2}) A^{1/2}``, finite for singular ``A`` or ``B``
  whenever ``g'`` is finite at 0.

All functions take single (unbatched) matrices; batch with ``jax.vmap``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = [
    "inv_sqrtm",
    "psd_fn",
    "sqrtm",
    "sym",
    "trace_fn",
]

Matrix = Float[Array, "d d"]


def sym(S: Matrix) -> Matrix:
    """Symmetric part ``(S + S^T) / 2`` (over the last two axes)."""
    return 0.5 * (S + jnp.swapaxes(S, -1, -2))


def _eigh_psd(S: Matrix) -> tuple[Float[Array, " d"], Matrix]:
    """Eigendecomposition of the symmetric part of S, eigenvalues clipped at 0."""
    w, V = jnp.linalg.eigh(sym(S))
    return jnp.maximum(w, 0.0), V


def _rebuild(V: Matrix, w: Float[Array, " d"]) -> Matrix:
    return sym((V * w) @ V.T)


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
def _sylvester(X: Matrix, Q: Matrix, S: Matrix) -> Matrix:
    def matvec(Y):
        return X @ Y + Y @ X

    def solve(_, R):
        w, V = _eigh_psd(jax.lax.stop_gradient(S))
        x = jnp.sqrt(w)
        return V @ ((V.T @ R @ V) / (x[:, None] + x[None, :])) @ V.T

    return jax.lax.custom_linear_solve(matvec, Q, solve, symmetric=True)


@jax.custom_jvp
def _sqrtm(S: Matrix) -> Matrix:
    w, V = _eigh_psd(S)
    return _rebuild(V, jnp.sqrt(w))


@_sqrtm.defjvp
def _sqrtm_jvp(primals, tangents):
    (S,), (dS,) = primals, tangents
    X = _sqrtm(S)
    return X, _sylvester(X, sym(dS), S)


@jax.custom_jvp
def _inv_sqrtm(S: Matrix) -> Matrix:
    w, V = _eigh_psd(S)
    return _rebuild(V, jax.lax.rsqrt(w))


@_inv_sqrtm.defjvp
def _inv_sqrtm_jvp(primals, tangents):
    # Z = X^{-1} with X = S^{1/2}:  dZ = -Z dX Z, dX the Sylvester solve.
    (S,), (dS,) = primals, tangents
    Z = _inv_sqrtm(S)
    dX = _sylvester(_sqrtm(S), sym(dS), S)
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
    return jnp.where(c > 0, c, jnp.ones_like(c))


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


def sqrtm(
    S: Matrix,
    *,
    method: str = "eigh",
    num_iters: int = _NS_ITERS,
    precision=jax.lax.Precision.HIGHEST,
) -> Matrix:
    r"""Symmetric PSD square root ``S^{1/2}`` with an exact derivative rule.

    ``S = V diag(w) V^T  ->  S^{1/2} = V diag(sqrt w) V^T``; the derivative solves the
    Sylvester equation ``X dX + dX X = dS`` (MATH.md §7), which is finite and exact at
    repeated eigenvalues. Forward mode, reverse mode and ``jax.hessian`` all work. At a
    singular ``S`` the derivative is unbounded in directions that leave its range (as for
    ``sqrt`` at 0): it is then ``inf``, never a silent wrong number.

    Args:
        S: symmetric PSD matrix ``(d, d)``. Only its symmetric part is used; eigenvalues
            below 0 (round-off) are clipped.
        method: ``"eigh"`` (default; exact to round-off) or ``"newton_schulz"``
            (matmuls only, for accelerators where batched ``eigh`` is slow).
            Newton–Schulz with the default 30 iterations reaches round-off for
            condition numbers up to about 1e6 (float64) and about 1e4 (float32); each
            further factor of about 2.25 in condition number costs one iteration.
            Its derivative runs the same iteration on ``[[S, dS], [0, S]]``.
        num_iters: Newton–Schulz iterations (static; ignored by ``"eigh"``).
        precision: matmul precision of the Newton–Schulz iteration.

    Returns:
        ``S^{1/2}``, symmetric PSD.

    Example:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> X = gj.sqrtm(jnp.array([[4.0, 0.0], [0.0, 9.0]]))  # diag(2, 3)
    """
    if method == "eigh":
        return _sqrtm(S)
    if method == "newton_schulz":
        return _sqrtm_ns(S, num_iters, precision)
    raise ValueError(f"method must be 'eigh' or 'newton_schulz', got {method!r}")


def inv_sqrtm(S: Matrix) -> Matrix:
    r"""Inverse square root ``S^{-1/2}`` of a symmetric positive-definite matrix.

    Derivative ``dZ = -Z dX Z`` with ``dX`` the Sylvester solve of :func:`sqrtm`, exact
    at repeated eigenvalues and at every order.

    Args:
        S: symmetric positive-definite ``(d, d)``; a singular ``S`` gives ``inf``.

    Returns:
        ``S^{-1/2}``.
    """
    return _inv_sqrtm(S)


# --------------------------------------------------------------------------------------
# Spectral functions f(S) = V f(w) V^T (Daleckii–Krein rule).
# --------------------------------------------------------------------------------------
@functools.cache
def _d_dw(f: Callable) -> Callable:
    """Elementwise derivative of f(w, *args) in w (cached: the same f gives one function)."""

    def df(w, *args):
        return jax.jvp(lambda v: f(v, *args), (w,), (jnp.ones_like(w),))[1]

    return df


@functools.cache
def _d_dargs(f: Callable) -> Callable:
    """Directional derivative of f(w, *args) in args: f_dot(w, *args, *dargs)."""

    def f_dot(w, *args_and_dargs):
        n = len(args_and_dargs) // 2
        args, dargs = args_and_dargs[:n], args_and_dargs[n:]
        return jax.jvp(lambda *a: f(w, *a), args, dargs)[1]

    return f_dot


def _divided_differences(f: Callable, w: Array, args: tuple) -> Array:
    """F_ij = (f(w_i) - f(w_j)) / (w_i - w_j), f'((w_i + w_j)/2) where w_i ~ w_j.

    The switch at |w_i - w_j| <= eps^{1/3} max(|w_i|, |w_j|) balances the round-off of
    the quotient (eps |f| / gap) against the midpoint error (gap^2 |f'''|): both are
    O(eps^{2/3}) relative, and exact (f') on the diagonal and at repeated eigenvalues.
    """
    fw = f(w, *args)
    wi, wj = w[:, None], w[None, :]
    gap = wi - wj
    tol = jnp.finfo(w.dtype).eps ** (1.0 / 3.0) * jnp.maximum(
        jnp.maximum(jnp.abs(wi), jnp.abs(wj)), jnp.finfo(w.dtype).tiny
    )
    close = jnp.abs(gap) <= tol
    quotient = (fw[:, None] - fw[None, :]) / jnp.where(close, 1.0, gap)
    mid = 0.5 * (wi + wj)
    slope = _d_dw(f)(mid.ravel(), *args).reshape(mid.shape)
    return jnp.where(close, slope, quotient)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _psd_fn(f: Callable, S: Matrix, *args) -> Matrix:
    w, V = _eigh_psd(S)
    return _rebuild(V, f(w, *args))


@_psd_fn.defjvp
def _psd_fn_jvp(f, primals, tangents):
    S, *args = primals
    dS, *dargs = tangents
    w, V = _eigh_psd(S)
    out = _rebuild(V, f(w, *args))
    F = _divided_differences(f, w, tuple(args))
    dout = V @ (F * (V.T @ sym(dS) @ V)) @ V.T
    if args:
        dout = dout + _psd_fn(_d_dargs(f), S, *args, *dargs)
    return out, sym(dout)


def psd_fn(f: Callable, S: Matrix, *args) -> Matrix:
    r"""Spectral function ``f(S) = V diag(f(w, *args)) V^T`` of a symmetric PSD matrix.

    The derivative is the Daleckii–Krein rule ``df(S)[dS] = V (F * (V^T dS V)) V^T`` with
    ``F`` the divided differences of ``f`` (``f'`` at repeated eigenvalues), plus
    ``V diag(d_args f) V^T`` for the extra arguments. It is exact to first order at
    repeated eigenvalues; higher orders differentiate ``eigh`` and need distinct
    eigenvalues. :func:`sqrtm` and :func:`trace_fn` are exact to every order they are
    tested at.

    Args:
        f: elementwise function ``f(w, *args)`` of the eigenvalues (applied to the
            vector ``w``), differentiable in ``w`` and ``args``.
        S: symmetric PSD ``(d, d)``; eigenvalues below 0 (round-off) are clipped.
        *args: array parameters of ``f`` (differentiable, e.g. ``epsilon``).

    Returns:
        ``f(S)``, symmetric.
    """
    return _psd_fn(f, S, *args)


# --------------------------------------------------------------------------------------
# Trace functions Tr g(A^{1/2} B A^{1/2}) = sum_i g(lambda_i(AB)).
#
# d Tr g(M) = Tr(g'(M) dM). With M_A = A^{1/2} B A^{1/2} this gives grad_B directly:
# Tr(g'(M_A) A^{1/2} dB A^{1/2}) = <A^{1/2} g'(M_A) A^{1/2}, dB>. For grad_A use the
# similar matrix M_B = B^{1/2} A B^{1/2} (same spectrum): grad_A = B^{1/2} g'(M_B) B^{1/2}.
# Neither needs an inverse or the derivative of a square root, so both stay finite at
# singular A or B when g' is finite at 0. The tangent in args is again a trace function.
# --------------------------------------------------------------------------------------
@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _trace_fn(g: Callable, A: Matrix, B: Matrix, *args) -> Array:
    XA = _sqrtm(A)
    lam = jnp.maximum(jnp.linalg.eigvalsh(sym(XA @ B @ XA)), 0.0)
    return jnp.sum(g(lam, *args))


@_trace_fn.defjvp
def _trace_fn_jvp(g, primals, tangents):
    A, B, *args = primals
    dA, dB, *dargs = tangents
    value = _trace_fn(g, A, B, *args)
    dg = _d_dw(g)
    XA, XB = _sqrtm(A), _sqrtm(B)
    grad_A = XB @ _psd_fn(dg, XB @ A @ XB, *args) @ XB
    grad_B = XA @ _psd_fn(dg, XA @ B @ XA, *args) @ XA
    dvalue = jnp.sum(grad_A * dA) + jnp.sum(grad_B * dB)
    if args:
        dvalue = dvalue + _trace_fn(_d_dargs(g), A, B, *args, *dargs)
    return value, dvalue


def trace_fn(g: Callable, A: Matrix, B: Matrix, *args) -> Array:
    r"""``Tr g(AB) = sum_i g(lambda_i)`` over the eigenvalues of ``A^{1/2} B A^{1/2}``.

    Gradients (MATH.md §7): ``grad_A = B^{1/2} g'(B^{1/2} A B^{1/2}) B^{1/2}`` and
    ``grad_B = A^{1/2} g'(A^{1/2} B A^{1/2}) A^{1/2}``: no inverse and no derivative of a
    square root, hence finite at singular ``A`` or ``B`` wherever ``g'(0)`` is finite
    (the entropic costs), and exact at repeated eigenvalues. Second derivatives use the
    Sylvester and Daleckii–Krein rules and are exact there too.

    Args:
        g: elementwise scalar function ``g(lambda, *args)``.
        A: symmetric PSD ``(d, d)``.
        B: symmetric PSD ``(d, d)``.
        *args: array parameters of ``g`` (differentiable).

    Returns:
        The scalar ``sum_i g(lambda_i(AB), *args)``.
    """
    return _trace_fn(g, A, B, *args)
