"""Break-glass ops sessions, by job: `lifecycle` (create, attach, time limits, end: OpsManager), `session`
(what one session holds), `terminal` (the pump between the shell's terminal, the recording and the
client), `runtime` (runc and the ops image), `access` (the OCI config of each access level)."""

from lifsea_tui.agent.ops.lifecycle import OpsManager
from lifsea_tui.agent.ops.session import Attachment, Session

__all__ = ["Attachment", "OpsManager", "Session"]
