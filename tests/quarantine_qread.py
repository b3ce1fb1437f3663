"""Writers of small seed-003 quarantine layouts for tests, on any fsspec filesystem (local disk or the GCS
emulator): ``{root}/quarantine/{table}/ingest_dt=D/*.parquet`` with ``_quarantine_reason`` and
``_quarantine_timestamp`` beside the source columns, and ``{root}/{table}/ingest_dt=D/*.parquet`` (valid rows).

    write_day(fs, root, "orders", date(2025, 3, 24), valid=100, reasons={"customer_id IS NULL": 4})

``root`` is a filesystem path (``/tmp/x`` locally, ``bucket/prefix`` on GCS).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

REASON = "_quarantine_reason"
TIMESTAMP = "_quarantine_timestamp"


def partition_dir(root: str, table: str, day: dt.date, *, quarantined: bool) -> str:
    side = f"{root}/quarantine/{table}" if quarantined else f"{root}/{table}"
    return f"{side}/ingest_dt={day.isoformat()}"


def write_partition(
    fs: Any, directory: str, rows_or_table: pa.Table | Iterable[Mapping[str, Any]], *, name: str = "part-0.parquet"
) -> str:
    """Write rows (dicts) or an arrow table as one parquet file ``directory/name``; returns its path."""
    table = rows_or_table if isinstance(rows_or_table, pa.Table) else pa.Table.from_pylist(list(rows_or_table))
    fs.makedirs(directory, exist_ok=True)
    path = f"{directory}/{name}"
    pq.write_table(table, path, filesystem=fs)
    return path


def quarantined_rows(
    day: dt.date,
    reasons: Mapping[str | None, int],
    *,
    key: str = "order_id",
    first_id: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``n`` rows per reason, ids from ``first_id``, timestamps one second apart from noon UTC of ``day``."""
    rows: list[dict[str, Any]] = []
    noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC)
    for reason, n in reasons.items():
        for _ in range(n):
            i = first_id + len(rows)
            row: dict[str, Any] = {key: i, "amount": 1.5, **(extra or {})}
            row[REASON] = reason
            row[TIMESTAMP] = noon + dt.timedelta(seconds=len(rows))
            rows.append(row)
    return rows


def valid_rows(n: int, *, key: str = "order_id") -> pa.Table:
    return pa.table({key: pa.array(range(n), pa.int64()), "amount": pa.array([1.0] * n)})


def write_day(
    fs: Any,
    root: str,
    table: str,
    day: dt.date,
    *,
    valid: int = 0,
    reasons: Mapping[str | None, int] | None = None,
    key: str = "order_id",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """One day of ``table``: ``valid`` valid rows and the quarantined rows of ``reasons`` (one file each side)."""
    if valid:
        write_partition(fs, partition_dir(root, table, day, quarantined=False), valid_rows(valid, key=key))
    if reasons:
        rows = quarantined_rows(day, reasons, key=key, extra=extra)
        write_partition(fs, partition_dir(root, table, day, quarantined=True), rows)


def write_ledger(fs: Any, root: str, kind: str, action_id: str, entry: Mapping[str, Any]) -> str:
    """A control record as ledger.py documents it: ``{root}/quarantine/_control/{kind}/{action_id}.json``."""
    directory = f"{root}/quarantine/_control/{kind}"
    fs.makedirs(directory, exist_ok=True)
    path = f"{directory}/{action_id}.json"
    with fs.open(path, "wb") as handle:
        handle.write(json.dumps({"action_id": action_id, **entry}).encode())
    return path


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
