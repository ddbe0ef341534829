r"""Balanced entropic OT between Gaussians [JMPC20, Thm 1] (docs/jmpc20.md).

    OT_eps(mu, nu) = min_{pi in Pi(mu, nu)}  E_pi ||x - y||^2 + eps KL(pi || mu ⊗ nu)

is the core problem of docs/core.md with ``W = (2/eps) I``: the plan is
``N((a, b), [[A, C], [C^T, B]])`` with ``C = A W S``, and the value, written as a trace
function of ``AB`` (``lam_i`` its eigenvalues, ``s_i = (1 + 16 lam_i / eps^2)^{1/2}``),

    OT_eps = ||a - b||^2 + Tr A + Tr B + (eps/2) sum_i [log((1 + s_i)/2) - (s_i - 1)]

which equals [JMPC20]'s ``... - Tr D + d sigma^2 (1 - log 2 sigma^2) + sigma^2 logdet(D +
sigma^2 I)`` with ``sigma^2 = eps/2``, and the plug-in value at the optimal plan.

With a full-rank Gaussian reference ``R = N(r, Sigma_R)`` in place of ``mu ⊗ nu``
([REF25], docs/ref25.md) only the weight changes, ``W = (2/eps) I - Lambda12`` with
``Lambda = Sigma_R^{-1}``, and the value is the plug-in value ([REF25, Cor 3.1]).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, cast, overload

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _checks
from ._checks import check_epsilon as _check_epsilon
from ._cholesky import chol_logdet
from ._pretty import Pretty
from .bures import check_pair, procrustes_residual
from .coupling import _balanced_g, solve_coupling
from .gaussians import AffineMap, Gaussian, QuadraticPotential
from .linalg import sqrtm_unchecked as sqrtm
from .linalg import sym
from .linalg import trace_fn_unchecked as trace_fn

if TYPE_CHECKING:  # lowrank imports this module at run time
    from .lowrank import LowRankEntropicOT, LowRankGaussian

__all__ = ["EntropicOT", "correlation_reference", "entropic_ot", "sinkhorn_divergence"]


class EntropicOT(Pretty):
    """Result of :func:`entropic_ot`: value, plan, dual potentials and entropic map.

    Attributes:
        cost: The optimal value ``OT_eps(mu, nu)``.
        cross_cov: ``C = Cov(x, y)`` under the optimal plan.
        plan: The optimal plan, a Gaussian on ``R^{2d}``.
        potentials: ``(f, g)``: ``d plan / dR = exp((f(x) + g(y) - ||x - y||^2) / eps)``, ``R`` the
            reference (``mu ⊗ nu`` by default), and ``E_mu f + E_nu g = cost``.
        transport_map: The map this plan induces, its barycentric projection
            ``x -> E_plan[y | x] = b + S W^T (x - a)`` (also ``entropic_map``).
        epsilon: The regularisation strength.
    """

    cost: Float[Array, ""]
    """The optimal value ``OT_eps(mu, nu)``."""
    cross_cov: Float[Array, "d d"]
    """``C = Cov(x, y)`` under the optimal plan."""
    plan: Gaussian
    """The optimal plan, a Gaussian on ``R^{2d}``."""
    potentials: tuple[QuadraticPotential, QuadraticPotential]
    """``(f, g)``: ``d plan / dR = exp((f(x) + g(y) - ||x - y||^2) / eps)``, ``R`` the
    reference (``mu ⊗ nu`` by default), and ``E_mu f + E_nu g = cost``."""
    transport_map: AffineMap
    """The map this plan induces: ``x -> E_plan[y | x] = b + S W^T (x - a)``."""
    epsilon: Float[Array, ""]
    """The regularisation strength."""

    @property
    def entropic_map(self) -> AffineMap:
        """The same map as :attr:`transport_map` (the name [JMPC20]'s readers know)."""
        return self.transport_map


def _balanced_cost(mu: Gaussian, nu: Gaussian, eps: Array) -> Array:
    A, B = mu.cov, nu.cov
    return (
        jnp.sum((mu.mean - nu.mean) ** 2)
        + jnp.trace(A)
        + jnp.trace(B)
        + trace_fn(_balanced_g, A, B, eps)
    )


def _potentials(
    a: Array,
    b: Array,
    P: Array,
    Q: Array,
    c: Array,
    eps: Array,
    lx: Array | None = None,
    ly: Array | None = None,
) -> tuple[QuadraticPotential, QuadraticPotential]:
    r"""Split ``eps log dpi/dR + ||x - y||^2`` into ``f(x) + g(y)``.

    With ``u = x - a``, ``v = y - b``, the plan's log-density ratio to the reference is

        log dpi/dR = -1/2 u^T P u - 1/2 v^T Q v + (2/eps) u^T v + lx^T u + ly^T v + c.

    The cross coefficient is ``2/eps`` for every reference: the plan's precision has
    off-diagonal block ``-W`` (optimality, docs/core.md) and ``-log R`` contributes
    ``+Lambda12``, so the total is ``W + Lambda12 = (2/eps) I``. Hence
    ``eps (2/eps) u^T v = 2 u^T v`` cancels ``-2 x^T y`` from the cost up to terms linear
    in ``x`` or ``y`` (``2 u^T v - 2 x^T y = -2 x^T b - 2 a^T y + 2 a^T b``), leaving

        f(x) = -eps/2 u^T P u + eps lx^T u + ||x||^2 - 2 x^T b + eps c/2 + a^T b
        g(y) = -eps/2 v^T Q v + eps ly^T v + ||y||^2 - 2 a^T y + eps c/2 + a^T b.

    For ``R = mu ⊗ nu``: ``P = W S W^T``, ``Q = W^T S_x W`` (``S = Cov(y | x)``,
    ``S_x = Cov(x | y)``), ``lx = ly = 0`` and ``c = KL(pi || mu ⊗ nu)``.
    """
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    lx = jnp.zeros_like(a) if lx is None else lx
    ly = jnp.zeros_like(b) if ly is None else ly
    c = 0.5 * (eps * c) + a @ b
    f = QuadraticPotential(
        quad=sym(2.0 * eye - eps * P),
        lin=eps * (P @ a + lx) - 2.0 * b,
        const=c - 0.5 * eps * a @ P @ a - eps * lx @ a,
    )
    g = QuadraticPotential(
        quad=sym(2.0 * eye - eps * Q),
        lin=eps * (Q @ b + ly) - 2.0 * a,
        const=c - 0.5 * eps * b @ Q @ b - eps * ly @ b,
    )
    return f, g


def _check_reference(reference, mu: Gaussian, nu: Gaussian) -> Gaussian:
    """Shape and value checks for a reference coupling on ``R^{2d}``; cast to mu's dtype."""
    if not isinstance(reference, Gaussian):
        raise ValueError(
            f"reference must be a Gaussian on R^(2d) or None, got {type(reference).__name__}"
        )
    d2 = 2 * mu.dim
    if reference.mean.shape != (d2,):
        raise ValueError(
            f"reference.mean must have shape ({d2},) (= 2 * dim of mu), got "
            f"{reference.mean.shape}; use jax.vmap for batches"
        )
    if reference.cov.shape != (d2, d2):
        raise ValueError(
            f"reference.cov must have shape ({d2}, {d2}) (= 2 * dim of mu), got "
            f"{reference.cov.shape}"
        )
    _checks.check_finite("reference.mean", reference.mean)
    _checks.check_cov("reference.cov", reference.cov, definite=True)
    # A full-rank R gives every coupling of degenerate marginals KL = +inf.
    _checks.check_cov("mu.cov (with a full-rank reference)", mu.cov, definite=True)
    _checks.check_cov("nu.cov (with a full-rank reference)", nu.cov, definite=True)
    dtype = mu.mean.dtype
    return Gaussian(reference.mean.astype(dtype), reference.cov.astype(dtype), validate=False)


def _reference_ot(mu: Gaussian, nu: Gaussian, eps: Array, ref: Gaussian) -> EntropicOT:
    """[REF25]: the core problem with ``W = (2/eps) I - Lambda12`` (docs/core.md, docs/ref25.md)."""
    d = mu.dim
    a, b, A, B = mu.mean, nu.mean, mu.cov, nu.cov
    eye = jnp.eye(d, dtype=a.dtype)
    cho = jax.scipy.linalg.cho_solve
    # Lambda = Sigma_R^{-1} from one Cholesky factor (backward stable; no explicit inverse
    # of a block). Lambda12 alone enters the plan.
    L_R = jnp.linalg.cholesky(sym(ref.cov))
    Lam = sym(cho((L_R, True), jnp.eye(2 * d, dtype=a.dtype)))
    Lam11, Lam12, Lam22 = Lam[:d, :d], Lam[:d, d:], Lam[d:, d:]
    W = (2.0 / eps) * eye - Lam12
    fwd = solve_coupling(A, B, W)
    bwd = solve_coupling(B, A, W.T)
    C = fwd.cross_cov
    plan = Gaussian(jnp.concatenate([a, b]), sym(jnp.block([[A, C], [C.T, B]])), validate=False)
    # Plug-in value [REF25, Cor 3.1]: E||x-y||^2 + eps KL(pi || R), with
    #   2 KL(pi || R) = Tr(Lambda Sigma_pi) + delta^T Lambda delta - 2d + logdet Sigma_R
    #                   - logdet Sigma_pi,     delta = (a, b) - r,
    # evaluated without forming Lambda Sigma_pi or Cholesky-factoring the plan (nearly
    # singular as eps -> 0): Sigma_pi = F F^T with F = [[L_A, 0], [S W^T L_A, L_S]]
    # (C^T L_A^{-T} = S W^T L_A since C = A W S, and S W^T A W S + S = B), so
    # Tr(Lambda Sigma_pi) = ||L_R^{-1} F||_F^2, and logdet Sigma_pi = logdet A + logdet B
    # - 2 KL(pi || mu ⊗ nu) with the solver's cancellation-free KL. No large terms cancel
    # when R is nearly degenerate (rho -> 1), unlike splitting off KL(mu ⊗ nu || R).
    solve = jax.scipy.linalg.solve_triangular
    S = fwd.cond_cov
    L_A, L_B, L_S = (jnp.linalg.cholesky(sym(M)) for M in (A, B, S))
    F = jnp.block([[L_A, jnp.zeros_like(A)], [S @ W.T @ L_A, L_S]])
    delta = jnp.concatenate([a, b]) - ref.mean
    z = solve(L_R, delta, lower=True)
    log_ratio = 0.5 * (chol_logdet(L_R) - chol_logdet(L_A) - chol_logdet(L_B) + jnp.sum(z**2))
    kl = 0.5 * (jnp.sum(solve(L_R, F, lower=True) ** 2) - 2 * d) + log_ratio + fwd.kl
    cost = jnp.sum((a - b) ** 2) + jnp.trace(A) + jnp.trace(B) - 2.0 * jnp.trace(C) + eps * kl
    # Potentials: log dpi/dR = log dpi/d(mu ⊗ nu) + log d(mu ⊗ nu)/dR, both quadratic in
    # (u, v) = (x - a, y - b):
    #   u-quadratic  -1/2 u^T (W S W^T + A^{-1} - Lambda11) u
    #   v-quadratic  -1/2 v^T (W^T S_x W + B^{-1} - Lambda22) v
    #   linear       (Lambda delta)^T (u, v)
    #   constant     KL(pi || mu ⊗ nu)
    #                + 1/2 (logdet Sigma_R - logdet A - logdet B + delta^T Lambda delta)
    A_inv = sym(cho((L_A, True), eye))
    B_inv = sym(cho((L_B, True), eye))
    Lam_delta = Lam @ delta
    const = fwd.kl + log_ratio
    P = sym(W @ fwd.cond_cov @ W.T + A_inv - Lam11)
    Q = sym(W.T @ bwd.cond_cov @ W + B_inv - Lam22)
    T = fwd.cond_cov @ W.T
    return EntropicOT(
        cost=cost,
        cross_cov=C,
        plan=plan,
        potentials=_potentials(a, b, P, Q, const, eps, Lam_delta[:d], Lam_delta[d:]),
        transport_map=AffineMap(T, b - T @ a),
        epsilon=eps,
    )


@overload
def entropic_ot(
    mu: Gaussian, nu: Gaussian, epsilon, reference: Gaussian | None = None
) -> EntropicOT: ...
@overload
def entropic_ot(
    mu: LowRankGaussian, nu: LowRankGaussian, epsilon, reference: None = None
) -> LowRankEntropicOT: ...
@overload
def entropic_ot(
    mu: Gaussian | LowRankGaussian,
    nu: Gaussian | LowRankGaussian,
    epsilon,
    reference: None = None,
) -> EntropicOT | LowRankEntropicOT: ...
def entropic_ot(
    mu: Gaussian | LowRankGaussian,
    nu: Gaussian | LowRankGaussian,
    epsilon,
    reference: Gaussian | None = None,
) -> EntropicOT | LowRankEntropicOT:
    r"""Entropic OT between Gaussians in closed form [JMPC20, Thm 1], [REF25].

    Solves ``min_{pi in Pi(mu, nu)} E_pi ||x - y||^2 + epsilon KL(pi || R)`` with
    ``R = mu ⊗ nu`` (default, docs/jmpc20.md; [JMPC20]'s ``sigma^2 = epsilon / 2``) or a
    full-rank Gaussian reference ``R = N(r, Sigma_R)`` on ``R^{2d}`` ([REF25], docs/ref25.md).

    The plan comes from the core solver (docs/core.md) with

        W = (2/eps) I                      (R = mu ⊗ nu)
        W = (2/eps) I - Lambda12,          Lambda = Sigma_R^{-1}   (general R)

    and needs no inverse of ``W`` ([REF25]'s Assumption 3.1, ``W`` invertible, is not
    needed: a singular ``W`` is fine, ``W = 0`` gives independence). The cost for
    ``R = mu ⊗ nu`` is the spectral form

        OT_eps = ||a-b||^2 + Tr A + Tr B + (eps/2) sum_i [log((1+s_i)/2) - (s_i - 1)],
        s_i = (1 + 16 lam_i / eps^2)^{1/2},  lam_i eigenvalues of AB,

    whose gradient in ``A, B`` (docs/core.md) and ``epsilon`` is finite also for
    rank-deficient covariances. For a general reference it is the plug-in value at the
    optimal plan ([REF25, Cor 3.1])

        OT_eps = ||a-b||^2 + Tr A + Tr B - 2 Tr C + eps KL(pi || R),

    with the KL evaluated from Cholesky factors of ``Sigma_R``, ``A``, ``B`` and
    ``S = Cov(y | x)`` (accurate also for nearly degenerate references and small eps);
    this needs ``A, B`` positive definite (against a full-rank ``R`` a degenerate marginal
    has infinite cost).
    ``OT_eps -> W2^2`` as ``epsilon -> 0`` for every reference.

    Args:
        mu: ``N(a, A)`` on ``R^d``.
        nu: ``N(b, B)`` on ``R^d``.
        epsilon: regularisation ``> 0`` (a traced scalar: vmap or differentiate it).
        reference: ``None`` for ``mu ⊗ nu``, or a :class:`Gaussian` on ``R^{2d}`` (mean
            ``(2d,)``, covariance ``(2d, 2d)`` symmetric positive definite), e.g. from
            :func:`correlation_reference`. Differentiable in its mean and covariance.

    Returns:
        :class:`EntropicOT` with ``cost``, ``cross_cov``, ``plan``, ``potentials``
        ``(f, g)`` (``d plan/dR = exp((f(x) + g(y) - ||x-y||^2)/eps)``,
        ``E_mu f + E_nu g = cost``) and ``transport_map``. Fields you do not use cost
        nothing under ``jit``.

    Raises:
        ValueError: bad shapes, ``epsilon <= 0``; with a reference: its mean not ``(2d,)``,
            its covariance not ``(2d, 2d)`` or not symmetric positive definite, or
            ``mu.cov`` / ``nu.cov`` singular (value checks on concrete inputs; under
            ``jit`` use ``reference.checked(definite=True)``).

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mu = gj.Gaussian(jnp.zeros(2), jnp.eye(2))
        >>> nu = gj.Gaussian(jnp.ones(2), jnp.diag(jnp.array([2.0, 0.5])))
        >>> out = gj.entropic_ot(mu, nu, 0.1)
        >>> f, g = out.potentials
        >>> ref = gj.correlation_reference(mu, nu, 0.9 * jnp.eye(2))
        >>> biased_less = gj.entropic_ot(mu, nu, 0.1, reference=ref).cost
        >>> round(float(gj.bures_wasserstein2(mu, nu)), 3), round(float(out.cost), 3)
        (2.257, 2.658)
        >>> round(float(biased_less), 3)  # closer to W2^2 than the product reference's
        2.419
    """
    from . import lowrank  # lazy: lowrank builds on this module

    if lowrank.involves(mu, nu):
        return lowrank.lowrank_entropic_ot(mu, nu, epsilon, reference)
    # Neither is low-rank (dispatched above); check_pair validates them as Gaussians.
    mu, nu = check_pair(cast(Gaussian, mu), cast(Gaussian, nu))
    eps = _check_epsilon(epsilon, mu.mean.dtype)
    if reference is not None:
        return _reference_ot(mu, nu, eps, _check_reference(reference, mu, nu))
    a, b, A, B = mu.mean, nu.mean, mu.cov, nu.cov
    W = (2.0 / eps) * jnp.eye(mu.dim, dtype=a.dtype)
    fwd = solve_coupling(A, B, W)
    bwd = solve_coupling(B, A, W.T)
    C = fwd.cross_cov
    plan = Gaussian(jnp.concatenate([a, b]), sym(jnp.block([[A, C], [C.T, B]])), validate=False)
    P = sym(W @ fwd.cond_cov @ W.T)
    Q = sym(W.T @ bwd.cond_cov @ W)
    T = fwd.cond_cov @ W.T
    return EntropicOT(
        cost=_balanced_cost(mu, nu, eps),
        cross_cov=C,
        plan=plan,
        potentials=_potentials(a, b, P, Q, fwd.kl, eps),
        transport_map=AffineMap(T, b - T @ a),
        epsilon=eps,
    )


def correlation_reference(mu: Gaussian, nu: Gaussian, corr: Float[Array, "d d"]) -> Gaussian:
    r"""The correlation-parametrised reference coupling of [REF25, §4.1] (docs/ref25.md).

        R = N((a, b), [[A, A^{1/2} P B^{1/2}], [B^{1/2} P^T A^{1/2}, B]]),   P = corr,

    the Gaussian coupling of ``mu`` and ``nu`` whose whitened cross-covariance is ``P``;
    it is full rank iff ``||P||_op < 1`` (and ``A, B`` are). ``P = 0`` gives ``mu ⊗ nu``;
    ``P`` close to the OT plan's ``A^{1/2} T B^{-1/2}`` (``T`` the Monge map, an
    orthogonal matrix) shrinks the entropic bias ``OT_eps - W2^2``. Its precision's
    off-diagonal block, the only part the plan depends on, is
    ``Lambda12 = -A^{-1/2} P (I - P^T P)^{-1} B^{-1/2}``.

    Args:
        mu: ``N(a, A)`` on ``R^d``.
        nu: ``N(b, B)`` on ``R^d``.
        corr: ``(d, d)`` matrix ``P`` with operator norm ``< 1`` (differentiable; a
            traced ``corr`` is checked at run time with ``eqx.error_if``).

    Returns:
        The :class:`Gaussian` ``R`` on ``R^{2d}``.

    Raises:
        ValueError: ``corr`` not ``(d, d)``, not finite, or ``||corr||_op >= 1``.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mu = nu = gj.Gaussian(jnp.zeros(1), jnp.eye(1))
        >>> R = gj.correlation_reference(mu, nu, jnp.array([[0.5]]))
        >>> round(float(gj.entropic_ot(mu, nu, 0.8, reference=R).cost), 6)  # docs/ref25.md
        0.510846
    """
    mu, nu = check_pair(mu, nu)
    d = mu.dim
    dtype = mu.mean.dtype
    corr = _checks.as_float(corr, dtype)
    if corr.shape != (d, d):
        raise ValueError(f"corr must have shape ({d}, {d}), got {corr.shape}")
    _checks.check_finite("corr", corr)
    if _checks.is_concrete(corr):
        norm = float(jnp.linalg.norm(corr, ord=2))
        if not norm < 1.0:
            raise ValueError(f"corr must have operator norm < 1, got {norm:.6g}")
    else:
        corr = eqx.error_if(
            corr, jnp.linalg.norm(corr, ord=2) >= 1.0, "corr must have operator norm < 1"
        )
    A, B = mu.cov, nu.cov.astype(dtype)
    C = sqrtm(A) @ corr @ sqrtm(B)
    cov = sym(jnp.block([[A, C], [C.T, B]]))
    return Gaussian(jnp.concatenate([mu.mean, nu.mean.astype(dtype)]), cov, validate=False)


# --------------------------------------------------------------------------------------
# Sinkhorn divergence without cancellation.
#
# With X = A^{1/2}, Y = B^{1/2}, every term of the covariance part is F(M) = sum_i gam(x_i)
# over the eigenvalues x_i of a symmetric PSD M, gam(x) = g(x^2), g = _balanced_g: for
# OT_eps(A, B) M has the eigenvalues of (X B X)^{1/2}, the singular values of Y X. Take the
# Procrustes factor U of bures.procrustes_residual (polar factor of Y X) and Y' = Y U:
#   P = X^T Y' = Q diag(s) Q^T  (symmetric PSD, the singular values s of Y X),
#   X^T X = M0 = A,   Y'^T Y' = U^T B U = M0 + 2E + D^T D,   E = P - M0,  D = Y' - X,
# since Y'^T Y' = (X + D)^T (X + D) and X^T D = P - M0 is symmetric. So, with N = M0 + 2E,
#   S_cov = F(M0 + E) - F(M0)/2 - F(N + D^T D)/2 = T1 + T2,
#   T1 = -(F(M0) - 2 F(M0 + E) + F(M0 + 2E)) / 2 = (1/2) int_{-1}^{1} (1-|t|) (-F'')(t) dt,
#   T2 = (F(N) - F(N + G)) / 2 = (1/2) int_0^1 <-gam'(N + t G), G> dt,       G = D^T D,
# where F''(t) = D^2 F(M0 + (1+t) E)[E, E] = sum_ij gam'[x_i, x_j] (V^T E V)_ij^2 (the
# Daleckii-Krein rule, V, x the eigenpairs of M0 + (1+t)E). gam is concave and decreasing
# (-gam'(x) = (8/eps) phi(x), phi(x) = x / (1 + s(x)), s(x) = (1 + 16 x^2/eps^2)^{1/2}, phi
# increasing, phi' = (1 + 1/s)/(1 + s)^2 > 0), so both integrands are >= 0 pointwise and
# carry relative accuracy: they are products of small quantities (E, D are O(|B - A|)),
# not differences of O(1) ones. The divided difference without cancellation:
#   phi[a, b] = (1 + (a + b) / (a s_b + b s_a)) / ((1 + s_a)(1 + s_b))   (a, b >= 0),
# from a s_b - b s_a = (a^2 - b^2) / (a s_b + b s_a). At eps -> 0 (gam = -2x) T1 = 0 and
# T2 = ||D||_F^2 = W2^2: the Procrustes form of bures_wasserstein2.
# Gauss-Legendre with _SD_NODES nodes integrates these smooth integrands; its error falls
# like h^(2 n) with h the relative variation of M along the path, which is small exactly
# where this form is used: when the three-trace form has lost more than a quarter of its
# digits (S_cov < eps^{1/4} * scale, so h <~ eps^{1/8}), otherwise that form is kept
# (its error is then <= d eps^{3/4} relative). Either way the derivative rule is the
# three-trace form's (exact at repeated eigenvalues and at every order, docs/core.md).
# --------------------------------------------------------------------------------------
_SD_NODES = 5


def _phi(x, eps):
    # x / (1 + s), s = (1 + 16 x^2 / eps^2)^{1/2}; -gam'(x) = (8 / eps) phi(x).
    s = jnp.hypot(1.0, 4.0 * x / eps)
    return x / (1.0 + s), s


def _phi_dd(a, b, eps):
    """Divided differences ``phi[a, b] >= 0`` of the odd, increasing ``phi``."""
    pa, sa = _phi(a, eps)
    pb, sb = _phi(b, eps)
    # Same sign: phi[a, b] = phi[|a|, |b|] by the formula (no cancellation). Opposite
    # signs: phi(a) - phi(b) and a - b add magnitudes, the plain quotient is accurate.
    same = a * b >= 0
    ab, bb = jnp.abs(a), jnp.abs(b)
    num, den = ab + bb, ab * sb + bb * sa
    ratio = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 1.0)
    formula = (1.0 + ratio) / ((1.0 + sa) * (1.0 + sb))
    gap = jnp.where(same, 1.0, a - b)
    return cast(Array, jnp.where(same, formula, (pa - pb) / gap))


