"""pairwise: equal to a double loop, blocks, traced keywords, gradients, sharding."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CompileCounter, random_spd

import gaussot_jax as gj


def _batch(rng, n, d):
    covs = np.stack([random_spd(rng, d, 20.0) for _ in range(n)])
    return gj.Gaussian(rng.normal(size=(n, d)), covs)


def _one(g, i):
    return gj.Gaussian(g.mean[i], g.cov[i])


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(0)
    return _batch(rng, 3, 2), _batch(rng, 4, 2)


def test_pairwise_equals_double_loop(batches):
    mus, nus = batches
    w2 = jax.jit(gj.bures_wasserstein2)
    ot = jax.jit(lambda mu, nu: gj.entropic_ot(mu, nu, 0.3).cost)
    loop_w2 = np.array([[w2(_one(mus, i), _one(nus, j)) for j in range(4)] for i in range(3)])
    loop_ot = np.array([[ot(_one(mus, i), _one(nus, j)) for j in range(4)] for i in range(3)])
    for bs in (None, 5, 12, 100):  # 5 does not divide 12 pairs: a padded last block
        np.testing.assert_allclose(
            gj.pairwise(gj.bures_wasserstein2, mus, nus, batch_size=bs), loop_w2, rtol=1e-12
        )
        # EntropicOT results are reduced to their cost
        np.testing.assert_allclose(
            gj.pairwise(gj.entropic_ot, mus, nus, batch_size=bs, epsilon=0.3),
            loop_ot,
            rtol=1e-12,
        )


def test_keywords_traced_grad_vmap_jit(batches):
    mus, nus = batches
    traces = []

    def cost(mu, nu, epsilon):
        traces.append(1)
        return gj.sinkhorn_divergence(mu, nu, epsilon)

    gj.pairwise(cost, mus, nus, batch_size=5, epsilon=0.3)
    gj.pairwise(cost, mus, nus, batch_size=5, epsilon=0.7)
    assert len(traces) == 1  # epsilon is traced: a new value does not retrace

    def total(eps, mean, bs):
        mus2 = gj.Gaussian(mean, mus.cov, validate=False)
        return jnp.sum(gj.pairwise(gj.sinkhorn_divergence, mus2, nus, batch_size=bs, epsilon=eps))

    grad = jax.jit(jax.grad(total, argnums=(0, 1)), static_argnums=2)
    value = jax.jit(total, static_argnums=2)
    # references: the mean enters S_eps only through ||a_i - b_j||^2, so
    # d/da_i = sum_j 2 (a_i - b_j); central differences for epsilon.
    d_mean = 2.0 * (4 * mus.mean - nus.mean.sum(0))
    h = 1e-5
    d_eps = (value(0.3 + h, mus.mean, None) - value(0.3 - h, mus.mean, None)) / (2 * h)
    for bs in (None, 5):
        g_eps, g_mean = grad(0.3, mus.mean, bs)
        np.testing.assert_allclose(g_mean, d_mean, rtol=1e-12)
        np.testing.assert_allclose(g_eps, d_eps, rtol=1e-7)

    eps = jnp.array([0.2, 0.5])
    many = jax.vmap(lambda e: gj.pairwise(gj.sinkhorn_divergence, mus, nus, epsilon=e))(eps)
    for k in range(2):
        np.testing.assert_allclose(
            many[k], gj.pairwise(gj.sinkhorn_divergence, mus, nus, epsilon=eps[k]), rtol=1e-12
        )


def test_float32(batches):
    mus, nus = batches
    f32 = [gj.Gaussian(g.mean.astype(jnp.float32), g.cov.astype(jnp.float32)) for g in batches]
    out = gj.pairwise(gj.entropic_ot, *f32, batch_size=5, epsilon=0.3)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(
        out, gj.pairwise(gj.entropic_ot, mus, nus, epsilon=0.3), rtol=2e-3, atol=1e-4
    )


def test_bad_inputs(batches):
    mus, nus = batches
    with pytest.raises(ValueError, match="fn"):
        gj.pairwise("w2", mus, nus)
    with pytest.raises(ValueError, match="batch_size"):
        gj.pairwise(gj.bures_wasserstein2, mus, nus, batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        gj.pairwise(gj.bures_wasserstein2, mus, nus, batch_size=2.5)
    with pytest.raises(ValueError, match="mus"):
        gj.pairwise(gj.bures_wasserstein2, _one(mus, 0), nus)
    with pytest.raises(ValueError, match="nus"):
        gj.pairwise(gj.bures_wasserstein2, mus, jnp.zeros(()))
    with pytest.raises(ValueError, match="fn must return a scalar"):
        gj.pairwise(lambda mu, nu: mu.mean - nu.mean, mus, nus)


_SHARDED = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    import gaussot_jax as gj

    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    def batch(n, d):
        X = rng.normal(size=(n, d, d))
        return gj.Gaussian(rng.normal(size=(n, d)), X @ X.transpose(0, 2, 1) + np.eye(d))
    mus, nus = batch(6, 2), batch(5, 2)
    single = gj.pairwise(gj.entropic_ot, mus, nus, epsilon=0.5)

    mesh = jax.make_mesh((2,), ("x",))
    rows, everywhere = NamedSharding(mesh, P("x")), NamedSharding(mesh, P())
    mus_s, nus_s = jax.device_put(mus, rows), jax.device_put(nus, everywhere)

    # 1. jit with row-sharded inputs: GSPMD keeps the rows on their devices.
    f = jax.jit(lambda a, b, e: gj.pairwise(gj.entropic_ot, a, b, epsilon=e))
    out = f(mus_s, nus_s, 0.5)
    # 2. shard_map: each device runs pairwise on its rows in blocks of batch_size pairs.
    g = jax.jit(jax.shard_map(
        lambda a, b, e: gj.pairwise(gj.entropic_ot, a, b, batch_size=4, epsilon=e),
        mesh=mesh, in_specs=(P("x"), P(), P()), out_specs=P("x")))
    out2 = g(mus_s, nus_s, 0.5)
    for o in (out, out2):
        np.testing.assert_allclose(np.asarray(o), np.asarray(single), rtol=1e-13)
        shards = o.addressable_shards
        assert {s.device for s in shards} == set(jax.devices()), shards
        assert all(s.data.shape == (3, 5) for s in shards), [s.data.shape for s in shards]
    # 3. Gradients through a sharded matrix of Sinkhorn divergences (trace_fn's rule and
    # the d <= 3 scalar kernels must keep the operands' shardings).
    loss = lambda a, b: jnp.sum(gj.pairwise(gj.sinkhorn_divergence, a, b, epsilon=0.5))
    g_sharded = jax.jit(jax.grad(loss))(mus_s, nus_s)
    g_single = jax.grad(loss)(mus, nus)
    np.testing.assert_allclose(np.asarray(g_sharded.cov), np.asarray(g_single.cov), rtol=1e-11)
    print("SHARDED_OK")
    """
)


