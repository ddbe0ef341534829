"""The certified eigenvalue-only value of ``bures_wasserstein2`` (bures._eigvals_value).

References are exact or carry a derived bound, independent of the route under test:

- ``A = X^T X``, ``B = Y^T Y`` with small-integer ``X``, ``Y`` (exact in float64 and
  float32): ``Tr (A^{1/2} B A^{1/2})^{1/2} = ||X Y^T||_*``, the nuclear norm of an
  integer matrix, from numpy's SVD (LAPACK gesdd: another matrix, another algorithm),
  whose singular values are each within ``p eps ||G||_2`` (``p = 2 max(m, n)``, the
  backward-error model of conftest.eig_backward_error);
- nearby pairs ``B = T A T``, ``T = I + H / 2^k`` (``H`` symmetric, entries in {-1, 0, 1},
  ``T`` positive definite): ``x -> T x`` is the Monge map, so the covariance term is
  exactly ``Tr((T - I) A (T - I)) = Tr(H A H) / 4^k``, and ``B`` is stored exactly
  (integers over ``4^k``) in float64.

Tolerances: where the eigenvalue-only value is certified, its own bound (``<= tau`` of
the value); where it is not, the Procrustes form's error bound (``|dW2| <= ||dX||_F +
||dY||_F`` plus the polar factor's and the products' round-off, from
conftest.sqrtm_error_bound), plus the reference's.
"""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import eig_backward_error, sqrtm_error_bound

import gaussot_jax as gj
from gaussot_jax import bures

pytestmark = pytest.mark.timeout(300)


def _ints(rng, n, d, top=2):
    return rng.integers(-top, top + 1, size=(n, d)).astype(np.int64)


def _factor(rng, d, n, *, full_rank):
    """Integer ``X`` with ``X^T X`` of rank ``min(n, d)``, or ``+ 4 I`` (full rank)."""
    X = _ints(rng, n, d)
    return np.vstack([X, 2 * np.eye(d, dtype=np.int64)]) if full_rank else X


def _nuclear_ref(X, Y):
    """``(||X Y^T||_*, bound on its error)`` from the float64 SVD of the integer product."""
    G = (X @ Y.T).astype(np.float64)  # exact: small integers
    s = np.linalg.svd(G, compute_uv=False)
    p = eig_backward_error(max(G.shape), np.float64)
    return float(np.sum(s)), float(min(G.shape) * p * s[0] + G.shape[0] * 1e-16 * np.sum(s))


def _separated_ref(X, Y):
    """``(A, B, exact covariance term, bound on the reference's error)``."""
    A, B = X.T @ X, Y.T @ Y  # int64, exact
    cross, err = _nuclear_ref(X, Y)
    tr = float(np.trace(A) + np.trace(B))  # exact integers
    return A.astype(np.float64), B.astype(np.float64), tr - 2.0 * cross, 2.0 * err + 1e-16 * tr


