"""Compositions that wedged jaxlib 0.10's CPU runtime on 2 cores (the no-hang issue).

Each case builds its inputs and runs one program a user writes every day: a vmapped or
``lax.map``-ped full result differentiated, a barycenter differentiated, a pairwise cost
matrix differentiated. Run one in its own process::

    python tests/hang_cases.py NAME          # prints "CASE_OK NAME <seconds>"
    python tests/hang_cases.py --list

``tests/test_no_hang.py`` runs each case in a child process and fails when the child's
CPU time stops advancing (a wedge) or it runs past its limit; ``benchmarks/stall.py
--cases`` repeats them for the record. With jax/jaxlib 0.10.0-0.10.2 these wedge (see
``upstream/jaxlib_cpu_lapack_deadlock.py``); the package therefore requires
``jaxlib < 0.10``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

if os.environ.get("GAUSSOT_ONE_CORE") and __name__ == "__main__":
    # Pin the child to one CPU before jax starts any thread, so every thread inherits it
    # (as taskset -c does; a preexec_fn would run Python in a forked multithreaded parent).
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gaussot_jax as gj  # noqa: E402

CASES: dict[str, Callable[[], object]] = {}


def case(name):
    def deco(fn):
        CASES[name] = fn
        return fn

    return deco


def _spd(rng, n, d, dtype=np.float64):
    X = rng.normal(size=(n, d, d))
    return (X @ X.transpose(0, 2, 1) / d + 0.5 * np.eye(d)).astype(dtype)


def _batch(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return gj.Gaussian(rng.normal(size=(n, d)), _spd(rng, n, d), validate=False)


def _g(a, A):
    return gj.Gaussian(a, A, validate=False)


def _entropic_full(mu, nu):
    out = gj.entropic_ot(mu, nu, 1.0)
    f, g = out.potentials
    x = jnp.ones(mu.dim, mu.mean.dtype)
    return out.cost + jnp.sum(out.plan.cov) + f(x) + g(x) + jnp.sum(out.entropic_map(x))


def _bridge_full(mu, nu):
    d = mu.dim
    kernel = gj.LinearGaussianKernel(jnp.zeros(d), jnp.eye(d), 0.5 * jnp.eye(d))
    br = gj.schrodinger_bridge(mu, nu, kernel)
    U, V = br.potentials
    x = jnp.ones(d, mu.mean.dtype)
    return (
        br.kl
        + br.rate
        + jnp.sum(br.plan.cov)
        + jnp.sum(br.forward.tau)
        + jnp.sum(br.backward.beta)
        + U(x)
        + V(x)
    )


def _unbalanced_full(mu, nu):
    a = gj.ScaledGaussian(1.0, mu.mean, mu.cov, validate=False)
    b = gj.ScaledGaussian(2.0, nu.mean, nu.cov, validate=False)
    u = gj.unbalanced_entropic_ot(a, b, 1.0, 2.0)
    return u.cost + jnp.sum(u.plan.cov) + u.plan.mass + u.destroyed_mass[0]


def _vmapped(f):
    return lambda mus, nus: jnp.sum(jax.vmap(f)(mus, nus))


def _laxmapped(f, batch_size):
    return lambda mus, nus: jnp.sum(jax.lax.map(lambda p: f(*p), (mus, nus), batch_size=batch_size))


def _run(fn, *args, grad=True):
    f = jax.jit(jax.value_and_grad(fn, argnums=0) if grad else fn)
    return jax.block_until_ready(f(*args))


@case("entropic_full_vmap_vg_N1e4_d4")
def _():
    return _run(_vmapped(_entropic_full), _batch(10_000, 4, 0), _batch(10_000, 4, 1))


@case("entropic_full_vmap_fwd_N1e4_d4")
def _():
    return _run(_vmapped(_entropic_full), _batch(10_000, 4, 0), _batch(10_000, 4, 1), grad=False)


@case("entropic_full_vmap_vg_N1e3_d4")
def _():
    return _run(_vmapped(_entropic_full), _batch(1000, 4, 0), _batch(1000, 4, 1))


@case("entropic_barycenter_debiased_vg_d128")
def _():
    gs = _batch(2, 128)

    def loss(covs):
        b = gj.entropic_barycenter(
            gj.Gaussian(gs.mean, covs, validate=False), None, 1.0, debiased=True
        )
        return jnp.sum(b.cov)

    return _run(loss, gs.cov)


@case("bures_barycenter_vg_n8_d64")
def _():
    gs = _batch(8, 64)
    return _run(
        lambda covs: jnp.sum(gj.bures_barycenter(gj.Gaussian(gs.mean, covs, validate=False)).cov),
        gs.cov,
    )


@case("unbalanced_cost_laxmap512_vg_N1e4_d8")
def _():
    def cost(mu, nu):
        a = gj.ScaledGaussian(1.0, mu.mean, mu.cov, validate=False)
        b = gj.ScaledGaussian(2.0, nu.mean, nu.cov, validate=False)
        return gj.unbalanced_entropic_ot(a, b, 1.0, 2.0).cost

    return _run(_laxmapped(cost, 512), _batch(10_000, 8, 0), _batch(10_000, 8, 1))


@case("entropic_full_laxmap512_fwd_N2048_d32")
def _():
    return _run(
        _laxmapped(_entropic_full, 512), _batch(2048, 32, 0), _batch(2048, 32, 1), grad=False
    )


@case("entropic_full_laxmap32_fwd_N2048_d32")
def _():
    return _run(
        _laxmapped(_entropic_full, 32), _batch(2048, 32, 0), _batch(2048, 32, 1), grad=False
    )


@case("bridge_full_vmap_vg_N1e4_d4")
def _():
    return _run(_vmapped(_bridge_full), _batch(10_000, 4, 0), _batch(10_000, 4, 1))


@case("unbalanced_full_vmap_vg_N1e4_d4")
def _():
    return _run(_vmapped(_unbalanced_full), _batch(10_000, 4, 0), _batch(10_000, 4, 1))


@case("pairwise_sinkhorn_vg_100x100_d4")
def _():
    mus, nus = _batch(100, 4, 0), _batch(100, 4, 1)
    return _run(
        lambda a, b: jnp.sum(gj.pairwise(gj.sinkhorn_divergence, a, b, epsilon=0.5)), mus, nus
    )


@case("gaussian_sinkhorn_vmap_vg_N1e3_d4")
def _():
    d = 4
    kernel = gj.LinearGaussianKernel(jnp.zeros(d), jnp.eye(d), 0.5 * jnp.eye(d))

    def f(mu, nu):
        tr = gj.gaussian_sinkhorn(mu, nu, kernel, 10)
        return jnp.sum(tr.forward.tau[-1]) + jnp.sum(tr.error)

    return _run(_vmapped(f), _batch(1000, d, 0), _batch(1000, d, 1))


def _mixture(rng, k, d):
    w = rng.uniform(0.5, 1.0, size=k)
    covs = _spd(rng, k, d)
    return gj.GaussianMixture(w / w.sum(), 3.0 * rng.normal(size=(k, d)), covs)


def _mixture_ot_vg(k, d):
    rng = np.random.default_rng(0)
    p, q = _mixture(rng, k, d), _mixture(rng, k, d)
    x = jnp.asarray(rng.normal(size=(64, d)))

    def f(means):
        out = gj.mixture_ot(gj.GaussianMixture(p.weights, means, p.covs, validate=False), q)
        return out.cost + jnp.sum(out.map(x))

    return _run(f, p.means)


@case("mixture_ot_vg_k10_d16")
def _():
    # A benchmark run of mixture_ot at this size once stalled (issue 14's note).
    return _mixture_ot_vg(10, 16)


@case("mixture_ot_vg_k10_d16_one_core")
def _():
    # ... on one core (taskset -c 1), as it was then: run_case pins "_one_core" cases.
    return _mixture_ot_vg(10, 16)


@case("ott_bures_vg_N1e3_d8")
def _():
    from ott.geometry import costs  # peer: OTT-JAX's own composition

    d = 8
    mus, nus = _batch(1000, d, 0), _batch(1000, d, 1)
    cost = costs.Bures(dimension=d)

    def f(mu, nu):
        x = jnp.concatenate([mu.mean, mu.cov.ravel()])
        y = jnp.concatenate([nu.mean, nu.cov.ravel()])
        return cost(x, y)

    return _run(_vmapped(f), mus, nus)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_watched(
    argv: list[str],
    ok: str,
    *,
    stall_s: float = 45.0,
    limit_s: float = 280.0,
    one_core: bool = False,
) -> dict:
    """Run ``argv`` in a child process under a stall detector (Linux: reads /proc).

    The child's CPU time is sampled once a second; a child that is alive but has not
    advanced it for ``stall_s`` seconds is wedged and is killed. A slow or loaded machine
    slows the child but does not stop its CPU clock, so only a wedge trips the detector;
    ``limit_s`` is a wall-clock backstop. ``status`` is ``"finished"`` when the child
    exited 0 and printed ``ok``. ``one_core`` asks the child to pin itself (all its
    threads) to one CPU before it imports jax, as ``taskset -c`` does.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if one_core:
        env["GAUSSOT_ONE_CORE"] = "1"
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = last_change = time.monotonic()
    cpu = last_cpu = 0.0
    status = "finished"
    while p.poll() is None:
        time.sleep(1.0)
        try:
            cpu = _cpu_seconds(p.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        now = time.monotonic()
        if cpu > last_cpu + 0.05:
            last_cpu, last_change = cpu, now
        if now - last_change > stall_s:
            status = f"STALL: no CPU progress for {stall_s:.0f} s (a wedge inside XLA)"
        elif now - t0 > limit_s:
            status = f"TIMEOUT after {limit_s:.0f} s"
        else:
            continue
        p.kill()
        break
    out = p.communicate()[0]
    if status == "finished" and (p.returncode != 0 or ok not in out):
        status = f"error rc={p.returncode}"
    return dict(
        status=status,
        wall_s=round(time.monotonic() - t0, 2),
        cpu_s=round(last_cpu, 2),
        output=out[-2000:],
    )


def run_case(name: str, **kw) -> dict:
    """Run one case of :data:`CASES` in its own process under :func:`run_watched`."""
    argv = [sys.executable, os.path.abspath(__file__), name]
    r = run_watched(argv, f"CASE_OK {name}", one_core=name.endswith("_one_core"), **kw)
    return dict(case=name, **r)


def main(argv):
    if argv[1:] == ["--list"]:
        print("\n".join(CASES))
        return 0
    jax.config.update("jax_enable_x64", True)
    name = argv[1]
    t = time.perf_counter()
    CASES[name]()
    print(f"CASE_OK {name} {time.perf_counter() - t:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
