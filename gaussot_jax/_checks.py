r"""Input validation in two tiers (docs/conventions.md), from one primitive.

Tier 1, always: shapes and dtypes, which are static, raise ``ValueError`` naming the
argument and the shapes (``check_square``, ``check_real``, ...).

Tier 2, values (finite, symmetric, PSD/PD, positive, in an interval): each predicate is
written once, in ``jax.numpy``, as ``bad(x) -> bool array`` (one flag per batch member),
and applied by :func:`require`:

* **concrete** ``x`` (an eager call, or a constant inside ``jit``): the predicate is
  evaluated now and a ``ValueError`` names the argument and, for a batch, the first
  failing member (``cov is not symmetric (batch member (1,))``);
* **traced** ``x`` (inside ``jit``, ``vmap``, ``grad``): by default nothing happens, so
  compiled code pays nothing. Under the switch

      >>> import jax, jax.numpy as jnp, gaussot_jax as gj
      >>> with gj.checks():
      ...     f = jax.jit(lambda e: gj.sqrtm(e * jnp.eye(2)))
      ...     _ = f(1.0)   # f(-1.0) raises at run time: "S is not positive semi-definite"

  every public entry wraps each argument it checks in ``eqx.error_if``, which raises at
  run time (a ``jax.errors.JaxRuntimeError`` carrying the same message). The switch is
  read when a function is *traced*; entering and leaving the block clears JAX's caches
  (``jax.clear_caches``) so that functions compiled before are traced again with the new
  setting. ``.checked()`` on the measure types applies the traced checks always, switch
  or not.

The wrapped value that :func:`require` returns must be used: ``eqx.error_if`` only fires
for values that the computation depends on.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # gaussians imports this module at run time
    from .gaussians import Gaussian

_TRACED = contextvars.ContextVar("gaussot_jax_traced_checks", default=False)


@contextlib.contextmanager
def checks(enabled: bool = True) -> Iterator[None]:
    """Switch the run-time checks of traced arguments on (or off) inside the block.

    With the switch on, every public function of the library checks the values of its
    arguments also when they are traced (inside ``jax.jit``, ``jax.vmap``, ``jax.grad``),
    with ``eqx.error_if``: a bad value raises at run time instead of returning NaN or a
    silent wrong number. Concrete arguments are always checked (``ValueError``). The
    setting is read at trace time; entering and leaving the block calls
    ``jax.clear_caches()`` so that no trace made under the other setting is reused.

    Args:
        enabled: ``True`` (default) to check traced arguments, ``False`` to not.

    Example:
        >>> import jax, jax.numpy as jnp, gaussot_jax as gj
        >>> mu = gj.Gaussian(jnp.zeros(2), jnp.eye(2))
        >>> with gj.checks():
        ...     cost = jax.jit(gj.entropic_ot)(mu, mu, 0.5).cost  # epsilon <= 0 would raise
    """
    token = _TRACED.set(bool(enabled))
    jax.clear_caches()
    try:
        yield
    finally:
        _TRACED.reset(token)
        jax.clear_caches()


def traced_checks() -> bool:
    """Whether the switch :func:`checks` is on."""
    return _TRACED.get()


def is_concrete(*xs) -> bool:
    """True when no leaf is a tracer (values can be inspected now)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


def require(
    x,
    bad: Callable,
    message: str,
    *,
    eager: bool = True,
    always: bool = False,
):
    """``x``, after checking that ``bad(x)`` is false everywhere.

    Args:
        x: array to check (returned, possibly wrapped).
        bad: ``bad(x) -> bool array``, true where ``x`` is invalid; its shape is the
            batch shape of ``x`` (one flag per member) or ``()``.
        message: the error message; it must name the argument.
        eager: check concrete ``x`` now (``False``: its constructor already did).
        always: check traced ``x`` even with the switch off (``.checked()``).

    Returns:
        ``x``, wrapped in ``eqx.error_if`` when it is traced and checked.

    Raises:
        ValueError: ``x`` is concrete and ``bad(x)`` is true somewhere; for a batch the
            message names the first failing member.
    """
    if is_concrete(x):
        if not eager:
            return x
        with jax.ensure_compile_time_eval():
            flag = bad(x)
        if not isinstance(flag, jax.core.Tracer):
            flag = np.asarray(flag)
            if np.any(flag):
                raise ValueError(message + _detail(x, flag))
            return x
        # A constant inside jit: the predicate was staged, fall through to error_if.
    elif not (always or traced_checks()):
        return x
    else:
        flag = bad(x)
    return eqx.error_if(x, jnp.any(flag), message)


