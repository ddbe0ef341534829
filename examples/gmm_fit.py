"""Fit a Gaussian mixture to another through pairwise entropic costs and a discrete OT.

Loss (an entropic mixture-Wasserstein distance, Delon & Desolneux 2020):
    C = gj.pairwise(gj.sinkhorn_divergence, model_components, target_components, epsilon)
    loss = <P, C>,  P the entropic OT plan between the component weights for cost C
(log-domain Sinkhorn, unrolled; differentiable in C). Optax Adam on the model's means and
Cholesky factors.
"""

import jax
from _common import ellipse, fit, parse

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gaussot_jax as gj  # noqa: E402


def sinkhorn_plan(a, b, C, reg=0.05, num_iters=200):
    """Entropic OT plan between histograms a, b (log-domain Sinkhorn, lax.scan)."""
    C = C / jnp.max(jax.lax.stop_gradient(C))

    def body(fg, _):
        f, g = fg
        f = reg * (jnp.log(a) - jax.nn.logsumexp((g[None, :] - C) / reg, axis=1))
        g = reg * (jnp.log(b) - jax.nn.logsumexp((f[:, None] - C) / reg, axis=0))
        return (f, g), None

    (f, g), _ = jax.lax.scan(body, (jnp.zeros_like(a), jnp.zeros_like(b)), None, num_iters)
    return jnp.exp((f[:, None] + g[None, :] - C) / reg)


def main():
    args = parse(__doc__)
    rng = np.random.default_rng(1)
    k = 4
    angles = np.linspace(0, 2 * np.pi, k, endpoint=False)
    t_means = 3.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    t_covs = []
    for th in angles:
        R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        t_covs.append(R @ np.diag([0.8, 0.1]) @ R.T)
    target = gj.Gaussian(t_means, np.stack(t_covs))
    t_weights = jnp.full(k, 1.0 / k)
    m_weights = jnp.full(k, 1.0 / k)  # matched to the targets by the discrete OT
    eps = 0.1

    def model(p):
        L = jnp.tril(p["L"])
        return gj.Gaussian(p["means"], L @ jnp.swapaxes(L, -1, -2), validate=False)

    def loss(p):
        C = gj.pairwise(gj.sinkhorn_divergence, model(p), target, epsilon=eps)
        P = sinkhorn_plan(m_weights, t_weights, C)
        return jnp.sum(P * C)

    params = {
        "means": jnp.asarray(rng.normal(size=(k, 2))),
        "L": jnp.broadcast_to(0.5 * jnp.eye(2), (k, 2, 2)),
    }
    params, history = fit(loss, params, optax.adam(0.05), 20 if args.quick else 800)
    final = float(loss(params))
    print(f"final loss: {final:.6e}")

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    m = model(params)
    for i in range(k):
        ax.plot(*ellipse(target.mean[i], target.cov[i]).T, "k--", lw=1)
        ax.plot(*ellipse(m.mean[i], m.cov[i]).T, "r", lw=1)
    ax.plot([], [], "k--", label="target components")
    ax.plot([], [], "r", label="fitted components")
    ax.set_aspect("equal")
    ax.legend(fontsize=8)
    ax.set_title("mixture fit: pairwise S_eps + discrete OT")
    ax2.semilogy(np.maximum(history, 1e-16))
    ax2.set_xlabel("Adam step")
    ax2.set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(f"{args.out}/gmm_fit.png", dpi=80)


if __name__ == "__main__":
    main()
