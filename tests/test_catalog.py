"""The catalog: validated by the connector's models, secrets only by reference, every change audited."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.catalog import services as cs
from controlplane.catalog.models import Connection, Target
from controlplane.errors import InvalidInput

pytestmark = pytest.mark.django_db


def test_catalog_changes_are_audited_with_actor_and_after_state(catalog: Any) -> None:
    created = AuditEvent.objects.get(event="catalog.connection.created", object_id=str(catalog["conn_prod"].pk))
    assert created.actor_name == "test-setup" and created.channel == "system"
    assert created.after is not None
    assert created.after["secret_refs"] == {"password": "env:CP_TEST_WEATHER_PASSWORD"}
    assert created.after["environment"] == "prod"
    with change_context(channel=Channel.WEB, actor_name="ops"):
        cs.connection_update(connection=catalog["conn_prod"], config={**catalog["conn_prod"].config, "port": 1})
    updated = AuditEvent.objects.get(event="catalog.connection.updated")
    assert updated.before is not None and updated.after is not None
    assert updated.before["config"]["port"] != 1 and updated.after["config"]["port"] == 1


@pytest.mark.parametrize(
    ("config", "secret_refs", "message"),
    [
        ({"host": "h", "port": "not-a-port", "dbname": "d", "user": "u"}, {}, "port"),
        ({"host": "h", "port": 5432, "dbname": "d", "user": "u", "password": "hunter2"}, {}, "password"),
        ({"host": "h", "port": 5432, "dbname": "d", "user": "u"}, {"password": "hunter2"}, "env:NAME"),
        ({"host": "h", "port": 5432, "dbname": "d", "user": "u"}, {"token": "env:X"}, "unknown secret names"),
    ],
)
def test_bad_connection_config_is_refused_and_nothing_written(
    catalog: Any, config: dict[str, Any], secret_refs: dict[str, str], message: str
) -> None:
    before = (Connection.objects.count(), AuditEvent.objects.count())
    with pytest.raises(InvalidInput, match=message):
        cs.connection_create(
            name="bad", kind="postgres", environment=catalog["dev"], config=config, secret_refs=secret_refs
        )
    assert (Connection.objects.count(), AuditEvent.objects.count()) == before


def test_unknown_connector_kind_is_refused(catalog: Any) -> None:
    with pytest.raises(InvalidInput, match="no connector for kind 'mainframe'"):
        cs.connection_create(name="mf", kind="mainframe", environment=catalog["dev"], config={})


@pytest.mark.parametrize(
    ("kind", "locator", "message"),
    [
        ("matview", {"schema": "mart"}, "name"),
        ("matview", {"schema": "mart", "name": "x" * 64}, "longer than 63 bytes"),
        ("matview", {"schema": "mart", "name": "view\x00; DROP TABLE core.weather"}, "control characters"),
        ("dag", {"dag_id": "x"}, "dag"),
    ],
)
def test_bad_target_locator_is_refused(catalog: Any, kind: str, locator: dict[str, Any], message: str) -> None:
    count = Target.objects.count()
    with pytest.raises(InvalidInput, match=message):
        cs.target_create(key="dev.bad.target", kind=kind, connection=catalog["conn_dev"], locator=locator)
    assert Target.objects.count() == count


def test_health_check_records_success_and_failure(catalog: Any) -> None:
    good = cs.connection_check_health(connection=catalog["conn_dev"])
    assert good.health_ok is True and good.health_checked_at is not None
    with change_context(channel=Channel.SYSTEM):
        broken = cs.connection_update(
            connection=catalog["conn_prod"], config={**catalog["conn_prod"].config, "port": 1}
        )
    broken = cs.connection_check_health(connection=broken)
    assert broken.health_ok is False
    assert "127.0.0.1" in broken.health_summary or "connect" in broken.health_summary.lower()


def test_injection_in_a_locator_is_only_ever_a_quoted_name(catalog: Any, api_for: Any, weather_db: Any) -> None:
    """Odd but legal names are accepted, and reach SQL only through psycopg's Identifier quoting."""
    from tests.conftest import weather_sql

    with change_context(channel=Channel.SYSTEM):
        cs.target_create(
            key="dev.weather.evil",
            kind="matview",
            connection=catalog["conn_dev"],
            locator={"schema": "mart", "name": 'x"; DROP TABLE core.weather; --'},
        )
    body = {"verb": "refresh-mart", "target": "dev.weather.evil", "params": {}, "reason": "try it"}
    resp = api_for("responder").post("/api/v1/actions", body)
    assert resp.status_code == 400
    assert "does not exist" in resp.json()["error"]["message"] or "not found" in resp.json()["error"]["message"]
    assert weather_sql(weather_db, "SELECT count(*) > 0 FROM core.weather") == [(True,)]
