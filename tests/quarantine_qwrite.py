"""Test helpers for the quarantine dispositions (qwrite): a small source of the seed's shape written with pyarrow
through the connector's own filesystem, so the same layout is built on local disk and on the GCS emulator.

Layout built by :func:`seed_source` (reasons ``NULL_CUSTOMER`` and ``BAD_PRICE``):

- ``orders`` quarantined: 2025-01-14 ``part-0`` (3 null-customer + 2 bad-price rows), ``part-1`` (2
  null-customer); 2025-01-15 ``part-0`` (1 null-customer, a ``coupon`` column added that day); 2025-01-20
  ``part-0`` (1 null-customer). Valid: 2025-01-14 ``part-0`` (10 rows).
- ``customers`` quarantined: 2025-01-14 ``part-0`` (2 null-customer rows).
"""

from __future__ import annotations

import io
import os
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.base import ExecutionContext, TargetRef
from connectors.quarantine import QuarantineConnector, Store

NULL_CUSTOMER = "customer_id IS NULL"
BAD_PRICE = "price < 0"
D14, D15, D20 = date(2025, 1, 14), date(2025, 1, 15), date(2025, 1, 20)
ORDERS = TargetRef(key="silver.orders", kind="quarantine_table", locator={"table": "orders"})
CUSTOMERS = TargetRef(key="silver.customers", kind="quarantine_table", locator={"table": "customers"})
SOURCE = TargetRef(key="silver", kind="quarantine", locator={})
STAMP = datetime(2025, 1, 14, 3, 0, tzinfo=UTC)


def local_connector(root: str) -> QuarantineConnector:
    return QuarantineConnector({"root": root}, {})


def gcs_connector() -> QuarantineConnector:
    """A connector on a fresh bucket (a uuid in its name) of the sandbox GCS emulator; fails without it."""
    url = os.environ.get("SANDBOX_GCS_URL")
    if not url:
        pytest.fail(
            "SANDBOX_GCS_URL is not set: these tests need the sandbox GCS emulator (sandbox.services start)",
            pytrace=False,
        )
    bucket = f"qwrite-{uuid.uuid4().hex}"
    connector = QuarantineConnector({"root": f"gs://{bucket}/silver/base", "gcs_endpoint": url}, {})
    connector.store.fs.mkdir(bucket)
    return connector


def write_rows(store: Store, path: str, rows: list[dict[str, Any]]) -> None:
    """One parquet file of ``rows`` at ``path`` (a path of the store's filesystem)."""
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    if not store.remote:
        store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    store.fs.pipe_file(path, sink.getvalue())


def read_rows(store: Store, path: str) -> list[dict[str, Any]]:
    with store.fs.open(path, "rb") as handle:
        rows: list[dict[str, Any]] = pq.ParquetFile(handle).read().to_pylist()
    return rows


def quarantined(order_ids: list[int], reason: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "order_id": n,
            "customer_id": None,
            "price": 1.5,
            **extra,
            "_quarantine_reason": reason,
            "_quarantine_timestamp": STAMP,
        }
        for n in order_ids
    ]


def qpath(store: Store, table: str, day: date, name: str = "part-0.parquet") -> str:
    return f"{store.partition_dir(table, day, quarantined=True)}/{name}"


def vpath(store: Store, table: str, day: date, name: str = "part-0.parquet") -> str:
    return f"{store.partition_dir(table, day, quarantined=False)}/{name}"


def seed_source(store: Store) -> None:
    write_rows(
        store, qpath(store, "orders", D14), quarantined([1, 2, 3], NULL_CUSTOMER) + quarantined([4, 5], BAD_PRICE)
    )
    write_rows(store, qpath(store, "orders", D14, "part-1.parquet"), quarantined([6, 7], NULL_CUSTOMER))
    write_rows(store, qpath(store, "orders", D15), quarantined([8], NULL_CUSTOMER, coupon="X1"))
    write_rows(store, qpath(store, "orders", D20), quarantined([9], NULL_CUSTOMER))
    write_rows(
        store, vpath(store, "orders", D14), [{"order_id": 100 + n, "customer_id": n, "price": 2.0} for n in range(10)]
    )
    write_rows(
        store,
        qpath(store, "customers", D14),
        [
            {"customer_id": None, "name": f"c{n}", "_quarantine_reason": NULL_CUSTOMER, "_quarantine_timestamp": STAMP}
            for n in range(2)
        ],
    )


def snapshot(store: Store) -> dict[str, int]:
    """Every file under the root (the control records included) with its size."""
    found = store.fs.find(store.root, detail=True)
    return {path: int(info.get("size") or 0) for path, info in found.items()}


def data_files(store: Store) -> dict[str, int]:
    return {p: s for p, s in snapshot(store).items() if "/_control/" not in p}


def ctx(action_id: str, **kwargs: Any) -> ExecutionContext:
    return ExecutionContext(action_id=action_id, **kwargs)


class Crash(Exception):
    """Stands for the worker dying at a chosen point (raised from a context callback)."""


def crash(*args: Any, **kwargs: Any) -> None:
    """A context callback (``executed``, ``heartbeat``) at which the worker dies."""
    raise Crash("worker lost")
