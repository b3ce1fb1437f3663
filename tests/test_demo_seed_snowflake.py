"""seed_demo's Snowflake part: connection snowflake-dev to the sandbox's emulator (dev only: the seed's databases
are DEV_*), a target per seed-001 object whose checks read the seed through the connector, seeded once however
often it runs; bad input changes nothing."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.core.management.base import CommandError

from connectors.base import TargetRef
from controlplane.audit.models import AuditEvent
from controlplane.catalog.management.commands.seed_demo import SNOWFLAKE_TARGETS
from controlplane.catalog.models import Connection, Target
from controlplane.catalog.services import connector_for
from sandbox.snowflake.seed import seed as seed_001
from tests.test_demo_seed import row_counts, seed

REF = "env:DEMO_SNOWFLAKE_PASSWORD"


@pytest.fixture
def snowflake_url(monkeypatch: pytest.MonkeyPatch) -> str:
    url = os.environ.get("SANDBOX_SNOWFLAKE_URL")
    if not url:
        pytest.fail("SANDBOX_SNOWFLAKE_URL is not set: start the sandbox (python -m sandbox.services start)")
    seed_001(url)
    monkeypatch.setenv("DEMO_SNOWFLAKE_PASSWORD", "sandbox-password")
    return url


def test_the_snowflake_connection_and_a_target_per_seed_object(
    db: Any, weather_db: dict[str, Any], snowflake_url: str
) -> None:
    seed(weather_db, "--snowflake-url", snowflake_url, "--snowflake-password-ref", REF)
    conn = Connection.objects.get(name="snowflake-dev")
    assert (conn.kind, conn.environment.name) == ("snowflake", "dev")
    assert conn.secret_refs == {"password": REF}
    assert conn.config["host"] == "127.0.0.1" and conn.config["protocol"] == "http"
    assert conn.config["warehouse"] == "WH_TRANS"
    connector = connector_for(conn)
    assert connector.health().ok

    targets = {t.key: t for t in Target.objects.filter(connection=conn)}
    assert set(targets) == {f"dev.snowflake.{spec.name}" for spec in SNOWFLAKE_TARGETS}
    kinds = {spec.kind for spec in SNOWFLAKE_TARGETS}
    assert kinds == {"task", "pipe", "stream", "table", "procedure", "warehouse", "environment"}
    assert all(t.pipeline is not None for t in targets.values())

    def run(key: str, check: str, **params: Any) -> Any:
        target = targets[key]
        spec = connector.check(check)
        return spec.run(TargetRef(key, target.kind, target.locator), spec.params_model.model_validate(params))

    # each kind's locator names a seed object the connector finds, in the state the seed left it
    graph = run("dev.snowflake.task_load_fact_sales", "task_status")  # a child: its graph from the root
    assert not graph.passed and "FAILED_AND_AUTO_SUSPENDED" in graph.summary and len(graph.rows) == 3
    assert run("dev.snowflake.pipe_pos_data", "pipe_status").passed
    assert not run("dev.snowflake.pipe_inventory_data", "pipe_status").passed  # the paused pipe
    assert run("dev.snowflake.stream_pos_changes", "stream_has_data").rows
    assert run("dev.snowflake.raw_pos", "copy_history", hours=24).rows  # the POS files the pipe loaded
    assert run("dev.snowflake.wh_trans", "warehouse_status", expect_size="MEDIUM").passed
    assert run("dev.snowflake.environment", "databases_exist").passed

    before = row_counts()
    seed(weather_db, "--snowflake-url", snowflake_url, "--snowflake-password-ref", REF)  # idempotent
    assert row_counts() == before
    assert AuditEvent.objects.filter(event="catalog.target.created", after__key="dev.snowflake.raw_pos").count() == 1


def test_the_table_checks_read_the_seed_tables(db: Any, weather_db: dict[str, Any], snowflake_url: str) -> None:
    seed(weather_db, "--snowflake-url", snowflake_url, "--snowflake-password-ref", REF)
    connector = connector_for(Connection.objects.get(name="snowflake-dev"))

    def run(key: str, check: str, **params: Any) -> Any:
        target = Target.objects.get(key=key)
        spec = connector.check(check)
        return spec.run(TargetRef(key, target.kind, target.locator), spec.params_model.model_validate(params))

    invalid = run("dev.snowflake.stg_pos", "invalid_records")
    assert not invalid.passed and len(invalid.rows) == 1  # the seed's POS sale with quantity 0
    assert run("dev.snowflake.dim_customer", "scd2_overlaps").passed  # customer 3: two versions, one current
    assert run("dev.snowflake.raw_pos", "hours_since_last_load").passed  # loaded by the seed just now
    assert sum(n for _, n in run("dev.snowflake.fact_sales", "row_counts_by_day", start_date="2026-01-01").rows)
    facts = Target.objects.get(key="dev.snowflake.fact_sales")
    backfill = connector.verb("backfill")
    plan = backfill.plan(
        TargetRef(facts.key, facts.kind, facts.locator),
        backfill.params_model.model_validate({"from_date": "2024-01-01", "to_date": "2024-01-02"}),
    )  # the facts mode: delete the seed's first two days by date_key, then CALL sp_load_fact_sales
    assert plan.counts["rows"] > 0 and "SP_LOAD_FACT_SALES" in str(plan.model_dump()).upper()


def test_url_and_password_reference_go_together_and_a_bad_url_leaves_nothing(
    db: Any, weather_db: dict[str, Any]
) -> None:
    with pytest.raises(CommandError, match="go together"):
        seed(weather_db, "--snowflake-url", "http://127.0.0.1:1")
    before = row_counts()
    with pytest.raises(CommandError, match="must be http"):
        seed(weather_db, "--snowflake-url", "snowflake.example.com", "--snowflake-password-ref", REF)
    assert row_counts() == before
