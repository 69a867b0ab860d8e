"""Reading asciicast recordings (v2, and v3 as asciinema 3 records by default) as hostile input.

A recording is whatever a root shell printed, so it may try to fool whoever plays it back: set the
window title, write the clipboard, hide text (concealed), draw over what it showed, smuggle device
control strings. The player draws it through a terminal emulator (nothing reaches the real terminal),
and this module says what the stream did, so the person auditing it knows where to look in the
transcript, which shows every byte with control characters made visible. Broken lines, times that go
backwards, absurd sizes and huge lines are survived, shortened and reported, never fatal.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lifsea_tui.tui.plain import visible

MAX_LINE = 1024 * 1024  # longer event lines are cut to this
MAX_COLS, MAX_ROWS = 500, 200
IDLE_LIMIT = 2.0  # longer pauses are shortened to this on the player's timeline

# What output can do to whoever watches it, and how it reads in a report.
HOSTILE = [
    (re.compile(r"\x1b\]5[02];"), "writes or reads the clipboard (OSC 52)"),
    (re.compile(r"\x1b\][012];"), "sets the window title (OSC 0/1/2)"),
    (re.compile(r"\x1b\]8;"), "hyperlinks: shown text may differ from the target (OSC 8)"),
    (re.compile(r"\x1b\](?![0128];|5[02];)"), "other operating system commands (OSC)"),
    (re.compile(r"\x1b[P_^X]"), "device control / private strings (DCS, APC, PM, SOS)"),
    (re.compile(r"[\x80-\x9f]"), "8-bit C1 control characters"),
    (re.compile(r"\x1b\[(?:[0-9;]*;)?8(?:;[0-9;]*)?m"), "concealed (invisible) text (SGR 8)"),
    (re.compile("[\u202a-\u202e\u2066-\u2069]"), "bidirectional overrides: text shown in another order"),
    (re.compile("[\u200b-\u200d\u2060\ufeff]"), "zero-width characters"),
]
REWRITES = [
    (re.compile(r"\x1b\[[0-9]*J|\x1bc"), "screen cleared"),
    (re.compile(r"\x1b\[[0-9]*K"), "line erased"),
    (re.compile(r"\x1b\[[0-9]*[AF]"), "cursor moved up"),
    (re.compile(r"[^\r\n\x1b]\r(?!\n)[^\r\n\x1b]"), "carriage return over shown text"),
    (re.compile(r"\x08"), "backspace"),
]


@dataclass(frozen=True)
class Event:
    at: float  # on the player's timeline (idle pauses shortened)
    time: float  # as recorded
    kind: str  # o output, i input, r resize, m marker, x exit status (v3)
    data: str


@dataclass
class Cast:
    width: int = 80
    height: int = 24
    title: str = ""
    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the file itself is damaged
    hostile: Counter[str] = field(default_factory=Counter)  # what the output tries to do
    rewrites: Counter[str] = field(default_factory=Counter)  # ordinary, but can hide what was shown

    @property
    def duration(self) -> float:
        return self.events[-1].at if self.events else 0.0

    @property
    def markers(self) -> list[Event]:
        return [event for event in self.events if event.kind == "m"]

    def findings(self) -> list[str]:
        out = list(self.problems)
        out += [f"{what} ({count}×)" for what, count in self.hostile.most_common()]
        return out


def _header(line: bytes, cast: Cast) -> int:
    """Read the header into `cast`; its version (2 when it cannot tell: the events are read as v2)."""
    try:
        header: Any = json.loads(line)
    except ValueError:
        cast.problems.append("line 1: the header is not JSON; playing at 80x24")
        return 2
    if not isinstance(header, dict) or header.get("version") not in (2, 3):
        cast.problems.append("line 1: not an asciicast v2 or v3 header; playing at 80x24")
        return 2
    version = int(header["version"])
    if version == 3:  # the size is the terminal's: {"term": {"cols": 80, "rows": 24, ...}}
        term = header.get("term")
        term = term if isinstance(term, dict) else {}
        header = {**header, "width": term.get("cols"), "height": term.get("rows")}
    for key, limit in (("width", MAX_COLS), ("height", MAX_ROWS)):
        value = header.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            cast.problems.append(f"header: bad {key} {str(value)[:20]!r}; using {getattr(cast, key)}")
        elif value > limit:
            cast.problems.append(f"header: {key} {value} is absurd; cut to {limit}")
            setattr(cast, key, limit)
        else:
            setattr(cast, key, value)
    title = header.get("title")
    if isinstance(title, str):
        cast.title = visible(title[:200])
    return version


def parse(data: bytes) -> Cast:
    cast = Cast()
    lines = data.split(b"\n")
    if not lines or not lines[0].strip():
        cast.problems.append("empty recording")
        return cast
    version = _header(lines[0][:MAX_LINE], cast)
    last_time = 0.0
    at = 0.0
    cut = 0
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip() or (version == 3 and raw.lstrip().startswith(b"#")):  # v3 has comment lines
            continue
        if len(raw) > MAX_LINE:
            cut += 1
            raw = raw[:MAX_LINE]
        try:
            item: Any = json.loads(raw)
        except ValueError:
            cast.problems.append(
                f"line {number}: not JSON{' (cut: too long)' if len(raw) == MAX_LINE else ''}; skipped"
            )
            continue
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], int | float)
            or isinstance(item[0], bool)
            or not isinstance(item[1], str)
            or not isinstance(item[2], str)
        ):
            cast.problems.append(f"line {number}: not an event [time, kind, data]; skipped")
            continue
        time, kind, text = float(item[0]), item[1], item[2]
        if not time >= 0 or time == float("inf"):
            cast.problems.append(f"line {number}: time {item[0]!r} is not a time; skipped")
            continue
        if version == 3:  # v3 times are intervals since the event before
            time = last_time + time
        if time < last_time:
            cast.problems.append(f"line {number}: time goes back from {last_time:.3f} to {time:.3f} s; kept in order")
            time = last_time
        at += min(time - last_time, IDLE_LIMIT)
        last_time = time
        if kind == "o":
            for pattern, what in HOSTILE:
                if found := len(pattern.findall(text)):
                    cast.hostile[what] += found
            for pattern, what in REWRITES:
                if found := len(pattern.findall(text)):
                    cast.rewrites[what] += found
        elif kind == "r" and not re.fullmatch(r"\d{1,4}x\d{1,4}", text):
            cast.problems.append(f"line {number}: bad resize {text[:20]!r}; skipped")
            continue
        elif kind not in ("i", "m", "r") and not (version == 3 and kind == "x"):
            cast.problems.append(f"line {number}: unknown event kind {kind[:10]!r}; skipped")
            continue
        cast.events.append(Event(at=at, time=time, kind=kind, data=text))
    if cut:
        cast.problems.append(f"{cut} line(s) over {MAX_LINE // 1024} KiB were cut")
    if len(cast.problems) > 50:
        count = len(cast.problems)
        cast.problems = [*cast.problems[:49], f"… and {count - 49} more problems"]
    return cast


def size_of(event: Event, cast: Cast) -> tuple[int, int]:
    cols, rows = (int(part) for part in event.data.split("x"))
    return max(1, min(cols, MAX_COLS)), max(1, min(rows, MAX_ROWS))
