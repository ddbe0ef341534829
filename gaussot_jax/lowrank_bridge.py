r"""Schrödinger bridges between low-rank-plus-isotropic Gaussians (docs/lowrank.md) [ADM25].

For marginals ``eta = N(m1, S1)``, ``mu = N(m2, S2)`` with ``S_i = U_i U_i^T + s_i I`` and an
isotropic kernel ``K(x, .) = N(alpha + b x, t I)`` (Brownian motion, Ornstein–Uhlenbeck:
``b`` and ``t`` scalars, ``alpha`` a vector), the bridge's weight is
``W = beta^T tau^{-1} = (b / t) I`` (:mod:`gaussot_jax.bridge`), a multiple of ``I``. The
core solver (docs/core.md) with such a ``W`` commutes with the joint-subspace splitting of
:mod:`gaussot_jax.lowrank`: ``tau* = S = Cov(y | x)``, ``beta* = (b/t) S`` and
``C = (b/t) S1 S`` all have the form ``Z M Z^T + c (I - Z Z^T)``, ``Z`` an orthonormal basis of
``span(U_1, U_2)``. Equivalently: the change of variables ``x' = alpha + b x`` turns the
kernel into the heat kernel ``N(x', t I)``, and the bridge into [JMPC20]'s entropic plan
between ``N(alpha + b m1, b^2 S1)`` (low-rank again) and ``mu`` with ``eps = 2 t``. So

* ``forward`` ``(alpha*, beta*, tau*)``, ``backward``, the plan and ``cross_cov`` are the
  dense bridge's on the zero-mean reduced pair ``(A_r, B_r)`` with the kernel
  ``(0, b I_r, t I_r)`` (the core), and on the 1-D pair ``(s_1, s_2)`` (the scalar), with
  ``alpha* = m2 - beta* m1``, ``alpha_back = m1 - beta_back m2``;
* ``KL(bridge || eta ⊗ K) = KL_r + (d - r) KL_1 + ||m2 - alpha - b m1||^2 / (2 t)``: the dense
  KL (``bridge.py``) is a sum of trace and log-determinant terms of block-diagonal matrices
  plus the mean term ``|tau^{-1/2}(m2 - alpha - beta m1)|^2 / 2``;
* ``rate`` / ``mean_rate``: the largest canonical correlation over both blocks;
* potentials ``U``, ``V`` [ADM25, Thm 3.8] from the factored ``tau*^{-1}`` (an inverse on the
  core and ``1 / scalar``) and ``logdet tau* = logdet core + (d - r) log scalar``.

``O(d k^2)`` time, ``O(d k)`` memory; no ``d x d`` matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from . import _checks
from ._pretty import Pretty
from .bridge import SchrodingerBridge, _bridge
from .gaussians import Gaussian, LinearGaussianKernel
from .lowrank import (
    MIXED_MAX_DIM,
    LowRankAffineMap,
    LowRankGaussian,
    LowRankPlan,
    LowRankQuadraticPotential,
    SubspaceOperator,
    _empty_like,
    _plan,
    _reduce_with_basis,
    _subspace,
)

__all__ = [
    "IsotropicGaussianKernel",
    "LowRankKernel",
    "LowRankSchrodingerBridge",
    "lowrank_schrodinger_bridge",
]


class IsotropicGaussianKernel(Pretty):
    r"""The Markov kernel ``K(x, .) = N(alpha + beta x, tau I)`` on ``R^d``, stored in ``O(d)``.

    ``beta`` and ``tau`` are scalars: Brownian motion ``dX = sigma dW`` over time ``T`` is
    ``(0, 1, sigma^2 T)``, the Ornstein–Uhlenbeck process ``dX = -theta (X - m) dt + sigma dW``
    is ``(m (1 - e^{-theta T}), e^{-theta T}, sigma^2 (1 - e^{-2 theta T}) / (2 theta))``.
    :func:`gaussot_jax.schrodinger_bridge` takes it with :class:`LowRankGaussian` marginals.

    Args:
        alpha: ``(d,)``.
        beta: scalar.
        tau: scalar ``> 0``.
        validate: check values when they are concrete.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> K = gj.IsotropicGaussianKernel(jnp.zeros(3), 1.0, 0.5)
        >>> K.to_dense().tau.shape
        (3, 3)
    """

    alpha: Float[Array, " d"]
    beta: Float[Array, ""]
    tau: Float[Array, ""]

    def __init__(self, alpha, beta, tau, *, validate: bool = True):
        alpha, beta, tau = _checks.common_float(alpha, beta, tau)
        if alpha.ndim != 1:
            raise ValueError(f"alpha must have shape (d,), got {alpha.shape}")
        for name, x in (("beta", beta), ("tau", tau)):
            if x.ndim != 0:
                raise ValueError(f"{name} must be a scalar, got shape {x.shape}")
        if validate:
            for name, x in (("alpha", alpha), ("beta", beta), ("tau", tau)):
                _checks.check_finite(name, x)
            _checks.check_positive("tau", tau)
        self.alpha, self.beta, self.tau = alpha, beta, tau

    @property
    def dim(self) -> int:
        """Dimension ``d``."""
        return self.alpha.shape[-1]

    def to_dense(self) -> LinearGaussianKernel:
        """The same kernel as a dense :class:`gaussot_jax.LinearGaussianKernel` (small ``d``)."""
        eye = jnp.eye(self.dim, dtype=self.alpha.dtype)
        return LinearGaussianKernel(self.alpha, self.beta * eye, self.tau * eye, validate=False)


class LowRankKernel(Pretty):
    """The kernel ``x -> N(alpha + beta x, tau)`` with factored ``beta`` and ``tau``.

    Attributes:
        alpha: ``(d,)``.
        beta: ``(d, d)`` as a :class:`SubspaceOperator`.
        tau: ``(d, d)`` symmetric PSD, as a :class:`SubspaceOperator`.
    """

    alpha: Float[Array, " d"]
    """``(d,)``."""
    beta: SubspaceOperator
    """``(d, d)`` as a :class:`SubspaceOperator`."""
    tau: SubspaceOperator
    """``(d, d)`` symmetric PSD, as a :class:`SubspaceOperator`."""

    def mean(self, x: Float[Array, "... d"]) -> Array:
        """``alpha + beta x`` at points ``(..., d)``."""
        return self.alpha + self.beta.apply(x)

    def sample(self, key: PRNGKeyArray, x: Float[Array, "... d"]) -> Array:
        """One draw ``y ~ N(alpha + beta x, tau)`` per point, ``O(d r)``."""
        z = jax.random.normal(key, jnp.shape(x), dtype=self.alpha.dtype)
        return self.mean(x) + self.tau.sqrt_apply(z)

    def to_dense(self) -> LinearGaussianKernel:
        """The dense :class:`gaussot_jax.LinearGaussianKernel` (small ``d`` only)."""
        return LinearGaussianKernel(
            self.alpha, self.beta.to_dense(), self.tau.to_dense(), validate=False
        )


class LowRankSchrodingerBridge(Pretty):
    """Result of :func:`lowrank_schrodinger_bridge`: a factored ``SchrodingerBridge``.

    ``cross_cov``, ``transport_map`` and ``sample`` are properties/methods, as there.

    Attributes:
        source: The ``x``-marginal ``N(m1, S1)``.
        target: The ``y``-marginal ``N(m2, S2)``.
        forward: ``y | x`` under the bridge: ``(alpha*, beta*, tau*)``, factored.
        backward: ``x | y`` under the bridge, factored.
        plan: The bridge, a Gaussian on ``R^{2d}`` with factored blocks.
        kl: ``KL(bridge || eta ⊗ kernel)``.
        rate: Predicted per-round contraction of Gaussian Sinkhorn's covariances.
        mean_rate: Per-round contraction of Sinkhorn's mean error.
        potentials: ``(U, V)`` with ``bridge = exp(-U(x) - V(y)) eta(dx) kernel(x, dy)``.
    """

    source: LowRankGaussian
    """The ``x``-marginal ``N(m1, S1)``."""
    target: LowRankGaussian
    """The ``y``-marginal ``N(m2, S2)``."""
    forward: LowRankKernel
    """``y | x`` under the bridge: ``(alpha*, beta*, tau*)``, factored."""
    backward: LowRankKernel
    """``x | y`` under the bridge, factored."""
    plan: LowRankPlan
    """The bridge, a Gaussian on ``R^{2d}`` with factored blocks."""
    kl: Float[Array, ""]
    """``KL(bridge || eta ⊗ kernel)``."""
    rate: Float[Array, ""]
    """Predicted per-round contraction of Gaussian Sinkhorn's covariances, ``rho_max^4``."""
    mean_rate: Float[Array, ""]
    """Per-round contraction of Sinkhorn's mean error, ``rho_max^2``."""
    potentials: tuple[LowRankQuadraticPotential, LowRankQuadraticPotential]
    """``(U, V)`` with ``bridge(dx, dy) = exp(-U(x) - V(y)) eta(dx) kernel(x, dy)``."""

    @property
    def cross_cov(self) -> SubspaceOperator:
        """``C = Cov(x, y)`` under the bridge."""
        return self.plan.cross_cov

    @property
    def transport_map(self) -> LowRankAffineMap:
        """The entropic (barycentric) map ``x -> E[y | x] = alpha* + beta* x``."""
        return LowRankAffineMap(self.forward.beta, self.forward.alpha)

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> tuple[Array, Array]:
        """Pairs ``(x, y)``: ``x ~ source``, ``y ~ forward(x)``, each ``(*shape, d)``."""
        kx, ky = jax.random.split(key)
        x = self.source.sample(kx, shape)
        return x, self.forward.sample(ky, x)


