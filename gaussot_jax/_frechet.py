"""Spectral functions ``f(S)`` and their Fréchet derivatives of every order (internal).

The Daleckii–Krein rules as one JAX primitive (see the comment below); the public,
validating wrapper is :func:`gaussot_jax.linalg.psd_fn`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import ShapedArray
from jax.experimental import jet
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jaxtyping import Array

from ._eigh import Matrix, _eigh_psd, _rebuild, _resolve, sym


# --------------------------------------------------------------------------------------
# Spectral functions f(S) = V f(w) V^T and their Frechet derivatives of every order.
#
# For symmetric S = V diag(w) V^T and symmetric E_1..E_k, with Et = V^T E V
# (Daleckii & Krein 1965; Bhatia, Matrix Analysis, §V.3 for k = 1):
#
#   D^k f(S)[E_1, ..., E_k] = V X V^T,
#   X_ij = sum_{sigma in S_k} sum_{l_1..l_{k-1}} f[w_i, w_l1, ..., w_l(k-1), w_j]
#              Et_sigma(1)[i, l_1] Et_sigma(2)[l_1, l_2] ... Et_sigma(k)[l_(k-1), j],
#
# f[...] the divided difference of order k (f^(k)(w)/k! where all points coincide). It
# is linear in each E_i and, with F' = f, <Y, D^k f(S)[E_1..E_k]> = D^(k+1) Tr F(S)[Y,
# E_1, ..., E_k] is symmetric in (Y, E_1, ..., E_k): the transpose in E_i is the same
# map with E_i replaced by the cotangent. Its derivative is again of this form:
#
#   d D^k f(S; a)[E] = D^(k+1) f[E_1..E_k, dS] + sum_i D^k f[.., dE_i, ..]
#                      + sum_m da_m D^k (df/da_m)(S)[E_1..E_k]      (a_m = args[m]).
#
# Order 0 is f(S) itself, so ONE primitive, ``_frechet_p``, of operands (S, *args, *E)
# and static order k, serves every order: its jvp binds order k + 1 (and order k with
# other arguments), its transpose binds order k, its batching rule binds it with a batch
# level. Nothing outside the primitive sees the eigendecomposition, so no derivative of
# any order differentiates ``eigh``. (A ``custom_jvp`` does not suffice: in reverse mode
# JAX partially evaluates the tangent rule and INLINES a custom_jvp function called with
# a known S and an unknown tangent, so an outer jvp (Hessian-vector products,
# ``jax.hessian``) differentiates its ``eigh`` again: NaN at d = 4, S = I. A primitive
# stays one opaque equation of the linear program.)
#
# Divided differences. For each index tuple the points are sorted and a Neville table is
# built, f[x_j..x_(j+m)] from f[x_(j+1)..x_(j+m)] and f[x_j..x_(j+m-1)], choosing per
# entry the branch with the smaller a-priori error bound:
#   quotient  (f[x_(j+1)..] - f[..x_(j+m-1)]) / s,   s = x_(j+m) - x_j: the errors of the
#             two entries (eps |f| at order 0) divided by s, plus eps |q|;
#   Taylor    about the mean c of the points,
#               f[x_0..x_m] = sum_j f^(m+j)(c) / (m+j)! h_j(x - c),
#             h_j the complete symmetric polynomials: h_1 = sum(x - c) = 0,
#             h_2 = sum((x - c)^2) / 2, h_3 = sum((x - c)^3) / 3 (0 for two points). The
#             branch keeps j = 0 and 2; its truncation error is estimated from the decay
#             of the series, |t_2| (t_2 / t_0) at m = 1 (next term j = 4) and
#             |t_2| (t_2 / t_0)^(1/2) above (j = 3), plus eps |t|.
# Where f^(j) scales like f / x^j the two bounds cross at s / |x| ~ eps^(1/(m+4))
# (m = 1: 7e-4 in float64, both errors ~ eps^(4/5) = 3e-13 relative; the former rule,
# f' at the midpoint, crossed at eps^(1/3) with errors eps^(2/3)). The estimate also
# picks the Taylor branch for a cluster at 0 of a function smooth there (where a relative
# threshold would divide round-off by a gap of 1e-16) and the quotient for sqrt-like
# functions whose derivatives blow up at 0. Coinciding points (s = 0) take the Taylor
# branch, which is then exact.
# --------------------------------------------------------------------------------------
class _Derived:
    """``d^n f / dw^n`` (``arg is None``) or ``d f / d args[arg][index]``.

    Equal and hashed by value, so the same ``f`` gives equal derivatives (the primitive's
    parameters and JAX's caches see one function) without a cache that would keep every
    user ``f`` and its captured arrays alive.
    """

    __slots__ = ("__weakref__", "arg", "f", "index", "n")

    def __init__(self, f: Callable, n: int = 1, arg: int | None = None, index: tuple = ()):
        self.f, self.n, self.arg, self.index = f, n, arg, index

    def _key(self):
        return (self.f, self.n, self.arg, self.index)

    def __eq__(self, other):
        return type(other) is _Derived and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __call__(self, w, *args):
        if self.arg is not None:
            m = self.arg  # narrowed to int (the closure below would not see the narrowing)
            a = args[m]
            da = jnp.zeros(jnp.shape(a), jnp.result_type(a)).at[self.index].set(1.0)

            def in_arg(x):
                return self.f(w, *args[:m], x, *args[m + 1 :])

            return jax.jvp(in_arg, (a,), (da,))[1]

        def g(v):
            return self.f(v, *args)

        for _ in range(self.n):
            g = functools.partial(lambda h, v: jax.jvp(h, (v,), (jnp.ones_like(v),))[1], g)
        return g(w)


def _d_dw(f: Callable) -> Callable:
    """Elementwise derivative of ``f(w, *args)`` in ``w`` (equal for equal ``f``)."""
    return _Derived(f, 1)


def _arg_terms(fn: Callable, f: Callable, args: Sequence, dargs: Sequence):
    """``sum_m sum_idx dargs[m][idx] * fn(df / d args[m][idx])`` over nonzero tangents.

    Each term evaluates ``fn`` on known inputs only (a new derived function), times a
    tangent entry: linear in ``dargs``, so reverse mode transposes the product.
    """
    out = None
    for m, (a, da) in enumerate(zip(args, dargs)):
        if type(da) is ad.Zero:
            continue
        da = jnp.asarray(da)  # a Python-scalar tangent (jax.jvp(..., 0.0)) is not indexable
        for index in np.ndindex(jnp.shape(a)):
            term = da[index] * fn(_Derived(f, arg=m, index=index))
            out = term if out is None else out + term
    return out


def _derivatives(f: Callable, x: Array, args: tuple, n: int) -> list:
    """``[f'(x), ..., f^(n)(x)]`` elementwise.

    Nested ``jvp`` up to order 4 (O(2^n) work, one fused kernel), Taylor mode (``jet``,
    O(n^2) work) above where its rules cover ``f`` (else nested ``jvp`` again). Measured
    for order 3 (every first derivative needs it): the ``jet`` program compiles to ten
    kernels, 2.5x the compile time of the nested one, for the same values.
    """
    if n > 4:
        g = functools.partial(lambda h, a, v: h(v, *a), f, args)
        try:
            one, zero = jnp.ones_like(x), jnp.zeros_like(x)
            return list(jet.jet(g, (x,), ((one,) + (zero,) * (n - 1),))[1])
        except NotImplementedError:
            pass

    # One chain of jvps: level j maps v to (f, f', ..., f^(j)) (v), the jvp of level j - 1
    # appending the derivative of its last entry (2^n tracing, not 2 + 4 + ... + 2^n).
    def chain(h, v):
        primal, tangent = jax.jvp(h, (v,), (jnp.ones_like(v),))
        return (*primal, tangent[-1])

    level = functools.partial(lambda a, v: (f(v, *a),), args)
    for _ in range(n):
        level = functools.partial(chain, level)
    return list(level(x)[1:])


def _divided_differences(f: Callable, w: Array, args: tuple, k: int) -> Array:
    """``T[i_0, ..., i_k] = f[w_(i_0), ..., w_(i_k)]`` for every index tuple, ``(d,)*(k+1)``.

    Elementwise on the grid of index tuples: the ``k + 1`` points of every tuple (each a
    broadcast of ``w`` along one axis) are sorted by a compare-exchange network (odd-even
    transposition) that carries their ``f`` values along, then the Neville table above.
    """
    d = w.shape[-1]
    eps = jnp.finfo(w.dtype).eps
    fw = f(w, *args)
    grid = (d,) * (k + 1)

    def along(v, p):  # v (d,) varying along axis p of the grid
        return jnp.broadcast_to(v.reshape([d if q == p else 1 for q in range(k + 1)]), grid)

    x = [along(w, p) for p in range(k + 1)]
    table = [along(fw, p) for p in range(k + 1)]
    for r in range(k + 1):
        for p in range(r % 2, k, 2):
            swap = x[p] > x[p + 1]
            x[p], x[p + 1] = jnp.where(swap, x[p + 1], x[p]), jnp.where(swap, x[p], x[p + 1])
            t0, t1 = table[p], table[p + 1]
            table[p], table[p + 1] = jnp.where(swap, t1, t0), jnp.where(swap, t0, t1)
    err = [eps * jnp.abs(t) for t in table]
    for m in range(1, k + 1):
        pts = jnp.stack([jnp.stack(x[j : j + m + 1]) for j in range(k + 1 - m)])
        c = jnp.mean(pts, axis=1)  # (k + 1 - m, *grid)
        dev2 = jnp.sum((pts - c[:, None]) ** 2, axis=1)
        s = pts[:, -1] - pts[:, 0]
        safe = jnp.where(s > 0, s, 1.0)
        hi, lo = jnp.stack(table[1:]), jnp.stack(table[:-1])
        q = (hi - lo) / safe
        err_q = (jnp.stack(err[1:]) + jnp.stack(err[:-1])) / safe + eps * jnp.abs(q)
        derivs = _derivatives(f, c, args, m + 2)
        t0 = derivs[m - 1] / math.factorial(m)
        t2 = derivs[m + 1] / math.factorial(m + 2) * 0.5 * dev2
        t = t0 + t2
        # Truncation after the h_2 term, estimated from the decay t2 / t0 of the series
        # (two orders; h_3 = sum((x - c)^3) / 3 vanishes for two points, not above).
        r = jnp.minimum(1.0, jnp.abs(t2) / jnp.where(t0 != 0, jnp.abs(t0), 1.0))
        r = jnp.where(t0 != 0, r, 1.0)
        err_t = jnp.abs(t2) * (r if m == 1 else jnp.sqrt(r)) + eps * jnp.abs(t)
        taylor = (s <= 0) | (err_t <= err_q)
        table = list(jnp.where(taylor, t, q))
        err = list(jnp.where(taylor, err_t, err_q))
    return table[0]


def _contract(T: Array, Et: list) -> Array:
    """``X_ij = sum_sigma sum_l T[i, l.., j] Et_sigma(1)[i, l_1] ... Et_sigma(k)[.., j]``."""
    k = len(Et)
    ix = "abcdefghijklmnop"[: k + 1]
    spec = ix + "," + ",".join(ix[p : p + 2] for p in range(k)) + "->" + ix[0] + ix[k]
    out = None
    for perm in itertools.permutations(range(k)):
        term = jnp.einsum(spec, T, *(Et[p] for p in perm), optimize=True)
        out = term if out is None else out + term
    assert out is not None  # permutations(range(k)) is never empty (k = 0: one, empty)
    return out


def _frechet_single(S, *operands, f, method, n_args, k):
    """``D^k f(S; args)[E_1..E_k]`` for one (unbatched) set of operands."""
    args, Es = operands[:n_args], operands[n_args:]
    w, V = _eigh_psd(S, method)
    if k == 0:
        return _rebuild(V, f(w, *args))
    T = _divided_differences(f, w, args, k)
    X = _contract(T, [V.T @ sym(E) @ V for E in Es])
    return sym(V @ X @ V.T)


# Parameters of the primitive: f, method (resolved), n_args, k (number of E operands) and
# batch, one (size, in_axes) per vmap level, outermost first; each operand carries a
# leading axis for each level where its in_axes entry is 0.
_frechet_p = Primitive("gaussot_psd_frechet")
_NOT_MAPPED = getattr(batching, "not_mapped", None)  # None in jax >= 0.10


def _frechet_impl(*operands, f, method, n_args, k, batch):
    fn = functools.partial(_frechet_single, f=f, method=method, n_args=n_args, k=k)
    for _, axes in reversed(batch):
        fn = jax.vmap(fn, in_axes=axes)
    return fn(*operands)


def _output_sharding(S, batch):
    """The output's sharding: S's partitioning of each batch level (if any), matrices whole.

    Without it the output would carry the empty mesh of the trace context, and ops that
    combine it with sharded operands fail under ``jit`` (jax 0.9).
    """
    sharding = getattr(S, "sharding", None)
    spec = getattr(sharding, "spec", None)
    if sharding is None or spec is None or not hasattr(sharding, "update"):
        return None
    spec = tuple(spec) + (None,) * (S.ndim - len(tuple(spec)))
    entries, pos = [], 0
    for _, axes in batch:
        if axes[0] == 0:  # S carries this level's axis
            entries.append(spec[pos])
            pos += 1
        else:
            entries.append(None)
    return sharding.update(spec=type(sharding.spec)(*entries, None, None))


def _frechet_abstract(*operands, f, method, n_args, k, batch):
    vma = frozenset().union(*(getattr(x, "vma", frozenset()) for x in operands))
    shape = tuple(size for size, _ in batch) + tuple(operands[0].shape[-2:])
    sharding = _output_sharding(operands[0], batch)
    if sharding is None:
        return ShapedArray(shape, operands[0].dtype, vma=vma)
    return ShapedArray(shape, operands[0].dtype, sharding=sharding, vma=vma)


def _frechet_bind(operands, axes, **params):
    """Bind with per-operand axes, one tuple per batch level (sizes from ``params``)."""
    batch = tuple((size, tuple(a)) for (size, _), a in zip(params.pop("batch"), axes))
    return _frechet_p.bind(*operands, batch=batch, **params)


def _frechet_jvp(primals, tangents, *, f, method, n_args, k, batch):
    S, args, Es = primals[0], primals[1 : 1 + n_args], primals[1 + n_args :]
    dS, dargs, dEs = tangents[0], tangents[1 : 1 + n_args], tangents[1 + n_args :]
    params = dict(f=f, method=method, n_args=n_args, k=k, batch=batch)
    axes = [list(a) for _, a in batch]
    out = _frechet_p.bind(*primals, **params)
    terms = []
    if type(dS) is not ad.Zero:  # order k + 1, dS appended (batched as S)
        ax = [a + [a[0]] for a in axes]
        terms.append(_frechet_bind((*primals, sym(dS)), ax, **{**params, "k": k + 1}))
    for i, dE in enumerate(dEs):  # order k, E_i replaced by its tangent
        if type(dE) is not ad.Zero:
            ops = (S, *args, *Es[:i], dE, *Es[i + 1 :])
            terms.append(_frechet_p.bind(*ops, **params))
    if any(type(da) is not ad.Zero for da in dargs):  # D^k of df/da, known inputs only
        # A tangent entry of args[m] is batched at the levels where args[m] is; it
        # broadcasts against the output's leading axes (one per level).
        def at_levels(da_entry, m):
            shape = [size if a[1 + m] == 0 else 1 for size, a in batch]
            return jnp.reshape(da_entry, (*shape, 1, 1))

        for m, (a, da) in enumerate(zip(args, dargs)):
            if type(da) is ad.Zero:
                continue
            da = jnp.asarray(da)
            nb = sum(1 for _, ax in batch if ax[1 + m] == 0)
            for index in np.ndindex(jnp.shape(a)[nb:]):
                fm = _Derived(f, arg=m, index=index)
                Dm = _frechet_p.bind(*primals, **{**params, "f": fm})
                terms.append(at_levels(da[(Ellipsis, *index)], m) * Dm)
    if not terms:
        # ad.Zero.from_primal_value is gone in jax 0.9; this form works from 0.6 on.
        return out, ad.Zero(jax.typeof(out).to_tangent_aval())
    return out, functools.reduce(jnp.add, terms)


def _frechet_transpose(ct, *operands, f, method, n_args, k, batch):
    # Linear only in one E operand (the others known): by the symmetry above, the
    # transpose is the same map with that E replaced by the (symmetrised) cotangent.
    linear = [i for i, x in enumerate(operands) if ad.is_undefined_primal(x)]
    if len(linear) != 1 or linear[0] < 1 + n_args:
        raise NotImplementedError("psd_fn's Frechet derivative is linear in one E only")
    i = linear[0]
    if type(ct) is ad.Zero:
        return [None] * len(operands)
    ops = list(operands)
    ops[i] = sym(ct)
    axes = [list(a) for _, a in batch]
    for a in axes:
        a[i] = 0  # the cotangent is batched at every level, as the output
    params = dict(f=f, method=method, n_args=n_args, k=k, batch=batch)
    res = _frechet_bind(ops, axes, **params)
    unbatched = tuple(lvl for lvl, (_, a) in enumerate(batch) if a[i] is None)
    if unbatched:
        res = jnp.sum(res, axis=unbatched)
    out: list[Array | None] = [None] * len(operands)
    out[i] = res
    return out


def _frechet_batch(operands, dims, *, f, method, n_args, k, batch):
    none = _NOT_MAPPED
    moved = [x if b is none else jnp.moveaxis(x, b, 0) for x, b in zip(operands, dims)]
    size = next(x.shape[0] for x, b in zip(moved, dims) if b is not _NOT_MAPPED)
    axes = tuple(None if b is _NOT_MAPPED else 0 for b in dims)
    new = ((size, axes), *batch)
    return _frechet_p.bind(*moved, f=f, method=method, n_args=n_args, k=k, batch=new), 0


_frechet_p.def_impl(_frechet_impl)  # eager: op by op, no compile cache keyed on f
_frechet_p.def_abstract_eval(_frechet_abstract)
mlir.register_lowering(_frechet_p, mlir.lower_fun(_frechet_impl, multiple_results=False))
ad.primitive_jvps[_frechet_p] = _frechet_jvp
ad.primitive_transposes[_frechet_p] = _frechet_transpose
batching.primitive_batchers[_frechet_p] = _frechet_batch


def _frechet(f: Callable, method: str, S: Matrix, args: tuple, *Es: Matrix) -> Matrix:
    """``D^k f(S; args)[E_1, ..., E_k]`` (order 0: ``f(S)``), exact at every order."""
    operands = [jnp.asarray(x) for x in (S, *args, *Es)]
    return _frechet_p.bind(*operands, f=f, method=method, n_args=len(args), k=len(Es), batch=())


def _psd_fn(f: Callable, method: str, S: Matrix, *args) -> Matrix:
    return _frechet(f, method, S, args)


def psd_fn_unchecked(f: Callable, S: Matrix, *args, method: str = "auto") -> Matrix:
    """:func:`psd_fn` of one ``(d, d)`` matrix, without validation (library internal)."""
    return _psd_fn(f, _resolve(method, S.shape[-1]), S, *args)
