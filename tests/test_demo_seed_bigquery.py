"""seed_demo's BigQuery part: connection bigquery-dev to the sandbox's emulator (its api_endpoint, anonymous), a
target per seed-002 object whose checks read the seed through the connector, seeded once however often it runs;
a bad URL changes nothing."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.core.management.base import CommandError

from connectors.base import TargetRef
from controlplane.audit.models import AuditEvent
from controlplane.catalog.management.commands.seed_demo import BIGQUERY_TARGETS
from controlplane.catalog.models import Connection, Target
from controlplane.catalog.services import connector_for
from sandbox.bigquery.seed import seed as seed_002
from tests.test_demo_seed import row_counts, seed


@pytest.fixture
def bigquery() -> tuple[str, str]:
    url, project = os.environ.get("SANDBOX_BIGQUERY_URL"), os.environ.get("SANDBOX_BIGQUERY_PROJECT")
    if not url or not project:
        pytest.fail("SANDBOX_BIGQUERY_URL/PROJECT are not set: start the sandbox (python -m sandbox.services start)")
    seed_002(url, project)
    return url, project


def test_the_bigquery_connection_and_a_target_per_seed_object(
    db: Any, weather_db: dict[str, Any], bigquery: tuple[str, str]
) -> None:
    url, project = bigquery
    args = ("--bigquery-url", url, "--bigquery-project", project)
    seed(weather_db, *args)
    conn = Connection.objects.get(name="bigquery-dev")
    assert (conn.kind, conn.environment.name, conn.secret_refs) == ("bigquery", "dev", {})
    assert conn.config == {"project": project, "api_endpoint": url}
    connector = connector_for(conn)
    assert connector.health().ok

    targets = {t.key: t for t in Target.objects.filter(connection=conn)}
    assert set(targets) == {f"dev.bigquery.{spec.name}" for spec in BIGQUERY_TARGETS}
    assert {t.kind for t in targets.values()} == {"table", "matview", "dataset", "project"}

    def run(key: str, check: str, **params: Any) -> Any:
        target = targets[key]
        spec = connector.check(check)
        return spec.run(TargetRef(key, target.kind, target.locator), spec.params_model.model_validate(params))

    assert len(run("dev.bigquery.raw_packages", "nulls").rows) == 2  # the seed's packages without an id
    assert sorted(r[0] for r in run("dev.bigquery.raw_packages", "duplicates").rows) == ["P003", "P005"]
    assert run("dev.bigquery.raw_customers", "duplicates").passed
    days = run("dev.bigquery.raw_tracking_events", "partition_row_counts", start_date="2000-01-01").rows
    assert days  # the tracking events' partitions
    assert run("dev.bigquery.mv_daily_volume", "matview_staleness").rows
    assert run("dev.bigquery.raw", "freshness").rows  # every raw table with a _loaded_at
    run("dev.bigquery.project", "slot_usage")  # answers (or says why it cannot) without an error

    before = row_counts()
    seed(weather_db, *args)  # idempotent: nothing new, no audit event
    assert row_counts() == before
    assert (
        AuditEvent.objects.filter(event="catalog.target.created", after__key="dev.bigquery.raw_packages").count() == 1
    )


def test_a_bad_bigquery_url_leaves_nothing(db: Any, weather_db: dict[str, Any]) -> None:
    before = row_counts()
    with pytest.raises(CommandError, match="must be http"):
        seed(weather_db, "--bigquery-url", "bigquery.googleapis.com")
    assert row_counts() == before
