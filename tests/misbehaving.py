"""Nodes that misbehave, served for real over TLS on loopback.

A real agent does not send garbage or hang on purpose, so these stand in for broken nodes, proxies and
middleboxes: each is a real HTTPS (and websocket) server whose answers are wrong in one chosen way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.helpers import serve

MODES = ("slow", "garbage", "server-error", "wrong-schema", "unauthorized", "ws-drop")


def make_app(mode: str, slow_seconds: float) -> Starlette:
    async def answer(request: Request) -> Response:
        if mode == "slow":
            await asyncio.sleep(slow_seconds)
            return JSONResponse({})
        if mode == "garbage":
            return PlainTextResponse("<<<\x00 not json at all", media_type="application/json")
        if mode == "server-error":
            return PlainTextResponse("<html>Internal Server Error</html>", status_code=500)
        if mode == "wrong-schema":
            return JSONResponse({"deployments": "many", "name": 7})
        if mode == "unauthorized":
            return JSONResponse({"error": "unauthorized", "detail": "unknown token"}, status_code=401)
        return JSONResponse({"error": "not_found", "detail": "nothing here"}, status_code=404)

    async def events(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"kind": "hello", "time": "2026-12-02T03:00:00Z", "data": {"node": "dropper"}})
        await asyncio.sleep(0.2)
        raise RuntimeError("the node's event stream breaks mid-stream")  # the server closes with 1011

    return Starlette(
        routes=[Route("/{path:path}", answer, methods=["GET", "POST"]), WebSocketRoute("/v1/events", events)]
    )


class MisbehavingNode:
    def __init__(self, mode: str, cert: Path, key: Path, slow_seconds: float = 30.0) -> None:
        self.mode = mode
        self.served = serve(
            uvicorn.Config(
                make_app(mode, slow_seconds),
                ssl_certfile=str(cert),
                ssl_keyfile=str(key),
                log_level="critical",
                lifespan="off",
            )
        )
        self.url = self.served.url

    def stop(self) -> None:
        self.served.stop()
