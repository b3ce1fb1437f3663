"""The post-incident record as markdown: what broke, when, what was done, by whom, and what is left to write.

The seeds' post-incident steps are "document incident, root cause analysis, update runbook, implement
preventive measures": the export documents the incident from the database (times, alert, the full
timeline, every action with its approvals and verification, the runbook runs and their steps' results)
and leaves headed sections for the analysis people write. It is a read: nothing is written, and any
field that is missing (an old incident, a step without a result) is shown as such instead of failing.

The document is produced in pieces (``incident_export``) and the timeline read a chunk at a time, so a
long timeline is streamed with bounded memory. Text that came with an alert is not markdown anyone wrote
here: the error is fenced and alert entries are escaped, so the exported file shows it as text (no
remote image or link a markdown viewer would fetch or show).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Prefetch
from django.utils import timezone

from controlplane.actions.models import ActionRun
from controlplane.incidents.models import Incident, IncidentEvent
from controlplane.incidents.selectors import (
    incident_actions,
    incident_get,
    incident_log_url,
    incident_timeline_chunks,
)

NONE = "—"


def _when(value: datetime | None) -> str:
    if value is None:
        return NONE
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(start: datetime | None, end: datetime | None) -> str:
    """``2 h 5 min`` between two times; empty if either is missing."""
    if start is None or end is None:
        return ""
    seconds = int(max((end - start), timedelta(0)).total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    if hours:
        parts.append(f"{hours} h")
    if minutes and not days:
        parts.append(f"{minutes} min")
    if not days and not hours:
        parts.append(f"{secs} s")
    return " ".join(parts)


def _cell(value: Any) -> str:
    """One table cell: on one line, pipes escaped."""
    text = NONE if value in (None, "") else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def _fence(text: str, info: str = "text") -> str:
    """A fenced block that the text cannot close (longer than any backtick run inside it)."""
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


_MARKUP = re.compile(r"([\\\[\]<>`])")


def _text(value: str) -> str:
    """Untrusted text as literal markdown: the characters that open links, images, autolinks, raw HTML
    and code are backslash-escaped."""
    return _MARKUP.sub(r"\\\1", value)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line.strip() else "" for line in text.strip().splitlines())


def _short_json(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def step_result_summary(result: Any, error: str = "") -> str:
    """A one-line reading of a runbook step's result, whatever the step kind stored there."""
    parts: list[str] = []
    if isinstance(result, dict):
        for key in ("summary", "message", "choice", "note", "reason"):
            value = result.get(key)
            if isinstance(value, str) and value.strip():
                parts.append(value.strip())
                break
        else:
            for key in ("outcome", "verification", "findings"):
                nested = result.get(key)
                if isinstance(nested, dict) and isinstance(nested.get("summary"), str):
                    parts.append(nested["summary"])
                    break
        if "passed" in result and isinstance(result["passed"], bool):
            parts.insert(0, "passed" if result["passed"] else "failed")
        if not parts and result:
            parts.append(_short_json(result))
    elif result not in (None, ""):
        parts.append(_short_json(result))
    if error:
        parts.append(f"error: {error}")
    return "; ".join(parts) or NONE


# ------------------------------------------------------------------------------------------ sections


def _header(incident: Incident) -> list[str]:
    targets = ", ".join(f"`{t.key}`" for t in incident.targets.all()) or NONE
    pipeline = NONE
    if incident.pipeline is not None:
        layer = f" ({incident.pipeline.layer})" if getattr(incident.pipeline, "layer", "") else ""
        pipeline = f"`{incident.pipeline.name}`{layer}"
    alert_type = (incident.alert_type or NONE) + (f" from {incident.source}" if incident.source else "")
    return [
        f"# INC-{incident.pk}: {_text(incident.title)}",
        "",
        f"_Post-incident record exported {_when(timezone.now())}._",
        "",
        "| Field | Value |",
        "|---|---|",
        f"| Severity | {_cell(incident.severity)} |",
        f"| Status | {_cell(incident.status)} |",
        f"| Alert type | {_cell(alert_type)} |",
        f"| Affected pipeline | {_cell(pipeline)} |",
        f"| Affected targets | {_cell(targets)} |",
        f"| Alerts received | {incident.alert_count} (last {_when(incident.last_alert_at)}) |",
        "",
    ]


