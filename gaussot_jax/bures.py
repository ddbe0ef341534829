r"""Bures–Wasserstein geometry: the unregularised (``eps = 0``) case, docs/bures.md.

W2^2 = ||a - b||^2 + Tr A + Tr B - 2 Tr (A^{1/2} B A^{1/2})^{1/2}
T(x) = b + A^{-1/2} (A^{1/2} B A^{1/2})^{1/2} A^{-1/2} (x - a)

The value is evaluated as a sum of squares (docs/bures.md): with
``X = A^{1/2}``, ``Y = B^{1/2}`` and any orthogonal ``U``,
``||X - Y U||_F^2 = Tr A + Tr B - 2 Tr(X Y U)``, and ``max_U Tr(X Y U)`` is the nuclear
norm of ``X Y``, i.e. the sum of the singular values of ``Y X``, which are the square
roots of the eigenvalues of ``X B X``: ``Tr (A^{1/2} B A^{1/2})^{1/2}``. The maximiser is
the polar factor ``U = P Q^T`` of ``Y X = P diag(s) Q^T`` (orthogonal Procrustes). Hence

    W2^2 - ||a - b||^2 = min_U ||A^{1/2} - B^{1/2} U||_F^2 = ||X - Y P Q^T||_F^2 >= 0,

with no cancellation of ``Tr A + Tr B`` against ``2 Tr(...)^{1/2}``. Round-off: an error
``dX`` in ``X`` moves the value by ``2 <X - Y U, dX> + ||dX||^2`` and an error ``dU`` in
the minimiser only at second order, so ``|dW2| <= ||dX||_F + ||dY||_F``: the error of
``W2`` (not of ``W2^2``) is that of the square roots, ``O(d eps ||A|| / lambda_min(A)^{1/2})``.

For ``d >= 3`` the value is taken from the cheaper eigenvalue-only trace form where an
a-posteriori bound certifies it to relative accuracy ``sqrt(eps)``, and from the sum of
squares elsewhere (``_eigvals_value`` and the comment above it); under differentiation
value and gradient share one Cholesky and one eigendecomposition where a bound certifies
both (``_eigh_value_grads``), else the Procrustes SVD.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.custom_batching
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import _checks
from ._cholesky import chol_factor as _chol_factor
from ._cholesky import fro as _fro
from ._eigh import _lapack_eigvals
from ._routes import batch_route as _batch_route
from ._routes import broadcast as _batch
from ._routes import patch as _patch
from .gaussians import AffineMap, Gaussian
from .linalg import (
    inv_sqrtm_unchecked as inv_sqrtm,
)
from .linalg import (
    sqrtm_unchecked as sqrtm,
)
from .linalg import (
    sym,
)
from .linalg import (
    trace_fn_unchecked as trace_fn,
)

__all__ = ["bures_wasserstein", "bures_wasserstein2", "mccann_interpolation", "monge_map"]


def _sqrt(lam):
    return jnp.sqrt(lam)


def _cov_term_trace(A, B):
    """The trace form ``Tr A + Tr B - 2 Tr (A^{1/2} B A^{1/2})^{1/2}`` (used for tangents).

    Its derivative rules are the exact ones of :func:`gaussot_jax.trace_fn`; its value
    cancels for nearby covariances.
    """
    return jnp.trace(A) + jnp.trace(B) - 2.0 * trace_fn(_sqrt, A, B)


def _procrustes_svd(A, B):
    """``(X, Y, P, s, Q^T)``: ``X = A^{1/2}``, ``Y = B^{1/2}`` and the SVD ``Y X = P diag(s) Q^T``.

    Two square roots ordered by a barrier (one LAPACK stage at a time, see
    _trace._trace_fn_jvp), not one stacked call: under vmap a covariance the batch shares
    (a row of gj.pairwise) stays unbatched and is decomposed once, not once per pair.
    """
    X = sqrtm(sym(A))
    X, B = jax.lax.optimization_barrier((X, B))
    Y = sqrtm(sym(B))
    G = Y @ X
    if G.shape[-1] == 1:  # the SVD of a scalar, without a LAPACK call per pair
        one = jnp.ones_like(G)
        return X, Y, cast(Array, jnp.where(G < 0, -one, one)), jnp.abs(G[..., 0]), one
    P, s, Qt = jnp.linalg.svd(G)
    return X, Y, P, s, Qt


def procrustes_residual(A, B):
    """``(X - Y U, U, X)``: ``X = A^{1/2}``, ``Y = B^{1/2}``, ``U`` the polar factor of ``Y X``.

    ``||X - Y U||_F^2 = min_U ||A^{1/2} - B^{1/2} U||_F^2`` (module docstring); the polar
    factor is one SVD.
    """
    X, Y, P, _, Qt = _procrustes_svd(A, B)
    U = P @ Qt
    return X - Y @ U, U, X


# --------------------------------------------------------------------------------------
# Gradient of the covariance term from the Procrustes SVD.
#
# grad_A = I - T_A, T_A = B^{1/2} (B^{1/2} A B^{1/2})^{-1/2} B^{1/2} (the Monge map from A
# to B), and symmetrically grad_B = I - X (X B X)^{-1/2} X. With Y X = P diag(s) Q^T:
#   Y A Y = (Y X)(Y X)^T = P diag(s^2) P^T,   X B X = (Y X)^T (Y X) = Q diag(s^2) Q^T,
# so  T_A = (Y P) diag(1/s) (Y P)^T  and  T_B = (X Q) diag(1/s) (X Q)^T.
# The trace form's rule (trace_fn of sqrt) takes 1/(2 sqrt lam) of the eigenvalues lam of
# F^T A F, whose condition number is kappa_A kappa_B: in float32 at kappa_A = kappa_B =
# 1e6 the smallest (1e-12 relative) is below round-off, is clipped to 0, and the gradient
# is inf * 0 = NaN. The singular values s = lam^{1/2} of Y X are resolved to eps s_max,
# i.e. relative error eps (kappa_A kappa_B)^{1/2} at the smallest: the square root of the
# trace form's. A singular value below that floor (a pair singular to working precision)
# carries no information; it is raised to eps s_max, the exact value for a pair within
# the SVD's backward error, so the gradient stays finite. Exactly singular pairs
# (s_max = 0: a Dirac) keep the non-finite gradient of a non-differentiable W2^2.
#
# Higher orders: the tangent of (grad_A, grad_B) is that of the trace form's gradient
# (trace_fn's exact rules), as before.
# --------------------------------------------------------------------------------------
def _trace_form_grads(A, B):
    return jax.grad(_cov_term_trace, argnums=(0, 1))(A, B)


@jax.custom_jvp
def _cov_term_grads(A, B):
    X, Y, P, s, Qt = _procrustes_svd(A, B)
    floor = jnp.finfo(s.dtype).eps * s[0]  # s is descending
    r = jax.lax.rsqrt(jnp.maximum(s, floor))
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    ZA, ZB = Y @ P * r, X @ Qt.T * r
    return sym(eye - ZA @ ZA.T), sym(eye - ZB @ ZB.T)


@_cov_term_grads.defjvp
def _cov_term_grads_jvp(primals, tangents):
    # optimization_barrier orders the SVD stage before the trace form's stacked LAPACK
    # calls (see _trace._trace_fn_jvp on concurrent batched LAPACK calls on a small CPU).
    grads = _cov_term_grads(*primals)
    grads, primals = jax.lax.optimization_barrier((grads, primals))
    return grads, jax.jvp(_trace_form_grads, primals, tangents)[1]


def _procrustes_value(A, B):
    """The covariance term as the Procrustes sum of squares ``||X - Y U||_F^2``."""
    R, _, _ = procrustes_residual(A, B)
    return jnp.sum(R * R)


# --------------------------------------------------------------------------------------
# Certified eigenvalue-only value (the primal of _cov_term for d >= _CERTIFIED_MIN_D).
#
# Route: F F^T = A (Cholesky), M = F^T B F, whose eigenvalues are those of
# A^{1/2} B A^{1/2}; the value is Tr A + Tr B - 2 sum_i sqrt(max(w_i, 0)). Eigenvalues
# only: jnp.linalg.eigvalsh computes the eigenvectors too (LAPACK syevd with jobz = 'V'
# on CPU), so on CPU the same LAPACK kernel is called with jobz = 'N' (about half the
# time at d = 2048); elsewhere jnp.linalg.eigvalsh.
#
# Error model: each stage is normwise backward stable in the Frobenius norm with
# constant p(d) = d (LAPACK's error bounds are stated with a "modestly growing" p(d),
# and its users' guide takes p = 1 in its own estimates; d is the conservative choice):
#   Cholesky:  F F^T = A + delta I + E_1,         ||E_1||_F <= d eps ||A||_F,
#   products:  fl(F^T B F) = F^T B F + E_2,       ||E_2||_F <= 2 d eps ||A||_F ||B||_F,
#   syevd:     w exact for fl(F^T B F) + E_3,     ||E_3||_F <= d eps ||M||_F,
# delta the shift of the second Cholesky (0 where the first succeeds; see below).
# F^T B F has the eigenvalues of B^{1/2} F F^T B^{1/2}, so the computed w are the exact
# eigenvalues of B^{1/2} A B^{1/2} + E, E symmetric with
#   ||E||_F <= eta = d eps (3 ||A||_F ||B||_F + ||M||_F) + delta ||B||_F
# (to first order in eps; ||M||_F = ||w||_2 up to ||E_3||_F). With lam_i >= 0 the exact
# eigenvalues and x_i = max(w_i, 0) (both ascending), |lam_i - x_i| <= eta (Weyl) and
# sum_i (lam_i - x_i)^2 <= eta^2 (Hoffman-Wielandt). Per eigenvalue,
#   |sqrt(lam_i) - sqrt(x_i)| <= min(|lam_i - x_i| c_i, sqrt(eta)),
#   c_i = 1 / (sqrt(x_i) + sqrt(max(x_i - eta, 0))),
# so the error of sum_i sqrt(x_i) is at most sqrt(eta) per x_i <= eta plus, by
# Cauchy-Schwarz and Hoffman-Wielandt, eta ||c||_2 over the others. The traces, square
# roots, sum and final difference add at most (d + 2) eps (Tr A + Tr B + 2 sum sqrt x_i).
# (Round-off in evaluating the bound itself is of relative order d eps: negligible.)
#
# The value is accepted where this bound is <= tau * value with tau = sqrt(eps) (1.5e-8
# in float64, 3.5e-4 in float32): far below the digits FID or any W2 comparison reports.
# Where it is not met (nearby pairs, whose value is below the cancellation floor
# ~ d sqrt(eps) (Tr A + Tr B); singular or ill-conditioned pairs, where small
# eigenvalues amplify the round-off of their square roots) the Procrustes sum of
# squares is evaluated instead, at the cost of both routes.
# --------------------------------------------------------------------------------------
# d = 3 takes the certified route too: its square roots are Jacobi sweeps, but the
# Procrustes SVD is one LAPACK call per pair (N = 1000 pairs: 2.2 ms, the certified route
# 0.87 ms); d = 2 is the closed form, d = 1 the Procrustes form on scalars.
_CERTIFIED_MIN_D = 3


def _value_and_bound(A, B, w, delta):
    """``(value, bound, eta)`` from the eigenvalues ``w`` of ``F^T B F`` (error model above)."""
    d = A.shape[-1]
    eps = jnp.finfo(A.dtype).eps
    x = jnp.maximum(w, 0.0)
    r = jnp.sqrt(x)
    cross = jnp.sum(r)
    tr_a, tr_b = jnp.trace(A), jnp.trace(B)
    value = tr_a + tr_b - 2.0 * cross
    nb = _fro(B)
    norm_m = _fro(w) / (1.0 - d * eps)
    eta = d * eps * (3.0 * _fro(A) * nb + norm_m) + delta * nb
    big = x > eta
    c = 1.0 / (r + jnp.sqrt(jnp.maximum(x - eta, 0.0)))
    small_terms = jnp.sum(jnp.where(big, 0.0, jnp.sqrt(eta)))
    big_terms = eta * _fro(jnp.where(big, c, 0.0))
    rounding = (d + 2) * eps * (jnp.abs(tr_a) + jnp.abs(tr_b) + 2.0 * cross)
    return value, 2.0 * (small_terms + big_terms) + rounding, eta


def _eigvals_value(A, B):
    """``(value, bound)``: the eigenvalue-only covariance term and its error bound.

    ``|value - exact| <= bound`` under the error model above (exact: of the stored
    ``A``, ``B``); ``bound`` is NaN or inf where the route failed.
    """
    A, B = sym(A), sym(B)
    F, delta = _chol_factor(A)
    w = _lapack_eigvals(sym(F.T @ B @ F))
    value, bound, _ = _value_and_bound(A, B, w, delta)
    return value, bound


def _certified(value, bound):
    """The eigenvalue-only value is certified to relative accuracy ``tau = sqrt(eps)``."""
    tau = jnp.sqrt(jnp.finfo(value.dtype).eps)
    return bound <= tau * value  # False for NaN or inf (then the Procrustes form)


@jax.custom_batching.custom_vmap
def _certified_cov_term(A, B):
    value, bound = _eigvals_value(A, B)
    return jax.lax.cond(_certified(value, bound), lambda: value, lambda: _procrustes_value(A, B))


@_batch_route
def _cov_term_batch(A, B):
    # A lax.cond under vmap becomes a select of both branches; instead the eigenvalue
    # route runs for every member and the Procrustes form, for the whole batch, only
    # where some member is not certified.
    value, bound = jax.vmap(_eigvals_value)(A, B)
    return _patch(_certified(value, bound), value, jax.vmap(_procrustes_value), A, B)


@_certified_cov_term.def_vmap
def _certified_cov_term_vmap(axis_size, in_batched, A, B):
    return _cov_term_batch(*_batch(axis_size, in_batched, A, B)), True


# --------------------------------------------------------------------------------------
# Certified value and gradient from one Cholesky and one eigh (what _cov_term's
# derivative rule evaluates for d >= _CERTIFIED_MIN_D; the Procrustes SVD is the fallback).
#
# With F F^T = A and M = F^T B F = V diag(w) V^T (w: the eigenvalues of A^{1/2} B A^{1/2};
# F = A^{1/2} O for an orthogonal O, so M^p = O^T (A^{1/2} B A^{1/2})^p O):
#   T_B = A^{1/2} (A^{1/2} B A^{1/2})^{-1/2} A^{1/2} = F M^{-1/2} F^T = Z_B Z_B^T,
#         Z_B = F V diag(w^{-1/4}),
#   T_A = A^{-1/2} (A^{1/2} B A^{1/2})^{1/2} A^{-1/2} = F^{-T} M^{1/2} F^{-1} = Z_A Z_A^T,
#         Z_A = F^{-T} V diag(w^{1/4})  (one triangular solve),
# grad_A = I - T_A, grad_B = I - T_B, and the value is _eigvals_value's trace form (its
# bound holds for syevd's eigenvalues with eigenvectors too). One Cholesky and one eigh
# serve value and gradient, where the Procrustes route needs two eighs and an SVD.
#
# Error, to first order, from the value's model (the computed w, V are exact for M + E,
# ||E|| <= eta; F is exact for A + E_1, ||E_1|| ||B|| <= eta), with w_min = x_1 - eta a
# lower bound of the exact smallest eigenvalue (Weyl) and 2-norms bounded by Frobenius:
#   T_B: E moves M^{-1/2} by <= eta / (2 w_min^{3/2}) (the divided differences of
#        x^{-1/2}), so T_B by ||A|| eta / (2 w_min^{3/2}); E_1 moves
#        T_B = B^{-1/2} (B^{1/2} A B^{1/2})^{1/2} B^{-1/2} by <= ||B^{-1}|| ||B|| ||E_1|| /
#        (2 w_min^{1/2}) <= ||A|| eta / (2 w_min^{3/2}) (||B^{-1}|| = ||F M^{-1} F^T|| <=
#        ||A|| / w_min); the products add d eps ||Z_B||^2.
#   T_A: E moves M^{1/2} by <= eta / (2 w_min^{1/2}), so T_A by ||F^{-1}||^2 eta /
#        (2 w_min^{1/2}); E_1 moves T_A = B^{1/2} (B^{1/2} A B^{1/2})^{-1/2} B^{1/2} by
#        <= ||B||^2 ||E_1|| / (2 w_min^{3/2}) <= ||B|| eta / (2 w_min^{3/2}); the
#        triangular solve (backward stable, |dF| <= d eps |F|) moves Z_A relatively by
#        d eps ||F|| ||F^{-1}||, so T_A by twice that times ||Z_A||^2; the products add
#        d eps ||Z_A||^2. ||F^{-1}|| <= ||Z_A diag(w^{-1/4})||_F (F^{-T} = Z_A w^{-1/4} V^T).
# Value and gradient are accepted together where the value is certified (_certified) and
# each error is at most tau (1 + ||T||_F), tau = sqrt(eps): relative to the terms whose
# difference the gradient I - T is (the Procrustes gradient subtracts the same). Elsewhere
# (near-singular M or A, nearby pairs) both come from the Procrustes SVD as before.
# --------------------------------------------------------------------------------------
def _eigh_value_grads(A, B):
    """``(value, grad_A, grad_B, ok, err_A, err_B)``: ``ok`` where certified.

    ``err_A``, ``err_B`` bound the 2-norm errors of ``grad_A``, ``grad_B`` (model above).
    """
    d = A.shape[-1]
    eps = jnp.finfo(A.dtype).eps
    A, B = sym(A), sym(B)
    F, delta = _chol_factor(A)
    w, V = jnp.linalg.eigh(sym(F.T @ B @ F))
    value, bound, eta = _value_and_bound(A, B, w, delta)
    w_min = jnp.maximum(w[0], 0.0) - eta  # eigh: ascending
    wpos = cast(Array, jnp.where(w_min > 0, w_min, 1.0))
    q = jnp.sqrt(jnp.sqrt(cast(Array, jnp.where(w > 0, w, 1.0))))  # w^{1/4} (w_min > 0)
    ZB = F @ (V / q)
    ZA = jax.scipy.linalg.solve_triangular(F, V * q, lower=True, trans="T")
    TA, TB = ZA @ ZA.T, ZB @ ZB.T
    za2, zb2 = jnp.sum(ZA * ZA), jnp.sum(ZB * ZB)
    f_norm, finv2 = jnp.sqrt(jnp.sum(F * F)), jnp.sum((ZA / q) ** 2)
    slope = eta / (2.0 * wpos**1.5)
    err_b = 2.0 * _fro(A) * slope + d * eps * zb2
    err_a = (
        finv2 * eta / (2.0 * jnp.sqrt(wpos))
        + _fro(B) * slope
        + d * eps * (2.0 * f_norm * jnp.sqrt(finv2) + 1.0) * za2
    )
    tau = jnp.sqrt(eps)
    ok = (
        _certified(value, bound)
        & (w_min > 0)
        & (err_a <= tau * (1.0 + _fro(TA)))
        & (err_b <= tau * (1.0 + _fro(TB)))
    )
    eye = jnp.eye(d, dtype=A.dtype)
    return value, sym(eye - TA), sym(eye - TB), ok, err_a, err_b


def _procrustes_value_grads(A, B):
    """Value and gradient from the Procrustes SVD (one SVD after XLA's CSE)."""
    return (_procrustes_value(A, B), *_cov_term_grads(A, B))


@jax.custom_batching.custom_vmap
def _certified_value_grads(A, B):
    value, gA, gB, ok, *_ = _eigh_value_grads(A, B)
    return jax.lax.cond(ok, lambda: (value, gA, gB), lambda: _procrustes_value_grads(A, B))


@_batch_route
def _value_grads_batch(A, B):
    # As _cov_term_batch: the Procrustes route, for the whole batch, only where some
    # member is not certified.
    value, gA, gB, ok, *_ = jax.vmap(_eigh_value_grads)(A, B)
    return _patch(ok, (value, gA, gB), jax.vmap(_procrustes_value_grads), A, B)


@_certified_value_grads.def_vmap
def _certified_value_grads_vmap(axis_size, in_batched, A, B):
    return _value_grads_batch(*_batch(axis_size, in_batched, A, B)), (True, True, True)


@jax.custom_jvp
def _cov_term_value_grads(A, B):
    """``(value, grad_A, grad_B)`` of the covariance term, with derivatives of every order.

    The Cholesky-eigh route is tried in float64 only: in float32 its bound certifies
    about half of the pairs at condition number 10 (d = 8), and a batch with one
    uncertified member pays for both routes.
    """
    if A.shape[-1] < _CERTIFIED_MIN_D or jnp.finfo(A.dtype).bits < 64:
        return _procrustes_value_grads(A, B)
    return _certified_value_grads(A, B)


@_cov_term_value_grads.defjvp
def _cov_term_value_grads_jvp(primals, tangents):
    # The value's tangent is <grad, tangent>; the gradient's is that of the trace form's
    # gradient (trace_fn's exact rules), which has the same value in exact arithmetic.
    # optimization_barrier orders the value stage before the trace form's stacked LAPACK
    # calls (see _trace._trace_fn_jvp on concurrent batched LAPACK calls on a small CPU).
    out = _cov_term_value_grads(*primals)
    (value, gA, gB), primals = jax.lax.optimization_barrier((out, primals))
    dA, dB = tangents
    dgA, dgB = jax.jvp(_trace_form_grads, primals, tangents)[1]
    return (value, gA, gB), (jnp.sum(gA * dA) + jnp.sum(gB * dB), dgA, dgB)


@jax.custom_jvp
def _cov_term(A, B):
    if A.shape[-1] < _CERTIFIED_MIN_D:
        return _procrustes_value(A, B)
    return _certified_cov_term(A, B)


@_cov_term.defjvp
def _cov_term_jvp(primals, tangents):
    # Under differentiation value and gradient come from one factorisation per pair
    # (_cov_term_value_grads: one Cholesky and one eigh where certified, else the
    # Procrustes SVD), so a value_and_grad costs about one forward plus an eigenvector
    # computation. The gradient is the trace form's,
    # grad_A = I - B^{1/2} (B^{1/2} A B^{1/2})^{-1/2} B^{1/2} and symmetrically for B;
    # its own derivatives are the trace form's at every order.
    (dA, dB) = tangents
    value, gA, gB = _cov_term_value_grads(*primals)
    return value, jnp.sum(gA * dA) + jnp.sum(gB * dB)


def _cov_term_2x2(A, B):
    r"""``W2^2 - ||a - b||^2`` at d = 2 from invariants: no eigensolver, no cancellation.

    For 2 x 2 PSD ``A``, ``B`` with ``g = (det A det B)^{1/2}``, the eigenvalues
    ``m_1, m_2`` of ``A^{1/2} B A^{1/2}`` give ``(m_1^{1/2} + m_2^{1/2})^2 = Tr AB + 2 g =: s``,
    so ``Tr (A^{1/2} B A^{1/2})^{1/2} = s^{1/2}``. The difference
    ``Tr A + Tr B - 2 s^{1/2} = ((Tr A + Tr B)^2 - 4 s) / (Tr A + Tr B + 2 s^{1/2})``, and
    with the 2 x 2 identities ``Tr AB = Tr A Tr B - Tr(adj(A) B)`` and ``det(adj(A) B) = g^2``
    the numerator is

        (Tr A - Tr B)^2 + 4 (t - 2 g) = (Tr A - Tr B)^2 + 4 disc / (t + 2 g),

    ``t = Tr(adj(A) B) >= 0``, ``disc = t^2 - 4 g^2`` the discriminant of ``adj(A) B``,
    evaluated from its entries as ``(p - r)^2 + 4 q s'`` (``adj(A) B = [[p, q], [s', r]]``,
    each entry difference formed directly, e.g. ``p - r = a22 b11 - a11 b22``). Every term
    is a square or a product of entry differences, so nearby ``A``, ``B`` leave no
    cancellation: the value is >= 0 and relatively accurate, as the Procrustes form is.
    Scaled by ``c = Tr A + Tr B`` first (``W2^2`` is 1-homogeneous in ``(A, B)``), so the
    fourth-degree terms never overflow or underflow. Plain ``jnp``: its derivatives of
    every order are autodiff's, exact (``g = (det A)^{1/2} (det B)^{1/2}``, so a singular
    ``A`` leaves ``grad_B`` finite).
    """
    c = jax.lax.stop_gradient(jnp.trace(A) + jnp.trace(B))
    c = jnp.where(c > 0, c, 1.0)
    A, B = A / c, B / c
    a11, a12, a22 = A[0, 0], 0.5 * (A[0, 1] + A[1, 0]), A[1, 1]
    b11, b12, b22 = B[0, 0], 0.5 * (B[0, 1] + B[1, 0]), B[1, 1]
    g = _sqrt_psd(a11 * a22 - a12 * a12) * _sqrt_psd(b11 * b22 - b12 * b12)
    s = a11 * b11 + 2.0 * a12 * b12 + a22 * b22 + 2.0 * g
    t = a22 * b11 - 2.0 * a12 * b12 + a11 * b22
    p_r = a22 * b11 - a11 * b22
    q, s_ = a22 * b12 - a12 * b22, a11 * b12 - a12 * b11
    disc = p_r * p_r + 4.0 * q * s_  # >= 0 exactly (t^2 - 4 g^2); where, not max:
    disc = cast(Array, jnp.where(disc >= 0, disc, 0.0))  # disc = 0 (A = B): all derivatives
    den = t + 2.0 * g
    big = den > 0  # den = 0 only where t = g = 0, and then disc = t^2 - 4 g^2 = 0 too
    ratio = jnp.where(big, disc / cast(Array, jnp.where(big, den, 1.0)), 0.0)
    tr_a, tr_b = a11 + a22, b11 + b22
    num = (tr_a - tr_b) ** 2 + 4.0 * ratio
    tot = tr_a + tr_b + 2.0 * _sqrt_psd(s)
    return cast(Array, c * jnp.where(tot > 0, num / jnp.where(tot > 0, tot, 1.0), 0.0))


def _sqrt_psd(x):
    """``sqrt(max(x, 0))``: a determinant or a trace of PSD matrices, >= 0 up to round-off."""
    return jnp.sqrt(jnp.maximum(x, 0.0))


def bures_wasserstein2(mu: Gaussian, nu: Gaussian) -> Float[Array, ""]:
    r"""Squared 2-Wasserstein distance between Gaussians (docs/bures.md).

    ``W2^2 = ||a - b||^2 + Tr A + Tr B - 2 Tr (A^{1/2} B A^{1/2})^{1/2}``. For ``d >= 3``
    the covariance term is first evaluated from eigenvalues only (Cholesky ``A = F F^T``,
    the eigenvalues of ``F^T B F``: one decomposition, no eigenvectors) together with an
    a-posteriori bound on its error (Weyl and Hoffman–Wielandt from a normwise backward
    error ``d eps`` of each stage); it is returned where that bound is at most
    ``sqrt(eps)`` of it (``1.5e-8`` in float64, ``3.5e-4`` in float32), which holds for
    well-separated, well-conditioned pairs such as FID statistics. Elsewhere (nearby
    pairs, where the trace form cancels; singular or ill-conditioned covariances) the
    sum of squares ``||a - b||^2 + min_U ||A^{1/2} - B^{1/2} U||_F^2`` (orthogonal
    Procrustes, module docstring) is evaluated instead: never negative, and accurate
    relative to ``W2`` for nearby Gaussians (float32 included). The tradeoff: a
    certified value may be up to ``sqrt(eps)`` (relative) less accurate than the sum of
    squares would have been; an uncertified pair costs both routes (about 1.1-1.3x the
    sum of squares alone), and in float32 most pairs above ``d ~ 32`` are uncertified.
    Under ``jax.vmap`` the sum of squares runs, for the whole batch, only if some member
    is uncertified (``jax.custom_batching``). Under differentiation (float64,
    ``d >= 3``) value and gradient come from one Cholesky and one eigendecomposition
    with eigenvectors where a first-order bound certifies the gradient to ``sqrt(eps)``
    of ``1 + ||T||`` (``T`` the Monge map), and from the Procrustes SVD elsewhere.
    The derivative rule is that of the trace form (:func:`gaussot_jax.trace_fn` of ``sqrt``):
    ``grad_A = I - B^{1/2} (B^{1/2} A B^{1/2})^{-1/2} B^{1/2}`` (and symmetrically for B),
    exact at repeated eigenvalues and at every order. At d = 2 the value is a closed form
    in the entries (no eigensolver, no cancellation: docs/bures.md)
    differentiated by autodiff. At singular covariances ``W2^2`` itself is not
    differentiable (d = 1: ``(sqrt a - sqrt b)^2``); use the entropic cost there.

    Args:
        mu: ``N(a, A)``.
        nu: ``N(b, B)``.

    Returns:
        The scalar ``W2^2(mu, nu) >= 0``.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mu = gj.Gaussian(jnp.zeros(2), jnp.eye(2))
        >>> nu = gj.Gaussian(jnp.ones(2), 4 * jnp.eye(2))
        >>> round(float(gj.bures_wasserstein2(mu, nu)), 6)  # 2 + 2 * (2 - 1)^2
        4.0
    """
    from . import lowrank  # lazy: lowrank builds on this module

    if lowrank.involves(mu, nu):
        return lowrank.lowrank_bures_wasserstein2(mu, nu)
    mu, nu = _checks.check_pair(mu, nu)
    return _w2(mu.mean, mu.cov, nu.mean, nu.cov)


@jax.jit  # jit policy (docs/conventions.md#jit): an eager call reuses one executable
def _w2(a, A, b, B):
    cov_term = _cov_term_2x2 if A.shape[-1] == 2 else _cov_term
    return jnp.sum((a - b) ** 2) + cov_term(A, B)


@jax.custom_jvp
def _sqrt0(x, floor):
    return jnp.sqrt(x)


@_sqrt0.defjvp
def _sqrt0_jvp(primals, tangents):
    # d sqrt(x) = dx / (2 sqrt x) for x > floor; at and below the round-off floor of W2^2
    # (mu = nu up to round-off, the minimum of x >= 0) the zero subgradient.
    (x, floor), (dx, _) = primals, tangents
    r = jnp.sqrt(x)
    big = x > floor
    return r, jnp.where(big, dx / (2.0 * jnp.where(big, r, 1.0)), 0.0 * dx)


def bures_wasserstein(mu: Gaussian, nu: Gaussian) -> Float[Array, ""]:
    r"""The 2-Wasserstein distance ``W2(mu, nu)`` between Gaussians (not squared).

    ``sqrt`` of :func:`bures_wasserstein2` (a sum of squares, so never NaN). Gradient
    ``grad W2^2 / (2 W2)``, finite wherever ``mu != nu``; at ``mu = nu``, where ``W2`` is
    not differentiable (it is a norm-like function at its minimum), the zero subgradient
    (also wherever ``W2^2`` is below its round-off floor ``(4 d eps)^2 (Tr A + Tr B +
    |a|^2 + |b|^2)``).

    Args:
        mu: ``N(a, A)``.
        nu: ``N(b, B)``.

    Returns:
        The scalar ``W2(mu, nu) >= 0``.

    Example:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mu = gj.Gaussian(jnp.zeros(2), jnp.eye(2))
        >>> nu = gj.Gaussian(jnp.ones(2), 4 * jnp.eye(2))
        >>> round(float(gj.bures_wasserstein(mu, nu)), 6)  # sqrt(2 + 2 * (2 - 1)^2)
        2.0
    """
    # Round-off floor of the sum of squares: ||dX||_F ~ d eps ||A^{1/2}||, squared.
    info = jnp.finfo(mu.cov.dtype)
    scale = jnp.trace(mu.cov) + jnp.trace(nu.cov) + jnp.sum(mu.mean**2) + jnp.sum(nu.mean**2)
    floor = jax.lax.stop_gradient((4.0 * mu.dim * info.eps) ** 2 * scale)
    return _sqrt0(bures_wasserstein2(mu, nu), floor)


def monge_map(mu: Gaussian, nu: Gaussian) -> AffineMap:
    r"""The optimal (Monge) map from ``mu`` to ``nu`` for the squared distance.

    ``T(x) = b + A^{-1/2} (A^{1/2} B A^{1/2})^{1/2} A^{-1/2} (x - a)`` (docs/bures.md); needs
    ``A`` positive definite. The map takes points of shape ``(..., d)``.

    Args:
        mu: ``N(a, A)``, ``A`` positive definite.
        nu: ``N(b, B)``.

    Returns:
        The :class:`gaussot_jax.AffineMap` ``T``.

    Raises:
        ValueError: not single Gaussians of one dimension; ``A`` not positive definite
            (concrete, or traced inside ``gj.checks()``).

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> T = gj.monge_map(gj.Gaussian(jnp.zeros(2), jnp.eye(2)),
        ...                  gj.Gaussian(jnp.ones(2), 4 * jnp.eye(2)))
        >>> T(jnp.zeros((5, 2))).shape  # x -> 1 + 2 x on a batch of points
        (5, 2)
    """
    mu, nu = _checks.check_pair(mu, nu)
    A = _checks.check_cov("mu.cov", mu.cov, definite=True)
    XA, ZA = sqrtm(A), inv_sqrtm(A)
    T = sym(ZA @ sqrtm(sym(XA @ nu.cov @ XA)) @ ZA)
    return AffineMap(T, nu.mean - T @ mu.mean)


def mccann_interpolation(mu: Gaussian, nu: Gaussian, t) -> Gaussian:
    r"""The Wasserstein geodesic ``((1 - t) Id + t T)_# mu`` at time ``t`` in [0, 1].

    Mean ``(1 - t) a + t b``, covariance ``K A K`` with ``K = (1 - t) I + t T``.

    Args:
        mu: ``N(a, A)``, ``A`` positive definite.
        nu: ``N(b, B)``.
        t: real scalar in ``[0, 1]`` (traced: vmap or differentiate it).

    Returns:
        The Gaussian at time ``t`` on the geodesic.

    Raises:
        ValueError: as :func:`monge_map`; ``t`` not a real scalar in ``[0, 1]`` (NaN
            included; values when concrete, or traced inside ``gj.checks()``).

    Example:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mid = gj.mccann_interpolation(gj.Gaussian(jnp.zeros(2), jnp.eye(2)),
        ...                               gj.Gaussian(jnp.ones(2), 4 * jnp.eye(2)), 0.5)
    """
    t = jnp.asarray(_checks.check_real("t", t), dtype=mu.mean.dtype)
    if t.ndim != 0:
        raise ValueError(f"t must be a scalar (vmap for many), got shape {t.shape}")
    t = _checks.check_interval("t", t, 0.0, 1.0)
    T = monge_map(mu, nu)
    K = (1.0 - t) * jnp.eye(mu.dim, dtype=mu.mean.dtype) + t * T.matrix
    return Gaussian((1.0 - t) * mu.mean + t * nu.mean, sym(K @ mu.cov @ K.T), validate=False)
