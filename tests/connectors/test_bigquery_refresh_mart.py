"""``refresh-mart`` on the sandbox BigQuery: CALL BQ.REFRESH_MATERIALIZED_VIEW once per action id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from connectors.base import ConnectorError, ExecutionContext, TargetRef
from connectors.bigquery import RefreshMartParams
from connectors.bigquery.checks import last_refresh
from connectors.bigquery.config import TIB, MatviewLocator
from sandbox.bigquery.seed import PACKAGES_BYTES, SeedObjects
from tests.bigquery_sandbox import SandboxBigQuery, connector_for, sandbox_bigquery, seeded, targets

# Job ids stay in BigQuery: every run of the tests acts under new action ids.
ACT_REFRESH_1 = f"act-refresh-1-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bq() -> SandboxBigQuery:
    return sandbox_bigquery()


@pytest.fixture
def objects(bq: SandboxBigQuery) -> Iterator[SeedObjects]:
    with seeded(bq) as objects:
        yield objects


def test_plan_names_the_never_refreshed_view_and_the_cost_of_reading_its_base_table(
    bq: SandboxBigQuery, objects: SeedObjects
) -> None:
    plan = connector_for(bq).verb("refresh-mart").plan(targets(objects)["view"], RefreshMartParams())
    assert "never refreshed" in plan.summary
    assert plan.estimated_bytes == PACKAGES_BYTES  # the view's query reads raw.packages
    assert plan.estimated_cost_usd == round(PACKAGES_BYTES / TIB * 6.25, 4)


def test_execute_refreshes_once_per_action_and_verify_sees_the_refresh(
    bq: SandboxBigQuery, objects: SeedObjects
) -> None:
    connector = connector_for(bq)
    view = targets(objects)["view"]
    executed: list[str] = []
    context = ExecutionContext(action_id=ACT_REFRESH_1)
    context.executed = lambda summary, details=None: executed.append(summary)
    outcome = connector.verb("refresh-mart").execute(view, RefreshMartParams(), context)
    assert not outcome.already_done and executed
    locator = MatviewLocator.model_validate(view.locator)
    _, first = last_refresh(connector.session(), bq.project, locator)
    assert first is not None
    verification = connector.verb("refresh-mart").verify(view, RefreshMartParams(), outcome)
    assert verification.ok, verification.summary
    again = connector_for(bq).verb("refresh-mart").execute(view, RefreshMartParams(), ExecutionContext(ACT_REFRESH_1))
    assert again.already_done
    assert again.details["job_id"] == outcome.details["job_id"]
    assert last_refresh(connector.session(), bq.project, locator)[1] == first  # not refreshed a second time
    job = connector.session().find_job(outcome.details["job_id"], doing="test")
    assert job is not None and job.labels == {"cp_action": ACT_REFRESH_1}


def test_a_missing_view_is_a_clear_error(bq: SandboxBigQuery, objects: SeedObjects) -> None:
    gone = TargetRef(key="x", kind="matview", locator={"dataset": objects.marts, "name": "mv_nope"})
    with pytest.raises(ConnectorError, match="is not a materialized view"):
        connector_for(bq).verb("refresh-mart").plan(gone, RefreshMartParams())
