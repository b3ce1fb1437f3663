"""seed_demo: the demo catalog and users, seeded once however often it runs, audited, no secret in the trail."""

from __future__ import annotations

import io
import re
import uuid
from typing import Any

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.access import role_of
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_verify_chain
from controlplane.catalog.models import Connection, Environment, Pipeline, Source, Target
from controlplane.incidents.models import Incident

LOGIN = re.compile(r"^Login: (\S+) / (\S+)$")
DEMO_ROLES = {"viewer": "viewer", "responder": "responder", "approver": "approver", "approver2": "approver"}
TARGET_NAMES = (
    "daily_weather_aggregates",
    "daily_wikipedia_page_stats",
    "core_weather",
    "raw_weather_observations",
    "core_location",
    "core_wikipedia_page",
    "database",
)
DAG_IDS = (
    "data_ingestion_bronze",
    "retail_transformation_pipeline",
    "retail_ingestion_pipeline",
    "stuck_report_pipeline",
)
AIRFLOW_URL = "http://127.0.0.1:18080"
AIRFLOW_SECRET_ENV = "CP_DEMO_AIRFLOW_PASSWORD"
AIRFLOW = (
    "--airflow-url",
    AIRFLOW_URL,
    "--airflow-user",
    "admin",
    "--airflow-password-ref",
    f"env:{AIRFLOW_SECRET_ENV}",
)


def seed(weather_db: dict[str, Any], *extra: str, port: int | None = None) -> list[tuple[str, str]]:
    """Run seed_demo against the test warehouse; the (user, password) pairs it printed."""
    out = io.StringIO()
    call_command(
        "seed_demo",
        "--pg-host",
        weather_db["host"],
        "--pg-port",
        str(port or weather_db["port"]),
        "--pg-db",
        weather_db["dbname"],
        "--pg-user",
        weather_db["user"],
        *extra,
        stdout=out,
        stderr=io.StringIO(),
    )
    lines = out.getvalue().splitlines()
    logins = [LOGIN.match(line) for line in lines]
    assert all(logins), f"unexpected output: {lines}"
    return [(m.group(1), m.group(2)) for m in logins if m]


def row_counts() -> dict[str, int]:
    models = (Environment, Connection, Source, Pipeline, Target, AuditEvent, get_user_model())
    return {m.__name__: m.objects.count() for m in models}


def test_seed_demo_creates_environments_targets_and_one_user_per_role(db: Any, weather_db: dict[str, Any]) -> None:
    logins = seed(weather_db)

    assert {e.name: e.protected for e in Environment.objects.all()} == {"dev": False, "prod": True}
    assert Source.objects.filter(name="open-meteo").exists()
    for env in ("dev", "prod"):
        conn = Connection.objects.get(name=f"weather-{env}")
        assert (conn.kind, conn.environment.name) == ("postgres", env)
        assert conn.config["dbname"] == weather_db["dbname"]
        assert conn.config["port"] == weather_db["port"]
        assert Pipeline.objects.get(environment=conn.environment).layer == "mart"
    assert set(Target.objects.values_list("key", flat=True)) == {
        f"{env}.weather.{name}" for env in ("dev", "prod") for name in TARGET_NAMES
    }
    core = Target.objects.get(key="prod.weather.core_weather")
    assert (core.kind, core.locator["timestamp_column"]) == ("table", "observed_at")
    assert core.environment.protected
    assert Target.objects.get(key="dev.weather.database").locator == {}
    assert Target.objects.get(key="dev.weather.daily_weather_aggregates").pipeline is not None

    assert [user for user, _ in logins] == ["viewer", "responder", "approver", "approver2", "admin"]
    users = {u.username: u for u in get_user_model().objects.all()}
    for username, password in logins:
        assert users[username].check_password(password)
        assert role_of(users[username]) == DEMO_ROLES.get(username, "admin")
    assert users["admin"].is_staff and users["admin"].is_superuser
    assert users["admin"].groups.filter(name="admin").exists()
    assert not users["approver2"].is_staff
    # The Airflow callbacks' bot: a responder that logs in with API tokens only, so no login is printed.
    bot = users["airflow-bot"]
    assert role_of(bot) == "responder" and not bot.has_usable_password() and not bot.is_staff
    assert not Connection.objects.filter(kind="airflow").exists()  # no --airflow-url, no Airflow catalog
    assert audit_verify_chain().ok


def test_seeded_locators_name_real_relations_of_the_warehouse(db: Any, weather_db: dict[str, Any]) -> None:
    seed(weather_db)
    relations = Target.objects.exclude(kind="database").values_list("locator", flat=True)
    assert len(relations) == 12
    for locator in relations:
        with psycopg.connect(weather_db["url"], connect_timeout=5) as conn:
            found = conn.execute("select to_regclass(%s)", (f"{locator['schema']}.{locator['name']}",)).fetchone()
        assert found is not None and found[0] is not None, locator


