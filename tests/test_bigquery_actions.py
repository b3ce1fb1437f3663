"""BigQuery actions through the whole control plane: requested, planned with their cost, run by a real Celery
worker against the sandbox BigQuery, verified, audited; a message delivered three times backfills once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connectors.bigquery.client import param
from connectors.bigquery.config import TIB
from controlplane.actions import services
from controlplane.actions.models import ActionLogLine, ActionRun, ActionState
from controlplane.actions.tasks import execute_action
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.catalog import services as catalog_services
from sandbox.bigquery.seed import FACT_PARTITION_BYTES, PARTITION_BYTES, SeedObjects
from tests.bigquery_sandbox import connector_for, sandbox_bigquery, seeded, targets
from tests.conftest import wait_for

FACTS = "dev.bq.fact_deliveries"


@pytest.fixture
def bq_catalog(transactional_db: Any) -> Iterator[SeedObjects]:
    """A dev BigQuery connection on the sandbox (anonymous: an emulator) with the seed's fact table."""
    bq = sandbox_bigquery()
    with seeded(bq) as objects, change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        env = catalog_services.environment_create(name="dev", protected=False)
        conn = catalog_services.connection_create(
            name="bq-dev", kind="bigquery", environment=env,
            config={"project": bq.project, "api_endpoint": bq.url}, secret_refs={},
        )  # fmt: skip
        catalog_services.target_create(
            key=FACTS, kind="table", connection=conn, locator=dict(targets(objects)["facts"].locator)
        )
        yield objects


def final_state(action: ActionRun, timeout: float = 90) -> ActionRun:
    def done() -> ActionRun | None:
        action.refresh_from_db()
        return action if action.state not in (ActionState.QUEUED, ActionState.RUNNING) else None

    return wait_for(done, timeout=timeout, what=f"action {action.id} to finish")


@pytest.mark.worker
def test_backfill_of_the_missing_day_runs_once_with_its_cost_in_the_plan(
    bq_catalog: SeedObjects, actors: Any, worker_factory: Any
) -> None:
    day = bq_catalog.missing_day.isoformat()
    with change_context(channel=Channel.API, user=actors["responder"]):
        action = services.action_request(
            actor=actors["responder"], verb="backfill", target_key=FACTS,
            params={"start_date": day, "end_date": day}, reason="fill the gap",
        ).action  # fmt: skip
    assert action.plan["estimated_bytes"] == PARTITION_BYTES + FACT_PARTITION_BYTES
    assert action.plan["estimated_cost_usd"] == round((PARTITION_BYTES + FACT_PARTITION_BYTES) / TIB * 6.25, 4)
    for _ in range(2):  # the broker delivers the same message again
        execute_action.apply_async(args=(str(action.id),))
    worker_factory()
    action = final_state(action)
    assert action.state == ActionState.SUCCEEDED, (action.error, action.verification)
    assert action.attempts == 1
    events = list(AuditEvent.objects.filter(object_id=str(action.id)).values_list("event", flat=True))
    assert events.count("action.started") == 1 and "action.executed" in events
    connector = connector_for(sandbox_bigquery())
    rows = connector.session().rows(
        f"SELECT COUNT(*) FROM `{bq_catalog.marts}.fact_deliveries` WHERE delivery_date = '{day}'", doing="test"
    )
    assert rows == [(1,)]
    job = connector.session().find_job(f"cp_{action.id}_backfill_{day.replace('-', '')}", doing="test")
    assert job is not None and job.labels == {"cp_action": str(action.id)}


@pytest.mark.worker
def test_worker_killed_mid_backfill_completes_it_without_reloading_what_was_done(
    bq_catalog: SeedObjects, actors: Any, worker_factory: Any
) -> None:
    first = worker_factory(beat=True)
    days = bq_catalog.days
    with change_context(channel=Channel.API, user=actors["responder"]):
        action = services.action_request(
            actor=actors["responder"], verb="backfill", target_key=FACTS,
            params={"start_date": days[0].isoformat(), "end_date": days[-1].isoformat()}, reason="reload the week",
        ).action  # fmt: skip
    wait_for(
        lambda: ActionLogLine.objects.filter(action=action, message__contains="reloaded in job").exists(),
        what="the first partition to be reloaded",
    )
    first.kill()
    session = connector_for(sandbox_bigquery()).session()
    loaded = f"SELECT CAST(_loaded_at AS STRING) FROM `{bq_catalog.marts}.fact_deliveries` WHERE delivery_date = @d"
    first_load = session.rows(loaded, [param("d", days[0])], doing="test")

    worker_factory(beat=True)  # the replacement, with the reaper on its beat
    action = final_state(action)
    assert action.state == ActionState.SUCCEEDED, (action.error, action.verification)
    assert action.attempts == 2
    assert session.rows(loaded, [param("d", days[0])], doing="test") == first_load  # found, not run again
    assert action.outcome is not None
    assert action.outcome["details"]["partitions"][0]["already_done"] is True
    counts = session.rows(f"SELECT COUNT(*) FROM `{bq_catalog.marts}.fact_deliveries`", doing="test")
    assert counts == [(len(days),)]
    history = list(AuditEvent.objects.filter(object_id=str(action.id)).values_list("event", flat=True))
    assert history.count("action.reaped") == 1 and history[-1] == "action.succeeded"
