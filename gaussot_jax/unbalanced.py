r"""Unbalanced entropic OT between scaled Gaussians [JMPC20, Thm 2] (docs/jmpc20.md).

For positive measures ``alpha = m_a N(a, A)`` and ``beta = m_b N(b, B)``::

    UOT = min_{pi >= 0}  E_pi||x - y||^2 + eps KL(pi || alpha ⊗ beta)
                         + gamma KL(pi_1 || alpha) + gamma KL(pi_2 || beta)

with the generalised ``KL(p||q) = ∫ log(dp/dq) dp - m(p) + m(q)``. The optimum is a scaled
Gaussian ``m_pi N(mean_pi, Cov_pi)``.

Derivation of the form used here (every step checked against direct minimisation):

* **Mass.** Write ``pi = m pibar`` with ``pibar`` a probability. The objective is
  ``m J(pibar) + (eps + 2 gamma)(m log m - m) - (eps + gamma) m log(m_a m_b) + eps m_a m_b
  + gamma (m_a + m_b)``, with ``J`` the mass-free part. Minimising in ``m`` gives
  ``log m_pi = ((eps + gamma) log(m_a m_b) - J*) / (eps + 2 gamma)`` and
  ``UOT = gamma (m_a + m_b - 2 m_pi) + eps (m_a m_b - m_pi)``.
* **Means** separate: ``J`` carries ``lam u^T X^{-1} u`` (``u = b - a``), ``X = A + B + lam I``,
  ``lam = (eps + gamma)/2``, attained at ``(a + A X^{-1} u, b - B X^{-1} u)`` (the infimal
  convolution of the two Gaussian log-densities with the quadratic cost).
* **Covariance part.** [JMPC20]'s transcribed mass (docs/jmpc20.md) contains
  ``logdet C``, ``logdet(At Bt)``, ``logdet(A B)`` and ``logdet(C - (2/gamma) At Bt)``, each
  ``-inf`` for rank-deficient ``A`` or ``B``. With ``At = (gamma/2) A (A + lam I)^{-1}``
  (``(A + lam I)^{-1}`` is harmless: ``lam > 0``), ``C = f(At Bt)`` is a function of ``At Bt``
  whose eigenvalues are ``c_i = s_i - sigma^2/2 = (k_i/tau) / (s_i + sigma^2/2)``,
  ``s_i = (k_i/tau + sigma^4/4)^{1/2}``, ``k_i`` the eigenvalues of ``At Bt`` (all in
  ``[0, gamma^2/4)``). ``logdet(AB) = logdet(At Bt) - 2d log(gamma/2) + logdet(A + lam I) +
  logdet(B + lam I)``, and ``C - (2/gamma) At Bt`` has eigenvalues
  ``2 (gamma^2/4 - k_i) / (tau gamma (r + s_i)(s_i + sigma^2/2))``, ``r = (gamma + sigma^2)/2``,
  with ``prod_i (1 - 4 k_i / gamma^2) = lam^d det X / (det(A + lam I) det(B + lam I))``.
  Substituting, every ``log k_i`` cancels, as do the ``log sigma^2`` constants, leaving

      log m_pi = (2 lam / (eps + 2 gamma)) (log m_a + log m_b - u^T X^{-1} u / 2)
                 + d rho log lam - logdet(X) / 2
                 + (gamma / (2 (2 gamma + eps))) (logdet(A + lam I) + logdet(B + lam I))
                 + sum_i [ log1p(c_i / lam) / 2 - rho log1p(c_i / sigma^2) ],

  ``rho = eps / (2 (2 gamma + eps))``: a log-determinant of positive-definite matrices
  (eigenvalues ``>= lam``) plus a trace function of ``At Bt`` whose summand vanishes at
  ``k = 0``. It is finite for every PSD ``A, B`` (Diracs included: ``A = B = 0`` gives
  ``log m_pi = ((eps + gamma) log(m_a m_b) - ||a - b||^2) / (eps + 2 gamma)``), and its gradient
  in ``A, B`` is finite there too (:func:`gaussot_jax.trace_fn`, docs/core.md).
* **The non-symmetric square root** ``C = (At Bt/tau + sigma^4/4 I)^{1/2} - sigma^2/2 I`` is
  ``h(At Bt) At Bt`` with ``h(k) = (1/tau) / (s(k) + sigma^2/2)``; by ``h(PQ) P = P h(QP)`` it
  equals ``At Bt^{1/2} h(Bt^{1/2} At Bt^{1/2}) Bt^{1/2}``, which is the core solver
  (docs/core.md) for the pair ``(At, Bt)`` with ``W = w I``, ``w = 1/(sigma^2 tau^{1/2})``,
  scaled by ``tau^{-1/2}``: no inverse, exact at singular ``At, Bt``. Its derivative solves
  ``S dC + dC S = d(At Bt)/tau - ...`` with ``S = C + sigma^2/2 I`` (eigenvalues
  ``>= sigma^2/2``), so the plan's gradient is finite at singular ``A, B`` as well. The
  solve is a closed form in the eigenbasis of ``Bt^{1/2} At Bt^{1/2}`` (O(d^3), no inverse;
  derived above ``_cross``), posed as ``lax.custom_linear_solve`` so that every order of
  derivative is exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, Float

from . import _checks
from ._pretty import Pretty
from .coupling import solve_coupling
from .gaussians import ScaledGaussian
from .linalg import _eigh_psd, sym
from .linalg import psd_fn_unchecked as psd_fn
from .linalg import spectral_trace_unchecked as spectral_trace
from .linalg import trace_fn_unchecked as trace_fn

if TYPE_CHECKING:  # lowrank imports this module at run time
    from .lowrank import LowRankGaussian, LowRankUnbalancedOT, ScaledLowRankGaussian

__all__ = ["UnbalancedEntropicOT", "unbalanced_entropic_ot"]


class UnbalancedEntropicOT(Pretty):
    """Result of :func:`unbalanced_entropic_ot`: value, plan, marginals and masses.

    Attributes:
        cost: The optimal value ``UOT`` (not debiased: it carries the mass terms).
        plan: The optimal plan ``m_pi N(mean_pi, Cov_pi)`` on ``R^{2d}``.
        marginals: ``(pi_1, pi_2)``: the plan's marginals, each of mass ``m_pi``.
        cross_cov: ``Cov(x, y)`` under the (normalised) plan.
        log_mass: ``log m_pi``, computed directly (finite even where ``m_pi`` under/overflows).
        destroyed_mass: ``(m_a - m_pi, m_b - m_pi)``: mass of ``a`` and of ``b`` not transported
            (negative where mass is created).
        epsilon: The entropic regularisation.
        gamma: The marginal relaxation strength.
    """

    cost: Float[Array, ""]
    """The optimal value ``UOT`` (not debiased: it carries the mass terms)."""
    plan: ScaledGaussian
    """The optimal plan ``m_pi N(mean_pi, Cov_pi)`` on ``R^{2d}``."""
    marginals: tuple[ScaledGaussian, ScaledGaussian]
    """``(pi_1, pi_2)``: the plan's marginals, each of mass ``m_pi``."""
    cross_cov: Float[Array, "d d"]
    """``Cov(x, y)`` under the (normalised) plan."""
    log_mass: Float[Array, ""]
    """``log m_pi``, computed directly (finite even where ``m_pi`` under/overflows)."""
    destroyed_mass: tuple[Float[Array, ""], Float[Array, ""]]
    """``(m_a - m_pi, m_b - m_pi)``: mass of ``a`` and of ``b`` not transported
    (negative where mass is created)."""
    epsilon: Float[Array, ""]
    """The entropic regularisation."""
    gamma: Float[Array, ""]
    """The marginal relaxation strength."""


