r"""Linear SDE references and the dynamic Schrödinger bridge (docs/adm25.md) [ADM25].

A time-homogeneous linear SDE ``dX = (M X + c) dt + G dW`` has Gaussian transitions
``X_T | X_0 = x ~ N(alpha + beta x, tau)`` [ADM25, Rmk 2.3, §3.3]::

    beta  = e^{M T}
    alpha = ∫_0^T e^{M (T - s)} c ds
    tau   = ∫_0^T e^{M (T - s)} G G^T e^{M^T (T - s)} ds

computed without any inverse of ``M`` (which may be singular) by one block-matrix
exponential (Van Loan, 1978), block upper triangular with diagonal ``(0, -M, M^T)``::

    F = [[0, 0, c^T], [0, -M, G G^T], [0, 0, M^T]],
    e^{F h} = [[1, 0, alpha(h)^T], [0, e^{-M h}, X(h)], [0, 0, e^{M^T h}]],
    beta(h) = (e^{M^T h})^T,   tau(h) = beta(h) X(h).

Taken at ``h = T``, ``e^{-M T}`` overflows (float32: ``||M|| T ≈ 90``) and ``tau`` loses
digits by cancellation long before; so the block is exponentiated on a short step
``h = T / 2^k`` with ``||M h||_1 <= 1/2`` (a fixed-degree Taylor series suffices there) and
the transition is then doubled ``k`` times by the semigroup (Chapman–Kolmogorov) law, a sum
of PSD terms with no cancellation::

    beta(2h) = beta(h)^2,  alpha(2h) = alpha(h) + beta(h) alpha(h),
    tau(2h) = tau(h) + beta(h) tau(h) beta(h)^T.

The dynamic bridge: a static coupling ``plan`` of ``(X_0, X_T)`` (e.g. the Schrödinger
bridge) is completed into a path measure by running the reference process pinned at both
ends. Given ``X_0 = x``, ``X_T = y`` the reference's ``X_t`` is Gaussian (Kalman update of
``N(alpha_t + beta_t x, tau_t)`` by the observation ``y = alpha_r + beta_r X_t + noise``,
``r = T - t``)::

    P = beta_r tau_t beta_r^T + tau_r  (= tau_T),   g = tau_t beta_r^T P^{-1}
    X_t | x, y ~ N(u + B_x x + B_y y, Sigma_t),
    B_x = beta_t - g beta_T,  B_y = g,  u = alpha_t - g alpha_T,
    Sigma_t = (I - g beta_r) tau_t (I - g beta_r)^T + g tau_r g^T   (Joseph form, PSD)

and its time-``t`` marginal is this kernel pushed forward through the plan.
"""

from __future__ import annotations

import functools
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_factor, cho_solve
from jaxtyping import Array, Float, PRNGKeyArray

from . import _checks
from ._pretty import Pretty
from .gaussians import Gaussian, LinearGaussianKernel
from .linalg import sqrtm_unchecked as sqrtm
from .linalg import sym

__all__ = [
    "LinearSDE",
    "bridge_marginal",
    "brownian_kernel",
    "linear_sde_kernel",
    "ou_kernel",
    "pinned_kernel",
    "sample_bridge_paths",
]

# Largest number of doublings: covers ||M||_1 T up to 2^39.
_MAX_DOUBLINGS = 40
# Taylor degree of the block exponential on the short step (see _block_expm).
_TAYLOR_DEGREE = 18


# --------------------------------------------------------------------------------------
# Private differentiable kernels (no validation).
# --------------------------------------------------------------------------------------
def _block_expm(F):
    """``e^F`` by its Taylor series (Horner), for ``F`` with ``||F||`` about ``1/2``.

    Used on Van Loan's block at the short step, where the scaling is already done by the
    doublings. The diagonal blocks have norm ``<= 1/2``, and ``c`` and ``G G^T`` enter each
    block of ``e^F`` linearly (the block below them is zero), so the truncation error of
    every block relative to its size is below ``(1/2)^18 / 19! ≈ 3e-23`` at degree
    ``_TAYLOR_DEGREE = 18``, whatever ``||c||`` and ``||G G^T||``. Matmuls only: small to
    compile and to differentiate (``jax.scipy.linalg.expm`` compiles every Padé branch,
    seconds per shape under ``grad``, and its own scaling would repeat the doublings').
    """
    eye = jnp.eye(F.shape[0], dtype=F.dtype)

    def horner(E, j):
        return eye + (F @ E) / j, None

    degrees = jnp.arange(_TAYLOR_DEGREE, 0, -1).astype(F.dtype)
    return jax.lax.scan(horner, eye, degrees)[0]


