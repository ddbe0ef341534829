"""Gaussian Sinkhorn converging to the closed-form Schrödinger bridge ([ADM25], Appendix A).

Writes four PNGs to --out (default examples/figures/):

* sinkhorn_iterates.png  the y-marginal of P_{2n} = eta ⊗ theta_n approaching mu, and the
                         entries of tau_n approaching the closed form tau*;
* bridge_samples.png     pairs (x, y) from the bridge and the entropic map x -> E[y | x];
* error_slope.png        ||tau_n - tau*|| and ||alpha_n - alpha*|| against the predicted
                         rates rho_max^4 and rho_max^2, for several t (tau = t I);
* rate_vs_t.png          the predicted rate as a function of t, and the measured one.

Run:  python examples/sinkhorn_convergence.py [--quick] [--out DIR]
"""

import argparse
import pathlib

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


def ellipse(mean, cov, n=200):
    """Points of the 2-sigma ellipse of N(mean, cov)."""
    a = np.linspace(0, 2 * np.pi, n)
    w, V = np.linalg.eigh(np.asarray(cov))
    circle = np.stack([np.cos(a), np.sin(a)], 1)
    return np.asarray(mean) + 2 * circle @ (V * np.sqrt(w)).T


def problem():
    eta = gj.Gaussian(jnp.array([-1.5, 0.0]), jnp.array([[1.0, 0.6], [0.6, 0.8]]))
    mu = gj.Gaussian(jnp.array([2.0, 1.0]), jnp.array([[0.5, -0.3], [-0.3, 1.2]]))
    return eta, mu


def heat_kernel(t):
    return gj.LinearGaussianKernel(jnp.zeros(2), jnp.eye(2), t * jnp.eye(2), validate=False)


