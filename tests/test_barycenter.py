"""Barycenters: Bures (fixed point) and entropic (biased / debiased), with implicit gradients.

Independent references: POT's ``ot.gaussian.bures_barycenter_fixpoint`` and OTT-JAX's
``Bures.barycenter`` (W2), the closed form for commuting covariances, autodiff of
``gj.entropic_ot`` / ``gj.sinkhorn_divergence`` (first-order optimality), scipy's BFGS on
the raw objective (direct minimisation), the unrolled fixed point and finite differences
(gradients).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from conftest import CompileCounter, random_spd

import gaussot_jax as gj
from gaussot_jax.barycenter import _Q


def _problem(rng, n=4, d=3, cond=100.0):
    covs = np.stack([random_spd(rng, d, cond) * rng.uniform(0.5, 2.0) for _ in range(n)])
    return gj.Gaussian(rng.normal(size=(n, d)), covs), rng.uniform(0.2, 1.0, size=n)


@pytest.fixture(scope="module")
def problem():
    return _problem(np.random.default_rng(1))


def test_bures_against_pot_and_ott(problem):
    import ot
    from ott.geometry import costs

    g, w = problem
    n, d = g.mean.shape
    bary = gj.bures_barycenter(g, w)
    assert gj.bures_barycenter_residual(g, w, bary) < 1e-10
    wn = w / w.sum()
    np.testing.assert_allclose(bary.mean, wn @ np.asarray(g.mean), rtol=1e-12)

    S_pot = ot.gaussian.bures_barycenter_fixpoint(
        np.asarray(g.cov), weights=wn, num_iter=1000, eps=1e-15
    )
    np.testing.assert_allclose(bary.cov, S_pot, rtol=1e-9, atol=1e-11)

    xs = jnp.concatenate([g.mean, g.cov.reshape(n, -1)], axis=1)
    # OTT's default loop settings stop at relative residual ~3e-5 whatever `tolerance`
    # says; 200 forced outer iterations and a tight sqrtm threshold converge.
    sqrtm_kw = {"threshold": 1e-14, "min_iterations": 50, "max_iterations": 2000}
    x_ott, _ = costs.Bures(d, sqrtm_kw=sqrtm_kw).barycenter(
        jnp.asarray(w),
        xs,
        tolerance=1e-13,
        sqrtm_kw=sqrtm_kw,
        min_iterations=200,
        max_iterations=1000,
        inner_iterations=1,
    )
    np.testing.assert_allclose(bary.mean, x_ott[:d], rtol=1e-12)
    np.testing.assert_allclose(bary.cov, x_ott[d:].reshape(d, d), rtol=1e-8, atol=1e-10)


def test_bures_commuting_closed_form(rng):
    # Commuting covariances Q diag(a_i) Q^T: barycenter Q diag((sum_i w_i sqrt a_i)^2) Q^T.
    # n = 4, d = 3: the shapes of `problem`, so the solver's program is shared.
    d, n = 3, 4
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = rng.uniform(0.1, 10.0, size=(n, d))
    w = np.array([0.2, 0.4, 0.3, 0.1])
    g = gj.Gaussian(np.zeros((n, d)), np.stack([(Q * ai) @ Q.T for ai in a]))
    expected = (Q * (w @ np.sqrt(a)) ** 2) @ Q.T
    np.testing.assert_allclose(gj.bures_barycenter(g, w).cov, expected, rtol=1e-11, atol=1e-12)


def _unrolled(covs, w, eps, debiased, num_iters):
    # The fixed-point map iterated a fixed number of times; autodiff goes through it.
    w = w / jnp.sum(w)

    def step(S, _):
        Z = gj.inv_sqrtm(S)
        Qm = _Q(gj.sqrtm(S), covs, w, eps, debiased)
        return gj.sym(Z @ Qm @ Qm @ Z), None

    return jax.lax.scan(step, jnp.einsum("i,ijk->jk", w, covs), None, length=num_iters)[0]


def test_bures_implicit_gradient_equals_unrolled(problem, rng):
    g, w = problem
    C = jnp.asarray(rng.normal(size=g.cov.shape[1:]))

    def implicit(covs, w):
        return jnp.sum(C * gj.bures_barycenter(gj.Gaussian(g.mean, covs, validate=False), w).cov)

    def unrolled(covs, w):
        return jnp.sum(C * _unrolled(covs, w, None, False, 40))

    args = (jnp.asarray(g.cov), jnp.asarray(w))
    got = jax.jit(jax.grad(implicit, argnums=(0, 1)))(*args)
    want = jax.jit(jax.grad(unrolled, argnums=(0, 1)))(*args)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_batched_barycenters_vmap_jit(rng):
    # Three independent problems in one vmap under jit, against one call each.
    problems = [_problem(rng, n=3, d=2, cond=10.0) for _ in range(3)]
    means = jnp.stack([p[0].mean for p in problems])
    covs = jnp.stack([p[0].cov for p in problems])
    ws = jnp.stack([p[1] for p in problems])

    @jax.jit
    def fit(means, covs, ws, eps):
        def one(m, c, w):
            return gj.entropic_barycenter(
                gj.Gaussian(m, c, validate=False), w, eps, debiased=True
            ).cov

        return jax.vmap(one)(means, covs, ws)

    ent = fit(means, covs, ws, 0.5)
    for k, (g, w) in enumerate(problems):
        one = gj.entropic_barycenter(g, w, 0.5, debiased=True)
        np.testing.assert_allclose(ent[k], one.cov, rtol=1e-10)
        assert gj.entropic_barycenter_residual(g, w, 0.5, one, debiased=True) < 1e-10


def _entropic_objective(g, w, eps, debiased):
    """sum_i w_i OT_eps(N(0, S), N(0, A_i)) (or S_eps) from the library's public costs."""
    n, d = g.mean.shape

    def J(S):
        b = gj.Gaussian(jnp.zeros(d), S, validate=False)

        def one(A):
            mu = gj.Gaussian(jnp.zeros(d), A, validate=False)
            if debiased:
                return gj.sinkhorn_divergence(b, mu, eps)
            return gj.entropic_ot(b, mu, eps).cost

        return w @ jax.vmap(one)(g.cov)

    return J


