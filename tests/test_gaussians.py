"""Gaussian types: densities, KL, sampling, Bayes map, and validation in two tiers."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from conftest import random_spd

import gaussot_jax as gj


def test_log_prob_and_kl_against_scipy(rng):
    A, B = random_spd(rng, 3, 10.0), random_spd(rng, 3, 5.0)
    a, b = rng.normal(size=3), rng.normal(size=3)
    p, q = gj.Gaussian(a, A), gj.Gaussian(b, B)
    x = rng.normal(size=3)
    np.testing.assert_allclose(
        p.log_prob(x), scipy.stats.multivariate_normal(a, A).logpdf(x), rtol=1e-12
    )
    # KL by Monte Carlo with SciPy's log-densities (independent of the Cholesky form).
    xs = scipy.stats.multivariate_normal(a, A).rvs(200_000, random_state=1)
    mc = scipy.stats.multivariate_normal(a, A).logpdf(xs) - scipy.stats.multivariate_normal(
        b, B
    ).logpdf(xs)
    assert abs(float(p.kl(q)) - mc.mean()) < 4 * mc.std() / np.sqrt(len(xs))


def test_kl_in_one_dimension_by_hand():
    p, q = (
        gj.Gaussian(jnp.array([0.5]), jnp.array([[2.0]])),
        gj.Gaussian(jnp.array([-1.0]), jnp.array([[0.5]])),
    )
    by_hand = 0.5 * (2.0 / 0.5 + 1.5**2 / 0.5 - 1 + np.log(0.5 / 2.0))
    np.testing.assert_allclose(gj.kl_gaussian(p, q), by_hand, rtol=1e-14)


def test_scaled_gaussian_generalised_kl_by_quadrature():
    p = gj.ScaledGaussian(2.0, jnp.array([0.3]), jnp.array([[0.7]]))
    q = gj.ScaledGaussian(0.5, jnp.array([-0.2]), jnp.array([[1.3]]))

    def dens(m, s2, mass, x):
        return mass * np.exp(-0.5 * (x - m) ** 2 / s2) / np.sqrt(2 * np.pi * s2)

    def integrand(x):
        p_x = dens(0.3, 0.7, 2.0, x)
        return p_x * np.log(p_x / dens(-0.2, 1.3, 0.5, x))

    ref = scipy.integrate.quad(integrand, -15, 15, epsabs=1e-13)[0] - 2.0 + 0.5
    np.testing.assert_allclose(p.kl(q), ref, rtol=1e-10)


def test_sampling_moments_including_singular(key):
    cov = np.array([[2.0, 1.0], [1.0, 0.5]])  # rank 1
    g = gj.Gaussian(jnp.array([1.0, -1.0]), cov)
    x = g.sample(key, (100_000,))
    assert x.shape == (100_000, 2)
    fit = gj.Gaussian.from_samples(x)
    np.testing.assert_allclose(fit.mean, g.mean, atol=0.02)
    np.testing.assert_allclose(fit.cov, cov, atol=0.03)


def test_bayes_map_against_joint_conditioning(rng):
    d1, d2 = 2, 3
    eta = gj.Gaussian(rng.normal(size=d1), random_spd(rng, d1, 4.0))
    K = gj.LinearGaussianKernel(rng.normal(size=d2), rng.normal(size=(d2, d1)), random_spd(rng, d2))
    back = K.bayes(eta)
    # Independent: condition the joint covariance of (x, y) on y with numpy.
    joint = K.joint(eta)
    m, S = np.asarray(joint.mean), np.asarray(joint.cov)
    Sxx, Sxy, Syy = S[:d1, :d1], S[:d1, d1:], S[d1:, d1:]
    gain = Sxy @ np.linalg.inv(Syy)
    np.testing.assert_allclose(back.beta, gain, atol=1e-12)
    np.testing.assert_allclose(back.alpha, m[:d1] - gain @ m[d1:], atol=1e-12)
    np.testing.assert_allclose(back.tau, Sxx - gain @ Sxy.T, atol=1e-12)
    # y | x of the joint is the kernel itself.
    fwd = joint.conditional(d1)
    np.testing.assert_allclose(fwd.beta, K.beta, atol=1e-12)
    np.testing.assert_allclose(fwd.tau, K.tau, atol=1e-12)


@pytest.mark.parametrize(
    ("dtype", "t", "tol"), [(jnp.float64, 1e-17, 1e-12), (jnp.float32, 1e-8, 1e-4)]
)
def test_bayes_map_near_exact_observation_joseph_form(rng, dtype, t, tol):
    # An observation noise t below eps |S|: P = beta S beta^T + t I rounds to beta S beta^T,
    # so the textbook covariance S - g beta S is pure cancellation (error ~ eps |S|, above
    # the answer ~ t). The Joseph form's error is second order in the gain's: a few eps
    # relative plus eps^2 |S| / t (1e-15 in float64, 1.4e-6 in float32); the tolerances
    # are that bound times ~50.
    d = 3
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    beta = np.linalg.qr(rng.normal(size=(d, d)))[0]
    S = Q @ np.diag([1.0, 0.5, 0.25]) @ Q.T
    K = gj.LinearGaussianKernel(
        jnp.zeros(d, dtype), jnp.asarray(beta, dtype), jnp.asarray(t * np.eye(d), dtype)
    )
    back = K.bayes(gj.Gaussian(jnp.zeros(d, dtype), jnp.asarray(S, dtype)))
    assert back.tau.dtype == dtype
    # Independent: the information form (S^{-1} + beta^T beta / t)^{-1}, well conditioned.
    ref = np.linalg.inv(np.linalg.inv(S) + beta.T @ beta / t)
    err = np.linalg.norm(np.asarray(back.tau, np.float64) - ref) / np.linalg.norm(ref)
    assert err < tol
    assert np.linalg.eigvalsh(np.asarray(back.tau, np.float64)).min() > 0
    # The textbook form at the same precision is off by more than the answer itself.
    S_, b_ = np.asarray(S, dtype), np.asarray(beta, dtype)
    g = np.linalg.solve(b_ @ S_ @ b_.T + dtype(t) * np.eye(d, dtype=dtype), b_ @ S_).T
    textbook = np.asarray(S_ - g @ b_ @ S_, np.float64)
    assert np.linalg.norm(textbook - ref) / np.linalg.norm(ref) > 1e3 * tol


def test_types_vmap_and_batch_shapes(rng):
    means = rng.normal(size=(5, 2))
    covs = np.stack([random_spd(rng, 2) for _ in range(5)])
    batch = gj.Gaussian(means, covs)
    assert batch.dim == 2
    lp = jax.vmap(lambda g, x: g.log_prob(x))(batch, means)
    assert lp.shape == (5,)
    with pytest.raises(ValueError, match="batch shapes"):
        gj.Gaussian(means, covs[:4])


@pytest.mark.parametrize(
    ("mean", "cov", "message"),
    [
        (np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), "not symmetric"),
        (np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]), "not positive semi-definite"),
        (np.zeros(2), np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
        (np.array([0.0, np.inf]), np.eye(2), "mean contains NaN or inf"),
        (np.zeros(3), np.eye(2), r"cov must have shape \(\.\.\., 3, 3\)"),
        (np.float64(1.0), np.eye(1), r"mean must have shape"),
    ],
)
def test_gaussian_rejects_bad_input(mean, cov, message):
    with pytest.raises(ValueError, match=message):
        gj.Gaussian(mean, cov)


def test_other_types_reject_bad_input():
    with pytest.raises(ValueError, match="mass must be > 0"):
        gj.ScaledGaussian(0.0, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="mass must have the batch shape"):
        gj.ScaledGaussian(np.ones(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="tau is not positive semi-definite"):
        gj.LinearGaussianKernel(np.zeros(2), np.eye(2), -np.eye(2))
    with pytest.raises(ValueError, match="beta must have shape"):
        gj.LinearGaussianKernel(np.zeros(2), np.eye(3), np.eye(2))
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        gj.entropic_ot(
            gj.Gaussian(np.zeros(2), np.eye(2)), gj.Gaussian(np.zeros(2), np.eye(2)), 0.0
        )
    with pytest.raises(ValueError, match="dimensions differ"):
        gj.bures_wasserstein2(
            gj.Gaussian(np.zeros(2), np.eye(2)), gj.Gaussian(np.zeros(3), np.eye(3))
        )


# Under jax.jit equinox's error arrives wrapped in XLA's runtime error; under
# eqx.filter_jit as EquinoxRuntimeError. Either way the message names the problem.
_RUNTIME = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError, ValueError, RuntimeError)


def test_checked_raises_under_jit():
    @jax.jit
    def f(cov):
        return jnp.trace(gj.Gaussian(jnp.zeros(2), cov).checked().cov)

    assert float(f(jnp.eye(2))) == 2.0
    with pytest.raises(_RUNTIME, match="cov is not positive semi-definite"):
        f(jnp.array([[1.0, 2.0], [2.0, 1.0]]))

    @jax.jit
    def g(mass):
        return gj.ScaledGaussian(mass, jnp.zeros(1), jnp.eye(1)).checked().mass

    with pytest.raises(_RUNTIME, match="mass must be > 0"):
        g(jnp.array(-1.0))


def test_float32_is_kept():
    g = gj.Gaussian(np.zeros(2, np.float32), np.eye(2, dtype=np.float32))
    assert g.mean.dtype == jnp.float32 and g.cov.dtype == jnp.float32
    g64 = gj.Gaussian(np.zeros(2, np.float32), np.eye(2))
    assert g64.mean.dtype == jnp.float64  # promoted to the common dtype


def test_sample_is_differentiable_at_repeated_eigenvalues(key):
    # Reparametrised samples go through sqrtm's Sylvester rule: finite at cov = I, where
    # a factor from autodiff through eigh gives NaN; checked by central differences.
    def f(cov):
        return jnp.sum(gj.Gaussian(jnp.zeros(3), cov).sample(key, (4,)) ** 2)

    g = jax.grad(f)(jnp.eye(3))
    E = np.array([[0.4, 0.1, -0.2], [0.1, -0.3, 0.2], [-0.2, 0.2, 0.5]])
    h = 1e-6
    fd = (f(jnp.eye(3) + h * E) - f(jnp.eye(3) - h * E)) / (2 * h)
    np.testing.assert_allclose(np.sum(g * E), fd, rtol=1e-7)
