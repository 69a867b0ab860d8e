"""The agent's TLS, done by the agent itself: the handshake, its refusals, and the client's certificate.

uvicorn would do the handshake inside asyncio's server, where a client certificate that fails it (from
another CA, expired) vanishes without a word: asyncio logs handshake errors only in debug mode, and the
application never hears of the connection. A node that requires client certificates must say who was
turned away, so the agent accepts plain TCP and puts asyncio's SSLProtocol on each connection itself
(what `create_server(ssl=...)` does inside; limits.py): a failed handshake is counted into the refusal
summary with OpenSSL's reason ("certificate has expired"), and a slow one is cut at the header deadline.

uvicorn (0.54) does not give the application the peer's certificate either (the ASGI TLS extension is
not in it yet), so each connection's verified certificate is put into the scope it hands the app, at
`scope["extensions"]["tls"]`, in the extension's shape (`client_cert_chain`, `tls_version`, ...), plus
`client_cert_dict`: the certificate as `ssl.SSLSocket.getpeercert()` parses it, which is what the
agent maps to a name and a role (auth.py). HTTP requests and websockets alike: a websocket upgrade
hands the same TLS transport to the websocket protocol, which wraps its app the same way.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from lifsea_tui.agent.config import AgentConfig

PeerCert = dict[str, Any]  # what SSLObject.getpeercert() returns for a verified certificate
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
}


def server_context(config: AgentConfig) -> ssl.SSLContext | None:
    """The agent's server context: its certificate, and the client CA when client certificates are
    asked for (tls.client_ca; required, or optional so that callers with a token alone still connect).
    None when the agent serves plain HTTP (loopback only; config.py checks)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    # No TLS 1.3 session tickets: OpenSSL sends two per connection and each client keeps them with the
    # agent's certificate chain, for resumptions our clients never make (they keep connections alive).
    # A console watching 1,000 nodes held 15 MB of them.
    context.num_tickets = 0
    if config.tls_client_ca is not None:
        context.load_verify_locations(cafile=str(config.tls_client_ca))
        context.verify_mode = ssl.CERT_REQUIRED if config.tls_client_certs_required else ssl.CERT_OPTIONAL
    return context


def refused(error: BaseException) -> bool:
    """Whether a failed handshake was the agent saying no (a certificate, a protocol, too slow), not a
    client that went away (a TCP probe, a scan): only the first kind is worth the refusal summary."""
    return isinstance(error, ssl.SSLError) or _too_slow(error)


def _too_slow(error: BaseException) -> bool:
    return isinstance(error, ConnectionAbortedError) and "taking longer" in str(error)


def refusal_reason(error: BaseException) -> str:
    """A failed handshake in a few words from a bounded set (OpenSSL's reasons), never the peer's bytes."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS: client certificate refused ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return f"TLS: handshake failed ({error.reason or 'unknown'})"
    if _too_slow(error):
        return "TLS: handshake too slow"
    return f"TLS: handshake failed ({type(error).__name__})"


def extension(ssl_object: ssl.SSLObject | None) -> dict[str, Any] | None:
    """The ASGI TLS extension of a connection; None on plain HTTP."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    parsed = ssl_object.getpeercert() if der else None
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": describe(parsed) if parsed is not None else None,
        "client_cert_error": None,  # a certificate that fails verification ends the handshake
        "tls_version": ssl_object.version(),
        "cipher_suite": cipher[0] if cipher else None,
        "client_cert_dict": parsed,
    }


def with_tls(app: ASGIApp, tls: dict[str, Any] | None) -> ASGIApp:
    """`app`, handed the connection's TLS extension in every scope."""
    if tls is None:
        return app

    async def app_with_tls(scope: Scope, receive: Any, send: Any) -> None:
        scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
        await app(scope, receive, send)

    return app_with_tls


def peer_cert(scope: Scope) -> PeerCert | None:
    """The caller's verified client certificate, parsed; None without one."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    cert = tls.get("client_cert_dict")
    return cert if isinstance(cert, dict) else None


def describe(cert: PeerCert | None) -> str:
    """A certificate as a person reads it: its subject, short names first (CN=alice,O=ops)."""
    if not cert:
        return "none"
    parts = [f"{SHORT.get(key, key)}={value}" for rdn in cert.get("subject", ()) for key, value in rdn]
    return ",".join(parts)[:200] or "an empty subject"


class TlsWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol, handing the app the connection's TLS extension."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.app = with_tls(self.app, extension(transport.get_extra_info("ssl_object")))

    def shutdown(self) -> None:
        # The peer closed first: its close was answered and the transport is already closing. uvicorn
        # (0.54) would send a second close, which raises and ends its shutdown there, before the other
        # connections and the app's own shutdown (ending and auditing the ops sessions).
        if self.handshake_complete and not self.close_sent and self.conn.state is not State.OPEN:
            self.stop_keepalive()
            self.transport.close()
            return
        super().shutdown()
