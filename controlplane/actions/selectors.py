"""Reads of actions, shaped for lists and detail pages with a constant number of queries."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db.models import Count, Prefetch, QuerySet, Subquery
from django.utils import timezone

from controlplane.actions.models import ACTIVE_STATES, ActionLogLine, ActionRun, ActionState, Approval
from controlplane.errors import InvalidInput, NotFound

_FILTERS = {
    "state": "state",
    "verb": "verb",
    "channel": "channel",
    "incident": "incident_id",
}
# Filters naming a related row compare the foreign key with that row's id in a subquery rather than
# joining: the planner then reads the (fk, requested_at, id) index in page order however rare the value
# (a join let it walk the whole history newest first, looking for a target's few old actions).
_BY_NAME: dict[str, tuple[str, str, str]] = {
    "target": ("catalog.Target", "key", "target_id"),
    "environment": ("catalog.Environment", "name", "environment_id"),
    "requested_by": (settings.AUTH_USER_MODEL, "username", "requested_by_id"),
}


def action_list(filters: Mapping[str, Any] | None = None) -> QuerySet[ActionRun]:
    """Actions newest first, filtered by exact values of ``state``, ``verb``, ``target`` ..."""
    qs = ActionRun.objects.select_related("target", "environment", "requested_by")
    for name, value in (filters or {}).items():
        if value in (None, ""):
            continue
        if name in _BY_NAME:
            label, field, column = _BY_NAME[name]
            ids = apps.get_model(label)._default_manager.filter(**{field: value}).values("pk")[:1]
            qs = qs.filter(**{column: Subquery(ids)})
            continue
        if name not in _FILTERS:
            continue
        if name == "state" and value not in ActionState.values:
            raise InvalidInput(f"unknown state {value!r}; states are {ActionState.values}")
        if name == "incident" and not re.fullmatch(r"[0-9]{1,18}", str(value)):
            raise InvalidInput(f"incident must be an incident number, not {value!r}")
        qs = qs.filter(**{_FILTERS[name]: value})
    return qs.order_by("-requested_at")


def action_get(action_id: Any) -> ActionRun:
    """One action with target (and its connection), environment, requester and approvals loaded."""
    action = (
        ActionRun.objects.select_related("target__connection__environment", "environment", "requested_by")
        .prefetch_related(Prefetch("approvals", queryset=Approval.objects.select_related("approver")))
        .filter(id=action_id)
        .first()
    )
    if action is None:
        raise NotFound(f"no action {action_id}")
    return action


def action_approvals(action: ActionRun) -> list[Approval]:
    """The decisions on an action, oldest first, with their approvers. Only an action that awaited approval
    can have any (approve and reject refuse every other state): the others need no query."""
    if not action.requires_approval:
        return []
    if "approvals" in getattr(action, "_prefetched_objects_cache", {}):
        return list(action.approvals.all())
    return list(action.approvals.select_related("approver"))


def awaiting_approval_for(user: Any) -> QuerySet[ActionRun]:
    """Actions waiting for a decision that ``user`` may give (not their own)."""
    return action_list({"state": ActionState.AWAITING_APPROVAL}).exclude(requested_by_id=user.pk)


# ------------------------------------------------------------------------------------------- web UI reads


# States that need someone: counted over all time. The others only over a recent window: counting a
# million finished actions on every dashboard refresh is what made it slow (bench/history_pages.py).
OPEN_STATES = (*ACTIVE_STATES, ActionState.NEEDS_ATTENTION)
RECENT_WINDOW = timedelta(hours=24)


def action_state_counts(*, now: datetime | None = None) -> dict[str, int]:
    """Actions per state (every state present, zero when none): the open states over all time, the ended
    ones requested within ``RECENT_WINDOW``. Two GROUP BY queries, each on its own index (one query with
    an OR of the two made Postgres read the whole table)."""
    counts = dict.fromkeys(ActionState.values, 0)
    since = (now or timezone.now()) - RECENT_WINDOW
    grouped = ActionRun.objects.order_by().values_list("state").annotate(n=Count("id"))
    for state, n in grouped.filter(state__in=OPEN_STATES):
        counts[state] = n
    for state, n in grouped.filter(requested_at__gte=since).exclude(state__in=OPEN_STATES):
        counts[state] = n
    return counts


def actions_in_flight(limit: int = 50) -> QuerySet[ActionRun]:
    """Running and queued actions, running first, oldest first within a state (what is happening now)."""
    in_flight = (ActionState.RUNNING, ActionState.QUEUED)
    return (
        ActionRun.objects.select_related("target", "environment", "requested_by")
        .filter(state__in=in_flight)
        .order_by("-state", "requested_at")[:limit]  # "running" sorts after "queued": descending puts it first
    )


def action_log_tail(action_id: Any, limit: int = 200) -> list[ActionLogLine]:
    """The last ``limit`` log lines of an action, oldest first (one indexed query)."""
    lines = list(ActionLogLine.objects.filter(action_id=action_id).order_by("-id")[:limit])
    lines.reverse()
    return lines
