"""The BigQuery connector's checks against the sandbox BigQuery holding the seed-002 objects (no Django)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import ConnectorError, Findings, TargetRef
from connectors.bigquery import (
    BigQueryConnector,
    ColumnParams,
    FreshnessParams,
    MatviewStalenessParams,
    OrphansParams,
    PartitionRowCountsParams,
    SlotUsageParams,
)
from connectors.bigquery.client import param
from sandbox.bigquery.seed import SeedObjects
from tests.bigquery_sandbox import SandboxBigQuery, connector_for, sandbox_bigquery, seeded, targets


@pytest.fixture(scope="module")
def bq() -> SandboxBigQuery:
    return sandbox_bigquery()


@pytest.fixture(scope="module")
def objects(bq: SandboxBigQuery) -> Iterator[SeedObjects]:
    """One seed for the read-only checks of this module."""
    with seeded(bq) as objects:
        yield objects


@pytest.fixture
def connector(bq: SandboxBigQuery) -> BigQueryConnector:
    return connector_for(bq)


def col(findings: Findings, name: str) -> list:
    index = findings.columns.index(name)
    return [row[index] for row in findings.rows]


def test_freshness_of_a_table_passes_within_max_hours_and_fails_past_it(
    connector: BigQueryConnector, objects: SeedObjects
) -> None:
    target = targets(objects)["packages"]
    fresh = connector.check("freshness").run(target, FreshnessParams(sla_hours=2))
    assert fresh.passed, fresh.summary
    assert col(fresh, "hours_since_last_load")[0] < 1
    # The seed loaded everything seconds ago: a window of 0.36 s has passed by now.
    late = connector.check("freshness").run(target, FreshnessParams(sla_hours=0.0001))
    assert not late.passed
    assert f"{objects.raw}.packages" in late.summary


def test_freshness_of_a_dataset_reads_every_table_with_a_load_column(
    connector: BigQueryConnector, objects: SeedObjects
) -> None:
    findings = connector.check("freshness").run(targets(objects)["raw"], FreshnessParams())
    assert sorted(col(findings, "table")) == [
        f"{objects.raw}.{t}" for t in ("customers", "packages", "tracking_events")
    ]
    assert findings.passed


def test_freshness_without_a_load_column_is_a_clear_error(connector: BigQueryConnector, objects: SeedObjects) -> None:
    with pytest.raises(ConnectorError, match="no load-time column"):
        connector.check("freshness").run(targets(objects)["customers"], FreshnessParams())


def test_nulls_counts_and_shows_rows_with_a_null_key(connector: BigQueryConnector, objects: SeedObjects) -> None:
    findings = connector.check("nulls").run(targets(objects)["packages"], ColumnParams())
    assert not findings.passed
    assert findings.summary.startswith(f"{objects.null_package_ids} of 12 row(s)")
    assert col(findings, "package_id") == [None, None]
    clean = connector.check("nulls").run(targets(objects)["packages"], ColumnParams(column="sender_customer_id"))
    assert clean.passed and clean.rows == []


def test_duplicates_lists_keys_present_more_than_once(connector: BigQueryConnector, objects: SeedObjects) -> None:
    findings = connector.check("duplicates").run(targets(objects)["packages"], ColumnParams())
    assert not findings.passed
    assert sorted(col(findings, "package_id")) == objects.duplicate_package_ids
    assert col(findings, "count") == [2, 2]


def test_orphans_finds_packages_whose_sender_is_not_a_customer(
    connector: BigQueryConnector, objects: SeedObjects
) -> None:
    params = OrphansParams(
        column="sender_customer_id", parent_table=f"{objects.raw}.customers", parent_key="customer_id"
    )
    findings = connector.check("orphans").run(targets(objects)["packages"], params)
    assert not findings.passed
    assert col(findings, "package_id") == objects.orphan_packages
    assert col(findings, "sender_customer_id") == ["C998", "C999"]


def test_orphans_refuses_a_parent_table_that_is_not_a_name() -> None:
    with pytest.raises(ValueError, match="parent_table"):
        OrphansParams(parent_table="raw.customers; DROP TABLE x", parent_key="customer_id")


def test_partition_row_counts_shows_the_empty_day(connector: BigQueryConnector, objects: SeedObjects) -> None:
    params = PartitionRowCountsParams(start_date=objects.days[0], end_date=objects.days[-1])
    findings = connector.check("partition_row_counts").run(targets(objects)["facts"], params)
    assert not findings.passed
    assert objects.missing_day.isoformat() in findings.summary
    counts = dict(findings.rows)
    assert counts[objects.missing_day.isoformat()] == 0
    assert all(rows == 1 for day, rows in counts.items() if day != objects.missing_day.isoformat())
    events = connector.check("partition_row_counts").run(targets(objects)["events"], params)
    assert events.passed
    assert col(events, "rows") == [objects.events_on(day) for day in objects.days]


def test_matview_staleness_fails_for_the_never_refreshed_view_and_passes_after_a_refresh(
    bq: SandboxBigQuery,
) -> None:
    with seeded(bq) as objects:  # its own: this test refreshes the view
        _stale_then_fresh(bq, objects)


def _stale_then_fresh(bq: SandboxBigQuery, objects: SeedObjects) -> None:
    connector = connector_for(bq)
    view = targets(objects)["view"]
    stale = connector.check("matview_staleness").run(view, MatviewStalenessParams())
    assert not stale.passed
    assert "never refreshed" in stale.summary
    connector.session().rows(
        f"CALL BQ.REFRESH_MATERIALIZED_VIEW('{bq.project}.{objects.marts}.mv_daily_volume')", doing="test refresh"
    )
    fresh = connector.check("matview_staleness").run(view, MatviewStalenessParams(max_hours=1))
    assert fresh.passed, fresh.summary


def test_slot_usage_says_when_the_jobs_view_has_no_slot_figures(
    connector: BigQueryConnector, objects: SeedObjects
) -> None:
    connector.session().rows("SELECT @x", [param("x", 1)], doing="a job to count")
    findings = connector.check("slot_usage").run(targets(objects)["project"], SlotUsageParams(hours=1))
    assert findings.passed
    assert "gives no slot figures" in findings.summary
    assert sum(col(findings, "jobs")) >= 1


def test_checks_refuse_a_target_of_the_wrong_kind(connector: BigQueryConnector, objects: SeedObjects) -> None:
    with pytest.raises(ConnectorError, match="needs a table"):
        connector.check("nulls").run(targets(objects)["view"], ColumnParams())


def test_a_missing_table_is_a_permanent_error(connector: BigQueryConnector, objects: SeedObjects) -> None:
    missing = targets(objects)["packages"]
    gone = type(missing)(key="x", kind="table", locator={**missing.locator, "name": "no_such_table"})
    with pytest.raises(ConnectorError) as failed:
        connector.check("nulls").run(gone, ColumnParams())
    assert not failed.value.transient
    assert "no_such_table" in failed.value.message


def test_an_unreachable_endpoint_is_a_transient_error_within_the_timeout(bq: SandboxBigQuery) -> None:
    from sandbox.services import free_port

    connector = BigQueryConnector(
        {"project": bq.project, "api_endpoint": f"http://127.0.0.1:{free_port()}", "timeout_s": 2}, {}
    )
    started = datetime.now(UTC)
    with pytest.raises(ConnectorError) as failed:
        connector.check("slot_usage").run(TargetRef(key="p", kind="project", locator={}), SlotUsageParams())
    assert failed.value.transient
    assert datetime.now(UTC) - started < timedelta(seconds=20)
