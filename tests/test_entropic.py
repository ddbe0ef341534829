"""Core solver, Bures–Wasserstein and balanced entropic OT against independent methods."""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from conftest import random_gaussian, random_spd, tol
from jax.test_util import check_grads

import gaussot_jax as gj

# ----------------------------------------------------------------------------------
# Independent oracle: maximise the core objective over C numerically (MATH.md §2).
# The objective is written from its definition (KL between Gaussians via slogdet), with
# no piece of the closed form; trust-exact with exact Hessians converges quadratically.
# ----------------------------------------------------------------------------------


def _kl_to_product(A, B, C):
    """KL(N(0, [[A, C], [C^T, B]]) || N(0, A) ⊗ N(0, B)); +inf outside the PD cone.

    Feasibility by Cholesky (a determinant's sign cannot tell: for d = 2 a huge C makes
    the Schur complement negative definite with a positive determinant).
    """
    L = jnp.linalg.cholesky(jnp.block([[A, C], [C.T, B]]))
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(L)))
    kl = 0.5 * (jnp.linalg.slogdet(A)[1] + jnp.linalg.slogdet(B)[1] - logdet)
    return jnp.where(jnp.all(jnp.isfinite(L)), kl, jnp.inf)


def maximise_over_cross_cov(A, B, objective):
    """argmax_C of a concave objective: damped Newton from C = 0 (feasible), float64.

    Exact gradient and Hessian by autodiff; backtracking rejects infeasible (+inf)
    points; stops when the Newton decrement is below 1e-26 (quadratic convergence).
    """
    d1, d2 = np.shape(A)[0], np.shape(B)[0]
    neg = jax.jit(lambda c: -objective(c.reshape(d1, d2)))
    grad, hess = jax.jit(jax.grad(neg)), jax.jit(jax.hessian(neg))
    c = np.zeros(d1 * d2)
    for _ in range(200):
        g, H = np.asarray(grad(c)), np.asarray(hess(c))
        step = -np.linalg.solve(H, g)
        if -g @ step < 1e-26:
            break
        t, fc = 1.0, float(neg(c))
        while not float(neg(c + t * step)) <= fc + 1e-4 * t * (g @ step) and t > 1e-12:
            t *= 0.5
        c = c + t * step
    return c.reshape(d1, d2), -float(neg(c))


def test_core_solver_against_direct_maximisation(rng):
    A, B = random_spd(rng, 3, 10.0), random_spd(rng, 3, 5.0)
    W = rng.normal(size=(3, 3))
    W[:, 2] = W[:, 0] - W[:, 1]  # singular and not symmetric: no inverse is needed
    sol = gj.solve_coupling(A, B, W)
    C_ref, val_ref = maximise_over_cross_cov(
        A, B, lambda C: jnp.trace(W @ C.T) - _kl_to_product(A, B, C)
    )
    np.testing.assert_allclose(sol.cross_cov, C_ref, atol=1e-9)
    np.testing.assert_allclose(jnp.trace(W @ sol.cross_cov.T) - sol.kl, val_ref, atol=1e-9)
    # Optimality condition S G S + S = B, G = W^T A W (MATH.md §2).
    S, G = sol.cond_cov, W.T @ A @ W
    np.testing.assert_allclose(S @ G @ S + S, B, atol=1e-12)


def test_core_solver_singular_and_zero_weight():
    A = np.diag([1.0, 0.0])
    B = np.array([[1.0, 1.0], [1.0, 1.0]])  # rank 1
    sol = gj.solve_coupling(A, B, np.zeros((2, 2)))
    np.testing.assert_allclose(sol.cross_cov, 0.0, atol=1e-15)
    np.testing.assert_allclose(sol.cond_cov, B, atol=1e-14)
    assert float(sol.kl) == pytest.approx(0.0, abs=1e-15)
    sol = gj.solve_coupling(A, B, 3.0 * np.eye(2))
    assert np.all(np.isfinite(sol.cross_cov)) and np.isfinite(sol.kl)


