"""mkdocs hook: serve the example figures and the benchmark plot from where they live.

The figures are tracked once, in ``examples/figures/`` and ``benchmarks/results/``; this
hook adds them to the site as ``figures/<name>.png`` and ``results/<name>.png`` so that the
docs build never runs an example and never holds a second copy. It also serves the
changelog from the repository root.
"""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"figures": ROOT / "examples" / "figures", "results": ROOT / "benchmarks" / "results"}


def on_files(files, config):
    """Add the figures and the changelog to the files mkdocs builds."""
    for dest, folder in SOURCES.items():
        for png in sorted(folder.glob("*.png")):
            files.append(File.generated(config, f"{dest}/{png.name}", abs_src_path=str(png)))
    files.append(File.generated(config, "changelog.md", abs_src_path=str(ROOT / "CHANGELOG.md")))
    return files
