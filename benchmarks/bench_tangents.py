"""Cost of the tangent solves: value_and_grad over forward, at d = 32, 64, 128, 256.

Two functions whose derivative is a linear solve in a d^2-dimensional space:

* ``unbalanced_entropic_ot(...).plan``: the Sylvester equation ``S dC + dC S = R`` of the
  cross-covariance ``C`` (closed form in the eigenbasis of ``Bt^{1/2} At Bt^{1/2}``);
* ``sinkhorn_fixed_point``: the implicit-function-theorem system of the converged
  Sinkhorn covariance, a Stein equation ``K X K^T - X = Y`` (closed form in the
  eigenbasis of ``L^T Q L``).

Both used to solve the dense ``d^2 x d^2`` system (O(d^6) time, O(d^4) memory: 95x and
1367x at d = 128 and 64). Each case is one scalar of the whole result (every field live),
jitted; ``forward`` times the scalar, ``value_and_grad`` times it with its gradient with
respect to every matrix input and the regularisation; both warmed up, blocked, the median
of several runs (DESIGN.md §10). The ratio is the figure of merit (target <= 10): a loaded
machine moves the times more than the ratios.

    python benchmarks/bench_tangents.py                     # d = 32, 64, 128, 256
    python benchmarks/bench_tangents.py --dims 16 32 --name quick

Results: ``benchmarks/results/tangents_<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench import machine, median_time  # noqa: E402

import gaussot_jax as gj  # noqa: E402


def _spd(rng, d, lo, hi):
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    S = (Q * np.geomspace(hi, lo, d)) @ Q.T
    return jnp.asarray(0.5 * (S + S.T))


def unbalanced_case(rng, d):
    """``(f, args)``: a scalar of the unbalanced plan as a function of (A, B, eps, gamma)."""
    ma, mb = 1.3, 0.7
    a, b = jnp.asarray(rng.normal(size=d)), jnp.asarray(rng.normal(size=d))
    P = jnp.asarray(rng.normal(size=(2 * d, 2 * d)))
    v = jnp.asarray(rng.normal(size=2 * d))

    def f(A, B, eps, gamma):
        out = gj.unbalanced_entropic_ot(
            gj.ScaledGaussian(ma, a, A, validate=False),
            gj.ScaledGaussian(mb, b, B, validate=False),
            eps,
            gamma,
        )
        plan = out.plan
        return jnp.sum(P * plan.cov) + plan.mass + v @ plan.mean

    args = (_spd(rng, d, 0.1, 1.0), _spd(rng, d, 0.1, 1.0), jnp.asarray(0.5), jnp.asarray(1.0))
    return f, args, {}


def sinkhorn_case(rng, d):
    """``(f, args)``: a scalar of the converged kernel as a function of (S1, S2, beta, tau)."""
    m1, m2 = jnp.asarray(rng.normal(size=d)), jnp.asarray(rng.normal(size=d))
    alpha = jnp.asarray(rng.normal(size=d))
    P, Pb = (jnp.asarray(rng.normal(size=(d, d))) for _ in range(2))
    S1, S2 = _spd(rng, d, 0.1, 1.0), _spd(rng, d, 0.1, 1.0)
    beta = jnp.eye(d) + 0.1 * jnp.asarray(rng.normal(size=(d, d))) / math.sqrt(d)
    tau = jnp.eye(d)
    kernel = gj.LinearGaussianKernel(alpha, beta, tau)
    rate = float(gj.schrodinger_bridge(gj.Gaussian(m1, S1), gj.Gaussian(m2, S2), kernel).rate)
    # rounds to reach float64 round-off: rate^n <= eps
    num_iters = int(min(400, math.ceil(math.log(np.finfo(np.float64).eps) / math.log(rate))))

    def f(S1, S2, beta, tau):
        k = gj.sinkhorn_fixed_point(
            gj.Gaussian(m1, S1, validate=False),
            gj.Gaussian(m2, S2, validate=False),
            gj.LinearGaussianKernel(alpha, beta, tau, validate=False),
            num_iters,
        )
        return jnp.sum(P * k.tau) + jnp.sum(Pb * k.beta) + jnp.sum(k.alpha)

    return f, (S1, S2, beta, tau), {"rate": rate, "num_iters": num_iters}


CASES = {"unbalanced_plan": unbalanced_case, "sinkhorn_fixed_point": sinkhorn_case}


def measure(case, d, rng, repeats):
    f, args, info = case(rng, d)
    fwd = jax.jit(f)
    vag = jax.jit(jax.value_and_grad(f, argnums=tuple(range(len(args)))))
    t0 = time.perf_counter()
    value, grads = jax.block_until_ready(vag(*args))
    compile_vag = time.perf_counter() - t0
    finite = bool(np.isfinite(value)) and all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    t_fwd = median_time(fwd, *args, repeats=repeats, min_time=0.0)
    t_vag = median_time(vag, *args, repeats=repeats, min_time=0.0)
    return dict(
        d=d, forward_s=t_fwd, value_and_grad_s=t_vag, ratio=t_vag / t_fwd,
        first_call_value_and_grad_s=compile_vag, finite=finite, **info,
    )  # fmt: skip


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--name", default="cpu_2core")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    rows = {name: [] for name in CASES}
    print(f"{'case':22s} {'d':>4s} {'forward s':>11s} {'v&g s':>11s} {'ratio':>7s}")
    for d in args.dims:
        for name, case in CASES.items():
            r = measure(case, d, rng, args.repeats)
            rows[name].append(r)
            print(
                f"{name:22s} {d:4d} {r['forward_s']:11.4g} {r['value_and_grad_s']:11.4g} "
                f"{r['ratio']:7.2f}" + ("" if r["finite"] else "  NOT FINITE"),
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"tangents_{args.name}.json"
    result = dict(machine=machine(), dtype="float64", repeats=args.repeats, cases=rows)
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
