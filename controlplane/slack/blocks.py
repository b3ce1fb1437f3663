"""Block Kit builders (on this branch: only what ``/runbook run``'s preview needs; slackout's module holds
the incident, thread and approval messages and the same ``button`` builder)."""

from __future__ import annotations

import json
from typing import Any

from connectors.base import Plan

MAX_TEXT = 2900  # a section's text is limited to 3000 characters


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def button(
    action_id: str, text: str, value: dict[str, Any], *, style: str = "", confirm: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A button whose ``value`` is compact JSON (Slack allows 2000 characters); ``style`` "danger" or
    "primary"; ``confirm`` a dialog Slack shows before sending the press."""
    out: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        "value": _json(value),
    }
    if style:
        out["style"] = style
    if confirm is not None:
        out["confirm"] = confirm
    return out


def confirm_dialog(summary: str) -> dict[str, Any]:
    return {
        "title": {"type": "plain_text", "text": "Run this action?"},
        "text": {"type": "mrkdwn", "text": summary[:300]},
        "confirm": {"type": "plain_text", "text": "Run it"},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }


def preview_blocks(*, preview_id: int, verb: str, target: str, plan: Plan, approval: str) -> list[dict[str, Any]]:
    """``/runbook run``'s answer: what the action would touch, then Confirm (a danger button with a confirm
    dialog when the plan is not low risk) and Cancel."""
    lines = [f"*Preview: {verb} on `{target}`*", plan.summary]
    if plan.counts:
        lines.append(", ".join(f"{name}: {count}" for name, count in sorted(plan.counts.items())))
    lines += [f":warning: {warning}" for warning in plan.warnings]
    lines.append(f"Risk: {plan.risk.value}." + (f" Needs approval: {approval}." if approval else ""))
    destructive = plan.risk.value != "low"
    confirm = button(
        "preview.confirm",
        "Confirm",
        {"preview": preview_id},
        style="danger" if destructive else "primary",
        confirm=confirm_dialog(plan.summary) if destructive else None,
    )
    cancel = button("preview.cancel", "Cancel", {"preview": preview_id})
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:MAX_TEXT]}},
        {"type": "actions", "block_id": f"preview-{preview_id}", "elements": [confirm, cancel]},
    ]
