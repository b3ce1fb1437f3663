"""A deterministic e-commerce Silver layer with quarantined records, in the layout of seed 003, section 5:
``{root}/quarantine/{table}/ingest_dt=YYYY-MM-DD/part-N.parquet`` (the source columns, ``_quarantine_reason``,
``_quarantine_timestamp`` in UTC) and ``{root}/{table}/ingest_dt=YYYY-MM-DD/part-N.parquet`` (valid rows).

    python -m sandbox.quarantine demo|bench --root PATH|gs://bucket/prefix [--gcs-endpoint URL] [--end YYYY-MM-DD]

Six tables (orders, order_items, customers, products, payments, shipments), each with its own columns and
reasons worded like the seed's five kinds (null key, foreign key, cast, out of range, duplicate key). A file
that holds a row failing a cast stores that column as text (as Bronze had it), so schemas differ between
files of one day; ``orders`` gains ``coupon_code`` part way through (schema drift between days).

Profiles:

- ``demo``: 35 days ending ``--end`` (default yesterday, UTC), full rows on both sides, a few seconds to write.
  Its review week is the 7 days ending on the last Sunday on or before ``--end`` (what the weekly review reads).
  In it, ``orders`` is over 10% on three consecutive days (Wednesday to Friday) and ``payments`` gets a reason
  never seen before (``Cannot cast amount from VARCHAR to DECIMAL``, from that week's Monday on).
- ``bench``: 90 days, about 20 M quarantined rows (4.5% of the valid ones) in parts of at most 40k rows,
  ``coupon_code`` from day 60. Valid partitions hold the right row counts in one int8 column (readers count
  them from the footers), so 450 M valid rows cost little to write.

Everything comes from ``--seed``: the same arguments write the same files. The generator records what it
wrote in ``{root}/_sandbox_quarantine.json`` and skips the work when asked for the same again; otherwise it
removes the tables' directories under ``root`` first. Writes go through the quarantine connector's
filesystem (local, or GCS through gcsfs; the bucket is created when missing).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.quarantine.config import REASON_COLUMN, TIMESTAMP_COLUMN, QuarantineConfig
from connectors.quarantine.store import QUARANTINE_DIR, Store

MARKER = "_sandbox_quarantine.json"
LAYOUT_VERSION = 1
PART_ROWS = 40_000  # at most this many rows per quarantined file
DAY_US = 86_400_000_000
TS = pa.timestamp("us", tz="UTC")
MONEY = pa.decimal128(12, 2)

# reason kinds (seed 003, section 5 'Common Quarantine Reasons')
NULL, FK, CAST, RANGE, DUP = "null", "fk", "cast", "range", "dup"


@dataclass(frozen=True)
class Reason:
    text: str
    kind: str
    column: str
    weight: float = 1.0


@dataclass(frozen=True)
class Table:
    name: str
    key: str
    rows: float  # share of the profile's valid rows per day
    reasons: tuple[Reason, ...]
    build: Callable[[Rand, date, int, int], dict[str, pa.Array]]


@dataclass(frozen=True)
class Profile:
    name: str
    days: int
    valid_rows: int  # per table and day, before the table's share and the day's jitter
    rate_pct: float  # mean quarantine rate
    full_valid: bool  # valid partitions with every column (else one int8 column: counts only)
    drift_day: int  # orders gains coupon_code from this day (0-based from the first day)


PROFILES = {
    "demo": Profile("demo", days=35, valid_rows=800, rate_pct=2.0, full_valid=True, drift_day=20),
    "bench": Profile("bench", days=90, valid_rows=822_000, rate_pct=4.5, full_valid=False, drift_day=60),
}
NEW_REASON = ("payments", "Cannot cast amount from VARCHAR to DECIMAL")
SPIKE = ("orders", "customer_id IS NULL")  # the table over 10% on three days of the review week


class Rand:
    """Vectorized random columns (pyarrow's generator), each seeded from the run's seed and a name."""

    def __init__(self, *parts: object) -> None:
        self.base = "|".join(map(str, parts))
        self.calls = 0

    def _seed(self) -> int:
        self.calls += 1
        digest = hashlib.blake2b(f"{self.base}|{self.calls}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") >> 1

    def uniform(self, n: int) -> pa.Array:
        return pc.random(n, initializer=self._seed())

    def ints(self, n: int, lo: int, hi: int) -> pa.Array:
        """Integers in [lo, hi)."""
        return pc.add(pc.floor(pc.multiply(self.uniform(n), float(hi - lo))).cast(pa.int64()), lo)

    def choice(self, n: int, values: Sequence[Any], type: pa.DataType | None = None) -> pa.Array:
        return pc.take(pa.array(values, type=type or pa.string()), self.ints(n, 0, len(values)))

    def money(self, n: int, lo: float, hi: float) -> pa.Array:
        return pc.add(pc.multiply(self.uniform(n), hi - lo), lo).cast(MONEY, safe=False)

    def times(self, n: int, day: date, *, lo_h: float = 0, hi_h: float = 24) -> pa.Array:
        start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1_000_000)
        offsets = self.ints(n, int(lo_h * 3600e6), int(hi_h * 3600e6))
        return pc.add(offsets, start).cast(TS)


def ids(prefix: str, numbers: pa.Array, width: int = 9) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers.cast(pa.string()), width=width, padding="0"), "")


def seq(start: int, n: int) -> pa.Array:
    return pa.array(range(start, start + n), type=pa.int64())


def _orders(r: Rand, day: date, n: int, first: int) -> dict[str, pa.Array]:
    return {
        "order_id": ids("ORD-", seq(first, n)),
        "customer_id": ids("CUST-", r.ints(n, 1, 250_000), 7),
        "order_date": r.times(n, day),
        "order_status": r.choice(n, ["placed", "paid", "shipped", "delivered", "cancelled"]),
        "order_total": r.money(n, 5, 600),
        "currency": r.choice(n, ["EUR", "USD", "GBP"]),
        "channel": r.choice(n, ["web", "app", "marketplace"]),
    }


def _order_items(r: Rand, day: date, n: int, first: int) -> dict[str, pa.Array]:
    quantity = r.ints(n, 1, 6).cast(pa.int32())
    unit_price = r.money(n, 1, 250)
    return {
        "order_item_id": ids("OI-", seq(first, n), 10),
        "order_id": ids("ORD-", pc.divide(seq(first, n), 3)),
        "product_id": ids("PRD-", r.ints(n, 1, 20_000), 6),
        "quantity": quantity,
        "unit_price": unit_price,
        "line_total": pc.multiply(unit_price, quantity).cast(MONEY, safe=False),
        "added_at": r.times(n, day),
    }


def _customers(r: Rand, day: date, n: int, first: int) -> dict[str, pa.Array]:
    return {
        "customer_id": ids("CUST-", seq(first, n), 7),
        "email": pc.binary_join_element_wise("user", seq(first, n).cast(pa.string()), "@example.com", ""),
        "country": r.choice(n, ["DE", "FR", "GB", "US", "NL", "ES", "IT", "PL"]),
        "loyalty_tier": r.choice(n, ["none", "silver", "gold"]),
        "signup_date": r.times(n, day),
        "updated_at": r.times(n, day),
    }


def _products(r: Rand, day: date, n: int, first: int) -> dict[str, pa.Array]:
    return {
        "product_id": ids("PRD-", seq(first, n), 6),
        "sku": ids("SKU-", r.ints(n, 0, 10**8), 8),
        "category": r.choice(n, ["apparel", "electronics", "home", "beauty", "toys", "grocery"]),
        "price": r.money(n, 1, 900),
        "in_stock": r.choice(n, [True, False, True, True], pa.bool_()),
        "updated_at": r.times(n, day),
    }


def _payments(r: Rand, day: date, n: int, first: int) -> dict[str, pa.Array]:
    return {
        "payment_id": ids("PAY-", seq(first, n)),
        "order_id": ids("ORD-", seq(first, n)),
        "method": r.choice(n, ["card", "paypal", "bank_transfer", "gift_card"]),
        "amount": r.money(n, 5, 600),
        "currency": r.choice(n, ["EUR", "USD", "GBP"]),
        "paid_at": r.times(n, day),
    }


def _shipments(r: Rand, day: date, n: int, first: int) -> dict[str, pa.Array]:
    return {
        "shipment_id": ids("SHP-", seq(first, n)),
        "order_id": ids("ORD-", seq(first, n)),
        "carrier": r.choice(n, ["DHL", "UPS", "DPD", "GLS", "Royal Mail"]),
        "status": r.choice(n, ["label_created", "in_transit", "delivered", "returned"]),
        "shipped_at": r.times(n, day),
        "weight_kg": pc.round(pc.multiply(r.uniform(n), 20.0), 2),
    }


DUPLICATE = "Duplicate primary key after deduplication"
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "orders",
            "order_id",
            1.6,
            (
                Reason("customer_id IS NULL", NULL, "customer_id", 3),
                Reason("order_id IS NULL", NULL, "order_id", 1),
                Reason("Cannot cast order_total from VARCHAR to DECIMAL", CAST, "order_total", 2),
                Reason("order_date in future", RANGE, "order_date", 1.5),
                Reason(DUPLICATE, DUP, "order_id", 1),
            ),
            _orders,
        ),
        Table(
            "order_items",
            "order_item_id",
            2.0,
            (
                Reason("product_id not in product_catalog", FK, "product_id", 4),
                Reason("order_id IS NULL", NULL, "order_id", 1),
                Reason("Cannot cast unit_price from VARCHAR to DECIMAL", CAST, "unit_price", 1),
                Reason("unit_price < 0", RANGE, "unit_price", 1),
                Reason(DUPLICATE, DUP, "order_item_id", 1),
            ),
            _order_items,
        ),
        Table(
            "customers",
            "customer_id",
            0.4,
            (
                Reason("customer_id IS NULL", NULL, "customer_id", 2),
                Reason("signup_date in future", RANGE, "signup_date", 1),
                Reason(DUPLICATE, DUP, "customer_id", 2),
            ),
            _customers,
        ),
        Table(
            "products",
            "product_id",
            0.2,
            (
                Reason("product_id IS NULL", NULL, "product_id", 1),
                Reason("price < 0", RANGE, "price", 2),
                Reason("Cannot cast price from VARCHAR to DECIMAL", CAST, "price", 1),
                Reason(DUPLICATE, DUP, "product_id", 1),
            ),
            _products,
        ),
        Table(
            "payments",
            "payment_id",
            1.2,
            (
                Reason("order_id IS NULL", NULL, "order_id", 2),
                Reason("order_id not in orders", FK, "order_id", 2),
                Reason(NEW_REASON[1], CAST, "amount", 0),  # weight 0: only in the review week (below)
                Reason(DUPLICATE, DUP, "payment_id", 1),
            ),
            _payments,
        ),
        Table(
            "shipments",
            "shipment_id",
            0.6,
            (
                Reason("order_id IS NULL", NULL, "order_id", 1),
                Reason("shipped_at in future", RANGE, "shipped_at", 1),
                Reason(DUPLICATE, DUP, "shipment_id", 2),
            ),
            _shipments,
        ),
    )
}
CAST_JUNK = ["12,50", "N/A", "$19.99", "", "1.299.00", "abc", "-"]


def review_week_end(end: date) -> date:
    """The last Sunday on or before ``end``: the end of the week a review of this data reads."""
    return end - timedelta(days=(end.weekday() + 1) % 7)


@dataclass(frozen=True)
class Plan:
    """What one partition gets: valid rows, quarantined rows per reason."""

    table: str
    day: date
    valid: int
    reasons: dict[str, int]

    @property
    def quarantined(self) -> int:
        return sum(self.reasons.values())


def spike_days(end: date) -> list[date]:
    """The three consecutive days over 10% of the demo's review week (Wednesday to Friday)."""
    week_end = review_week_end(end)
    return [week_end - timedelta(days=n) for n in (4, 3, 2)]


def plan_partition(profile: Profile, table: Table, day: date, *, end: date, seed: int) -> Plan:
    rnd = random.Random(f"{seed}|{profile.name}|{table.name}|{day}")
    valid = max(1, round(profile.valid_rows * table.rows * rnd.uniform(0.85, 1.15)))
    week_start = review_week_end(end) - timedelta(days=6)
    weights = {r.text: r.weight for r in table.reasons}
    if profile.name == "demo":
        rate = profile.rate_pct * rnd.uniform(0.3, 1.5)
        if rnd.random() < 0.12:  # an occasional bad day, over the production threshold, never over 10%
            rate = rnd.uniform(5.5, 8.5)
        if table.name == SPIKE[0] and day in spike_days(end):
            rate = rnd.uniform(12.0, 15.0)
            weights[SPIKE[1]] *= 8
    else:
        rate = profile.rate_pct * rnd.uniform(0.8, 1.2)
    if table.name == NEW_REASON[0] and day >= week_start:
        weights[NEW_REASON[1]] = 3.0
    quarantined = round(valid * rate / 100)
    total = sum(weights.values())
    counts: dict[str, int] = {}
    left = quarantined
    live = [(text, w) for text, w in weights.items() if w > 0]
    for i, (text, w) in enumerate(live):
        n = left if i == len(live) - 1 else min(left, round(quarantined * w / total * rnd.uniform(0.7, 1.3)))
        if n > 0:
            counts[text] = n
        left -= n
    return Plan(table.name, day, valid, counts)


# ------------------------------------------------------------------------------------------------ rows


def _splice(array: pa.Array, start: int, stop: int, values: pa.Array) -> pa.Array:
    return pa.concat_arrays([array.slice(0, start), values.cast(array.type), array.slice(stop)])


def quarantine_parts(plan: Plan, table: Table, profile: Profile, *, seed: int, first_day: date) -> Iterable[pa.Table]:
    """The quarantined rows of one partition in parts of at most PART_ROWS rows, grouped by reason."""
    n = plan.quarantined
    if n == 0:
        return
    r = Rand(seed, "q", table.name, plan.day)
    cols = table.build(r, plan.day, n, 50_000_000 + _day_no(plan.day) * 1_000_000)
    if table.name == "orders" and (plan.day - first_day).days >= profile.drift_day:
        cols["coupon_code"] = r.choice(n, [None, None, None, "WELCOME10", "SPRING5", "VIP20"])
    casts: list[tuple[str, int, int]] = []
    at = 0
    by_text = {x.text: x for x in table.reasons}
    for text, count in plan.reasons.items():
        reason, stop = by_text[text], at + count
        col = cols[reason.column]
        if reason.kind == NULL:
            cols[reason.column] = _splice(col, at, stop, pa.nulls(count, col.type))
        elif reason.kind == FK:
            cols[reason.column] = _splice(col, at, stop, ids("X", r.ints(count, 9 * 10**8, 10**9)))
        elif reason.kind == RANGE and pa.types.is_timestamp(col.type):
            future = pc.add(col.slice(at, count).cast(pa.int64()), r.ints(count, 30 * DAY_US, 400 * DAY_US))
            cols[reason.column] = _splice(col, at, stop, future.cast(TS))
        elif reason.kind == RANGE:
            cols[reason.column] = _splice(col, at, stop, pc.negate(col.slice(at, count)))
        elif reason.kind == DUP:  # the keys of valid rows of the same day (numbered from the same start)
            valid_keys = table.build(r, plan.day, count, _day_no(plan.day) * 1_000_000)[table.key]
            cols[reason.column] = _splice(col, at, stop, valid_keys)
        elif reason.kind == CAST:
            casts.append((reason.column, at, stop))
        at = stop
    reason_col = pa.concat_arrays([pa.array([t] * c, pa.string()) for t, c in plan.reasons.items()])
    stamp = r.times(n, plan.day, lo_h=25, hi_h=29)  # processed early the next morning
    for start in range(0, n, PART_ROWS):
        stop = min(n, start + PART_ROWS)
        part = {name: col.slice(start, stop - start) for name, col in cols.items()}
        for column, a, b in casts:  # the part holds rows whose value did not cast: the column stays text
            if a < stop and b > start:
                text = part[column].cast(pa.string())
                lo, hi = max(a, start) - start, min(b, stop) - start
                part[column] = _splice(text, lo, hi, r.choice(hi - lo, CAST_JUNK))
        part[REASON_COLUMN] = reason_col.slice(start, stop - start)
        part[TIMESTAMP_COLUMN] = stamp.slice(start, stop - start)
        yield pa.table(part)


def _day_no(day: date) -> int:
    return (day - date(2020, 1, 1)).days % 40


def valid_table(plan: Plan, table: Table, profile: Profile, *, seed: int, first_day: date) -> pa.Table:
    if not profile.full_valid:
        return pa.table({"_bench_row": pa.nulls(plan.valid, pa.int8()).fill_null(0)})
    r = Rand(seed, "v", table.name, plan.day)
    cols = table.build(r, plan.day, plan.valid, _day_no(plan.day) * 1_000_000)
    if table.name == "orders" and (plan.day - first_day).days >= profile.drift_day:
        cols["coupon_code"] = r.choice(plan.valid, [None, None, None, "WELCOME10", "SPRING5", "VIP20"])
    return pa.table(cols)


def _parquet(data: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(data, buf, compression="zstd", row_group_size=1 << 20)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- writing


@dataclass
class Written:
    files: int = 0
    bytes: int = 0
    valid: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    skipped: bool = False
    plans: list[Plan] = field(default_factory=list)


def generate(
    store: Store,
    profile: Profile,
    *,
    end: date,
    seed: int = 3,
    tables: Sequence[str] | None = None,
    days: int | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda _line: None,
) -> Written:
    """Write ``profile``'s dataset for the days ending ``end`` into ``store``; skip if it is already there."""
    names = list(tables or TABLES)
    unknown = sorted(set(names) - set(TABLES))
    if unknown:
        raise ValueError(f"unknown tables {unknown} (there are {sorted(TABLES)})")
    n_days = days or profile.days
    first = end - timedelta(days=n_days - 1)
    marker = {"layout": LAYOUT_VERSION, "profile": profile.name, "seed": seed, "end": end.isoformat()}
    marker |= {"days": n_days, "tables": names, "valid_rows": profile.valid_rows}
    fs, marker_path = store.fs, store.join(MARKER)
    started = time.perf_counter()
    out = Written()
    if store.remote:
        bucket = store.root.split("/", 1)[0]
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    if not force and fs.exists(marker_path):
        with fs.open(marker_path, "rb") as handle:
            if json.load(handle) == marker:
                out.skipped = True
                return out
        fs.rm(marker_path)
    for name in [QUARANTINE_DIR, *names]:
        if fs.exists(store.join(name)):
            fs.rm(store.join(name), recursive=True)
    for name in names:
        table = TABLES[name]
        uploads: dict[str, bytes] = {}
        for i in range(n_days):
            day = first + timedelta(days=i)
            plan = plan_partition(profile, table, day, end=end, seed=seed)
            out.plans.append(plan)
            valid_dir = store.partition_dir(name, day, quarantined=False)
            uploads[f"{valid_dir}/part-0.parquet"] = _parquet(
                valid_table(plan, table, profile, seed=seed, first_day=first)
            )
            q_dir = store.partition_dir(name, day, quarantined=True)
            for k, part in enumerate(quarantine_parts(plan, table, profile, seed=seed, first_day=first)):
                uploads[f"{q_dir}/part-{k}.parquet"] = _parquet(part)
            out.valid += plan.valid
            out.quarantined += plan.quarantined
            if len(uploads) >= 64:
                _put(store, uploads, out)
        _put(store, uploads, out)
        log(f"{name}: {n_days} days written")
    with fs.open(marker_path, "wb") as handle:
        handle.write(json.dumps(marker, indent=1).encode())
    out.seconds = time.perf_counter() - started
    return out


def _put(store: Store, uploads: dict[str, bytes], out: Written) -> None:
    if not uploads:
        return
    if not store.remote:
        for directory in {path.rsplit("/", 1)[0] for path in uploads}:
            store.fs.makedirs(directory, exist_ok=True)
    store.fs.pipe(dict(uploads))
    out.files += len(uploads)
    out.bytes += sum(len(data) for data in uploads.values())
    uploads.clear()


def store_for(root: str, gcs_endpoint: str | None = None) -> Store:
    return Store(QuarantineConfig(root=root, gcs_endpoint=gcs_endpoint), {})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.quarantine", description=__doc__.split("\n")[0])
    parser.add_argument("profile", choices=sorted(PROFILES))
    parser.add_argument("--root", required=True, help="an absolute local path or gs://bucket/prefix")
    parser.add_argument("--gcs-endpoint", default=None, help="the GCS API endpoint (the emulator's URL)")
    parser.add_argument("--end", type=date.fromisoformat, default=None, help="the last day (default: yesterday, UTC)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--tables", default=None, help="comma-separated subset of the six tables")
    parser.add_argument("--days", type=int, default=None, help="fewer days than the profile's")
    parser.add_argument("--force", action="store_true", help="write even if the same dataset is there")
    args = parser.parse_args(argv)
    end = args.end or datetime.now(UTC).date() - timedelta(days=1)
    try:
        store = store_for(args.root, args.gcs_endpoint)
        written = generate(
            store,
            PROFILES[args.profile],
            end=end,
            seed=args.seed,
            tables=args.tables.split(",") if args.tables else None,
            days=args.days,
            force=args.force,
            log=lambda line: print(f"  {line}", file=sys.stderr),
        )
    except (ValueError, OSError) as exc:
        print(f"sandbox.quarantine: {exc}", file=sys.stderr)
        return 1
    if written.skipped:
        print(f"{args.root}: the {args.profile} dataset ending {end} is already there")
    else:
        print(
            f"{args.root}: {args.profile} dataset ending {end}: {written.files} files, {written.bytes / 1e6:.1f} MB, "
            f"{written.valid:,} valid and {written.quarantined:,} quarantined rows in {written.seconds:.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
