"""LowRankGaussian: closed forms by the joint-subspace reduction (MATH.md §8).

Oracles, independent of the reduction: the dense closed forms on ``to_dense()``, analytic
values for commuting covariances (a shared orthonormal basis), POT's
``ot.gaussian.bures_wasserstein_distance_hd`` (which forms the p x p matrices), a NumPy
probabilistic-PCA fit, SciPy's multivariate normal density, and central differences.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
import scipy.stats
from conftest import assert_close, eig_backward_error, tol

import gaussot_jax as gj

_RUNTIME = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError, ValueError, RuntimeError)
EPS, GAMMA = 0.7, 1.5

# Both sides are backward-stable float64 computations of well-conditioned quantities
# (covariance condition numbers <= ~1e3 here, d <= 500): relative error ~ d cond eps ~ 1e-11.
TOL_DENSE = 1e-10


def _lr(rng, d, k, noise, mean_scale=1.0):
    return gj.LowRankGaussian(mean_scale * rng.normal(size=d), rng.normal(size=(d, k)), noise)


# (k_a, k_b, s_a, s_b): generic; rank-0 one side; both isotropic; noise -> 0 on both sides
# (rank-deficient, rank k); noise 0 on one side; k_a + k_b > d is covered separately.
# test_commuting_analytic and test_w2_against_pot_hd use the generic case's shapes (its
# compiled kernels). The noise-0 pair keeps k_a = k_b: with ranks 3 and 5 the dense W2
# oracle at two singular covariances is only ~1e-9 accurate (exceeds TOL_DENSE).
CASES = [(3, 5, 0.5, 1.3), (0, 4, 0.7, 0.2), (0, 0, 0.3, 0.9), (4, 4, 0.0, 0.0), (3, 0, 0.0, 0.5)]


def _scaled(g, m):
    return gj.ScaledGaussian(m, g.mean, g.cov)


# d = 500 for the generic and the rank-deficient case (the dense side is O(d^3), slow here).
DENSE_PAIRS = [(200, c) for c in CASES] + [(500, CASES[0]), (500, CASES[3])]


@pytest.mark.parametrize("d, case", DENSE_PAIRS)
def test_closed_forms_equal_dense(rng, d, case):
    ka, kb, sa, sb = case
    mu, nu = _lr(rng, d, ka, sa), _lr(rng, d, kb, sb)
    dm, dn = mu.to_dense(), nu.to_dense()
    if (sa == 0) == (sb == 0):
        # W2 with one singular and one regular covariance is not a well-conditioned dense
        # computation (square roots of ~d eps |A| |B| spurious eigenvalues: ~1e-3 at d = 200);
        # test_commuting_analytic checks that case against exact values instead.
        assert_close(gj.bures_wasserstein2(mu, nu), gj.bures_wasserstein2(dm, dn), TOL_DENSE)
    out, ref = gj.entropic_ot(mu, nu, EPS), gj.entropic_ot(dm, dn, EPS)
    assert_close(out.cost, ref.cost, TOL_DENSE)
    assert_close(out.cross_cov.to_dense(), ref.cross_cov, TOL_DENSE)
    assert_close(out.map_matrix.to_dense(), ref.entropic_map.matrix, TOL_DENSE)
    x = rng.normal(size=(2, 3, d))
    assert_close(out.entropic_map(x), jax.vmap(jax.vmap(ref.entropic_map))(x), TOL_DENSE)
    assert_close(out.cross_cov.apply(x), x @ np.asarray(ref.cross_cov).T, TOL_DENSE)
    assert_close(
        gj.sinkhorn_divergence(mu, nu, EPS), gj.sinkhorn_divergence(dm, dn, EPS), TOL_DENSE
    )
    # Unbalanced: means close enough that the transported mass is not negligible.
    mu2 = gj.LowRankGaussian(0.05 * mu.mean, mu.factor, mu.noise)
    u = gj.lowrank_unbalanced_entropic_ot(mu2, nu, EPS, GAMMA, masses=(2.0, 3.0))
    u_ref = gj.unbalanced_entropic_ot(_scaled(mu2.to_dense(), 2.0), _scaled(dn, 3.0), EPS, GAMMA)
    bound = _dense_log_mass_error(mu2.to_dense().cov, dn.cov, nu.mean - mu2.mean)
    np.testing.assert_allclose(u.log_mass, u_ref.log_mass, rtol=TOL_DENSE, atol=bound)
    # d cost / d log m = -(2 gamma + eps) m: the cost inherits the log-mass error times that.
    cost_bound = (2.0 * GAMMA + EPS) * float(np.exp(u_ref.log_mass)) * bound
    np.testing.assert_allclose(u.cost, u_ref.cost, rtol=TOL_DENSE, atol=cost_bound)


def _dense_log_mass_error(A, B, delta):
    """Round-off bound on the *dense* unbalanced ``log m`` (the low-rank side is r x r).

    The dense side is backward stable: each d x d factorisation (Cholesky of
    ``X = A + B + lam I``, eigh of ``A``, ``B``, ``A + B`` and of the reduced matrices
    in the trace term) is exact for a perturbation of norm ``<= p eps ||.||_2``
    (``p eps = eig_backward_error``). ``logdet(I + M / lam) = sum log1p(w_i / lam)`` has
    ``d/dw_i <= 1 / lam``, so each of its ``d`` eigenvalues moves it by
    ``<= p eps ||M|| / lam``: four such sums, ``||M|| <= ||A|| + ||B||``. The mean term
    ``delta^T X^{-1} delta`` moves by ``<= cond(X) p eps`` relative.
    """
    A, B, delta = (np.asarray(x, np.float64) for x in (A, B, delta))
    d = A.shape[-1]
    p = eig_backward_error(d, np.float64)
    lam = 0.5 * (EPS + GAMMA)
    X = A + B + lam * np.eye(d)
    quad = float(delta @ np.linalg.solve(X, delta))
    norm = np.linalg.norm(A, 2) + np.linalg.norm(B, 2)
    return p * (np.linalg.cond(X) * quad + 4.0 * d * norm / lam)


def test_more_columns_than_dimensions(rng):
    mu, nu = _lr(rng, 5, 4, 0.3), _lr(rng, 5, 3, 0.1)
    dm, dn = mu.to_dense(), nu.to_dense()
    assert_close(gj.bures_wasserstein2(mu, nu), gj.bures_wasserstein2(dm, dn), TOL_DENSE)
    assert_close(gj.entropic_ot(mu, nu, EPS).cost, gj.entropic_ot(dm, dn, EPS).cost, TOL_DENSE)


def _commuting(rng, d, ka, k, sa, sb, zero_column):
    """Covariances with one orthonormal basis: eigenvalues known, W2/OT per eigenvalue.

    ``nu`` has ``k`` factor columns, ``mu`` the first ``ka <= k`` (its eigenvalues on the
    other ``k - ka`` basis vectors are its noise alone)."""
    Q, _ = np.linalg.qr(rng.normal(size=(d, k)))
    la, lb = rng.uniform(0.5, 4.0, k), rng.uniform(0.5, 4.0, k)
    la[ka:] = 0.0
    if zero_column:
        la[0] = lb[1] = 0.0  # a zero factor column: rank-deficient factor
    a, b = rng.normal(size=d), rng.normal(size=d)
    mu = gj.LowRankGaussian(a, Q[:, :ka] * np.sqrt(la[:ka]), sa)
    nu = gj.LowRankGaussian(b, Q[:, ::-1] * np.sqrt(lb[::-1]), sb)  # columns permuted
    ea = np.concatenate([la + sa, np.full(d - k, sa)])
    eb = np.concatenate([lb + sb, np.full(d - k, sb)])
    return mu, nu, ea, eb, np.sum((a - b) ** 2)


def _ot_1d(x, y, eps):
    # 1-D [JMPC20]: x + y + (eps/2) [log((1 + s)/2) - (s - 1)], s = sqrt(1 + 16 x y / eps^2).
    s = np.sqrt(1.0 + 16.0 * x * y / eps**2)
    return x + y + 0.5 * eps * (np.log1p((s - 1.0) / 2.0) - (s - 1.0))


@pytest.mark.parametrize("d", [200, 100_000])
@pytest.mark.parametrize("noise", [(0.4, 1.1), (0.0, 0.6), (0.0, 0.0)])
def test_commuting_analytic(rng, d, noise):
    """Analytic values, also at d = 1e5 (a dense d x d float64 matrix there: 80 GB).

    k_a, k_b = 3, 5 on one basis: the shapes of CASES[0] (d = 200) and of
    test_potentials_dual_value_and_schrodinger_system at d = 1e5, whose kernels it reuses."""
    sa, sb = noise
    # W2 at a singular reduced covariance (a zero column with zero noise) is the dense W2
    # at a singular argument: square roots of round-off-sized eigenvalues, ~sqrt(eps)
    # accurate only; the entropic values are smooth there and are checked with it.
    mu, nu, ea, eb, m2 = _commuting(rng, d, 3, 5, sa, sb, zero_column=False)
    w2 = m2 + np.sum((np.sqrt(ea) - np.sqrt(eb)) ** 2)
    assert_close(gj.bures_wasserstein2(mu, nu), w2, TOL_DENSE)
    mu, nu, ea, eb, m2 = _commuting(rng, d, 3, 5, sa, sb, zero_column=True)
    ot_ = m2 + np.sum(_ot_1d(ea, eb, EPS))
    assert_close(gj.entropic_ot(mu, nu, EPS).cost, ot_, TOL_DENSE)
    sd = ot_ - 0.5 * (m2 * 0 + np.sum(_ot_1d(ea, ea, EPS)) + np.sum(_ot_1d(eb, eb, EPS)))
    assert_close(gj.sinkhorn_divergence(mu, nu, EPS), sd, TOL_DENSE)


def test_large_d_value_and_grad(rng):
    """d = 1e5, k = 16 + 16: jitted value_and_grad of all three losses finishes, is finite."""
    d = 100_000
    mu, nu = _lr(rng, d, 16, 0.5), _lr(rng, d, 16, 0.8)

    @jax.jit
    def losses(mu, nu):
        return (
            gj.bures_wasserstein2(mu, nu)
            + gj.entropic_ot(mu, nu, EPS).cost
            + gj.sinkhorn_divergence(mu, nu, EPS)
        )

    v, g = jax.value_and_grad(losses)(mu, nu)
    assert np.isfinite(float(v))
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(g))
    # the mean gradient of ||a - b||^2 (x3 losses) is 6 (a - b) exactly
    assert_close(g.mean, 6.0 * (mu.mean - nu.mean), 1e-12)


def test_w2_against_pot_hd(rng):
    d = 200  # and k = 3, 5: the shapes of CASES[0] (its compiled W2 kernel)
    out = []
    for k, s2 in ((3, 0.4), (5, 1.2)):
        Q, _ = np.linalg.qr(rng.normal(size=(d, k)))
        lam = rng.uniform(0.5, 5.0, k)
        out.append((rng.normal(size=d), Q, lam, s2))
    (ms, Us, ls, ss), (mt, Ut, lt, st) = out
    W = ot.gaussian.bures_wasserstein_distance_hd(
        ms, mt, Us, Ut, ls, lt, np.array([ss]), np.array([st])
    )
    mu = gj.LowRankGaussian(ms, Us * np.sqrt(ls), ss)
    nu = gj.LowRankGaussian(mt, Ut * np.sqrt(lt), st)
    assert_close(gj.bures_wasserstein2(mu, nu), float(np.squeeze(W)) ** 2, TOL_DENSE)


def _numpy_ppca(x, k):
    """Tipping & Bishop (1999) ML fit from the d x d sample covariance (NumPy, eigh)."""
    n, d = x.shape
    m = x.mean(0)
    S = (x - m).T @ (x - m) / n
    w, V = np.linalg.eigh(S)
    w, V = w[::-1], V[:, ::-1]
    noise = w[k:].mean()
    return m, V[:, :k] * np.sqrt(w[:k] - noise), noise


@pytest.mark.parametrize("n, d, k", [(40, 300, 5), (500, 60, 4), (30, 50, 0)])
def test_from_samples_against_numpy_ppca(rng, n, d, k):
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + rng.normal(size=d)
    lr = gj.LowRankGaussian.from_samples(jnp.asarray(x), k)
    m, U, s = _numpy_ppca(x, k)
    assert lr.factor.shape == (d, k)
    assert_close(lr.mean, m, 1e-12)
    assert_close(lr.noise, s, 1e-10)
    # The factor is defined up to a rotation on the right (and signs): compare U U^T.
    assert_close(lr.factor @ lr.factor.T, U @ U.T, 1e-9)


def test_from_samples_rejects_bad_rank(rng):
    x = rng.normal(size=(10, 6))
    for rank in (6, 11, -1, 2.0):
        with pytest.raises(ValueError, match="rank"):
            gj.LowRankGaussian.from_samples(x, rank)


@pytest.mark.parametrize("k", [0, 4])
def test_log_prob_against_scipy(rng, k):
    d = 200
    lr = _lr(rng, d, k, 0.6)
    x = np.asarray(lr.mean) + rng.normal(size=(3, 2, d))
    ref = scipy.stats.multivariate_normal(np.asarray(lr.mean), np.asarray(lr.to_dense().cov))
    assert_close(lr.log_prob(jnp.asarray(x)), ref.logpdf(x), 1e-11)


def test_sample_moments(rng, key):
    # Monte Carlo: n = 200000 samples; entries of the sample covariance have standard error
    # <= sqrt(2/n) max(Sigma_ii) ~ 0.003 * 3; 6 standard errors.
    lr = gj.LowRankGaussian(jnp.arange(3.0), jnp.array([[1.0], [0.5], [-1.0]]), 0.25)
    n = 200_000
    x = np.asarray(lr.sample(key, (n,)))
    cov = np.asarray(lr.to_dense().cov)
    se = np.sqrt(2.0 / n) * cov.diagonal().max()
    np.testing.assert_allclose(x.mean(0), np.arange(3.0), atol=6 * np.sqrt(cov.max() / n))
    np.testing.assert_allclose(np.cov(x.T, bias=True), cov, atol=6 * se)


# --- gradients --------------------------------------------------------------------------


def _loss_fns():
    return {
        "w2": gj.bures_wasserstein2,
        "ot": lambda a, b: gj.entropic_ot(a, b, EPS).cost,
        "sd": lambda a, b: gj.sinkhorn_divergence(a, b, EPS),
    }


def _grad_cases(rng, d):
    U, V = rng.normal(size=(d, 3)), rng.normal(size=(d, 2))
    Q, _ = np.linalg.qr(rng.normal(size=(d, 3)))
    return {
        "generic": (U, V, 0.5, 0.8),
        # U_b = U_a up to a zero column, the generic case's shapes (its compiled kernels):
        # identical covariances, [U_a, U_b] rank-deficient (rank 2 of 5).
        "identical_covariances": (np.concatenate([V, np.zeros((d, 1))], 1), V.copy(), 0.5, 0.5),
        "repeated_singular_values": (2 * Q, 2 * Q[:, :2], 0.3, 0.3),
        "rank0": (U, np.zeros((d, 0)), 0.4, 0.9),
        "noise0": (U, V, 0.0, 0.0),
    }


def _params_loss(fn):
    def loss(p):
        return fn(gj.LowRankGaussian(p[0], p[1], p[2]), gj.LowRankGaussian(p[3], p[4], p[5]))

    def dense_loss(p):
        mu = gj.LowRankGaussian(p[0], p[1], p[2]).to_dense()
        return fn(mu, gj.LowRankGaussian(p[3], p[4], p[5]).to_dense())

    return loss, dense_loss


# W2 is not differentiable at singular covariances (dense too): no (w2, noise0) pair.
GRAD_PAIRS = [
    (c, n)
    for c in _grad_cases(np.random.default_rng(0), 2)
    for n in _loss_fns()
    if (c, n) != ("noise0", "w2")
]


@functools.cache
def _jitted_loss(name):
    """``(jit(loss), jit(grad(loss)), dense_loss)``, one jit per loss for all the cases: the
    cases with equal shapes reuse the executables (a fresh jit per test compiles again)."""
    loss, dense_loss = _params_loss(_loss_fns()[name])
    return jax.jit(loss), jax.jit(jax.grad(loss)), dense_loss


@pytest.mark.parametrize("case, name", GRAD_PAIRS)
def test_gradients(rng, case, name):
    """Central differences along random directions, and the dense gradient via to_dense."""
    d = 40
    Ua, Ub, sa, sb = _grad_cases(rng, d)[case]
    p = [jnp.asarray(x) for x in (rng.normal(size=d), Ua, sa, rng.normal(size=d), Ub, sb)]
    loss, grad_loss, dense_loss = _jitted_loss(name)
    g = grad_loss(p)
    # Eager: the dense kernels' derivatives are compiled for the d x d shapes alone, once
    # per loss for all the cases (a jit of the whole dense loss would compile per case).
    g_dense = jax.grad(dense_loss)(p)
    for a, b in zip(g, g_dense):
        if np.size(b):
            assert_close(a, b, 1e-8)
    # Central differences, h = 1e-5: error <= h^2 |f'''| / 6 + eps |f| / h ~ 1e-9 relative.
    h = 1e-5
    for _ in range(2):
        t = [jnp.asarray(rng.normal(size=np.shape(x))) for x in p]
        if case == "noise0":
            t[2] = t[5] = jnp.zeros(())  # stay at noise 0 (noise < 0 is outside the domain)
        fp = loss([x + h * v for x, v in zip(p, t)])
        fm = loss([x - h * v for x, v in zip(p, t)])
        fd = (fp - fm) / (2 * h)
        an = sum(jnp.vdot(a, v) for a, v in zip(g, t))
        assert_close(an, fd, 1e-6)


@pytest.mark.parametrize("case", ["generic", "identical_covariances", "noise0"])
def test_unbalanced_gradients(rng, case):
    d = 30
    Ua, Ub, sa, sb = _grad_cases(rng, d)[case]
    p = [
        jnp.asarray(x)
        for x in (0.1 * rng.normal(size=d), Ua, sa, 0.1 * rng.normal(size=d), Ub, sb, 2.0, 3.0)
    ]

    def loss(p):
        mu, nu = gj.LowRankGaussian(p[0], p[1], p[2]), gj.LowRankGaussian(p[3], p[4], p[5])
        return gj.lowrank_unbalanced_entropic_ot(mu, nu, EPS, GAMMA, masses=(p[6], p[7])).cost

    def dense_loss(p):
        mu = gj.LowRankGaussian(p[0], p[1], p[2]).to_dense()
        nu = gj.LowRankGaussian(p[3], p[4], p[5]).to_dense()
        a, b = gj.ScaledGaussian(p[6], mu.mean, mu.cov), gj.ScaledGaussian(p[7], nu.mean, nu.cov)
        return gj.unbalanced_entropic_ot(a, b, EPS, GAMMA).cost

    assert float(abs(loss(p))) > 1.0  # the transported mass is not negligible
    g, g_dense = jax.grad(loss)(p), jax.grad(dense_loss)(p)
    for a, b in zip(g, g_dense):
        assert_close(a, b, 1e-8)
    h = 1e-5
    t = [jnp.asarray(rng.normal(size=np.shape(x))) for x in p]
    if case == "noise0":
        t[2] = t[5] = jnp.zeros(())
    fd = loss([x + h * v for x, v in zip(p, t)]) - loss([x - h * v for x, v in zip(p, t)])
    assert_close(sum(jnp.vdot(a, v) for a, v in zip(g, t)), fd / (2 * h), 1e-6)


# --- validation, mixed pairs, transformations --------------------------------------------


def test_validation_names_the_argument():
    d = 4
    with pytest.raises(ValueError, match="factor"):
        gj.LowRankGaussian(jnp.zeros(d), jnp.zeros((d + 1, 2)), 0.1)
    with pytest.raises(ValueError, match="noise must have"):
        gj.LowRankGaussian(jnp.zeros(d), jnp.zeros((d, 2)), jnp.ones(2))
    with pytest.raises(ValueError, match="noise must be >= 0"):
        gj.LowRankGaussian(jnp.zeros(d), jnp.zeros((d, 2)), -0.1)
    with pytest.raises(ValueError, match="factor contains NaN"):
        gj.LowRankGaussian(jnp.zeros(d), jnp.full((d, 2), jnp.nan), 0.1)
    with pytest.raises(ValueError, match="mean must have"):
        gj.LowRankGaussian(jnp.zeros(()), jnp.zeros((1, 2)), 0.1)
    mu = gj.LowRankGaussian(jnp.zeros(d), jnp.ones((d, 1)), 0.1)
    with pytest.raises(ValueError, match="dimensions differ"):
        gj.bures_wasserstein2(mu, gj.LowRankGaussian(jnp.zeros(3), jnp.ones((3, 1)), 0.1))
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        gj.entropic_ot(mu, mu, -1.0)
    with pytest.raises(ValueError, match="reference"):
        gj.entropic_ot(mu, mu, 1.0, reference=gj.Gaussian(jnp.zeros(2 * d), jnp.eye(2 * d)))
    batch = gj.LowRankGaussian(jnp.zeros((2, d)), jnp.ones((2, d, 1)), jnp.ones(2))
    with pytest.raises(ValueError, match="single"):
        gj.bures_wasserstein2(batch, batch)


def test_checked_under_jit():
    @jax.jit
    def f(noise):
        lr = gj.LowRankGaussian(jnp.zeros(3), jnp.ones((3, 1)), noise, validate=False)
        return lr.checked().noise

    assert float(f(jnp.array(0.5))) == 0.5
    with pytest.raises(_RUNTIME, match="noise must be >= 0"):
        f(jnp.array(-0.5))


def test_mixed_pairs(rng):
    d = 30
    lr, g = _lr(rng, d, 3, 0.4), gj.Gaussian(rng.normal(size=d), np.eye(d) * 0.7)
    assert_close(gj.bures_wasserstein2(lr, g), gj.bures_wasserstein2(lr.to_dense(), g), 1e-12)
    assert_close(gj.entropic_ot(g, lr, EPS).cost, gj.entropic_ot(g, lr.to_dense(), EPS).cost, 1e-12)
    d = gj.lowrank.MIXED_MAX_DIM + 1
    big = gj.LowRankGaussian(jnp.zeros(d), jnp.zeros((d, 1)), 1.0)
    with pytest.raises(ValueError, match="dense Gaussian"):
        gj.sinkhorn_divergence(big, gj.Gaussian(jnp.zeros(d), jnp.eye(d), validate=False), EPS)


def test_vmap_jit_float32(rng):
    d, n = 50, 3
    mus = [_lr(rng, d, 2, 0.5) for _ in range(n)]
    nus = [_lr(rng, d, 3, 0.3) for _ in range(n)]
    stack = lambda gs: jax.tree_util.tree_map(lambda *x: jnp.stack(x), *gs)  # noqa: E731
    f = jax.jit(jax.vmap(lambda a, b: gj.sinkhorn_divergence(a, b, EPS)))
    ref = np.array([float(gj.sinkhorn_divergence(a, b, EPS)) for a, b in zip(mus, nus)])
    assert_close(f(stack(mus), stack(nus)), ref, 1e-12)
    cast = lambda g: jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), g)  # noqa: E731
    out32 = f(cast(stack(mus)), cast(stack(nus)))
    assert out32.dtype == jnp.float32
    assert_close(out32, ref, tol(jnp.float32))


# --- entropic plan and potentials, factored ----------------------------------------------


def _dense_entropic_error(A, B, a, b, eps):
    """Round-off bounds on the *dense* [JMPC20] outputs (the low-rank side is ``r x r``).

    The dense side (``solve_coupling``) forms ``X = B^{1/2}`` and ``M = phi(H)``,
    ``H = X G X``, ``G = w^2 A``, ``w = 2 / eps``, ``phi(h) = 2 / (1 + (1 + 4h)^{1/2})``, by
    two backward-stable eigendecompositions: the computed ``S = X M X`` is exact for ``B``
    and ``H`` perturbed by ``p ||B||``, ``p ||H||`` (``p eps = eig_backward_error``). ``1 -
    phi`` is operator monotone with slope ``<= 1``, so ``||dM||_2 <= ||dH||_2``; with
    ``||M|| <= 1`` and ``||H|| <= h = w^2 ||A|| ||B||`` (``B -> S`` has slope ``<= 1 + h``),
    ``||dS||_2 <= 4 p ||B|| (1 + h)`` (4: the two factorisations and the products). Then
    ``T = w S``, ``C = w A S``, the potentials' Hessians ``2 I - eps W S W^T = 2 (I - T)``
    inherit it, and ``KL = -1/2 logdet M`` moves by ``<= d p h / 2 * max(1 / phi) / 2``.
    Returns ``(S, T, C, quad, const)`` bounds: spectral norms, which bound every entry.
    """
    A, B, a, b = (np.asarray(x, np.float64) for x in (A, B, a, b))
    d = A.shape[-1]
    p = eig_backward_error(d, np.float64)
    w = 2.0 / eps
    nA, nB = np.linalg.norm(A, 2), np.linalg.norm(B, 2)
    h = w**2 * nA * nB
    err_S = 4.0 * p * nB * (1.0 + h)
    err_T = w * err_S
    err_C = w * nA * err_S + p * w * nA * nB
    err_kl = d * p * h * (1.0 + np.sqrt(1.0 + 4.0 * h)) / 4.0
    # const = eps KL / 2 + a^T b - (eps/2) a^T P a, P = w T: the last moves by ||a||^2 err_T
    err_const = 0.5 * eps * err_kl + max(a @ a, b @ b) * err_T + p * abs(a @ b)
    return err_S, err_T, err_C, 2.0 * err_T, err_const


def _check_bound(name, got, want, bound, ratios):
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    ratios[name] = err / bound
    assert err <= bound, f"{name}: error {err:.3g} > bound {bound:.3g}"


@pytest.mark.parametrize("d, case", DENSE_PAIRS)
def test_plan_and_potentials_equal_dense(rng, d, case):
    """Plan blocks, potentials (values at points too) and map against the dense result."""
    ka, kb, sa, sb = case
    mu, nu = _lr(rng, d, ka, sa), _lr(rng, d, kb, sb)
    dm, dn = mu.to_dense(), nu.to_dense()
    out, ref = gj.entropic_ot(mu, nu, EPS), gj.entropic_ot(dm, dn, EPS)
    _, err_T, err_C, err_quad, err_const = _dense_entropic_error(
        dm.cov, dn.cov, mu.mean, nu.mean, EPS
    )
    ratios = {}
    plan = out.plan.to_dense()
    np.testing.assert_array_equal(plan.mean, ref.plan.mean)
    _check_bound("plan.cov", plan.cov, ref.plan.cov, err_C, ratios)
    _check_bound("cross_cov", out.plan.cross_cov.to_dense(), ref.cross_cov, err_C, ratios)
    T = out.transport_map
    _check_bound("map.matrix", T.matrix.to_dense(), ref.transport_map.matrix, err_T, ratios)
    scale_ab = np.linalg.norm(mu.mean) + np.linalg.norm(nu.mean)
    _check_bound("map.offset", T.offset, ref.transport_map.offset, err_T * scale_ab, ratios)
    x = np.asarray(mu.mean) + rng.normal(size=(3, d))
    _check_bound("map(x)", T(x), ref.transport_map(x), err_T * 2 * scale_ab, ratios)
    for name, pot, pref, c in zip("fg", out.potentials, ref.potentials, (mu.mean, nu.mean)):
        dp = pot.to_dense()
        _check_bound(f"{name}.quad", dp.quad, pref.quad, err_quad, ratios)
        _check_bound(f"{name}.lin", dp.lin, pref.lin, err_quad * scale_ab, ratios)
        _check_bound(f"{name}.const", dp.const, pref.const, err_const, ratios)
        pts = np.asarray(c) + rng.normal(size=(2, 2, d))
        r2 = float(np.max(np.sum((pts - np.asarray(c)) ** 2, -1)))
        bound = err_const + err_quad * (r2 / 2 + scale_ab * np.sqrt(r2) + scale_ab**2)
        _check_bound(f"{name}(x)", pot(pts), jax.vmap(jax.vmap(pref))(pts), bound, ratios)
    print(f"d={d} case={case}: max error/bound", {k: f"{v:.1e}" for k, v in ratios.items()})


@pytest.mark.parametrize("d, case", [(200, c) for c in CASES] + [(100_000, CASES[0])])
def test_potentials_dual_value_and_schrodinger_system(rng, d, case):
    """Independent checks in O(d r), also at d = 1e5: the marginals of the plan are mu and
    nu, ``E_mu f + E_nu g = cost`` (strong duality), and the plan's density is
    ``exp((f(x) + g(y) - ||x - y||^2) / eps)`` times ``mu(x) nu(y)`` (needs noise > 0).

    All three are computed from the low-rank objects alone, not from the dense closed
    form: they tie potentials, plan and cost together. Round-off: O(d r) sums of O(1)
    terms, relative 1e-10 at d = 1e5 (the plan's log-density is O(d))."""
    ka, kb, sa, sb = case
    mu, nu = _lr(rng, d, ka, sa), _lr(rng, d, kb, sb)
    # Eager: its jitted kernel is the one test_closed_forms_equal_dense compiled for these
    # shapes (d = 1e5: test_commuting_analytic's). Tracing the public function under a
    # user's jit is covered by test_large_d_value_and_grad and test_gradients.
    out = gj.entropic_ot(mu, nu, EPS)
    f, g = out.potentials
    dual = f.mean_under(mu) + g.mean_under(nu)
    assert_close(dual, out.cost, 1e-10)
    # Marginals: cov_x = A, cov_y = B, applied to probe vectors (O(d r)).
    v = rng.normal(size=(2, d))
    for cov, lr in ((out.plan.cov_x, mu), (out.plan.cov_y, nu)):
        want = (v @ np.asarray(lr.factor)) @ np.asarray(lr.factor).T + float(lr.noise) * v
        assert_close(cov.apply(v), want, 1e-10)
    if sa > 0 and sb > 0:
        key = jax.random.PRNGKey(1)
        z = out.plan.sample(key, (3,))
        x, y = z[:, :d], z[:, d:]
        lhs = out.plan.log_prob(z)
        rhs = (f(x) + g(y) - jnp.sum((x - y) ** 2, -1)) / EPS + mu.log_prob(x) + nu.log_prob(y)
        assert_close(lhs, rhs, 1e-10)


def test_plan_sample_moments_and_log_prob(rng, key):
    """Monte Carlo moments of LowRankPlan.sample; log_prob against SciPy (d = 6)."""
    d = 6
    mu, nu = _lr(rng, d, 2, 0.4), _lr(rng, d, 1, 0.3)
    plan = gj.entropic_ot(mu, nu, EPS).plan
    dense = plan.to_dense()
    n = 200_000
    z = np.asarray(plan.sample(key, (n,)))
    cov = np.asarray(dense.cov)
    se = np.sqrt(2.0 / n) * cov.diagonal().max()  # 6 standard errors, as test_sample_moments
    np.testing.assert_allclose(z.mean(0), dense.mean, atol=6 * np.sqrt(cov.max() / n))
    np.testing.assert_allclose(np.cov(z.T, bias=True), cov, atol=6 * se)
    pts = np.asarray(dense.mean) + rng.normal(size=(4, 2 * d))
    ref = scipy.stats.multivariate_normal(np.asarray(dense.mean), cov).logpdf(pts)
    assert_close(plan.log_prob(jnp.asarray(pts)), ref, 1e-11)


def test_factored_outputs_gradients(rng):
    """Gradients of factored outputs equal the dense ones (the basis and the core must be
    differentiated consistently: module docstring)."""
    d = 30
    mu, nu = _lr(rng, d, 3, 0.5), _lr(rng, d, 2, 0.8)
    W = jnp.asarray(rng.normal(size=(d, d)))
    x = jnp.asarray(rng.normal(size=(2, d)))

    def loss(U, V, dense):
        m, n = gj.LowRankGaussian(mu.mean, U, mu.noise), gj.LowRankGaussian(nu.mean, V, nu.noise)
        if dense:
            m, n = m.to_dense(), n.to_dense()
        out = gj.entropic_ot(m, n, EPS)
        C = out.cross_cov if dense else out.cross_cov.to_dense()
        f, g = out.potentials
        return jnp.sum(W * C) + jnp.sum(f(x)) + jnp.sum(g(x)) + jnp.sum(out.transport_map(x))

    g1 = jax.grad(loss, argnums=(0, 1))(mu.factor, nu.factor, False)
    g2 = jax.grad(loss, argnums=(0, 1))(mu.factor, nu.factor, True)
    for a, b in zip(g1, g2):
        assert_close(a, b, 1e-8)


# --- unbalanced: dispatch and the factored plan -------------------------------------------


@pytest.mark.parametrize("d, case", [(200, c) for c in CASES])
def test_unbalanced_dispatch_and_plan_equal_dense(rng, d, case):
    """gj.unbalanced_entropic_ot on ScaledLowRankGaussian / LowRankGaussian (mass 1) pairs
    routes to the low-rank path; value, mass and factored plan equal the dense result.

    Tolerances: the log-mass as in test_closed_forms_equal_dense (_dense_log_mass_error);
    the plan's blocks are products of ``(I + C/lam)`` with ``A - A X^{-1} A`` and of the
    Cholesky solve with ``X = A + B + lam I`` (``cond(X)``), so relative ``p cond(X)`` times
    the largest block, plus the cross block's ``C`` (``_dense_entropic_error``'s ``C`` bound
    with ``W = w I`` as for the core solver, ``w = 1/(sigma^2 tau^{1/2})`` on ``At, Bt``,
    whose norms are ``< gamma/2``)."""
    ka, kb, sa, sb = case
    mu, nu = _lr(rng, d, ka, sa, mean_scale=0.05), _lr(rng, d, kb, sb, mean_scale=0.05)
    dm, dn = mu.to_dense(), nu.to_dense()
    for masses, (a, b) in (
        (
            (2.0, 3.0),
            (
                gj.ScaledLowRankGaussian(2.0, mu.mean, mu.factor, mu.noise),
                gj.ScaledLowRankGaussian(3.0, nu.mean, nu.factor, nu.noise),
            ),
        ),
        ((1.0, 1.0), (mu, nu)),
    ):
        out = gj.unbalanced_entropic_ot(a, b, EPS, GAMMA)
        assert isinstance(out, gj.LowRankUnbalancedOT)
        ref = gj.unbalanced_entropic_ot(_scaled(dm, masses[0]), _scaled(dn, masses[1]), EPS, GAMMA)
        bound = _dense_log_mass_error(dm.cov, dn.cov, nu.mean - mu.mean)
        np.testing.assert_allclose(out.log_mass, ref.log_mass, rtol=TOL_DENSE, atol=bound)
        cost_bound = (2.0 * GAMMA + EPS) * float(np.exp(ref.log_mass)) * bound
        np.testing.assert_allclose(out.cost, ref.cost, rtol=TOL_DENSE, atol=cost_bound)
        for got, want in zip(out.destroyed_mass, ref.destroyed_mass):
            np.testing.assert_allclose(got, want, atol=float(np.exp(ref.log_mass)) * bound)
        A, B = np.asarray(dm.cov), np.asarray(dn.cov)
        lam = 0.5 * (EPS + GAMMA)
        X = A + B + lam * np.eye(d)
        p = eig_backward_error(d, np.float64)
        tau = GAMMA / (GAMMA + EPS)
        w = 1.0 / (0.5 * EPS * np.sqrt(tau))
        h = w**2 * (GAMMA / 2) ** 2
        err_C = 4.0 * p * (GAMMA / 2) * (1.0 + h) * (w * GAMMA / 2 + 1.0) / np.sqrt(tau)
        scale = np.abs(np.asarray(ref.plan.cov)).max()
        plan_bound = p * np.linalg.cond(X) * scale * (1.0 + err_C / lam) + err_C
        dense_plan = out.plan.to_dense()
        err = np.abs(np.asarray(dense_plan.cov) - np.asarray(ref.plan.cov)).max()
        assert err <= plan_bound, (err, plan_bound)
        mean_bound = p * np.linalg.cond(X) * np.abs(np.asarray(ref.plan.mean)).max()
        np.testing.assert_allclose(dense_plan.mean, ref.plan.mean, rtol=0, atol=mean_bound)
        assert_close(out.cross_cov.to_dense(), ref.cross_cov, plan_bound)
        print(f"case={case} m={masses}: plan err/bound {err / plan_bound:.1e}")


def test_unbalanced_dispatch_validation_and_mixed(rng):
    d = 20
    lr = _lr(rng, d, 2, 0.5, mean_scale=0.1)
    dense = gj.ScaledGaussian(1.5, rng.normal(size=d) * 0.1, np.eye(d))
    out = gj.unbalanced_entropic_ot(lr, dense, EPS, GAMMA)  # mixed: dense path, small d
    ref = gj.unbalanced_entropic_ot(_scaled(lr.to_dense(), 1.0), dense, EPS, GAMMA)
    assert_close(out.cost, ref.cost, 1e-12)
    assert_close(out.plan.to_dense().cov, ref.plan.cov, 1e-12)
    with pytest.raises(ValueError, match="mass must be > 0"):
        gj.ScaledLowRankGaussian(-1.0, lr.mean, lr.factor, lr.noise)
    with pytest.raises(ValueError, match="b must be"):
        gj.unbalanced_entropic_ot(lr, gj.Gaussian(lr.mean, np.eye(d)), EPS, GAMMA)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        gj.unbalanced_entropic_ot(lr, lr, EPS, -1.0)
    # jit and grad through the dispatch
    f = jax.jit(lambda a, b: gj.unbalanced_entropic_ot(a, b, EPS, GAMMA).cost)
    assert_close(f(lr, lr), gj.unbalanced_entropic_ot(lr, lr, EPS, GAMMA).cost, 1e-12)
    g = jax.grad(lambda m: gj.unbalanced_entropic_ot(m, lr, EPS, GAMMA).plan.mean.sum())(lr)
    assert np.all(np.isfinite(g.factor))
