"""Every Block Kit payload the control plane sends, and the button builder the interaction handlers read.

Builders are pure: they take rows already read and return ``(text, blocks)``, ``text`` being the
notification and screen-reader fallback. Slack's limits are kept here: a section's text at most 3000
characters, a button's value 2000, a confirm dialog's text 300 (https://api.slack.com/reference/block-kit).
Text from outside (titles, errors, logs) is escaped for mrkdwn (``&``, ``<``, ``>``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.urls import reverse

from connectors.base import Plan
from controlplane.formatting import plan_cost

MAX_SECTION = 3000
MAX_VALUE = 2000
MAX_CONFIRM_TEXT = 300
MAX_BUTTON_TEXT = 75
LOG_LINES = 15  # the end of the failed try's log the message shows

SEVERITY_EMOJI = {"critical": ":red_circle:", "high": ":large_orange_circle:", "medium": ":large_yellow_circle:"}
STATUS_EMOJI = {"acknowledged": ":eyes:", "mitigated": ":adhesive_bandage:", "resolved": ":white_check_mark:"}
# A verb's button, named for what it does to the things its plan counts.
VERB_LABELS = {
    "clear": "Clear failed tasks",
    "rerun": "Rerun",
    "backfill": "Backfill",
    "pause": "Pause",
    "resume-task": "Resume",
    "refresh-mart": "Refresh mart",
}
ACTION_EMOJI = {
    "awaiting_approval": ":hourglass_flowing_sand:",
    "queued": ":inbox_tray:",
    "running": ":arrows_counterclockwise:",
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "cancelled": ":no_entry_sign:",
    "rejected": ":no_entry_sign:",
    "expired": ":hourglass:",
    "needs_attention": ":warning:",
}

Blocks = list[dict[str, Any]]


def escape(text: Any) -> str:
    """Text from outside, safe in mrkdwn: Slack reads ``<`` ``>`` as links and mentions, ``&`` as entities."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def link(url: str, label: str) -> str:
    return f"<{url}|{escape(label).replace('|', '¦')}>"


def public_url(name: str, *args: Any) -> str:
    """An absolute link to one of the control plane's pages, as people reach it (``SLACK["PUBLIC_URL"]``)."""
    return settings.SLACK["PUBLIC_URL"].rstrip("/") + reverse(name, args=args)


def when(at: datetime | None) -> str:
    """A time Slack shows in each reader's time zone, with the UTC time as fallback."""
    if at is None:
        return "-"
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{at:%Y-%m-%d %H:%M} UTC>"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": bounded(text, MAX_SECTION)}}


