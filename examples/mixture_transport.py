"""Optimal transport between two 2-D Gaussian mixtures (Delon & Desolneux 2020).

Panels: (1) the two mixtures and the component plan P (lines of width P_ij between
component means); (2) T_mean, the barycentric map, on samples of the source; (3) T_rand,
the random map; (4) a mixture fitted by EM (gj.fit_gmm) to samples of a ring, then
transported onto the target by its own T_mean. Prints the final mixture-W2 loss.
"""

import jax
from _common import ellipse, parse

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import gaussot_jax as gj  # noqa: E402


def rotated(theta, sx, sy):
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return R @ np.diag([sx, sy]) @ R.T


def draw(ax, gm, color, label):
    for i in range(gm.num_components):
        ax.plot(
            *ellipse(gm.means[i], gm.covs[i]).T, color=color, lw=1, label=label if i == 0 else None
        )


def main():
    args = parse(__doc__)
    n = 200 if args.quick else 1500
    p = gj.GaussianMixture(
        jnp.array([0.3, 0.4, 0.3]),
        jnp.array([[-4.0, -1.0], [-3.0, 2.5], [-5.0, 4.0]]),
        jnp.stack([rotated(0.3, 0.6, 0.2), rotated(1.2, 0.5, 0.3), rotated(2.0, 0.3, 0.3)]),
    )
    q = gj.GaussianMixture(
        jnp.array([0.5, 0.25, 0.25]),
        jnp.array([[4.0, 0.0], [3.0, 4.0], [6.0, 3.0]]),
        jnp.stack([rotated(-0.5, 0.8, 0.2), rotated(0.2, 0.3, 0.3), rotated(1.0, 0.6, 0.15)]),
    )
    out = gj.mixture_ot(p, q)
    x = p.sample(jax.random.PRNGKey(0), n)
    y_mean = out.map(x)
    y_rand = out.sample_map(jax.random.PRNGKey(1), x)

    # A mixture fitted by EM to a noisy ring, then transported onto q.
    t = jax.random.uniform(jax.random.PRNGKey(2), (n,), maxval=2 * np.pi)
    ring = jnp.stack([np.cos(t), np.sin(t)], 1) * 2.0 + jnp.array([-4.0, -5.0])
    ring = ring + 0.15 * jax.random.normal(jax.random.PRNGKey(3), ring.shape)
    fitted, hist = gj.fit_gmm(
        jax.random.PRNGKey(4), ring, 6, num_iters=10 if args.quick else 60, return_history=True
    )
    fit_out = gj.mixture_ot(fitted, q)
    ring_mapped = fit_out.map(ring)
    final = float(fit_out.cost)
    print(
        f"MW2^2(p, q) = {float(out.cost):.4f}; EM log-likelihood {float(hist[0]):.3f} -> "
        f"{float(hist[-1]):.3f}"
    )
    print(f"final loss: {final:.6e}")

    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2), sharex=True, sharey=True)
    ax = axes[0]
    draw(ax, p, "tab:blue", "source p")
    draw(ax, q, "tab:red", "target q")
    P = np.asarray(out.plan)
    for i in range(P.shape[0]):
        for j in range(P.shape[1]):
            if P[i, j] > 1e-8:
                ax.plot(*np.stack([p.means[i], q.means[j]]).T, "k-", lw=6 * P[i, j], alpha=0.6)
    ax.set_title("components and plan P")
    ax.legend(fontsize=8, loc="lower right")
    for ax, y, title in (
        (axes[1], y_mean, "T_mean (barycentric)"),
        (axes[2], y_rand, "T_rand (random)"),
    ):
        draw(ax, q, "tab:red", None)
        ax.scatter(*np.asarray(x).T, s=2, c="tab:blue", alpha=0.4)
        ax.scatter(*np.asarray(y).T, s=2, c="tab:green", alpha=0.4)
        ax.set_title(title)
    ax = axes[3]
    draw(ax, fitted, "tab:purple", "fit_gmm (k=6)")
    draw(ax, q, "tab:red", None)
    ax.scatter(*np.asarray(ring).T, s=2, c="tab:purple", alpha=0.3)
    ax.scatter(*np.asarray(ring_mapped).T, s=2, c="tab:green", alpha=0.4)
    ax.set_title(f"EM fit, transported (MW2^2 = {final:.2f})")
    ax.legend(fontsize=8, loc="lower right")
    for ax in axes:
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(f"{args.out}/mixture_transport.png", dpi=80)


if __name__ == "__main__":
    main()
