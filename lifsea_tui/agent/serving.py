"""How the agent is served: uvicorn with the agent's TLS, websocket settings and connection guards.

One place for the CLI and the tests, so what the tests exercise is what a node runs.
"""

from __future__ import annotations

import ssl
from typing import Any

import uvicorn

from lifsea_tui.agent.config import AgentConfig
from lifsea_tui.agent.limits import guarded_http
from lifsea_tui.api import ops as ops_protocol


def uvicorn_config(app: Any, config: AgentConfig, *, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=config.listen_host,
        port=config.listen_port,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        ssl_ca_certs=str(config.tls_client_ca) if config.tls_client_ca else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if config.tls_client_ca else ssl.CERT_NONE,
        http=guarded_http(config.limits),
        ws_ping_interval=ops_protocol.PING_INTERVAL,
        ws_ping_timeout=ops_protocol.PING_TIMEOUT,
        # The sans-I/O implementation: less work a frame than the legacy one (keystroke echo).
        ws="websockets-sansio",
        log_level=log_level,
        access_log=False,
        lifespan="on",
    )
