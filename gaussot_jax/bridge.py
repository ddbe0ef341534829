r"""Static Gaussian Schrödinger bridges in closed form [ADM25] (docs/adm25.md).

Marginals ``eta = N(m1, S1)`` on ``R^d1`` and ``mu = N(m2, S2)`` on ``R^d2``, and a
reference ``P0(dx, dy) = eta(dx) K(x, dy)`` with the linear-Gaussian kernel
``K(x, .) = N(alpha + beta x, tau)``. The bridge

    P* = argmin { KL(P || P0) : P in Pi(eta, mu) }

is the core problem of docs/core.md with ``W = beta^T tau^{-1}`` (``log dP0/d(eta ⊗ mu)``
has the cross term ``x^T W y``, the rest depends on the marginals only), so

    tau* = S  (= Cov(y | x) from the core solver),   beta* = tau* tau^{-1} beta = tau* W^T,
    alpha* = m2 - beta* m1,   P*(dx, dy) = eta(dx) N(alpha* + beta* x, tau*)(dy).

``d1`` and ``d2`` may differ (``beta`` is ``(d2, d1)``). The kernel's ``alpha`` does not
change the bridge, only the potentials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast, overload

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from . import _checks
from ._cholesky import chol_logdet
from ._pretty import Pretty
from .coupling import _gaussian_coupling
from .gaussians import AffineMap, Gaussian, LinearGaussianKernel, QuadraticPotential
from .linalg import sym

if TYPE_CHECKING:  # lowrank_bridge imports this module at run time
    from .lowrank import LowRankGaussian
    from .lowrank_bridge import IsotropicGaussianKernel, LowRankSchrodingerBridge

__all__ = ["SchrodingerBridge", "check_problem", "reference_weight", "schrodinger_bridge"]


class SchrodingerBridge(Pretty):
    """Result of :func:`schrodinger_bridge`: the static bridge and everything around it.

    Attributes:
        source: The ``x``-marginal ``N(m1, S1)`` (the first argument; also ``eta``).
        target: The ``y``-marginal ``N(m2, S2)`` (the second argument; also ``mu``).
        forward: ``y | x`` under the bridge: ``(alpha*, beta*, tau*)``.
        backward: ``x | y`` under the bridge (the Bayes map of ``forward`` under ``source``).
        cross_cov: ``C = Cov(x, y) = S1 W tau*`` under the bridge.
        plan: The bridge, a Gaussian on ``R^{d1 + d2}`` with covariance ``[[S1, C], [C^T, S2]]``.
        kl: ``KL(bridge || eta ⊗ kernel)``.
        rate: Predicted per-round contraction of Gaussian Sinkhorn's covariances, ``rho_max^4``.
        mean_rate: Per-round contraction of Sinkhorn's mean error, ``rho_max^2 = rate^{1/2}``.
        potentials: ``(U, V)`` with ``bridge(dx, dy) = exp(-U(x) - V(y)) eta(dx) kernel(x, dy)``.
        transport_map: The entropic (barycentric) map ``x -> E[y | x] = alpha* + beta* x``.
    """

    source: Gaussian
    """The ``x``-marginal ``N(m1, S1)``, the first argument."""
    target: Gaussian
    """The ``y``-marginal ``N(m2, S2)``, the second argument."""
    forward: LinearGaussianKernel
    """``y | x`` under the bridge: ``(alpha*, beta*, tau*)``."""
    backward: LinearGaussianKernel
    """``x | y`` under the bridge (the Bayes map of ``forward`` under ``eta``)."""
    cross_cov: Float[Array, "d1 d2"]
    """``C = Cov(x, y) = S1 W tau*`` under the bridge."""
    plan: Gaussian
    """The bridge, a Gaussian on ``R^{d1 + d2}`` with covariance ``[[S1, C], [C^T, S2]]``."""
    kl: Float[Array, ""]
    """``KL(bridge || eta ⊗ kernel)``."""
    rate: Float[Array, ""]
    """Predicted per-round contraction of Gaussian Sinkhorn's covariances, ``rho_max^4``."""
    mean_rate: Float[Array, ""]
    """Per-round contraction of Sinkhorn's mean error, ``rho_max^2 = rate^{1/2}``."""
    potentials: tuple[QuadraticPotential, QuadraticPotential]
    """``(U, V)`` with ``bridge(dx, dy) = exp(-U(x) - V(y)) eta(dx) kernel(x, dy)``."""
    transport_map: AffineMap
    """The entropic (barycentric) map ``x -> E[y | x] = alpha* + beta* x``."""

    @property
    def eta(self) -> Gaussian:
        """The source marginal, [ADM25]'s ``eta`` (same as :attr:`source`)."""
        return self.source

    @property
    def mu(self) -> Gaussian:
        """The target marginal, [ADM25]'s ``mu`` (same as :attr:`target`)."""
        return self.target

    def sample(
        self, key: PRNGKeyArray, shape: tuple[int, ...] = ()
    ) -> tuple[Float[Array, "*shape d1"], Float[Array, "*shape d2"]]:
        """Pairs ``(x, y)`` from the bridge: ``x ~ source``, ``y ~ forward(x)``.

        Args:
            key: a PRNG key.
            shape: batch shape of the sample.

        Returns:
            ``x`` of shape ``(*shape, d1)`` and ``y`` of shape ``(*shape, d2)``.
        """
        kx, ky = jax.random.split(key)
        x = self.source.sample(kx, shape)
        noise = Gaussian(jnp.zeros_like(self.forward.alpha), self.forward.tau, validate=False)
        y = self.forward.alpha + x @ self.forward.beta.T + noise.sample(ky, shape)
        return x, y


