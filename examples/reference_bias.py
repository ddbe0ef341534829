"""Entropic OT with non-product Gaussian references: the bias figures of [REF25] §4.

    OT_eps(mu, nu; R) = min_{pi in Pi(mu, nu)} E_pi ||x - y||^2 + eps KL(pi || R)

With mu = nu = N(0, 1) (so W2^2 = 0) and the correlation reference
R_rho = N(0, [[1, rho], [rho, 1]]) (gj.correlation_reference), this script draws

  plans_eps.png    optimal plans for several eps at rho = 0 (the product reference)
  plans_rho.png    optimal plans for several rho at eps = 0.8
  bias_vs_eps.png  the bias OT_eps - W2^2 against eps, one curve per rho
  bias_vs_rho.png  the bias against rho, one curve per eps

and prints MATH.md §5's numbers (eps = 0.8; rho = 0, .5, .9, .99 -> 0.806385, 0.510846,
0.162247, 0.019516). Then a 2-D example: a reference built from a noisy prior guess of the
Monge map, x ~ mu, y | x ~ N(b + M_guess (x - a), tau I), shrinks the bias of the entropic
estimate OT_eps of W2^2 (table printed, guided_2d.png).

Run:  python examples/reference_bias.py [--out DIR] [--quick]
"""

import argparse
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from _common import DEFAULT_OUT, require_matplotlib  # noqa: E402

require_matplotlib()
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import gaussot_jax as gj  # noqa: E402

STD = gj.Gaussian(jnp.zeros(1), jnp.eye(1))


def ot_1d(rho, eps):
    """OT_eps(N(0,1), N(0,1); R_rho) and the plan's cross-covariance."""
    R = gj.correlation_reference(STD, STD, rho[None, None])
    out = gj.entropic_ot(STD, STD, eps, reference=R)
    return out.cost, out.cross_cov[0, 0]


_sweep = jax.jit(jax.vmap(ot_1d))


def sweep(pairs):
    """Evaluate ot_1d at a list of arrays of (rho, eps) pairs in one vmapped call."""
    rho = np.concatenate([np.broadcast_arrays(r, e)[0].ravel() for r, e in pairs])
    eps = np.concatenate([np.broadcast_arrays(r, e)[1].ravel() for r, e in pairs])
    cost, cross = (np.asarray(v) for v in _sweep(jnp.asarray(rho), jnp.asarray(eps)))
    sizes = np.cumsum([np.broadcast(r, e).size for r, e in pairs])[:-1]
    return list(zip(np.split(cost, sizes), np.split(cross, sizes)))


def _plan_density(c, grid):
    X, Y = np.meshgrid(grid, grid, indexing="ij")
    det = 1.0 - c**2
    return np.exp(-(X**2 - 2 * c * X * Y + Y**2) / (2 * det)) / (2 * np.pi * np.sqrt(det))


