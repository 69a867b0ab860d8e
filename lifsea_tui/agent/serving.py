"""How the agent is served: uvicorn with the agent's TLS, websocket settings and connection guards.

One place for the CLI and the tests, so what the tests exercise is what a node runs.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from lifsea_tui.agent import tls
from lifsea_tui.agent.config import AgentConfig
from lifsea_tui.agent.limits import guarded_http
from lifsea_tui.api import ops as ops_protocol

KEEP_ALIVE_SECONDS = 75


def uvicorn_config(app: Any, config: AgentConfig, *, log_level: str = "warning") -> uvicorn.Config:
    """uvicorn for `app`: plain sockets, with TLS started by the agent's own protocol (tls.py), so that
    refused handshakes reach the audit log's refusal summary and the app sees client certificates."""
    agent = getattr(getattr(app, "state", None), "agent", None)
    return uvicorn.Config(
        app,
        host=config.listen_host,
        port=config.listen_port,
        http=guarded_http(
            config.limits,
            tls.server_context(config),
            on_refused=(lambda what, peer: agent.refusals.count(what, peer, actor="tls")) if agent else lambda *_: None,
        ),
        # Idle connections are kept past the clients' own keep-alive (client/node.py, 60 s), so that they
        # close them; the connection limits bound how many anyone may hold.
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        ws_ping_interval=ops_protocol.PING_INTERVAL,
        ws_ping_timeout=ops_protocol.PING_TIMEOUT,
        # The sans-I/O implementation: less work a frame than the legacy one (keystroke echo).
        ws=tls.TlsWebSocket,
        log_level=log_level,
        access_log=False,
        lifespan="on",
    )
