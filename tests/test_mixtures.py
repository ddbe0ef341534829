"""Gaussian mixtures: type, EM, mixture OT and barycenters against POT's ot.gmm and oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from conftest import assert_close, random_spd

import gaussot_jax as gj


def random_mixture(rng, k, d, spread=3.0):
    w = rng.random(k) + 0.1
    w /= w.sum()
    means = spread * rng.normal(size=(k, d))
    covs = np.stack([random_spd(rng, d, cond=5.0) * rng.uniform(0.3, 2.0) for _ in range(k)])
    return w, means, covs


def as_mixture(w, m, S):
    return gj.GaussianMixture(w, m, S)


# (k1, k2, d): 1..8 components (one component each, one against four, k1 > k2, k1 < k2,
# square), d = 1..5. The exact LP compiles once per (k1, k2): test_discrete_ot_exact_lp_
# against_emd reuses these shapes, and (1, 4) is test_discrete's one-row case.
CASES = [(1, 1, 1), (1, 4, 2), (7, 3, 3), (5, 5, 4), (6, 8, 5)]


@pytest.mark.parametrize("k1,k2,d", CASES)
def test_mixture_w2_and_plan_match_pot(k1, k2, d):
    rng = np.random.default_rng(100 * k1 + 10 * k2 + d)
    w1, m1, S1 = random_mixture(rng, k1, d)
    w2, m2, S2 = random_mixture(rng, k2, d)
    p, q = as_mixture(w1, m1, S1), as_mixture(w2, m2, S2)
    out = gj.mixture_ot(p, q)
    # POT: exact network simplex (ot.emd) on its own W2^2 matrix (scipy sqrtm).
    assert_close(out.cost, ot.gmm.gmm_ot_loss(m1, m2, S1, S2, w1, w2), 1e-9)
    assert_close(gj.mixture_wasserstein2(p, q), out.cost, 1e-12)
    plan = ot.gmm.gmm_ot_plan(m1, m2, S1, S2, w1, w2)
    np.testing.assert_allclose(out.plan, plan, atol=1e-9)
    assert_close(out.cost_matrix, ot.gmm.dist_bures_squared(m1, m2, S1, S2), 1e-9)
    # T_mean against POT's barycentric map, on points (n, d) and (..., d).
    x = rng.normal(size=(2, 5, d)) * 2
    ref = ot.gmm.gmm_ot_apply_map(x.reshape(-1, d), m1, m2, S1, S2, w1, w2, plan=plan)
    assert_close(out.map(x), ref.reshape(2, 5, d), 1e-9)


def test_discrete_ot_exact_lp_against_emd():
    # Random and degenerate (uniform weights: permutation optima) problems.
    # Four shapes, those of CASES (the solver compiles once per shape), three problems
    # each; on the square one uniform weights (trials 1 and 9) alternate with random ones.
    rng = np.random.default_rng(1)
    shapes = [(1, 4), (5, 5), (7, 3), (6, 8)]
    for trial in range(12):
        n, m = shapes[trial % 4]
        if n == m and trial % 8 < 4:
            a = b = np.full(n, 1.0 / n)
        else:
            a, b = rng.random(n) + 0.05, rng.random(m) + 0.05
            a, b = a / a.sum(), b / b.sum()
        C = 10 * rng.random((n, m))
        out = gj.discrete_ot(a, b, C)
        assert_close(out.cost, ot.emd2(a, b, C), 1e-12)
        P = np.asarray(out.plan)
        np.testing.assert_allclose(P.sum(1), a, atol=1e-14)
        np.testing.assert_allclose(P.sum(0), b, atol=1e-14)
        assert P.min() >= 0


@pytest.mark.parametrize("eps", [0.05, 1.0])
def test_entropic_discrete_cost_matches_pot_sinkhorn_log(eps):
    rng = np.random.default_rng(2)
    w1, m1, S1 = random_mixture(rng, 5, 2)
    w2, m2, S2 = random_mixture(rng, 4, 2)
    out = gj.mixture_ot(as_mixture(w1, m1, S1), as_mixture(w2, m2, S2), epsilon=eps)
    C = np.asarray(out.cost_matrix)
    # POT minimises <P, C> + eps sum P log P: the same plan as eps KL(P || a⊗b), whose
    # value differs by the constant eps (H(a) + H(b)) on Pi(a, b).
    P = ot.sinkhorn(w1, w2, C, eps, method="sinkhorn_log", stopThr=1e-14, numItermax=100000)
    ratio = np.where(P > 0, P, 1.0) / np.outer(w1, w2)
    value = np.sum(P * C) + eps * np.sum(P * np.log(ratio))
    # POT stops at marginal error 1e-14; the value then agrees to |C| * 1e-13.
    assert_close(out.cost, value, 1e-10)
    np.testing.assert_allclose(out.plan, P, atol=1e-10)


def central(fn, x, dx, h=1e-5):
    return (fn(x + h * dx) - fn(x - h * dx)) / (2 * h)


@pytest.mark.parametrize("epsilon,ceps", [(0.0, None), (0.3, None), (0.3, 0.2)])
def test_gradients_against_central_differences(epsilon, ceps):
    rng = np.random.default_rng(3)
    w1, m1, S1 = random_mixture(rng, 3, 2)
    w2, m2, S2 = random_mixture(rng, 4, 2)
    q = as_mixture(w2, m2, S2)

    def cost(w, m, S, eps):
        p = gj.GaussianMixture(w, m, S, validate=False)
        e = epsilon if epsilon == 0.0 else eps
        return gj.mixture_ot(p, q, epsilon=e, component_epsilon=ceps).cost

    # One program for the value and the gradient (the differences use its value).
    vg = jax.jit(jax.value_and_grad(cost, argnums=(0, 1, 2, 3)))
    f = lambda *args: vg(*args)[0]  # noqa: E731
    g = vg(w1, m1, S1, 0.3)[1]
    dm = rng.normal(size=m1.shape)
    dS = np.stack([random_spd(rng, 2) for _ in range(3)]) * 0.1
    dw = rng.normal(size=3)
    dw -= dw.mean()  # stay on the simplex
    # Central differences: O(h^2) truncation, O(eps_machine / h) round-off: ~1e-10. For
    # epsilon = 0 the value is piecewise linear in the weights and the weight gradient is
    # the simplex's exact dual f (a nondegenerate optimum: the step keeps the basis).
    fd_m = central(lambda t: f(w1, m1 + t, S1, 0.3), 0.0, dm)
    assert_close(np.sum(g[1] * dm), fd_m, 1e-7)
    fd_S = central(lambda t: f(w1, m1, S1 + t * dS, 0.3), 0.0, 1.0)
    assert_close(np.sum(g[2] * dS), fd_S, 1e-7)
    fd_w = central(lambda t: f(w1 + t * dw, m1, S1, 0.3), 0.0, 1.0)
    assert_close(np.sum(g[0] * dw), fd_w, 1e-7)
    if epsilon > 0:
        fd_e = central(lambda t: f(w1, m1, S1, 0.3 + t), 0.0, 1.0)
        assert_close(g[3], fd_e, 1e-7)


def test_one_component_each_is_the_gaussian_cost():
    rng = np.random.default_rng(4)
    for d in (1, 3):
        a, A = rng.normal(size=d), random_spd(rng, d)
        b, B = rng.normal(size=d), random_spd(rng, d)
        mu, nu = gj.Gaussian(a, A), gj.Gaussian(b, B)
        p = gj.GaussianMixture(np.ones(1), a[None], A[None])
        q = gj.GaussianMixture(np.ones(1), b[None], B[None])
        assert_close(gj.mixture_wasserstein2(p, q), gj.bures_wasserstein2(mu, nu), 1e-12)
        # One component each: P = 1 x 1 and KL(P || w_p ⊗ w_q) = 0 for any epsilon.
        out = gj.mixture_ot(p, q, epsilon=0.7, component_epsilon=0.3)
        assert_close(out.cost, gj.entropic_ot(mu, nu, 0.3).cost, 1e-12)
        deb = gj.mixture_ot(p, q, component_epsilon=0.3, debiased=True)
        assert_close(deb.cost, gj.sinkhorn_divergence(mu, nu, 0.3), 1e-12)
        # The map is then the Monge map of the pair.
        x = rng.normal(size=(4, d))
        T = gj.monge_map(mu, nu)
        assert_close(gj.mixture_ot(p, q).map(x), jax.vmap(T)(x), 1e-12)


def test_sample_map_follows_the_pair_law():
    # T_rand picks pair (i, j) with probability P_ij N_i(x) / p(x): with far-apart source
    # components, points near component i go to T_ij with frequency P_ij / w_i.
    covs = np.stack([np.eye(2) * 0.1] * 2)
    p = gj.GaussianMixture(np.array([0.5, 0.5]), np.array([[0.0, 0.0], [20.0, 0.0]]), covs)
    q = gj.GaussianMixture(np.array([0.25, 0.75]), np.array([[0.0, 5.0], [20.0, 5.0]]), covs)
    out = gj.mixture_ot(p, q)
    n = 4000
    x = np.zeros((n, 2))  # at component 0: goes to q_0 w.p. 0.5, to q_1 w.p. 0.5
    y = out.sample_map(jax.random.PRNGKey(0), x)
    frac = np.mean(np.asarray(y[:, 0]) < 10)
    assert abs(frac - 0.5) < 5 * np.sqrt(0.25 / n)  # 5 sigma of the binomial
    # Equal covariances: T_0j(x) = x + (n_j - m_0), so the images are (0, 5) and (20, 5).
    images = np.unique(np.round(np.asarray(y), 9), axis=0)
    assert_close(images, [[0.0, 5.0], [20.0, 5.0]], 1e-9)
    # T_mean is the average of the two images.
    assert_close(out.map(np.zeros(2)), [10.0, 5.0], 1e-9)
    # Density of the plan at (0, T_00(0)): P_00 N_0(0) = 0.25 / (2 pi sqrt(det 0.1 I)).
    dens = out.plan_density(np.zeros(2), np.array([0.0, 5.0]))
    assert_close(dens, 0.25 / (2 * np.pi * 0.1), 1e-9)


def test_gaussian_mixture_log_prob_sample_and_validation():
    rng = np.random.default_rng(5)
    w, m, S = random_mixture(rng, 4, 3)
    gm = as_mixture(w, m, S)
    assert (gm.dim, gm.num_components) == (3, 4)
    x = rng.normal(size=(2, 6, 3))
    ref = np.log(ot.gmm.gmm_pdf(x.reshape(-1, 3), m, S, w)).reshape(2, 6)
    assert_close(gm.log_prob(x), ref, 1e-12)
    n = 20000
    s = np.asarray(gm.sample(jax.random.PRNGKey(0), n))
    mean = w @ m
    cov = np.einsum("k,kij->ij", w, S + np.einsum("ki,kj->kij", m - mean, m - mean))
    # Monte Carlo: 5 standard errors of the sample mean.
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(s.mean(0) - mean) < 5 * se)
    with pytest.raises(ValueError, match="weights"):
        gj.GaussianMixture(np.array([0.5, 0.6]), m[:2], S[:2])
    with pytest.raises(ValueError, match="weights"):
        gj.GaussianMixture(np.array([1.5, -0.5]), m[:2], S[:2])
    with pytest.raises(ValueError, match="weights"):
        gj.GaussianMixture(np.ones(3) / 3, m[:2], S[:2])
    with pytest.raises(ValueError, match="covs"):
        gj.GaussianMixture(np.ones(2) / 2, m[:2], -S[:2])

    @jax.jit
    def f(w):
        return gj.GaussianMixture(w, m[:2], S[:2], validate=False).checked().weights

    f(jnp.array([0.5, 0.5]))
    with pytest.raises(Exception, match="sum to 1"):
        f(jnp.array([0.5, 0.7])).block_until_ready()


def test_fit_gmm_recovers_separated_mixture_and_is_monotone():
    rng = np.random.default_rng(6)
    w = np.array([0.2, 0.3, 0.5])
    m = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    S = np.stack([random_spd(rng, 2, 3.0) * 0.5 for _ in range(3)])
    n = 3000
    truth = as_mixture(w, m, S)
    x = np.asarray(truth.sample(jax.random.PRNGKey(1), n))
    gm, hist = gj.fit_gmm(jax.random.PRNGKey(2), x, 3, num_iters=30, return_history=True)
    order = np.argsort(np.asarray(gm.means)[:, 0] + 2 * np.asarray(gm.means)[:, 1])
    order_true = np.argsort(m[:, 0] + 2 * m[:, 1])
    fw, fm, fS = (np.asarray(a)[order] for a in (gm.weights, gm.means, gm.covs))
    # Monte Carlo accuracy of the MLE: 5 standard errors (weights sqrt(w(1-w)/n); means
    # sqrt(diag S / (n w))); components are 8 apart at standard deviation <= 1, so the
    # overlap bias is far below that.
    wt, mt, St = w[order_true], m[order_true], S[order_true]
    assert np.all(np.abs(fw - wt) < 5 * np.sqrt(wt * (1 - wt) / n))
    se = np.sqrt(np.diagonal(St, axis1=1, axis2=2) / (n * wt[:, None]))
    assert np.all(np.abs(fm - mt) < 5 * se)
    np.testing.assert_allclose(fS, St, atol=5 * np.sqrt(2 / (n * wt.min())) * St.max())
    h = np.asarray(hist)
    assert h.shape == (31,)
    # EM (MAP for the floor's penalty) never decreases the objective: up to round-off.
    assert np.all(np.diff(h) >= -1e-12 * np.abs(h).max())
    assert h[-1] >= h[0]
    # The history's last value is the objective of the returned mixture.
    ll = np.mean(np.asarray(gm.log_prob(x)))
    penalty = 0.5 * 1e-6 * np.sum(np.trace(np.linalg.inv(np.asarray(gm.covs)), axis1=1, axis2=2))
    assert_close(h[-1], ll - penalty, 1e-12)


def test_mixture_barycenter_matches_pot_and_is_differentiable():
    rng = np.random.default_rng(7)
    mixes = [random_mixture(rng, k, 2) for k in (3, 2)]
    lam = np.array([0.3, 0.7])
    m0, S0 = mixes[0][1].copy(), mixes[0][2].copy()
    init = gj.GaussianMixture(np.full(3, 1 / 3), m0, S0)
    bar = gj.mixture_barycenter([as_mixture(*t) for t in mixes], lam, init=init, num_iters=3)
    mr, Sr = ot.gmm.gmm_barycenter_fixed_point(
        [t[1] for t in mixes],
        [t[2] for t in mixes],
        [t[0] for t in mixes],
        m0.copy(),
        S0.copy(),
        lam,
        iterations=3,
    )
    # POT's inner Bures barycenter stops at a change of 1e-7 (ot.gaussian default eps);
    # ours at 1.8e-12: agreement to ~1e-6 relative.
    assert_close(bar.means, mr, 1e-6)
    assert_close(bar.covs, Sr, 1e-6)

    def loss(means0):
        ms = [gj.GaussianMixture(mixes[0][0], means0, mixes[0][2], validate=False)]
        ms += [as_mixture(*t) for t in mixes[1:]]
        b = gj.mixture_barycenter(ms, lam, init=init, num_iters=3)
        return jnp.sum(b.means**2) + jnp.sum(b.covs)

    g = jax.grad(loss)(mixes[0][1])
    dm = rng.normal(size=g.shape)
    assert_close(np.sum(g * dm), central(loss, mixes[0][1], dm), 1e-6)


def test_vmap_and_jit_over_mixtures():
    rng = np.random.default_rng(8)
    ws, ms, Ss = zip(*[random_mixture(rng, 3, 2) for _ in range(4)])
    q = as_mixture(*random_mixture(rng, 5, 2))
    batch = gj.GaussianMixture(np.stack(ws), np.stack(ms), np.stack(Ss))
    costs = jax.jit(jax.vmap(lambda p: gj.mixture_wasserstein2(p, q)))(batch)
    for i in range(4):
        ref = ot.gmm.gmm_ot_loss(
            ms[i], np.asarray(q.means), Ss[i], np.asarray(q.covs), ws[i], np.asarray(q.weights)
        )
        assert_close(costs[i], ref, 1e-9)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_zero_cost_matrix_is_finite(dtype):
    # C = 0 (identical one-component mixtures): every coupling is optimal, the value is 0;
    # the last epsilon of the scaling must stay a normal number (was 0 / 0 = NaN).
    p = gj.GaussianMixture(
        jnp.ones(1, dtype), jnp.zeros((1, 2), dtype), jnp.eye(2, dtype=dtype)[None]
    )
    assert float(gj.mixture_wasserstein2(p, p)) == 0.0
    # The LP at test_discrete's (30, 37) (compiled there in both dtypes).
    a, b = jnp.full(30, 1 / 30, dtype), jnp.full(37, 1 / 37, dtype)
    out = gj.discrete_ot(a, b, jnp.zeros((30, 37), dtype))
    assert np.all(np.isfinite(np.asarray(out.plan)))
    np.testing.assert_allclose(
        np.asarray(out.plan.sum(1)), np.asarray(a), rtol=10 * jnp.finfo(dtype).eps
    )