def measured_rate(err):
    """err[n+1] / err[n] at the first n with err[n] < 1e-10 err[0] (top mode dominant).

    Falls back to the last pair above round-off (1e-13 err[0]) for very fast rates.
    """
    err = np.asarray(err)
    ok = np.nonzero(err[1:] > 1e-13 * err[0])[0]  # pairs (n, n+1) above round-off
    small = np.nonzero(err[:-1] < 1e-10 * err[0])[0]
    n = small[0] if len(small) and small[0] in ok else ok[-1]
    return float(err[n + 1] / err[n])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--quick", action="store_true", help="fast run (fewer points)")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    print(f"figures go to {out.resolve()}")
    out.mkdir(parents=True, exist_ok=True)

    eta, mu = problem()
    num_iters = 80 if args.quick else 300
    # One vmapped Sinkhorn run over t serves every figure (one compilation).
    ts = jnp.array([0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0])
    trs = jax.jit(jax.vmap(lambda t: gj.gaussian_sinkhorn(eta, mu, heat_kernel(t), num_iters)))(ts)
    rounds = np.arange(1, num_iters + 1)

    # 1. iterates for t = 0.5 ----------------------------------------------------------
    i0 = 3
    t0 = float(ts[i0])
    kernel = heat_kernel(t0)
    tr = jax.tree.map(lambda x: x[i0], trs)
    br = tr.bridge
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    shown = [0, 1, 2, 4, 8]
    # y-marginals of eta ⊗ theta_n, n = 0..8 (theta_0 = kernel), in one jitted vmap
    thetas = jax.tree.map(lambda k0, ks: jnp.concatenate([k0[None], ks[:8]]), kernel, tr.forward)
    ys = jax.jit(jax.vmap(lambda k: k.pushforward(eta)))(thetas)
    ys = [jax.tree.map(lambda x, n=n: x[n], ys) for n in range(9)]
    for j, n in enumerate(shown):
        e = ellipse(ys[n].mean, ys[n].cov)
        ax.plot(*e.T, color=plt.cm.viridis(j / len(shown)), label=f"y-marginal, n={n}")
    ax.plot(*ellipse(mu.mean, mu.cov).T, "k--", lw=2, label="target mu")
    ax.plot(*ellipse(eta.mean, eta.cov).T, color="tab:red", lw=1.5, label="eta")
    ax.set_title(f"Sinkhorn: marginal of eta ⊗ theta_n (t = {t0})")
    ax.set_aspect("equal")
    ax.legend(fontsize=7)
    ax = axes[1]
    for (i, j), c in zip([(0, 0), (0, 1), (1, 1)], ["tab:blue", "tab:orange", "tab:green"]):
        ax.plot(rounds, tr.forward.tau[:, i, j], color=c, label=f"tau_n[{i},{j}]")
        ax.axhline(float(br.forward.tau[i, j]), color=c, ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("round n")
    ax.set_title("entries of tau_n; dashed: closed form tau*")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sinkhorn_iterates.png", dpi=90)
    plt.close(fig)

    # 2. samples pushed through the bridge -----------------------------------------------
    n_samples = 300 if args.quick else 1500
    x, y = jax.jit(lambda key: br.sample(key, (n_samples,)))(jax.random.PRNGKey(0))
    tx = jax.jit(jax.vmap(br.transport_map))(x)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(*x.T, s=4, color="tab:red", alpha=0.4, label="x ~ eta")
    ax.scatter(*y.T, s=4, color="tab:blue", alpha=0.4, label="y ~ bridge(x, .)")
    for k in range(0, n_samples, max(1, n_samples // 40)):
        ax.annotate(
            "", tx[k], x[k], arrowprops=dict(arrowstyle="->", lw=0.6, color="0.3", alpha=0.7)
        )
    ax.plot(*ellipse(eta.mean, eta.cov).T, color="tab:red")
    ax.plot(*ellipse(mu.mean, mu.cov).T, color="tab:blue")
    ax.set_title(f"Bridge samples (t = {t0}); arrows: x -> E[y | x]")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "bridge_samples.png", dpi=90)
    plt.close(fig)

    # 3. measured error slopes vs predicted rates ---------------------------------------
    shown = [0, 2, 4, 5]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for k, i in enumerate(shown):
        t = ts[i]
        c = plt.cm.plasma(k / len(shown))
        for ax, err, rate in (
            (axes[0], trs.error[i], trs.bridge.rate[i]),
            (axes[1], trs.mean_error[i], trs.bridge.mean_rate[i]),
        ):
            ax.semilogy(
                rounds, err, color=c, label=f"t={float(t):g}: measured {measured_rate(err):.4f}"
            )
            ax.semilogy(
                rounds,
                err[0] * rate ** (rounds - 1.0),
                "--",
                color=c,
                lw=1,
                label=f"predicted {float(rate):.4f}",
            )
    axes[0].set_title("||tau_n - tau*||_F, predicted rho_max^4")
    axes[1].set_title("||alpha_n - alpha*||, predicted rho_max^2")
    for ax in axes:
        ax.set_ylim(1e-16, 10)
        ax.set_xlabel("round n")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "error_slope.png", dpi=90)
    plt.close(fig)

    # 4. rate as a function of t ---------------------------------------------------------
    t_grid = jnp.geomspace(1e-2, 1e2, 25 if args.quick else 81)
    rates = jax.jit(jax.vmap(lambda t: gj.schrodinger_bridge(eta, mu, heat_kernel(t)).rate))(t_grid)
    measured = [measured_rate(e) for e in trs.error]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.loglog(t_grid, rates, label="predicted (l / (1 + l))^2 = rho_max^4")
    ax.loglog(ts, measured, "o", label="measured Sinkhorn slope")
    ax.set_xlabel("t  (reference kernel tau = t I, epsilon = 2t)")
    ax.set_ylabel("per-round contraction")
    ax.set_title("Sinkhorn rate vs regularisation")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rate_vs_t.png", dpi=90)
    plt.close(fig)

    for t, m, p in zip(ts, measured, trs.bridge.rate):
        print(f"t = {float(t):6.3f}   predicted rate {float(p):.6f}   measured {m:.6f}")
    print(f"wrote 4 figures to {out}")


if __name__ == "__main__":
    main()
