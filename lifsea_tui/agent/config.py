"""The agent's configuration: a TOML file, with command-line flags taking precedence.

The agent is told where the node is; it never assumes it runs on the node's root. In production it runs
in a privileged container with the host mounted at /host; in the lab it runs beside an nspawn machine.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
import tomllib
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from lifsea_tui.api import OpsAccess, Role
from lifsea_tui.api.models import check_labels


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: Role
    sha256: str
    expires: datetime | None = None  # refused from then on


@dataclass(frozen=True)
class ClientEntry:
    """A client certificate (from tls.client_ca) that acts as `name` with `role`: matched by subject
    attributes (each given pair present in the certificate's subject) or by one subjectAltName."""

    name: str
    role: Role
    subject: tuple[tuple[str, str], ...] = ()  # (("CN", "alice"), ("O", "ops"))
    san: tuple[str, str] | None = None  # ("DNS", "fleetd.example"), ("URI", "spiffe://...")


SUBJECT_NAMES = {  # the short names a [[clients]] subject uses, as Python's ssl spells them in a peer cert
    "CN": "commonName",
    "O": "organizationName",
    "OU": "organizationalUnitName",
    "C": "countryName",
    "ST": "stateOrProvinceName",
    "L": "localityName",
    "emailAddress": "emailAddress",
}
SAN_KINDS = {"DNS": "DNS", "email": "email", "URI": "URI", "IP": "IP Address"}


def _client(entry: dict[str, Any]) -> ClientEntry:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("each [[clients]] needs a name")
    try:
        role = Role(str(entry.get("role")))
    except ValueError:
        raise ConfigError(f"client {name!r}: role must be one of {', '.join(r.value for r in Role)}") from None
    subject, san = entry.get("subject"), entry.get("san")
    if (subject is None) == (san is None):
        raise ConfigError(f'client {name!r}: give exactly one of subject ("CN=alice,O=ops") or san ("DNS:host")')
    if subject is not None:
        pairs = []
        for part in str(subject).split(","):
            key, eq, value = part.strip().partition("=")
            if not eq or key not in SUBJECT_NAMES or not value:
                known = ", ".join(SUBJECT_NAMES)
                what = f"subject part {part.strip()!r}"
                raise ConfigError(f"client {name!r}: {what} is not KEY=value with KEY one of {known}")
            pairs.append((SUBJECT_NAMES[key], value))
        return ClientEntry(name=name, role=role, subject=tuple(pairs))
    kind, colon, value = str(san).partition(":")
    if not colon or kind not in SAN_KINDS or not value:
        raise ConfigError(f"client {name!r}: san {san!r} is not KIND:value with KIND one of {', '.join(SAN_KINDS)}")
    return ClientEntry(name=name, role=role, san=(SAN_KINDS[kind], value))


@dataclass
class OpsConfig:
    """The break-glass shell. No image means no ops shell on this node (the capability says so)."""

    image: str | None = None  # an ostree refspec in the node's repo, e.g. "lab:lifsea/x86_64/ops"
    runtime: str = "runc"
    namespaces: Path = Path("/proc/1/ns")  # the node's namespaces to join (the agent runs with hostPID)
    dir: Path = Path("/var/lib/lifsea-agent/ops")  # image checkouts and per-session bundles
    recordings: Path = Path("/var/lib/lifsea-agent/recordings")
    default_ttl: int = 15 * 60
    max_ttl: int = 60 * 60
    idle_timeout: int = 15 * 60
    grace: int = 60
    warn_before: int = 60  # seconds before the TTL ends that the shell is told
    max_sessions: int = 4
    max_sessions_per_user: int = 2
    require_ticket: bool = False
    record_input: bool = False
    # The access levels an admin may ask for (see agent/ops/access.py); writable must be allowed explicitly.
    access: list[OpsAccess] = field(default_factory=lambda: [OpsAccess.read_only, OpsAccess.debug])
    min_free_bytes: int = 16 * 1024 * 1024  # a session is refused when its recording could not grow this much
    # Kept free in the recordings directory (a file) and given up when the disk is full and a shell is
    # asked for: a full /var is when the shell is needed most, and its recording must still fit.
    reserve_bytes: int = 64 * 1024 * 1024


@dataclass
class ServicesConfig:
    """Units the API may act on, besides the built-in deny list (agent/services.py)."""

    deny: list[str] = field(default_factory=list)  # fnmatch patterns added to the built-in list
    allow: list[str] | None = None  # when set, only units matching one of these
    agent_units: list[str] = field(default_factory=lambda: ["lifsea-agent.service"])  # the agent's own


def _services(section: Any) -> ServicesConfig:
    if not isinstance(section, dict):
        raise ConfigError("[services] must be a table")
    unknown = set(section) - {"deny", "allow", "agent_units"}
    if unknown:
        raise ConfigError(f"[services]: unknown keys {', '.join(sorted(unknown))}")
    services = ServicesConfig()
    for key in ("deny", "allow", "agent_units"):
        if key in section:
            value = section[key]
            if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
                raise ConfigError(f"services.{key} must be a list of unit names or patterns")
            setattr(services, key, value)
    return services


@dataclass
class LimitsConfig:
    """What callers may hold of the agent at once (see limits.py)."""

    follows_per_caller: int = 4  # log follows (one journalctl each) a caller may hold
    follows: int = 16  # log follows in all
    event_streams_per_caller: int = 8
    event_streams: int = 64
    connections: int = 256
    connections_per_peer: int = 64
    header_timeout: float = 10.0  # seconds to send a request's headers
    refusal_summary_seconds: float = 60.0


def _limits(section: Any) -> LimitsConfig:
    if not isinstance(section, dict):
        raise ConfigError("[limits] must be a table")
    limits = LimitsConfig()
    known = {f.name: f.type for f in fields(LimitsConfig)}
    for key, value in section.items():
        if key not in known:
            raise ConfigError(f"[limits]: unknown key {key}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"limits.{key} must be a number > 0")
        setattr(limits, key, float(value) if known[key] == "float" else int(value))
    return limits


OPS_INTS = ("default_ttl", "max_ttl", "idle_timeout", "grace", "warn_before", "max_sessions", "max_sessions_per_user")
OPS_BOOLS = ("require_ticket", "record_input")


def _ops(section: Any) -> OpsConfig:
    if not isinstance(section, dict):
        raise ConfigError("[ops] must be a table")
    unknown = set(section) - {
        "image",
        "runtime",
        "namespaces",
        "dir",
        "recordings",
        "min_free_bytes",
        "reserve_bytes",
        "access",
        *OPS_INTS,
        *OPS_BOOLS,
    }
    if unknown:
        raise ConfigError(f"[ops]: unknown keys {', '.join(sorted(unknown))}")
    ops = OpsConfig()
    if "image" in section:
        if not isinstance(section["image"], str) or not section["image"]:
            raise ConfigError("ops.image must be an ostree refspec")
        ops.image = section["image"]
    if section.get("runtime", "runc") != "runc":
        raise ConfigError(f"ops.runtime {section['runtime']!r}: this agent drives runc only (containerd is not built)")
    for key in ("namespaces", "dir", "recordings"):
        if key in section:
            setattr(ops, key, _path(section[key], f"ops.{key}"))
    for key in (*OPS_INTS, "min_free_bytes", "reserve_bytes"):
        if key in section:
            value = section[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"ops.{key} must be a whole number >= 0")
            setattr(ops, key, value)
    for key in OPS_BOOLS:
        if key in section:
            if not isinstance(section[key], bool):
                raise ConfigError(f"ops.{key} must be true or false")
            setattr(ops, key, section[key])
    if "access" in section:
        levels = section["access"]
        try:
            if not isinstance(levels, list):
                raise ValueError
            ops.access = [OpsAccess(level) for level in levels]
        except ValueError as error:
            names = ", ".join(f'"{level.value}"' for level in OpsAccess)
            raise ConfigError(f"ops.access must be a list of levels: {names}") from error
    if ops.default_ttl > ops.max_ttl:
        raise ConfigError("ops.default_ttl is longer than ops.max_ttl")
    return ops


@dataclass
class AgentConfig:
    node_name: str
    host_root: Path = Path("/host")
    sysroot: Path = Path("/host/sysroot")
    osname: str = "lifsea"
    system_bus: Path = Path("/host/run/dbus/system_bus_socket")
    journal_dirs: list[Path] = field(  # persistent and volatile: both are read, merged
        default_factory=lambda: [Path("/host/var/log/journal"), Path("/host/run/log/journal")]
    )
    listen_host: str = "127.0.0.1"
    listen_port: int = 7443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    tls_client_certs_required: bool = True  # tls.client_certs: "required" (else "optional": tokens alone too)
    audit_dir: Path = Path("/var/lib/lifsea-agent/audit")
    tokens: list[TokenEntry] = field(default_factory=list)
    clients: list[ClientEntry] = field(default_factory=list)
    max_body_bytes: int = 64 * 1024
    pull_timeout: float = 300.0
    watch_interval: float = 1.0
    ops: OpsConfig = field(default_factory=OpsConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    labels: dict[str, str] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)  # the files it was read from (watched for changes)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_entry(name: str, role: Role, token: str, expires: datetime | None = None) -> str:
    """The [[tokens]] entry of a config file for `token` (only its hash is written)."""
    entry = f'[[tokens]]\nname = "{name}"\nrole = "{role.value}"\nsha256 = "{hash_token(token)}"\n'
    if expires is not None:
        entry += f"expires = {expires.astimezone(UTC).replace(microsecond=0).isoformat().replace('+00:00', 'Z')}\n"
    return entry


def _expiry(entry: dict[str, Any], name: str) -> datetime | None:
    """A token entry's `expires`: a TOML date-time (UTC when it names no offset) or a date (its midnight, UTC)."""
    value = entry.get("expires")
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise ConfigError(f"token {name!r}: expires must be a TOML date-time such as 2027-01-31T00:00:00Z")


def _check_pair(cert: Path, key: Path) -> None:
    """The certificate and key load, and belong together (else uvicorn fails later, with a traceback)."""
    for name, path in (("tls.cert", cert), ("tls.key", key)):
        if not path.is_file():
            raise ConfigError(f"{name} {path}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as error:
        why = "the key does not match the certificate" if "MISMATCH" in str(error) else str(error)
        raise ConfigError(f"tls.cert {cert} and tls.key {key}: {why}") from None
    except OSError as error:
        raise ConfigError(f"tls.cert {cert} or tls.key {key}: {error.strerror or error}") from None


def _path(value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty path string")
    return Path(value)


# The keys the file may hold, by section ("" is the top level); [ops], [services] and [limits] check
# their own. A key or section not here is a typo that would otherwise be silently ignored ([listn]).
KNOWN_KEYS: dict[str, set[str]] = {
    "": {"node_name", "osname", "pull_timeout", "paths", "listen", "tls", "audit", "tokens", "clients", "ops",
         "services", "limits", "labels", "credentials"},
    "paths": {"host_root", "sysroot", "system_bus", "journal"},
    "listen": {"host", "port"},
    "tls": {"cert", "key", "client_ca", "client_certs"},
    "audit": {"dir"},
    "tokens": {"name", "role", "sha256", "expires"},
    "clients": {"name", "role", "subject", "san"},
}  # fmt: skip
LISTS = ("tokens", "clients")  # arrays of tables: [[tokens]], [[clients]]


def _check_keys(data: dict[str, Any]) -> None:
    sections: list[tuple[str, Any]] = [("", data)]
    sections += [(name, data[name]) for name in KNOWN_KEYS if name and name not in LISTS and name in data]
    for name in LISTS:
        entries = data.get(name, [])
        if not isinstance(entries, list):
            raise ConfigError(f"{name} must be written [[{name}]]")
        sections += [(name, entry) for entry in entries]
    for name, section in sections:
        if not isinstance(section, dict):
            raise ConfigError(f"[{name}] must be a table" if name not in LISTS else f"each [[{name}]] must be a table")
        unknown = sorted(set(section) - KNOWN_KEYS[name])
        if unknown:
            where = f"in [[{name}]]" if name in LISTS else "at the top level" if not name else f"in [{name}]"
            known = ", ".join(sorted(KNOWN_KEYS[name]))
            raise ConfigError(f"unknown {'key' if len(unknown) == 1 else 'keys'} {', '.join(unknown)} {where} "
                              f"(known: {known})")  # fmt: skip


def _add_credentials(data: dict[str, Any], path: Path, base: Path) -> Path:
    """The [[tokens]] and [[clients]] of another file (a Kubernetes Secret beside the ConfigMap), after
    the config file's own. Read again on SIGHUP, as the file is."""
    path = path if path.is_absolute() else base / path
    try:
        extra = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"credentials {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"credentials {path}: not TOML: {error}") from None
    unknown = sorted(set(extra) - set(LISTS))
    if unknown:
        raise ConfigError(f"credentials {path}: only [[tokens]] and [[clients]] belong here, not {', '.join(unknown)}")
    try:
        _check_keys(extra)
    except ConfigError as error:
        raise ConfigError(f"credentials {path}: {error}") from None
    for name in LISTS:
        data[name] = [*data.get(name, []), *extra.get(name, [])]
    return path


def load(path: Path | None, overrides: dict[str, Any]) -> AgentConfig:
    """Read `path` (if given), apply `overrides` (flag name -> value, None meaning unset), validate. Every
    error names the file."""
    try:
        return _load(path, overrides)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}" if path is not None else str(error)) from None
    except (ValueError, TypeError, AttributeError) as error:  # a value of the wrong kind (port = "x")
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}a value of the wrong type: {error}") from None


def _load(path: Path | None, overrides: dict[str, Any]) -> AgentConfig:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as error:
            raise ConfigError("the config file does not exist") from error
        except OSError as error:  # unreadable, a directory: said, not a traceback (nor a dead reload)
            raise ConfigError(f"cannot read it: {error.strerror or error}") from error
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"not TOML: {error}") from error
        _check_keys(data)
        sources = [path]
        if "credentials" in data:
            sources.append(_add_credentials(data, _path(data["credentials"], "credentials"), path.parent))
    paths = data.get("paths", {})
    listen = data.get("listen", {})
    tls = data.get("tls", {})
    audit = data.get("audit", {})
    flat: dict[str, Any] = {
        "node_name": data.get("node_name"),
        "osname": data.get("osname"),
        "host_root": paths.get("host_root"),
        "sysroot": paths.get("sysroot"),
        "system_bus": paths.get("system_bus"),
        "journal_dirs": paths.get("journal"),
        "listen_host": listen.get("host"),
        "listen_port": listen.get("port"),
        "tls_cert": tls.get("cert"),
        "tls_key": tls.get("key"),
        "tls_client_ca": tls.get("client_ca"),
        "audit_dir": audit.get("dir"),
        "pull_timeout": data.get("pull_timeout"),
    }
    flat.update({key: value for key, value in overrides.items() if value is not None})
    if not flat["node_name"]:
        raise ConfigError("node_name is required (config key node_name or --node-name)")
    config = AgentConfig(node_name=str(flat["node_name"]))
    if path is not None:
        config.sources = sources
    for key in ("host_root", "sysroot", "system_bus", "audit_dir"):
        if flat[key] is not None:
            setattr(config, key, _path(flat[key], key))
    for key in ("tls_cert", "tls_key", "tls_client_ca"):
        if flat[key] is not None:
            setattr(config, key, _path(flat[key], key))
    if flat["journal_dirs"] is not None:
        config.journal_dirs = [_path(item, "paths.journal") for item in flat["journal_dirs"]]
    if flat["osname"] is not None:
        config.osname = str(flat["osname"])
    if flat["listen_host"] is not None:
        config.listen_host = str(flat["listen_host"])
    if flat["listen_port"] is not None:
        config.listen_port = int(flat["listen_port"])
    if flat["pull_timeout"] is not None:
        config.pull_timeout = float(flat["pull_timeout"])
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("tls.cert and tls.key go together")
    if config.tls_cert is not None and config.tls_key is not None:
        _check_pair(config.tls_cert, config.tls_key)
    for entry in data.get("tokens", []):
        try:
            role = Role(entry["role"])
            digest = str(entry["sha256"]).lower()
            name = str(entry["name"])
        except (KeyError, ValueError) as error:
            raise ConfigError(f"bad token entry {entry.get('name', '?')!r}: {error}") from error
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"token {name!r}: sha256 must be 64 hex digits")
        config.tokens.append(TokenEntry(name=name, role=role, sha256=digest, expires=_expiry(entry, name)))
    config.clients = [_client(entry) for entry in data.get("clients", [])]
    if "client_certs" in tls:
        if tls["client_certs"] not in ("required", "optional"):
            raise ConfigError('tls.client_certs must be "required" or "optional"')
        config.tls_client_certs_required = tls["client_certs"] == "required"
    if config.clients and config.tls_client_ca is None:
        raise ConfigError("[[clients]] need tls.client_ca, the CA their certificates are checked against")
    config.ops = _ops(data.get("ops", {}))
    config.services = _services(data.get("services", {}))
    config.limits = _limits(data.get("limits", {}))
    try:
        config.labels = check_labels(data.get("labels", {}))
    except ValueError as error:
        raise ConfigError(f"[labels]: {error}") from None
    if not config.tokens and not config.clients:
        raise ConfigError("no [[tokens]] and no [[clients]]: nobody could use this agent")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ConfigError("tls.client_ca needs tls.cert and tls.key")
    if config.tls_cert is None and not is_loopback(config.listen_host):
        raise ConfigError(
            f"listen.host {config.listen_host} is not a loopback address: tokens would cross the network in "
            "the clear; set tls.cert and tls.key (plain HTTP is for loopback only)"
        )
    return config
