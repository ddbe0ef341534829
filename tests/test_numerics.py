"""Numerics of values (issue 11, items 4 and 6): no cancellation, no range failures.

References are independent of the library's formulas: scipy's ``sqrtm`` / ``eigvalsh`` in
float64 on the float32-rounded inputs (so the comparison measures only the library's
round-off), 1-D and commuting hand values, and finite differences. Tolerances come from
first-order error bounds: an error ``dX`` in ``A^{1/2}`` moves ``W2`` by at most ``||dX||_F``,
and a backward-stable eigendecomposition gives ``||dX||_F <= c d eps ||A|| /
lambda_min(A)^{1/2}`` (the Sylvester bound ``1 / (x_i + x_j)``), c = 4 here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from conftest import eig_backward_error, random_spd

import gaussot_jax as gj
from gaussot_jax import _checks, linalg

EPS32 = float(np.finfo(np.float32).eps)


def _g(lam, eps):
    """Per-eigenvalue entropic value (MATH.md §3), numpy float64, written out anew."""
    s = np.sqrt(1.0 + 16.0 * lam / eps**2)
    return 0.5 * eps * (np.log((1.0 + s) / 2.0) - (s - 1.0))


def _ref_cross_eigs(A, B):
    X = sl.sqrtm(A).real
    return np.clip(np.linalg.eigvalsh(0.5 * (X @ B @ X + (X @ B @ X).T)), 0, None)


def ref_w2(A, B):
    X = sl.sqrtm(A).real
    return np.trace(A) + np.trace(B) - 2.0 * np.trace(sl.sqrtm(X @ B @ X).real)


def ref_sd(A, B, eps):
    t = [np.sum(_g(_ref_cross_eigs(P, Q), eps)) for P, Q in ((A, B), (A, A), (B, B))]
    return t[0] - 0.5 * (t[1] + t[2])


def sqrt_err_bound(A, eps_mach):
    w = np.linalg.eigvalsh(A)
    return 4.0 * A.shape[-1] * eps_mach * w[-1] / np.sqrt(w[0])


def nearby(rng, d, h):
    A = random_spd(rng, d, cond=10.0) + 0.5 * np.eye(d)
    E = rng.normal(size=(d, d))
    return A, A + h * (E + E.T)


def G(cov, dtype=jnp.float64):
    cov = jnp.asarray(cov, dtype)
    return gj.Gaussian(jnp.zeros(cov.shape[-1], dtype), cov)


# ---------------------------------------------------------------------------------------
# Item 4: W2^2 and S_eps without cancellation
# ---------------------------------------------------------------------------------------
def test_w2_float32_nearby_nonnegative_and_accurate(rng):
    d, n = 16, 40
    negatives = 0
    for _ in range(n):
        A, B = nearby(rng, d, 1e-4)
        A32, B32 = A.astype(np.float32), B.astype(np.float32)
        v = float(gj.bures_wasserstein2(G(A32, jnp.float32), G(B32, jnp.float32)))
        negatives += v < 0
        A64, B64 = A32.astype(np.float64), B32.astype(np.float64)
        ref = ref_w2(A64, B64)
        bound = sqrt_err_bound(A64, EPS32) + sqrt_err_bound(B64, EPS32)
        assert abs(np.sqrt(max(v, 0.0)) - np.sqrt(max(ref, 0.0))) <= bound
        w = float(gj.bures_wasserstein(G(A32, jnp.float32), G(B32, jnp.float32)))
        assert np.isfinite(w) and abs(w - np.sqrt(max(ref, 0.0))) <= bound
    assert negatives == 0


def test_w2_trace_form_cancels_in_float32(rng):
    # The test above can fail: the trace form it replaced goes negative on these inputs.
    from gaussot_jax.bures import _cov_term_trace

    neg = 0
    for _ in range(20):
        A, B = nearby(rng, 16, 1e-4)
        neg += float(_cov_term_trace(*(jnp.asarray(M, jnp.float32) for M in (A, B)))) < 0
    assert neg > 0


@pytest.mark.parametrize("d", [2, 5])
def test_w2_float64_against_scipy(rng, d):
    for h in (1.0, 1e-3):
        A, B = nearby(rng, d, h) if h < 1 else (random_spd(rng, d), random_spd(rng, d, 100.0))
        v = float(gj.bures_wasserstein2(G(A), G(B)))
        bound = sqrt_err_bound(A, 2.2e-16) + sqrt_err_bound(B, 2.2e-16)
        ref = ref_w2(A, B)
        # scipy's sqrtm errs alike (2 * bound); its trace form also cancels: 100 d eps Tr
        ref_err = 100 * d * 2.2e-16 * (np.trace(A) + np.trace(B))
        assert abs(v - ref) <= 2.0 * np.sqrt(ref) * 2.0 * bound + ref_err


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_w2_one_dimensional_closed_form(rng, dtype):
    """d = 1: ``W2^2 = (a - b)^2 + (A^{1/2} - B^{1/2})^2`` and its derivatives, batched.

    Reference in 50-digit arithmetic on the stored inputs, nearby pairs included (there
    the trace form ``A + B - 2 (AB)^{1/2}`` cancels). Each square root is correctly
    rounded to ``eps / 2`` relative, so ``x - y`` errs by ``<= eps (x + y)`` absolute and
    ``(x - y)^2`` by ``2 eps (x + y) |x - y|`` plus its own rounding; the gradient
    ``1 - (B / A)^{1/2}`` and second derivative ``B^{1/2} / (2 A^{3/2})`` are checked to
    a few eps of their condition (``(B/A)^{1/2}`` relative, ``cond 1`` for the second).
    """
    import mpmath as mp

    mp.mp.dps = 50
    n = 64
    A = rng.uniform(0.1, 10.0, n)
    B = np.concatenate([rng.uniform(0.1, 10.0, n // 2), A[: n // 2] * (1 + 1e-6)])
    B = B.astype(dtype).astype(np.float64)  # the stored values
    A = A.astype(dtype).astype(np.float64)
    a, b = (rng.normal(size=n).astype(dtype).astype(np.float64) for _ in range(2))
    eps = float(np.finfo(dtype).eps)

    def w2(a, A, b, B):
        return gj.bures_wasserstein2(
            gj.Gaussian(a[None], A[None, None]), gj.Gaussian(b[None], B[None, None])
        )

    args = [jnp.asarray(x, dtype) for x in (a, A, b, B)]
    value = np.asarray(jax.jit(jax.vmap(w2))(*args), np.float64)
    grad_A = np.asarray(jax.jit(jax.vmap(jax.grad(w2, argnums=1)))(*args), np.float64)
    hess_A = np.asarray(jax.jit(jax.vmap(jax.grad(jax.grad(w2, argnums=1), argnums=1)))(*args))
    for i in range(n):
        x, y = mp.sqrt(mp.mpf(A[i])), mp.sqrt(mp.mpf(B[i]))
        m = (mp.mpf(a[i]) - mp.mpf(b[i])) ** 2
        want = float(m + (x - y) ** 2)
        tol = 2 * eps * float((x + y) * abs(x - y)) + 4 * eps * want
        assert abs(value[i] - want) <= tol, (i, value[i], want)
        g = float(1 - y / x)
        assert abs(grad_A[i] - g) <= 4 * eps * float(y / x) + eps, (i, grad_A[i], g)
        h = float(y / (2 * x**3))
        assert abs(hess_A[i] - h) <= 8 * eps * h, (i, hess_A[i], h)


@pytest.mark.parametrize("d", [2, 4])
def test_w2_gradient_rule_kept(rng, d):
    # Repeated eigenvalues: A = I, B = 2 I gives grad_A = (1 - sqrt 2) I, grad_B =
    # (1 - 1/sqrt 2) I; the Hessian-vector product matches a central difference.
    # (Jitted: an eager grad dispatches, and compiles, each primitive on its own.)
    eye = jnp.eye(d)
    f = lambda A, B: gj.bures_wasserstein2(G(A), G(B))  # noqa: E731
    grads = jax.jit(jax.grad(f, argnums=(0, 1)))
    gA, gB = grads(eye, 2 * eye)
    np.testing.assert_allclose(gA, (1 - np.sqrt(2)) * eye, atol=1e-12)
    np.testing.assert_allclose(gB, (1 - 1 / np.sqrt(2)) * eye, atol=1e-12)
    V = rng.normal(size=(d, d))
    V = jnp.asarray(V + V.T)
    hvp = jax.jit(lambda A, V: jax.jvp(lambda A: jax.grad(f)(A, 2 * eye), (A,), (V,))[1])(eye, V)
    t = 1e-5
    fd = (grads(eye + t * V, 2 * eye)[0] - grads(eye - t * V, 2 * eye)[0]) / (2 * t)
    np.testing.assert_allclose(hvp, fd, atol=1e-7)


def _w2_cov_mp(A, B):
    """``Tr A + Tr B - 2 Tr (A^{1/2} B A^{1/2})^{1/2}`` in 50-digit arithmetic (mpmath)."""
    import mpmath as mp

    with mp.workdps(50):
        Am = mp.matrix(np.asarray(A, np.float64).tolist())
        Bm = mp.matrix(np.asarray(B, np.float64).tolist())
        n = Am.rows

        def sqrt_psd(S):  # symmetric eigendecomposition: valid at singular S too
            w, Q = mp.eigsy(S)
            return Q * mp.diag([mp.sqrt(max(x, 0)) for x in w]) * Q.T

        X = sqrt_psd(Am)
        R = sqrt_psd(X * Bm * X)
        return float(sum(Am[i, i] + Bm[i, i] - 2 * R[i, i] for i in range(n)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_w2_2x2_closed_form_nearby(rng, dtype):
    # d = 2 evaluates W2 from the entries (no eigensolver). Its numerator is a sum of
    # squares and products of entry differences, each with absolute error <= 4 eps (the
    # entries are scaled to <= 1) and of size <= num^{1/2}; so num errs by ~8 eps
    # num^{1/2} and the quotient by a few eps: relative error <= 16 eps (1 + (c/W2^2)^{1/2}),
    # c = Tr A + Tr B. The trace form's error is eps c / W2^2 instead (its square).
    # (Measured: <= 1.3 eps (1 + (c/W2^2)^{1/2}) over 100 draws in each dtype.)
    from gaussot_jax.bures import _cov_term_2x2

    e = float(np.finfo(dtype).eps)
    for _ in range(30):
        X = rng.normal(size=(2, 2))
        A = X @ X.T + 0.1 * np.eye(2)
        E = rng.normal(size=(2, 2))
        B = A + 10.0 ** rng.uniform(-6, 0) * (E @ E.T) / 4
        A, B = (np.asarray(M, dtype).astype(np.float64) for M in (A, B))
        ref = _w2_cov_mp(A, B)
        v = float(_cov_term_2x2(jnp.asarray(A, dtype), jnp.asarray(B, dtype)))
        assert v >= 0.0
        c = np.trace(A) + np.trace(B)
        if ref > 0:
            assert abs(v - ref) <= 16 * e * (1.0 + np.sqrt(c / ref)) * ref
        w = float(gj.bures_wasserstein2(G(A, dtype), G(B, dtype)))  # the public path
        assert w >= 0.0
        if ref > 0:  # compiled, so it may round otherwise than the eager v: same bound
            assert abs(w - ref) <= 16 * e * (1.0 + np.sqrt(c / ref)) * ref
    # ... and it is the closed form: no eigensolver or SVD in its program.
    jaxpr = str(jax.make_jaxpr(gj.bures_wasserstein2)(G(A, dtype), G(B, dtype)))
    assert "eigh" not in jaxpr and "svd" not in jaxpr


def test_w2_2x2_derivatives_every_order(rng):
    # Gradient against the trace-form rule (trace_fn: an independent, eigen-based code
    # path); Hessian-vector products against central differences of the gradient, at
    # repeated eigenvalues (A = B = I; A = I, B = 2 I) and at a random pair.
    from gaussot_jax.bures import _cov_term_2x2, _cov_term_trace

    # Each derivative is jitted once and reused over the pairs (an eager one dispatches,
    # and compiles, each primitive on its own).
    V = rng.normal(size=(2, 2))
    V = jnp.asarray(V + V.T)
    Z = jnp.zeros((2, 2))
    grad = jax.jit(jax.grad(_cov_term_2x2, argnums=(0, 1)))
    grad_ref = jax.jit(jax.grad(_cov_term_trace, argnums=(0, 1)))
    hvp = jax.jit(lambda A, B, dA, dB: jax.jvp(grad, (A, B), (dA, dB))[1])
    hessian = jax.jit(jax.hessian(_cov_term_2x2, argnums=(0, 1)))
    pairs = [(np.eye(2), np.eye(2)), (np.eye(2), 2 * np.eye(2))]
    pairs.append((random_spd(rng, 2, 30.0), random_spd(rng, 2, 5.0)))
    for A, B in pairs:
        A, B = jnp.asarray(A), jnp.asarray(B)
        for x, y in zip(grad(A, B), grad_ref(A, B)):
            # both O(cond eps): the gradient I - T has the conditioning of T (<= 30 here)
            np.testing.assert_allclose(x, y, atol=100 * 30 * 2.2e-16)
        H = hessian(A, B)
        for k in (0, 1):
            # d grad_k along V in argument k (0 in the other), against a central difference
            dA, dB = (V, Z) if k == 0 else (Z, V)
            t = 1e-5  # central difference: truncation t^2 |f'''| ~ 1e-9, round-off eps/t
            fd = (grad(A + t * dA, B + t * dB)[k] - grad(A - t * dA, B - t * dB)[k]) / (2 * t)
            np.testing.assert_allclose(hvp(A, B, dA, dB)[k], fd, atol=1e-7)
            assert bool(jnp.all(jnp.isfinite(H[k][k])))


def test_w2_2x2_singular_and_dirac():
    from gaussot_jax.bures import _cov_term_2x2

    B = np.array([[2.0, 0.3], [0.3, 1.0]])
    for A in (np.diag([1.0, 0.0]), np.zeros((2, 2))):
        v = float(_cov_term_2x2(jnp.asarray(A), jnp.asarray(B)))
        np.testing.assert_allclose(v, _w2_cov_mp(A, B), rtol=1e-14)
    # A = diag(1, 0): W2^2 = 1 + Tr B - 2 b11^{1/2}, so grad_B = I - diag(b11^{-1/2}, 0),
    # finite (the trace-form rule is NaN here: it needs g'(0) = inf times 0).
    gB = jax.grad(_cov_term_2x2, argnums=1)(jnp.diag(jnp.array([1.0, 0.0])), jnp.asarray(B))
    np.testing.assert_allclose(gB, np.diag([1.0 - 1.0 / np.sqrt(2.0), 1.0]), atol=1e-15)
    assert float(_cov_term_2x2(jnp.zeros((2, 2)), jnp.zeros((2, 2)))) == 0.0


def _w2_grad_tol(A, B, d):
    """First-order bound on ||grad_32 - grad_64||_2 / ||T||_2 for the W2^2 gradient I - T.

    T_A = A^{-1} # B (geometric mean) is monotone in each argument, and (c P) # Q =
    c^{1/2} P # Q. The eigendecompositions of A and B are exact for A + E_A, B + E_B with
    ||E|| <= p eps ||.|| (conftest.eig_backward_error), i.e. (1 - dA) A <= A + E_A <=
    (1 + dA) A, dA = p eps kappa_A; the SVD of Y X is exact for Y X + F, ||F|| <= p eps
    ||Y|| ||X||, which perturbs X B X relatively by 2 p eps (kappa_A kappa_B)^{1/2}. So
    T_hat lies between T sqrt((1 -+ dB) / (1 +- dA')), dA' = p eps (kappa_A + 2 (kappa_A
    kappa_B)^{1/2}): to first order ||T_hat - T|| <= (dA' + dB) / 2 ||T||, plus (d + 2) eps
    for forming (Y P) diag(1/s) (Y P)^T.
    """
    p = eig_backward_error(d, np.float32)
    kA, kB = (np.linalg.cond(M) for M in (A, B))
    return 0.5 * p * (kA + 2.0 * np.sqrt(kA * kB) + kB) + (d + 2) * EPS32


_w2_grads = jax.jit(
    jax.grad(lambda A, B: gj.bures_wasserstein2(G(A, A.dtype), G(B, B.dtype)), argnums=(0, 1))
)


@pytest.mark.parametrize("d", [2, 4, 8])
@pytest.mark.parametrize("cond", [1e4, 1e5, 1e6])
def test_w2_gradient_float32_ill_conditioned(rng, d, cond):
    # float32 at kappa >= 1e6: the trace form's rule took 1/(2 lam^{1/2}) of the
    # eigenvalues lam of B^{1/2} A B^{1/2} (condition number kappa_A kappa_B = 1e12, below
    # float32 round-off: clipped to 0, inf * 0 = NaN). Now from the SVD of B^{1/2} A^{1/2}.
    # Reference: float64 gradient (the same rule, exact to 1e-10 here) on the rounded inputs.
    f = _w2_grads  # jitted once: the cond cases share its programs (same shapes)
    pairs = [(random_spd(rng, d, cond), random_spd(rng, d, cond)) for _ in range(2)]
    S = random_spd(rng, d, cond)
    pairs.append((S, S))  # A = B: gradient exactly 0 (T = I); old code NaN here
    for A, B in pairs:
        A32, B32 = A.astype(np.float32), B.astype(np.float32)
        A64, B64 = A32.astype(np.float64), B32.astype(np.float64)
        g32 = f(jnp.asarray(A32), jnp.asarray(B32))
        g64 = f(jnp.asarray(A64), jnp.asarray(B64))
        for k, (x, y) in enumerate(zip(g32, g64)):
            x, y = np.asarray(x, np.float64), np.asarray(y)
            assert np.all(np.isfinite(x)), (k, x)
            T = np.eye(d) - y  # ||T||_2 >= 1 / ||T^{-1}|| and T^{-1} = T_B: scale of T
            bound = _w2_grad_tol(A64, B64, d) * np.linalg.norm(T, 2)
            err = np.linalg.norm(x - y, 2)
            assert err <= bound, (k, err, bound)


def test_bures_wasserstein_gradient(rng):
    d = 3
    A, B = random_spd(rng, d), random_spd(rng, d)
    a, b = rng.normal(size=d), rng.normal(size=d)

    @jax.jit  # once: the value, its gradient and the difference quotient reuse it
    def f(a, A):
        return gj.bures_wasserstein(gj.Gaussian(a, A), gj.Gaussian(jnp.asarray(b), B))

    w2 = float(f(jnp.asarray(a), jnp.asarray(A)))
    np.testing.assert_allclose(w2**2, np.sum((a - b) ** 2) + ref_w2(A, B), rtol=1e-10)
    ga, gA = jax.jit(jax.grad(f, argnums=(0, 1)))(jnp.asarray(a), jnp.asarray(A))
    np.testing.assert_allclose(ga, (a - b) / w2, rtol=1e-10)
    V = rng.normal(size=(d, d))
    V = V + V.T
    t = 1e-6
    fd = f(jnp.asarray(a), jnp.asarray(A + t * V)) - f(jnp.asarray(a), jnp.asarray(A - t * V))
    np.testing.assert_allclose(np.sum(gA * V), fd / (2 * t), rtol=1e-6)
    # At mu = nu: value at round-off level and the zero subgradient, not NaN.
    g0 = jax.jit(jax.grad(lambda A: gj.bures_wasserstein(G(A), G(jnp.asarray(A)))))(jnp.asarray(A))
    np.testing.assert_array_equal(g0, 0.0)


def _sd_cov_mp(A, B, eps):
    """Covariance part of ``S_eps`` by its three traces in 50-digit arithmetic (mpmath)."""
    import mpmath as mp

    with mp.workdps(50):
        e = mp.mpf(float(eps))

        def spectrum(P, Q):  # eigenvalues of P^{1/2} Q P^{1/2} (valid at singular P)
            Pm, Qm = mp.matrix(np.asarray(P).tolist()), mp.matrix(np.asarray(Q).tolist())
            w, V = mp.eigsy(Pm)
            X = V * mp.diag([mp.sqrt(max(x, 0)) for x in w]) * V.T
            return mp.eigsy(X * Qm * X, eigvals_only=True)

        def g(lam):
            r = mp.sqrt(1 + 16 * max(lam, 0) / e**2)
            return e / 2 * (mp.log((1 + r) / 2) - (r - 1))

        t = [sum(g(x) for x in spectrum(P, Q)) for P, Q in ((A, B), (A, A), (B, B))]
        return float(t[0] - (t[1] + t[2]) / 2)


def _sd_default_bound(A, B, eps, eps_mach):
    """The default value's error bound, ingredients from scipy in float64.

    The three-trace value: ``4 d eps_mach`` times the sum of the traces' magnitudes. The
    expansion at the Procrustes point (entropic.py, above ``_sd_factors``): truncation
    ``S h^2``, ``h = (|E| + |G|) / (s_min^2 + eps^2/16)^{1/2}``, ``E = -X R``, ``G = R^T R``,
    and the round-off of the residual ``R = A^{1/2} - B^{1/2} U`` (first order, as for W2).
    """
    d = A.shape[-1]
    X, Y = sl.sqrtm(A).real, sl.sqrtm(B).real
    Wl, s, Qt = np.linalg.svd(Y @ X)
    R = X - Y @ Wl @ Qt
    E, Gm = -X @ R, R.T @ R
    h = (np.linalg.norm(E) + np.linalg.norm(Gm)) / np.hypot(s[-1], eps / 4.0)
    scale = sum(abs(np.sum(_g(_ref_cross_eigs(P, Q), eps))) for P, Q in ((A, B), (A, A), (B, B)))
    b = sqrt_err_bound(A, eps_mach) + sqrt_err_bound(B, eps_mach)
    w2 = np.linalg.norm(R)
    ref = _sd_cov_mp(A, B, eps)
    return ref, min(4.0 * d * eps_mach * scale, 2.0 * ref * h**2 + 4.0 * w2 * b + b**2)


def test_sinkhorn_divergence_float32_nearby(rng):
    # Both the default and accurate=True: >= 0 and within the bound of the evaluation
    # they return; the default, near mu = nu, through the Procrustes-point expansion.
    d, eps = 16, 1.0
    for _ in range(10):
        A, B = nearby(rng, d, 1e-4)
        A32, B32 = A.astype(np.float32), B.astype(np.float32)
        mu32, nu32 = G(A32, jnp.float32), G(B32, jnp.float32)
        A64, B64 = A32.astype(np.float64), B32.astype(np.float64)
        ref, bound = _sd_default_bound(A64, B64, eps, EPS32)
        for accurate in (False, True):
            v = float(gj.sinkhorn_divergence(mu32, nu32, eps, accurate=accurate))
            assert v >= 0.0
            assert abs(v - ref) <= bound
            # relative: the plain three-trace form has no correct digit here
            assert abs(v - ref) <= 0.05 * ref


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("eps", [0.01, 1.0, 100.0])
def test_sinkhorn_divergence_default_is_accurate_near_zero(rng, dtype, eps):
    # From far apart to ~100 ulps apart, against 50-digit traces: the default value
    # is within its bound, and relatively accurate near 0 (where the three-trace form,
    # whose error is 4 d eps_mach * scale, has no correct digit left).
    d, e = 5, float(np.finfo(dtype).eps)
    for h in (1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-8):
        A, B = nearby(rng, d, h)
        A, B = A.astype(dtype).astype(np.float64), B.astype(dtype).astype(np.float64)
        if np.linalg.eigvalsh(B)[0] <= 0 or np.array_equal(A, B):
            continue
        ref, bound = _sd_default_bound(A, B, eps, e)
        v = float(gj.sinkhorn_divergence(G(A, dtype), G(B, dtype), eps))
        assert v >= 0.0
        assert abs(v - ref) <= bound, (h, v, ref, bound)


@pytest.mark.parametrize("eps", [0.01, 1.0, 100.0])
def test_sinkhorn_divergence_float64_accuracy(rng, eps):
    d = 5
    for h in (1.0, 1e-1, 1e-3):
        if h < 1:
            A, B = nearby(rng, d, h)
        else:
            A, B = random_spd(rng, d), random_spd(rng, d, 50.0)
        v = float(gj.sinkhorn_divergence(G(A), G(B), eps))
        ref = ref_sd(A, B, eps)
        scale = sum(abs(np.sum(_g(_ref_cross_eigs(P, Q), eps))) for P, Q in ((A, B),) * 3)
        # the reference's own cancellation error bounds the comparison
        assert abs(v - ref) <= 1e-9 * ref + 1e3 * d * 2.2e-16 * scale


def test_sinkhorn_divergence_commuting_hand_value():
    # Diagonal covariances: S_eps is the sum of the 1-D values, each
    # g(ab) - g(a^2)/2 - g(b^2)/2 in the variances a, b (>= 0 by concavity).
    a = np.array([1.0, 2.0, 0.5, 3.0])
    b = a * (1.0 + np.array([1e-3, -2e-3, 5e-4, 1e-3]))
    eps = 0.7
    ref = np.sum(_g(a * b, eps) - 0.5 * _g(a * a, eps) - 0.5 * _g(b * b, eps))
    for dtype, rtol in ((jnp.float64, 1e-8), (jnp.float32, 2e-2)):
        mu, nu = G(np.diag(a), dtype), G(np.diag(b), dtype)
        v = gj.sinkhorn_divergence(mu, nu, eps, accurate=True)
        np.testing.assert_allclose(float(v), ref, rtol=rtol)
        # The default three-trace form: >= 0, absolute error ~ d eps * (sum of |traces|).
        fast = float(gj.sinkhorn_divergence(mu, nu, eps))
        scale = np.sum(np.abs(_g(a * b, eps))) + np.sum(np.abs(_g(a * a, eps)))
        assert 0.0 <= fast and abs(fast - ref) <= 8 * len(a) * jnp.finfo(dtype).eps * scale


def test_sinkhorn_divergence_gradient_rule_kept(rng):
    # The gradient comes from the value's factorisations (one eigh pair and one SVD), its
    # own derivatives from the three-trace form (trace_fn's rules). Both gradients are
    # differences of terms of size <= |g'| ||B|| with |g'| <= 2/eps, evaluated from
    # backward-stable factorisations: they agree to ~ d eps_mach (||A|| + ||B||) 2/eps.
    # Second derivatives (jvp of the gradient) are the three-trace form's, exactly.
    from gaussot_jax.entropic import _sd_cov_naive

    d, e = 4, 0.5
    A, B = nearby(rng, d, 1e-3)
    args = (jnp.asarray(A), jnp.asarray(B), jnp.asarray(e))
    # (all jitted: an eager grad or jvp dispatches, and compiles, each primitive alone)
    naive = jax.jit(jax.grad(lambda *p: _sd_cov_naive(*p)[0], argnums=(0, 1, 2)))
    tol = 8 * d * 2.2e-16 * (np.linalg.norm(A, 2) + np.linalg.norm(B, 2)) * 2.0 / e
    dA = jnp.asarray(rng.normal(size=(d, d)))
    tangent = (dA, jnp.zeros((d, d)), jnp.asarray(0.3))
    hvp_naive = jax.jit(lambda *a: jax.jvp(naive, a, tangent)[1])(*args)
    for accurate in (False, True):
        f = lambda A, B, e: gj.sinkhorn_divergence(G(A), G(B), e, accurate=accurate)  # noqa: E731
        grad = jax.grad(f, argnums=(0, 1, 2))
        for x, y in zip(jax.jit(grad)(*args), naive(*args)):
            np.testing.assert_allclose(x, y, rtol=0, atol=tol)
        hvp = jax.jit(lambda *a: jax.jvp(grad, a, tangent)[1])  # noqa: B023
        for x, y in zip(hvp(*args), hvp_naive):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------
# Item 6: edges
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("d", [4, 5])
def test_dirac_first_argument(dtype, d):
    dirac, std = G(np.zeros((d, d)), dtype), G(np.eye(d), dtype)
    rtol = 1e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(float(gj.bures_wasserstein2(dirac, std)), d, rtol=rtol)
    for fn in (
        lambda m, n: gj.entropic_ot(m, n, 1.0).cost,
        lambda m, n: gj.sinkhorn_divergence(m, n, 1.0),
    ):
        v, swapped = float(fn(dirac, std)), float(fn(std, dirac))
        assert np.isfinite(v)
        np.testing.assert_allclose(v, swapped, rtol=rtol)
    # 1-D hand value: OT_eps(N(0,0), N(0,1)) = 1 (independence), S_eps = 1 - g(1)/2 ... per dim
    np.testing.assert_allclose(float(gj.entropic_ot(dirac, std, 1.0).cost), d, rtol=rtol)
    np.testing.assert_allclose(
        float(gj.sinkhorn_divergence(dirac, std, 1.0)),
        d * (1.0 - 0.5 * (2.0 + _g(1.0, 1.0))),
        rtol=rtol,
    )


@pytest.mark.parametrize("d", [4, 5])
def test_cholesky_fallback_shift_is_normal(d):
    for dtype in (jnp.float32, jnp.float64):
        F = linalg._psd_factor(jnp.zeros((d, d), dtype))
        assert bool(jnp.all(jnp.isfinite(F)))
        assert float(jnp.max(jnp.abs(F))) ** 2 <= 2 * float(jnp.finfo(dtype).tiny)


@pytest.mark.parametrize(
    "dtype, scale",
    [
        (jnp.float32, 1e10),
        (jnp.float32, 1e-10),
        (jnp.float32, 1e18),
        (jnp.float64, 1e100),
        (jnp.float64, 1e-100),
    ],
)
@pytest.mark.parametrize("d", [2, 3])
def test_jacobi_scale_invariant(rng, dtype, scale, d):
    A, B = random_spd(rng, d, 10.0), random_spd(rng, d, 10.0)
    ref = ref_w2(A, B)
    e = float(jnp.finfo(dtype).eps)
    v = float(gj.bures_wasserstein2(G(scale * A, dtype), G(scale * B, dtype))) / scale
    # square-root error bound (cond 10, unit norm), on W2 (not squared)
    bound = sqrt_err_bound(A, e) + sqrt_err_bound(B, e)
    assert abs(np.sqrt(v) - np.sqrt(ref)) <= bound
    w, _ = linalg._jacobi_eigh(jnp.asarray(scale * A, dtype))
    np.testing.assert_allclose(
        np.asarray(w, np.float64) / scale, np.linalg.eigvalsh(A), rtol=8 * d * e, atol=8 * d * e
    )


def test_biased_barycenter_singular_raises():
    mus = gj.Gaussian(jnp.zeros((2, 2)), jnp.stack([jnp.eye(2), 2 * jnp.eye(2)]))
    with pytest.raises(ValueError, match="did not converge"):
        gj.entropic_barycenter(mus, None, 5.0)
    # below the threshold: one input of variance a gives a - eps/2 (hand value)
    one = gj.Gaussian(jnp.zeros((1, 1)), jnp.array([[[2.0]]]))
    np.testing.assert_allclose(gj.entropic_barycenter(one, None, 1.0).cov, [[1.5]], rtol=1e-8)
    with pytest.raises(ValueError, match="did not converge"):
        gj.entropic_barycenter(one, None, 4.5)


@pytest.mark.parametrize("cond", [5e4, 1e5, 1e6])
def test_psd_check_accepts_valid_float32(rng, cond):
    d = 2
    S = random_spd(rng, d, cond).astype(np.float32)
    assert np.linalg.eigvalsh(S.astype(np.float64))[0] > 0  # valid: PD as stored
    _checks.check_cov("S", S, definite=True)
    bad = S - 1e-4 * np.eye(d, dtype=np.float32) * float(np.max(np.abs(S)))
    with pytest.raises(ValueError, match="positive semi-definite"):
        _checks.check_cov("S", bad)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_entropic_eps_derivative_large_variance(dtype):
    # d OT / d eps = KL of the optimal plan (envelope theorem); 1-D per dimension:
    # KL = log((1 + s)/2) / 2, s = (1 + 16 a b / eps^2)^{1/2}, variances a, b.
    a, b, eps = 1e6, 2e6, 1e-3
    mu = gj.Gaussian(jnp.zeros(2, dtype), a * jnp.eye(2, dtype=dtype))
    nu = gj.Gaussian(jnp.ones(2, dtype), b * jnp.eye(2, dtype=dtype))
    got = jax.jit(jax.grad(lambda e: gj.entropic_ot(mu, nu, e).cost))(jnp.asarray(eps, dtype))
    s = np.sqrt(1.0 + 16.0 * a * b / eps**2)
    np.testing.assert_allclose(float(got), 2 * 0.5 * np.log((1.0 + s) / 2.0), rtol=1e-5)


@pytest.mark.parametrize("eps, gamma", [(1.0, 1e4), (1.0, 1e5), (1.0, 1e6)])
def test_unbalanced_float32_extreme_parameters(eps, gamma):
    # float64 reference: the transcribed mass formula of MATH.md §4 in longdouble-free
    # float64 numpy (commuting covariances: every matrix function is diagonal).
    d = 2
    A, B = np.eye(d), 0.5 * np.eye(d)
    a, b = np.zeros(d), np.ones(d)
    ma = mb = 1.0

    def ref():
        s2 = eps / 2
        lam = s2 + gamma / 2
        tau = gamma / (gamma + eps)
        At = (gamma / 2) * (np.eye(d) - lam * np.linalg.inv(A + lam * np.eye(d)))
        Bt = (gamma / 2) * (np.eye(d) - lam * np.linalg.inv(B + lam * np.eye(d)))
        C = sl.sqrtm(At @ Bt / tau + s2**2 / 4 * np.eye(d)).real - s2 / 2 * np.eye(d)
        X = A + B + lam * np.eye(d)
        ld = lambda M: np.linalg.slogdet(M)[1]  # noqa: E731
        lm = (
            (d * s2 / (2 * (gamma + s2))) * np.log(s2)
            + (1 / (tau + 1))
            * (np.log(ma) + np.log(mb) + ld(C) + (tau * ld(At @ Bt) - ld(A @ B)) / 2)
            - (a - b) @ np.linalg.solve(X, a - b) / (2 * (tau + 1))
            - ld(C - (2 / gamma) * At @ Bt) / 2
        )
        m = np.exp(lm)
        return gamma * (ma + mb - 2 * m) + eps * (ma * mb - m)

    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    out = gj.unbalanced_entropic_ot(
        gj.ScaledGaussian(f32(ma), f32(a), f32(A)),
        gj.ScaledGaussian(f32(mb), f32(b), f32(B)),
        f32(eps),
        f32(gamma),
    )
    # float64 itself cancels in the transcribed form: its error is ~1e-16 * (gamma + eps)
    # * |log lam| / cost; float32 is held to 1e3 eps32 relative (values ~4, terms O(1)).
    np.testing.assert_allclose(float(out.cost), ref(), rtol=1e3 * EPS32)
    assert float(out.cost) > 0


def test_unbalanced_float32_huge_epsilon():
    # eps = 1e8: the transcribed float64 formula itself fails (its log-mass terms cancel
    # at 1e-16 * log(lam) ~ 1e-15 against a value of 1/eps), so the reference is the
    # eps -> inf limit: m_pi -> m_a m_b exp(-(E||x-y||^2 under a ⊗ b) / eps) to first
    # order, hence UOT -> gamma (m_a + m_b - 2 m_a m_b) + m_a m_b E||x - y||^2 + O(1/eps).
    d, eps, gamma = 2, 1e8, 1.0
    A, B, a, b = np.eye(d), 0.5 * np.eye(d), np.zeros(d), np.ones(d)
    limit = gamma * 0.0 + (np.trace(A) + np.trace(B) + np.sum((a - b) ** 2))
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    out = gj.unbalanced_entropic_ot(
        gj.ScaledGaussian(f32(1.0), f32(a), f32(A)),
        gj.ScaledGaussian(f32(1.0), f32(b), f32(B)),
        f32(eps),
        f32(gamma),
    )
    np.testing.assert_allclose(float(out.cost), limit, rtol=1e-6)


def test_jacobi_jit_equals_eager():
    # jnp.ldexp under jit once halved an eigenvalue here (0.25 -> 0.125): jit and eager
    # must agree with LAPACK to round-off.
    from conftest import random_spd

    from gaussot_jax.linalg import _jacobi_eigh

    rng = np.random.default_rng(0)  # the draws of test_reference's _pair: nu.cov
    rng.normal(size=2), random_spd(rng, 2, cond=5.0), rng.normal(size=2)
    S = jnp.asarray(2.0 * random_spd(rng, 2, cond=8.0))
    ref = np.linalg.eigvalsh(np.asarray(S))
    for w in (_jacobi_eigh(S)[0], jax.jit(_jacobi_eigh)(S)[0]):
        np.testing.assert_allclose(np.asarray(w), ref, rtol=8 * np.finfo(np.float64).eps)


# ---------------------------------------------------------------------------------------
# Gradients at a Dirac (B = 0): the costs are analytic there, the gradients closed forms.
# ---------------------------------------------------------------------------------------
def _uot_grad_at_dirac(A, delta, ma, mb, eps, gamma):
    """d UOT / dB at B = 0 (b = N(., 0)), from the module docstring of unbalanced.py.

    log m = kappa (log ma mb - u^T X^{-1} u / 2) + (1 - kappa)/2 (L(A) + L(B)) - L(A + B)/2
    + sum_i h(k_i), L(M) = logdet(I + M / lam), k_i the eigenvalues of At Bt. At B = 0:
    d L(B) = I / lam, d L(A + B) = X^{-1} (X = A + lam I), d(u^T X^{-1} u) = -X^{-1} u u^T
    X^{-1}, and d sum h(k) = h'(0) d Tr(At Bt) = h'(0) (gamma / (2 lam)) At, with
    h'(0) = c'(0) (1/(2 lam) - rho / sigma^2), c'(0) = 1 / (tau sigma^2). The cost's
    derivative in log m is -(2 gamma + eps) m.
    """
    d = A.shape[0]
    lam, sigma2 = 0.5 * (eps + gamma), 0.5 * eps
    tau, rho = gamma / (gamma + eps), eps / (2.0 * (2.0 * gamma + eps))
    kappa = (eps + gamma) / (eps + 2.0 * gamma)
    X = A + lam * np.eye(d)
    Xi = np.linalg.inv(X)
    z = Xi @ delta
    At = 0.5 * gamma * A @ Xi
    h1 = (1.0 / (tau * sigma2)) * (0.5 / lam - rho / sigma2)
    dlogm = (
        0.5 * kappa * np.outer(z, z)
        + 0.5 * (1.0 - kappa) / lam * np.eye(d)
        - 0.5 * Xi
        + h1 * gamma / (2.0 * lam) * At
    )
    logdet = np.linalg.slogdet(np.eye(d) + A / lam)[1]
    logm = kappa * (np.log(ma * mb) - 0.5 * delta @ z) - 0.5 * kappa * logdet
    return -(2.0 * gamma + eps) * np.exp(logm) * dlogm


@pytest.mark.parametrize("d", [1, 2, 4])
def test_gradients_at_dirac_closed_form(rng, d):
    # d = 1..3: Jacobi and the unrolled Cholesky; d > 3 (here 4): LAPACK Cholesky with the
    # shift.
    # At B = 0 every eigenvalue of AB is 0 and g(lam) = g'(0) lam + O(lam^2), g'(0) =
    # -4 / (eps (1 + 1)) = -2 / eps, so grad_B Tr g(AB) = A^{1/2} g'(0) A^{1/2}:
    #   d OT / dB = I - (2/eps) A,   d S_eps / dB = -(2/eps) A   (Tr g(BB) is O(||B||^2)).
    # Error: the factor F of A (F F^T = A + E, ||E|| <= p eps ||A||, p the eigensolver's
    # or Cholesky's backward error, conftest) enters as (2/eps) F F^T, plus the rounding of
    # I - (...): <= p eps (1 + (2/eps) ||A||_2); the unbalanced gradient sums four terms,
    # each with a backward error p eps kappa(X) relative to its size (X = A + lam I).
    eps, gamma, ma, mb = 0.5, 1.0, 1.5, 0.7
    A = random_spd(rng, d, 10.0)
    a, b = rng.normal(size=d), rng.normal(size=d)
    Z = jnp.zeros((d, d))
    p = eig_backward_error(d, np.float64)
    nA = np.linalg.norm(A, 2)
    bound = p * (1.0 + 2.0 / eps * nA)

    def ot(A_, B_, a_=a, b_=b):
        return gj.entropic_ot(gj.Gaussian(a_, A_), gj.Gaussian(b_, B_), eps).cost

    # (the gradients jitted: an eager grad dispatches, and compiles, each primitive alone)
    want = np.eye(d) - 2.0 / eps * A
    gB = jax.jit(jax.grad(ot, argnums=1))(jnp.asarray(A), Z)
    gA = jax.jit(jax.grad(ot, argnums=0))(Z, jnp.asarray(A))  # the swapped case, A = 0
    for g in (gB, gA):
        assert np.all(np.isfinite(g))
        assert np.abs(np.asarray(g) - want).max() <= bound
    sd = jax.jit(
        jax.grad(lambda B_: gj.sinkhorn_divergence(gj.Gaussian(a, A), gj.Gaussian(b, B_), eps))
    )(Z)
    assert np.abs(np.asarray(sd) + 2.0 / eps * A).max() <= bound

    def uot(A_, B_, a_, b_, ma_, mb_):
        return gj.unbalanced_entropic_ot(
            gj.ScaledGaussian(ma_, a_, A_), gj.ScaledGaussian(mb_, b_, B_), eps, gamma
        ).cost

    want_u = _uot_grad_at_dirac(A, b - a, ma, mb, eps, gamma)
    X = A + 0.5 * (eps + gamma) * np.eye(d)
    bound_u = 4.0 * p * np.linalg.cond(X) * max(1.0, np.abs(want_u).max())
    gu = jax.jit(jax.grad(uot, argnums=1))(jnp.asarray(A), Z, a, b, ma, mb)
    gu_swapped = jax.jit(jax.grad(uot, argnums=0))(Z, jnp.asarray(A), b, a, mb, ma)
    for g in (gu, gu_swapped):
        assert np.all(np.isfinite(g))
        assert np.abs(np.asarray(g) - want_u).max() <= bound_u
