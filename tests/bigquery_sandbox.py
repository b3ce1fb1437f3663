"""Shared by the BigQuery tests: the sandbox BigQuery's address (from the environment: bin/test and the dev
script start it) and a seed of the 002 objects in datasets of the test's own."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest

from sandbox.bigquery.seed import SeedObjects, seed


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
