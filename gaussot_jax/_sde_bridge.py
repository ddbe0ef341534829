r"""The dynamic Schrödinger bridge on a linear-SDE reference (library internal).

The pinned law (a Kalman update in Joseph form) is derived in the docstring of
:mod:`gaussot_jax.sde`, which re-exports the public names.
"""

from __future__ import annotations

import functools
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from . import _checks
from ._linear_sde import LinearSDE
from ._sde_checks import _check_plan, _check_scalar, _check_times
from ._sde_kernels import _transition
from .gaussians import Gaussian, LinearGaussianKernel
from .linalg import sqrtm_unchecked as sqrtm


@jax.jit
def _pinned(M, c, Q, t, T):
    """``(u, [B_x, B_y], Sigma_t)``: the law of ``X_t`` given ``(X_0, X_T)``."""
    (a_t, a_r), (b_t, b_r), (S_t, S_r) = jax.vmap(_transition, (None, None, None, 0))(
        M, c, Q, jnp.stack([t, T - t])
    )
    # The Bayes map of N(a_t, S_t) observed through y = a_r + b_r X_t + N(0, S_r) gives the
    # gain, u = a_t - gain a_T and the covariance (Joseph form, PSD: see bayes).
    obs = LinearGaussianKernel(a_r, b_r, S_r, validate=False)
    back = obs.bayes(Gaussian(a_t, S_t, validate=False))
    gain = back.beta
    return back.alpha, jnp.concatenate([b_t - gain @ (b_r @ b_t), gain], axis=1), back.tau


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


# --------------------------------------------------------------------------------------
# The dynamic bridge.
# --------------------------------------------------------------------------------------
def _check_sde(sde) -> None:
    if not isinstance(sde, LinearSDE):
        raise ValueError(f"sde must be a LinearSDE, got {type(sde).__name__}")


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
