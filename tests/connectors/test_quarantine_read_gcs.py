"""The read side over GCS (the sandbox's gcp-storage-emulator at SANDBOX_GCS_URL, through gcsfs registered on
DuckDB): the same layout gives the same summary, sample and storage as on local disk."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

from connectors.quarantine import QuarantineConfig, Store, stats
from tests.quarantine_qread import partition_dir, quarantined_rows, write_day, write_partition

WEEK_END = dt.date(2025, 3, 30)
WEEK_START = dt.date(2025, 3, 24)


@pytest.fixture
def gcs_url() -> str:
    url = os.environ.get("SANDBOX_GCS_URL")
    if not url:
        pytest.fail(
            "SANDBOX_GCS_URL is not set: the GCS tests need the sandbox's GCS emulator. Start it with "
            "`uv run python -m sandbox.services start --root /tmp/sbx` and export what it prints",
            pytrace=False,
        )
    return url


@pytest.fixture
def gcs_store(gcs_url: str) -> Iterator[Store]:
    """A store on a bucket of its own (a uuid in the name), removed afterwards."""
    bucket = f"qread-{uuid.uuid4().hex[:12]}"
    store = Store(QuarantineConfig(root=f"gs://{bucket}/silver/base", gcs_endpoint=gcs_url, timeout_seconds=10), {})
    store.fs.mkdir(bucket)
    yield store
    store.fs.rm(bucket, recursive=True)


def write_source(fs: Any, root: str) -> None:
    """Two tables over five weeks: a reason seen before, a new one, a column added, the previous week."""
    for offset in (-20, -7, -1):
        write_day(fs, root, "orders", WEEK_START + dt.timedelta(days=offset), valid=100, reasons={"price < 0": 3})
    write_day(fs, root, "orders", WEEK_START, valid=200, reasons={"price < 0": 4, "customer_id IS NULL": 2})
    write_day(
        fs, root, "orders", WEEK_START + dt.timedelta(days=3), valid=50, reasons={"new": 9}, extra={"channel": "web"}
    )
    write_partition(
        fs,
        partition_dir(root, "orders", WEEK_START + dt.timedelta(days=3), quarantined=True),
        quarantined_rows(WEEK_START + dt.timedelta(days=3), {"new": 1}, first_id=50),
        name="part-1.parquet",
    )
    write_day(fs, root, "customers", WEEK_END, valid=10, reasons={"email invalid": 1}, key="customer_id")


def without_seconds(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "seconds"}


def test_the_summary_over_gcs_equals_the_local_one(gcs_store: Store, tmp_path: Path) -> None:
    write_source(gcs_store.fs, gcs_store.root)
    write_source(LocalFileSystem(), str(tmp_path))
    local = Store(QuarantineConfig(root=str(tmp_path)), {})

    remote_summary = stats.weekly_summary(gcs_store, week_end=WEEK_END)

    assert without_seconds(remote_summary) == without_seconds(stats.weekly_summary(local, week_end=WEEK_END))
    orders = next(t for t in remote_summary["tables"] if t["table"] == "orders")
    assert (orders["quarantined"], orders["previous_week"]) == (16, 6)
    assert [r["reason"] for r in orders["reasons"] if r["new"]] == ["new", "customer_id IS NULL"]


def test_sample_storage_and_review_over_gcs_equal_the_local_ones(gcs_store: Store, tmp_path: Path) -> None:
    write_source(gcs_store.fs, gcs_store.root)
    write_source(LocalFileSystem(), str(tmp_path))
    local = Store(QuarantineConfig(root=str(tmp_path)), {})

    def sample(store: Store) -> stats.Sample:
        return stats.sample(store, table="orders", reason="new", start=WEEK_START, end=WEEK_END)

    assert sample(gcs_store) == sample(local)
    assert len(sample(gcs_store).rows) == 10
    # sizes of the same files written to both sides
    assert stats.storage(gcs_store).keys() == stats.storage(local).keys() == {"customers", "orders"}
    assert all(size > 0 for size in stats.storage(gcs_store).values())
    cfg = QuarantineConfig(root=gcs_store.cfg.root, escalate_pct=5)
    remote_review = stats.weekly_review(gcs_store, cfg, week_end=WEEK_END).as_json()
    local_review = stats.weekly_review(local, cfg.model_copy(update={"root": str(tmp_path)}), week_end=WEEK_END)
    assert remote_review["escalations"] == local_review.as_json()["escalations"]
    assert remote_review["breaches"] == local_review.as_json()["breaches"]
