"""Fast paths of gaussot_jax.linalg: Jacobi (d <= 3), Cholesky trace functions.

Every method is checked against an independent extended-precision reference (cyclic
Jacobi in numpy longdouble, benchmarks/reference.py) or numpy's LAPACK, with the same
tolerances as the eigh path; derivative rules with check_grads (order 2 at repeated
eigenvalues) and one-sided finite differences at singular covariances.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import eig_backward_error, random_spd, sqrtm_error_bound, tol
from jax.test_util import check_grads

import gaussot_jax as gj
from gaussot_jax import linalg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference import jacobi_eigh_ld, sqrtm_ld, trace_fn_ld  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def _rank_deficient(rng, d, r):
    X = rng.normal(size=(d, r))
    return X @ X.T


def _ent_g(lam, eps):
    # The balanced entropic per-eigenvalue term (g'(0) finite).
    tr_c, kl = gj.isotropic_terms(lam, 2.0 / eps)
    return -2.0 * tr_c + eps * kl


@pytest.mark.parametrize("d", [1, 2, 3])
def test_jacobi_eigh_matches_lapack(rng, d):
    cases = [random_spd(rng, d, c) for c in (1.0, 1e6)]
    cases += [2.0 * np.eye(d), _rank_deficient(rng, d, 1)]
    if d == 3:
        Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        cases += [(Q * np.array([2.0, 2.0, 1e-14])) @ Q.T, np.diag([1.0, 1.0, 1e-12])]
    for S in cases:
        w, V = linalg._jacobi_eigh(jnp.asarray(S))
        w, V = np.asarray(w), np.asarray(V)
        # Both solvers are backward stable (conftest.eig_backward_error): by Weyl each
        # eigenvalue is within p eps ||S||_2 of the exact one, so they differ by <= 2 p.
        p, scale = eig_backward_error(d, np.float64), np.linalg.norm(S, 2)
        assert np.all(np.diff(w) >= 0)
        np.testing.assert_allclose(w, np.linalg.eigvalsh(S), atol=2 * p * scale)
        np.testing.assert_allclose(V.T @ V, np.eye(d), atol=p)
        np.testing.assert_allclose((V * w) @ V.T, S, atol=p * scale)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("d", [2, 3])
def test_sqrtm_jacobi_against_longdouble(rng, d, dtype):
    # Every method is a backward-stable eigensolver: the bound (conftest.sqrtm_error_bound)
    # is p(d) eps times the conditioning of the root, (d kappa)^{1/2} / 2, and at a
    # singular S the square root of the backward error, the conditioning of sqrt at 0.
    # A fixed multiple of eps fails where LAPACK's rounding differs (issue 11, item 5).
    cond = 1e6 if dtype == jnp.float64 else 1e3
    for S in (random_spd(rng, d, cond), _rank_deficient(rng, d, 1)):
        ref = np.asarray(sqrtm_ld(S), dtype=np.float64)
        bound = sqrtm_error_bound(S, dtype)
        errs = {}
        for method in ("auto", "jacobi", "eigh"):
            X = gj.sqrtm(jnp.asarray(S, dtype), method=method)
            assert X.dtype == dtype
            errs[method] = np.linalg.norm(np.asarray(X, np.float64) - ref, 2) / np.linalg.norm(
                ref, 2
            )
        assert max(errs.values()) < bound, (errs, bound)


def _grad_B_ld(g_prime, A, B):
    """grad_B of sum g(lambda(AB)) = A^{1/2} g'(A^{1/2} B A^{1/2}) A^{1/2} in longdouble."""
    X = sqrtm_ld(A)
    w, V = jacobi_eigh_ld(X @ np.asarray(B, np.longdouble) @ X)
    return X @ (V * g_prime(w)) @ V.T @ X


