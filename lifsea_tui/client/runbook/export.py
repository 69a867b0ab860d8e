"""A walk written out for the incident report, with the audit record of each step."""

from __future__ import annotations

from lifsea_tui.client.runbook.walk import OUTCOME, Walk


def markdown(walk: Walk) -> str:
    """The walk for an incident report."""
    lines = [
        f"# {walk.runbook.title} on {walk.node}",
        "",
        f"- Runbook: `{walk.runbook.id}` ({walk.runbook.source.name})",
        f"- Walk: `{walk.id}` (audit records `debug.*` with this walk id on {walk.node})",
        f"- Started: {walk.started:%Y-%m-%d %H:%M:%S} UTC",
        f"- Outcome: {OUTCOME[walk.resolved]}",
        "",
        f"Symptom: {walk.runbook.symptom}",
        "",
        "| Time (UTC) | Step | What | Audit |",
        "|---|---|---|---|",
    ]
    for entry in walk.entries:
        summary = entry.summary.replace("|", "\\|")
        seq = str(entry.audit_seq) if entry.audit_seq is not None else "not recorded yet"
        lines.append(f"| {entry.time:%H:%M:%S} | {entry.step} | {entry.event}: {summary} | {seq} |")
    lines.append("")
    for entry in walk.entries:
        if entry.evidence:
            lines += [
                f"## {entry.time:%H:%M:%S} {entry.step}: {entry.summary}",
                "",
                "```",
                *entry.evidence,
                "```",
                "",
            ]
    if walk._unsent:
        lines.append(f"**{len(walk._unsent)} record(s) not yet in the node's audit log** (node unreachable).")
    return "\n".join(lines) + "\n"
