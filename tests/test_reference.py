"""Entropic OT with a non-product Gaussian reference coupling [REF25] (MATH.md §2, §5).

Oracles, all independent of the library's closed form:
- direct minimisation (scipy, Newton trust region with the exact Hessian) of the objective
  E||x-y||^2 + eps KL(N(m, Sigma_pi) || R) over the cross-covariance, written here in NumPy;
- the 1-D case solved by hand: the stationarity condition is a scalar quadratic;
- discrete Sinkhorn on a 1-D grid against the discretised reference (no Gaussian ansatz);
- MATH.md §5's numbers; the balanced [JMPC20] path for the product reference.
"""

import os
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from conftest import random_spd, tol
from jax.test_util import check_grads

import gaussot_jax as gj

# One compilation per input signature; the eager (validating) path is exercised by
# test_math_md_section5_numbers and test_validation_errors.
_ot = jax.jit(gj.entropic_ot)

# ---------------------------------------------------------------------------------------
# Independent oracles
# ---------------------------------------------------------------------------------------


def _objective_parts(C, a, b, A, B, r, SR, eps):
    """Value, gradient and Sigma_pi^{-1} of E||x-y||^2 + eps KL(N(m, Sigma_pi) || R)."""
    d = len(a)
    S = np.block([[A, C], [C.T, B]])
    sign, logdet = np.linalg.slogdet(S)
    if sign <= 0 or not np.all(np.linalg.eigvalsh(S) > 0):
        return np.inf, None, None
    Lam = np.linalg.inv(SR)
    delta = np.concatenate([a, b]) - r
    _, logdet_R = np.linalg.slogdet(SR)
    kl = 0.5 * (np.trace(Lam @ S) + delta @ Lam @ delta - 2 * d + logdet_R - logdet)
    transport = np.sum((a - b) ** 2) + np.trace(A) + np.trace(B) - 2 * np.trace(C)
    Sinv = np.linalg.inv(S)
    grad = -2 * np.eye(d) + eps * (Lam[:d, d:] - Sinv[:d, d:])
    return transport + eps * kl, grad, Sinv


def _direct_minimise(mu, nu, ref, eps):
    """argmin over C of the objective (strictly convex), by Newton trust region."""
    a, b, A, B = (np.asarray(v, dtype=np.float64) for v in (mu.mean, nu.mean, mu.cov, nu.cov))
    r, SR = np.asarray(ref.mean, np.float64), np.asarray(ref.cov, np.float64)
    d = len(a)

    def fun(c):
        return _objective_parts(c.reshape(d, d), a, b, A, B, r, SR, eps)[0]

    # The trust region may build its model at a trial point outside the PD region before
    # rejecting it (its value is inf); any finite model serves there.
    def jac(c):
        grad = _objective_parts(c.reshape(d, d), a, b, A, B, r, SR, eps)[1]
        return np.zeros(d * d) if grad is None else grad.ravel()

    def hess(c):
        _, _, Sinv = _objective_parts(c.reshape(d, d), a, b, A, B, r, SR, eps)
        if Sinv is None:
            return np.eye(d * d)
        H = np.empty((d * d, d * d))
        for k in range(d * d):
            dC = np.zeros(d * d)
            dC[k] = 1.0
            dC = dC.reshape(d, d)
            dS = np.block([[np.zeros((d, d)), dC], [dC.T, np.zeros((d, d))]])
            H[:, k] = eps * (Sinv @ dS @ Sinv)[:d, d:].ravel()
        return 0.5 * (H + H.T)

    res = scipy.optimize.minimize(
        fun, np.zeros(d * d), jac=jac, hess=hess, method="trust-exact", options={"gtol": 1e-12}
    )
    # scipy's trust region stops when round-off spoils its predicted decrease (|grad| ~ 1e-8);
    # full Newton steps from there converge quadratically to the float64 floor.
    c = res.x
    for _ in range(4):
        c = c - np.linalg.solve(hess(c), jac(c))
    assert np.max(np.abs(jac(c))) < 1e-11, jac(c)
    return fun(c), c.reshape(d, d)


