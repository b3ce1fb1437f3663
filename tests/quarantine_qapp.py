"""A small quarantine source on local disk for the app's tests: valid and quarantined parquet partitions
of the seed's layout, and its catalog entries (a connection and a ``quarantine`` target)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from controlplane.audit.context import Channel, change_context
from controlplane.catalog import services as cs
from controlplane.catalog.models import Environment, Target


def write_day(
    root: Path, table: str, day: date, *, valid: int, quarantined: dict[str, int], key: str = "order_id"
) -> None:
    """One day of ``table``: ``valid`` valid rows and, per reason, that many quarantined rows (keys unique
    per table and day; the quarantined file carries ``_quarantine_reason`` and ``_quarantine_timestamp``)."""
    base = day.toordinal() * 100_000
    vdir = root / table / f"ingest_dt={day.isoformat()}"
    vdir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({key: list(range(base, base + valid)), "amount": [1.5] * valid}), vdir / "part-0.parquet")
    keys: list[int] = []
    reasons: list[str] = []
    n = base + valid
    for reason, count in quarantined.items():
        keys += list(range(n, n + count))
        reasons += [reason] * count
        n += count
    if not keys:
        return
    qdir = root / "quarantine" / table / f"ingest_dt={day.isoformat()}"
    qdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime(day.year, day.month, day.day, 3, tzinfo=UTC)
    pq.write_table(
        pa.table(
            {
                key: keys,
                "amount": [-2.0] * len(keys),
                "_quarantine_reason": reasons,
                "_quarantine_timestamp": pa.array([stamp] * len(keys), pa.timestamp("us", tz="UTC")),
            }
        ),
        qdir / "part-0.parquet",
    )


def write_source(root: Path, week_end: date) -> None:
    """35 days ending ``week_end``: ``orders`` with a steady 2% 'customer_id IS NULL' and, on the last
    three days of the week, a new reason 'price < 0' at 12% (over the threshold, escalation for 3 days);
    ``customers`` with a steady 1% 'email invalid' (needs no disposition)."""
    for back in range(35):
        day = week_end - timedelta(days=back)
        reasons = {"customer_id IS NULL": 20}
        if back < 3:
            reasons["price < 0"] = 120
        write_day(root, "orders", day, valid=1000, quarantined=reasons)
        write_day(root, "customers", day, valid=500, quarantined={"email invalid": 5}, key="customer_id")


def make_source(root: Path, env: Environment, *, name: str = "silver", weekly_review: bool = True) -> Target:
    """A quarantine connection over ``root`` in ``env`` and its source target ``<env>.<name>.quarantine`` in
    the Silver pipeline ``ecom_<name>_<env>`` (so runbook 003-quarantine-high-rate fits its incidents)."""
    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        conn = cs.connection_create(
            name=f"{name}-{env.name}",
            kind="quarantine",
            environment=env,
            config={
                "root": str(root),
                "threshold_pct": 5.0,
                "weekly_review": weekly_review,
                "key_columns": {"orders": ["order_id"], "customers": ["customer_id"]},
            },
            secret_refs={},
        )
        pipeline = cs.pipeline_create(name=f"ecom_{name}_{env.name}", environment=env, layer="silver")
        return cs.target_create(
            key=f"{env.name}.{name}.quarantine", kind="quarantine", connection=conn, locator={}, pipeline=pipeline
        )


def environments() -> dict[str, Any]:
    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        return {
            "dev": cs.environment_create(name="dev", protected=False),
            "prod": cs.environment_create(name="prod", protected=True),
        }
