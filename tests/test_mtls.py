"""Client certificates as identities: an agent that requires them maps a certificate to a name and a
role on HTTP and websocket routes alike, names it in the audit log, refuses (and counts) certificates
from another CA, expired ones and unmapped ones, takes new mappings on SIGHUP, and the console's
inventory presents one. Real TLS on loopback, a real agent process."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time
from pathlib import Path

import httpx
import pytest

from lifsea_tui.agent.config import ConfigError, load
from lifsea_tui.api import ActionRequest, DebugRecord, routes
from lifsea_tui.api.models import DebugEvent
from lifsea_tui.client.inventory import InventoryError, parse
from lifsea_tui.client.node import NodeClient, NodeError, NodeTarget
from lifsea_tui.lab import certs
from tests.helpers import TinyNode, kill_agent, serve_agent, write_agent_config

CLIENTS = """
[[clients]]
name = "alice"
role = "operator"
subject = "CN=alice"

[[clients]]
name = "fleetd"
role = "reader"
san = "DNS:fleetd.lab"
"""
MALLORY = '\n[[clients]]\nname = "mallory"\nrole = "reader"\nsubject = "CN=mallory"\n'


def walk(summary: str) -> DebugRecord:
    return DebugRecord(walk="0123456789abcdef", runbook="crash-loop", event=DebugEvent.start, summary=summary)


class Caller:
    """Certificates for the agent's client CA (and one CA it does not know)."""

    def __init__(self, base: Path, server_ca: Path) -> None:
        self.base, self.server_ca = base, server_ca
        self.client_ca = base / "client-ca"

    def cert(self, name: str, *, days: float = 30, ca: str = "client-ca") -> tuple[Path, Path]:
        return certs.issue(self.base / ca, self.base / f"{ca}-{name}-{days}", name, client=True, days=days)

    def tls(self, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.server_ca))
        if cert is not None:
            context.load_cert_chain(*cert)
        return context