@jax.jit
def _transition(M, c, Q, h):
    """``(alpha, beta, tau)`` of ``dX = (M X + c) dt + Q^{1/2} dW`` over time ``h >= 0``."""
    d = M.shape[0]
    # Number of doublings k: ||M h / 2^k||_1 <= 1/2. An integer, so no gradient flows
    # through it; the result is the same smooth function of (M, c, Q, h) for every k.
    norm = jax.lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(M), axis=0)) * jnp.abs(h))
    k = jnp.clip(jnp.ceil(jnp.log2(2.0 * norm)), 0, _MAX_DOUBLINGS)
    k = jnp.where(jnp.isfinite(k), k, 0).astype(jnp.int32)
    step = h / (2.0 ** k.astype(h.dtype))

    # One Van Loan block for all three (block upper triangular, diagonal (0, -M, M^T)):
    #   F = [[0, 0, c^T], [0, -M, Q], [0, 0, M^T]],
    #   e^{F h} = [[1, 0, alpha(h)^T], [0, e^{-M h}, X], [0, 0, e^{M^T h}]],
    #   beta(h) = (e^{M^T h})^T,  tau(h) = beta(h) X.
    z1, zd = jnp.zeros((1, d), M.dtype), jnp.zeros((d, 1), M.dtype)
    F = jnp.block(
        [
            [jnp.zeros((1, 1), M.dtype), z1, c[None, :]],
            [zd, -M, Q],
            [zd, jnp.zeros_like(M), M.T],
        ]
    )
    E = _block_expm(F * step)
    alpha, beta = E[0, d + 1 :], E[d + 1 :, d + 1 :].T
    tau = sym(beta @ E[1 : d + 1, d + 1 :])

    def double(carry, i):
        a, b, t = carry
        new = (a + b @ a, b @ b, sym(t + b @ t @ b.T))
        keep = i < k
        return tuple(jnp.where(keep, n, o) for n, o in zip(new, carry)), None

    (alpha, beta, tau), _ = jax.lax.scan(double, (alpha, beta, tau), jnp.arange(_MAX_DOUBLINGS))
    return alpha, beta, tau


@jax.jit
def _pinned(M, c, Q, t, T):
    """``(u, [B_x, B_y], Sigma_t)``: the law of ``X_t`` given ``(X_0, X_T)``."""
    d = M.shape[0]
    (a_t, a_r), (b_t, b_r), (S_t, S_r) = jax.vmap(_transition, (None, None, None, 0))(
        M, c, Q, jnp.stack([t, T - t])
    )
    P = sym(b_r @ S_t @ b_r.T + S_r)
    gain = cho_solve(cho_factor(P, lower=True), b_r @ S_t).T
    a_T, b_T = a_r + b_r @ a_t, b_r @ b_t
    R = jnp.eye(d, dtype=M.dtype) - gain @ b_r
    Sigma = sym(R @ S_t @ R.T + gain @ S_r @ gain.T)
    u = a_t - gain @ a_T
    return u, jnp.concatenate([b_t - gain @ b_T, gain], axis=1), Sigma


@functools.partial(jax.jit, static_argnums=8)
def _sample_paths(key, M, c, Q, mean, cov, T, times, n):
    d, dtype = M.shape[0], M.dtype
    key_ends, key_path = jax.random.split(key)
    z = jax.random.normal(key_ends, (n, 2 * d), dtype)
    ends = mean + z @ sqrtm(cov)
    x0, xT = ends[:, :d], ends[:, d:]
    eye = jnp.eye(d, dtype=dtype)

    def step(carry, inp):
        s, x = carry
        t, k = inp
        u, B, Sigma = _pinned(M, c, Q, t - s, T - s)
        # At t = s or t = T the pinned law is a point mass (Sigma = 0); sqrtm's derivative
        # is 0/0 there, so factor a placeholder and drop the noise (double-where).
        point = (t <= s) | (t >= T)
        root = sqrtm(cast(Array, jnp.where(point, eye, Sigma)))
        noise = jnp.where(point, 0.0, jax.random.normal(k, (n, d), dtype) @ root)
        x_new = u + x @ B[:, :d].T + xT @ B[:, d:].T + noise
        return (t, x_new), x_new

    keys = jax.random.split(key_path, times.shape[0])
    _, path = jax.lax.scan(step, (jnp.zeros((), dtype), x0), (times, keys))
    return jnp.swapaxes(path, 0, 1)


def _phi(x):
    """``(1 - e^{-x}) / x``, smooth through ``x = 0`` (value and derivatives)."""
    small = jnp.abs(x) < 1e-4
    xs = cast(Array, jnp.where(small, 1.0, x))
    series = 1.0 - x / 2.0 + x**2 / 6.0 - x**3 / 24.0
    return jnp.where(small, series, -jnp.expm1(-xs) / xs)


# --------------------------------------------------------------------------------------
# Validation helpers.
# --------------------------------------------------------------------------------------
def _check_scalar(name: str, x) -> None:
    if jnp.ndim(x) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(x)}")


