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

The kernels live in private modules below this one, one concept each: ``_eigh``
(symmetric part, Jacobi and LAPACK eigendecompositions), ``_cholesky`` (PSD Cholesky
factors), ``_sqrtm`` (Sylvester-rule and Newton–Schulz square roots), ``_frechet`` (the
Daleckii–Krein primitive) and ``_trace`` (trace functions). This module is their public
face: the validating, batched functions, and the ``*_unchecked`` kernels re-exported.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import _checks
from ._cholesky import _psd_factor as _psd_factor
from ._cholesky import _small_cholesky as _small_cholesky
from ._eigh import _METHODS, _resolve, sym
from ._eigh import _eigh_psd as _eigh_psd
from ._eigh import _jacobi_eigh as _jacobi_eigh
from ._frechet import psd_fn_unchecked
from ._sqrtm import _NS_ITERS, inv_sqrtm_unchecked, sqrtm_unchecked
from ._trace import _TRACE_METHODS, spectral_trace_unchecked, trace_fn_unchecked

__all__ = [
    "inv_sqrtm",
    "inv_sqrtm_unchecked",
    "psd_fn",
    "psd_fn_unchecked",
    "sqrtm",
    "spectral_trace_unchecked",
    "sqrtm_unchecked",
    "sym",
    "trace_fn",
    "trace_fn_unchecked",
]


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