def check_problem(
    eta: Gaussian, mu: Gaussian, kernel: LinearGaussianKernel, *, eta_definite: bool = False
) -> tuple[Gaussian, Gaussian, LinearGaussianKernel]:
    """Shapes of a bridge problem agree; ``tau`` (and ``mu.cov``) positive definite.

    Returns:
        ``(eta, mu, kernel)``: traced arguments wrapped in their run-time checks
        (``eqx.error_if``) inside ``gj.checks()``, unchanged otherwise. Use the returned
        values: a check fires only for values the computation depends on.

    Raises:
        ValueError: naming the argument and the problem.
    """
    for name, g in (("eta", eta), ("mu", mu)):
        _checks.check_single(name, g, Gaussian)
    _checks.check_single("kernel", kernel, LinearGaussianKernel)
    d1, d2 = kernel.dims
    if (eta.dim, mu.dim) != (d1, d2):
        raise ValueError(
            f"shapes disagree: kernel maps R^{d1} -> R^{d2} (beta {kernel.beta.shape}), "
            f"but eta is on R^{eta.dim} and mu on R^{mu.dim}"
        )
    _checks.check_cov("kernel.tau", kernel.tau, definite=True)
    _checks.check_cov("mu.cov", mu.cov, definite=True)
    if eta_definite:
        _checks.check_cov("eta.cov", eta.cov, definite=True)
    return (
        _checks.check_measure("eta", eta, definite=eta_definite),
        _checks.check_measure("mu", mu, definite=True),
        _checks.check_measure("kernel", kernel, definite=True),
    )


def _chol_solve(L: Array, B: Array) -> Array:
    return jax.scipy.linalg.cho_solve((L, True), B)


def _weight(kernel: LinearGaussianKernel) -> tuple[Array, Array]:
    """``(L, W)``: the Cholesky factor of ``tau`` and ``W = beta^T tau^{-1}`` from it."""
    L = jnp.linalg.cholesky(sym(kernel.tau))
    return L, _chol_solve(L, kernel.beta).T


def reference_weight(kernel: LinearGaussianKernel) -> Float[Array, "d1 d2"]:
    """``W = beta^T tau^{-1}`` by a Cholesky solve (no explicit inverse)."""
    return _weight(kernel)[1]


def _rate_terms(H: Array) -> tuple[Array, Array]:
    # The rate matrix varpi = S1^{1/2} W S2 W^T S1^{1/2} = X X^T with X = S1^{1/2} W S2^{1/2}
    # has the nonzero eigenvalues of X^T X = H, the core solver's matrix; so
    # r = ((I + 4 varpi)^{1/2} - I) / 2 has the top eigenvalue l = 2 w / (1 + (1 + 4 w)^{1/2}),
    # w = lambda_max(H), without cancellation. l / (1 + l) = rho_max^2 (see
    # schrodinger_bridge's docstring).
    w = jnp.maximum(jnp.linalg.eigvalsh(H)[-1], 0.0)
    lmax = 2.0 * w / (1.0 + jnp.sqrt(1.0 + 4.0 * w))
    rho2 = lmax / (1.0 + lmax)
    return rho2**2, rho2


