"""Shared helpers for the examples: argument parsing and covariance ellipses."""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def parse(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=str(pathlib.Path(__file__).parent / "figures"))
    p.add_argument("--quick", action="store_true", help="a few steps, for smoke tests")
    args = p.parse_args()
    pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
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