def plot_plans(values, cross, label, title, path, n_grid):
    grid = np.linspace(-3, 3, n_grid)
    fig, axes = plt.subplots(1, len(values), figsize=(3 * len(values), 3.1))
    for ax, v, c in zip(axes, values, cross):
        ax.contourf(grid, grid, _plan_density(c, grid).T, levels=12, cmap="viridis")
        ax.plot(grid, grid, "w--", lw=0.8)
        ax.set_title(f"{label} = {v:g}\nCov(x, y) = {c:.3f}", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlabel("x")
    axes[0].set_ylabel("y")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def one_d_figures(out_dir, quick):
    n = 25 if quick else 120
    rhos = np.array([0.0, 0.5, 0.9, 0.99])
    eps_plans = np.array([0.05, 0.2, 0.8, 3.0])
    rho_plans = np.array([-0.5, 0.0, 0.5, 0.9])
    eps_grid = np.geomspace(1e-2, 10.0, n)
    rho_grid = 1.0 - np.geomspace(1.0, 1e-3, n)  # dense near rho = 1
    eps_curves = (0.1, 0.5, 0.8, 2.0)
    results = sweep(
        [(rhos, 0.8), (0.0, eps_plans), (rho_plans, 0.8)]
        + [(r, eps_grid) for r in rhos]
        + [(rho_grid, e) for e in eps_curves]
    )
    (cost, _), (_, c_eps), (_, c_rho) = results[:3]
    print("MATH.md §5, mu = nu = N(0, 1), eps = 0.8 (W2^2 = 0, so OT_eps is the bias):")
    for r, v in zip(rhos, cost):
        print(f"  rho = {r:<5g}  OT_eps = {v:.6f}")

    n_grid = 60 if quick else 150
    plot_plans(
        eps_plans,
        c_eps,
        "eps",
        "optimal plans, product reference (rho = 0)",
        out_dir / "plans_eps.png",
        n_grid,
    )
    plot_plans(
        rho_plans,
        c_rho,
        "rho",
        "optimal plans at eps = 0.8, reference R_rho",
        out_dir / "plans_rho.png",
        n_grid,
    )

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for r, (b, _) in zip(rhos, results[3:7]):
        ax.loglog(eps_grid, b, label=f"rho = {r:g}")
    ax.set_xlabel("eps")
    ax.set_ylabel("bias  OT_eps - W2^2")
    ax.set_title("N(0,1) to N(0,1): bias against eps", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "bias_vs_eps.png", dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for e, (b, _) in zip(eps_curves, results[7:]):
        ax.semilogy(rho_grid, b, label=f"eps = {e:g}")
    ax.set_xlabel("reference correlation rho")
    ax.set_ylabel("bias  OT_eps - W2^2")
    ax.set_title("N(0,1) to N(0,1): bias against rho", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "bias_vs_rho.png", dpi=80)
    plt.close(fig)


def guided_2d(out_dir, quick):
    mu = gj.Gaussian(jnp.array([0.0, 0.0]), jnp.array([[2.0, 0.6], [0.6, 0.5]]))
    nu = gj.Gaussian(jnp.array([1.0, -1.0]), jnp.array([[0.8, -0.3], [-0.3, 1.5]]))
    w2 = float(gj.bures_wasserstein2(mu, nu))
    M = gj.monge_map(mu, nu).matrix
    tau = 0.1
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(2, 2))
    direction /= np.linalg.norm(direction, 2)

    def reference(noise):
        # Prior guess of the Monge map: M + noise, plus transition noise tau I.
        guess = M + noise * direction
        kernel = gj.LinearGaussianKernel(nu.mean - guess @ mu.mean, guess, tau * jnp.eye(2))
        return kernel.joint(mu)

    def bias(eps, noise):
        prod = gj.entropic_ot(mu, nu, eps).cost - w2
        guided = gj.entropic_ot(mu, nu, eps, reference=reference(noise)).cost - w2
        return prod, guided

    vbias = jax.jit(jax.vmap(bias, in_axes=(0, None)))
    noises = (0.0, 0.1, 0.3, 1.0)
    eps_table = np.array([0.01, 0.1, 0.5, 2.0])
    n = 20 if quick else 80
    eps_grid = np.concatenate([eps_table, np.geomspace(1e-3, 10.0, n)])
    curves = [[np.asarray(v) for v in vbias(jnp.asarray(eps_grid), s)] for s in noises]
    k = len(eps_table)
    print(
        f"\n2-D: W2^2(mu, nu) = {w2:.6f}; reference y | x ~ N(b + (T + noise D)(x - a), "
        f"{tau} I), T the Monge map, ||D||_op = 1"
    )
    print("bias OT_eps - W2^2:")
    print("  eps     product R  " + "  ".join(f"noise={s:<4g}" for s in noises))
    for i, e in enumerate(eps_table):
        print(
            f"  {e:<6g}  {curves[0][0][i]:9.6f}  " + "  ".join(f"{c[1][i]:10.6f}" for c in curves)
        )

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.loglog(eps_grid[k:], curves[0][0][k:], "k", lw=2, label="product reference")
    for s, c in zip(noises, curves):
        ax.loglog(eps_grid[k:], c[1][k:], label=f"guided, noise = {s:g}")
    ax.set_xlabel("eps")
    ax.set_ylabel("bias  OT_eps - W2^2")
    ax.set_title("2-D: reference from a noisy guess of the Monge map", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "guided_2d.png", dpi=80)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--quick", action="store_true", help="coarse grids, fast run")
    args = parser.parse_args()
    out_dir = Path(args.out)
    print(f"figures go to {out_dir.resolve()}")
    out_dir.mkdir(parents=True, exist_ok=True)
    one_d_figures(out_dir, args.quick)
    guided_2d(out_dir, args.quick)
    print(f"\nfigures written to {out_dir}/")


if __name__ == "__main__":
    main()
