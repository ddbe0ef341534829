"""Mass creation and destruction in unbalanced entropic OT between Gaussians [JMPC20].

Left: transported mass m_pi as a function of gamma (the marginal relaxation) for several
distances between the means; as gamma -> inf the plan becomes balanced (m_pi -> 1).
Right: m_pi against the distance between the means for several gammas: far-apart
measures are not transported but destroyed and created (m_pi -> 0).

    python examples/unbalanced_mass.py [--out DIR] [--quick]
"""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from _common import DEFAULT_OUT, require_matplotlib  # noqa: E402

require_matplotlib()
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import gaussot_jax as gj  # noqa: E402

jax.config.update("jax_enable_x64", True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="coarse grids")
    args = parser.parse_args()
    n = 25 if args.quick else 200

    eps = 0.5
    A = jnp.array([[1.0, 0.3], [0.3, 0.5]])
    B = jnp.array([[0.6, -0.2], [-0.2, 1.2]])
    direction = jnp.array([1.0, 1.0]) / jnp.sqrt(2.0)

    def mass(gamma, dist):
        a = gj.ScaledGaussian(jnp.asarray(1.0), jnp.zeros(2), A, validate=False)
        b = gj.ScaledGaussian(jnp.asarray(1.0), dist * direction, B, validate=False)
        return gj.unbalanced_entropic_ot(a, b, eps, gamma).plan.mass

    # one compiled function, vmapped over both grids
    grid = jax.jit(jax.vmap(jax.vmap(mass, (0, None)), (None, 0)))
    gammas = jnp.geomspace(1e-2, 1e3, n)
    dists = jnp.linspace(0.0, 6.0, n)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for dist, m in zip([0.0, 1.0, 2.0, 4.0], grid(gammas, jnp.array([0.0, 1.0, 2.0, 4.0]))):
        ax1.semilogx(gammas, m, label=f"|a - b| = {dist:g}")
    ax1.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax1.set(xlabel="gamma (marginal relaxation)", ylabel="transported mass m_pi",
            title=f"Both masses 1, eps = {eps}")  # fmt: skip
    ax1.legend()
    for gamma, m in zip([0.1, 1.0, 10.0, 100.0], grid(jnp.array([0.1, 1.0, 10.0, 100.0]), dists).T):
        ax2.plot(dists, m, label=f"gamma = {gamma:g}")
    ax2.set(xlabel="distance between the means", ylabel="transported mass m_pi",
            title="Far-apart mass is destroyed/created, not moved")  # fmt: skip
    ax2.legend()
    fig.tight_layout()
    out = Path(args.out)
    print(f"figures go to {out.resolve()}")
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "unbalanced_mass.png", dpi=90)
    print(f"wrote {out / 'unbalanced_mass.png'}")


if __name__ == "__main__":
    main()
