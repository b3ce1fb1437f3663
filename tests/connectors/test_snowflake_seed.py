"""The 001 stories on the seed's own objects (sandbox.snowflake.seed): the auto-suspended bronze-to-silver graph
from alert to verified resume, and the paused inventory pipe from alert to verified ingestion."""
# ruff: noqa: F811  (the fixtures are imported from sf_support, then requested by name)

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from connectors.base import TargetRef
from connectors.snowflake import SnowflakeConnector
from sandbox.snowflake.seed import seed
from tests.connectors.sf_support import ctx, sf_url  # noqa: F401 (fixtures)

ROOT = TargetRef(
    "dev.task_bronze_to_silver_pos", "task",
    {"database": "DEV_STAGING", "schema": "TASKS", "name": "task_bronze_to_silver_pos"},
)  # fmt: skip
FACTS_TASK = TargetRef(
    "dev.task_load_fact_sales", "task", {"database": "DEV_STAGING", "schema": "TASKS", "name": "task_load_fact_sales"}
)
INVENTORY_PIPE = TargetRef(
    "dev.pipe_inventory_data", "pipe", {"database": "DEV_RAW", "schema": "BRONZE", "name": "pipe_inventory_data"}
)


@pytest.fixture
def seeded(sf_url: str) -> Callable[..., SnowflakeConnector]:
    """The seed rebuilt (idempotent) and a connector factory on it."""
    from urllib.parse import urlsplit

    seed(sf_url)
    parts = urlsplit(sf_url)

    def make(**config: object) -> SnowflakeConnector:
        base = {"account": "sandbox", "user": "controlplane", "host": parts.hostname, "port": parts.port,
                "protocol": parts.scheme, "database": "DEV_STAGING", "warehouse": "WH_TRANS",
                "poll_interval_s": 0.2, "wait_timeout_s": 60}  # fmt: skip
        return SnowflakeConnector({**base, **config}, {"password": "sandbox-password"})

    return make


def test_auto_suspended_graph_from_alert_to_verified_resume(seeded: Callable[..., SnowflakeConnector]) -> None:
    connector = seeded()
    alerts = connector.alerts([ROOT, FACTS_TASK])
    assert [(a.target, a.alert_type) for a in alerts] == [("dev.task_bronze_to_silver_pos", "snowflake.task_failed")]
    assert alerts[0].details["state"] == "FAILED_AND_AUTO_SUSPENDED"
    assert "is not recognized" in alerts[0].details["error"]
    status = connector.check("task_status").run(ROOT, connector.check("task_status").params_model())
    assert not status.passed and "FAILED_AND_AUTO_SUSPENDED" in status.summary

    verb = connector.verb("resume-task")
    params = verb.params_model()
    plan = verb.plan(ROOT, params)
    assert plan.details["mode"] == "retry_last"
    assert "FAILED_AND_AUTO_SUSPENDED" in plan.summary
    action = f"act-seed-{uuid.uuid4().hex[:8]}"
    outcome = verb.execute(ROOT, params, ctx(action, plan))
    assert set(outcome.details["run_states"].values()) == {"SUCCEEDED"}
    assert verb.execute(ROOT, params, ctx(action, plan, attempt=2)).already_done
    verification = verb.verify(ROOT, params, outcome)
    assert verification.ok, verification.summary
    assert connector.alerts([ROOT]) == []
    assert connector.check("task_status").run(ROOT, connector.check("task_status").params_model()).passed


def test_paused_pipe_from_alert_to_verified_ingestion(seeded: Callable[..., SnowflakeConnector]) -> None:
    connector = seeded(database="DEV_RAW")
    alerts = connector.alerts([INVENTORY_PIPE])
    assert [a.alert_type for a in alerts] == ["snowflake.pipe_paused"]
    assert alerts[0].key == "snowflake.pipe_paused:DEV_RAW.BRONZE.PIPE_INVENTORY_DATA:PAUSED"
    verb = connector.verb("resume-task")
    params = verb.params_model()
    plan = verb.plan(INVENTORY_PIPE, params)
    assert [f.split("/")[-1] for f in plan.details["files"]] == ["inventory_2024-01-05.csv"]
    action = f"act-seed-{uuid.uuid4().hex[:8]}"
    outcome = verb.execute(INVENTORY_PIPE, params, ctx(action, plan))
    assert verb.execute(INVENTORY_PIPE, params, ctx(action, plan, attempt=2)).already_done
    assert verb.verify(INVENTORY_PIPE, params, outcome).ok
    status = connector.check("pipe_status").run(INVENTORY_PIPE, connector.check("pipe_status").params_model())
    assert status.passed, status.summary
    assert connector.alerts([INVENTORY_PIPE]) == []


FACT_SALES = TargetRef(
    "dev.fact_sales", "table",
    {"database": "DEV_DW", "schema": "FACTS", "name": "fact_sales", "date_column": "date_key",
     "procedure": "DEV_DW.FACTS.sp_load_fact_sales"},
)  # fmt: skip


def test_fact_backfill_on_the_date_key_from_counts_to_verified_reload(
    seeded: Callable[..., SnowflakeConnector],
) -> None:
    connector = seeded(database="DEV_DW")
    counts = connector.check("row_counts_by_day")
    params = counts.params_model(start_date="2024-01-01", end_date="2024-01-06")
    before = counts.run(FACT_SALES, params)
    assert [r[0] for r in before.rows][:2] == ["2024-01-01", "2024-01-02"]
    assert before.rows[0][1] > 0
    verb = connector.verb("backfill")
    backfill = verb.params_model(from_date="2024-01-01", to_date="2024-01-02")
    plan = verb.plan(FACT_SALES, backfill)
    assert plan.counts["rows"] == before.rows[0][1] + before.rows[1][1]
    action = f"act-seed-{uuid.uuid4().hex[:8]}"
    outcome = verb.execute(FACT_SALES, backfill, ctx(action, plan))
    assert verb.execute(FACT_SALES, backfill, ctx(action, plan, attempt=2)).already_done
    verification = verb.verify(FACT_SALES, backfill, outcome)
    assert verification.ok and verification.details["rows_after"] == plan.counts["rows"]
    assert counts.run(FACT_SALES, params).rows == before.rows
