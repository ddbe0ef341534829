"""Smoke tests: each training-loss example runs with --quick and writes its PNG."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "name", ["fit_gaussian_sinkhorn", "learn_linear_map", "gmm_fit", "mixture_transport"]
)
def test_example_quick(name, tmp_path):
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "final loss:" in res.stdout
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
