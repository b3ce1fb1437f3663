"""The quarantine dispositions on local files: release, discard, keep and retention cleanup, exactly once per
action id (tests/connectors/test_quarantine_verbs_gcs.py runs the scenarios marked below over the GCS
emulator with the same layout)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.base import ConnectorError, Risk, TargetRef
from connectors.quarantine import QuarantineConnector, ledger
from connectors.quarantine.stats import day_counts
from connectors.quarantine.verbs import (
    CleanupParams,
    DiscardParams,
    KeepParams,
    ReleaseParams,
    today_utc,
)
from tests.quarantine_qwrite import (
    BAD_PRICE,
    D14,
    D15,
    D20,
    NULL_CUSTOMER,
    ORDERS,
    SOURCE,
    Crash,
    crash,
    ctx,
    data_files,
    local_connector,
    qpath,
    quarantined,
    read_rows,
    seed_source,
    snapshot,
    vpath,
    write_rows,
)


@pytest.fixture
def connector(tmp_path: Path) -> QuarantineConnector:
    qc = local_connector(str(tmp_path / "silver" / "base"))
    seed_source(qc.store)
    return qc


def release_params(**overrides: Any) -> ReleaseParams:
    return ReleaseParams(**{"reason": NULL_CUSTOMER, "from_date": D14, "to_date": D15, **overrides})


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return sorted(r["order_id"] for r in rows)


def quarantine_ids(qc: QuarantineConnector, day: date, table: str = "orders") -> dict[str, list[int]]:
    """Order ids per reason in one quarantine partition (every file)."""
    found: dict[str, list[int]] = {}
    for info in qc.store.files(table, day, quarantined=True):
        for row in read_rows(qc.store, info.path):
            found.setdefault(row["_quarantine_reason"], []).append(row["order_id"])
    return {reason: sorted(v) for reason, v in found.items()}


# ----------------------------------------------------------------------------------------------- release


def test_release_moves_exactly_the_reasons_rows_of_the_days(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-release")
    before = data_files(store)
    plan = verb.plan(ORDERS, release_params())
    assert plan.risk == Risk.MEDIUM
    assert plan.counts == {"rows": 6, "files": 3, "bytes": plan.estimated_bytes, "days": 2}
    actions = {t.detail["path"]: t.detail["action"] for t in plan.touches if t.kind == "quarantine_file"}
    assert actions == {
        qpath(store, "orders", D14): "rewrite",
        qpath(store, "orders", D14, "part-1.parquet"): "delete",
        qpath(store, "orders", D15): "delete",
    }
    assert plan.details["days"] == {"2025-01-14": 5, "2025-01-15": 1}

    outcome = verb.execute(ORDERS, release_params(), ctx("act-1", plan=plan))

    assert {k: outcome.details[k] for k in ("table", "reason", "from_date", "to_date", "rows", "files")} == {
        "table": "orders",
        "reason": NULL_CUSTOMER,
        "from_date": "2025-01-14",
        "to_date": "2025-01-15",
        "rows": 6,
        "files": 3,
    }
    assert outcome.details["bytes"] == plan.estimated_bytes
    released_14 = read_rows(store, vpath(store, "orders", D14, "released-act-1.parquet"))
    released_15 = read_rows(store, vpath(store, "orders", D15, "released-act-1.parquet"))
    assert ids(released_14) == [1, 2, 3, 6, 7]
    assert ids(released_15) == [8]
    assert released_15[0]["coupon"] == "X1"  # the day's drifted column travels with its rows
    for row in released_14 + released_15:
        assert "_quarantine_reason" not in row and "_quarantine_timestamp" not in row and "ingest_dt" not in row
    # quarantine: only the other reason is left on the 14th; the 15th is gone; the 20th and customers untouched
    assert quarantine_ids(connector, D14) == {BAD_PRICE: [4, 5]}
    assert D15 not in store.days("orders", quarantined=True)
    assert quarantine_ids(connector, D20) == {NULL_CUSTOMER: [9]}
    after = data_files(store)
    for untouched in (
        qpath(store, "orders", D20),
        qpath(store, "customers", D14),
        vpath(store, "orders", D14),
    ):
        assert after[untouched] == before[untouched]
    assert ledger.read(store, ledger.RELEASED, "act-1")["state"] == "done"  # type: ignore[index]
    assert ledger.pending_valid_files(store) == set()
    verdict = verb.verify(ORDERS, release_params(), outcome)
    assert verdict.ok, verdict.summary
    assert verdict.details["valid_rows"] == 6


def test_release_again_with_the_same_action_id_writes_nothing(connector: QuarantineConnector) -> None:
    verb = connector.verb("quarantine-release")
    plan = verb.plan(ORDERS, release_params())
    verb.execute(ORDERS, release_params(), ctx("act-2", plan=plan))
    files = snapshot(connector.store)

    again = verb.execute(ORDERS, release_params(), ctx("act-2", attempt=2, plan=plan))

    assert again.already_done
    assert again.details["rows"] == 6
    assert snapshot(connector.store) == files
    assert verb.verify(ORDERS, release_params(), again).ok


def test_release_crash_after_the_valid_files_is_completed_by_the_redelivery(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-release")
    plan = verb.plan(ORDERS, release_params())

    with pytest.raises(Crash):
        verb.execute(ORDERS, release_params(), ctx("act-3", plan=plan, executed=crash))

    valid = {
        vpath(store, "orders", D14, "released-act-3.parquet"),
        vpath(store, "orders", D15, "released-act-3.parquet"),
    }
    assert ledger.read(store, ledger.RELEASED, "act-3")["state"] == "pending"  # type: ignore[index]
    assert ledger.pending_valid_files(store) == valid  # written, but not counted while pending
    assert quarantine_ids(connector, D14)[NULL_CUSTOMER] == [1, 2, 3, 6, 7]  # still quarantined (and counted)
    written = {path: store.fs.modified(path) for path in valid}

    outcome = verb.execute(ORDERS, release_params(), ctx("act-3", attempt=2, plan=plan))

    assert {path: store.fs.modified(path) for path in valid} == written  # found complete, not written again

    assert not outcome.already_done
    assert ids(read_rows(store, vpath(store, "orders", D14, "released-act-3.parquet"))) == [1, 2, 3, 6, 7]
    assert ids(read_rows(store, vpath(store, "orders", D15, "released-act-3.parquet"))) == [8]
    assert {p for p in data_files(store) if "/released-" in p} == valid
    assert quarantine_ids(connector, D14) == {BAD_PRICE: [4, 5]}
    assert ledger.pending_valid_files(store) == set()
    assert verb.verify(ORDERS, release_params(), outcome).ok


def test_the_counts_never_see_a_released_row_twice(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-release")
    plan = verb.plan(ORDERS, release_params())

    def orders_on_the_14th() -> tuple[int, int]:
        (count,) = day_counts(store, start=D14, end=D14, tables=["orders"])
        return count.valid, count.quarantined

    assert orders_on_the_14th() == (10, 7)
    with pytest.raises(Crash):
        verb.execute(ORDERS, release_params(), ctx("act-10", plan=plan, executed=crash))
    assert orders_on_the_14th() == (10, 7)  # pending: the valid file is not counted, its rows still quarantined
    verb.execute(ORDERS, release_params(), ctx("act-10", attempt=2, plan=plan))
    assert orders_on_the_14th() == (15, 2)


@pytest.mark.parametrize(
    ("beat", "gone"),
    [
        # two beats while writing the two valid files, then one before each quarantine file (in plan order:
        # the 14th's mixed part-0, its part-1 of released rows only, the 15th's part-0)
        (3, ["14/part-0"]),
        (4, ["14/part-0", "14/part-1"]),
    ],
)
def test_release_crash_while_removing_from_quarantine_is_completed_by_the_redelivery(
    connector: QuarantineConnector, beat: int, gone: list[str]
) -> None:
    store = connector.store
    verb = connector.verb("quarantine-release")
    plan = verb.plan(ORDERS, release_params())
    beats = iter(range(100))

    def heartbeat() -> None:
        if next(beats) == beat:
            raise Crash("worker lost")

    with pytest.raises(Crash):
        verb.execute(ORDERS, release_params(), ctx("act-4", plan=plan, heartbeat=heartbeat))
    originals = {
        "14/part-0": qpath(store, "orders", D14),
        "14/part-1": qpath(store, "orders", D14, "part-1.parquet"),
        "15/part-0": qpath(store, "orders", D15),
    }
    assert sorted(name for name, path in originals.items() if not store.fs.exists(path)) == gone

    outcome = verb.execute(ORDERS, release_params(), ctx("act-4", attempt=2, plan=plan))

    assert ids(read_rows(store, vpath(store, "orders", D14, "released-act-4.parquet"))) == [1, 2, 3, 6, 7]
    assert quarantine_ids(connector, D14) == {BAD_PRICE: [4, 5]}
    assert D15 not in store.days("orders", quarantined=True)
    verdict = verb.verify(ORDERS, release_params(), outcome)
    assert verdict.ok, verdict.summary


def test_release_crash_between_the_rewritten_copy_and_the_delete_keeps_one_copy(
    connector: QuarantineConnector,
) -> None:
    store = connector.store
    verb = connector.verb("quarantine-release")
    plan = verb.plan(ORDERS, release_params())
    with pytest.raises(Crash):
        verb.execute(ORDERS, release_params(), ctx("act-15", plan=plan, executed=crash))
    # the state a worker leaves when it dies after writing the copy of the mixed file, before deleting it
    original = qpath(store, "orders", D14)
    copy = qpath(store, "orders", D14, "rewritten-act-15-000.parquet")
    write_rows(store, copy, [r for r in read_rows(store, original) if r["_quarantine_reason"] == BAD_PRICE])
    written = store.fs.modified(copy)

    verb.execute(ORDERS, release_params(), ctx("act-15", attempt=2, plan=plan))

    assert not store.fs.exists(original)
    assert store.fs.modified(copy) == written  # found complete: not written again
    assert quarantine_ids(connector, D14) == {BAD_PRICE: [4, 5]}


def test_release_rewrites_a_valid_file_cut_short_by_a_crash(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-release")
    plan = verb.plan(ORDERS, release_params())
    with pytest.raises(Crash):
        verb.execute(ORDERS, release_params(), ctx("act-5", plan=plan, executed=crash))
    half = vpath(store, "orders", D14, "released-act-5.parquet")
    store.fs.pipe_file(half, b"PAR1 half a file")  # what a local write cut short leaves

    verb.execute(ORDERS, release_params(), ctx("act-5", attempt=2, plan=plan))

    assert ids(read_rows(store, half)) == [1, 2, 3, 6, 7]


def test_release_unifies_the_columns_of_a_days_files(connector: QuarantineConnector) -> None:
    store = connector.store
    # a file of the same day with a column more and the price as an integer
    drifted = [{**row, "price": 3, "coupon": "C"} for row in quarantined([60], NULL_CUSTOMER)]
    write_rows(store, qpath(store, "orders", D14, "part-2.parquet"), drifted)
    verb = connector.verb("quarantine-release")
    params = release_params(to_date=D14)

    verb.execute(ORDERS, params, ctx("act-9", plan=verb.plan(ORDERS, params)))

    rows = {r["order_id"]: r for r in read_rows(store, vpath(store, "orders", D14, "released-act-9.parquet"))}
    assert sorted(rows) == [1, 2, 3, 6, 7, 60]
    assert rows[60]["coupon"] == "C" and rows[60]["price"] == 3.0 and rows[1]["coupon"] is None


def test_release_whose_rows_fit_no_schema_is_undone_and_blocks_nothing(connector: QuarantineConnector) -> None:
    store = connector.store
    clashing = [{**row, "price": "1,50"} for row in quarantined([61], NULL_CUSTOMER)]  # text where a number was
    write_rows(store, qpath(store, "orders", D15, "part-1.parquet"), clashing)
    before = data_files(store)
    verb = connector.verb("quarantine-release")
    plan = verb.plan(ORDERS, release_params())

    with pytest.raises(ConnectorError, match="the released rows of 2025-01-15 do not fit one schema"):
        verb.execute(ORDERS, release_params(), ctx("act-12", plan=plan))

    assert data_files(store) == before  # the 14th's valid file, written first, is gone again
    assert ledger.read(store, ledger.RELEASED, "act-12")["state"] == "failed"  # type: ignore[index]
    assert connector.verb("quarantine-cleanup").plan(SOURCE, CleanupParams()).details["in_progress"] == []
    with pytest.raises(ConnectorError, match="failed before and was undone"):
        verb.execute(ORDERS, release_params(), ctx("act-12", attempt=2, plan=plan))


def test_release_cancelled_while_writing_the_valid_files_is_undone(connector: QuarantineConnector) -> None:
    store = connector.store
    before = data_files(store)
    verb = connector.verb("quarantine-release")
    asked = iter([False, False, True])  # before the record, before the 14th's file, before the 15th's

    with pytest.raises(ConnectorError, match="cancelled on request while writing the valid files"):
        verb.execute(
            ORDERS,
            release_params(),
            ctx("act-13", plan=verb.plan(ORDERS, release_params()), cancel_requested=lambda: next(asked)),
        )

    assert data_files(store) == before
    assert ledger.read(store, ledger.RELEASED, "act-13")["state"] == "failed"  # type: ignore[index]


def test_release_acts_on_the_plan_and_names_rows_quarantined_since(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-release")
    plan = verb.plan(ORDERS, release_params())
    write_rows(store, qpath(store, "orders", D14, "part-2.parquet"), quarantined([50], NULL_CUSTOMER))

    outcome = verb.execute(ORDERS, release_params(), ctx("act-6", plan=plan))

    assert outcome.details["rows"] == 6
    assert quarantine_ids(connector, D14) == {BAD_PRICE: [4, 5], NULL_CUSTOMER: [50]}
    verdict = verb.verify(ORDERS, release_params(), outcome)
    assert verdict.ok
    assert verdict.details["quarantined_since_plan"]["rows"] == 1
    assert "quarantined since the plan" in verdict.summary


def test_release_refuses_a_file_changed_since_the_plan_and_changes_nothing(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-release")
    plan = verb.plan(ORDERS, release_params())
    write_rows(store, qpath(store, "orders", D15), quarantined([8, 88, 888], NULL_CUSTOMER))
    before = snapshot(store)

    with pytest.raises(ConnectorError, match=r"changed size .* since the plan: nothing done"):
        verb.execute(ORDERS, release_params(), ctx("act-7", plan=plan))

    assert snapshot(store) == before
    assert ledger.read(store, ledger.RELEASED, "act-7") is None


def test_release_never_overwrites_a_file_of_its_name(connector: QuarantineConnector) -> None:
    store = connector.store
    squatter = vpath(store, "orders", D15, "released-act-14.parquet")
    write_rows(store, squatter, [{"order_id": 1000}])
    before = snapshot(store)
    verb = connector.verb("quarantine-release")

    with pytest.raises(
        ConnectorError, match=r"released-act-14\.parquet already exists: nothing done, nothing overwritten"
    ):
        verb.execute(ORDERS, release_params(), ctx("act-14", plan=verb.plan(ORDERS, release_params())))

    assert snapshot(store) == before


def test_release_verify_fails_when_the_released_rows_are_not_all_there(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-release")
    outcome = verb.execute(ORDERS, release_params(), ctx("act-8", plan=verb.plan(ORDERS, release_params())))
    store.fs.rm_file(vpath(store, "orders", D15, "released-act-8.parquet"))

    verdict = verb.verify(ORDERS, release_params(), outcome)

    assert not verdict.ok
    assert "released-act-8.parquet is missing (1 rows were released for 2025-01-15)" in verdict.summary


def test_nothing_to_release_is_refused(connector: QuarantineConnector) -> None:
    with pytest.raises(ConnectorError, match="nothing to release: no quarantined rows of orders, reason 'nope'"):
        connector.verb("quarantine-release").plan(ORDERS, release_params(reason="nope"))


# ----------------------------------------------------------------------------------------------- discard


def test_discard_deletes_one_reasons_rows_and_leaves_the_others(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-discard")
    params = DiscardParams(reason=BAD_PRICE, from_date=D14, to_date=D20)
    plan = verb.plan(ORDERS, params)
    assert plan.risk == Risk.HIGH
    assert plan.counts["rows"] == 2 and plan.counts["files"] == 1
    assert [t.detail["action"] for t in plan.touches] == ["rewrite"]
    assert plan.estimated_bytes == data_files(store)[qpath(store, "orders", D14)]

    outcome = verb.execute(ORDERS, params, ctx("dis-1", plan=plan))

    assert outcome.details["rows"] == 2 and outcome.details["reason"] == BAD_PRICE
    assert quarantine_ids(connector, D14) == {NULL_CUSTOMER: [1, 2, 3, 6, 7]}
    assert quarantine_ids(connector, D20) == {NULL_CUSTOMER: [9]}
    assert not [p for p in data_files(store) if "/released-" in p]  # nothing goes to the valid side
    assert verb.verify(ORDERS, params, outcome).ok
    files = snapshot(store)
    assert verb.execute(ORDERS, params, ctx("dis-1", attempt=2, plan=plan)).already_done
    assert snapshot(store) == files


def test_discard_of_every_reason_deletes_whole_files(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-discard")
    params = DiscardParams(reason=None, from_date=D14, to_date=D15)
    plan = verb.plan(ORDERS, params)
    assert {t.detail["action"] for t in plan.touches} == {"delete"}
    assert plan.counts["rows"] == 8

    outcome = verb.execute(ORDERS, params, ctx("dis-2", plan=plan))

    assert store.days("orders", quarantined=True) == [D20]
    assert verb.verify(ORDERS, params, outcome).ok
    assert outcome.details["reason"] is None


# -------------------------------------------------------------------------------------- keep and cleanup


def keep_params(**overrides: Any) -> KeepParams:
    values = {
        "reason": BAD_PRICE,
        "from_date": D14,
        "to_date": D14,
        "note": "the finance team checks these prices",
        "expires": today_utc() + timedelta(days=30),
        **overrides,
    }
    return KeepParams(**values)


def test_keep_writes_a_record_and_changes_no_data(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-keep")
    before = data_files(store)
    plan = verb.plan(ORDERS, keep_params())
    assert plan.risk == Risk.LOW and plan.counts["rows"] == 2
    assert [(t.detail["path"], t.detail["action"]) for t in plan.touches] == [(qpath(store, "orders", D14), "keep")]

    outcome = verb.execute(ORDERS, keep_params(), ctx("keep-1", plan=plan))

    assert data_files(store) == before
    record = ledger.read(store, ledger.KEEP, "keep-1")
    assert record is not None and record["note"] == "the finance team checks these prices"
    assert outcome.details["rows"] == 2 and outcome.details["table"] == "orders"
    assert verb.verify(ORDERS, keep_params(), outcome).ok
    assert verb.execute(ORDERS, keep_params(), ctx("keep-1", attempt=2)).already_done
    assert not verb.verify(ORDERS, keep_params(note="something else"), outcome).ok


def test_cleanup_deletes_expired_partitions_and_leaves_kept_ones(connector: QuarantineConnector) -> None:
    store = connector.store
    keep = connector.verb("quarantine-keep")
    keep.execute(ORDERS, keep_params(), ctx("keep-2"))
    verb = connector.verb("quarantine-cleanup")
    # retention 3 days as of the 18th: partitions before the 15th expire (orders 14th kept, customers 14th not)
    params = CleanupParams(retention_days=3, as_of=date(2025, 1, 18))
    plan = verb.plan(SOURCE, params)
    assert [t.detail["table"] + "/" + t.detail["day"] for t in plan.touches] == ["customers/2025-01-14"]
    assert plan.details["kept"][0]["table"] == "orders" and plan.details["kept"][0]["day"] == "2025-01-14"
    assert plan.risk == Risk.HIGH  # shorter than the source's 30 days
    assert plan.details["tables"] == {
        "customers": {"partitions": 1, "files": 1, "rows": 2, "bytes": plan.estimated_bytes}
    }

    outcome = verb.execute(SOURCE, params, ctx("clean-1", plan=plan))

    assert store.days("customers", quarantined=True) == []
    assert store.days("orders", quarantined=True) == [D14, D15, D20]
    assert outcome.details["table"] is None and outcome.details["rows"] == 2 and outcome.details["files"] == 1
    assert verb.verify(SOURCE, params, outcome).ok
    files = snapshot(store)
    assert verb.execute(SOURCE, params, ctx("clean-1", attempt=2, plan=plan)).already_done
    assert snapshot(store) == files


def test_cleanup_takes_partitions_whose_keep_expired(connector: QuarantineConnector) -> None:
    store = connector.store
    ledger.write(
        store,
        ledger.KEEP,
        {
            "action_id": "keep-old",
            "table": "orders",
            "reason": BAD_PRICE,
            "from_date": "2025-01-14",
            "to_date": "2025-01-14",
            "note": "n",
            "expires": "2025-01-17",
        },
    )
    plan = connector.verb("quarantine-cleanup").plan(SOURCE, CleanupParams(retention_days=3, as_of=date(2025, 1, 18)))
    assert sorted(t.detail["table"] for t in plan.touches) == ["customers", "orders"]
    assert plan.details["kept"] == []


def test_cleanup_acts_on_the_plan_not_on_files_written_since(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-cleanup")
    params = CleanupParams(retention_days=30)  # as of today: every seeded partition is old
    plan = verb.plan(SOURCE, params)
    assert plan.counts["partitions"] == 4 and plan.risk == Risk.MEDIUM
    late = qpath(store, "orders", D20, "part-late.parquet")
    write_rows(store, late, quarantined([99], NULL_CUSTOMER))

    outcome = verb.execute(SOURCE, params, ctx("clean-2", plan=plan))

    assert [p for p in data_files(store) if "/quarantine/" in p] == [late]
    verdict = verb.verify(SOURCE, params, outcome)
    assert verdict.ok and verdict.details["written_since_plan"] == [store.url(late)]


def test_cleanup_leaves_the_partitions_of_a_release_in_progress(connector: QuarantineConnector) -> None:
    release = connector.verb("quarantine-release")
    with pytest.raises(Crash):
        release.execute(
            ORDERS, release_params(), ctx("act-11", plan=release.plan(ORDERS, release_params()), executed=crash)
        )
    verb = connector.verb("quarantine-cleanup")

    plan = verb.plan(SOURCE, CleanupParams())

    assert sorted((t.detail["table"], t.detail["day"]) for t in plan.touches) == [
        ("customers", "2025-01-14"),
        ("orders", "2025-01-20"),
    ]
    assert [(p["day"], p["actions"]) for p in plan.details["in_progress"]] == [
        ("2025-01-14", ["act-11"]),
        ("2025-01-15", ["act-11"]),
    ]
    assert "release or discard in progress" in plan.summary
    release.execute(ORDERS, release_params(), ctx("act-11", attempt=2))  # its files are still there to finish
    assert verb.plan(SOURCE, CleanupParams()).details["in_progress"] == []


def test_cleanup_spares_a_partition_kept_after_the_plan(connector: QuarantineConnector) -> None:
    store = connector.store
    verb = connector.verb("quarantine-cleanup")
    params = CleanupParams(retention_days=30)
    plan = verb.plan(SOURCE, params)
    assert plan.counts["partitions"] == 4
    connector.verb("quarantine-keep").execute(ORDERS, keep_params(), ctx("keep-3"))  # decided while it waited

    outcome = verb.execute(SOURCE, params, ctx("clean-4", plan=plan))

    assert store.days("orders", quarantined=True) == [D14]
    assert store.days("customers", quarantined=True) == []
    assert outcome.details["spared_since_plan"] == [{"table": "orders", "day": "2025-01-14"}]
    assert outcome.details["partitions"] == 3 and outcome.details["rows"] == 4  # 15th: 1, 20th: 1, customers: 2
    assert verb.verify(SOURCE, params, outcome).ok


def test_cleanup_with_nothing_expired_plans_and_does_nothing(connector: QuarantineConnector) -> None:
    verb = connector.verb("quarantine-cleanup")
    params = CleanupParams(as_of=date(2025, 1, 20))
    plan = verb.plan(SOURCE, params)
    assert plan.touches == [] and plan.risk == Risk.LOW and plan.summary.startswith("nothing to delete")
    before = data_files(connector.store)
    outcome = verb.execute(SOURCE, params, ctx("clean-3", plan=plan))
    assert data_files(connector.store) == before
    assert outcome.details["rows"] == 0
    assert verb.verify(SOURCE, params, outcome).ok


# --------------------------------------------------------------------------------- plans and bad input


def test_plans_change_nothing(connector: QuarantineConnector) -> None:
    before = snapshot(connector.store)
    connector.verb("quarantine-release").plan(ORDERS, release_params())
    connector.verb("quarantine-discard").plan(ORDERS, DiscardParams(from_date=D14, to_date=D20))
    connector.verb("quarantine-keep").plan(ORDERS, keep_params())
    connector.verb("quarantine-cleanup").plan(SOURCE, CleanupParams())
    assert snapshot(connector.store) == before


def test_execute_refuses_a_plan_naming_files_outside_the_requested_partitions(connector: QuarantineConnector) -> None:
    store = connector.store
    before = snapshot(store)
    discard = connector.verb("quarantine-discard")
    params = DiscardParams(reason=None, from_date=D14, to_date=D14)
    plan = discard.plan(ORDERS, params)
    touch = plan.touches[0]
    valid_file = {**touch.detail, "path": vpath(store, "orders", D14)}  # the valid side, not quarantine
    other_day = {**touch.detail, "day": "2025-01-20", "path": qpath(store, "orders", D20)}
    for detail in (valid_file, other_day):
        tampered = plan.model_copy(update={"touches": [touch.model_copy(update={"detail": detail})]})
        with pytest.raises(ConnectorError, match=r"not a file of quarantine partition|outside the requested days"):
            discard.execute(ORDERS, params, ctx("dis-x", plan=tampered))
    cleanup = connector.verb("quarantine-cleanup")
    plan = cleanup.plan(SOURCE, CleanupParams())
    first = plan.touches[0]
    escaped = {**first.detail, "files": [{"path": vpath(store, "orders", D14), "size": 1, "rows": 1}]}
    tampered = plan.model_copy(update={"touches": [first.model_copy(update={"detail": escaped})]})
    with pytest.raises(ConnectorError, match="not a file of quarantine partition"):
        cleanup.execute(SOURCE, CleanupParams(), ctx("clean-x", plan=tampered))
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("model", "values", "message"),
    [
        (ReleaseParams, {"reason": "r", "from_date": D15, "to_date": D14}, "from_date 2025-01-15 is after to_date"),
        (ReleaseParams, {"reason": "r", "from_date": D14, "to_date": D14 + timedelta(days=31)}, "at most 31 days"),
        (ReleaseParams, {"reason": "  ", "from_date": D14, "to_date": D14}, "reason is blank"),
        (ReleaseParams, {"from_date": D14, "to_date": D14}, "reason"),
        (ReleaseParams, {"reason": "r", "from_date": D14, "to_date": D14, "table": "x"}, "Extra inputs"),
        (DiscardParams, {"from_date": "yesterday", "to_date": D14}, "from_date"),
        (KeepParams, {"reason": "r", "from_date": D14, "to_date": D14, "expires": "2099-01-01"}, "note"),
        (
            KeepParams,
            {
                "reason": "r",
                "from_date": D14,
                "to_date": D14,
                "note": "x" * 2001,
                "expires": today_utc() + timedelta(days=3),
            },
            "at most 2000 characters",
        ),
        (
            KeepParams,
            {"reason": "r", "from_date": D14, "to_date": D14, "note": "n", "expires": today_utc()},
            "expires must be after today",
        ),
        (
            KeepParams,
            {
                "reason": "r",
                "from_date": D14,
                "to_date": D14,
                "note": "n",
                "expires": today_utc() + timedelta(days=366),
            },
            "at most 365 days ahead",
        ),
        (CleanupParams, {"as_of": today_utc() + timedelta(days=1)}, "in the future"),
        (CleanupParams, {"retention_days": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_params_are_refused_with_a_clear_message(model: Any, values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        model(**values)


def test_a_disposition_refuses_the_wrong_target_kind_and_a_bad_action_id(connector: QuarantineConnector) -> None:
    with pytest.raises(ConnectorError, match="needs a quarantine_table"):
        connector.verb("quarantine-release").plan(SOURCE, release_params())
    with pytest.raises(ConnectorError, match="needs a quarantine"):
        connector.verb("quarantine-cleanup").plan(ORDERS, CleanupParams())
    with pytest.raises(ConnectorError, match="cannot name a file"):
        connector.verb("quarantine-release").execute(ORDERS, release_params(), ctx("../x"))
    with pytest.raises(ConnectorError, match="invalid quarantine_table locator"):
        connector.verb("quarantine-release").plan(
            TargetRef(key="x", kind="quarantine_table", locator={"table": "../etc"}), release_params()
        )


def test_the_verbs_are_registered_and_idempotent() -> None:
    names = {v.name: v for v in QuarantineConnector.verbs}
    for name in ("quarantine-release", "quarantine-discard", "quarantine-keep", "quarantine-cleanup"):
        assert names[name].idempotent
    assert names["quarantine-cleanup"].target_kinds == ("quarantine",)
    assert names["quarantine-release"].target_kinds == ("quarantine_table",)
