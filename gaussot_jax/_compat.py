"""Version guards for the jax/jaxlib releases the package supports.

jaxlib 0.10.0-0.10.2 deadlock on small CPUs: their CPU LAPACK kernels (``trsm``,
``potrf``, ``syevd``, ...) split a batch over XLA's intra-op thread pool and block until
the pieces finish, while XLA runs independent kernels concurrently on that same pool.
With as many such kernels in flight as the pool has threads, every worker waits and the
process idles for ever (``upstream/jaxlib_cpu_lapack_deadlock.py`` reproduces it in plain
jax). Nearly every composition of this library's results issues several batched LAPACK
calls, so ``pyproject.toml`` requires ``jaxlib < 0.10``; this module warns where an
environment holds one of those releases anyway (e.g. installed with ``--no-deps``).
"""

from __future__ import annotations

import warnings

import jaxlib.version

_DEADLOCKING = ("0.10.0", "0.10.1", "0.10.2")


def warn_if_deadlocking_jaxlib(version: str = jaxlib.version.__version__) -> bool:
    """Warn (once per call) if ``version`` is a jaxlib release known to deadlock on CPU."""
    if version in _DEADLOCKING:
        warnings.warn(
            f"jaxlib {version} can deadlock on CPU when several batched linear-algebra "
            "calls run at once (the process idles at 0% CPU). gaussot_jax requires "
            "jaxlib < 0.10: pip install 'jax<0.10' 'jaxlib<0.10'.",
            RuntimeWarning,
            stacklevel=2,
        )
        return True
    return False
