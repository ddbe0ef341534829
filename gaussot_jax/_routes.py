"""A cheap route for every member of a batch, a fallback only where it is not certified.

Library internal. Some quantities have a fast route whose accuracy an a-posteriori bound
certifies per member (certified W2, the trace functions' one-factor gradient) and a
slower one that is always accurate. Unbatched, a ``lax.cond`` picks one; under ``vmap``
that cond would become a select of both, so every member paid for both routes. Here a
``custom_vmap`` rule runs the fast route for the whole batch and the fallback on the
uncertified members only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import jax
import jax.custom_batching
import jax.numpy as jnp
from jax import Array


def broadcast(axis_size: int, in_batched, *ops):
    """Broadcast the unbatched operands of a ``custom_vmap`` rule to the batch."""
    return tuple(
        x if batched else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))
        for x, batched in zip(ops, in_batched)
    )


def batch_route(route: Callable) -> Callable:
    """``route(*ops)`` on batches (leading axis ``n``); outer ``vmap`` axes fold into ``n``.

    A batching rule is traced once, with the innermost batch axis; an outer ``vmap``
    (``gj.pairwise`` is two) would then batch the rule's own ``lax.cond`` into a select of
    both branches, so every pair paid for both routes. Here the outer axes are folded into
    the batch instead (an operand the batch shares is broadcast), and the cond stays a
    cond.
    """

    @jax.custom_batching.custom_vmap
    def batched(*ops):
        return route(*ops)

    @batched.def_vmap
    def _(axis_size, in_batched, *ops):
        ops = broadcast(axis_size, in_batched, *ops)
        out = batched(*(x.reshape(-1, *x.shape[2:]) for x in ops))
        unflat = jax.tree.map(lambda x: x.reshape(axis_size, -1, *x.shape[1:]), out)
        return unflat, jax.tree.map(lambda _: True, out)

    return batched


def patch(ok: Array, out, fallback: Callable, *ops):
    """``out`` with its members where ``~ok`` replaced by ``fallback(*ops)`` of theirs.

    ``fallback`` runs only on the uncertified members, gathered ``c = ceil(n / 16)`` at a
    time in a loop of ``ceil(count / c)`` steps (none when every member is certified):
    one compiled instance of the fallback, and a pairwise matrix of a set against itself,
    whose equal diagonal pairs are never certified, pays it for about ``n`` of its
    ``n^2`` pairs, not all.
    """
    n = ok.shape[0]
    c = -(-n // 16)
    count = jnp.sum(~ok)
    # uncertified first (a stable sort of the flags; cheaper to compile than nonzero),
    # then n (out of bounds) in place of the certified ones, padded to 16 c
    order = cast(Array, jnp.where(jnp.arange(n) < count, jnp.argsort(ok, stable=True), n))
    order = jnp.concatenate([order, jnp.full(16 * c - n, n, order.dtype)])

    def step(i, acc):
        idx = jax.lax.dynamic_slice(order, (i * c,), (c,))
        sub = fallback(*(x[jnp.minimum(idx, n - 1)] for x in ops))
        # the fill entries (n, out of bounds) evaluated a real member and are dropped
        # here, so no index is written twice
        return jax.tree.map(lambda x, y: x.at[idx].set(y, mode="drop"), acc, sub)

    return jax.lax.fori_loop(0, (count + c - 1) // c, step, out)
