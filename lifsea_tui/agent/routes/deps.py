"""What handlers take: the agent, and the caller that `authorize` already let in."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from lifsea_tui.agent.agent import Agent
from lifsea_tui.agent.auth import Identity
from lifsea_tui.agent.refusals import agent_of
from lifsea_tui.api import ErrorBody


def caller(conn: HTTPConnection) -> Identity:
    identity: Identity = conn.state.identity
    return identity


AgentDep = Annotated[Agent, Depends(agent_of)]
Caller = Annotated[Identity, Depends(caller)]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "malformed request",
        401: "no or unknown token",
        403: "the caller's role may not do this",
        413: "request body too large",
        503: "a backend of the node is unavailable",
    }.items()
}
ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"model": ErrorBody, "description": "the node is in the wrong state for this"},
    423: {"model": ErrorBody, "description": "another operation is in progress"},
    502: {"model": ErrorBody, "description": "the backend command failed"},
}
