"""Argument checks of the linear-SDE references and the dynamic bridge (library internal)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from . import _checks
from .gaussians import Gaussian


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


def _check_plan(plan, d: int) -> None:
    if not isinstance(plan, Gaussian):
        raise ValueError(f"plan must be a Gaussian, got {type(plan).__name__}")
    if plan.mean.shape != (2 * d,):
        raise ValueError(
            f"plan must be a single Gaussian on R^(2d) = R^{2 * d} of (X_0, X_T) for an "
            f"sde of dimension {d}, got mean shape {plan.mean.shape}"
        )