def _atilde(w, gamma, lam):
    # (gamma/2) A (A + lam I)^{-1} on the eigenvalues of A: in [0, gamma/2).
    return 0.5 * gamma * w / (w + lam)


def _mass_summand(k, eps, gamma):
    # Per-eigenvalue part of log m_pi, k in spec(At Bt); zero at k = 0, smooth there.
    sigma2 = 0.5 * eps
    lam = 0.5 * (eps + gamma)
    tau = gamma / (gamma + eps)
    rho = eps / (2.0 * (2.0 * gamma + eps))
    kt = k / tau
    c = kt / (jnp.sqrt(kt + 0.25 * sigma2**2) + 0.5 * sigma2)  # eigenvalue of C, no cancel
    return 0.5 * jnp.log1p(c / lam) - rho * jnp.log1p(c / sigma2)


# --------------------------------------------------------------------------------------
# C = (K/tau + sigma^4/4 I)^{1/2} - sigma^2/2 I,  K = At Bt (non-symmetric).
#
# Value: the core solver on (At, Bt) with W = w I, w = 1/(sigma^2 tau^{1/2}), scaled by
# tau^{-1/2} (module docstring): no inverse. Its derivative through sqrtm(Bt) is 0 * inf
# at a singular Bt, yet C is analytic in K there. Differentiating C^2 + sigma^2 C = K/tau
# instead gives the Sylvester equation
#     S dC + dC S = dK/tau - (dtau/tau^2) K - dsigma^2 C,   S = C + sigma^2/2 I,
# with dK = dAt Bt + At dBt. S has the eigenvalues (k_i/tau + sigma^4/4)^{1/2} >= sigma^2/2,
# so no two sum to 0 and the solve is finite for every PSD At, Bt.
#
# The solve in closed form, O(d^3), no inverse (exact for singular At AND Bt). Let
# s0 = sigma^2/2, Bh = Bt^{1/2}, M = Bh At Bh = V diag(k) V^T, g = (k/tau + s0^2)^{1/2} and
#     F = Bh V,   G = At F diag(1 / (tau (g + s0))),   so   C = G F^T,   F^T G = diag(g - s0)
# (C = At Bh h(M) Bh is the core solver's form; F^T G = diag(k h(k)) = diag(g - s0)).
# S = s0 I + G F^T with F^T G diagonal is "diagonal up to a low-rank-like term": Woodbury
# gives the resolvent  (z - S)^{-1} = I/(z - s0) + G diag(1/((z - s0)(z - g_j))) F^T, hence
# every function  f(S) = f(s0) I + G diag(f[s0, g_j]) F^T  (first divided differences,
# confluent where g_j = s0: no 1/(g_j - s0) survives). In particular
#     e^{-tS} = e^{-t s0} I + G diag((e^{-t g_j} - e^{-t s0}) / (g_j - s0)) F^T,
# and X = int_0^inf e^{-tS} R e^{-tS} dt (which solves S X + X S = R, spec S > 0) is,
# integrating term by term,
#     X = R/(2 s0) - G diag(w) F^T R - R G diag(w) F^T + G [(F^T R G) o Gam] F^T,
#     w_j = 1 / (2 s0 (s0 + g_j)),
#     Gam_ij = (g_i + g_j + 2 s0) / (2 s0 (s0 + g_i)(s0 + g_j)(g_i + g_j)),
# every denominator >= s0^2 > 0. Nothing here divides by a singular value of At^{1/2} Bh
# (the eigenbasis of S, E = At^{1/2} P, is never formed: it is ill-conditioned where At
# and Bt are nearly singular, while this form is not). The transposed operator
# Y -> S^T Y + Y S^T is solved by transposing: solve(R^T)^T.
#
# It is posed as lax.custom_linear_solve with matvec X -> S X + X S (S from the primal C,
# itself this custom_jvp function), and the closed form as its (never differentiated)
# solve on stop_gradient'ed coefficients: the tangent is linear in the tangents, reverse
# mode transposes it, and every higher order differentiates the matvec, never an
# eigendecomposition (the same pattern as linalg.sqrtm's Sylvester solve).
# --------------------------------------------------------------------------------------
@jax.custom_jvp
def _cross(At, Bt, sigma2, tau):
    eye = jnp.eye(At.shape[-1], dtype=At.dtype)
    w = 1.0 / (sigma2 * jnp.sqrt(tau))
    return solve_coupling(At, Bt, w * eye).cross_cov / jnp.sqrt(tau)


