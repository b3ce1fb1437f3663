"""The quarantine dataset generator (sandbox/quarantine.py): the seed's layout, the same files for the same
arguments, and what the demo promises (a reason new in the review week, a table over 10% on three days)."""

from __future__ import annotations

import os
import uuid
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sandbox.quarantine import PART_ROWS, PROFILES, TABLES, main, review_week_end, store_for

END = date(2026, 12, 5)  # a Saturday: the review week is Mon 2026-11-23 .. Sun 2026-11-29
DEMO = PROFILES["demo"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "silver"
    assert main(["demo", "--root", str(root), "--end", END.isoformat()]) == 0
    return root


def rows(path: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in path.glob("*.parquet"))


def rate(root: Path, table: str, day: date) -> float:
    valid = rows(root / table / f"ingest_dt={day}")
    return rows(root / "quarantine" / table / f"ingest_dt={day}") / valid * 100


def reasons(root: Path, table: str, day: date) -> set[str]:
    found: set[str] = set()
    for f in (root / "quarantine" / table / f"ingest_dt={day}").glob("*.parquet"):
        found |= set(pq.read_table(f, columns=["_quarantine_reason"]).column(0).to_pylist())
    return found


def test_layout_is_the_seeds(demo_root: Path) -> None:
    days = [END - timedelta(days=n) for n in range(DEMO.days)]
    assert sorted(p.name for p in (demo_root / "quarantine").iterdir()) == sorted(TABLES)
    for table in TABLES:
        for side in (demo_root / table, demo_root / "quarantine" / table):
            assert sorted(p.name for p in side.iterdir()) == sorted(f"ingest_dt={d}" for d in days)
    part = demo_root / "quarantine" / "orders" / f"ingest_dt={END}" / "part-0.parquet"
    schema = pq.read_schema(part)
    assert schema.names[-2:] == ["_quarantine_reason", "_quarantine_timestamp"]
    assert str(schema.field("_quarantine_timestamp").type) == "timestamp[us, tz=UTC]"
    assert {"order_id", "customer_id", "order_date", "order_total"} <= set(schema.names)
    valid = pq.read_schema(demo_root / "orders" / f"ingest_dt={END}" / "part-0.parquet")
    assert "_quarantine_reason" not in valid.names and str(valid.field("order_total").type) == "decimal128(12, 2)"
    # schema drift: orders gains coupon_code part way through; a failed cast keeps the column as text
    first = pq.read_schema(demo_root / "orders" / f"ingest_dt={days[-1]}" / "part-0.parquet")
    assert "coupon_code" not in first.names and "coupon_code" in valid.names
    assert str(schema.field("order_total").type) == "string"
    stamps = pq.read_table(part, columns=["_quarantine_timestamp"]).column(0).to_pylist()
    assert all(s.date() == END + timedelta(days=1) for s in stamps)


def test_reasons_are_worded_like_the_seed(demo_root: Path) -> None:
    seen = set().union(*(reasons(demo_root, "orders", END - timedelta(days=n)) for n in range(DEMO.days)))
    assert {
        "customer_id IS NULL",
        "Cannot cast order_total from VARCHAR to DECIMAL",
        "order_date in future",
        "Duplicate primary key after deduplication",
    } <= seen
    items = set().union(*(reasons(demo_root, "order_items", END - timedelta(days=n)) for n in range(DEMO.days)))
    assert "product_id not in product_catalog" in items
    null_rows = [
        r
        for f in (demo_root / "quarantine" / "orders").glob("*/*.parquet")
        for r in pq.read_table(f).to_pylist()
        if r["_quarantine_reason"] == "customer_id IS NULL"
    ]
    assert null_rows and all(r["customer_id"] is None for r in null_rows)


def test_demo_promises_a_new_reason_and_three_days_over_ten_percent(demo_root: Path) -> None:
    week_end = review_week_end(END)
    assert week_end == date(2026, 11, 29)
    week = [week_end - timedelta(days=n) for n in range(7)]
    before = [week[-1] - timedelta(days=n) for n in range(1, 29)]  # the 4 weeks before the review week
    new = "Cannot cast amount from VARCHAR to DECIMAL"
    assert all(new not in reasons(demo_root, "payments", d) for d in before)
    assert any(new in reasons(demo_root, "payments", d) for d in week)

    over = sorted(d for d in (END - timedelta(days=n) for n in range(DEMO.days)) if rate(demo_root, "orders", d) > 10)
    assert over == [date(2026, 11, 25), date(2026, 11, 26), date(2026, 11, 27)]
    others = [rate(demo_root, t, END - timedelta(days=n)) for t in TABLES if t != "orders" for n in range(DEMO.days)]
    assert max(others) <= 10
    assert any(5 < r <= 10 for r in others)  # over the production threshold now and then


def test_same_arguments_same_files_and_a_rerun_skips(tmp_path: Path, demo_root: Path) -> None:
    again = tmp_path / "again"
    assert main(["demo", "--root", str(again), "--end", END.isoformat()]) == 0
    files = sorted(p.relative_to(demo_root) for p in demo_root.rglob("*.parquet"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.parquet"))
    assert all((demo_root / f).read_bytes() == (again / f).read_bytes() for f in files)
    # the same dataset is not written twice; another seed is another dataset (and nothing of the old is left)
    stamp = (again / "orders" / f"ingest_dt={END}" / "part-0.parquet").stat().st_mtime_ns
    assert main(["demo", "--root", str(again), "--end", END.isoformat()]) == 0
    assert (again / "orders" / f"ingest_dt={END}" / "part-0.parquet").stat().st_mtime_ns == stamp
    assert main(["demo", "--root", str(again), "--end", END.isoformat(), "--seed", "4", "--days", "3"]) == 0
    assert len(list((again / "orders").iterdir())) == 3
    assert (again / "orders" / f"ingest_dt={END}" / "part-0.parquet").read_bytes() != (
        demo_root / "orders" / f"ingest_dt={END}" / "part-0.parquet"
    ).read_bytes()


def test_bench_profile_at_a_small_scale(tmp_path: Path) -> None:
    root = tmp_path / "bench"
    assert main(["bench", "--root", str(root), "--end", END.isoformat(), "--tables", "orders", "--days", "2"]) == 0
    part = root / "quarantine" / "orders" / f"ingest_dt={END}"
    sizes = [pq.read_metadata(f).num_rows for f in sorted(part.glob("*.parquet"))]
    assert len(sizes) >= 2 and max(sizes) <= PART_ROWS
    valid = rows(root / "orders" / f"ingest_dt={END}")
    assert 3.0 < sum(sizes) / valid * 100 < 6.0
    assert pq.read_schema(root / "orders" / f"ingest_dt={END}" / "part-0.parquet").names == ["_bench_row"]


def test_bad_arguments_change_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--root", str(tmp_path / "x"), "--tables", "orders,refunds"]) == 1
    assert "unknown tables ['refunds']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["demo", "--root", "relative/path"]) == 1


def test_writes_through_the_gcs_emulator() -> None:
    endpoint = os.environ["SANDBOX_GCS_URL"]  # the sandbox's emulator: a missing one is a failure
    root = f"gs://qdata-{uuid.uuid4().hex[:12]}/silver/base"
    assert main(["demo", "--root", root, "--gcs-endpoint", endpoint, "--end", END.isoformat(), "--days", "2"]) == 0
    store = store_for(root, endpoint)
    assert store.tables() == sorted(TABLES)
    assert store.days("payments", quarantined=True) == [END - timedelta(days=1), END]
    files = store.files("orders", END, quarantined=True)
    assert [f.path.rsplit("/", 1)[1] for f in files] == ["part-0.parquet"] and files[0].size > 0
    with store.fs.open(files[0].path, "rb") as handle:
        assert "_quarantine_reason" in pq.read_schema(handle).names