@jax.jit  # jit policy (docs/conventions.md#jit)
def _bridge(eta: Gaussian, mu: Gaussian, kernel: LinearGaussianKernel) -> SchrodingerBridge:
    m1, S1, m2 = eta.mean, eta.cov, mu.mean
    alpha, beta, tau = kernel.alpha, kernel.beta, kernel.tau
    L, W = _weight(kernel)  # W = beta^T tau^{-1}, (d1, d2)
    # The core coupling: forward = (alpha*, beta*, tau*) = (m2 - beta* m1, tau* W^T, S).
    cp = _gaussian_coupling(eta, mu, W)
    forward = cp.forward
    alpha_s, beta_s, tau_s = forward.alpha, forward.beta, forward.tau
    backward = forward.bayes(eta)
    plan = cp.plan

    # KL(P* || P0) = E_eta KL(N(m*(x), tau*) || N(m(x), tau)), m*(x) - m(x) = delta + D x:
    # 1/2 [Tr(tau^{-1} tau*) - d2 + logdet tau - logdet tau*
    #      + |L^{-1}(delta + D m1)|^2 + Tr(tau^{-1} D S1 D^T)].
    Ls = jnp.linalg.cholesky(tau_s)
    D = beta_s - beta
    shift = jax.scipy.linalg.solve_triangular(L, m2 - alpha - beta @ m1, lower=True)
    Z = jax.scipy.linalg.solve_triangular(L, Ls, lower=True)
    LD = jax.scipy.linalg.solve_triangular(L, D, lower=True)
    kl = 0.5 * (
        jnp.sum(Z**2)
        - mu.dim
        + chol_logdet(L)
        - chol_logdet(Ls)
        + jnp.sum(shift**2)
        + jnp.sum(LD * (LD @ S1))  # Tr(tau^{-1} D S1 D^T)
    )

    # Potentials (docs/adm25.md, c = 0); tau*^{-1} beta* = tau^{-1} beta = W^T gives the
    # quadratic and linear parts of U without inverses.
    ta = _chol_solve(L, alpha)
    ta_s = _chol_solve(Ls, alpha_s)
    eye = jnp.eye(mu.dim, dtype=m2.dtype)
    U = QuadraticPotential(
        quad=sym(W @ (tau_s - tau) @ W.T),
        lin=W @ (alpha_s - alpha),
        const=0.5 * (alpha_s @ ta_s - alpha @ ta + chol_logdet(Ls) - chol_logdet(L)),
    )
    V = QuadraticPotential(
        quad=sym(_chol_solve(Ls, eye) - _chol_solve(L, eye)),
        lin=ta - ta_s,
        const=jnp.zeros((), m2.dtype),
    )
    rate, mean_rate = _rate_terms(cp.solution.core_matrix)
    return SchrodingerBridge(
        source=eta,
        target=mu,
        forward=forward,
        backward=backward,
        cross_cov=cp.solution.cross_cov,
        plan=plan,
        kl=kl,
        rate=rate,
        mean_rate=mean_rate,
        potentials=(U, V),
        transport_map=cp.transport_map,
    )


