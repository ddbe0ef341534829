"""The main job `python -m gaussot_jax` runs, prints its tables and draws its plot."""

import subprocess
import sys


def test_main_job_quick(tmp_path):
    png = tmp_path / "plan.png"
    out = subprocess.run(
        [sys.executable, "-m", "gaussot_jax", "--quick", "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    ).stdout
    assert "W2^2(mu, nu) = 5.5745593041" in out  # the built-in pair's distance
    assert "Discrete Sinkhorn on n samples" in out
    assert png.exists() and png.stat().st_size > 10_000


def test_main_job_help():
    out = subprocess.run(
        [sys.executable, "-m", "gaussot_jax", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "--plot" in out and "--epsilon" in out