@pytest.fixture
def mtls(tmp_path: Path, tiny_node: TinyNode):
    config, info = write_agent_config(tmp_path / "agent", host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    caller = Caller(tmp_path / "pki", info["ca"])
    caller.cert("bootstrap")  # makes the client CA
    text = config.read_text().replace("[tls]\n", f'[tls]\nclient_ca = "{caller.client_ca / "ca.pem"}"\n')
    config.write_text(text + CLIENTS + "\n[limits]\nrefusal_summary_seconds = 0.5\n")
    proc = serve_agent(config, info, caller.tls(caller.cert("alice")))
    yield config, info, caller, proc
    kill_agent(proc)


async def audit_records(client: NodeClient) -> list:
    return (await client.audit(limit=200)).records


async def test_certificates_name_callers_and_the_wrong_ones_are_refused_and_counted(mtls) -> None:
    config, info, caller, proc = mtls
    url = info["url"]
    alice, fleetd, mallory = caller.cert("alice"), caller.cert("fleetd.lab"), caller.cert("mallory")
    stranger = caller.cert("alice", ca="other-ca")  # the same name, from a CA the agent does not trust
    expired = caller.cert("alice", days=-2)

    def target(cert: tuple[Path, Path], token: str = "") -> NodeTarget:
        return NodeTarget("tiny", url, token, ca_file=info["ca"], timeout=5, client_cert=cert[0], client_key=cert[1])

    as_alice = NodeClient(target(alice))
    try:
        # A mapped certificate acts with its role, over HTTP and websockets, and the log names it.
        assert (await as_alice.node()).name == "tiny"
        done = await as_alice.debug_record(walk("walk started by a certificate"))
        record = next(r for r in await audit_records(as_alice) if r.seq == done.audit_seq)
        assert (record.actor, record.role) == ("alice", "operator")
        events = as_alice.events()
        assert (await anext(events)).kind == "hello"
        await events.aclose()

        # By subjectAltName, with a reader's role: an operator's route is refused, and recorded by name.
        as_fleetd = NodeClient(target(fleetd))
        assert (await as_fleetd.node()).name == "tiny"
        with pytest.raises(NodeError, match="fleetd has role reader"):
            await as_fleetd.service_action("cron.service", "restart", ActionRequest(reason="not mine to do"))
        await as_fleetd.aclose()
        refused = [r for r in await audit_records(as_alice) if r.actor == "fleetd"]
        assert refused and refused[-1].outcome.startswith("refused: fleetd has role reader")

        # A token, when sent, names the caller even over a mapped certificate.
        with_token = NodeClient(target(alice, info["tokens"]["reader"]))
        done = await with_token.debug_record(walk("walk started with a token"))
        await with_token.aclose()
        record = next(r for r in await audit_records(as_alice) if r.seq == done.audit_seq)
        assert (record.actor, record.role) == ("reader-user", "reader")

        # Signed by the CA but mapped to nobody: refused with the reason, on HTTP and on a websocket.
        as_mallory = NodeClient(target(mallory))
        with pytest.raises(NodeError, match="client certificate CN=mallory is not mapped"):
            await as_mallory.node()
        with pytest.raises(NodeError):
            await as_mallory.debug_record(walk("not allowed"))
        with pytest.raises(NodeError, match=r"4401|not mapped"):
            async for _ in as_mallory.events():
                pass
        await as_mallory.aclose()

        # Another CA, an expired certificate, none at all: the handshake fails, nothing is served.
        for cert in (stranger, expired, None):
            with pytest.raises(httpx.TransportError):  # TLS 1.3: may be refused after the client's Finished
                async with httpx.AsyncClient(verify=caller.tls(cert)) as http:
                    await http.get(url + routes.HEALTHZ)

        # Each refusal without a name is counted into the summary record, with its reason.
        deadline = time.monotonic() + 10
        while True:
            summaries = [r for r in await audit_records(as_alice) if r.action == "refusals.summary"]
            seen_what = {what for r in summaries for what in r.params["by_what"]}
            seen_actor = {actor for r in summaries for actor in r.params["by_actor"]}
            wanted_what = {
                "TLS: client certificate refused (certificate has expired)",
                "TLS: client certificate refused (unable to get local issuer certificate)",
                f"POST {routes.DEBUG_RECORDS}",
            }
            if wanted_what <= seen_what and "certificate CN=mallory" in seen_actor:
                break
            assert time.monotonic() < deadline, (seen_what, seen_actor)
            await asyncio.sleep(0.3)
        assert any(what.startswith("TLS: handshake failed") for what in seen_what), seen_what  # no certificate

        # SIGHUP takes new mappings; the stream opened before stays open.
        stream = as_alice.events()
        assert (await anext(stream)).kind == "hello"
        config.write_text(config.read_text() + MALLORY)
        os.kill(proc.pid, signal.SIGHUP)
        as_mallory = NodeClient(target(mallory))
        deadline = time.monotonic() + 10
        while True:
            try:
                await as_mallory.node()
                break
            except NodeError:
                assert time.monotonic() < deadline, "the new mapping was not taken on SIGHUP"
                await asyncio.sleep(0.2)
        await as_mallory.aclose()
        reload = [r for r in await audit_records(as_alice) if r.action == "agent.reload"][-1]
        assert reload.outcome == "ok" and reload.params["clients"] == ["alice", "fleetd", "mallory"]
        await stream.aclose()
    finally:
        await as_alice.aclose()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('\n[[clients]]\nname = "x"\nrole = "reader"\nsubject = "CN=x"\n', "[[clients]] need tls.client_ca"),
        ('\n[[clients]]\nname = "x"\nrole = "god"\nsan = "DNS:x"\n', "client 'x': role must be one of"),
        ('\n[[clients]]\nname = "x"\nrole = "reader"\n', "give exactly one of subject"),
        ('\n[[clients]]\nname = "x"\nrole = "reader"\nsubject = "CM=x"\n', "subject part 'CM=x' is not KEY=value"),
        ('\n[[clients]]\nname = "x"\nrole = "reader"\nsan = "mail:x"\n', "san 'mail:x' is not KIND:value"),
        (
            '\n[[clients]]\nname = "x"\nrole = "reader"\nsan = "DNS:x"\nsubjekt = 1\n',
            "unknown key subjekt in [[clients]]",
        ),
        ('TOP:pull_timeout = "soon"\n', "a value of the wrong type: could not convert string to float"),
        ('TOP:credentials = "nowhere.toml"\n', "nowhere.toml: No such file"),
    ],
)
def test_a_bad_mapping_or_value_is_a_clear_error_naming_the_file(tmp_path: Path, extra: str, message: str) -> None:
    config, _ = write_agent_config(tmp_path / "agent", host_root=tmp_path, sysroot_path=tmp_path)
    text = config.read_text()
    config.write_text(extra.removeprefix("TOP:") + text if extra.startswith("TOP:") else text + extra)
    with pytest.raises(ConfigError) as raised:
        load(config, {})
    assert str(raised.value).startswith(f"{config}: ") and message in str(raised.value), raised.value


def test_the_inventory_takes_a_client_certificate_and_guards_its_key(tmp_path: Path) -> None:
    cert, key = certs.issue(tmp_path / "ca", tmp_path / "me", "me", client=True)
    other_cert, _ = certs.issue(tmp_path / "ca", tmp_path / "other", "other", client=True)
    node = {"name": "n", "url": "https://127.0.0.1:1", "client_cert": str(cert), "client_key": str(key)}
    (target,) = parse({"nodes": [node]}, "inv.toml", tmp_path)
    assert (target.token, target.client_cert, target.client_key) == ("", cert, key)
    assert target.auth_headers() == {}  # the certificate alone names the caller
    key.chmod(0o644)
    with pytest.raises(InventoryError, match=r"client key .* can be read or written by others \(mode 644\)"):
        parse({"nodes": [node]}, "inv.toml", tmp_path)
    key.chmod(0o600)
    with pytest.raises(InventoryError, match="the key does not match the certificate"):
        parse({"nodes": [{**node, "client_cert": str(other_cert)}]}, "inv.toml", tmp_path)
    with pytest.raises(InventoryError, match="client_cert and client_key go together"):
        parse({"nodes": [{k: v for k, v in node.items() if k != "client_key"}]}, "inv.toml", tmp_path)
