"""Unbalanced entropic OT [JMPC20, Thm 2] against methods that need no closed form.

Oracles: direct minimisation of the unbalanced objective over (log mass, mean, Cholesky
factor of the covariance), written here from the generalised-KL definition of MATH.md §4;
OTT-JAX's ``UnbalancedBures``; the balanced closed form as gamma -> inf; the exact 1-D
mass problem for Diracs; continuity and one-sided finite differences at rank-deficient
covariances; ``check_grads``.
"""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
from jax.test_util import check_grads

import gaussot_jax as gj
from tests.conftest import random_spd, tol

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the objective, by hand
def _kl(m1, S1, m2, S2):
    d = len(m1)
    dm = m2 - m1
    S2i = np.linalg.inv(S2)
    return 0.5 * (
        np.trace(S2i @ S1) + dm @ S2i @ dm - d + np.linalg.slogdet(S2)[1] - np.linalg.slogdet(S1)[1]
    )


def _kl_gen(mp, m1, S1, mq, m2, S2):
    # generalised KL between mp N(m1, S1) and mq N(m2, S2): ∫ log(dp/dq) dp - mp + mq
    return mp * (_kl(m1, S1, m2, S2) + np.log(mp / mq)) - mp + mq


def _unpack(theta, d):
    m = np.exp(theta[0])
    mean = theta[1 : 1 + 2 * d]
    L = np.zeros((2 * d, 2 * d))
    L[np.tril_indices(2 * d)] = theta[1 + 2 * d :]
    L[np.diag_indices(2 * d)] = np.exp(np.diag(L))
    return m, mean, L @ L.T


def _objective(theta, ma, a, A, mb, b, B, eps, gam):
    """E_pi||x-y||^2 + eps KL(pi||alpha⊗beta) + gam KL(pi_1||alpha) + gam KL(pi_2||beta)."""
    d = len(a)
    m, mean, S = _unpack(theta, d)
    x, y = mean[:d], mean[d:]
    P, Q, C = S[:d, :d], S[d:, d:], S[:d, d:]
    Z = np.zeros((d, d))
    transport = m * (np.sum((x - y) ** 2) + np.trace(P) + np.trace(Q) - 2 * np.trace(C))
    ref = (ma * mb, np.concatenate([a, b]), np.block([[A, Z], [Z, B]]))
    return (
        transport
        + eps * _kl_gen(m, mean, S, *ref)
        + gam * _kl_gen(m, x, P, ma, a, A)
        + gam * _kl_gen(m, y, Q, mb, b, B)
    )


def _fd_grad(f, x, h=1e-5):
    E = np.eye(len(x)) * h
    return np.array([(f(x + e) - f(x - e)) / (2 * h) for e in E])


def _fd_hess(f, x, h=1e-4):
    n = len(x)
    E = np.eye(n) * h
    f0 = f(x)
    H = np.zeros((n, n))
    for i in range(n):
        H[i, i] = (f(x + E[i]) - 2 * f0 + f(x - E[i])) / h**2
        for j in range(i):
            H[i, j] = H[j, i] = (
                f(x + E[i] + E[j]) - f(x + E[i] - E[j]) - f(x - E[i] + E[j]) + f(x - E[i] - E[j])
            ) / (4 * h * h)
    return H


def _direct(ma, a, A, mb, b, B, eps, gam):
    """Minimise the objective: BFGS, then Newton steps with finite-difference derivatives."""
    d = len(a)
    L0 = np.linalg.cholesky(np.block([[A, 0 * A], [0 * A, B]]))
    L0[np.diag_indices(2 * d)] = np.log(np.diag(L0))
    theta = np.concatenate([[0.0], a, b, L0[np.tril_indices(2 * d)]])

    def f(t):
        return _objective(t, ma, a, A, mb, b, B, eps, gam)

    theta = so.minimize(f, theta, method="BFGS", options=dict(gtol=1e-7, maxiter=20000)).x
    for _ in range(2):
        theta = theta - np.linalg.solve(_fd_hess(f, theta), _fd_grad(f, theta))
    assert np.max(np.abs(_fd_grad(f, theta))) < 1e-8
    return (f(theta), *_unpack(theta, d))