@overload
def schrodinger_bridge(
    eta: Gaussian, mu: Gaussian, kernel: LinearGaussianKernel
) -> SchrodingerBridge: ...
@overload
def schrodinger_bridge(
    eta: LowRankGaussian, mu: LowRankGaussian, kernel: IsotropicGaussianKernel
) -> LowRankSchrodingerBridge: ...
@overload
def schrodinger_bridge(
    eta: Gaussian | LowRankGaussian,
    mu: Gaussian | LowRankGaussian,
    kernel: LinearGaussianKernel | IsotropicGaussianKernel,
) -> SchrodingerBridge | LowRankSchrodingerBridge: ...
def schrodinger_bridge(
    eta: Gaussian | LowRankGaussian,
    mu: Gaussian | LowRankGaussian,
    kernel: LinearGaussianKernel | IsotropicGaussianKernel,
) -> SchrodingerBridge | LowRankSchrodingerBridge:
    r"""The static Schrödinger bridge between Gaussians in closed form [ADM25].

    Solves ``min { KL(P || eta(dx) K(x, dy)) : P in Pi(eta, mu) }`` for the kernel
    ``K(x, .) = N(alpha + beta x, tau)``: docs/core.md with ``W = beta^T tau^{-1}`` (a
    Cholesky solve with ``tau``; no inverse of ``S1``, ``S2`` or ``beta``) gives

        tau* = S2^{1/2} 2 (I + (I + 4H)^{1/2})^{-1} S2^{1/2},  H = S2^{1/2} W^T S1 W S2^{1/2},
        beta* = tau* W^T,  alpha* = m2 - beta* m1,  C = Cov(x, y) = S1 W tau*.

    Every Gaussian Sinkhorn iterate keeps ``beta_n^T tau_n^{-1} = W``.

    Rate [ADM25, Thm 5.1]: with ``varpi = S1^{1/2} W S2 W^T S1^{1/2}``,
    ``r = ((I + 4 varpi)^{1/2} - I) / 2`` and ``l = lambda_max(r)``, Sinkhorn's covariance
    error shrinks per round by ``rate = (l / (1 + l))^2``. Since the canonical
    correlations of the bridge satisfy ``rho_i^2 = 4 h_i / (1 + (1 + 4 h_i)^{1/2})^2
    = l_i / (1 + l_i)`` (``h_i`` the eigenvalues of ``H``, those of ``varpi``),
    ``rate = rho_max^4``. The mean error shrinks only by ``mean_rate = rho_max^2``.

    Potentials [ADM25, Thm 3.8], with ``m(x) = alpha + beta x``,
    ``m*(x) = alpha* + beta* x`` and the constant ``c = 0``:

        V(y) = 1/2 y^T (tau*^{-1} - tau^{-1}) y - y^T (tau*^{-1} alpha* - tau^{-1} alpha)
        U(x) = 1/2 m*(x)^T tau*^{-1} m*(x) - 1/2 m(x)^T tau^{-1} m(x)
               + 1/2 logdet tau* - 1/2 logdet tau.

    With ``alpha = 0, beta = I, tau = t I`` the bridge is the [JMPC20] plan of
    :func:`gaussot_jax.entropic_ot` with ``epsilon = 2 t``.

    Args:
        eta: ``N(m1, S1)`` on ``R^d1`` (``S1`` PSD).
        mu: ``N(m2, S2)`` on ``R^d2`` (``S2`` positive definite).
        kernel: ``LinearGaussianKernel(alpha (d2,), beta (d2, d1), tau (d2, d2))``,
            ``tau`` positive definite.

    Returns:
        :class:`SchrodingerBridge` with ``forward``, ``backward``, ``cross_cov``,
        ``plan``, ``kl``, ``rate``, ``mean_rate``, ``potentials`` ``(U, V)``,
        ``transport_map`` and a ``sample`` method. For :class:`gaussot_jax.LowRankGaussian`
        marginals and an :class:`gaussot_jax.IsotropicGaussianKernel`, the factored
        :class:`gaussot_jax.LowRankSchrodingerBridge` of
        :func:`gaussot_jax.lowrank_schrodinger_bridge` (``O(d k^2)``).

    Raises:
        ValueError: if the shapes disagree, or (for concrete inputs) ``kernel.tau`` or
            ``mu.cov`` is not positive definite.

    Examples:
        >>> import jax, jax.numpy as jnp, gaussot_jax as gj
        >>> eta = gj.Gaussian(jnp.zeros(2), jnp.eye(2))
        >>> mu = gj.Gaussian(jnp.ones(2), jnp.diag(jnp.array([2.0, 0.5])))
        >>> kernel = gj.LinearGaussianKernel(jnp.zeros(2), jnp.eye(2), 0.5 * jnp.eye(2))
        >>> br = gj.schrodinger_bridge(eta, mu, kernel)
        >>> U, V = br.potentials
        >>> x, y = br.sample(jax.random.PRNGKey(0), (100,))
        >>> x.shape, y.shape
        ((100, 2), (100, 2))
    """
    from . import lowrank, lowrank_bridge  # lazy: they build on this module

    if lowrank.involves(eta, mu) or isinstance(kernel, lowrank_bridge.IsotropicGaussianKernel):
        return lowrank_bridge.lowrank_schrodinger_bridge(eta, mu, kernel)
    # Neither is low-rank nor the kernel isotropic (dispatched above).
    eta, mu = cast(Gaussian, eta), cast(Gaussian, mu)
    kernel = cast(LinearGaussianKernel, kernel)
    eta, mu, kernel = check_problem(eta, mu, kernel)
    return _bridge(eta, mu, kernel)
