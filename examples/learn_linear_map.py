"""Learn an affine map T(x) = M x + c that pushes one Gaussian onto another.

Loss: gj.sinkhorn_divergence(T#mu, nu, epsilon) (optax Adam), with M = L L^T symmetric
PSD. Among all M with M A M^T = B exactly one is symmetric positive definite: the Monge
map of gj.monge_map, against which the result is printed.
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
    mu = gj.Gaussian(jnp.array([-2.0, 0.0]), jnp.array([[1.0, 0.6], [0.6, 0.8]]))
    nu = gj.Gaussian(jnp.array([2.0, 1.0]), jnp.array([[0.5, -0.3], [-0.3, 1.5]]))
    eps = 0.05

    def matrix(p):
        return p["L"] @ p["L"].T

    def push(p):
        return mu.affine(matrix(p), p["c"])

    def loss(p):
        return gj.sinkhorn_divergence(push(p), nu, eps)

    params = {"L": jnp.eye(2), "c": jnp.zeros(2)}
    schedule = optax.exponential_decay(0.05, 1000, 0.5)
    params, history = fit(loss, params, optax.adam(schedule), 30 if args.quick else 3000)
    final = float(loss(params))
    T = gj.monge_map(mu, nu)
    print(
        f"S_eps(T#mu, nu) = {float(gj.sinkhorn_divergence(push(params), nu, eps)):.3e}, "
        f"max |M - Monge| = {float(jnp.max(jnp.abs(matrix(params) - T.matrix))):.3e}"
    )
    print(f"final loss: {final:.6e}")

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    x = np.asarray(mu.sample(jax.random.PRNGKey(0), (300,)))
    y = x @ np.asarray(matrix(params)).T + np.asarray(params["c"])
    ax.scatter(*x.T, s=3, alpha=0.4, label="x ~ mu")
    ax.scatter(*y.T, s=3, alpha=0.4, label="T(x)")
    ax.plot(*ellipse(nu.mean, nu.cov).T, "k--", label="nu (2 sd)")
    ax.set_aspect("equal")
    ax.legend(fontsize=8)
    ax.set_title("learned affine pushforward")
    ax2.semilogy(np.maximum(history, 1e-16))
    ax2.set_xlabel("Adam step")
    ax2.set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(f"{args.out}/learn_linear_map.png", dpi=80)


if __name__ == "__main__":
    main()
