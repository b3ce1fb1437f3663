"""The seed-004 runbooks' SQL steps on the Postgres connector, against the sandbox weather warehouse: the checks
(reference rows, a location's data, expectation violations, raw payloads) and the verbs delete-rows and
terminate-blocking (plan lists what they touch, execute once per action id, verify)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from connectors.base import ExecutionContext, Risk, TargetRef
from connectors.postgres import PostgresConnector

WEATHER = TargetRef(
    key="dev.weather", kind="table", locator={"schema": "core", "name": "weather", "timestamp_column": "observed_at"}
)
RAW = TargetRef(
    key="dev.raw",
    kind="table",
    locator={"schema": "raw", "name": "weather_observations", "timestamp_column": "ingested_at"},
)
LOCATIONS = TargetRef(key="dev.locations", kind="table", locator={"schema": "core", "name": "location"})
DATABASE = TargetRef(key="dev.db", kind="database", locator={})

SqlRunner = Callable[..., list[tuple[Any, ...]]]

# Rows inserted by a test are the newest: the sandbox's own payloads are stamped 5 minutes after the current hour,
# which is later than now() in the first minutes of an hour.
AFTER_LATEST = "(select max(ingested_at) from raw.weather_observations)"


def ctx(action_id: str, plan: Any = None, lines: list[str] | None = None) -> ExecutionContext:
    return ExecutionContext(action_id=action_id, plan=plan, log=lines.append if lines is not None else lambda _l: None)


def _outliers(run_sql: SqlRunner) -> None:
    """Two cold outliers and one hot one (the seed's temperature expectation), one humidity outlier."""
    run_sql(
        "update core.weather set temperature_celsius = v.t from (values (1, -61.0), (2, -55.5), (3, 72.0)) v(loc, t) "
        "where location_id = v.loc and observed_at = date_trunc('hour', now()) - interval '2 hours'"
    )
    run_sql(
        "update core.weather set humidity_percent = 140 "
        "where location_id = 4 and observed_at = date_trunc('hour', now()) - interval '3 hours'"
    )


def test_reference_rows_lists_the_table_and_finds_a_named_row(connector: PostgresConnector, run_sql: SqlRunner) -> None:
    check = connector.check("reference_rows")
    findings = check.run(LOCATIONS, check.params_model(column="location_name", value="San Francisco"))
    assert not findings.passed and "NOT FOUND" in findings.summary
    assert "location_name" in findings.columns and len(findings.rows) == 5
    run_sql(
        "insert into core.location (location_name, latitude, longitude, country, region, city) "
        "values ('San Francisco', 37.7749, -122.4194, 'US', 'California', 'San Francisco')"
    )
    findings = check.run(LOCATIONS, check.params_model(column="location_name", value="San Francisco"))
    assert findings.passed and "6 row(s)" in findings.summary
    with pytest.raises(ValidationError):
        check.params_model(column="location_name")  # a value goes with the column


def test_location_collected_counts_raw_facts_and_mart(connector: PostgresConnector, run_sql: SqlRunner) -> None:
    check = connector.check("location_collected")
    berlin = check.run(DATABASE, check.params_model(location_name="Berlin"))
    assert berlin.passed
    counts = {row[0]: row[2] for row in berlin.rows}
    days = run_sql("select count(distinct (observed_at at time zone 'UTC')::date) from core.weather")[0][0]
    assert counts == {"raw": days, "facts": 14 * 24, "mart": days}  # 14 x 24 hours span 14 or 15 UTC days
    run_sql("insert into core.location (location_name, latitude, longitude) values ('Paris', 48.8566, 2.3522)")
    paris = check.run(DATABASE, check.params_model(location_name="Paris"))
    assert not paris.passed and [row[2] for row in paris.rows] == [0, 0, 0]
    assert "nothing yet in raw.weather_observations, core.weather" in paris.summary


def test_expectation_violations_finds_the_seeds_outliers_by_key(
    connector: PostgresConnector, run_sql: SqlRunner
) -> None:
    check = connector.check("expectation_violations")
    assert check.run(WEATHER, check.params_model()).passed
    _outliers(run_sql)
    findings = check.run(WEATHER, check.params_model())
    assert not findings.passed
    assert sorted((row[0], row[1]["location_id"], row[2]) for row in findings.rows) == [
        ("humidity_range", 4, 140.0),
        ("temperature_range", 1, -61.0),
        ("temperature_range", 2, -55.5),
        ("temperature_range", 3, 72.0),
    ]
    assert "3 row(s) break temperature_range" in findings.summary
    only = check.run(WEATHER, check.params_model(expectation="humidity_range"))
    assert [row[0] for row in only.rows] == ["humidity_range"]


def test_latest_raw_payloads_flags_the_ones_that_fail_to_parse(
    connector: PostgresConnector, run_sql: SqlRunner
) -> None:
    check = connector.check("latest_raw_payloads")
    assert check.run(RAW, check.params_model()).passed
    run_sql(
        "insert into raw.weather_observations (location_name, ingested_at, payload) values "
        f"('Berlin', {AFTER_LATEST} + interval '1 minute', '\"<html>502 Bad Gateway</html>\"'), "
        f"('Tokyo', {AFTER_LATEST} + interval '2 minutes', "
        '\'{"hourly": {"time": ["a", "b"], "temperature_2m": [1]}}\')'
    )
    findings = check.run(RAW, check.params_model())
    assert not findings.passed and len(findings.rows) == 5
    problems = [row[3] for row in findings.rows]
    assert "temperature_2m" in problems[0] and "not a JSON object" in problems[1]
    assert problems[2:] == [None, None, None]
    assert "2 fail to parse" in findings.summary


def test_delete_rows_plans_the_violations_by_key_and_deletes_them_once(
    connector: PostgresConnector, run_sql: SqlRunner
) -> None:
    _outliers(run_sql)
    verb = connector.verb("delete-rows")
    params = verb.params_model(expectation="temperature_range")
    plan = verb.plan(WEATHER, params)
    assert plan.counts == {"rows": 3} and plan.risk == Risk.MEDIUM
    assert sorted(k["location_id"] for k in plan.details["keys"]) == [1, 2, 3]
    total = run_sql("select count(*) from core.weather")[0][0]
    # a row corrected after the plan no longer breaks the expectation: it stays
    run_sql("update core.weather set temperature_celsius = 20 where location_id = 3 and temperature_celsius = 72")
    first = verb.execute(WEATHER, params, ctx("act-del-1", plan))
    assert first.details["deleted"] == 2 and not first.already_done
    again = verb.execute(WEATHER, params, ctx("act-del-1", plan))  # re-delivered: one effect
    assert again.already_done and again.details["deleted"] == 2
    assert run_sql("select count(*) from core.weather")[0][0] == total - 2
    assert verb.verify(WEATHER, params, first).ok
    assert run_sql("select count(*) from controlplane.action_ledger where action_id = 'act-del-1'")[0][0] == 1
    violations = connector.check("expectation_violations")
    assert violations.run(WEATHER, violations.params_model(expectation="temperature_range")).passed
    # the humidity outlier was not part of this delete
    assert run_sql("select count(*) from core.weather where humidity_percent > 100")[0][0] == 1


def test_delete_rows_deletes_the_malformed_raw_record_only(connector: PostgresConnector, run_sql: SqlRunner) -> None:
    run_sql(
        "insert into raw.weather_observations (location_name, ingested_at, payload) "
        f"values ('Berlin', {AFTER_LATEST} + interval '1 minute', '{{\"error\": true}}')"
    )
    bad_id = run_sql("select max(id) from raw.weather_observations")[0][0]
    verb = connector.verb("delete-rows")
    params = verb.params_model(malformed_in_latest=5)
    plan = verb.plan(RAW, params)
    assert plan.details["keys"] == [{"id": bad_id}] and plan.counts == {"rows": 1}
    before = run_sql("select count(*) from raw.weather_observations")[0][0]
    outcome = verb.execute(RAW, params, ctx("act-raw-1", plan))
    assert outcome.details["deleted"] == 1
    assert verb.execute(RAW, params, ctx("act-raw-1", plan)).already_done
    assert run_sql("select count(*) from raw.weather_observations")[0][0] == before - 1
    assert verb.verify(RAW, params, outcome).ok
    by_id = verb.plan(RAW, verb.params_model(ids=[1, 999999]))
    assert by_id.details["keys"] == [{"id": 1}] and "1 of the given ids are not in" in by_id.warnings[-1]


def test_delete_rows_of_a_window_counts_per_day_and_deletes_it_in_one_transaction(
    connector: PostgresConnector, run_sql: SqlRunner
) -> None:
    verb = connector.verb("delete-rows")
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=3), today - timedelta(days=1)
    params = verb.params_model(start_date=start, end_date=end)
    plan = verb.plan(WEATHER, params)
    assert plan.counts == {"rows": 2 * 24 * 5} and plan.risk == Risk.HIGH
    assert plan.details["rows_by_day"] == {str(start): 120, str(start + timedelta(days=1)): 120}
    outcome = verb.execute(WEATHER, params, ctx("act-win-1", plan))
    assert outcome.details["deleted"] == 240
    run_sql(  # the flow reloads one hour of the window: a re-delivery still deletes nothing more
        "insert into core.weather (location_id, observed_at, temperature_celsius) values (1, %s, 10)",
        (datetime.combine(start, datetime.min.time(), UTC),),
    )
    assert verb.execute(WEATHER, params, ctx("act-win-1", plan)).already_done
    assert (
        run_sql("select count(*) from core.weather where observed_at >= %s and observed_at < %s", (start, end))[0][0]
        == 1
    )
    with pytest.raises(ValidationError):
        verb.params_model(start_date=start, end_date=end, expectation="temperature_range")
    with pytest.raises(ValidationError):
        verb.params_model()


