"""Which nodes the console talks to: an inventory file, the user's config, or the running lab.

Inventory and config files are TOML with one [[nodes]] table per node:

    [[nodes]]
    name = "edge-7"
    url = "https://10.0.0.7:7443"
    ca_file = "/etc/lifsea/ca.pem"         # optional: the system's CAs otherwise
    token_file = "~/.config/lifsea-tui/edge.token"   # or token_env = "LIFSEA_TOKEN", or token = "..."
    client_cert = "~/.config/lifsea-tui/me.pem"      # optional: for agents that require one (mTLS);
    client_key = "~/.config/lifsea-tui/me.key"       #   with no token, the certificate names you
    timeout = 10                            # seconds, optional
    labels = { zone = "a", pool = "edge" }  # optional: added to (and over) the agent's own labels

Shared defaults and named contexts, as kubeconfig has them:

    current_context = "prod"                # or --context NAME, or $LIFSEA_CONTEXT
    [defaults]                              # any node key but name and url; a node's own win
    ca_file = "/etc/lifsea/ca.pem"
    [contexts.prod]                         # its own defaults, over [defaults]
    token_env = "LIFSEA_PROD_TOKEN"
    [[contexts.prod.nodes]]
    name = "edge-7"
    url = "https://10.0.0.7:7443"
"""

from __future__ import annotations

import os
import ssl
import tomllib
from pathlib import Path
from typing import Any

from lifsea_tui.api.models import check_labels
from lifsea_tui.client.node import NodeTarget

DEFAULT_TIMEOUT = 10.0


class InventoryError(Exception):
    pass


