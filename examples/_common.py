"""Shared helpers for the examples: argument parsing and covariance ellipses."""

import argparse
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

# Figures go outside the source tree unless --out says otherwise (the gallery in
# examples/figures/ is regenerated with --out examples/figures).
DEFAULT_OUT = str(pathlib.Path(tempfile.gettempdir()) / "gaussot_jax_figures")


def require_matplotlib():
    """Exit with the install command when matplotlib (the ``plot`` extra) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        sys.exit("this example draws figures with matplotlib: pip install 'gaussot_jax[plot]'")


def out_dir(path):
    """Create the output folder and say where the figures go."""
    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    print(f"figures go to {out.resolve()}")
    return out


def parse(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="a few steps, for smoke tests")
    args = p.parse_args()
    require_matplotlib()
    out_dir(args.out)
    return args


def ellipse(mean, cov, k=2.0, num=100):
    """Points of the k-sigma ellipse of N(mean, cov) in 2-D."""
    t = np.linspace(0, 2 * np.pi, num)
    w, V = np.linalg.eigh(np.asarray(cov))
    circle = np.stack([np.cos(t), np.sin(t)])
    return (np.asarray(mean)[:, None] + k * (V * np.sqrt(np.maximum(w, 0))) @ circle).T


def fit(loss, params, optimizer, steps):
    """Minimise ``loss(params)`` with an optax optimizer; returns (params, loss history)."""
    import jax
    import optax

    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        value, grad = jax.value_and_grad(loss)(params)
        updates, state = optimizer.update(grad, state)
        return optax.apply_updates(params, updates), state, value

    history = []
    for _ in range(steps):
        params, state, value = step(params, state)
        history.append(float(value))
    return params, history
