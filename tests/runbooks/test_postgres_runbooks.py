"""The 004 runbooks' SQL steps are executable on the Postgres connector: the loader accepts them (check and verb
names, parameters, target kinds), and runs of 004-lock-contention and 004-rerun-window walk a fresh copy of the
seed-004 warehouse on the sandbox Postgres end to end at the runner level: a stuck session is found, terminated
after a second person's approval and the locks are clear; a window is counted, deleted (facts and raw payloads)
after approval, and the counts show it empty.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.test import Client

from connectors.postgres import PostgresConnector
from controlplane.access import PolicyError
from controlplane.actions.models import ActionRun
from controlplane.actions.runner import action_execute
from controlplane.actions.services import action_approve
from controlplane.audit.context import Channel, change_context
from controlplane.catalog import services as cs
from runbooks import services
from runbooks.loader import LIBRARY, parse_file
from runbooks.models import RunbookRun
from runbooks.schema import ActionStep, CheckStep, ManualStep
from sandbox.services import create_database, drop_database, with_dbname
from sandbox.weather import load_weather
from tests.runbooks.test_runner import as_user
from tests.runbooks.test_runner import steps as step_rows

# the nine steps that waited for SQL (version 1), by their ids now; load_seed stays a manual step
WAITED = {
    "004-add-location": {"verify_seed", "verify_collection"},
    "004-dq-checkpoint-failure": {"violations", "delete_bad_records"},
    "004-lock-contention": {"terminate"},
    "004-malformed-json": {"raw_payload", "delete_bad_record"},
    "004-rerun-window": {"delete_window", "delete_window_raw"},
}

# Rows inserted by a test are the newest: the sandbox's own payloads are stamped 5 minutes after the current hour,
# which is later than now() in the first minutes of an hour.
AFTER_LATEST = "(select max(ingested_at) from raw.weather_observations)"


def test_the_004_sql_steps_run_the_postgres_connectors_checks_and_verbs() -> None:
    for name, waited in WAITED.items():
        parsed = parse_file(LIBRARY / f"{name}.yaml")
        assert parsed.problems == [], [str(p) for p in parsed.problems]
        runbook = parsed.runbook
        assert runbook is not None and runbook.version >= 2  # version 1 waited for SQL
        assert not [s.id for s in runbook.steps if getattr(s, "waits_for", None) == "sql"], name
        kinds = {p.name: p.target_kinds for p in runbook.parameters if p.type == "target"}
        steps = {s.id: s for s in runbook.steps}
        for step_id in waited:
            step = steps[step_id]
            assert isinstance(step, CheckStep | ActionStep) and step.waits_for is None, step_id
            spec: Any = (
                PostgresConnector.check_class(step.check)
                if isinstance(step, CheckStep)
                else PostgresConnector.verb_class(step.verb)
            )
            assert spec is not None, f"{name} {step_id}"
            param = step.target.strip("{} ").removeprefix("params.")
            assert kinds[param] and set(kinds[param]) <= set(spec.target_kinds), f"{name} {step_id}"
            assert set(step.params) <= set(spec.params_model.model_fields), f"{name} {step_id}"
            assert step.commands, f"{name} {step_id}: the seed's commands are still shown"
    add = parse_file(LIBRARY / "004-add-location.yaml").runbook
    assert add is not None
    assert isinstance(next(s for s in add.steps if s.id == "load_seed"), ManualStep)


@pytest.fixture
def warehouse(db: Any) -> Iterator[dict[str, Any]]:
    """A fresh copy of the seed-004 warehouse, its dev catalog (connection and targets), the 004 runbooks."""
    admin = os.environ.get("SANDBOX_PG_URL")
    if not admin:
        pytest.fail("SANDBOX_PG_URL is not set: start the sandbox (python -m sandbox.services start)")
    name = f"rb004_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    create_database(admin, name)
    url = with_dbname(admin, name)
    load_weather(url, days=14)
    info = psycopg.conninfo.conninfo_to_dict(url)
    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        env = cs.environment_create(name="dev", protected=False)
        config = {"host": info.get("host", "127.0.0.1"), "port": int(str(info.get("port") or 5432))}
        config.update({"dbname": name, "user": info.get("user", "postgres")})
        conn = cs.connection_create(name="weather-dev", kind="postgres", environment=env, config=config)
        targets = {
            "dev.weather.database": ("database", {}),
            "dev.weather.core_weather": (
                "table",
                {"schema": "core", "name": "weather", "timestamp_column": "observed_at"},
            ),
            "dev.weather.daily_weather_aggregates": ("matview", {"schema": "mart", "name": "daily_weather_aggregates"}),
            "dev.weather.core_location": ("table", {"schema": "core", "name": "location"}),
            "dev.weather.core_wikipedia_page": ("table", {"schema": "core", "name": "wikipedia_page"}),
            "dev.weather.raw_weather_observations": (
                "table",
                {"schema": "raw", "name": "weather_observations", "timestamp_column": "ingested_at"},
            ),
        }
        for key, (kind, locator) in targets.items():
            cs.target_create(key=key, kind=kind, connection=conn, locator=locator)
        services.runbooks_load(parsed=[parse_file(LIBRARY / f"{n}.yaml") for n in WAITED])
    try:
        yield {"url": url}
    finally:
        drop_database(admin, name)


def _sql(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _act(actor: Any, approver: Any, run: RunbookRun, step_id: str, capture: Any) -> ActionRun:
    """Press Run on the action step; the approver approves the action (its runbook step asks a second person:
    ``approval: always``); then do what the worker does. The step ends with the action."""
    action = as_user(actor, services.step_act, run_id=run.pk, step_id=step_id)
    assert action.state == "awaiting_approval"
    assert f"step {step_id} asks for one" in action.approval_reason
    as_user(approver, action_approve, action_id=action.id)
    with capture(execute=True):
        action_execute(action_id=str(action.id))
    action.refresh_from_db()
    return action


def test_lock_contention_runbook_terminates_the_stuck_session_after_approval(
    warehouse: dict[str, Any],
    actors: dict[str, Any],
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("controlplane.actions.runner.close_old_connections", lambda: None)
    rita, alice = actors["responder"], actors["approver"]
    url = warehouse["url"]
    holder = psycopg.connect(url, connect_timeout=5, application_name="forgotten-psql")
    waiter = psycopg.connect(url, connect_timeout=5, autocommit=True, options="-c lock_timeout=30000")
    thread = threading.Thread(target=lambda: _ignore(waiter, "select count(*) from core.location"), daemon=True)
    try:
        holder.execute("lock table core.location in access exclusive mode")
        thread.start()
        deadline = time.monotonic() + 5
        while not _sql(url, "select 1 from pg_stat_activity where wait_event_type = 'Lock'"):
            assert time.monotonic() < deadline, "the waiter never waited"
            time.sleep(0.05)
        run = as_user(
            rita, services.run_start, runbook="004-lock-contention", params={"database": "dev.weather.database"}
        )
        checklist = ["Logs checked for deadlock detected / lock timeout", "Concurrent flow runs noted"]
        services.run_advance(run_id=run.pk)
        as_user(rita, services.step_complete, run_id=run.pk, step_id="symptoms", checked=checklist)
        services.run_advance(run_id=run.pk)
        blocking = step_rows(run)["blocking"]
        assert blocking.state == "done" and blocking.result["passed"] is False, (blocking.error, blocking.result)
        assert str(holder.info.backend_pid) in blocking.result["summary"]
        as_user(rita, services.step_complete, run_id=run.pk, step_id="decide", choice="terminate the blocking session")
        services.run_advance(run_id=run.pk)
        action = _act(rita, alice, run, "terminate", django_capture_on_commit_callbacks)
        assert action.state == "succeeded", (action.error, action.verification)
        plan = action.plan or {}
        assert [b["pid"] for b in plan["details"]["blockers"]] == [holder.info.backend_pid]
        assert plan["risk"] == "high"
        thread.join(10)
        services.run_advance(run_id=run.pk)
        rows = step_rows(run)
        assert rows["terminate"].state == "done"
        locks = rows["locks"]
        assert locks.state == "done" and locks.result["passed"] is True, (locks.error, locks.result)
        with pytest.raises(psycopg.OperationalError):
            holder.execute("select 1")  # the forgotten session is gone, its transaction rolled back
    finally:
        _ignore(holder, "rollback")
        thread.join(35)
        holder.close()
        waiter.close()


def _page(user: Any, path: str) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    return str(response.content.decode())


def _ignore(conn: psycopg.Connection[Any], query: str) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.execute(query)


def test_rerun_window_runbook_deletes_the_windows_facts_and_raw_payloads_after_approval(
    warehouse: dict[str, Any],
    actors: dict[str, Any],
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("controlplane.actions.runner.close_old_connections", lambda: None)
    rita, alice = actors["responder"], actors["approver"]
    url = warehouse["url"]
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=4), today - timedelta(days=2)
    facts = "select count(*) from core.weather where observed_at >= %s and observed_at < %s"
    raw = "select count(*) from raw.weather_observations where ingested_at >= %s and ingested_at < %s"
    assert _sql(url, facts, (start, end))[0][0] == 2 * 24 * 5
    raw_before = _sql(url, raw, (start, end))[0][0]
    assert raw_before == 2 * 5
    params = {
        "table": "dev.weather.core_weather",
        "raw_table": "dev.weather.raw_weather_observations",
        "start_date": str(start),
        "end_date": str(end),
    }
    run = as_user(rita, services.run_start, runbook="004-rerun-window", params=params)
    services.run_advance(run_id=run.pk)
    identify = step_rows(run)["identify"]
    assert identify.state == "done" and "240 rows over 2 day(s)" in identify.result["summary"], identify.error
    as_user(rita, services.step_complete, run_id=run.pk, step_id="mode", choice="reprocess (delete the window first)")
    services.run_advance(run_id=run.pk)
    delete = _act(rita, alice, run, "delete_window", django_capture_on_commit_callbacks)
    assert delete.state == "succeeded", (delete.error, delete.verification)
    assert (delete.plan or {})["counts"] == {"rows": 240}
    services.run_advance(run_id=run.pk)
    delete_raw = _act(rita, alice, run, "delete_window_raw", django_capture_on_commit_callbacks)
    assert delete_raw.state == "succeeded", (delete_raw.error, delete_raw.verification)
    assert (delete_raw.plan or {})["counts"] == {"rows": raw_before}
    assert _sql(url, facts, (start, end))[0][0] == 0
    assert _sql(url, raw, (start, end))[0][0] == 0
    assert _sql(url, "select count(*) from core.weather")[0][0] == 14 * 24 * 5 - 240  # nothing outside it
    services.run_advance(run_id=run.pk)
    rows = step_rows(run)
    assert rows["delete_window"].state == "done" and rows["delete_window_raw"].state == "done"
    assert rows["extract_override"].state == "waiting"


def test_dq_checkpoint_runbook_finds_the_outliers_and_deletes_them(
    warehouse: dict[str, Any],
    actors: dict[str, Any],
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("controlplane.actions.runner.close_old_connections", lambda: None)
    rita, alice = actors["responder"], actors["approver"]
    url = warehouse["url"]
    _sql(url, "update core.weather set temperature_celsius = -70 where location_id in (1, 2) and observed_at = %s",
         (datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5),))  # fmt: skip
    params = {"table": "dev.weather.core_weather", "mart": "dev.weather.daily_weather_aggregates"}
    run = as_user(rita, services.run_start, runbook="004-dq-checkpoint-failure", params=params)
    services.run_advance(run_id=run.pk)
    assert step_rows(run)["expectation"].state == "waiting"  # a Prefect step, done by hand
    as_user(rita, services.step_complete, run_id=run.pk, step_id="expectation", note="temperature_range failed")
    services.run_advance(run_id=run.pk)
    violations = step_rows(run)["violations"]
    assert violations.state == "done" and violations.result["passed"] is False, violations.error
    assert "2 row(s) break temperature_range" in violations.result["summary"]
    as_user(rita, services.step_complete, run_id=run.pk, step_id="fix", choice="Option A: delete bad records and rerun")
    services.run_advance(run_id=run.pk)
    # Risk medium in an unprotected environment: the policy alone would run it at once; the runbook's own
    # two-person rule holds it for one approval, given on the plan (the rows by key), not on a gate before it.
    page = _page(rita, f"/runs/{run.pk}/")
    assert ">Request approval</button>" in page and ">Run</button>" not in page
    assert "always waits for a second person" in page
    action = as_user(rita, services.step_act, run_id=run.pk, step_id="delete_bad_records")
    assert (action.state, action.risk) == ("awaiting_approval", "medium")
    assert action.approval_reason == "runbook 004-dq-checkpoint-failure step delete_bad_records asks for one"
    with pytest.raises(PolicyError):
        as_user(rita, action_approve, action_id=action.id)  # never by the one who asked for it
    as_user(alice, action_approve, action_id=action.id, comment="sensor glitch")
    with django_capture_on_commit_callbacks(execute=True):
        action_execute(action_id=str(action.id))
    action.refresh_from_db()
    assert action.state == "succeeded", (action.error, action.verification)
    assert (action.plan or {})["counts"] == {"rows": 2}
    assert _sql(url, "select count(*) from core.weather where temperature_celsius < -50")[0][0] == 0
    services.run_advance(run_id=run.pk)
    assert step_rows(run)["delete_bad_records"].state == "done"


def test_malformed_json_runbook_finds_the_bad_payload_and_deletes_only_it(
    warehouse: dict[str, Any],
    actors: dict[str, Any],
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("controlplane.actions.runner.close_old_connections", lambda: None)
    rita = actors["responder"]
    url = warehouse["url"]
    _sql(
        url,
        "insert into raw.weather_observations (location_name, ingested_at, payload) "
        f"values ('Tokyo', {AFTER_LATEST} + interval '1 minute', "
        '\'{"hourly": {"time": ["2024-11-01T00:00"], "temperature_2m": []}}\')',
    )
    bad_id, total = _sql(url, "select max(id), count(*) from raw.weather_observations")[0]
    today = datetime.now(UTC).date()
    params = {
        "table": "dev.weather.core_weather",
        "raw_table": "dev.weather.raw_weather_observations",
        "start_date": str(today - timedelta(days=1)),
        "end_date": str(today),
    }
    run = as_user(rita, services.run_start, runbook="004-malformed-json", params=params)
    services.run_advance(run_id=run.pk)
    as_user(rita, services.step_complete, run_id=run.pk, step_id="symptoms", note="JSONDecodeError in transform")
    services.run_advance(run_id=run.pk)
    raw_payload = step_rows(run)["raw_payload"]
    assert raw_payload.state == "done" and raw_payload.result["passed"] is False, raw_payload.error
    assert raw_payload.result["rows"][0][0] == {"id": bad_id} and "temperature_2m" in raw_payload.result["rows"][0][3]
    as_user(rita, services.step_complete, run_id=run.pk, step_id="payload_verdict", choice="payload is invalid")
    services.run_advance(run_id=run.pk)
    action = as_user(rita, services.step_act, run_id=run.pk, step_id="delete_bad_record")
    with django_capture_on_commit_callbacks(execute=True):
        action_execute(action_id=str(action.id))
    action.refresh_from_db()
    assert action.state == "succeeded", (action.error, action.verification)
    assert (action.plan or {})["details"]["keys"] == [{"id": bad_id}]
    assert _sql(url, "select count(*), count(*) filter (where id = %s) from raw.weather_observations", (bad_id,))[
        0
    ] == (total - 1, 0)
    services.run_advance(run_id=run.pk)
    assert step_rows(run)["delete_bad_record"].state == "done"


def test_add_location_run_verifies_the_seed_rows_and_that_nothing_is_collected_yet(
    warehouse: dict[str, Any], actors: dict[str, Any]
) -> None:
    rita = actors["responder"]
    url = warehouse["url"]
    params = {
        "locations": "dev.weather.core_location",
        "pages": "dev.weather.core_wikipedia_page",
        "database": "dev.weather.database",
    }
    run = as_user(rita, services.run_start, runbook="004-add-location", params=params)
    services.run_advance(run_id=run.pk)
    as_user(rita, services.step_complete, run_id=run.pk, step_id="seed_yaml", checked=["src/seed_data.yaml updated"])
    services.run_advance(run_id=run.pk)
    as_user(rita, services.step_complete, run_id=run.pk, step_id="seed_sql", choice="seed SQL updated")
    services.run_advance(run_id=run.pk)
    _sql(  # what the seed script loads (by hand here: the step is manual)
        url,
        "insert into core.location (location_name, latitude, longitude, country, region, city) "
        "values ('San Francisco', 37.7749, -122.4194, 'US', 'California', 'San Francisco')",
    )
    as_user(rita, services.step_complete, run_id=run.pk, step_id="load_seed", choice="seed script loaded")
    services.run_advance(run_id=run.pk)
    rows = step_rows(run)
    assert rows["verify_seed"].state == "done" and rows["verify_seed"].result["passed"] is True
    page = rows["verify_page"]
    assert page.state == "done" and page.result["passed"] is False  # the page was not loaded
    assert "NOT FOUND" in page.result["summary"]
    as_user(rita, services.step_complete, run_id=run.pk, step_id="hardcoded", choice="reads core.location")
    services.run_advance(run_id=run.pk)
    as_user(rita, services.step_complete, run_id=run.pk, step_id="run_pipeline", note="ran by hand")
    services.run_advance(run_id=run.pk)
    collected = step_rows(run)["verify_collection"]
    assert collected.state == "done" and collected.result["passed"] is False, collected.error
    assert "San Francisco: raw 0, facts 0, mart 0" in collected.result["summary"]