@pytest.mark.parametrize("d", [2, 3, 5])
def test_trace_fn_methods_against_longdouble(rng, d):
    methods = ["auto", "cholesky", "eigh"] + (["jacobi"] if d <= 3 else [])
    for cond in (1e2, 1e6):
        A, B = random_spd(rng, d, cond), random_spd(rng, d, cond)
        ref = float(trace_fn_ld(np.sqrt, A, B))
        ref_gB = np.asarray(_grad_B_ld(lambda w: 0.5 / np.sqrt(w), A, B), np.float64)
        for m in methods:
            val = gj.trace_fn(jnp.sqrt, jnp.asarray(A), jnp.asarray(B), method=m)
            # The square-root route (eigh, jacobi) loses ~ cond * eps through A^{1/2};
            # the Cholesky route (the default) is accurate to round-off.
            assert abs(float(val) - ref) <= 1e-9 * abs(ref), (m, cond)
            if m in ("auto", "cholesky"):
                value_bound, grad_bound = _trace_sqrt_bounds(A, B)
                assert abs(float(val) - ref) <= value_bound * abs(ref), (m, cond)
                gB = jax.grad(lambda B_: gj.trace_fn(jnp.sqrt, jnp.asarray(A), B_, method=m))(
                    jnp.asarray(B)
                )
                err = np.abs(np.asarray(gB) - ref_gB).max() / np.abs(ref_gB).max()
                assert err < grad_bound, (m, cond, err)


def _trace_sqrt_bounds(A, B):
    """Relative round-off bounds of the Cholesky route's ``Tr (AB)^{1/2}`` and its grad_B.

    ``M = L^T B L`` is formed and decomposed with backward error
    ``||dM|| <= (p + 2d) eps ||A|| ||B||`` (``p eps`` the eigensolver's, ``d eps`` each for
    the factor and the products), so each eigenvalue moves by at most that (Weyl) and
    ``sum_i w_i^{1/2}`` by ``sum_i |dw_i| / (2 w_i^{1/2})``. The gradient
    ``F g'(M) F^T`` with ``g' = w^{-1/2} / 2``: by the Daleckii–Krein bound the divided
    differences of ``g'`` are at most ``|g''(w_min)|``, so relative to ``g'(w_min)`` it
    moves by ``<= d^{1/2} ||dM|| / (2 w_min)``, plus the factor's ``2 d eps``.
    """
    d = A.shape[-1]
    e = float(np.finfo(np.float64).eps)
    w = np.asarray(jacobi_eigh_ld(sqrtm_ld(A) @ np.asarray(B, np.longdouble) @ sqrtm_ld(A))[0])
    w = np.maximum(w.astype(np.float64), np.finfo(np.float64).tiny)
    dM = (
        (eig_backward_error(d, np.float64) + 2 * d * e)
        * np.linalg.norm(A, 2)
        * np.linalg.norm(B, 2)
    )
    value = dM * np.sum(0.5 / np.sqrt(w)) / np.sum(np.sqrt(w))
    grad = np.sqrt(d) * dM / (2.0 * w.min()) + 2 * d * e
    return value, grad


@pytest.mark.parametrize("d", [2, 3, 5])
def test_trace_fn_float32(rng, d):
    A, B = random_spd(rng, d, 1e2), random_spd(rng, d, 1e2)
    ref = float(trace_fn_ld(np.sqrt, A, B))
    val = gj.trace_fn(jnp.sqrt, jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32))
    assert val.dtype == jnp.float32
    assert abs(float(val) - ref) <= tol(jnp.float32) * 1e-2 * abs(ref)


@pytest.mark.parametrize("d", [2, 3])
def test_second_order_at_repeated_eigenvalues_small_d(d):
    # Every eigenvalue repeated: autodiff through eigh would divide by zero. The
    # default (Jacobi / unrolled Cholesky) paths keep the Sylvester and Daleckii-Krein
    # rules, so check_grads passes to second order in forward and reverse mode.
    S = 2.0 * jnp.eye(d)
    check_grads(jax.jit(gj.sqrtm), (S,), order=2, modes=("rev",))
    A, B, eps = jnp.eye(d), 3.0 * jnp.eye(d), 0.7
    f = jax.jit(lambda A: gj.trace_fn(_ent_g, A, B, eps))
    check_grads(f, (A,), order=2, modes=("rev",))


