"""``backfill`` on the sandbox BigQuery: per-partition dry-run bytes (declared through the byte-estimate hook),
their cost at the connection's price, the cap on every job, and one effect per action id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from connectors.base import ConnectorError, ExecutionContext, Risk
from connectors.bigquery import BackfillParams, BigQueryConnector, PartitionRowCountsParams, cost_risk
from connectors.bigquery.config import TIB
from sandbox.bigquery.seed import FACT_PARTITION_BYTES, PARTITION_BYTES, SeedObjects, declare_bytes
from tests.bigquery_sandbox import SandboxBigQuery, connector_for, sandbox_bigquery, seeded, targets

# Job ids stay in BigQuery: every run of the tests acts under new action ids.
ACT_CAPPED = f"act-capped-{uuid.uuid4().hex[:8]}"
ACT_FILL_1 = f"act-fill-1-{uuid.uuid4().hex[:8]}"
ACT_FILL_OTHER = f"act-fill-other-{uuid.uuid4().hex[:8]}"
ACT_FILL_TWICE = f"act-fill-twice-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bq() -> SandboxBigQuery:
    return sandbox_bigquery()


@pytest.fixture
def objects(bq: SandboxBigQuery) -> Iterator[SeedObjects]:
    with seeded(bq) as objects:
        yield objects


def ctx(action_id: str, lines: list[str] | None = None, executed: list[str] | None = None) -> ExecutionContext:
    context = ExecutionContext(action_id=action_id, log=(lines.append if lines is not None else lambda _line: None))
    if executed is not None:
        context.executed = lambda summary, details=None: executed.append(summary)
    return context


def loaded_at(connector: BigQueryConnector, objects: SeedObjects) -> dict[str, str]:
    rows = connector.session().rows(
        f"SELECT CAST(delivery_date AS STRING), CAST(_loaded_at AS STRING) FROM `{objects.marts}.fact_deliveries`",
        doing="reading load times",
    )
    return dict(rows)


def test_plan_lists_each_partition_with_its_dry_run_bytes_and_the_total_cost(
    bq: SandboxBigQuery, objects: SeedObjects
) -> None:
    connector = connector_for(bq, on_demand_usd_per_tib=5.0)
    params = BackfillParams(start_date=objects.days[2], end_date=objects.days[5])
    plan = connector.verb("backfill").plan(targets(objects)["facts"], params)
    per_partition = PARTITION_BYTES + FACT_PARTITION_BYTES  # the load reads events, the delete the fact partition
    assert [t.detail["date"] for t in plan.touches] == [d.isoformat() for d in objects.days[2:6]]
    assert [t.detail["bytes"] for t in plan.touches] == [per_partition] * 4
    assert plan.estimated_bytes == 4 * per_partition
    assert plan.estimated_cost_usd == round(4 * per_partition / TIB * 5.0, 4)
    assert plan.counts["partitions"] == 4
    rows_now = {t.detail["date"]: t.detail["rows_now"] for t in plan.touches}
    assert rows_now[objects.missing_day.isoformat()] == 0
    assert plan.risk is Risk.MEDIUM  # ~$1.95


def test_plan_cost_follows_the_bytes_the_hook_declares(bq: SandboxBigQuery, objects: SeedObjects) -> None:
    day = objects.days[0]
    declare_bytes(bq.url, objects.raw, "tracking_events", 10 * TIB, day)
    plan = (
        connector_for(bq).verb("backfill").plan(targets(objects)["facts"], BackfillParams(start_date=day, end_date=day))
    )
    assert plan.estimated_bytes == 10 * TIB + FACT_PARTITION_BYTES
    assert plan.estimated_cost_usd == pytest.approx(62.5, abs=0.01)
    assert plan.risk is Risk.HIGH
    assert any("maximum_bytes_billed" in warning for warning in plan.warnings)


def test_cost_risk_rises_with_cost() -> None:
    assert [cost_risk(c) for c in (0.0, 0.99, 1.0, 24.99, 25.0, 1000.0)] == [
        Risk.LOW, Risk.LOW, Risk.MEDIUM, Risk.MEDIUM, Risk.HIGH, Risk.HIGH,
    ]  # fmt: skip


def test_execute_reloads_the_missing_partition_and_verify_sees_its_rows(
    bq: SandboxBigQuery, objects: SeedObjects
) -> None:
    connector = connector_for(bq)
    target = targets(objects)["facts"]
    day = objects.missing_day
    params = BackfillParams(start_date=day, end_date=day)
    executed: list[str] = []
    outcome = connector.verb("backfill").execute(target, params, ctx(ACT_FILL_1, executed=executed))
    assert not outcome.already_done
    assert executed == [f"backfill of {objects.marts}.fact_deliveries started"]
    counts = connector.check("partition_row_counts").run(
        target, PartitionRowCountsParams(start_date=objects.days[0], end_date=objects.days[-1])
    )
    assert counts.passed, counts.summary
    verification = connector.verb("backfill").verify(target, params, outcome)
    assert verification.ok, verification.summary
    job = connector.session().find_job(outcome.details["partitions"][0]["job_id"], doing="test")
    assert job is not None and job.labels == {"cp_action": ACT_FILL_1}


def test_execute_twice_with_the_same_action_id_runs_each_partition_once(
    bq: SandboxBigQuery, objects: SeedObjects
) -> None:
    connector = connector_for(bq)
    target = targets(objects)["facts"]
    params = BackfillParams(start_date=objects.days[0], end_date=objects.days[1])
    first = connector.verb("backfill").execute(target, params, ctx(ACT_FILL_TWICE))
    after_first = loaded_at(connector, objects)
    lines: list[str] = []
    second = connector_for(bq).verb("backfill").execute(target, params, ctx(ACT_FILL_TWICE, lines))
    assert second.already_done
    assert [p["job_id"] for p in second.details["partitions"]] == [p["job_id"] for p in first.details["partitions"]]
    assert loaded_at(connector, objects) == after_first  # the partitions were not reloaded again
    assert all("already reloaded" in line for line in lines)
    other = connector.verb("backfill").execute(target, params, ctx(ACT_FILL_OTHER))
    assert not other.already_done
    assert loaded_at(connector, objects) != after_first


def test_every_job_carries_maximum_bytes_billed_and_bigquery_refuses_one_over_it(
    bq: SandboxBigQuery, objects: SeedObjects
) -> None:
    connector = connector_for(bq, maximum_bytes_billed=PARTITION_BYTES)  # under the partition + the delete
    target = targets(objects)["facts"]
    day = objects.missing_day
    with pytest.raises(ConnectorError) as refused:
        connector.verb("backfill").execute(target, BackfillParams(start_date=day, end_date=day), ctx(ACT_CAPPED))
    assert not refused.value.transient
    assert "bytesBilledLimitExceeded" in refused.value.message
    rows = connector.check("partition_row_counts").run(target, PartitionRowCountsParams(start_date=day))
    assert rows.rows == [[day.isoformat(), 0]]


def test_a_target_without_load_query_cannot_be_backfilled(bq: SandboxBigQuery, objects: SeedObjects) -> None:
    with pytest.raises(ConnectorError, match="load_query"):
        connector_for(bq).verb("backfill").plan(
            targets(objects)["events"], BackfillParams(start_date=objects.days[0], end_date=objects.days[0])
        )


def test_params_refuse_a_reversed_or_too_long_range(objects: SeedObjects) -> None:
    with pytest.raises(ValueError, match="before start_date"):
        BackfillParams(start_date=objects.days[1], end_date=objects.days[0])
    with pytest.raises(ValueError, match="at most"):
        BackfillParams(start_date=objects.days[0], end_date=objects.days[0] + timedelta(days=400))