def _check(eta, mu, kernel) -> None:
    for name, g in (("eta", eta), ("mu", mu)):
        if not isinstance(g, LowRankGaussian | Gaussian):
            raise ValueError(
                f"{name} must be a LowRankGaussian or a Gaussian, got {type(g).__name__}"
            )
        if g.mean.ndim != 1:
            raise ValueError(
                f"{name} must be a single {type(g).__name__} (not a batch), got mean shape "
                f"{g.mean.shape}; use jax.vmap for batches"
            )
    if not isinstance(kernel, IsotropicGaussianKernel | LinearGaussianKernel):
        raise ValueError(
            "kernel must be an IsotropicGaussianKernel or a LinearGaussianKernel, got "
            f"{type(kernel).__name__}"
        )
    d = eta.dim
    d_kernel = kernel.dims[1] if isinstance(kernel, LinearGaussianKernel) else kernel.dim
    if mu.dim != d or d_kernel != d:
        raise ValueError(f"dimensions differ: eta has d={d}, mu d={mu.dim}, kernel d={d_kernel}")


def lowrank_schrodinger_bridge(
    eta: LowRankGaussian | Gaussian,
    mu: LowRankGaussian | Gaussian,
    kernel: IsotropicGaussianKernel | LinearGaussianKernel,
) -> LowRankSchrodingerBridge | SchrodingerBridge:
    r"""The static Schrödinger bridge [ADM25] between low-rank Gaussians, ``O(d k^2)``.

    ``min { KL(P || eta(dx) K(x, dy)) : P in Pi(eta, mu) }`` for the isotropic kernel
    ``K(x, .) = N(alpha + b x, t I)``: the weight ``W = (b/t) I`` makes the core solver split
    over the joint basis (module docstring), so ``tau* = Z T_r Z^T + t_1 (I - Z Z^T)``,
    ``beta* = (b/t) tau*``, ``alpha* = m2 - beta* m1``, and
    ``KL = KL_r + (d - r) KL_1 + ||m2 - alpha - b m1||^2 / (2t)`` from the dense bridge on the
    ``r``-dimensional and the 1-D zero-mean problems. :func:`gaussot_jax.schrodinger_bridge`
    dispatches here. Other combinations (a dense marginal, a dense kernel) are computed
    densely up to ``d = 2048`` and return :class:`gaussot_jax.SchrodingerBridge`.

    Args:
        eta: ``N(m1, U_1 U_1^T + s_1 I)``.
        mu: ``N(m2, U_2 U_2^T + s_2 I)``, ``s_2 > 0`` (positive definite, as for the dense
            bridge).
        kernel: :class:`IsotropicGaussianKernel` ``(alpha, b, t)``.

    Returns:
        :class:`LowRankSchrodingerBridge` with ``forward``, ``backward``, ``plan``, ``kl``,
        ``rate``, ``mean_rate``, ``potentials``, ``cross_cov``, ``transport_map``, ``sample``.

    Raises:
        ValueError: wrong types or shapes, ``mu.noise <= 0`` or ``kernel.tau <= 0`` (concrete
            values), or a dense argument with ``d > 2048``.

    Examples:
        >>> import jax, jax.numpy as jnp, gaussot_jax as gj
        >>> d = 100_000
        >>> eta = gj.LowRankGaussian(jnp.zeros(d), jnp.ones((d, 1)) / 100, 1.0)
        >>> mu = gj.LowRankGaussian(jnp.ones(d), jnp.zeros((d, 0)), 2.0)
        >>> br = gj.schrodinger_bridge(eta, mu, gj.IsotropicGaussianKernel(jnp.zeros(d), 1.0, 0.5))
        >>> x, y = br.sample(jax.random.PRNGKey(0), (2,))
        >>> y.shape, bool(br.kl > 0)
        ((2, 100000), True)
    """
    _check(eta, mu, kernel)
    if not (
        isinstance(eta, LowRankGaussian)
        and isinstance(mu, LowRankGaussian)
        and isinstance(kernel, IsotropicGaussianKernel)
    ):
        if eta.dim > MIXED_MAX_DIM:
            raise ValueError(
                f"schrodinger_bridge at d={eta.dim} > {MIXED_MAX_DIM} needs two LowRankGaussian "
                "marginals and an IsotropicGaussianKernel (the factored path); got "
                f"{type(eta).__name__}, {type(mu).__name__}, {type(kernel).__name__}"
            )
        from .bridge import schrodinger_bridge

        dense = [g.to_dense() if isinstance(g, LowRankGaussian) else g for g in (eta, mu)]
        k = kernel.to_dense() if isinstance(kernel, IsotropicGaussianKernel) else kernel
        return schrodinger_bridge(dense[0], dense[1], k)
    _checks.check_positive("mu.noise", mu.noise)
    return _lowrank_bridge(eta, mu, kernel)