def _detail(x, flag: np.ndarray) -> str:
    if flag.ndim:
        return f" (batch member {tuple(int(i) for i in np.argwhere(flag)[0])})"
    x = np.asarray(x)
    return f", got {x.item()}" if x.size == 1 else ""


# --------------------------------------------------------------------------------------
# Value predicates, each written once (jax.numpy; one flag per member of a batch).
# --------------------------------------------------------------------------------------
def _core_axes(x, core: int) -> tuple[int, ...]:
    return tuple(range(jnp.ndim(x) - core, jnp.ndim(x)))


def not_finite(core: int = 0) -> Callable:
    """Predicate: some entry of a member (``core`` trailing axes) is NaN or inf."""
    return lambda x: ~jnp.all(jnp.isfinite(x), axis=_core_axes(x, core))


def not_positive(x):
    """Predicate: not (finite and > 0), elementwise."""
    return ~(jnp.isfinite(x) & (x > 0))


def negative(x):
    """Predicate: not (finite and >= 0), elementwise."""
    return ~(jnp.isfinite(x) & (x >= 0))


def outside(lo: float, hi: float) -> Callable:
    """Predicate: not in the closed interval ``[lo, hi]`` (NaN is outside)."""
    return lambda x: ~((x >= lo) & (x <= hi))


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


def _scale(S):
    scale = jnp.max(jnp.abs(S), axis=(-1, -2))
    return jnp.where(scale > 0, scale, 1.0)


def asymmetric(S):
    """Predicate: the relative asymmetry ``max|S - S^T| / max|S|`` exceeds sqrt(eps)."""
    asym = jnp.max(jnp.abs(S - jnp.swapaxes(S, -1, -2)), axis=(-1, -2)) / _scale(S)
    return ~(asym <= sym_tol(S.dtype))


def _min_relative_eig(S):
    S = cast(jax.Array, jnp.where(jnp.isfinite(S), S, 0.0))
    w = jnp.linalg.eigvalsh(0.5 * (S + jnp.swapaxes(S, -1, -2)))
    return w[..., 0] / _scale(S)


def indefinite(S):
    """Predicate: the smallest relative eigenvalue is below ``-100 d eps``."""
    return _min_relative_eig(S) < -psd_tol(S.dtype, S.shape[-1])


def not_definite(S):
    """Predicate: the smallest relative eigenvalue is at most ``100 d eps``."""
    return _min_relative_eig(S) <= psd_tol(S.dtype, S.shape[-1])


# --------------------------------------------------------------------------------------
# Shapes and dtypes (static: always ValueError).
# --------------------------------------------------------------------------------------
def check_real(name: str, x):
    """``x`` as a real floating array (ints and bools become the default float)."""
    x = jnp.asarray(x)
    dtype = x.dtype
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(f"{name} must be real (float32 or float64), got {jnp.dtype(dtype)}")
    if not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)):
        raise ValueError(f"{name} must be a real array, got dtype {jnp.dtype(dtype)}")
    return as_float(x)


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


def check_square(name: str, S, d: int | None = None) -> None:
    """Shape check: S is (..., d, d) with d >= 1."""
    shape = jnp.shape(S)
    if len(shape) < 2 or shape[-1] != shape[-2] or (d is not None and shape[-1] != d):
        want = "(..., d, d)" if d is None else f"(..., {d}, {d})"
        raise ValueError(f"{name} must have shape {want}, got {shape}")
    if shape[-1] == 0:
        raise ValueError(f"{name} must have d >= 1, got shape {shape}")