def _path(value: Any, base: Path) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def _private(path: Path, where: str, what: str) -> None:
    """As ssh does with a private key: a secret others can read is not yours alone."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise InventoryError(f"{where}: cannot read {what} {path}: {error.strerror}") from error
    if mode & 0o077:
        raise InventoryError(
            f"{where}: {what} {path} can be read or written by others (mode {mode & 0o777:o}); chmod 600 it"
        )


def _client_cert(entry: dict[str, Any], where: str, base: Path) -> tuple[Path | None, Path | None]:
    cert, key = entry.get("client_cert"), entry.get("client_key")
    if cert is None and key is None:
        return None, None
    if cert is None or key is None:
        raise InventoryError(f"{where}: client_cert and client_key go together")
    cert_path, key_path = _path(cert, base), _path(key, base)
    if not cert_path.is_file():
        raise InventoryError(f"{where}: client certificate {cert_path} does not exist")
    _private(key_path, where, "client key")
    try:
        ssl.create_default_context().load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, OSError) as error:
        why = "the key does not match the certificate" if "MISMATCH" in str(error) else str(error)
        raise InventoryError(f"{where}: client_cert {cert_path} and client_key {key_path}: {why}") from None
    return cert_path, key_path


def _token(entry: dict[str, Any], where: str, base: Path, *, optional: bool = False) -> str:
    if isinstance(entry.get("token"), str) and entry["token"]:
        return str(entry["token"])
    if isinstance(entry.get("token_env"), str):
        value = os.environ.get(entry["token_env"], "").strip()
        if not value:
            raise InventoryError(f"{where}: environment variable {entry['token_env']} is empty or unset")
        return value
    if isinstance(entry.get("token_file"), str):
        path = _path(entry["token_file"], base)
        _private(path, where, "token file")
        try:
            value = path.read_text().strip()
        except OSError as error:
            raise InventoryError(f"{where}: cannot read token file {path}: {error.strerror}") from error
        if not value:
            raise InventoryError(f"{where}: token file {path} is empty")
        return value
    if optional:
        return ""
    raise InventoryError(f"{where}: needs token_file, token_env or token (or client_cert and client_key)")


SHARED = {"ca_file", "token", "token_env", "token_file", "timeout", "client_cert", "client_key", "labels"}
TOKEN_KEYS = ("token", "token_env", "token_file")
CONTEXT_ENV = "LIFSEA_CONTEXT"


def _shared(table: Any, where: str) -> dict[str, Any]:
    """A table of defaults ([defaults], or a context's own keys): only what a node may say itself."""
    if not isinstance(table, dict):
        raise InventoryError(f"{where} must be a table")
    unknown = sorted(set(table) - SHARED)
    if unknown:
        raise InventoryError(
            f"{where}: unknown keys {', '.join(unknown)} (a default may be {', '.join(sorted(SHARED))})"
        )
    return table


def _merged(defaults: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A node's entry over the defaults: its own way to a token replaces theirs, as does its own
    certificate; labels add up."""
    base = dict(defaults)
    if any(key in entry for key in TOKEN_KEYS):
        for key in TOKEN_KEYS:
            base.pop(key, None)
    if "client_cert" in entry or "client_key" in entry:
        base.pop("client_cert", None)
        base.pop("client_key", None)
    merged = {**base, **entry}
    if isinstance(defaults.get("labels"), dict) and isinstance(entry.get("labels"), dict):
        merged["labels"] = {**defaults["labels"], **entry["labels"]}
    return merged


def context_name(data: dict[str, Any], context: str | None = None) -> Any:
    """The context an inventory's data is read with: `context`, else $LIFSEA_CONTEXT, else its own
    current_context; None (or empty) for its top-level [[nodes]]."""
    return context or os.environ.get(CONTEXT_ENV) or data.get("current_context")


def select(data: dict[str, Any], source: str, context: str | None) -> tuple[Any, dict[str, Any], str | None]:
    """The nodes and defaults to use: a context's (named, else $LIFSEA_CONTEXT, else the file's
    current_context), over [defaults]; without any, the file's own [[nodes]]. As kubeconfig does."""
    name = context_name(data, context)
    defaults = _shared(data.get("defaults", {}), f"{source}: [defaults]")
    if not name:
        return data.get("nodes"), defaults, None
    contexts = data.get("contexts", {})
    if not isinstance(contexts, dict) or not isinstance(name, str) or name not in contexts:
        known = ", ".join(sorted(contexts)) if isinstance(contexts, dict) and contexts else "none"
        raise InventoryError(f"{source}: unknown context {name!r} (its contexts: {known})")
    table = contexts[name]
    if not isinstance(table, dict):
        raise InventoryError(f"{source}: [contexts.{name}] must be a table")
    own = _shared({k: v for k, v in table.items() if k != "nodes"}, f"{source}: [contexts.{name}]")
    return table.get("nodes"), _merged(defaults, own), name


def parse(data: dict[str, Any], source: str, base: Path, context: str | None = None) -> list[NodeTarget]:
    nodes, defaults, chosen = select(data, source, context)
    if not isinstance(nodes, list) or not nodes:
        where = f"[[contexts.{chosen}.nodes]]" if chosen else "[[nodes]]"
        raise InventoryError(f"{source}: no {where} entries")
    targets, names = [], set()
    for index, raw in enumerate(nodes, start=1):
        where = f"{source}: node {index}"
        if not isinstance(raw, dict):
            raise InventoryError(f"{where}: not a table")
        entry = _merged(defaults, raw)
        name, url = entry.get("name"), entry.get("url")
        if not isinstance(name, str) or not name:
            raise InventoryError(f"{where}: needs a name")
        where = f"{source}: node {name!r}"
        if name in names:
            raise InventoryError(f"{where}: the name is used twice")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise InventoryError(f"{where}: url must start with https://")
        ca_file = entry.get("ca_file")
        ca_path = None
        if ca_file is not None:
            ca_path = _path(ca_file, base)
            if not ca_path.exists():
                raise InventoryError(f"{where}: CA file {ca_path} does not exist")
        timeout = entry.get("timeout", DEFAULT_TIMEOUT)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise InventoryError(f"{where}: timeout must be a positive number of seconds")
        try:
            labels = check_labels(entry.get("labels", {}))
        except ValueError as error:
            raise InventoryError(f"{where}: labels: {error}") from None
        client_cert, client_key = _client_cert(entry, where, base)
        names.add(name)
        targets.append(
            NodeTarget(
                name=name,
                url=url.rstrip("/"),
                token=_token(entry, where, base, optional=client_cert is not None),
                ca_file=ca_path,
                timeout=float(timeout),
                labels=labels,
                client_cert=client_cert,
                client_key=client_key,
            )
        )
    return targets


def read(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise InventoryError(f"inventory {path} does not exist") from error
    except tomllib.TOMLDecodeError as error:
        raise InventoryError(f"inventory {path}: {error}") from error
    return data


def from_file(path: Path, context: str | None = None) -> list[NodeTarget]:
    """The nodes of an inventory file; `context` (else $LIFSEA_CONTEXT, else its current_context)."""
    return parse(read(path), str(path), path.parent, context)
