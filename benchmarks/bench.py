"""Benchmarks of gaussot_jax against a batched-eigh floor, a batched-matmul floor and peers.

A script, not a test (DESIGN.md §10): every timing is a median over repeats after a
warm-up, with ``block_until_ready``, and every figure is also reported as a ratio to the
floors measured in the same run, so a loaded machine shifts the times, not the story.

    python benchmarks/bench.py                  # the main table (N = 1000, d = 8) + compile
    python benchmarks/bench.py --scaling        # + scaling in N (d = 2) and d (N = 1000), PNG
    python benchmarks/bench.py --quick          # small sizes, a smoke run
    python benchmarks/bench.py --fid            # + W2 at d = 2048 vs eigenvalue-only, SciPy
    python benchmarks/bench.py --compile-only   # trace + compile of every public loss (d = 8)

Results: ``benchmarks/results/<name>.json`` (machine, versions, all numbers) and
``benchmarks/results/scaling.png``.

Add a case with one registration::

    @register("pairwise_w2")
    def _(d):  # returns f(a, A, b, B) -> scalar for ONE pair; vmapped and differentiated here
        return lambda a, A, b, B: ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from reference import bures_wasserstein2_ld  # noqa: E402

import gaussot_jax as gj  # noqa: E402

# ---------------------------------------------------------------------------------------
# Registry: name -> builder(d) -> per-pair scalar function f(a, A, b, B).
# ---------------------------------------------------------------------------------------
REGISTRY: dict[str, Callable[[int], Callable]] = {}
PEERS: dict[str, Callable[[int], Callable]] = {}


def register(name: str, *, peer: bool = False):
    """Register a per-pair scalar case; it is vmapped, jitted and differentiated here."""

    def deco(builder):
        (PEERS if peer else REGISTRY)[name] = builder
        return builder

    return deco


def _g(a, A):
    return gj.Gaussian(a, A, validate=False)


@register("floor: eigh")
def _(d):
    return lambda a, A, b, B: jnp.sum(jnp.linalg.eigh(A)[0])


@register("floor: matmul")
def _(d):
    return lambda a, A, b, B: jnp.sum(A @ B)


@register("bures_wasserstein2")
def _(d):
    return lambda a, A, b, B: gj.bures_wasserstein2(_g(a, A), _g(b, B))


@register("entropic_ot(...).cost")
def _(d):
    return lambda a, A, b, B: gj.entropic_ot(_g(a, A), _g(b, B), 1.0).cost


def _entropic_all_fields(a, A, b, B):
    # Every field of the result: plan (both core solves), potentials, map, cost.
    out = gj.entropic_ot(_g(a, A), _g(b, B), 1.0)
    f, g = out.potentials
    return (
        out.cost
        + jnp.sum(out.plan.cov)
        + jnp.sum(f.quad)
        + jnp.sum(g.quad)
        + jnp.sum(out.entropic_map.matrix)
    )


@register("entropic_ot (all fields)")
def _(d):
    return _entropic_all_fields


@register("sinkhorn_divergence")
def _(d):
    return lambda a, A, b, B: gj.sinkhorn_divergence(_g(a, A), _g(b, B), 1.0)


@register("sqrtm (Tr W sqrtm(A))")
def _(d):
    return lambda a, A, b, B: jnp.sum(B * gj.sqrtm(A))


@register("bures_wasserstein2 [method=eigh, before]")
def _(d):
    # The pre-fast-path algorithm (two eigh per pair forward), for the record.
    def f(a, A, b, B):
        cross = gj.trace_fn(jnp.sqrt, A, B, method="eigh")
        return jnp.sum((a - b) ** 2) + jnp.trace(A) + jnp.trace(B) - 2 * cross

    return f


@register("OTT-JAX costs.Bures", peer=True)
def _(d):
    from ott.geometry import costs

    cost = costs.Bures(dimension=d)
    return lambda a, A, b, B: cost(jnp.concatenate([a, A.ravel()]), jnp.concatenate([b, B.ravel()]))


# ---------------------------------------------------------------------------------------
def median_time(fn, *args, repeats: int = 7, min_time: float = 0.2) -> float:
    """Median wall time of fn(*args) in seconds (warmed up, blocked)."""
    jax.block_until_ready(fn(*args))
    times, total = [], 0.0
    while len(times) < repeats or (total < min_time and len(times) < 50):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
        total += times[-1]
    return statistics.median(times)


def batch(rng, N, d, dtype, cond=10.0):
    """N random pairs of Gaussians (means, covariances with the given condition number)."""

    def spd(n):
        X = rng.normal(size=(n, d, d))
        Q, _ = np.linalg.qr(X)
        w = np.geomspace(1.0, 1.0 / cond, d) if d > 1 else np.ones(1)
        S = np.einsum("nij,j,nkj->nik", Q, w, Q)
        return 0.5 * (S + S.transpose(0, 2, 1))

    a, b = rng.normal(size=(N, d)), rng.normal(size=(N, d))
    return tuple(jnp.asarray(x, dtype) for x in (a, spd(N), b, spd(N)))


def compiled(f, grad: bool):
    g = jax.value_and_grad(f, argnums=(1, 3)) if grad else f
    return jax.jit(jax.vmap(g))


def time_case(f, args, grad: bool) -> float:
    return median_time(compiled(f, grad), *args)


def compile_time(f, args, grad: bool = False) -> float:
    """Seconds for trace + compile (lower + compile of the jitted, vmapped function)."""
    fn = compiled(f, grad)
    t = time.perf_counter()
    fn.lower(*args).compile()
    return time.perf_counter() - t


# ---------------------------------------------------------------------------------------
def main_table(N, d, dtype, rng, peers=True):
    args = batch(rng, N, d, dtype)
    rows = {}
    cases = dict(REGISTRY)
    floor = compiled(cases["floor: eigh"](d), False)
    if peers and dtype == jnp.float64:
        cases.update(PEERS)
    for name, build in cases.items():
        f = build(d)
        # The floor is re-timed next to every case: on a shared machine the load drifts.
        eigh = median_time(floor, *args)
        if name in PEERS:  # OTT-JAX can wedge XLA's CPU runtime: run it in a watched child
            from stall import run_one

            r = {k: run_one(N, d, "ott", 60, 300, grad=k == "vag", reps=7) for k in ("f", "vag")}
            t = {
                k: float(v["output"].split("median=")[1].split()[0])
                if "median=" in v["output"]
                else float("nan")
                for k, v in r.items()
            }
            fwd, vag = t["f"], t["vag"]
            rows[name] = dict(
                fwd_s=fwd,
                vag_s=vag,
                fwd_over_eigh=fwd / eigh,
                vag_over_fwd=vag / fwd,
                eigh_s=eigh,
                status={k: v["status"] for k, v in r.items()},
            )
            print(
                f"  {name:45s} fwd {fwd * 1e3:9.3f} ms ({fwd / eigh:6.2f}x eigh)   "
                f"v&g {vag * 1e3:9.3f} ms ({vag / fwd:6.2f}x fwd, {vag / eigh:6.2f}x eigh) "
                f"[{rows[name]['status']}]",
                flush=True,
            )
            continue
        try:
            fwd = time_case(f, args, False)
        except Exception as e:  # noqa: BLE001  (a peer may not support this dtype)
            print(f"  {name}: failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}")
            rows[name] = dict(error=f"{type(e).__name__}")
            continue
        try:
            vag = time_case(f, args, True)
        except Exception as e:  # noqa: BLE001
            vag = float("nan")
            print(f"  {name}: value_and_grad failed: {type(e).__name__}", flush=True)
        rows[name] = dict(
            fwd_s=fwd, vag_s=vag, fwd_over_eigh=fwd / eigh, vag_over_fwd=vag / fwd, eigh_s=eigh
        )
        print(
            f"  {name:45s} fwd {fwd * 1e3:9.3f} ms ({fwd / eigh:6.2f}x eigh)   "
            f"v&g {vag * 1e3:9.3f} ms ({vag / fwd:6.2f}x fwd, {vag / eigh:6.2f}x eigh)",
            flush=True,
        )
    if peers and dtype == jnp.float64:
        import ot

        a, A, b, B = (np.asarray(x, np.float64) for x in args)
        ot_fn = lambda: ot.gaussian.bures_wasserstein_distance(a, b, A, B, paired=True)  # noqa: E731
        fwd = median_time(ot_fn, repeats=3)
        rows["POT gaussian.bures_wasserstein_distance (numpy)"] = dict(
            fwd_s=fwd, vag_s=float("nan"), fwd_over_eigh=fwd / eigh, vag_over_fwd=float("nan")
        )
        print(
            f"  {'POT bures_wasserstein_distance (numpy)':45s} fwd {fwd * 1e3:9.3f} ms "
            f"({fwd / eigh:6.2f}x eigh)",
            flush=True,
        )
    return rows


def accuracy(d, rng, n=8, cond=1e6):
    """Max relative error of W2^2 (float64) against the longdouble reference."""
    args = batch(rng, n, d, jnp.float64, cond=cond)
    a, A, b, B = (np.asarray(x) for x in args)
    ref = np.array([float(bures_wasserstein2_ld(*z)) for z in zip(a, A, b, B)])
    out = {}
    for name in ("bures_wasserstein2", "bures_wasserstein2 [method=eigh, before]"):
        val = np.asarray(compiled(REGISTRY[name](d), False)(*args))
        out[name] = float(np.max(np.abs(val - ref) / np.abs(ref)))
    val = np.asarray(compiled(PEERS["OTT-JAX costs.Bures"](d), False)(*args))
    out["OTT-JAX costs.Bures"] = float(np.max(np.abs(val - ref) / np.abs(ref)))
    try:
        import ot

        w = ot.gaussian.bures_wasserstein_distance(a, b, A, B, paired=True) ** 2
        out["POT bures_wasserstein_distance^2"] = float(np.max(np.abs(w - ref) / np.abs(ref)))
    except Exception as e:  # noqa: BLE001
        out["POT bures_wasserstein_distance^2"] = f"failed: {e}"
    return out


def compile_times(d, rng):
    args = batch(rng, 4, d, jnp.float64)
    out = {}
    for name in (
        "bures_wasserstein2",
        "entropic_ot(...).cost",
        "sinkhorn_divergence",
        "sqrtm (Tr W sqrtm(A))",
    ):
        f = REGISTRY[name](d)
        out[name] = dict(fwd_s=compile_time(f, args), vag_s=compile_time(f, args, True))

    def full(a, A, b, B):  # every field of the result is live
        return gj.entropic_ot(_g(a, A), _g(b, B), 1.0)

    fn = jax.jit(jax.vmap(full))
    t = time.perf_counter()
    fn.lower(*args).compile()
    out["entropic_ot (all fields)"] = dict(fwd_s=time.perf_counter() - t)
    return out


def _public_losses(d):
    """A scalar loss of ``(a, A, b, B)`` for each public differentiable entry point."""
    kernel = gj.brownian_kernel(d, 1.0)

    def pair(a, A, b, B):
        return _g(a, A), _g(b, B)

    def bary(a, A, b, B):
        return gj.Gaussian(jnp.stack([a, b]), jnp.stack([A, B]), validate=False)

    def mix(a, A, b, B, w):
        return gj.GaussianMixture(
            jnp.array([w, 1.0 - w]), jnp.stack([a, b]), jnp.stack([A, B]), validate=False
        )

    def scaled(a, A, mass):
        return gj.ScaledGaussian(jnp.asarray(mass), a, A, validate=False)

    def reference(a, A, b, B):
        mu, nu = pair(a, A, b, B)
        return gj.entropic_ot(mu, nu, 1.0, gj.correlation_reference(mu, nu, 0.3 * jnp.eye(d))).cost

    return {
        "bures_wasserstein2": lambda *x: gj.bures_wasserstein2(*pair(*x)),
        "entropic_ot(...).cost": lambda *x: gj.entropic_ot(*pair(*x), 1.0).cost,
        "entropic_ot (reference)": reference,
        "sinkhorn_divergence": lambda *x: gj.sinkhorn_divergence(*pair(*x), 1.0),
        "unbalanced_entropic_ot": lambda a, A, b, B: (
            gj.unbalanced_entropic_ot(scaled(a, A, 1.0), scaled(b, B, 2.0), 1.0, 1.0).cost
        ),
        "schrodinger_bridge(...).kl": lambda *x: gj.schrodinger_bridge(*pair(*x), kernel).kl,
        "gaussian_sinkhorn (10 iterations)": lambda *x: jnp.sum(
            gj.gaussian_sinkhorn(*pair(*x), kernel, 10).forward.tau
        ),
        "kl_gaussian": lambda *x: gj.kl_gaussian(*pair(*x)),
        "bures_barycenter (2 inputs)": lambda *x: jnp.sum(gj.bures_barycenter(bary(*x)).cov),
        "entropic_barycenter (debiased)": lambda *x: jnp.sum(
            gj.entropic_barycenter(bary(*x), None, 1.0, debiased=True).cov
        ),
        "mixture_wasserstein2 (2 x 2 components)": lambda a, A, b, B: gj.mixture_wasserstein2(
            mix(a, A, b, B, 0.3), mix(b, A, a, B, 0.6)
        ),
    }


def public_compile_times(d, rng):
    """Trace + compile of forward and value_and_grad of every public loss at ``d``."""
    args = batch(rng, 4, d, jnp.float64)
    out = {}
    for name, f in _public_losses(d).items():
        out[name] = dict(fwd_s=compile_time(f, args), vag_s=compile_time(f, args, True))
        print(f"   {name:42s} {out[name]['fwd_s']:6.2f} {out[name]['vag_s']:6.2f}", flush=True)
    return out


def scaling(rng, dtype, Ns, ds, d_for_N=2, N_for_d=1000):
    names = [
        "floor: eigh",
        "floor: matmul",
        "bures_wasserstein2",
        "entropic_ot(...).cost",
        "bures_wasserstein2 [method=eigh, before]",
    ]
    res = {"N": {}, "d": {}}
    for N in Ns:
        args = batch(rng, N, d_for_N, dtype)
        res["N"][N] = {n: time_case(REGISTRY[n](d_for_N), args, False) for n in names}
        res["N"][N]["entropic_ot(...).cost v&g"] = time_case(
            REGISTRY["entropic_ot(...).cost"](d_for_N), args, True
        )
        print(
            f"  N={N:>7d} d={d_for_N}: "
            + "  ".join(f"{k.split(' [')[0][:22]}={v * 1e3:.3f}ms" for k, v in res["N"][N].items()),
            flush=True,
        )
    for d in ds:
        args = batch(rng, N_for_d, d, dtype)
        res["d"][d] = {n: time_case(REGISTRY[n](d), args, False) for n in names}
        res["d"][d]["entropic_ot(...).cost v&g"] = time_case(
            REGISTRY["entropic_ot(...).cost"](d), args, True
        )
        print(
            f"  d={d:>3d} N={N_for_d}: "
            + "  ".join(f"{k.split(' [')[0][:22]}={v * 1e3:.3f}ms" for k, v in res["d"][d].items()),
            flush=True,
        )
    return res


def plot(scal, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, xl in (
        (axes[0], "N", "number of pairs N (d = 2)"),
        (axes[1], "d", "dimension d (N = 1000)"),
    ):
        xs = sorted(int(x) for x in scal[key])
        names = list(next(iter(scal[key].values())).keys())
        for n in names:
            ys = [scal[key][x][n] * 1e3 for x in xs]
            style = "--" if n.startswith("floor") else "-"
            ax.loglog(xs, ys, style, marker="o", ms=3, label=n)
        ax.set_xlabel(xl)
        ax.set_ylabel("median time [ms]")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def fid_scale(d, rng, repeats=3):
    """One pair at FID scale (d = 2048, float64): W2 against eigenvalue-only routes.

    Rows: ours (``bures_wasserstein2``: the eigenvalue-only value with its error bound,
    certified here, so no Procrustes fallback), ours at a nearby pair (``B`` replaced by
    ``A + 1e-8 I``: uncertified, so the eigenvalue-only route plus the Procrustes sum of
    squares), the public eigenvalue-only route in jax (Cholesky of ``A``,
    ``jnp.linalg.eigvalsh(L^T B L)``, which computes eigenvectors too; the three-trace
    form, which cancels for nearby Gaussians), the same with LAPACK ``syevd`` called
    with ``jobz = 'N'`` (what ours evaluates, without the bound), a single ``eigh`` with
    eigenvectors, and SciPy's ``sqrtm(A @ B)`` route of pytorch-fid and clean-fid (with
    their ``.real``).
    """
    import scipy.linalg as sl

    from gaussot_jax import bures

    X = rng.normal(size=(2 * d, d))
    A = X.T @ X / (2 * d)
    Y = rng.normal(size=(2 * d, d))
    B = Y.T @ Y / (2 * d) + 0.1 * np.eye(d)
    a, b = rng.normal(size=d), rng.normal(size=d)
    Aj, Bj, aj, bj = (jnp.asarray(x) for x in (A, B, a, b))

    ours = jax.jit(lambda a, A, b, B: gj.bures_wasserstein2(_g(a, A), _g(b, B)))

    @jax.jit
    def eigvals_only(a, A, b, B):
        L = jnp.linalg.cholesky(A)
        w = jnp.linalg.eigvalsh(L.T @ B @ L)
        cross = jnp.sum(jnp.sqrt(jnp.clip(w, 0.0)))
        return jnp.sum((a - b) ** 2) + jnp.trace(A) + jnp.trace(B) - 2.0 * cross

    @jax.jit
    def eigvals_jobz_n(a, A, b, B):
        L = jnp.linalg.cholesky(A)
        cross = jnp.sum(jnp.sqrt(jnp.clip(bures._lapack_eigvals(L.T @ B @ L), 0.0)))
        return jnp.sum((a - b) ** 2) + jnp.trace(A) + jnp.trace(B) - 2.0 * cross

    eigh_vec = jax.jit(lambda a, A, b, B: jnp.sum(jnp.linalg.eigh(A)[1][0]))
    near = Aj + 1e-8 * jnp.eye(d, dtype=Aj.dtype)

    def scipy_fid(a, A, b, B):
        covmean = sl.sqrtm(A @ B).real
        return float(np.sum((a - b) ** 2) + np.trace(A) + np.trace(B) - 2 * np.trace(covmean))

    rows = {}
    for name, fn, args in [
        ("bures_wasserstein2", ours, (aj, Aj, bj, Bj)),
        ("bures_wasserstein2, nearby pair (fallback)", ours, (aj, Aj, bj, near)),
        ("eigenvalue-only (chol + eigvalsh)", eigvals_only, (aj, Aj, bj, Bj)),
        ("eigenvalue-only (chol + syevd jobz=N)", eigvals_jobz_n, (aj, Aj, bj, Bj)),
        ("floor: one eigh with vectors", eigh_vec, (aj, Aj, bj, Bj)),
        ("SciPy sqrtm(A @ B) (pytorch-fid)", scipy_fid, (a, A, b, B)),
    ]:
        t = median_time(fn, *args, repeats=repeats, min_time=0.0)
        rows[name] = dict(seconds=t, value=float(fn(*args)))
        print(f"  {name:44s} {t:8.3f} s  value {rows[name]['value']:.12g}", flush=True)
    base = rows["eigenvalue-only (chol + eigvalsh)"]["seconds"]
    for r in rows.values():
        r["ratio_to_eigenvalue_only"] = r["seconds"] / base
    return rows


def machine():
    info = dict(
        platform=platform.platform(),
        processor=platform.processor(),
        cpus=os.cpu_count(),
        python=platform.python_version(),
        jax=jax.__version__,
        device=str(jax.devices()[0]),
        loadavg=os.getloadavg(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )
    for mod in ("jaxlib", "ott", "ot", "numpy", "equinox"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--scaling", action="store_true")
    p.add_argument("--fid", action="store_true", help="+ one pair at d = 2048 (FID scale)")
    p.add_argument(
        "--compile-only",
        action="store_true",
        help="only the compile times of every public loss (forward, value_and_grad)",
    )
    p.add_argument("--name", default="cpu")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    N, d = (50, 4) if args.quick else (1000, 8)
    res = dict(machine=machine(), N=N, d=d, tables={})
    print(f"machine: {res['machine']}", flush=True)
    if args.compile_only:
        print(f"[compile] every public loss, d = {d}: forward, value_and_grad (s)", flush=True)
        res["public_compile_s"] = public_compile_times(d, rng)
        (out / f"{args.name}_compile.json").write_text(json.dumps(res, indent=1, default=str))
        print("saved", out / f"{args.name}_compile.json", flush=True)
        return
    for dtype in (jnp.float64, jnp.float32):
        print(f"[table] N={N} d={d} {jnp.dtype(dtype).name}", flush=True)
        res["tables"][jnp.dtype(dtype).name] = main_table(N, d, dtype, rng)
    if not args.quick:
        print("[table] N=100000 d=2 float64", flush=True)
        res["tables"]["d2_N1e5_float64"] = main_table(100_000, 2, jnp.float64, rng, peers=False)
    print("[accuracy] float64, condition number 1e6, max relative error of W2^2", flush=True)
    res["accuracy_cond1e6"] = accuracy(d, rng)
    print("  ", res["accuracy_cond1e6"], flush=True)
    if args.fid:
        print("[fid] one pair, d = 2048, float64", flush=True)
        res["fid_d2048"] = fid_scale(64 if args.quick else 2048, rng)
    print("[compile] seconds at d =", d, flush=True)
    res["compile_s"] = compile_times(d, rng)
    print("  ", json.dumps(res["compile_s"]), flush=True)
    if args.scaling:
        Ns = [10, 100] if args.quick else [10, 100, 1000, 10_000, 100_000]
        ds = [1, 2, 4] if args.quick else [1, 2, 3, 4, 8, 16, 32, 64]
        res["scaling"] = {}
        for dtype in (jnp.float64, jnp.float32):
            name = jnp.dtype(dtype).name
            print(f"[scaling] {name}", flush=True)
            res["scaling"][name] = scaling(rng, dtype, Ns, ds)
        plot(
            res["scaling"]["float64"],
            out / f"scaling_{args.name}.png",
            f"gaussot_jax scaling, float64, {res['machine']['device']}, "
            f"{res['machine']['cpus']} cores",
        )
    res["machine"]["loadavg_end"] = os.getloadavg()
    (out / f"{args.name}.json").write_text(json.dumps(res, indent=1, default=str))
    print("saved", out / f"{args.name}.json", flush=True)


if __name__ == "__main__":
    main()
