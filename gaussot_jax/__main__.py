"""``python -m gaussot_jax``: closed forms on a built-in pair of 2-D Gaussians.

Prints W2^2, the entropic cost and the Sinkhorn divergence for a few epsilons, then how
a discrete Sinkhorn on n samples (plain JAX, log domain) approaches the closed form as n
grows, the closed form being the ground truth. ``--plot FILE.png`` draws the two
Gaussians and the entropic plan's conditional ellipses.
"""

from __future__ import annotations

import argparse
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

import gaussot_jax as gj

EPSILONS = (0.01, 0.1, 1.0, 10.0)


def default_pair() -> tuple[gj.Gaussian, gj.Gaussian]:
    """The embedded example: two correlated 2-D Gaussians."""
    mu = gj.Gaussian(jnp.array([0.0, 0.0]), jnp.array([[1.0, 0.5], [0.5, 1.0]]))
    nu = gj.Gaussian(jnp.array([2.0, 1.0]), jnp.array([[2.0, -0.3], [-0.3, 0.5]]))
    return mu, nu


def discrete_sinkhorn_cost(x, y, epsilon, num_iters: int):
    """Entropic OT between uniform empirical measures, log-domain Sinkhorn.

    Minimises ``<P, C> + epsilon KL(P || a ⊗ b)`` with ``C_ij = ||x_i - y_j||^2``; at the
    fixed point the value is the dual ``<f, a> + <g, b>``.
    """
    C = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    loga = -jnp.log(x.shape[0])
    logb = -jnp.log(y.shape[0])

    def round_(fg, _):
        f, g = fg
        f = -epsilon * jax.nn.logsumexp((g[None, :] - C) / epsilon + logb, axis=1)
        g = -epsilon * jax.nn.logsumexp((f[:, None] - C) / epsilon + loga, axis=0)
        return (f, g), None

    init = (jnp.zeros(x.shape[0], x.dtype), jnp.zeros(y.shape[0], y.dtype))
    (f, g), _ = jax.lax.scan(round_, init, None, length=num_iters)
    return jnp.mean(f) + jnp.mean(g)


def closed_forms(mu, nu) -> list[tuple[float, float, float]]:
    """(epsilon, OT_eps, S_eps) for each of ``EPSILONS``."""
    cost = jax.jit(jax.vmap(lambda e: gj.entropic_ot(mu, nu, e).cost))
    div = jax.jit(jax.vmap(lambda e: gj.sinkhorn_divergence(mu, nu, e)))
    eps = jnp.asarray(EPSILONS)
    return list(zip(EPSILONS, np.asarray(cost(eps)), np.asarray(div(eps))))


def sample_table(mu, nu, epsilon: float, sizes, seeds: int = 8):
    """Rows (n, mean discrete cost, mean |error|, sd of the error) over ``seeds`` draws."""
    exact = float(gj.entropic_ot(mu, nu, epsilon).cost)

    @functools.partial(jax.jit, static_argnums=1)
    def run(keys, n: int):
        def one(k):
            kx, ky = jax.random.split(k)
            x, y = mu.sample(kx, (n,)), nu.sample(ky, (n,))
            return discrete_sinkhorn_cost(x, y, epsilon, 300)

        return jax.vmap(one)(keys)

    rows = []
    for n in sizes:
        values = np.asarray(run(jax.random.split(jax.random.PRNGKey(n), seeds), n))
        err = values - exact
        rows.append((n, float(values.mean()), float(np.abs(err).mean()), float(err.std())))
    return exact, rows


def plot(mu, nu, epsilons, path: str) -> None:
    """Draw mu, nu and the plan's conditionals y | x for a few x, one panel per eps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("--plot needs matplotlib: pip install 'gaussot_jax[plot]'")

    def ellipse(m, S, k=2.0):
        t = np.linspace(0, 2 * np.pi, 100)
        w, V = np.linalg.eigh(np.asarray(S))
        return np.asarray(m)[:, None] + k * (V * np.sqrt(np.maximum(w, 0))) @ np.stack(
            [np.cos(t), np.sin(t)]
        )

    fig, axes = plt.subplots(1, len(epsilons), figsize=(4.2 * len(epsilons), 4), sharey=True)
    anchors = np.asarray(ellipse(mu.mean, mu.cov, 1.0)[:, ::12].T)
    for ax, eps in zip(np.atleast_1d(axes), epsilons):
        out = gj.entropic_ot(mu, nu, eps)
        S = out.plan.conditional(2).tau
        ax.plot(*ellipse(mu.mean, mu.cov), color="C0", lw=2, label="mu (2 sd)")
        ax.plot(*ellipse(nu.mean, nu.cov), color="C1", lw=2, label="nu (2 sd)")
        for x in anchors:
            y = np.asarray(out.transport_map(jnp.asarray(x)))
            ax.plot([x[0], y[0]], [x[1], y[1]], color="0.5", lw=0.8)
            ax.plot(*ellipse(y, S, 1.0), color="C2", lw=0.8)
            ax.plot(*x, "o", color="C0", ms=3)
        ax.set_title(f"eps = {eps:g}: y | x (1 sd), cost {float(out.cost):.3f}")
        ax.set_aspect("equal")
    np.atleast_1d(axes)[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m gaussot_jax",
        description="Closed-form OT between two built-in 2-D Gaussians, checked against "
        "discrete Sinkhorn on samples.",
    )
    parser.add_argument("--epsilon", type=float, default=1.0, help="eps of the sample table")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[64, 256, 1024], help="sample sizes"
    )
    parser.add_argument("--quick", action="store_true", help="small sample sizes only")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the plans to this file")
    parser.add_argument("--float32", action="store_true", help="compute in float32")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", not args.float32)

    mu, nu = default_pair()
    dtype = "float32" if args.float32 else "float64"
    print(
        "Problem: OT_eps(mu, nu) = min over couplings pi of E_pi ||x - y||^2 "
        "+ eps KL(pi || mu x nu)"
    )
    print(f"         (eps = 2 sigma^2 of [JMPC20], = 2 t of [ADM25]); computed in {dtype}.")
    print("mu = N((0, 0), [[1, .5], [.5, 1]]),  nu = N((2, 1), [[2, -.3], [-.3, .5]])")
    print(f"W2^2(mu, nu) = {float(gj.bures_wasserstein2(mu, nu)):.10f}\n")
    print(f"{'epsilon':>8} {'OT_eps':>16} {'Sinkhorn div':>16}")
    for eps, cost, div in closed_forms(mu, nu):
        print(f"{eps:8g} {cost:16.10f} {div:16.10f}")

    sizes = [32, 128] if args.quick else args.sizes
    exact, rows = sample_table(mu, nu, args.epsilon, sizes)
    print(f"\nDiscrete Sinkhorn on n samples vs the closed form OT_eps = {exact:.6f}")
    print(f"(epsilon = {args.epsilon:g}; the gap is sampling error, O(n^-1/2))")
    print(f"{'n':>6} {'mean discrete':>14} {'mean |error|':>13} {'sd':>9}  (8 draws)")
    for n, value, err, sd in rows:
        print(f"{n:6d} {value:14.6f} {err:13.2e} {sd:9.2e}")
    if args.plot:
        plot(mu, nu, (0.1, 1.0, 10.0), args.plot)


if __name__ == "__main__":
    main()