def _ot_1d(a, va, b, vb, r, SR, eps):
    """1-D closed form, by hand.

    F(c) = (a-b)^2 + va + vb - 2c + eps KL(N((a,b), [[va, c], [c, vb]]) || N(r, SR)).
    With l12 = -SR12 / det SR the c-dependent part is -2c + eps l12 c - eps/2 log(va vb - c^2),
    so F'(c) = 0 <=> c / (va vb - c^2) = w := 2/eps - l12 <=> w c^2 + c - w va vb = 0, whose
    root with |c| < sqrt(va vb) is c = 2 w va vb / (1 + sqrt(1 + 4 w^2 va vb)) (any sign of w).
    """
    det_r = SR[0, 0] * SR[1, 1] - SR[0, 1] ** 2
    l11, l22, l12 = SR[1, 1] / det_r, SR[0, 0] / det_r, -SR[0, 1] / det_r
    w = 2.0 / eps - l12
    c = 2 * w * va * vb / (1 + np.sqrt(1 + 4 * w**2 * va * vb))
    da, db = a - r[0], b - r[1]
    kl = 0.5 * (
        l11 * va
        + l22 * vb
        + 2 * l12 * c
        + l11 * da**2
        + l22 * db**2
        + 2 * l12 * da * db
        - 2
        + np.log(det_r)
        - np.log(va * vb - c**2)
    )
    return (a - b) ** 2 + va + vb - 2 * c + eps * kl, c


def _random_reference(rng, d, scale=1.0):
    """A full-rank reference on R^{2d} unrelated to the marginals, with a mean."""
    return gj.Gaussian(rng.normal(size=2 * d), scale * random_spd(rng, 2 * d, cond=20.0))


def _pair(rng, d):
    mu = gj.Gaussian(rng.normal(size=d), random_spd(rng, d, cond=5.0))
    nu = gj.Gaussian(rng.normal(size=d), 2.0 * random_spd(rng, d, cond=8.0))
    return mu, nu


def _reference_from_precision(Lam, mean):
    return gj.Gaussian(mean, np.linalg.inv(Lam))


