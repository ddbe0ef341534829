"""An eager call compiles once: the second call with the same shapes compiles nothing.

The public functions are not jitted (they check concrete values and dispatch on types
in Python), but their kernels that hold control flow (``lax.cond``, ``scan``, loops,
``custom_vmap`` rules) are module-level ``jax.jit`` functions (docs/conventions.md#jit).
Without that, each eager call traces its ``lax.cond`` branches again into new closures,
and JAX compiles them again: 0.25 s per ``bures_wasserstein2`` call at d = 4, every call.

The oracle is JAX's own compile events (``jax.monitoring``, via conftest's
``CompileCounter``), independent of the code
under test. Each case runs twice with the same shapes and fresh values; the second run
must compile nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CompileCounter, random_spd

import gaussot_jax as gj

pytestmark = pytest.mark.timeout(300)

D = 4  # >= 4: W2 takes its certified eigenvalue route, and a cond, there


def _problem(seed: int):
    rng = np.random.default_rng(seed)

    def spd():
        return jnp.asarray(random_spd(rng, D, 10.0))

    def gauss():
        return gj.Gaussian(jnp.asarray(rng.normal(size=D)), spd())

    def mixture(k):
        w = rng.uniform(0.5, 1.0, size=k)
        return gj.GaussianMixture(
            jnp.asarray(w / w.sum()),
            jnp.asarray(3.0 * rng.normal(size=(k, D))),
            jnp.stack([spd() for _ in range(k)]),
        )

    mu, nu = gauss(), gauss()
    batch = gj.Gaussian(jnp.asarray(rng.normal(size=(3, D))), jnp.stack([spd() for _ in range(3)]))
    lr = gj.LowRankGaussian(
        jnp.asarray(rng.normal(size=D)), jnp.asarray(rng.normal(size=(D, 2))), 0.5
    )
    lr2 = gj.LowRankGaussian(
        jnp.asarray(rng.normal(size=D)), jnp.asarray(rng.normal(size=(D, 2))), 0.7
    )
    kernel = gj.LinearGaussianKernel(
        jnp.asarray(rng.normal(size=D)), jnp.eye(D) + 0.1 * spd(), spd()
    )
    return dict(
        mu=mu,
        nu=nu,
        a=gj.ScaledGaussian(1.5, mu.mean, mu.cov),
        b=gj.ScaledGaussian(0.5, nu.mean, nu.cov),
        batch=batch,
        lr=lr,
        lr2=lr2,
        kernel=kernel,
        iso=gj.IsotropicGaussianKernel(jnp.zeros(D), 1.0, 0.8),
        p=mixture(2),
        q=mixture(3),
        S=spd(),
        x=jnp.asarray(rng.normal(size=(5, D))),
        key=jax.random.key(seed),
        sde=gj.LinearSDE.brownian(D),
        eps=0.3 + 0.1 * seed,
    )


def _w2_of_cov(P):
    return gj.bures_wasserstein2(gj.Gaussian(P["mu"].mean, P["S"]), P["nu"])


# name -> f(problem): every public function and result field with control flow inside,
# plus the everyday closed forms.
CASES = {
    "bures_wasserstein2": lambda P: gj.bures_wasserstein2(P["mu"], P["nu"]),
    "bures_wasserstein": lambda P: gj.bures_wasserstein(P["mu"], P["nu"]),
    "grad bures_wasserstein2": lambda P: jax.grad(
        lambda S: gj.bures_wasserstein2(gj.Gaussian(P["mu"].mean, S), P["nu"])
    )(P["S"]),
    "monge_map": lambda P: gj.monge_map(P["mu"], P["nu"])(P["x"]),
    "mccann_interpolation": lambda P: gj.mccann_interpolation(P["mu"], P["nu"], 0.3).cov,
    "entropic_ot": lambda P: gj.entropic_ot(P["mu"], P["nu"], P["eps"]).cost,
    "entropic_ot plan": lambda P: gj.entropic_ot(P["mu"], P["nu"], P["eps"]).plan.cov,
    "grad entropic_ot": lambda P: jax.grad(
        lambda S: gj.entropic_ot(gj.Gaussian(P["mu"].mean, S), P["nu"], P["eps"]).cost
    )(P["S"]),
    "sinkhorn_divergence": lambda P: gj.sinkhorn_divergence(P["mu"], P["nu"], P["eps"]),
    "unbalanced_entropic_ot": lambda P: (
        gj.unbalanced_entropic_ot(P["a"], P["b"], P["eps"], 1.0).cost
    ),
    "schrodinger_bridge": lambda P: gj.schrodinger_bridge(P["mu"], P["nu"], P["kernel"]).kl,
    "gaussian_sinkhorn": lambda P: gj.gaussian_sinkhorn(P["mu"], P["nu"], P["kernel"], 5).error,
    "gaussian_sinkhorn riccati": lambda P: (
        gj.gaussian_sinkhorn(P["mu"], P["nu"], P["kernel"], 5, method="riccati").error
    ),
    "sinkhorn_fixed_point": lambda P: (
        gj.sinkhorn_fixed_point(P["mu"], P["nu"], P["kernel"], 30).tau
    ),
    "bures_barycenter": lambda P: gj.bures_barycenter(P["batch"]).cov,
    "entropic_barycenter": lambda P: (
        gj.entropic_barycenter(P["batch"], None, P["eps"], debiased=True).cov
    ),
    "sqrtm": lambda P: gj.sqrtm(P["S"]),
    "inv_sqrtm": lambda P: gj.inv_sqrtm(P["S"]),
    "trace_fn": lambda P: gj.trace_fn(jnp.sqrt, P["S"], P["S"]),
    "kl_gaussian": lambda P: gj.kl_gaussian(P["mu"], P["nu"]),
    "pairwise": lambda P: gj.pairwise(gj.bures_wasserstein2, P["batch"], P["batch"]),
    "mixture_ot": lambda P: gj.mixture_ot(P["p"], P["q"]).cost,
    "mixture_ot entropic": lambda P: gj.mixture_ot(P["p"], P["q"], epsilon=0.1).cost,
    "mixture_ot map": lambda P: gj.mixture_ot(P["p"], P["q"]).map(P["x"]),
    "mixture log_prob": lambda P: P["p"].log_prob(P["x"]),
    "mixture sample": lambda P: P["p"].sample(P["key"], 7),
    "mixture_barycenter": lambda P: gj.mixture_barycenter([P["p"], P["q"]]).means,
    "fit_gmm": lambda P: gj.fit_gmm(P["key"], P["p"].sample(P["key"], 60), 2, num_iters=3).means,
    "discrete_ot": lambda P: (
        gj.discrete_ot(jnp.full(3, 1 / 3), jnp.full(2, 0.5), jnp.abs(P["x"][:3, :2])).cost
    ),
    "lowrank_bures_wasserstein2": lambda P: gj.lowrank_bures_wasserstein2(P["lr"], P["lr2"]),
    "lowrank_entropic_ot": lambda P: gj.lowrank_entropic_ot(P["lr"], P["lr2"], P["eps"]).cost,
    "lowrank_schrodinger_bridge": lambda P: (
        gj.lowrank_schrodinger_bridge(P["lr"], P["lr2"], P["iso"]).kl
    ),
    "pinned_kernel": lambda P: gj.pinned_kernel(P["sde"], 0.3, 1.0).tau,
    "sample_bridge_paths": lambda P: gj.sample_bridge_paths(
        P["key"],
        P["sde"],
        gj.Gaussian(jnp.zeros(2 * D), jnp.eye(2 * D)),
        1.0,
        jnp.array([0.25, 0.5]),
        3,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_second_eager_call_compiles_nothing(name):
    f = CASES[name]
    jax.block_until_ready(f(_problem(0)))
    P = _problem(1)  # fresh values, same shapes
    with CompileCounter() as n:
        jax.block_until_ready(f(P))
    assert n.count == 0, f"{name}: the second eager call compiled {n.count} programs"