def _problem(rng, d, ma=1.0, mb=1.0, cond=5.0):
    a = gj.ScaledGaussian(ma, rng.normal(size=d), random_spd(rng, d, cond) * 1.5)
    b = gj.ScaledGaussian(mb, rng.normal(size=d), random_spd(rng, d, cond) * 0.8)
    return a, b


def _np(g):
    return float(g.mass), np.asarray(g.mean), np.asarray(g.cov)


# ---------------------------------------------------------------- value and plan
@pytest.mark.parametrize(
    "d, ma, mb, eps, gam",
    [(1, 1.0, 1.0, 2.0, 1.0), (1, 0.5, 2.0, 0.7, 3.0), (2, 2.0, 3.0, 0.5, 0.8),
     (3, 1.0, 1.5, 1.5, 0.8), (3, 3.0, 0.4, 0.3, 5.0)],
)  # fmt: skip
def test_matches_direct_minimisation(d, ma, mb, eps, gam):
    rng = np.random.default_rng(d + int(10 * ma))
    a, b = _problem(rng, d, ma, mb)
    out = gj.unbalanced_entropic_ot(a, b, eps, gam)
    value, m, mean, cov = _direct(*_np(a), *_np(b), eps, gam)
    # The optimiser's parameters are exact to ~1e-10 (finite-difference Newton steps);
    # the value is second-order in them.
    np.testing.assert_allclose(out.cost, value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.plan.mass, m, rtol=1e-8)
    np.testing.assert_allclose(out.plan.mean, mean, atol=1e-8)
    np.testing.assert_allclose(out.plan.cov, cov, atol=1e-8)
    # marginals, cross-covariance and masses are the plan's
    pi1, pi2 = out.marginals
    np.testing.assert_allclose(pi1.cov, cov[:d, :d], atol=1e-8)
    np.testing.assert_allclose(pi2.mean, mean[d:], atol=1e-8)
    np.testing.assert_allclose(out.cross_cov, cov[:d, d:], atol=1e-8)
    np.testing.assert_allclose(pi1.mass, m, rtol=1e-8)
    np.testing.assert_allclose(np.exp(out.log_mass), m, rtol=1e-8)
    np.testing.assert_allclose(out.destroyed_mass, (ma - m, mb - m), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("d, eps, gam", [(2, 0.9, 2.0), (3, 0.1, 0.5)])
def test_matches_ott_unbalanced_bures(d, eps, gam):
    # (OTT's UnbalancedBures fails at d = 1: it reshapes the covariance to 0-d.)
    from ott.geometry.costs import UnbalancedBures

    rng = np.random.default_rng(7 + d)
    a, b = _problem(rng, d, 1.3, 0.7, cond=20.0)
    out = gj.unbalanced_entropic_ot(a, b, eps, gam)
    # OTT uses [JMPC20]'s sigma: eps = 2 sigma^2 (MATH.md §0).
    cost = UnbalancedBures(d, sigma=np.sqrt(eps / 2), gamma=gam)
    pack = [jnp.concatenate([g.mass[None], g.mean, g.cov.ravel()]) for g in (a, b)]
    np.testing.assert_allclose(out.cost, cost(*pack), rtol=1e-11)


def test_reference_numbers():
    A = np.array([[2.0, 0.3], [0.3, 1.0]])
    B = np.array([[1.0, -0.2], [-0.2, 0.5]])
    for (ma, mb), uot in [((1.0, 1.0), 2.774704032485), ((2.0, 3.0), 12.302633545374)]:
        a = gj.ScaledGaussian(ma, np.zeros(2), A)
        b = gj.ScaledGaussian(mb, np.array([1.0, 2.0]), B)
        out = gj.unbalanced_entropic_ot(a, b, 2.0, 1.0)
        np.testing.assert_allclose(out.cost, uot, rtol=0, atol=1e-12)
        # m_pi implied by the value: UOT = gamma (m_a + m_b - 2 m) + eps (m_a m_b - m).
        # (MATH.md's printed m_pi, 0.306323993 and 1.174341601, disagree with its own
        # UOT in the 9th and 8th digit: 0.3063239919 and 1.1743416137 are consistent.)
        np.testing.assert_allclose(out.plan.mass, (ma + mb + 2 * ma * mb - uot) / 4, rtol=1e-12)


# ---------------------------------------------------------------- limits and scaling
def test_gamma_to_infinity_is_balanced(rng):
    a, b = _problem(rng, 2)
    mu, nu = a.normalized, b.normalized
    eps = 0.6
    bal = gj.entropic_ot(mu, nu, eps)

    def uot(gam):
        return gj.unbalanced_entropic_ot(a, b, eps, gam)

    # The error is O(1/gamma): Richardson extrapolation removes it to O(1/gamma^2).
    g = 1e4
    errs = [abs(float(uot(g * 10**k).cost - bal.cost)) for k in range(3)]
    assert 9 < errs[0] / errs[1] < 11 and 9 < errs[1] / errs[2] < 11
    richardson = 2 * uot(2 * g).cost - uot(g).cost
    np.testing.assert_allclose(richardson, bal.cost, rtol=1e-7)
    out = uot(1e8)
    np.testing.assert_allclose(out.plan.mass, 1.0, atol=1e-7)
    np.testing.assert_allclose(out.plan.cov, bal.plan.cov, atol=1e-6)
    np.testing.assert_allclose(out.plan.mean, bal.plan.mean, atol=1e-6)


def test_mass_scaling(rng):
    # Masses enter only through m_a m_b: the normalised plan is unchanged and
    # m_pi ∝ (m_a m_b)^((eps + gamma) / (eps + 2 gamma)) (minimise the objective in m).
    a, b = _problem(rng, 2)
    eps, gam = 0.8, 1.7
    ref = gj.unbalanced_entropic_ot(a, b, eps, gam)
    for s, t in [(3.0, 1.0), (0.2, 5.0), (7.0, 7.0)]:
        a2 = gj.ScaledGaussian(s * a.mass, a.mean, a.cov)
        b2 = gj.ScaledGaussian(t * b.mass, b.mean, b.cov)
        out = gj.unbalanced_entropic_ot(a2, b2, eps, gam)
        np.testing.assert_allclose(out.plan.mean, ref.plan.mean, atol=1e-14)
        np.testing.assert_allclose(out.plan.cov, ref.plan.cov, atol=1e-14)
        k = (eps + gam) / (eps + 2 * gam)
        np.testing.assert_allclose(out.log_mass, ref.log_mass + k * np.log(s * t), rtol=1e-13)


# ---------------------------------------------------------------- degenerate covariances
def test_diracs_exact():
    # A = B = 0: pi = m delta_(a,b); the 1-D problem in m is solved numerically here.
    a0, b0, ma, mb, eps, gam = np.array([0.3, -1.0]), np.array([1.0, 0.5]), 1.5, 2.0, 0.5, 1.5
    c2 = np.sum((a0 - b0) ** 2)

    def F(logm):
        m = np.exp(logm)
        kl = lambda p, q: p * np.log(p / q) - p + q  # noqa: E731
        return m * c2 + eps * kl(m, ma * mb) + gam * kl(m, ma) + gam * kl(m, mb)

    r = so.minimize_scalar(F, bracket=(-3, 1), tol=1e-14)
    Z = np.zeros((2, 2))
    out = gj.unbalanced_entropic_ot(
        gj.ScaledGaussian(ma, a0, Z), gj.ScaledGaussian(mb, b0, Z), eps, gam
    )
    np.testing.assert_allclose(out.cost, r.fun, rtol=1e-12)
    np.testing.assert_allclose(out.log_mass, r.x, atol=1e-7)
    np.testing.assert_allclose(out.plan.cov, np.zeros((4, 4)), atol=0)
    np.testing.assert_allclose(out.plan.mean, np.concatenate([a0, b0]), atol=1e-15)


def test_rank_deficient_finite_continuous_and_differentiable(rng):
    # Rank-1 A and rank-1 B: the transcribed form has logdet(AB) = -inf; ours is finite,
    # continuous (limit of A + delta I) and has a finite gradient that matches one-sided
    # finite differences along a PSD path.
    v, w = rng.normal(size=3), rng.normal(size=3)
    A, B = np.outer(v, v), np.outer(w, w)
    ma, mb, eps, gam = 1.2, 0.9, 0.7, 1.3
    mean_a, mean_b = rng.normal(size=3), rng.normal(size=3)

    def run(A, B):
        return gj.unbalanced_entropic_ot(
            gj.ScaledGaussian(ma, mean_a, A), gj.ScaledGaussian(mb, mean_b, B), eps, gam
        )

    out = run(A, B)
    near = run(A + 1e-9 * np.eye(3), B + 1e-9 * np.eye(3))
    assert np.isfinite(out.cost) and np.all(np.isfinite(out.plan.cov))
    np.testing.assert_allclose(out.cost, near.cost, rtol=1e-8)
    np.testing.assert_allclose(out.plan.cov, near.plan.cov, atol=1e-8)
    # the plan lives on the supports: its x-covariance has A's range
    P = np.asarray(out.marginals[0].cov)
    null = np.linalg.svd(A)[0][:, 1:]
    np.testing.assert_allclose(null.T @ P @ null, 0, atol=1e-12)

    def cost(A, B):
        return run(A, B).cost

    gA, gB = jax.jit(jax.grad(cost, argnums=(0, 1)))(jnp.asarray(A), jnp.asarray(B))
    assert np.all(np.isfinite(gA)) and np.all(np.isfinite(gB))
    E = random_spd(rng, 3)  # PSD direction: A + t E stays PSD for t >= 0
    h = 1e-6
    fd = (-3 * cost(A, B) + 4 * cost(A + h * E, B) - cost(A + 2 * h * E, B)) / (2 * h)
    np.testing.assert_allclose(np.sum(gA * E), fd, rtol=1e-6)

    # the plan too (C's derivative is a Sylvester solve, finite where sqrtm(Bt)'s is not)
    Wt = rng.normal(size=(6, 6))

    def plan(A, B):
        out = run(A, B)
        return jnp.sum(Wt * out.plan.cov) + out.plan.mass + jnp.sum(out.plan.mean)

    pA, pB = jax.jit(jax.grad(plan, argnums=(0, 1)))(jnp.asarray(A), jnp.asarray(B))
    assert np.all(np.isfinite(pA)) and np.all(np.isfinite(pB))
    fd = (-3 * plan(A, B) + 4 * plan(A, B + h * E) - plan(A, B + 2 * h * E)) / (2 * h)
    np.testing.assert_allclose(np.sum(pB * E), fd, rtol=1e-6)


# ---------------------------------------------------------------- transformations
def _fn(ma, a, A, mb, b, B, eps, gam):
    out = gj.unbalanced_entropic_ot(
        gj.ScaledGaussian(ma, a, gj.sym(A), validate=False),
        gj.ScaledGaussian(mb, b, gj.sym(B), validate=False),
        eps,
        gam,
    )
    return out.cost, out.plan.mass, out.plan.mean, out.plan.cov


def _args(rng, d=2):
    a, b = _problem(rng, d, 1.4, 0.6)
    return (a.mass, a.mean, a.cov, b.mass, b.mean, b.cov, jnp.asarray(0.7), jnp.asarray(1.3))


def test_check_grads_every_input(rng):
    args = _args(rng)
    check_grads(jax.jit(_fn), args, order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_jit_vmap_float32(rng):
    batch = [_args(rng) for _ in range(3)]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *batch)
    eager = [_fn(*x) for x in batch]
    batched = jax.jit(jax.vmap(_fn))(*stacked)
    for i, ref in enumerate(eager):
        for r, bt in zip(ref, batched):
            np.testing.assert_allclose(bt[i], r, rtol=1e-12, atol=1e-13)
    f32 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), batch[0])
    out32 = _fn(*f32)
    for r, x in zip(eager[0], out32):
        assert x.dtype == jnp.float32
        np.testing.assert_allclose(x, r, rtol=tol(jnp.float32), atol=tol(jnp.float32))


