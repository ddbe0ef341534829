"""Gaussian Sinkhorn [ADM25] against Gaussian IPF written independently with numpy."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, make
from ipf_reference import ipf, random_problem

import gaussot_jax as gj

sinkhorn_jit = jax.jit(gj.gaussian_sinkhorn, static_argnums=3, static_argnames="method")


def take(kernel, n):
    return jax.tree.map(lambda x: x[n], kernel)


@pytest.mark.parametrize(
    "d1,d2,method",
    [(1, 1, "bayes"), (2, 2, "riccati"), (5, 5, "bayes"), (5, 5, "riccati"), (3, 2, "bayes")],
)
def test_every_iterate_matches_numpy_ipf(rng, d1, d2, method):
    p = random_problem(rng, d1, d2)
    n = 12
    fwd, bwd = ipf(p, n)
    tr = sinkhorn_jit(*make(p), n, method=method)
    assert tr.forward.tau.shape == (n, d2, d2) and tr.backward.beta.shape == (n, d1, d2)
    for i in range(n):
        f, b = take(tr.forward, i), take(tr.backward, i)
        for got, want in zip((f.alpha, f.beta, f.tau), fwd[i]):
            assert_close(got, want)
        for got, want in zip((b.alpha, b.beta, b.tau), bwd[i]):
            assert_close(got, want)
    # the invariant beta_n^T tau_n^{-1} = beta^T tau^{-1} along the whole flow
    W = np.linalg.solve(p["tau"], p["beta"])
    for i in range(n):
        assert_close(np.linalg.solve(tr.forward.tau[i], tr.forward.beta[i]), W)
    # errors are measured against the closed form
    assert_close(tr.error, [np.linalg.norm(f[2] - tr.bridge.forward.tau) for f in fwd])
    assert_close(tr.mean_error, [np.linalg.norm(f[0] - tr.bridge.forward.alpha) for f in fwd])


@pytest.mark.parametrize("d,tau_scale", [(2, 0.1), (5, 1.0)])
def test_error_ratio_matches_rate(rng, d, tau_scale):
    p = random_problem(rng, d, d, tau_scale=tau_scale)
    tr = sinkhorn_jit(*make(p), 700)
    rate, mean_rate = float(tr.bridge.rate), float(tr.bridge.mean_rate)
    assert 0.05 < rate < 0.95
    for err, want in ((np.asarray(tr.error), rate), (np.asarray(tr.mean_error), mean_rate)):
        # the first round where the error is below 1e-7 of the initial one: the top mode
        # dominates and round-off is still far away
        n = int(np.argmax(err < 1e-7 * err[0]))
        assert n > 0
        ratio = err[n + 1] / err[n]
        assert abs(ratio / want - 1) < 0.01, (ratio, want)
    # converged to the closed form
    assert float(tr.error[-1]) < 1e-12 and float(tr.mean_error[-1]) < 1e-10


def test_vmap_and_grad_through_scan(rng):
    p = random_problem(rng, 2, 2)
    eta, mu, kernel = make(p)
    scales = jnp.array([0.5, 1.0, 2.0])

    def last_tau(s):
        k = gj.LinearGaussianKernel(kernel.alpha, kernel.beta, s * kernel.tau, validate=False)
        return gj.gaussian_sinkhorn(eta, mu, k, 4).forward.tau[-1]

    batched = jax.jit(jax.vmap(last_tau))(scales)
    for s, b in zip(scales, batched):
        fwd, _ = ipf(dict(p, tau=float(s) * p["tau"]), 4)
        assert_close(b, fwd[-1][2])

    def loss(beta, S2):
        k = gj.LinearGaussianKernel(kernel.alpha, beta, kernel.tau, validate=False)
        m = gj.Gaussian(mu.mean, 0.5 * (S2 + S2.T), validate=False)
        tr = gj.gaussian_sinkhorn(eta, m, k, 4)
        return jnp.sum(tr.forward.tau**2) + jnp.sum(tr.backward.alpha) + jnp.sum(tr.error)

    args = (kernel.beta, mu.cov)
    dirs = [jnp.asarray(rng.normal(size=a.shape)) for a in args]
    dirs[1] = 0.5 * (dirs[1] + dirs[1].T)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(*args)
    fl, h = jax.jit(loss), 1e-5
    plus = fl(*[a + h * v for a, v in zip(args, dirs)])
    minus = fl(*[a - h * v for a, v in zip(args, dirs)])
    fd = (plus - minus) / (2 * h)
    ad = sum(jnp.sum(g * v) for g, v in zip(grads, dirs))
    assert abs(float(ad - fd)) < 1e-7 * max(1.0, abs(float(fd)))


def test_fixed_point_gradient_matches_unrolled(rng):
    p = random_problem(rng, 2, 2, tau_scale=0.5)
    eta, mu, kernel = make(p)
    n = 120

    def loss(fn, beta, tau, m1, S2):
        k = gj.LinearGaussianKernel(kernel.alpha, beta, tau, validate=False)
        e = gj.Gaussian(m1, eta.cov, validate=False)
        m = gj.Gaussian(mu.mean, S2, validate=False)
        out = fn(e, m, k)
        return jnp.sum(out.tau @ out.tau) + jnp.sum(out.beta) + jnp.sum(out.alpha**2)

    implicit = lambda e, m, k: gj.sinkhorn_fixed_point(e, m, k, n)  # noqa: E731
    unrolled = lambda e, m, k: take(gj.gaussian_sinkhorn(e, m, k, n).forward, -1)  # noqa: E731
    args = (kernel.beta, kernel.tau, eta.mean, mu.cov)
    g = {
        name: jax.jit(jax.grad(lambda *a, fn=fn: loss(fn, *a), argnums=(0, 1, 2, 3)))(*args)
        for name, fn in (("implicit", implicit), ("unrolled", unrolled))
    }
    for i, (a, b) in enumerate(zip(g["implicit"], g["unrolled"])):
        if i in (1, 3):
            # tau and S2 are symmetric: only the symmetric part of their gradient is
            # defined (the two functions extend differently off symmetric matrices)
            a, b = (0.5 * (x + x.T) for x in (a, b))
        assert_close(a, b)
    k = jax.jit(implicit)(eta, mu, kernel)
    br = jax.jit(gj.schrodinger_bridge)(eta, mu, kernel)
    for a, b in zip(jax.tree.leaves(k), jax.tree.leaves(br.forward)):
        assert_close(a, b)


def test_float32(rng):
    p = random_problem(rng, 2, 2)
    tr = sinkhorn_jit(*make(p, jnp.float32), 40)
    fwd, bwd = ipf(p, 40)
    assert tr.forward.tau.dtype == jnp.float32
    # float32 round-off: the iterates agree with float64 IPF to 1e-4, converge to 1e-5
    assert_close(tr.forward.tau, [f[2] for f in fwd], tol=1e-4)
    assert_close(tr.forward.alpha, [f[0] for f in fwd], tol=1e-4)
    assert_close(tr.backward.beta, [b[1] for b in bwd], tol=1e-4)
    assert float(tr.error[-1]) < 1e-5


def test_bad_input(rng):
    p = random_problem(rng, 2, 2)
    eta, mu, kernel = make(p)
    with pytest.raises(ValueError, match="num_iters must be >= 1"):
        gj.gaussian_sinkhorn(eta, mu, kernel, 0)
    with pytest.raises(ValueError, match="num_iters must be a Python int"):
        gj.gaussian_sinkhorn(eta, mu, kernel, 2.0)
    with pytest.raises(ValueError, match="num_iters must be >= 1"):
        gj.sinkhorn_fixed_point(eta, mu, kernel, -3)
    with pytest.raises(ValueError, match="method must be"):
        gj.gaussian_sinkhorn(eta, mu, kernel, 3, method="newton")
    singular = gj.LinearGaussianKernel(
        kernel.alpha, jnp.array([[1.0, 2.0], [2.0, 4.0]]), kernel.tau
    )
    with pytest.raises(ValueError, match="beta is singular"):
        gj.gaussian_sinkhorn(eta, mu, singular, 3, method="riccati")
    gj.gaussian_sinkhorn(eta, mu, singular, 3)  # the Bayes form does not need beta^{-1}
    rect = gj.LinearGaussianKernel(kernel.alpha, jnp.ones((2, 3)), kernel.tau)
    eta3 = gj.Gaussian(jnp.zeros(3), jnp.eye(3))
    with pytest.raises(ValueError, match="riccati.*needs beta square"):
        gj.gaussian_sinkhorn(eta3, mu, rect, 3, method="riccati")
    with pytest.raises(ValueError, match="tau must be positive definite"):
        bad_tau = jnp.array([[1.0, 1.0], [1.0, 1.0]])
        gj.gaussian_sinkhorn(
            eta, mu, gj.LinearGaussianKernel(kernel.alpha, kernel.beta, bad_tau), 3
        )
    with pytest.raises(ValueError, match="shapes disagree"):
        gj.gaussian_sinkhorn(eta3, mu, kernel, 3)
    with pytest.raises(ValueError, match="eta.cov must be positive definite"):
        gj.gaussian_sinkhorn(
            gj.Gaussian(jnp.zeros(2), jnp.diag(jnp.array([1.0, 0.0]))), mu, kernel, 3
        )


def test_example_quick(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "sinkhorn_convergence.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    pngs = sorted(f.name for f in tmp_path.glob("*.png"))
    assert len(pngs) == 4, pngs


# ---------------------------------------------------------------- the implicit tangent solve
# sinkhorn_fixed_point's derivative solves (I - dF) dtau* = dF/dp dp, a system of size
# n = d2^2, in closed form (a Stein equation). The oracle is the rule it replaced: the
# Jacobian of the linearised map materialised and solved densely. A backward error of
# n eps in either gives a forward error <= n eps cond(J), so the tolerance is
# 8 n eps cond(J) with cond(J) computed; beta of deficient rank makes W singular (Q of
# deficient rank, some z_i = 0), which the closed form must handle as the dense one does.
def _dense_fixed_point(eta, mu, kernel, num_iters):
    from gaussot_jax.bridge import reference_weight
    from gaussot_jax.sinkhorn import _cov_round

    S1, S2, W = eta.cov, mu.cov, reference_weight(kernel)

    def f(tau):
        return _cov_round(tau, S1, S2, W) - tau

    def solve(f, tau0):
        return jax.lax.scan(lambda t, _: (f(t) + t, None), tau0, None, length=num_iters)[0]

    def dense(g, y):
        J = jax.jacfwd(lambda v: g(v.reshape(y.shape)).ravel())(jnp.zeros(y.size, y.dtype))
        return jnp.linalg.solve(J, y.ravel()).reshape(y.shape)

    tau = gj.sym(jax.lax.custom_root(f, kernel.tau, solve, dense))
    beta = tau @ W.T
    return gj.LinearGaussianKernel(mu.mean - beta @ eta.mean, beta, tau, validate=False)


def _fixed_point_problem(rng, d1, d2, rank):
    p = random_problem(rng, d1, d2, tau_scale=0.7)
    if rank < min(d1, d2):
        U, s, Vt = np.linalg.svd(p["beta"])
        s[rank:] = 0.0
        p["beta"] = (U[:, : len(s)] * s) @ Vt[: len(s)]
    return p


def _fixed_point_loss(p, rng, fn, num_iters):
    d2 = len(p["m2"])
    P, Pb = rng.normal(size=(d2, d2)), rng.normal(size=p["beta"].shape)

    def loss(S1, S2, beta, tau):
        k = fn(
            gj.Gaussian(jnp.asarray(p["m1"]), S1, validate=False),
            gj.Gaussian(jnp.asarray(p["m2"]), S2, validate=False),
            gj.LinearGaussianKernel(jnp.asarray(p["alpha"]), beta, tau, validate=False),
            num_iters,
        )
        return jnp.sum(P * k.tau) + jnp.sum(Pb * k.beta) + jnp.sum(k.alpha**2)

    args = tuple(jnp.asarray(p[k]) for k in ("S1", "S2", "beta", "tau"))
    sym_dir = lambda n: (lambda X: X + X.T)(rng.normal(size=(n, n)))  # noqa: E731
    dirs = (sym_dir(len(p["m1"])), sym_dir(d2), rng.normal(size=p["beta"].shape), sym_dir(d2))
    return loss, args, tuple(map(jnp.asarray, dirs))


@pytest.mark.parametrize("d1, d2, rank", [(2, 2, 2), (4, 4, 2), (6, 6, 6), (3, 5, 3), (5, 3, 1)])
def test_fixed_point_tangent_matches_dense_solve(rng, d1, d2, rank):
    from gaussot_jax.bridge import reference_weight
    from gaussot_jax.sinkhorn import _cov_round, _stein_factors, _stein_tangent_solve

    p = _fixed_point_problem(rng, d1, d2, rank)
    n = 200
    eta, mu, kernel = make(p)
    S1, S2, W = eta.cov, mu.cov, reference_weight(kernel)
    tau = gj.sinkhorn_fixed_point(eta, mu, kernel, n).tau

    def f(t):
        return _cov_round(t, S1, S2, W) - t

    _, g = jax.linearize(f, tau)
    J = np.asarray(jax.jacfwd(lambda v: g(v.reshape(d2, d2)).ravel())(jnp.zeros(d2 * d2)))
    cond = np.linalg.cond(J)
    factors = _stein_factors(tau, S1, S2, W)

    def solve(y):
        return _stein_tangent_solve(factors, g, y)

    # the solve and its transpose (what reverse mode uses), on general (not symmetric)
    # right-hand sides: the tangent space of f is all d2 x d2 matrices
    y = jnp.asarray(rng.normal(size=(d2, d2)))
    want = np.linalg.solve(J, np.asarray(y).ravel()).reshape(d2, d2)
    want_t = np.linalg.solve(J.T, np.asarray(y).ravel()).reshape(d2, d2)
    (got_t,) = jax.linear_transpose(solve, y)(y)
    for got, ref in ((solve(y), want), (got_t, want_t)):
        bound = 8 * d2 * d2 * np.finfo(np.float64).eps * cond * np.abs(ref).max()
        np.testing.assert_allclose(got, ref, rtol=0, atol=bound)

    # end to end: the tangent of tau* (both rules see the same right-hand side)
    dirs = _fixed_point_loss(p, rng, gj.sinkhorn_fixed_point, n)[2]

    def tau_star(fn, S1, S2, beta, tau0):
        k = gj.LinearGaussianKernel(kernel.alpha, beta, tau0, validate=False)
        e, m = (gj.Gaussian(x.mean, c, validate=False) for x, c in ((eta, S1), (mu, S2)))
        return fn(e, m, k, n).tau

    args = (S1, S2, kernel.beta, kernel.tau)
    got, ref = (
        jax.jit(lambda *a, fn=fn: jax.jvp(lambda *b: tau_star(fn, *b), a, dirs)[1])(*args)
        for fn in (gj.sinkhorn_fixed_point, _dense_fixed_point)
    )
    bound = 8 * d2 * d2 * np.finfo(np.float64).eps * cond * np.abs(ref).max()
    np.testing.assert_allclose(got, ref, rtol=0, atol=bound)


@pytest.mark.parametrize("rank", [3, 1])
def test_fixed_point_derivatives_match_central_differences(rng, rank):
    # forward, reverse and jvp-of-grad against central differences (h = 1e-5: error
    # O(h^2) + eps/h, ~1e-10 relative), with invertible and with rank-1 beta
    p = _fixed_point_problem(rng, 3, 3, rank)
    loss, args, dirs = _fixed_point_loss(p, rng, gj.sinkhorn_fixed_point, 200)
    h = 1e-5
    shift = lambda s: [a + s * v for a, v in zip(args, dirs)]  # noqa: E731
    fl = jax.jit(loss)
    fd = (fl(*shift(h)) - fl(*shift(-h))) / (2 * h)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    rev = sum(jnp.sum(g * v) for g, v in zip(grad(*args), dirs))
    fwd = jax.jit(lambda *a: jax.jvp(loss, a, dirs)[1])(*args)
    np.testing.assert_allclose(fwd, fd, rtol=1e-7)
    np.testing.assert_allclose(rev, fd, rtol=1e-7)
    hvp = jax.jit(lambda *a: jax.jvp(lambda *b: grad(*b), a, dirs)[1])(*args)
    for hv, gp, gm in zip(hvp, grad(*shift(h)), grad(*shift(-h))):
        fdh = (gp - gm) / (2 * h)
        np.testing.assert_allclose(hv, fdh, rtol=1e-6, atol=1e-6 * np.abs(fdh).max())
