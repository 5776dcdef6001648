"""Text that reaches an operator's terminal: control characters never do.

A raw ESC, a C1 CSI (``\\x9b``) or a BEL in a reason, an audit entry, a session's
metadata or an error message would drive the terminal that prints it: recolour it,
retitle the window, move the cursor, hide what follows. So:

- **at input**, operator text that is stored and printed later (``--reason``, the
  strings of ``--metadata``, ``SNAKEPOOL_OPERATOR``) with a control character is
  refused (:func:`control_characters` finds them; a tab is allowed);
- **at output**, whatever the CLI prints — stored by something else, written into Redis
  by hand — has its control characters shown as escapes (``\\x1b``), by
  :class:`Neutraliser`, a render hook on the console (every ``console.print``, tables,
  ``print_json`` included). Newlines and tabs are kept. Our own colours are rich styles,
  added after this, and stay colours.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, ConsoleRenderable, RenderableType, RenderHook
from rich.segment import Segment

__all__ = ["Neutraliser", "control_characters", "neutralised"]

from snakepool.config.ids import CONTROL_CHARACTER as _INPUT_CONTROL

#: The same at output, where newlines (line breaks of our own tables) stay too.
_OUTPUT_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def control_characters(text: str) -> list[str]:
    """The control characters in ``text`` (tab excepted), as escapes: ``["\\\\x1b"]``."""
    return sorted({f"\\x{ord(c):02x}" for c in _INPUT_CONTROL.findall(text)})


def neutralised(text: str) -> str:
    """``text`` with every control character but newline and tab written as an escape
    (``"\\x1b[31m"`` → ``"\\\\x1b[31m"``): printable, and inert on a terminal."""
    return _OUTPUT_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _Neutralised:
    """A renderable whose text segments are :func:`neutralised` (styles untouched)."""

    def __init__(self, inner: RenderableType) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        for segment in console.render(self.inner, options):
            if segment.control is None:
                yield Segment(neutralised(segment.text), segment.style)
            else:
                yield segment  # rich's own cursor moves (a status line), not text


class Neutraliser(RenderHook):
    """A rich render hook: everything printed goes through :func:`neutralised`."""

    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        """Wrap each renderable (called by ``Console.print`` before it renders)."""
        wrapped: Sequence[Any] = [_Neutralised(r) for r in renderables]
        return list(wrapped)
