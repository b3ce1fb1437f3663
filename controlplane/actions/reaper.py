"""The reaper (Celery beat runs ``reap_actions`` every ``REAPER_INTERVAL_SECONDS``): recovers actions from
lost workers and lost messages, and ends approval requests nobody answered in time.

One pass is one transaction; rows another pass (or a running transition) holds are skipped, not waited for,
and at most 500 of each kind are handled per pass.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

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
from controlplane.audit.services import audit_record

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
    lapsed = ActionRun.objects.select_for_update(skip_locked=True).filter(
        state=ActionState.RUNNING, lease_expires_at__lt=now
    )
    for action in lapsed[:BATCH]:
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
