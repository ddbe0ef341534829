"""Trace functions ``Tr g(AB)`` with finite, inverse-free gradients (library internal).

The public, validating wrapper is :func:`gaussot_jax.linalg.trace_fn`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from . import _routes
from ._cholesky import _psd_factor, chol_factor, fro
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


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _trace_fn(g: Callable, method: str, bounds: Callable | None, A: Matrix, B: Matrix, *args):
    _, MA = _similar(A, B, method)
    return jnp.sum(g(_eigvalsh_psd(MA, _eig_method(method)), *args))


def _stacked_value_grads(g: Callable, method: str, A: Matrix, B: Matrix, *args):
    """``(Tr g(AB), grad_A, grad_B)`` from factors of both A and B (the rule above).

    Differentiable at every order through psd_fn's rules and the factors' own.
    """
    dg, em = _d_dw(g), _eig_method(method)
    # A and B are factored, and M_A, M_B decomposed, as one stacked batch each: one
    # LAPACK call at a time. Independent batched LAPACK calls that XLA runs concurrently
    # can deadlock its CPU thread pool (jaxlib 0.10's kernels split the batch over the
    # same pool and block on it; with as many such calls as cores every worker waits).
    A, B = A + 0.0 * B, B + 0.0 * A  # one batching and sharding for both, so they stack
    F, M = jax.vmap(lambda X, Y: _similar(X, Y, method))(jnp.stack([A, B]), jnp.stack([B, A]))
    w = jax.vmap(lambda S: _eigh_psd(S, em)[0])(M)
    G = jax.vmap(lambda S: _psd_fn(dg, em, S, *args))(M)
    grad_B, grad_A = (F[k] @ G[k] @ F[k].T for k in (0, 1))
    return jnp.sum(g(w[0], *args)), grad_A, grad_B


# --------------------------------------------------------------------------------------
# Value and gradient from ONE factor and ONE eigendecomposition, where a bound certifies.
#
# With F F^T = A (Cholesky) and M = F^T B F = V diag(w) V^T, the rule above needs a
# factor of B as well: grad_A = B^{1/2} g'(B^{1/2} A B^{1/2}) B^{1/2}. With Z = B^{1/2} F
# (so B^{1/2} A B^{1/2} = Z Z^T, M = Z^T Z) the push-through identity
# Z^T h(Z Z^T) Z = h(Z^T Z) Z^T Z gives, for invertible F,
#     grad_A = F^{-T} k(M) F^{-1} = Y diag(k(w)) Y^T,   k(w) = w g'(w),  Y = F^{-T} V,
#     grad_B = F g'(M) F^T = (F V) diag(g'(w)) (F V)^T          (as in the rule above),
# one triangular solve instead of a second Cholesky and eigendecomposition. The solve is
# ill-conditioned where A is, so the result is accepted only where a first-order bound
# on the error of grad_A (2-norms bounded by Frobenius norms; computed w, V exact for
# M + E with ||E||_F <= eta = d eps (3 ||A||_F ||B||_F + ||M||_F), the model of
# bures._value_and_bound; F exact for A + E_1, ||E_1||_F <= d eps ||A||_F) is at most
# tau (1 + ||grad_A||_F), tau = sqrt(eps):
#   E:        ||F^{-1}||^2 L_k eta                    (L_k >= |k'| on the spectrum),
#   E_1:      ||B||^2 L_g' d eps ||A||_F              (L_g' >= |g''| on the spectrum),
#   solve:    2 d eps ||F||_F ||F^{-1}||^3 k_max      (|dF| <= d eps |F|, backward stable),
#   products: d eps ||F^{-1}||^2 k_max,
# with ||F^{-1}||_F = ||Y||_F and k_max = max |k(w)| + L_k eta. ``bounds(w_lo, *args)``
# returns (L_k, L_g') valid on [w_lo, inf), w_lo = max(w_min - eta, 0) a lower bound of
# the exact spectrum (Weyl); a trace function without it keeps the two-factor rule. Float64
# and d >= 4 only: d <= 3 decomposes on scalars, and in float32 (tau = 3.5e-4) the bound
# certified the benchmark's pairs at d <= 8 but none at d >= 16 (measured, 500 pairs),
# where every batch would pay for both routes; float64 certified them all up to d = 32.
# Under vmap the two-factor rule runs on the uncertified members only (_routes).
# --------------------------------------------------------------------------------------
_ONE_FACTOR_MIN_D = 4


def _one_factor_value_grads(g: Callable, bounds: Callable, A: Matrix, B: Matrix, *args):
    """``(value, grad_A, grad_B, ok)``: the one-factor route and its certificate (above)."""
    d = A.shape[-1]
    eps = jnp.finfo(A.dtype).eps
    A, B = sym(A), sym(B)
    F, delta = chol_factor(A)
    w, V = jnp.linalg.eigh(sym(F.T @ B @ F))
    x = jnp.maximum(w, 0.0)
    gp = _d_dw(g)(x, *args)
    k = x * gp
    FV = F @ V
    Y = jax.scipy.linalg.solve_triangular(F, V, lower=True, trans="T")
    grad_A, grad_B = sym((Y * k) @ Y.T), sym((FV * gp) @ FV.T)
    eta = d * eps * (3.0 * fro(A) * fro(B) + fro(w) / (1.0 - d * eps))
    L_k, L_gp = bounds(jnp.maximum(x[0] - eta, 0.0), *args)
    finv2 = jnp.sum(Y * Y)
    k_max = jnp.max(jnp.abs(k)) + L_k * eta
    err = (
        finv2 * L_k * eta
        + fro(B) ** 2 * L_gp * d * eps * fro(A)
        + 2.0 * d * eps * fro(F) * finv2**1.5 * k_max
        + d * eps * finv2 * k_max
    )
    ok = (delta == 0) & (err <= jnp.sqrt(eps) * (1.0 + fro(grad_A)))  # False for NaN
    return jnp.sum(g(x, *args)), grad_A, grad_B, ok


def _certified_route(g: Callable, bounds: Callable) -> Callable:
    """``(A, B, *args) -> (value, grad_A, grad_B)``, one-factor where certified (above)."""

    def fallback(A, B, *args):
        return _stacked_value_grads(g, "cholesky", A, B, *args)

    @jax.custom_batching.custom_vmap
    def single(A, B, *args):
        *out, ok = _one_factor_value_grads(g, bounds, A, B, *args)
        return jax.lax.cond(ok, lambda: tuple(out), lambda: fallback(A, B, *args))

    @_routes.batch_route
    def batch(A, B, *args):
        *out, ok = jax.vmap(lambda *o: _one_factor_value_grads(g, bounds, *o))(A, B, *args)
        return _routes.patch(ok, tuple(out), jax.vmap(fallback), A, B, *args)

    @single.def_vmap
    def _(axis_size, in_batched, *ops):
        return batch(*_routes.broadcast(axis_size, in_batched, *ops)), (True, True, True)

    return single


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _value_grads(g: Callable, bounds: Callable, A: Matrix, B: Matrix, *args):
    """``(Tr g(AB), grad_A, grad_B)``: the certified route's values, the rule's derivatives.

    Its tangents are those of :func:`_stacked_value_grads` (equal in exact arithmetic), so
    every higher derivative goes through psd_fn's exact rules, never an eigenvector.
    """
    return _certified_route(g, bounds)(A, B, *args)


@_value_grads.defjvp
def _value_grads_jvp(g, bounds, primals, tangents):
    out = _value_grads(g, bounds, *primals)
    _, dout = jax.jvp(lambda *p: _stacked_value_grads(g, "cholesky", *p), primals, tangents)
    return out, dout


@_trace_fn.defjvp
def _trace_fn_jvp(g, method, bounds, primals, tangents):
    A, B, *args = primals
    dA, dB, *dargs = tangents
    one_factor = (
        bounds is not None
        and method == "cholesky"
        and A.shape[-1] >= _ONE_FACTOR_MIN_D
        and jnp.finfo(A.dtype).bits >= 64
    )
    if one_factor:
        value, grad_A, grad_B = _value_grads(g, bounds, A, B, *args)
    else:
        value, grad_A, grad_B = _stacked_value_grads(g, method, A, B, *args)
    dvalue = jnp.sum(grad_A * dA) + jnp.sum(grad_B * dB)
    # In args: Tr of d g / d args, on known inputs only (see _arg_terms), so that an
    # outer derivative still goes through this rule.
    extra = _arg_terms(lambda gm: _trace_fn(gm, method, None, A, B, *args), g, args, dargs)
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


def trace_fn_unchecked(
    g: Callable, A: Matrix, B: Matrix, *args, method: str = "auto", bounds: Callable | None = None
) -> Array:
    """:func:`trace_fn` of one pair of ``(d, d)`` matrices, without validation.

    ``bounds(w_lo, *args) -> (L_k, L_g')``: bounds of ``|d/dw (w g'(w))|`` and ``|g''(w)|``
    on ``[w_lo, inf)``; with them the gradient takes the certified one-factor route.
    """
    resolved = _resolve(method, A.shape[-1], _TRACE_METHODS)
    return _trace_fn(g, "cholesky" if method == "auto" else resolved, bounds, A, B, *args)
