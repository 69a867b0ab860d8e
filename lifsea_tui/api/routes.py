"""Route paths of node API v1, named once for the agent and the client."""

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
HEALTHZ = "/healthz"
METRICS = "/metrics"
OPENAPI = "/openapi.json"

# Websocket close codes used by the agent (4000-4999 is the application range).
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
