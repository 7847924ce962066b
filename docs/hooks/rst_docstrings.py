"""Griffe extension for the API reference: render the SDK's reStructuredText-flavoured docstrings.

The docstrings of ``sagas`` are written for ``help()`` and Sphinx habits:
``:class:`~sagas.exceptions.ApplicationError``` roles, ``::`` literal blocks,
``.. code-block:: python`` and ``>>>`` doctest examples. mkdocstrings renders
Markdown, so before rendering each docstring is rewritten:

* a role becomes a code span that links to the object when the reference has it
  (an *optional* autoref: no warning when the target is not documented);
* a ``::`` literal block and a ``.. code-block::`` become fenced code blocks;
* a doctest (``>>>`` lines and their output) becomes a ``pycon`` block.

The source code is not touched; ``mkdocs.yml`` loads this file
(``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):`(~?)([^`<>]+?)`")


def _role(match: re.Match[str], here: str) -> str:
    short, target = match.group(1), match.group(2).strip()
    title = target.rsplit(".", 1)[-1] if short else target
    identifier = (
        target
        if "." in target and target.split(".", 1)[0] in ("sagas", "orchestrator", "brokers")
        else f"{here}.{target}"
    )
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indented_block(lines: list[str], start: int, base: int) -> tuple[list[str], int]:
    """The lines from ``start`` indented deeper than ``base`` (blank lines inside are kept), and the index after them."""
    block: list[str] = []
    i = start
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
        block.append(lines[i])
        i += 1
    while block and not block[-1].strip():
        block.pop()
        i -= 1
    return block, i


def _fence(block: list[str], language: str) -> list[str]:
    return ["", f"```{language}", *textwrap.dedent("\n".join(block)).splitlines(), "```", ""]


def to_markdown(text: str, here: str) -> str:
    """Rewrite one docstring (see the module docstring); ``here`` is the module that relative roles refer to."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    fence: str | None = None
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):  # already Markdown: leave fenced blocks alone
            fence = None if fence else stripped
            out.append(line)
            i += 1
            continue
        if fence:
            out.append(line)
            i += 1
            continue
        directive = re.match(r"\s*\.\. code-block::\s*(\w*)", line)
        if directive:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block, i = _indented_block(lines, j, _indent(line))
            out.extend(_fence(block, directive.group(1) or "python"))
            continue
        if stripped.startswith(">>>") and not line.startswith((" ", "\t")):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out.extend(_fence(block, "pycon"))
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > _indent(line):
                intro = line.rstrip()[:-2].rstrip()
                if intro:
                    out.append(_ROLE.sub(lambda m: _role(m, here), intro) + ":")
                block, i = _indented_block(lines, j, _indent(line))
                out.extend(_fence(block, "python"))
                continue
        out.append(_ROLE.sub(lambda m: _role(m, here), line))
        i += 1
    return "\n".join(out)


class RstDocstrings(griffe.Extension):
    """Rewrites every docstring of the loaded packages once they are loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._rewrite(pkg, set())

    def _rewrite(self, obj: griffe.Object | griffe.Alias, seen: set[str]) -> None:
        if obj.is_alias or obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            module = obj if obj.is_module else obj.module
            obj.docstring.value = to_markdown(obj.docstring.value, module.path)
        for member in obj.members.values():
            self._rewrite(member, seen)