def _sylvester_factors(At, Bt, sigma2, tau):
    """``(F, G, g, s0)`` of the closed-form solve above (primal values, not differentiated)."""
    s0 = 0.5 * sigma2
    # _eigh_psd: eigenvalues clipped at 0; scalar Jacobi for d <= 3 (no LAPACK call)
    b, U = _eigh_psd(Bt)
    Bh = (U * jnp.sqrt(b)) @ U.T
    k, V = _eigh_psd(Bh @ At @ Bh)
    g = jnp.sqrt(k / tau + s0**2)
    F = Bh @ V
    G = (At @ F) / (tau * (g + s0))
    return F, G, g, s0


def _sylvester_solve(factors, R):
    """``X`` with ``S X + X S = R``, ``S = s0 I + G F^T``, ``F^T G`` diagonal (see above)."""
    F, G, g, s0 = factors
    w = 1.0 / (2.0 * s0 * (s0 + g))
    gi, gj = g[:, None], g[None, :]
    gam = (gi + gj + 2.0 * s0) * (2.0 * s0) * (w[:, None] * w[None, :]) / (gi + gj)
    FR, RG = F.T @ R, R @ G
    return R / (2.0 * s0) - (G * w) @ FR - (RG * w) @ F.T + G @ ((FR @ G) * gam) @ F.T


