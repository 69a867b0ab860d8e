"""What callers may cost the node: refusals written once a minute, streams held at once, connections.

An anonymous caller must not be able to spend the node's disk: each refusal of a caller with no valid
token used to append an fsync'd audit record (300 anonymous POSTs, 300 records in 0.4 s), and a /var
filled that way makes the audit log refuse every action, break-glass included. They are counted in
memory and written as one summary record a minute. Refusals of callers with a valid token are still
recorded one by one: they are accountable, and who tried what is the point of the log.

A log follow runs a journalctl and an event stream holds a queue, so each caller, and everyone
together, may hold only so many. Connections are capped in total and per peer address, and a client
that has not finished sending its request headers within a few seconds is disconnected (a slow-header
client otherwise holds its socket for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from asyncio import sslproto
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lifsea_tui.agent import audited
from lifsea_tui.agent import tls as tls_module
from lifsea_tui.agent.audit import AuditLog
from lifsea_tui.agent.config import LimitsConfig

PEERS_KEPT = 50  # distinct peer addresses named in a summary; the rest are counted together


class SmallBufferSSLProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol, reading at most 32 KiB at a time (two full TLS records). Its default
    allocates and zeroes a 256 KiB read buffer for every connection, for requests of a few hundred bytes:
    a quarter of a megabyte per console, controller and collector connected, and per connection an
    anonymous caller opens up to the limit."""

    max_size = 32 * 1024


class RefusalTally:
    """Refusals counted in memory and written to the audit log as one record per interval."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._reset()

    def _reset(self) -> None:
        self.total = 0
        self.noted: set[tuple[str, str]] = set()
        self.by_what: Counter[str] = Counter()
        self.by_peer: Counter[str] = Counter()
        self.by_actor: Counter[str] = Counter()
        self.first: float | None = None
        self.last: float | None = None

    def count(self, what: str, peer: str | None, actor: str = "unauthenticated") -> None:
        """One refusal: `what` names a route template or a limit, never raw caller input (bounded keys)."""
        now = time.time()
        self.total += 1
        self.by_what[what] += 1
        self.by_actor[actor] += 1
        key = peer or "unknown"
        if key in self.by_peer or len(self.by_peer) < PEERS_KEPT:
            self.by_peer[key] += 1
        else:
            self.by_peer["other"] += 1
        self.first = self.first or now
        self.last = now

    def flush(self) -> None:
        if not self.total:
            return
        params: dict[str, Any] = {
            "count": self.total,
            "by_what": dict(self.by_what.most_common(20)),
            "by_actor": dict(self.by_actor.most_common(20)),
            "by_peer": dict(self.by_peer.most_common(20)),
            "first": self.first,
            "last": self.last,
        }
        outcome = f"refused: {self.total} requests since the last summary (counted, not recorded one by one)"
        if audited.note(self.audit, audited.AGENT, "refusals.summary", outcome, params=params):
            self._reset()  # otherwise kept, and tried again at the next interval

    def first_in_interval(self, actor: str, what: str) -> bool:
        """True the first time `actor` is refused `what` since the last summary (write that one at once)."""
        if (actor, what) in self.noted:
            return False
        self.noted.add((actor, what))
        return True

    async def run(self, interval: float) -> None:
        try:
            while True:
                await asyncio.sleep(interval)
                self.flush()
        finally:
            self.flush()  # at shutdown: nothing counted is lost


class LimitReached(Exception):
    pass


class StreamLimits:
    """Long-lived streams held at once, per caller and in all, for one kind of stream."""

    def __init__(self, kind: str, per_caller: int, total: int) -> None:
        self.kind = kind
        self.per_caller = per_caller
        self.total = total
        self.held: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, actor: str) -> Iterator[None]:
        if self.held[actor] >= self.per_caller:
            raise LimitReached(f"{actor} holds {self.held[actor]} {self.kind} (at most {self.per_caller} a caller)")
        if sum(self.held.values()) >= self.total:
            raise LimitReached(f"the node serves {self.total} {self.kind} already (its limit)")
        self.held[actor] += 1
        try:
            yield
        finally:
            self.held[actor] -= 1
            if not self.held[actor]:
                del self.held[actor]


def guarded_http(
    limits: LimitsConfig,
    tls: ssl.SSLContext | None = None,
    on_refused: Callable[[str, str | None], None] = lambda what, peer: None,
) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol with a connection cap (total and per peer) and a header-read deadline;
    with `tls`, the handshake done here, each refused one reported to `on_refused` (see tls.py)."""
    handshaking: Counter[str] = Counter()  # connections in their TLS handshake, by peer address

    class GuardedHttp(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _tls_started = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if tls is not None and not self._tls_started:
                self._start_tls(transport)  # this protocol's connection_made comes again, with TLS up
                return
            super().connection_made(transport)
            peer = self.client[0] if self.client else None
            same_peer = sum(1 for c in self.connections if (seen := getattr(c, "client", None)) and seen[0] == peer)
            if len(self.connections) > limits.connections or same_peer > limits.connections_per_peer:
                transport.abort()
                return
            if tls is not None:
                self.app = tls_module.with_tls(self.app, tls_module.extension(transport.get_extra_info("ssl_object")))
            self._start_header_timer()

        def _start_tls(self, raw: asyncio.Transport) -> None:
            """What asyncio's server does for ssl= (an SSLProtocol between the socket and this
            protocol), done here so that the handshake's failure is heard. Synchronously: the socket is
            read from the next turn of the loop, and its first bytes must reach the SSLProtocol."""
            self._tls_started = True
            peername = raw.get_extra_info("peername")
            peer = str(peername[0]) if peername else "unknown"
            if sum(handshaking.values()) >= limits.connections or handshaking[peer] >= limits.connections_per_peer:
                raw.abort()
                return
            handshaking[peer] += 1
            done: asyncio.Future[None] = self.loop.create_future()
            assert tls is not None  # called only when the server speaks TLS
            secure = SmallBufferSSLProtocol(
                self.loop, self, tls, done, server_side=True,
                ssl_handshake_timeout=limits.header_timeout,  # type: ignore[arg-type]  # seconds; typeshed says int
            )  # fmt: skip
            raw.set_protocol(secure)
            secure.connection_made(raw)

            def finished(future: asyncio.Future[None]) -> None:
                handshaking[peer] -= 1
                if not handshaking[peer]:
                    del handshaking[peer]
                error = None if future.cancelled() else future.exception()
                if error is not None and tls_module.refused(error):
                    on_refused(tls_module.refusal_reason(error), peer)

            done.add_done_callback(finished)

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(limits.header_timeout, self._headers_too_slow)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._start_header_timer()

        def on_headers_complete(self) -> None:
            self._stop_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

    return GuardedHttp
