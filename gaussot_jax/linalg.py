"""Functions of symmetric PSD matrices with exact, inverse-free derivative rules.

Everything in the library that needs a square root, a spectral function or a trace
``Tr g(AB)`` comes through this module (docs/core.md). Three mechanisms:

* :func:`sqrtm` / :func:`inv_sqrtm`: eigendecomposition forward; the derivative solves
  the Sylvester equation ``X dX + dX X = dS`` in the eigenbasis. The solve is itself a
  ``custom_jvp`` function, so every order of derivative is a Sylvester solve: exact at
  repeated eigenvalues, where autodiff through ``eigh`` divides by ``w_i - w_j``.
* :func:`psd_fn`: ``f(S) = V f(w) V^T`` with the Daleckii–Krein rule
  ``df = V [F * (V^T dS V)] V^T``, ``F_ij = f[w_i, w_j]`` (``f'`` at repeated
  eigenvalues), and its higher-order analogues, ``D^k f(S)[E_1..E_k]`` with divided
  differences of order ``k``. All orders are one primitive whose jvp is the next order
  and whose transpose is the same order, so no derivative of any order, forward or
  reverse, differentiates ``eigh``: ``jax.hessian`` and every higher order are exact at
  repeated and at zero eigenvalues.
* :func:`trace_fn`: ``Tr g(A^{1/2} B A^{1/2})`` (= ``Tr g(AB)``) with the gradients
  ``grad_A = B^{1/2} g'(B^{1/2} A B^{1/2}) B^{1/2}`` and
  ``grad_B = A^{1/2} g'(A^{1/2} B A^{1/2}) A^{1/2}``, finite for singular ``A`` or ``B``
  whenever ``g'`` is finite at 0.

The public functions follow ``jax.numpy.linalg``: they take ``(..., d, d)`` arrays and
map over the leading batch axes (``jax.vmap`` of the unbatched kernel), and they check
their input in two tiers (``_checks``): shapes and dtypes always, values (finite,
symmetric, PSD) when concrete, and under ``jit`` inside ``gj.checks()``. The library's
own modules call the ``*_unchecked`` kernels, single matrices that are not validated
(their inputs are intermediates, PSD only up to round-off, which is clipped).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import ShapedArray
from jax.experimental import jet
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jaxtyping import Array, Float

from . import _checks

__all__ = [
    "inv_sqrtm",
    "inv_sqrtm_unchecked",
    "psd_fn",
    "psd_fn_unchecked",
    "sqrtm",
    "sqrtm_unchecked",
    "sym",
    "trace_fn",
    "trace_fn_unchecked",
]

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


def _eigvalsh_psd(S: Matrix, method: str = "auto") -> Float[Array, " d"]:
    """Eigenvalues of the symmetric part of S, clipped at 0."""
    S = sym(S)
    if _resolve(method, S.shape[-1]) == "jacobi":
        w = _jacobi_eigh(S)[0]
    else:
        w = jnp.linalg.eigvalsh(S)
    return jnp.maximum(w, 0.0)


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


def _matrix_arg(name: str, S, *, definite: bool = False) -> Array:
    """``S`` as a real ``(..., d, d)`` array, its values checked (see ``_checks``)."""
    S = _checks.check_real(name, S)
    _checks.check_square(name, S)
    return _checks.check_cov(name, S, definite=definite)


def _map_batch(kernel: Callable, *mats: Array) -> Array:
    """``kernel`` of single matrices, mapped over the (broadcast) leading axes of ``mats``."""
    batch = jnp.broadcast_shapes(*(M.shape[:-2] for M in mats))
    if not batch:
        return kernel(*mats)
    flat = [jnp.broadcast_to(M, (*batch, *M.shape[-2:])).reshape(-1, *M.shape[-2:]) for M in mats]
    out = jax.vmap(kernel)(*flat)
    return out.reshape(*batch, *out.shape[1:])


def sqrtm(
    S: Float[Array, "*batch d d"],
    *,
    method: str = "auto",
    num_iters: int = _NS_ITERS,
    precision=jax.lax.Precision.HIGHEST,
) -> Float[Array, "*batch d d"]:
    r"""Symmetric PSD square root ``S^{1/2}`` with an exact derivative rule.

    ``S = V diag(w) V^T  ->  S^{1/2} = V diag(sqrt w) V^T``; the derivative solves the
    Sylvester equation ``X dX + dX X = dS`` (docs/core.md), which is finite and exact at
    repeated eigenvalues. Forward mode, reverse mode and ``jax.hessian`` all work. At a
    singular ``S`` the derivative is unbounded in directions that leave its range (as for
    ``sqrt`` at 0): it is then ``inf``, never a silent wrong number.

    Args:
        S: symmetric PSD matrix ``(..., d, d)`` (leading axes are a batch, as in
            ``jax.numpy.linalg``). Only its symmetric part is used; eigenvalues below 0
            (round-off, ``>= -100 d eps max|S|``) are clipped.
        method: ``"auto"`` (default: ``"jacobi"`` for ``d <= 3``, else ``"eigh"``),
            ``"eigh"`` (LAPACK / cuSOLVER eigendecomposition), ``"jacobi"`` (cyclic
            Jacobi on scalars, no library call; exact in one rotation at ``d = 2``;
            meant for ``d <= 3``, where it is many times faster batched), or
            ``"newton_schulz"`` (matmuls only, for accelerators where batched
            ``eigh`` is slow). ``"auto"``, ``"eigh"`` and ``"jacobi"`` agree to
            round-off and share the Sylvester derivative rule.
            Newton–Schulz with the default 30 iterations reaches round-off for
            condition numbers up to about 1e6 (float64) and about 1e4 (float32); each
            further factor of about 2.25 in condition number costs one iteration.
            Its derivative runs the same iteration on ``[[S, dS], [0, S]]``.
        num_iters: Newton–Schulz iterations (static; ignored by the other methods).
        precision: matmul precision of the Newton–Schulz iteration.

    Returns:
        ``S^{1/2}``, symmetric PSD, of the shape of ``S``.

    Raises:
        ValueError: ``S`` is not a real ``(..., d, d)`` array with ``d >= 1``, or (when
            concrete, or traced inside ``gj.checks()``) not finite, symmetric and PSD;
            ``method`` unknown.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> X = gj.sqrtm(jnp.array([[4.0, 0.0], [0.0, 9.0]]))
        >>> [[round(v, 5) for v in row] for row in X.tolist()]
        [[2.0, 0.0], [0.0, 3.0]]
    """
    _resolve(method, 1, (*_METHODS, "newton_schulz"))
    S = _matrix_arg("S", S)
    return _map_batch(
        lambda X: sqrtm_unchecked(X, method=method, num_iters=num_iters, precision=precision), S
    )


def inv_sqrtm_unchecked(S: Matrix, *, method: str = "auto") -> Matrix:
    """:func:`inv_sqrtm` of one ``(d, d)`` matrix, without validation (library internal)."""
    return _inv_sqrtm(S, _resolve(method, S.shape[-1]))


def inv_sqrtm(S: Float[Array, "*batch d d"], *, method: str = "auto") -> Float[Array, "*batch d d"]:
    r"""Inverse square root ``S^{-1/2}`` of a symmetric positive-definite matrix.

    Derivative ``dZ = -Z dX Z`` with ``dX`` the Sylvester solve of :func:`sqrtm`, exact
    at repeated eigenvalues and at every order.

    Args:
        S: symmetric positive-definite ``(..., d, d)`` (leading axes are a batch).
        method: eigensolver, ``"auto"`` (default), ``"eigh"`` or ``"jacobi"`` as in
            :func:`sqrtm`.

    Returns:
        ``S^{-1/2}``, of the shape of ``S``.

    Raises:
        ValueError: as :func:`sqrtm`, and ``S`` not positive definite (smallest
            eigenvalue ``<= 100 d eps max|S|``).

    Example:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> Z = gj.inv_sqrtm(jnp.array([[4.0, 0.0], [0.0, 9.0]]))  # diag(1/2, 1/3)
    """
    _resolve(method, 1)
    S = _matrix_arg("S", S, definite=True)
    return _map_batch(lambda X: inv_sqrtm_unchecked(X, method=method), S)


# --------------------------------------------------------------------------------------
# Spectral functions f(S) = V f(w) V^T and their Frechet derivatives of every order.
#
# For symmetric S = V diag(w) V^T and symmetric E_1..E_k, with Et = V^T E V
# (Daleckii & Krein 1965; Bhatia, Matrix Analysis, §V.3 for k = 1):
#
#   D^k f(S)[E_1, ..., E_k] = V X V^T,
#   X_ij = sum_{sigma in S_k} sum_{l_1..l_{k-1}} f[w_i, w_l1, ..., w_l(k-1), w_j]
#              Et_sigma(1)[i, l_1] Et_sigma(2)[l_1, l_2] ... Et_sigma(k)[l_(k-1), j],
#
# f[...] the divided difference of order k (f^(k)(w)/k! where all points coincide). It
# is linear in each E_i and, with F' = f, <Y, D^k f(S)[E_1..E_k]> = D^(k+1) Tr F(S)[Y,
# E_1, ..., E_k] is symmetric in (Y, E_1, ..., E_k): the transpose in E_i is the same
# map with E_i replaced by the cotangent. Its derivative is again of this form:
#
#   d D^k f(S; a)[E] = D^(k+1) f[E_1..E_k, dS] + sum_i D^k f[.., dE_i, ..]
#                      + sum_m da_m D^k (df/da_m)(S)[E_1..E_k]      (a_m = args[m]).
#
# Order 0 is f(S) itself, so ONE primitive, ``_frechet_p``, of operands (S, *args, *E)
# and static order k, serves every order: its jvp binds order k + 1 (and order k with
# other arguments), its transpose binds order k, its batching rule binds it with a batch
# level. Nothing outside the primitive sees the eigendecomposition, so no derivative of
# any order differentiates ``eigh``. (A ``custom_jvp`` does not suffice: in reverse mode
# JAX partially evaluates the tangent rule and INLINES a custom_jvp function called with
# a known S and an unknown tangent, so an outer jvp (Hessian-vector products,
# ``jax.hessian``) differentiates its ``eigh`` again: NaN at d = 4, S = I. A primitive
# stays one opaque equation of the linear program.)
#
# Divided differences. For each index tuple the points are sorted and a Neville table is
# built, f[x_j..x_(j+m)] from f[x_(j+1)..x_(j+m)] and f[x_j..x_(j+m-1)], choosing per
# entry the branch with the smaller a-priori error bound:
#   quotient  (f[x_(j+1)..] - f[..x_(j+m-1)]) / s,   s = x_(j+m) - x_j: the errors of the
#             two entries (eps |f| at order 0) divided by s, plus eps |q|;
#   Taylor    about the mean c of the points,
#               f[x_0..x_m] = sum_j f^(m+j)(c) / (m+j)! h_j(x - c),
#             h_j the complete symmetric polynomials: h_1 = sum(x - c) = 0,
#             h_2 = sum((x - c)^2) / 2, h_3 = sum((x - c)^3) / 3 (0 for two points). The
#             branch keeps j = 0 and 2; its truncation error is estimated from the decay
#             of the series, |t_2| (t_2 / t_0) at m = 1 (next term j = 4) and
#             |t_2| (t_2 / t_0)^(1/2) above (j = 3), plus eps |t|.
# Where f^(j) scales like f / x^j the two bounds cross at s / |x| ~ eps^(1/(m+4))
# (m = 1: 7e-4 in float64, both errors ~ eps^(4/5) = 3e-13 relative; the former rule,
# f' at the midpoint, crossed at eps^(1/3) with errors eps^(2/3)). The estimate also
# picks the Taylor branch for a cluster at 0 of a function smooth there (where a relative
# threshold would divide round-off by a gap of 1e-16) and the quotient for sqrt-like
# functions whose derivatives blow up at 0. Coinciding points (s = 0) take the Taylor
# branch, which is then exact.
# --------------------------------------------------------------------------------------
class _Derived:
    """``d^n f / dw^n`` (``arg is None``) or ``d f / d args[arg][index]``.

    Equal and hashed by value, so the same ``f`` gives equal derivatives (the primitive's
    parameters and JAX's caches see one function) without a cache that would keep every
    user ``f`` and its captured arrays alive.
    """

    __slots__ = ("__weakref__", "arg", "f", "index", "n")

    def __init__(self, f: Callable, n: int = 1, arg: int | None = None, index: tuple = ()):
        self.f, self.n, self.arg, self.index = f, n, arg, index

    def _key(self):
        return (self.f, self.n, self.arg, self.index)

    def __eq__(self, other):
        return type(other) is _Derived and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __call__(self, w, *args):
        if self.arg is not None:
            m = self.arg  # narrowed to int (the closure below would not see the narrowing)
            a = args[m]
            da = jnp.zeros(jnp.shape(a), jnp.result_type(a)).at[self.index].set(1.0)

            def in_arg(x):
                return self.f(w, *args[:m], x, *args[m + 1 :])

            return jax.jvp(in_arg, (a,), (da,))[1]

        def g(v):
            return self.f(v, *args)

        for _ in range(self.n):
            g = functools.partial(lambda h, v: jax.jvp(h, (v,), (jnp.ones_like(v),))[1], g)
        return g(w)


def _d_dw(f: Callable) -> Callable:
    """Elementwise derivative of ``f(w, *args)`` in ``w`` (equal for equal ``f``)."""
    return _Derived(f, 1)


def _arg_terms(fn: Callable, f: Callable, args: Sequence, dargs: Sequence):
    """``sum_m sum_idx dargs[m][idx] * fn(df / d args[m][idx])`` over nonzero tangents.

    Each term evaluates ``fn`` on known inputs only (a new derived function), times a
    tangent entry: linear in ``dargs``, so reverse mode transposes the product.
    """
    out = None
    for m, (a, da) in enumerate(zip(args, dargs)):
        if type(da) is ad.Zero:
            continue
        for index in np.ndindex(jnp.shape(a)):
            term = da[index] * fn(_Derived(f, arg=m, index=index))
            out = term if out is None else out + term
    return out


def _derivatives(f: Callable, x: Array, args: tuple, n: int) -> list:
    """``[f'(x), ..., f^(n)(x)]`` elementwise.

    Taylor mode (``jet``, O(n^2) work) where its rules cover ``f``, else nested ``jvp``
    (O(3^n) work).
    """
    g = functools.partial(lambda h, a, v: h(v, *a), f, args)
    try:
        one, zero = jnp.ones_like(x), jnp.zeros_like(x)
        return list(jet.jet(g, (x,), ((one,) + (zero,) * (n - 1),))[1])
    except NotImplementedError:
        return [_Derived(f, j)(x, *args) for j in range(1, n + 1)]


def _divided_differences(f: Callable, w: Array, args: tuple, k: int) -> Array:
    """``T[i_0, ..., i_k] = f[w_(i_0), ..., w_(i_k)]`` for every index tuple, ``(d,)*(k+1)``."""
    d = w.shape[-1]
    eps = jnp.finfo(w.dtype).eps
    fw = f(w, *args)
    grid = (d,) * (k + 1)  # index tuples from iota, not an O(d^(k+1)) constant
    axes = [jax.lax.broadcasted_iota(jnp.int32, grid, p).ravel() for p in range(k + 1)]
    idx = jnp.stack(axes, axis=1)  # (N, k + 1)
    order = jnp.argsort(w[idx], axis=1)
    idx = jnp.take_along_axis(idx, order, axis=1)
    x = w[idx]
    table, err = fw[idx], eps * jnp.abs(fw[idx])
    for m in range(1, k + 1):
        pts = jnp.stack([x[:, j : j + m + 1] for j in range(k + 1 - m)], axis=1)
        c = jnp.mean(pts, axis=-1)
        dev2 = jnp.sum((pts - c[..., None]) ** 2, axis=-1)
        s = pts[..., -1] - pts[..., 0]
        safe = jnp.where(s > 0, s, 1.0)
        q = (table[:, 1:] - table[:, :-1]) / safe
        err_q = (err[:, 1:] + err[:, :-1]) / safe + eps * jnp.abs(q)
        derivs = _derivatives(f, c.ravel(), args, m + 2)
        t0 = (derivs[m - 1] / math.factorial(m)).reshape(c.shape)
        t2 = (derivs[m + 1] / math.factorial(m + 2)).reshape(c.shape) * 0.5 * dev2
        t = t0 + t2
        # Truncation after the h_2 term, estimated from the decay t2 / t0 of the series
        # (two orders; h_3 = sum((x - c)^3) / 3 vanishes for two points, not above).
        r = jnp.minimum(1.0, jnp.abs(t2) / jnp.where(t0 != 0, jnp.abs(t0), 1.0))
        r = jnp.where(t0 != 0, r, 1.0)
        err_t = jnp.abs(t2) * (r if m == 1 else jnp.sqrt(r)) + eps * jnp.abs(t)
        taylor = (s <= 0) | (err_t <= err_q)
        table = jnp.where(taylor, t, q)
        err = jnp.where(taylor, err_t, err_q)
    return table[:, 0].reshape((d,) * (k + 1))


def _contract(T: Array, Et: list) -> Array:
    """``X_ij = sum_sigma sum_l T[i, l.., j] Et_sigma(1)[i, l_1] ... Et_sigma(k)[.., j]``."""
    k = len(Et)
    ix = "abcdefghijklmnop"[: k + 1]
    spec = ix + "," + ",".join(ix[p : p + 2] for p in range(k)) + "->" + ix[0] + ix[k]
    out = None
    for perm in itertools.permutations(range(k)):
        term = jnp.einsum(spec, T, *(Et[p] for p in perm), optimize=True)
        out = term if out is None else out + term
    assert out is not None  # permutations(range(k)) is never empty (k = 0: one, empty)
    return out


def _frechet_single(S, *operands, f, method, n_args, k):
    """``D^k f(S; args)[E_1..E_k]`` for one (unbatched) set of operands."""
    args, Es = operands[:n_args], operands[n_args:]
    w, V = _eigh_psd(S, method)
    if k == 0:
        return _rebuild(V, f(w, *args))
    T = _divided_differences(f, w, args, k)
    X = _contract(T, [V.T @ sym(E) @ V for E in Es])
    return sym(V @ X @ V.T)


# Parameters of the primitive: f, method (resolved), n_args, k (number of E operands) and
# batch, one (size, in_axes) per vmap level, outermost first; each operand carries a
# leading axis for each level where its in_axes entry is 0.
_frechet_p = Primitive("gaussot_psd_frechet")
_NOT_MAPPED = getattr(batching, "not_mapped", None)  # None in jax >= 0.10


def _frechet_impl(*operands, f, method, n_args, k, batch):
    fn = functools.partial(_frechet_single, f=f, method=method, n_args=n_args, k=k)
    for _, axes in reversed(batch):
        fn = jax.vmap(fn, in_axes=axes)
    return fn(*operands)


def _output_sharding(S, batch):
    """The output's sharding: S's partitioning of each batch level (if any), matrices whole.

    Without it the output would carry the empty mesh of the trace context, and ops that
    combine it with sharded operands fail under ``jit`` (jax 0.9).
    """
    sharding = getattr(S, "sharding", None)
    spec = getattr(sharding, "spec", None)
    if sharding is None or spec is None or not hasattr(sharding, "update"):
        return None
    spec = tuple(spec) + (None,) * (S.ndim - len(tuple(spec)))
    entries, pos = [], 0
    for _, axes in batch:
        if axes[0] == 0:  # S carries this level's axis
            entries.append(spec[pos])
            pos += 1
        else:
            entries.append(None)
    return sharding.update(spec=type(sharding.spec)(*entries, None, None))


def _frechet_abstract(*operands, f, method, n_args, k, batch):
    vma = frozenset().union(*(getattr(x, "vma", frozenset()) for x in operands))
    shape = tuple(size for size, _ in batch) + tuple(operands[0].shape[-2:])
    sharding = _output_sharding(operands[0], batch)
    if sharding is None:
        return ShapedArray(shape, operands[0].dtype, vma=vma)
    return ShapedArray(shape, operands[0].dtype, sharding=sharding, vma=vma)


def _frechet_bind(operands, axes, **params):
    """Bind with per-operand axes, one tuple per batch level (sizes from ``params``)."""
    batch = tuple((size, tuple(a)) for (size, _), a in zip(params.pop("batch"), axes))
    return _frechet_p.bind(*operands, batch=batch, **params)


def _frechet_jvp(primals, tangents, *, f, method, n_args, k, batch):
    S, args, Es = primals[0], primals[1 : 1 + n_args], primals[1 + n_args :]
    dS, dargs, dEs = tangents[0], tangents[1 : 1 + n_args], tangents[1 + n_args :]
    params = dict(f=f, method=method, n_args=n_args, k=k, batch=batch)
    axes = [list(a) for _, a in batch]
    out = _frechet_p.bind(*primals, **params)
    terms = []
    if type(dS) is not ad.Zero:  # order k + 1, dS appended (batched as S)
        ax = [a + [a[0]] for a in axes]
        terms.append(_frechet_bind((*primals, sym(dS)), ax, **{**params, "k": k + 1}))
    for i, dE in enumerate(dEs):  # order k, E_i replaced by its tangent
        if type(dE) is not ad.Zero:
            ops = (S, *args, *Es[:i], dE, *Es[i + 1 :])
            terms.append(_frechet_p.bind(*ops, **params))
    if any(type(da) is not ad.Zero for da in dargs):  # D^k of df/da, known inputs only
        # A tangent entry of args[m] is batched at the levels where args[m] is; it
        # broadcasts against the output's leading axes (one per level).
        def at_levels(da_entry, m):
            shape = [size if a[1 + m] == 0 else 1 for size, a in batch]
            return jnp.reshape(da_entry, (*shape, 1, 1))

        for m, (a, da) in enumerate(zip(args, dargs)):
            if type(da) is ad.Zero:
                continue
            nb = sum(1 for _, ax in batch if ax[1 + m] == 0)
            for index in np.ndindex(jnp.shape(a)[nb:]):
                fm = _Derived(f, arg=m, index=index)
                Dm = _frechet_p.bind(*primals, **{**params, "f": fm})
                terms.append(at_levels(da[(Ellipsis, *index)], m) * Dm)
    if not terms:
        # ad.Zero.from_primal_value is gone in jax 0.9; this form works from 0.6 on.
        return out, ad.Zero(jax.typeof(out).to_tangent_aval())
    return out, functools.reduce(jnp.add, terms)


def _frechet_transpose(ct, *operands, f, method, n_args, k, batch):
    # Linear only in one E operand (the others known): by the symmetry above, the
    # transpose is the same map with that E replaced by the (symmetrised) cotangent.
    linear = [i for i, x in enumerate(operands) if ad.is_undefined_primal(x)]
    if len(linear) != 1 or linear[0] < 1 + n_args:
        raise NotImplementedError("psd_fn's Frechet derivative is linear in one E only")
    i = linear[0]
    if type(ct) is ad.Zero:
        return [None] * len(operands)
    ops = list(operands)
    ops[i] = sym(ct)
    axes = [list(a) for _, a in batch]
    for a in axes:
        a[i] = 0  # the cotangent is batched at every level, as the output
    params = dict(f=f, method=method, n_args=n_args, k=k, batch=batch)
    res = _frechet_bind(ops, axes, **params)
    unbatched = tuple(lvl for lvl, (_, a) in enumerate(batch) if a[i] is None)
    if unbatched:
        res = jnp.sum(res, axis=unbatched)
    out: list[Array | None] = [None] * len(operands)
    out[i] = res
    return out


def _frechet_batch(operands, dims, *, f, method, n_args, k, batch):
    none = _NOT_MAPPED
    moved = [x if b is none else jnp.moveaxis(x, b, 0) for x, b in zip(operands, dims)]
    size = next(x.shape[0] for x, b in zip(moved, dims) if b is not _NOT_MAPPED)
    axes = tuple(None if b is _NOT_MAPPED else 0 for b in dims)
    new = ((size, axes), *batch)
    return _frechet_p.bind(*moved, f=f, method=method, n_args=n_args, k=k, batch=new), 0


_frechet_p.def_impl(_frechet_impl)  # eager: op by op, no compile cache keyed on f
_frechet_p.def_abstract_eval(_frechet_abstract)
mlir.register_lowering(_frechet_p, mlir.lower_fun(_frechet_impl, multiple_results=False))
ad.primitive_jvps[_frechet_p] = _frechet_jvp
ad.primitive_transposes[_frechet_p] = _frechet_transpose
batching.primitive_batchers[_frechet_p] = _frechet_batch


def _frechet(f: Callable, method: str, S: Matrix, args: tuple, *Es: Matrix) -> Matrix:
    """``D^k f(S; args)[E_1, ..., E_k]`` (order 0: ``f(S)``), exact at every order."""
    operands = [jnp.asarray(x) for x in (S, *args, *Es)]
    return _frechet_p.bind(*operands, f=f, method=method, n_args=len(args), k=len(Es), batch=())


def _psd_fn(f: Callable, method: str, S: Matrix, *args) -> Matrix:
    return _frechet(f, method, S, args)


def psd_fn_unchecked(f: Callable, S: Matrix, *args, method: str = "auto") -> Matrix:
    """:func:`psd_fn` of one ``(d, d)`` matrix, without validation (library internal)."""
    return _psd_fn(f, _resolve(method, S.shape[-1]), S, *args)


def _check_fn(name: str, f) -> None:
    if not callable(f):
        raise ValueError(f"{name} must be callable, got {type(f).__name__}")


def psd_fn(
    f: Callable, S: Float[Array, "*batch d d"], *args, method: str = "auto"
) -> Float[Array, "*batch d d"]:
    r"""Spectral function ``f(S) = V diag(f(w, *args)) V^T`` of a symmetric PSD matrix.

    The derivative is the Daleckii–Krein rule ``df(S)[dS] = V (F * (V^T dS V)) V^T`` with
    ``F_ij = f[w_i, w_j]`` the divided differences of ``f`` (``f'`` at repeated
    eigenvalues), plus ``V diag(d_args f) V^T`` for the extra arguments. Every higher
    order is the same kind of formula with divided differences of that order (docs/core.md):
    ``D^k f(S)[E_1..E_k] = V [sum over orderings of the E's and paths i -> l_1 -> ... -> j
    of f[w_i, w_l1, ..., w_j] Et Et ... Et] V^T``, ``Et = V^T E V``. The eigendecomposition
    is never differentiated, so forward mode, reverse mode, ``jax.hessian`` and every
    higher order are exact at repeated and at zero eigenvalues (where ``f`` is smooth).
    A derivative of order ``k`` costs ``O(d^(k+1))`` memory and ``k! d^(k+2)`` flops.

    Args:
        f: elementwise function ``f(w, *args)`` of the eigenvalues (applied to a
            vector ``w`` of any length), differentiable in ``w`` and ``args``, as many
            times as the derivative order asked for (plus two, for the error estimate of
            the divided differences).
        S: symmetric PSD ``(..., d, d)`` (leading axes are a batch); eigenvalues below 0
            (round-off) are clipped.
        *args: array parameters of ``f`` (differentiable, e.g. ``epsilon``; a
            derivative in an array parameter costs one evaluation per entry), shared by
            every member of a batch (``jax.vmap`` to vary them).
        method: eigensolver, ``"auto"`` (default: ``"jacobi"`` for ``d <= 3``, else
            ``"eigh"``), ``"eigh"`` or ``"jacobi"`` (see :func:`sqrtm`).

    Returns:
        ``f(S)``, symmetric, of the shape of ``S``.

    Raises:
        ValueError: ``f`` not callable, or ``S`` as in :func:`sqrtm`.

    Examples:
        >>> import jax, jax.numpy as jnp, gaussot_jax as gj
        >>> E = gj.psd_fn(jnp.exp, jnp.eye(2))  # e I
        >>> H = jax.hessian(lambda s: jnp.trace(gj.psd_fn(jnp.exp, s)))(jnp.eye(2))
    """
    _check_fn("f", f)
    _resolve(method, 1)
    S = _matrix_arg("S", S)
    return _map_batch(lambda X: psd_fn_unchecked(f, X, *args, method=method), S)


# --------------------------------------------------------------------------------------
# Trace functions Tr g(A^{1/2} B A^{1/2}) = sum_i g(lambda_i(AB)).
#
# d Tr g(M) = Tr(g'(M) dM). With M_A = A^{1/2} B A^{1/2} this gives grad_B directly:
# Tr(g'(M_A) A^{1/2} dB A^{1/2}) = <A^{1/2} g'(M_A) A^{1/2}, dB>. For grad_A use the
# similar matrix M_B = B^{1/2} A B^{1/2} (same spectrum): grad_A = B^{1/2} g'(M_B) B^{1/2}.
# Neither needs an inverse or the derivative of a square root, so both stay finite at
# singular A or B when g' is finite at 0. The tangent in args is again a trace function.
#
# Any factor F with F F^T = A may replace A^{1/2}: F = A^{1/2} Q (Q orthogonal), so
# F^T B F = Q^T M_A Q has the spectrum of AB and F g'(F^T B F) F^T = A^{1/2} g'(M_A) A^{1/2}.
# The "cholesky" method takes F = chol(A): one Cholesky (a fraction of an eigh) and ONE
# symmetric eigendecomposition per pair instead of two, and still no inverse, so the
# gradients stay finite at singular A, B. LAPACK's Cholesky breaks down at a singular
# A; there (only there) it factors A + delta I, delta = max(d eps Tr A, tiny): a
# perturbation of the size of the backward error that eigh itself commits on A.
# --------------------------------------------------------------------------------------
_TRACE_METHODS = (*_METHODS, "cholesky")


def _small_cholesky(A: Matrix) -> Matrix:
    """Unrolled Cholesky of a small PSD matrix, on scalars (no library call).

    Semidefinite-safe: a pivot ``<= 0`` gives a zero column, and each entry is clipped to
    the Cauchy–Schwarz bound ``|L_ik| <= s_ii^{1/2}`` that holds for every PSD Schur
    complement ``s``, so round-off at a singular ``A`` cannot blow up.
    """
    d = A.shape[-1]
    s = [[A[i, j] for j in range(d)] for i in range(d)]
    zero = 0.0 * A[0, 0]  # batched and sharded like A (see _jacobi_eigh)
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
    """Lower-triangular ``F`` with ``F F^T = A`` (to round-off), finite for singular A."""
    A = sym(A)
    if A.shape[-1] <= _JACOBI_MAX_D:
        return _small_cholesky(A)
    # No lax.cond: under vmap it becomes a select of two independent LAPACK calls, which
    # XLA may run concurrently (see _trace_fn_jvp on why that must be avoided). The
    # second call depends on the first, and repeats it exactly where it succeeded.
    # The shift is d eps Tr A (relative to A's scale), and never below the smallest
    # normal number: at A = 0 (a Dirac) d eps tiny is denormal, which XLA flushes to 0,
    # and the second Cholesky of 0 would be NaN. At A = 0 the shift tiny gives the factor
    # tiny^{1/2} I, whose contribution F^T B F = tiny B is below round-off of any B.
    d = A.shape[-1]
    info = jnp.finfo(A.dtype)
    L = jnp.linalg.cholesky(A)
    shift = jnp.maximum(d * info.eps * jnp.trace(A), info.tiny)
    delta = cast(Array, jnp.where(jnp.all(jnp.isfinite(L)), 0.0, shift))
    return jnp.linalg.cholesky(A + delta * jnp.eye(d, dtype=A.dtype))


def _similar(A: Matrix, B: Matrix, method: str) -> tuple[Matrix, Matrix]:
    """``(F, F^T B F)`` with ``F F^T = A``: the symmetric matrix with the spectrum of AB."""
    F = _psd_factor(A) if method == "cholesky" else _sqrtm(A, method)
    return F, sym(F.T @ B @ F)


def _eig_method(method: str) -> str:
    return "auto" if method == "cholesky" else method


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _trace_fn(g: Callable, method: str, A: Matrix, B: Matrix, *args) -> Array:
    _, MA = _similar(A, B, method)
    return jnp.sum(g(_eigvalsh_psd(MA, _eig_method(method)), *args))


@_trace_fn.defjvp
def _trace_fn_jvp(g, method, primals, tangents):
    A, B, *args = primals
    dA, dB, *dargs = tangents
    dg, em = _d_dw(g), _eig_method(method)
    # A and B are factored, and M_A, M_B decomposed, as one stacked batch each: one
    # LAPACK call at a time. Independent batched LAPACK calls that XLA runs concurrently
    # can deadlock its CPU thread pool (jaxlib's kernels split the batch over the same
    # pool and block on it; with as many such calls as cores every worker waits).
    A, B = A + 0.0 * B, B + 0.0 * A  # one batching and sharding for both, so they stack
    F, M = jax.vmap(lambda X, Y: _similar(X, Y, method))(jnp.stack([A, B]), jnp.stack([B, A]))
    w = jax.vmap(lambda S: _eigh_psd(S, em)[0])(M)
    G = jax.vmap(lambda S: _psd_fn(dg, em, S, *args))(M)
    value = jnp.sum(g(w[0], *args))
    grad_B, grad_A = (F[k] @ G[k] @ F[k].T for k in (0, 1))
    dvalue = jnp.sum(grad_A * dA) + jnp.sum(grad_B * dB)
    # In args: Tr of d g / d args, on known inputs only (see _arg_terms), so that an
    # outer derivative still goes through this rule.
    extra = _arg_terms(lambda gm: _trace_fn(gm, method, A, B, *args), g, args, dargs)
    return value, dvalue if extra is None else dvalue + extra


def trace_fn_unchecked(g: Callable, A: Matrix, B: Matrix, *args, method: str = "auto") -> Array:
    """:func:`trace_fn` of one pair of ``(d, d)`` matrices, without validation."""
    resolved = _resolve(method, A.shape[-1], _TRACE_METHODS)
    return _trace_fn(g, "cholesky" if method == "auto" else resolved, A, B, *args)


def trace_fn(
    g: Callable,
    A: Float[Array, "*batch d d"],
    B: Float[Array, "*batch d d"],
    *args,
    method: str = "auto",
) -> Float[Array, "*batch"]:
    r"""``Tr g(AB) = sum_i g(lambda_i)`` over the eigenvalues of ``A^{1/2} B A^{1/2}``.

    Gradients (docs/core.md): ``grad_A = B^{1/2} g'(B^{1/2} A B^{1/2}) B^{1/2}`` and
    ``grad_B = A^{1/2} g'(A^{1/2} B A^{1/2}) A^{1/2}``: no inverse and no derivative of a
    square root, hence finite at singular ``A`` or ``B`` wherever ``g'(0)`` is finite
    (the entropic costs), and exact at repeated eigenvalues. Second derivatives use the
    Sylvester and Daleckii–Krein rules and are exact there too. Any factor ``F F^T = A``
    may replace ``A^{1/2}`` (``F^T B F`` has the spectrum of ``AB``), which the default
    method uses above ``d = 3``: a Cholesky factor and one symmetric eigendecomposition.

    Args:
        g: elementwise scalar function ``g(lambda, *args)``.
        A: symmetric PSD ``(..., d, d)`` (leading axes are a batch).
        B: symmetric PSD ``(..., d, d)``; the batch shapes of ``A`` and ``B`` broadcast.
        *args: array parameters of ``g`` (differentiable), shared by the batch.
        method: ``"auto"`` (default: ``"jacobi"`` for ``d <= 3``, else
            ``"cholesky"``); ``"cholesky"`` (``F = chol(A)``, one ``eigh`` of
            ``F^T B F`` for the value, two for value and gradient; at a singular
            argument the Cholesky factor of ``A + d eps Tr(A) I``); ``"eigh"`` or
            ``"jacobi"`` (``F = A^{1/2}`` by that eigensolver, see :func:`sqrtm`).

    Returns:
        ``sum_i g(lambda_i(AB), *args)``: a scalar, or one per member of the batch.

    Raises:
        ValueError: ``g`` not callable; ``A`` or ``B`` as in :func:`sqrtm`; their ``d``
            differ or their batch shapes do not broadcast.

    Example:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> t = gj.trace_fn(jnp.sqrt, jnp.eye(2), 4.0 * jnp.eye(2))  # 2 + 2
    """
    _check_fn("g", g)
    _resolve(method, 1, _TRACE_METHODS)
    A, B = _matrix_arg("A", A), _matrix_arg("B", B)
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(f"A and B must have the same d, got shapes {A.shape} and {B.shape}")
    try:
        jnp.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    except ValueError:
        raise ValueError(
            f"the batch shapes of A {A.shape} and B {B.shape} do not broadcast"
        ) from None
    A, B = _checks.common_float(A, B)
    return _map_batch(lambda X, Y: trace_fn_unchecked(g, X, Y, *args, method=method), A, B)
