"""Break-glass ops sessions: a runc container in the node's namespaces, its terminal, its recording.

A session is created by an admin with a reason. The agent checks the ops image out of the node's
ostree repo (once per image commit), writes an OCI bundle that joins the node's pid, net, ipc and uts
namespaces (its own mount namespace, the image read-only as its root, the node's root at /host), and
starts it with `runc run -d --console-socket`: runc hands back the terminal's master side, and the agent,
a child subreaper, adopts the shell when runc exits, so it learns the shell's exit status.

Everything the terminal prints is recorded (see recording.py) whether or not anyone is attached. A
session ends when its shell exits, at its TTL, after an idle timeout, when nobody re-attaches within the
grace period, on DELETE, when its recording cannot be written, and when the agent stops. Ending always
does the same things in the same order: kill every process of the container (`runc delete --force`),
drain and close the terminal, seal the recording, write the audit record with the recording's SHA-256
and size, tell the client, delete the bundle. A session directory still on disk when the agent starts
belongs to an agent that was killed; it is torn down and its recording sealed as interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import socket
import struct
import tempfile
import termios
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifsea_tui.agent import access, audited
from lifsea_tui.agent.audit import STARTED, AuditLog
from lifsea_tui.agent.auth import Identity
from lifsea_tui.agent.config import AgentConfig
from lifsea_tui.agent.errors import ApiError, BackendError
from lifsea_tui.agent.events import EventHub
from lifsea_tui.agent.ostree import OstreeBackend, run
from lifsea_tui.agent.recording import Recorder, RecordingError, Seal, seal_interrupted
from lifsea_tui.api import EventKind, OpsAccess, OpsSession, OpsSessionRequest, OpsSessionState
from lifsea_tui.api import ops as proto

log = logging.getLogger("lifsea.agent.ops")

CONTAINER_PREFIX = "lifsea-ops-"
RESERVE_NAME = ".reserve"  # not a recording: see OpsManager.keep_reserve
SHELL = ["/bin/bash", "-l"]
TERM = "xterm-256color"
TAIL_BYTES = 64 * 1024  # what a re-attach gets replayed
READ_CHUNK = 64 * 1024
RUNC_TIMEOUT = 20.0
SYNC_EVERY = 2.0
RECENT_ENDED = 50
PR_SET_CHILD_SUBREAPER = 36


def _now() -> datetime:
    return datetime.now(UTC)


def become_subreaper() -> None:
    """Adopt orphaned descendants (the shell, once `runc run -d` exits) so their exit status is ours."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@dataclass(eq=False)
class Attachment:
    """One websocket attached to a session; `send` writes a whole frame, `close` ends the connection."""

    send: Callable[[bytes], Awaitable[None]]
    close: Callable[[int, str], Awaitable[None]]


@dataclass(eq=False)
class Session:
    id: str
    node: str
    owner: Identity
    reason: str
    ticket: str | None
    access: OpsAccess
    created: datetime
    expires_at: datetime
    audit_seq: int
    recorder: Recorder
    container: str
    bundle: Path
    state: OpsSessionState = OpsSessionState.starting
    master: int | None = None
    pid: int | None = None
    pidfd: int | None = None
    cols: int = 80
    rows: int = 24
    tail: deque[bytes] = field(default_factory=deque)
    tail_size: int = 0
    attachment: Attachment | None = None
    attached_once: bool = False
    detached_at: float | None = None
    last_input: float = field(default_factory=time.monotonic)
    warned: set[int] = field(default_factory=set)
    exit_code: int | None = None
    end_reason: str | None = None
    ending: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def model(self) -> OpsSession:
        return OpsSession(
            id=self.id,
            node=self.node,
            actor=self.owner.actor,
            reason=self.reason,
            ticket=self.ticket,
            access=self.access,
            state=self.state,
            created=self.created,
            expires_at=self.expires_at,
            recording=self.recorder.id,
            audit_seq=self.audit_seq,
            exit_code=self.exit_code,
            end_reason=self.end_reason,
        )

    def remember(self, data: bytes) -> None:
        self.tail.append(data)
        self.tail_size += len(data)
        while self.tail_size > TAIL_BYTES and len(self.tail) > 1:
            self.tail_size -= len(self.tail.popleft())

    def replay(self) -> bytes:
        """The screen tail for a re-attach: a terminal reset, then recent output from a line start."""
        data = b"".join(self.tail)
        if len(data) > TAIL_BYTES:
            data = data[-TAIL_BYTES:]
            data = data[data.find(b"\n") + 1 :]
        return b"\x1bc" + data


