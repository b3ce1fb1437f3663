"""Reads of incidents: lists with filters, detail with timeline and the actions that fit."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Count, Exists, OuterRef, Prefetch, QuerySet
from django.utils import timezone

from connectors.registry import get_connector_class
from controlplane.actions.models import ActionRun, Approval
from controlplane.catalog.models import Pipeline, Target
from controlplane.errors import InvalidInput, NotFound
from controlplane.incidents.models import Incident, IncidentEvent

_FILTERS = {"status": "status", "severity": "severity", "pipeline": "pipeline__name", "source": "source"}

# ``age`` presets of the web list, in hours (None: no limit).
AGE_CHOICES: dict[str, float | None] = {"24h": 24, "7d": 24 * 7, "30d": 24 * 30, "all": None}
MAX_AGE_HOURS = 24 * 366 * 100  # ``max_age_hours`` up to a century: any incident the product can hold
OPEN_STATUSES = (Incident.Status.TRIGGERED, Incident.Status.ACKNOWLEDGED, Incident.Status.MITIGATED)
# Most severe first: the order lists and counts show.
SEVERITY_ORDER = (Incident.Severity.CRITICAL, Incident.Severity.HIGH, Incident.Severity.MEDIUM, Incident.Severity.LOW)


def incident_list(filters: Mapping[str, Any] | None = None) -> QuerySet[Incident]:
    """Incidents newest first; ``status``, ``severity``, ``pipeline`` exact (``status=open`` for all but
    resolved, ``status=all`` for any), ``open=true`` for all but resolved, ``max_age_hours`` or ``age``
    (24h, 7d, 30d, all) for recent ones. Rows come with their pipeline: one query for any page."""
    filters = filters or {}
    qs = Incident.objects.select_related("pipeline")
    status = filters.get("status")
    if status == "open":  # IN, not NOT =: the (status, -created_at) index serves it with resolved history
        qs = qs.filter(status__in=OPEN_STATUSES)
    for name, field in _FILTERS.items():
        value = filters.get(name)
        if value and not (name == "status" and value in ("open", "all")):
            choices = {"status": Incident.Status.values, "severity": Incident.Severity.values}.get(name)
            if choices is not None and value not in choices:
                extra = ["open", "all"] if name == "status" else []
                raise InvalidInput(f"unknown {name} {value!r}; use one of {choices + extra}")
            qs = qs.filter(**{field: value})
    if str(filters.get("open", "")).lower() in ("1", "true", "yes"):
        qs = qs.filter(status__in=OPEN_STATUSES)
    max_age: Any = filters.get("max_age_hours")
    if max_age not in (None, ""):
        try:
            max_hours = float(max_age)
        except (TypeError, ValueError):
            max_hours = math.nan
        if not 0 <= max_hours <= MAX_AGE_HOURS:  # also refuses nan and inf, which timedelta cannot hold
            raise InvalidInput(
                f"max_age_hours must be a number of hours from 0 to {MAX_AGE_HOURS}",
                details={"fields": {"max_age_hours": ["out of range"]}},
            )
        qs = qs.filter(created_at__gte=timezone.now() - timedelta(hours=max_hours))
    if age := filters.get("age"):
        if age not in AGE_CHOICES:
            raise InvalidInput(f"unknown age {age!r}; use one of {list(AGE_CHOICES)}")
        hours = AGE_CHOICES[age]
        if hours is not None:
            qs = qs.filter(created_at__gte=timezone.now() - timedelta(hours=hours))
    return qs.order_by("-created_at")


def incident_open_counts() -> dict[str, int]:
    """Open incidents by severity, most severe first, every severity present (one GROUP BY query)."""
    counts = {str(s): 0 for s in SEVERITY_ORDER}
    rows = Incident.objects.filter(status__in=OPEN_STATUSES).order_by().values_list("severity").annotate(n=Count("id"))
    for severity, n in rows:
        counts[severity] = n
    return counts


def incident_pipeline_names() -> list[str]:
    """Names of the pipelines incidents were opened for (the list page's pipeline picker). EXISTS per
    pipeline (one probe of the incidents' pipeline index each), not a join over every incident: the join
    took 0.3 s at 1 M resolved incidents."""
    opened_for = Incident.objects.filter(pipeline=OuterRef("pk"))
    return list(Pipeline.objects.filter(Exists(opened_for)).order_by("name").values_list("name", flat=True))


def incident_get(incident_id: Any, *, with_timeline: bool = True) -> Incident:
    """One incident with its targets (and their connections) and, unless ``with_timeline`` is False, its
    whole timeline loaded (pages that cap the timeline read it with ``incident_timeline``)."""
    try:
        pk = int(incident_id)
    except (TypeError, ValueError):
        raise NotFound(f"no incident {incident_id}") from None
    prefetch: list[Any] = [
        Prefetch("targets", queryset=Target.objects.select_related("connection__environment").order_by("key"))
    ]
    if with_timeline:
        prefetch.append(Prefetch("events", queryset=IncidentEvent.objects.order_by("at", "id")))
    incident = Incident.objects.select_related("pipeline").prefetch_related(*prefetch).filter(pk=pk).first()
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    return incident


@dataclass(frozen=True)
class Timeline:
    """The newest ``limit`` entries of a timeline, oldest first; ``truncated`` when older ones exist."""

    events: list[IncidentEvent]
    truncated: bool


def incident_timeline(incident: Incident, *, limit: int | None = 500) -> Timeline:
    """The incident's timeline, newest last, capped at the newest ``limit`` entries (None: all). One query
    whatever its length: actors are read from the stored ``actor_name``, not joined."""
    qs = IncidentEvent.objects.filter(incident=incident)
    if limit is None:
        return Timeline(list(qs.order_by("at", "id")), truncated=False)
    newest = list(qs.order_by("-at", "-id")[: limit + 1])
    truncated = len(newest) > limit
    events = newest[:limit]
    events.reverse()
    return Timeline(events, truncated)


def incident_actions(incident: Incident) -> QuerySet[ActionRun]:
    """The actions taken for an incident, oldest first, with target, environment, requester and every
    approval (with its approver) loaded: two queries for any number of actions."""
    return (
        ActionRun.objects.filter(incident=incident)
        .select_related("target", "environment", "requested_by")
        .prefetch_related(Prefetch("approvals", queryset=Approval.objects.select_related("approver")))
        .order_by("requested_at")
    )


@dataclass(frozen=True)
class RecentActions:
    """The newest actions of an incident, oldest first, and how many it has in all."""

    actions: list[ActionRun]
    total: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.actions)


def incident_actions_recent(incident: Incident, *, limit: int = 50) -> RecentActions:
    """The newest ``limit`` actions of an incident (loaded as ``incident_actions`` loads them), oldest first,
    and the number of all of them: three queries whatever the number (the page links the rest to the
    action history, filtered by the incident)."""
    newest = list(incident_actions(incident).order_by("-requested_at", "-id")[:limit])
    newest.reverse()
    return RecentActions(newest, ActionRun.objects.filter(incident=incident).count())


def suggested_actions(incident: Incident) -> list[dict[str, Any]]:
    """The verbs the incident's targets offer, with params pre-filled from the alert where the verb's
    params use Airflow's own field names (``dag_run_id``, ``task_ids``), so one click fits the failure."""
    details = incident.details or {}
    prefill = {
        "dag_run_id": details.get("run_id"),
        "task_ids": [details["task_id"]] if details.get("task_id") else None,
    }
    out = []
    for target in incident.targets.all():
        cls = get_connector_class(target.connection.kind)
        for verb in cls.verbs:
            if target.kind not in verb.target_kinds:
                continue
            fields = verb.params_model.model_fields
            params = {k: v for k, v in prefill.items() if k in fields and v is not None}
            out.append({"verb": verb.name, "target": target.key, "params": params, "description": verb.description})
    return out