def _entropic_objective(mu, nu, eps):
    A, B = np.asarray(mu.cov), np.asarray(nu.cov)
    dm = float(np.sum((mu.mean - nu.mean) ** 2))

    def value(C):
        transport = dm + jnp.trace(A) + jnp.trace(B) - 2 * jnp.trace(C)
        return transport + eps * _kl_to_product(A, B, C)

    return value


@pytest.mark.parametrize(("d", "eps"), [(2, 0.3), (3, 2.0)])
def test_balanced_against_direct_minimisation(rng, d, eps):
    mu, nu = random_gaussian(rng, d, 10.0), random_gaussian(rng, d, 30.0, scale=2.0)
    out = gj.entropic_ot(mu, nu, eps)
    obj = _entropic_objective(mu, nu, eps)
    C_ref, neg_val = maximise_over_cross_cov(mu.cov, nu.cov, lambda C: -obj(C))
    np.testing.assert_allclose(out.cross_cov, C_ref, atol=1e-9)
    np.testing.assert_allclose(out.cost, -neg_val, rtol=1e-9)
    np.testing.assert_allclose(out.plan.cov[:d, d:], C_ref, atol=1e-9)
    np.testing.assert_allclose(out.plan.mean, np.concatenate([mu.mean, nu.mean]))


def test_balanced_d1_and_commuting_by_hand():
    # d = 1: minimise -2c - (eps/2) log(1 - c^2/(ab)) => 2c^2 + eps c - 2ab = 0.
    def scalar(a, b, dm2, eps):
        c = (-eps + np.sqrt(eps**2 + 16 * a * b)) / 4
        return dm2 + a + b - 2 * c - 0.5 * eps * np.log(1 - c**2 / (a * b)), c

    eps = 0.7
    mu = gj.Gaussian(jnp.array([0.5]), jnp.array([[2.0]]))
    nu = gj.Gaussian(jnp.array([-1.0]), jnp.array([[0.3]]))
    value, c = scalar(2.0, 0.3, 1.5**2, eps)
    out = gj.entropic_ot(mu, nu, eps)
    np.testing.assert_allclose(out.cost, value, rtol=1e-13)
    np.testing.assert_allclose(out.cross_cov[0, 0], c, rtol=1e-13)
    # Commuting (diagonal) covariances decouple into 1-D problems.
    a, b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 0.5, 3.0])
    mu = gj.Gaussian(jnp.zeros(3), jnp.diag(a))
    nu = gj.Gaussian(jnp.ones(3), jnp.diag(b))
    parts = [scalar(ai, bi, 1.0, eps) for ai, bi in zip(a, b)]
    out = gj.entropic_ot(mu, nu, eps)
    np.testing.assert_allclose(out.cost, sum(p[0] for p in parts), rtol=1e-13)
    np.testing.assert_allclose(np.diag(out.cross_cov), [p[1] for p in parts], rtol=1e-13)


def test_potentials_density_identity_and_strong_duality(rng, key):
    mu, nu = random_gaussian(rng, 3, 10.0), random_gaussian(rng, 3, 5.0)
    eps = 0.8
    out = gj.entropic_ot(mu, nu, eps)
    f, g = out.potentials
    z = out.plan.sample(key, (20,)) + 0.5 * jax.random.normal(key, (20, 6))
    x, y = z[:, :3], z[:, 3:]
    lhs = jax.vmap(out.plan.log_prob)(z) - jax.vmap(mu.log_prob)(x) - jax.vmap(nu.log_prob)(y)
    rhs = (jax.vmap(f)(x) + jax.vmap(g)(y) - jnp.sum((x - y) ** 2, -1)) / eps
    np.testing.assert_allclose(lhs, rhs, atol=1e-9)

    def expect(pot, m):  # E_m of a quadratic, in closed form
        return (
            0.5 * jnp.trace(pot.quad @ m.cov)
            + 0.5 * m.mean @ pot.quad @ m.mean
            + (pot.lin @ m.mean + pot.const)
        )

    np.testing.assert_allclose(expect(f, mu) + expect(g, nu), out.cost, rtol=1e-11)


