"""Catalog reads and read-only checks for the web UI.

These belong in ``controlplane/catalog/selectors.py`` (reads); they live here until it grows them, so the
views stay thin either way. ``check_run`` lives in ``controlplane/catalog/checks.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from connectors.base import Check, ConnectorError, Verb
from connectors.registry import connector_classes, get_connector_class
from controlplane.actions import policy
from controlplane.catalog import checks
from controlplane.catalog.models import Environment, Target
from controlplane.catalog.services import connector_for, target_ref
from controlplane.errors import NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Offer:
    """A verb or check a target offers, with its params JSON schema (what the generated form reads)."""

    name: str
    description: str
    schema: dict[str, Any]
    idempotent: bool = True


def target_list(filters: Mapping[str, Any] | None = None) -> QuerySet[Target]:
    """Catalog targets by key, with connection and environment loaded (``environment`` and ``kind``
    filter by exact value, ``q`` by a substring of the key)."""
    qs = Target.objects.select_related("connection__environment", "pipeline").order_by("key")
    filters = filters or {}
    if env := filters.get("environment"):
        qs = qs.filter(connection__environment__name=env)
    if kind := filters.get("kind"):
        qs = qs.filter(kind=kind)
    if q := filters.get("q"):
        qs = qs.filter(key__icontains=q)
    return qs


def target_get(key: str) -> Target:
    """One target with its connection and environment, or NotFound."""
    target = Target.objects.select_related("connection__environment", "pipeline").filter(key=key).first()
    if target is None:
        raise NotFound(f"no catalog target with key {key!r}")
    return target


def environment_names() -> list[str]:
    return list(Environment.objects.order_by("name").values_list("name", flat=True))


def target_kinds() -> list[str]:
    return list(Target.objects.order_by("kind").values_list("kind", flat=True).distinct())


def verb_names() -> list[str]:
    """Every verb any installed connector offers (for filter pickers)."""
    return sorted({v.name for cls in connector_classes().values() for v in cls.verbs})


def _offers(items: tuple[type[Verb[Any, Any]], ...] | tuple[type[Check[Any, Any]], ...], kind: str) -> list[Offer]:
    return [
        Offer(
            name=item.name,
            description=item.description,
            schema=item.params_model.model_json_schema(),
            idempotent=bool(getattr(item, "idempotent", True)),
        )
        for item in items
        if kind in item.target_kinds
    ]


def verbs_for(target: Target) -> list[Offer]:
    """The verbs this target offers (its connector's verbs that apply to its kind)."""
    try:
        return _offers(get_connector_class(target.connection.kind).verbs, target.kind)
    except ConnectorError:
        return []


def checks_for(target: Target) -> list[Offer]:
    """The read-only checks this target offers."""
    try:
        return _offers(get_connector_class(target.connection.kind).checks, target.kind)
    except ConnectorError:
        return []


check_run = checks.check_run  # the target page's checks run through the one check service


# ------------------------------------------------------------------------------------------ freshness

FRESHNESS_SLA_HOURS = 2.0  # seed 004: "alert when the newest observation is more than 2 hours old"
FRESHNESS_MAX_TARGETS = 50
FRESHNESS_WORKERS = 8


@dataclass(frozen=True)
class Freshness:
    """One table's freshness for the dashboard: hours since its newest row against the SLA, or the
    error that kept the check from answering (``passed`` None)."""

    target: Target
    sla_hours: float
    hours: float | None = None
    last_loaded_at: str | None = None
    passed: bool | None = None
    summary: str = ""
    error: str = ""


def _freshness_one(target: Target, sla_hours: float) -> Freshness:
    """Runs in a worker thread: no Django database access here, only the connector."""
    try:
        connector_cls = get_connector_class(target.connection.kind)
        check_cls = connector_cls.check_class("freshness")
        if check_cls is None or target.kind not in check_cls.target_kinds:
            return Freshness(target, sla_hours, error=f"the {target.connection.kind} connector has no freshness check")
        params = check_cls.params_model.model_validate({"sla_hours": sla_hours})
        findings = connector_for(target.connection).check("freshness").run(target_ref(target), params)
    except ConnectorError as exc:
        return Freshness(target, sla_hours, error=exc.message)
    except Exception as exc:  # a broken target (bad config, missing secret) must not break the dashboard
        log.warning("freshness of %s failed", target.key, exc_info=True)
        return Freshness(target, sla_hours, error=f"{type(exc).__name__}: {exc}"[:300])
    row = dict(zip(findings.columns, findings.rows[0], strict=False)) if findings.rows else {}
    hours = row.get("hours_since_last_load")
    return Freshness(
        target,
        sla_hours,
        hours=float(hours) if isinstance(hours, int | float) else None,
        last_loaded_at=str(row["last_loaded_at"]) if row.get("last_loaded_at") else None,
        passed=findings.passed,
        summary=findings.summary,
    )


def freshness_overview(*, actor: Any, sla_hours: float = FRESHNESS_SLA_HOURS) -> list[Freshness]:
    """Freshness of every catalog table that names its ``timestamp_column`` (at most
    FRESHNESS_MAX_TARGETS, by key), checked in parallel through each connector's read-only
    ``freshness`` check. A warehouse that does not answer gives its rows an error, never an exception."""
    policy.require_role(actor, "viewer", "running a check")
    targets = list(
        Target.objects.select_related("connection__environment", "pipeline")
        .filter(kind="table", locator__has_key="timestamp_column")
        .order_by("key")[:FRESHNESS_MAX_TARGETS]
    )
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(FRESHNESS_WORKERS, len(targets))) as pool:
        return list(pool.map(lambda t: _freshness_one(t, sla_hours), targets))