def _check_sde_arrays(M, c, G) -> tuple[Array, Array, Array]:
    _checks.check_square("M", M)
    d = M.shape[-1]
    if M.ndim != 2:
        raise ValueError(f"M must have shape (d, d), got {M.shape}; use jax.vmap for batches")
    if jnp.shape(c) != (d,):
        raise ValueError(f"c must have shape ({d},) to match M {M.shape}, got {jnp.shape(c)}")
    if jnp.ndim(G) != 2 or jnp.shape(G)[0] != d:
        raise ValueError(f"G must have shape ({d}, m) to match M {M.shape}, got {jnp.shape(G)}")
    M, c, G = (_checks.check_finite(name, x) for name, x in (("M", M), ("c", c), ("G", G)))
    return M, c, G


def _check_dim(d) -> int:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be a positive Python int, got {d!r}")
    return int(d)


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


# --------------------------------------------------------------------------------------
# The dynamic bridge.
# --------------------------------------------------------------------------------------
def _check_sde(sde) -> None:
    if not isinstance(sde, LinearSDE):
        raise ValueError(f"sde must be a LinearSDE, got {type(sde).__name__}")


def _check_times(t, T, *, t_name: str = "t") -> tuple[Array, Array]:
    """``(t, T)``: ``T > 0``, ``t`` finite in ``[0, T]`` (traced: under ``gj.checks()``)."""
    _check_scalar("T", T)
    T = _checks.check_positive("T", T)
    if _checks.is_concrete(t, T):
        tt = np.asarray(t)
        if not np.all(np.isfinite(tt)):
            raise ValueError(f"{t_name} contains NaN or inf")
        if np.any(tt < 0) or np.any(tt > float(T)):
            raise ValueError(f"{t_name} must lie in [0, T] = [0, {float(T)}], got {tt}")
    elif _checks.traced_checks():
        bad = ~jnp.all(jnp.isfinite(t) & (t >= 0) & (t <= T))
        t = eqx.error_if(t, bad, f"{t_name} must lie in [0, T] (and be finite)")
    return t, T


def _check_pinnable(sde: LinearSDE, T) -> Array:
    """``T``; the bridge needs ``tau_T`` positive definite (traced: under ``gj.checks()``)."""
    if not _checks.is_concrete(sde, T):
        if _checks.traced_checks():
            _, _, tau = _transition(sde.M, sde.c, sde.diffusion, T)
            T = eqx.error_if(
                T,
                _checks.not_definite(tau),
                "the reference transition covariance tau_T is not positive definite, so "
                "X_0 and X_T cannot be pinned",
            )
        return T
    _, _, tau = _transition(sde.M, sde.c, sde.diffusion, T)
    try:
        _checks.check_cov("tau_T", tau, definite=True)
    except ValueError as err:
        raise ValueError(
            "the reference transition covariance tau_T is not positive definite, so "
            "X_0 and X_T cannot be pinned (make G G^T nonsingular or (M, G) "
            f"controllable): {err}"
        ) from None
    return T


def _check_plan(plan, d: int) -> None:
    if not isinstance(plan, Gaussian):
        raise ValueError(f"plan must be a Gaussian, got {type(plan).__name__}")
    if plan.mean.shape != (2 * d,):
        raise ValueError(
            f"plan must be a single Gaussian on R^(2d) = R^{2 * d} of (X_0, X_T) for an "
            f"sde of dimension {d}, got mean shape {plan.mean.shape}"
        )


def pinned_kernel(sde: LinearSDE, t, T) -> LinearGaussianKernel:
    r"""The law of the reference's ``X_t`` given its endpoints ``(X_0, X_T) = (x, y)``.

    Conditioning the Gaussian ``(X_0, X_t, X_T)`` of the reference SDE (docs/adm25.md,
    [ADM25] §3.3; a pinned linear diffusion) is a Kalman update of
    ``N(alpha_t + beta_t x, tau_t)`` by ``y = alpha_r + beta_r X_t + N(0, tau_r)``,
    ``r = T - t``::

        g = tau_t beta_r^T tau_T^{-1},
        X_t | x, y ~ N(alpha_t - g alpha_T + (beta_t - g beta_T) x + g y, Sigma_t),
        Sigma_t = (I - g beta_r) tau_t (I - g beta_r)^T + g tau_r g^T.

    For Brownian motion this is the Brownian bridge
    ``N((1 - t/T) x + (t/T) y, sigma^2 t (T - t) / T I)``.

    Args:
        sde: the reference :class:`LinearSDE` (``tau_T`` must be positive definite).
        t: time in ``[0, T]``.
        T: horizon ``> 0``.

    Returns:
        A :class:`LinearGaussianKernel` from ``R^{2d}`` (the stacked ``(x, y)``) to ``R^d``.
    """
    _check_sde(sde)
    dtype = jnp.result_type(sde.M)
    t, T = jnp.asarray(t, dtype), jnp.asarray(T, dtype)
    _check_scalar("t", t)
    t, T = _check_times(t, T)
    T = _check_pinnable(sde, T)
    u, B, Sigma = _pinned(sde.M, sde.c, sde.diffusion, t, T)
    return LinearGaussianKernel(u, B, Sigma, validate=False)


