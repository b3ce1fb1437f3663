"""The Postgres connector against a real Postgres holding the seed-004 warehouse (no Django)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from connectors.base import ConnectorError, ExecutionContext, Findings, Risk, TargetRef
from connectors.postgres import FreshnessParams, PostgresConnector, RefreshMartParams, RowCountsByDayParams
from connectors.registry import connector_classes, get_connector_class
from sandbox.processes import free_port

MART = TargetRef(key="dev.mart", kind="matview", locator={"schema": "mart", "name": "daily_weather_aggregates"})
NO_INDEX_VIEW = TargetRef(key="dev.latest", kind="matview", locator={"schema": "mart", "name": "latest_weather"})
WEATHER = TargetRef(
    key="dev.weather", kind="table", locator={"schema": "core", "name": "weather", "timestamp_column": "observed_at"}
)
DATABASE = TargetRef(key="dev.db", kind="database", locator={})
LEDGER_ROWS = "select action_id, view, mode, rows_after from controlplane.mart_refresh_log order by finished_at"
MART_ROWS = "select count(*) from mart.daily_weather_aggregates"

SqlRunner = Callable[..., list[tuple[Any, ...]]]


def ctx(action_id: str, lines: list[str] | None = None) -> ExecutionContext:
    return ExecutionContext(action_id=action_id, log=(lines.append if lines is not None else lambda _l: None))


def ledger_exists(run_sql: SqlRunner) -> bool:
    return run_sql("select to_regclass('controlplane.mart_refresh_log') is not null")[0][0]


def add_paris(run_sql: SqlRunner, hours: int = 3) -> None:
    """A new location with observations in the last hours: the mart gains one row per day touched."""
    run_sql(
        "insert into core.location (location_name, latitude, longitude, country, city) "
        "values ('Paris', 48.8566, 2.3522, 'FR', 'Paris')"
    )
    run_sql(
        """
        insert into core.weather (location_id, observed_at, temperature_celsius, humidity_percent,
                                  precipitation_mm, wind_speed_kmh)
        select l.location_id, h, 14.5, 70, 0, 10
        from core.location l,
             generate_series(date_trunc('hour', now()) - make_interval(hours => %s - 1),
                             date_trunc('hour', now()), interval '1 hour') h
        where l.location_name = 'Paris'
        """,
        (hours,),
    )


def column(findings: Findings, name: str, row: int = 0) -> Any:
    return findings.rows[row][findings.columns.index(name)]


# ------------------------------------------------------------------------------------------ registry


def test_registry_finds_postgres_via_entry_points() -> None:
    assert connector_classes()["postgres"] is PostgresConnector
    assert get_connector_class("postgres").verb_class("refresh-mart") is not None


def test_health_reports_server_version_and_latency(connector: PostgresConnector) -> None:
    result = connector.health()
    assert result.ok, result.summary
    assert "PostgreSQL 15" in result.summary
    assert result.latency_ms is not None


def test_metadata_lists_marts_with_concurrent_refresh_flag(connector: PostgresConnector) -> None:
    views = {v["name"]: v for v in connector.metadata("matviews", schema="mart")}
    assert set(views) == {"daily_weather_aggregates", "daily_wikipedia_page_stats"}
    assert views["daily_weather_aggregates"]["populated"] is True
    assert views["daily_weather_aggregates"]["concurrent_refresh_possible"] is True
    tables = {(t["schema"], t["name"]): t for t in connector.metadata("tables")}
    assert tables[("core", "weather")]["timestamp_columns"] == ["observed_at"]
    assert tables[("core", "weather")]["size_bytes"] > 0  # summed over its monthly partitions
    assert ("core", "weather_default") not in tables  # partitions are managed through their parent
    with pytest.raises(ConnectorError, match="cannot list"):
        connector.metadata("dags")


def test_locator_validation_rejects_missing_and_extra_keys() -> None:
    PostgresConnector.validate_locator("matview", {"schema": "mart", "name": "x"})
    with pytest.raises(ValueError, match="name"):
        PostgresConnector.validate_locator("matview", {"schema": "mart"})
    with pytest.raises(ValueError, match="Extra inputs"):
        PostgresConnector.validate_locator("database", {"schema": "mart"})
    with pytest.raises(ValueError, match="63 bytes"):
        PostgresConnector.validate_locator("table", {"schema": "core", "name": "w" * 64})


# -------------------------------------------------------------------------------------- refresh-mart


def test_refresh_plan_uses_concurrently_and_names_exclusive_lock(
    connector: PostgresConnector, run_sql: SqlRunner
) -> None:
    plan = connector.verb("refresh-mart").plan(MART, RefreshMartParams())
    mart_rows = run_sql(MART_ROWS)[0][0]

    assert plan.details["mode"] == "concurrently"
    assert plan.details["concurrent_possible"] is True
    assert plan.details["unique_indexes"] == ["daily_weather_aggregates_location_date_uidx"]
    assert plan.locks == ["EXCLUSIVE lock: reads continue, writes to the view block"]
    assert plan.requires_consent is False
    assert plan.risk is Risk.LOW
    assert plan.counts["rows"] == mart_rows >= 70  # 5 locations x the UTC days touched by 14 x 24 hours
    assert plan.estimated_bytes and plan.estimated_bytes > 0
    assert plan.touches[0].name == "mart.daily_weather_aggregates"


def test_view_without_unique_index_needs_consent_and_refusal_changes_nothing(
    connector: PostgresConnector, run_sql: SqlRunner
) -> None:
    run_sql(
        "create materialized view mart.latest_weather as "
        "select location_id, max(observed_at) as last_observed_at from core.weather group by location_id"
    )
    add_paris(run_sql)
    verb = connector.verb("refresh-mart")

    plan = verb.plan(NO_INDEX_VIEW, RefreshMartParams())
    assert plan.requires_consent is True
    assert "readers" in plan.consent_reason and "no usable unique index" in plan.consent_reason
    assert plan.locks == ["ACCESS EXCLUSIVE lock: readers block for the duration"]
    assert plan.risk is Risk.MEDIUM

    with pytest.raises(ConnectorError, match="needs consent") as refused:
        verb.execute(NO_INDEX_VIEW, RefreshMartParams(), ctx("act-refused"))
    assert refused.value.transient is False
    assert run_sql("select count(*) from mart.latest_weather")[0][0] == 5  # Paris not picked up
    assert not ledger_exists(run_sql)

    outcome = verb.execute(NO_INDEX_VIEW, RefreshMartParams(allow_blocking_readers=True), ctx("act-consented"))
    assert outcome.details["mode"] == "blocking"
    assert outcome.details["rows_after"] == 6


def test_demanding_concurrently_when_impossible_is_a_permanent_error(
    connector: PostgresConnector, run_sql: SqlRunner
) -> None:
    run_sql("create materialized view mart.latest_weather as select 1 as id with no data")
    run_sql("create unique index on mart.latest_weather (id)")

    with pytest.raises(ConnectorError, match="not populated") as exc:
        connector.verb("refresh-mart").plan(NO_INDEX_VIEW, RefreshMartParams(concurrently=True))
    assert exc.value.transient is False


def test_refresh_picks_up_new_rows_and_writes_one_ledger_row(connector: PostgresConnector, run_sql: SqlRunner) -> None:
    add_paris(run_sql, hours=1)
    before = run_sql(MART_ROWS)[0][0]
    lines: list[str] = []

    outcome = connector.verb("refresh-mart").execute(MART, RefreshMartParams(), ctx("act-1", lines))

    assert outcome.already_done is False
    assert outcome.details["rows_before"] == before
    assert outcome.details["rows_after"] == before + 1 == run_sql(MART_ROWS)[0][0]
    assert outcome.details["mode"] == "concurrently"
    assert datetime.fromisoformat(outcome.details["refreshed_at"]) <= datetime.now(UTC)
    assert run_sql(LEDGER_ROWS) == [("act-1", "mart.daily_weather_aggregates", "concurrently", before + 1)]
    assert lines[0].startswith("refreshing mart.daily_weather_aggregates concurrently")
    assert lines[-1].startswith("refreshed mart.daily_weather_aggregates in")


def test_repeated_action_id_does_not_refresh_again(connector: PostgresConnector, run_sql: SqlRunner) -> None:
    verb = connector.verb("refresh-mart")
    first = verb.execute(MART, RefreshMartParams(), ctx("act-once"))
    add_paris(run_sql, hours=1)  # a real second refresh would now see one more row

    again = verb.execute(MART, RefreshMartParams(), ctx("act-once"))

    assert again.already_done is True
    assert again.details == first.details
    assert run_sql(MART_ROWS)[0][0] == first.details["rows_after"]
    assert len(run_sql(LEDGER_ROWS)) == 1


def test_verify_confirms_refresh_and_rejects_an_unrecorded_one(connector: PostgresConnector) -> None:
    verb = connector.verb("refresh-mart")
    outcome = verb.execute(MART, RefreshMartParams(), ctx("act-verify"))

    verdict = verb.verify(MART, RefreshMartParams(), outcome)
    assert verdict.ok, verdict.summary
    assert f"{outcome.details['rows_after']} rows" in verdict.summary

    forged = outcome.model_copy(update={"details": {**outcome.details, "action_id": "act-never-ran"}})
    verdict = verb.verify(MART, RefreshMartParams(), forged)
    assert not verdict.ok
    assert "no ledger row for action act-never-ran" in verdict.summary


def test_verify_fails_when_view_changed_since_the_recorded_refresh(
    connector: PostgresConnector, run_sql: SqlRunner
) -> None:
    verb = connector.verb("refresh-mart")
    outcome = verb.execute(MART, RefreshMartParams(), ctx("act-a"))
    add_paris(run_sql, hours=1)
    run_sql("refresh materialized view mart.daily_weather_aggregates")  # someone else refreshed since

    verdict = verb.verify(MART, RefreshMartParams(), outcome)
    assert not verdict.ok
    recorded = outcome.details["rows_after"]
    assert f"{recorded + 1} rows but the refresh recorded {recorded}" in verdict.summary


def test_identifier_injection_in_locator_is_quoted_harmlessly(connector: PostgresConnector, run_sql: SqlRunner) -> None:
    evil = TargetRef(key="evil", kind="matview", locator={"schema": "mart", "name": 'x"; drop table core.weather; --'})
    with pytest.raises(ConnectorError, match="does not exist") as exc:
        connector.verb("refresh-mart").execute(evil, RefreshMartParams(allow_blocking_readers=True), ctx("act-evil"))
    assert exc.value.transient is False
    with pytest.raises(ConnectorError, match="has no column"):
        connector.check("freshness").run(WEATHER, FreshnessParams(column='observed_at"; drop table core.weather; --'))
    assert run_sql("select count(*) from core.weather")[0][0] == 14 * 24 * 5


def test_refresh_on_a_table_target_is_refused(connector: PostgresConnector) -> None:
    not_a_view = TargetRef(key="t", kind="matview", locator={"schema": "core", "name": "location"})
    with pytest.raises(ConnectorError, match="is a table, not a materialized view"):
        connector.verb("refresh-mart").plan(not_a_view, RefreshMartParams())
    with pytest.raises(ConnectorError, match="needs a matview"):
        connector.verb("refresh-mart").plan(WEATHER, RefreshMartParams())


def test_refresh_exceeding_its_timeout_is_transient_and_records_nothing(
    connector: PostgresConnector, run_sql: SqlRunner
) -> None:
    run_sql("create materialized view mart.slow as select 1 as id from pg_sleep(3) with no data")
    slow = TargetRef(key="slow", kind="matview", locator={"schema": "mart", "name": "slow"})
    started = time.monotonic()

    with pytest.raises(ConnectorError, match="statement timeout") as exc:
        connector.verb("refresh-mart").execute(
            slow, RefreshMartParams(allow_blocking_readers=True, timeout_s=1), ctx("act-slow")
        )

    assert exc.value.transient is True
    assert time.monotonic() - started < 2.5
    assert run_sql("select count(*) from controlplane.mart_refresh_log") == [(0,)]


def test_refresh_waiting_on_a_reader_hits_lock_timeout_as_transient(
    make_connector: Callable[..., PostgresConnector], warehouse_url: str
) -> None:
    connector = make_connector(lock_timeout_ms=300)
    with psycopg.connect(warehouse_url, connect_timeout=5) as reader:
        reader.execute("select count(*) from mart.daily_weather_aggregates")  # holds ACCESS SHARE until rollback
        with pytest.raises(ConnectorError, match="lock_timeout") as exc:
            connector.verb("refresh-mart").execute(
                MART, RefreshMartParams(concurrently=False, allow_blocking_readers=True), ctx("act-locked")
            )
        reader.rollback()
    assert exc.value.transient is True


def test_cancel_request_stops_a_running_refresh(connector: PostgresConnector, run_sql: SqlRunner) -> None:
    run_sql("create materialized view mart.slow as select 1 as id from pg_sleep(5) with no data")
    slow = TargetRef(key="slow", kind="matview", locator={"schema": "mart", "name": "slow"})
    asked_at = time.monotonic() + 0.5
    context = ExecutionContext(action_id="act-cancel", cancel_requested=lambda: time.monotonic() > asked_at)

    with pytest.raises(ConnectorError, match="cancelled on request") as exc:
        connector.verb("refresh-mart").execute(slow, RefreshMartParams(allow_blocking_readers=True), context)

    assert exc.value.transient is False
    assert time.monotonic() - asked_at < 3


# ---------------------------------------------------------------------------------------------- checks


def test_matview_status_reports_populated_view_and_last_refresh(
    connector: PostgresConnector, run_sql: SqlRunner
) -> None:
    status = connector.check("matview_status")
    before = status.run(MART, status.params_model())
    assert before.passed
    assert column(before, "rows") == run_sql(MART_ROWS)[0][0]
    assert column(before, "concurrent_refresh_possible") is True
    assert column(before, "last_refresh_at") is None

    connector.verb("refresh-mart").execute(MART, RefreshMartParams(), ctx("act-status"))
    after = status.run(MART, status.params_model())
    assert column(after, "last_refresh_action") == "act-status"
    assert column(after, "last_refresh_mode") == "concurrently"


def test_matview_status_fails_for_unpopulated_view(connector: PostgresConnector, run_sql: SqlRunner) -> None:
    run_sql("create materialized view mart.latest_weather as select 1 as id with no data")
    status = connector.check("matview_status")
    findings = status.run(NO_INDEX_VIEW, status.params_model())
    assert not findings.passed
    assert column(findings, "rows") is None
    assert "NOT populated" in findings.summary


def test_freshness_passes_on_fresh_data_and_fails_after_recent_rows_vanish(
    connector: PostgresConnector, run_sql: SqlRunner
) -> None:
    freshness = connector.check("freshness")
    fresh = freshness.run(WEATHER, freshness.params_model())
    assert fresh.passed, fresh.summary
    assert column(fresh, "hours_since_last_load") < 2

    run_sql("delete from core.weather where observed_at > now() - interval '5 hours'")
    stale = freshness.run(WEATHER, freshness.params_model())
    assert not stale.passed
    assert column(stale, "hours_since_last_load") > 4
    assert "SLA 2 h exceeded" in stale.summary
    assert freshness.run(WEATHER, freshness.params_model(sla_hours=6)).passed


def test_row_counts_by_day_shows_days_without_rows_as_zero(connector: PostgresConnector, run_sql: SqlRunner) -> None:
    today = datetime.now(UTC).date()
    gap = today - timedelta(days=5)
    run_sql("delete from core.weather where (observed_at at time zone 'UTC')::date = %s", (gap,))
    counts = connector.check("row_counts_by_day")
    params = RowCountsByDayParams(start_date=today - timedelta(days=7), end_date=today - timedelta(days=2))

    informational = counts.run(WEATHER, params)
    assert informational.passed
    assert informational.columns == ["date", "count", "location_count"]
    assert informational.rows == [
        [(today - timedelta(days=d)).isoformat(), 0 if d == 5 else 120, 0 if d == 5 else 5] for d in (7, 6, 5, 4, 3)
    ]
    assert gap.isoformat() in informational.summary

    strict = counts.run(WEATHER, params.model_copy(update={"expected_min_per_day": 120}))
    assert not strict.passed
    assert "1 day(s) below 120 rows" in strict.summary


def test_row_counts_window_is_validated() -> None:
    with pytest.raises(ValidationError, match="before end_date"):
        RowCountsByDayParams(start_date=date(2024, 11, 8), end_date=date(2024, 11, 8))
    with pytest.raises(ValidationError, match="366 days"):
        RowCountsByDayParams(start_date=date(2023, 1, 1), end_date=date(2024, 11, 8))


def test_blocking_queries_finds_a_blocked_session_and_is_clean_otherwise(
    connector: PostgresConnector, warehouse_url: str
) -> None:
    check = connector.check("blocking_queries")
    assert check.run(DATABASE, check.params_model()).passed

    holder = psycopg.connect(warehouse_url, connect_timeout=5)
    waiter = psycopg.connect(warehouse_url, connect_timeout=5, autocommit=True, options="-c lock_timeout=20000")
    errors: list[BaseException] = []

    def wait_for_lock() -> None:
        try:
            waiter.execute("select count(*) from core.location")
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=wait_for_lock, daemon=True)
    try:
        holder.execute("lock table core.location in access exclusive mode")
        thread.start()
        deadline = time.monotonic() + 5
        findings = check.run(DATABASE, check.params_model())
        while findings.passed and time.monotonic() < deadline:
            time.sleep(0.05)
            findings = check.run(DATABASE, check.params_model())
        assert not findings.passed
        assert column(findings, "blocked_pid") == waiter.info.backend_pid
        assert column(findings, "blocking_pid") == holder.info.backend_pid
        assert column(findings, "wait_relation") == "core.location"
        assert column(findings, "wait_mode") == "AccessShareLock"
        assert column(findings, "blocking_state") == "idle in transaction"
        assert "select count(*) from core.location" in column(findings, "blocked_query")
        assert check.run(DATABASE, check.params_model(min_duration_s=600)).passed
    finally:
        holder.rollback()
        if thread.is_alive():
            thread.join(10)
        holder.close()
        waiter.close()
    assert not errors
    assert check.run(DATABASE, check.params_model()).passed


# ---------------------------------------------------------------------------------------------- errors


def test_statement_timeout_becomes_a_transient_error(
    make_connector: Callable[..., PostgresConnector], run_sql: SqlRunner
) -> None:
    run_sql("create view core.slow_weather as select now() as observed_at from pg_sleep(2)")
    connector = make_connector(statement_timeout_ms=200)
    slow = TargetRef(key="slow", kind="table", locator={"schema": "core", "name": "slow_weather"})
    freshness = connector.check("freshness")
    with pytest.raises(ConnectorError, match="statement timeout") as exc:
        freshness.run(slow, freshness.params_model(column="observed_at"))
    assert exc.value.transient is True


def test_unreachable_port_fails_fast_as_transient_without_the_password() -> None:
    password = "hunter2-do-not-leak"
    connector = PostgresConnector(
        PostgresConnector.validate_config(
            {"host": "127.0.0.1", "port": free_port(), "dbname": "dw", "user": "postgres", "connect_timeout_s": 2}
        ),
        {"password": password},
    )
    started = time.monotonic()
    with pytest.raises(ConnectorError) as exc:
        connector.check("freshness").run(WEATHER, connector.check("freshness").params_model())
    assert exc.value.transient is True
    assert time.monotonic() - started < 3
    assert password not in str(exc.value)
    assert "cannot connect to Postgres 127.0.0.1" in exc.value.message
    assert connector.health().ok is False


def test_refresh_by_a_user_who_does_not_own_the_view_is_permanent_and_explained(
    warehouse_url: str, run_sql: SqlRunner
) -> None:
    role, password = f"reader_{uuid.uuid4().hex[:8]}", "reader-pw-" + uuid.uuid4().hex[:8]
    run_sql(f"create role {role} login password '{password}'")
    try:
        run_sql(f"grant usage on schema mart to {role}")
        run_sql(f"grant select on all tables in schema mart to {role}")
        run_sql(f"grant create on database {psycopg.conninfo.conninfo_to_dict(warehouse_url)['dbname']} to {role}")
        reader = PostgresConnector.from_url(warehouse_url.replace("postgres@", f"{role}:{password}@"))
        assert (
            "REFRESH will fail with permission denied"
            in reader.verb("refresh-mart").plan(MART, RefreshMartParams()).warnings[0]
        )
        with pytest.raises(ConnectorError, match="must be owner") as exc:
            reader.verb("refresh-mart").execute(MART, RefreshMartParams(), ctx("act-reader"))
        assert exc.value.transient is False
        assert "lacks a privilege" in exc.value.message
        assert password not in exc.value.message
    finally:
        run_sql(f"drop owned by {role}")
        run_sql(f"drop role {role}")


def test_unknown_database_is_a_permanent_error(make_connector: Callable[..., PostgresConnector]) -> None:
    connector = make_connector(dbname="no_such_warehouse")
    with pytest.raises(ConnectorError, match="does not exist") as exc:
        connector.check("blocking_queries").run(DATABASE, connector.check("blocking_queries").params_model())
    assert exc.value.transient is False


def test_missing_timestamp_column_is_explained(connector: PostgresConnector) -> None:
    no_column = TargetRef(key="loc", kind="table", locator={"schema": "core", "name": "location"})
    with pytest.raises(ConnectorError, match=r"no timestamp column for core\.location"):
        connector.check("freshness").run(no_column, connector.check("freshness").params_model())
