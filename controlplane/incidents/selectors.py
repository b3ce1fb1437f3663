"""Reads of incidents: lists with filters, detail with timeline and the actions that fit."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from connectors.registry import get_connector_class
from controlplane.catalog.models import Target
from controlplane.errors import InvalidInput, NotFound
from controlplane.incidents.models import Incident, IncidentEvent

_FILTERS = {"status": "status", "severity": "severity", "pipeline": "pipeline__name", "source": "source"}


def incident_list(filters: Mapping[str, Any] | None = None) -> QuerySet[Incident]:
    """Incidents newest first; ``status``, ``severity``, ``pipeline`` exact, ``open=true`` for all but
    resolved, ``max_age_hours`` for recent ones."""
    filters = filters or {}
    qs = Incident.objects.select_related("pipeline")
    for name, field in _FILTERS.items():
        value = filters.get(name)
        if value:
            choices = {"status": Incident.Status.values, "severity": Incident.Severity.values}.get(name)
            if choices is not None and value not in choices:
                raise InvalidInput(f"unknown {name} {value!r}; use one of {choices}")
            qs = qs.filter(**{field: value})
    if str(filters.get("open", "")).lower() in ("1", "true", "yes"):
        qs = qs.exclude(status=Incident.Status.RESOLVED)
    if age := filters.get("max_age_hours"):
        try:
            qs = qs.filter(created_at__gte=timezone.now() - timedelta(hours=float(age)))
        except ValueError:
            raise InvalidInput("max_age_hours must be a number") from None
    return qs.order_by("-created_at")


def incident_get(incident_id: Any) -> Incident:
    """One incident with its targets (and their connections) and its timeline loaded."""
    try:
        pk = int(incident_id)
    except (TypeError, ValueError):
        raise NotFound(f"no incident {incident_id}") from None
    incident = (
        Incident.objects.select_related("pipeline")
        .prefetch_related(
            Prefetch("targets", queryset=Target.objects.select_related("connection__environment")),
            Prefetch("events", queryset=IncidentEvent.objects.order_by("at", "id")),
        )
        .filter(pk=pk)
        .first()
    )
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    return incident


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
