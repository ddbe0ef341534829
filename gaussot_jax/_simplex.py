r"""The transportation linear program by the network simplex, in pure JAX.

Solves ``min_{P >= 0, P 1 = a, P^T 1 = b} <P, C>`` exactly: the optimum is a vertex of the
transport polytope, a spanning tree of the bipartite graph (rows ``0..n-1``, columns
``n..n+m-1``) whose flows follow from the marginals. The primal network simplex keeps such
a tree with dual potentials ``u_i + v_j = C_ij`` on its arcs and, while some reduced cost
``C_ij - u_i - v_j`` is below ``-tol``, lets that arc enter, pushes flow around the cycle
it closes and drops the blocking arc (Dantzig 1951; Ahuja, Magnanti & Orlin 1993, ch. 11).

* **Start.** Greedy on the ``4 (n + m)`` cheapest arcs (each arc takes
  ``min(residual row, residual column)``), the remainder by the north-west corner rule,
  the resulting forest joined into a tree by zero-flow arcs from one row of each component
  to the root (a column): a *strongly feasible* tree (every zero-flow arc points to the
  root).
* **Pricing.** Block search (the rule of LEMON and POT): the rows are scanned in blocks of
  ``block_rows``; the most negative reduced cost of the first block that has one enters.
* **Leaving arc.** The last blocking arc met when walking the cycle from its apex along the
  entering arc (Cunningham 1976): the tree stays strongly feasible, so degenerate pivots
  cannot cycle.
* **Tree arithmetic without sequential walks.** The tree is a parent array plus, for each
  node, its first and last position in an Euler tour of the tree (built once by list
  ranking). A node's subtree is one stretch of the tour, so ancestry is an interval test
  and the cycle of the entering arc is two masks; a pivot moves whole stretches of the
  tour (cut the leaving subtree, rotate it to its new root, splice it in under the
  entering arc), so the new intervals follow by index arithmetic. The potentials of the
  moved subtree shift by the entering reduced cost. A pivot is ``O(n + m)`` elementwise
  work, one scatter and a few gathers: no loop inside it, every step a fixed-shape
  vector operation, so the solver jits and ``vmap`` batches it (the loops then run until
  every problem is done).
* **Exact potentials.** The shifts carry round-off from pivot to pivot, so when the
  pricing finds no entering arc the potentials are recomputed from the tree (pointer
  jumping: ``log2(n + m)`` rounds of gathers, a potential being the signed sum of arc
  costs along the root path) and the pricing rerun; the solver stops only when these
  fresh potentials admit no entering arc.
* **End.** The flows are recomputed from the final tree (subtree sums of the marginals,
  deepest level first), so the plan's marginals hold to round-off whatever the number of
  pivots; its entries are ``>= 0``.

Optimality: when every reduced cost is ``>= -tol``, ``(u, v - tol)`` is dual feasible, so
``<P, C> - OT <= tol`` (total mass 1). ``tol = (n + m) * machine eps * max|C|``, the
round-off of potentials summed along tree paths of up to ``n + m`` arcs: the value is the
LP's to ``~(n + m) eps max|C|`` absolute (measured against POT's ``ot.emd2``: ``<= 5e-15``
relative for ``k <= 1000``).
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

__all__ = ["network_simplex"]


def _where(condition, x, y) -> Array:
    """``jnp.where`` with three arguments (typed: always one array)."""
    return cast(Array, jnp.where(condition, x, y))


def _argmin(x) -> Array:
    """First index of the minimum of a vector ``x``.

    Two plain reductions: XLA's CPU ``argmin`` (a variadic reduction) is ~10x slower.
    """
    k = x.shape[0]
    hit = x == jnp.min(x)
    return jnp.min(_where(hit, jnp.arange(k, dtype=jnp.int32), k))


def _staircase(wa, wb):
    """North-west corner rule on ``wa (n,)``, ``wb (m,)`` (zero entries skipped).

    Returns the ``n + m - 1`` cells ``(row, col, flow)`` of the staircase coupling, taking
    the zero-weight rows and columns last; cells with ``flow = 0`` are not arcs of it.
    Column breakpoints come first on ties.
    """
    n, m = wa.shape[0], wb.shape[0]
    dtype = wa.dtype
    pr = jnp.argsort(_where(wa > 0, 0, 1), stable=True)
    pc = jnp.argsort(_where(wb > 0, 0, 1), stable=True)
    npos, mpos = jnp.sum(wa > 0), jnp.sum(wb > 0)
    A, B = jnp.cumsum(wa[pr]), jnp.cumsum(wb[pc])
    a_prev = jnp.concatenate([jnp.zeros(1, dtype), A[:-1]])
    b_prev = jnp.concatenate([jnp.zeros(1, dtype), B[:-1]])
    kr, kc = jnp.arange(n), jnp.arange(m)
    a_hi = _where(kr < npos - 1, A, A[-1])  # interval ends; the last one is the total
    b_hi = _where(kc < mpos - 1, B, B[-1])
    # Row at position p >= 1 starts at a_prev[p] inside column q; column q >= 1 at b_prev[q]
    # inside row p.
    q = jnp.minimum(jnp.searchsorted(_where(kc < mpos - 1, B, jnp.inf), a_prev, "right"), m - 1)
    p = jnp.minimum(jnp.searchsorted(_where(kr < npos - 1, A, jnp.inf), b_prev, "left"), n - 1)
    f_row = _where(kr < npos, jnp.minimum(a_hi, b_hi[q]) - a_prev, 0.0)
    f_col = _where(kc < mpos, jnp.minimum(a_hi[p], b_hi) - b_prev, 0.0)
    rows = jnp.concatenate([pr[1:], pr[p]])
    cols = jnp.concatenate([pc[q[1:]], pc])
    flows = jnp.concatenate([f_row[1:], f_col])
    return rows, cols, jnp.maximum(flows, 0.0)


def _initial_tree(a, b, C, num_candidates: int):
    """A strongly feasible spanning tree ``(parent, flow)`` (see the module docstring).

    Nodes are rows ``0..n-1`` and columns ``n..n+m-1``; ``flow[y]`` is the flow on the arc
    from ``y`` to ``parent[y]``; the root is a column and its own parent.
    """
    n, m = C.shape
    N, E = n + m, n + m - 1
    dtype = C.dtype
    valid = (a[:, None] > 0) & (b[None, :] > 0)
    K = min(num_candidates, n * m)
    _, idx = jax.lax.top_k(-_where(valid, C, jnp.inf).reshape(-1), K)
    cand_r, cand_c = (idx // m).astype(jnp.int32), (idx % m).astype(jnp.int32)

    # Greedy: each accepted arc saturates its row or its column, which takes no further arc;
    # so the accepted arcs form a forest whose every component has one unsaturated node.
    def cond(state):
        t, _, _, _, _, _, cnt, left = state
        return (t < K) & (cnt < E) & (left > 0)

    def body(state):
        t, res_r, res_c, er, ec, ef, cnt, left = state
        i, j = cand_r[t], cand_c[t]
        x = jnp.minimum(res_r[i], res_c[j])
        ok = x > 0
        res_r = res_r.at[i].add(_where(ok, -x, 0.0))
        res_c = res_c.at[j].add(_where(ok, -x, 0.0))
        slot = _where(ok, cnt, E)
        er = er.at[slot].set(i, mode="drop")
        ec = ec.at[slot].set(j, mode="drop")
        ef = ef.at[slot].set(x, mode="drop")
        left = left - (ok & (res_r[i] == 0)).astype(jnp.int32)
        return t + 1, res_r, res_c, er, ec, ef, cnt + ok.astype(jnp.int32), left

    zi = jnp.zeros(E, jnp.int32)
    state = (0, a, b, zi, zi, jnp.zeros(E, dtype), jnp.int32(0), jnp.sum(a > 0).astype(jnp.int32))
    _, res_r, res_c, er, ec, ef, cnt, _ = jax.lax.while_loop(cond, body, state)

    # The residual by a staircase: its arcs join distinct components (no cycle).
    sr, sc, sf = _staircase(res_r, res_c)
    keep = sf > 0
    slot = _where(keep, cnt + jnp.cumsum(keep) - 1, E)
    er = er.at[slot].set(sr.astype(jnp.int32), mode="drop")
    ec = ec.at[slot].set(sc.astype(jnp.int32), mode="drop")
    ef = ef.at[slot].set(sf, mode="drop")
    cnt = cnt + jnp.sum(keep).astype(jnp.int32)
    live = jnp.arange(E) < cnt

    # Components by min-label propagation with pointer jumping.
    u, v = er, ec + n
    ids = jnp.arange(N, dtype=jnp.int32)

    def label_body(state):
        lab, _ = state
        low = _where(live, jnp.minimum(lab[u], lab[v]), N)
        new = lab.at[u].min(low).at[v].min(low)
        new = new[new]
        return new, jnp.any(new != lab)

    lab, _ = jax.lax.while_loop(lambda s: s[1], label_body, (ids, jnp.asarray(True)))
    root = n + cand_c[0]
    # One row of each other component hangs from the root column by a zero-flow arc (row ->
    # root: points to the root, as strong feasibility wants); a lone zero-weight column
    # hangs from a row of the root's component (a leaf: never on a cycle).
    is_col = ids >= n
    first_row = jnp.full(N, N, jnp.int32).at[lab].min(_where(is_col, N, ids))
    rep = (ids == first_row[lab]) & (lab != lab[root])
    lone_col = is_col & (first_row[lab] == N)
    attach = rep | lone_col
    slot = _where(attach, cnt + jnp.cumsum(attach) - 1, E)
    er = er.at[slot].set(_where(rep, ids, cand_r[0]), mode="drop")
    ec = ec.at[slot].set(_where(rep, root - n, ids - n), mode="drop")
    ef = ef.at[slot].set(0.0, mode="drop")

    # Root the tree by a breadth-first sweep from the root.
    u, v = er, ec + n

    def sweep(state):
        seen, parent, flow, _ = state
        down_v = seen[u] & ~seen[v]
        down_u = seen[v] & ~seen[u]
        child = _where(down_v, v, _where(down_u, u, N))
        parent = parent.at[child].set(_where(down_v, u, v), mode="drop")
        flow = flow.at[child].set(ef, mode="drop")
        seen = seen.at[child].set(True, mode="drop")
        return seen, parent, flow, jnp.any(down_u | down_v)

    state = (ids == root, ids, jnp.zeros(N, dtype), jnp.asarray(True))
    _, parent, flow, _ = jax.lax.while_loop(lambda s: s[3], sweep, state)
    return parent, flow


def _euler_tour(parent):
    """The Euler tour of the tree ``parent`` (node visits, ``2 N - 1`` of them) by list ranking.

    Each non-root node ``c`` has a down arc ``parent c -> c`` (slot ``c``) and an up arc
    ``c -> parent c`` (slot ``N + c``); children are visited in index order. The successor
    of a down arc into ``c`` is the down arc into ``c``'s first child, or, for a leaf, the
    up arc out of ``c``; the successor of the up arc out of ``c`` is the down arc into
    ``c``'s next sibling, or else the up arc out of ``c``'s parent (``END`` at the root).
    Pointer jumping ranks the arcs by their distance to ``END``; the tour is the root
    followed by the heads of the arcs in order. Once per solve: ``O(N log N)``.
    """
    N = parent.shape[0]
    M = 2 * N - 1
    ids = jnp.arange(N, dtype=jnp.int32)
    is_root = parent == ids
    end = 2 * N
    key = _where(is_root, N, parent)  # the root sorts last
    order = jnp.argsort(key, stable=True).astype(jnp.int32)  # children grouped by parent
    sorted_key = key[order]
    rank = jnp.zeros(N, jnp.int32).at[order].set(ids)
    nxt_in_order = order[jnp.minimum(rank + 1, N - 1)]
    has_sib = (rank + 1 < N) & (sorted_key[jnp.minimum(rank + 1, N - 1)] == key)
    # The first position of each node's children in the sorted order: the number of keys
    # below it (an exclusive cumulative count; keys are < N, the root's key N sorts last).
    counts = jnp.zeros(N, jnp.int32).at[key].add(1, mode="drop")
    start = jnp.cumsum(counts) - counts
    first_child = order[jnp.minimum(start, N - 1)]
    has_child = (start < N) & (sorted_key[jnp.minimum(start, N - 1)] == ids)
    up_next = _where(
        has_sib, nxt_in_order, _where(is_root[parent], end, N + parent)
    )  # after the up arc out of c
    down_next = _where(has_child, first_child, N + ids)  # after the down arc into c
    nxt = jnp.concatenate([down_next, up_next, jnp.array([end], jnp.int32)])
    dummy = jnp.concatenate([is_root, is_root, jnp.array([True])])
    nxt = _where(dummy, end, nxt)
    dist = _where(dummy, 0, 1).astype(jnp.int32)

    def jump(_, state):
        dist, nxt = state
        return dist + dist[nxt], nxt[nxt]

    rounds = int(np.ceil(np.log2(2 * N))) + 1
    dist, nxt = jax.lax.fori_loop(0, rounds, jump, (dist, nxt))
    head = jnp.concatenate([ids, parent, jnp.array([0], jnp.int32)])
    pos = _where(dummy, M, M - dist)  # the last arc (dist 1) sits at M - 1
    root = jnp.argmax(is_root).astype(jnp.int32)
    tour = jnp.full(M, root, jnp.int32).at[pos].set(head, mode="drop")
    return tour


def _lift(parent, signed_cost, num_levels: int):
    """Pointer jumping: depth and signed potential ``z`` of every node.

    ``z_y = z_parent + signed_cost_y`` with ``z_root = 0`` (``signed_cost_root = 0``), i.e.
    the sum of ``signed_cost`` along the root path; the depth is the same sum of ones.
    ``num_levels >= log2(depth + 1)`` rounds, each doubling the span of the sums.
    """
    root = parent == jnp.arange(parent.shape[0])
    X = jnp.stack([_where(root, 0.0, 1.0).astype(signed_cost.dtype), signed_cost])

    def jump(_, state):
        X, p = state
        return X + X[:, p], p[p]

    X, _ = jax.lax.fori_loop(0, num_levels, jump, (X, parent))
    return X[0], X[1]


def _subtree_flows(parent, depth, a, b):
    """Flow on each node's parent arc: the net supply of its subtree (deepest level first)."""
    n = a.shape[0]
    N = parent.shape[0]
    supply = jnp.concatenate([a, -b])
    level = depth.astype(jnp.int32)

    def body(state):
        s, d = state
        tgt = _where(level == d, parent, N)
        return s.at[tgt].add(s, mode="drop"), d - 1

    s, _ = jax.lax.while_loop(lambda st: st[1] > 0, body, (supply, jnp.max(level)))
    return _where(jnp.arange(N) < n, s, -s)


