"""seed_demo's quarantine sources: production on the GCS emulator, development on local disk, one target per
table the source has, the environments' thresholds and retention; seeded once however often it runs."""

from __future__ import annotations

import os
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from django.core.management.base import CommandError

from controlplane.audit.models import AuditEvent
from controlplane.catalog.models import Connection, Target
from controlplane.catalog.services import connector_for
from sandbox.quarantine import TABLES
from sandbox.quarantine import main as generate
from tests.test_demo_seed import row_counts, seed

END = date(2026, 12, 5)


@pytest.fixture
def sources(tmp_path: Path) -> tuple[str, ...]:
    endpoint = os.environ["SANDBOX_GCS_URL"]  # the sandbox's emulator: a missing one is a failure
    prod = f"gs://demo-{uuid.uuid4().hex[:12]}/silver/base"
    dev = str(tmp_path / "silver" / "base")
    for root, extra in ((prod, ["--gcs-endpoint", endpoint]), (dev, [])):
        assert generate(["demo", "--root", root, "--end", END.isoformat(), "--days", "2", *extra]) == 0
    return ("--quarantine-prod-root", prod, "--quarantine-gcs-endpoint", endpoint, "--quarantine-dev-root", dev)


def test_both_quarantine_sources_with_a_target_per_table(
    db: Any, weather_db: dict[str, Any], sources: tuple[str, ...]
) -> None:
    seed(weather_db, *sources)
    prod, dev = Connection.objects.get(name="quarantine-prod"), Connection.objects.get(name="quarantine-dev")
    assert prod.environment.name == "prod" and prod.environment.protected and dev.environment.name == "dev"
    assert prod.config == {
        "root": sources[1],
        "gcs_endpoint": sources[3],
        "threshold_pct": 5.0,
        "retention_days": 30,
        "weekly_review": True,
    }
    assert dev.config == {"root": sources[5], "threshold_pct": 10.0, "retention_days": 7, "weekly_review": False}
    for env, conn in (("prod", prod), ("dev", dev)):
        source = Target.objects.get(key=f"{env}.quarantine.silver_base")
        assert (source.kind, source.locator, source.connection) == ("quarantine", {}, conn)
        assert source.pipeline is not None and source.pipeline.layer == "silver"
        tables = Target.objects.filter(connection=conn, kind="quarantine_table")
        assert {t.key: t.locator for t in tables} == {f"{env}.quarantine.{n}": {"table": n} for n in TABLES}
        health = connector_for(conn).health()
        assert health.ok and "6 quarantined tables" in health.summary

    before = row_counts()
    seed(weather_db, *sources)  # idempotent: nothing new, no audit event
    assert row_counts() == before
    assert AuditEvent.objects.filter(event="catalog.target.created", after__key="prod.quarantine.orders").count() == 1


def test_both_roots_are_needed_and_a_bad_root_leaves_nothing(
    db: Any, weather_db: dict[str, Any], sources: tuple[str, ...]
) -> None:
    with pytest.raises(CommandError, match="go together"):
        seed(weather_db, *sources[:4])
    before = row_counts()
    with pytest.raises(CommandError, match="absolute path"):
        seed(weather_db, *sources[:5], "relative/silver")
    assert row_counts() == before
