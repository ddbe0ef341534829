r"""The one core problem behind every closed form (docs/core.md).

For covariances ``A`` (of x), ``B`` (of y), PSD, and any square weight ``W``::

    maximise over C:  Tr(W C^T) - KL( N(0, [[A, C], [C^T, B]]) || N(0, A) ⊗ N(0, B) )

has the unique solution

    H = B^{1/2} W^T A W B^{1/2}
    S = B^{1/2} M B^{1/2},   M = 2 (I + (I + 4H)^{1/2})^{-1}   (S = Cov(y | x))
    C = A W S

which needs no inverse of ``A``, ``B`` or ``W`` and is exact for singular ``A`` or ``B``.
The optimality condition is ``S G S + S = B`` with ``G = W^T A W``. At the optimum

    KL = -1/2 logdet M = 1/2 sum_i log((1 + s_i) / 2),   s_i = (1 + 4 h_i)^{1/2},

``h_i`` the eigenvalues of ``H`` (those of ``A W B W^T``): finite at singular ``A, B``,
where the plug-in ``logdet`` form is ``-inf - -inf``.

Reductions: [JMPC20] balanced ``W = (2/eps) I``; [REF25] reference with precision
``Lambda``: ``W = (2/eps) I - Lambda12``; [ADM25] bridge: ``W = beta^T tau^{-1}``.

For measures ``N(a, A)``, ``N(b, B)`` the optimal coupling is
``N((a, b), [[A, C], [C^T, B]])`` with the conditional kernel
``y | x ~ N(b + S W^T (x - a), S)`` (``C^T A^{-1} = S W^T``, no inverse), whose mean is
the barycentric (entropic) transport map. :func:`_gaussian_coupling` assembles these once
for every paper's module, which adds only its cost, potentials and rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._cholesky import chol_logdet
from ._pretty import Pretty
from .gaussians import AffineMap, Gaussian, LinearGaussianKernel
from .linalg import psd_fn_unchecked as psd_fn
from .linalg import sqrtm_unchecked as sqrtm
from .linalg import sym

__all__ = ["Coupling", "isotropic_terms", "solve_coupling"]


class Coupling(Pretty):
    """Solution of the core problem (docs/core.md).

    Attributes:
        cross_cov: ``C = Cov(x, y)`` of the optimal Gaussian coupling.
        cond_cov: ``S = Cov(y | x) = B - C^T A^{-1} C`` (the Schur complement).
        kl: ``KL(coupling || N(0, A) ⊗ N(0, B))`` at the optimum.
        core_matrix: ``H = B^{1/2} W^T A W B^{1/2}`` (``d2 x d2``, symmetric PSD): its
            eigenvalues ``h_i`` give the KL above and, for a bridge, the Sinkhorn rate.
    """

    cross_cov: Float[Array, "d d"]
    """``C = Cov(x, y)`` of the optimal Gaussian coupling."""
    cond_cov: Float[Array, "d d"]
    """``S = Cov(y | x) = B - C^T A^{-1} C`` (the Schur complement)."""
    kl: Float[Array, ""]
    """``KL(coupling || N(0, A) ⊗ N(0, B))`` at the optimum."""
    core_matrix: Float[Array, "d2 d2"]
    """``H = B^{1/2} W^T A W B^{1/2}``, whose eigenvalues ``h_i`` give the KL."""


def _schur_factor(h):
    # 2 / (1 + sqrt(1 + 4h)): in (0, 1], no cancellation for any h >= 0.
    return 2.0 / (1.0 + jnp.sqrt(1.0 + 4.0 * h))


def solve_coupling(
    A: Float[Array, "d d"], B: Float[Array, "d d"], W: Float[Array, "d d"]
) -> Coupling:
    r"""Solve ``max_C Tr(W C^T) - KL(N(0, [[A, C], [C^T, B]]) || N(0, A) ⊗ N(0, B))``.

    docs/core.md: ``S = B^{1/2} 2 (I + (I + 4H)^{1/2})^{-1} B^{1/2}`` with
    ``H = B^{1/2} W^T A W B^{1/2}``, and ``C = A W S``. Two symmetric
    eigendecompositions (``B`` and ``H``), no inverse of ``A``, ``B`` or ``W``.

    Args:
        A: ``(d1, d1)`` covariance of ``x``, symmetric PSD.
        B: ``(d2, d2)`` covariance of ``y``, symmetric PSD.
        W: ``(d1, d2)`` weight (any matrix; need not be invertible).

    Returns:
        :class:`Coupling` with ``cross_cov`` C, ``cond_cov`` S, the optimal ``kl`` and
        ``core_matrix`` H.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> eps = 1.0
        >>> sol = gj.solve_coupling(jnp.eye(2), jnp.eye(2), (2 / eps) * jnp.eye(2))
        >>> round(float(sol.cross_cov[0, 0]), 4)  # [JMPC20]: sqrt(4 + 1/4) / 2 - 1/4
        0.7808
    """
    XB = sqrtm(B)
    H = sym(XB @ W.T @ A @ W @ XB)
    M = psd_fn(_schur_factor, H)
    S = sym(XB @ M @ XB)
    C = A @ W @ S
    kl = -0.5 * chol_logdet(jnp.linalg.cholesky(M))
    return Coupling(cross_cov=C, cond_cov=S, kl=kl, core_matrix=H)


class _GaussianCoupling(Pretty):
    """The optimal coupling of ``source = N(a, A)`` and ``target = N(b, B)`` for ``W``.

    Library internal: what every paper's module shares (plan, map, KL); built by
    :func:`_gaussian_coupling`.

    Attributes:
        source: ``N(a, A)``, the ``x``-marginal.
        target: ``N(b, B)``, the ``y``-marginal.
        weight: ``W``.
        solution: the core solver's :class:`Coupling` (``C``, ``S = Cov(y | x)``, ``KL``).
        forward: ``y | x ~ N(b + S W^T (x - a), S)``.
    """

    source: Gaussian
    target: Gaussian
    weight: Float[Array, "d1 d2"]
    solution: Coupling
    forward: LinearGaussianKernel

    @property
    def plan(self) -> Gaussian:
        """``N((a, b), [[A, C], [C^T, B]])`` on ``R^{d1 + d2}`` (assembled where it is used)."""
        a, b, A, B = self.source.mean, self.target.mean, self.source.cov, self.target.cov
        C = self.solution.cross_cov
        return Gaussian(jnp.concatenate([a, b]), sym(jnp.block([[A, C], [C.T, B]])), validate=False)

    @property
    def transport_map(self) -> AffineMap:
        """The barycentric (entropic) map ``x -> E[y | x] = b + S W^T (x - a)``."""
        return AffineMap(self.forward.beta, self.forward.alpha)

    def reverse(self) -> _GaussianCoupling:
        """The same problem with the roles of ``x`` and ``y`` exchanged (``B, A, W^T``).

        Its ``solution.cond_cov`` is ``Cov(x | y)`` and its ``forward`` the kernel ``x | y``
        (one more solve).
        """
        return _gaussian_coupling(self.target, self.source, self.weight.T)


def _gaussian_coupling(mu: Gaussian, nu: Gaussian, W: Float[Array, "d1 d2"]) -> _GaussianCoupling:
    """The optimal coupling of ``mu = N(a, A)`` and ``nu = N(b, B)`` for the weight ``W``.

    :func:`solve_coupling` on ``(A, B, W)``, its plan on ``R^{d1 + d2}`` and the kernel
    ``y | x`` with ``beta = S W^T`` (``= C^T A^{-1}``) and ``alpha = b - beta a``.
    """
    sol = solve_coupling(mu.cov, nu.cov, W)
    beta = sol.cond_cov @ W.T
    forward = LinearGaussianKernel(nu.mean - beta @ mu.mean, beta, sol.cond_cov, validate=False)
    return _GaussianCoupling(source=mu, target=nu, weight=W, solution=sol, forward=forward)


def isotropic_terms(lam: Array, w: Array) -> tuple[Array, Array]:
    r"""Per-eigenvalue terms of ``Tr C`` and ``KL`` at the optimum when ``W = w I``.

    With ``W = w I``, ``H = w^2 B^{1/2} A B^{1/2}`` has eigenvalues ``h = w^2 lam``,
    ``lam`` those of ``AB``, and ``C = w A S`` gives
    ``Tr C = w Tr(A B^{1/2} M B^{1/2}) = Tr(H M) / w``, so with ``s = (1 + 4h)^{1/2}``:

        Tr C = sum_i (s_i - 1) / (2 w) = sum_i 2 w lam_i / (1 + s_i)
        KL   = sum_i 1/2 log((1 + s_i) / 2) = sum_i 1/2 log1p((s_i - 1) / 2)

    both written without cancellation. Used with :func:`gaussot_jax.trace_fn`, whose
    gradient stays finite at singular covariances.

    Args:
        lam: eigenvalues of ``AB`` (any shape, elementwise).
        w: the scalar weight.

    Returns:
        ``(tr_c, kl)`` elementwise.
    """
    s = jnp.sqrt(1.0 + 4.0 * w**2 * lam)
    s_minus_1 = 4.0 * w**2 * lam / (1.0 + s)
    return 2.0 * w * lam / (1.0 + s), 0.5 * jnp.log1p(0.5 * s_minus_1)


# The balanced entropic summand [JMPC20] of Tr g(AB), shared by entropic.py and barycenter.py.
@jax.custom_jvp
def _balanced_g(lam, eps):
    # Per-eigenvalue value of E||x-y||^2 - (Tr A + Tr B) + eps KL at W = (2/eps) I.
    tr_c, kl = isotropic_terms(lam, 2.0 / eps)
    return -2.0 * tr_c + eps * kl


@_balanced_g.defjvp
def _balanced_g_jvp(primals, tangents):
    # g = (eps/2) [log((1+s)/2) - (s-1)], s = (1 + 16 lam/eps^2)^{1/2}. Differentiating,
    #   dg/dlam = -4 / (eps (1 + s))          (= -k(lam)/lam, barycenter.py)
    #   dg/deps = log((1+s)/2) / 2 = kl       (the envelope theorem: d OT / d eps = KL).
    # Autodiff of the value instead forms (s - 1)/2 - (s - 1)/2 + kl: terms of size
    # s ~ 4 lam^{1/2} / eps cancel (float32, variance 1e6, eps = 1e-3: 132.8 for 10.708).
    lam, eps = primals
    dlam, deps = tangents
    tr_c, kl = isotropic_terms(lam, 2.0 / eps)
    s = jnp.sqrt(1.0 + 16.0 * lam / eps**2)
    return -2.0 * tr_c + eps * kl, -4.0 / (eps * (1.0 + s)) * dlam + kl * deps


def _balanced_bounds(w_lo, eps):
    """``(L_k, L_g')`` on ``[w_lo, inf)`` for the certified gradient of ``trace_fn`` (``_trace``).

    With ``s = (1 + 16 w / eps^2)^{1/2}``: ``g' = -4 / (eps (1 + s))``, so
    ``k = w g' = -eps (s - 1) / 4``, ``k' = -2 / (eps s)`` and
    ``g'' = 32 / (eps^3 s (1 + s)^2)``; both ``|k'|`` and ``g''`` decrease in ``w``.
    """
    s = jnp.sqrt(1.0 + 16.0 * w_lo / eps**2)
    return 2.0 / (eps * s), 32.0 / (eps**3 * s * (1.0 + s) ** 2)
