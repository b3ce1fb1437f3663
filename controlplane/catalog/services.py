"""Writes to the catalog, each audited in the same transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone
from pydantic import ValidationError

from connectors.base import Connector, ConnectorError, TargetRef
from connectors.registry import get_connector_class
from connectors.secrets import resolve_secret_ref, validate_secret_ref
from controlplane.audit.services import audit_record
from controlplane.catalog.models import Connection, Environment, Pipeline, Source, Target
from controlplane.errors import InvalidInput


class CatalogError(InvalidInput):
    """Invalid catalog input; the message names the field and the problem."""


def pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _validated_connection_fields(kind: str, config: Mapping[str, Any], secret_refs: Mapping[str, str]) -> None:
    try:
        connector_cls = get_connector_class(kind)
    except ConnectorError as exc:
        raise CatalogError(exc.message) from None
    try:
        connector_cls.validate_config(config)
    except ValidationError as exc:
        raise CatalogError(f"invalid {kind} config: {pydantic_message(exc)}") from None
    unknown = set(secret_refs) - set(connector_cls.secret_names)
    if unknown:
        raise CatalogError(
            f"unknown secret names {sorted(unknown)} for {kind} (it takes {list(connector_cls.secret_names)})"
        )
    for name, ref in secret_refs.items():
        try:
            validate_secret_ref(ref)
        except ValueError as exc:
            raise CatalogError(f"secret {name}: {exc}") from None


def _clean(obj: Any) -> None:
    """Model validation as a CatalogError naming each field, before anything is written."""
    try:
        obj.full_clean()
    except DjangoValidationError as exc:
        messages = [f"{field}: {' '.join(errs)}" for field, errs in exc.message_dict.items()]
        raise CatalogError("; ".join(messages)) from None


@transaction.atomic
def environment_create(*, name: str, protected: bool, description: str = "") -> Environment:
    env = Environment(name=name, protected=protected, description=description)
    _clean(env)
    env.save()
    audit_record(event="catalog.environment.created", obj=env, after={"name": name, "protected": protected})
    return env


@transaction.atomic
def connection_create(
    *,
    name: str,
    kind: str,
    environment: Environment,
    config: Mapping[str, Any],
    secret_refs: Mapping[str, str] | None = None,
) -> Connection:
    """Create a connection after validating its config with the connector's model. Only secret
    references are accepted (``env:NAME``/``file:/path``); a literal secret is refused."""
    secret_refs = dict(secret_refs or {})
    _validated_connection_fields(kind, config, secret_refs)
    conn = Connection(name=name, kind=kind, environment=environment, config=dict(config), secret_refs=secret_refs)
    _clean(conn)
    conn.save()
    audit_record(event="catalog.connection.created", obj=conn, after=conn.audit_state())
    return conn


@transaction.atomic
def connection_update(
    *,
    connection: Connection,
    config: Mapping[str, Any] | None = None,
    secret_refs: Mapping[str, str] | None = None,
) -> Connection:
    before = connection.audit_state()
    new_config = dict(config) if config is not None else connection.config
    new_refs = dict(secret_refs) if secret_refs is not None else connection.secret_refs
    _validated_connection_fields(connection.kind, new_config, new_refs)
    connection.config, connection.secret_refs = new_config, new_refs
    connection.save(update_fields=["config", "secret_refs"])
    audit_record(event="catalog.connection.updated", obj=connection, before=before, after=connection.audit_state())
    return connection


@transaction.atomic
def pipeline_create(
    *, name: str, environment: Environment, layer: str = "other", description: str = "", source: Source | None = None
) -> Pipeline:
    pipeline = Pipeline(name=name, environment=environment, layer=layer, description=description, source=source)
    _clean(pipeline)
    pipeline.save()
    audit_record(
        event="catalog.pipeline.created",
        obj=pipeline,
        after={
            "name": name,
            "layer": layer,
            "environment": environment.name,
            "source": source.name if source else None,
        },
    )
    return pipeline


@transaction.atomic
def target_create(
    *,
    key: str,
    kind: str,
    connection: Connection,
    locator: Mapping[str, Any],
    pipeline: Pipeline | None = None,
    display_name: str = "",
    description: str = "",
) -> Target:
    connector_cls = get_connector_class(connection.kind)
    try:
        connector_cls.validate_locator(kind, locator)
    except ValidationError as exc:
        raise CatalogError(f"invalid locator for a {kind}: {pydantic_message(exc)}") from None
    except ValueError as exc:
        raise CatalogError(str(exc)) from None
    target = Target(
        key=key,
        kind=kind,
        connection=connection,
        locator=dict(locator),
        pipeline=pipeline,
        display_name=display_name,
        description=description,
    )
    _clean(target)
    target.save()
    audit_record(event="catalog.target.created", obj=target, after=target.audit_state())
    return target


def connector_for(connection: Connection) -> Connector:
    """Build the connector for a connection, resolving its secret references now (never earlier)."""
    connector_cls = get_connector_class(connection.kind)
    config = connector_cls.validate_config(connection.config)
    secrets = {name: resolve_secret_ref(ref) for name, ref in connection.secret_refs.items()}
    return connector_cls(config, secrets)


def target_ref(target: Target) -> TargetRef:
    """What a connector is told about a catalog target: its key, kind and locator."""
    return TargetRef(key=target.key, kind=target.kind, locator=dict(target.locator))


def connection_check_health(*, connection: Connection) -> Connection:
    """Round-trip to the system and record the result on the connection (an observation, not audited)."""
    try:
        result = connector_for(connection).health()
        ok, summary = result.ok, result.summary
    except ConnectorError as exc:
        ok, summary = False, exc.message
    connection.health_ok, connection.health_summary = ok, summary[:500]
    connection.health_checked_at = timezone.now()
    connection.save(update_fields=["health_ok", "health_summary", "health_checked_at"])
    return connection
