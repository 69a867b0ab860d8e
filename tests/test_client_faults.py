"""Dead, slow, TLS-failing, unauthorized and misbehaving nodes: each gets its own reason, none holds up the
others, and the console shows every one in its own row without a traceback."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from textual.widgets import DataTable

from lifsea_tui.api import routes
from lifsea_tui.api.rollouts import NodeRollout, NodeState, RolloutSpec
from lifsea_tui.client.fleet import BACKOFF_MAX, BACKOFF_START, HISTORY, Fleet, backoff
from lifsea_tui.client.node import NodeClient, NodeError, NodeTarget, Problem
from lifsea_tui.fleetd import steps
from lifsea_tui.lab import certs
from lifsea_tui.tui.app import LifseaApp
from tests.helpers import RunningAgent
from tests.misbehaving import MODES, MisbehavingNode

TIMEOUT = 1.5  # the console's per-node timeout in these tests (10 s by default)


@pytest.fixture
def bad_nodes(tmp_path: Path, agent: RunningAgent) -> Iterator[dict[str, NodeTarget]]:
    """The good agent plus one node per failure mode, all on loopback."""
    ca = agent.ca_file
    cert, key = certs.issue(agent.ca_file.parent, tmp_path / "bad", "bad")
    nodes = {mode: MisbehavingNode(mode, cert, key, slow_seconds=30) for mode in MODES}
    stranger_cert, stranger_key = certs.issue(tmp_path / "other-ca", tmp_path / "stranger", "stranger")
    nodes["tls"] = MisbehavingNode("garbage", stranger_cert, stranger_key)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    token = agent.tokens["operator"]
    targets = {
        mode: NodeTarget(name=mode, url=node.url, token=token, ca_file=ca, timeout=TIMEOUT)
        for mode, node in nodes.items()
    }
    targets["unreachable"] = NodeTarget(
        name="unreachable", url=f"https://127.0.0.1:{dead}", token=token, ca_file=ca, timeout=TIMEOUT
    )
    targets["good"] = NodeTarget(name="good", url=agent.url, token=token, ca_file=ca, timeout=TIMEOUT)
    yield targets
    for node in nodes.values():
        node.stop()


EXPECTED = {
    "slow": Problem.timeout,
    "garbage": Problem.bad_response,
    "server-error": Problem.server_error,
    "wrong-schema": Problem.bad_response,
    "unauthorized": Problem.unauthorized,
    "tls": Problem.tls,
    "unreachable": Problem.unreachable,
}


async def test_each_fault_has_its_reason(bad_nodes: dict[str, NodeTarget]) -> None:
    for mode, problem in EXPECTED.items():
        client = NodeClient(bad_nodes[mode])
        try:
            with pytest.raises(NodeError) as raised:
                await client.deployments()
            assert raised.value.problem == problem, (mode, str(raised.value))
        finally:
            await client.aclose()


async def test_fleet_refresh_is_not_held_up(bad_nodes: dict[str, NodeTarget]) -> None:
    fleet = Fleet(list(bad_nodes.values()))
    arrivals: list[tuple[str, float]] = []
    started = time.monotonic()
    await fleet.refresh(on_result=lambda s: arrivals.append((s.name, time.monotonic() - started)))
    await fleet.aclose()
    order = [name for name, _ in arrivals]
    assert order[-1] == "slow"  # the only one that waits for its timeout
    assert dict(arrivals)["good"] < TIMEOUT
    assert fleet.snapshots["good"].reachable and fleet.snapshots["good"].booted_version == "1.0"
    for mode, problem in EXPECTED.items():
        assert fleet.snapshots[mode].problem and fleet.snapshots[mode].problem.startswith(str(problem)), mode
    # A failing node backs off: an immediate second refresh leaves it alone, a forced one does not.
    arrivals.clear()
    fleet = Fleet(list(bad_nodes.values()))
    await fleet.refresh()
    await fleet.refresh(on_result=lambda s: arrivals.append((s.name, 0)))
    assert {name for name, _ in arrivals} == {"good"}
    await fleet.aclose()


async def test_a_gate_runbook_that_cannot_look_holds_the_verdict(bad_nodes: dict[str, NodeTarget]) -> None:
    """A rollout's runbook gate whose check cannot reach the node is no verdict at all: the node waits
    (its deadline decides) rather than pass as healthy. Before the node is touched, the same silence
    only means that runbook is not in the baseline."""
    spec = RolloutSpec(
        id="r1",
        target_version="2.0",
        nodes=["server-error"],
        max_unavailable=1,
        runbooks=["crash-loop"],
        reason="CHG-1",
        created_by="test",
        created_at=datetime.now(UTC),
    )
    node = NodeRollout(name="server-error", batch=0, state=NodeState.verifying, baseline_runbooks=[])
    client = NodeClient(bad_nodes["server-error"])
    try:
        with pytest.raises(steps.NotYet, match=r"runbook crash-loop: could not check: .*500"):
            await steps.runbook_gate(spec, node, client)
        assert await steps.fired_runbooks(spec, client) == []
    finally:
        await client.aclose()


async def test_event_stream_dropped_mid_stream(bad_nodes: dict[str, NodeTarget]) -> None:
    client = NodeClient(bad_nodes["ws-drop"])
    received = []
    with pytest.raises(NodeError) as raised:
        async for event in client.events():
            received.append(event)
    await client.aclose()
    assert received and received[0].kind == "hello"
    assert raised.value.problem == Problem.unreachable and "closed" in raised.value.detail


async def test_console_shows_every_fault_in_its_row(
    bad_nodes: dict[str, NodeTarget], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    app = LifseaApp(Fleet(list(bad_nodes.values())), refresh_interval=1.0)
    async with app.run_test(size=(160, 40)) as pilot:
        table = app.screen.query_one("#nodes", DataTable)
        deadline = time.monotonic() + 10
        # While the slow node hangs, the rest are shown and keys still work.
        while not app.fleet.snapshots["good"].reachable:
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        started = time.monotonic()
        await pilot.press("o")
        await pilot.pause()
        assert time.monotonic() - started < 0.5
        while not app.fleet.snapshots["slow"].problem:
            assert time.monotonic() < deadline
            await pilot.pause(0.1)
        await pilot.pause(0.3)
        cells = {str(table.get_row(name)[1]): str(getattr(table.get_row(name)[2], "plain", "")) for name in bad_nodes}
        assert "ok" in cells["good"]
        for mode, problem in EXPECTED.items():
            assert str(problem) in cells[mode], (mode, cells[mode])
        assert "Traceback" not in "".join(cells.values())
    assert app.return_code in (None, 0)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "[[nodes]]\nname = 'a'\n",
        "[[nodes]]\nname = 'a'\nurl = 'ftp://x'\ntoken = 't'\n",
        "[[nodes]]\nname = 'a'\nurl = 'https://x'\ntoken_env = 'LIFSEA_NO_SUCH_VARIABLE'\n",
        "[[nodes]]\nname = 'a'\nurl = 'https://x'\ntoken_file = 'missing.token'\n",
        "[[nodes]]\nname = 'a'\nurl = 'https://x'\ntoken = 't'\n"
        "[[nodes]]\nname = 'a'\nurl = 'https://y'\ntoken = 't'\n",
        "not toml [",
    ],
)
def test_bad_inventory_is_a_clear_error(tmp_path: Path, content: str) -> None:
    from lifsea_tui.client import inventory

    path = tmp_path / "nodes.toml"
    path.write_text(content)
    with pytest.raises(inventory.InventoryError) as raised:
        inventory.from_file(path)
    assert str(path) in str(raised.value)


def test_inventory_reads_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lifsea_tui.client import inventory

    (tmp_path / "a.token").write_text("secret-a\n")
    (tmp_path / "a.token").chmod(0o600)
    monkeypatch.setenv("LIFSEA_TEST_TOKEN", "secret-b")
    path = tmp_path / "nodes.toml"
    path.write_text(
        "[[nodes]]\nname = 'a'\nurl = 'https://a:7443/'\ntoken_file = 'a.token'\ntimeout = 3\n"
        "[[nodes]]\nname = 'b'\nurl = 'https://b:7443'\ntoken_env = 'LIFSEA_TEST_TOKEN'\n"
    )
    a, b = inventory.from_file(path)
    assert (a.name, a.url, a.token, a.timeout) == ("a", "https://a:7443", "secret-a", 3.0)
    assert (b.token, b.timeout) == ("secret-b", 10.0)


def test_a_token_file_others_can_read_is_refused_naming_it(tmp_path: Path) -> None:
    from lifsea_tui.client import inventory

    token = tmp_path / "a.token"
    token.write_text("secret-a\n")
    path = tmp_path / "nodes.toml"
    path.write_text("[[nodes]]\nname = 'a'\nurl = 'https://a:7443'\ntoken_file = 'a.token'\n")
    for mode in (0o644, 0o640, 0o604, 0o660):
        token.chmod(mode)
        with pytest.raises(inventory.InventoryError) as raised:
            inventory.from_file(path)
        said = str(raised.value)
        assert str(token) in said and f"mode {mode:o}" in said and "chmod 600" in said, said
    token.chmod(0o400)
    assert inventory.from_file(path)[0].token == "secret-a"


def test_cli_reports_a_bad_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lifsea_tui.tui.cli import main

    assert main(["--inventory", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_backoff_doubles_to_its_ceiling_and_is_spread() -> None:
    """A fleet that went away together is not retried together: each wait is its doubling step
    stretched by up to half again, never shorter than the step, never past the maximum."""
    for failures in range(1, 12):
        step = min(BACKOFF_MAX, BACKOFF_START * 2 ** (failures - 1))
        delays = [backoff(failures) for _ in range(200)]
        assert all(step <= d <= min(BACKOFF_MAX, step * 1.5) for d in delays), (failures, min(delays), max(delays))
        if step * 1.5 <= BACKOFF_MAX:
            assert max(delays) - min(delays) > step / 8  # spread, not lockstep
    assert backoff(0) >= BACKOFF_START and backoff(10_000) == BACKOFF_MAX


async def test_event_streams_open_a_few_at_a_time_and_never_hold_up_the_refresh(
    bad_nodes: dict[str, NodeTarget],
) -> None:
    """Nodes that take a connection and never answer (a black hole: no TLS handshake) are opened at most
    the fleet's opening bound at a time, and while they hang, a refresh of the good node goes through."""
    open_now: set[asyncio.StreamWriter] = set()
    most = 0

    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal most
        open_now.add(writer)
        most = max(most, len(open_now))
        try:
            await reader.read()
        finally:
            open_now.discard(writer)
            writer.close()

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    good = bad_nodes["good"]
    holes = [
        NodeTarget(name=f"hole{i}", url=f"https://127.0.0.1:{port}", token="", ca_file=good.ca_file, timeout=TIMEOUT)
        for i in range(6)
    ]
    fleet = Fleet([*holes, good], concurrency=4)
    following = asyncio.create_task(fleet.follow(lambda snapshot: None))
    try:
        while len(open_now) < 2:
            await asyncio.sleep(0.02)
        # Every slot for opening is taken by a hole; the refresh has its own.
        snapshot = await asyncio.wait_for(fleet.refresh_node("good"), TIMEOUT / 2)
        assert snapshot.reachable
        await asyncio.sleep(TIMEOUT * 1.5)  # the first holes time out, the next ones are opened
        assert most == 2
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await fleet.aclose()
        server.close()


