"""The reliability rules at a small size, through bench/chaos.py's own scenarios (bench/README.md).

One world for the module, started by the benchmark's bring-up in a temp dir and stopped at the end: its own
Postgres + Redis for the control plane, its own Postgres for the warehouse, nginx + gunicorn and a Celery
worker with beat. Stopping and killing happen there only, so the session's services are not disturbed.
Airflow going away under a running action is proved against the session's Airflow in tests/test_airflow.py
(``test_airflow_going_away_mid_action_leaves_the_triggered_run_owned_with_a_clear_message``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from bench.chaos import (
    ChaosWorld,
    chaos_world,
    parallel_launches,
    postgres_restart,
    redis_down,
    warehouse_down,
    worker_kill,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosWorld]:
    tmp: Path = tmp_path_factory.mktemp("chaos")
    tmp.chmod(0o755)  # the postgres user runs the clusters below it when we are root
    with chaos_world(tmp, n_marts=150, n_slow=3, slow_s=1.5) as started:
        yield started


@pytest.mark.worker
def test_parallel_launches_on_one_target_leave_one_active_and_the_rest_409_naming_it(world: ChaosWorld) -> None:
    figure = parallel_launches(world, n=40)
    print(figure.line)
    assert figure.broken == [], figure.line
    assert figure.values == {"n": 40, "accepted": 1, "conflicts": 39}


@pytest.mark.worker
def test_worker_killed_at_random_moments_loses_nothing_and_runs_nothing_twice(world: ChaosWorld) -> None:
    figure = worker_kill(world, actions=6, batch=3, airflow=False, rng=random.Random(13))
    print(figure.line)
    assert figure.broken == [], figure.line
    assert figure.values["actions"] == 6 and figure.values["kills"] == 2


@pytest.mark.worker
def test_redis_down_each_launch_is_accepted_and_run_once_or_refused_with_a_clear_503(world: ChaosWorld) -> None:
    figure = redis_down(world, rate=5, outage=4, margin=1.5)
    print(figure.line)
    assert figure.broken == [], figure.line + "\n" + "\n".join(figure.broken)
    assert figure.values["refused"] > 0, figure.line  # the outage was seen
    assert all("Redis" in message for message, _ in figure.values["messages"]), figure.values["messages"]


@pytest.mark.worker
def test_postgres_restart_each_launch_is_accepted_and_run_once_or_refused_with_a_clear_503(world: ChaosWorld) -> None:
    figure = postgres_restart(world, rate=5, down=2, margin=1.5)
    print(figure.line)
    assert figure.broken == [], figure.line + "\n" + "\n".join(figure.broken)
    assert figure.values["refused"] > 0, figure.line
    assert all("database" in message for message, _ in figure.values["messages"]), figure.values["messages"]


@pytest.mark.worker
def test_warehouse_down_under_a_refresh_fails_it_in_bounded_time_naming_the_server(world: ChaosWorld) -> None:
    figure = warehouse_down(world)  # last: the warehouse stays down
    print(figure.line)
    assert figure.broken == [], figure.line + "\n" + "\n".join(figure.broken)
    assert figure.values["state"] == "failed" and figure.values["launch"] == "503", figure.line


def test_the_schema_declares_the_outage_answer_on_every_operation(db: Any) -> None:
    """Any authenticated call can meet the control plane's database or Redis down: its 503 is in the contract."""
    schema = Client().get("/api/schema/", headers={"Accept": "application/json"}).json()
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    missing = [
        f"{method.upper()} {path}"
        for path, method, op in operations
        if op.get("security") != [{}] and "503" not in op["responses"]
    ]
    assert operations and not missing, missing