def test_second_run_creates_nothing_and_records_no_audit_event(db: Any, weather_db: dict[str, Any]) -> None:
    seed(weather_db)
    before = row_counts()
    head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()

    logins = seed(weather_db)

    assert logins == []  # nothing created, nothing reset: no password printed
    assert row_counts() == before
    assert AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() == head
    assert audit_verify_chain().ok


def test_reset_passwords_prints_new_logins_and_records_only_the_resets(db: Any, weather_db: dict[str, Any]) -> None:
    first = dict(seed(weather_db))
    before = row_counts()

    second = dict(seed(weather_db, "--reset-passwords"))

    assert list(second) == ["viewer", "responder", "approver", "approver2", "admin"]
    users = {u.username: u for u in get_user_model().objects.all()}
    for username, password in second.items():
        assert password != first[username]
        assert users[username].check_password(password)
        assert not users[username].check_password(first[username])
    after = row_counts()
    assert after.pop("AuditEvent") == before.pop("AuditEvent") + 5
    assert after == before
    resets = AuditEvent.objects.order_by("-seq")[:5]
    assert {e.event for e in resets} == {"auth.user.password_reset"}
    assert {e.actor_name for e in resets} == {"seed_demo"}
    assert audit_verify_chain().ok


def test_no_password_reaches_the_audit_trail(
    db: Any, weather_db: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    db_password = "weather-" + uuid.uuid4().hex
    monkeypatch.setenv("CP_DEMO_WEATHER_PASSWORD", db_password)
    passwords = [p for _, p in seed(weather_db, "--password-ref", "env:CP_DEMO_WEATHER_PASSWORD")]
    passwords += [p for _, p in seed(weather_db, "--reset-passwords")]
    assert len(passwords) == 10

    assert Connection.objects.get(name="weather-dev").secret_refs == {"password": "env:CP_DEMO_WEATHER_PASSWORD"}
    events = list(AuditEvent.objects.values())
    assert events
    text = "\n".join(repr(sorted(e.items())) for e in events)
    hashes = [u.password for u in get_user_model().objects.all()]
    for secret in [*passwords, db_password, *hashes]:
        assert secret not in text


def test_moved_sandbox_updates_the_connections_and_nothing_else(db: Any, weather_db: dict[str, Any]) -> None:
    seed(weather_db)
    before = row_counts()
    new_port = weather_db["port"] + 1

    seed(weather_db, port=new_port)

    after = row_counts()
    assert after.pop("AuditEvent") == before.pop("AuditEvent") + 2
    assert after == before
    assert {c.config["port"] for c in Connection.objects.all()} == {new_port}
    updated = AuditEvent.objects.order_by("-seq")[:2]
    assert {e.event for e in updated} == {"catalog.connection.updated"}
    assert audit_verify_chain().ok


def test_failed_seed_leaves_nothing_behind(db: Any, weather_db: dict[str, Any]) -> None:
    prod = Environment.objects.create(name="prod", protected=True)
    Connection.objects.create(name="weather-prod", kind="airflow", environment=prod, config={})
    events = AuditEvent.objects.count()

    with pytest.raises(CommandError, match="weather-prod exists as airflow"):
        seed(weather_db)

    assert not Environment.objects.filter(name="dev").exists()  # created before the failure, rolled back
    assert Target.objects.count() == 0
    assert not get_user_model().objects.exists()
    assert AuditEvent.objects.count() == events


def test_literal_password_is_refused_as_a_secret_reference(db: Any, weather_db: dict[str, Any]) -> None:
    with pytest.raises(CommandError, match="secret password"):
        seed(weather_db, "--password-ref", "hunter2-literal")

    assert not Connection.objects.exists()
    assert not AuditEvent.objects.exists()


# ------------------------------------------------------------------------------------------- Airflow


def test_airflow_url_seeds_connections_pipelines_and_targets_in_dev_and_prod(
    db: Any, weather_db: dict[str, Any]
) -> None:
    seed(weather_db, *AIRFLOW)

    assert set(Environment.objects.values_list("name", flat=True)) == {"dev", "prod"}  # reused, not new ones
    for env in ("dev", "prod"):
        conn = Connection.objects.get(name=f"airflow-{env}")
        assert (conn.kind, conn.environment.name) == ("airflow", env)
        assert conn.config == {"base_url": AIRFLOW_URL, "username": "admin"}
        assert conn.secret_refs == {"password": f"env:{AIRFLOW_SECRET_ENV}"}
        for dag_id in DAG_IDS:
            target = Target.objects.select_related("pipeline__environment").get(key=f"{env}.airflow.{dag_id}")
            assert (target.kind, target.locator, target.connection) == ("dag", {"dag_id": dag_id}, conn)
            assert target.pipeline is not None
            assert (target.pipeline.name, target.pipeline.environment.name) == (f"{env}-{dag_id}", env)
        instance = Target.objects.get(key=f"{env}.airflow.instance")
        assert (instance.kind, instance.locator, instance.connection, instance.pipeline) == ("instance", {}, conn, None)
    assert Target.objects.get(key="prod.airflow.data_ingestion_bronze").environment.protected
    assert Target.objects.filter(connection__kind="airflow").count() == 10
    assert Pipeline.objects.filter(name__endswith=DAG_IDS[0]).count() == 2
    assert Target.objects.filter(key__contains=".weather.").count() == 14  # the weather catalog as before
    events = set(AuditEvent.objects.values_list("event", flat=True))
    assert {"catalog.connection.created", "catalog.pipeline.created", "catalog.target.created"} <= events
    assert AuditEvent.objects.filter(event="catalog.target.created", after__key="dev.airflow.instance").exists()
    assert audit_verify_chain().ok


def test_second_run_with_airflow_creates_nothing_and_records_no_audit_event(
    db: Any, weather_db: dict[str, Any]
) -> None:
    seed(weather_db, *AIRFLOW)
    before = row_counts()
    head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()

    assert seed(weather_db, *AIRFLOW) == []
    seed(weather_db)  # a run without --airflow-url leaves the Airflow catalog alone

    assert row_counts() == before
    assert AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() == head


def test_moved_airflow_updates_its_two_connections_and_nothing_else(db: Any, weather_db: dict[str, Any]) -> None:
    seed(weather_db, *AIRFLOW)
    before = row_counts()

    seed(weather_db, "--airflow-url", "http://127.0.0.1:18081/", "--airflow-user", "admin")

    after = row_counts()
    assert after.pop("AuditEvent") == before.pop("AuditEvent") + 2
    assert after == before
    for conn in Connection.objects.filter(kind="airflow"):
        assert conn.config["base_url"] == "http://127.0.0.1:18081"
        assert conn.secret_refs == {"password": f"env:{AIRFLOW_SECRET_ENV}"}  # not given: kept
    assert {c.config["port"] for c in Connection.objects.filter(kind="postgres")} == {weather_db["port"]}
    updated = AuditEvent.objects.order_by("-seq")[:2]
    assert {e.event for e in updated} == {"catalog.connection.updated"}
    assert {e.object_id for e in updated} == {
        str(pk) for pk in Connection.objects.filter(kind="airflow").values_list("pk", flat=True)
    }
    assert audit_verify_chain().ok


def test_no_airflow_password_or_alert_token_reaches_the_audit_trail(
    db: Any, weather_db: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    airflow_password = "airflow-" + uuid.uuid4().hex
    monkeypatch.setenv(AIRFLOW_SECRET_ENV, airflow_password)
    seed(weather_db, *AIRFLOW)
    out = io.StringIO()
    call_command(
        "create_api_token", "airflow-bot", "--scopes", "alerts:write", "--name", "airflow-callback",
        stdout=out, stderr=io.StringIO(),
    )  # fmt: skip
    token = out.getvalue().splitlines()[-1]

    text = "\n".join(repr(sorted(e.items())) for e in AuditEvent.objects.values())
    assert "airflow-bot" in text and f"env:{AIRFLOW_SECRET_ENV}" in text
    for secret in (airflow_password, token):
        assert secret not in text


def test_airflow_bot_token_opens_an_incident_that_finds_the_dag_pipeline(db: Any, weather_db: dict[str, Any]) -> None:
    from tests.conftest import ApiClient

    seed(weather_db, *AIRFLOW)
    out = io.StringIO()
    call_command(
        "create_api_token", "airflow-bot", "--scopes", "alerts:write", "--name", "airflow-callback",
        stdout=out, stderr=io.StringIO(),
    )  # fmt: skip
    bot = ApiClient(out.getvalue().splitlines()[-1])
    alert = {
        "source": "airflow",
        "dag_id": "data_ingestion_bronze",
        "task_id": "ingest_orders",
        "run_id": "scheduled__2026-11-20T00:00:00+00:00",
        "try_number": 1,
        "state": "failed",
        "exception": "orders API answered HTTP 503",
        "base_url": AIRFLOW_URL,
    }

    response = bot.post("/api/v1/alerts/airflow", alert)

    assert response.status_code == 201, response.content
    incident = Incident.objects.get()
    assert incident.pipeline is not None and incident.pipeline.name == "dev-data_ingestion_bronze"
    assert set(incident.targets.values_list("key", flat=True)) == {
        "dev.airflow.data_ingestion_bronze",
        "prod.airflow.data_ingestion_bronze",
    }
    assert bot.get("/api/v1/targets").status_code == 403  # the token may send alerts, nothing else


def test_airflow_options_need_the_url(db: Any, weather_db: dict[str, Any]) -> None:
    with pytest.raises(CommandError, match="need --airflow-url"):
        seed(weather_db, "--airflow-password-ref", f"env:{AIRFLOW_SECRET_ENV}")

    assert not Connection.objects.exists()