def check_points(name: str, x, d: int):
    """``x`` as real points of shape ``(..., d)``."""
    x = check_real(name, x)
    if x.ndim < 1 or x.shape[-1] != d:
        raise ValueError(f"{name} must have shape (..., {d}), got {x.shape}")
    return x


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


# --------------------------------------------------------------------------------------
# Value checks (require with the predicates above); each returns the value to use.
# --------------------------------------------------------------------------------------
def check_finite(name: str, x, *, core: int = 0, **kw):
    """``x`` has no NaN or inf."""
    return require(x, not_finite(core), f"{name} contains NaN or inf", **kw)


def check_positive(name: str, x, **kw):
    """Strictly positive finite scalars/arrays (epsilon, mass, gamma...)."""
    return require(x, not_positive, f"{name} must be > 0 (and finite)", **kw)


def check_nonnegative(name: str, x, **kw):
    """Finite and ``>= 0`` (weights)."""
    return require(x, negative, f"{name} must be finite and >= 0", **kw)


def check_interval(name: str, x, lo: float, hi: float, **kw):
    """``lo <= x <= hi`` (NaN fails)."""
    return require(x, outside(lo, hi), f"{name} must be in [{lo}, {hi}]", **kw)


def check_scalar(name: str, x, dtype):
    """A real scalar, cast to ``dtype``, that is finite and ``> 0`` (epsilon, gamma)."""
    x = jnp.asarray(check_real(name, x), dtype=dtype)
    if x.ndim != 0:
        raise ValueError(f"{name} must be a scalar (vmap for many), got shape {x.shape}")
    return check_positive(name, x)


def check_epsilon(epsilon, dtype):
    """The entropic regularisation ``epsilon``: a real scalar ``> 0``, cast to ``dtype``."""
    return check_scalar("epsilon", epsilon, dtype)


def check_cov(name: str, S, *, definite: bool = False, **kw):
    """A covariance (batch): finite, symmetric, PSD (PD if ``definite``)."""
    S = check_finite(name, S, core=2, **kw)
    S = require(S, asymmetric, f"{name} is not symmetric", **kw)
    if definite:
        return require(S, not_definite, f"{name} must be positive definite", **kw)
    return require(S, indefinite, f"{name} is not positive semi-definite", **kw)


def check_measure(name: str, g, **kw):
    """A measure argument (``Gaussian``...), checked under the switch when traced.

    Concrete measures were checked by their constructor; traced ones are wrapped by
    their ``.checked(name=name)`` inside ``gj.checks()``.
    """
    if is_concrete(g) or not traced_checks():
        return g
    return g.checked(name=name, **kw)


def check_pair(
    mu: Gaussian, nu: Gaussian, names: tuple[str, str] = ("mu", "nu")
) -> tuple[Gaussian, Gaussian]:
    """Both are single Gaussians of the same dimension (batch with ``jax.vmap``).

    Returns ``(mu, nu)``, with their values checked at run time when traced inside
    ``gj.checks()`` (use the returned pair).
    """
    from .gaussians import Gaussian  # gaussians builds on this module

    for name, g in zip(names, (mu, nu)):
        check_single(name, g, Gaussian)
    if mu.dim != nu.dim:
        raise ValueError(f"dimensions differ: {names[0]} has d={mu.dim}, {names[1]} d={nu.dim}")
    return check_measure(names[0], mu), check_measure(names[1], nu)


def error_if_not_cov(name: str, S, *, definite: bool = False):
    """Traceable :func:`check_cov`, applied whatever the switch (``.checked()``)."""
    return check_cov(name, S, definite=definite, always=True)


def error_if_not_positive(name: str, x):
    """Traceable :func:`check_positive`, applied whatever the switch."""
    return check_positive(name, x, always=True)


def error_if_not_finite(name: str, x, *, core: int = 0):
    """Traceable :func:`check_finite`, applied whatever the switch."""
    return check_finite(name, x, core=core, always=True)
