"""``restore-table`` on the sandbox BigQuery: time travel into a new table, counts verified, then swapped in."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import ConnectorError, ExecutionContext, Risk
from connectors.bigquery import BigQueryConnector, RestoreTableParams
from connectors.bigquery.verbs import restore_names
from sandbox.bigquery.seed import SeedObjects
from tests.bigquery_sandbox import SandboxBigQuery, connector_for, sandbox_bigquery, seeded, targets

# Job ids stay in BigQuery: every run of the tests acts under new action ids.
ACT_RESTORE_1 = f"act-restore-1-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bq() -> SandboxBigQuery:
    return sandbox_bigquery()


@pytest.fixture
def objects(bq: SandboxBigQuery) -> Iterator[SeedObjects]:
    with seeded(bq) as objects:
        yield objects


def count(connector: BigQueryConnector, table: str) -> int:
    return int(connector.session().rows(f"SELECT COUNT(*) FROM `{table}`", doing="test count")[0][0])


def lose_packages(connector: BigQueryConnector, objects: SeedObjects) -> datetime:
    """Delete most packages (a bad job); return a moment before it."""
    time.sleep(1)
    before = datetime.now(UTC)
    time.sleep(1)
    connector.session().rows(
        f"DELETE FROM `{objects.raw}.packages` WHERE sender_customer_id != 'C001'", doing="the bad delete"
    )
    return before


def test_plan_names_the_timestamp_and_both_row_counts_at_high_risk(bq: SandboxBigQuery, objects: SeedObjects) -> None:
    connector = connector_for(bq)
    before = lose_packages(connector, objects)
    plan = connector.verb("restore-table").plan(targets(objects)["packages"], RestoreTableParams(timestamp=before))
    assert plan.risk is Risk.HIGH
    assert plan.details == {
        "timestamp": before.isoformat(), "rows_now": 2, "rows_then": 12, "table": f"{objects.raw}.packages",
    }  # fmt: skip
    assert before.isoformat() in plan.summary and "2 rows now -> 12 rows then" in plan.summary


def test_execute_restores_swaps_keeps_the_old_table_and_is_done_once(bq: SandboxBigQuery, objects: SeedObjects) -> None:
    connector = connector_for(bq)
    target = targets(objects)["packages"]
    params = RestoreTableParams(timestamp=lose_packages(connector, objects))
    outcome = connector.verb("restore-table").execute(target, params, ExecutionContext(action_id=ACT_RESTORE_1))
    assert not outcome.already_done
    assert count(connector, f"{objects.raw}.packages") == 12
    restored, kept = restore_names("packages", ACT_RESTORE_1)
    assert outcome.details["kept_as"] == f"{objects.raw}.{kept}"
    assert count(connector, outcome.details["kept_as"]) == 2
    verification = connector.verb("restore-table").verify(target, params, outcome)
    assert verification.ok, verification.summary
    again = connector_for(bq).verb("restore-table").execute(target, params, ExecutionContext(action_id=ACT_RESTORE_1))
    assert again.already_done
    assert count(connector, f"{objects.raw}.packages") == 12
    tables = {t.table_id for t in connector.session().client.list_tables(objects.raw, timeout=30)}
    assert tables == {"customers", "packages", kept, "tracking_events"}  # the copy took the table's name
    assert restored not in tables


def test_a_timestamp_outside_time_travel_is_refused_before_anything_runs(
    bq: SandboxBigQuery, objects: SeedObjects
) -> None:
    verb = connector_for(bq).verb("restore-table")
    with pytest.raises(ConnectorError, match="7-day time travel window"):
        verb.plan(targets(objects)["packages"], RestoreTableParams(timestamp=datetime.now(UTC) - timedelta(days=8)))
    with pytest.raises(ConnectorError, match="not in the past"):
        verb.plan(targets(objects)["packages"], RestoreTableParams(timestamp=datetime.now(UTC) + timedelta(hours=1)))
