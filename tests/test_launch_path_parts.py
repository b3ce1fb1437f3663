"""The parts that keep the launch path cheap, each behind one setting, behave like what they replace; each
one that relies on a library's internals fails here when the pinned library moves them (pyproject.toml)."""

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

from controlplane.catalog.models import Target
from controlplane.celery import app
from controlplane.env import database_from_url
from controlplane.incidents.models import Incident
from controlplane.pgbackend import base as pgbackend_base

# ------------------------------------------------------------------------------- health checks


@pytest.mark.django_db
def test_the_django_internals_the_health_check_overrides_are_still_there() -> None:
    from django.db.backends.base.base import BaseDatabaseWrapper

    for name in ("close_if_health_check_failed", "close_if_unusable_or_obsolete", "connect"):
        assert callable(getattr(BaseDatabaseWrapper, name, None)), name
    from django.db import connections

    wrapper = connections["default"]  # the settings' engine is controlplane.pgbackend
    assert isinstance(wrapper, pgbackend_base.DatabaseWrapper)
    wrapper.ensure_connection()
    assert isinstance(wrapper.health_check_enabled, bool) and isinstance(wrapper.health_check_done, bool)


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
    queue = f"test-publish-{os.getpid()}-{time.monotonic_ns()}"
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    built: list[bool] = []
    real = redis.Redis.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(True)
        real(self, *args, **kwargs)

    try:
        app.send_task("celery.accumulate", args=(0,), queue=queue, routing_key=queue, exchange="")  # warm up
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(redis.Redis, "__init__", counting)
            for i in range(5):
                app.send_task("celery.accumulate", args=(i,), queue=queue, routing_key=queue, exchange="")
        assert client.llen(queue) == 6
        assert built == []  # kombu's own channel builds a client for every publish
    finally:
        client.delete(queue)


def test_the_kombu_internals_the_transport_overrides_are_still_there() -> None:
    import inspect

    from kombu.transport import redis as kombu_redis

    from controlplane import broker

    create = getattr(kombu_redis.Channel, "_create_client", None)
    assert callable(create) and "asynchronous" in inspect.signature(create).parameters
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, broker.Channel)
        client = channel._create_client()
        assert client.connection_pool is channel.pool  # kombu's pool, which the kept client must follow
        assert channel._create_client() is client
        assert channel._create_client(asynchronous=True) is not client  # the consumer's own


def _print_in_a_new_process(code: str) -> list[str]:
    """What ``code`` prints, run by a fresh interpreter with the project's settings (a process as started)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_process_started_from_the_settings_publishes_through_the_reusing_transport() -> None:
    code = (
        "import django; django.setup();"
        "from controlplane.celery import app;"
        "c = app.connection_for_write(); print(type(c.transport).__module__, type(c.transport).__name__)"
    )
    assert _print_in_a_new_process(code) == ["controlplane.broker", "Transport"]


# ------------------------------------------------------------------------------- gc.freeze


def test_the_wsgi_application_starts_with_views_and_connectors_loaded_and_frozen() -> None:
    code = (
        "import gc, sys; import controlplane.wsgi;"
        "print(gc.get_freeze_count() > 0, 'connectors.airflow' in sys.modules, 'controlplane.api.views' in sys.modules)"
    )
    assert _print_in_a_new_process(code) == ["True", "True", "True"]


# ------------------------------------------------------------------------------- the worker's claim


def _queued_action(actors: Any, **fields: Any) -> Any:
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


def test_the_claim_runs_a_queued_action_once_and_leaves_one_not_yet_due(catalog: dict[str, Any], actors: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from controlplane.actions import runner
    from controlplane.actions.models import ActionRun
    from controlplane.audit.models import AuditEvent

    later = _queued_action(actors, not_before=timezone.now() + timedelta(seconds=30))
    assert runner._claim(str(later.id)) is None  # a retry whose backoff has not passed
    later.refresh_from_db()
    assert (later.state, later.attempts, later.worker, later.started_at) == ("queued", 0, "", None)

    ActionRun.objects.filter(id=later.id).update(not_before=timezone.now() - timedelta(seconds=1))
    before = timezone.now()
    claimed = runner._claim(str(later.id))
    assert claimed is not None
    assert (claimed.state, claimed.attempts, claimed.worker) == ("running", 1, runner.WORKER_NAME)
    assert claimed.not_before is None and claimed.started_at is not None and claimed.started_at >= before
    assert claimed.heartbeat_at == claimed.started_at
    assert claimed.lease_expires_at == claimed.started_at + timedelta(seconds=settings.CONTROLPLANE["LEASE_SECONDS"])
    assert claimed.target.connection.environment.name == "dev"  # what the runner reads next
    started = AuditEvent.objects.get(object_id=str(later.id), event="action.started")
    assert started.after == {"state": "running", "attempt": 1, "worker": runner.WORKER_NAME}
    assert runner._claim(str(later.id)) is None  # a second delivery finds nothing to claim

    ActionRun.objects.filter(id=later.id).update(state="queued")  # a retry: the first start time stays
    again = runner._claim(str(later.id))
    assert again is not None and again.attempts == 2 and again.started_at == claimed.started_at


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
            sender=ActionRun,
            action_id="00000000-0000-0000-0000-000000000000",
            incident_id=None,
            channel="api",
            requires_approval=False,
            verb="clear",
        )
    assert {receiver.__name__ for receiver, _ in replies} == {
        "record_action_outcome",
        "action_step_finished",
        "on_action_finished",
    }