# ---------------------------------------------------------------------------------------
# Correctness against independent methods
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3])
def test_matches_direct_minimisation(rng, d):
    mu, nu = _pair(rng, d)
    # scale: references tighter than the marginals make Lambda12 large (W far from 2/eps I).
    for eps, scale in [(0.7, 1.0), (2.0, 0.3)] if d == 2 else [(1.3, 0.5)]:
        ref = _random_reference(rng, d, scale)
        value, C = _direct_minimise(mu, nu, ref, eps)
        out = _ot(mu, nu, eps, reference=ref)
        np.testing.assert_allclose(out.cost, value, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(out.cross_cov, C, rtol=0, atol=1e-9)
        np.testing.assert_allclose(out.plan.cov[:d, d:], C, atol=1e-9)
        np.testing.assert_allclose(out.plan.mean, np.concatenate([mu.mean, nu.mean]))
        # The plug-in value at the returned plan equals the returned cost.
        plug_in = _objective_parts(
            np.asarray(out.cross_cov),
            mu.mean,
            nu.mean,
            mu.cov,
            nu.cov,
            ref.mean,
            ref.cov,
            eps,
        )[0]
        np.testing.assert_allclose(out.cost, plug_in, rtol=1e-10)


def test_1d_closed_form_oracle(rng):
    cases = [
        (0.3, 1.5, -1.0, 0.4, np.array([1.0, -2.0]), np.array([[2.0, 0.9], [0.9, 0.7]]), 0.5),
        (0.0, 1.0, 2.0, 3.0, np.array([0.5, 0.5]), np.array([[0.5, -0.4], [-0.4, 2.0]]), 1.3),
        # reference strongly positively correlated with large eps: W = 2/eps - l12 < 0
        (0.0, 1.0, 0.0, 1.0, np.zeros(2), np.array([[1.0, 0.95], [0.95, 1.0]]), 50.0),
    ]
    for a, va, b, vb, r, SR, eps in cases:
        value, c = _ot_1d(a, va, b, vb, r, SR, eps)
        direct, _ = _direct_minimise(
            gj.Gaussian([a], [[va]]), gj.Gaussian([b], [[vb]]), gj.Gaussian(r, SR), eps
        )
        np.testing.assert_allclose(value, direct, rtol=1e-10)  # oracle vs oracle
        out = _ot(
            gj.Gaussian([a], [[va]]), gj.Gaussian([b], [[vb]]), eps, reference=gj.Gaussian(r, SR)
        )
        # The float64 oracle itself cancels terms of size l11 ~ 10 on a value ~ 0.1.
        np.testing.assert_allclose(out.cost, value, rtol=1e-10)
        np.testing.assert_allclose(out.cross_cov[0, 0], c, rtol=1e-12)


def test_math_md_section5_numbers():
    mu = nu = gj.Gaussian(jnp.zeros(1), jnp.eye(1))
    expected = {0.0: 0.806385, 0.5: 0.510846, 0.9: 0.162247, 0.99: 0.019516}
    for rho, want in expected.items():
        R = gj.correlation_reference(mu, nu, jnp.array([[rho]]))
        got = gj.entropic_ot(mu, nu, 0.8, reference=R).cost
        np.testing.assert_allclose(got, want, atol=6e-7)
        SR = np.array([[1.0, rho], [rho, 1.0]])
        np.testing.assert_allclose(
            got, _ot_1d(0.0, 1.0, 0.0, 1.0, np.zeros(2), SR, 0.8)[0], rtol=1e-12
        )


def _ot_1d_decimal(rho, eps, digits=50):
    """``_ot_1d`` for mu = nu = N(0, 1), R_rho, in 50-digit decimal arithmetic."""
    from decimal import Decimal as D
    from decimal import localcontext

    with localcontext() as ctx:
        ctx.prec = digits
        r, e = D(rho), D(eps)
        det = 1 - r * r
        l11, l12 = 1 / det, -r / det
        w = 2 / e - l12
        c = 2 * w / (1 + (1 + 4 * w * w).sqrt())
        kl = (2 * l11 + 2 * l12 * c - 2 + det.ln() - (1 - c * c).ln()) / 2
        return float(2 - 2 * c + e * kl)


def test_nearly_degenerate_reference():
    """rho -> 1: Sigma_R has condition number ~ 1 / (1 - rho); terms of size 1/(1 - rho^2)
    must not cancel. Accuracy is ~ cond(Sigma_R) * 1e-16 relative (the input's own)."""
    mu = gj.Gaussian(jnp.zeros(1), jnp.eye(1))
    for rho, rtol in [(0.999, 1e-12), (1 - 1e-6, 1e-9)]:
        R = gj.Gaussian(np.zeros(2), np.array([[1.0, rho], [rho, 1.0]]))
        got = _ot(mu, mu, 0.8, reference=R).cost
        np.testing.assert_allclose(got, _ot_1d_decimal(rho, 0.8), rtol=rtol)


def _grid_sinkhorn_1d(mu, nu, ref, eps, n=100, half_width=7.0, iters=200):
    """Discrete entropic OT on a grid against the discretised reference (log domain)."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal, norm

    a, va = float(mu.mean[0]), float(mu.cov[0, 0])
    b, vb = float(nu.mean[0]), float(nu.cov[0, 0])
    x = np.linspace(a - half_width * np.sqrt(va), a + half_width * np.sqrt(va), n)
    y = np.linspace(b - half_width * np.sqrt(vb), b + half_width * np.sqrt(vb), n)
    log_p = norm.logpdf(x, a, np.sqrt(va))
    log_q = norm.logpdf(y, b, np.sqrt(vb))
    log_p -= logsumexp(log_p)
    log_q -= logsumexp(log_q)
    X, Y = np.meshgrid(x, y, indexing="ij")
    log_R = multivariate_normal(np.asarray(ref.mean), np.asarray(ref.cov)).logpdf(
        np.stack([X, Y], -1)
    )
    # Riemann weights, not renormalised on the grid: R has mass outside the box (~1e-5).
    log_R += np.log((x[1] - x[0]) * (y[1] - y[0]))
    cost = (X - Y) ** 2
    log_K = log_R - cost / eps
    f, g = np.zeros(n), np.zeros(n)
    for _ in range(iters):
        f = log_p - logsumexp(log_K + g[None, :], axis=1)
        g = log_q - logsumexp(log_K + f[:, None], axis=0)
    log_pi = log_K + f[:, None] + g[None, :]
    pi = np.exp(log_pi)
    assert np.max(np.abs(pi.sum(1) - np.exp(log_p))) < 1e-10
    return np.sum(pi * cost) + eps * np.sum(pi * (log_pi - log_R))


def test_discrete_sinkhorn_1d(rng):
    """No Gaussian ansatz: grid Sinkhorn against the discretised reference."""
    mu, nu = gj.Gaussian([0.2], [[1.3]]), gj.Gaussian([-0.5], [[0.6]])
    ref = gj.Gaussian(np.array([1.0, 0.0]), np.array([[2.0, 1.1], [1.1, 1.5]]))
    eps = 0.8
    discrete = _grid_sinkhorn_1d(mu, nu, ref, eps)
    out = _ot(mu, nu, eps, reference=ref)
    # Riemann sums of Gaussian integrands converge spectrally: measured 5e-12 at n=100.
    np.testing.assert_allclose(out.cost, discrete, rtol=1e-9)


def test_product_reference_reproduces_balanced(rng):
    d, eps = 2, 0.9
    mu, nu = _pair(rng, d)
    prod = gj.Gaussian(
        np.concatenate([mu.mean, nu.mean]),
        np.block([[mu.cov, np.zeros((d, d))], [np.zeros((d, d)), nu.cov]]),
    )
    base = _ot(mu, nu, eps)
    pts = rng.normal(size=(5, d))
    for ref in (prod, gj.correlation_reference(mu, nu, np.zeros((d, d)))):
        out = _ot(mu, nu, eps, reference=ref)
        np.testing.assert_allclose(out.cost, base.cost, rtol=1e-13)
        np.testing.assert_allclose(out.cross_cov, base.cross_cov, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(
            out.entropic_map.matrix, base.entropic_map.matrix, rtol=1e-12, atol=1e-13
        )
        for k in range(2):
            np.testing.assert_allclose(
                jax.vmap(out.potentials[k])(pts),
                jax.vmap(base.potentials[k])(pts),
                rtol=1e-10,
                atol=1e-10,
            )


def _check_potentials(out, mu, nu, ref, eps, rng):
    d = mu.dim
    f, g = out.potentials
    z = np.asarray(out.plan.sample(jax.random.PRNGKey(1), (7,))) + rng.normal(size=(7, 2 * d))
    for zi in z:
        x, y = zi[:d], zi[d:]
        lhs = (f(x) + g(y) - np.sum((x - y) ** 2)) / eps
        rhs = out.plan.log_prob(zi) - ref.log_prob(zi)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-9, atol=1e-9)

    def expect(p, m):
        return 0.5 * np.trace(p.quad @ m.cov) + p(m.mean)

    np.testing.assert_allclose(expect(f, mu) + expect(g, nu), out.cost, rtol=1e-10)


def test_potentials_density_identity_and_duality(rng):
    d, eps = 2, 0.6
    mu, nu = _pair(rng, d)
    ref = _random_reference(rng, d)
    out = _ot(mu, nu, eps, reference=ref)
    _check_potentials(out, mu, nu, ref, eps, rng)


@pytest.mark.parametrize("rank", [0, 1])
def test_singular_weight(rng, rank):
    """W = (2/eps) I - Lambda12 singular: [REF25] assume it invertible; the solver does not."""
    d, eps = 2, 0.5
    mu, nu = _pair(rng, d)
    u = rng.normal(size=(d, 1))
    W0 = (u @ rng.normal(size=(1, d))) if rank else np.zeros((d, d))
    L12 = (2.0 / eps) * np.eye(d) - W0
    s = np.linalg.norm(L12, 2) + 1.0
    Lam = np.block([[s * np.eye(d) + 0.3 * np.ones((d, d)), L12], [L12.T, s * np.eye(d)]])
    ref = _reference_from_precision(Lam, rng.normal(size=2 * d))
    out = _ot(mu, nu, eps, reference=ref)
    W = (2.0 / eps) * np.eye(d) - np.linalg.inv(np.asarray(ref.cov))[:d, d:]
    assert np.linalg.matrix_rank(W, tol=1e-8) == rank
    value, C = _direct_minimise(mu, nu, ref, eps)
    np.testing.assert_allclose(out.cost, value, rtol=1e-9)
    np.testing.assert_allclose(out.cross_cov, C, atol=1e-9)
    if rank == 0:
        np.testing.assert_allclose(out.cross_cov, 0.0, atol=1e-12)  # independence
    _check_potentials(out, mu, nu, ref, eps, rng)
    grads = jax.jit(
        jax.grad(
            lambda S, e: _ot(mu, nu, e, reference=gj.Gaussian(ref.mean, S, validate=False)).cost,
            argnums=(0, 1),
        )
    )(ref.cov, eps)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_correlation_reference_structure(rng):
    d = 3
    mu, nu = _pair(rng, d)
    P = rng.normal(size=(d, d))
    P = 0.8 * P / np.linalg.norm(P, 2)
    R = gj.correlation_reference(mu, nu, P)
    np.testing.assert_allclose(R.mean, np.concatenate([mu.mean, nu.mean]))
    np.testing.assert_allclose(R.cov[:d, :d], mu.cov)
    np.testing.assert_allclose(R.cov[d:, d:], nu.cov)
    # Marginal correlation of R, whitened, is P (independent square roots via scipy).
    from scipy.linalg import sqrtm as sp_sqrtm

    Ai, Bi = np.linalg.inv(sp_sqrtm(mu.cov)), np.linalg.inv(sp_sqrtm(nu.cov))
    np.testing.assert_allclose(Ai @ np.asarray(R.cov[:d, d:]) @ Bi, P, atol=1e-12)
    # Its precision's off-diagonal block (docstring formula).
    L12 = -Ai @ P @ np.linalg.inv(np.eye(d) - P.T @ P) @ Bi
    np.testing.assert_allclose(np.linalg.inv(np.asarray(R.cov))[:d, d:], L12, atol=1e-10)


# ---------------------------------------------------------------------------------------
# Derivatives, transformations, dtypes
# ---------------------------------------------------------------------------------------


def test_check_grads(rng):
    d, eps = 2, 0.7
    mu, nu = _pair(rng, d)
    # check_grads steps along random directions of norm ~ 4 in the (4, 4) covariance: keep
    # its smallest eigenvalue (1) well above the step, so central differences stay exact.
    ref = gj.Gaussian(rng.normal(size=2 * d), 3.0 * random_spd(rng, 2 * d, cond=3.0))

    def cost(SR, r, e, A, a, B):
        return gj.entropic_ot(
            gj.Gaussian(a, gj.sym(A), validate=False),
            gj.Gaussian(nu.mean, gj.sym(B), validate=False),
            e,
            reference=gj.Gaussian(r, gj.sym(SR), validate=False),
        ).cost

    args = (ref.cov, ref.mean, jnp.asarray(eps), mu.cov, mu.mean, nu.cov)
    check_grads(jax.jit(cost), args, order=1, modes=("fwd", "rev"), eps=1e-5, atol=1e-7, rtol=1e-7)


def test_jit_vmap_grad():
    mu = nu = gj.Gaussian(jnp.zeros(1), jnp.eye(1))

    @jax.jit
    def cost(rho, eps):
        R = gj.correlation_reference(mu, nu, rho[None, None])
        return gj.entropic_ot(mu, nu, eps, reference=R).cost

    rhos = jnp.array([0.0, 0.5, 0.9, 0.99])
    got = jax.vmap(cost, in_axes=(0, None))(rhos, 0.8)
    np.testing.assert_allclose(got, [0.806385, 0.510846, 0.162247, 0.019516], atol=6e-7)
    # d cost / d rho against the 1-D oracle by central differences (oracle is NumPy).
    h = 1e-6
    for rho in (0.3, 0.9):

        def f(r):
            return _ot_1d(0, 1, 0, 1, np.zeros(2), np.array([[1, r], [r, 1]]), 0.8)[0]

        fd = (f(rho + h) - f(rho - h)) / (2 * h)
        np.testing.assert_allclose(jax.grad(cost)(jnp.asarray(rho), 0.8), fd, rtol=1e-7)
    # A traced corr with norm >= 1 is caught at run time.
    with pytest.raises(Exception, match="operator norm"):
        cost(jnp.asarray(1.2), 0.8).block_until_ready()


def test_float32(rng):
    d, eps = 2, 0.7
    mu, nu = _pair(rng, d)
    ref = _random_reference(rng, d)
    out64 = _ot(mu, nu, eps, reference=ref)

    def f32(g):
        return gj.Gaussian(np.float32(g.mean), np.float32(g.cov))

    out32 = _ot(f32(mu), f32(nu), np.float32(eps), reference=f32(ref))
    assert out32.cost.dtype == jnp.float32 and out32.cross_cov.dtype == jnp.float32
    t = tol(jnp.float32)
    np.testing.assert_allclose(out32.cost, out64.cost, rtol=t)
    np.testing.assert_allclose(out32.cross_cov, out64.cross_cov, rtol=t, atol=t)
    # float64 reference mixed with float32 marginals: computed in mu's dtype.
    assert _ot(f32(mu), f32(nu), eps, reference=ref).cost.dtype == jnp.float32


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def test_validation_errors(rng):
    d = 2
    mu, nu = _pair(rng, d)
    ref = _random_reference(rng, d)
    with pytest.raises(ValueError, match=r"reference\.mean must have shape \(4,\)"):
        gj.entropic_ot(mu, nu, 1.0, reference=gj.Gaussian(np.zeros(3), np.eye(3)))
    with pytest.raises(ValueError, match=r"reference\.mean must have shape \(4,\)"):
        batch = gj.Gaussian(np.zeros((2, 4)), np.stack([np.eye(4)] * 2))
        gj.entropic_ot(mu, nu, 1.0, reference=batch)
    # A Gaussian cannot be built with inconsistent shapes; tree surgery can.
    with pytest.raises(ValueError, match=r"reference\.cov must have shape \(4, 4\)"):
        gj.entropic_ot(mu, nu, 1.0, reference=eqx.tree_at(lambda g: g.cov, ref, jnp.eye(3)))
    singular = np.ones((4, 4))
    with pytest.raises(ValueError, match=r"reference\.cov must be positive definite"):
        gj.entropic_ot(mu, nu, 1.0, reference=gj.Gaussian(np.zeros(4), singular))
    nonsym = np.asarray(ref.cov) + np.triu(np.ones((4, 4)), 1)
    with pytest.raises(ValueError, match=r"reference\.cov is not symmetric"):
        gj.entropic_ot(mu, nu, 1.0, reference=gj.Gaussian(np.zeros(4), nonsym, validate=False))
    with pytest.raises(ValueError, match="reference must be a Gaussian"):
        gj.entropic_ot(mu, nu, 1.0, reference=np.eye(4))
    with pytest.raises(ValueError, match=r"mu\.cov .*positive definite"):
        gj.entropic_ot(gj.Gaussian(np.zeros(2), np.diag([1.0, 0.0])), nu, 1.0, reference=ref)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        gj.entropic_ot(mu, nu, -1.0, reference=ref)
    with pytest.raises(ValueError, match="operator norm < 1"):
        gj.correlation_reference(mu, nu, np.diag([0.5, 1.0]))
    with pytest.raises(ValueError, match="operator norm < 1"):
        gj.correlation_reference(mu, nu, np.array([[0.8, 0.8], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"corr must have shape \(2, 2\)"):
        gj.correlation_reference(mu, nu, np.eye(3) * 0.1)
    with pytest.raises(ValueError, match="corr contains NaN"):
        gj.correlation_reference(mu, nu, np.full((2, 2), np.nan))


def test_example_quick(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    res = subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "reference_bias.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert len(list(tmp_path.glob("*.png"))) == 5
    assert "bias" in res.stdout
