"""The reaper (Celery beat runs ``reap_actions`` every ``REAPER_INTERVAL_SECONDS``): recovers actions from
lost workers and lost messages, and ends approval requests nobody answered in time.

One pass is one transaction; rows another pass (or a running transition) holds are skipped, not waited for,
and at most 500 of each kind are handled per pass.

Before a lapsed action is re-queued or marked ``needs_attention``, its verb's ``recover`` undoes what the lost
attempt changed only for its own duration (a warehouse scaled up for the action is scaled back): the dead
worker's ``finally`` never ran. Its line goes to the action's log and the audit trail (``action.recovered``);
an error is recorded the same way (message only, the connection's secrets censored) and the pass goes on.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connectors.base import Plan, Verb
from connectors.registry import get_connector_class
from controlplane.actions.lifecycle import (
    action_expire,
    announce_finished_on_commit,
    attention_error,
    dispatch_on_commit,
    executed_effect,
)
from controlplane.actions.models import ActionLogLine, ActionRun, ActionState
from controlplane.audit import context
from controlplane.audit.context import Channel
from controlplane.audit.services import audit_record, redact
from controlplane.catalog.services import connector_for, target_ref

log = logging.getLogger(__name__)

BATCH = 500


def actions_reap() -> dict[str, list[str]]:
    """Recover from lost workers and lost messages; expire unanswered approval requests.

    Running actions whose lease lapsed are re-queued when their verb is idempotent and attempts remain
    (the connector's idempotency token makes the repeat harmless: the next attempt finds what the lost one
    made and follows it), otherwise they need attention, naming what the lost attempt made, and keep the
    target locked until a person resolves them. Queued actions never picked up are dispatched again.
    Actions awaiting approval past their deadline expire. Returns the ids of each kind.
    """
    now = timezone.now()
    grace = timedelta(seconds=settings.CONTROLPLANE["DISPATCH_GRACE_SECONDS"])
    with context.change_context(channel=Channel.SCHEDULE, actor_name="reaper"), transaction.atomic():
        requeued, attention = _leases_lapsed(now)
        redispatched = _dispatch_lost(now, grace)
        expired = _expire_unapproved(now)
    if requeued or attention or redispatched or expired:
        log.warning(
            "reaper: requeued=%s needs_attention=%s redispatched=%s expired=%s",
            *(requeued, attention, redispatched, expired),
        )
    return {"requeued": requeued, "needs_attention": attention, "redispatched": redispatched, "expired": expired}


def _leases_lapsed(now: datetime) -> tuple[list[str], list[str]]:
    """Running actions whose worker stopped renewing the lease: re-queued, or ``needs_attention``."""
    requeued: list[str] = []
    attention: list[str] = []
    lapsed = (
        ActionRun.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("target__connection")
        .filter(state=ActionState.RUNNING, lease_expires_at__lt=now)
    )
    for action in lapsed[:BATCH]:
        _recover(action)
        lost = f"worker {action.worker or '?'} stopped renewing its lease during attempt {action.attempts}"
        if action.idempotent and action.attempts < action.max_attempts:
            action.state, action.queued_at, action.dispatched_at = ActionState.QUEUED, now, now
            action.lease_expires_at, action.worker = None, ""
            action.save()
            audit_record(
                event="action.reaped",
                obj=action,
                before={"state": "running"},
                after={"state": action.state, "attempt": action.attempts},
                reason=f"{lost}; re-queued",
            )
            ActionLogLine.objects.create(
                action_id=action.id,
                attempt=action.attempts,
                level="warning",
                message=f"{lost}; re-queued for attempt {action.attempts + 1}",
            )
            dispatch_on_commit(action)
            requeued.append(str(action.id))
            continue
        why = "the verb is not idempotent" if not action.idempotent else "no attempts left"
        action.state, action.finished_at, action.lease_expires_at = ActionState.NEEDS_ATTENTION, now, None
        action.error = f"{lost}; not retried because {why}: check {action.target.key} by hand"
        effect = executed_effect(action)
        if effect is not None:
            action.error = attention_error(f"{lost}; not retried because {why}", effect)
            action.outcome = effect.model_dump(mode="json")
        action.save()
        audit_record(
            event="action.reaped",
            obj=action,
            before={"state": "running"},
            after={"state": action.state},
            reason=action.error,
        )
        announce_finished_on_commit(action)
        attention.append(str(action.id))
    return requeued, attention


def _recover(action: ActionRun) -> None:
    """Call the verb's ``recover`` for a lapsed action and record its line (or its error) in the action's log
    and the audit trail. Verbs that do not override ``recover`` have nothing to undo: their connector is not
    even built. Never raises: one action's recovery must not stop the reaper's pass."""
    secrets: list[str] = []
    try:
        verb_cls = get_connector_class(action.target.connection.kind).verb_class(action.verb)
        if verb_cls is None or verb_cls.recover is Verb.recover:
            return
        connector = connector_for(action.target.connection)
        secrets = list(connector.secrets.values())
        verb = verb_cls(connector)
        params = verb.params_model.model_validate(action.params)
        plan = Plan.model_validate(action.plan) if action.plan else None
        line = verb.recover(target_ref(action.target), params, plan, str(action.id))
    except Exception as exc:  # a ConnectorError, or any failure of the plugin's code: recorded, never raised
        error = redact(getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}", secrets)[:2000]
        log.warning("reaper: recover failed for action %s (%s): %s", action.id, action.verb, error)
        _recorded(action, f"recover failed: {error}", "error", {"ok": False, "error": error})
        return
    if line:
        line = redact(line, secrets)[:2000]
        _recorded(action, f"recovered: {line}", "warning", {"ok": True, "summary": line})


def _recorded(action: ActionRun, message: str, level: str, after: dict[str, Any]) -> None:
    ActionLogLine.objects.create(action_id=action.id, attempt=action.attempts, level=level, message=message)
    audit_record(event="action.recovered", obj=action, after={"attempt": action.attempts, **after})


def _dispatch_lost(now: datetime, grace: timedelta) -> list[str]:
    """Queued actions whose dispatch is older than ``grace`` (the broker lost them): dispatch again."""
    ids: list[str] = []
    stale = (
        ActionRun.objects.select_for_update(skip_locked=True)
        .filter(state=ActionState.QUEUED, dispatched_at__lt=now - grace)
        .exclude(not_before__gt=now - grace)
    )
    for action in stale[:BATCH]:
        action.dispatched_at = now
        action.save(update_fields=["dispatched_at"])
        audit_record(event="action.redispatched", obj=action, after={"state": action.state})
        dispatch_on_commit(action)
        ids.append(str(action.id))
    return ids


def _expire_unapproved(now: datetime) -> list[str]:
    """Actions awaiting approval past their deadline end ``expired``."""
    cutoff = now - timedelta(hours=settings.CONTROLPLANE["APPROVAL_TTL_HOURS"])
    due = ActionRun.objects.select_for_update(skip_locked=True).filter(
        state=ActionState.AWAITING_APPROVAL, requested_at__lt=cutoff
    )
    ids: list[str] = []
    for action in due[:BATCH]:
        action_expire(action, now=now)
        ids.append(str(action.id))
    return ids