def _sd_cov_naive(A, B, eps):
    """``(OT(A,B) - OT(A,A)/2 - OT(B,B)/2`` covariance part, scale)`` by three traces."""
    # The traces cancel exactly, leaving the three trace functions, evaluated as one
    # stacked batch (one LAPACK call at a time; see linalg._trace_fn_jvp on concurrent
    # batched LAPACK calls on a small CPU).
    A, B = A + 0.0 * B, B + 0.0 * A  # one sharding, so they stack
    t = jax.vmap(lambda X, Y: trace_fn(_balanced_g, X, Y, eps))(
        jnp.stack([A, A, B]), jnp.stack([B, A, B])
    )
    return t[0] - 0.5 * (t[1] + t[2]), jnp.abs(t[0]) + 0.5 * (jnp.abs(t[1]) + jnp.abs(t[2]))


def _gauss_rules(n: int):
    """Nodes on [0, 1] of two rules: n-point Gauss-Legendre, and the same on each half."""
    x, w = np.polynomial.legendre.leggauss(n)
    u1, w1 = 0.5 * (x + 1.0), 0.5 * w
    u2 = np.concatenate([0.5 * u1, 0.5 + 0.5 * u1])
    w2 = np.concatenate([0.5 * w1, 0.5 * w1])
    return np.concatenate([u1, u2]), w1, w2


