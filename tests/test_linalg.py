"""Matrix functions: values against SciPy, derivatives against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from conftest import eig_backward_error, random_spd, sqrtm_error_bound
from jax.test_util import check_grads

import gaussot_jax as gj


@pytest.mark.parametrize("cond", [1.0, 1e3, 1e6])
def test_sqrtm_matches_scipy_across_conditioning(rng, cond):
    S = random_spd(rng, 5, cond)
    X = np.asarray(gj.sqrtm(S))
    ref = np.real(scipy.linalg.sqrtm(S))
    # eigh (here) and Schur (SciPy) roots are both backward stable: each is within
    # sqrtm_error_bound of the exact root (p eps times its conditioning), and the residual
    # X X - S is the backward error plus rounding, (p + d) eps ||S||.
    bound = sqrtm_error_bound(S, np.float64) * np.linalg.norm(ref, 2)
    assert np.linalg.norm(X - ref, 2) < 2 * bound
    p = eig_backward_error(5, np.float64)
    assert np.linalg.norm(X @ X - S, 2) < (p + 5 * np.finfo(float).eps) * np.linalg.norm(S, 2)


def test_inv_sqrtm(rng):
    S = random_spd(rng, 4, 1e3)
    Z = np.asarray(gj.inv_sqrtm(S))
    # Z = S^{-1/2} errs relatively by b <= p eps (d^{1/2} kappa / 2 + 1) + d eps (the
    # Frechet derivative of x^{-1/2} is E_ij / (x_i^{1/2} x_j^{1/2} (x_i^{1/2} + x_j^{1/2})),
    # <= ||E|| / (2 lambda_min) relative to ||Z||); Z S Z - I = dZ S Z + Z S dZ + dZ S dZ
    # with ||Z||^2 ||S|| = kappa, so its error is <= (2 b + b^2) kappa.
    kappa, p = np.linalg.cond(S), eig_backward_error(4, np.float64)
    b = p * (2.0 * kappa / 2 + 1) + 4 * np.finfo(np.float64).eps
    np.testing.assert_allclose(Z @ S @ Z, np.eye(4), atol=(2 * b + b * b) * kappa)


def test_sqrtm_derivatives_random_and_repeated(rng):
    S = random_spd(rng, 4, 20.0)
    for point in (S, np.eye(4), np.diag([1.0, 1.0, 2.0, 2.0])):
        check_grads(jax.jit(gj.sqrtm), (point,), order=2, modes=["fwd", "rev"])
        # Step 1e-6: at eigenvalue 0.05 the default step's truncation error (~(h/w)^2)
        # would dominate the comparison.
        check_grads(jax.jit(gj.inv_sqrtm), (point,), order=2, modes=["fwd", "rev"], eps=1e-6)


def test_sqrtm_tangent_solves_sylvester(rng):
    # dX must solve X dX + dX X = dS (MATH.md §7), also at the identity where autodiff
    # through eigh divides by zero.
    for S in (random_spd(rng, 3, 5.0), np.eye(3)):
        dS = rng.normal(size=(3, 3))
        dS = dS + dS.T
        X, dX = jax.jvp(gj.sqrtm, (S,), (dS,))
        # Residual of a solve in a computed eigenbasis (orthogonal to p eps) plus the
        # products' rounding: <= (p + 2 d eps) (2 ||X||_2 ||dX||_F + ||dS||_F).
        p = eig_backward_error(3, np.float64) + 6 * np.finfo(np.float64).eps
        scale = 2 * np.linalg.norm(X, 2) * np.linalg.norm(dX) + np.linalg.norm(dS)
        np.testing.assert_allclose(X @ dX + dX @ X, dS, atol=p * scale)


def test_hessian_at_identity_matches_finite_differences():
    def f(S):
        return jnp.sum(gj.sqrtm(S) ** 3)

    H = jax.hessian(f)(jnp.eye(3))
    assert np.all(np.isfinite(H))
    # Central differences of the gradient along a symmetric direction.
    E = np.array([[0.3, 0.1, 0.0], [0.1, -0.2, 0.4], [0.0, 0.4, 0.5]])
    g = jax.grad(f)
    h = 1e-5
    fd = (g(jnp.eye(3) + h * E) - g(jnp.eye(3) - h * E)) / (2 * h)
    np.testing.assert_allclose(jnp.tensordot(H, E, 2), fd, atol=1e-7)


@pytest.mark.parametrize("cond", [1.0, 1e3, 1e6])
def test_newton_schulz_accuracy(rng, cond):
    S = random_spd(rng, 6, cond)
    X = gj.sqrtm(S, method="newton_schulz")
    assert np.max(np.abs(np.asarray(X) - np.asarray(gj.sqrtm(S)))) < 1e-9


def test_newton_schulz_derivative_is_the_sylvester_solve(rng):
    S = random_spd(rng, 4, 10.0)
    dS = rng.normal(size=(4, 4))
    dS = dS + dS.T
    _, d_ns = jax.jvp(lambda s: gj.sqrtm(s, method="newton_schulz"), (S,), (dS,))
    _, d_eig = jax.jvp(gj.sqrtm, (S,), (dS,))
    np.testing.assert_allclose(d_ns, d_eig, atol=1e-10)
    # Finite differences step off the symmetric matrices, which the public function
    # rejects: differentiate through the symmetric part, as the derivative rule does.
    check_grads(
        lambda s: gj.sqrtm(gj.sym(s), method="newton_schulz"), (np.eye(3),), order=2, modes=["rev"]
    )


def test_sqrtm_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        gj.sqrtm(jnp.eye(2), method="schur")


def test_psd_fn_matches_expm_and_daleckii_krein(rng):
    S = random_spd(rng, 4, 10.0)

    def neg_exp(w):
        return jnp.exp(-w)

    # |f'| <= 1 on the spectrum, so the backward error E (||E||_F <= d^{1/2} p eps ||S||)
    # moves exp(-S) by <= ||E||_F (Daleckii–Krein); SciPy's Pade expm errs by ~d eps ||S||.
    e, nS = np.finfo(np.float64).eps, np.linalg.norm(S, 2)
    bound = (2.0 * eig_backward_error(4, np.float64) + 20 * 4 * e) * nS
    np.testing.assert_allclose(gj.psd_fn(neg_exp, S), scipy.linalg.expm(-S), atol=bound)
    check_grads(lambda s: gj.psd_fn(neg_exp, gj.sym(s)), (S,), order=1, modes=["fwd", "rev"])
    # At repeated eigenvalues the first derivative is f'(w) dS, exactly.
    dS = rng.normal(size=(4, 4))
    dS = dS + dS.T
    _, t = jax.jvp(lambda s: gj.psd_fn(neg_exp, s), (2.0 * np.eye(4),), (dS,))
    # Exact in exact arithmetic (every divided difference is f'(2)); round-off of the
    # eigenbasis rotations: <= 2 (p + d eps) e^{-2} ||dS||_F.
    p = eig_backward_error(4, np.float64) + 4 * np.finfo(np.float64).eps
    np.testing.assert_allclose(
        t, -np.exp(-2.0) * dS, atol=2 * p * np.exp(-2.0) * np.linalg.norm(dS)
    )


def test_first_divided_differences_at_clustered_eigenvalues():
    """``f[w_i, w_j]`` of the Frechet tables against 50-digit divided differences.

    Gaps from 0 to 0.1 relative cover both branches of the table (quotient and Taylor
    about the midpoint) and their crossing. Where ``f^(j) ~ f / x^j`` the a-priori
    error of either branch is ``<= eps^(4/5)`` relative at the crossing
    (``s / x ~ eps^(1/5)``, module comment of ``_frechet``); 4x that is the tolerance.
    A table that drops the Taylor branch's second term errs by ``~eps^(2/5)`` there.
    """
    import mpmath as mp

    from gaussot_jax import _frechet
    from gaussot_jax.coupling import _schur_factor

    mp.mp.dps = 50

    def f_mp(x):
        return 2 / (1 + mp.sqrt(1 + 4 * x))

    def dd(x, y):
        if x == y:
            return mp.diff(f_mp, x)
        return (f_mp(x) - f_mp(y)) / (x - y)

    gaps = [0.0, 1e-14, 1e-11, 1e-8, 1e-6, 1e-4, 3e-3, 1e-1]
    w = np.array([0.7 * (1 + g) for g in gaps] + [2.5])
    T = np.asarray(_frechet._divided_differences(_schur_factor, jnp.asarray(w), (), 1))
    ref = np.array([[float(dd(mp.mpf(float(x)), mp.mpf(float(y)))) for y in w] for x in w])
    tol = 4 * np.finfo(np.float64).eps ** 0.8
    np.testing.assert_allclose(T, ref, rtol=tol, atol=0)


def _g_entropic(lam, eps):
    D = jnp.sqrt(eps**2 + 16.0 * lam)
    return -8.0 * lam / (eps + D) + 0.5 * eps * jnp.log((eps + D) / (2.0 * eps))


def test_trace_fn_value_and_gradients(rng):
    A, B = random_spd(rng, 3, 10.0), random_spd(rng, 3, 30.0)
    lam = np.linalg.eigvals(A @ B).real
    np.testing.assert_allclose(gj.trace_fn(_g_entropic, A, B, 0.7), _g_entropic(lam, 0.7).sum())
    f = jax.jit(lambda a, b, e: gj.trace_fn(_g_entropic, a, b, e))
    check_grads(f, (A, B, 0.7), order=2, modes=["fwd", "rev"])
    check_grads(f, (np.eye(3), np.eye(3), 0.7), order=2, modes=["fwd", "rev"])


def test_trace_fn_gradient_finite_at_singular_matches_one_sided_fd():
    # A rank 1, B rank 2: the gradient formula (MATH.md §7) is finite; a one-sided finite
    # difference along a PSD direction (which keeps A PSD) agrees with it.
    A = np.diag([1.5, 0.0, 0.0])
    B = np.array([[1.0, 0.2, 0.0], [0.2, 0.5, 0.0], [0.0, 0.0, 0.0]])
    ga, gb = jax.grad(lambda a, b: gj.trace_fn(_g_entropic, a, b, 0.5), argnums=(0, 1))(A, B)
    assert np.all(np.isfinite(ga)) and np.all(np.isfinite(gb))
    v = np.array([0.3, 1.0, -0.5])
    E = np.outer(v, v)  # PSD direction leaving the range of A
    for X, grad, name in ((A, ga, "A"), (B, gb, "B")):
        h = 1e-7

        def f(t, X=X, name=name):
            a, b = (X + t * E, B) if name == "A" else (A, X + t * E)
            return float(gj.trace_fn(_g_entropic, a, b, 0.5))

        fd = (-3 * f(0.0) + 4 * f(h) - f(2 * h)) / (2 * h)  # second-order one-sided
        np.testing.assert_allclose(np.sum(grad * E), fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("d", [3, 5])  # scalar Jacobi and LAPACK
def test_spectral_trace_value_and_derivatives(rng, d):
    # Tr g(A) = sum_i g(lambda_i(A)), the library's logdet(I + A / lam) (unbalanced OT):
    # value against NumPy's eigenvalues, first and second derivatives (in A and lam)
    # against central differences, at a random A and at A = I (every eigenvalue equal).
    from gaussot_jax.linalg import spectral_trace_unchecked, sym

    def g(w, lam):
        return jnp.log1p(w / lam)

    A = random_spd(rng, d, 30.0)
    ref = np.log1p(np.linalg.eigvalsh(A) / 0.7).sum()
    # eigenvalues err by p eps ||A||; log1p(w / lam) has slope <= 1 / lam
    tol = eig_backward_error(d, np.float64) * np.linalg.norm(A, 2) / 0.7 * d
    assert abs(float(spectral_trace_unchecked(g, A, 0.7)) - ref) <= tol
    f = jax.jit(lambda a, lam: spectral_trace_unchecked(g, sym(a), lam))
    for X in (A, np.eye(d)):
        check_grads(f, (X, 0.7), order=2, modes=["fwd", "rev"])
    g32 = jax.grad(f)(A.astype(np.float32), np.float32(0.7))
    assert g32.dtype == jnp.float32 and np.all(np.isfinite(g32))


def test_float32_runs(rng):
    S = random_spd(rng, 3, 10.0).astype(np.float32)
    X = gj.sqrtm(S)
    assert X.dtype == jnp.float32
    np.testing.assert_allclose(X @ X, S, atol=1e-5)
    g = jax.grad(lambda s: jnp.trace(gj.sqrtm(s)))(S)
    assert g.dtype == jnp.float32 and np.all(np.isfinite(g))