@_cross.defjvp
def _cross_jvp(primals, tangents):
    At, Bt, sigma2, tau = primals
    dAt, dBt, dsigma2, dtau = tangents
    C = _cross(At, Bt, sigma2, tau)
    K = At @ Bt
    rhs = (dAt @ Bt + At @ dBt) / tau - (dtau / tau**2) * K - dsigma2 * C
    S = C + 0.5 * sigma2 * jnp.eye(At.shape[-1], dtype=At.dtype)
    factors = _sylvester_factors(*(jax.lax.stop_gradient(p) for p in primals))
    dC = jax.lax.custom_linear_solve(
        lambda X: S @ X + X @ S,
        rhs,
        solve=lambda _, R: _sylvester_solve(factors, R),
        transpose_solve=lambda _, R: _sylvester_solve(factors, R.T).T,
    )
    return C, dC


def _log1p_ratio(w, lam):
    return jnp.log1p(w / lam)


def _logdet_1p(M, lam):
    """``logdet(I + M / lam)`` for PSD ``M``, without forming ``1 + small``."""
    return spectral_trace(_log1p_ratio, M, lam)


class _UOTSolution(eqx.Module):
    """What :func:`_uot` computes (library internal): value, mass and the normalised plan.

    Attributes:
        cost: ``UOT``.
        log_mass: ``log m_pi``.
        mass: ``m_pi``.
        mean_x: the plan's ``x``-mean ``a + A X^{-1} (b - a)``.
        mean_y: the plan's ``y``-mean ``b + B X^{-1} (a - b)``.
        cov: the normalised plan's covariance on ``R^{2d}``.
    """

    cost: Array
    log_mass: Array
    mass: Array
    mean_x: Array
    mean_y: Array
    cov: Array


@jax.jit
def _uot(ma, a, A, mb, b, B, eps, gamma) -> _UOTSolution:
    """Differentiable kernel: no validation, single (unbatched) inputs.

    Jitted so that eager calls compile once per shape and dtype (inlined under an outer
    ``jit``, batched by ``vmap``, differentiated through).
    """
    dim = a.shape[-1]
    eye = jnp.eye(dim, dtype=a.dtype)
    sigma2 = 0.5 * eps
    lam = 0.5 * (eps + gamma)
    tau = gamma / (gamma + eps)
    kappa = (eps + gamma) / (eps + 2.0 * gamma)

    X = sym(A + B + lam * eye)
    X_chol = jsl.cho_factor(X, lower=True)
    delta = b - a
    Xinv_delta = jsl.cho_solve(X_chol, delta)
    At = psd_fn(_atilde, A, gamma, lam)
    Bt = psd_fn(_atilde, B, gamma, lam)

    # Scale-free: logdet(M + lam I) = d log lam + logdet(I + M / lam), and the d log lam
    # terms cancel exactly (rho - 1/2 + (1 - kappa) = 0). What is left is O(||A|| / lam):
    # at eps = 1e8 or gamma = 1e4 the transcribed form subtracted O(log lam) terms to
    # leave O(1/lam), below float32 round-off (the cost then read 0 or went negative).
    # logdet(I + M / lam) = sum log1p(eig(M) / lam), as a trace function (exact rules).
    log_mass = (
        kappa * (jnp.log(ma) + jnp.log(mb) - 0.5 * delta @ Xinv_delta)
        + 0.5 * (1.0 - kappa) * (_logdet_1p(A, lam) + _logdet_1p(B, lam))
        - 0.5 * _logdet_1p(sym(A + B), lam)
        + trace_fn(_mass_summand, At, Bt, eps, gamma)
    )
    mass = jnp.exp(log_mass)

    # Cost without cancellation (the gamma -> inf limit subtracts nearly equal masses):
    # m_a + m_b - 2 m = (sqrt m_a - sqrt m_b)^2 - 2 sqrt(m_a m_b) expm1(log m - log sqrt(m_a m_b))
    # m_a m_b - m    = -m_a m_b expm1(log m - log(m_a m_b)).
    log_ab = jnp.log(ma) + jnp.log(mb)
    geo = jnp.exp(0.5 * log_ab)
    cost = gamma * (
        (jnp.sqrt(ma) - jnp.sqrt(mb)) ** 2 - 2.0 * geo * jnp.expm1(log_mass - 0.5 * log_ab)
    ) - eps * ma * mb * jnp.expm1(log_mass - log_ab)

    C = _cross(At, Bt, sigma2, tau)
    G = eye + C / lam
    XiA = jsl.cho_solve(X_chol, A)  # X^{-1} A
    XiB = jsl.cho_solve(X_chol, B)  # X^{-1} B
    P = G @ sym(A - A @ XiA)
    Q = G.T @ sym(B - B @ XiB)
    R = C + G @ A @ XiB
    cov = sym(jnp.block([[P, R], [R.T, Q]]))
    mean_x = a + A @ Xinv_delta
    mean_y = b - B @ Xinv_delta
    return _UOTSolution(
        cost=cost, log_mass=log_mass, mass=mass, mean_x=mean_x, mean_y=mean_y, cov=cov
    )