# ---------------------------------------------------------------- bad input
def test_bad_inputs(rng):
    a, b = _problem(rng, 2)
    f = gj.unbalanced_entropic_ot
    for eps, gam, what in [(0.0, 1.0, "epsilon"), (-1.0, 1.0, "epsilon"), (1.0, 0.0, "gamma"),
                           (1.0, -2.0, "gamma"), (np.nan, 1.0, "epsilon"),
                           (np.ones(2), 1.0, "epsilon"), (1.0, np.ones(2), "gamma")]:  # fmt: skip
        with pytest.raises(ValueError, match=what):
            f(a, b, eps, gam)
    for mass in (0.0, -1.0):
        with pytest.raises(ValueError, match="mass"):
            gj.ScaledGaussian(mass, a.mean, a.cov)
        bad = gj.ScaledGaussian(mass, a.mean, a.cov, validate=False)
        with pytest.raises(ValueError, match="a.mass"):
            f(bad, b, 1.0, 1.0)
    with pytest.raises(ValueError, match="dimensions differ"):
        f(a, gj.ScaledGaussian(1.0, np.zeros(3), np.eye(3)), 1.0, 1.0)
    with pytest.raises(ValueError, match="ScaledGaussian"):
        f(a.normalized, b, 1.0, 1.0)
    batched = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), b)
    with pytest.raises(ValueError, match="single"):
        f(a, batched, 1.0, 1.0)
    not_psd = gj.ScaledGaussian(1.0, np.zeros(2), np.diag([1.0, -1.0]), validate=False)
    with pytest.raises(ValueError, match="b.cov"):
        f(a, not_psd, 1.0, 1.0)
    # the only non-finite case: float range (masses' product overflows float64)
    huge = gj.ScaledGaussian(1e300, a.mean, a.cov)
    with pytest.raises(ValueError, match="outside the range"):
        f(huge, gj.ScaledGaussian(1e300, b.mean, b.cov), 1.0, 1.0)


