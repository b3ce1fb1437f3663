"""Catalog reads and read-only checks for the web UI.

These belong in ``controlplane/catalog/selectors.py`` (reads); they live here until it grows them, so the
views stay thin either way. ``check_run`` lives in ``controlplane/catalog/checks.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from connectors.base import Check, ConnectorError, Verb
from connectors.registry import connector_classes, get_connector_class
from controlplane.catalog import checks
from controlplane.catalog.models import Environment, Target
from controlplane.errors import NotFound


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