def _check_scalar(name, x, dtype) -> Array:
    return _checks.check_scalar(name, x, dtype)


def _check_measures(a, b) -> tuple[ScaledGaussian, ScaledGaussian]:
    for name, g in (("a", a), ("b", b)):
        _checks.check_single(name, g, ScaledGaussian)
        _checks.check_positive(f"{name}.mass", g.mass)
        _checks.check_finite(f"{name}.mean", g.mean)
        _checks.check_cov(f"{name}.cov", g.cov)
    if a.dim != b.dim:
        raise ValueError(f"dimensions differ: a has d={a.dim}, b has d={b.dim}")
    return _checks.check_measure("a", a), _checks.check_measure("b", b)


def unbalanced_entropic_ot(
    a: ScaledGaussian | ScaledLowRankGaussian | LowRankGaussian,
    b: ScaledGaussian | ScaledLowRankGaussian | LowRankGaussian,
    epsilon,
    gamma,
) -> UnbalancedEntropicOT | LowRankUnbalancedOT:
    r"""Unbalanced entropic OT between scaled Gaussians in closed form [JMPC20, Thm 2].

    Solves (docs/jmpc20.md; [JMPC20]'s ``sigma^2 = epsilon / 2``)::

        min_{pi >= 0} E_pi||x - y||^2 + epsilon KL(pi || a ⊗ b)
                      + gamma KL(pi_1 || a) + gamma KL(pi_2 || b)

    with the generalised KL. With ``lam = (epsilon + gamma)/2``, ``X = A + B + lam I``,
    ``tau = gamma/(gamma + epsilon)``, ``At = (gamma/2) A (A + lam I)^{-1}`` (``Bt`` alike) and
    ``C = (At Bt / tau + sigma^4/4 I)^{1/2} - sigma^2/2 I``, the plan is ``m_pi N(mean, Cov)``::

        mean = (a + A X^{-1}(b - a),  b + B X^{-1}(a - b))
        Cov  = [[(I + C/lam)(A - A X^{-1} A),  C + (I + C/lam) A X^{-1} B],
                [  (transpose)              ,  (I + C^T/lam)(B - B X^{-1} B)]]
        UOT  = gamma (m_a + m_b - 2 m_pi) + epsilon (m_a m_b - m_pi)

    and ``log m_pi`` is computed in the form derived in the module docstring: a
    log-determinant of positive-definite matrices plus a trace function of ``At Bt``, finite
    with finite gradients for every PSD ``A, B`` (rank-deficient and zero included), where
    the transcribed ``logdet(A B)``, ``logdet C`` terms are ``-inf``. ``C`` is the core
    solver (docs/core.md) on ``(At, Bt)``: no inverse of ``A``, ``B`` or ``C``. As
    ``gamma -> inf`` with unit masses the cost tends to :func:`gaussot_jax.entropic_ot`'s.

    Every finite input gives a finite value; the only failure is floating-point range
    (``m_pi`` or ``m_a m_b`` overflowing the dtype), which raises ``ValueError`` for
    concrete inputs (``log_mass`` stays finite).

    Args:
        a: ``m_a N(a, A)`` on ``R^d`` (single; ``jax.vmap`` for batches).
        b: ``m_b N(b, B)`` on ``R^d``.
        epsilon: entropic regularisation ``> 0`` (traced scalar: vmap or differentiate it).
        gamma: marginal relaxation ``> 0`` (traced scalar); ``gamma -> inf`` is balanced.

    Returns:
        :class:`UnbalancedEntropicOT` with ``cost``, ``plan`` (a ``ScaledGaussian`` on
        ``R^{2d}``), ``marginals``, ``cross_cov``, ``log_mass``, ``destroyed_mass``.
        For :class:`gaussot_jax.ScaledLowRankGaussian` or :class:`gaussot_jax.LowRankGaussian`
        (mass 1) arguments, :func:`gaussot_jax.lowrank_unbalanced_entropic_ot`'s factored
        :class:`gaussot_jax.LowRankUnbalancedOT`, in ``O(d k^2)``.

    Raises:
        ValueError: ``a`` or ``b`` not a single ``ScaledGaussian``, dimensions differ,
            ``mass``, ``epsilon`` or ``gamma`` not ``> 0``, covariance not symmetric PSD
            (values are checked when concrete; under ``jit`` use ``a.checked()``).

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> a = gj.ScaledGaussian(1.0, jnp.zeros(2), jnp.eye(2))
        >>> b = gj.ScaledGaussian(2.0, jnp.ones(2), 0.5 * jnp.eye(2))
        >>> out = gj.unbalanced_entropic_ot(a, b, 1.0, 2.0)
        >>> m_pi = out.plan.mass          # transported mass
        >>> pi_1, pi_2 = out.marginals
        >>> round(float(out.cost), 4), round(float(m_pi), 4)
        (3.4607, 0.9079)
        >>> round(float(pi_1.mass), 4), round(float(pi_2.mass), 4)  # both marginals carry m_pi
        (0.9079, 0.9079)
    """
    from . import lowrank  # lazy: lowrank builds on this module

    if lowrank.involves_measure(a, b):
        return lowrank.unbalanced_dispatch(a, b, epsilon, gamma)
    a, b = _check_measures(a, b)
    dtype = jnp.result_type(a.mean, b.mean)
    eps = _check_scalar("epsilon", epsilon, dtype)
    gam = _check_scalar("gamma", gamma, dtype)
    ma, mb = (jnp.asarray(g.mass, dtype) for g in (a, b))
    am, bm = (jnp.asarray(g.mean, dtype) for g in (a, b))
    A, B = (jnp.asarray(g.cov, dtype) for g in (a, b))
    sol = _uot(ma, am, A, mb, bm, B, eps, gam)
    if _checks.is_concrete(sol.cost, sol.mass) and not (
        np.isfinite(np.asarray(sol.cost)) and np.isfinite(np.asarray(sol.mass))
    ):
        raise ValueError(
            f"unbalanced_entropic_ot: the plan mass exp({float(sol.log_mass):.6g}) or the "
            f"masses' product is outside the range of {jnp.dtype(dtype).name}; rescale the "
            "masses (the plan's mean and covariance do not depend on them)"
        )
    d, mass, cov = a.dim, sol.mass, sol.cov
    plan = ScaledGaussian(mass, jnp.concatenate([sol.mean_x, sol.mean_y]), cov, validate=False)
    marginals = (
        ScaledGaussian(mass, sol.mean_x, cov[:d, :d], validate=False),
        ScaledGaussian(mass, sol.mean_y, cov[d:, d:], validate=False),
    )
    return UnbalancedEntropicOT(
        cost=sol.cost,
        plan=plan,
        marginals=marginals,
        cross_cov=cov[:d, d:],
        log_mass=sol.log_mass,
        destroyed_mass=(ma - mass, mb - mass),
        epsilon=eps,
        gamma=gam,
    )