def test_second_order_at_repeated_eigenvalues_cholesky_d4():
    A, B = jnp.eye(4), jnp.diag(jnp.array([2.0, 2.0, 5.0, 5.0]))
    f = jax.jit(lambda B: gj.trace_fn(jnp.sqrt, A, B, method="cholesky"))
    check_grads(f, (B,), order=2, modes=("rev",))


@pytest.mark.parametrize("d", [2, 5])
def test_trace_fn_gradient_finite_at_singular(rng, d):
    # Rank-1 A: the entropic gradient is finite; check it against a one-sided finite
    # difference along a path that stays PSD (A + t E, E PSD).
    A, B = _rank_deficient(rng, d, 1), random_spd(rng, d, 10.0)
    E = random_spd(rng, d, 3.0)
    eps = 0.5
    for method in ("auto", "cholesky", "eigh"):
        f = lambda A_: gj.trace_fn(_ent_g, A_, jnp.asarray(B), eps, method=method)  # noqa: E731
        gA = jax.grad(f)(jnp.asarray(A))
        assert np.all(np.isfinite(np.asarray(gA)))
        ts = 1e-7
        fd = (float(f(jnp.asarray(A + ts * E))) - float(f(jnp.asarray(A)))) / ts
        assert abs(float(jnp.sum(gA * E)) - fd) < 1e-5 * max(1.0, abs(fd)), method


def test_small_cholesky_semidefinite(rng):
    for d in (1, 2, 3):
        for A in (random_spd(rng, d, 1e6), _rank_deficient(rng, d, 1), np.zeros((d, d))):
            F = np.asarray(linalg._small_cholesky(jnp.asarray(A)))
            assert np.all(np.isfinite(F)) and np.allclose(np.triu(F, 1), 0)
            np.testing.assert_allclose(F @ F.T, A, atol=4e-16 * d * max(np.abs(A).max(), 1))
    # The LAPACK path falls back to a round-off shift at a singular matrix.
    A = _rank_deficient(rng, 5, 2)
    F = np.asarray(linalg._psd_factor(jnp.asarray(A)))
    assert np.all(np.isfinite(F))
    # F F^T = A + delta I + E: the shift delta = d eps Tr A and Cholesky's backward error
    # ||E||_2 <= p eps ||A + delta I||_2 (p as for eigh, conftest; Golub & Van Loan Thm 4.2.6
    # has 3 d eps), so ||F F^T - A||_max <= (d + p) eps Tr A (with ||A||_2 <= Tr A).
    d, e64 = A.shape[-1], float(np.finfo(np.float64).eps)
    p = eig_backward_error(d, np.float64) / e64
    np.testing.assert_allclose(F @ F.T, A, atol=(d + 1.01 * p) * e64 * np.trace(A))