async def test_an_answer_leaves_nothing_for_the_collector(bad_nodes: dict[str, NodeTarget]) -> None:
    """Each answer is freed when its last reference goes, error answers too: a 1,000-node refresh once left
    ~37,000 objects in reference cycles, and the collections they caused were the console's longest pauses."""
    client = NodeClient(bad_nodes["good"])
    failing = NodeClient(bad_nodes["server-error"])
    try:
        await client.summary()  # connected, and everything a first request builds once is built
        with pytest.raises(NodeError):
            await failing.summary()
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(5):
                await client.summary()
                await client.node()
                with pytest.raises(NodeError):
                    await failing.summary()
            gc.collect()
            # The client's own (the agent serving these answers runs in this process, with garbage of its own).
            left = [
                type(thing).__qualname__
                for thing in gc.garbage
                if type(thing).__module__.split(".")[0] in ("httpx", "httpcore", "lifsea_tui")
            ]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert left == []
    finally:
        await client.aclose()
        await failing.aclose()


async def test_the_sparkline_history_keeps_the_last_answers_and_is_replaced_whole(
    bad_nodes: dict[str, NodeTarget],
) -> None:
    fleet = Fleet([bad_nodes["good"]])
    try:
        first = await fleet.refresh_node("good")
        kept = list(first.latency_history)
        for _ in range(HISTORY + 4):
            last = await fleet.refresh_node("good")
        assert len(kept) == 1 and list(first.latency_history) == kept  # an earlier snapshot never changes
        assert len(last.latency_history) == HISTORY
        assert last.latency_ms is not None and abs(last.latency_history[-1] - last.latency_ms) < 1e-3
        assert len(last.load_history) == HISTORY  # the agent reports its load with every answer
    finally:
        await fleet.aclose()


