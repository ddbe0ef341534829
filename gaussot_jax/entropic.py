r"""Balanced entropic OT between Gaussians [JMPC20, Thm 1] (MATH.md §3).

    OT_eps(mu, nu) = min_{pi in Pi(mu, nu)}  E_pi ||x - y||^2 + eps KL(pi || mu ⊗ nu)

is the core problem of MATH.md §2 with ``W = (2/eps) I``: the plan is
``N((a, b), [[A, C], [C^T, B]])`` with ``C = A W S``, and the value, written as a trace
function of ``AB`` (``lam_i`` its eigenvalues, ``s_i = (1 + 16 lam_i / eps^2)^{1/2}``),

    OT_eps = ||a - b||^2 + Tr A + Tr B + (eps/2) sum_i [log((1 + s_i)/2) - (s_i - 1)]

which equals [JMPC20]'s ``... - Tr D + d sigma^2 (1 - log 2 sigma^2) + sigma^2 logdet(D +
sigma^2 I)`` with ``sigma^2 = eps/2``, and the plug-in value at the optimal plan.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import _checks
from .bures import check_pair
from .coupling import isotropic_terms, solve_coupling
from .gaussians import AffineMap, Gaussian, QuadraticPotential
from .linalg import sym, trace_fn

__all__ = ["EntropicOT", "entropic_ot", "sinkhorn_divergence"]


class EntropicOT(eqx.Module):
    """Result of :func:`entropic_ot`: value, plan, dual potentials and entropic map."""

    cost: Float[Array, ""]
    """The optimal value ``OT_eps(mu, nu)``."""
    cross_cov: Float[Array, "d d"]
    """``C = Cov(x, y)`` under the optimal plan."""
    plan: Gaussian
    """The optimal plan, a Gaussian on ``R^{2d}``."""
    potentials: tuple[QuadraticPotential, QuadraticPotential]
    """``(f, g)``: ``d plan / d(mu ⊗ nu) = exp((f(x) + g(y) - ||x - y||^2) / eps)``."""
    entropic_map: AffineMap
    """The barycentric projection ``x -> E_plan[y | x] = b + S W^T (x - a)``."""
    epsilon: Float[Array, ""]
    """The regularisation strength."""


def _balanced_g(lam, eps):
    # Per-eigenvalue value of E||x-y||^2 - (Tr A + Tr B) + eps KL at W = (2/eps) I.
    tr_c, kl = isotropic_terms(lam, 2.0 / eps)
    return -2.0 * tr_c + eps * kl


def _balanced_cost(mu: Gaussian, nu: Gaussian, eps: Array) -> Array:
    A, B = mu.cov, nu.cov
    return (
        jnp.sum((mu.mean - nu.mean) ** 2)
        + jnp.trace(A)
        + jnp.trace(B)
        + trace_fn(_balanced_g, A, B, eps)
    )


def _check_epsilon(epsilon, dtype) -> Array:
    eps = jnp.asarray(epsilon, dtype=dtype)
    if eps.ndim != 0:
        raise ValueError(f"epsilon must be a scalar (vmap for many), got shape {eps.shape}")
    _checks.check_positive("epsilon", eps)
    return eps


def _potentials(
    a: Array, b: Array, P: Array, Q: Array, kl: Array, eps: Array
) -> tuple[QuadraticPotential, QuadraticPotential]:
    r"""Split ``eps log dpi/d(mu ⊗ nu) + ||x - y||^2`` into ``f(x) + g(y)``.

    With ``u = x - a``, ``v = y - b``, the plan's log-density ratio to ``mu ⊗ nu`` is
    ``-1/2 u^T P u - 1/2 v^T Q v + u^T W v + kl`` (``W = (2/eps) I``; ``P = W S W^T``,
    ``Q = W^T S_x W`` with ``S = Cov(y | x)``, ``S_x = Cov(x | y)``; ``kl`` its value at
    the means). The cross term ``eps u^T W v = 2 u^T v`` cancels ``-2 x^T y`` from the
    cost, leaving ``f(x) = -eps/2 u^T P u + ||x||^2 - 2 x^T b + c`` and
    ``g(y) = -eps/2 v^T Q v + ||y||^2 - 2 a^T y + c``, ``2c = eps kl + 2 a^T b``.
    """
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    c = 0.5 * (eps * kl) + a @ b
    f = QuadraticPotential(
        quad=sym(2.0 * eye - eps * P),
        lin=eps * P @ a - 2.0 * b,
        const=c - 0.5 * eps * a @ P @ a,
    )
    g = QuadraticPotential(
        quad=sym(2.0 * eye - eps * Q),
        lin=eps * Q @ b - 2.0 * a,
        const=c - 0.5 * eps * b @ Q @ b,
    )
    return f, g


def entropic_ot(mu: Gaussian, nu: Gaussian, epsilon) -> EntropicOT:
    r"""Entropic OT between Gaussians in closed form [JMPC20, Thm 1].

    Solves ``min_{pi in Pi(mu, nu)} E_pi ||x - y||^2 + epsilon KL(pi || mu ⊗ nu)``
    (MATH.md §0: [JMPC20]'s ``sigma^2 = epsilon / 2``). The plan comes from the core
    solver (MATH.md §2, ``W = (2/eps) I``); the cost from its spectral form

        OT_eps = ||a-b||^2 + Tr A + Tr B + (eps/2) sum_i [log((1+s_i)/2) - (s_i - 1)],
        s_i = (1 + 16 lam_i / eps^2)^{1/2},  lam_i eigenvalues of AB,

    whose gradient in ``A, B`` (MATH.md §7) and ``epsilon`` is finite also for
    rank-deficient covariances. ``OT_eps -> W2^2`` as ``epsilon -> 0``.

    Args:
        mu: ``N(a, A)`` on ``R^d``.
        nu: ``N(b, B)`` on ``R^d``.
        epsilon: regularisation ``> 0`` (a traced scalar: vmap or differentiate it).

    Returns:
        :class:`EntropicOT` with ``cost``, ``cross_cov``, ``plan``, ``potentials``
        ``(f, g)`` and ``entropic_map``. Fields you do not use cost nothing under ``jit``.

    Example:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mu = gj.Gaussian(jnp.zeros(2), jnp.eye(2))
        >>> nu = gj.Gaussian(jnp.ones(2), jnp.diag(jnp.array([2.0, 0.5])))
        >>> out = gj.entropic_ot(mu, nu, 0.1)
        >>> f, g = out.potentials
    """
    check_pair(mu, nu)
    eps = _check_epsilon(epsilon, mu.mean.dtype)
    a, b, A, B = mu.mean, nu.mean, mu.cov, nu.cov
    W = (2.0 / eps) * jnp.eye(mu.dim, dtype=a.dtype)
    fwd = solve_coupling(A, B, W)
    bwd = solve_coupling(B, A, W.T)
    C = fwd.cross_cov
    plan = Gaussian(
        jnp.concatenate([a, b]), sym(jnp.block([[A, C], [C.T, B]])), validate=False
    )
    P = sym(W @ fwd.cond_cov @ W.T)
    Q = sym(W.T @ bwd.cond_cov @ W)
    T = fwd.cond_cov @ W.T
    return EntropicOT(
        cost=_balanced_cost(mu, nu, eps),
        cross_cov=C,
        plan=plan,
        potentials=_potentials(a, b, P, Q, fwd.kl, eps),
        entropic_map=AffineMap(T, b - T @ a),
        epsilon=eps,
    )


def sinkhorn_divergence(mu: Gaussian, nu: Gaussian, epsilon) -> Float[Array, ""]:
    r"""Debiased entropic cost ``OT_eps(mu, nu) - OT_eps(mu, mu)/2 - OT_eps(nu, nu)/2``.

    Non-negative, zero iff ``mu = nu`` (MATH.md §3), differentiable everywhere including
    singular covariances. Three trace functions; no plan is formed.
    """
    check_pair(mu, nu)
    eps = _check_epsilon(epsilon, mu.mean.dtype)
    # OT(mu,nu) - OT(mu,mu)/2 - OT(nu,nu)/2: the traces cancel exactly, leaving the three
    # trace functions, evaluated as one stacked batch (one LAPACK call at a time; see
    # linalg._trace_fn_jvp on concurrent batched LAPACK calls on a small CPU).
    A, B = mu.cov, nu.cov
    t = jax.vmap(lambda X, Y: trace_fn(_balanced_g, X, Y, eps))(
        jnp.stack([A, A, B]), jnp.stack([B, A, B])
    )
    return jnp.sum((mu.mean - nu.mean) ** 2) + t[0] - 0.5 * (t[1] + t[2])
