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

A little over 500 lines: the session's whole life (start, watch, the one ending) is kept in one place
so that every way a session ends visibly goes through the same steps; the runtime (runtime.py), the
terminal pump (terminal.py), the access levels (access.py) and the session record (session.py) are
modules of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lifsea_tui.agent import audited
from lifsea_tui.agent.audit import STARTED, AuditLog
from lifsea_tui.agent.auth import Identity
from lifsea_tui.agent.config import AgentConfig
from lifsea_tui.agent.errors import ApiError
from lifsea_tui.agent.events import EventHub
from lifsea_tui.agent.ops import access, terminal
from lifsea_tui.agent.ops.runtime import CONTAINER_PREFIX, Runtime, become_subreaper
from lifsea_tui.agent.ops.session import Attachment, Session
from lifsea_tui.agent.ostree import OstreeBackend
from lifsea_tui.agent.recording import Recorder, RecordingError, Seal, seal_interrupted
from lifsea_tui.api import OpsChanged, OpsSession, OpsSessionRequest, OpsSessionState
from lifsea_tui.api import ops as proto

log = logging.getLogger("lifsea.agent.ops")

RESERVE_NAME = ".reserve"  # not a recording: see OpsManager.keep_reserve
SHELL = ["/bin/bash", "-l"]
TERM = "xterm-256color"
SYNC_EVERY = 2.0
RECENT_ENDED = 50
LIVE_KEEP = 120.0  # seconds a sealed recording's newest bytes stay in memory for live readers


def _now() -> datetime:
    return datetime.now(UTC)


class OpsManager:
    def __init__(self, config: AgentConfig, audit: AuditLog, events: EventHub, ostree: OstreeBackend) -> None:
        self.config = config
        self.ops = config.ops
        self.audit = audit
        self.events = events
        self.ostree = ostree
        self.sessions: dict[str, Session] = {}
        self.recent: deque[Session] = deque(maxlen=RECENT_ENDED)
        self.starting: dict[str, Recorder] = {}  # sessions whose container is being made
        self._endings: set[asyncio.Task[None]] = set()
        self.runtime = Runtime(self.ops, config.sysroot / "ostree" / "repo", config.pull_timeout)
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
        self._runc_problem = await self.runtime.version_problem()
        if not self._subreaper:
            become_subreaper()
            self._subreaper = True
        await asyncio.to_thread(self.keep_reserve)
        known: set[str] = set()
        if self.sessions_dir.is_dir():
            for bundle in sorted(self.sessions_dir.iterdir()):
                known.add(CONTAINER_PREFIX + bundle.name)
                await self._recover(bundle)
        for container in await self.runtime.containers():
            if container not in known:
                await self.runtime.delete(container)

    async def _recover(self, bundle: Path) -> None:
        try:
            meta = json.loads((bundle / "session.json").read_text())
        except (OSError, ValueError):
            meta = {"id": bundle.name}
        session_id = str(meta.get("id", bundle.name))
        await self.runtime.delete(CONTAINER_PREFIX + session_id)
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
        # Its recording can be read live from its first byte, while the container is still being made:
        # the start record is in the log already, and a copy taken off the node follows it from there.
        self.starting[session_id] = recorder
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
        finally:
            self.starting.pop(session_id, None)
        session.state = OpsSessionState.detached
        session.detached_at = time.monotonic()
        self.sessions[session_id] = session
        pump = terminal.pump(
            session, lambda reason: self._end_later(session, reason), lambda a: self.detach(session, a)
        )
        session.tasks = [asyncio.create_task(pump), asyncio.create_task(self._supervise(session))]
        self._publish(session)
        return session

    async def _launch(self, session: Session) -> None:
        image_root = await self.runtime.image_root()
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
        session.master, session.pid = await self.runtime.start(spec, session.bundle, session.container)
        terminal.set_size(session, session.cols, session.rows)
        session.pidfd = os.pidfd_open(session.pid)

    # -- the terminal -------------------------------------------------------------------------------

    def _end_later(self, session: Session, reason: str) -> None:
        """End from inside one of the session's own tasks (which ending cancels)."""
        task = asyncio.create_task(self.end(session, reason))
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def write_input(self, session: Session, data: bytes) -> None:
        await terminal.write_input(session, data, self.ops.record_input)

    def resize(self, session: Session, cols: int, rows: int) -> None:
        terminal.resize(session, cols, rows)

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
        # What was recorded stays readable live a little longer, for a copy that was a pass behind.
        asyncio.get_running_loop().call_later(LIVE_KEEP, session.recorder.release)
        self._publish(session)
        await asyncio.to_thread(self.keep_reserve)  # once the disk has room again

    async def _teardown(self, session: Session, reason: str) -> None:
        await self.runtime.delete(session.container)
        if session.master is not None:
            with contextlib.suppress(RecordingError):
                await terminal.drain(session, lambda a: self.detach(session, a))
            os.close(session.master)
            session.master = None
        if session.exit_code is None:
            session.exit_code = terminal.reap(session)
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
        if problem is not None:
            outcome = f"failed: recording not sealed: {problem}"
        elif seal is not None and seal.on_disk is not None:
            outcome = f"failed: the recording file was changed during the session (now SHA-256 {seal.on_disk})"
        else:
            outcome = "ok"
        audited.note(
            self.audit,
            session.owner,
            "ops.session.end",
            outcome,
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

    def _publish(self, session: Session) -> None:
        self.events.publish(OpsChanged(session=session.model()))

    # -- reading ------------------------------------------------------------------------------------

    def find(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id) or next((s for s in self.recent if s.id == session_id), None)

    def recorder(self, recording_id: str) -> Recorder | None:
        """A recording still in memory: its session starting, open, or ended a little while ago."""
        session = self.find(recording_id)
        return session.recorder if session is not None else self.starting.get(recording_id)

    def open_sessions(self) -> list[OpsSession]:
        return [s.model() for s in self.sessions.values()]
