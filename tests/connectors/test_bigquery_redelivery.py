"""Re-delivery of every BigQuery verb with a real kill: the first worker (a forked process) is SIGKILLed right
after the verb's first job is sent (its ``executed`` milestone); a second execute with the same action id
(attempt 2) finds the job by its deterministic id, runs only what is left, and verify passes.

One seed for the module: refresh-mart reads raw.packages through the view, backfill writes marts.fact_deliveries
and restore-table replaces raw.packages (last, and the view reads the table by name either way).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.base import Outcome, Plan, TargetRef
from connectors.bigquery import BigQueryConnector
from connectors.bigquery.checks import last_refresh
from connectors.bigquery.client import action_label, job_id
from connectors.bigquery.config import MatviewLocator
from connectors.bigquery.verbs import restore_names
from sandbox.bigquery.seed import SeedObjects
from tests.bigquery_sandbox import SandboxBigQuery, connector_for, sandbox_bigquery, seeded, targets
from tests.connectors.killed_worker import execute_killed, redelivery


@dataclass
class World:
    bq: SandboxBigQuery
    objects: SeedObjects
    restore_from: datetime  # a moment before most packages were deleted

    def connector(self) -> BigQueryConnector:
        return connector_for(self.bq)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.connector().session().rows(sql, doing="test")


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    bq = sandbox_bigquery()
    with seeded(bq) as objects:
        time.sleep(1)
        before = datetime.now(UTC)
        time.sleep(1)
        connector_for(bq).session().rows(
            f"DELETE FROM `{objects.raw}.packages` WHERE sender_customer_id != 'C001'", doing="the bad delete"
        )
        yield World(bq=bq, objects=objects, restore_from=before)


def _job(w: World, action: str, step: str) -> Any:
    """The action's job of ``step``, waited for: there is one per id, labelled with the action."""
    job = w.connector().session().find_job(job_id(action, step), doing="test")
    assert job is not None, f"no job {job_id(action, step)}"
    job.result(timeout=60)
    assert job.labels == {"cp_action": action_label(action)}
    return job


# ------------------------------------------------------------------------------------------------ cases
# Each case: the params, what the world looks like once the first worker is dead (``killed``: returns what
# ``finished`` compares with after the re-delivery), and the re-delivery's check.


@dataclass(frozen=True)
class Case:
    target: str
    at: str  # the first worker dies at its executed milestone: the first job was just sent
    params: Callable[[World], dict[str, Any]]
    killed: Callable[[World, str], Any]
    finished: Callable[[World, str, Outcome, Any], None]


def _refreshed(w: World, action: str) -> Any:
    job = _job(w, action, "refresh")
    locator = MatviewLocator.model_validate(targets(w.objects)["view"].locator)
    refreshed = last_refresh(w.connector().session(), w.bq.project, locator)[1]
    assert refreshed is not None
    return job.created, refreshed


def _refreshed_once(w: World, action: str, outcome: Outcome, before: Any) -> None:
    assert outcome.already_done
    assert outcome.details["job_id"] == job_id(action, "refresh")
    assert _refreshed(w, action) == before  # the same job, and the view was not refreshed a second time


def _loaded(w: World) -> dict[str, tuple[int, str]]:
    """Per delivery day: its rows and its latest load time."""
    rows = w.rows(
        f"SELECT CAST(delivery_date AS STRING), COUNT(*), CAST(MAX(_loaded_at) AS STRING) "
        f"FROM `{w.objects.marts}.fact_deliveries` GROUP BY 1"
    )
    return {day: (int(n), str(at)) for day, n, at in rows}


def _backfill_days(w: World) -> list[str]:
    return [d.isoformat() for d in w.objects.days[:3]]


def _first_partition_loaded(w: World, action: str) -> Any:
    first = _backfill_days(w)[0]
    _job(w, action, f"backfill_{first.replace('-', '')}")
    return _loaded(w)


def _partitions_loaded_once(w: World, action: str, outcome: Outcome, killed: dict[str, tuple[int, str]]) -> None:
    days = _backfill_days(w)
    assert [p["already_done"] for p in outcome.details["partitions"]] == [True, False, False]
    assert [p["job_id"] for p in outcome.details["partitions"]] == [
        job_id(action, f"backfill_{d.replace('-', '')}") for d in days
    ]
    now = _loaded(w)
    assert now[days[0]] == killed[days[0]]  # found, not reloaded
    assert all(now[d][0] == 1 for d in days)  # one row per day: each partition replaced, none duplicated
    assert all(now[d][1] != killed[d][1] for d in days[1:])  # the rest reloaded by the re-delivery
    for d in days:
        _job(w, action, f"backfill_{d.replace('-', '')}")


def _copied(w: World, action: str) -> Any:
    job = _job(w, action, "restore_copy")
    restored, _ = restore_names("packages", action)
    return job.created, w.rows(f"SELECT COUNT(*) FROM `{w.objects.raw}.{restored}`")[0][0]


def _restored_once(w: World, action: str, outcome: Outcome, copy: Any) -> None:
    created, copied = copy
    assert not outcome.already_done  # the swap was left to the re-delivery
    assert _job(w, action, "restore_copy").created == created  # the copy found, not made again
    _job(w, action, "restore_swap")
    _, kept = restore_names("packages", action)
    assert copied == 12
    assert w.rows(f"SELECT COUNT(*) FROM `{w.objects.raw}.packages`") == [(12,)]
    assert w.rows(f"SELECT COUNT(*) FROM `{w.objects.raw}.{kept}`") == [(2,)]
    tables = {t.table_id for t in w.connector().session().client.list_tables(w.objects.raw, timeout=30)}
    assert tables == {"customers", "packages", kept, "tracking_events"}


CASES: dict[str, Case] = {
    "refresh-mart": Case("view", "refresh of", lambda w: {}, _refreshed, _refreshed_once),
    "backfill": Case(
        "facts",
        "backfill of",
        lambda w: {"start_date": _backfill_days(w)[0], "end_date": _backfill_days(w)[-1]},
        _first_partition_loaded,
        _partitions_loaded_once,
    ),
    "restore-table": Case(
        "packages", "copy ", lambda w: {"timestamp": w.restore_from.isoformat()}, _copied, _restored_once
    ),
}


@pytest.mark.parametrize("verb_name", list(CASES))
def test_worker_killed_after_the_job_redelivery_completes_once(world: World, verb_name: str) -> None:
    case = CASES[verb_name]
    target: TargetRef = targets(world.objects)[case.target]
    verb = world.connector().verb(verb_name)
    params = verb.params_model.model_validate(case.params(world))
    plan: Plan = verb.plan(target, params)
    action = f"kill-{verb_name}-{uuid.uuid4().hex[:10]}"

    def first_worker(context: Any) -> Any:  # its own client: nothing shared with the test process over the fork
        return world.connector().verb(verb_name).execute(target, params, context)

    execute_killed(action, plan, first_worker, at=case.at)
    killed = case.killed(world, action)

    outcome = world.connector().verb(verb_name).execute(target, params, redelivery(action, plan))
    case.finished(world, action, outcome, killed)
    verification = verb.verify(target, params, outcome)
    assert verification.ok, verification.summary