def _sd_cov_stable(A, B, eps):
    """The covariance part as ``T1 + T2`` (integrals of nonnegative integrands).

    Returns ``(value, quadrature error estimate)``: the composite rule and its distance
    to the single rule.
    """
    R, _, X = procrustes_residual(A, B)
    Yp = X - R  # Y U
    P = sym(X @ Yp)
    M0 = sym(X @ X)
    E = P - M0
    G = sym(R.T @ R)  # D = Y U - X = -R
    N = M0 + 2.0 * E
    u_np, w1, w2 = _gauss_rules(_SD_NODES)
    u = jnp.asarray(u_np, dtype=A.dtype)
    m = u.shape[0]
    # One stacked eigendecomposition for all path points (one LAPACK call).
    path = jnp.concatenate(
        [
            M0 + (1.0 + u)[:, None, None] * E,
            M0 + (1.0 - u)[:, None, None] * E,
            N + u[:, None, None] * G,
        ]
    )
    w, V = jnp.linalg.eigh(sym(path))
    Et = jnp.einsum("kji,jl,klm->kim", V[: 2 * m], E, V[: 2 * m])
    F2 = jnp.sum(
        jax.vmap(lambda wk: _phi_dd(wk[:, None], wk[None, :], eps))(w[: 2 * m]) * Et**2,
        axis=(-1, -2),
    )
    Gt = jnp.einsum("kji,jl,kli->ki", V[2 * m :], G, V[2 * m :])
    # Integrands on [0, 1]: T1's (1 - u)(h(u) + h(-u)) and T2's <-gam'(N + u G), G>.
    f = (0.5 * 8.0 / eps) * (
        (1.0 - u) * (F2[:m] + F2[m:]) + jnp.sum(_phi(w[2 * m :], eps)[0] * Gt, axis=-1)
    )
    n = _SD_NODES
    q1 = jnp.sum(jnp.asarray(w1, A.dtype) * f[:n])
    q2 = jnp.sum(jnp.asarray(w2, A.dtype) * f[n:])
    return q2, jnp.abs(q2 - q1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _sd_cov(A, B, eps, accurate: bool):
    naive, scale = _sd_cov_naive(A, B, eps)
    if not accurate:
        # The exact value is >= 0, so clamping at 0 only moves it towards the truth.
        return jnp.maximum(naive, 0.0)
    # Ordered after the three-trace stage (one LAPACK stage at a time).
    naive, scale, A, B = jax.lax.optimization_barrier((naive, scale, A, B))
    stable, quad_err = _sd_cov_stable(A, B, eps)
    # Round-off bound of the three-trace form: each trace is a sum of d terms evaluated
    # from eigenvalues with backward error ~ d eps; 4 d eps * scale bounds the result.
    naive_err = 4.0 * A.shape[-1] * float(np.finfo(A.dtype).eps) * scale
    # Keep whichever is more accurate. The exact value is >= 0, so clamping the
    # three-trace form at 0 only moves it towards the truth (|naive - S| <= naive_err).
    return jnp.where(quad_err < naive_err, stable, jnp.maximum(naive, 0.0))


@_sd_cov.defjvp
def _sd_cov_jvp(accurate, primals, tangents):
    value = _sd_cov(*primals, accurate)
    value, primals = jax.lax.optimization_barrier((value, primals))
    _, dvalue = jax.jvp(lambda *p: _sd_cov_naive(*p)[0], primals, tangents)
    return value, dvalue


def sinkhorn_divergence(
    mu: Gaussian, nu: Gaussian, epsilon, *, accurate: bool = False
) -> Float[Array, ""]:
    r"""Debiased entropic cost ``OT_eps(mu, nu) - OT_eps(mu, mu)/2 - OT_eps(nu, nu)/2``.

    Non-negative, zero iff ``mu = nu`` (docs/jmpc20.md), differentiable everywhere including
    singular covariances. No plan is formed. The traces cancel, leaving
    ``||a - b||^2 + Tr g(AB) - Tr g(AA)/2 - Tr g(BB)/2`` (``g`` the per-eigenvalue value
    of :func:`entropic_ot`): three trace functions, whose sum is clamped at 0 (the exact
    value is ``>= 0``, so the clamp only moves it towards the truth). For nearby
    Gaussians that sum cancels: its absolute error is about ``4 d eps (|OT(mu, nu)| +
    ...)``, so the value near 0 has few correct digits. ``accurate=True`` then evaluates
    it from the orthogonal-Procrustes alignment of ``A^{1/2}`` and ``B^{1/2}`` as two
    integrals of nonnegative integrands (derivation in the source, above ``_SD_NODES``),
    accurate relative to the divergence also in float32, at about 15 times the cost
    (45 stacked eigendecompositions per pair). The derivative rule is that of the
    three-trace form either way (exact at repeated eigenvalues, finite at singular
    covariances), so gradients are the same.

    Args:
        mu: ``N(a, A)``.
        nu: ``N(b, B)``.
        epsilon: regularisation ``> 0`` (traced scalar).
        accurate: evaluate the value without cancellation where the three-trace form
            has lost digits (static Python bool).

    Returns:
        The scalar ``S_eps(mu, nu) >= 0``.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mu = gj.Gaussian(jnp.zeros(2), jnp.eye(2))
        >>> nu = gj.Gaussian(jnp.ones(2), 2.0 * jnp.eye(2))
        >>> s = gj.sinkhorn_divergence(mu, nu, 0.5)
        >>> bool(s > 0), bool(abs(gj.sinkhorn_divergence(mu, nu, 0.5, accurate=True) - s) < 1e-5)
        (True, True)
    """
    from . import lowrank  # lazy: lowrank builds on this module

    if lowrank.involves(mu, nu):
        return lowrank.lowrank_sinkhorn_divergence(mu, nu, epsilon)
    mu, nu = check_pair(mu, nu)
    eps = _check_epsilon(epsilon, mu.mean.dtype)
    return jnp.sum((mu.mean - nu.mean) ** 2) + _sd_cov(mu.cov, nu.cov, eps, bool(accurate))