@pytest.mark.parametrize("debiased", [False, True])
def test_entropic_first_order_optimality_and_direct_minimisation(debiased):
    rng = np.random.default_rng(2)
    g, w = _problem(rng, n=3, d=2, cond=5.0)
    w = w / w.sum()
    eps = 0.3
    bary = gj.entropic_barycenter(g, w, eps, debiased=debiased)
    np.testing.assert_allclose(bary.mean, w @ np.asarray(g.mean), rtol=1e-12)
    J = jax.jit(_entropic_objective(g, w, eps, debiased))
    grad = jax.jit(jax.grad(J))(bary.cov)
    assert np.max(np.abs(grad)) < 1e-10
    assert gj.entropic_barycenter_residual(g, w, eps, bary, debiased=debiased) < 1e-10

    # Direct minimisation over a Cholesky factor with scipy's BFGS.
    def f(theta):
        L = jnp.zeros((2, 2)).at[jnp.tril_indices(2)].set(theta)
        return J(L @ L.T)

    vg = jax.jit(jax.value_and_grad(f))
    theta0 = np.linalg.cholesky(np.asarray(g.cov).mean(0))[np.tril_indices(2)]
    res = scipy.optimize.minimize(
        lambda t: tuple(np.asarray(v) for v in vg(t)),
        theta0,
        jac=True,
        method="BFGS",
        options={"gtol": 1e-12},
    )
    L = np.zeros((2, 2))
    L[np.tril_indices(2)] = res.x
    np.testing.assert_allclose(bary.cov, L @ L.T, rtol=1e-6, atol=1e-8)
    assert J(bary.cov) <= res.fun + 1e-12


def test_entropic_limit_is_bures(problem):
    g, w = problem
    bures = gj.bures_barycenter(g, w).cov
    fit = jax.jit(
        lambda eps: (
            gj.entropic_barycenter(g, w, eps).cov,
            gj.entropic_barycenter(g, w, eps, debiased=True).cov,
        )
    )
    errs = []
    for eps in (1e-2, 1e-3, 1e-4):
        biased, debiased = fit(eps)
        errs.append((np.abs(biased - bures).max(), np.abs(debiased - bures).max()))
    errs = np.array(errs)
    # biased: O(eps) (shrinks by ~eps/2), debiased O(eps^2); both -> 0.
    assert errs[-1, 0] < 1e-4 and errs[-1, 1] < 1e-8
    assert np.all(errs[1:, 0] < 0.2 * errs[:-1, 0])
    assert np.all(errs[1:, 1] < 0.05 * errs[:-1, 1])


