"""discrete_ot at epsilon = 0 (the network simplex) against POT's exact LP (ot.emd / emd2).

Tolerances. The LP optimum is a vertex whose flows are sums and differences of the weights
along tree paths, and our value is certified to ``tol = (n' + m') eps max|C|`` with
``n' >= n``, ``m' >= m`` the padded sizes the solver runs on (every reduced cost
``>= -tol``: ``(f, g - tol)`` is dual feasible, total mass 1). POT's value is a vertex too,
and ``<P, C>`` summed over the ``<= n + m - 1`` support entries adds ``(n + m) eps max|C|``
on either side: we allow twice the sum, ``2 (n' + m' + n + m) eps max|C|`` absolute. The
plan's marginals are subtree sums of the weights (``<= n + m`` terms): ``(n + m) eps``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

import gaussot_jax as gj
from gaussot_jax._discrete import _solve_jit, lp_size
from gaussot_jax._simplex import network_simplex


def problem(rng, n, m, kind):
    """Weights and costs: ``gauss`` (squared distances, non-uniform weights), ``uniform``
    (uniform weights, i.i.d. costs: permutation-like optima), ``ties`` (integer costs in
    {0, .., 3}: many tied optima), ``zeros`` (~30 % zero weights, integer costs)."""
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    if kind == "gauss":
        x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
        C = ((x[:, None] - y[None]) ** 2).sum(-1)
    elif kind == "uniform":
        a, b = np.ones(n), np.ones(m)
        C = rng.random((n, m))
    elif kind == "ties":
        C = rng.integers(0, 4, size=(n, m)).astype(float)
    else:
        a[rng.random(n) < 0.3] = 0.0
        b[rng.random(m) < 0.3] = 0.0
        a[0] = b[0] = 1.0
        C = rng.integers(0, 3, size=(n, m)).astype(float)
    return a / a.sum(), b / b.sum(), C


def check_lp(out, a, b, C):
    n, m = C.shape
    N = lp_size(n) + lp_size(m)  # the certificate's path length (padded sizes)
    eps = np.finfo(np.float64).eps
    scale = np.abs(C).max()
    ref = ot.emd2(a, b, C, numItermax=10**7)
    assert bool(out.converged)
    assert out.plan.shape == (n, m) and out.potentials[0].shape == (n,)
    assert out.potentials[1].shape == (m,)
    assert abs(float(out.cost) - ref) <= 2 * (N + n + m) * eps * scale
    P = np.asarray(out.plan)
    assert P.min() >= 0.0
    np.testing.assert_allclose(P.sum(1), a, rtol=0, atol=(n + m) * eps)
    np.testing.assert_allclose(P.sum(0), b, rtol=0, atol=(n + m) * eps)
    assert np.count_nonzero(P) <= n + m - 1  # a vertex
    # The duals certify optimality: dual feasible to tol, complementary on the support.
    f, g = (np.asarray(x) for x in out.potentials)
    reduced = C - f[:, None] - g[None, :]
    assert reduced.min() >= -2 * N * eps * scale
    assert np.abs(reduced[P > 0]).max(initial=0.0) <= 2 * N * eps * scale
    # A zero-weight atom's potential (its weight gradient) is the c-transform over the
    # real atoms: the padding atoms, which are not in C, must not enter it.
    np.testing.assert_allclose(f[a == 0], (C - g[None, :]).min(1)[a == 0], atol=2 * N * eps * scale)
    np.testing.assert_allclose(g[b == 0], (C - f[:, None]).min(0)[b == 0], atol=2 * N * eps * scale)


def test_nearby_sizes_share_one_compiled_solver():
    # Up to 8 atoms a side the LP runs on the padded 8 x 8 problem (zero weights): one
    # compiled simplex for all these shapes, results as POT's on the unpadded problem,
    # real zero weights included.
    assert [lp_size(k) for k in (1, 8, 9, 11, 16, 17, 100, 1000, 1025)] == [
        8,
        8,
        10,
        12,
        16,
        20,
        112,
        1024,
        1280,
    ]
    rng = np.random.default_rng(14)
    before = _solve_jit._cache_size()
    for n, m, kind in ((3, 5, "gauss"), (7, 2, "ties"), (8, 8, "uniform"), (6, 8, "zeros")):
        a, b, C = problem(rng, n, m, kind)
        check_lp(gj.discrete_ot(a, b, C), a, b, C)
    assert _solve_jit._cache_size() - before <= 1


@pytest.mark.parametrize("k", [5, 30, 100, 300])
@pytest.mark.parametrize("kind", ["gauss", "uniform", "ties", "zeros"])
def test_lp_matches_emd2(k, kind):
    rng = np.random.default_rng(k)
    a, b, C = problem(rng, k, k + 7, kind)
    check_lp(gj.discrete_ot(a, b, C), a, b, C)


@pytest.mark.parametrize("k", [30, 100])
def test_uniform_square_is_an_assignment(k):
    # n = m, uniform weights: the LP optimum is a permutation matrix / k (Birkhoff); the
    # fully degenerate case (every basis has k - 1 zero-flow arcs).
    rng = np.random.default_rng(10 + k)
    a, b, C = problem(rng, k, k, "uniform")
    out = gj.discrete_ot(a, b, C)
    check_lp(out, a, b, C)
    np.testing.assert_allclose(np.asarray(out.plan), ot.emd(a, b, C), atol=1e-15)


def test_lp_k1000_against_emd2():
    rng = np.random.default_rng(1000)
    a, b, C = problem(rng, 1000, 1003, "gauss")
    check_lp(gj.discrete_ot(a, b, C), a, b, C)


def test_plan_matches_emd_when_unique():
    # Continuous random costs: the optimal vertex is unique almost surely.
    rng = np.random.default_rng(7)
    a, b, C = problem(rng, 30, 37, "gauss")
    out = gj.discrete_ot(a, b, C)
    np.testing.assert_allclose(np.asarray(out.plan), ot.emd(a, b, C), rtol=0, atol=1e-15)


def test_jit_and_vmap():
    rng = np.random.default_rng(8)
    probs = [problem(rng, 30, 37, kind) for kind in ("gauss", "uniform", "ties", "zeros")]
    a, b, C = (np.stack(x) for x in zip(*probs))
    out = jax.jit(jax.vmap(gj.discrete_ot))(a, b, C)
    for i in range(len(probs)):
        single = jax.tree_util.tree_map(lambda x, i=i: x[i], out)
        check_lp(single, a[i], b[i], C[i])


def test_gradient_is_the_plan_and_the_potentials():
    # (30, 37): the shape of the other tests (the solver compiles once per shape).
    rng = np.random.default_rng(9)
    a, b, C = problem(rng, 30, 37, "gauss")
    out = gj.discrete_ot(a, b, C)
    ga, gb, gC = jax.grad(lambda a, b, C: gj.discrete_ot(a, b, C).cost, (0, 1, 2))(a, b, C)
    np.testing.assert_array_equal(np.asarray(gC), np.asarray(out.plan))
    np.testing.assert_array_equal(np.asarray(ga), np.asarray(out.potentials[0]))
    np.testing.assert_array_equal(np.asarray(gb), np.asarray(out.potentials[1]))

    # The LP value is piecewise linear in (a, b, C): with a unique nondegenerate optimum a
    # small step keeps the basis, so central differences are exact up to round-off
    # (|C| eps / h). The differences call discrete_ot itself (its compiled solver for this
    # shape) on NumPy-perturbed inputs.
    def cost(a, b, C):
        return float(gj.discrete_ot(a, b, C).cost)

    h = 1e-7
    dC = rng.normal(size=C.shape)
    fd = (cost(a, b, C + h * dC) - cost(a, b, C - h * dC)) / (2 * h)
    np.testing.assert_allclose(fd, np.sum(gC * dC), rtol=1e-7)
    da = rng.normal(size=a.shape)
    da -= da.mean()
    fd = (cost(a + h * da, b, C) - cost(a - h * da, b, C)) / (2 * h)
    np.testing.assert_allclose(fd, np.dot(ga, da), rtol=1e-6)


def test_float32():
    rng = np.random.default_rng(11)
    a, b, C = problem(rng, 30, 37, "gauss")
    out = gj.discrete_ot(*(jnp.asarray(x, jnp.float32) for x in (a, b, C)))
    assert out.cost.dtype == jnp.float32
    # float32 inputs: the weights and costs themselves are rounded (relative 6e-8), the
    # certificate is (n' + m') eps32 max|C| (padded sizes), POT's sum (n + m) eps32 max|C|.
    bound = 2 * (lp_size(30) + lp_size(37) + 67) * np.finfo(np.float32).eps * C.max()
    assert abs(float(out.cost) - ot.emd2(a, b, C)) <= bound
    P = np.asarray(out.plan)
    assert P.min() >= 0
    np.testing.assert_allclose(P.sum(1), a, atol=67 * np.finfo(np.float32).eps)


def test_pivot_cap_returns_a_feasible_vertex():
    rng = np.random.default_rng(12)
    a, b, C = problem(rng, 30, 37, "gauss")
    out = gj.discrete_ot(a, b, C, max_pivots=3)
    assert not bool(out.converged)
    P = np.asarray(out.plan)
    assert P.min() >= 0
    np.testing.assert_allclose(P.sum(1), a, atol=1e-14)
    assert float(out.cost) >= ot.emd2(a, b, C)


def test_max_pivots_validation():
    a = np.full(2, 0.5)
    with pytest.raises(ValueError, match="max_pivots"):
        gj.discrete_ot(a, a, np.eye(2), max_pivots=0)


def test_one_by_m_and_n_by_one():
    # A single row (column): the only coupling; the tree is a star.
    # (1, 4) is also a shape of test_mixtures' CASES (one compile per shape).
    b = np.array([0.1, 0.2, 0.3, 0.4])
    C = np.array([[1.0, 2.0, 3.0, 4.0]])
    out = gj.discrete_ot(np.ones(1), b, C)
    np.testing.assert_allclose(np.asarray(out.plan), b[None], atol=1e-16)
    out = gj.discrete_ot(b, np.ones(1), C.T)
    np.testing.assert_allclose(float(out.cost), 3.0, rtol=1e-15)


def test_network_simplex_unbatched_kernel_is_jittable():
    rng = np.random.default_rng(13)
    a, b, C = problem(rng, 12, 9, "ties")
    solve = jax.jit(functools.partial(network_simplex, max_pivots=10**4, block_rows=3))
    plan, f, g, pivots, optimal = solve(a, b, C)
    assert bool(optimal) and int(pivots) > 0
    assert abs(float(np.sum(np.asarray(plan) * C)) - ot.emd2(a, b, C)) <= 1e-14


def test_euler_tour_intervals_match_a_depth_first_walk():
    # The pivots keep, per node, its first and last visit in an Euler tour; the tour built
    # by list ranking must be the depth-first walk (children in index order).
    from gaussot_jax._simplex import _euler_tour

    tour = jax.jit(_euler_tour)  # one program per N (eagerly: one per primitive and N)
    rng = np.random.default_rng(14)
    for N in (2, 3, 9, 40):
        root = int(rng.integers(N))
        order = rng.permutation([v for v in range(N) if v != root])
        parent = np.full(N, root)
        for t, v in enumerate(order):  # each node hangs from the root or an earlier node
            parent[v] = rng.choice(np.concatenate([[root], order[:t]]))
        children = {
            v: sorted(np.flatnonzero((parent == v) & (np.arange(N) != v))) for v in range(N)
        }
        walk = []

        def visit(v):
            walk.append(v)
            for c in children[v]:
                visit(c)
                walk.append(v)

        visit(root)
        np.testing.assert_array_equal(np.asarray(tour(jnp.asarray(parent, jnp.int32))), walk)


@pytest.mark.parametrize("shape", [(1, 6), (7, 3), (12, 12), (20, 9)])
def test_many_small_problems_vmapped_against_emd2(shape):
    # Degenerate, tied and zero-weight cases in bulk (one compile per shape): every pivot
    # of the interval-updated trees must keep a valid strongly feasible basis.
    n, m = shape
    rng = np.random.default_rng(n * 100 + m)
    probs = [problem(rng, n, m, kind) for kind in ("gauss", "uniform", "ties", "zeros") * 6]
    a, b, C = (np.stack(x) for x in zip(*probs))
    out = jax.jit(jax.vmap(gj.discrete_ot))(a, b, C)
    for t in range(len(probs)):
        single = jax.tree_util.tree_map(lambda x, t=t: x[t], out)
        ai, bi, Ci = a[t], b[t], C[t]
        if ai.min() > 0 and bi.min() > 0:
            check_lp(single, ai, bi, Ci)
        else:  # zero weights: arcs between two zero-weight nodes carry no dual condition
            assert bool(single.converged)
            assert abs(float(single.cost) - ot.emd2(ai, bi, Ci)) <= 1e-14
            P = np.asarray(single.plan)
            np.testing.assert_allclose(P.sum(1), ai, atol=1e-15)
            np.testing.assert_allclose(P.sum(0), bi, atol=1e-15)
            f, g = (np.asarray(x) for x in single.potentials)
            live = (ai[:, None] > 0) | (bi[None, :] > 0)
            assert (Ci - f[:, None] - g[None, :])[live].min() >= -1e-14
