"""Input validation in two tiers (docs/conventions.md).

Tier 1, always: shapes and dtypes, which are static, raise ``ValueError`` naming the
argument. Tier 2, values (finite, symmetric, PSD/PD, positive): checked with NumPy
when the array is concrete (not a tracer), so eager calls fail loudly; under ``jit``
the values are unknown at trace time and the ``checked`` functions wrap them with
``eqx.error_if`` instead, which raises at run time (the returned value must be used).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np


def is_concrete(*xs) -> bool:
    """True when no leaf is a tracer (values can be inspected now)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


def as_float(x, dtype=None):
    """``jnp.asarray`` with an inexact dtype (ints and bools become the default float)."""
    x = jnp.asarray(x, dtype=dtype)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


def common_float(*xs):
    """Cast arrays to their common inexact dtype."""
    dtype = jnp.result_type(*[as_float(x) for x in xs])
    return tuple(jnp.asarray(x, dtype=dtype) for x in xs)


def sym_tol(dtype) -> float:
    """Relative tolerance for symmetry: sqrt(eps) of the dtype."""
    return float(np.sqrt(np.finfo(dtype).eps))


def psd_tol(dtype, d: int) -> float:
    """Round-off level of eigenvalues relative to the largest entry: 4 d eps of the dtype.

    Rounding an exactly PSD matrix to the dtype moves its eigenvalues by at most the
    2-norm of the rounding error, ``<= d eps / 2`` times ``max |S_ij|``; ``eigvalsh`` adds a
    small multiple of ``eps ||S||_2`` (``||S||_2 <= d max |S_ij|``). Eigenvalues below
    ``-4 d eps`` (relative) are not round-off; positive ones above it are resolved, so a
    float32 matrix is accepted as definite up to a condition number of about
    ``1 / (4 d eps) = 2e6 / d`` (100 d eps rejected valid ones from ``4e4 / d``).
    """
    return float(4 * max(d, 1) * np.finfo(dtype).eps)


def check_single(name: str, obj, cls) -> None:
    """``obj`` is one (unbatched) instance of ``cls``: a Gaussian-like with mean ``(d,)``."""
    if not isinstance(obj, cls):
        raise ValueError(f"{name} must be a {cls.__name__}, got {type(obj).__name__}")
    leading = obj.mean if hasattr(obj, "mean") else obj.alpha
    if leading.ndim != 1:
        raise ValueError(
            f"{name} must be a single {cls.__name__} (not a batch), got leading field shape "
            f"{leading.shape}; use jax.vmap for batches"
        )


def check_finite(name: str, x) -> None:
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} contains NaN or inf")


def check_positive(name: str, x) -> None:
    """Value check for strictly positive scalars/arrays (epsilon, mass, gamma...)."""
    check_finite(name, x)
    if is_concrete(x) and not np.all(np.asarray(x) > 0):
        raise ValueError(f"{name} must be > 0, got {np.asarray(x)}")


def check_square(name: str, S, d: int | None = None) -> None:
    """Shape check: S is (..., d, d)."""
    shape = jnp.shape(S)
    if len(shape) < 2 or shape[-1] != shape[-2] or (d is not None and shape[-1] != d):
        want = "(..., d, d)" if d is None else f"(..., {d}, {d})"
        raise ValueError(f"{name} must have shape {want}, got {shape}")


def check_cov(name: str, S, *, definite: bool = False) -> None:
    """Value checks for a covariance: finite, symmetric, PSD (PD if ``definite``)."""
    if not is_concrete(S):
        return
    S = np.asarray(S)
    check_finite(name, S)
    d = S.shape[-1]
    scale = np.max(np.abs(S), axis=(-1, -2), keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    asym = np.max(np.abs(S - np.swapaxes(S, -1, -2)) / scale)
    if asym > sym_tol(S.dtype):
        raise ValueError(f"{name} is not symmetric (max relative asymmetry {asym:.3g})")
    w = np.linalg.eigvalsh(0.5 * (S + np.swapaxes(S, -1, -2))) / scale[..., 0]
    wmin = float(np.min(w))
    if wmin < -psd_tol(S.dtype, d):
        raise ValueError(
            f"{name} is not positive semi-definite (smallest relative eigenvalue {wmin:.3g})"
        )
    if definite and wmin <= psd_tol(S.dtype, d):
        raise ValueError(
            f"{name} must be positive definite (smallest relative eigenvalue {wmin:.3g})"
        )


def error_if_not_cov(name: str, S, *, definite: bool = False):
    """Traceable version of :func:`check_cov`: ``S`` wrapped in ``eqx.error_if``."""
    d = S.shape[-1]
    scale = jnp.max(jnp.abs(S), axis=(-1, -2), keepdims=True)
    scale = jnp.where(scale > 0, scale, 1.0)
    bad = ~jnp.all(jnp.isfinite(S))
    S = eqx.error_if(S, bad, f"{name} contains NaN or inf")
    asym = jnp.max(jnp.abs(S - jnp.swapaxes(S, -1, -2)) / scale)
    S = eqx.error_if(S, asym > sym_tol(S.dtype), f"{name} is not symmetric")
    w = jnp.linalg.eigvalsh(0.5 * (S + jnp.swapaxes(S, -1, -2))) / scale[..., 0]
    limit = psd_tol(S.dtype, d)
    if definite:
        return eqx.error_if(S, jnp.min(w) <= limit, f"{name} must be positive definite")
    return eqx.error_if(S, jnp.min(w) < -limit, f"{name} is not positive semi-definite")


def error_if_not_positive(name: str, x):
    """Traceable positivity check: ``x`` wrapped in ``eqx.error_if``."""
    return eqx.error_if(x, ~jnp.all(x > 0), f"{name} must be > 0")


def error_if_not_finite(name: str, x):
    """Traceable finiteness check: ``x`` wrapped in ``eqx.error_if``."""
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), f"{name} contains NaN or inf")
