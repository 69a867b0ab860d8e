"""An xterm-compatible terminal drawn by Textual: pyte does the emulation, this widget the drawing and keys.

Bytes from a shell (or a recording) go to `feed()`; the widget draws the emulated screen, only the lines
that changed, with colours (16, 256 and true colour), bold, italics, underline, reverse and the cursor.
The alternate screen (vim, less, top) is kept apart from the normal one and restored after. Keys and
pastes become the bytes an xterm would send (`key_bytes()`), application cursor mode and bracketed
paste included. What is shown never reaches the real terminal as escape sequences: a hostile stream
can only change cells.
"""

from __future__ import annotations

import copy
from typing import Any

import pyte
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

APP_CURSOR = 1 << 5  # pyte keeps private modes shifted by 5
BRACKETED_PASTE = 2004 << 5
ALT_SCREENS = {47 << 5, 1047 << 5, 1049 << 5}

NAMED = {
    "black": 0, "red": 1, "green": 2, "brown": 3, "blue": 4, "magenta": 5, "cyan": 6, "white": 7,
    "brightblack": 8, "brightred": 9, "brightgreen": 10, "brightbrown": 11, "brightblue": 12,
    "brightmagenta": 13, "brightcyan": 14, "brightwhite": 15,
}  # fmt: skip

SPECIAL_KEYS = {
    "enter": b"\r", "tab": b"\t", "shift+tab": b"\x1b[Z", "backspace": b"\x7f", "escape": b"\x1b",
    "delete": b"\x1b[3~", "insert": b"\x1b[2~", "pageup": b"\x1b[5~", "pagedown": b"\x1b[6~",
    "home": b"\x1b[H", "end": b"\x1b[F", "space": b" ", "ctrl+space": b"\x00", "ctrl+@": b"\x00",
    "f1": b"\x1bOP", "f2": b"\x1bOQ", "f3": b"\x1bOR", "f4": b"\x1bOS", "f5": b"\x1b[15~", "f6": b"\x1b[17~",
    "f7": b"\x1b[18~", "f8": b"\x1b[19~", "f9": b"\x1b[20~", "f10": b"\x1b[21~", "f11": b"\x1b[23~",
    "f12": b"\x1b[24~",
}  # fmt: skip
ARROWS = {"up": b"A", "down": b"B", "right": b"C", "left": b"D"}
MODIFIER_CODES = {"shift": 2, "alt": 3, "shift+alt": 4, "ctrl": 5, "shift+ctrl": 6, "ctrl+alt": 7}


def key_bytes(key: str, character: str | None, *, app_cursor: bool = False) -> bytes | None:
    """What an xterm sends for a Textual key event, or None for a key with no meaning to a terminal."""
    if key in SPECIAL_KEYS:
        return SPECIAL_KEYS[key]
    *mods, name = key.split("+")
    if name in ARROWS:
        if not mods:
            return (b"\x1bO" if app_cursor else b"\x1b[") + ARROWS[name]
        code = MODIFIER_CODES.get("+".join(sorted(mods)))
        return f"\x1b[1;{code}".encode() + ARROWS[name] if code else None
    if mods == ["ctrl"] and len(name) == 1 and name.isalpha():
        return bytes([ord(name.lower()) - 96])
    if mods == ["ctrl"] and name in ("left_square_bracket", "backslash", "right_square_bracket", "circumflex_accent"):
        return {"left_square_bracket": b"\x1b", "backslash": b"\x1c", "right_square_bracket": b"\x1d"}.get(
            name, b"\x1e"
        )
    if mods and mods[0] == "alt" and character and len(character) == 1:
        return b"\x1b" + character.encode()
    if character and character.isprintable():
        return character.encode()
    if character and len(character) == 1 and ord(character) < 32:
        return character.encode()
    return None


class Screen(pyte.Screen):
    """pyte's screen with the alternate screen buffer (pyte only records the mode)."""

    def __init__(self, columns: int, lines: int) -> None:
        super().__init__(columns, lines)
        self._saved: tuple[dict[int, Any], Any] | None = None

    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        # Private SGR (vim sends CSI > 4 ; m for modifyOtherKeys) is not about colours: ignore it
        # rather than let pyte fail on it.
        if not private:
            super().select_graphic_rendition(*attrs)

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        private = kwargs.get("private", False)
        if private and any(mode << 5 in ALT_SCREENS for mode in modes) and self._saved is None:
            self._saved = ({y: dict(line) for y, line in self.buffer.items()}, copy.copy(self.cursor))
            super().set_mode(*modes, **kwargs)
            self.erase_in_display(2)
            return
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        private = kwargs.get("private", False)
        super().reset_mode(*modes, **kwargs)
        if private and any(mode << 5 in ALT_SCREENS for mode in modes) and self._saved is not None:
            buffer, cursor = self._saved
            self._saved = None
            self.buffer.clear()
            for y, line in buffer.items():
                self.buffer[y].update(line)
            self.cursor = cursor
            self.dirty.update(range(self.lines))


