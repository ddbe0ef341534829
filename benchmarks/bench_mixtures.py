"""Mixture OT: ours against POT, same run, same inputs.

    python benchmarks/bench_mixtures.py                  # k = 10, 100, 1000; d = 2, 16
    python benchmarks/bench_mixtures.py --k 10 --d 2 --lp-k 10   # one small case

First the exact LP alone (``--lp-k``, default k = 10, 100, 300, 1000): ``gj.discrete_ot`` at
``epsilon = 0`` against ``ot.emd2`` on the W2^2 cost matrix of two random d = 2 mixtures,
with our compile time (first call less a run). Then, per (k, d) (``d > 8`` only up to
``--big-d-max-k``: the cost matrix alone is ``k^2`` 16 x 16 square roots),

median wall times (after a compile warm-up, ``block_until_ready``) of

* ``ours fwd``: ``jax.jit(gj.mixture_wasserstein2)`` (W2^2 cost matrix + exact network
  simplex); ``ours v&g``: ``jax.jit(jax.value_and_grad(...))`` in the means, covariances
  and weights of ``p`` (the envelope theorem: one solve, no loop differentiated);
* ``POT full``: ``ot.gmm.gmm_ot_loss`` (NumPy cost matrix + ``ot.emd``), skipped where its
  ``(k, k, d, d)`` intermediate would exceed ``--pot-max-mib``;
* the discrete solve alone on the same cost matrix: ``ours LP`` (``gj.discrete_ot``) and
  ``POT emd`` (``ot.emd2``, C++ network simplex);

and our relative error against POT's exact LP value on that matrix. Results go to
``benchmarks/results/mixtures_<tag>.json``. The machine may be shared: timings are noisy.
"""

import argparse
import json
import os
import pathlib
import platform
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
    ap.add_argument("--lp-k", type=int, nargs="+", default=[10, 100, 300, 1000])
    ap.add_argument("--big-d-max-k", type=int, default=100)
    ap.add_argument("--pot-max-mib", type=float, default=512.0)
    ap.add_argument("--tag", default="cpu")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    fwd = jax.jit(gj.mixture_wasserstein2)

    def loss(w, m, S, q):
        return gj.mixture_wasserstein2(gj.GaussianMixture(w, m, S, validate=False), q)

    vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    lp = jax.jit(lambda a, b, C: gj.discrete_ot(a, b, C).cost)
    lp_rows = []
    print(f"{'k':>5} {'compile':>8} {'ours LP':>9} {'POT emd':>9} {'LP/emd':>7} {'rel err':>8}")
    for k in args.lp_k:
        (w1, m1, S1), (w2, m2, S2) = mixture(rng, k, 2), mixture(rng, k, 2)
        p, q = gj.GaussianMixture(w1, m1, S1), gj.GaussianMixture(w2, m2, S2)
        D = np.asarray(gj.mixture_ot(p, q).cost_matrix)
        solve = jax.jit(lambda a, b, C: gj.discrete_ot(a, b, C).cost)  # a fresh compile
        t = time.perf_counter()
        value = float(solve(w1, w2, D))
        t_first = time.perf_counter() - t
        reps = 1 if k >= 1000 else args.repeats
        t_lp = median_time(lambda: jax.block_until_ready(solve(w1, w2, D)), reps)
        ref = ot.emd2(w1, w2, D, numItermax=10**7)
        t_emd = median_time(lambda: ot.emd2(w1, w2, D, numItermax=10**7), reps)
        err = abs(value - ref) / abs(ref)
        lp_rows.append(
            dict(k=k, compile=t_first - t_lp, ours_lp=t_lp, pot_emd=t_emd, rel_err_vs_emd=err)
        )
        print(
            f"{k:>5} {t_first - t_lp:>8.2f} {t_lp:>9.4f} {t_emd:>9.4f} {t_lp / t_emd:>7.1f}"
            f" {err:>8.1e}",
            flush=True,
        )
    cols = ["ours fwd", "ours v&g", "POT full", "ours LP", "POT emd"]
    print(
        f"{'k':>5} {'d':>3} " + " ".join(f"{c:>9}" for c in cols) + f" {'LP/emd':>7} {'rel err':>8}"
    )
    rows = []
    out = pathlib.Path(__file__).resolve().parent / "results" / f"mixtures_{args.tag}.json"
    meta = dict(
        jax=jax.__version__,
        pot=ot.__version__,
        backend=jax.default_backend(),
        machine=platform.machine(),
        cpus=len(os.sched_getaffinity(0)),
    )
    for d in args.d:
        for k in args.k:
            if d > 8 and k > args.big_d_max_k:
                continue
            (w1, m1, S1), (w2, m2, S2) = mixture(rng, k, d), mixture(rng, k, d)
            p, q = gj.GaussianMixture(w1, m1, S1), gj.GaussianMixture(w2, m2, S2)
            reps = 1 if k >= 1000 else args.repeats
            value = float(fwd(p, q).block_until_ready())  # compile
            t_fwd = median_time(lambda: fwd(p, q).block_until_ready(), reps)
            jax.block_until_ready(vg(w1, m1, S1, q))
            t_vg = median_time(lambda: jax.block_until_ready(vg(w1, m1, S1, q)), reps)
            D = np.asarray(gj.mixture_ot(p, q).cost_matrix)
            jax.block_until_ready(lp(w1, w2, D))
            t_lp = median_time(lambda: jax.block_until_ready(lp(w1, w2, D)), reps)
            ref = ot.emd2(w1, w2, D, numItermax=10**7)
            t_emd = median_time(lambda: ot.emd2(w1, w2, D, numItermax=10**7), reps)
            t_pot = None
            if k * k * d * d * 8 / 2**20 <= args.pot_max_mib:
                t_pot = median_time(lambda: ot.gmm.gmm_ot_loss(m1, m2, S1, S2, w1, w2), reps)
            err = abs(value - ref) / abs(ref)
            row = dict(
                k=k,
                d=d,
                ours_fwd=t_fwd,
                ours_value_and_grad=t_vg,
                pot_full=t_pot,
                ours_lp=t_lp,
                pot_emd=t_emd,
                rel_err_vs_emd=err,
                value=value,
            )
            rows.append(row)
            pot = f"{t_pot:>9.4f}" if t_pot is not None else f"{'-':>9}"
            print(
                f"{k:>5} {d:>3} {t_fwd:>9.4f} {t_vg:>9.4f} {pot} {t_lp:>9.4f} {t_emd:>9.4f}"
                f" {t_lp / t_emd:>7.1f} {err:>8.1e}",
                flush=True,
            )
    out = pathlib.Path(__file__).resolve().parent / "results" / f"mixtures_{args.tag}.json"
    meta = dict(
        jax=jax.__version__,
        pot=ot.__version__,
        backend=jax.default_backend(),
        machine=platform.machine(),
        cpus=len(__import__("os").sched_getaffinity(0)),
    )
    out.write_text(json.dumps(dict(meta=meta, lp=lp_rows, rows=rows), indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
