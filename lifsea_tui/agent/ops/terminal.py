"""A session's terminal: what the shell prints goes to the recording, the replay tail and the attached
client; keys go in; its size is set; the shell's exit status is reaped.

While a send to the client is in progress the terminal is not read: a slow client slows the shell's
output (the terminal's buffer fills and the writer blocks) instead of the agent's memory.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
import time
from collections.abc import Callable

from lifsea_tui.agent.ops.session import Attachment, Session
from lifsea_tui.agent.recording import RecordingError
from lifsea_tui.api import ops as proto

READ_CHUNK = 64 * 1024


def set_size(session: Session, cols: int, rows: int) -> None:
    session.cols, session.rows = cols, rows
    if session.master is not None:
        fcntl.ioctl(session.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def resize(session: Session, cols: int, rows: int) -> None:
    """A new size from the client: set, and recorded (a player needs it to draw what follows)."""
    if (cols, rows) != (session.cols, session.rows):
        set_size(session, cols, rows)
        session.recorder.resize(cols, rows)


async def pump(session: Session, end: Callable[[str], None], gone: Callable[[Attachment], None]) -> None:
    """Pass output on until the shell exits or the terminal ends, then `end` the session (from outside
    this task, which ending cancels). `gone` is told of a client whose connection failed."""
    master, pidfd = session.master, session.pidfd
    assert master is not None and pidfd is not None
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    exited = asyncio.Event()

    def on_exit() -> None:
        exited.set()
        wake.set()

    loop.add_reader(pidfd, on_exit)
    more: bool | None = None
    try:
        while not exited.is_set():
            loop.add_reader(master, wake.set)
            await wake.wait()
            wake.clear()
            loop.remove_reader(master)
            while (more := await read_once(session, gone)) is True:
                pass
            if more is False:
                break
    except RecordingError as error:
        end(f"recording failed: {error}")
        return
    finally:
        loop.remove_reader(pidfd)
        if session.master is not None:
            loop.remove_reader(master)
    if exited.is_set() or more is False:
        session.exit_code = reap(session)
        end("exited")


async def read_once(session: Session, gone: Callable[[Attachment], None]) -> bool | None:
    """Read what the terminal has and pass it on: True when there may be more, None when it has nothing
    now, False at its end."""
    assert session.master is not None
    try:
        data = os.read(session.master, READ_CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return False  # EIO: nothing holds the terminal's other side any more
    if not data:
        return False
    session.recorder.output(data)
    session.remember(data)
    async with session.send_lock:
        attachment = session.attachment
        if attachment is not None:
            try:
                await attachment.send(proto.data(proto.STDOUT, data))
            except Exception:  # noqa: BLE001 - any failure of the connection means it is gone
                gone(attachment)
    return True


async def drain(session: Session, gone: Callable[[Attachment], None]) -> None:
    """Whatever the shell printed last, before its terminal closes: it is part of the record."""
    for _ in range(64):
        if not await read_once(session, gone):  # nothing more (None) or the end (False)
            return


def reap(session: Session) -> int | None:
    if session.pidfd is None:
        return None
    try:
        result = os.waitid(os.P_PIDFD, session.pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None  # not adopted: the exit status went to someone else
    if result is None:
        return None
    return result.si_status if result.si_code == os.CLD_EXITED else 128 + result.si_status


async def write_input(session: Session, data: bytes, record: bool) -> None:
    session.last_input = time.monotonic()
    if record:
        session.recorder.input(data)
    view = memoryview(data)
    while view and session.master is not None and not session.ending:
        try:
            written = os.write(session.master, view)
            view = view[written:]
        except BlockingIOError:
            await _writable(session.master)
        except OSError:
            return


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def writable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, writable)
    try:
        await asyncio.wait_for(ready, 5)
    finally:
        loop.remove_writer(fd)
