"""Low-rank-plus-isotropic Gaussians: value_and_grad time against d (MATH.md §8).

For each rank k (columns per factor) and dimension d, times the jitted
``value_and_grad`` of W2^2, of the entropic cost OT_eps and of the Sinkhorn divergence
with respect to both
``LowRankGaussian`` arguments (mean, factor, noise), and, where they fit, the same on the
dense covariances (``to_dense()``, the library's d x d path) and POT's
``ot.gaussian.bures_wasserstein_distance_hd`` (value only; it forms p x p matrices and a
dense ``sqrtm``, NumPy backend). Warm-up call first, ``block_until_ready``, median of
``--repeats``. The growth line reports ``log(t2/t1) / log(d2/d1)`` between consecutive
dimensions, and the least-squares slope of ``log t`` on ``log d`` over ``d >= --fit-from``
(small d is dominated by per-call overhead): 1 is linear in d (expected: O(d k^2)).
Pairs with ``d k > --max-elems`` are skipped (memory: a float64 factor of d = 1e6, k = 64
is 512 MB, and value_and_grad holds several of the d x 2k joint factor). ``--json`` saves
every timing and the fits.

    python benchmarks/bench_lowrank.py                      # d = 1e3 .. 1e6, k = 8, 16, 64
    python benchmarks/bench_lowrank.py --dims 1000 10000 --ranks 8 --repeats 3   # small
    python benchmarks/bench_lowrank.py --json benchmarks/results/lowrank_cpu_2core.json
"""

import argparse
import json
import os
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


def _pot_time(mu, nu, repeats):
    import ot

    # POT wants orthonormal U and variances: factor = U diag(sqrt(l)).
    U1, s1, _ = np.linalg.svd(np.asarray(mu.factor), full_matrices=False)
    U2, s2, _ = np.linalg.svd(np.asarray(nu.factor), full_matrices=False)
    ms, mt = np.asarray(mu.mean), np.asarray(nu.mean)
    n1, n2 = np.array([float(mu.noise)]), np.array([float(nu.noise)])

    def pot():
        return ot.gaussian.bures_wasserstein_distance_hd(ms, mt, U1, U2, s1**2, s2**2, n1, n2)

    return _median_time(pot, repeats)


def _slope(ds, ts):
    """Least-squares slope of log t on log d."""
    x, y = np.log(np.asarray(ds, float)), np.log(np.asarray(ts, float))
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 64])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-dense", type=int, default=2000, help="largest d for the dense paths")
    p.add_argument(
        "--dense-ranks", type=int, nargs="*", default=None, help="ranks timed densely (all)"
    )
    p.add_argument("--dense-repeats", type=int, default=None, help="repeats for dense/POT")
    p.add_argument("--max-elems", type=float, default=2e7, help="skip d * k above this")
    p.add_argument("--fit-from", type=int, default=10_000, help="smallest d in the slope fit")
    p.add_argument("--epsilon", type=float, default=0.5)
    p.add_argument("--json", type=pathlib.Path, default=None, help="write the results here")
    args = p.parse_args()
    eps = args.epsilon
    dense_ranks = args.ranks if args.dense_ranks is None else args.dense_ranks
    dense_repeats = args.repeats if args.dense_repeats is None else args.dense_repeats

    losses = {
        "w2": gj.bures_wasserstein2,
        "entropic": lambda a, b: gj.entropic_ot(a, b, eps).cost,
        "sinkhorn": lambda a, b: gj.sinkhorn_divergence(a, b, eps),
    }
    vg = {n: jax.jit(jax.value_and_grad(f, argnums=(0, 1))) for n, f in losses.items()}

    def dense_loss(f):
        return lambda a, b: f(a.to_dense(), b.to_dense())

    vg_dense = {
        n: jax.jit(jax.value_and_grad(dense_loss(f), argnums=(0, 1))) for n, f in losses.items()
    }

    meta = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "cpus": os.cpu_count(),
        "dtype": "float64",
        "repeats": args.repeats,
        "dense_repeats": dense_repeats,
        "argv": sys.argv[1:],
        "epsilon": eps,
        "note": "shared machine: other heavy jobs ran concurrently, timings are noisy",
    }
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, float64, median of {args.repeats}"
    )
    print(f"{'k':>4} {'d':>9} {'loss':>9} {'lowrank s':>11} {'dense s':>10} {'POT_hd s':>10}")
    rows, fits = [], []
    for k in args.ranks:
        for name in losses:
            series = []
            for d in args.dims:
                if d * k > args.max_elems:
                    print(f"{k:>4} {d:>9} {name:>9}   skipped (d k > {args.max_elems:.3g})")
                    continue
                mu, nu = _pair(d, k)
                t = _median_time(lambda: vg[name](mu, nu), args.repeats)
                t_dense = t_pot = float("nan")
                if d <= args.max_dense and k in dense_ranks:
                    t_dense = _median_time(lambda: vg_dense[name](mu, nu), dense_repeats)
                    if name == "w2":
                        t_pot = _pot_time(mu, nu, dense_repeats)
                print(f"{k:>4} {d:>9} {name:>9} {t:>11.4g} {t_dense:>10.4g} {t_pot:>10.4g}")
                row = {"k": k, "d": d, "loss": name, "lowrank_s": t}
                row["dense_s"] = None if np.isnan(t_dense) else t_dense
                row["pot_hd_value_only_s"] = None if np.isnan(t_pot) else t_pot
                rows.append(row)
                series.append((d, t))
            growth = [
                np.log(t2 / t1) / np.log(d2 / d1) for (d1, t1), (d2, t2) in zip(series, series[1:])
            ]
            fit = [(d, t) for d, t in series if d >= args.fit_from]
            slope = _slope([d for d, _ in fit], [t for _, t in fit])
            fits.append({"k": k, "loss": name, "slope": slope, "consecutive": growth})
            if growth:
                print(
                    f"     growth exponent in d ({name}, k={k}): "
                    + ", ".join(f"{g:.2f}" for g in growth)
                    + f"; fitted slope (d >= {args.fit_from}): {slope:.2f}"
                )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "fits": fits}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
