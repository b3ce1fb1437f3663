"""The read side of the quarantine connector over local files: counts from footers, rates, reasons (new,
first and last seen, previous week), growth, schema drift, samples, storage, escalations and breaches."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from fsspec.implementations.local import LocalFileSystem

from connectors.base import ConnectorError, ExecutionContext, TargetRef
from connectors.quarantine import QuarantineConfig, QuarantineConnector, Store, stats
from connectors.quarantine.review import last_sunday
from tests.quarantine_qread import (
    REASON,
    TIMESTAMP,
    days,
    partition_dir,
    quarantined_rows,
    write_day,
    write_ledger,
    write_partition,
)

WEEK_END = dt.date(2025, 3, 30)  # a Sunday
WEEK_START = dt.date(2025, 3, 24)
FS = LocalFileSystem()
SOURCE = TargetRef(key="silver", kind="quarantine", locator={})


def store_for(root: Path, **config: Any) -> Store:
    return Store(QuarantineConfig(root=str(root), **config), {})


def connector_for(root: Path, **config: Any) -> QuarantineConnector:
    return QuarantineConnector(QuarantineConfig(root=str(root), **config), {})


def table_of(summary: dict[str, Any], table: str) -> dict[str, Any]:
    return next(t for t in summary["tables"] if t["table"] == table)


# ------------------------------------------------------------------------------------------------ counts


def test_counts_come_from_footers_without_scanning_rows(tmp_path: Path) -> None:
    write_day(FS, str(tmp_path), "orders", WEEK_START, valid=200, reasons={"customer_id IS NULL": 10})
    # a second valid file whose data pages are garbage: only its footer is intact, so a scan would fail
    path = write_partition(
        FS,
        partition_dir(str(tmp_path), "orders", WEEK_START, quarantined=False),
        pa.table({"x": list(range(300))}),
        name="b.parquet",
    )
    raw = bytearray(Path(path).read_bytes())
    raw[4:40] = b"\xff" * 36
    Path(path).write_bytes(bytes(raw))
    with pytest.raises(pl.exceptions.ComputeError):
        pl.read_parquet(path)

    [count] = stats.day_counts(store_for(tmp_path), start=WEEK_START, end=WEEK_START)

    assert (count.table, count.valid, count.quarantined) == ("orders", 500, 10)
    assert count.rate == 2.0


def test_rate_is_percent_of_valid_rows_and_none_without_valid_rows(tmp_path: Path) -> None:
    write_day(FS, str(tmp_path), "orders", WEEK_START, valid=3000, reasons={"a": 7})
    write_day(FS, str(tmp_path), "orders", WEEK_START + dt.timedelta(days=1), reasons={"a": 5})

    counts = stats.day_counts(store_for(tmp_path), start=WEEK_START, end=WEEK_START + dt.timedelta(days=2))

    assert [(c.valid, c.quarantined, c.rate) for c in counts] == [(3000, 7, 0.233), (0, 5, None), (0, 0, None)]
    # a day with quarantined rows and no valid one is over any threshold; an empty day is over none
    assert [c.over(50) for c in counts] == [False, True, False]


def test_missing_and_empty_partitions_are_days_with_zeros(tmp_path: Path) -> None:
    write_day(FS, str(tmp_path), "orders", WEEK_START + dt.timedelta(days=2), valid=100, reasons={"a": 1})
    FS.makedirs(partition_dir(str(tmp_path), "orders", WEEK_START, quarantined=True))  # empty partition
    FS.makedirs(partition_dir(str(tmp_path), "orders", WEEK_START, quarantined=False))

    summary = stats.weekly_summary(store_for(tmp_path), week_end=WEEK_END)

    orders = table_of(summary, "orders")
    assert [d["date"] for d in orders["days"]] == [d.isoformat() for d in days(WEEK_START, WEEK_END)]
    assert [(d["valid"], d["quarantined"]) for d in orders["days"]] == [(0, 0), (0, 0), (100, 1)] + [(0, 0)] * 4
    assert orders["growth"] is None  # nothing the week before


def test_a_source_without_quarantine_directory_has_no_tables(tmp_path: Path) -> None:
    summary = stats.weekly_summary(store_for(tmp_path / "nothing"), week_end=WEEK_END)

    assert summary["tables"] == []
    assert (summary["week_start"], summary["week_end"]) == ("2025-03-24", "2025-03-30")


def test_valid_files_of_a_pending_release_are_not_counted(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_day(FS, root, "orders", WEEK_START, valid=100, reasons={"a": 10})
    released = write_partition(
        FS, partition_dir(root, "orders", WEEK_START, quarantined=False), pa.table({"order_id": list(range(10))}),
        name="released-act1.parquet",
    )  # fmt: skip
    write_ledger(FS, root, "released", "act1", {"state": "pending", "table": "orders", "valid_files": [released]})
    store = store_for(tmp_path)

    assert stats.day_counts(store, start=WEEK_START, end=WEEK_START)[0].valid == 100

    write_ledger(FS, root, "released", "act1", {"state": "done", "table": "orders", "valid_files": [released]})
    assert stats.day_counts(store, start=WEEK_START, end=WEEK_START)[0].valid == 110


# ----------------------------------------------------------------------------------------------- reasons


def test_reasons_have_counts_first_and_last_seen_previous_week_and_new(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_day(FS, root, "orders", WEEK_START - dt.timedelta(days=27), reasons={"price < 0": 3})  # 4 weeks before
    write_day(FS, root, "orders", WEEK_START - dt.timedelta(days=29), reasons={"too old": 3})  # beyond the history
    write_day(FS, root, "orders", WEEK_START - dt.timedelta(days=2), reasons={"customer_id IS NULL": 4})
    write_day(FS, root, "orders", WEEK_START, reasons={"customer_id IS NULL": 5, "price < 0": 1})
    write_day(FS, root, "orders", WEEK_END, reasons={"customer_id IS NULL": 2, "too old": 2, None: 1})

    found = {
        r.reason: r for r in stats.reason_stats(store_for(tmp_path), table="orders", start=WEEK_START, end=WEEK_END)
    }

    assert list(found) == ["customer_id IS NULL", "too old", "(none)", "price < 0"]
    nulls = found["customer_id IS NULL"]
    assert (nulls.count, nulls.previous_week, nulls.new) == (7, 4, False)
    assert nulls.first_seen == dt.datetime(2025, 3, 24, 12, tzinfo=dt.UTC)
    assert nulls.last_seen == dt.datetime(2025, 3, 30, 12, 0, 1, tzinfo=dt.UTC)
    assert (found["price < 0"].previous_week, found["price < 0"].new) == (0, False)  # seen 27 days before
    assert found["too old"].new is True  # last seen 29 days before: outside the 4 weeks
    assert found["(none)"].new is True
    assert nulls.sample_keys == [{"order_id": 0}, {"order_id": 1}, {"order_id": 2}, {"order_id": 3}, {"order_id": 4}]


def test_growth_is_week_over_week_percent_of_quarantined_rows(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_day(FS, root, "orders", WEEK_START - dt.timedelta(days=7), valid=100, reasons={"a": 8})
    write_day(FS, root, "orders", WEEK_START - dt.timedelta(days=1), valid=100, reasons={"a": 2})
    write_day(
        FS, root, "orders", WEEK_START - dt.timedelta(days=8), valid=100, reasons={"a": 50}
    )  # not the week before
    write_day(FS, root, "orders", WEEK_START + dt.timedelta(days=3), valid=1000, reasons={"a": 15})

    orders = table_of(stats.weekly_summary(store_for(tmp_path), week_end=WEEK_END), "orders")

    assert (orders["quarantined"], orders["previous_week"], orders["growth"]) == (15, 10, 50.0)
    assert orders["reasons"][0]["previous_week"] == 10
    assert (orders["valid"], orders["rate"]) == (1000, 1.5)


def test_schema_drift_and_mixed_tables_do_not_break_the_read(tmp_path: Path) -> None:
    root = str(tmp_path)
    day1, day2, day3 = WEEK_START, WEEK_START + dt.timedelta(days=1), WEEK_START + dt.timedelta(days=2)
    write_day(FS, root, "orders", day1, valid=10, reasons={"a": 2})
    write_day(FS, root, "orders", day2, valid=10, reasons={"a": 1, "b": 1}, extra={"channel": "web"})  # added column
    # a column whose type differs from the other days (amount as text), its key as text too
    rows = quarantined_rows(day3, {"b": 3}, first_id=100)
    for row in rows:
        row["amount"], row["order_id"] = "1.50", f"X{row['order_id']}"
    write_partition(FS, partition_dir(root, "orders", day3, quarantined=True), rows)
    write_day(
        FS, root, "customers", day1, valid=10, reasons={"email invalid": 1}, key="customer_id", extra={"email": "x"}
    )
    with pytest.raises(pl.exceptions.PolarsError):  # the seed's own way fails on this layout
        pl.read_parquet(f"{root}/quarantine/orders/**/*.parquet")

    summary = stats.weekly_summary(store_for(tmp_path), week_end=WEEK_END)

    orders = table_of(summary, "orders")
    assert {r["reason"]: r["count"] for r in orders["reasons"]} == {"a": 3, "b": 4}
    assert orders["quarantined"] == 7
    assert orders["key_columns"] == ["order_id"]
    assert table_of(summary, "customers")["key_columns"] == ["customer_id"]
    found = stats.sample(store_for(tmp_path), table="orders", reason="b", start=WEEK_START, end=WEEK_END)
    assert [row["order_id"] for row in found.rows] == ["1", "X100", "X101", "X102"]
    assert found.rows[0]["record"]["channel"] == "web"
    assert found.rows[1]["record"]["channel"] is None


def test_summary_json_is_the_documented_interface(tmp_path: Path) -> None:
    write_day(FS, str(tmp_path), "orders", WEEK_START, valid=40, reasons={"a": 2})

    summary = json.loads(json.dumps(stats.weekly_summary(store_for(tmp_path), week_end=WEEK_END)))

    assert set(summary) == {"week_start", "week_end", "seconds", "tables"}
    assert isinstance(summary["seconds"], float)
    [orders] = summary["tables"]
    assert {"table", "days", "reasons", "growth"} <= set(orders)
    assert orders["days"][0] == {"date": "2025-03-24", "valid": 40, "quarantined": 2, "rate": 5.0}
    assert {"reason", "count", "previous_week", "new"} <= set(orders["reasons"][0])


# ------------------------------------------------------------------------------------------------ sample


def test_sample_puts_key_columns_first_and_the_rest_in_record(tmp_path: Path) -> None:
    root = str(tmp_path)
    rows = quarantined_rows(WEEK_START, {"a": 3, "b": 2}, extra={"customer_id": "C1", "note": "x"})
    write_partition(FS, partition_dir(root, "orders", WEEK_START, quarantined=True), rows)

    found = stats.sample(store_for(tmp_path), table="orders", reason="b", start=WEEK_START, end=WEEK_END, limit=50)

    assert found.key_columns == ["order_id", "customer_id"]
    assert list(found.rows[0]) == ["order_id", "customer_id", "reason", "timestamp", "record"]
    assert found.rows[0] == {
        "order_id": 3, "customer_id": "C1", "reason": "b", "timestamp": "2025-03-24T12:00:03+00:00",
        "record": {"amount": 1.5, "note": "x"},
    }  # fmt: skip
    assert len(stats.sample(store_for(tmp_path), table="orders", start=WEEK_START, end=WEEK_END, limit=4).rows) == 4


def test_configured_key_columns_win_and_unknown_ones_are_a_clear_error(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_partition(
        FS, partition_dir(root, "orders", WEEK_START, quarantined=True),
        quarantined_rows(WEEK_START, {"a": 1}, extra={"sku": "S1"}),
    )  # fmt: skip

    found = stats.sample(
        store_for(tmp_path, key_columns={"orders": ["sku"]}), table="orders", start=WEEK_START, end=WEEK_END
    )
    assert found.key_columns == ["sku"]
    assert list(found.rows[0])[:2] == ["sku", "reason"]

    with pytest.raises(ConnectorError, match=r"key column.*nope.*configured for orders"):
        stats.sample(
            store_for(tmp_path, key_columns={"orders": ["nope"]}), table="orders", start=WEEK_START, end=WEEK_END
        )


def test_sample_values_are_json_safe(tmp_path: Path) -> None:
    rows = quarantined_rows(
        WEEK_START, {"a": 1},
        extra={"paid_at": dt.datetime(2025, 1, 1, 8, tzinfo=dt.UTC), "blob": b"\x01\x02", "ratio": float("nan")},
    )  # fmt: skip
    write_partition(FS, partition_dir(str(tmp_path), "orders", WEEK_START, quarantined=True), rows)

    [row] = stats.sample(store_for(tmp_path), table="orders", start=WEEK_START, end=WEEK_END).rows

    assert row["record"] == {"amount": 1.5, "paid_at": "2025-01-01T08:00:00+00:00", "blob": "0102", "ratio": None}
    json.dumps(row, allow_nan=False)


# ------------------------------------------------------------------------------------------------ storage


def test_storage_is_the_listed_size_of_every_quarantined_file(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_day(FS, root, "orders", WEEK_START - dt.timedelta(days=60), reasons={"a": 5})
    write_day(FS, root, "orders", WEEK_START, valid=100, reasons={"a": 5})
    write_day(FS, root, "payments", WEEK_START, reasons={"b": 50})
    expected = {
        t: sum(p.stat().st_size for p in (tmp_path / "quarantine" / t).rglob("*.parquet"))
        for t in ("orders", "payments")
    }

    assert stats.storage(store_for(tmp_path)) == expected
    assert stats.storage(store_for(tmp_path), tables=["payments"]) == {"payments": expected["payments"]}


# ------------------------------------------------------------------------------------ escalations, breaches


def over_days(root: str, table: str, first: dt.date, n: int, *, pct: int) -> None:
    for day in days(first, first + dt.timedelta(days=n - 1)):
        write_day(FS, root, table, day, valid=100, reasons={"a": pct})


def test_three_consecutive_days_over_ten_percent_escalate(tmp_path: Path) -> None:
    root = str(tmp_path)
    over_days(root, "orders", WEEK_START + dt.timedelta(days=1), 3, pct=11)  # 3 days at 11%
    over_days(root, "payments", WEEK_START + dt.timedelta(days=1), 2, pct=50)  # only 2 days
    over_days(root, "payments", WEEK_START + dt.timedelta(days=4), 2, pct=50)  # a gap in between
    over_days(root, "refunds", WEEK_START + dt.timedelta(days=1), 3, pct=10)  # exactly 10% is not over
    cfg = QuarantineConfig(root=root)

    found = [e for e in stats.escalations(store_for(tmp_path), cfg, week_end=WEEK_END) if e.rule == "rate_days"]

    assert [(e.table, e.days) for e in found] == [
        ("orders", days(WEEK_START + dt.timedelta(days=1), WEEK_START + dt.timedelta(days=3)))
    ]
    assert "11.0%" in found[0].detail


def test_a_streak_that_began_before_the_week_counts_but_one_that_ended_before_does_not(tmp_path: Path) -> None:
    root = str(tmp_path)
    over_days(root, "orders", WEEK_START - dt.timedelta(days=2), 3, pct=20)  # Sat, Sun, Mon
    over_days(root, "payments", WEEK_START - dt.timedelta(days=4), 3, pct=20)  # ends the Sunday before
    cfg = QuarantineConfig(root=root)

    found = [e for e in stats.escalations(store_for(tmp_path), cfg, week_end=WEEK_END) if e.rule == "rate_days"]

    assert [(e.table, e.days[0], len(e.days)) for e in found] == [("orders", WEEK_START - dt.timedelta(days=2), 3)]


def test_a_new_reason_and_storage_over_the_limit_escalate(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_day(FS, root, "orders", WEEK_START - dt.timedelta(days=10), valid=100, reasons={"old": 1})
    write_day(FS, root, "orders", WEEK_START + dt.timedelta(days=2), valid=100, reasons={"old": 1, "brand new": 2})
    cfg = QuarantineConfig(root=root, escalate_storage_bytes=1000)

    found = stats.escalations(store_for(tmp_path), cfg, week_end=WEEK_END)

    assert [(e.rule, e.table, e.reason) for e in found] == [
        ("new_reason", "orders", "brand new"),
        ("storage", None, None),
    ]
    assert found[0].days == [WEEK_START + dt.timedelta(days=2)]
    cfg = QuarantineConfig(root=root)
    assert [e.rule for e in stats.escalations(store_for(tmp_path), cfg, week_end=WEEK_END)] == ["new_reason"]


def test_breaches_are_days_over_the_threshold(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_day(FS, root, "orders", WEEK_START, valid=100, reasons={"a": 5})  # 5% is not over 5%
    write_day(FS, root, "orders", WEEK_START + dt.timedelta(days=1), valid=100, reasons={"a": 6})
    write_day(FS, root, "payments", WEEK_START + dt.timedelta(days=2), reasons={"a": 1})  # no valid rows
    cfg = QuarantineConfig(root=root, threshold_pct=5)

    found = stats.breaches(store_for(tmp_path), cfg, start=WEEK_START, end=WEEK_END)

    assert [(b.table, b.date, b.rate) for b in found] == [
        ("orders", WEEK_START + dt.timedelta(days=1), 6.0),
        ("payments", WEEK_START + dt.timedelta(days=2), None),
    ]
    review = stats.weekly_review(store_for(tmp_path), cfg, week_end=WEEK_END)
    assert [b.as_json() for b in review.breaches] == [b.as_json() for b in found]


def test_weekly_rates_are_one_row_per_week_oldest_first(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_day(FS, root, "orders", WEEK_END, valid=100, reasons={"a": 3})
    write_day(FS, root, "orders", WEEK_END - dt.timedelta(days=14), valid=200, reasons={"a": 2})

    rates = stats.weekly_rates(store_for(tmp_path), week_end=WEEK_END, weeks=3)

    assert rates["orders"] == [
        {"week_start": "2025-03-10", "week_end": "2025-03-16", "valid": 200, "quarantined": 2, "rate": 1.0},
        {"week_start": "2025-03-17", "week_end": "2025-03-23", "valid": 0, "quarantined": 0, "rate": None},
        {"week_start": "2025-03-24", "week_end": "2025-03-30", "valid": 100, "quarantined": 3, "rate": 3.0},
    ]


def test_bad_windows_and_tables_are_clear_errors(tmp_path: Path) -> None:
    store = store_for(tmp_path)
    with pytest.raises(ConnectorError, match=r"starts .* after it ends"):
        stats.day_counts(store, start=WEEK_END, end=WEEK_START)
    with pytest.raises(ConnectorError, match="is not a table name"):
        stats.reason_stats(store, table="../etc", start=WEEK_START, end=WEEK_END)
    with pytest.raises(ConnectorError, match="limit must be between"):
        stats.sample(store, table="orders", start=WEEK_START, end=WEEK_END, limit=0)


def test_a_file_that_is_not_parquet_is_a_clear_permanent_error(tmp_path: Path) -> None:
    directory = partition_dir(str(tmp_path), "orders", WEEK_START, quarantined=True)
    FS.makedirs(directory)
    Path(directory, "part-0.parquet").write_text("not parquet")

    with pytest.raises(ConnectorError, match="not a readable parquet file") as caught:
        stats.weekly_summary(store_for(tmp_path), week_end=WEEK_END)
    assert caught.value.transient is False


# --------------------------------------------------------------------------------------- checks and verb


def test_quarantine_rate_check_flags_days_over_the_threshold(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_day(FS, root, "orders", WEEK_START, valid=100, reasons={"a": 4})
    write_day(FS, root, "orders", WEEK_START + dt.timedelta(days=1), valid=100, reasons={"a": 6})
    connector = connector_for(tmp_path, threshold_pct=5)
    check = connector.check("quarantine_rate")

    found = check.run(SOURCE, check.params_model(days=2, end=WEEK_START + dt.timedelta(days=1)))

    assert found.passed is False
    assert found.columns == ["table", "date", "valid", "quarantined", "rate", "over"]
    assert found.rows == [["orders", "2025-03-24", 100, 4, 4.0, False], ["orders", "2025-03-25", 100, 6, 6.0, True]]
    relaxed = check.run(
        SOURCE, check.params_model(days=2, end=WEEK_START + dt.timedelta(days=1), max_quarantine_pct=10)
    )
    assert relaxed.passed is True
    table_target = TargetRef(key="orders", kind="quarantine_table", locator={"table": "orders"})
    with pytest.raises(ConnectorError, match="differs"):
        check.run(table_target, check.params_model(table="payments"))


def test_quarantine_reasons_check_fails_on_a_new_reason(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_day(FS, root, "orders", WEEK_START - dt.timedelta(days=3), reasons={"old": 2})
    write_day(FS, root, "orders", WEEK_START, reasons={"old": 3, "new one": 1, "third": 1})
    check = connector_for(tmp_path).check("quarantine_reasons")

    found = check.run(SOURCE, check.params_model(week_end=WEEK_END, top=2))

    assert found.passed is False
    assert "'new one'" in found.summary
    assert [row[:5] for row in found.rows] == [["orders", "old", 3, 2, False], ["orders", "new one", 1, 0, True]]


def test_quarantine_storage_and_records_checks(tmp_path: Path) -> None:
    write_day(FS, str(tmp_path), "orders", WEEK_START, reasons={"a": 3})
    connector = connector_for(tmp_path)
    storage_check = connector.check("quarantine_storage")
    assert storage_check.run(SOURCE, storage_check.params_model()).passed is True
    assert storage_check.run(SOURCE, storage_check.params_model(max_storage_tb=1e-12)).passed is False

    records = connector.check("quarantine_records")
    found = records.run(SOURCE, records.params_model(table="orders", ingest_dt=WEEK_START, limit=2))
    assert found.passed is True
    assert found.columns == ["order_id", "reason", "timestamp", "record"]
    assert found.rows[0] == [0, "a", "2025-03-24T12:00:00+00:00", {"amount": 1.5}]
    with pytest.raises(ConnectorError, match="reads one table"):
        records.run(SOURCE, records.params_model())
    with pytest.raises(ValueError, match="not a table name"):
        records.params_model(table="a/b")


def test_quarantine_review_verb_plans_reads_and_returns_the_review(tmp_path: Path) -> None:
    root = str(tmp_path)
    over_days(root, "orders", WEEK_START, 3, pct=20)
    connector = connector_for(tmp_path)
    verb = connector.verb("quarantine-review")
    params = verb.params_model(week_end=WEEK_END)

    plan = verb.plan(SOURCE, params)
    assert plan.risk.value == "low"
    assert [t.name for t in plan.touches] == ["orders"]
    assert plan.details == {"week_start": "2025-03-24", "week_end": "2025-03-30"}

    lines: list[str] = []
    outcome = verb.execute(SOURCE, params, ExecutionContext(action_id="a1", log=lines.append, plan=plan))
    details = json.loads(json.dumps(outcome.details, allow_nan=False))
    assert set(details) == {"summary", "escalations", "breaches"}
    assert details["summary"]["week_end"] == "2025-03-30"
    assert [e["rule"] for e in details["escalations"]] == ["rate_days", "new_reason"]
    assert len(details["breaches"]) == 3
    assert table_of(details["summary"], "orders")["storage_bytes"] > 0
    assert lines
    assert verb.verify(SOURCE, params, outcome).ok is True

    with pytest.raises(ConnectorError, match="not before today"):
        verb.plan(SOURCE, verb.params_model(week_end=dt.datetime.now(dt.UTC).date()))
    with pytest.raises(ConnectorError, match="needs a quarantine"):
        verb.plan(TargetRef(key="o", kind="quarantine_table", locator={"table": "orders"}), params)


def test_last_sunday_is_the_end_of_the_last_complete_week() -> None:
    assert last_sunday(dt.date(2025, 3, 31)) == dt.date(2025, 3, 30)  # Monday
    assert last_sunday(dt.date(2025, 3, 30)) == dt.date(2025, 3, 23)  # Sunday: the week before
    assert last_sunday(dt.date(2025, 4, 5)) == dt.date(2025, 3, 30)  # Saturday


def test_the_reason_and_timestamp_columns_are_read_by_name(tmp_path: Path) -> None:
    # metadata columns first instead of last, and a naive timestamp (read as UTC)
    table = pa.table({
        REASON: ["a"], TIMESTAMP: pa.array([dt.datetime(2025, 3, 24, 9)], pa.timestamp("us")), "order_id": [1],
    })  # fmt: skip
    write_partition(FS, partition_dir(str(tmp_path), "orders", WEEK_START, quarantined=True), table)

    [reason] = stats.reason_stats(store_for(tmp_path), table="orders", start=WEEK_START, end=WEEK_END)

    assert reason.first_seen == dt.datetime(2025, 3, 24, 9, tzinfo=dt.UTC)


def test_a_reason_seen_three_weeks_before_is_not_new_a_null_one_neither(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_day(FS, root, "orders", WEEK_START - dt.timedelta(days=20), reasons={None: 1, "x's reason": 1})
    write_day(FS, root, "orders", WEEK_START, reasons={None: 2, "x's reason": 1, "fresh": 1})

    found = {
        r.reason: r.new for r in stats.reason_stats(store_for(tmp_path), table="orders", start=WEEK_START, end=WEEK_END)
    }

    assert found == {"(none)": False, "x's reason": False, "fresh": True}


def test_the_summary_reads_only_the_partitions_the_week_needs(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_day(FS, root, "orders", WEEK_START, valid=100, reasons={"a": 3})
    # broken files where the summary must not look: quarantine before the 4 weeks of history, valid rows of
    # the week before (growth needs quarantined rows only) and after the week
    for day, quarantined in ((WEEK_START - dt.timedelta(days=29), True), (WEEK_START - dt.timedelta(days=3), False)):
        FS.makedirs(partition_dir(root, "orders", day, quarantined=quarantined))
        Path(partition_dir(root, "orders", day, quarantined=quarantined), "part-0.parquet").write_text("broken")
    FS.makedirs(partition_dir(root, "orders", WEEK_END + dt.timedelta(days=1), quarantined=True))
    Path(partition_dir(root, "orders", WEEK_END + dt.timedelta(days=1), quarantined=True), "x.parquet").write_text("")

    orders = table_of(stats.weekly_summary(store_for(tmp_path), week_end=WEEK_END), "orders")

    assert (orders["quarantined"], orders["valid"]) == (3, 100)
