"""Catalog reads and read-only checks for the web UI.

These belong in ``controlplane/catalog/selectors.py`` (reads) and a catalog or checks service
(``check_run``); they live here until those modules exist, so the views stay thin either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from pydantic import ValidationError

from connectors.base import Check, ConnectorError, Findings, Verb
from connectors.registry import connector_classes, get_connector_class
from controlplane.actions import policy
from controlplane.actions.services import target_ref
from controlplane.catalog.models import Environment, Target
from controlplane.catalog.services import connector_for, pydantic_message
from controlplane.errors import InvalidInput, NotFound, Unavailable


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


def check_run(*, actor: Any, target_key: str, check: str, params: Mapping[str, Any]) -> Findings:
    """Run one read-only check on a catalog target and return its findings (nothing is written).

    Checks never change the external system (the connector runs them in read-only sessions), so every
    role from viewer up may run them. Errors come back as ServiceErrors with the connector's message.
    """
    policy.require_role(actor, "viewer", "running a check")
    target = target_get(target_key)
    try:
        connector_cls = get_connector_class(target.connection.kind)
    except ConnectorError as exc:
        raise InvalidInput(exc.message) from None
    check_cls = connector_cls.check_class(check)
    if check_cls is None or target.kind not in check_cls.target_kinds:
        offered = [c.name for c in connector_cls.checks if target.kind in c.target_kinds]
        raise InvalidInput(f"target {target.key} ({target.kind}) does not offer check {check!r}; it offers {offered}")
    try:
        typed = check_cls.params_model.model_validate(dict(params))
    except ValidationError as exc:
        raise InvalidInput(f"invalid params for {check}: {pydantic_message(exc)}") from None
    try:
        return connector_for(target.connection).check(check).run(target_ref(target), typed)
    except ConnectorError as exc:
        if exc.transient:
            raise Unavailable(f"{target.connection.name} did not answer: {exc.message}") from None
        raise InvalidInput(f"check {check} on {target.key} failed: {exc.message}") from None