def context(*parts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": bounded(p, MAX_SECTION)} for p in parts if p]}


def confirm_dialog(title: str, text: str) -> dict[str, Any]:
    """The dialog Slack shows before a destructive button acts: the plan's summary, "Run it" or "Cancel"."""
    return {
        "title": {"type": "plain_text", "text": bounded(title, 100)},
        "text": {"type": "mrkdwn", "text": bounded(escape(text), MAX_CONFIRM_TEXT)},
        "confirm": {"type": "plain_text", "text": "Run it"},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }


def button(
    action_id: str, text: str, value: dict[str, Any], *, style: str | None = None, confirm: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A button whose ``value`` is compact JSON (what ``slack/views.py`` reads back). A value over Slack's
    2000 characters raises ValueError: the caller leaves that button out."""
    encoded = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if len(encoded) > MAX_VALUE:
        raise ValueError(f"the value of {action_id} is {len(encoded)} characters; Slack allows {MAX_VALUE}")
    element: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": bounded(text, MAX_BUTTON_TEXT)},
        "value": encoded,
    }
    if style:
        element["style"] = style
    if confirm:
        element["confirm"] = confirm
    return element


# --------------------------------------------------------------------------------------- incidents


@dataclass(frozen=True)
class Remediation:
    """The verb an incident's message offers, with what its plan touches (None: the plan is not known, it
    could not be computed or is not computed yet)."""

    verb: str
    target: str
    params: dict[str, Any]
    plan_summary: str | None = None
    touches: int | None = None
    plan_error: str = ""

    @property
    def label(self) -> str:
        name = VERB_LABELS.get(self.verb, self.verb.replace("-", " ").capitalize())
        if self.verb == "clear" and self.params.get("only_failed") is False:
            name = "Clear tasks"
        return f"{name} ({self.touches})" if self.touches else name

    @property
    def confirm_text(self) -> str:
        if self.plan_summary:
            return f"{self.plan_summary}. Policy applies as on the web: approval when it requires one."
        why = f" ({self.plan_error})" if self.plan_error else ""
        return (
            f"{self.verb} on {self.target}: the plan could not be shown here{why}. It is computed when you press; "
            "approval when the policy requires one."
        )


@dataclass(frozen=True)
class IncidentView:
    """What an incident's message shows, read by ``slack/receivers.py``."""

    id: int
    title: str
    severity: str
    status: str
    source: str
    summary: str
    pipeline: str
    environment: str
    first_seen: datetime | None
    repeats: int
    task: str  # the failed task (``dag.task``), or ""
    run: str
    log_excerpt: str
    log_url: str | None
    runbook_slug: str | None
    runbook_title: str
    remediation: Remediation | None
    latest_action: str  # one line on the newest action taken for it, or ""


def _log_block(excerpt: str, room: int) -> str:
    lines = excerpt.rstrip().splitlines()[-LOG_LINES:]
    text = "\n".join(lines).replace("```", "` ` `")  # a fence in the log would end the block
    if len(text) > room - 8:
        text = "…" + text[-(room - 9) :]
    return f"```{escape(text)}```" if text else ""


def incident_message(view: IncidentView) -> tuple[str, Blocks]:
    """The incident's message in its channel: severity and title, the facts, the finding (the failed task and
    the end of its log), links, and (while it is open) the buttons Acknowledge, Start runbook and the
    suggested remediation with its plan in a confirm dialog."""
    incident_url = public_url("web:incident", view.id)
    emoji = SEVERITY_EMOJI.get(view.severity, ":white_circle:")
    status = f"{STATUS_EMOJI.get(view.status, '')} {view.status}".strip()
    head = f"{emoji} *{link(incident_url, f'INC-{view.id}')}* {escape(view.title)}\n*{view.severity}* · {status}"
    fields = [
        ("Pipeline", view.pipeline or "-"),
        ("Environment", view.environment or "-"),
        ("Source", view.source or "-"),
        ("First seen", when(view.first_seen)),
        ("Repeats", str(max(0, view.repeats - 1))),
    ]
    blocks: Blocks = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": bounded(head, MAX_SECTION)},
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{value if name == 'First seen' else escape(value)}"}
                for name, value in fields
            ],
        }
    ]
    what = ""
    if view.task:
        what = f"*Failed:* `{escape(view.task)}`" + (f" (run `{escape(view.run)}`)" if view.run else "")
    summary = escape(bounded(view.summary.strip(), 500)) if view.summary.strip() else ""
    finding = "\n".join(part for part in (what, summary) if part)
    if view.log_excerpt:
        finding = f"{finding}\n" if finding else ""
        finding += _log_block(view.log_excerpt, MAX_SECTION - len(finding))
    if finding:
        blocks.append(section(finding))
    if view.latest_action:
        blocks.append(section(view.latest_action))
    links = [link(incident_url, "Incident")]
    if view.runbook_slug:
        links.append(link(public_url("runbooks:detail", view.runbook_slug), f"Runbook: {view.runbook_title}"))
    if view.log_url:
        links.append(link(view.log_url, "Log"))
    blocks.append(context(" · ".join(links)))
    if view.status != "resolved":
        buttons = []
        if view.status == "triggered":
            buttons.append(button("incident.ack", "Acknowledge", {"incident": view.id}))
        if view.runbook_slug:
            value = {"incident": view.id, "runbook": view.runbook_slug}
            buttons.append(button("runbook.start", "Start runbook", value, style="primary"))
        if view.remediation is not None:
            r = view.remediation
            value = {"incident": view.id, "verb": r.verb, "target": r.target, "params": r.params}
            try:
                confirm = confirm_dialog(f"{r.label}?", r.confirm_text)
                buttons.append(button("action.launch", r.label, value, style="danger", confirm=confirm))
            except ValueError:
                pass  # params too long for a button: the incident page offers it
        if buttons:
            blocks.append({"type": "actions", "block_id": f"incident-{view.id}", "elements": buttons})
    text = f"[{view.severity}] INC-{view.id} {view.title} ({view.status})"
    return text, blocks


# ------------------------------------------------------------------------------------ thread lines


def action_ref(action: Any) -> str:
    """``clear`` on ``dev.airflow.x`` linked to the action's page."""
    url = public_url("web:action", action.id)
    return f"{link(url, action.verb)} on `{escape(action.target.key)}`"


def line(text: str) -> tuple[str, Blocks]:
    """A thread line: one section; the fallback text is the same words without markup."""
    return text, [section(text)]


def action_requested_line(action: Any, requester: str) -> tuple[str, Blocks]:
    plan = escape((action.plan or {}).get("summary", ""))
    text = f"{ACTION_EMOJI['queued']} {escape(requester)} requested {action_ref(action)}"
    text += f": {plan}" if plan else ""
    if action.requires_approval:
        text = f"{ACTION_EMOJI['awaiting_approval']} {text}\nWaiting for approval: {escape(action.approval_reason)}"
    return line(text)


def action_decided_line(action: Any, decision: str, approver: str, comment: str) -> tuple[str, Blocks]:
    emoji = ":thumbsup:" if decision == "approved" else ACTION_EMOJI["rejected"]
    note = f": {escape(comment)}" if comment else ""
    return line(f"{emoji} {escape(approver)} {decision} {action_ref(action)}{note}")


def action_started_line(action: Any, attempt: int) -> tuple[str, Blocks]:
    of = f" (attempt {attempt} of {action.max_attempts})" if attempt > 1 else ""
    return line(f"{ACTION_EMOJI['running']} {action_ref(action)} is running{of}")


