"""Execution by real Celery worker processes on real Postgres and Redis: claim, lease, verify, reap."""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from controlplane.actions import services
from controlplane.actions.models import ActionLogLine, ActionRun, ActionState
from controlplane.actions.tasks import execute_action
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_verify_chain
from controlplane.catalog import services as catalog_services
from tests.conftest import WEATHER_PASSWORD, wait_for, weather_sql

DEV_MART = "dev.weather.daily_weather_aggregates"
LEDGER = "controlplane.mart_refresh_log"


def request(actor: Any, target: str = DEV_MART, **params: Any) -> ActionRun:
    with change_context(channel=Channel.API, user=actor):
        return services.action_request(
            actor=actor, verb="refresh-mart", target_key=target, params=params, reason="test refresh"
        ).action


def final_state(action: ActionRun, timeout: float = 40) -> ActionRun:
    def done() -> ActionRun | None:
        action.refresh_from_db()
        return action if action.state not in (ActionState.QUEUED, ActionState.RUNNING) else None

    return wait_for(done, timeout=timeout, what=f"action {action.id} to finish")


def ledger_rows(weather_db: dict[str, Any], action: ActionRun) -> int:
    rows = weather_sql(weather_db, f"SELECT count(*) FROM {LEDGER} WHERE action_id = %s", (str(action.id),))
    return int(rows[0][0])


def events(action: ActionRun) -> list[str]:
    qs = AuditEvent.objects.filter(object_id=str(action.id)).order_by("seq")
    return list(qs.values_list("event", flat=True))


@pytest.mark.worker
def test_worker_refreshes_the_mart_and_verifies_it(
    catalog: Any, actors: Any, worker_factory: Any, weather_db: Any
) -> None:
    worker_factory()
    before = weather_sql(weather_db, "SELECT count(*) FROM mart.daily_weather_aggregates")[0][0]
    # A new day of observations for a new place: the refreshed mart must show it.
    weather_sql(
        weather_db,
        "INSERT INTO core.location (location_name, latitude, longitude, country, region, city) "
        "VALUES ('Reykjavik', 64.15, -21.94, 'IS', 'Capital', 'Reykjavik') ON CONFLICT DO NOTHING",
    )
    weather_sql(
        weather_db,
        "INSERT INTO core.weather (location_id, observed_at, temperature_celsius, humidity_percent, precipitation_mm,"
        " wind_speed_kmh) SELECT location_id, date_trunc('hour', now()) - interval '1 hour', 3.5, 80, 0.2, 30"
        " FROM core.location WHERE location_name = 'Reykjavik' ON CONFLICT DO NOTHING",
    )
    action = final_state(request(actors["responder"]))
    assert action.state == ActionState.SUCCEEDED, (action.error, action.verification)
    assert action.attempts == 1
    assert action.verification and action.verification["ok"] is True
    assert action.outcome and action.outcome["details"]["rows_after"] == before + 1
    assert ledger_rows(weather_db, action) == 1
    assert events(action) == [
        "action.requested",
        "action.planned",
        "action.started",
        "action.executed",
        "action.succeeded",
    ]
    lines = list(ActionLogLine.objects.filter(action=action).order_by("id"))
    log = [line.message for line in lines]
    assert any("refreshing mart.daily_weather_aggregates concurrently" in line for line in log), log
    assert log[0].startswith("attempt 1: refresh-mart on dev.weather.daily_weather_aggregates"), log
    assert log[-2:] == ["verifying", f"verification passed: {action.verification['summary']}"], log
    assert any(line.startswith("executed: ") for line in log), log
    stamps = [line.at for line in lines]  # stamped when written, stored in that order
    assert action.started_at is not None and action.finished_at is not None
    assert stamps == sorted(stamps) and action.started_at <= stamps[0] and stamps[-1] <= action.finished_at
    assert audit_verify_chain().ok


@pytest.mark.worker
def test_duplicate_delivery_claims_once_and_refreshes_once(
    catalog: Any, actors: Any, worker_factory: Any, weather_db: Any
) -> None:
    action = request(actors["responder"])  # dispatched on commit, before any worker runs
    for _ in range(3):  # the broker delivers the same message again (visibility timeout, redelivery)
        execute_action.apply_async(args=(str(action.id),))
    worker_factory()
    action = final_state(action)
    assert action.state == ActionState.SUCCEEDED
    assert action.attempts == 1
    assert ledger_rows(weather_db, action) == 1
    assert events(action).count("action.started") == 1


