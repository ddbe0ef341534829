"""Everyday compositions finish: each runs in its own process under a stall detector.

jaxlib 0.10's CPU LAPACK kernels deadlock when XLA runs several batched LAPACK calls at
once on a small machine (``upstream/jaxlib_cpu_lapack_deadlock.py``); most cases in
``tests/hang_cases.py`` wedged there (the rest are kept as guards). A wedge is a process
that is alive but idle: the detector (``hang_cases.run_watched``) samples the child's CPU
time once a second and fails the test when it has not advanced for 45 seconds, long
before pytest-timeout would fire. A slow machine only slows the child; it does not stop
its CPU clock, so this cannot fail for being slow (the wall limit is a backstop).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hang_cases import CASES, run_case  # noqa: E402


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only)")
@pytest.mark.parametrize("name", list(CASES))
def test_composition_finishes(name):
    if name.startswith("ott_"):
        pytest.importorskip("ott")
    r = run_case(name)
    assert r["status"] == "finished", f"{name}: {r['status']}\n{r['output']}"