def action_progress_line(action: Any, done: int, total: int) -> tuple[str, Blocks]:
    percent = min(100, round(100 * done / total)) if total else 0
    return line(f"{ACTION_EMOJI['running']} {action_ref(action)}: {percent}% ({done} of {total})")


def action_outcome(action: Any) -> str:
    """One line on how an action ended (or stands)."""
    emoji = ACTION_EMOJI.get(action.state, "")
    if action.state == "succeeded":
        verdict = (action.verification or {}).get("summary", "")
        return f"{emoji} {action_ref(action)} verified" + (f": {escape(verdict)}" if verdict else "")
    if action.state in ("failed", "needs_attention", "expired", "cancelled", "rejected"):
        words = {"needs_attention": "needs attention"}.get(action.state, action.state)
        error = escape(bounded(action.error, 1500)) if action.error else ""
        return f"{emoji} {action_ref(action)} {words}" + (f": {error}" if error else "")
    return f"{emoji} {action_ref(action)} is {action.state.replace('_', ' ')}"


def action_finished_line(action: Any) -> tuple[str, Blocks]:
    return line(action_outcome(action))


def incident_status_line(status: str, actor: str) -> tuple[str, Blocks]:
    emoji = STATUS_EMOJI.get(status, "")
    return line(f"{emoji} {escape(actor)} marked the incident {status}".strip())


# --------------------------------------------------------------------------------------- approvals


def approval_request(action: Any, requester: str) -> tuple[str, Blocks]:
    """An action waiting for a second person: what, where, why, the plan; Approve (with the plan in its
    confirm dialog) and Reject."""
    plan = action.plan or {}
    incident = ""
    if action.incident_id:
        incident = f" for {link(public_url('web:incident', action.incident_id), f'INC-{action.incident_id}')}"
    head = (
        f"{ACTION_EMOJI['awaiting_approval']} *{escape(requester)}* asks to run {action_ref(action)} "
        f"in *{escape(action.environment.name)}*{incident}\n"
        f"*Why:* {escape(action.reason)}\n*Plan:* {escape(plan.get('summary', ''))} (risk {escape(action.risk)})\n"
    )
    cost = plan_cost(plan.get("estimated_bytes"), plan.get("estimated_cost_usd"))
    if cost:
        head += f"*Cost:* {escape(cost)}\n"
    head += f"*Needs approval:* {escape(action.approval_reason)}"
    warnings = plan.get("warnings") or []
    if warnings:
        head += "\n" + "\n".join(f":warning: {escape(w)}" for w in warnings[:5])
    value = {"action": str(action.id)}
    summary = str(plan.get("summary") or f"{action.verb} on {action.target.key}")
    confirm = confirm_dialog(f"Approve {action.verb}?", summary)
    blocks: Blocks = [
        section(head),
        {
            "type": "actions",
            "block_id": f"approval-{action.id}",
            "elements": [
                button("action.approve", "Approve", value, style="danger", confirm=confirm),
                button("action.reject", "Reject", value),
            ],
        },
        context(link(public_url("web:action", action.id), "Action"), link(public_url("web:approvals"), "Approvals")),
    ]
    return f"{requester} asks to run {action.verb} on {action.target.key}: approve or reject", blocks


def approval_decided(action: Any, verdict: str) -> tuple[str, Blocks]:
    """The approval request once decided (or ended otherwise): the same facts, the verdict, no buttons."""
    plan = action.plan or {}
    head = (
        f"{action_ref(action)} in *{escape(action.environment.name)}*\n"
        f"*Plan:* {escape(plan.get('summary', ''))}\n{verdict}"
    )
    return f"{action.verb} on {action.target.key}: {verdict}", [
        section(head),
        context(link(public_url("web:action", action.id), "Action")),
    ]


# ------------------------------------------------------------------------------ /runbook run


def preview_blocks(*, preview_id: int, verb: str, target: str, plan: Plan, approval: str) -> list[dict[str, Any]]:
    """``/runbook run``'s answer: what the action would touch, then Confirm (a danger button with a confirm
    dialog when the plan is not low risk) and Cancel."""
    lines = [f"*Preview: {verb} on `{target}`*", plan.summary]
    if plan.counts:
        lines.append(", ".join(f"{name}: {count}" for name, count in sorted(plan.counts.items())))
    cost = plan_cost(plan.estimated_bytes, plan.estimated_cost_usd)
    if cost:
        lines.append(f"Cost: {cost}")
    lines += [f":warning: {warning}" for warning in plan.warnings]
    lines.append(f"Risk: {plan.risk.value}." + (f" Needs approval: {approval}." if approval else ""))
    destructive = plan.risk.value != "low"
    confirm = button(
        "preview.confirm",
        "Confirm",
        {"preview": preview_id},
        style="danger" if destructive else "primary",
        confirm=confirm_dialog("Run this action?", plan.summary) if destructive else None,
    )
    cancel = button("preview.cancel", "Cancel", {"preview": preview_id})
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": bounded("\n".join(lines), MAX_SECTION)}},
        {"type": "actions", "block_id": f"preview-{preview_id}", "elements": [confirm, cancel]},
    ]