class OpsManager:
    def __init__(self, config: AgentConfig, audit: AuditLog, events: EventHub, ostree: OstreeBackend) -> None:
        self.config = config
        self.ops = config.ops
        self.audit = audit
        self.events = events
        self.ostree = ostree
        self.sessions: dict[str, Session] = {}
        self.recent: deque[Session] = deque(maxlen=RECENT_ENDED)
        self._image_lock = asyncio.Lock()
        self._endings: set[asyncio.Task[None]] = set()
        # runc's state of this agent's containers only: another agent on the machine (the lab runs one
        # a node) has its own, so neither's start-up tidying touches the other's sessions.
        self._runc = ["runc", f"--root={self.ops.dir / 'runc'}"]
        self._subreaper = False
        self._runc_problem: str | None = None  # found at start: a runc that cannot hold the access levels

    # -- availability, start and stop -----------------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        if self.ops.image is None:
            return "no ops image configured ([ops] image in the agent's config)"
        if shutil.which("runc") is None:
            return "runc is not installed"
        if (problem := access.unsupported() or self._runc_problem) is not None:
            return problem
        if not (self.ops.namespaces / "pid").exists():
            return f"the node's namespaces are not at {self.ops.namespaces} (is the node running?)"
        if self.ostree.unavailable_reason() is not None:
            return f"the ops image comes from the node's ostree repo: {self.ostree.unavailable_reason()}"
        return None

    @property
    def sessions_dir(self) -> Path:
        return self.ops.dir / "sessions"

    async def start(self) -> None:
        """Tear down what a killed agent left: containers, bundles; seal their recordings as interrupted."""
        if self.ops.image is None:
            return
        with contextlib.suppress(BackendError):
            self._runc_problem = access.runc_too_old(
                await run([*self._runc, "--version"], RUNC_TIMEOUT, "runc --version")
            )
        if not self._subreaper:
            become_subreaper()
            self._subreaper = True
        await asyncio.to_thread(self.keep_reserve)
        known: set[str] = set()
        if self.sessions_dir.is_dir():
            for bundle in sorted(self.sessions_dir.iterdir()):
                known.add(CONTAINER_PREFIX + bundle.name)
                await self._recover(bundle)
        with contextlib.suppress(BackendError):
            listing = json.loads(await run([*self._runc, "list", "--format=json"], RUNC_TIMEOUT, "runc list") or "null")
            for container in listing or []:
                cid = str(container.get("id", ""))
                if cid.startswith(CONTAINER_PREFIX) and cid not in known:
                    await self._delete_container(cid)

    async def _recover(self, bundle: Path) -> None:
        try:
            meta = json.loads((bundle / "session.json").read_text())
        except (OSError, ValueError):
            meta = {"id": bundle.name}
        session_id = str(meta.get("id", bundle.name))
        await self._delete_container(CONTAINER_PREFIX + session_id)
        seal = seal_interrupted(self.ops.recordings, session_id, "the agent stopped during the session")
        audited.note(
            self.audit,
            Identity(str(meta.get("actor", "unknown")), meta.get("role")),
            "ops.session.end",
            "interrupted: the agent stopped during the session; container torn down at its restart",
            reason=meta.get("reason"),
            params={
                "session": session_id,
                "recording": session_id,
                "sha256": seal.sha256 if seal else None,
                "size": seal.size if seal else None,
                "exit_code": None,
                "end_reason": "interrupted",
            },
        )
        shutil.rmtree(bundle, ignore_errors=True)
        log.warning("tore down ops session %s left by a previous agent", session_id)

    async def shutdown(self) -> None:
        await asyncio.gather(
            *(self.end(session, "agent shutdown") for session in list(self.sessions.values())), return_exceptions=True
        )

    # -- create -------------------------------------------------------------------------------------

    @property
    def reserve(self) -> Path:
        """Room kept on the recordings' filesystem, given up when it is full and a shell is asked for."""
        return self.ops.recordings / RESERVE_NAME

    def keep_reserve(self) -> None:
        """Make (or make again, once there is room) the reserve; quietly nothing when the disk is full."""
        if self.ops.reserve_bytes <= 0 or self.reserve.exists():
            return
        partial = self.reserve.with_suffix(".partial")
        try:
            self.ops.recordings.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(self.ops.recordings).free < self.ops.reserve_bytes + self.ops.min_free_bytes:
                return
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.ops.reserve_bytes)
            finally:
                os.close(fd)
            partial.rename(self.reserve)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()

    def _refuse(self, who: Identity, request: OpsSessionRequest, code: str, detail: str) -> ApiError:
        return audited.refuse(
            self.audit, who, "ops.session.start", code, detail, reason=request.reason,
            params={"ticket": request.ticket, "access": request.access.value}, otherwise="no session was started",
        )  # fmt: skip

    def _check(self, who: Identity, request: OpsSessionRequest) -> bool:
        """Refuse what may not start; true when the reserve was given up to make room for the recording."""
        problem = self.unavailable_reason()
        if problem is not None:
            raise self._refuse(who, request, "unavailable", f"ops shell unavailable: {problem}")
        if self.ops.require_ticket and not request.ticket:
            raise self._refuse(who, request, "bad_request", "this node requires a ticket for an ops shell")
        if request.access not in self.ops.access:
            allowed = ", ".join(level.value for level in self.ops.access) or "none"
            raise self._refuse(
                who,
                request,
                "forbidden",
                f"this node's config does not allow {request.access.value} shells (allowed: {allowed})",
            )
        live = [s for s in self.sessions.values() if not s.ending]
        if len(live) >= self.ops.max_sessions:
            raise self._refuse(
                who, request, "too_many_sessions", f"{len(live)} ops sessions open (at most {self.ops.max_sessions})"
            )
        mine = [s for s in live if s.owner.actor == who.actor]
        if len(mine) >= self.ops.max_sessions_per_user:
            raise self._refuse(
                who, request, "too_many_sessions",
                f"{who.actor} has {len(mine)} ops sessions open (at most {self.ops.max_sessions_per_user})",
            )  # fmt: skip
        try:
            self.ops.recordings.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.ops.recordings).free
            released = free < self.ops.min_free_bytes and self.reserve.exists()
            if released:
                # A full /var is when the shell is needed most: give the recording the room kept for it.
                self.reserve.unlink()
                free = shutil.disk_usage(self.ops.recordings).free
        except OSError as error:
            raise self._refuse(
                who, request, "recording_unavailable", f"recording directory unusable: {error.strerror or error}"
            ) from error
        if free < self.ops.min_free_bytes:
            raise self._refuse(
                who, request, "recording_unavailable",
                f"recording directory {self.ops.recordings} has {free} bytes free (needs {self.ops.min_free_bytes}): "
                "a session that cannot be recorded is not started",
            )  # fmt: skip
        return released

    async def create(self, who: Identity, request: OpsSessionRequest) -> Session:
        released = self._check(who, request)
        ttl = min(request.ttl_seconds or self.ops.default_ttl, self.ops.max_ttl)
        session_id = secrets.token_hex(8)
        created = _now()
        params = {
            "session": session_id,
            "ticket": request.ticket,
            "ttl_seconds": ttl,
            "access": request.access.value,
            "recording": session_id,
            "record_input": self.ops.record_input,
        }
        if released:
            params["reserve_released"] = True
        record = audited.record(
            self.audit, who, "ops.session.start", STARTED, reason=request.reason, params=params,
            otherwise="no session was started",
        )  # fmt: skip
        recorder = Recorder(
            self.ops.recordings,
            session_id,
            {
                "id": session_id,
                "actor": who.actor,
                "reason": request.reason,
                "ticket": request.ticket,
                "access": request.access.value,
            },
        )
        session = Session(
            id=session_id,
            node=self.config.node_name,
            owner=who,
            reason=request.reason,
            ticket=request.ticket,
            access=request.access,
            created=created,
            expires_at=created + timedelta(seconds=ttl),
            audit_seq=record.seq,
            recorder=recorder,
            container=CONTAINER_PREFIX + session_id,
            bundle=self.sessions_dir / session_id,
        )
        try:
            recorder.open(
                session.cols,
                session.rows,
                {"TERM": TERM, "SHELL": SHELL[0]},
                f"{self.config.node_name} ({request.access.value}): {request.reason}",
            )
            await self._launch(session)
        except (RecordingError, ApiError, OSError) as error:
            detail = str(error) if not isinstance(error, ApiError) else error.detail
            code = "recording_unavailable" if isinstance(error, RecordingError) else getattr(error, "code", "failed")
            await self._teardown(session, f"failed to start: {detail}")
            raise ApiError(code, f"ops session not started: {detail}", audited=True) from error
        session.state = OpsSessionState.detached
        session.detached_at = time.monotonic()
        self.sessions[session_id] = session
        session.tasks = [
            asyncio.create_task(self._pump(session)),
            asyncio.create_task(self._supervise(session)),
        ]
        self._publish(session)
        return session

    async def _image_root(self) -> Path:
        """The ops image checked out of the node's repo (pulled first if the node does not have it)."""
        assert self.ops.image is not None
        repo = self.config.sysroot / "ostree" / "repo"
        async with self._image_lock:
            try:
                rev = (
                    await run(["ostree", f"--repo={repo}", "rev-parse", self.ops.image], 30, "find the ops image")
                ).strip()
            except BackendError:
                if ":" not in self.ops.image:
                    raise
                remote, ref = self.ops.image.split(":", 1)
                await run(
                    ["ostree", f"--repo={repo}", "pull", remote, ref], self.config.pull_timeout, "pull the ops image"
                )
                rev = (
                    await run(["ostree", f"--repo={repo}", "rev-parse", self.ops.image], 30, "find the ops image")
                ).strip()
            root = self.ops.dir / "images" / rev
            if not root.is_dir():
                tmp = root.with_name(f"{rev}.tmp-{secrets.token_hex(4)}")
                tmp.parent.mkdir(parents=True, exist_ok=True)
                await run(["ostree", f"--repo={repo}", "checkout", rev, str(tmp)], 300, "check out the ops image")
                os.replace(tmp, root)
            return root

    async def _launch(self, session: Session) -> None:
        image_root = await self._image_root()
        session.bundle.mkdir(parents=True)
        (session.bundle / "session.json").write_text(
            json.dumps(
                {"id": session.id, "actor": session.owner.actor, "role": session.owner.role, "reason": session.reason}
            )
        )
        var = self.ostree.stateroot_var()
        spec = access.bundle_spec(
            access=session.access,
            image_root=image_root,
            bundle=session.bundle,
            namespaces=self.ops.namespaces,
            cgroup=f"/lifsea-ops/{self.config.node_name}-{session.id}",
            session_id=session.id,
            host_mounts=access.host_mounts(
                session.access,
                self.config.host_root,
                await self.ostree.booted_directory(),
                var if var.is_dir() else None,
            ),
            shell=SHELL,
            term=TERM,
        )
        (session.bundle / "config.json").write_text(json.dumps(spec))
        pid_file = session.bundle / "pid"
        # A socket path must fit in 108 bytes, which the bundle's may not: a private directory in /tmp.
        with tempfile.TemporaryDirectory(prefix="lifsea-ops-") as private, socket.socket(socket.AF_UNIX) as listener:
            console = Path(private) / "console.sock"
            listener.bind(str(console))
            listener.listen(1)
            try:
                await run(
                    [*self._runc, "run", "--detach", f"--console-socket={console}", f"--pid-file={pid_file}",
                     f"--bundle={session.bundle}", session.container],
                    RUNC_TIMEOUT, "start the ops container",
                )  # fmt: skip
            except BackendError as error:
                # runc logs warnings (cgroups, freezer) before the error that matters; keep the error.
                errors = re.findall(r'level=error msg="((?:[^"\\]|\\.)*)"', error.detail)
                if errors:
                    error.detail = f"start the ops container: {errors[-1]}"
                raise
            listener.settimeout(5)
            conn, _ = listener.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        if not fds:
            raise BackendError("failed", "runc did not hand over the container's terminal")
        session.master = fds[0]
        os.set_blocking(session.master, False)
        self._set_size(session, session.cols, session.rows)
        session.pid = int(pid_file.read_text().strip())
        session.pidfd = os.pidfd_open(session.pid)

    # -- the terminal -------------------------------------------------------------------------------

    def _set_size(self, session: Session, cols: int, rows: int) -> None:
        session.cols, session.rows = cols, rows
        if session.master is not None:
            fcntl.ioctl(session.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def _pump(self, session: Session) -> None:
        """Terminal output to the recording, the tail and the attached client; the shell's exit ends it.

        While a send to the client is in progress the terminal is not read: a slow client slows the
        shell's output (the terminal's buffer fills and the writer blocks) instead of the agent's memory.
        """
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
                while (more := await self._read_once(session)) is True:
                    pass
                if more is False:
                    break
        except RecordingError as error:
            self._end_later(session, f"recording failed: {error}")
            return
        finally:
            loop.remove_reader(pidfd)
            if session.master is not None:
                loop.remove_reader(master)
        if exited.is_set() or more is False:
            session.exit_code = self._reap(session)
            self._end_later(session, "exited")

    def _end_later(self, session: Session, reason: str) -> None:
        """End from inside one of the session's own tasks (which ending cancels)."""
        task = asyncio.create_task(self.end(session, reason))
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def _read_once(self, session: Session) -> bool | None:
        """Read what the terminal has and pass it on: True when there may be more, None when it has
        nothing now, False at its end."""
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
                    self.detach(session, attachment)
        return True

    def _reap(self, session: Session) -> int | None:
        if session.pidfd is None:
            return None
        try:
            result = os.waitid(os.P_PIDFD, session.pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return None  # not adopted: the exit status went to someone else
        if result is None:
            return None
        return result.si_status if result.si_code == os.CLD_EXITED else 128 + result.si_status

    async def write_input(self, session: Session, data: bytes) -> None:
        session.last_input = time.monotonic()
        if self.ops.record_input:
            session.recorder.input(data)
        view = memoryview(data)
        while view and session.master is not None and not session.ending:
            try:
                written = os.write(session.master, view)
                view = view[written:]
            except BlockingIOError:
                await self._writable(session.master)
            except OSError:
                return

    async def _writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await asyncio.wait_for(ready, 5)
        finally:
            loop.remove_writer(fd)

    def resize(self, session: Session, cols: int, rows: int) -> None:
        if (cols, rows) != (session.cols, session.rows):
            self._set_size(session, cols, rows)
            session.recorder.resize(cols, rows)

    # -- attach and detach --------------------------------------------------------------------------

    async def attach(self, session: Session, attachment: Attachment, cols: int, rows: int) -> None:
        """Make `attachment` the session's client: hello, then the screen tail on a re-attach."""
        previous = session.attachment
        reattach = session.attached_once
        async with session.send_lock:
            self.resize(session, cols, rows)
            # What the shell printed before this attach (its first prompt, or the screen the dropped
            # connection last showed) is sent first, so the client starts from what the terminal shows.
            replay = session.replay() if session.tail else b""
            await attachment.send(
                proto.control(
                    "hello",
                    session=session.id,
                    recording=session.recorder.id,
                    expires_at=session.expires_at.isoformat().replace("+00:00", "Z"),
                    replayed=len(replay),
                    reattached=reattach,
                )
            )
            if replay:
                await attachment.send(proto.data(proto.STDOUT, replay))
            session.attachment = attachment
            session.attached_once = True
            session.detached_at = None
            session.state = OpsSessionState.attached
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous.close(proto.CLOSE_TAKEN_OVER, "attached from another connection")
        with contextlib.suppress(RecordingError):
            session.recorder.marker("re-attached" if reattach else "attached")
        self._audit_step(session, "ops.session.reattach" if reattach else "ops.session.attach", "ok")
        self._publish(session)

    def detach(self, session: Session, attachment: Attachment) -> None:
        """The attachment is gone (closed, dropped, or replaced): the session waits for a re-attach."""
        if session.attachment is not attachment or session.ending:
            return
        session.attachment = None
        session.detached_at = time.monotonic()
        session.state = OpsSessionState.detached
        with contextlib.suppress(RecordingError):
            session.recorder.marker("detached")
        self._audit_step(session, "ops.session.detach", f"ok: re-attach within {self.ops.grace} s or it ends")
        self._publish(session)

    def _audit_step(self, session: Session, action: str, outcome: str) -> None:
        audited.note(self.audit, session.owner, action, outcome, reason=session.reason, params={"session": session.id})

    # -- time limits --------------------------------------------------------------------------------

    async def _supervise(self, session: Session) -> None:
        """Once a second: expiry warnings, TTL, idle timeout, the re-attach grace period, recording sync."""
        last_sync = time.monotonic()
        while not session.ending:
            await asyncio.sleep(1)
            now = time.monotonic()
            left = (session.expires_at - _now()).total_seconds()
            reason = None
            if left <= 0:
                reason = "ttl"
            elif now - session.last_input > self.ops.idle_timeout:
                reason = "idle"
            elif session.detached_at is not None and now - session.detached_at > self.ops.grace:
                reason = "detached"
            if reason is not None:
                await self.end(session, reason)
                return
            for threshold in (self.ops.warn_before, 10):
                if left <= threshold and threshold not in session.warned:
                    session.warned.add(threshold)
                    await self._warn(session, int(left))
            if now - last_sync > SYNC_EVERY:
                last_sync = now
                try:
                    session.recorder.sync()
                except RecordingError as error:
                    await self.end(session, f"recording failed: {error}")
                    return

    async def _warn(self, session: Session, seconds_left: int) -> None:
        with contextlib.suppress(RecordingError):
            session.recorder.marker(f"expiring in {seconds_left} s")
        async with session.send_lock:
            if session.attachment is not None:
                with contextlib.suppress(Exception):
                    await session.attachment.send(proto.control("expiring", seconds_left=seconds_left))

    # -- ending -------------------------------------------------------------------------------------

    async def stop(self, session: Session, who: Identity, reason: str) -> None:
        """End a session on request (DELETE): the request is audited first, the end record follows."""
        audited.record(
            self.audit, who, "ops.session.stop", STARTED, reason=reason,
            params={"session": session.id, "owner": session.owner.actor}, otherwise="the session was not ended",
        )  # fmt: skip
        await self.end(session, "ended", who)

    async def end(self, session: Session, reason: str, who: Identity | None = None) -> None:
        """End the session (idempotent): kill, drain, seal, audit, tell the client, clean up."""
        if session.ending:
            await session.ended.wait()
            return
        session.ending = True
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()
        if who is not None:
            reason = f"{reason} by {who.actor}"
        await self._teardown(session, reason)
        async with session.send_lock:
            attachment, session.attachment = session.attachment, None
            if attachment is not None:
                with contextlib.suppress(Exception):
                    await attachment.send(proto.control("exit", code=session.exit_code, reason=reason))
                    await attachment.close(1000, f"session ended: {reason}"[:120])
        self.sessions.pop(session.id, None)
        self.recent.append(session)
        self._publish(session)
        await asyncio.to_thread(self.keep_reserve)  # once the disk has room again

    async def _teardown(self, session: Session, reason: str) -> None:
        await self._delete_container(session.container)
        if session.master is not None:
            # Whatever the shell printed last is part of the record.
            with contextlib.suppress(RecordingError):
                for _ in range(64):
                    if not await self._read_once(session):  # nothing more (None) or the end (False)
                        break
            os.close(session.master)
            session.master = None
        if session.exit_code is None:
            session.exit_code = self._reap(session)
        if session.pidfd is not None:
            os.close(session.pidfd)
            session.pidfd = None
        session.end_reason = reason
        session.state = OpsSessionState.ended
        seal: Seal | None = None
        problem = None
        try:
            seal = session.recorder.seal(reason)
        except (OSError, RecordingError) as error:
            problem = str(error)
        audited.note(
            self.audit,
            session.owner,
            "ops.session.end",
            "ok" if problem is None else f"failed: recording not sealed: {problem}",
            reason=session.reason,
            params={
                "session": session.id,
                "recording": session.recorder.id,
                "sha256": seal.sha256 if seal else None,
                "size": seal.size if seal else None,
                "exit_code": session.exit_code,
                "end_reason": reason,
                "seconds": round((_now() - session.created).total_seconds(), 1),
            },
        )
        shutil.rmtree(session.bundle, ignore_errors=True)
        session.ended.set()

    async def _delete_container(self, container: str) -> None:
        try:
            await run([*self._runc, "delete", "--force", container], RUNC_TIMEOUT, "remove the ops container")
        except BackendError as error:
            if "does not exist" not in error.detail and "not found" not in error.detail:
                log.warning("%s", error.detail)

    def _publish(self, session: Session) -> None:
        self.events.publish(EventKind.ops, {"session": session.model().model_dump(mode="json")})

    # -- reading ------------------------------------------------------------------------------------

    def find(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id) or next((s for s in self.recent if s.id == session_id), None)

    def open_sessions(self) -> list[OpsSession]:
        return [s.model() for s in self.sessions.values()]
