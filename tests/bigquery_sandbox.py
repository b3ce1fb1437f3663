"""Shared by the BigQuery tests: the sandbox BigQuery's address (from the environment: bin/test and the dev
script start it) and a seed of the 002 objects in datasets of the test's own."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from connectors.base import TargetRef
from connectors.bigquery import BigQueryConnector
from sandbox.bigquery.seed import SeedObjects, client_for, seed


@dataclass(frozen=True)
class SandboxBigQuery:
    url: str
    project: str


def sandbox_bigquery() -> SandboxBigQuery:
    """``SANDBOX_BIGQUERY_URL``/``SANDBOX_BIGQUERY_PROJECT``; fails (never skips) when they are missing."""
    url = os.environ.get("SANDBOX_BIGQUERY_URL")
    if not url:
        pytest.fail(
            "SANDBOX_BIGQUERY_URL is not set: the BigQuery tests need the sandbox BigQuery. Start it with "
            "`uv run python -m sandbox.services start --root /tmp/sbx` and export what it prints",
            pytrace=False,
        )
    return SandboxBigQuery(url=url, project=os.environ.get("SANDBOX_BIGQUERY_PROJECT", "sandbox"))


def fresh_seed(bq: SandboxBigQuery) -> SeedObjects:
    """The 002 objects in datasets no other test uses (``t<hex>_raw``, ``t<hex>_marts``)."""
    return seed(bq.url, bq.project, prefix=f"t{uuid.uuid4().hex[:10]}_")


def connector_for(bq: SandboxBigQuery, **config: Any) -> BigQueryConnector:
    """A BigQuery connector on the sandbox (anonymous: the endpoint is the emulator)."""
    return BigQueryConnector({"project": bq.project, "api_endpoint": bq.url, **config}, {})


def targets(objects: SeedObjects) -> dict[str, TargetRef]:
    """Catalog targets on a seed's objects, by short name."""
    return {
        "packages": TargetRef(
            key="bq.packages",
            kind="table",
            locator={"dataset": objects.raw, "name": "packages", "key_column": "package_id",
                     "timestamp_column": "_loaded_at"},
        ),
        "events": TargetRef(
            key="bq.events",
            kind="table",
            locator={"dataset": objects.raw, "name": "tracking_events", "partition_column": "event_date",
                     "timestamp_column": "_loaded_at"},
        ),
        "facts": TargetRef(
            key="bq.facts",
            kind="table",
            locator={"dataset": objects.marts, "name": "fact_deliveries", "partition_column": "delivery_date",
                     "timestamp_column": "_loaded_at", "load_query": objects.load_query},
        ),
        "customers": TargetRef(
            key="bq.customers", kind="table", locator={"dataset": objects.raw, "name": "customers"}
        ),
        "view": TargetRef(key="bq.view", kind="matview", locator={"dataset": objects.marts, "name": "mv_daily_volume"}),
        "raw": TargetRef(key="bq.raw", kind="dataset", locator={"dataset": objects.raw}),
        "project": TargetRef(key="bq.project", kind="project", locator={}),
    }  # fmt: skip


@contextlib.contextmanager
def seeded(bq: SandboxBigQuery) -> Iterator[SeedObjects]:
    """A fresh seed (:func:`fresh_seed`) whose datasets are dropped afterwards."""
    objects = fresh_seed(bq)
    try:
        yield objects
    finally:
        client = client_for(bq.url, bq.project)
        for dataset in (objects.marts, objects.raw):  # marts first: its view reads raw
            client.delete_dataset(dataset, delete_contents=True, not_found_ok=True, timeout=60)
        client.close()
