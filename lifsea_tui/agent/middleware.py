"""What every HTTP request passes through first: the body limit, and its count and latency for /metrics."""

from __future__ import annotations

import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lifsea_tui.agent.agent import Agent
from lifsea_tui.agent.auth import RULES
from lifsea_tui.agent.errors import ApiError


class LimitsMiddleware:
    """Refuses oversize bodies before they are read, and counts and times requests by route template."""

    def __init__(self, app: ASGIApp, agent: Agent) -> None:
        self.app = app
        self.agent = agent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.agent.config.max_body_bytes
        status = 500
        began = time.perf_counter()

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            declared = next((int(v) for k, v in scope["headers"] if k == b"content-length"), 0)
        except ValueError:
            declared = limit + 1
        if declared > limit:
            response = JSONResponse({"error": "too_large", "detail": f"body over {limit} bytes"}, status_code=413)
            await response(scope, receive, counting_send)
        else:
            seen = 0

            async def limited_receive() -> Message:
                nonlocal seen
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ApiError("too_large", f"body over {limit} bytes")
                return message

            await self.app(scope, limited_receive, counting_send)
        # The router put the matched route in the scope: count by its template (bounded), never the path.
        template = getattr(scope.get("route"), "path", None)
        route = template if isinstance(template, str) and (scope["method"], template) in RULES else "other"
        self.agent.metrics.observe(scope["method"], route, status, time.perf_counter() - began)
