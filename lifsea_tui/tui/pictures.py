"""Small pictures that fit in a table cell: a sparkline of recent values and a meter of a share.

Text, not widgets: a fleet table of a thousand rows draws them as cells. The node screen draws the same
figures with Textual's own Sparkline and ProgressBar, where there is room for a widget.
"""

from __future__ import annotations

from collections.abc import Sequence

BARS = "▁▂▃▄▅▆▇█"
# Latency sparklines reach their top at this many milliseconds (or the worst recent answer, if worse):
# a node answering steadily in 9 ms draws low bars, not full ones.
LATENCY_TOP_MS = 100.0
EIGHTHS = " ▏▎▍▌▋▊▉█"


def spark(values: Sequence[float], width: int, top: float | None = None) -> str:
    """The last `width` values as bars from 0 to `top` (default: their largest), oldest on the left."""
    shown = list(values)[-width:]
    if not shown:
        return ""
    ceiling = max(top or 0.0, *shown)
    if ceiling <= 0:
        return BARS[0] * len(shown)
    return "".join(BARS[min(len(BARS) - 1, max(0, int(value / ceiling * len(BARS))))] for value in shown)


def meter(ratio: float, width: int) -> str:
    """`ratio` (0 to 1) of `width` cells filled, to an eighth of a cell."""
    eighths = round(max(0.0, min(1.0, ratio)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(width, "·")
