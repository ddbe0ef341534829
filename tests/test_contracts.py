"""Array and input contracts of the public functions (issue 11, items 3 and 7).

One parametrised matrix, in the style of lineax's ``tests/test_jvp*.py``:

* matrix functions on ``(..., d, d)`` batches equal a Python loop over single matrices,
  and commute with ``jit`` and ``vmap``;
* maps, potentials and densities on ``(..., d)`` points equal a loop over single points,
  in float32 and float64;
* every bad input raises ``ValueError`` naming the argument when concrete, and a run-time
  error with the same message under ``jit`` inside ``gj.checks()``.

The loop oracles are independent of the batching code (each call sees one matrix or one
point). Batched and looped values run the same kernel on the same data, so they agree to
the rounding of the batched LAPACK / XLA kernels: a few eps of the result's scale.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_spd

import gaussot_jax as gj

pytestmark = pytest.mark.timeout(300)

DTYPES = [jnp.float64, jnp.float32]


def _close(dtype) -> float:
    # Same kernel, batched vs one at a time: reductions may associate differently, so
    # allow d^2 roundings of the result's scale (d <= 4 here).
    return 64 * float(jnp.finfo(dtype).eps)


def _assert_same(batched, loop, dtype):
    batched, loop = np.asarray(batched, np.float64), np.asarray(loop, np.float64)
    assert batched.shape == loop.shape
    scale = max(1.0, np.abs(loop).max())
    np.testing.assert_allclose(batched, loop, rtol=0, atol=_close(dtype) * scale)


def _ent_g(lam, eps):
    tr_c, kl = gj.isotropic_terms(lam, 2.0 / eps)
    return -2.0 * tr_c + eps * kl


def _shifted(S):
    return S + 0.5 * jnp.eye(S.shape[-1], dtype=S.dtype)


# name -> (function of a batch of matrices S (..., d, d), definite?)
MATRIX_FUNCTIONS = {
    "sqrtm": (gj.sqrtm, False),
    "sqrtm_eigh": (lambda S: gj.sqrtm(S, method="eigh"), False),
    "sqrtm_newton_schulz": (lambda S: gj.sqrtm(S, method="newton_schulz"), False),
    "inv_sqrtm": (gj.inv_sqrtm, True),
    "psd_fn": (lambda S: gj.psd_fn(jnp.log1p, S), False),
    "psd_fn_args": (lambda S: gj.psd_fn(lambda w, e: w / (w + e), S, 0.3), False),
    "trace_fn": (lambda S: gj.trace_fn(jnp.sqrt, S, _shifted(S)), False),
    "trace_fn_args": (lambda S: gj.trace_fn(_ent_g, S, 2.0 * S, 0.7), False),
}


def _batch(rng, shape, d, dtype):
    mats = [random_spd(rng, d, 20.0) for _ in range(int(np.prod(shape)))]
    return jnp.asarray(np.stack(mats).reshape(*shape, d, d), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [2, 4])
@pytest.mark.parametrize("batch", [(3,), (2, 3)])
@pytest.mark.parametrize("name", sorted(MATRIX_FUNCTIONS))
def test_matrix_functions_batch_axes_equal_loop(rng, name, batch, d, dtype):
    fn, _ = MATRIX_FUNCTIONS[name]
    S = _batch(rng, batch, d, dtype)
    out = fn(S)
    flat = S.reshape(-1, d, d)
    loop = jnp.stack([fn(M) for M in flat])
    assert out.dtype == dtype
    _assert_same(out, loop.reshape(*batch, *loop.shape[1:]), dtype)
    # jit and vmap of the public function give the same.
    _assert_same(jax.jit(fn)(S), out, dtype)
    _assert_same(jax.vmap(fn)(flat), loop, dtype)


def test_trace_fn_broadcasts_batch_shapes(rng):
    A = _batch(rng, (3,), 2, jnp.float64)
    B = jnp.asarray(random_spd(rng, 2, 5.0))
    out = gj.trace_fn(jnp.sqrt, A, B)
    assert out.shape == (3,)
    _assert_same(out, [gj.trace_fn(jnp.sqrt, a, B) for a in A], jnp.float64)


def test_batched_sqrtm_is_a_root_and_differentiable(rng):
    # An independent check of the batched value: X X = S for every member, and the
    # gradient of the batched call equals the sum of the per-member gradients.
    S = _batch(rng, (2, 3), 3, jnp.float64)
    X = gj.sqrtm(S)
    np.testing.assert_allclose(X @ X, S, atol=1e-13)
    g = jax.grad(lambda S: jnp.sum(gj.sqrtm(S) ** 2))(S)
    one = jax.grad(lambda M: jnp.sum(gj.sqrtm(M) ** 2))
    loop = jnp.stack([one(M) for M in S.reshape(-1, 3, 3)])
    _assert_same(g, loop.reshape(S.shape), jnp.float64)


# --------------------------------------------------------------------------------------
# Points of shape (..., d).
# --------------------------------------------------------------------------------------
def _problem(rng, d, dtype):
    c = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    mu = gj.Gaussian(c(rng.normal(size=d)), c(random_spd(rng, d, 5.0)))
    nu = gj.Gaussian(c(rng.normal(size=d)), c(random_spd(rng, d, 5.0)))
    return mu, nu


def _point_functions(rng, d, dtype):
    mu, nu = _problem(rng, d, dtype)
    ot = gj.entropic_ot(mu, nu, 0.5)
    c = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    kernel = gj.LinearGaussianKernel(
        c(rng.normal(size=d)), c(0.5 * rng.normal(size=(d, d))), c(random_spd(rng, d, 3.0))
    )
    scaled = gj.ScaledGaussian(c(2.0), mu.mean, mu.cov)
    y = c(rng.normal(size=d))
    return {
        "Gaussian.log_prob": mu.log_prob,
        "ScaledGaussian.log_density": scaled.log_density,
        "entropic_map": ot.entropic_map,
        "potential_f": ot.potentials[0],
        "potential_g": ot.potentials[1],
        "monge_map": gj.monge_map(mu, nu),
        "kernel.log_prob": lambda x: kernel.log_prob(x, y),
        "kernel.__call__.mean": lambda x: kernel(x).mean,
        "kernel.log_prob_xy": lambda x: kernel.log_prob(x, x + y),
    }


POINT_FUNCTIONS = [
    "Gaussian.log_prob",
    "ScaledGaussian.log_density",
    "entropic_map",
    "potential_f",
    "potential_g",
    "monge_map",
    "kernel.log_prob",
    "kernel.__call__.mean",
    "kernel.log_prob_xy",
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (3,), (4, 3), (2, 3, 1)])
@pytest.mark.parametrize("name", POINT_FUNCTIONS)
def test_points_equal_loop(rng, name, shape, dtype):
    # shape (3,) with d = 3 is the case that used to give wrong numbers silently (n == d).
    d = 3
    fn = _point_functions(rng, d, dtype)[name]
    x = jnp.asarray(rng.normal(size=(*shape, d)), dtype)
    out = fn(x)
    loop = jnp.stack([fn(p) for p in x.reshape(-1, d)])
    expect = loop.reshape(*shape, *loop.shape[1:])
    assert out.dtype == dtype
    _assert_same(out, expect, dtype)
    _assert_same(jax.jit(lambda x: fn(x))(x), expect, dtype)


def test_points_against_closed_forms(rng):
    # Independent oracles: scipy's multivariate normal, and the affine map by hand.
    import scipy.stats

    mu, nu = _problem(rng, 3, jnp.float64)
    x = rng.normal(size=(4, 5, 3))
    ref = scipy.stats.multivariate_normal(np.asarray(mu.mean), np.asarray(mu.cov)).logpdf(x)
    np.testing.assert_allclose(mu.log_prob(x), ref, rtol=1e-12)
    T = gj.monge_map(mu, nu)
    np.testing.assert_allclose(T(x), x @ np.asarray(T.matrix).T + np.asarray(T.offset))


# (kernel.log_prob_xy forms x + y first, which fails in jnp's own broadcasting.)
@pytest.mark.parametrize("name", [n for n in POINT_FUNCTIONS if n != "kernel.log_prob_xy"])
def test_points_wrong_last_dimension(rng, name):
    fn = _point_functions(rng, 3, jnp.float64)[name]
    for x in (jnp.zeros((5, 2)), jnp.zeros(4), jnp.zeros(())):
        with pytest.raises(ValueError, match=r"\bx must have shape \(\.\.\., 3\)"):
            fn(x)


# --------------------------------------------------------------------------------------
# Bad input: ValueError naming the argument (eager), the same message under jit with
# the switch on.
# --------------------------------------------------------------------------------------
_I2 = np.eye(2)
_MU = gj.Gaussian(np.zeros(2), _I2)
_NU = gj.Gaussian(np.ones(2), 2.0 * _I2)
_A = gj.ScaledGaussian(1.0, np.zeros(2), _I2)
_MUS = gj.Gaussian(np.zeros((3, 2)), np.stack([_I2] * 3))
_SDE = gj.LinearSDE.brownian(2)
_PLAN = gj.Gaussian(np.zeros(4), np.eye(4))


def _kernel(tau):
    return gj.LinearGaussianKernel(np.zeros(2), _I2, tau, validate=False)


def _gauss(S):
    return gj.Gaussian(np.ones(2), S, validate=False)


# Value problems: (name, function of one array argument, bad value, message pattern).
# Each is checked eagerly (ValueError) and under jit inside gj.checks() (run-time error).
VALUE_CASES = [
    ("sqrtm-indefinite", gj.sqrtm, -_I2, "S is not positive semi-definite"),
    ("sqrtm-nonsymmetric", gj.sqrtm, np.array([[1.0, 0.5], [0.0, 1.0]]), "S is not symmetric"),
    ("sqrtm-nan", gj.sqrtm, np.array([[np.nan, 0.0], [0.0, 1.0]]), "S contains NaN"),
    ("inv_sqrtm-singular", gj.inv_sqrtm, np.diag([1.0, 0.0]), "S must be positive definite"),
    ("psd_fn-indefinite", lambda S: gj.psd_fn(jnp.exp, S), -_I2, "S is not positive"),
    ("trace_fn-A", lambda S: gj.trace_fn(jnp.sqrt, S, _I2), -_I2, "A is not positive"),
    ("trace_fn-B", lambda S: gj.trace_fn(jnp.sqrt, _I2, S), -_I2, "B is not positive"),
    (
        "sqrtm-batch-member",
        gj.sqrtm,
        np.stack([_I2, -_I2]),
        r"S is not positive semi-definite",
    ),
    ("mccann-t2", lambda t: gj.mccann_interpolation(_MU, _NU, t).cov, 2.0, "t must be in"),
    ("mccann-tnan", lambda t: gj.mccann_interpolation(_MU, _NU, t).cov, np.nan, "t must be in"),
    ("entropic-eps0", lambda e: gj.entropic_ot(_MU, _NU, e).cost, 0.0, "epsilon must be > 0"),
    ("entropic-eps-1", lambda e: gj.entropic_ot(_MU, _NU, e).cost, -1.0, "epsilon must be > 0"),
    ("entropic-epsnan", lambda e: gj.entropic_ot(_MU, _NU, e).cost, np.nan, "epsilon must be"),
    (
        "divergence-eps0",
        lambda e: gj.sinkhorn_divergence(_MU, _NU, e),
        0.0,
        "epsilon must be > 0",
    ),
    (
        "unbalanced-gamma0",
        lambda g: gj.unbalanced_entropic_ot(_A, _A, 1.0, g).cost,
        0.0,
        "gamma must be > 0",
    ),
    (
        "unbalanced-gamma-1",
        lambda g: gj.unbalanced_entropic_ot(_A, _A, 1.0, g).cost,
        -1.0,
        "gamma must be > 0",
    ),
    (
        "unbalanced-eps-1",
        lambda e: gj.unbalanced_entropic_ot(_A, _A, e, 1.0).cost,
        -1.0,
        "epsilon must be > 0",
    ),
    (
        "barycenter-weights",
        lambda w: gj.bures_barycenter(_MUS, weights=w).cov,
        np.array([1.0, -1.0, 1.0]),
        "weights must be",
    ),
    (
        "entropic-barycenter-eps",
        lambda e: gj.entropic_barycenter(_MUS, None, e).cov,
        -1.0,
        "epsilon must be > 0",
    ),
    (
        "pairwise-eps",
        lambda e: gj.pairwise(gj.entropic_ot, _MUS, _MUS, epsilon=e),
        -1.0,
        "epsilon must be > 0",
    ),
    (
        "pairwise-gamma",
        lambda g: gj.pairwise(
            gj.unbalanced_entropic_ot,
            gj.ScaledGaussian(np.ones(3), _MUS.mean, _MUS.cov),
            gj.ScaledGaussian(np.ones(3), _MUS.mean, _MUS.cov),
            epsilon=1.0,
            gamma=g,
        ),
        0.0,
        "gamma must be > 0",
    ),
    (
        "w2-nu-cov",
        lambda S: gj.bures_wasserstein2(_MU, gj.Gaussian(np.zeros(2), S)),
        -_I2,
        r"cov is not positive",
    ),
    (
        "entropic-mu-cov",
        lambda S: gj.entropic_ot(gj.Gaussian(np.zeros(2), S), _NU, 1.0).cost,
        np.array([[1.0, 2.0], [2.0, 1.0]]),
        r"cov is not positive",
    ),
    (
        "monge-mu-cov",
        lambda S: gj.monge_map(gj.Gaussian(np.zeros(2), S, validate=False), _NU).matrix,
        np.diag([1.0, 0.0]),
        r"mu\.cov must be positive definite",
    ),
    (
        "unbalanced-a-mass",
        lambda m: (
            gj.unbalanced_entropic_ot(
                gj.ScaledGaussian(m, np.zeros(2), _I2, validate=False), _A, 1.0, 1.0
            ).cost
        ),
        -1.0,
        r"a\.mass must be > 0",
    ),
    ("gaussian-cov", lambda S: gj.Gaussian(np.zeros(2), S).cov, -_I2, "cov is not positive"),
    ("gaussian-mean", lambda m: gj.Gaussian(m, _I2).mean, np.array([np.nan, 0.0]), "mean"),
    # Schrödinger bridges, Gaussian Sinkhorn and SDE references (bridge.py, sinkhorn.py,
    # sde.py): before, their traced values were checked by calls whose result was
    # dropped, so under jit inside gj.checks() a bad value passed silently.
    (
        "bridge-kernel-tau",
        lambda tau: gj.schrodinger_bridge(_MU, _NU, _kernel(tau)).plan.cov,
        np.diag([1.0, 0.0]),
        r"kernel\.tau must be positive definite",
    ),
    (
        "bridge-mu-cov",
        lambda S: gj.schrodinger_bridge(_MU, _gauss(S), _kernel(_I2)).plan.cov,
        -_I2,
        r"mu\.cov must be positive definite",
    ),
    (
        "bridge-eta-mean",
        lambda m: gj.schrodinger_bridge(gj.Gaussian(m, _I2), _NU, _kernel(_I2)).plan.mean,
        np.array([np.nan, 0.0]),
        r"mean contains NaN",
    ),
    (
        "sinkhorn-eta-cov",
        lambda S: gj.gaussian_sinkhorn(_gauss(S), _NU, _kernel(_I2), 3).forward.tau,
        np.diag([1.0, 0.0]),
        r"eta\.cov must be positive definite",
    ),
    (
        "sinkhorn-riccati-tau",
        lambda tau: gj.gaussian_sinkhorn(_MU, _NU, _kernel(tau), 3, method="riccati").forward.tau,
        -_I2,
        r"kernel\.tau must be positive definite",
    ),
    (
        "sinkhorn-fixed-point-mu",
        lambda S: gj.sinkhorn_fixed_point(_MU, _gauss(S), _kernel(_I2), 3).tau,
        np.array([[1.0, 2.0], [2.0, 1.0]]),
        r"mu\.cov must be positive definite",
    ),
    ("brownian-T", lambda T: gj.brownian_kernel(2, T).tau, 0.0, "T must be > 0"),
    ("brownian-sigma", lambda s: gj.brownian_kernel(2, 1.0, sigma=s).tau, -1.0, "sigma must be"),
    ("ou-sigma", lambda s: gj.ou_kernel(2, 1.0, 0.5, s).tau, -1.0, "sigma must be > 0"),
    ("ou-theta", lambda th: gj.ou_kernel(2, 1.0, th, 1.0).tau, np.nan, "theta contains NaN"),
    ("ou-T", lambda T: gj.ou_kernel(2, T, 0.5, 1.0).tau, -1.0, "T must be > 0"),
    (
        "linear-sde-T",
        lambda T: gj.linear_sde_kernel(-_I2, np.zeros(2), _I2, T).tau,
        -1.0,
        "T must be > 0",
    ),
    (
        "linear-sde-M",
        lambda M: gj.linear_sde_kernel(M, np.zeros(2), _I2, 1.0).tau,
        np.array([[np.nan, 0.0], [0.0, 1.0]]),
        "M contains NaN",
    ),
    (
        "sde-ou-sigma",
        lambda s: gj.LinearSDE.ornstein_uhlenbeck(2, 1.0, s).kernel(1.0).tau,
        0.0,
        "sigma must be > 0",
    ),
    ("pinned-t", lambda t: gj.pinned_kernel(_SDE, t, 1.0).tau, 2.0, r"t must lie in \[0, T\]"),
    (
        "pinned-t-nan",
        lambda t: gj.pinned_kernel(_SDE, t, 1.0).tau,
        np.nan,
        r"t (contains NaN|must lie in \[0, T\])",
    ),
    ("pinned-T", lambda T: gj.pinned_kernel(_SDE, 0.5, T).tau, -1.0, "T must be > 0"),
    (
        "pinned-tau-singular",
        lambda G: gj.pinned_kernel(gj.LinearSDE(-_I2, np.zeros(2), G), 0.5, 1.0).tau,
        np.zeros((2, 2)),
        "tau_T is not positive definite",
    ),
    ("transition-order", lambda t: _SDE.transition(1.0, t).tau, 0.5, "need s < t"),
    (
        "bridge-paths-times",
        lambda ts: gj.sample_bridge_paths(jax.random.PRNGKey(0), _SDE, _PLAN, 1.0, ts, 2),
        np.array([0.5, 0.2]),
        "times must be strictly increasing",
    ),
    (
        "bridge-paths-range",
        lambda ts: gj.sample_bridge_paths(jax.random.PRNGKey(0), _SDE, _PLAN, 1.0, ts, 2),
        np.array([0.5, 1.5]),
        r"times must lie in \[0, T\]",
    ),
    (
        "bridge-marginal-T",
        lambda T: gj.bridge_marginal(_SDE, _PLAN, 0.5, T).cov,
        0.0,
        "T must be > 0",
    ),
]


@pytest.mark.parametrize("case", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_bad_value_eager(case):
    _, fn, bad, pattern = case
    with pytest.raises(ValueError, match=pattern):
        fn(bad)


@pytest.mark.parametrize("case", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_bad_value_under_jit_with_switch(case):
    _, fn, bad, pattern = case
    with gj.checks():
        f = jax.jit(fn)
        with pytest.raises(Exception, match=pattern) as info:
            jax.block_until_ready(f(jnp.asarray(bad)))
        assert isinstance(info.value, (RuntimeError, ValueError)), type(info.value)
    # The same argument with a good value runs (the check does not fire spuriously).


def test_switch_is_off_by_default_and_reenabled_after_cache():
    # Off: a traced bad epsilon is not checked (zero cost), NaN comes out. Entering the
    # switch clears the caches, so the same jitted function is traced again with checks.
    f = jax.jit(lambda e: gj.entropic_ot(_MU, _NU, e).cost)
    assert np.isnan(float(f(0.0)))
    with gj.checks():
        with pytest.raises(RuntimeError, match="epsilon must be > 0"):
            jax.block_until_ready(f(0.0))
        assert np.isfinite(float(f(0.5)))
    assert np.isnan(float(f(0.0)))


def test_batch_member_named_eagerly():
    S = np.stack([_I2, _I2, -_I2])
    member = r" \(batch member \({},\)\)"
    with pytest.raises(ValueError, match=r"S is not positive semi-definite" + member.format(2)):
        gj.sqrtm(S)
    bad = gj.Gaussian(_MUS.mean.at[1, 0].set(jnp.nan), _MUS.cov, validate=False)
    with pytest.raises(ValueError, match=r"mus\.mean contains NaN or inf" + member.format(1)):
        gj.pairwise(gj.bures_wasserstein2, bad, _MUS)
    with pytest.raises(ValueError, match=r"cov is not positive semi-definite" + member.format(1)):
        gj.Gaussian(np.zeros((2, 2)), np.stack([_I2, -_I2]))


@pytest.mark.parametrize(
    "fn, name",
    [
        (lambda g: gj.bures_wasserstein2(_MU, g), "nu"),
        (lambda g: gj.entropic_ot(g, _NU, 1.0).cost, "mu"),
        (lambda g: gj.sinkhorn_divergence(_MU, g, 1.0), "nu"),
    ],
)
def test_traced_gaussian_arguments_named(fn, name):
    # A Gaussian traced into jit (its constructor's checks ran on no values): inside
    # gj.checks() the public function checks it and the message names the argument.
    bad = gj.Gaussian(np.zeros(2), -_I2, validate=False)
    with gj.checks():
        with pytest.raises(RuntimeError, match=rf"{name}\.cov is not positive"):
            jax.block_until_ready(jax.jit(fn)(bad))
        assert np.isfinite(float(jax.jit(fn)(_NU)))


def test_checked_names_the_argument():
    g = gj.Gaussian(np.zeros(2), -_I2, validate=False)
    with pytest.raises(ValueError, match=r"nu\.cov is not positive"):
        g.checked(name="nu")
    f = jax.jit(lambda g: g.checked(name="reference").cov)
    with pytest.raises(RuntimeError, match=r"reference\.cov is not positive"):
        jax.block_until_ready(f(g))
    k = gj.LinearGaussianKernel(np.zeros(2), _I2, -_I2, validate=False)
    with pytest.raises(ValueError, match=r"kernel\.tau is not positive"):
        k.checked(name="kernel")


# Shape and dtype problems: always ValueError naming the argument (static).
SHAPE_CASES = [
    ("sqrtm-nonsquare", lambda: gj.sqrtm(np.ones((2, 3))), r"S must have shape \(\.\.\., d, d\)"),
    ("sqrtm-1d", lambda: gj.sqrtm(np.ones(3)), r"S must have shape"),
    ("sqrtm-d0", lambda: gj.sqrtm(np.zeros((0, 0))), r"S must have d >= 1"),
    ("sqrtm-complex", lambda: gj.sqrtm(_I2 + 0j), "S must be real"),
    ("inv_sqrtm-complex", lambda: gj.inv_sqrtm(_I2 + 0j), "S must be real"),
    ("psd_fn-complex", lambda: gj.psd_fn(jnp.exp, _I2 + 0j), "S must be real"),
    ("psd_fn-f", lambda: gj.psd_fn(3.0, _I2), "f must be callable"),
    ("trace_fn-mismatch", lambda: gj.trace_fn(jnp.sqrt, _I2, np.eye(3)), "A and B"),
    (
        "trace_fn-batch",
        lambda: gj.trace_fn(jnp.sqrt, np.stack([_I2] * 2), np.stack([_I2] * 3)),
        "batch shapes of A",
    ),
    ("trace_fn-complex", lambda: gj.trace_fn(jnp.sqrt, _I2, _I2 + 0j), "B must be real"),
    ("gaussian-d0", lambda: gj.Gaussian(np.zeros(0), np.zeros((0, 0))), "mean must have shape"),
    ("gaussian-complex", lambda: gj.Gaussian(np.zeros(2), _I2 + 0j), "cov must be real"),
    ("mccann-complex-t", lambda: gj.mccann_interpolation(_MU, _NU, 0.5 + 0j), "t must be real"),
    (
        "mccann-vector-t",
        lambda: gj.mccann_interpolation(_MU, _NU, np.ones(2)),
        "t must be a scalar",
    ),
    ("entropic-complex-eps", lambda: gj.entropic_ot(_MU, _NU, 1.0 + 0j), "epsilon must be real"),
    ("pairwise-no-epsilon", lambda: gj.pairwise(gj.entropic_ot, _MUS, _MUS), "epsilon"),
    ("log_prob-complex", lambda: _MU.log_prob(np.zeros(2) + 0j), "x must be real"),
]


@pytest.mark.parametrize("case", SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_bad_shape_or_dtype(case):
    _, thunk, pattern = case
    with pytest.raises(ValueError, match=pattern):
        thunk()
    # Static problems raise at trace time under jit too (with or without the switch).
    with gj.checks(), pytest.raises(ValueError, match=pattern):
        jax.jit(lambda: thunk())()