@pytest.fixture
def slow_mart(catalog: Any, weather_db: Any) -> Any:
    """A mart whose refresh takes as many seconds as ``mart.slow_mart_sleep`` says (3 to begin with), so a
    worker can be killed, or the refresh cancelled, in the middle of it."""
    weather_sql(weather_db, "DROP MATERIALIZED VIEW IF EXISTS mart.slow_mart")
    weather_sql(weather_db, "DROP TABLE IF EXISTS mart.slow_mart_sleep")
    weather_sql(weather_db, "CREATE TABLE mart.slow_mart_sleep AS SELECT 3 AS seconds")
    weather_sql(
        weather_db,
        "CREATE MATERIALIZED VIEW mart.slow_mart AS SELECT x AS id, "
        "pg_sleep((SELECT seconds FROM mart.slow_mart_sleep)) IS NULL AS slept FROM generate_series(1, 1) AS x",
    )
    weather_sql(weather_db, "CREATE UNIQUE INDEX slow_mart_id ON mart.slow_mart (id)")
    with change_context(channel=Channel.SYSTEM):
        return catalog_services.target_create(
            key="dev.weather.slow_mart",
            kind="matview",
            connection=catalog["conn_dev"],
            locator={"schema": "mart", "name": "slow_mart"},
        )


@pytest.mark.worker
def test_worker_killed_mid_refresh_leads_to_exactly_one_completed_refresh(
    slow_mart: Any, actors: Any, worker_factory: Any, weather_db: Any
) -> None:
    first = worker_factory(beat=True)
    action = request(actors["responder"], target=slow_mart.key)
    wait_for(
        lambda: ActionLogLine.objects.filter(action=action, message__startswith="refreshing").exists(),
        what="the refresh to start",
    )
    first.kill()
    # The killed worker's REFRESH must not run on: the server drops it once the client is gone.
    wait_for(
        lambda: (
            not weather_sql(
                weather_db,
                "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'REFRESH MATERIALIZED VIEW%%slow_mart%%'"
                " AND pid <> pg_backend_pid()",
            )
        ),
        timeout=15,
        what="the orphaned refresh to be aborted",
    )
    action.refresh_from_db()
    assert action.state == ActionState.RUNNING  # nobody has told the database yet

    worker_factory(beat=True)  # the replacement worker, with the reaper on its beat
    action = final_state(action, timeout=60)
    assert action.state == ActionState.SUCCEEDED, (action.error, action.verification)
    assert action.attempts == 2
    assert ledger_rows(weather_db, action) == 1
    history = events(action)
    assert history.count("action.reaped") == 1 and history[-1] == "action.succeeded"
    assert audit_verify_chain().ok


@pytest.mark.worker
def test_queued_action_lost_by_the_broker_is_dispatched_again(
    catalog: Any, actors: Any, worker_factory: Any, weather_db: Any
) -> None:
    import redis
    from django.conf import settings

    action = request(actors["responder"])
    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # the message is gone
    ActionRun.objects.filter(id=action.id).update(dispatched_at=timezone.now() - timedelta(minutes=5))
    worker_factory(beat=True)
    action = final_state(action)
    assert action.state == ActionState.SUCCEEDED
    assert "action.redispatched" in events(action)


@pytest.mark.worker
def test_lease_lost_on_a_non_idempotent_verb_needs_attention(catalog: Any, actors: Any, worker_factory: Any) -> None:
    from controlplane.actions.reaper import actions_reap

    action = request(actors["responder"])
    ActionRun.objects.filter(id=action.id).update(
        state=ActionState.RUNNING, attempts=1, idempotent=False, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    result = actions_reap()
    assert str(action.id) in result["needs_attention"]
    action.refresh_from_db()
    assert action.state == ActionState.NEEDS_ATTENTION
    assert "not idempotent" in action.error


@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_requests_leave_exactly_one_active_action(catalog: Any, api_for: Any) -> None:
    bots = [api_for(who) for who in ("responder", "responder2", "approver", "approver2", "admin")]

    def post(i: int) -> int:
        try:
            reason = f"parallel {i}"
            body = {"verb": "refresh-mart", "target": DEV_MART, "params": {}, "reason": reason}
            return bots[i % len(bots)].post("/api/v1/actions", body).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(post, range(50)))
    assert statuses.count(202) == 1, statuses
    assert statuses.count(409) == 49, statuses
    assert ActionRun.objects.count() == 1
    assert AuditEvent.objects.filter(event="action.requested").count() == 1
    assert audit_verify_chain().ok


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_with_one_idempotency_key_make_one_action(catalog: Any, api_for: Any) -> None:
    bot = api_for("responder")
    body = {"verb": "refresh-mart", "target": DEV_MART, "params": {}, "reason": "retrying bot"}
    barrier = threading.Barrier(20)

    def post(_: int) -> tuple[int, str]:
        try:
            barrier.wait(timeout=10)
            resp = bot.post("/api/v1/actions", body, headers={"Idempotency-Key": "same-key"})
            return resp.status_code, resp.json().get("id", "")
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(post, range(20)))
    assert ActionRun.objects.count() == 1
    action_id = str(ActionRun.objects.get().id)
    assert all(code in (200, 202) and got == action_id for code, got in results), results
    assert [code for code, _ in results].count(202) == 1


