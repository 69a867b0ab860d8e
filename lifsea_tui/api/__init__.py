"""The wire contract between the console and the node agent.

Pydantic models, route paths, roles and protocol constants. No I/O, and no import of any other part of
the project: the agent and the client both build on this package, so a change here is a change of the
API and is seen by both sides at once.
"""

from lifsea_tui.api.models import (
    ActionRequest,
    AuditPage,
    AuditRecord,
    AuditVerify,
    Capability,
    Deployment,
    DeploymentList,
    DiffSummary,
    EndRequest,
    ErrorBody,
    Event,
    EventKind,
    HistoryEntry,
    HistoryList,
    NodeInfo,
    NodeSummary,
    OperationResult,
    OpsSession,
    OpsSessionList,
    OpsSessionRequest,
    OpsSessionState,
    RecordingInfo,
    RecordingList,
    Role,
    StageRequest,
    UpdateState,
    UpdateStatus,
    UpdateTarget,
)

API_VERSION = "v1"

__all__ = [
    "API_VERSION",
    "ActionRequest",
    "AuditPage",
    "AuditRecord",
    "AuditVerify",
    "Capability",
    "Deployment",
    "DeploymentList",
    "DiffSummary",
    "EndRequest",
    "ErrorBody",
    "Event",
    "EventKind",
    "HistoryEntry",
    "HistoryList",
    "NodeInfo",
    "NodeSummary",
    "OperationResult",
    "OpsSession",
    "OpsSessionList",
    "OpsSessionRequest",
    "OpsSessionState",
    "RecordingInfo",
    "RecordingList",
    "Role",
    "StageRequest",
    "UpdateState",
    "UpdateStatus",
    "UpdateTarget",
]
