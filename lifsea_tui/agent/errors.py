"""Errors the agent turns into its one JSON error shape: {"error": code, "detail": text}."""

from __future__ import annotations

# Status for each error code; anything not listed is a 500 (which the tests make sure never happens).
STATUS = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "wrong_state": 409,
    "recording_changed": 409,
    "busy": 423,
    "too_large": 413,
    "failed": 502,
    "unavailable": 503,
    "update_server_unavailable": 503,
    "audit_unavailable": 503,
    "recording_unavailable": 503,
    "too_many_sessions": 429,
}


class ApiError(Exception):
    """An error to answer with; `audited` is true when the audit log already holds its record."""

    def __init__(self, code: str, detail: str, *, audited: bool = False) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.audited = audited

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 500)


class BackendError(ApiError):
    """A backend (ostree, systemd) failed or is not there; `code` says which way."""
