"""Shared test set-up: float64 on, a PRNG key, tolerances by dtype, random covariances."""

import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

# One persistent compilation cache per test session, shared by the xdist workers.
# Tests trace the same computations through different closures and shapes recur across
# files; JAX keys the cache by the compiled program, so each is compiled once per
# session. The directory is made by the controlling process (pytest_configure below)
# and removed at its end: every session, CI's included, starts cold, and nothing
# outlives it. GAUSSOT_TEST_JAX_CACHE=off runs without it.
_CACHE_ENV = "GAUSSOT_TEST_JAX_CACHE"


def _enable_session_cache() -> None:
    path = os.environ.get(_CACHE_ENV)
    if path and path != "off":
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_configure(config):
    if hasattr(config, "workerinput") or os.environ.get(_CACHE_ENV):
        return  # an xdist worker (inherits the controller's directory), or set by hand
    path = tempfile.mkdtemp(prefix="gaussot_jax_test_cache_")
    os.environ[_CACHE_ENV] = path
    config._gaussot_cache_dir = path
    _enable_session_cache()


def pytest_unconfigure(config):
    path = getattr(config, "_gaussot_cache_dir", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


_enable_session_cache()  # in a worker: the controller's directory

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


def eig_backward_error(d: int, dtype) -> float:
    """Relative backward error of a symmetric eigensolver: ``p(d) eps`` with ``p(d) = 2 d``.

    Householder tridiagonalisation + QR (LAPACK) and cyclic Jacobi are backward stable
    (Golub & Van Loan, Thm 8.3.2, §8.5): the computed ``(w, V)`` are exact for ``S + E``
    with ``||E||_2 <= p(d) eps ||S||_2`` and ``V`` orthogonal to ``p(d) eps``; ``p`` is a
    modest polynomial whose constant depends on the LAPACK build, ``2 d`` bounds it here
    with room (measured backward errors are ~0.3 d eps).
    """
    return 2.0 * d * float(np.finfo(dtype).eps)


def sqrtm_error_bound(S: np.ndarray, dtype) -> float:
    """Bound on ``||X_hat - S^{1/2}||_2 / ||S^{1/2}||_2`` for an eigh-based square root.

    The backward error ``E`` moves the root by the Frechet derivative of ``sqrt``, whose
    entries in the eigenbasis are ``E_ij / (x_i + x_j)``: ``||dX||_2 <= ||E||_F /
    (2 lambda_min^{1/2})``, ``||E||_F <= d^{1/2} ||E||_2``, so relative to
    ``||X||_2 = lambda_max^{1/2}`` the error is ``<= p eps d^{1/2} kappa^{1/2} / 2``; forming
    ``V diag(x) V^T`` and the non-orthogonality of ``V`` add ``(p + d) eps``. At a
    singular ``S`` the zero eigenvalues move by up to ``p eps ||S||`` and their roots by its
    square root: ``(p eps)^{1/2}``, the conditioning of ``sqrt`` at 0.
    """
    d = S.shape[-1]
    p = eig_backward_error(d, dtype)
    w = np.linalg.eigvalsh(S)
    if w[0] <= p * w[-1]:
        return float(np.sqrt(p) + 2.0 * p + d * np.finfo(dtype).eps)
    kappa = w[-1] / w[0]
    return float(p * (np.sqrt(d * kappa) / 2.0 + 1.0) + d * np.finfo(dtype).eps)


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


class CompileCounter:
    """Counts the programs JAX compiles inside a block.

    A compile is either an XLA backend compile (jax.monitoring's backend-compile
    duration event) or, with the session's persistent compilation cache on, a
    retrieval from that cache (its cache-hit event): both mean that JAX's in-memory
    executable cache missed, which is what the tests that count compiles assert on.
    """

    EVENT = "/jax/core/compile/backend_compile_duration"
    CACHE_HIT = "/jax/compilation_cache/cache_hits"

    def __init__(self):
        self.count = 0

    def __call__(self, event, duration, **kw):
        if event == self.EVENT:
            self.count += 1

    def _hit(self, event, **kw):
        if event == self.CACHE_HIT:
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        jax.monitoring.register_event_listener(self._hit)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)
        jax.monitoring.unregister_event_listener(self._hit)
