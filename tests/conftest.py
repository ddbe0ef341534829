"""Shared test set-up: float64 on, a PRNG key, tolerances by dtype, random covariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

import gaussot_jax as gj  # noqa: E402  (after x64 is on)

# Tolerances by dtype: float64 checks closed forms against independent methods to
# ~1e-9; float32 runs the same code and is held to what its round-off allows.
TOL = {jnp.float64: 1e-9, jnp.float32: 2e-3}


def tol(dtype) -> float:
    """Relative tolerance for comparing a closed form computed in ``dtype``."""
    return TOL[jnp.dtype(dtype).type]


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_spd(rng, d: int, cond: float = 10.0) -> np.ndarray:
    """A random symmetric positive-definite matrix with the given condition number."""
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    w = np.geomspace(1.0, 1.0 / cond, d) if d > 1 else np.ones(1)
    S = (Q * w) @ Q.T
    return 0.5 * (S + S.T)


def random_gaussian(rng, d: int, cond: float = 10.0, scale: float = 1.0):
    """A random ``gj.Gaussian`` (float64) with a non-zero mean."""
    return gj.Gaussian(rng.normal(size=d), scale * random_spd(rng, d, cond))


def make(p, dtype=jnp.float64):
    """(eta, mu, kernel) of a problem dict, in ``dtype``."""
    c = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    eta = gj.Gaussian(c(p["m1"]), c(p["S1"]))
    mu = gj.Gaussian(c(p["m2"]), c(p["S2"]))
    kernel = gj.LinearGaussianKernel(c(p["alpha"]), c(p["beta"]), c(p["tau"]))
    return eta, mu, kernel


def assert_close(actual, expected, tol=1e-9):
    """Relative tolerance with an absolute floor at the expected value's scale."""
    expected = np.asarray(expected)
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=tol, atol=tol * scale)
