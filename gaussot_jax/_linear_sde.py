r"""Linear SDE references: Brownian, OU and ``dX = (M X + c) dt + G dW`` transition kernels.

The public names are re-exported by :mod:`gaussot_jax.sde`.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import _checks
from ._pretty import Pretty
from ._sde_checks import _check_dim, _check_scalar, _check_sde_arrays
from ._sde_kernels import _phi, _transition
from .gaussians import LinearGaussianKernel
from .linalg import sym


# --------------------------------------------------------------------------------------
# Public constructors of transition kernels.
# --------------------------------------------------------------------------------------
def brownian_kernel(d: int, T, *, sigma=1.0) -> LinearGaussianKernel:
    r"""Time-``T`` transition of Brownian motion ``dX = sigma dW`` on ``R^d``.

    ``K(x, .) = N(x, sigma^2 T I)``: ``(alpha, beta, tau) = (0, I, sigma^2 T I)``
    (docs/adm25.md, [ADM25] §3.5, where ``tau = t I`` is the heat kernel at time ``t``).

    Args:
        d: dimension (Python int).
        T: time horizon, scalar ``> 0``.
        sigma: diffusion scale, scalar ``> 0``.

    Returns:
        The :class:`LinearGaussianKernel` ``(0, I, sigma^2 T I)``.

    Examples:
        >>> import gaussot_jax as gj
        >>> K = gj.brownian_kernel(2, 0.5)
        >>> float(K.tau[0, 0])
        0.5
    """
    d = _check_dim(d)
    T, sigma = _checks.common_float(T, sigma)
    _check_scalar("T", T)
    _check_scalar("sigma", sigma)
    T = _checks.check_positive("T", T)
    sigma = _checks.check_positive("sigma", sigma)
    eye = jnp.eye(d, dtype=T.dtype)
    return LinearGaussianKernel(jnp.zeros(d, T.dtype), eye, sigma**2 * T * eye, validate=False)


def ou_kernel(d: int, T, theta, sigma, *, mean=0.0) -> LinearGaussianKernel:
    r"""Time-``T`` transition of the Ornstein–Uhlenbeck process on ``R^d``.

    The SDE is ``dX = theta (mean - X) dt + sigma dW`` (docs/adm25.md's ``-theta X dt + s dW``
    is ``mean = 0``), with transition::

        beta  = e^{-theta T} I,
        alpha = (1 - e^{-theta T}) mean,
        tau   = sigma^2 (1 - e^{-2 theta T}) / (2 theta) I

    evaluated as ``sigma^2 T phi(2 theta T)``, ``phi(x) = (1 - e^{-x}) / x``, which is exact
    and smooth through ``theta = 0`` (Brownian motion). ``theta < 0`` (an unstable,
    mean-repelling process) is allowed.

    Args:
        d: dimension (Python int).
        T: time horizon, scalar ``> 0``.
        theta: mean-reversion rate, scalar.
        sigma: diffusion scale, scalar ``> 0``.
        mean: long-run mean, scalar or ``(d,)``.

    Returns:
        The :class:`LinearGaussianKernel` of ``X_T | X_0``.

    Examples:
        >>> import gaussot_jax as gj
        >>> K = gj.ou_kernel(2, 1.0, theta=0.5, sigma=1.0)
        >>> round(float(K.beta[0, 0]), 5), round(float(K.tau[0, 0]), 5)  # e^{-1/2}, 1 - e^{-1}
        (0.60653, 0.63212)
    """
    d = _check_dim(d)
    T, theta, sigma, mean = _checks.common_float(T, theta, sigma, mean)
    for name, x in (("T", T), ("theta", theta), ("sigma", sigma)):
        _check_scalar(name, x)
    if jnp.ndim(mean) not in (0, 1) or (jnp.ndim(mean) == 1 and mean.shape != (d,)):
        raise ValueError(f"mean must be a scalar or have shape ({d},), got {jnp.shape(mean)}")
    T = _checks.check_positive("T", T)
    theta = _checks.check_finite("theta", theta)
    sigma = _checks.check_positive("sigma", sigma)
    mean = _checks.check_finite("mean", mean)
    eye = jnp.eye(d, dtype=T.dtype)
    decay = jnp.exp(-theta * T)
    alpha = -jnp.expm1(-theta * T) * jnp.broadcast_to(mean, (d,))
    tau = sigma**2 * T * _phi(2.0 * theta * T) * eye
    return LinearGaussianKernel(alpha, decay * eye, tau, validate=False)


def linear_sde_kernel(
    M: Float[Array, "d d"], c: Float[Array, " d"], G: Float[Array, "d m"], T
) -> LinearGaussianKernel:
    r"""Time-``T`` transition of the linear SDE ``dX = (M X + c) dt + G dW``.

    ``beta = e^{M T}``, ``alpha = ∫_0^T e^{M(T-s)} c ds``,
    ``tau = ∫_0^T e^{M(T-s)} G G^T e^{M^T(T-s)} ds`` (docs/adm25.md, [ADM25] Rmk 2.3), by
    Van Loan's block exponentials on a step ``T / 2^k`` (``||M T / 2^k||_1 <= 1/2``)
    followed by ``k`` semigroup doublings; see the module docstring. No inverse of ``M``
    (which may be singular, e.g. ``M = 0`` or an integrator chain) and no ``e^{-M T}`` (so
    no overflow for strongly mean-reverting ``M``). Differentiable in ``M, c, G, T`` (all
    orders, forward and reverse).

    Args:
        M: ``(d, d)`` drift matrix.
        c: ``(d,)`` drift offset.
        G: ``(d, m)`` diffusion matrix (any ``m``; ``G G^T`` may be singular).
        T: time horizon, scalar ``> 0``.

    Returns:
        The :class:`LinearGaussianKernel` ``(alpha, beta, tau)`` of ``X_T | X_0``.

    Raises:
        ValueError: shapes disagree, non-finite entries, or ``T <= 0`` (value checks when
            the inputs are concrete).

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> M = jnp.array([[0.0, 1.0], [0.0, 0.0]])  # integrated Brownian motion
        >>> K = gj.linear_sde_kernel(M, jnp.zeros(2), jnp.array([[0.0], [1.0]]), 1.0)
        >>> round(float(K.tau[0, 0]), 6)  # T^3 / 3
        0.333333
    """
    M, c, G, T = _checks.common_float(M, c, G, T)
    M, c, G = _check_sde_arrays(M, c, G)
    _check_scalar("T", T)
    T = _checks.check_positive("T", T)
    alpha, beta, tau = _transition(M, c, sym(G @ G.T), T)
    return LinearGaussianKernel(alpha, beta, tau, validate=False)


class LinearSDE(Pretty):
    r"""The time-homogeneous linear SDE ``dX = (M X + c) dt + G dW`` on ``R^d``.

    A reference process for Schrödinger bridges [ADM25, Rmk 2.3]: its transitions are
    :class:`LinearGaussianKernel` s (:meth:`kernel`, :meth:`transition`), and a static
    coupling of ``(X_0, X_T)`` is made dynamic by :func:`bridge_marginal` and
    :func:`sample_bridge_paths`.

    Args:
        M: ``(d, d)`` drift matrix.
        c: ``(d,)`` drift offset.
        G: ``(d, m)`` diffusion matrix.

    Examples:
        >>> import gaussot_jax as gj
        >>> sde = gj.LinearSDE.ornstein_uhlenbeck(2, theta=1.0, sigma=0.5)
        >>> K = sde.kernel(1.0)
        >>> round(float(K.beta[0, 0]), 5), round(float(K.tau[0, 0]), 5)  # e^{-1}, (1 - e^{-2})/8
        (0.36788, 0.10808)
    """

    M: Float[Array, "d d"]
    c: Float[Array, " d"]
    G: Float[Array, "d m"]

    def __init__(self, M, c, G):
        M, c, G = _checks.common_float(M, c, G)
        self.M, self.c, self.G = _check_sde_arrays(M, c, G)

    @classmethod
    def brownian(cls, d: int, *, sigma=1.0) -> LinearSDE:
        """Brownian motion ``dX = sigma dW`` (``M = 0, c = 0, G = sigma I``)."""
        d = _check_dim(d)
        (sigma,) = _checks.common_float(sigma)
        _check_scalar("sigma", sigma)
        sigma = _checks.check_positive("sigma", sigma)
        eye = jnp.eye(d, dtype=sigma.dtype)
        return cls(jnp.zeros_like(eye), jnp.zeros(d, sigma.dtype), sigma * eye)

    @classmethod
    def ornstein_uhlenbeck(cls, d: int, theta, sigma, *, mean=0.0) -> LinearSDE:
        """Ornstein–Uhlenbeck ``dX = theta (mean - X) dt + sigma dW`` (as :func:`ou_kernel`)."""
        d = _check_dim(d)
        theta, sigma, mean = _checks.common_float(theta, sigma, mean)
        _check_scalar("theta", theta)
        _check_scalar("sigma", sigma)
        if jnp.ndim(mean) not in (0, 1) or (jnp.ndim(mean) == 1 and mean.shape != (d,)):
            raise ValueError(f"mean must be a scalar or have shape ({d},), got {mean.shape}")
        theta = _checks.check_finite("theta", theta)
        sigma = _checks.check_positive("sigma", sigma)
        mean = _checks.check_finite("mean", mean)
        eye = jnp.eye(d, dtype=theta.dtype)
        return cls(-theta * eye, theta * jnp.broadcast_to(mean, (d,)), sigma * eye)

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the state."""
        return self.M.shape[-1]

    @property
    def diffusion(self) -> Float[Array, "d d"]:
        """``G G^T``."""
        return sym(self.G @ self.G.T)

    def kernel(self, T) -> LinearGaussianKernel:
        """Transition ``X_T | X_0`` over time ``T > 0``; see :func:`linear_sde_kernel`."""
        return linear_sde_kernel(self.M, self.c, self.G, T)

    def transition(self, s, t) -> LinearGaussianKernel:
        """Transition ``X_t | X_s`` for ``s < t``: time-homogeneous, so ``kernel(t - s)``."""
        s, t = _checks.common_float(s, t)
        _check_scalar("s", s)
        _check_scalar("t", t)
        if _checks.is_concrete(s, t):
            if not float(t) > float(s):
                raise ValueError(f"need s < t, got s={float(s)}, t={float(t)}")
        elif _checks.traced_checks():
            t = eqx.error_if(t, ~(t > s), "need s < t")
        return self.kernel(t - s)
