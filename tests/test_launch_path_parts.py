"""The parts the launch path was made cheaper with behave like what they replace (bench/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connection
from django.db.models import Model

from controlplane.catalog.models import Target
from controlplane.catalog.rowload import target_with_connection
from controlplane.celery import app
from controlplane.env import database_from_url
from controlplane.incidents.models import Incident
from controlplane.pgbackend import base as pgbackend_base


def _fields(obj: Model) -> dict[str, Any]:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


# ------------------------------------------------------------------------------- target lookup


def test_target_lookup_returns_what_the_orm_returns(catalog: dict[str, Any]) -> None:
    for key in ("dev.weather.daily_weather_aggregates", "prod.weather.core_weather"):
        orm = Target.objects.select_related("connection__environment").get(key=key)
        loaded = target_with_connection(key)
        assert loaded is not None
        assert _fields(loaded) == _fields(orm)
        assert _fields(loaded.connection) == _fields(orm.connection)
        assert _fields(loaded.environment) == _fields(orm.environment)
        assert isinstance(loaded.locator, dict) and isinstance(loaded.connection.config, dict)  # JSON decoded
        assert loaded._state.adding is False and loaded._state.db == "default"


def test_target_lookup_reads_related_rows_in_the_one_query(
    catalog: dict[str, Any], django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(1):
        target = target_with_connection("prod.weather.daily_weather_aggregates")
        assert target is not None
        assert target.environment.protected is True
        assert target.connection.name == "weather-prod"


def test_target_lookup_of_an_unknown_key_is_none(catalog: dict[str, Any]) -> None:
    assert target_with_connection("dev.no.such.target") is None
    assert target_with_connection("x' OR '1'='1") is None  # a parameter, never SQL


# ------------------------------------------------------------------------------- health checks


@pytest.mark.django_db(transaction=True)
def test_a_connection_in_recent_use_is_not_pinged(monkeypatch: pytest.MonkeyPatch) -> None:
    pings: list[bool] = []
    real = connection.is_usable

    def counted() -> bool:
        pings.append(True)
        return real()

    monkeypatch.setattr(connection, "is_usable", counted)
    close_old_connections()
    Target.objects.count()  # opens the connection: nothing to ping yet
    for _ in range(5):  # requests in quick succession, as under load
        close_old_connections()
        Target.objects.count()
        close_old_connections()
    assert pings == []
    monkeypatch.setattr(pgbackend_base, "HEALTH_CHECK_AFTER_IDLE", 0.0)  # as if idle for a while
    close_old_connections()
    Target.objects.count()
    assert pings == [True]


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_died_while_idle_is_replaced_before_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    close_old_connections()
    Target.objects.count()
    close_old_connections()
    pid = connection.connection.info.backend_pid
    # Postgres ends the session behind Django's back (a restart, an idle timeout, a dropped socket).
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    monkeypatch.setattr(pgbackend_base, "HEALTH_CHECK_AFTER_IDLE", 0.0)
    close_old_connections()
    assert Target.objects.count() >= 0  # pinged, found dead, reconnected: the request does not fail
    assert connection.connection.info.backend_pid != pid


@pytest.mark.django_db(transaction=True)
def test_a_failed_statement_takes_away_the_credit() -> None:
    from django.db import DatabaseError

    close_old_connections()
    Target.objects.count()
    close_old_connections()
    credit = connection._used_ok_at  # type: ignore[attr-defined]
    assert credit is not None
    close_old_connections()
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        cursor.execute("SELECT no_such_column FROM catalog_target")
    assert connection.errors_occurred
    close_old_connections()
    assert connection._used_ok_at == credit  # type: ignore[attr-defined]  # a failed request earns none


# ------------------------------------------------------------------------------- DATABASE_URL


def test_database_url_options_are_checked() -> None:
    options = database_from_url("postgres://u@h:5432/db?connect_timeout=3")["OPTIONS"]
    assert options["connect_timeout"] == 3
    with pytest.raises(ImproperlyConfigured, match="connect_timeout must be a whole number"):
        database_from_url("postgres://u@h/db?connect_timeout=soon")


def test_statements_are_not_prepared_on_the_server(db: Any) -> None:
    """A prepared statement gets a generic plan after a few runs, which cannot use the open incidents' partial
    index nor see that a filter value is rare: nothing the app runs may stay prepared on its connection."""
    for _ in range(10):
        list(Incident.objects.exclude(status=Incident.Status.RESOLVED).values_list("id", flat=True)[:5])
        Target.objects.filter(key="dev.x").exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone() == (0,)


# ------------------------------------------------------------------------------- Celery


def test_celery_reads_every_celery_setting() -> None:
    names = [name for name in dir(settings) if name.startswith("CELERY_")]
    assert "CELERY_DB_REUSE_MAX" in names
    for name in names:
        assert app.conf[name[len("CELERY_") :].lower()] == getattr(settings, name), name
    # Celery's Django fixup reads this one under its full name; without it every task reconnects.
    assert app.conf.get("CELERY_DB_REUSE_MAX") == settings.CELERY_DB_REUSE_MAX > 0


def test_publishing_reuses_one_redis_client_and_delivers() -> None:
    from kombu.transport import redis as kombu_redis

    base: Any = kombu_redis.Channel
    queue = f"test-publish-{os.getpid()}-{time.monotonic_ns()}"
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    created: list[Any] = []
    real = base._create_client

    def counting(self: Any, asynchronous: bool = False) -> Any:
        created.append(asynchronous)
        return real(self, asynchronous)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(base, "_create_client", counting)
            for i in range(5):
                app.send_task("celery.accumulate", args=(i,), queue=queue, routing_key=queue, exchange="")
        assert client.llen(queue) == 5
        assert created.count(False) <= 1  # at most the first publish built a client
    finally:
        client.delete(queue)


def test_a_process_started_from_the_settings_publishes_through_the_reusing_transport() -> None:
    code = (
        "import django; django.setup();"
        "from controlplane.celery import app;"
        "c = app.connection_for_write(); print(type(c.transport).__module__, type(c.transport).__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["controlplane.broker", "Transport"]


# ------------------------------------------------------------------------------- the worker's claim


def _queued_action(catalog: dict[str, Any], actors: Any, **fields: Any) -> Any:
    from controlplane.actions.models import ActionRun

    target = Target.objects.select_related("connection__environment").get(key="dev.weather.daily_weather_aggregates")
    return ActionRun.objects.create(
        verb="refresh-mart",
        target=target,
        environment=target.environment,
        params={"concurrently": True},
        reason="claim test",
        channel="api",
        requested_by=actors["responder"],
        plan={"summary": "refresh"},
        state="queued",
        **fields,
    )


def test_claim_in_one_statement_returns_what_the_orm_path_returns(
    catalog: dict[str, Any], actors: Any, django_assert_num_queries: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from controlplane.actions.claim import claim_by_orm, claim_in_one_statement

    now = timezone.now()
    for name, claim in (("one", claim_in_one_statement), ("orm", claim_by_orm)):
        action = _queued_action(catalog, actors)
        with django_assert_num_queries(1 if name == "one" else 2):
            claimed = claim(action.id, now=now, lease_until=now + timedelta(seconds=60), worker="w@h", using="default")
        assert claimed is not None
        got = claimed.action
        assert (claimed.audit_head is not None) == (name == "one")  # locked by the one statement, for the audit
        with django_assert_num_queries(0):
            assert got.target.connection.environment.name == "dev"
        orm = type(action).objects.select_related("target__connection__environment").get(id=action.id)
        assert _fields(got) == _fields(orm)
        assert _fields(got.target) == _fields(orm.target) and _fields(got.target.connection) == _fields(
            orm.target.connection
        )
        assert (got.state, got.attempts, got.worker, got.started_at, got.heartbeat_at) == (
            "running",
            1,
            "w@h",
            now,
            now,
        )
        assert got.lease_expires_at == now + timedelta(seconds=60) and got.not_before is None
        assert got._state.adding is False and isinstance(got.plan, dict)
        # A second delivery finds nothing to claim.
        assert claim(action.id, now=now, lease_until=now, worker="w@h", using="default") is None
        type(action).objects.filter(id=action.id).update(state="succeeded")  # one active action per target


def test_claim_leaves_an_action_that_is_not_due_or_not_queued(catalog: dict[str, Any], actors: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from controlplane.actions.claim import claim_by_orm, claim_in_one_statement

    now = timezone.now()
    for claim in (claim_in_one_statement, claim_by_orm):
        later = _queued_action(catalog, actors, not_before=now + timedelta(seconds=30))
        assert claim(later.id, now=now, lease_until=now, worker="w", using="default") is None
        later.refresh_from_db()
        assert (later.state, later.attempts, later.worker) == ("queued", 0, "")
        claimed = claim(later.id, now=now + timedelta(seconds=31), lease_until=now, worker="w", using="default")
        assert claimed is not None
        due = claimed.action
        assert due.attempts == 1 and due.not_before is None
        started = due.started_at
        due.state = "queued"
        due.save(update_fields=["state"])  # a retry: the first start time stays
        again = claim(later.id, now=now + timedelta(seconds=99), lease_until=now, worker="w", using="default")
        assert again is not None and again.action.attempts == 2 and again.action.started_at == started
        assert claim(later.id, now=now + timedelta(seconds=99), lease_until=now, worker="w", using="default") is None
        type(later).objects.filter(id=later.id).update(state="succeeded")  # one active action per target


# ------------------------------------------------------------------------------- the end's receivers


@pytest.mark.django_db
def test_receivers_of_an_end_with_no_incident_and_no_runbook_make_no_query(
    django_assert_num_queries: Any,
) -> None:
    """They run in the worker right after the end is announced, while a waiting bot's request reads the action;
    an action taken through the API for no incident gives them nothing to do, and they do not ask the database."""
    from controlplane.actions.models import ActionRun
    from controlplane.actions.signals import action_finished

    with django_assert_num_queries(0):
        replies = action_finished.send(
            sender=ActionRun, action_id="00000000-0000-0000-0000-000000000000", incident_id=None, channel="api"
        )
    assert {receiver.__name__ for receiver, _ in replies} == {"record_action_outcome", "action_step_finished"}


# ------------------------------------------------------------------------------- the audit head's lock


@pytest.mark.django_db(transaction=True)
def test_claim_and_finish_lock_the_audit_head_in_the_statement_of_their_change(
    catalog: dict[str, Any], actors: Any
) -> None:
    """The worker's two audited transactions make no separate locking read of the chain head (a round trip
    each; the request still makes its one), and the chain holds."""
    from datetime import timedelta

    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from controlplane.actions import runner
    from controlplane.actions.models import ActionState
    from controlplane.actions.services import action_request
    from controlplane.audit.context import Channel, change_context
    from controlplane.audit.models import AuditEvent
    from controlplane.audit.services import audit_verify_chain

    rita = actors["responder"]
    with CaptureQueriesContext(connection) as queries:
        with change_context(channel=Channel.API, user=rita):
            target = "dev.weather.daily_weather_aggregates"
            action = action_request(actor=rita, verb="refresh-mart", target_key=target, params={}, reason="r").action
        with runner.transaction.atomic():
            claimed = runner.action_claim_queued(
                action.id, now=timezone.now(), lease_until=timezone.now() + timedelta(seconds=60), worker="w"
            )
            assert claimed is not None and claimed.audit_head is not None
            runner.audit_record(event="action.started", obj=claimed.action, locked_head=claimed.audit_head)
        journal = runner._Journal(claimed.action, [])
        assert runner._finish(claimed.action, 1, state=ActionState.SUCCEEDED, event="action.succeeded", journal=journal)
    sql = [q["sql"] for q in queries.captured_queries]
    assert len([s for s in sql if s.startswith("SELECT") and "FOR UPDATE" in s and "audit" in s]) == 1  # the request
    assert len([s for s in sql if s.startswith("WITH") and "audit_head AS" in s]) == 2  # the claim, the finish
    events = AuditEvent.objects.filter(object_id=str(action.id)).order_by("seq").values_list("event", flat=True)
    assert list(events) == ["action.requested", "action.planned", "action.started", "action.succeeded"]
    assert audit_verify_chain().ok
