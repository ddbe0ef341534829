"""Griffe extension: render the docstrings' Sphinx roles as inline code.

The docstrings cross-reference with Sphinx roles (``:func:`pairwise```), which
help() shows as written and Markdown would show literally; this turns each role into
inline code (``pairwise``) before mkdocstrings renders the docstring.
"""

import re

import griffe

ROLE = re.compile(r":(?:func|class|meth|attr|mod|obj|data):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` as ```target``` in every docstring."""

    def on_object(self, *, obj, **kwargs) -> None:
        """Rewrite the roles in ``obj``'s docstring."""
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