async def test_a_connection_idle_between_two_default_refreshes_is_used_again(
    bad_nodes: dict[str, NodeTarget],
) -> None:
    """The console refreshes every 5 s by default: the connection it used last time must still be open
    (no new TLS handshake), on both sides, after 6 s of quiet."""
    target = bad_nodes["good"]
    client = NodeClient(target)
    try:
        await client.summary()
        handshakes = target.tls().session_stats()["connect"]
        await asyncio.sleep(6)
        await client.summary()
        assert target.tls().session_stats()["connect"] == handshakes
    finally:
        await client.aclose()


def test_names_from_a_node_stay_one_path_segment() -> None:
    """A unit, session or recording name comes from a node: filled into a route it is percent-encoded
    whole, so `x/../../reboot` cannot become another route and a control character cannot make the
    URL invalid (it raised httpx.InvalidURL in the crash-loop check, and the Debug screen waited)."""
    assert routes.path(routes.SERVICE_ACTION, unit="x/../../reboot", action="start") == (
        "/v1/services/x%2F..%2F..%2Freboot/start"
    )
    assert routes.path(routes.SERVICE, unit="getty@tty1.service\x1b]52;c;") == (
        "/v1/services/getty%40tty1.service%1B%5D52%3Bc%3B"
    )
    assert routes.path(routes.OPS_ATTACH, session_id="a?b#c") == "/v1/ops/sessions/a%3Fb%23c/attach"