@pytest.mark.worker
def test_secret_never_reaches_database_api_logs_or_audit(
    catalog: Any, actors: Any, api_for: Any, worker_factory: Any
) -> None:
    worker = worker_factory()
    action = final_state(request(actors["responder"]))
    assert action.state == ActionState.SUCCEEDED
    bot = api_for("admin")
    pages = [
        bot.get("/api/v1/targets/dev.weather.daily_weather_aggregates").content,
        bot.get(f"/api/v1/actions/{action.id}").content,
        bot.get("/api/v1/audit").content,
        bot.get("/api/v1/actions").content,
    ]
    for page in pages:
        assert WEATHER_PASSWORD.encode() not in page
    from django.conf import settings

    db = settings.DATABASES["default"]
    dump = subprocess.run(
        ["pg_dump", "--data-only", "-h", db["HOST"], "-p", str(db["PORT"]), "-U", db["USER"], db["NAME"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "refresh-mart" in dump  # the dump really holds the action
    assert WEATHER_PASSWORD not in dump
    assert WEATHER_PASSWORD not in worker.output()
    assert not AuditEvent.objects.filter(after__icontains=WEATHER_PASSWORD).exists()


@pytest.mark.worker
def test_cancel_stops_a_running_refresh_and_nothing_is_recorded(
    slow_mart: Any, actors: Any, api_for: Any, worker_factory: Any, weather_db: Any
) -> None:
    weather_sql(weather_db, "UPDATE mart.slow_mart_sleep SET seconds = 600")  # only a cancel can end it
    worker_factory()
    action = request(actors["responder"], target=slow_mart.key)
    wait_for(
        lambda: ActionLogLine.objects.filter(action=action, message__startswith="refreshing").exists(),
        what="the refresh to start",
    )
    resp = api_for("responder").post(f"/api/v1/actions/{action.id}/cancel", {"reason": "wrong window"})
    assert resp.status_code == 200 and resp.json()["cancel_requested"] is True
    action = final_state(action)
    assert action.state == ActionState.CANCELLED, action.error
    assert ledger_rows(weather_db, action) == 0
    assert events(action)[-2:] == ["action.cancel_requested", "action.cancelled"]


@pytest.mark.worker
def test_lock_timeout_is_retried_and_succeeds_once_the_lock_is_gone(
    catalog: Any, actors: Any, worker_factory: Any, weather_db: Any
) -> None:
    import psycopg

    conn = catalog["conn_dev"]
    with change_context(channel=Channel.SYSTEM):
        catalog_services.connection_update(connection=conn, config={**conn.config, "lock_timeout_ms": 300})
    action = request(actors["responder"])  # planned while the view is free; no worker runs yet
    blocker = psycopg.connect(weather_db["url"], connect_timeout=5)
    try:
        # An uncommitted blocking refresh holds ACCESS EXCLUSIVE on the view (LOCK TABLE refuses matviews).
        blocker.execute("REFRESH MATERIALIZED VIEW mart.daily_weather_aggregates")
        worker_factory()
        wait_for(
            lambda: ActionRun.objects.filter(id=action.id, attempts__gte=1, state=ActionState.QUEUED).exists(),
            what="a retry to be scheduled",
        )
        assert "lock" in ActionRun.objects.get(id=action.id).error.lower()
    finally:
        blocker.rollback()
        blocker.close()
    action = final_state(action)
    assert action.state == ActionState.SUCCEEDED, action.error
    assert action.attempts == 2
    assert ledger_rows(weather_db, action) == 1
    assert "action.retry_scheduled" in events(action)


def test_reaped_action_that_had_made_its_effect_names_it_and_keeps_the_target(
    catalog: Any, actors: Any, api_for: Any
) -> None:
    from controlplane.actions.reaper import actions_reap
    from controlplane.audit.services import audit_record

    action = request(actors["responder"])
    ActionRun.objects.filter(id=action.id).update(
        state=ActionState.RUNNING, attempts=1, idempotent=False, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    with change_context(channel=Channel.SYSTEM, actor_name="worker@test"):
        details = {"backfill_id": 41, "url": "http://airflow.example/dags/d/backfills"}
        audit_record(
            event="action.executed", obj=action, after={"summary": "created backfill 41 of d", "details": details}
        )
    assert str(action.id) in actions_reap()["needs_attention"]
    action.refresh_from_db()
    assert action.state == ActionState.NEEDS_ATTENTION
    assert "created backfill 41 of d (http://airflow.example/dags/d/backfills)" in action.error
    assert action.outcome == {"summary": "created backfill 41 of d", "details": details, "already_done": False}
    again = api_for("responder2").post(
        "/api/v1/actions", {"verb": "refresh-mart", "target": DEV_MART, "params": {}, "reason": "again"}
    )
    assert again.status_code == 409 and again.json()["error"]["details"]["active_action"] == str(action.id)


def test_the_worker_and_the_reaper_import_nothing_from_the_request_side_services() -> None:
    """The worker's modules share what they need with ``actions/services.py`` through modules both import
    (``actions/lifecycle.py``, ``catalog/services.py``), so a change to the request path cannot break them."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "controlplane" / "actions"
    for name in ("runner.py", "reaper.py", "lifecycle.py", "tasks.py"):
        for node in ast.walk(ast.parse((root / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            else:
                continue
            assert "controlplane.actions.services" not in names, f"{name}:{node.lineno} imports it"
