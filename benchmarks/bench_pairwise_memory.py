"""Peak memory of gj.pairwise as a function of batch_size (a script, not a test).

XLA's compiled memory analysis gives the exact buffer sizes of the program for the full
10^4 x 10^4 problem at d = 4 without running it: arguments, output, and the temporaries
that batch_size bounds. A smaller problem is then run for timings (median of repeats
after a warm-up) and, with --full, the 10^4 x 10^4 problem itself.

    python benchmarks/bench_pairwise_memory.py [--n 10000] [--d 4] [--full]
"""

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gaussot_jax as gj  # noqa: E402


def batch(rng, n, d):
    X = rng.normal(size=(n, d, d))
    return gj.Gaussian(rng.normal(size=(n, d)), X @ X.transpose(0, 2, 1) / d + 0.1 * np.eye(d))


def abstract(n, d):
    return gj.Gaussian(jnp.zeros((n, d)), jnp.broadcast_to(jnp.eye(d), (n, d, d)), validate=False)


def program(batch_size):
    return jax.jit(
        lambda a, b: gj.pairwise(gj.sinkhorn_divergence, a, b, batch_size=batch_size, epsilon=0.1)
    )


def gib(x):
    return x / 2**30


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--d", type=int, default=4)
    p.add_argument("--small", type=int, default=150)
    p.add_argument("--full", action="store_true", help="also run the n x n problem")
    args = p.parse_args()
    n, d = args.n, args.d
    print(f"device: {jax.devices()[0]}, float64, fn = sinkhorn_divergence, d = {d}")
    print(f"\ncompiled memory for n = m = {n} ({n * n:.0e} pairs), output {gib(8 * n * n):.2f} GiB")
    print(f"{'batch_size':>12} {'temp GiB':>10} {'output GiB':>11} {'total GiB':>10}")
    mus = abstract(n, d)
    for bs in (10**3, 10**4, 10**5, 10**6, 10**7, None):
        c = program(bs).lower(mus, mus).compile().memory_analysis()
        total = c.temp_size_in_bytes + c.output_size_in_bytes + c.argument_size_in_bytes
        print(
            f"{str(bs):>12} {gib(c.temp_size_in_bytes):>10.3f} "
            f"{gib(c.output_size_in_bytes):>11.3f} {gib(total):>10.3f}"
        )

    rng = np.random.default_rng(0)
    k = args.small
    a, b = batch(rng, k, d), batch(rng, k, d)
    print(f"\ntimings, n = m = {k} ({k * k} pairs), median of 3 after warm-up")
    ref = None
    for bs in (10**3, 10**4, 10**5, None):
        f = program(bs)
        out = f(a, b).block_until_ready()
        ref = out if ref is None else ref
        times = []
        for _ in range(3):
            t = time.perf_counter()
            f(a, b).block_until_ready()
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(
            f"batch_size={str(bs):>7}: {med:.3f} s, {1e9 * med / k**2:.0f} ns/pair, "
            f"max |diff| vs first {float(jnp.max(jnp.abs(out - ref))):.1e}"
        )

    if args.full:
        a, b = batch(rng, n, d), batch(rng, n, d)
        f = program(10**5)
        t = time.perf_counter()
        out = f(a, b).block_until_ready()
        print(
            f"\nfull {n} x {n}, batch_size=1e5: {time.perf_counter() - t:.1f} s "
            f"(incl. compile), finite: {bool(jnp.all(jnp.isfinite(out)))}"
        )


if __name__ == "__main__":
    main()
