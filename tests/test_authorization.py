"""One authorization point, proved from outside: every route of the rules table called over real TLS
with no token, a wrong token and each role, HTTP and websocket alike; the answer must follow the table.
A route whose check was forgotten, or a rule that does not match its route, fails here."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
import websockets

from lifsea_tui.agent.auth import PUBLIC, RULES
from lifsea_tui.api import Role, routes
from tests.helpers import RunningAgent

# Values for the templates' parameters: well-formed, so that what answers is the check, not a 400.
PARAMS = {"unit": "cron.service", "action": "restart", "session_id": "0" * 16, "recording_id": "0" * 16}
BODIES = {"POST": {"reason": "INC-12 who may"}, "DELETE": {"reason": "INC-12 who may"}}


def concrete(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: PARAMS[match.group(1)], template)


def http_status(agent: RunningAgent, method: str, template: str, headers: dict[str, str]) -> int:
    with httpx.Client(base_url=agent.url, verify=agent.ssl_context(), timeout=30) as http:
        response = http.request(method, concrete(template), headers=headers, json=BODIES.get(method))
    return response.status_code


async def ws_close_code(agent: RunningAgent, template: str, headers: dict[str, str]) -> int | None:
    url = agent.url.replace("https://", "wss://") + concrete(template)
    async with websockets.connect(
        url,
        ssl=agent.ssl_context(),
        additional_headers=headers,
        subprotocols=["lifsea.ops.v1"],  # type: ignore[list-item]
    ) as socket:
        try:
            await asyncio.wait_for(socket.recv(), 3)
        except websockets.ConnectionClosed:
            return socket.close_code
        except TimeoutError:
            return None  # served and waiting: let in
        await socket.close()
        return None  # it answered: let in


@pytest.mark.parametrize("rule", sorted(RULES, key=str), ids=lambda rule: f"{rule[0]} {rule[1]}")
def test_every_rule_is_enforced_for_every_caller(agent: RunningAgent, rule: tuple[str, str]) -> None:
    method, template = rule
    allowed = RULES[rule]
    callers: dict[str, dict[str, str]] = {
        "no token": {},
        "wrong token": {"Authorization": "Bearer not-a-token"},
        **{role.value: agent.headers(role.value) for role in Role},
    }
    for who, headers in callers.items():
        role = Role(who) if who in Role.__members__ else None
        let_in = allowed is PUBLIC or (role is not None and role in allowed)
        if method == "WS":
            code = asyncio.run(ws_close_code(agent, template, headers))
            if let_in:
                assert code not in (routes.CLOSE_UNAUTHORIZED, routes.CLOSE_FORBIDDEN), (who, template, code)
            else:
                assert code == (routes.CLOSE_UNAUTHORIZED if role is None else routes.CLOSE_FORBIDDEN), (who, code)
        else:
            status = http_status(agent, method, template, headers)
            if let_in:
                assert status not in (401, 403), (who, method, template, status)
            else:
                assert status == (401 if role is None else 403), (who, method, template, status)


def test_refusals_of_templated_routes_are_audited_and_counted_by_template(agent: RunningAgent) -> None:
    """A reader's refused restart and an operator's refused session kill used to leave no record: the
    lookup went by the raw path, and templated routes are keyed by their template."""
    with httpx.Client(base_url=agent.url, verify=agent.ssl_context(), timeout=30) as http:
        refused = http.post(
            "/v1/services/cron.service/restart", json={"reason": "INC-12"}, headers=agent.headers("reader")
        )
        killed = http.request(
            "DELETE", f"/v1/ops/sessions/{'a' * 16}", json={"reason": "INC-12"}, headers=agent.headers("operator")
        )
        records = http.get(routes.AUDIT, params={"limit": 1000}, headers=agent.headers("auditor")).json()["records"]
        metrics = http.get(routes.METRICS, headers=agent.headers("reader")).text
    assert refused.status_code == 403 and killed.status_code == 403
    mine = [(r["actor"], r["params"].get("route"), r["outcome"].split(":")[0]) for r in records]
    assert ("reader-user", "POST /v1/services/{unit}/{action}", "refused") in mine
    assert ("operator-user", "DELETE /v1/ops/sessions/{session_id}", "refused") in mine
    assert 'route="/v1/services/{unit}/{action}",status="403"' in metrics
    assert 'route="/v1/ops/sessions/{session_id}",status="403"' in metrics
