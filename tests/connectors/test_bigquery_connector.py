"""The BigQuery connector's registration, config, locators, health and pickers (no Django)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.api_core import exceptions
from pydantic import ValidationError

from connectors.base import ConnectorError
from connectors.bigquery import BigQueryConnector
from connectors.bigquery.client import action_label, job_id, translate
from connectors.bigquery.config import BigQueryConfig
from connectors.registry import connector_classes
from sandbox.bigquery.seed import SeedObjects
from sandbox.services import free_port
from tests.bigquery_sandbox import SandboxBigQuery, connector_for, sandbox_bigquery, seeded


@pytest.fixture
def bq() -> SandboxBigQuery:
    return sandbox_bigquery()


@pytest.fixture
def objects(bq: SandboxBigQuery) -> Iterator[SeedObjects]:
    with seeded(bq) as objects:
        yield objects


def test_registry_finds_bigquery_via_entry_points() -> None:
    cls = connector_classes()["bigquery"]
    assert cls is BigQueryConnector
    assert {v.name for v in cls.verbs} == {"refresh-mart", "backfill", "restore-table"}
    assert {c.name for c in cls.checks} == {
        "freshness", "nulls", "duplicates", "orphans", "partition_row_counts", "matview_staleness", "slot_usage",
    }  # fmt: skip


def test_health_answers_from_the_emulator_and_reports_an_unreachable_one(bq: SandboxBigQuery) -> None:
    result = connector_for(bq).health()
    assert result.ok, result.summary
    assert result.latency_ms is not None
    down = BigQueryConnector(
        {"project": "sandbox", "api_endpoint": f"http://127.0.0.1:{free_port()}", "timeout_s": 2}, {}
    )
    assert not down.health().ok


def test_metadata_lists_tables_with_their_partition_column_and_views_apart(
    bq: SandboxBigQuery, objects: SeedObjects
) -> None:
    connector = connector_for(bq)
    assert objects.raw in [row["value"] for row in connector.metadata("datasets")]
    tables = connector.metadata("tables", dataset=objects.marts)
    assert [(t["name"], t["partition_column"]) for t in tables] == [("fact_deliveries", "delivery_date")]
    views = connector.metadata("matviews", dataset=objects.marts)
    assert [v["value"] for v in views] == [f"{objects.marts}.mv_daily_volume"]
    with pytest.raises(ConnectorError, match="cannot list"):
        connector.metadata("jobs")


def test_config_needs_credentials_unless_an_emulator_is_named() -> None:
    connector = BigQueryConnector({"project": "my-project"}, {})
    with pytest.raises(ConnectorError, match="credentials_json"):
        connector.session()
    with pytest.raises(ConnectorError, match="not a service account key"):
        BigQueryConnector({"project": "my-project"}, {"credentials_json": "{}"}).session()


def test_config_and_locators_refuse_what_could_reach_sql() -> None:
    with pytest.raises(ValidationError):
        BigQueryConnector.validate_config({"project": "p`; DROP"})
    with pytest.raises(ValidationError):
        BigQueryConnector.validate_config({"project": "my-project", "on_demand_usd_per_tib": 0})
    with pytest.raises(ValueError, match="dataset"):
        BigQueryConnector.validate_locator("table", {"dataset": "raw`x", "name": "t"})
    with pytest.raises(ValueError, match="partition_date"):
        BigQueryConnector.validate_locator("table", {"dataset": "raw", "name": "t", "load_query": "SELECT 1"})
    with pytest.raises(ValueError, match="single statement"):
        BigQueryConnector.validate_locator(
            "table", {"dataset": "raw", "name": "t", "load_query": "SELECT @partition_date; DROP TABLE raw.t"}
        )
    BigQueryConnector.validate_locator("matview", {"dataset": "marts", "name": "mv"})


def test_job_ids_and_labels_are_deterministic_and_valid() -> None:
    assert job_id("7f9c/2:x", "backfill_20261201") == "cp_7f9c_2_x_backfill_20261201"
    assert job_id("a", "refresh") == job_id("a", "refresh")
    assert action_label("ABC-123.x" * 10) == ("abc-123_x" * 10)[:63]


def test_errors_are_transient_only_where_a_retry_can_help() -> None:
    config = BigQueryConfig(project="my-project")
    unavailable = exceptions.from_http_status(503, "backend unavailable")
    assert translate(unavailable, config, "reading").transient
    rate = exceptions.from_http_status(403, "slow down", errors=[{"reason": "rateLimitExceeded"}])
    assert translate(rate, config, "reading").transient
    capped = exceptions.from_http_status(400, "over", errors=[{"reason": "bytesBilledLimitExceeded"}])
    error = translate(capped, config, "reloading")
    assert not error.transient
    assert "maximum_bytes_billed" in error.message
    missing = exceptions.from_http_status(404, "Not found: Table p:raw.x", errors=[{"reason": "notFound"}])
    assert not translate(missing, config, "reading").transient
