"""Trace functions ``Tr g(AB)`` with finite, inverse-free gradients (library internal).

The public, validating wrapper is :func:`gaussot_jax.linalg.trace_fn`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._cholesky import _psd_factor
from ._eigh import _METHODS, Matrix, _eigh_psd, _eigvalsh_psd, _resolve, sym
from ._frechet import _arg_terms, _d_dw, _psd_fn
from ._sqrtm import _sqrtm

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


# --------------------------------------------------------------------------------------
# Tr g(A) = sum_i g(lambda_i(A)) of one matrix: the case B = I of the above, without the
# factor of A and the decomposition of B^{1/2} A B^{1/2} that it would cost.
# d Tr g(A) = <g'(A), dA> with g'(A) the spectral function psd_fn(g', A), whose rules
# are exact at every order (repeated eigenvalues included); in args, as above.
# --------------------------------------------------------------------------------------
@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _spectral_trace(g: Callable, method: str, A: Matrix, *args) -> Array:
    return jnp.sum(g(_eigvalsh_psd(A, method), *args))


@_spectral_trace.defjvp
def _spectral_trace_jvp(g, method, primals, tangents):
    A, *args = primals
    dA, *dargs = tangents
    w = _eigh_psd(A, method)[0]  # the decomposition psd_fn below makes (XLA merges them)
    value = jnp.sum(g(w, *args))
    dvalue = jnp.sum(_psd_fn(_d_dw(g), method, A, *args) * dA)
    extra = _arg_terms(lambda gm: _spectral_trace(gm, method, A, *args), g, args, dargs)
    return value, dvalue if extra is None else dvalue + extra


def spectral_trace_unchecked(g: Callable, A: Matrix, *args, method: str = "auto") -> Array:
    """``Tr g(A) = sum_i g(lambda_i(A), *args)`` of one symmetric PSD ``(d, d)`` matrix.

    Unvalidated (library internal); ``g`` elementwise. Equal to ``trace_fn(g, A, I)`` at
    a third of its LAPACK work; gradients ``g'(A)`` by psd_fn's exact rules.
    """
    return _spectral_trace(g, _resolve(method, A.shape[-1]), A, *args)


def trace_fn_unchecked(g: Callable, A: Matrix, B: Matrix, *args, method: str = "auto") -> Array:
    """:func:`trace_fn` of one pair of ``(d, d)`` matrices, without validation."""
    resolved = _resolve(method, A.shape[-1], _TRACE_METHODS)
    return _trace_fn(g, "cholesky" if method == "auto" else resolved, A, B, *args)
