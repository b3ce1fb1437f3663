"""Shared setup of the quarantine review page tests (web and browser): a small source on local disk (two
tables, a week of parquet files in the seed's layout), its catalog entries, and a review of that week as
the ``quarantine-review`` action would have recorded it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from controlplane.audit.context import Channel, change_context
from controlplane.catalog import services as catalog_services
from controlplane.catalog.models import Environment
from controlplane.quarantine.models import QuarantineReview, ReviewItem

WEEK_START = date(2026, 11, 23)
WEEK_END = date(2026, 11, 29)  # a Sunday
NULL_CUSTOMER = "customer_id IS NULL"
FUTURE_DATE = "order_date in future"
DUPLICATE = "duplicate primary key"
OVER_DAY = date(2026, 11, 27)  # orders: 60 of 1000 quarantined, 6% > 5%


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def quarantined(table_rows: list[dict[str, Any]], reason: str, day: date) -> list[dict[str, Any]]:
    at = datetime(day.year, day.month, day.day, 3, 0, tzinfo=UTC)
    return [row | {"_quarantine_reason": reason, "_quarantine_timestamp": at} for row in table_rows]


def write_source(root: Path) -> None:
    """orders and customers, 7 days of the review's week: orders has 1000 valid rows a day and 10
    quarantined (``customer_id IS NULL``), but 60 on OVER_DAY plus 5 of a new reason; customers has no valid
    rows on the first day."""
    for n in range(7):
        day = WEEK_START + timedelta(days=n)
        part = f"ingest_dt={day.isoformat()}/part-0.parquet"
        valid = [{"order_id": f"o{n}-{i}", "customer_id": f"c{i}", "amount": 10.5} for i in range(1000)]
        write(root / "orders" / part, valid)
        bad = 60 if day == OVER_DAY else 10
        rows = quarantined(
            [{"order_id": f"q{n}-{i}", "customer_id": None, "amount": 3.25} for i in range(bad)], NULL_CUSTOMER, day
        )
        if day == OVER_DAY:
            rows += quarantined(
                [{"order_id": f"f{i}", "customer_id": f"c{i}", "amount": 1.0} for i in range(5)], FUTURE_DATE, day
            )
        write(root / "quarantine" / "orders" / part, rows)
        if n:
            write(root / "customers" / part, [{"customer_id": f"c{i}", "name": "x"} for i in range(100)])
        write(
            root / "quarantine" / "customers" / part,
            quarantined([{"customer_id": f"d{n}", "name": "dup"}], DUPLICATE, day),
        )


def quarantine_source(root: Path, *, env_name: str = "dev", protected: bool = False, key: str | None = None) -> Any:
    """The catalog's quarantine source over ``root`` (target kind ``quarantine``) and its two table targets."""
    key = key or f"{env_name}.silver.quarantine"
    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        env = Environment.objects.filter(name=env_name).first() or catalog_services.environment_create(
            name=env_name, protected=protected
        )
        conn = catalog_services.connection_create(
            name=key.replace(".", "-"),
            kind="quarantine",
            environment=env,
            config={"root": str(root), "threshold_pct": 5.0, "key_columns": {"orders": ["order_id"]}},
        )
        target = catalog_services.target_create(key=key, kind="quarantine", connection=conn, locator={})
        for table in ("orders", "customers"):
            catalog_services.target_create(
                key=f"{key}.{table}", kind="quarantine_table", connection=conn, locator={"table": table}
            )
    return target


def _days(valid: list[int], quarantined: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "date": (WEEK_START + timedelta(days=n)).isoformat(),
            "valid": v,
            "quarantined": q,
            "rate": round(q / v * 100, 3) if v else None,
        }
        for n, (v, q) in enumerate(zip(valid, quarantined, strict=True))
    ]


def make_review(target: Any, *, week_end: date = WEEK_END) -> QuarantineReview:
    """The review of the week as the quarantine-review action records it: the summary and one item per
    (table, reason), the over-threshold and new ones needing a disposition."""
    orders_q = [10, 10, 10, 10, 65, 10, 10]
    summary = {
        "week_start": (week_end - timedelta(days=6)).isoformat(),
        "week_end": week_end.isoformat(),
        "seconds": 0.01,
        "tables": [
            {
                "table": "customers",
                "days": _days([0, 100, 100, 100, 100, 100, 100], [1] * 7),
                "reasons": [{"reason": DUPLICATE, "count": 7, "previous_week": 14, "new": False}],
                "growth": -50.0,
            },
            {
                "table": "orders",
                "days": _days([1000] * 7, orders_q),
                "reasons": [
                    {"reason": NULL_CUSTOMER, "count": 120, "previous_week": 60, "new": False},
                    {"reason": FUTURE_DATE, "count": 5, "previous_week": 0, "new": True},
                ],
                "growth": 108.3,
            },
        ],
    }
    review = QuarantineReview.objects.create(
        target=target,
        week_start=week_end - timedelta(days=6),
        week_end=week_end,
        threshold_pct=5.0,
        summary=summary,
    )
    seen = datetime(2026, 11, 23, 3, tzinfo=UTC)
    for table, reason, count, previous, new, over in (
        ("orders", NULL_CUSTOMER, 120, 60, False, True),
        ("orders", FUTURE_DATE, 5, 0, True, True),
        ("customers", DUPLICATE, 7, 14, False, False),
    ):
        ReviewItem.objects.create(
            review=review,
            table=table,
            reason=reason,
            count=count,
            previous_week=previous,
            new=new,
            over_threshold=over,
            needs_disposition=over or new,
            first_seen=seen,
            last_seen=seen + timedelta(days=6),
        )
    return review