def test_entropic_map_is_conditional_mean(rng):
    mu, nu = random_gaussian(rng, 2), random_gaussian(rng, 2)
    out = gj.entropic_ot(mu, nu, 0.5)
    cond = out.plan.conditional(2)  # uses A^{-1}; the map does not
    x = rng.normal(size=2)
    np.testing.assert_allclose(out.entropic_map(x), cond(x).mean, atol=1e-12)


def test_limits_in_epsilon(rng):
    mu, nu = random_gaussian(rng, 3, 100.0), random_gaussian(rng, 3, 10.0)
    w2 = float(gj.bures_wasserstein2(mu, nu))
    cost = jax.jit(lambda e: gj.entropic_ot(mu, nu, e).cost)
    grad = jax.jit(jax.grad(lambda A, e: gj.entropic_ot(gj.Gaussian(mu.mean, A), nu, e).cost))
    for eps in (1e-2, 1e-4, 1e-6, 1e-8):
        value = float(cost(eps))
        # OT_eps - W2^2 = O(eps log(1/eps)) as eps -> 0.
        assert abs(value - w2) < 5 * 3 * eps * max(1.0, np.log(1 / eps))
        assert np.all(np.isfinite(grad(mu.cov, eps)))
    out = gj.entropic_ot(mu, nu, 1e6)
    assert np.max(np.abs(out.cross_cov)) < 1e-4  # eps -> inf: independence


def test_rank_deficient_cost_and_gradient():
    v = np.array([1.0, 2.0])
    A = np.outer(v, v) / 5  # rank 1
    B = np.array([[1.0, 0.3], [0.3, 0.5]])
    eps = 0.4
    mu0 = jnp.array([0.0, 1.0])

    def cost(A, B):
        return gj.entropic_ot(
            gj.Gaussian(mu0, A, validate=False), gj.Gaussian(jnp.zeros(2), B), eps
        ).cost

    ga, gb = jax.jit(jax.grad(cost, argnums=(0, 1)))(A, B)
    assert np.isfinite(cost(A, B)) and np.all(np.isfinite(ga)) and np.all(np.isfinite(gb))
    # One-sided (second-order) finite difference along a PSD direction out of range(A).
    E = np.outer([2.0, -1.0], [2.0, -1.0])
    h = 1e-6
    fd = (-3 * cost(A, B) + 4 * cost(A + h * E, B) - cost(A + 2 * h * E, B)) / (2 * h)
    np.testing.assert_allclose(np.sum(ga * E), fd, rtol=1e-5)
    # Both covariances singular, and the Sinkhorn divergence.
    assert np.all(np.isfinite(jax.grad(cost)(A, A)))
    div = jax.grad(
        lambda A: gj.sinkhorn_divergence(
            gj.Gaussian(mu0, A, validate=False), gj.Gaussian(mu0, B), eps
        )
    )(A)
    assert np.all(np.isfinite(div))


def test_cost_check_grads_including_repeated_eigenvalues(rng):
    b = rng.normal(size=2)

    @jax.jit
    def cost(A, B, m, eps):
        return gj.entropic_ot(gj.Gaussian(m, A), gj.Gaussian(b, B), eps).cost

    for A, B in ((random_spd(rng, 2, 5.0), random_spd(rng, 2, 3.0)), (np.eye(2), np.eye(2))):
        check_grads(cost, (A, B, np.array([0.3, -0.2]), 0.6), order=2, modes=["fwd", "rev"])
    w2 = jax.jit(lambda A, B: gj.bures_wasserstein2(gj.Gaussian(b, A), gj.Gaussian(b, B)))
    check_grads(w2, (random_spd(rng, 2, 5.0), np.eye(2)), order=2, modes=["fwd", "rev"])