class _Tolerant:
    """The screen as pyte's parser sees it: a handler that fails on odd parameters (pyte passes
    `private=True` to handlers that do not take it) drops that sequence, not the rest of the stream."""

    def __init__(self, screen: Screen) -> None:
        self._screen = screen

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._screen, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except TypeError:
                if kwargs.pop("private", None) is not None:
                    return None  # a private variant the screen does not implement: ignore it
                raise
            except (ValueError, IndexError, KeyError):
                return None

        return call


def stream_for(screen: Screen) -> pyte.ByteStream:
    return pyte.ByteStream(_Tolerant(screen))


def _color(value: str, default: Color | None) -> Color | None:
    if value == "default":
        return default
    if value in NAMED:
        return Color.from_ansi(NAMED[value])
    try:
        return Color.parse(f"#{value}")
    except Exception:  # noqa: BLE001 - anything pyte hands over that is not a colour: draw default
        return default


class TerminalView(Widget, can_focus=True):
    """Draws an emulated screen. Subclasses (the shell) turn keys into bytes; the player only feeds."""

    DEFAULT_CSS = """
    TerminalView { background: $background; }
    """
    show_cursor: reactive[bool] = reactive(True)

    def __init__(self, cols: int = 80, rows: int = 24, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.screen_model = Screen(cols, rows)
        self.stream = stream_for(self.screen_model)
        self._lines: dict[int, Strip] = {}
        self.parse_errors = 0
        self._styles: dict[tuple[Any, ...], Style] = {}

    @property
    def cols(self) -> int:
        return int(self.screen_model.columns)

    @property
    def rows(self) -> int:
        return int(self.screen_model.lines)

    def feed(self, data: bytes) -> None:
        try:
            self.stream.feed(data)
        except Exception:  # noqa: BLE001 - a sequence the emulator chokes on must not stop the terminal
            self.parse_errors += 1
            self.stream = stream_for(self.screen_model)  # a fresh parser; the screen stays
        self._invalidate()

    def reset(self, cols: int | None = None, rows: int | None = None) -> None:
        self.screen_model = Screen(cols or self.cols, rows or self.rows)
        self.stream = stream_for(self.screen_model)
        self._lines.clear()
        self.refresh()

    def resize_screen(self, cols: int, rows: int) -> None:
        if (cols, rows) != (self.cols, self.rows):
            self.screen_model.resize(rows, cols)
            self._lines.clear()
            self.refresh()

    def _invalidate(self) -> None:
        dirty = self.screen_model.dirty
        if not dirty:
            return
        for y in dirty:
            self._lines.pop(y, None)
        dirty.clear()
        self.refresh()  # the line with the cursor is never cached, so a moved cursor is drawn anew

    @property
    def app_cursor(self) -> bool:
        return APP_CURSOR in self.screen_model.mode

    @property
    def bracketed_paste(self) -> bool:
        return BRACKETED_PASTE in self.screen_model.mode

    def text(self) -> str:
        """The screen as plain text, one line per row (for tests and for copying)."""
        return "\n".join(line.rstrip() for line in self.screen_model.display)

    def _style(self, char: Any, cursor: bool) -> Style:
        key = (char.fg, char.bg, char.bold, char.italics, char.underscore, char.reverse, char.strikethrough, cursor)
        style = self._styles.get(key)
        if style is None:
            fg = _color(char.fg, None)
            bg = _color(char.bg, None)
            if char.bold and fg is not None and fg.number is not None and fg.number < 8:
                fg = Color.from_ansi(fg.number + 8)
            reverse = char.reverse != cursor
            style = Style(
                color=fg,
                bgcolor=bg,
                bold=char.bold,
                italic=char.italics,
                underline=char.underscore,
                strike=char.strikethrough,
                reverse=reverse,
            )
            if len(self._styles) > 4096:
                self._styles.clear()
            self._styles[key] = style
        return style

    def render_line(self, y: int) -> Strip:
        if y >= self.rows:
            return Strip.blank(self.size.width)
        cursor = self.screen_model.cursor
        cursor_x = cursor.x if (self.show_cursor and not cursor.hidden and cursor.y == y and self.has_focus) else -1
        cached = self._lines.get(y)
        if cached is not None and cursor_x < 0 and y != cursor.y:
            return cached
        line = self.screen_model.buffer[y]
        segments: list[Segment] = []
        run: list[str] = []
        run_style: Style | None = None
        for x in range(self.cols):
            char = line[x]
            style = self._style(char, x == cursor_x)
            if style is not run_style and run:
                segments.append(Segment("".join(run), run_style))
                run = []
            run_style = style
            run.append(char.data or " ")
        if run:
            segments.append(Segment("".join(run), run_style))
        strip = Strip(segments, self.cols)
        if cursor_x < 0:
            self._lines[y] = strip
        return strip

    def on_focus(self, event: events.Focus) -> None:
        self._lines.pop(self.screen_model.cursor.y, None)
        self.refresh()

    def on_blur(self, event: events.Blur) -> None:
        self._lines.pop(self.screen_model.cursor.y, None)
        self.refresh()
