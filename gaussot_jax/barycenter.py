r"""Barycenters of Gaussians: Bures–Wasserstein and entropic, by one fixed point.

For Gaussians ``mu_i = N(m_i, A_i)`` and weights ``w_i >= 0`` (normalised to sum 1)
the barycenter minimises ``sum_i w_i OT(b, mu_i)`` over Gaussians ``b = N(m, S)``.
Every cost here separates as ``||m - m_i||^2`` plus a covariance term, so
``m = sum_i w_i m_i`` and only ``S`` is sought:

* ``OT = W2^2``: ``S`` is the unique positive-definite solution of
  ``S = sum_i w_i (S^{1/2} A_i S^{1/2})^{1/2}`` (Agueh & Carlier 2011), found by the
  fixed-point iteration of Álvarez-Esteban, del Barrio, Cuesta-Albertos & Matrán (2016)
  ``S <- S^{-1/2} (sum_i w_i (S^{1/2} A_i S^{1/2})^{1/2})^2 S^{-1/2}``.
* ``OT = OT_eps`` ([JMPC20], docs/jmpc20.md) or the Sinkhorn divergence ``S_eps`` (the
  debiased barycenter): the first-order condition has the same shape with
  ``sqrt`` replaced by the per-eigenvalue ``Tr C`` of the entropic plan (derivation
  above :func:`_k`), and the same iteration solves it.

The solutions are differentiated implicitly: the first-order condition
``grad_S J(S) = 0`` has the Hessian of ``J`` as Jacobian, a symmetric operator, so the
tangent solve is conjugate gradients on ``d x d`` matrices. No iteration is unrolled.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Float

from . import _checks
from ._eigh import _eigh_psd, _rebuild
from .gaussians import Gaussian
from .linalg import inv_sqrtm_unchecked as inv_sqrtm
from .linalg import psd_fn_unchecked as psd_fn
from .linalg import sqrtm_unchecked as sqrtm
from .linalg import sym

__all__ = [
    "bures_barycenter",
    "bures_barycenter_residual",
    "entropic_barycenter",
    "entropic_barycenter_residual",
]

Matrix = Float[Array, "d d"]


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------
def _check_inputs(gaussians, weights) -> tuple[Array, Array, Array]:
    """Means (n, d), covariances (n, d, d) and normalised weights (n,)."""
    if not isinstance(gaussians, Gaussian):
        raise ValueError(f"gaussians must be a gj.Gaussian, got {type(gaussians).__name__}")
    if gaussians.mean.ndim != 2:
        raise ValueError(
            "gaussians must be a batch with one leading axis (mean (n, d)), got mean "
            f"{gaussians.mean.shape}; vmap for several barycenter problems"
        )
    n, dtype = gaussians.mean.shape[0], gaussians.mean.dtype
    if n < 1:
        raise ValueError("gaussians must hold at least one Gaussian")
    gaussians = _checks.check_measure("gaussians", gaussians)
    if weights is None:
        w = jnp.full((n,), 1.0 / n, dtype=dtype)
    else:
        w = jnp.asarray(weights, dtype=dtype)
        if w.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {w.shape}")
        w = _checks.check_nonnegative("weights", _checks.check_real("weights", w))
        w = _checks.require(
            w, lambda w: ~(jnp.sum(w) > 0), "weights must be finite, >= 0, with a positive sum"
        )
        w = w / jnp.sum(w)
    mean_cov = jnp.einsum("i,ijk->jk", w, gaussians.cov)
    _checks.check_cov("weighted mean of gaussians.cov", mean_cov, definite=True)
    return gaussians.mean, gaussians.cov, w


def _default_tol(tol, dtype, power: float) -> Array:
    """``tol`` as a traced scalar of ``dtype`` (a new value does not recompile), ``> 0``."""
    if tol is None:
        tol = float(np.finfo(dtype).eps ** power)
    return _checks.check_scalar("tol", tol, dtype)


def _check_max_iter(max_iter) -> int:
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    return int(max_iter)


# --------------------------------------------------------------------------------------
# Implicit differentiation of grad_S J(S) = 0
#
# F(S, theta) = grad J(sym S; theta) + (S - S^T)/2. On symmetric directions dF/dS is the
# Hessian of J (self-adjoint for <X, Y> = Tr X^T Y, positive definite at a strict
# minimiser); on antisymmetric ones it is the identity. So dF/dS is symmetric positive
# definite on all of R^{d x d}, and the implicit function theorem gives
#     dS = -(dF/dS)^{-1} (dF/dtheta) dtheta,
# solved by conjugate gradients inside lax.custom_linear_solve(symmetric=True): linear
# in the right-hand side, so JAX transposes it for reverse mode (the cotangent solve is
# the same CG). (lax.custom_root with a CG tangent_solve cannot be transposed in
# jax 0.10: its reverse mode raises an "open an issue" error.)
# --------------------------------------------------------------------------------------
def _cg(matvec: Callable, b: Matrix) -> Matrix:
    """Conjugate gradients from ``x = 0`` for the SPD operator above (Hestenes & Stiefel).

    Stops at ``||r||_F <= eps^{3/4} ||b||_F`` (the tangent is then accurate far below the
    fixed point's own tolerance), at most ``10 d^2 + 10`` steps (CG is exact in ``d^2``
    steps in exact arithmetic). A plain ``while_loop``: ``jax.scipy.sparse.linalg.cg``
    wraps itself in a second ``custom_linear_solve``, whose batching rule, nested in the
    one of :func:`_implicit`, re-traces the operator to a fixed point (under ``vmap``
    that doubled the trace of a barycenter's gradient).
    """
    d = b.shape[-1]
    dot = functools.partial(jnp.vdot, precision=jax.lax.Precision.HIGHEST)
    tol2 = float(np.finfo(b.dtype).eps ** 1.5) * dot(b, b)
    maxiter = 10 * d * d + 10

    def cond(state):
        _, _, _, rr, k = state
        return (rr > tol2) & (k < maxiter)

    def body(state):
        x, r, p, rr, k = state
        Ap = matvec(p)
        alpha = rr / dot(p, Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = dot(r, r)
        return x, r, r + (rr_new / rr) * p, rr_new, k + 1

    init = (jnp.zeros_like(b), b, b, dot(b, b), jnp.asarray(0))
    return jax.lax.while_loop(cond, body, init)[0]


def _implicit(grad_fn: Callable, solve: Callable, aux, *params) -> Matrix:
    """The root ``S`` of ``grad_fn(S, *params) = 0`` found by ``solve(aux, *params)``.

    ``aux`` (solver settings such as a traced ``tol``) is an argument, not a closure, so
    that the ``custom_jvp`` closes over no tracer; the root does not depend on it.
    """

    def F(S, *p):
        return grad_fn(sym(S), *p) + 0.5 * (S - S.T)

    @jax.custom_jvp
    def root(aux, *p):
        return solve(*jax.lax.stop_gradient((aux, *p)))

    def root_jvp(primals, tangents):
        S = root(*primals)
        _, *primals = primals
        # Only the parameters with a tangent enter the right-hand side (symbolic zeros:
        # a constant epsilon or weight would cost its own derivative programs, of zero).
        live = [i for i, t in enumerate(tangents[1:]) if not isinstance(t, SymbolicZero)]
        if not live:
            return S, jnp.zeros_like(S)

        def F_live(*q):
            p = list(primals)
            for i, v in zip(live, q):
                p[i] = v
            return F(S, *p)

        live_p = tuple(primals[i] for i in live)
        _, rhs = jax.jvp(F_live, live_p, tuple(tangents[1 + i] for i in live))

        # Linearised once: the derivative rules run (and are traced) here, and CG, which
        # traces its operator several times (init, loop body, the transposed solve),
        # replays the linear map alone; its loop repeats no primal work.
        _, matvec = jax.linearize(lambda X: F(X, *primals), S)
        dS = jax.lax.custom_linear_solve(matvec, rhs, lambda mv, b: _cg(mv, b), symmetric=True)
        return S, -dS

    root.defjvp(root_jvp, symbolic_zeros=True)
    return root(aux, *params)


# --------------------------------------------------------------------------------------
# The fixed point shared by all three barycenters
#
# Objective (covariance part, ``eps = 0`` for W2):
#   J(S) = Tr S + sum_i w_i Tr g(S A_i)                          (W2, biased entropic)
#   J(S) = sum_i w_i Tr g(S A_i) - Tr g(S S) / 2                 (debiased)
# with g(lam) = -2 sqrt(lam) (W2) or the per-eigenvalue entropic value of docs/jmpc20.md.
# Both have -g'(lam) = k(lam) / lam with k(lam) = 4 lam / (eps (1 + (1 + 16 lam/eps^2)^{1/2}))
# (the per-eigenvalue Tr C of the optimal plan, coupling.isotropic_terms; sqrt(lam) at
# eps = 0). grad_S Tr g(S A) = A^{1/2} g'(A^{1/2} S A^{1/2}) A^{1/2}, and the push-through
# identity Y h(Y^T Y) Y^T = h(Y Y^T) Y Y^T with Y = S^{1/2} A^{1/2} turns it into
# -S^{-1/2} k(S^{1/2} A S^{1/2}) S^{-1/2}. Hence, with R(S) = sum_i w_i k(S^{1/2} A_i S^{1/2}):
#   grad J = I - S^{-1/2} R S^{-1/2}              => stationarity S = R(S)
#   grad J = S^{-1} k(S^2) - S^{-1/2} R S^{-1/2}   => stationarity k(S^2) = R(S),
#                                                     S = Q(S) := (R^2 + (eps/2) R)^{1/2}
# (k^{-1}(y) = y^2 + eps y / 2). Writing Q = R in the first case, the iteration
#   S <- S^{-1/2} Q(S)^2 S^{-1/2}
# is Alvarez-Esteban et al.'s for W2; for scalars it reaches Q(S) = S in one step
# (W2, debiased) or contracts by eps / (4 a - eps) (biased, variance a).
# The residual ||S^{1/2} grad J S^{1/2}||_F / ||S||_F is ||S - R|| (resp. ||k(S^2) - R||).
# --------------------------------------------------------------------------------------
def _k(lam, eps):
    # isotropic_terms(lam, 2 / eps)[0], without its KL term (psd_fn differentiates _k to
    # third order: the unused term would be traced at every order).
    return 4.0 * lam / (eps * (1.0 + jnp.sqrt(1.0 + 16.0 * lam / eps**2)))


def _k_inv_sqrt(y, eps):
    return jnp.sqrt(y * y + 0.5 * eps * y)


def _R(X: Matrix, covs: Array, w: Array, eps: Array | None) -> Matrix:
    """``sum_i w_i k(X A_i X)`` with ``X = S^{1/2}``; ``k = sqrt`` when ``eps is None``."""

    def one(A):
        M = sym(X @ A @ X)
        return sqrtm(M) if eps is None else psd_fn(_k, M, eps)

    return jnp.einsum("i,ijk->jk", w, jax.vmap(one)(covs))


def _Q(X: Matrix, covs: Array, w: Array, eps: Array | None, debiased: bool) -> Matrix:
    """The fixed-point map's ``Q`` (above) at ``S = X^2``."""
    R = _R(X, covs, w, eps)
    return psd_fn(_k_inv_sqrt, R, eps) if debiased else R


@functools.partial(jax.jit, static_argnums=4)  # jit policy (docs/conventions.md#jit)
def _residual(S, covs, w, eps, debiased):
    R = _R(sqrtm(S), covs, w, eps)
    lhs = psd_fn(_k, sym(S @ S), eps) if debiased else S
    return jnp.linalg.norm(lhs - R) / jnp.linalg.norm(S)


def _k_sq_over(lam, eps):
    """``k(lam^2) / lam = x / (1 + (1 + x^2)^{1/2})`` with ``x = 4 lam / eps``."""
    x = (4.0 / eps) * lam  # (not jnp.hypot: the Frechet derivatives' jet has no rule for it)
    return x / (1.0 + jnp.sqrt(1.0 + x * x))


def _grad(S, covs, w, eps, debiased):
    """``grad_S J`` in closed form (derived above), symmetrised.

    ``I - S^{-1/2} R S^{-1/2}``, or ``S^{-1} k(S^2) - S^{-1/2} R S^{-1/2}`` (debiased).
    Written out rather than ``jax.grad`` of ``J``: the implicit tangent differentiates it
    once more, and the closed form needs first derivatives of ``sqrtm`` and ``psd_fn``
    where autodiff of ``J`` would need second derivatives of ``trace_fn`` (the compile of
    a barycenter's gradient halves). Its Jacobian is ``J``'s Hessian all the same.
    """
    S = sym(S)
    R = _R(sqrtm(S), covs, w, eps)
    Z = inv_sqrtm(S)
    first = psd_fn(_k_sq_over, S, eps) if debiased else jnp.eye(S.shape[-1], dtype=S.dtype)
    return sym(first - Z @ R @ Z)


def _fixed_point(covs, w, eps, *, debiased: bool, tol: Array, max_iter: int) -> Matrix:
    def cond(carry):
        _, k, delta = carry
        return (k < max_iter) & (delta > tol)

    def body(carry):
        S, k, _ = carry
        lam, V = _eigh_psd(S)  # S^{1/2} and S^{-1/2} from one decomposition (no tangents)
        X, Z = _rebuild(V, jnp.sqrt(lam)), _rebuild(V, jax.lax.rsqrt(lam))
        Q = _Q(X, covs, w, eps, debiased)
        S_new = sym(Z @ Q @ Q @ Z)
        delta = jnp.linalg.norm(S_new - S) / jnp.linalg.norm(S_new)
        return S_new, k + 1, delta

    S0 = sym(jnp.einsum("i,ijk->jk", w, covs))
    init = (S0, jnp.asarray(0), jnp.asarray(jnp.inf, dtype=S0.dtype))
    return jax.lax.while_loop(cond, body, init)[0]


# tol is traced (a new value reuses the executable); debiased and max_iter are static.
@functools.partial(jax.jit, static_argnames=("debiased", "max_iter"))
def _barycenter_cov(
    covs, w, eps, tol, *, debiased: bool, max_iter: int
) -> tuple[Matrix, Array, Array]:
    def solve(tol, covs, w, *eps_):
        return _fixed_point(
            covs, w, eps_[0] if eps_ else None, debiased=debiased, tol=tol, max_iter=max_iter
        )

    def grad_fn(S, covs, w, *eps_):
        return _grad(S, covs, w, eps_[0] if eps_ else None, debiased)

    params = (covs, w) if eps is None else (covs, w, eps)
    S = sym(_implicit(grad_fn, solve, tol, *params))
    residual = _residual(jax.lax.stop_gradient(S), covs, w, eps, debiased)
    finite = jnp.all(jnp.isfinite(jax.lax.stop_gradient(S)))
    return S, jax.lax.stop_gradient(residual), finite  # _barycenter reports the failures


# At a converged fixed point the relative residual is about the last relative change
# (<= tol) times 1 / (1 - contraction); sqrt(tol) allows contractions up to 1 - sqrt(tol).
# An iterate that stopped at max_iter far from a fixed point (the biased entropic
# barycenter once its minimiser is singular: S -> 0 geometrically) has a residual of
# order one; one that underflowed to 0 has a NaN residual (0 / 0). A non-finite one
# (S singular on the way: rsqrt of a zero eigenvalue) diverged. ValueError on concrete
# input, eqx.error_if under jit.
_DIVERGED = (
    "the barycenter's fixed point diverged (for the biased entropic barycenter: "
    "epsilon too large, the minimiser is singular; use debiased=True)"
)
_NOT_CONVERGED = (
    "the barycenter's fixed point did not converge in max_iter iterations (relative "
    "residual {r}); for the biased entropic barycenter this means epsilon is too large "
    "(>= 2 lambda_max of the inputs at the latest): the minimiser is singular, use "
    "debiased=True"
)


def _barycenter(gaussians, weights, eps, *, debiased, tol, max_iter) -> Gaussian:
    means, covs, w = _check_inputs(gaussians, weights)
    tol = _default_tol(tol, means.dtype, 0.75)
    max_iter = _check_max_iter(max_iter)
    S, residual, finite = _barycenter_cov(covs, w, eps, tol, debiased=debiased, max_iter=max_iter)
    limit = jnp.sqrt(tol)
    if _checks.is_concrete(residual, limit, finite):
        if not bool(finite):
            raise ValueError(_DIVERGED)
        if not float(residual) <= limit:
            raise ValueError(_NOT_CONVERGED.format(r=f"{float(residual):.3g}"))
    else:
        S = eqx.error_if(S, ~finite, _DIVERGED)
        S = eqx.error_if(S, ~(residual <= limit), _NOT_CONVERGED.format(r="> sqrt(tol)"))
    return Gaussian(w @ means, S, validate=False)


def bures_barycenter(
    gaussians: Gaussian,
    weights: Float[Array, " n"] | None = None,
    *,
    tol: float | None = None,
    max_iter: int = 200,
) -> Gaussian:
    r"""The Bures–Wasserstein barycenter ``argmin_b sum_i w_i W2^2(b, mu_i)``.

    Mean ``sum_i w_i m_i``; covariance the positive-definite solution of
    ``S = sum_i w_i (S^{1/2} A_i S^{1/2})^{1/2}`` (Agueh & Carlier 2011), computed in a
    ``lax.while_loop`` by the fixed-point iteration of Álvarez-Esteban, del Barrio,
    Cuesta-Albertos & Matrán (2016)

        S <- S^{-1/2} (sum_i w_i (S^{1/2} A_i S^{1/2})^{1/2})^2 S^{-1/2}

    from ``S_0 = sum_i w_i A_i``, until the relative change ``||S_{k+1} - S_k||_F /
    ||S_{k+1}||_F <= tol`` or ``max_iter`` steps. Gradients (in the means, covariances and
    weights) come from the implicit function theorem on the first-order condition
    ``sum_i w_i T_i(S) = I`` (``T_i`` the Monge map from ``S`` to ``A_i``, docs/bures.md):
    one conjugate-gradient solve with the objective's Hessian, no unrolled loop. Check
    convergence with :func:`bures_barycenter_residual`.

    Args:
        gaussians: ``n`` Gaussians as one :class:`Gaussian` with mean ``(n, d)`` and cov
            ``(n, d, d)``; ``sum_i w_i A_i`` must be positive definite.
        weights: ``(n,)``, ``>= 0`` with a positive sum (normalised here); ``None`` for
            uniform weights.
        tol: relative-change tolerance ``> 0`` (traced: a new value does not
            recompile); default ``eps^{3/4}`` of the dtype
            (``1.8e-12`` in float64, ``6.4e-6`` in float32).
        max_iter: iteration cap (static).

    Returns:
        The barycenter, a single :class:`Gaussian` (``jax.vmap`` for many problems).

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> covs = jnp.stack([jnp.diag(jnp.array([1.0, 4.0])), jnp.diag(jnp.array([9.0, 1.0]))])
        >>> bary = gj.bures_barycenter(gj.Gaussian(jnp.zeros((2, 2)), covs))
        >>> # commuting covariances: ((A_1^{1/2} + A_2^{1/2}) / 2)^2 = diag(4, 2.25)
        >>> [round(v, 4) for v in jnp.diag(bary.cov).tolist()]
        [4.0, 2.25]
    """
    return _barycenter(gaussians, weights, None, debiased=False, tol=tol, max_iter=max_iter)


def bures_barycenter_residual(
    gaussians: Gaussian, weights: Float[Array, " n"] | None, barycenter: Gaussian
) -> Float[Array, ""]:
    r"""Relative fixed-point residual of a Bures–Wasserstein barycenter candidate.

    ``||S - sum_i w_i (S^{1/2} A_i S^{1/2})^{1/2}||_F / ||S||_F`` with ``S`` the candidate's
    covariance (``= ||S^{1/2} grad_S J(S) S^{1/2}||_F / ||S||_F``, ``J`` the objective):
    zero exactly at the barycenter's covariance.

    Args:
        gaussians: the ``n`` Gaussians (leading axis ``n``).
        weights: ``(n,)`` or ``None`` (uniform), as in :func:`bures_barycenter`.
        barycenter: the candidate, a single Gaussian.

    Returns:
        The scalar residual.
    """
    _, covs, w = _check_inputs(gaussians, weights)
    _checks.check_square("barycenter.cov", barycenter.cov, covs.shape[-1])
    return _residual(barycenter.cov, covs, w, None, False)


def entropic_barycenter(
    gaussians: Gaussian,
    weights: Float[Array, " n"] | None,
    epsilon,
    *,
    debiased: bool = False,
    tol: float | None = None,
    max_iter: int = 500,
) -> Gaussian:
    r"""Entropic barycenter ``argmin_b sum_i w_i OT_eps(b, mu_i)`` over Gaussians ``b``.

    ``OT_eps`` is the balanced entropic cost of [JMPC20] (docs/jmpc20.md); ``debiased=True``
    replaces it by the Sinkhorn divergence ``S_eps(b, mu_i)``. The mean is
    ``sum_i w_i m_i``. With ``k(lam) = 4 lam / (eps (1 + (1 + 16 lam / eps^2)^{1/2}))``
    (the per-eigenvalue ``Tr C`` of the optimal plan; ``sqrt(lam)`` at ``eps = 0``) and
    ``R(S) = sum_i w_i k(S^{1/2} A_i S^{1/2})``, the first-order conditions are

        S = R(S)                                         (biased)
        k(S^2) = R(S),  i.e.  S = (R^2 + (eps/2) R)^{1/2}    (debiased)

    (derived from the trace-function gradients of docs/core.md; tested against autodiff
    of :func:`gaussot_jax.entropic_ot`). Writing them ``S = Q(S)``, the iteration
    ``S <- S^{-1/2} Q(S)^2 S^{-1/2}`` (Álvarez-Esteban et al.'s for W2, recovered at
    ``eps -> 0``) runs in a ``lax.while_loop``; gradients with respect to the inputs and
    ``epsilon`` are implicit, as in :func:`bures_barycenter`.

    Both tend to :func:`bures_barycenter` as ``epsilon -> 0`` (biased: error
    ``O(eps)``; debiased: ``O(eps^2)``). The biased barycenter shrinks (one input of
    variance ``a`` in 1-D: ``a - eps/2``) and is singular (at the latest) once
    ``epsilon >= 2 lambda_max(sum_i w_i A_i)``, where the iteration does not converge
    and a ``ValueError`` is raised (``eqx.error_if`` under ``jit``);
    the debiased one does not shrink (with one input it returns that input).

    Args:
        gaussians: ``n`` Gaussians (mean ``(n, d)``, cov ``(n, d, d)``).
        weights: ``(n,)``, ``>= 0`` with a positive sum, or ``None`` (uniform).
        epsilon: regularisation ``> 0`` (traced: vmap or differentiate it).
        debiased: minimise ``sum_i w_i S_eps(b, mu_i)`` instead.
        tol: relative-change tolerance ``> 0`` (traced); default ``eps^{3/4}`` of the dtype.
        max_iter: iteration cap (static).

    Returns:
        The barycenter, a single :class:`Gaussian`.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mus = gj.Gaussian(jnp.zeros((2, 2)), jnp.stack([jnp.eye(2), 4 * jnp.eye(2)]))
        >>> bary = gj.entropic_barycenter(mus, None, 0.1, debiased=True)
        >>> [round(v, 3) for v in jnp.diag(bary.cov).tolist()]  # near Bures' ((1 + 2) / 2)^2
        [2.25, 2.25]
    """
    eps = _checks.check_epsilon(epsilon, gaussians.mean.dtype)
    return _barycenter(gaussians, weights, eps, debiased=bool(debiased), tol=tol, max_iter=max_iter)


def entropic_barycenter_residual(
    gaussians: Gaussian,
    weights: Float[Array, " n"] | None,
    epsilon,
    barycenter: Gaussian,
    *,
    debiased: bool = False,
) -> Float[Array, ""]:
    r"""First-order residual ``||S^{1/2} grad_S J(S) S^{1/2}||_F / ||S||_F`` of a candidate.

    ``J`` is the covariance objective of :func:`entropic_barycenter`; the residual is
    ``||S - R(S)||_F / ||S||_F`` (biased) or ``||k(S^2) - R(S)||_F / ||S||_F`` (debiased).

    Args:
        gaussians: the ``n`` Gaussians (leading axis ``n``).
        weights: ``(n,)`` or ``None`` (uniform).
        epsilon: regularisation ``> 0``.
        barycenter: the candidate, a single Gaussian.
        debiased: residual for the Sinkhorn-divergence barycenter.

    Returns:
        The scalar residual.
    """
    _, covs, w = _check_inputs(gaussians, weights)
    eps = _checks.check_epsilon(epsilon, covs.dtype)
    _checks.check_square("barycenter.cov", barycenter.cov, covs.shape[-1])
    return _residual(barycenter.cov, covs, w, eps, bool(debiased))