def test_cost_gradient_one_factor_route_and_fallback(rng):
    # d >= 4, float64: value_and_grad takes one Cholesky factor and one eigendecomposition
    # where a bound certifies grad_A = L^{-T} k(M) L^{-1} (docs/performance.md), else the
    # two-factor rule. The certified route against finite differences (a well-conditioned
    # pair, a singular B); an ill-conditioned A (cond 1e9, where finite differences cannot
    # resolve the gradient) is not certified and gets the two-factor rule's gradient
    # (tested on its own in test_linalg); a vmapped batch mixing them (the fallback on
    # its members only) against the per-pair gradients; second derivatives at random
    # and at A = B = I.
    from gaussot_jax import _trace
    from gaussot_jax.coupling import _balanced_bounds, _balanced_g

    d, eps = 6, 0.7
    U = np.linalg.qr(rng.normal(size=(d, d)))[0]
    B_sing = (U[:, :3] * np.array([2.0, 1.0, 0.5])) @ U[:, :3].T
    cases = [  # (A, B, certified)
        (random_spd(rng, d, 10.0), random_spd(rng, d, 30.0), True),
        (random_spd(rng, d, 10.0), B_sing, True),
        (random_spd(rng, d, 1e9), random_spd(rng, d, 10.0), False),
    ]
    b = np.zeros(d)

    def cost(A, B):
        return gj.entropic_ot(gj.Gaussian(b, A), gj.Gaussian(b, B), eps).cost

    grad = jax.jit(jax.grad(cost, argnums=(0, 1)))
    for A, B, certified in cases:
        ok = _trace._one_factor_value_grads(_balanced_g, _balanced_bounds, A, B, eps)[-1]
        assert bool(ok) == certified
        gA, gB = grad(A, B)
        if not certified:
            _, rA, rB = _trace._stacked_value_grads(_balanced_g, "cholesky", A, B, eps)
            # jitted vs eager evaluation of one rule: they differ by its rounding, which
            # the Lipschitz constants above (|g''| <= 8 / eps^3, |k'| <= 2 / eps) bound by
            # ~1e-13 (1 + ||grad||) here (cond B = 10); 1e-10 leaves room for other LAPACKs
            for got, want in ((gA, rA + np.eye(d)), (gB, rB + np.eye(d))):  # + grad Tr
                np.testing.assert_allclose(got, want, atol=1e-10 * (1 + np.linalg.norm(want)))
            continue
        lam_min = np.linalg.eigvalsh(A)[0]
        for name in ("A", "B"):
            E = rng.normal(size=(d, d))
            E = (E + E.T) / np.linalg.norm(E + E.T, 2)  # symmetric, unit 2-norm
            if name == "B":
                E = E @ E.T  # PSD: B + tE stays PSD for t >= 0 (B may be singular)

            def f(t, E=E, name=name):
                return float(cost(A + t * E, B) if name == "A" else cost(A, B + t * E))

            if name == "A":  # central, a step well inside the cone (A +- hE is PD)
                h = 1e-4 * lam_min  # truncation ~ (h / lam_min)^2 = 1e-8 relative
                fd = (f(h) - f(-h)) / (2 * h)
            else:  # one-sided of second order
                h = 1e-5
                fd = (-3 * f(0.0) + 4 * f(h) - f(2 * h)) / (2 * h)
            G = gA if name == "A" else gB
            # truncation O(h^2) times the third derivative; rounding eps |f| / h <= 1e-10
            np.testing.assert_allclose(np.sum(G * E), fd, rtol=1e-6, atol=1e-8)
    As, Bs = (np.stack([c[k] for c in cases]) for k in (0, 1))
    gA_batch, gB_batch = jax.jit(jax.vmap(jax.grad(cost, argnums=(0, 1))))(As, Bs)
    for i, (A, B, _) in enumerate(cases):
        gA, gB = grad(A, B)
        # The same route per member. Batched and single kernels may round differently,
        # by at most the routes' error bounds (<= 1e-12 relative here), while a member
        # scattered to the wrong index or routed from another member's data is off by O(1).
        for got, want in ((gA_batch[i], gA), (gB_batch[i], gB)):
            np.testing.assert_allclose(got, want, atol=1e-9 * (1.0 + np.linalg.norm(want)))

    def sym_cost(A, B, e):  # check_grads perturbs without keeping symmetry
        A, B = 0.5 * (A + A.T), 0.5 * (B + B.T)
        return gj.entropic_ot(gj.Gaussian(b, A), gj.Gaussian(b, B), e).cost

    # check_grads' default step 1e-4 leaves a central-difference truncation error of
    # ~3e-5 relative in the reverse-over-reverse check at this pair (lambda_min(A) = 0.1,
    # the third derivative scales like lambda_min^-3; the two-factor rule alone shows the
    # same); the step 1e-5 cuts it 100-fold, with rounding ~eps / 1e-5 = 2e-11.
    for A, B in ((cases[0][0], cases[0][1]), (np.eye(d), np.eye(d))):
        check_grads(jax.jit(sym_cost), (A, B, eps), order=2, modes=["fwd", "rev"], eps=1e-5)


