"""Low-rank-plus-isotropic Gaussians: value_and_grad time against d (MATH.md §8).

For each rank k (columns per factor) and dimension d, times the jitted
``value_and_grad`` of W2^2 and of the Sinkhorn divergence with respect to both
``LowRankGaussian`` arguments (mean, factor, noise), and, where they fit, the same on the
dense covariances (``to_dense()``, the library's d x d path) and POT's
``ot.gaussian.bures_wasserstein_distance_hd`` (value only; it forms p x p matrices and a
dense ``sqrtm``, NumPy backend). Warm-up call first, ``block_until_ready``, median of
``--repeats``. The growth line reports ``log(t2/t1) / log(d2/d1)`` between consecutive
dimensions: 1 is linear in d (expected: O(d k^2)).

    python benchmarks/bench_lowrank.py                      # d = 1e3 .. 1e6, k = 8, 16, 64
    python benchmarks/bench_lowrank.py --dims 1000 10000 --ranks 8 --repeats 3   # small
"""

import argparse
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's package

import gaussot_jax as gj  # noqa: E402


def _median_time(fn, repeats):
    jax.block_until_ready(fn())  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _pair(d, k, seed=0):
    rng = np.random.default_rng(seed)
    mk = lambda s: gj.LowRankGaussian(  # noqa: E731
        jnp.asarray(rng.normal(size=d)), jnp.asarray(rng.normal(size=(d, k)) / np.sqrt(k)), s
    )
    return mk(0.5), mk(0.8)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 64])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-dense", type=int, default=2000, help="largest d for the dense paths")
    p.add_argument("--epsilon", type=float, default=0.5)
    args = p.parse_args()
    eps = args.epsilon

    losses = {
        "w2": gj.bures_wasserstein2,
        "sinkhorn": lambda a, b: gj.sinkhorn_divergence(a, b, eps),
    }
    vg = {n: jax.jit(jax.value_and_grad(f, argnums=(0, 1))) for n, f in losses.items()}

    def dense_loss(f):
        return lambda a, b: f(a.to_dense(), b.to_dense())

    vg_dense = {
        n: jax.jit(jax.value_and_grad(dense_loss(f), argnums=(0, 1))) for n, f in losses.items()
    }

    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, float64, median of {args.repeats}"
    )
    print(f"{'k':>4} {'d':>9} {'loss':>9} {'lowrank s':>11} {'dense s':>10} {'POT_hd s':>10}")
    for k in args.ranks:
        for name in losses:
            prev = None
            growth = []
            for d in args.dims:
                mu, nu = _pair(d, k)
                t = _median_time(lambda: vg[name](mu, nu), args.repeats)
                t_dense = t_pot = float("nan")
                if d <= args.max_dense:
                    t_dense = _median_time(lambda: vg_dense[name](mu, nu), args.repeats)
                    if name == "w2":
                        import ot

                        # POT wants orthonormal U and variances: factor = U diag(sqrt(l)).
                        U1, s1, _ = np.linalg.svd(np.asarray(mu.factor), full_matrices=False)
                        U2, s2, _ = np.linalg.svd(np.asarray(nu.factor), full_matrices=False)
                        ms, mt = np.asarray(mu.mean), np.asarray(nu.mean)
                        n1, n2 = np.array([float(mu.noise)]), np.array([float(nu.noise)])

                        def pot():
                            return ot.gaussian.bures_wasserstein_distance_hd(
                                ms, mt, U1, U2, s1**2, s2**2, n1, n2
                            )

                        t_pot = _median_time(pot, args.repeats)
                print(f"{k:>4} {d:>9} {name:>9} {t:>11.4g} {t_dense:>10.4g} {t_pot:>10.4g}")
                if prev is not None:
                    growth.append(np.log(t / prev[1]) / np.log(d / prev[0]))
                prev = (d, t)
            if growth:
                print(
                    f"     growth exponent in d ({name}, k={k}): "
                    + ", ".join(f"{g:.2f}" for g in growth)
                )


if __name__ == "__main__":
    main()