@contextmanager
def _blocked(warehouse_url: str) -> Iterator[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]]:
    """An idle-in-transaction session holding a lock on core.location, and a session waiting for it."""
    holder = psycopg.connect(warehouse_url, connect_timeout=5, application_name="stuck-session")
    waiter = psycopg.connect(warehouse_url, connect_timeout=5, autocommit=True, options="-c lock_timeout=20000")
    thread = threading.Thread(
        target=lambda: _quietly(lambda: waiter.execute("select count(*) from core.location")), daemon=True
    )
    try:
        holder.execute("lock table core.location in access exclusive mode")
        thread.start()
        yield holder, waiter
    finally:
        _quietly(holder.rollback)
        thread.join(25)
        holder.close()
        waiter.close()


def _quietly(fn: Callable[[], Any]) -> None:
    with suppress(psycopg.Error):
        fn()


def test_terminate_blocking_plans_the_blocker_and_terminates_it_once(
    connector: PostgresConnector, warehouse_url: str
) -> None:
    verb = connector.verb("terminate-blocking")
    params = verb.params_model()
    assert verb.plan(DATABASE, params).counts == {"sessions": 0, "blocked": 0}
    with _blocked(warehouse_url) as (holder, waiter):
        deadline = time.monotonic() + 5
        plan = verb.plan(DATABASE, params)
        while not plan.counts["sessions"] and time.monotonic() < deadline:
            time.sleep(0.05)
            plan = verb.plan(DATABASE, params)
        assert plan.risk == Risk.HIGH and plan.counts == {"sessions": 1, "blocked": 1}
        (blocker,) = plan.details["blockers"]
        assert blocker["pid"] == holder.info.backend_pid and blocker["blocks"] == [waiter.info.backend_pid]
        assert blocker["state"] == "idle in transaction" and "lock table core.location" in blocker["query"]
        assert blocker["application"] == "stuck-session"
        outcome = verb.execute(DATABASE, params, ctx("act-term-1", plan))
        assert outcome.details["terminated"] == [holder.info.backend_pid]
        verification = verb.verify(DATABASE, params, outcome)
        assert verification.ok, verification.summary
        assert "no session blocks another" in verification.summary
        again = verb.execute(DATABASE, params, ctx("act-term-1", plan))
        assert again.already_done and again.details["terminated"] == [holder.info.backend_pid]
        with pytest.raises(psycopg.OperationalError):
            holder.execute("select 1")  # its session is gone


def test_terminate_blocking_leaves_a_planned_session_that_no_longer_blocks(
    connector: PostgresConnector, warehouse_url: str
) -> None:
    verb = connector.verb("terminate-blocking")
    params = verb.params_model()
    with _blocked(warehouse_url) as (holder, _waiter):
        deadline = time.monotonic() + 5
        plan = verb.plan(DATABASE, params)
        while not plan.counts["sessions"] and time.monotonic() < deadline:
            time.sleep(0.05)
            plan = verb.plan(DATABASE, params)
        holder.rollback()  # it finished on its own before the action ran
        outcome = verb.execute(DATABASE, params, ctx("act-term-2", plan))
        assert outcome.details["terminated"] == [] and outcome.details["skipped"] == [holder.info.backend_pid]
        assert holder.execute("select 1").fetchone() == (1,)