def test_sinkhorn_divergence(rng):
    mu, nu = random_gaussian(rng, 3), random_gaussian(rng, 3)
    eps = 1.3
    ref = (
        gj.entropic_ot(mu, nu, eps).cost
        - 0.5 * gj.entropic_ot(mu, mu, eps).cost
        - 0.5 * gj.entropic_ot(nu, nu, eps).cost
    )
    np.testing.assert_allclose(gj.sinkhorn_divergence(mu, nu, eps), ref, rtol=1e-12)
    assert float(gj.sinkhorn_divergence(mu, nu, eps)) > 0
    assert abs(float(gj.sinkhorn_divergence(mu, mu, eps))) < 1e-13


def test_jit_vmap_float32(rng):
    n, d = 6, 3
    mus = gj.Gaussian(rng.normal(size=(n, d)), np.stack([random_spd(rng, d) for _ in range(n)]))
    nus = gj.Gaussian(rng.normal(size=(n, d)), np.stack([random_spd(rng, d) for _ in range(n)]))
    eps = np.linspace(0.1, 2.0, n)
    batched = jax.jit(jax.vmap(lambda m, v, e: gj.entropic_ot(m, v, e).cost))(mus, nus, eps)
    loop = [
        gj.entropic_ot(
            jax.tree.map(lambda x: x[i], mus), jax.tree.map(lambda x: x[i], nus), eps[i]
        ).cost
        for i in range(n)
    ]
    np.testing.assert_allclose(batched, loop, rtol=1e-12)
    to32 = lambda g: jax.tree.map(lambda x: x.astype(jnp.float32), g)  # noqa: E731
    c32 = jax.jit(jax.vmap(lambda m, v, e: gj.entropic_ot(m, v, e).cost))(
        to32(mus), to32(nus), eps.astype(np.float32)
    )
    assert c32.dtype == jnp.float32
    np.testing.assert_allclose(c32, batched, rtol=tol(jnp.float32))


# ----------------------------------------------------------------------------------
# Bures–Wasserstein (MATH.md §1)
# ----------------------------------------------------------------------------------


def test_bures_against_pot(rng):
    mu, nu = random_gaussian(rng, 4, 50.0), random_gaussian(rng, 4, 20.0)
    ref = ot.gaussian.bures_wasserstein_distance(
        np.asarray(mu.mean), np.asarray(nu.mean), np.asarray(mu.cov), np.asarray(nu.cov)
    )
    np.testing.assert_allclose(gj.bures_wasserstein2(mu, nu), ref**2, rtol=1e-10)


def _w2_cholesky_svd(a, A, b, B):
    # Independent route: Tr (A^{1/2} B A^{1/2})^{1/2} = nuclear norm of L_B^T L_A.
    LA, LB = np.linalg.cholesky(A), np.linalg.cholesky(B)
    s = np.linalg.svd(LB.T @ LA, compute_uv=False)
    return np.sum((a - b) ** 2) + np.trace(A) + np.trace(B) - 2 * np.sum(s)


@pytest.mark.parametrize("cond", [1.0, 1e3, 1e6])
def test_bures_accuracy_across_conditioning(rng, cond):
    A, B = random_spd(rng, 5, cond), random_spd(rng, 5, cond)
    a, b = rng.normal(size=5), rng.normal(size=5)
    value = gj.bures_wasserstein2(gj.Gaussian(a, A), gj.Gaussian(b, B))
    np.testing.assert_allclose(value, _w2_cholesky_svd(a, A, b, B), rtol=1e-12)