def _times(incident: Incident) -> list[str]:
    opened = incident.created_at
    lines = ["## Times", "", f"- Opened: {_when(opened)}"]
    for label, at in (
        ("Acknowledged", incident.acknowledged_at),
        ("Mitigated", incident.mitigated_at),
        ("Resolved", incident.resolved_at),
    ):
        after = _span(opened, at)
        lines.append(f"- {label}: {_when(at)}" + (f" ({after} after opening)" if after else ""))
    if incident.resolved_at is not None:
        lines.append(f"- **Time to resolve: {_span(opened, incident.resolved_at)}**")
    else:
        lines.append(f"- Time to resolve: not resolved yet (open for {_span(opened, timezone.now())})")
    return [*lines, ""]


def _alert(incident: Incident) -> list[str]:
    details = incident.details if isinstance(incident.details, dict) else {}
    lines = ["## Alert", ""]
    lines.append(_fence(incident.summary) if incident.summary.strip() else "_The alert carried no error text._")
    lines.append("")
    facts = [(k, details.get(k)) for k in ("dag_id", "task_id", "run_id", "logical_date", "try_number")]
    facts = [(k, v) for k, v in facts if v not in (None, "")]
    if facts:
        lines += [f"- {name.replace('_', ' ')}: `{value}`" for name, value in facts]
    log_url = incident_log_url(incident)
    if log_url:
        lines.append(f"- log: <{log_url}>")
    if facts or log_url:
        lines.append("")
    excerpt = details.get("log_excerpt")
    lines.append("### Log excerpt")
    lines.append("")
    lines.append(_fence(str(excerpt)) if excerpt else "_No log excerpt was fetched._")
    return [*lines, ""]


def _timeline(chunks: Iterable[list[IncidentEvent]]) -> Iterator[str]:
    yield "## Timeline\n\n"
    any_event = False
    for events in chunks:
        lines = []
        for event in events:
            any_event = True
            actor = event.actor_name or "system"
            message = (event.message or "").strip()
            if event.kind == IncidentEvent.Kind.ALERT:
                message = _text(message)
            first, *rest = message.splitlines() or [""]
            entry = f"- {_when(event.at)} · **{event.kind}** · {actor}: {first}"
            if event.kind == IncidentEvent.Kind.ACTION and isinstance(event.data, dict) and event.data.get("action"):
                entry += f" (action `{event.data['action']}`)"
            lines.append(entry)
            if rest:
                lines.append(_indent("\n".join(rest), "  "))
        yield "\n".join(lines) + "\n"
    if not any_event:
        yield "_The timeline is empty._\n"
    yield "\n"


def _action(number: int, action: ActionRun) -> list[str]:
    lines = [f"### {number}. `{action.verb}` on `{action.target.key}`: {action.state}", ""]
    lines.append(f"- Action: `{action.id}` in {action.environment.name}")
    lines.append(
        f"- Requested by {action.requested_by.get_username()} at {_when(action.requested_at)} via {action.channel}"
    )
    lines.append(f"- Reason: {' '.join(action.reason.split()) or NONE}")
    lines.append(f"- Params: `{_short_json(action.params or {})}`")
    plan = action.plan if isinstance(action.plan, dict) else {}
    lines.append(f"- Plan: {plan.get('summary') or NONE} (risk {action.risk})")
    if action.requires_approval:
        lines.append(f"- Approval required: {action.approval_reason or 'yes'}")
    else:
        lines.append("- Approval: not required")
    approvals = list(action.approvals.all())
    for approval in approvals:
        comment = f': "{" ".join(approval.comment.split())}"' if approval.comment.strip() else ""
        lines.append(
            f"  - {approval.decision} by {approval.approver.get_username()} at {_when(approval.decided_at)}"
            f" via {approval.channel}{comment}"
        )
    if action.requires_approval and not approvals:
        lines.append("  - no decision recorded")
    if action.started_at is None:
        lines.append(f"- Ran: never started (ended {_when(action.finished_at)})")
    else:
        took = _span(action.started_at, action.finished_at)
        lines.append(
            f"- Ran: started {_when(action.started_at)}, finished {_when(action.finished_at)}"
            + (f" ({took})" if took else "")
            + f", {action.attempts} attempt(s)"
        )
    outcome = action.outcome if isinstance(action.outcome, dict) else {}
    if outcome.get("summary"):
        lines.append(f"- Outcome: {outcome['summary']}")
    verification = action.verification if isinstance(action.verification, dict) else {}
    if verification:
        verdict = "passed" if verification.get("ok") else "failed"
        lines.append(f"- Verification: {verdict}: {verification.get('summary') or NONE}")
    else:
        lines.append("- Verification: none recorded")
    if action.error:
        lines.append(f"- Error: {' '.join(action.error.split())}")
    return [*lines, ""]


