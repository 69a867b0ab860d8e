"""The node's journal, read with journalctl from the node's journal directory.

journalctl is journald's own reader: it understands every journal file version, follows with
inotify, resumes from a cursor and filters by unit, priority, time and pattern. The agent runs it on
the node's journal (never the host it runs on): `--directory` when its journal is in one directory,
as it is once journald has flushed to /var, else `--file` on every directory's files, /var/log/journal's
and /run/log/journal's merged. A follow with `--file` takes new lines far more slowly (a unit writing
5,000 lines a second was followed at 500-1,000 a second; with `--directory` at 5,000). It reads JSON lines one
at a time, and hands back bounded entries: a message over MAX_MESSAGE is cut (and says so), binary
fields are shown as text with the undecodable bytes escaped. Following reads the next line only when
the last one was sent, so a slow client slows journalctl (its pipe fills), not the agent's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifsea_tui.agent.errors import BackendError
from lifsea_tui.api import LogEntry

MAX_MESSAGE = 16 * 1024
FOLLOW_CHUNK = 256 * 1024  # what one read of a follow takes at most: a burst's worth of lines
MAX_LINE = 8 * 1024 * 1024  # journalctl's JSON line for one entry, binary fields included
TIMEOUT = 30.0


def _text(value: Any) -> str:
    """A journal field as text: strings as they are, binary (a list of byte values) decoded with escapes."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if value is None:
        return "[field too large for journalctl's JSON: not shown]"
    return str(value)


def entry(fields: dict[str, Any]) -> LogEntry:
    message = _text(fields.get("MESSAGE", ""))
    cut = len(message) > MAX_MESSAGE
    if cut:
        message = message[:MAX_MESSAGE]
    try:
        time = datetime.fromtimestamp(int(fields.get("__REALTIME_TIMESTAMP", "0")) / 1_000_000, UTC)
    except (TypeError, ValueError):
        time = datetime.fromtimestamp(0, UTC)
    try:
        priority = int(fields.get("PRIORITY", 6))
    except (TypeError, ValueError):
        priority = 6
    pid = fields.get("_PID")
    return LogEntry(
        cursor=str(fields.get("__CURSOR", "")),
        time=time,
        # UNIT is the unit systemd's own messages are about ("Started cron.service"); the sender's
        # unit otherwise. journalctl's --unit matches both.
        unit=_text(fields.get("UNIT") or fields.get("_SYSTEMD_UNIT") or "") or None,
        identifier=_text(fields.get("SYSLOG_IDENTIFIER") or "") or None,
        priority=priority,
        pid=int(pid) if isinstance(pid, str) and pid.isdigit() else None,
        message=message,
        cut=cut,
        binary=not isinstance(fields.get("MESSAGE", ""), str),
    )


class Journal:
    def __init__(self, directories: list[Path]) -> None:
        self.directories = directories

    def sources(self) -> list[Path]:
        """The node's journal directories: every machine directory under every journal path that has
        journal files, persistent and volatile together. A node whose journald has not
        flushed to /var (early in its boot, a failed flush, Storage=volatile) keeps its newest lines
        in /run/log/journal; reading only /var would show a journal that stopped."""
        found = []
        for base in self.directories:
            if base.is_dir():
                machines = sorted(path for path in base.iterdir() if path.is_dir()) or [base]
                # Only where there are files: a glob that matches nothing fails journalctl altogether.
                found += [m for m in machines if next(m.glob("*.journal"), None) is not None]
        if not found:
            raise BackendError("unavailable", f"no journal at {', '.join(str(d) for d in self.directories)}")
        return found

    def _argv(
        self,
        *,
        unit: str | None,
        priority: int | None,
        since: datetime | None,
        grep: str | None,
        after_cursor: str | None,
        lines: int | None,
        follow: bool,
    ) -> list[str]:
        found = self.sources()
        where = [f"--directory={found[0]}"] if len(found) == 1 else [f"--file={d / '*.journal'}" for d in found]
        argv = ["journalctl", *where, "--output=json", "--all", "--no-pager", "--quiet"]
        if unit:
            argv.append(f"--unit={unit}")
        if priority is not None:
            argv.append(f"--priority=0..{priority}")
        if since is not None:
            argv.append(f"--since={since.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')} UTC")
        if grep:
            argv.append(f"--grep={grep}")
        if after_cursor:
            argv.append(f"--after-cursor={after_cursor}")
        elif lines is not None:
            argv.append(f"--lines={lines}")
        if follow:
            argv.append("--follow")
        return argv

    async def _spawn(self, argv: list[str]) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
                limit=MAX_LINE,
            )
        except FileNotFoundError as error:
            raise BackendError("unavailable", "journalctl is not installed") from error

    async def read(
        self,
        *,
        unit: str | None = None,
        priority: int | None = None,
        since: datetime | None = None,
        grep: str | None = None,
        after_cursor: str | None = None,
        limit: int = 200,
    ) -> list[LogEntry]:
        """The last `limit` matching entries (or, after a cursor, the next `limit`), oldest first."""
        argv = self._argv(
            unit=unit, priority=priority, since=since, grep=grep, after_cursor=after_cursor, lines=limit, follow=False
        )
        proc = await self._spawn(argv)
        entries: list[LogEntry] = []
        try:
            async with asyncio.timeout(TIMEOUT):
                assert proc.stdout is not None
                async for line in proc.stdout:
                    if len(entries) >= limit:
                        break
                    with contextlib.suppress(ValueError):
                        entries.append(entry(json.loads(line)))
                err = await proc.stderr.read() if proc.stderr else b""
                code = await proc.wait()
        except TimeoutError:
            raise BackendError("failed", f"journalctl: no answer within {TIMEOUT:.0f} s") from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if code not in (0, None) and not entries and err.strip():
            detail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {code}"]
            # journalctl says what is wrong with the request (a bad pattern, a bad cursor): a 400. With --grep
            # it also exits 1 when nothing matches, saying nothing: that is an empty answer.
            raise BackendError("bad_request", f"journalctl: {detail[0]}")
        return entries

    async def follow(
        self,
        *,
        unit: str | None = None,
        priority: int | None = None,
        grep: str | None = None,
        after_cursor: str | None = None,
        backlog: int = 50,
    ) -> AsyncIterator[list[LogEntry]]:
        """Entries as they are written, after the last `backlog` (or after a cursor); until cancelled.

        In batches: whatever journalctl has written by the time the caller asks for more, so a busy unit
        costs one message per burst, not per line, and journalctl waits while the caller is behind.
        """
        argv = self._argv(
            unit=unit, priority=priority, since=None, grep=grep, after_cursor=after_cursor, lines=backlog, follow=True
        )
        proc = await self._spawn(argv)
        try:
            assert proc.stdout is not None
            pending = b""
            while chunk := await proc.stdout.read(FOLLOW_CHUNK):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                if len(pending) > MAX_LINE:
                    pending = b""  # a line past any entry's size: not JSON from journalctl, skipped
                batch = []
                for line in lines:
                    with contextlib.suppress(ValueError):
                        batch.append(entry(json.loads(line)))
                if batch:
                    yield batch
            err = await proc.stderr.read() if proc.stderr else b""
            if await proc.wait():
                detail = err.decode(errors="replace").strip().splitlines()[-1:] or ["journalctl ended"]
                raise BackendError("bad_request", f"journalctl: {detail[0]}")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