def test_monge_map_and_mccann(rng):
    mu, nu = random_gaussian(rng, 3, 10.0), random_gaussian(rng, 3, 10.0)
    T = gj.monge_map(mu, nu)
    np.testing.assert_allclose(T.matrix @ mu.cov @ T.matrix.T, nu.cov, atol=1e-12)
    ref, _ = ot.gaussian.bures_wasserstein_mapping(
        np.asarray(mu.mean), np.asarray(nu.mean), np.asarray(mu.cov), np.asarray(nu.cov)
    )
    np.testing.assert_allclose(T.matrix, ref, atol=1e-10)
    mid = gj.mccann_interpolation(mu, nu, 0.5)
    w2 = gj.bures_wasserstein2(mu, nu)
    # Constant-speed geodesic: W2(mu, mid) = W2(mid, nu) = W2(mu, nu) / 2.
    np.testing.assert_allclose(gj.bures_wasserstein2(mu, mid), w2 / 4, rtol=1e-10)
    np.testing.assert_allclose(gj.bures_wasserstein2(mid, nu), w2 / 4, rtol=1e-10)
    end = gj.mccann_interpolation(mu, nu, 1.0)
    np.testing.assert_allclose(end.cov, nu.cov, atol=1e-12)


def test_gradient_finite_where_pot_is_nan():
    # At a covariance with repeated eigenvalues POT's JAX backend differentiates through
    # eigh and returns NaN; the Sylvester/trace-function rules give the exact gradient.
    m, B = jnp.zeros(3), jnp.diag(jnp.array([1.0, 2.0, 3.0]))

    def pot(A):
        return ot.gaussian.bures_wasserstein_distance(m, m + 1.0, A, B) ** 2

    def ours(A):
        return gj.bures_wasserstein2(gj.Gaussian(m, A), gj.Gaussian(m + 1.0, B))

    assert np.all(np.isnan(jax.grad(pot)(jnp.eye(3))))
    g = jax.grad(ours)(jnp.eye(3))
    # Closed form at A = I: grad_A = I - B^{1/2} (B^{1/2} A B^{1/2})^{-1/2} B^{1/2} = I - B^{1/2}.
    np.testing.assert_allclose(g, np.eye(3) - np.sqrt(B), atol=1e-14)
    E = np.array([[0.5, 0.2, 0.1], [0.2, -0.3, 0.0], [0.1, 0.0, 0.4]])
    h = 1e-5
    fd = (ours(jnp.eye(3) + h * E) - ours(jnp.eye(3) - h * E)) / (2 * h)
    np.testing.assert_allclose(np.sum(g * E), fd, rtol=1e-8)


def test_sinkhorn_divergence_against_direct_maximisation(rng):
    # Oracle independent of entropic_ot: each OT_eps = |a - b|^2 + Tr A + Tr B
    # - max_C [2 Tr C - eps KL(N(0, [[A, C], [C^T, B]]) || N(0, A) x N(0, B))], the
    # maximum by damped Newton (decrement < 1e-26, so the objective is exact to its own
    # round-off, ~ d eps |objective| ~ 1e-14 here); S_eps is the combination of three.
    eps = 0.8

    def ot(mu, nu):
        A, B = np.asarray(mu.cov), np.asarray(nu.cov)
        _, best = maximise_over_cross_cov(
            A, B, lambda C: 2.0 * jnp.trace(C) - eps * _kl_to_product(A, B, C)
        )
        return float(np.sum((mu.mean - nu.mean) ** 2) + np.trace(A) + np.trace(B) - best)

    for near in (False, True):
        mu = random_gaussian(rng, 3)
        if near:
            E = rng.normal(size=(3, 3))
            nu = gj.Gaussian(mu.mean + 1e-3, mu.cov + 1e-3 * (E @ E.T))
        else:
            nu = random_gaussian(rng, 3)
        ref = ot(mu, nu) - 0.5 * ot(mu, mu) - 0.5 * ot(nu, nu)
        for accurate in (False, True):
            val = float(gj.sinkhorn_divergence(mu, nu, eps, accurate=accurate))
            np.testing.assert_allclose(val, ref, rtol=1e-9, atol=1e-12)
