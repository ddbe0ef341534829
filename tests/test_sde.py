"""Linear SDE references and the dynamic bridge (MATH.md §6, [ADM25]).

Independent oracles:
- kernels: scipy ``expm`` + adaptive quadrature of the defining integrals; the stationary
  Lyapunov solution for stable M; closed forms (OU, Brownian, integrated Brownian motion);
  the transition ODEs ``d/dT (alpha, beta, tau)``; Euler–Maruyama Monte Carlo.
- dynamic bridge: Euler–Maruyama paths of the *unconditioned* reference from ``X_0 ~ eta``.
  (a) Regressing ``X_t`` on ``(X_0, X_T)`` estimates the pinned law's coefficients
  and residual covariance with no Kalman algebra. (b) Reweighting the same paths by
  ``d plan / d(eta ⊗ K)(X_0, X_T)`` turns them into samples of the dynamic bridge
  ``∫ R^{x,y} plan(dx, dy)`` itself (the reference law pinned at its endpoints is unchanged
  by a function of the endpoints), so weighted moments of ``X_t`` are a Monte Carlo of
  pinned paths. Importance weights are cheap here (one density ratio per path), unlike
  rejection. Tolerances are 5 Monte Carlo standard errors; a wrong formula is off by many.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate as si
import scipy.linalg as sl
from conftest import random_spd, tol

import gaussot_jax as gj
from gaussot_jax.sde import (
    LinearSDE,
    bridge_marginal,
    brownian_kernel,
    linear_sde_kernel,
    ou_kernel,
    pinned_kernel,
    sample_bridge_paths,
)

ROOT = Path(__file__).resolve().parents[1]

M2 = np.array([[-0.5, 1.0], [-0.8, -0.3]])
C2 = np.array([0.3, -0.2])
G2 = np.array([[0.8, 0.0], [0.3, 0.6]])
T2 = 1.0


def relerr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def fd_check(f, args, rng, *, modes=("rev", "fwd"), eps=1e-6, rtol=1e-6):
    """Directional derivative of scalar f (jit) vs central finite differences."""
    args = tuple(jnp.asarray(a, jnp.float64) for a in args)
    v = tuple(jnp.asarray(rng.normal(size=np.shape(a))) for a in args)
    fj = jax.jit(f)
    shift = lambda h: [a + h * va for a, va in zip(args, v)]  # noqa: E731
    fd = (fj(*shift(eps)) - fj(*shift(-eps))) / (2 * eps)
    if "rev" in modes:
        g = jax.jit(jax.grad(f, argnums=tuple(range(len(args)))))(*args)
        rev = sum(jnp.sum(gi * vi) for gi, vi in zip(g, v))
        np.testing.assert_allclose(rev, fd, rtol=rtol)
    if "fwd" in modes:
        fwd = jax.jit(lambda *a: jax.jvp(f, a, v)[1])(*args)
        np.testing.assert_allclose(fwd, fd, rtol=rtol)


def astuple(K):
    return K.alpha, K.beta, K.tau


def quadrature_kernel(M, c, G, T):
    """alpha, beta, tau from their defining integrals (scipy expm, adaptive quadrature)."""
    E = lambda s: sl.expm(M * (T - s))  # noqa: E731
    kw = dict(epsabs=1e-14, epsrel=1e-13)
    alpha = si.quad_vec(lambda s: E(s) @ c, 0.0, T, **kw)[0]
    tau = si.quad_vec(lambda s: E(s) @ G @ G.T @ E(s).T, 0.0, T, **kw)[0]
    return alpha, sl.expm(M * T), tau


def sb_plan(eta, mu, K):
    """The static Schrödinger bridge plan: the core solver with W = beta^T tau^{-1}."""
    W = np.linalg.solve(np.asarray(K.tau), np.asarray(K.beta)).T
    sol = gj.solve_coupling(eta.cov, mu.cov, jnp.asarray(W))
    C = sol.cross_cov
    cov = jnp.block([[eta.cov, C], [C.T, mu.cov]])
    return gj.Gaussian(jnp.concatenate([eta.mean, mu.mean]), gj.sym(cov))


def gauss_logpdf(x, m, S):
    L = np.linalg.cholesky(S)
    z = np.linalg.solve(L, (x - m).T)
    return -0.5 * np.sum(z**2, axis=0) - np.sum(np.log(np.diag(L)))


def moment_stats(x, w=None):
    """Estimates and standard errors of the mean and covariance entries of x (n, d).

    With weights, the self-normalised importance estimator and its delta-method error.
    """
    n, d = x.shape
    w = np.full(n, 1.0 / n) if w is None else w / np.sum(w)
    m = w @ x
    xc = x - m
    f = np.concatenate([x, (xc[:, :, None] * xc[:, None, :]).reshape(n, d * d)], axis=1)
    est = w @ f
    se = np.sqrt(w**2 @ (f - est) ** 2)
    return est, se


def target_stats(g):
    return np.concatenate([np.asarray(g.mean), np.asarray(g.cov).ravel()])


def euler_maruyama(rng, M, c, G, x0, T, steps):
    """Euler–Maruyama paths (numpy): returns the (steps + 1, n, d) trajectory."""
    dt = T / steps
    x = x0.copy()
    out = [x]
    for _ in range(steps):
        dw = rng.normal(size=(x.shape[0], G.shape[1])) * np.sqrt(dt)
        x = x + (x @ M.T + c) * dt + dw @ G.T
        out.append(x)
    return np.stack(out)


@pytest.fixture(scope="module")
def reference_paths():
    """2e4 Euler–Maruyama paths (200 steps) of the d = 2 reference from X_0 ~ eta."""
    rng = np.random.default_rng(1)
    eta = gj.Gaussian(np.array([0.5, -1.0]), np.array([[0.6, 0.2], [0.2, 0.4]]))
    n, steps = 20_000, 200
    x0 = rng.multivariate_normal(np.asarray(eta.mean), np.asarray(eta.cov), size=n)
    paths = euler_maruyama(rng, M2, C2, G2, x0, T2, steps)
    return eta, paths, steps


# ------------------------------------------------------------------------------------
# Kernels.
# ------------------------------------------------------------------------------------
def test_general_kernel_vs_quadrature(rng):
    d = 2
    M = rng.normal(size=(d, d))  # not symmetric, not stable
    c, G, T = rng.normal(size=d), rng.normal(size=(d, 1)), 0.8
    K = linear_sde_kernel(M, c, G, T)
    alpha, beta, tau = quadrature_kernel(M, c, G, T)
    assert relerr(K.beta, beta) < 1e-12
    assert relerr(K.alpha, alpha) < 1e-10
    assert relerr(K.tau, tau) < 1e-10  # G has rank 1 < d: tau still PD (controllable)


def test_singular_drift_integrated_brownian_motion():
    # dX1 = X2 dt, dX2 = c2 dt + dW: M nilpotent (singular), G G^T rank 1.
    T, c2 = 1.7, 0.4
    K = linear_sde_kernel(
        jnp.array([[0.0, 1.0], [0.0, 0.0]]), jnp.array([0.0, c2]), jnp.array([[0.0], [1.0]]), T
    )
    np.testing.assert_allclose(K.beta, [[1.0, T], [0.0, 1.0]], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(K.alpha, [c2 * T**2 / 2, c2 * T], rtol=1e-13)
    np.testing.assert_allclose(K.tau, [[T**3 / 3, T**2 / 2], [T**2 / 2, T]], rtol=1e-13)
    # M = 0 entirely: Brownian motion with drift.
    K0 = linear_sde_kernel(jnp.zeros((2, 2)), jnp.array([1.0, 2.0]), 0.5 * jnp.eye(2), T)
    np.testing.assert_allclose(K0.alpha, [T, 2 * T], rtol=1e-14)
    np.testing.assert_allclose(K0.tau, 0.25 * T * np.eye(2), rtol=1e-14)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_stiff_drift_no_overflow(rng, dtype):
    # ||M|| T ~ 400: plain Van Loan needs e^{-M T}, which overflows (float32) or cancels.
    d, T = 2, 4.0
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    M = -(Q @ np.diag([100.0, 1.0]) @ Q.T) + 5.0 * (Q[:, [0]] @ Q[:, [1]].T)
    G = rng.normal(size=(d, d))
    # Stationary covariance and tau = S_inf - e^{MT} S_inf e^{M^T T} (Lyapunov, scipy).
    S_inf = sl.solve_continuous_lyapunov(M, -G @ G.T)
    E = sl.expm(M * T)
    tau = S_inf - E @ S_inf @ E.T
    K = linear_sde_kernel(*(jnp.asarray(a, dtype) for a in (M, np.zeros(d), G, T)))
    assert K.tau.dtype == dtype
    bound = 1e-11 if dtype == jnp.float64 else 1e-4  # ~10 doublings
    assert relerr(K.tau, tau) < bound
    assert np.max(np.abs(np.asarray(K.beta, np.float64) - E)) < bound
    # OU with theta T = 600: float64 overflow territory for e^{-M T} (e^600 finite, e^{1200} not).
    Kou = LinearSDE.ornstein_uhlenbeck(2, jnp.asarray(300.0, dtype), 2.0).kernel(
        jnp.asarray(4.0, dtype)
    )
    assert relerr(Kou.tau, 4.0 / 600.0 * np.eye(2)) < bound


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_ou_and_brownian_closed_forms(dtype):
    d, T, theta, s = 2, 0.7, 1.3, 0.9
    mean = np.array([1.0, -2.0])
    cast = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    K = ou_kernel(d, cast(T), cast(theta), cast(s), mean=cast(mean))
    assert K.tau.dtype == dtype
    e = np.exp(-theta * T)
    rt = tol(dtype)
    # MATH.md §6 (mean = 0 form), plus the mean term alpha = (1 - e^{-theta T}) mean.
    np.testing.assert_allclose(K.beta, e * np.eye(d), rtol=rt, atol=rt)
    np.testing.assert_allclose(K.alpha, (1 - e) * mean, rtol=rt)
    tau = s**2 * (1 - np.exp(-2 * theta * T)) / (2 * theta)
    np.testing.assert_allclose(K.tau, tau * np.eye(d), rtol=rt, atol=rt * tau)
    # The general SDE kernel on OU's (M, c, G) agrees.
    K2 = LinearSDE.ornstein_uhlenbeck(d, cast(theta), cast(s), mean=cast(mean)).kernel(cast(T))
    for a, b in zip((K.alpha, K.beta, K.tau), (K2.alpha, K2.beta, K2.tau)):
        np.testing.assert_allclose(a, b, rtol=rt, atol=rt * 1e-3)
    # Brownian: (0, I, sigma^2 T I), both ways.
    B = brownian_kernel(d, cast(T), sigma=cast(s))
    B2 = LinearSDE.brownian(d, sigma=cast(s)).kernel(cast(T))
    for Kb in (B, B2):
        np.testing.assert_allclose(Kb.alpha, np.zeros(d), atol=rt)
        np.testing.assert_allclose(Kb.beta, np.eye(d), atol=rt)
        np.testing.assert_allclose(Kb.tau, s**2 * T * np.eye(d), rtol=rt, atol=rt)
    # theta -> 0 is Brownian motion (smooth, no 0/0); theta < 0 (repelling) is finite.
    K0 = ou_kernel(d, cast(T), cast(0.0), cast(s))
    np.testing.assert_allclose(K0.tau, s**2 * T * np.eye(d), rtol=rt)
    Kn = ou_kernel(d, cast(T), cast(-theta), cast(s))
    np.testing.assert_allclose(
        Kn.tau, s**2 * (np.exp(2 * theta * T) - 1) / (2 * theta) * np.eye(d), rtol=rt, atol=rt
    )


def test_ou_derivatives_through_theta_zero():
    # tau(theta) = s^2 (1 - e^{-2 theta T}) / (2 theta) = s^2 T (1 - theta T + 2/3 theta^2 T^2 ...)
    T, s = 0.7, 0.9
    tau = lambda th: ou_kernel(1, T, th, s).tau[0, 0]  # noqa: E731
    d1, d2 = jax.jit(jax.grad(tau)), jax.jit(jax.grad(jax.grad(tau)))
    np.testing.assert_allclose(d1(0.0), -(s**2) * T**2, rtol=1e-12)
    np.testing.assert_allclose(d2(0.0), 4 / 3 * s**2 * T**3, rtol=1e-10)
    # Either side of the series/closed-form switch, against the closed form's derivative.
    for th in (0.99e-4 / (2 * T), 1.01e-4 / (2 * T), 0.3):
        x = 2 * th * T
        exact = s**2 * (2 * T * x * np.exp(-x) - 2 * T * (1 - np.exp(-x))) / (2 * th * x)
        np.testing.assert_allclose(d1(th), exact, rtol=1e-8)


def test_kernel_vs_euler_maruyama(reference_paths):
    eta, paths, steps = reference_paths
    K = linear_sde_kernel(M2, C2, G2, T2)
    # Joint law of (X_0, X_T): eta(dx) K(x, dy); compare all means and covariance entries.
    joint = K.joint(eta)
    est, se = moment_stats(np.concatenate([paths[0], paths[-1]], axis=1))
    z = (est - target_stats(joint)) / se
    assert np.max(np.abs(z)) < 5.0, z
    # A wrong tau (e.g. dropping the e^{M(T-s)} factors) is far outside that band.
    wrong = np.asarray(joint.cov).copy()
    wrong[2:, 2:] += np.asarray(G2 @ G2.T * T2 - K.tau)
    z_wrong = (est[4:] - wrong.ravel()) / se[4:]
    assert np.max(np.abs(z_wrong)) > 10.0


def test_time_derivative_is_the_ode():
    # d/dT (alpha, beta, tau) = (M alpha + c, M beta, M tau + tau M^T + G G^T).
    fn = lambda T: astuple(linear_sde_kernel(M2, C2, G2, T))  # noqa: E731
    (a, b, t), (da, db, dt) = jax.jvp(fn, (1.3,), (1.0,))
    np.testing.assert_allclose(da, M2 @ a + C2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, M2 @ b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dt, M2 @ t + t @ M2.T + G2 @ G2.T, rtol=1e-10, atol=1e-12)


def test_kernel_jit_vmap_grad():
    f = lambda M, c, G, T: astuple(linear_sde_kernel(M, c, G, T))  # noqa: E731
    eager = f(M2, C2, G2, T2)
    jitted = jax.jit(f)(M2, C2, G2, T2)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    Ts = jnp.array([0.1, 1.0, 30.0])
    batched = jax.vmap(f, in_axes=(None, None, None, 0))(M2, C2, G2, Ts)
    for i, T in enumerate(Ts):
        for a, b in zip(batched, f(M2, C2, G2, T)):
            np.testing.assert_allclose(a[i], b, rtol=1e-13, atol=1e-15)
    loss = lambda M, c, G, T: sum(jnp.sum(jnp.sin(x)) for x in f(M, c, G, T))  # noqa: E731
    fd_check(loss, (M2, C2, G2, T2), np.random.default_rng(5), modes=("rev",))  # fwd: ODE test
    # Semigroup: the transition 0.3 -> 1.2 composed after 0 -> 0.3 is the kernel over 1.2.
    sde = LinearSDE(M2, C2, G2)
    k1, k2, k = sde.kernel(0.3), sde.transition(0.3, 1.2), sde.kernel(1.2)
    np.testing.assert_allclose(k2.beta @ k1.beta, k.beta, rtol=1e-13)
    np.testing.assert_allclose(k2.alpha + k2.beta @ k1.alpha, k.alpha, rtol=1e-13)
    np.testing.assert_allclose(k2.beta @ k1.tau @ k2.beta.T + k2.tau, k.tau, rtol=1e-13)


# ------------------------------------------------------------------------------------
# The dynamic bridge.
# ------------------------------------------------------------------------------------
def test_pinned_brownian_is_the_brownian_bridge():
    sigma, T, t = 0.7, 2.0, 0.5
    K = pinned_kernel(LinearSDE.brownian(2, sigma=sigma), t, T)
    s = t / T
    np.testing.assert_allclose(K.beta, np.hstack([(1 - s) * np.eye(2), s * np.eye(2)]), 1e-13)
    np.testing.assert_allclose(K.alpha, np.zeros(2), atol=1e-15)
    np.testing.assert_allclose(K.tau, sigma**2 * t * (T - t) / T * np.eye(2), rtol=1e-13)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_marginal_endpoints_are_the_plan_marginals(rng, dtype):
    d, T = 2, 0.8
    M, c, G = rng.normal(size=(d, d)), rng.normal(size=d), rng.normal(size=(d, d))
    sde = LinearSDE(*(jnp.asarray(a, dtype) for a in (M, c, G)))
    K = linear_sde_kernel(M, c, G, T)
    eta = gj.Gaussian(rng.normal(size=d), random_spd(rng, d, 10.0))
    mu = gj.Gaussian(rng.normal(size=d), random_spd(rng, d, 10.0))
    plan = sb_plan(eta, mu, K)
    plan = gj.Gaussian(plan.mean.astype(dtype), plan.cov.astype(dtype))
    rt = tol(dtype)
    for t, target in ((0.0, eta), (T, mu)):
        g = bridge_marginal(sde, plan, jnp.asarray(t, dtype), jnp.asarray(T, dtype))
        assert g.cov.dtype == dtype
        np.testing.assert_allclose(g.mean, target.mean, rtol=rt, atol=rt)
        np.testing.assert_allclose(g.cov, target.cov, rtol=rt, atol=rt)


def test_pinned_kernel_vs_regression_on_reference_paths(reference_paths):
    # Regress X_t on (1, X_0, X_T) over unconditioned Euler–Maruyama paths: the OLS
    # coefficients estimate (u, B_x, B_y) and the residual covariance Sigma_t.
    eta, paths, steps = reference_paths
    sde = LinearSDE(M2, C2, G2)
    n = paths.shape[1]
    Z = np.concatenate([np.ones((n, 1)), paths[0], paths[-1]], axis=1)
    ZtZ_inv = np.linalg.inv(Z.T @ Z)
    for j in (50, 100, 150):
        K = pinned_kernel(sde, j * T2 / steps, T2)
        coef = ZtZ_inv @ Z.T @ paths[j]  # (1 + 2d, d)
        resid = paths[j] - Z @ coef
        Sigma = resid.T @ resid / (n - Z.shape[1])
        se_coef = np.sqrt(np.outer(np.diag(ZtZ_inv), np.diag(Sigma)))
        want = np.vstack([np.asarray(K.alpha)[None], np.asarray(K.beta).T])
        assert np.max(np.abs((coef - want) / se_coef)) < 5.0
        # Residual covariance: SE of a covariance entry ~ sqrt((S_ii S_jj + S_ij^2) / n).
        se_S = np.sqrt((np.outer(np.diag(Sigma), np.diag(Sigma)) + Sigma**2) / n)
        assert np.max(np.abs((Sigma - np.asarray(K.tau)) / se_S)) < 5.0


@pytest.fixture(scope="module")
def bridge_setup(reference_paths):
    eta, paths, steps = reference_paths
    K = linear_sde_kernel(M2, C2, G2, T2)
    nu = K.pushforward(eta)
    mu = gj.Gaussian(nu.mean + jnp.array([0.4, -0.3]), 0.6 * nu.cov + 0.1 * jnp.eye(2))
    plan = sb_plan(eta, mu, K)
    # Importance weights d plan / d(eta ⊗ K) at each path's endpoints.
    xy = np.concatenate([paths[0], paths[-1]], axis=1)
    ref = K.joint(eta)
    logw = gauss_logpdf(xy, np.asarray(plan.mean), np.asarray(plan.cov)) - gauss_logpdf(
        xy, np.asarray(ref.mean), np.asarray(ref.cov)
    )
    w = np.exp(logw - logw.max())
    return LinearSDE(M2, C2, G2), plan, w


def test_bridge_marginal_vs_weighted_reference_paths(reference_paths, bridge_setup):
    eta, paths, steps = reference_paths
    sde, plan, w = bridge_setup
    ess = np.sum(w) ** 2 / np.sum(w**2)
    assert ess > 0.2 * w.size  # the estimator below is trustworthy
    worst = 0.0
    for j in (50, 100, 150):
        g = bridge_marginal(sde, plan, j * T2 / steps, T2)
        est, se = moment_stats(paths[j], w)
        worst = max(worst, np.max(np.abs((est - target_stats(g)) / se)))
        # The reference's own (unpinned-to-plan) marginal is far off: the test can fail.
        free = linear_sde_kernel(M2, C2, G2, j * T2 / steps).pushforward(eta)
        assert np.max(np.abs((est - target_stats(free)) / se)) > 10.0
    assert worst < 5.0


def test_sampled_paths_vs_marginals_and_weighted_reference(reference_paths, bridge_setup):
    eta, paths, steps = reference_paths
    sde, plan, w = bridge_setup
    times = jnp.array([0.0, 0.25, 0.5, 0.75, 1.0]) * T2
    n = 20_000
    x = np.asarray(sample_bridge_paths(jax.random.PRNGKey(3), sde, plan, T2, times, n))
    assert x.shape == (n, 5, 2)
    for j, t in enumerate(times):
        est, se = moment_stats(x[:, j])
        z = (est - target_stats(bridge_marginal(sde, plan, t, T2))) / se
        assert np.max(np.abs(z)) < 5.0, (float(t), z)
    # Two-time law (checks the sequential conditioning), against the weighted EM paths:
    # the joint (X_0.25, X_0.75) mean and covariance.
    est_s, se_s = moment_stats(np.concatenate([x[:, 1], x[:, 3]], axis=1))
    est_r, se_r = moment_stats(np.concatenate([paths[50], paths[150]], axis=1), w)
    z = (est_s - est_r) / np.sqrt(se_s**2 + se_r**2)
    assert np.max(np.abs(z)) < 5.0, z
    # Endpoints are the plan's draws, exactly its marginals in law.
    est, se = moment_stats(np.concatenate([x[:, 0], x[:, -1]], axis=1))
    assert np.max(np.abs((est - target_stats(plan)) / se)) < 5.0


def test_bridge_jit_vmap_grad(bridge_setup):
    sde, plan, _ = bridge_setup

    def loss(M, t, T):
        g = bridge_marginal(LinearSDE(M, C2, G2), plan, t, T)
        return jnp.sum(g.mean**2) + jnp.sum(jnp.sin(g.cov))

    args = (jnp.asarray(M2), 0.4, T2)
    np.testing.assert_allclose(jax.jit(loss)(*args), loss(*args), rtol=1e-13)
    fd_check(loss, args, np.random.default_rng(6), modes=("rev",))
    ts = jnp.array([0.0, 0.3, 1.0])
    covs = jax.vmap(lambda t: bridge_marginal(sde, plan, t, T2).cov)(ts)
    for i, t in enumerate(ts):
        np.testing.assert_allclose(covs[i], bridge_marginal(sde, plan, t, T2).cov, rtol=1e-12)

    # Reparametrised path samples: differentiable in M and T, endpoints included.
    times = jnp.array([0.0, 0.5, 1.0])

    def path_loss(M, T):
        sde = LinearSDE(M, C2, G2)
        x = sample_bridge_paths(jax.random.PRNGKey(0), sde, plan, T, T * times, 4)
        return jnp.sum(jnp.sin(x))

    fd_check(path_loss, (M2, 1.0), np.random.default_rng(7), modes=("rev",))
    # (fd_check evaluates path_loss under jax.jit: sample_bridge_paths traced whole.)


def test_sample_paths_float32_vmap(bridge_setup):
    _, plan, _ = bridge_setup
    sde = LinearSDE(*(jnp.asarray(a, jnp.float32) for a in (M2, C2, G2)))
    plan32 = gj.Gaussian(plan.mean.astype(jnp.float32), plan.cov.astype(jnp.float32))
    times = jnp.array([0.2, 1.0], jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    x = jax.vmap(lambda k: sample_bridge_paths(k, sde, plan32, 1.0, times, 8))(keys)
    assert x.shape == (2, 8, 2, 2) and x.dtype == jnp.float32 and np.all(np.isfinite(x))
    assert not np.allclose(x[0], x[1])


# ------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------
def test_bad_input(bridge_setup):
    sde, plan, _ = bridge_setup
    I2, z2 = jnp.eye(2), jnp.zeros(2)
    cases = [
        (lambda: linear_sde_kernel(jnp.ones((2, 3)), z2, I2, 1.0), "M must have shape"),
        (lambda: linear_sde_kernel(I2, jnp.zeros(3), I2, 1.0), "c must have shape"),
        (lambda: linear_sde_kernel(I2, z2, jnp.ones((3, 2)), 1.0), "G must have shape"),
        (lambda: linear_sde_kernel(I2, z2, I2, 0.0), "T must be > 0"),
        (lambda: linear_sde_kernel(I2, z2, I2, -1.0), "T must be > 0"),
        (lambda: linear_sde_kernel(I2, z2, I2, jnp.ones(2)), "T must be a scalar"),
        (lambda: linear_sde_kernel(I2 * jnp.nan, z2, I2, 1.0), "M contains NaN"),
        (lambda: brownian_kernel(2, 1.0, sigma=0.0), "sigma must be > 0"),
        (lambda: brownian_kernel(0, 1.0), "d must be a positive"),
        (lambda: ou_kernel(2, -1.0, 1.0, 1.0), "T must be > 0"),
        (lambda: ou_kernel(2, 1.0, 1.0, 1.0, mean=jnp.zeros(3)), "mean must be"),
        (lambda: sde.transition(1.0, 0.5), "need s < t"),
        (lambda: bridge_marginal(sde, plan, 1.5, 1.0), r"t must lie in \[0, T\]"),
        (lambda: bridge_marginal(sde, plan, -0.1, 1.0), r"t must lie in \[0, T\]"),
        (
            lambda: bridge_marginal(sde, gj.Gaussian(jnp.zeros(2), I2), 0.5, 1.0),
            "plan must be a single Gaussian on R",
        ),
        (lambda: bridge_marginal(sde.kernel(1.0), plan, 0.5, 1.0), "sde must be a LinearSDE"),
        (
            lambda: bridge_marginal(LinearSDE(I2, z2, jnp.zeros((2, 2))), plan, 0.5, 1.0),
            "tau_T is not positive definite",
        ),
        (
            lambda: sample_bridge_paths(
                jax.random.PRNGKey(0), sde, plan, 1.0, jnp.array([0.5, 0.2]), 4
            ),
            "strictly increasing",
        ),
        (
            lambda: sample_bridge_paths(
                jax.random.PRNGKey(0), sde, plan, 1.0, jnp.array([0.5, 1.2]), 4
            ),
            r"times must lie in \[0, T\]",
        ),
        (
            lambda: sample_bridge_paths(jax.random.PRNGKey(0), sde, plan, 1.0, [0.5], 0),
            "n must be a positive",
        ),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()


def test_example_runs_quick(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "dynamic_bridge.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "dynamic_bridge.png").stat().st_size > 1000
