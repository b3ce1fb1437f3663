"""Reads for runbooks: which runbooks fit an incident, a run with its steps, the template context."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from controlplane.actions.models import ActionState
from controlplane.errors import NotFound
from runbooks.models import Runbook, RunbookRun, RunbookVersion, StepRun

if TYPE_CHECKING:
    from controlplane.incidents.models import Incident


def runbook_list() -> list[RunbookVersion]:
    """The latest version of every loaded runbook, by id."""
    return [
        rb.latest for rb in Runbook.objects.select_related("latest__runbook").order_by("slug") if rb.latest is not None
    ]


def runbook_get(slug: str, version: int | None = None) -> RunbookVersion:
    qs = RunbookVersion.objects.select_related("runbook").filter(runbook__slug=slug)
    found = qs.filter(version=version).first() if version else qs.order_by("-version").first()
    if found is None:
        raise NotFound(f"no runbook {slug!r}" + (f" version {version}" if version else ""))
    return found


def _score(definition: dict[str, Any], incident: Incident) -> int:
    """0: does not apply; higher: a closer fit (alert type, then layer, then pipeline pattern)."""
    applies = definition.get("applies_to") or {}
    types, layers, pipelines = applies.get("alert_types", []), applies.get("layers", []), applies.get("pipelines", [])
    if not incident.alert_type or incident.alert_type not in types:
        return 0
    score = 1
    layer = incident.pipeline.layer if incident.pipeline else ""
    if layers:
        if layer and layer not in layers:
            return 0
        score += 1 if layer else 0
    names = {incident.pipeline.name} if incident.pipeline else set()
    if dag_id := (incident.details or {}).get("dag_id"):
        names.add(str(dag_id))
    if pipelines:
        if not any(fnmatch.fnmatch(name, pattern) for name in names for pattern in pipelines):
            return 0
        score += 2
    return score


def runbooks_for_incident(incident: Incident) -> list[RunbookVersion]:
    """The runbooks suggested for an incident, best fit first (alert type must match; a matching layer
    and pipeline pattern rank higher; a runbook naming layers or pipelines that do not match is left out).

    Scores each latest version on its ``applies_to`` alone (read out of the JSON by the database), then
    loads the versions that fit: the incident page does not decode the whole library's steps on every
    view."""
    rows = Runbook.objects.filter(latest__isnull=False).values_list(
        "latest_id", "slug", "latest__definition__applies_to"
    )
    fits: dict[int, tuple[int, str]] = {}
    for version_id, slug, applies in rows:
        score = _score({"applies_to": applies or {}}, incident)
        if score > 0:
            fits[version_id] = (-score, slug)
    if not fits:
        return []
    versions = RunbookVersion.objects.select_related("runbook").filter(pk__in=list(fits))
    return sorted(versions, key=lambda v: fits[v.pk])


def runs_for_incident(incident: Incident) -> QuerySet[RunbookRun]:
    return (
        RunbookRun.objects.filter(incident=incident)
        .select_related("runbook_version__runbook", "started_by")
        .order_by("-started_at")
    )


def run_get(run_id: Any) -> RunbookRun:
    """A run with its version, incident, starter and steps (each with its action) loaded."""
    try:
        pk = int(run_id)
    except (TypeError, ValueError):
        raise NotFound(f"no runbook run {run_id}") from None
    run = (
        RunbookRun.objects.select_related("runbook_version__runbook", "incident__pipeline", "started_by")
        .prefetch_related(
            Prefetch("steps", queryset=StepRun.objects.select_related("action__target").order_by("index"))
        )
        .filter(pk=pk)
        .first()
    )
    if run is None:
        raise NotFound(f"no runbook run {run_id}")
    return run


def run_list(filters: Mapping[str, Any] | None = None) -> QuerySet[RunbookRun]:
    """Runs newest first, with the current step's id (``current_step``, None once finished); ``incident``
    (id), ``state`` and ``runbook`` (its id) filter exactly."""
    filters = filters or {}
    qs = RunbookRun.objects.select_related("runbook_version__runbook", "started_by")
    if filters.get("incident"):
        qs = qs.filter(incident_id=filters["incident"])
    if filters.get("state"):
        qs = qs.filter(state=filters["state"])
    if filters.get("runbook"):
        qs = qs.filter(runbook_version__runbook__slug=filters["runbook"])
    current = StepRun.objects.filter(run=OuterRef("pk"), index=OuterRef("current")).values("step_id")[:1]
    return qs.annotate(current_step=Subquery(current)).order_by("-started_at")


def run_busy(run_id: Any) -> bool:
    """Whether the system is carrying the run forward: a check or notification in hand, the current step's
    action queued or running, or its end not recorded on the step yet. False once the run waits for a
    person (a command, an approval of its action), is blocked, has ended, or does not exist: what a bot
    waiting on the run (``GET /api/v1/runbook-runs/<id>?wait=``) waits for."""
    run = RunbookRun.objects.filter(pk=run_id).values("state", "current").first()
    if run is None or run["state"] != RunbookRun.State.WAITING:
        return run is not None and run["state"] == RunbookRun.State.RUNNING
    row = StepRun.objects.filter(run_id=run_id, index=run["current"]).values("state", "action__state").first()
    if row is None or row["state"] in (StepRun.State.PENDING, StepRun.State.RUNNING):
        return row is not None
    action_state = row["action__state"]
    return row["state"] == StepRun.State.WAITING and action_state not in (None, ActionState.AWAITING_APPROVAL)


def incident_context(incident: Incident | None) -> dict[str, Any]:
    """What templates see as ``incident``: the incident's fields and its alert's Airflow coordinates."""
    if incident is None:
        return {
            "id": None,
            "title": "",
            "severity": "",
            "status": "",
            "alert_type": "",
            "source": "",
            "summary": "",
            "pipeline": "",
            "layer": "",
            "targets": [],
            "dag_id": "",
            "task_id": "",
            "run_id": "",
            "logical_date": "",
            "try_number": None,
            "details": {},
        }
    details = dict(incident.details or {})
    return {
        "id": incident.pk,
        "title": incident.title,
        "severity": incident.severity,
        "status": incident.status,
        "alert_type": incident.alert_type,
        "source": incident.source,
        "summary": incident.summary,
        "pipeline": incident.pipeline.name if incident.pipeline else "",
        "layer": incident.pipeline.layer if incident.pipeline else "",
        "targets": sorted(t.key for t in incident.targets.all()),
        "dag_id": details.get("dag_id") or "",
        "task_id": details.get("task_id") or "",
        "run_id": details.get("run_id") or "",
        "logical_date": details.get("logical_date") or "",
        "try_number": details.get("try_number"),
        "details": details,
    }