@jax.jit  # jit policy (docs/conventions.md#jit)
def _lowrank_bridge(
    eta: LowRankGaussian, mu: LowRankGaussian, kernel: IsotropicGaussianKernel
) -> LowRankSchrodingerBridge:
    Z, red = _reduce_with_basis(eta, mu)
    dtype = red.sa.dtype
    b, t = kernel.beta.astype(dtype), kernel.tau.astype(dtype)
    m1, m2 = eta.mean.astype(dtype), mu.mean.astype(dtype)
    alpha = kernel.alpha.astype(dtype)

    def dense_bridge(S1, S2):
        n = S1.shape[0]
        z, eye = jnp.zeros(n, dtype), jnp.eye(n, dtype=dtype)
        k = LinearGaussianKernel(z, b * eye, t * eye, validate=False)
        return _bridge(Gaussian(z, S1, validate=False), Gaussian(z, S2, validate=False), k)

    br_1 = dense_bridge(red.sa[None, None], red.sb[None, None])
    if red.A.shape[0]:
        br_r = dense_bridge(red.A, red.B)
    else:
        br_r = jax.tree_util.tree_map(_empty_like, br_1)

    def op(field):
        return _subspace(Z, field(br_r), field(br_1)[0, 0])

    tau_s = op(lambda br: br.forward.tau)
    beta_s = op(lambda br: br.forward.beta)
    forward = LowRankKernel(m2 - beta_s.apply(m1), beta_s, tau_s)
    beta_b = op(lambda br: br.backward.beta)
    backward = LowRankKernel(m1 - beta_b.apply(m2), beta_b, op(lambda br: br.backward.tau))
    plan = _plan(m1, m2, Z, br_r.plan.cov, br_1.plan.cov)
    shift = m2 - alpha - b * m1
    kl = br_r.kl + red.n_perp * br_1.kl + jnp.sum(shift**2) / (2.0 * t)
    if red.n_perp:
        rate, mean_rate = (
            jnp.maximum(br_r.rate, br_1.rate),
            jnp.maximum(br_r.mean_rate, br_1.mean_rate),
        )
    else:
        rate, mean_rate = br_r.rate, br_r.mean_rate
    # Potentials (bridge.py, [ADM25, Thm 3.8]) with W = (b/t) I, tau = t I:
    #   U: quad W (tau* - tau) W^T, lin W (alpha* - alpha),
    #      const (alpha*^T tau*^{-1} alpha* - |alpha|^2 / t + logdet tau* - d log t) / 2;
    #   V: quad tau*^{-1} - I/t, lin alpha / t - tau*^{-1} alpha*, const 0.
    w = b / t
    d = eta.dim
    alpha_s = forward.alpha
    tau_inv = tau_s.inverse()
    ta_s = tau_inv.apply(alpha_s)
    U = LowRankQuadraticPotential(
        SubspaceOperator(
            Z, w**2 * (tau_s.core - t * jnp.eye(Z.shape[1], dtype=dtype)), w**2 * (tau_s.scalar - t)
        ),
        w * (alpha_s - alpha),
        0.5 * (alpha_s @ ta_s - alpha @ alpha / t + tau_s.logdet() - d * jnp.log(t)),
    )
    V = LowRankQuadraticPotential(
        SubspaceOperator(
            Z, tau_inv.core - jnp.eye(Z.shape[1], dtype=dtype) / t, tau_inv.scalar - 1.0 / t
        ),
        alpha / t - ta_s,
        jnp.zeros((), dtype),
    )
    return LowRankSchrodingerBridge(
        source=eta,
        target=mu,
        forward=forward,
        backward=backward,
        plan=plan,
        kl=kl,
        rate=rate,
        mean_rate=mean_rate,
        potentials=(U, V),
    )
