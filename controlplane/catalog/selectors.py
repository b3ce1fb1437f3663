"""Reads of the catalog: targets (a list, one by its key), and what a target's system lists for pickers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import QuerySet

from connectors.base import ConnectorError
from controlplane.catalog.models import Target
from controlplane.catalog.services import connector_for
from controlplane.errors import InvalidInput, NotFound, Unavailable


def target_list(filters: Mapping[str, Any] | None = None) -> QuerySet[Target]:
    """Catalog targets in key order, with connection and environment loaded (``environment`` and ``kind``
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
    """The target with this key, its connection, environment and pipeline loaded; NotFound naming the key.

    The one lookup of a target by key: the API, the web pages, checks, runbook parameters and the action
    path (behind its per-process cache) all call it."""
    target = Target.objects.select_related("connection__environment", "pipeline").filter(key=key).first()
    if target is None:
        raise NotFound(f"no catalog target with key {key!r}")
    return target


def target_choices(target: Target, what: str) -> list[dict[str, Any]]:
    """What the target's system lists for a picker (``failed_runs``, ``tasks`` ...), each row with
    ``value`` and ``label``; filtered by the target's own locator (its DAG, its schema)."""
    if not what.replace("_", "").isalnum():
        raise InvalidInput(f"unknown list {what!r}")
    try:
        return connector_for(target.connection).metadata(what, **dict(target.locator))
    except ConnectorError as exc:
        if exc.transient:
            raise Unavailable(exc.message) from None
        raise InvalidInput(exc.message) from None
