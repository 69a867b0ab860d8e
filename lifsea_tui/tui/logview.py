"""A scrolling view of journal entries that draws only what is on screen.

The logs pane keeps up to 20,000 entries and a busy unit adds thousands a second. A widget that renders
every line as it arrives (RichLog) spends its time on lines nobody sees: the pane fell behind at about
1,100 lines a second. This view holds a reference to the entries, formats an entry only when one of its
lines is drawn, and caches what it drew; taking in a batch costs little more than counting its lines.

An entry takes one line per line of its message (newlines are kept, and shown), or, when wrapping, as
many as it wraps to at the view's width: those heights are worked out once per width and then for each
new entry as it arrives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import islice

from rich.text import Text
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from lifsea_tui.api import LogEntry

Format = Callable[[LogEntry], Text]
PREFIX = 40  # a timestamp, the identifier and PID: room kept beside the message


def _width_of(entry: LogEntry) -> int:
    """How wide the entry's widest line may be, without formatting it: what horizontal scrolling must
    reach. Generous (a control character is shown as up to four), never short."""
    return max(len(part) for part in entry.message.split("\n")) * 4 + len(entry.identifier or entry.unit or "") + PREFIX


class LogView(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    LogView { background: $surface; }
    """

    def __init__(self, entries: deque[LogEntry], format_entry: Format, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.entries = entries
        self.format_entry = format_entry
        self.wrap = False
        self.follow = True
        self._first = 0  # the serial number of entries[0]: drawn lines are cached by serial, not position
        self._cache: LRUCache[tuple[int, int], list[Strip]] = LRUCache(4096)
        self._heights: deque[int] = deque()  # lines each entry takes, measured for self._measured
        self._measured: int | None = None  # the wrap width the heights are for (0 without wrapping)
        self._total = 0
        self._widest = 0
        self._anchor = (0, 0, 0)  # (first line of an entry, its index, the heights' version) for lookups
        self._version = 0

    # -- what the pane tells it ----------------------------------------------------------------------

    def appended(self, count: int, dropped: int) -> None:
        """`count` entries were added at the end and `dropped` fell off the front (a bounded deque)."""
        self._first += dropped
        self._version += 1
        removed = 0
        if self._measured is not None and self._measured == self._wrap_width():
            for _ in range(min(dropped, len(self._heights))):
                removed += self._heights.popleft()
            self._total -= removed
            new = list(islice(reversed(self.entries), count))[::-1]
            for entry in new:
                height = self._height(self._first + len(self._heights), entry)
                self._heights.append(height)
                self._total += height
                self._widest = max(self._widest, _width_of(entry))
        self._update()
        if removed and not self.follow:
            # The lines above the view fell off: the view stays on the lines it showed.
            self.scroll_to(y=max(0, self.scroll_offset.y - removed), animate=False, immediate=True)

    def redraw(self) -> None:
        """Everything again: the format changed (timestamps, search, wrap) or the entries were replaced.
        Not following, the entry at the top stays at the top."""
        top = self._locate(self.scroll_offset.y) if self._measured is not None and self.entries else None
        self._cache.clear()
        self._first = 0
        self._measured = None
        self._update()
        if top is not None and not self.follow and top[0] < len(self._heights):
            self.scroll_to(y=sum(islice(self._heights, top[0])), animate=False, immediate=True)

    # -- measuring -----------------------------------------------------------------------------------

    def _wrap_width(self) -> int:
        return max(1, self.scrollable_content_region.width) if self.wrap else 0

    def _height(self, serial: int, entry: LogEntry) -> int:
        if self.wrap:
            return len(self._lines(serial, entry))
        return 1 + entry.message.count("\n")

    def _measure(self) -> None:
        width = self._wrap_width()
        if self._measured == width:
            return
        self._measured = width
        self._version += 1
        self._heights = deque(self._height(self._first + i, e) for i, e in enumerate(self.entries))
        self._total = sum(self._heights)
        self._widest = max((_width_of(e) for e in self.entries), default=0)

    def _update(self) -> None:
        self._measure()
        self.virtual_size = Size(self._wrap_width() or self._widest, self._total)
        if self.follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def on_resize(self) -> None:
        if self.wrap:
            self._update()

    # -- drawing -------------------------------------------------------------------------------------

    def _lines(self, serial: int, entry: LogEntry) -> list[Strip]:
        width = self._wrap_width()
        key = (serial, width)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        text = self.format_entry(entry)
        console = self.app.console
        if self.wrap:
            lines = list(text.wrap(console, width)) or [Text("")]
        else:
            lines = list(text.split("\n", allow_blank=True)) or [Text("")]
        strips = [Strip(list(line.render(console, end="")), line.cell_len) for line in lines]
        self._cache[key] = strips
        return strips

    def _locate(self, line: int) -> tuple[int, int] | None:
        """The entry that holds display line `line`, and which of its lines it is."""
        if line >= self._total:
            return None
        top, index, version = self._anchor
        if version != self._version or line < top or index >= len(self._heights):
            # Start from whichever end is nearer: following the tail is the common case.
            if line >= self._total // 2:
                top, index = self._total, len(self._heights)
                while top > line:
                    index -= 1
                    top -= self._heights[index]
            else:
                top, index = 0, 0
        while line >= top + self._heights[index]:
            top += self._heights[index]
            index += 1
        self._anchor = (top, index, self._version)
        return index, line - top

    def render_line(self, y: int) -> Strip:
        self._measure()
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        style = self.rich_style
        found = self._locate(scroll_y + y)
        if found is None:
            return Strip.blank(width, style)
        index, part = found
        lines = self._lines(self._first + index, self.entries[index])
        strip = lines[part] if part < len(lines) else Strip.blank(width, style)
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_style(style)

    def shown(self) -> list[str]:
        """The lines on screen as plain text."""
        return [strip.text for strip in (self.render_line(y) for y in range(self.size.height))]
