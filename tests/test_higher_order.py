"""Derivatives of order 2 and 3 at repeated and at distinct eigenvalues.

Oracle: central differences of the (first-order) gradient. The difference quotient
``(g(x + h v) - g(x - h v)) / 2h`` misses ``H v`` by ``h^2 |g'''| / 6 + eps_g |g| / h``,
``eps_g`` the relative accuracy of the gradient itself (a small multiple of the float64
eps = 2.2e-16 for these well-conditioned points); ``h = eps^(1/3) = 6e-6`` balances the two
at ``~eps^(2/3) = 4e-11`` times those constants (order 1 to 1e3 here: unit-norm directions,
spectra in [0.1, 3]), so ``1e-6`` relative leaves a wide margin and still fails any rule
that is wrong at order 2 (the former one: 1e-2 to 2x off at A = B = I, NaN at d = 4).

At ``A = B = I`` every eigenvalue is repeated, and at ``x +- h v`` they split by ~h: both
the exactly repeated and the nearly repeated case are exercised.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import eig_backward_error, random_spd

import gaussot_jax as gj

EPS = float(np.finfo(np.float64).eps)
H = EPS ** (1.0 / 3.0)
RTOL = 1e-6


def _sym_unit(rng, d):
    V = rng.normal(size=(d, d))
    V = V + V.T
    return V / np.linalg.norm(V)


def _points(rng, d, n):
    """``n`` covariances at the identity, then ``n`` random SPD ones (spectra in [0.1, 3])."""
    eye = [np.eye(d)] * n
    rand = [3.0 * random_spd(rng, d, 30.0) for _ in range(n)]
    return eye, rand


def _check_hvp(loss, points):
    """jvp of grad of ``loss`` at each ``(x, v)`` of ``points`` against a central difference.

    One compilation for all points (same shapes).
    """
    grad = jax.grad(loss)

    @jax.jit
    def hvp_and_fd(x, v):
        hv = jax.jvp(grad, (x,), (v,))[1]
        # grad at x + h v and x - h v as one batch: one copy of the gradient program.
        steps = jnp.asarray([H, -H])
        ends = jax.vmap(lambda t: jax.tree.map(lambda a, b: a + t * b, x, v))(steps)
        g = jax.vmap(grad)(ends)
        return hv, jax.tree.map(lambda a: (a[0] - a[1]) / (2.0 * H), g)

    for x, v in points:
        hv, fd = hvp_and_fd(x, v)
        hv, fd = (np.concatenate([np.ravel(a) for a in jax.tree.leaves(t)]) for t in (hv, fd))
        assert np.all(np.isfinite(hv)), hv
        err = np.linalg.norm(hv - fd) / np.linalg.norm(fd)
        assert err < RTOL, err


# One scalar loss per quantity: the quantity contracted with a fixed random weight, as a
# function of the covariances (A, B) (and, where named, a scalar parameter).
def _weight(d, seed=1):
    return np.random.default_rng(seed).normal(size=(d, d))


def _gaussians(A, B):
    d = A.shape[-1]
    m = np.random.default_rng(2).normal(size=(2, d))
    return gj.Gaussian(m[0], A), gj.Gaussian(m[1], B)


def _entropic(A, B):
    mu, nu = _gaussians(A, B)
    return gj.entropic_ot(mu, nu, 0.7)


def _unbalanced(A, B):
    mu, nu = _gaussians(A, B)
    a, b = gj.ScaledGaussian(1.2, mu.mean, A), gj.ScaledGaussian(0.8, nu.mean, B)
    return gj.unbalanced_entropic_ot(a, b, 0.9, 1.5)


def _g_entropic(lam, eps):
    D = jnp.sqrt(eps**2 + 16.0 * lam)
    return -8.0 * lam / (eps + D) + 0.5 * eps * jnp.log((eps + D) / (2.0 * eps))


def _sum_w(X, seed=1):
    return jnp.sum(_weight(X.shape[-1], seed) * X)


def _potentials_at_point(A, B):
    f, g = _entropic(A, B).potentials
    x = np.random.default_rng(3).normal(size=A.shape[-1])
    return f(x) + g(-x)


def _bridge_tau(A, B):
    eta, mu = _gaussians(A, B)
    br = gj.schrodinger_bridge(eta, mu, gj.brownian_kernel(A.shape[-1], 0.6))
    return _sum_w(br.forward.tau)


LOSSES = {
    "psd_fn_exp": lambda A, B: _sum_w(gj.psd_fn(jnp.exp, A)),
    "sqrtm": lambda A, B: _sum_w(gj.sqrtm(A)),
    "trace_fn": lambda A, B: gj.trace_fn(_g_entropic, A, B, 0.7),
    "solve_coupling_cross_cov": lambda A, B: _sum_w(
        gj.solve_coupling(A, B, 1.5 * np.eye(A.shape[-1]) + 0.3 * _weight(A.shape[-1], 4)).cross_cov
    ),
    "entropic_cost": lambda A, B: _entropic(A, B).cost,
    "entropic_plan_cov": lambda A, B: _sum_w(_entropic(A, B).plan.cov),
    "entropic_potentials": _potentials_at_point,
    "bridge_forward_tau": _bridge_tau,
    "unbalanced_cost": lambda A, B: _unbalanced(A, B).cost,
    "unbalanced_plan_cov": lambda A, B: _sum_w(_unbalanced(A, B).plan.cov),
}


# d = 2: the Jacobi eigensolver (d <= 3); d = 4: LAPACK eigh (d >= 4). d = 8 ran the same
# LAPACK code as d = 4 (no other size-dependent branch) at one more compile per loss.
@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("d", [2, 4])
def test_hessian_vector_products(rng, name, d):
    loss = LOSSES[name]
    (A0, B0), (A1, B1) = _points(rng, d, 2)
    points = [
        ((jnp.asarray(A), jnp.asarray(B)), (_sym_unit(rng, d), _sym_unit(rng, d)))
        for A, B in ((A0, B0), (A1, B1))
    ]
    _check_hvp(lambda x: loss(*x), points)


@pytest.mark.parametrize("d", [2, 4])  # Jacobi and LAPACK, as above
def test_psd_fn_extra_argument_second_order(rng, d):
    """Mixed second derivatives in S and in the extra argument of f."""

    def loss(x):
        S, e = x
        return _sum_w(gj.psd_fn(lambda w, a: jnp.exp(-a * w) / (1.0 + a * w), S, e))

    points = [
        ((jnp.asarray(S), jnp.asarray(0.7)), (_sym_unit(rng, d), jnp.asarray(0.8)))
        for S in _points(rng, d, 1)[0] + _points(rng, d, 1)[1]
    ]
    _check_hvp(loss, points)


def test_jax_hessian_at_repeated_eigenvalues_against_finite_differences():
    """``jax.hessian`` (jacfwd of jacrev) of a scalar loss at A = B = I, d = 2."""
    d = 2

    def loss(a):
        A = a.reshape(d, d)
        return _entropic(0.5 * (A + A.T), jnp.eye(d)).cost + _sum_w(gj.psd_fn(jnp.exp, A))

    x = jnp.eye(d).ravel()
    Hm = jax.jit(jax.hessian(loss))(x)
    grad = jax.jit(jax.grad(loss))
    cols = [(grad(x + H * e) - grad(x - H * e)) / (2.0 * H) for e in np.eye(d * d)]
    fd = np.stack(cols, axis=1)
    assert np.all(np.isfinite(Hm))
    np.testing.assert_allclose(Hm, Hm.T, atol=_roundoff(d * d, Hm))
    assert np.linalg.norm(Hm - fd) / np.linalg.norm(fd) < RTOL


def _roundoff(d, ref):
    """Round-off bound for a derivative of a matrix function computed by eigh, entrywise.

    The eigenbasis is orthogonal to ``p eps`` and the eigenvalues exact for a perturbation
    of relative size ``p eps`` (``eig_backward_error``); the tangent is ``V (F o V^T E V) V^T``
    with ``F`` divided differences, i.e. three rotations and ``d``-term contractions:
    relative error ``<= 3 p eps + 2 d eps`` of the largest entry, times ``d`` for the sums
    of ``d`` such entries.
    """
    e = float(np.finfo(np.float64).eps)
    return (
        d
        * (3.0 * eig_backward_error(d, np.float64) + 2.0 * d * e)
        * max(1.0, float(np.abs(np.asarray(ref)).max()))
    )


def test_third_order_psd_fn_at_identity(rng):
    """jvp of jvp of grad of ``<W, exp(S)>`` at S = I against a difference of the HVP.

    The HVP is exact to round-off (~1e-15), so the difference of it has error
    ``h^2 |g''''| / 6 + eps / h``: ``h = eps^(1/3)`` again gives ~1e-10.
    """
    d = 4
    v = jnp.asarray(_sym_unit(rng, d))
    u = jnp.asarray(_sym_unit(rng, d))

    def loss(S):
        return _sum_w(gj.psd_fn(jnp.exp, S))

    def hvp(S):
        return jax.jvp(jax.grad(loss), (S,), (v,))[1]

    S = jnp.eye(d)
    third = jax.jit(lambda S: jax.jvp(hvp, (S,), (u,))[1])(S)
    hvp_j = jax.jit(hvp)
    fd = (hvp_j(S + H * u) - hvp_j(S - H * u)) / (2.0 * H)
    assert np.all(np.isfinite(third))
    assert np.linalg.norm(third - fd) / np.linalg.norm(fd) < RTOL
    # Closed form: at S = I every divided difference of exp of order 3 is e / 3!, so
    # D^3 <W, exp>(I)[v, u, E] = e / 6 * sum over the 6 orderings of Tr(Ws X Y Z), and
    # its gradient in E is the symmetric part of e / 6 * sum (Ws X Y + X Y Ws + Y Ws X)
    # over (X, Y) = (v, u), (u, v).
    W = _weight(d)
    Ws = 0.5 * (W + W.T)
    mats = (np.asarray(v), np.asarray(u))
    want = sum(Ws @ X @ Y + X @ Y @ Ws + Y @ Ws @ X for X, Y in (mats, mats[::-1]))
    want = np.e / 6.0 * 0.5 * (want + want.T)
    np.testing.assert_allclose(third, want, rtol=0, atol=4 * _roundoff(d, want))


@pytest.mark.parametrize("method", ["jacobi", "eigh"])
def test_second_order_jacobi_and_eigh_paths(rng, method):
    """Both eigensolvers at d = 3 (the Jacobi path's largest size)."""
    d = 3

    def loss(S):
        return _sum_w(gj.psd_fn(jnp.exp, S, method=method))

    points = [(jnp.eye(d), _sym_unit(rng, d)), (jnp.asarray(random_spd(rng, d)), _sym_unit(rng, d))]
    _check_hvp(loss, points)


def test_second_order_under_vmap(rng):
    """vmap of an HVP equals one HVP per member; grad of vmap equals vmap of grad."""
    d = 2

    def loss(S):
        return _sum_w(gj.psd_fn(jnp.exp, S))

    Ss = jnp.stack([jnp.eye(d), jnp.asarray(random_spd(rng, d, 10.0))])
    vs = jnp.stack([jnp.asarray(_sym_unit(rng, d)) for _ in range(2)])

    def hvp(S, v):
        return jax.jvp(jax.grad(loss), (S,), (v,))[1]

    batched = jax.jit(jax.vmap(hvp))(Ss, vs)
    hvp_j = jax.jit(hvp)
    single = np.stack([hvp_j(S, v) for S, v in zip(Ss, vs)])
    np.testing.assert_allclose(batched, single, rtol=0, atol=_roundoff(d, single))
    # Closed form at S = I (f[1, 1, 1] = e / 2): D^2 exp(I)[v, E] = e / 2 (v E + E v), so
    # the HVP of <W, exp> along v is e / 2 (Ws v + v Ws).
    W, v = _weight(d), np.asarray(vs[0])
    Ws = 0.5 * (W + W.T)
    want = np.e / 2 * (Ws @ v + v @ Ws)
    np.testing.assert_allclose(batched[0], want, rtol=0, atol=_roundoff(d, want))
    # grad of vmap (the batch level inside the derivative) agrees too.
    g_outer = jax.jit(jax.grad(lambda Ss: jnp.sum(jax.vmap(loss)(Ss))))(Ss)
    g_inner = np.asarray(jax.jit(jax.vmap(jax.grad(loss)))(Ss))
    np.testing.assert_allclose(g_outer, g_inner, rtol=0, atol=_roundoff(d, g_inner))


def test_python_scalar_tangent_of_a_parameter():
    # jax.jvp with a Python-float tangent for g's parameter (eps): the Frechet rule
    # indexed the tangent and raised TypeError ('float' object is not subscriptable).
    # Both jvps are traced in one jit (not run op by op): 0.5 and 0.3 stay Python floats
    # when traced, so the rule sees the same tangent as eagerly (without the fix this
    # raises the same TypeError).
    from gaussot_jax.entropic import _sd_cov_naive

    A, B = 2.0 * jnp.eye(4), jnp.diag(jnp.arange(1.0, 5.0))
    grad = jax.grad(lambda *p: _sd_cov_naive(*p)[0], argnums=(0, 1, 2))
    dA, dB = jnp.ones((4, 4)), jnp.zeros((4, 4))

    @jax.jit
    def both(A, B, dA, dB):
        scalar = jax.jvp(grad, (A, B, 0.5), (dA, dB, 0.3))[1]
        array = jax.jvp(grad, (A, B, jnp.asarray(0.5)), (dA, dB, jnp.asarray(0.3)))[1]
        return scalar, array

    scalar, array = both(A, B, dA, dB)
    for x, y in zip(scalar, array):
        np.testing.assert_array_equal(x, y)
