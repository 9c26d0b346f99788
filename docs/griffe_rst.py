"""A griffe extension: the reStructuredText bits of our docstrings, as MkDocs Markdown.

The docstrings are Google style, written to read well in a terminal and in doctests;
they use a few reStructuredText constructs (``.. math::`` blocks, ``:math:``, ``:func:``
and ``:class:`` roles) and ``Example:`` sections. Before mkdocstrings parses a docstring,
this turns the math into arithmatex's ``$...$`` / ``$$...$$``, the roles into inline
code, and ``Example:`` into the ``Examples:`` section whose ``>>>`` lines render as code.
"""

from __future__ import annotations

import re
import textwrap

import griffe

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)


def _math_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = re.match(r"^(\s*)\.\. math::\s*$", line)
        if not match:
            out.append(line)
            i += 1
            continue
        indent = len(match.group(1))
        block = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        pad = " " * indent
        body = textwrap.dedent("\n".join(block)).strip("\n")
        out += [f"{pad}$$", *(pad + b for b in body.split("\n")), f"{pad}$$", ""]
    return "\n".join(out)


def markdown(text: str) -> str:
    """The docstring ``text`` with its reStructuredText constructs in Markdown."""
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)
    text = _ROLE.sub(lambda m: f"`{m.group(1).split('.')[-1] if m.group(0).count('~') else m.group(1)}`", text)
    return _EXAMPLE.sub(r"\1Examples:", text)


class RstToMarkdown(griffe.Extension):
    """Rewrites each docstring once, when griffe creates its object."""

    def on_instance(self, *, obj, **kwargs) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