def network_simplex(a, b, C, *, max_pivots: int, block_rows: int):
    """Exact transportation LP (module docstring). Unbatched; no derivatives.

    Args:
        a: ``(n,)`` weights ``>= 0`` summing to 1.
        b: ``(m,)`` weights ``>= 0`` summing to 1 (the same total as ``a``).
        C: ``(n, m)`` finite costs.
        max_pivots: cap on the number of pivots (static).
        block_rows: rows per pricing block (static).

    Returns:
        ``(plan, f, g, pivots, optimal)``: the optimal vertex ``plan (n, m)``, dual
        potentials ``f (n,)``, ``g (m,)`` (``f_i + g_j <= C_ij + tol``, equality on the plan's
        support; the c-transform for zero-weight rows and columns), the number of pivots,
        and whether the optimality test passed (``False`` only when ``max_pivots`` ran out;
        the plan is then a feasible vertex, not the optimum).
    """
    a, b, C = jnp.asarray(a), jnp.asarray(b), jnp.asarray(C)
    n, m = C.shape
    N = n + m
    dtype = C.dtype
    levels = max(1, int(np.ceil(np.log2(N))) + 1)
    ids = jnp.arange(N, dtype=jnp.int32)
    is_row = ids < n
    sign = _where(is_row, 1.0, -1.0).astype(dtype)
    tol = N * jnp.finfo(dtype).eps * jnp.max(jnp.abs(C))
    valid = (a[:, None] > 0) & (b[None, :] > 0)
    block_rows = max(1, min(block_rows, n))
    num_blocks = -(-n // block_rows)
    pad = num_blocks * block_rows - n
    Cb = jnp.concatenate([_where(valid, C, jnp.inf), jnp.full((pad, m), jnp.inf, dtype)])

    def signed_cost(parent):
        r = _where(is_row, ids, parent)
        c = _where(is_row, parent, ids) - n
        cost = C[jnp.clip(r, 0, n - 1), jnp.clip(c, 0, m - 1)]
        return _where(parent == ids, 0.0, sign * cost)

    def price(z, blk):
        # Reduced costs C_ij - u_i - v_j with u = z (rows), v = -z (columns).
        rows = jax.lax.dynamic_slice_in_dim(Cb, blk * block_rows, block_rows, 0)
        zr = jnp.concatenate([z[:n], jnp.zeros(pad, dtype)])
        zr = jax.lax.dynamic_slice_in_dim(zr, blk * block_rows, block_rows)
        r = (rows - zr[:, None] + z[None, n:]).reshape(-1)
        k = _argmin(r)
        return r[k], (blk * block_rows + k // m).astype(jnp.int32), (k % m).astype(jnp.int32)

    def pivot(state, r, i, j):
        # One pivot in O(N) elementwise work, one scatter and a few gathers; no walk along
        # the tree. The tree is kept as its parent array and, for each node y, the first and
        # last position of y in an Euler tour (the node visits of a depth-first walk,
        # 2 N - 1 of them). The tour visits y's subtree in one stretch, so y is an ancestor
        # of x (or x itself) iff first[y] <= first[x] <= last[y], and along a root path
        # first[] grows with the depth. The tour itself is never stored: a pivot moves
        # whole stretches of it, so the new (first, last) follow from the old by index
        # arithmetic (below).
        parent, flow, z, first, last, count, blk = state
        jn = n + j
        fi, fj = first[i], first[jn]
        on_i = (first <= fi) & (fi <= last)  # the root path of i
        on_j = (first <= fj) & (fj <= last)
        i_side, j_side = on_i & ~on_j, on_j & ~on_i  # the cycle: arcs (y, parent y)
        dec = (i_side & is_row) | (j_side & ~is_row)  # traversed against the arc direction
        inc = (i_side & ~is_row) | (j_side & is_row)
        theta = jnp.min(_where(dec, flow, jnp.inf))
        blocking = dec & (flow == theta)
        # Cunningham: the last blocking arc met when walking the cycle from its apex along
        # i -> j: on j's side the one nearest the apex (smallest first[]), else on i's side
        # the one nearest i (largest first[]). The tree stays strongly feasible.
        key = _where(blocking & j_side, first, _where(blocking, 2 * M - first, 3 * M))
        if packed:  # the keys of blocking arcs are distinct: one reduction finds the node
            out = jnp.min(key * N + ids) % N
        else:
            out = _argmin(key)
        flow = flow + _where(inc, theta, 0.0) - _where(dec, theta, 0.0)
        at_i = i_side[out]
        start = _where(at_i, i, jn)  # the end of the entering arc below the leaving arc
        other = _where(at_i, jn, i)
        fo, lo = first[out], last[out]
        in_s = (first >= fo) & (first <= lo)  # S: the subtree of out, which moves
        # Reverse the path start -> out (the ancestors of start in S): each of its nodes
        # becomes its child's parent, and takes over that arc's flow; start hangs from
        # other by the entering arc, with flow theta.
        path = _where(at_i, on_i, on_j) & in_s
        child = jnp.full(N, N, jnp.int32)
        child = child.at[_where(path & (ids != out), parent, N)].set(ids, mode="drop")
        has = child < N
        new_parent = _where(has, child, parent).at[start].set(other)
        flow = _where(has, flow[jnp.minimum(child, N - 1)], flow).at[start].set(theta)
        # Potentials: shifting all of S by the entering reduced cost r (rows up, columns
        # down, so arcs inside S keep theirs) makes the entering arc's reduced cost 0.
        z = z + _where(in_s, _where(at_i, r, -r), 0.0)
        # The tour. Cut S's stretch [fo, lo] and the visit of out's parent p at lo + 1;
        # reroot S at start: S's stretch without its last visit (lo, out again) is a cyclic
        # tour of S, rotated to begin at start's first visit and closed by start; splice it
        # in right after other's first visit, followed by a fresh visit of other.
        ls = lo - fo + 1  # 2 |S| - 1 visits
        cyc = jnp.maximum(ls - 1, 1)
        shift = first[start] - fo
        fq = first[other]
        anchor = _where(fq < fo, fq, fq - ls - 1)  # other's first visit in the cut tour

        def moved(u):  # new position of an old visit u outside S (u != lo + 1)
            cut = _where(u < fo, u, u - ls - 1)
            return _where(cut <= anchor, cut, cut + ls + 1)

        def rot(u):  # new position of an old visit u in [fo, lo] (lo is fo again)
            v = u - fo - shift  # in [-shift, cyc]: (v mod cyc) without a division
            return anchor + 1 + _where(v < 0, v + cyc, _where(v >= cyc, v - cyc, v))

        # Outside S every visit keeps its order, but p may lose its last one (then its
        # last visit is the one just before S) and other gains one after S.
        first_out = moved(first)
        last_out = moved(_where(last == lo + 1, fo - 1, last))
        last_out = _where(ids == other, jnp.maximum(last_out, anchor + ls + 1), last_out)
        # In S off the path, a subtree's stretch does not contain start's first visit, so
        # the rotation keeps it whole. On the path, y != start is now the parent of its old
        # path child c, and y's new subtree is S less c's old one: the cyclic stretch from
        # last[c] + 1 round to first[c] - 1 (both visits of y).
        c = jnp.minimum(child, N - 1)
        first_s = _where(has, rot(last[c] + 1), rot(first))
        last_s = _where(has, rot(first[c] - 1), rot(last))
        first_s = _where(ids == start, anchor + 1, first_s)
        last_s = _where(ids == start, anchor + ls, last_s)
        first = _where(in_s, first_s, first_out)
        last = _where(in_s, last_s, last_out)
        return new_parent, flow, z, first, last, count + 1, blk

    def step(carry):
        state, _ = carry
        *_, z, _, _, _, blk = state

        def scan_more(s):
            return (s[0] >= -tol) & (s[4] < num_blocks)

        def scan(s):
            blk, seen = s[3], s[4]
            r, i, j = price(z, blk)
            return r, i, j, (blk + 1) % num_blocks, seen + 1

        init = (jnp.zeros((), dtype), jnp.int32(0), jnp.int32(0), blk, jnp.int32(0))
        r, i, j, blk, _ = jax.lax.while_loop(scan_more, scan, init)
        state = (*state[:-1], blk)
        optimal = r >= -tol
        state = jax.lax.cond(optimal, lambda s: s, lambda s: pivot(s, r, i, j), state)
        return state, optimal

    def pivots_left(state):
        return state[5] < max_pivots

    def inner_more(carry):
        state, optimal = carry
        return ~optimal & pivots_left(state)

    def _visits(tour):
        first = jnp.full(N, M, jnp.int32).at[tour].min(slots)
        last = jnp.full(N, -1, jnp.int32).at[tour].max(slots)
        return first, last

    def outer(carry):
        # Fresh potentials from the tree (exact sums along root paths), then pivot until
        # the pricing finds no entering arc. The shifts of the inner loop carry round-off
        # from pivot to pivot; the outer loop ends only when the fresh potentials price
        # the tree optimal (no pivot after the refresh), so the certificate is exact.
        state = carry[0]
        parent = state[0]
        _, z = _lift(parent, signed_cost(parent), levels)
        state = (*state[:2], z, *state[3:])
        before = state[5]
        state, _ = jax.lax.while_loop(inner_more, step, (state, jnp.asarray(False)))
        optimal = state[5] == before
        return state, optimal | ~pivots_left(state), optimal

    M = 2 * N - 1
    slots = jnp.arange(M, dtype=jnp.int32)
    packed = (3 * M + 1) * N < 2**31  # (key, node) fits one int32
    parent, flow = _initial_tree(a, b, C, 4 * N)
    first, last = _visits(_euler_tour(parent))
    z = jnp.zeros(N, dtype)
    state = (parent, flow, z, first, last, jnp.int32(0), jnp.int32(0))
    no = jnp.asarray(False)
    state, _, optimal = jax.lax.while_loop(lambda c: ~c[1], outer, (state, no, no))
    parent, count = state[0], state[5]
    depth, z = _lift(parent, signed_cost(parent), levels)
    x = jnp.maximum(_subtree_flows(parent, depth, a, b), 0.0)
    r = _where(is_row, ids, parent)
    c = _where(is_row, parent, ids) - n
    r = _where(parent == ids, n, r)  # the root has no arc
    plan = jnp.zeros((n, m), dtype).at[r, c].add(x, mode="drop")
    f, g = z[:n], -z[n:]
    # Zero-weight rows / columns: the c-transforms (their tree arcs carry no information).
    g = _where(b > 0, g, jnp.min(_where(a[:, None] > 0, C - f[:, None], jnp.inf), 0))
    f = _where(a > 0, f, jnp.min(_where(b[None, :] > 0, C - g[None, :], jnp.inf), 1))
    return plan, f, g, count, optimal