def bridge_marginal(sde: LinearSDE, plan: Gaussian, t, T) -> Gaussian:
    r"""Time-``t`` marginal of the dynamic bridge built on a static coupling ``plan``.

    The dynamic bridge is ``∫ R^{x,y} plan(dx, dy)``, ``R^{x,y}`` the reference process
    pinned at ``X_0 = x``, ``X_T = y`` [ADM25, §3.3; docs/adm25.md]. With
    :func:`pinned_kernel` ``X_t = u + B_x X_0 + B_y X_T + N(0, Sigma_t)``, so its
    marginal is Gaussian::

        mean = u + [B_x, B_y] m_plan,   cov = [B_x, B_y] S_plan [B_x, B_y]^T + Sigma_t.

    At ``t = 0`` and ``t = T`` it is the plan's first and second marginal (``eta``, ``mu``
    for the Schrödinger bridge ``schrodinger_bridge(eta, mu, sde.kernel(T)).plan``).
    No inverse of the plan's covariance is needed (deterministic plans are fine).

    Args:
        sde: the reference :class:`LinearSDE` on ``R^d``.
        plan: a Gaussian on ``R^{2d}`` of ``(X_0, X_T)``.
        t: time in ``[0, T]``.
        T: horizon ``> 0``.

    Returns:
        The Gaussian law of ``X_t``.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> sde = gj.LinearSDE.brownian(1)
        >>> plan = gj.Gaussian(jnp.zeros(2), jnp.eye(2))  # independent endpoints
        >>> float(gj.bridge_marginal(sde, plan, 0.5, 1.0).cov[0, 0])  # 1/2 + 1/2 + 1/4
        0.75
    """
    _check_sde(sde)
    _check_plan(plan, sde.dim)
    plan = _checks.check_measure("plan", plan)
    return pinned_kernel(sde, t, T).pushforward(plan)


def sample_bridge_paths(
    key: PRNGKeyArray, sde: LinearSDE, plan: Gaussian, T, times: Float[Array, " k"], n: int
) -> Float[Array, "n k d"]:
    r"""Sample paths of the dynamic bridge on a time grid.

    Draw ``(X_0, X_T) ~ plan``, then walk the grid: given the previous point ``X_s``
    (``s = 0`` first) and ``X_T``, the pinned process is Markov, so
    ``X_t | X_s, X_T`` is :func:`pinned_kernel` over ``(t - s, T - s)`` (time-homogeneous
    reference). Exact in law at the grid times (no time-discretisation error); one
    ``lax.scan`` over the grid. Differentiable by reparametrisation (the noise factor is
    :func:`gaussot_jax.sqrtm`; grid points at ``0`` or ``T`` take the endpoints exactly).

    Args:
        key: PRNG key.
        sde: the reference :class:`LinearSDE` on ``R^d``.
        plan: a Gaussian on ``R^{2d}`` of ``(X_0, X_T)``.
        T: horizon ``> 0``.
        times: ``(k,)`` strictly increasing times in ``[0, T]``.
        n: number of paths (Python int).

    Returns:
        ``(n, k, d)`` array: ``paths[i, j]`` is path ``i`` at ``times[j]``.
    """
    _check_sde(sde)
    d = sde.dim
    _check_plan(plan, d)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive Python int, got {n!r}")
    dtype = jnp.result_type(sde.M)
    T = jnp.asarray(T, dtype)
    times = jnp.asarray(times, dtype)
    if times.ndim != 1 or times.shape[0] < 1:
        raise ValueError(f"times must have shape (k,) with k >= 1, got {times.shape}")
    times, T = _check_times(times, T, t_name="times")
    if _checks.is_concrete(times) and np.any(np.diff(np.asarray(times)) <= 0):
        raise ValueError(f"times must be strictly increasing, got {np.asarray(times)}")
    times = _checks.require(
        times, lambda x: jnp.any(jnp.diff(x) <= 0), "times must be strictly increasing", eager=False
    )
    T = _check_pinnable(sde, T)
    plan = _checks.check_measure("plan", plan)

    mean, cov = jnp.asarray(plan.mean, dtype), jnp.asarray(plan.cov, dtype)
    return _sample_paths(key, sde.M, sde.c, sde.diffusion, mean, cov, T, times, n)
