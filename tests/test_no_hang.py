"""Everyday compositions finish: each runs in its own process under a stall detector.

jaxlib 0.10's CPU LAPACK kernels deadlock when XLA runs several batched LAPACK calls at
once on a small machine (``upstream/jaxlib_cpu_lapack_deadlock.py``); the cases in
``tests/hang_cases.py`` wedged there every time. A wedge is a process that is alive but
idle: the detector samples the child's CPU time once a second and fails the test when it
has not advanced for ``STALL_S`` seconds, long before pytest-timeout would fire. A slow
machine only slows the child; it does not stop its CPU clock, so this cannot fail for
being slow (the wall limit is a generous backstop).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from hang_cases import CASES  # noqa: E402

STALL_S = 45.0
LIMIT_S = 280.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_watched(name: str, stall_s: float = STALL_S, limit_s: float = LIMIT_S) -> dict:
    """Run one case in a child process; return its status, wall and CPU seconds."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, str(HERE / "hang_cases.py"), name], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = last_change = time.monotonic()
    cpu = last_cpu = 0.0
    status = "finished"
    while p.poll() is None:
        time.sleep(1.0)
        try:
            cpu = _cpu_seconds(p.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        now = time.monotonic()
        if cpu > last_cpu + 0.05:
            last_cpu, last_change = cpu, now
        if now - last_change > stall_s:
            status = f"STALL: no CPU progress for {stall_s:.0f} s (a wedge inside XLA)"
        elif now - t0 > limit_s:
            status = f"TIMEOUT after {limit_s:.0f} s"
        else:
            continue
        p.kill()
        break
    out = p.communicate()[0]
    if status == "finished" and (p.returncode != 0 or f"CASE_OK {name}" not in out):
        status = f"error rc={p.returncode}"
    return dict(case=name, status=status, wall_s=round(time.monotonic() - t0, 2),
                cpu_s=round(last_cpu, 2), output=out[-2000:])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only)")
@pytest.mark.parametrize("name", list(CASES))
def test_composition_finishes(name):
    if name.startswith("ott_"):
        pytest.importorskip("ott")
    r = run_watched(name)
    assert r["status"] == "finished", f"{name}: {r['status']}\n{r['output']}"
