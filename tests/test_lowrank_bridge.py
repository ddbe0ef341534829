"""Schrödinger bridges between LowRankGaussians with isotropic kernels (lowrank_bridge.py).

Oracles: the dense bridge on ``to_dense()`` (round-off bounds from the dense side's
backward error, as in test_lowrank.py), Gaussian Sinkhorn (IPF) iterated to convergence,
and the Schrödinger system ``bridge = exp(-U(x) - V(y)) eta(dx) K(x, dy)`` evaluated with
the low-rank densities alone (also at d = 1e5).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, eig_backward_error
from test_lowrank import _dense_entropic_error, _lr

import gaussot_jax as gj

B_K, T_K = 0.7, 0.9  # kernel N(alpha + b x, t I)
# (k_eta, k_mu, s_eta, s_mu); mu.noise > 0 (the bridge needs mu.cov positive definite)
CASES = [(3, 5, 0.5, 1.3), (0, 4, 0.7, 0.2), (0, 0, 0.3, 0.9), (3, 0, 0.0, 0.5), (4, 4, 0.0, 0.3)]


def _kernel(rng, d):
    return gj.IsotropicGaussianKernel(0.3 * rng.normal(size=d), B_K, T_K)


def _err(got, want):
    return float(np.max(np.abs(np.asarray(got) - np.asarray(want))))


@pytest.mark.parametrize("case", CASES)
def test_bridge_equals_dense(rng, case):
    """Every field against the dense bridge at d = 200, within the dense side's bound.

    The dense bridge is the core solver with ``W = (b/t) I``, i.e. the [JMPC20] solve with
    ``eps = 2t/b``: ``tau* = S``, ``beta* = w S``, ``C = w S1 S`` carry
    ``_dense_entropic_error``'s S, T, C bounds. ``V``'s Hessian ``tau*^{-1} - I/t`` moves by
    ``err_S / lambda_min(tau*)^2``; the KL by ``d err_S (1/t + 1/lambda_min(tau*) + 2 w
    ||S1|| ||D|| / t)`` (its trace, log-determinant and ``Tr(D S1 D^T)/t`` terms,
    ``D = beta* - b I``) plus the Cholesky solves' ``p cond(tau*)`` relative."""
    d = 200
    ka, kb, sa, sb = case
    eta, mu, K = _lr(rng, d, ka, sa), _lr(rng, d, kb, sb), _kernel(rng, d)
    br = gj.schrodinger_bridge(eta, mu, K)
    assert isinstance(br, gj.LowRankSchrodingerBridge)
    de, dm = eta.to_dense(), mu.to_dense()
    ref = gj.schrodinger_bridge(de, dm, K.to_dense())
    w = B_K / T_K
    err_S, err_T, err_C, _, _ = _dense_entropic_error(de.cov, dm.cov, eta.mean, mu.mean, 2 / w)
    tau_s = np.asarray(ref.forward.tau)
    lmin = np.linalg.eigvalsh(tau_s)[0]
    p = eig_backward_error(d, np.float64)
    scale_m = np.abs(np.asarray(eta.mean)).max() * d**0.5 + np.abs(np.asarray(mu.mean)).max()
    ratios = {}

    def check(name, got, want, bound):
        e = _err(got, want)
        ratios[name] = e / bound
        assert e <= bound, f"{name}: {e:.3g} > {bound:.3g}"

    check("forward.tau", br.forward.tau.to_dense(), ref.forward.tau, err_S)
    check("forward.beta", br.forward.beta.to_dense(), ref.forward.beta, err_T)
    check("forward.alpha", br.forward.alpha, ref.forward.alpha, err_T * scale_m)
    check("transport_map", br.transport_map.to_dense().matrix, ref.transport_map.matrix, err_T)
    check("plan.cov", br.plan.to_dense().cov, ref.plan.cov, err_C)
    check("cross_cov", br.cross_cov.to_dense(), ref.cross_cov, err_C)
    # backward = Bayes(eta, forward): a Cholesky solve with P = S2 (= beta S1 beta^T + tau)
    cond = np.linalg.cond(np.asarray(dm.cov))
    nb = np.linalg.norm(np.asarray(ref.backward.beta), 2)
    err_b = p * cond * (1 + nb) * np.linalg.norm(np.asarray(de.cov), 2) + cond * err_C
    check("backward.beta", br.backward.beta.to_dense(), ref.backward.beta, err_b)
    check("backward.tau", br.backward.tau.to_dense(), ref.backward.tau, err_b * (1 + nb))
    nS1 = np.linalg.norm(np.asarray(de.cov), 2)
    nD = np.linalg.norm(np.asarray(ref.forward.beta) - B_K * np.eye(d), 2)
    kl_bound = d * err_S * (1 / T_K + 1 / lmin + 2 * w * nS1 * nD / T_K) + p * np.linalg.cond(
        tau_s
    ) * abs(float(ref.kl))
    check("kl", br.kl, ref.kl, kl_bound)
    U, V = br.potentials
    U_ref, V_ref = ref.potentials
    check("U.quad", U.to_dense().quad, U_ref.quad, w**2 * err_S)
    check("V.quad", V.to_dense().quad, V_ref.quad, err_S / lmin**2)
    np.testing.assert_allclose(br.rate, ref.rate, rtol=1e-9)
    np.testing.assert_allclose(br.mean_rate, ref.mean_rate, rtol=1e-9)
    print(f"case={case}: error/bound", {k: f"{v:.1e}" for k, v in ratios.items()})


