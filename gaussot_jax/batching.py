r"""Pairwise costs between two batches of measures, with bounded memory.

``pairwise(fn, mus, nus)[i, j] = fn(mu_i, nu_j)`` for every pair: the cost matrix of a
discrete OT problem between mixtures, a kernel matrix, a nearest-neighbour search. The
library's functions are unbatched (docs/conventions.md); this is the one place that maps
them over a grid of pairs, either as one double ``jax.vmap`` or in blocks of
``batch_size`` pairs under ``lax.scan`` so that peak memory does not grow with
``n * m``.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _checks
from .gaussians import Gaussian, LinearGaussianKernel, ScaledGaussian

__all__ = ["pairwise"]


def _leading_size(name: str, tree) -> int:
    """The common leading axis of every array leaf of ``tree`` (a batch of measures)."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if eqx.is_array(x)]
    if not leaves:
        raise ValueError(f"{name} must be a batch of measures (e.g. a gj.Gaussian), got {tree!r}")
    mean: Any = getattr(tree, "mean", None)
    if isinstance(tree, eqx.Module) and eqx.is_array(mean) and mean.ndim != 2:
        raise ValueError(
            f"{name} must carry exactly one leading batch axis (mean (n, d)), got mean {mean.shape}"
        )
    sizes: set[int | None] = {x.shape[0] if x.ndim else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        shapes = [x.shape for x in leaves]
        raise ValueError(f"{name}: every field needs the same leading batch axis, got {shapes}")
    size = sizes.pop()
    assert size is not None  # excluded above; narrows the type
    return size


# Scalar keywords of the library's functions that must be > 0, checked before tracing.
_POSITIVE_KEYWORDS = ("epsilon", "gamma")


def _check_batch(name: str, tree):
    """Values of a batch of measures: concrete ones now, naming the failing member."""
    if isinstance(tree, (Gaussian, ScaledGaussian, LinearGaussianKernel)) and (
        _checks.is_concrete(tree) or _checks.traced_checks()
    ):
        return tree.checked(name=name)
    return tree


def _check_call(fn: Callable, mus, nus, kw: dict) -> None:
    """``fn(mu, nu, **kw)`` binds (a missing ``epsilon`` is a ValueError, not a TypeError)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and some callables have no signature
        return
    try:
        sig.bind(mus, nus, **kw)  # names only: no values are read
    except TypeError as e:
        name = getattr(fn, "__name__", type(fn).__name__)
        raise ValueError(f"fn={name} cannot be called as fn(mu, nu, **kw): {e}") from None


def _reduce(result: Any) -> Array:
    """A scalar per pair: result objects with a ``cost`` field are reduced to it."""
    out = result
    if isinstance(result, eqx.Module) and hasattr(result, "cost"):
        out = getattr(result, "cost")
    if not eqx.is_array_like(out) or jnp.shape(out) != ():
        got = jnp.shape(out) if eqx.is_array_like(out) else type(out).__name__
        raise ValueError(
            f"fn must return a scalar or a result with a scalar `cost` field, got {got}"
        )
    return jnp.asarray(out)


def _take(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, tree)


# --------------------------------------------------------------------------------------
# The compile cache of ``_pairwise`` and fresh callables.
#
# ``eqx.filter_jit`` keys its cache on the static part of its arguments; a function is
# static and hashes by identity, so ``pairwise(lambda mu, nu: ..., ...)`` in a loop (a new
# lambda object each time) would trace and compile on every call, and keep every
# executable alive. A plain Python function is instead passed as ``_Function``: its code
# object and globals (static: equal for every lambda made by one expression), and the
# values its closure and defaults hold, as ``filter_jit`` treats arguments: arrays are
# traced (a new value reuses the executable), hashable values (floats, ints, strings,
# functions) are static by value, and mutable or unhashable objects (lists, dicts, ...)
# static by identity and passed as themselves, so that mutating them inside ``fn`` acts
# on the caller's object. Tuples and equinox Modules are looked into (their arrays
# traced). ``functools.partial`` objects likewise, as their function, args and keywords.
# As with ``jax.jit``, global names are read at trace time.
# --------------------------------------------------------------------------------------
class _ById:
    """Hash and compare an object by identity (a module's globals, a captured list)."""

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _ById) and other.obj is self.obj


def _is_mutable(x) -> bool:
    return isinstance(x, (list, dict, set))


def _static_leaf(x):
    if eqx.is_array(x):
        return x
    if _is_mutable(x):
        return _ById(x)
    try:
        hash(x)
    except TypeError:
        return _ById(x)
    return x


def _freeze(x):
    """Arrays as they are (traced), other leaves hashable; mutable containers by identity."""
    if _is_mutable(x):
        return _ById(x)
    return jax.tree_util.tree_map(_static_leaf, x, is_leaf=_is_mutable)


def _thaw(x):
    return jax.tree_util.tree_map(
        lambda y: y.obj if isinstance(y, _ById) else y, x, is_leaf=lambda y: isinstance(y, _ById)
    )


class _Function(eqx.Module):
    """A plain Python function as static code and globals, and its captured values."""

    code: types.CodeType = eqx.field(static=True)
    globals: _ById = eqx.field(static=True)
    name: str = eqx.field(static=True)
    cells: tuple
    defaults: Any
    kwdefaults: Any

    def __call__(self, *args, **kw):
        closure = tuple(types.CellType(c) for c in _thaw(self.cells)) or None
        f = types.FunctionType(
            self.code, self.globals.obj, self.name, _thaw(self.defaults), closure
        )
        f.__kwdefaults__ = _thaw(self.kwdefaults)
        return f(*args, **kw)


class _Partial(eqx.Module):
    """A ``functools.partial`` as its function, args and keywords."""

    func: Any
    args: tuple
    keywords: dict

    def __call__(self, *args, **kw):
        return self.func(*_thaw(self.args), *args, **{**_thaw(self.keywords), **kw})


def _traceable(fn: Callable) -> Callable:
    """``fn`` in a form whose ``filter_jit`` cache key does not depend on its identity."""
    if type(fn) is functools.partial:
        part = cast(functools.partial, fn)
        keywords = {k: _freeze(v) for k, v in part.keywords.items()}
        return _Partial(_traceable(part.func), tuple(_freeze(a) for a in part.args), keywords)
    if not isinstance(fn, types.FunctionType):
        return fn  # builtins, jitted functions, Modules, bound methods: stable already
    try:
        cells = tuple(_freeze(c.cell_contents) for c in fn.__closure__ or ())
    except ValueError:  # an empty cell (a name assigned after the function was made)
        return fn
    kwdefaults = None if fn.__kwdefaults__ is None else dict(fn.__kwdefaults__)
    return _Function(
        fn.__code__,
        _ById(fn.__globals__),
        fn.__name__,
        cells,
        _freeze(fn.__defaults__),
        None if kwdefaults is None else {k: _freeze(v) for k, v in kwdefaults.items()},
    )


@eqx.filter_jit
def _pairwise(fn: Callable, mus, nus, batch_size: int | None, kw: dict) -> Array:
    n, m = _leading_size("mus", mus), _leading_size("nus", nus)

    def cell(mu, nu):
        return _reduce(fn(mu, nu, **kw))

    if batch_size is None or batch_size >= n * m:
        return jax.vmap(lambda mu: jax.vmap(lambda nu: cell(mu, nu))(nus))(mus)

    total = n * m
    num_blocks = -(-total // batch_size)

    # One block of `batch_size` consecutive pairs in row-major order. The last block is
    # padded by repeating the final pair; its extra values are dropped below. The body
    # is checkpointed so that reverse mode stores one block's residuals at a time.
    @jax.checkpoint
    def block(carry, b):
        k = jnp.minimum(b * batch_size + jnp.arange(batch_size), total - 1)
        i, j = k // m, k % m
        return carry, jax.vmap(lambda i, j: cell(_take(mus, i), _take(nus, j)))(i, j)

    _, out = jax.lax.scan(block, None, jnp.arange(num_blocks))
    return out.reshape(-1)[:total].reshape(n, m)


def pairwise(
    fn: Callable[..., Any], mus, nus, *, batch_size: int | None = None, **kw
) -> Float[Array, "n m"]:
    r"""The matrix ``D[i, j] = fn(mu_i, nu_j, **kw)`` over all pairs of two batches.

    ``mus`` and ``nus`` are batches of measures: one :class:`gaussot_jax.Gaussian` (or any
    equinox Module of arrays) whose fields carry a leading axis ``n`` (resp. ``m``).
    ``fn`` is any unbatched function of the library (``bures_wasserstein2``,
    ``entropic_ot``, ``sinkhorn_divergence``, ...) or a user function of two measures;
    results that carry a scalar ``cost`` field (``EntropicOT``) are reduced to it.

    With ``batch_size=None`` the matrix is one double ``jax.vmap``: fastest, with
    memory proportional to ``n * m`` times one evaluation's intermediates. With
    ``batch_size=B`` the ``n * m`` pairs are evaluated ``B`` at a time (row-major
    blocks, ``lax.scan``), so peak memory is the output plus ``B`` evaluations,
    independent of ``n * m``; reverse-mode differentiation recomputes each block
    (``jax.checkpoint``) and keeps that bound.

    Keyword values that are floats or arrays (``epsilon=0.1``) are traced: vmap or
    differentiate them, change them without recompiling. Python ints, bools and
    strings are static options. To spread the rows over several devices, shard
    ``mus`` along its leading axis (``jax.sharding.NamedSharding``) and call this
    under ``jax.jit``, or wrap it in ``jax.shard_map`` to combine with ``batch_size``.

    Args:
        fn: ``fn(mu, nu, **kw)`` returning a scalar or a result with a ``cost`` field.
        mus: batch of ``n`` measures (leading axis ``n`` on every field).
        nus: batch of ``m`` measures.
        batch_size: number of pairs evaluated at once (``None``: all).
        **kw: keyword arguments passed to ``fn`` for every pair.

    Returns:
        The ``(n, m)`` matrix of costs.

    Raises:
        ValueError: if ``fn`` is not callable or cannot be called with ``kw`` (a missing
            ``epsilon``), ``mus``/``nus`` are not batches with one leading axis or hold
            an invalid member (named by its index; values when concrete, or traced inside
            ``gj.checks()``), ``epsilon``/``gamma`` are not scalars ``> 0`` (checked
            here, before tracing), ``batch_size`` is not a positive int, or ``fn`` does
            not return a scalar.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mus = gj.Gaussian(jnp.zeros((3, 2)), jnp.stack([jnp.eye(2)] * 3))
        >>> nus = gj.Gaussian(jnp.ones((4, 2)), jnp.stack([2 * jnp.eye(2)] * 4))
        >>> gj.pairwise(gj.entropic_ot, mus, nus, epsilon=0.1).shape
        (3, 4)
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
    n, m = _leading_size("mus", mus), _leading_size("nus", nus)
    index_dtype = jnp.asarray(0).dtype  # int32 unless jax_enable_x64
    if batch_size is not None and n * m > np.iinfo(index_dtype).max:
        raise ValueError(
            f"n * m = {n * m} pairs overflow {index_dtype.name} indices; "
            "enable jax_enable_x64 or split the batches"
        )
    dtype = jnp.result_type(*[x for x in jax.tree_util.tree_leaves(mus) if eqx.is_array(x)])
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    _check_call(fn, mus, nus, kw)
    mus, nus = _check_batch("mus", mus), _check_batch("nus", nus)
    # Python floats would be static under filter_jit: make them traced scalars. The
    # library's positive scalars are checked now, while they are concrete: inside the
    # traced body below their checks would vanish.
    kw = {
        k: _checks.check_scalar(k, v, dtype)
        if k in _POSITIVE_KEYWORDS and eqx.is_array_like(v)
        else (jnp.asarray(v, dtype=dtype) if isinstance(v, float) else v)
        for k, v in kw.items()
    }
    bs = None if batch_size is None else int(batch_size)
    return _pairwise(_traceable(fn), mus, nus, bs, kw)
