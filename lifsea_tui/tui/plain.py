"""Node text made plain: everything a node sends is data, never markup or terminal control.

Unit names, log lines, audit reasons, debug summaries, error details, recording titles: a node (or
anyone with a reader token, or a root shell on it) chooses them. Put into a DataTable cell or a
Static as a str, `[link=...]` would become a live hyperlink and `[/x]` a MarkupError that kills the
console; put into a Rich Text as is, an ESC or a C1 byte reaches the operator's terminal raw (OSC 52
writes the clipboard, OSC 0 the window title). So node text goes through here on its way to the
screen: a Text (never parsed), each control or invisible character shown as a visible symbol, and cut
to a length the layout can carry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from rich.style import Style
from rich.text import Text

CONTROL_NAMES = {"\x1b": "␛", "\r": "␍", "\x07": "␇", "\x08": "␈", "\t": "␉", "\x7f": "␡"}
# Characters that move, hide or reorder what is shown: C0 and C1 controls, DEL, bidirectional marks and
# overrides, zero-width characters, line and paragraph separators, interlinear annotations, tags.
SPECIAL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"
)
INVISIBLE = re.compile(
    "[\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]"
)
LINE_LIMIT = 2000  # characters of one line of node text shown; the rest is counted
CELL_LIMIT = 300  # in a table cell, whose column grows to its widest cell


def _name(char: str, keep_newlines: bool) -> str:
    code = ord(char)
    if char == "\n":
        return "␊\n" if keep_newlines else "␊"
    if char in CONTROL_NAMES:
        return CONTROL_NAMES[char]
    if code < 32:
        return f"^{chr(code + 64)}"
    if 0x7F <= code < 0xA0:
        return f"<C1 {code:02x}>"
    return f"<U+{code:04X}>"


def visible(text: str, *, keep_newlines: bool = True) -> str:
    """Every character shown: control and invisible ones as visible symbols (newlines kept as breaks)."""
    if not SPECIAL.search(text):
        return text
    return SPECIAL.sub(lambda match: _name(match.group(), keep_newlines), text)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… (+{len(text) - limit} characters)"


def plain(value: Any, style: str | Style = "", *, limit: int = LINE_LIMIT, multiline: bool = False) -> Text:
    """`value` as a Text that shows exactly its characters: never parsed as markup, nothing raw."""
    text = "" if value is None else str(value)
    return Text(visible(_cut(text, limit), keep_newlines=multiline), style=style)


def plain_lines(lines: Iterable[Any], style: str | Style = "", *, limit: int = LINE_LIMIT) -> Text:
    """Lines the console composed (each may carry node text) as one Text: line breaks where the console put
    them, and a newline inside one line shown as ␊ like any other control character."""
    return Text("\n").join(plain(line, style, limit=limit) for line in lines)


def sanitized(text: Text, *, limit: int = LINE_LIMIT) -> Text:
    """A Text built elsewhere, with any control character in it made visible (its styles kept)."""
    if len(text) > limit:
        text = text[:limit]
        text.append(" …", style="dim")
    if not SPECIAL.search(text.plain):
        return text
    cuts = sorted({offset for match in SPECIAL.finditer(text.plain) for offset in match.span()})
    out = Text(style=text.style, justify=text.justify, no_wrap=text.no_wrap, overflow=text.overflow, end=text.end)
    for piece in text.divide(cuts):
        if len(piece) == 1 and SPECIAL.fullmatch(piece.plain):
            replacement = Text(_name(piece.plain, keep_newlines=False), style=piece.style)
            for span in piece.spans:
                replacement.stylize(span.style, 0, len(replacement))
            out.append_text(replacement)
        else:
            out.append_text(piece)
    return out


def file_part(text: str) -> str:
    """A piece of a file name made of node text: letters, digits, dot, dash and underscore only (no
    path separators, no leading dot)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".")[:80] or "_"