@pytest.mark.parametrize("d", [2, 4])
def test_jit_vmap_batched_matches_loop(rng, d):
    A = np.stack([random_spd(rng, d, 1e3) for _ in range(5)])
    B = np.stack([random_spd(rng, d, 1e3) for _ in range(5)])
    batched = jax.jit(jax.vmap(lambda A, B: gj.trace_fn(jnp.sqrt, A, B)))(A, B)
    loop = [float(trace_fn_ld(np.sqrt, a, b)) for a, b in zip(A, B)]
    # Tr M^{1/2}, M = F^T B F: the eigenvalues move by <= p eps ||M||_2 (Weyl, backward
    # error p eps; forming M adds d eps ||M||), each sqrt(lam_i) by that / (2 lam_i^{1/2}).
    for a, b, val, ref in zip(A, B, np.asarray(batched), loop):
        lam = np.linalg.eigvalsh(np.linalg.cholesky(a).T @ b @ np.linalg.cholesky(a))
        p = eig_backward_error(d, np.float64) + d * np.finfo(np.float64).eps
        assert abs(val - ref) <= np.sum(p * lam[-1] / (2.0 * np.sqrt(lam))), (val, ref)
    X = np.asarray(jax.jit(jax.vmap(gj.sqrtm))(jnp.asarray(A)))
    # A residual, not a forward error (no condition number): X = V diag(w^{1/2}) V^T with
    # (w, V) exact for S + E, ||E|| <= p eps ||S||, and V^T V = I to p eps, so
    # X^2 = V diag(w) V^T + O(p eps ||S||) = S + E + O(p eps ||S||), and forming the two
    # products adds 2 d eps: ||X^2 - S||_2 <= (2 p + 2 d eps) ||S||_2.
    for x, a in zip(X, A):
        e2 = np.linalg.norm(x @ x - a, 2) / np.linalg.norm(a, 2)
        p = eig_backward_error(d, np.float64)
        assert e2 <= 2 * p + 2 * d * np.finfo(np.float64).eps, e2


def test_entropic_and_bures_use_fast_paths_accurately(rng):
    # Public closed forms at d = 2 (Jacobi + unrolled Cholesky) and d = 8 (Cholesky):
    # W2^2 against the longdouble reference at condition number 1e6.
    from reference import bures_wasserstein2_ld

    for d in (2, 8):
        a, b = rng.normal(size=d), rng.normal(size=d)
        A, B = random_spd(rng, d, 1e6), random_spd(rng, d, 1e6)
        ref = float(bures_wasserstein2_ld(a, A, b, B))
        val = gj.bures_wasserstein2(gj.Gaussian(a, A), gj.Gaussian(b, B))
        # |dW2| <= ||dA^{1/2}||_F + ||dB^{1/2}||_F (the Procrustes form; the d = 2 closed
        # form is more accurate still), each <= d^{1/2} sqrtm_error_bound * ||S^{1/2}||_2;
        # so |dW2^2| <= 2 W2 |dW2| + |dW2|^2.
        dw = sum(
            np.sqrt(d) * sqrtm_error_bound(S, np.float64) * np.sqrt(np.linalg.norm(S, 2))
            for S in (A, B)
        )
        assert abs(float(val) - ref) <= 2 * np.sqrt(ref) * dw + dw**2


def test_bad_method_raises():
    S = jnp.eye(2)
    with pytest.raises(ValueError, match="method"):
        gj.sqrtm(S, method="qr")
    with pytest.raises(ValueError, match="method"):
        gj.trace_fn(jnp.sqrt, S, S, method="svd")
    with pytest.raises(ValueError, match="method"):
        gj.psd_fn(jnp.sqrt, S, method="cholesky")


WEDGE = r"""
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import gaussot_jax as gj
rng = np.random.default_rng(0)
N, d = 10_000, 4
X = rng.normal(size=(2, N, d, d))
A, B = (jnp.asarray(x @ np.swapaxes(x, -1, -2) / d + 0.1 * np.eye(d)) for x in X)
a = jnp.zeros((N, d))
G = lambda m, S: gj.Gaussian(m, S, validate=False)
for f in (lambda a, A, B: gj.bures_wasserstein2(G(a, A), G(a, B)),
          lambda a, A, B: gj.sinkhorn_divergence(G(a, A), G(a, B), 1.0)):
    out = jax.jit(jax.vmap(jax.value_and_grad(f, argnums=(1, 2))))(a, A, B)
    jax.block_until_ready(out)
print("ok")
"""


def test_no_wedge_on_large_batched_value_and_grad():
    # Regression: concurrent batched LAPACK calls deadlocked XLA's CPU thread pool
    # (N = 1e4, d = 4, value_and_grad) on a 2-core machine. Fails fast, never hangs.
    import subprocess

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, "-c", WEDGE], cwd=root, capture_output=True, text=True, timeout=90
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
