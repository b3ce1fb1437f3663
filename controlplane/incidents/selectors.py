"""Reads of incidents: lists with filters, detail with timeline and the actions that fit."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Count, Exists, OuterRef, Prefetch, QuerySet
from django.utils import timezone

from connectors.registry import get_connector_class
from controlplane.actions.models import ActionRun, Approval
from controlplane.catalog.models import Pipeline, Target
from controlplane.errors import InvalidInput, NotFound
from controlplane.incidents.alerts import log_url_allowed
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


def incident_get(incident_id: Any) -> Incident:
    """One incident with its pipeline and its targets (and their connections). Never its timeline, which
    can be long: pages read it with ``incident_timeline`` or page it by ``TIMELINE_ORDER``."""
    try:
        pk = int(incident_id)
    except (TypeError, ValueError):
        raise NotFound(f"no incident {incident_id}") from None
    targets = Prefetch("targets", queryset=Target.objects.select_related("connection__environment").order_by("key"))
    incident = Incident.objects.select_related("pipeline").prefetch_related(targets).filter(pk=pk).first()
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    return incident


def incident_log_url(incident: Incident) -> str | None:
    """The alert's link to the task log, if it points at the Airflow of one of the incident's catalog
    targets (checked again on reading: an incident stored before the intake checked it is covered too)."""
    url = (incident.details or {}).get("log_url")
    base_urls = [t.connection.config.get("base_url") for t in incident.targets.all()]
    return url if isinstance(url, str) and log_url_allowed(url, base_urls) else None


# A timeline in time order; ``id`` breaks ties. Every read of a timeline is bounded by pages of it.
TIMELINE_ORDER = ("at", "id")


def incident_timeline_events(incident: Incident | int) -> QuerySet[IncidentEvent]:
    """An incident's timeline entries, unordered: callers read them a page at a time by TIMELINE_ORDER."""
    return IncidentEvent.objects.filter(incident=incident)


@dataclass(frozen=True)
class Timeline:
    """The newest ``limit`` entries of a timeline, oldest first; ``truncated`` when older ones exist."""

    events: list[IncidentEvent]
    truncated: bool


def incident_timeline(incident: Incident, *, limit: int) -> Timeline:
    """The newest ``limit`` entries of the incident's timeline, oldest first. One query whatever its
    length: actors are read from the stored ``actor_name``, not joined."""
    newest = list(incident_timeline_events(incident).order_by("-at", "-id")[: limit + 1])
    truncated = len(newest) > limit
    events = newest[:limit]
    events.reverse()
    return Timeline(events, truncated)


def incident_timeline_chunks(incident: Incident, *, size: int = 1000) -> Iterator[list[IncidentEvent]]:
    """The whole timeline, oldest first, ``size`` entries a query (keyset on TIMELINE_ORDER): what a
    reader of every entry (the export) holds in memory is one chunk, whatever the timeline's length."""
    after: tuple[Any, int] | None = None
    while True:
        qs = incident_timeline_events(incident)
        if after is not None:
            qs = qs.filter(at__gte=after[0]).exclude(at=after[0], id__lte=after[1])
        chunk = list(qs.order_by(*TIMELINE_ORDER)[:size])
        if chunk:
            yield chunk
        if len(chunk) < size:
            return
        after = (chunk[-1].at, chunk[-1].pk)


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
