"""Fit a linear-Gaussian model (probabilistic PCA) to data through the Sinkhorn divergence.

Model: y = b + w z + s e, z ~ N(0, 1), e ~ N(0, I_2), i.e. N(b, w w^T + s^2 I).
Loss: gj.sinkhorn_divergence(model, N(sample mean, sample covariance), epsilon),
minimised with optax Adam. The optimum of the unregularised problem is PCA's: w along
the top principal axis; the printed numbers compare.
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


def main():
    args = parse(__doc__)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 2)) * [2.5, 0.4]
    data = np.stack([x[:, 0], x[:, 1] + 0.1 * x[:, 0] ** 2 - 0.6], 1)  # a banana
    target = gj.Gaussian.from_samples(jnp.asarray(data))
    eps = 0.1

    def model(p):
        cov = jnp.outer(p["w"], p["w"]) + jnp.exp(2 * p["log_s"]) * jnp.eye(2)
        return gj.Gaussian(p["b"], cov, validate=False)

    def loss(p):
        return gj.sinkhorn_divergence(model(p), target, eps)

    params = {"b": jnp.zeros(2), "w": jnp.array([0.5, 0.5]), "log_s": jnp.array(0.0)}
    params, history = fit(loss, params, optax.adam(0.05), 30 if args.quick else 600)
    final = float(loss(params))

    evals, evecs = np.linalg.eigh(np.asarray(target.cov))
    w = np.asarray(params["w"])
    cos = abs(w @ evecs[:, -1]) / np.linalg.norm(w)
    print(
        f"|cos(w, top principal axis)| = {cos:.6f}, "
        f"s^2 = {float(jnp.exp(2 * params['log_s'])):.4f} (smallest eigenvalue {evals[0]:.4f})"
    )
    print(f"final loss: {final:.6e}")

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    ax.scatter(*data[::4].T, s=2, alpha=0.3, label="data")
    ax.plot(*ellipse(target.mean, target.cov).T, "k--", label="data moments")
    m = model(params)
    ax.plot(*ellipse(m.mean, m.cov).T, "r", label="fitted model (2 sd)")
    ax.set_aspect("equal")
    ax.legend(fontsize=8)
    ax.set_title("linear-Gaussian fit by Sinkhorn divergence")
    ax2.semilogy(np.maximum(history, 1e-16))
    ax2.set_xlabel("Adam step")
    ax2.set_ylabel("S_eps(model, data)")
    fig.tight_layout()
    fig.savefig(f"{args.out}/fit_gaussian_sinkhorn.png", dpi=80)


if __name__ == "__main__":
    main()
