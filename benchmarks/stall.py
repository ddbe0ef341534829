"""Stall detector: does value_and_grad at large batches finish, or wedge inside XLA?

Each run is a subprocess; the parent samples its CPU time (``/proc/<pid>/stat``) every
second and declares a stall when the CPU time has not advanced for ``--stall`` seconds
(a wedge: the process alive, idle, never finishing), or a timeout at ``--limit``.

    python benchmarks/stall.py                       # library, the three sizes, 3 tries
    python benchmarks/stall.py --impl ott --tries 1  # OTT-JAX costs.Bures
    python benchmarks/stall.py --cases --tries 5     # every case of tests/hang_cases.py

Results are appended to ``benchmarks/results/stall.json`` (``--cases``:
``benchmarks/results/no_hang.json``), with the jax version.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from hang_cases import CASES, run_case, run_watched  # noqa: E402

SIZES = [(100_000, 2), (10_000, 4), (1000, 32)]

CHILD = r"""
import sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from bench import batch, compiled, REGISTRY, PEERS
N, d, impl, case, grad, reps = {N}, {d}, {impl!r}, {case!r}, {grad!r}, {reps!r}
f = (PEERS["OTT-JAX costs.Bures"] if impl == "ott" else REGISTRY[case])(d)
args = batch(np.random.default_rng(0), N, d, jnp.float64)
fn = compiled(f, grad)
ts = []
for _ in range(reps):
    t = time.perf_counter(); jax.block_until_ready(fn(*args)); ts.append(time.perf_counter() - t)
print(f"first={{ts[0]:.3f}} median={{sorted(ts)[len(ts) // 2]:.3f}} reps={{reps}}", flush=True)
"""


def run_one(N, d, impl, stall, limit, case="bures_wasserstein2", grad=True, reps=3):
    code = CHILD.format(
        root=str(HERE.parent), bench=str(HERE), N=N, d=d, impl=impl, case=case, grad=grad, reps=reps
    )
    r = run_watched([sys.executable, "-c", code], "first=", stall_s=stall, limit_s=limit)
    out = r.pop("output").strip().splitlines()
    return dict(
        N=N, d=d, impl=impl, case=case, grad=grad, reps=reps, **r, output=out[-1] if out else ""
    )


def run_cases(tries: int, stall: float, limit: float) -> None:
    import jax

    results = []
    for name in CASES:
        for k in range(tries):
            r = run_case(name, stall_s=stall, limit_s=limit)
            r.pop("output")
            r.update(try_=k, jax=jax.__version__, load=os.getloadavg())
            print(json.dumps(r), flush=True)
            results.append(r)
    ok = {n: sum(r["status"] == "finished" for r in results if r["case"] == n) for n in CASES}
    for n, c in ok.items():
        print(f"{n}: {c} of {tries} finished")
    path = HERE / "results" / "no_hang.json"
    old = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(old + results, indent=1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", default="gaussot_jax", choices=["gaussot_jax", "ott"])
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--stall", type=float, default=30.0)
    ap.add_argument("--limit", type=float, default=240.0)
    ap.add_argument("--sizes", default=None, help="e.g. 100000x2,10000x4")
    ap.add_argument("--case", default="bures_wasserstein2", help="a bench.py registry name")
    ap.add_argument("--forward", action="store_true", help="time the forward, not v&g")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", action="store_true", help="run tests/hang_cases.py's cases")
    a = ap.parse_args()
    if a.cases:
        return run_cases(a.tries, a.stall, a.limit)
    sizes = SIZES
    if a.sizes is not None:
        sizes = [tuple(map(int, s.split("x"))) for s in a.sizes.split(",")]
    results = []
    for N, d in sizes:
        for k in range(a.tries):
            r = run_one(N, d, a.impl, a.stall, a.limit, a.case, not a.forward, a.reps)
            r.update(try_=k, xla_flags=os.environ.get("XLA_FLAGS", ""), load=os.getloadavg())
            print(json.dumps(r), flush=True)
            results.append(r)
    path = HERE / "results" / "stall.json"
    old = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(old + results, indent=1))


if __name__ == "__main__":
    main()