def test_example_runs(tmp_path):
    subprocess.run(
        [sys.executable, "examples/unbalanced_mass.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    assert (tmp_path / "unbalanced_mass.png").stat().st_size > 1000


# ---------------------------------------------------------------- the tangent solve of C
# C = (At Bt/tau + sigma^4/4 I)^{1/2} - sigma^2/2 I has its derivative from the Sylvester
# equation S dC + dC S = R, S = C + sigma^2/2 I, solved in closed form (O(d^3)). The
# oracle is the rule it replaced: the dense d^2 x d^2 Kronecker solve. Both solve one
# linear system L x = r of size n = d^2; a backward error of n eps in either gives the
# forward error bound n eps cond(L) (the closed form is a product of O(1) factors whose
# round-off is of that size too), so the tolerance is 8 n eps cond(L), cond(L) computed.
def sym(X):
    return 0.5 * (X + X.T)


def _psd_of_rank(rng, d, rank, scale):
    X = rng.normal(size=(d, rank))
    return scale * X @ X.T / max(rank, 1)


def _dense_cross_tangent(At, Bt, sigma2, tau, dAt, dBt, dsigma2, dtau):
    from gaussot_jax.unbalanced import _cross

    d = At.shape[0]
    eye = np.eye(d)
    C = np.asarray(_cross(At, Bt, sigma2, tau))
    rhs = (dAt @ Bt + At @ dBt) / tau - (dtau / tau**2) * (At @ Bt) - dsigma2 * C
    S = C + 0.5 * sigma2 * eye
    L = np.kron(S, eye) + np.kron(eye, S.T)  # row-major vec(S X + X S)
    return np.linalg.solve(L, rhs.reshape(-1)).reshape(d, d), np.linalg.cond(L)


@jax.jit
def _cross_jvp(primals, tangents):
    from gaussot_jax.unbalanced import _cross

    return jax.jvp(_cross, primals, tangents)


@jax.jit
def _cross_pairing_grad(ct, *primals):
    from gaussot_jax.unbalanced import _cross

    return jax.grad(lambda *p: jnp.sum(ct * _cross(*p)), argnums=(0, 1, 2, 3))(*primals)


@pytest.mark.parametrize(
    "d, rank_a, rank_b",
    [(2, 2, 2), (3, 1, 1), (3, 3, 0), (4, 4, 2), (5, 2, 3), (6, 6, 6), (6, 3, 3)],
)
def test_cross_tangent_matches_dense_sylvester_solve(rng, d, rank_a, rank_b):
    eps, gam = 0.6, 1.4
    sigma2, lam, tau = eps / 2, (eps + gam) / 2, gam / (gam + eps)
    # At = (gam/2) A (A + lam)^{-1} has eigenvalues in [0, gam/2)
    At, Bt = (
        0.5 * gam * A @ np.linalg.inv(A + lam * np.eye(d))
        for A in (_psd_of_rank(rng, d, rank_a, 2.0), _psd_of_rank(rng, d, rank_b, 0.7))
    )
    At, Bt = (0.5 * (X + X.T) for X in (At, Bt))
    sym_dir = lambda: (lambda X: X + X.T)(rng.normal(size=(d, d)))  # noqa: E731
    tangents = (sym_dir(), sym_dir(), 0.3, -0.2)
    primals = (At, Bt, sigma2, tau)
    want, cond = _dense_cross_tangent(*primals, *tangents)
    bound = 8 * d * d * np.finfo(np.float64).eps * cond * np.abs(want).max()

    jp, jt = tuple(map(jnp.asarray, primals)), tuple(map(jnp.asarray, tangents))
    # jvp and grad each jitted once (module level): one program per d, not one per op
    C, dC = _cross_jvp(jp, jt)
    np.testing.assert_allclose(dC, want, rtol=0, atol=bound)
    # reverse mode is the transpose of the same rule: <ct, dC> = sum_i <grad_i, t_i>
    ct = rng.normal(size=(d, d))
    grads = _cross_pairing_grad(jnp.asarray(ct), *jp)
    pairing = sum(float(jnp.sum(g * t)) for g, t in zip(grads, jt))
    np.testing.assert_allclose(pairing, np.sum(ct * want), rtol=0, atol=bound * np.abs(ct).sum())


def test_cross_second_order_exact_at_rank_deficient(rng):
    # Rank-1 At and Bt (d = 3, repeated zero eigenvalues): C is analytic in At Bt there, so
    # its second derivative is finite; the jvp-of-jvp (which differentiates the tangent
    # solve's matvec, never an eigendecomposition) must match one-sided differences of
    # the first derivative along PSD directions (At + h E stays PSD for h >= 0).
    from gaussot_jax.unbalanced import _cross

    d, sigma2, tau = 3, jnp.asarray(0.3), jnp.asarray(0.7)
    At, Bt = (jnp.asarray(_psd_of_rank(rng, d, 1, 0.4)) for _ in range(2))
    E, G = (jnp.asarray(_psd_of_rank(rng, d, d, 0.5)) for _ in range(2))

    def first(At, Bt):  # d C [E, G]
        return jax.jvp(lambda a, b: _cross(a, b, sigma2, tau), (At, Bt), (E, G))[1]

    second = jax.jvp(first, (At, Bt), (E, G))[1]
    assert np.all(np.isfinite(second))
    h = 1e-5
    f0, f1, f2 = (first(At + t * E, Bt + t * G) for t in (0.0, h, 2 * h))
    fd = (-3 * f0 + 4 * f1 - f2) / (2 * h)
    # one-sided 3-point rule: error O(h^2 |d^3 C|) + eps |dC| / h, ~1e-10 at these scales
    np.testing.assert_allclose(second, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def _plan_scalar(d, rng):
    P = jnp.asarray(rng.normal(size=(2 * d, 2 * d)))
    v = jnp.asarray(rng.normal(size=2 * d))
    mean_a, mean_b = (jnp.asarray(rng.normal(size=d)) for _ in range(2))

    def f(A, B, eps, gam):
        out = gj.unbalanced_entropic_ot(
            gj.ScaledGaussian(1.2, mean_a, A, validate=False),
            gj.ScaledGaussian(0.8, mean_b, B, validate=False),
            eps,
            gam,
        )
        return jnp.sum(P * out.plan.cov) + out.plan.mass + v @ out.plan.mean

    return f


def test_plan_derivatives_match_central_differences(rng):
    # forward, reverse and second order of a scalar of the whole plan, every input,
    # against central differences (error O(h^2) + eps/h: ~1e-10 relative at h = 1e-5)
    d = 4
    f = _plan_scalar(d, rng)
    args = (jnp.asarray(random_spd(rng, d, 5.0)), jnp.asarray(0.7 * random_spd(rng, d, 5.0)),
            jnp.asarray(0.6), jnp.asarray(1.4))  # fmt: skip
    dirs = (jnp.asarray(sym(rng.normal(size=(d, d)))), jnp.asarray(sym(rng.normal(size=(d, d)))),
            jnp.asarray(0.3), jnp.asarray(-0.5))  # fmt: skip
    h = 1e-5
    # Two programs: value_and_grad (the reverse derivative, and the values and gradients
    # the central differences need) and its jvp, whose tangent is the forward derivative
    # of the value and the Hessian-vector product (jvp of grad) together.
    vg = jax.value_and_grad(f, argnums=(0, 1, 2, 3))
    vg_j = jax.jit(vg)
    shift = lambda s: [a + s * v for a, v in zip(args, dirs)]  # noqa: E731
    (fp, gp_all), (fm, gm_all) = vg_j(*shift(h)), vg_j(*shift(-h))
    fd = (fp - fm) / (2 * h)
    _, grads = vg_j(*args)
    fwd, hvp = jax.jit(lambda *a: jax.jvp(vg, a, dirs)[1])(*args)
    rev = sum(jnp.sum(g * v) for g, v in zip(grads, dirs))
    np.testing.assert_allclose(fwd, fd, rtol=1e-7)
    np.testing.assert_allclose(rev, fd, rtol=1e-7)
    # Hessian-vector product (jvp of grad) against central differences of the gradient
    for hv, gp, gm in zip(hvp, gp_all, gm_all):
        fdh = (gp - gm) / (2 * h)
        np.testing.assert_allclose(hv, fdh, rtol=1e-6, atol=1e-6 * np.abs(fdh).max())


def test_plan_gradient_runs_at_d256(rng):
    # The dense rule needed a (d^2 x d^2) = 34 GB matrix here; the closed form is O(d^3).
    # value_and_grad must be finite and its directional derivative match a central
    # difference (h = 1e-5: truncation ~1e-10, round-off eps |f| / h ~1e-8 absolute).
    d = 256
    f = _plan_scalar(d, rng)
    A, B = jnp.asarray(random_spd(rng, d, 10.0)), jnp.asarray(0.5 * random_spd(rng, d, 10.0))
    eps, gam = jnp.asarray(0.5), jnp.asarray(1.0)
    vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
    value, (gA, gB) = vg(A, B, eps, gam)
    assert np.isfinite(value) and np.all(np.isfinite(gA)) and np.all(np.isfinite(gB))
    E = jnp.asarray(sym(rng.normal(size=(d, d)))) / np.sqrt(d)
    h = 1e-5
    fl = lambda *a: vg(*a)[0]  # noqa: E731  (the same program: no second compile at d = 256)
    fd = (fl(A + h * E, B - h * E, eps, gam) - fl(A - h * E, B + h * E, eps, gam)) / (2 * h)
    np.testing.assert_allclose(jnp.sum(gA * E) - jnp.sum(gB * E), fd, rtol=1e-6)
