"""Fit a probabilistic-PCA model in d = 10 000 by gradient descent on an OT loss.

The target is the PPCA maximum-likelihood fit (``LowRankGaussian.from_samples``) of n = 400
samples from a rank-8-plus-noise Gaussian in d = 10 000 (n << d: only a thin SVD, no d x d
matrix). A rank-8 model ``N(m, U U^T + s I)`` is trained with optax on the Sinkhorn divergence
to it (``--loss w2`` for W2^2); each step costs O(d k^2) through the joint-subspace reduction
(MATH.md §8). A dense d x d float64 covariance here would be 800 MB, its square root minutes.
The figure shows the loss and the model's spectrum (eigenvalues of ``U^T U + s``) against the
target's and the ground truth's (the sample PPCA overestimates the small variances by about
``noise * d / n``: n << d, the Marchenko–Pastur bias).

Run: python examples/ppca_fit.py --out /tmp/figs [--quick] [--loss w2]
"""

import sys

import jax
from _common import fit, parse

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gaussot_jax as gj  # noqa: E402


def _pop_loss_flag() -> str:
    """``--loss w2|sinkhorn`` (removed from argv before the shared parser sees it)."""
    if "--loss" not in sys.argv:
        return "sinkhorn"
    i = sys.argv.index("--loss")
    name = sys.argv[i + 1]
    del sys.argv[i : i + 2]
    if name not in ("w2", "sinkhorn"):
        raise SystemExit(f"--loss must be w2 or sinkhorn, got {name}")
    return name


def main():
    loss_name = _pop_loss_flag()
    args = parse(__doc__.splitlines()[0])
    d, k, n = 10_000, 8, 400
    steps = 30 if args.quick else 400
    key = jax.random.PRNGKey(0)
    k1, k2, k3, k4 = jax.random.split(key, 4)

    # Ground truth and its PPCA fit from n << d samples.
    scales = jnp.geomspace(3.0, 0.5, k)
    Q, _ = jnp.linalg.qr(jax.random.normal(k1, (d, k)))
    truth = gj.LowRankGaussian(jax.random.normal(k2, (d,)) * 0.1, Q * scales, 0.05)
    target = gj.LowRankGaussian.from_samples(truth.sample(k3, (n,)), k)

    params = {
        "mean": jnp.zeros(d),
        "factor": 0.01 * jax.random.normal(k4, (d, k)),
        "log_noise": jnp.log(jnp.asarray(1.0)),
    }

    def model(p):
        return gj.LowRankGaussian(p["mean"], p["factor"], jnp.exp(p["log_noise"]), validate=False)

    eps = 0.1

    def loss(p):
        if loss_name == "w2":
            return gj.bures_wasserstein2(model(p), target)
        return gj.sinkhorn_divergence(model(p), target, eps)

    params, history = fit(loss, params, optax.adam(0.05), steps)
    fitted = model(params)

    def spectrum(lr):
        return np.sort(np.linalg.eigvalsh(np.asarray(lr.factor.T @ lr.factor)))[::-1] + float(
            lr.noise
        )

    w2 = float(gj.bures_wasserstein2(fitted, target))
    print(f"d={d} k={k} n={n} loss={loss_name} steps={steps}")
    print(f"loss: {history[0]:.4g} -> {history[-1]:.4g};  W2^2(model, target) = {w2:.4g}")
    print("target spectrum:", np.round(spectrum(target), 3), "noise", float(target.noise))
    print("model spectrum: ", np.round(spectrum(fitted), 3), "noise", float(fitted.noise))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].semilogy(history)
    axes[0].set_xlabel("adam step")
    axes[0].set_ylabel("Sinkhorn divergence" if loss_name != "w2" else "W2^2")
    axes[0].set_title(f"PPCA fit in d = {d}, rank {k}")
    idx = np.arange(1, k + 1)
    axes[1].plot(idx, spectrum(target), "o-", label="target (PPCA of samples)")
    axes[1].plot(idx, spectrum(fitted), "x--", label="trained model")
    axes[1].plot(idx, np.asarray(scales) ** 2 + 0.05, ".:", label="ground truth")
    axes[1].set_xlabel("principal component")
    axes[1].set_ylabel("variance")
    axes[1].set_yscale("log")
    axes[1].legend()
    fig.tight_layout()
    path = f"{args.out}/ppca_fit.png"
    fig.savefig(path, dpi=120)
    print("wrote", path)


if __name__ == "__main__":
    main()