def test_entropic_special_cases():
    # 1-D, one input of variance a: biased barycenter a - eps/2; debiased returns the input.
    g = gj.Gaussian(np.array([[1.0]]), np.array([[[2.0]]]))
    np.testing.assert_allclose(gj.entropic_barycenter(g, None, 0.6).cov, [[1.7]], rtol=1e-11)
    np.testing.assert_allclose(
        gj.entropic_barycenter(g, None, 3.0, debiased=True).cov, [[2.0]], rtol=1e-11
    )


def test_entropic_gradient_in_epsilon_and_covariances(problem):
    g, w = problem
    C = jnp.arange(9.0).reshape(3, 3) / 9.0

    def h(eps, covs):
        bary = gj.entropic_barycenter(
            gj.Gaussian(g.mean, covs, validate=False), w, eps, debiased=True
        )
        return jnp.sum(C * bary.cov)

    eps = 0.4
    covs = jnp.asarray(g.cov)
    # One program for the gradient and the difference quotients' values (a separate
    # jit(h) compiled the forward solve a second time).
    vg = jax.jit(jax.value_and_grad(h, argnums=(0, 1)))
    _, (d_eps, d_covs) = vg(eps, covs)
    hj = lambda eps, covs: vg(eps, covs)[0]  # noqa: E731
    step = 1e-5
    fd = (hj(eps + step, covs) - hj(eps - step, covs)) / (2 * step)
    np.testing.assert_allclose(d_eps, fd, rtol=1e-6)
    T = jnp.asarray(np.random.default_rng(3).normal(size=covs.shape))
    T = T + jnp.swapaxes(T, -1, -2)  # a symmetric direction; covs +- step T stay PD
    fd = (hj(eps, covs + step * T) - hj(eps, covs - step * T)) / (2 * step)
    np.testing.assert_allclose(jnp.sum(d_covs * T), fd, rtol=1e-6)


@pytest.mark.parametrize("d", [3, 5])  # Jacobi and LAPACK eigensolvers
def test_entropic_gradient_finite_at_rank_one_input(d):
    # One input of rank one: k(lam) = Tr C per eigenvalue is smooth at lam = 0, so the
    # entropic barycenter is differentiable there (the gradient used to be NaN at d = 3:
    # the tangent took second derivatives of trace_fn at the zero eigenvalues). Checked
    # against a one-sided second-order difference along a direction that keeps every
    # input PSD; its error h^2 |f'''| / 3 + 3 eps |f| / h is ~1e-10 for h = 1e-5.
    rng = np.random.default_rng(7)
    covs = np.stack([random_spd(rng, d, 10.0) for _ in range(3)])
    v, u = rng.normal(size=d), rng.normal(size=d)
    covs[0] = np.outer(v, v)
    E = np.zeros_like(covs)
    E[0], E[1] = np.outer(u, u), np.eye(d)
    covs, E = jnp.asarray(covs), jnp.asarray(E)
    for debiased in (False, True):

        def f(c, debiased=debiased):
            g = gj.Gaussian(jnp.zeros((3, d)), c, validate=False)
            return jnp.sum(gj.entropic_barycenter(g, None, 0.1, debiased=debiased).cov ** 2)

        vg = jax.jit(jax.value_and_grad(f))
        value, grad = vg(covs)
        assert np.all(np.isfinite(grad))
        h = 1e-5
        fd = (-3 * value + 4 * vg(covs + h * E)[0] - vg(covs + 2 * h * E)[0]) / (2 * h)
        np.testing.assert_allclose(jnp.vdot(grad, E), fd, rtol=1e-6)
    # At epsilon = 0.5 the biased iteration meets a singular S (its minimiser is
    # singular): a ValueError on concrete input, the same message under jit.
    diverging = gj.Gaussian(jnp.zeros((3, d)), covs)
    with pytest.raises(ValueError, match="diverged"):
        gj.entropic_barycenter(diverging, None, 0.5)
    jitted = jax.jit(lambda g: gj.entropic_barycenter(g, None, 0.5).cov)
    with pytest.raises(Exception, match="diverged"):
        jax.block_until_ready(jitted(diverging))


