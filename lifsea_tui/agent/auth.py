"""Who is calling, and may they: bearer tokens and the rules table.

Every route of the app has exactly one entry in RULES naming the roles that may call it. A route
without an entry is refused (deny by default), and a test walks the app's routes to prove none lacks
one. Tokens are stored as SHA-256 digests; the agent never holds the token itself.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from lifsea_tui.agent.config import ClientEntry, TokenEntry, hash_token
from lifsea_tui.agent.tls import PeerCert, describe
from lifsea_tui.api import Role
from lifsea_tui.api import routes as r

PUBLIC: frozenset[Role] = frozenset()  # no identity needed
READ = frozenset({Role.reader, Role.operator, Role.admin, Role.auditor})
OPERATE = frozenset({Role.operator, Role.admin})
BREAK_GLASS = frozenset({Role.admin})
RECORDINGS = frozenset({Role.admin, Role.auditor})
# Whoever debugs a node leaves the walk in its audit log; an auditor only reads.
DEBUG = frozenset({Role.reader, Role.operator, Role.admin})

RULES: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", r.HEALTHZ): PUBLIC,
    ("GET", r.OPENAPI): PUBLIC,
    ("GET", r.METRICS): READ,
    ("GET", r.NODE): READ,
    ("GET", r.SUMMARY): READ,
    ("GET", r.DEPLOYMENTS): READ,
    ("GET", r.HISTORY): READ,
    ("GET", r.UPGRADES): READ,
    ("POST", r.UPGRADES_CHECK): OPERATE,
    ("POST", r.UPGRADES_STAGE): OPERATE,
    ("POST", r.UPGRADES_CANCEL): OPERATE,
    ("POST", r.ROLLBACK): OPERATE,
    ("POST", r.REBOOT): OPERATE,
    ("GET", r.AUDIT): READ,
    ("GET", r.AUDIT_VERIFY): READ,
    ("WS", r.EVENTS): READ,
    ("POST", r.OPS_SESSIONS): BREAK_GLASS,
    ("GET", r.OPS_SESSIONS): READ,
    ("GET", r.OPS_SESSION): READ,
    ("DELETE", r.OPS_SESSION): BREAK_GLASS,
    ("WS", r.OPS_ATTACH): BREAK_GLASS,
    ("GET", r.LOGS): READ,
    ("WS", r.LOGS_FOLLOW): READ,
    ("GET", r.SERVICES): READ,
    ("GET", r.SERVICE): READ,
    ("POST", r.SERVICE_ACTION): OPERATE,
    ("GET", r.RECORDINGS): RECORDINGS,
    ("GET", r.RECORDING): RECORDINGS,
    ("GET", r.RECORDING_LIVE): RECORDINGS,
    ("GET", r.DIAGNOSTICS_DISK): READ,
    ("GET", r.DIAGNOSTICS_CLOCK): READ,
    ("GET", r.DIAGNOSTICS_DNS): READ,
    ("GET", r.DIAGNOSTICS_ETC): READ,
    ("POST", r.DEBUG_RECORDS): DEBUG,
}


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role | None

    @property
    def actor(self) -> str:
        return self.name


ANONYMOUS = Identity("anonymous", None)


class AuthError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def _matches(entry: ClientEntry, cert: PeerCert) -> bool:
    if entry.san is not None:
        return entry.san in {(str(kind), str(value)) for kind, value in cert.get("subjectAltName", ())}
    subject = {(str(key), str(value)) for rdn in cert.get("subject", ()) for key, value in rdn}
    return bool(entry.subject) and set(entry.subject) <= subject


class Authenticator:
    """Callers by bearer token, or (with no token) by the client certificate TLS verified, mapped by
    [[clients]]. A token, when sent, names the caller: a certificate the node requires of every
    connection does not hide who typed the token."""

    def __init__(self, tokens: list[TokenEntry], clients: list[ClientEntry] | None = None) -> None:
        self._by_digest = {entry.sha256: entry for entry in tokens}
        self._clients = list(clients or [])

    def identify(self, authorization: str | None, cert: PeerCert | None = None) -> Identity:
        if not authorization:
            if cert is None:
                return ANONYMOUS
            client = next((e for e in self._clients if _matches(e, cert)), None)
            if client is None:
                why = f"the client certificate {describe(cert)} is not mapped to a name and role here"
                raise AuthError(401, "unauthorized", why)
            return Identity(client.name, client.role)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "unauthorized", "the Authorization header must be 'Bearer TOKEN'")
        digest = hash_token(token.strip())
        for known, entry in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                if entry.expires is not None and datetime.now(UTC) >= entry.expires:
                    when = entry.expires.isoformat().replace("+00:00", "Z")
                    raise AuthError(401, "unauthorized", f"token {entry.name} expired at {when}; ask for a new one")
                return Identity(entry.name, entry.role)
        raise AuthError(401, "unauthorized", "unknown token")

    @staticmethod
    def authorize(method: str, path: str, identity: Identity) -> None:
        allowed = RULES.get((method, path))
        if allowed is None:
            raise AuthError(403, "forbidden", f"no rule allows {method} {path}")
        if allowed is PUBLIC:
            return
        if identity.role is None:
            raise AuthError(401, "unauthorized", "a bearer token (or a mapped client certificate) is required")
        if identity.role not in allowed:
            needed = ", ".join(sorted(allowed))
            raise AuthError(403, "forbidden", f"{identity.name} has role {identity.role}; this needs one of: {needed}")