def _actions(actions: list[ActionRun]) -> list[str]:
    lines = ["## Actions taken", ""]
    if not actions:
        return [*lines, "_No action was requested for this incident._", ""]
    for number, action in enumerate(actions, start=1):
        lines += _action(number, action)
    return lines


def _runbook_runs(incident: Incident) -> list[str]:
    lines = ["## Runbook runs", ""]
    try:
        from runbooks.models import StepRun
        from runbooks.selectors import runs_for_incident

        runs = list(
            runs_for_incident(incident)
            .prefetch_related(Prefetch("steps", queryset=StepRun.objects.order_by("index")))
            .order_by("started_at")
        )
    except ImportError:  # the runbooks app is not installed
        runs = []
    if not runs:
        return [*lines, "_No runbook was run for this incident._", ""]
    for run in runs:
        version = run.runbook_version
        title = version.title or version.runbook.slug
        lines.append(f"### {title} (`{version.runbook.slug}` v{version.version}): {run.state}")
        lines.append("")
        starter = run.started_by.get_username() if run.started_by_id else NONE
        lines.append(
            f"Started by {starter} at {_when(run.started_at)} via {run.channel or NONE}; "
            f"finished {_when(run.finished_at)}."
        )
        lines.append("")
        steps = list(run.steps.all())
        if not steps:
            lines += ["_No step has started._", ""]
            continue
        lines += ["| # | Step | Kind | State | By | Finished | Result |", "|---|---|---|---|---|---|---|"]
        for step in steps:
            result = step_result_summary(step.result, step.error)
            action = f" (action `{step.action_id}`)" if step.action_id else ""
            lines.append(
                f"| {step.index + 1} | `{_cell(step.step_id)}` | {_cell(step.kind)} | {_cell(step.state)} "
                f"| {_cell(step.actor_name)} | {_cell(_when(step.finished_at))} | {_cell(result + action)} |"
            )
        lines.append("")
    return lines


def _to_write() -> list[str]:
    return [
        "## Post-incident",
        "",
        "### Root cause",
        "",
        "_To be written: what failed and why (see the alert, log excerpt and timeline above)._",
        "",
        "### Runbook updates",
        "",
        "_To be written: steps that were missing, wrong or slow in the runbook followed._",
        "",
        "### Preventive measures",
        "",
        "_To be written: what keeps this from happening again, with owners and dates._",
        "",
    ]


def incident_export(*, incident_id: Any) -> Iterator[str]:
    """The post-incident record of one incident as pieces of a markdown document (NotFound, at once, for
    an unknown id). A constant number of queries plus one per TIMELINE_CHUNK entries of the timeline: the
    incident with targets, the timeline a chunk at a time, the actions with their approvals, the runbook
    runs with their steps."""
    incident = incident_get(incident_id)
    return _document(incident)


TIMELINE_CHUNK = 1000


def _document(incident: Incident) -> Iterator[str]:
    yield "\n".join([*_header(incident), *_times(incident), *_alert(incident)]) + "\n"
    yield from _timeline(incident_timeline_chunks(incident, size=TIMELINE_CHUNK))
    yield "\n".join([*_actions(list(incident_actions(incident))), *_runbook_runs(incident)]) + "\n"
    yield "\n".join(_to_write()).rstrip() + "\n"
