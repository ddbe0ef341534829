"""mkdocs hook: serve the example figures and the benchmark plot from where they live.

The figures are tracked once, in ``examples/figures/`` and ``benchmarks/results/``; this
hook adds them to the site as ``figures/<name>.png`` and ``results/<name>.png`` so that the
docs build never runs an example and never holds a second copy. It also serves the
changelog from the repository root.
"""

import re
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


_DOC_REF = re.compile(r"docs/([A-Za-z0-9_-]+)\.md")


def on_page_content(html, page, config, files):
    """Make the docstrings' ``docs/NAME.md`` references links to those pages.

    Docstrings name the theory pages by their path in the repository (readable in
    ``help()`` and in an editor); on the site each becomes a link, relative to the page.
    A name that is not a page is left as text, and ``mkdocs build --strict`` still
    checks every link the Markdown pages make themselves.
    """
    depth = page.url.rstrip("/").count("/") + 1 if page.url else 0
    up = "../" * depth

    def link(m):
        name = m.group(1)
        if files.get_file_from_path(f"{name}.md") is None:
            return m.group(0)
        return f'<a href="{up}{name}/">{m.group(0)}</a>'

    return _DOC_REF.sub(link, html)