def _nearby_ref(rng, d, k):
    """``(A, B = T A T, exact covariance term)``, all exact in float64."""
    X = _factor(rng, d, d // 2, full_rank=True)
    A = X.T @ X
    H = np.zeros((d, d), dtype=np.int64)
    idx = rng.integers(0, d, size=(d, 2))
    H[idx[:, 0], idx[:, 1]] = rng.choice([-1, 1], size=d)
    H = np.sign(H + H.T)  # symmetric, |H_ij| <= 1, at most 2d non-zeros: ||H||_2 < 2^k
    q = 1 << k
    B_num = A * q * q + (H @ A + A @ H) * q + H @ A @ H  # 4^k T A T, exact integers
    assert np.abs(B_num).max() < 2**52
    exact = float(np.trace(H @ A @ H)) / (q * q)
    return A.astype(np.float64), B_num.astype(np.float64) / (q * q), exact


def _procrustes_bound(A, B, w2, dtype):
    """Bound on the Procrustes value's error at ``W2 = w2`` (module docstring of bures)."""
    d = A.shape[-1]
    eps = float(np.finfo(dtype).eps)
    nA, nB = np.linalg.norm(A, 2), np.linalg.norm(B, 2)
    dX = np.sqrt(d) * sqrtm_error_bound(A, dtype) * np.sqrt(nA)
    dY = np.sqrt(d) * sqrtm_error_bound(B, dtype) * np.sqrt(nB)
    p = eig_backward_error(d, dtype)
    dU = np.sqrt(d) * p * np.sqrt(nB)  # U orthogonal to p eps (per column), times ||Y||_2
    mm = d * d * eps * np.sqrt(nB)  # fl(Y U) - Y U in Frobenius norm
    delta = dX + dY + dU + mm
    return delta * (2.0 * w2 + delta) + 2 * d * eps * w2**2


def _value_and_tolerance(A, B, exact, ref_err, dtype):
    """(our covariance term, |error| allowed, certified?) for one pair in ``dtype``."""
    Aj, Bj = jnp.asarray(A, dtype), jnp.asarray(B, dtype)
    assert np.array_equal(np.asarray(Aj, np.float64), A)  # the data are exact in dtype
    assert np.array_equal(np.asarray(Bj, np.float64), B)
    zero = jnp.zeros(A.shape[-1], dtype)
    got = float(jax.jit(gj.bures_wasserstein2)(gj.Gaussian(zero, Aj), gj.Gaussian(zero, Bj)))
    value, bound = jax.jit(bures._eigvals_value)(Aj, Bj)
    certified = bool(bures._certified(value, bound))
    if certified:
        allowed = float(bound)
        assert float(bound) <= np.sqrt(np.finfo(dtype).eps) * float(value)
    else:
        allowed = _procrustes_bound(A, B, np.sqrt(max(exact, 0.0)), dtype)
    return got, allowed + ref_err, certified


DTYPES = [jnp.float64, jnp.float32]
# Sizes: every d >= bures._CERTIFIED_MIN_D takes the eigenvalue-only route; d = 3 the
# smallest (3-D covariances), d = 64 a moderate size, d = 512 FID scale (each new d
# compiles every program anew).


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [3, 64, 512])
def test_separated_pair_against_exact_reference(rng, d, dtype):
    X = _factor(rng, d, d // 2, full_rank=True)
    Y = _factor(rng, d, d, full_rank=True)
    A, B, exact, ref_err = _separated_ref(X, Y)
    got, allowed, certified = _value_and_tolerance(A, B, exact, ref_err, dtype)
    assert abs(got - exact) <= allowed, (got, exact, allowed)
    if dtype == jnp.float64:
        assert certified  # well separated and well conditioned: the fast route


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [64, 512])
def test_rank_deficient_pair_against_exact_reference(rng, d, dtype):
    # FID-like: covariances from n < d samples (rank n), one or both singular.
    X = _factor(rng, d, d // 4, full_rank=False)
    for Y in (_factor(rng, d, d // 3, full_rank=False), _factor(rng, d, d, full_rank=True)):
        A, B, exact, ref_err = _separated_ref(X, Y)
        got, allowed, _ = _value_and_tolerance(A, B, exact, ref_err, dtype)
        assert got >= 0.0
        assert abs(got - exact) <= allowed, (got, exact, allowed)


@pytest.mark.parametrize("d", [3, 64, 512])
def test_nearby_pair_takes_the_fallback(rng, d):
    A, B, exact = _nearby_ref(rng, d, k=16)
    got, allowed, certified = _value_and_tolerance(A, B, exact, 0.0, jnp.float64)
    assert not certified
    assert got >= 0.0
    assert abs(got - exact) <= allowed, (got, exact, allowed)
    # relative accuracy kept: the guarantee is over 10x tighter than the cancellation
    # floor d eps (Tr A + Tr B) of the trace form (and of the eigenvalue-only value).
    floor = d * np.finfo(np.float64).eps * (np.trace(A) + np.trace(B))
    assert allowed < 0.1 * floor and allowed < 1e-3 * exact


@pytest.mark.parametrize("d", [64])
def test_nearby_pair_float32_nonnegative_and_relative(rng, d):
    A, B, exact = _nearby_ref(rng, d, k=5)
    A32, B32 = (np.asarray(jnp.asarray(M, jnp.float32), np.float64) for M in (A, B))
    # Rounding B to float32 moves W2 by at most W2(B, B32) <= ||E||_F / (2 lambda_min^{1/2})
    # (E = B32 - B; A is exact in float32).
    lam = np.linalg.eigvalsh(B)[0]
    dw = np.linalg.norm(B32 - B) / (2.0 * np.sqrt(lam))
    w2 = np.sqrt(exact)
    exact32_err = dw * (2.0 * w2 + dw)
    got, allowed, certified = _value_and_tolerance(A32, B32, exact, exact32_err, jnp.float32)
    assert not certified
    assert got >= 0.0
    assert abs(got - exact) <= allowed, (got, exact, allowed)


def _wishart(rng, d, n, shift=0.0):
    X = rng.normal(size=(n, d))
    return X.T @ X / n + shift * np.eye(d)


@pytest.mark.parametrize("d", [3, 64, 512])
def test_fid_like_pair_takes_the_fast_route(rng, d):
    A, B = _wishart(rng, d, 2 * d), _wishart(rng, d, 2 * d, 0.1)
    value, bound = jax.jit(bures._eigvals_value)(jnp.asarray(A), jnp.asarray(B))
    assert bool(bures._certified(value, bound))
    got = jax.jit(bures._cov_term)(jnp.asarray(A), jnp.asarray(B))
    np.testing.assert_allclose(float(got), float(value), rtol=4 * np.finfo(np.float64).eps)


def _count_procrustes(monkeypatch):
    """Replace bures._procrustes_value by a copy that counts its executions."""
    calls = []
    original = bures._procrustes_value

    def counted(A, B):
        jax.debug.callback(lambda: calls.append(1))
        return original(A, B)

    monkeypatch.setattr(bures, "_procrustes_value", counted)
    return calls


def _mixed_batch(rng, d):
    A1, B1 = _wishart(rng, d, 2 * d), _wishart(rng, d, 2 * d, 0.1)
    A2, B2 = _wishart(rng, d, 2 * d, 0.5), _wishart(rng, d, 3 * d)
    A3, B3, _ = _nearby_ref(rng, d, k=12)
    A4 = _wishart(rng, d, 2 * d)
    B4 = A4 + 1e-9 * np.eye(d)
    As = jnp.asarray(np.stack([A1, A3, A2, A4]))
    Bs = jnp.asarray(np.stack([B1, B3, B2, B4]))
    return As, Bs, np.array([True, False, True, False])


def test_vmap_mixed_batch_matches_loop(rng):
    d = 32
    As, Bs, certified = _mixed_batch(rng, d)
    # (the references jitted once and reused: eager calls dispatch, and compile, each
    # primitive on its own; the unbatched _cov_term is the same lax.cond either way)
    vals, bounds = jax.jit(jax.vmap(bures._eigvals_value))(As, Bs)
    np.testing.assert_array_equal(np.asarray(bures._certified(vals, bounds)), certified)
    mus = gj.Gaussian(jnp.zeros((4, d)), As)
    nus = gj.Gaussian(jnp.ones((4, d)), Bs)
    batched = jax.jit(jax.vmap(gj.bures_wasserstein2))(mus, nus)
    f = jax.jit(gj.bures_wasserstein2)
    loop = [
        float(f(gj.Gaussian(mus.mean[i], As[i]), gj.Gaussian(nus.mean[i], Bs[i]))) for i in range(4)
    ]
    np.testing.assert_allclose(np.asarray(batched), loop, rtol=1e-12)
    nested = jax.jit(jax.vmap(jax.vmap(bures._cov_term)))(
        As.reshape(2, 2, d, d), Bs.reshape(2, 2, d, d)
    )
    single = jax.jit(bures._cov_term)
    cov = [float(single(As[i], Bs[i])) for i in range(4)]
    np.testing.assert_allclose(np.asarray(nested).ravel(), cov, rtol=1e-12, atol=1e-300)
    one_side = jax.jit(jax.vmap(bures._cov_term, in_axes=(None, 0)))(As[0], Bs)
    ref = [float(single(As[0], Bs[i])) for i in range(4)]
    np.testing.assert_allclose(np.asarray(one_side), ref, rtol=1e-12)
    assert np.all(np.asarray(batched) >= 0.0)


def test_procrustes_runs_only_where_needed(rng, monkeypatch):
    d = 32
    calls = _count_procrustes(monkeypatch)
    As, Bs, certified = _mixed_batch(rng, d)
    fast = np.flatnonzero(certified)
    batched = jax.jit(jax.vmap(lambda A, B: bures._cov_term(A, B)))
    single = jax.jit(lambda A, B: bures._cov_term(A, B))  # traced once, run per member
    # Under vmap with every member certified the fallback branch is never executed ...
    out = batched(As[fast], Bs[fast])
    jax.block_until_ready(out)
    jax.effects_barrier()
    assert not calls
    # ... and runs, on the uncertified members only, once per chunk of ceil(n / 16).
    jax.block_until_ready(batched(As, Bs))
    jax.effects_barrier()
    n, bad = len(certified), int(np.sum(~np.asarray(certified)))
    chunk = -(-n // 16)
    assert bad > 0 and len(calls) == -(-bad // chunk)
    calls.clear()
    for i, ok in enumerate(certified):  # unbatched: lax.cond
        jax.block_until_ready(single(As[i], Bs[i]))
        jax.effects_barrier()
        assert len(calls) == (0 if ok else 1)
        calls.clear()


def _subjaxprs(eqn):
    for v in eqn.params.values():
        for x in v if isinstance(v, (tuple, list)) else (v,):
            if isinstance(x, jax.extend.core.ClosedJaxpr):
                yield x.jaxpr
            elif isinstance(x, jax.extend.core.Jaxpr):
                yield x


def _primitives(jaxpr, *, into_cond):
    """Primitive names in ``jaxpr`` and its sub-jaxprs (cond and while bodies if asked)."""
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        if eqn.primitive.name not in ("cond", "while") or into_cond:
            for sub in _subjaxprs(eqn):
                names += _primitives(sub, into_cond=into_cond)
    return names


@pytest.mark.parametrize("batched", [False, True])
def test_procrustes_svd_only_inside_the_cond(rng, batched):
    # The batching rule emits no select of both routes: the Procrustes SVD appears only
    # inside a control-flow body (unbatched: a lax.cond; batched: bures._patch's loop).
    d = 16
    A, B = jnp.asarray(_wishart(rng, d, 2 * d)), jnp.asarray(_wishart(rng, d, 2 * d, 0.1))
    if batched:
        f, args = jax.vmap(bures._cov_term), (jnp.stack([A, B]), jnp.stack([B, A]))
    else:
        f, args = bures._cov_term, (A, B)
    jaxpr = jax.make_jaxpr(jax.jit(f))(*args).jaxpr
    inside = _primitives(jaxpr, into_cond=True)
    outside = _primitives(jaxpr, into_cond=False)
    assert "svd" in inside and ("while" if batched else "cond") in outside
    assert "svd" not in outside
    # unbatched: the function itself; batched: the rule's route, a custom_vmap again so
    # that an outer vmap folds into its batch (bures._batch_route)
    assert "custom_vmap_call" in outside


def _old_cov_term():
    """The previous implementation: Procrustes value, the same derivative rule."""

    @jax.custom_jvp
    def old(A, B):
        return bures._procrustes_value(A, B)

    @old.defjvp
    def old_jvp(primals, tangents):
        (A, B), (dA, dB) = primals, tangents
        gA, gB = bures._cov_term_grads(A, B)
        return old(A, B), jnp.sum(gA * dA) + jnp.sum(gB * dB)

    return old


def _mp_maps(A, B, dps=40):
    """``(T_A, T_B)`` of the stored ``A``, ``B`` in ``dps``-digit arithmetic (mpmath).

    ``T_A = A^{-1/2} (A^{1/2} B A^{1/2})^{1/2} A^{-1/2}`` (the Monge map from A to B) and
    ``T_B`` its inverse, by symmetric eigendecompositions; ``grad = I - T``.
    """
    import mpmath as mp

    def fn(S, p):
        E, Q = mp.eigsy(S)
        return Q * mp.diag([e**p for e in E]) * Q.T

    with mp.workdps(dps):
        Am, Bm = mp.matrix(np.asarray(A, float).tolist()), mp.matrix(np.asarray(B, float).tolist())
        Ah, Aih, Bh, Bih = fn(Am, 0.5), fn(Am, -0.5), fn(Bm, 0.5), fn(Bm, -0.5)
        TA = Aih * fn(Ah * Bm * Ah, 0.5) * Aih
        TB = Bih * fn(Bh * Am * Bh, 0.5) * Bih
        return (np.array(T.tolist(), dtype=np.float64) for T in (TA, TB))


def _conditioned(rng, d, cond):
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return (Q * np.geomspace(1.0, 1.0 / cond, d)) @ Q.T


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("d", [3, 4, 8, 16])
def test_certified_gradient_within_its_bound(rng, d, dtype):
    # Under differentiation value and gradient come from one Cholesky and one eigh where
    # certified (bures._eigh_value_grads). Against 40-digit references of the stored
    # inputs, the gradient's 2-norm error is within the route's own bound; well-conditioned
    # pairs take the route in float64 (the test cannot pass by rejecting everything),
    # ill-conditioned ones fall back to the Procrustes gradient, and float32 always does.
    eps = float(jnp.finfo(dtype).eps)
    eye = np.eye(d)
    taken = {}
    # jitted once, reused over the pairs (a fresh jax.value_and_grad per pair retraces)
    route = jax.jit(bures._eigh_value_grads)
    public = jax.jit(jax.value_and_grad(bures._cov_term, argnums=(0, 1)))
    procrustes = jax.jit(bures._procrustes_value_grads)
    for cond in (10.0, 1e3, 1e6):
        for _ in range(2):
            A = np.asarray(jnp.asarray(_conditioned(rng, d, cond) * 3.0, dtype))
            B = np.asarray(jnp.asarray(_conditioned(rng, d, cond), dtype))
            value, gA, gB, ok, err_a, err_b = route(A, B)
            TA, TB = _mp_maps(A, B)
            taken.setdefault(cond, []).append(bool(ok))
            if ok:
                for g, T, err in ((gA, TA, err_a), (gB, TB, err_b)):
                    miss = np.linalg.norm(np.asarray(g, np.float64) - (eye - T), 2)
                    assert miss <= float(err), (cond, miss, float(err))
                    assert float(err) <= np.sqrt(eps) * (1.0 + np.linalg.norm(T))
            # the public derivative: this route where certified, else the Procrustes one
            pv, (pA, pB) = public(jnp.asarray(A), jnp.asarray(B))
            taken_here = bool(ok) and dtype == jnp.float64  # float32: Procrustes always
            ref = (value, gA, gB) if taken_here else procrustes(A, B)
            tol = 16 * eps
            np.testing.assert_allclose(float(pv), float(ref[0]), rtol=tol)
            for x, y in zip((pA, pB), ref[1:]):
                scale = 1.0 + float(jnp.max(jnp.abs(y)))
                np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol * scale)
    if dtype == jnp.float64:
        assert all(taken[10.0])
    assert not any(taken[1e6])


@pytest.mark.parametrize("d", [3, 8])  # d >= 3: the LAPACK route (d = 3 its smallest)
def test_grad_rule_and_fallback(rng, d):
    old = _old_cov_term()
    A, B = jnp.asarray(_wishart(rng, d, 2 * d)), jnp.asarray(_wishart(rng, d, 2 * d, 0.1))
    # value under differentiation: the certified trace form, within its bound
    # (the references jitted: eager calls dispatch, and compile, each primitive alone)
    v_new = float(jax.jit(jax.value_and_grad(bures._cov_term))(A, B)[0])
    value, bound = jax.jit(bures._eigvals_value)(A, B)
    assert abs(v_new - float(jax.jit(old)(A, B))) <= 2.0 * float(bound)
    # second order (the tangent's own rule: the trace form's, unchanged) and under vmap
    dA = jnp.asarray(_wishart(rng, d, d)) * 1e-2

    def hvp(f):  # jitted: an eager trace dispatches hundreds of small programs
        return jax.jit(lambda A: jax.jvp(lambda A: jax.grad(f)(A, B), (A,), (dA,))[1])(A)

    np.testing.assert_allclose(
        np.asarray(hvp(bures._cov_term)), np.asarray(hvp(old)), rtol=1e-12, atol=1e-13
    )
    # a batch with an uncertified member (a nearby pair): Procrustes where uncertified
    As, Bs = jnp.stack([A, A]), jnp.stack([B, A + 1e-9 * jnp.eye(d)])
    ok = jax.jit(jax.vmap(bures._eigh_value_grads))(As, Bs)[3]
    assert not bool(ok[1])
    gv_new = jax.jit(jax.vmap(jax.grad(bures._cov_term)))(As, Bs)
    gv_old = jax.jit(jax.vmap(jax.grad(old)))(As, Bs)
    np.testing.assert_allclose(np.asarray(gv_new[1]), np.asarray(gv_old[1]), rtol=1e-12, atol=1e-13)
    single = jax.jit(jax.grad(bures._cov_term))(As[0], Bs[0])
    np.testing.assert_allclose(np.asarray(gv_new[0]), np.asarray(single), rtol=1e-12, atol=1e-13)
    # bures_wasserstein (sqrt): finite gradient
    mu, nu = gj.Gaussian(jnp.zeros(d), A), gj.Gaussian(jnp.ones(d), B)
    g1 = jax.jit(jax.grad(lambda m: gj.bures_wasserstein(m, nu)))(mu)
    assert np.all(np.isfinite(np.asarray(g1.cov)))


def test_value_under_jit_vmap_grad_float32(rng):
    d = 24
    A = jnp.asarray(_wishart(rng, d, 4 * d), jnp.float32)
    B = jnp.asarray(_wishart(rng, d, 4 * d, 0.1), jnp.float32)
    v = jax.jit(bures._cov_term)(A, B)
    v64 = jax.jit(bures._cov_term)(A.astype(jnp.float64), B.astype(jnp.float64))
    np.testing.assert_allclose(float(v), float(v64), rtol=1e-4)
    g = jax.jit(jax.grad(bures._cov_term))(A, B)
    assert g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.parametrize("n_bad", [0, 1, 2, 5, 40, 130, 200])
def test_patch_replaces_exactly_the_uncertified_members(rng, n_bad):
    # bures._patch evaluates the fallback on the uncertified members only, 13 at a time
    # (n = 200), and writes back exactly those; index 0 included.
    n = 200
    bad = np.zeros(n, bool)
    bad[rng.choice(n, size=n_bad, replace=False)] = True
    if n_bad:
        bad[0] = True
    A = jnp.asarray(rng.normal(size=(n, 2, 2)))
    B = jnp.asarray(rng.normal(size=(n, 2, 2)))
    out = (jnp.zeros(n), jnp.zeros((n, 2, 2)))

    def fallback(A, B):
        return A[:, 0, 0] + B[:, 1, 1], A * B

    got = jax.jit(bures._patch, static_argnums=2)(jnp.asarray(~bad), out, fallback, A, B)
    want = fallback(A, B)
    np.testing.assert_array_equal(np.asarray(got[0]), np.where(bad, np.asarray(want[0]), 0.0))
    np.testing.assert_array_equal(
        np.asarray(got[1]), np.where(bad[:, None, None], np.asarray(want[1]), 0.0)
    )


def test_pairwise_self_matrix_under_nested_vmap(rng):
    # gj.pairwise is two vmaps: the outer one is folded into the batch (no select of both
    # routes), and the equal diagonal pairs, never certified, get the Procrustes value.
    d, n = 8, 12
    As = jnp.asarray(np.stack([_wishart(rng, d, 2 * d, 0.1) for _ in range(n)]))
    nested = jax.vmap(jax.vmap(bures._cov_term, (None, 0)), (0, None))
    jaxpr = jax.make_jaxpr(jax.jit(nested))(As, As).jaxpr
    assert "svd" not in _primitives(jaxpr, into_cond=False)  # only inside a branch
    D = np.asarray(jax.jit(nested)(As, As))
    # the unbatched references, jitted once (eager calls compile each primitive alone)
    eigvals_value, procrustes = jax.jit(bures._eigvals_value), jax.jit(bures._procrustes_value)
    for i in range(n):
        for j in (i, (i + 1) % n):
            value, bound = eigvals_value(As[i], As[j])
            if bool(bures._certified(value, bound)):
                assert abs(D[i, j] - float(value)) <= 2.0 * float(bound)  # both within it
            else:
                # batched vs unbatched LAPACK may round differently: the Procrustes
                # form's own error bound, not bitwise equality
                ref = float(procrustes(As[i], As[j]))
                Ai, Aj = np.asarray(As[i]), np.asarray(As[j])
                tol = _procrustes_bound(Ai, Aj, np.sqrt(max(ref, 0.0)), np.float64)
                assert abs(D[i, j] - ref) <= 2.0 * tol
    assert np.all(np.diag(D) >= 0) and np.all(np.diag(D) < 1e-20)
