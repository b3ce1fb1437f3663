"""Steps of an action's life that the request side (``services``), the worker (``runner``) and the reaper
(``reaper``) all take: dispatch once the transaction commits, announce an end once it commits, end an
action nobody approved in time, and name what an earlier attempt made in the outside system.

Each runs inside the caller's transaction and writes its audit event there; none of them checks roles or
policy (the caller did, or the caller is the system).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction

from connectors.base import Outcome
from controlplane.actions import notices, signals
from controlplane.actions.models import ActionRun, ActionState
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_record

log = logging.getLogger(__name__)


def dispatch_on_commit(action: ActionRun, countdown: float = 0) -> None:
    """Send the action to a worker once the caller's transaction commits (``countdown`` seconds later)."""
    action_id, request_id = str(action.id), action.request_id

    def send() -> None:
        from controlplane.actions.tasks import execute_action

        try:
            execute_action.apply_async(args=(action_id, request_id), countdown=countdown)
        except Exception:
            # The row says queued with dispatched_at set: the reaper dispatches it again after the grace
            # period, so a broker outage delays the action instead of losing it.
            log.exception("could not dispatch action %s; the reaper will retry", action_id)

    transaction.on_commit(send)


def announce_finished_on_commit(action: ActionRun) -> None:
    """Once the transaction that ended the action commits, announce the end on Redis (API waiters), then
    tell the subscribers of ``action_finished`` (incident timelines, runbook steps)."""
    action_id, incident_id, channel, verb = action.id, action.incident_id, action.channel, action.verb
    requires_approval = action.requires_approval

    def send() -> None:
        notices.finished_publish(action_id=action_id)  # first: a waiting bot need not wait for the receivers
        signals.action_finished.send(
            sender=ActionRun,
            action_id=action_id,
            incident_id=incident_id,
            channel=channel,
            requires_approval=requires_approval,
            verb=verb,
        )

    transaction.on_commit(send)


def action_expire(action: ActionRun, *, now: datetime) -> None:
    """End an action that awaited approval past ``ACTION_APPROVAL_TTL_HOURS``, in the caller's transaction
    (the row locked by the caller): by the reaper, or by an approval that came too late."""
    hours = settings.CONTROLPLANE["APPROVAL_TTL_HOURS"]
    action.state, action.finished_at = ActionState.EXPIRED, now
    action.error = f"nobody approved it within {hours} h of the request; request it again if it is still needed"
    action.save(update_fields=["state", "finished_at", "error"])
    audit_record(
        event="action.expired",
        obj=action,
        before={"state": "awaiting_approval"},
        after={"state": action.state},
        reason=action.error,
    )
    announce_finished_on_commit(action)


def executed_effect(action: ActionRun) -> Outcome | None:
    """The last ``action.executed`` milestone of ``action`` in the audit trail, as a partial outcome."""
    event = (
        AuditEvent.objects.filter(
            object_type=ActionRun._meta.label_lower, object_id=str(action.id), event="action.executed"
        )
        .order_by("-seq")
        .first()
    )
    if event is None:
        return None
    after: dict[str, Any] = event.after or {}
    return Outcome(summary=str(after.get("summary", "")), details=dict(after.get("details") or {}))


def attention_error(error: str, effect: Outcome) -> str:
    """The message of an action that made something and cannot see it through."""
    link = effect.details.get("url")
    where = f" ({link})" if link else ""
    return (
        f"{error}. What this action made still exists and the target stays locked: {effect.summary}{where}. "
        "Check it by hand, then resolve this action."
    )
