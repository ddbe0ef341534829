"""Minimal reproducer: jaxlib 0.10 CPU deadlock with concurrent batched LAPACK calls.

Plain JAX, no other package. Run it on a machine with 2 CPU cores:

    python upstream/jaxlib_cpu_lapack_deadlock.py            # N=10000, d=4, 8 solves
    python upstream/jaxlib_cpu_lapack_deadlock.py 1000 8 2   # N, d, number of solves

One jitted function issues ``k`` independent batched triangular solves (LAPACK
``trsm`` through jaxlib's FFI kernels). XLA's CPU runtime runs independent thunks
concurrently on its intra-op thread pool; since jaxlib 0.10 each batched LAPACK kernel
also splits its batch over that same pool and blocks until the pieces finish. When as
many such kernels run at once as the pool has threads, every worker waits for tasks that
no free worker can run: the process stays alive with 0% CPU for ever (in gdb every
worker sits in ``BlockingCounter::Wait`` under the kernel's parallel batch map).

A watchdog thread prints ``DEADLOCK`` and exits with status 1 after ``--limit`` seconds
(the computation itself takes about 0.1 s); otherwise it prints ``ok``.

Observed on a 2-core x86-64 VM, Python 3.11, float64 (3 runs each unless noted):

==============  ==============================  ====================
jax / jaxlib    N=10000, d=4, k=8 solves         k=8 Cholesky factors
==============  ==============================  ====================
0.9.2           ok 3/3 (2.7 s incl. compile)     ok 3/3
0.10.0          DEADLOCK 3/3                     ok 3/3
0.10.2          DEADLOCK 2/2                     DEADLOCK 1/2
==============  ==============================  ====================

``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` does not help (DEADLOCK 2/2 on 0.10.2);
``--xla_cpu_use_thunk_runtime=false`` is no longer supported and does not help either.
"""

import argparse
import os
import sys
import threading
import time

import jax
import jax.numpy as jnp


def main() -> int:
    """Run the k solves once under a watchdog; exit 1 on a deadlock."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("N", type=int, nargs="?", default=10_000, help="batch size")
    ap.add_argument("d", type=int, nargs="?", default=4, help="matrix size")
    ap.add_argument("k", type=int, nargs="?", default=8, help="independent batched solves")
    ap.add_argument("--op", choices=["trsm", "cholesky"], default="trsm")
    ap.add_argument("--limit", type=float, default=30.0, help="watchdog seconds")
    a = ap.parse_args()
    jax.config.update("jax_enable_x64", True)

    X = jax.random.normal(jax.random.PRNGKey(0), (a.N, a.d, a.d))
    S = X @ jnp.swapaxes(X, -1, -2) + a.d * jnp.eye(a.d)

    def f(S):
        total = 0.0
        for i in range(1, a.k + 1):  # k independent batched LAPACK calls
            if a.op == "trsm":
                L = jnp.tril(S) + i * jnp.eye(a.d)
                total += jax.scipy.linalg.solve_triangular(L, S, lower=True).sum()
            else:
                total += jnp.linalg.cholesky(S + i * jnp.eye(a.d)).sum()
        return total

    def watchdog():
        time.sleep(a.limit)
        print(
            f"DEADLOCK: no result after {a.limit:.0f} s (jax {jax.__version__}, "
            f"{os.cpu_count()} CPUs)",
            flush=True,
        )
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    t = time.perf_counter()
    jax.block_until_ready(jax.jit(f)(S))
    print(f"ok in {time.perf_counter() - t:.2f} s (jax {jax.__version__}, {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