def test_sharded_equals_single_device(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    script = tmp_path / "sharded.py"
    script.write_text(_SHARDED)
    res = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "SHARDED_OK" in res.stdout


def test_fresh_callables_do_not_recompile(batches):
    # A new lambda (or functools.partial) object per call, with the same code: the
    # compile cache is keyed on code and captured values, not on the object's identity
    # (before: one trace and one XLA compile per call, and every executable kept alive).
    import functools

    mus, nus = batches
    eps = 0.3  # a static float in the closure
    shifts = [jnp.asarray(float(k)) for k in range(4)]  # traced arrays in the closure
    ref = np.asarray(gj.pairwise(gj.entropic_ot, mus, nus, epsilon=0.3))
    traces = []  # a mutable capture: mutated in place, not copied

    def make(shift):
        def cost(mu, nu):
            traces.append(1)  # runs only when the body is traced
            return gj.entropic_ot(mu, nu, eps).cost + shift

        return cost

    def fresh_partial():
        return functools.partial(
            lambda mu, nu, epsilon: gj.entropic_ot(mu, nu, epsilon), epsilon=eps
        )

    gj.pairwise(make(shifts[0]), mus, nus)  # warm-up: one trace, one compile
    gj.pairwise(fresh_partial(), mus, nus)
    outs = []
    with CompileCounter() as counter:
        for shift in shifts[1:]:
            outs.append(gj.pairwise(make(shift), mus, nus))  # new closure, new array value
        for _ in range(3):
            outs.append(gj.pairwise(fresh_partial(), mus, nus))
    assert counter.count == 0, counter.count
    assert len(traces) == 1
    for k, out in enumerate(outs[:3], start=1):
        np.testing.assert_allclose(out, ref + k, rtol=1e-12)  # no stale trace
    for out in outs[3:]:
        np.testing.assert_allclose(out, ref, rtol=1e-12)
    # A different captured float is a different static value: a new trace, right result.
    eps = 0.7
    np.testing.assert_allclose(
        gj.pairwise(make(shifts[0]), mus, nus),
        gj.pairwise(gj.entropic_ot, mus, nus, epsilon=0.7),
        rtol=1e-12,
    )
    assert len(traces) == 2