@pytest.mark.parametrize("d", [200, 100_000])
def test_schrodinger_system_and_marginals(rng, d):
    """``log bridge(x, y) = -U(x) - V(y) + log eta(x) + log K(x, y)`` at sampled points, and
    the plan's marginals are eta and mu, from the low-rank objects alone (O(d r)); round-off
    of O(d)-sized log-densities: 1e-10 relative."""
    eta, mu, K = _lr(rng, d, 3, 0.5), _lr(rng, d, 4, 0.8), _kernel(rng, d)
    br = jax.jit(gj.schrodinger_bridge)(eta, mu, K)
    x, y = br.sample(jax.random.PRNGKey(0), (3,))
    U, V = br.potentials
    log_k = -0.5 * (d * np.log(2 * np.pi * T_K) + jnp.sum((y - K.alpha - B_K * x) ** 2, -1) / T_K)
    lhs = br.plan.log_prob(jnp.concatenate([x, y], -1))
    assert_close(lhs, -U(x) - V(y) + eta.log_prob(x) + log_k, 1e-10)
    v = rng.normal(size=(2, d))
    for cov, lr in ((br.plan.cov_x, eta), (br.plan.cov_y, mu)):
        want = (v @ np.asarray(lr.factor)) @ np.asarray(lr.factor).T + float(lr.noise) * v
        assert_close(cov.apply(v), want, 1e-10)
    # the forward kernel pushes eta to mu: E[y] = alpha* + beta* m1 = m2
    assert_close(br.forward.mean(eta.mean), mu.mean, 1e-10)


def test_against_gaussian_sinkhorn(rng):
    """IPF iterated to convergence (rate^n < 1e-14) on the dense problem."""
    d = 12
    eta, mu, K = _lr(rng, d, 2, 0.6), _lr(rng, d, 3, 0.4), _kernel(rng, d)
    br = gj.schrodinger_bridge(eta, mu, K)
    n = int(np.ceil(np.log(1e-14) / np.log(float(br.mean_rate)))) + 5
    tr = gj.gaussian_sinkhorn(eta.to_dense(), mu.to_dense(), K.to_dense(), n)
    assert_close(tr.forward.tau[-1], br.forward.tau.to_dense(), 1e-9)
    assert_close(tr.forward.beta[-1], br.forward.beta.to_dense(), 1e-9)
    assert_close(tr.forward.alpha[-1], br.forward.alpha, 1e-9)


def test_gradient_matches_dense(rng):
    d = 30
    eta, mu, K = _lr(rng, d, 3, 0.5), _lr(rng, d, 2, 0.8), _kernel(rng, d)
    x = jnp.asarray(rng.normal(size=(2, d)))

    def loss(U1, U2, alpha, dense):
        e = gj.LowRankGaussian(eta.mean, U1, eta.noise)
        m = gj.LowRankGaussian(mu.mean, U2, mu.noise)
        k = gj.IsotropicGaussianKernel(alpha, B_K, T_K)
        if dense:
            e, m, k = e.to_dense(), m.to_dense(), k.to_dense()
        br = gj.schrodinger_bridge(e, m, k)
        Uf, Vf = br.potentials
        return br.kl + jnp.sum(br.transport_map(x)) + jnp.sum(Uf(x)) + jnp.sum(Vf(x))

    args = (eta.factor, mu.factor, K.alpha)
    g1 = jax.grad(loss, argnums=(0, 1, 2))(*args, False)
    g2 = jax.grad(loss, argnums=(0, 1, 2))(*args, True)
    for a, b in zip(g1, g2):
        assert_close(a, b, 1e-8)


def test_validation_and_mixed(rng):
    d = 10
    eta, mu, K = _lr(rng, d, 2, 0.5), _lr(rng, d, 2, 0.5), _kernel(rng, d)
    with pytest.raises(ValueError, match="mu.noise must be > 0"):
        gj.schrodinger_bridge(eta, gj.LowRankGaussian(mu.mean, mu.factor, 0.0), K)
    with pytest.raises(ValueError, match="tau must be > 0"):
        gj.IsotropicGaussianKernel(jnp.zeros(d), 1.0, -1.0)
    with pytest.raises(ValueError, match="beta must be a scalar"):
        gj.IsotropicGaussianKernel(jnp.zeros(d), jnp.ones(d), 1.0)
    with pytest.raises(ValueError, match="dimensions differ"):
        gj.schrodinger_bridge(eta, mu, gj.IsotropicGaussianKernel(jnp.zeros(d + 1), 1.0, 1.0))
    with pytest.raises(ValueError, match="kernel must be"):
        gj.schrodinger_bridge(eta, mu, "heat")
    # mixed (a dense kernel or marginal) at small d: the dense bridge
    br = gj.schrodinger_bridge(eta, mu, K.to_dense())
    assert isinstance(br, gj.SchrodingerBridge)
    ref = gj.schrodinger_bridge(eta, mu, K)
    assert_close(br.kl, ref.kl, 1e-10)
    big = gj.lowrank.MIXED_MAX_DIM + 1
    lr = gj.LowRankGaussian(jnp.zeros(big), jnp.zeros((big, 1)), 1.0)
    with pytest.raises(ValueError, match="IsotropicGaussianKernel"):
        gj.schrodinger_bridge(lr, lr, gj.brownian_kernel(big, 1.0))
