"""Readable reprs for the library's Modules: small concrete arrays show their values."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
from jax.core import Tracer

# Arrays with at most this many entries print their values (a 4 x 4 covariance, a
# scalar cost); larger ones and tracers print as equinox does, dtype and shape.
_MAX_SHOWN = 16


class _Shown:
    def __init__(self, x):
        self.x = np.asarray(x)

    def __repr__(self) -> str:
        if self.x.ndim == 0:
            return f"{self.x.item():.6g}"
        x = self.x.astype(float) if self.x.dtype.kind == "f" else self.x
        return str(
            np.vectorize(lambda v: float(f"{v:.6g}"))(x).tolist()
            if x.dtype.kind == "f"
            else x.tolist()
        )


def _show(x):
    concrete = isinstance(x, (jax.Array, np.ndarray)) and not isinstance(x, Tracer)
    return _Shown(x) if concrete and x.size <= _MAX_SHOWN else x


class Pretty(eqx.Module):
    """Base of the public Modules: ``repr`` shows small arrays' values, not only shapes."""

    def __repr__(self) -> str:
        return eqx.tree_pformat(jax.tree_util.tree_map(_show, self))
