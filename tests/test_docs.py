"""Documentation that users see: help() lists every field of the public types.

``help()`` shows a class docstring but not the string literals under equinox fields, so
every public Module names each of its fields in its docstring's ``Attributes:`` section
(results) or ``Args:`` section (types built from their fields). The docs site renders the
field docstrings themselves; this test keeps the two in step.
"""

import dataclasses
import inspect
import re
from pathlib import Path

import equinox as eqx
import pytest

import gaussot_jax as gj

MODULES = [
    obj
    for name in gj.__all__
    if inspect.isclass(obj := getattr(gj, name)) and issubclass(obj, eqx.Module)
]


def _section(doc: str, title: str) -> list[str]:
    """Names documented in a Google-style section (``    name: text`` lines)."""
    m = re.search(rf"^{title}:\n((?:    .*\n?|\n)*)", doc, re.MULTILINE)
    if m is None:
        return []
    return re.findall(r"^    (\w+)(?: \(.*?\))?:", m.group(1), re.MULTILINE)


def test_every_public_module_is_checked():
    names = {cls.__name__ for cls in MODULES}
    assert {
        "EntropicOT",
        "UnbalancedEntropicOT",
        "SchrodingerBridge",
        "SinkhornTrace",
        "Coupling",
        "Gaussian",
        "AffineMap",
        "QuadraticPotential",
    } <= names


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_docstring_names_every_field(cls):
    doc = inspect.cleandoc(cls.__doc__ or "") + "\n"
    fields = [f.name for f in dataclasses.fields(cls)]
    attrs = _section(doc, "Attributes")
    args = _section(doc, "Args")
    missing = [f for f in fields if f not in attrs and f not in args]
    assert not missing, f"{cls.__name__}: fields {missing} are not in its docstring"
    unknown = [a for a in attrs if a not in fields]
    assert not unknown, f"{cls.__name__}: Attributes {unknown} are not fields"
    if attrs:
        assert attrs == [f for f in fields if f in attrs], "Attributes out of field order"


def test_version_is_written_once():
    from gaussot_jax import _version

    assert gj.__version__ == _version.__version__
    package = Path(gj.__file__).parent
    writers = [p.name for p in package.glob("*.py") if "__version__ = " in p.read_text()]
    assert writers == ["_version.py"]


ROOT = Path(__file__).resolve().parents[1]
# Pages whose ```python blocks run as written (each page in one fresh process, in order:
# a page may turn on x64 before it creates arrays). mixtures.md and lowrank.md show the API
# of modules not merged yet; their blocks run once the modules exist.
RUNNABLE = ["docs/index.md", "docs/getting-started.md", "docs/ref25.md", "docs/fid.md"]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)


@pytest.mark.parametrize("page", RUNNABLE + ["README.md"])
def test_docs_code_runs(page):
    import subprocess
    import sys

    code = "\n".join(_python_blocks(ROOT / page))  # README: quickstart, then sharding
    assert code.strip(), f"{page} has no python block"
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert res.returncode == 0, res.stderr[-3000:]


def test_result_reprs_show_small_values_and_large_shapes():
    import jax.numpy as jnp

    mu = gj.Gaussian(jnp.zeros(2), jnp.eye(2))
    out = gj.entropic_ot(mu, gj.Gaussian(jnp.ones(2), 2.0 * jnp.eye(2)), 1.0)
    text = repr(out)
    assert text.startswith("EntropicOT(") and f"cost={float(out.cost):.6g}" in text
    assert "cov=[[1.0, 0.0" in repr(mu)
    big = gj.Gaussian(jnp.zeros((100, 4)), jnp.broadcast_to(jnp.eye(4), (100, 4, 4)))
    assert "f32[100,4,4]" in repr(big) or "f64[100,4,4]" in repr(big)