@pytest.mark.parametrize("debiased", [None, True])  # Bures (sqrtm rules), debiased (psd_fn)
def test_second_order_at_repeated_eigenvalues(debiased):
    # Inputs I and 4 I: the barycenter is a multiple of I (every eigenvalue repeated), where
    # a derivative rule exact only to first order goes wrong. jvp of the gradient against a
    # central difference of gradients; each gradient carries the fixed point's error
    # (~tol = 1.8e-12 relative), so the difference is good to ~tol / h = 2e-7 relative.
    d = 3
    covs = jnp.stack([jnp.eye(d), 4.0 * jnp.eye(d)])
    C = jnp.asarray(np.random.default_rng(5).normal(size=(d, d)))

    def f(covs):
        g = gj.Gaussian(jnp.zeros((2, d)), covs, validate=False)
        bary = (
            gj.bures_barycenter(g)
            if debiased is None
            else gj.entropic_barycenter(g, None, 0.5, debiased=True)
        )
        return jnp.sum(C * bary.cov) + jnp.sum(bary.cov**2)

    T = np.random.default_rng(6).normal(size=covs.shape)
    T = jnp.asarray(T + np.swapaxes(T, -1, -2))
    grad = jax.jit(jax.grad(f))
    hvp = jax.jit(lambda c: jax.jvp(jax.grad(f), (c,), (T,))[1])
    h = 1e-5
    fd = (grad(covs + h * T) - grad(covs - h * T)) / (2 * h)
    np.testing.assert_allclose(hvp(covs), fd, rtol=0, atol=1e-5 * float(jnp.abs(fd).max()))


def test_float32(problem):
    g, w = problem
    g32 = gj.Gaussian(g.mean.astype(jnp.float32), g.cov.astype(jnp.float32))
    bary = gj.bures_barycenter(g32, w)
    assert bary.cov.dtype == jnp.float32
    np.testing.assert_allclose(bary.cov, gj.bures_barycenter(g, w).cov, rtol=2e-3, atol=1e-4)
    ent = gj.entropic_barycenter(g32, w, 0.5, debiased=True)
    assert ent.cov.dtype == jnp.float32
    np.testing.assert_allclose(
        ent.cov, gj.entropic_barycenter(g, w, 0.5, debiased=True).cov, rtol=2e-3, atol=1e-4
    )


def test_bad_inputs(problem):
    g, w = problem
    single = gj.Gaussian(np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="gaussians"):
        gj.bures_barycenter(single, None)
    with pytest.raises(ValueError, match="gaussians"):
        gj.bures_barycenter(g.cov, None)
    with pytest.raises(ValueError, match="weights"):
        gj.bures_barycenter(g, w[:2])
    with pytest.raises(ValueError, match="weights"):
        gj.bures_barycenter(g, -w)
    with pytest.raises(ValueError, match="weights"):
        gj.bures_barycenter(g, np.where(np.arange(4) == 0, np.nan, w))
    with pytest.raises(ValueError, match="epsilon"):
        gj.entropic_barycenter(g, w, 0.0)
    with pytest.raises(ValueError, match="tol"):
        gj.bures_barycenter(g, w, tol=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        gj.bures_barycenter(g, w, max_iter=0)
    singular = gj.Gaussian(np.zeros((2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="positive definite"):
        gj.bures_barycenter(singular, None)


def test_tol_is_traced_no_recompile(rng):
    # tol was a static jit argument: one trace and compile per distinct value. Now traced.
    g = gj.Gaussian(rng.normal(size=(3, 2)), np.stack([random_spd(rng, 2, 5.0) for _ in range(3)]))
    first = gj.bures_barycenter(g, tol=1e-6)
    with CompileCounter() as counter:
        outs = [gj.bures_barycenter(g, tol=t) for t in (1e-8, 1e-10, 1e-12)]
    assert counter.count == 0, counter.count
    # a smaller tol still iterates further: residuals <= the relative change bound
    for t, b in zip((1e-6, 1e-8, 1e-10, 1e-12), (first, *outs)):
        assert float(gj.bures_barycenter_residual(g, None, b)) <= np.sqrt(t)
    with pytest.raises(ValueError, match="tol must be > 0"):
        gj.bures_barycenter(g, tol=0.0)
