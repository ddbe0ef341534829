"""Mixture OT: gj.mixture_wasserstein2 (cost matrix + discrete solver, jitted) against POT's
ot.gmm.gmm_ot_loss (NumPy cost matrix + network simplex), same run, same inputs.

    python benchmarks/bench_mixtures.py                  # k = 10, 100, 1000; d = 2, 16
    python benchmarks/bench_mixtures.py --k 10 --d 2     # one small case

Prints, per (k, d): median wall time of ours (after a compile warm-up) and of POT, their
ratio, and our relative error against POT's exact LP value.
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
import ot  # noqa: E402

import gaussot_jax as gj  # noqa: E402


def mixture(rng, k, d):
    w = rng.random(k) + 0.1
    X = rng.normal(size=(k, d, d))
    covs = X @ np.swapaxes(X, 1, 2) / d + 0.1 * np.eye(d)
    return w / w.sum(), 3 * rng.normal(size=(k, d)), covs


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--k", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--d", type=int, nargs="+", default=[2, 16])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ours = jax.jit(gj.mixture_wasserstein2)
    print(f"{'k':>6} {'d':>4} {'ours [s]':>10} {'POT [s]':>10} {'ratio':>7} {'rel err':>9}")
    for d in args.d:
        for k in args.k:
            (w1, m1, S1), (w2, m2, S2) = mixture(rng, k, d), mixture(rng, k, d)
            p, q = gj.GaussianMixture(w1, m1, S1), gj.GaussianMixture(w2, m2, S2)
            value = float(ours(p, q).block_until_ready())  # compile
            t_ours = median_time(lambda: ours(p, q).block_until_ready(), args.repeats)
            ref = None

            def pot():
                nonlocal ref
                ref = ot.gmm.gmm_ot_loss(m1, m2, S1, S2, w1, w2)

            t_pot = median_time(pot, args.repeats)
            err = abs(value - ref) / abs(ref)
            print(
                f"{k:>6} {d:>4} {t_ours:>10.4f} {t_pot:>10.4f} {t_ours / t_pot:>7.2f} {err:>9.2e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
