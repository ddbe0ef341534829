"""The dynamic Gaussian Schrödinger bridge over a linear SDE reference [ADM25].

Reference: a damped rotation ``dX = (M X + c) dt + G dW`` in 2-D. The static bridge between
``eta`` and ``mu`` (MATH.md §6: the core solver with ``W = beta^T tau^{-1}``; the same plan
as ``schrodinger_bridge(eta, mu, kernel).plan``) is completed into paths by pinning the
reference at both ends. The figure shows sampled bridge paths and the 2-sigma ellipses of
the exact time-t marginals ``bridge_marginal`` at a few times.

    python examples/dynamic_bridge.py [--quick] [--out DIR]
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
from _common import DEFAULT_OUT, require_matplotlib  # noqa: E402

require_matplotlib()
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import gaussot_jax as gj  # noqa: E402

jax.config.update("jax_enable_x64", True)


def static_bridge_plan(eta, mu, kernel):
    """Static Schrödinger bridge plan of (X_0, X_T): MATH.md §2 with W = beta^T tau^{-1}."""
    W = jnp.linalg.solve(kernel.tau, kernel.beta).T
    C = gj.solve_coupling(eta.cov, mu.cov, W).cross_cov
    cov = gj.sym(jnp.block([[eta.cov, C], [C.T, mu.cov]]))
    return gj.Gaussian(jnp.concatenate([eta.mean, mu.mean]), cov)


def ellipse(g, nsd=2.0, num=100):
    w, V = np.linalg.eigh(np.asarray(g.cov))
    a = np.linspace(0, 2 * np.pi, num)
    circle = np.stack([np.cos(a), np.sin(a)])
    return (np.asarray(g.mean)[:, None] + nsd * (V * np.sqrt(w)) @ circle).T


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer paths, coarser grid")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args()
    out = Path(args.out)
    print(f"figures go to {out.resolve()}")
    out.mkdir(parents=True, exist_ok=True)

    T = 1.0
    sde = gj.LinearSDE(
        M=jnp.array([[-0.3, -3.0], [3.0, -0.3]]),  # rotation with damping
        c=jnp.array([0.0, 0.0]),
        G=0.6 * jnp.eye(2),
    )
    kernel = sde.kernel(T)
    eta = gj.Gaussian(jnp.array([-2.0, 0.0]), jnp.array([[0.3, 0.1], [0.1, 0.15]]))
    mu = gj.Gaussian(jnp.array([2.0, 0.5]), jnp.array([[0.1, -0.05], [-0.05, 0.4]]))
    plan = static_bridge_plan(eta, mu, kernel)

    n_paths, n_grid = (20, 41) if args.quick else (40, 201)
    times = jnp.linspace(0.0, T, n_grid)
    paths = np.asarray(gj.sample_bridge_paths(jax.random.PRNGKey(0), sde, plan, T, times, n_paths))

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for p in paths:
        ax.plot(p[:, 0], p[:, 1], color="0.6", lw=0.6, alpha=0.8)
    snapshots = [0.0, 0.25, 0.5, 0.75, 1.0]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(snapshots)))
    for t, col in zip(snapshots, colors):
        g = gj.bridge_marginal(sde, plan, t, T)
        e = ellipse(g)
        ax.plot(e[:, 0], e[:, 1], color=col, lw=2, label=f"t = {t:g}")
        j = int(round(t / T * (n_grid - 1)))
        ax.scatter(paths[:, j, 0], paths[:, j, 1], color=col, s=8, zorder=3)
    ax.set_aspect("equal")
    ax.set_title(
        "Dynamic Gaussian Schrödinger bridge, rotating OU reference\n"
        "sampled paths and exact 2-sigma marginals"
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = out / "dynamic_bridge.png"
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
