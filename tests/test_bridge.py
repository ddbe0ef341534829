"""Schrödinger bridge closed form [ADM25] against independent methods.

Oracle: Gaussian IPF written with numpy in ipf_reference.py (conditioning of the joint
covariance), iterated to convergence; entropic OT [JMPC20] and the Monge map for the
heat-kernel reference; densities for the potentials; Monte Carlo for sampling.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, make
from ipf_reference import ipf_converged, kl_joint, random_problem

import gaussot_jax as gj

# Correctness tests call the jitted bridge (one compilation per shape; eager dispatch of
# every small primitive costs more on a loaded 2-core machine). Validation is tested eagerly.
bridge_jit = jax.jit(gj.schrodinger_bridge)


@pytest.mark.parametrize("d1,d2", [(1, 1), (2, 2), (5, 5), (3, 2)])
def test_bridge_matches_numpy_ipf(rng, d1, d2):
    p = random_problem(rng, d1, d2)
    (fa, fb, ft), (ba, bb, bt), mean, cov = ipf_converged(p)
    br = bridge_jit(*make(p))
    assert float(br.rate) < 0.95
    for got, want in zip((br.forward.alpha, br.forward.beta, br.forward.tau), (fa, fb, ft)):
        assert_close(got, want)
    for got, want in zip((br.backward.alpha, br.backward.beta, br.backward.tau), (ba, bb, bt)):
        assert_close(got, want)
    assert_close(br.plan.mean, mean)
    assert_close(br.plan.cov, cov)
    assert_close(br.cross_cov, cov[:d1, d1:])
    assert_close(br.transport_map.matrix, fb)
    assert_close(br.transport_map.offset, fa)
    # KL(bridge || eta ⊗ kernel) between the two joint Gaussians, with numpy.
    C0 = p["S1"] @ p["beta"].T
    S0 = np.block([[p["S1"], C0], [C0.T, p["beta"] @ p["S1"] @ p["beta"].T + p["tau"]]])
    m0 = np.concatenate([p["m1"], p["alpha"] + p["beta"] @ p["m1"]])
    assert_close(br.kl, kl_joint(mean, cov, m0, S0))


def test_invariant_and_alpha_independence(rng):
    p = random_problem(rng, 2, 2)
    br = bridge_jit(*make(p))
    # beta*^T tau*^{-1} = beta^T tau^{-1}
    assert_close(
        np.linalg.solve(br.forward.tau, br.forward.beta), np.linalg.solve(p["tau"], p["beta"])
    )
    q = dict(p, alpha=p["alpha"] + 10.0)
    br2 = bridge_jit(*make(q))
    assert_close(br2.plan.cov, br.plan.cov)
    assert_close(br2.plan.mean, br.plan.mean)


@pytest.mark.parametrize("d", [2, 5])
def test_rate_is_rho_max_fourth(rng, d):
    p = random_problem(rng, d, d)
    *_, cov = ipf_converged(p)
    br = bridge_jit(*make(p))

    def inv_sqrt(S):
        w, V = np.linalg.eigh(S)
        return (V / np.sqrt(w)) @ V.T

    rho = np.linalg.svd(
        inv_sqrt(cov[:d, :d]) @ cov[:d, d:] @ inv_sqrt(cov[d:, d:]), compute_uv=False
    )[0]
    assert_close(br.rate, rho**4)
    assert_close(br.mean_rate, rho**2)


def test_heat_kernel_is_entropic_ot(rng):
    d, t = 3, 0.4
    eta, mu = (
        gj.Gaussian(rng.normal(size=d), 2 * np.eye(d) + 0.3),
        gj.Gaussian(rng.normal(size=d), np.diag([1.0, 0.5, 2.0])),
    )
    kernel = gj.LinearGaussianKernel(jnp.zeros(d), jnp.eye(d), t * jnp.eye(d))
    br = bridge_jit(eta, mu, kernel)
    ot = jax.jit(gj.entropic_ot)(eta, mu, 2 * t)
    assert_close(br.cross_cov, ot.cross_cov)
    assert_close(br.plan.cov, ot.plan.cov)
    assert_close(br.plan.mean, ot.plan.mean)
    assert_close(br.transport_map.matrix, ot.entropic_map.matrix)
    assert_close(br.transport_map.offset, ot.entropic_map.offset)


def test_small_t_monge_large_t_independence(rng):
    d = 2
    p = random_problem(rng, d, d)
    eta, mu, _ = make(p)
    T = gj.monge_map(eta, mu)

    def bridge(t):
        k = gj.LinearGaussianKernel(jnp.zeros(d), jnp.eye(d), t * jnp.eye(d))
        return bridge_jit(eta, mu, k)

    # t -> 0: the entropic map tends to the Monge map, with error O(t).
    errs = [np.abs(bridge(t).transport_map.matrix - T.matrix).max() for t in (1e-2, 1e-3, 1e-4)]
    assert errs[2] < 1e-3
    assert errs[1] < 0.2 * errs[0] and errs[2] < 0.2 * errs[1]
    b = bridge(1e-6)
    assert_close(b.transport_map.matrix, T.matrix, tol=1e-5)
    assert_close(b.transport_map.offset, T.offset, tol=1e-5)
    # t -> inf: independence, C = O(1/t), y | x -> mu.
    big = [np.abs(bridge(t).cross_cov).max() for t in (1e2, 1e4, 1e6)]
    assert big[2] < 1e-5 and big[1] < 0.02 * big[0] and big[2] < 0.02 * big[1]
    b = bridge(1e8)
    assert_close(b.forward.tau, p["S2"], tol=1e-7)
    assert_close(b.forward.alpha, p["m2"], tol=1e-7)
    assert float(b.rate) < 1e-15


@pytest.mark.parametrize("d1,d2", [(2, 2), (3, 2)])
def test_potentials_identity(rng, d1, d2):
    p = random_problem(rng, d1, d2)
    eta, mu, kernel = make(p)
    br = bridge_jit(eta, mu, kernel)
    U, V = br.potentials
    xs = rng.normal(size=(20, d1)) * 2
    ys = rng.normal(size=(20, d2)) * 2
    for x, y in zip(xs, ys):
        lhs = br.plan.log_prob(jnp.concatenate([x, y]))
        rhs = -U(x) - V(y) + eta.log_prob(x) + kernel.log_prob(x, y)
        assert abs(float(lhs - rhs)) < 1e-9 * max(1.0, abs(float(lhs)))
    # KL = E_bridge log(dP*/dP0) = -E_eta U - E_mu V, from the moments alone.
    EU = 0.5 * np.trace(U.quad @ p["S1"]) + U(eta.mean)
    EV = 0.5 * np.trace(V.quad @ p["S2"]) + V(mu.mean)
    assert_close(-EU - EV, br.kl)


def test_sample_moments(rng, key):
    p = random_problem(rng, 2, 2)
    br = bridge_jit(*make(p))
    x, y = jax.jit(lambda k: br.sample(k, (40000,)))(key)
    assert x.shape == (40000, 2) and y.shape == (40000, 2)
    emp = gj.Gaussian.from_samples(jnp.concatenate([x, y], axis=1))
    np.testing.assert_allclose(emp.mean, br.plan.mean, atol=0.03)
    np.testing.assert_allclose(emp.cov, br.plan.cov, atol=0.05)
    # The transport map is E[y | x]: residuals are uncorrelated with x.
    r = y - x @ br.transport_map.matrix.T - br.transport_map.offset
    assert np.abs(np.mean(r, 0)).max() < 0.03
    assert np.abs((x - x.mean(0)).T @ r / len(x)).max() < 0.03


def test_jit_vmap_grad(rng):
    p = random_problem(rng, 2, 2)
    eta, mu, kernel = make(p)
    ts = jnp.array([0.1, 1.0, 10.0])

    def kl_of_t(t):
        k = gj.LinearGaussianKernel(kernel.alpha, kernel.beta, t * kernel.tau, validate=False)
        out = gj.schrodinger_bridge(eta, mu, k)
        return out.kl + out.rate + jnp.sum(out.forward.tau)

    batched = jax.jit(jax.vmap(kl_of_t))(ts)
    for t, b in zip(ts, batched):
        assert_close(b, jax.jit(kl_of_t)(t))

    def f(beta, S1, m2):
        k = gj.LinearGaussianKernel(kernel.alpha, beta, kernel.tau, validate=False)
        e = gj.Gaussian(eta.mean, 0.5 * (S1 + S1.T), validate=False)
        m = gj.Gaussian(m2, mu.cov, validate=False)
        out = gj.schrodinger_bridge(e, m, k)
        U, V = out.potentials
        return (
            out.kl
            + out.rate
            + jnp.sum(out.backward.beta)
            + U(jnp.ones(2))
            + V(jnp.ones(2))
            + jnp.sum(out.forward.alpha)
        )

    # reverse mode against central finite differences along a random direction
    args = (kernel.beta, eta.cov, mu.mean)
    dirs = [jnp.asarray(rng.normal(size=a.shape)) for a in args]
    dirs[1] = 0.5 * (dirs[1] + dirs[1].T)
    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*args)
    fj, h = jax.jit(f), 1e-5
    fd = (
        fj(*[a + h * v for a, v in zip(args, dirs)]) - fj(*[a - h * v for a, v in zip(args, dirs)])
    ) / (2 * h)
    ad = sum(jnp.sum(g * v) for g, v in zip(grads, dirs))
    assert abs(float(ad - fd)) < 1e-7 * max(1.0, abs(float(fd)))


def test_float32(rng):
    p = random_problem(rng, 2, 2)
    br64 = bridge_jit(*make(p))
    br32 = bridge_jit(*make(p, jnp.float32))
    assert br32.forward.tau.dtype == jnp.float32
    for a, b in [
        (br32.forward.tau, br64.forward.tau),
        (br32.forward.beta, br64.forward.beta),
        (br32.forward.alpha, br64.forward.alpha),
        (br32.backward.tau, br64.backward.tau),
        (br32.kl, br64.kl),
        (br32.rate, br64.rate),
    ]:
        assert_close(a, b, tol=2e-4)


def test_bad_input(rng):
    p = random_problem(rng, 2, 2)
    eta, mu, kernel = make(p)
    with pytest.raises(ValueError, match="tau must be positive definite"):
        gj.schrodinger_bridge(
            eta,
            mu,
            gj.LinearGaussianKernel(kernel.alpha, kernel.beta, jnp.diag(jnp.array([1.0, 0.0]))),
        )
    with pytest.raises(ValueError, match="tau is not positive semi-definite"):
        gj.LinearGaussianKernel(kernel.alpha, kernel.beta, -jnp.eye(2))
    with pytest.raises(ValueError, match="shapes disagree"):
        gj.schrodinger_bridge(gj.Gaussian(jnp.zeros(3), jnp.eye(3)), mu, kernel)
    with pytest.raises(ValueError, match="shapes disagree"):
        gj.schrodinger_bridge(eta, gj.Gaussian(jnp.zeros(3), jnp.eye(3)), kernel)
    with pytest.raises(ValueError, match="mu.cov must be positive definite"):
        gj.schrodinger_bridge(
            eta, gj.Gaussian(jnp.zeros(2), jnp.diag(jnp.array([1.0, 0.0]))), kernel
        )
    with pytest.raises(ValueError, match="kernel must be a LinearGaussianKernel"):
        gj.schrodinger_bridge(eta, mu, eta)
    with pytest.raises(ValueError, match="eta must be a single Gaussian"):
        gj.schrodinger_bridge(
            gj.Gaussian(jnp.zeros((2, 2)), jnp.stack([jnp.eye(2)] * 2)), mu, kernel
        )
