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

The public functions follow ``jax.numpy.linalg``: they take ``(..., d, d)`` arrays and
map over the leading batch axes (``jax.vmap`` of the unbatched kernel), and they check
their input in two tiers (``_checks``): shapes and dtypes always, values (finite,
symmetric, PSD) when concrete, and under ``jit`` inside ``gj.checks()``. The library's
own modules call the ``*_unchecked`` kernels, single matrices that are not validated
(their inputs are intermediates, PSD only up to round-off, which is clipped).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
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
    r = jnp.where(r2 > 0, jnp.sqrt(jnp.where(r2 > 0, r2, 1.0)), 0.0)
    den = jnp.abs(delta) + r
    sgn = jnp.where(delta >= 0, 1.0, -1.0)
    t = jnp.where(den > 0, 2.0 * b * sgn / jnp.where(den > 0, den, 1.0), 0.0)
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
    a = [[S[i, j] for j in range(d)] for i in range(d)]
    V = [[one if i == j else zero for j in range(d)] for i in range(d)]
    if d <= 2:  # one rotation is exact
        a, V = sweep(0, (a, V))
    else:
        sweeps = _JACOBI_SWEEPS.get(jnp.dtype(S.dtype), 5)
        a, V = jax.lax.fori_loop(0, sweeps, sweep, (a, V))
    w = [a[i][i] for i in range(d)]
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
    Sylvester equation ``X dX + dX X = dS`` (MATH.md §7), which is finite and exact at
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

    Example:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> X = gj.sqrtm(jnp.array([[4.0, 0.0], [0.0, 9.0]]))  # diag(2, 3)
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


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _psd_fn(f: Callable, method: str, S: Matrix, *args) -> Matrix:
    w, V = _eigh_psd(S, method)
    return _rebuild(V, f(w, *args))


@_psd_fn.defjvp
def _psd_fn_jvp(f, method, primals, tangents):
    S, *args = primals
    dS, *dargs = tangents
    w, V = _eigh_psd(S, method)
    out = _rebuild(V, f(w, *args))
    F = _divided_differences(f, w, tuple(args))
    dout = V @ (F * (V.T @ sym(dS) @ V)) @ V.T
    if args:
        dout = dout + _psd_fn(_d_dargs(f), method, S, *args, *dargs)
    return out, sym(dout)


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
    ``F`` the divided differences of ``f`` (``f'`` at repeated eigenvalues), plus
    ``V diag(d_args f) V^T`` for the extra arguments. It is exact to first order at
    repeated eigenvalues; higher orders differentiate ``eigh`` and need distinct
    eigenvalues. :func:`sqrtm` and :func:`trace_fn` are exact to every order they are
    tested at.

    Args:
        f: elementwise function ``f(w, *args)`` of the eigenvalues (applied to the
            vector ``w``), differentiable in ``w`` and ``args``.
        S: symmetric PSD ``(..., d, d)`` (leading axes are a batch); eigenvalues below 0
            (round-off) are clipped.
        *args: array parameters of ``f`` (differentiable, e.g. ``epsilon``), shared by
            every member of a batch (``jax.vmap`` to vary them).
        method: eigensolver, ``"auto"`` (default: ``"jacobi"`` for ``d <= 3``, else
            ``"eigh"``), ``"eigh"`` or ``"jacobi"`` (see :func:`sqrtm`).

    Returns:
        ``f(S)``, symmetric, of the shape of ``S``.

    Raises:
        ValueError: ``f`` not callable, or ``S`` as in :func:`sqrtm`.

    Example:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> L = gj.psd_fn(jnp.log1p, jnp.array([[3.0, 0.0], [0.0, 0.0]]))  # diag(log 4, 0)
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
# A; there (only there) it factors A + delta I, delta = d eps Tr A: a perturbation of the
# size of the backward error that eigh itself commits on A.
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
    d = A.shape[-1]
    L = jnp.linalg.cholesky(A)
    scale = jnp.maximum(jnp.trace(A), jnp.finfo(A.dtype).tiny)
    delta = jnp.where(jnp.all(jnp.isfinite(L)), 0.0, d * jnp.finfo(A.dtype).eps * scale)
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
    if args:
        dvalue = dvalue + _trace_fn(_d_dargs(g), method, A, B, *args, *dargs)
    return value, dvalue


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

    Gradients (MATH.md §7): ``grad_A = B^{1/2} g'(B^{1/2} A B^{1/2}) B^{1/2}`` and
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
