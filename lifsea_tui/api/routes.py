"""Route paths of node API v1, named once for the agent and the client."""

from urllib.parse import quote

NODE = "/v1/node"
SUMMARY = "/v1/summary"
DEPLOYMENTS = "/v1/deployments"
HISTORY = "/v1/history"
UPGRADES = "/v1/upgrades"
UPGRADES_CHECK = "/v1/upgrades/check"
UPGRADES_STAGE = "/v1/upgrades/stage"
UPGRADES_CANCEL = "/v1/upgrades/cancel"
ROLLBACK = "/v1/rollback"
REBOOT = "/v1/reboot"
EVENTS = "/v1/events"
AUDIT = "/v1/audit"
AUDIT_VERIFY = "/v1/audit/verify"
OPS_SESSIONS = "/v1/ops/sessions"
OPS_SESSION = "/v1/ops/sessions/{session_id}"
OPS_ATTACH = "/v1/ops/sessions/{session_id}/attach"
RECORDINGS = "/v1/recordings"
RECORDING = "/v1/recordings/{recording_id}"
RECORDING_LIVE = "/v1/recordings/{recording_id}/live"
# Headers of a live read: bytes written so far, and (once sealed) the SHA-256 the agent sealed it with.
RECORDING_SIZE_HEADER = "X-Recording-Size"
RECORDING_SEALED_HEADER = "X-Recording-Sealed"
SERVICES = "/v1/services"
SERVICE = "/v1/services/{unit}"
SERVICE_ACTION = "/v1/services/{unit}/{action}"
LOGS = "/v1/logs"
LOGS_FOLLOW = "/v1/logs/follow"
DIAGNOSTICS_DISK = "/v1/diagnostics/disk"
DIAGNOSTICS_CLOCK = "/v1/diagnostics/clock"
DIAGNOSTICS_DNS = "/v1/diagnostics/dns"
DIAGNOSTICS_ETC = "/v1/diagnostics/etc"
DEBUG_RECORDS = "/v1/debug/records"
HEALTHZ = "/healthz"
METRICS = "/metrics"
OPENAPI = "/openapi.json"


def path(template: str, **params: str) -> str:
    """A templated route with its parameters filled in, each percent-encoded whole: names come from
    nodes, and a unit named `x/../../reboot` or with a control character must stay one path segment
    (or fail on the node), never become another route or an invalid URL."""
    return template.format(**{name: quote(value, safe="") for name, value in params.items()})


# Websocket close codes used by the agent (4000-4999 is the application range).
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429  # the caller, or everyone together, holds as many streams as the agent allows
