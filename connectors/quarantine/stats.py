"""What a quarantine source holds: rows per (table, day), rates, reasons, samples, storage and the seed's
escalation rules. Pure functions over a :class:`Store`; no Django.

How each figure is read (docs/quarantine.md, "Reading"):

- Row counts per (table, day), valid and quarantined: the ``num_rows`` of each parquet file's footer (pyarrow
  through the store's filesystem); no row is scanned. Valid files of a release still pending in the ledger
  are not counted (their rows still count on the quarantine side).
- Reasons: per table, one DuckDB scan of the period's quarantined files projecting the reason, the timestamp
  and the key columns only, and one scan of the 4 weeks before projecting the reason only (the previous
  week's counts and the reasons already seen). Files are read with ``union_by_name``, so a column added on a
  later day, a column whose type changed, or another table's schema never break the read; partitions come
  from the listing, never from hive columns (``hive_partitioning=false``).
- Key columns of a table: ``key_columns[table]`` of the config, else the columns named ``*_id`` in the files
  read, in file order.
- Storage: the sizes the listing reports.

Every date is a UTC day (``ingest_dt``); timestamps are read and returned in UTC. A week is the 7 days ending
``week_end`` inclusive. Rates are percent of valid rows (seed 003: "> 5% of valid records").
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.base import ConnectorError
from connectors.quarantine import ledger
from connectors.quarantine.config import REASON_COLUMN, TABLE_NAME, TIMESTAMP_COLUMN, QuarantineConfig
from connectors.quarantine.store import FileInfo, Store

#: the reasons of the 4 weeks before a period are its history: a reason not among them is new
HISTORY_DAYS = 28
WEEK_DAYS = 7
SAMPLE_KEYS = 5
MAX_SAMPLE = 1000
MAX_WINDOW_DAYS = 366
#: a record whose ``_quarantine_reason`` is null is counted under this reason
NULL_REASON = "(none)"
# footers of remote files are fetched this many at a time (local reads are faster one after another)
REMOTE_FOOTER_WORKERS = 8
FOOTER_READ = 64 * 1024
# above this many reasons to look up in the history, the history is grouped instead of filtered
MAX_FILTERED_REASONS = 200
_READ = "union_by_name=true, hive_partitioning=false"


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class DayCount:
    """Rows of one (table, day): ``rate`` is quarantined / valid in percent, None when there are no valid rows."""

    table: str
    date: dt.date
    valid: int
    quarantined: int
    rate: float | None

    def over(self, pct: float) -> bool:
        """More than ``pct`` % quarantined; a day with quarantined rows and no valid one is over any threshold."""
        if self.quarantined == 0:
            return False
        return self.rate is None or self.rate > pct

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "date": self.date.isoformat(),
            "valid": self.valid,
            "quarantined": self.quarantined,
            "rate": self.rate,
        }


@dataclass(frozen=True)
class ReasonStat:
    """One reason of one table over a period: its count, its first and last ``_quarantine_timestamp`` in the
    period, the keys of its first records, its count in the 7 days before the period and whether it is
    ``new`` (not seen in the 4 weeks before the period)."""

    reason: str
    count: int
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    sample_keys: list[dict[str, Any]]
    previous_week: int
    new: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "count": self.count,
            "previous_week": self.previous_week,
            "new": self.new,
            "first_seen": jsonable(self.first_seen),
            "last_seen": jsonable(self.last_seen),
            "sample_keys": self.sample_keys,
        }


@dataclass(frozen=True)
class Sample:
    """Records of one table: ``rows`` are ``{<key column>: value, ..., "reason", "timestamp", "record"}``."""

    key_columns: list[str]
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Escalation:
    """A seed 003 escalation: ``rate_days`` (over ``escalate_pct`` on ``escalate_days`` consecutive days:
    ``days``), ``new_reason`` (``days``: the day it was first seen) or ``storage`` (``table`` None)."""

    rule: Literal["rate_days", "new_reason", "storage"]
    table: str | None
    reason: str | None
    days: list[dt.date]
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "table": self.table,
            "reason": self.reason,
            "days": [d.isoformat() for d in self.days],
            "detail": self.detail,
        }


@dataclass(frozen=True)
class WeeklyReview:
    """What the ``quarantine-review`` verb records: the summary, the escalations and the week's breaches."""

    summary: dict[str, Any]
    escalations: list[Escalation]
    breaches: list[DayCount]

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "escalations": [e.as_json() for e in self.escalations],
            "breaches": [b.as_json() for b in self.breaches],
        }


# -------------------------------------------------------------------------------------------- public API


def day_counts(store: Store, *, start: dt.date, end: dt.date, tables: Sequence[str] | None = None) -> list[DayCount]:
    """Valid and quarantined rows of every (table, day) of ``[start, end]``, from footers; days without files
    are there with zeros."""
    _check_window(start, end)
    pending = _pending(store)
    found = []
    for table in _tables(store, tables):
        quarantined = _footer_parts(store, _listing(store, table, start, end, quarantined=True))
        valid = _footer_parts(store, _listing(store, table, start, end, quarantined=False), pending)
        found += _day_counts(table, _days(start, end), valid, quarantined)
    return found


def reason_stats(store: Store, *, table: str, start: dt.date, end: dt.date) -> list[ReasonStat]:
    """The reasons of ``table`` over ``[start, end]``, most frequent first (see :class:`ReasonStat`)."""
    _check_window(start, end)
    table = _table(table)
    files = _listing(store, table, start - dt.timedelta(days=HISTORY_DAYS), end, quarantined=True)
    with store.duckdb(listed=[f for day in files.values() for f in day]) as con:
        return _reasons(
            con, store, table, files, start, end, _columns_of(store, files, start, end), sample_keys=SAMPLE_KEYS
        )


def weekly_summary(store: Store, *, week_end: dt.date, tables: Sequence[str] | None = None) -> dict[str, Any]:
    """The weekly summary (the ``quarantine_summary`` JSON, docs/quarantine.md): per table the week's days,
    reasons and growth; ``seconds`` is the time it took."""
    started = time.perf_counter()
    valid_from = week_end - dt.timedelta(days=WEEK_DAYS - 1)
    weeks = _collect(store, week_end=week_end, tables=tables, valid_from=valid_from, with_storage=False)
    return _summary(weeks, week_end, started)


def weekly_rates(
    store: Store, *, week_end: dt.date, weeks: int = 12, tables: Sequence[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Per table, one row per week (oldest first) of the ``weeks`` weeks ending ``week_end``: the trend lines."""
    if not 1 <= weeks <= MAX_WINDOW_DAYS // WEEK_DAYS:
        raise ConnectorError(f"weeks must be between 1 and {MAX_WINDOW_DAYS // WEEK_DAYS}, got {weeks}")
    start = week_end - dt.timedelta(days=WEEK_DAYS * weeks - 1)
    by_table: dict[str, list[DayCount]] = {}
    for count in day_counts(store, start=start, end=week_end, tables=tables):
        by_table.setdefault(count.table, []).append(count)
    rates = {}
    for table, counts in by_table.items():
        rows = []
        for week in range(weeks):
            chunk = counts[week * WEEK_DAYS : (week + 1) * WEEK_DAYS]
            valid, quarantined = sum(c.valid for c in chunk), sum(c.quarantined for c in chunk)
            rows.append(
                {
                    "week_start": chunk[0].date.isoformat(),
                    "week_end": chunk[-1].date.isoformat(),
                    "valid": valid,
                    "quarantined": quarantined,
                    "rate": _rate(quarantined, valid),
                }
            )
        rates[table] = rows
    return rates


def sample(
    store: Store, *, table: str, reason: str | None = None, start: dt.date, end: dt.date, limit: int = 50
) -> Sample:
    """The first ``limit`` quarantined records of ``table`` over ``[start, end]`` (in day and file order),
    of one ``reason`` or all: key columns first, then reason and timestamp, then the rest as ``record``."""
    _check_window(start, end)
    table = _table(table)
    if not 1 <= limit <= MAX_SAMPLE:
        raise ConnectorError(f"limit must be between 1 and {MAX_SAMPLE}, got {limit}")
    listed = [f for files in _listing(store, table, start, end, quarantined=True).values() for f in files]
    paths = [f.path for f in listed]
    if not paths:
        return Sample(key_columns=list(store.cfg.key_columns.get(table, [])), rows=[])
    where, params = _reason_filter(reason)
    with store.duckdb(listed=listed) as con:
        result = _arrow(
            con,
            store,
            f"SELECT * FROM {_files(store, paths)}{where} LIMIT {int(limit)}",
            f"reading a sample of {table}",
            params,
        )
    keys = _key_columns(store, table, result.column_names)
    rows = []
    for record in result.to_pylist():
        row = {key: jsonable(record.pop(key, None)) for key in keys}
        raw_reason = record.pop(REASON_COLUMN, None)
        row["reason"] = NULL_REASON if raw_reason is None else str(raw_reason)
        row["timestamp"] = jsonable(record.pop(TIMESTAMP_COLUMN, None))
        row["record"] = {name: jsonable(value) for name, value in record.items()}
        rows.append(row)
    return Sample(key_columns=keys, rows=rows)


def storage(store: Store, *, tables: Sequence[str] | None = None) -> dict[str, int]:
    """Bytes of quarantined files per table (every partition), from the listing."""
    return {
        table: sum(f.size for f in store.find(store.table_dir(table, quarantined=True)))
        for table in _tables(store, tables)
    }


def breaches(store: Store, cfg: QuarantineConfig, *, start: dt.date, end: dt.date) -> list[DayCount]:
    """The (table, day)s of ``[start, end]`` over the source's ``threshold_pct``."""
    return [c for c in day_counts(store, start=start, end=end) if c.over(cfg.threshold_pct)]


def escalations(store: Store, cfg: QuarantineConfig, *, week_end: dt.date) -> list[Escalation]:
    """The seed's escalation rules for the week ending ``week_end`` (see :class:`Escalation`)."""
    return weekly_review(store, cfg, week_end=week_end).escalations


def weekly_review(
    store: Store, cfg: QuarantineConfig, *, week_end: dt.date, tables: Sequence[str] | None = None
) -> WeeklyReview:
    """Summary, escalations and breaches of one week, reading each file once (the ``quarantine-review`` verb).
    A ``rate_days`` streak may begin up to ``escalate_days - 1`` days before the week and must reach into it."""
    started = time.perf_counter()
    start = week_end - dt.timedelta(days=WEEK_DAYS - 1)
    valid_from = start - dt.timedelta(days=cfg.escalate_days - 1)
    weeks = _collect(store, week_end=week_end, tables=tables, valid_from=valid_from, with_storage=True)
    summary = _summary(weeks, week_end, started)
    found: list[Escalation] = []
    for week in weeks:
        found += _streaks(week.table, [c for c in week.counts if c.date >= valid_from], cfg, start)
        found += [
            Escalation(
                rule="new_reason",
                table=week.table,
                reason=r.reason,
                days=[r.first_seen.date()] if r.first_seen else [],
                detail=f"{week.table}: new quarantine reason {r.reason!r} ({r.count} records this week)",
            )
            for r in week.reasons
            if r.new
        ]
    total = sum(week.storage_bytes or 0 for week in weeks)
    if total > cfg.escalate_storage_bytes:
        found.append(
            Escalation(
                rule="storage",
                table=None,
                reason=None,
                days=[],
                detail=f"quarantine holds {total} bytes ({total / 1e12:.3f} TB), above the limit of "
                f"{cfg.escalate_storage_bytes} bytes",
            )
        )
    week_counts = [c for week in weeks for c in week.counts if c.date >= start]
    return WeeklyReview(
        summary=summary, escalations=found, breaches=[c for c in week_counts if c.over(cfg.threshold_pct)]
    )


# -------------------------------------------------------------------------------------------- JSON values


def jsonable(value: Any) -> Any:
    """A value read from parquet as JSON-ready data: times as ISO strings in UTC (a naive timestamp is UTC),
    decimals as floats, bytes as hex, NaN and infinities as None."""
    if isinstance(value, dt.datetime):
        aware = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return aware.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------- internals


@dataclass
class _TableWeek:
    table: str
    counts: list[DayCount]  # quarantine side from a week before the week; valid side from ``valid_from``
    reasons: list[ReasonStat]
    key_columns: list[str]
    storage_bytes: int | None  # listed for the review only (every partition, not only the week's)
    previous_week: int = 0
    quarantined: int = 0
    valid: int = 0
    week: list[DayCount] = field(default_factory=list)


@dataclass(frozen=True)
class _Part:
    path: str
    rows: int
    columns: tuple[str, ...]


def _collect(
    store: Store, *, week_end: dt.date, tables: Sequence[str] | None, valid_from: dt.date, with_storage: bool
) -> list[_TableWeek]:
    start = week_end - dt.timedelta(days=WEEK_DAYS - 1)
    previous = start - dt.timedelta(days=WEEK_DAYS)
    count_from = min(previous, valid_from)
    pending = _pending(store)
    history_from = start - dt.timedelta(days=HISTORY_DAYS)
    listings = {t: _listing(store, t, history_from, week_end, quarantined=True) for t in _tables(store, tables)}
    found = []
    with store.duckdb(listed=[f for listing in listings.values() for day in listing.values() for f in day]) as con:
        for table, listing in listings.items():
            quarantined = _footer_parts(store, {day: fs for day, fs in listing.items() if day >= count_from})
            valid = _footer_parts(store, _listing(store, table, valid_from, week_end, quarantined=False), pending)
            counts = _day_counts(table, _days(count_from, week_end), valid, quarantined)
            columns = _union_columns(p for day, parts in quarantined.items() if day >= start for p in parts)
            week = [c for c in counts if c.date >= start]
            found.append(
                _TableWeek(
                    table=table,
                    counts=counts,
                    reasons=_reasons(con, store, table, listing, start, week_end, columns, sample_keys=0),
                    key_columns=_key_columns(store, table, columns),
                    storage_bytes=(
                        sum(f.size for f in store.find(store.table_dir(table, quarantined=True)))
                        if with_storage
                        else None
                    ),
                    previous_week=sum(c.quarantined for c in counts if previous <= c.date < start),
                    quarantined=sum(c.quarantined for c in week),
                    valid=sum(c.valid for c in week),
                    week=week,
                )
            )
    return found


def _summary(weeks: list[_TableWeek], week_end: dt.date, started: float) -> dict[str, Any]:
    tables = []
    for week in weeks:
        growth = (
            None
            if week.previous_week == 0
            else round((week.quarantined - week.previous_week) / week.previous_week * 100, 3)
        )
        tables.append(
            {
                "table": week.table,
                "days": [{k: v for k, v in c.as_json().items() if k != "table"} for c in week.week],
                "reasons": [r.as_json() for r in week.reasons],
                "growth": growth,
                "valid": week.valid,
                "quarantined": week.quarantined,
                "rate": _rate(week.quarantined, week.valid),
                "previous_week": week.previous_week,
                "key_columns": week.key_columns,
            }
        )
        if week.storage_bytes is not None:
            tables[-1]["storage_bytes"] = week.storage_bytes
    return {
        "week_start": (week_end - dt.timedelta(days=WEEK_DAYS - 1)).isoformat(),
        "week_end": week_end.isoformat(),
        "seconds": round(time.perf_counter() - started, 4),
        "tables": tables,
    }


def _streaks(table: str, counts: list[DayCount], cfg: QuarantineConfig, week_start: dt.date) -> list[Escalation]:
    """Runs of consecutive days over ``escalate_pct`` at least ``escalate_days`` long reaching into the week."""
    found, run = [], []
    for count in [*counts, None]:
        if count is not None and count.over(cfg.escalate_pct):
            run.append(count)
            continue
        if len(run) >= cfg.escalate_days and run[-1].date >= week_start:
            worst = max(run, key=lambda c: math.inf if c.rate is None else c.rate)
            worst_rate = "no valid rows" if worst.rate is None else f"{worst.rate}%"
            found.append(
                Escalation(
                    rule="rate_days",
                    table=table,
                    reason=None,
                    days=[c.date for c in run],
                    detail=f"{table}: quarantine rate over {cfg.escalate_pct:g}% on {len(run)} consecutive days "
                    f"({run[0].date.isoformat()} to {run[-1].date.isoformat()}; worst {worst_rate} on "
                    f"{worst.date.isoformat()})",
                )
            )
        run = []
    return found


def _reasons(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    table: str,
    listing: dict[dt.date, list[FileInfo]],
    start: dt.date,
    end: dt.date,
    columns: list[str],
    *,
    sample_keys: int,
) -> list[ReasonStat]:
    """Reason stats of ``table`` over ``[start, end]``; ``listing`` holds its quarantined files from 4 weeks
    before ``start``; ``columns`` are the period's file columns (for the key columns); ``sample_keys`` records'
    keys per reason (0: none)."""
    period = [f.path for day, files in sorted(listing.items()) if start <= day <= end for f in files]
    if not period:
        return []
    previous_from = start - dt.timedelta(days=WEEK_DAYS)
    history_from = start - dt.timedelta(days=HISTORY_DAYS)
    previous = [f.path for day, fs in listing.items() if previous_from <= day < start for f in fs]
    older = [f.path for day, fs in listing.items() if history_from <= day < previous_from for f in fs]
    keys = _key_columns(store, table, columns) if sample_keys else []
    ts = _ident(TIMESTAMP_COLUMN)
    # first and last seen as epoch microseconds, cast after the aggregate (cheap; a timestamp with or without
    # time zone, or an ISO string, all read as UTC)
    select = (
        f"SELECT {_ident(REASON_COLUMN)}, count(*), epoch_us(CAST(min({ts}) AS TIMESTAMPTZ)), "
        f"epoch_us(CAST(max({ts}) AS TIMESTAMPTZ))"
    )
    samples: dict[str | None, list[dict[str, Any]]] = {}
    if keys:
        # the keys of the reason's earliest records, one struct per record (arrow: any key type reads back)
        struct = "{" + ", ".join(f"{_literal(k)}: {_ident(k)}" for k in keys) + "}"
        for row in _arrow(
            con,
            store,
            f"SELECT {_ident(REASON_COLUMN)} AS reason, min_by({struct}, {ts}, {int(sample_keys)}) AS keys "
            f"FROM {_files(store, period)} GROUP BY ALL",
            f"reading sample keys of {table}",
        ).to_pylist():
            samples[row["reason"]] = [jsonable(k) for k in row["keys"] or []]
    rows = _fetch(con, store, f"{select} FROM {_files(store, period)} GROUP BY ALL", f"reading the reasons of {table}")
    column = _ident(REASON_COLUMN)
    counted: dict[str | None, int] = {}
    if previous:
        query = f"SELECT {column}, count(*) FROM {_files(store, previous)} GROUP BY ALL"
        counted = {r: int(n) for r, n in _fetch(con, store, query, f"reading last week's reasons of {table}")}
    before: set[str | None] = set(counted)
    # the weeks before that only tell whether the period's other reasons were seen: usually none is left
    # to look for, and a filter on a few values is cheaper than grouping every row
    unseen = {row[0] for row in rows} - before
    if older and unseen:
        where = " OR ".join(
            ([f"{column} IN ({', '.join(_literal(r) for r in unseen if r is not None)})"] if unseen - {None} else [])
            + ([f"{column} IS NULL"] if None in unseen else [])
        )
        if len(unseen) > MAX_FILTERED_REASONS:
            where = "true"
        query = f"SELECT DISTINCT {column} FROM {_files(store, older)} WHERE {where}"
        before |= {r for (r,) in _fetch(con, store, query, f"reading the earlier reasons of {table}")}
    stats = [
        ReasonStat(
            reason=NULL_REASON if reason is None else str(reason),
            count=int(n),
            first_seen=_from_epoch_us(first),
            last_seen=_from_epoch_us(last),
            sample_keys=samples.get(reason, []),
            previous_week=counted.get(reason, 0),
            new=reason not in before,
        )
        for reason, n, first, last in rows
    ]
    return sorted(stats, key=lambda s: (-s.count, s.reason))


def _files(store: Store, paths: Sequence[str]) -> str:
    """``read_parquet`` of ``paths``, the list written into the SQL (quoted): DuckDB's Python binding probes
    optional modules for every list parameter, which costs more than the scan of a small week."""
    listed = ", ".join(_literal(store.url(p)) for p in paths)
    return f"read_parquet([{listed}], {_READ})"


def _fetch(con: duckdb.DuckDBPyConnection, store: Store, query: str, doing: str) -> list[tuple[Any, ...]]:
    try:
        return con.execute(query).fetchall()
    except duckdb.IOException as exc:
        raise ConnectorError(f"{doing} failed: {exc}", transient=store.remote) from None
    except duckdb.Error as exc:
        raise ConnectorError(f"{doing} failed (not a quarantine layout of seed 003's shape?): {exc}") from None


def _arrow(
    con: duckdb.DuckDBPyConnection, store: Store, query: str, doing: str, params: dict[str, Any] | None = None
) -> pa.Table:
    try:
        return con.execute(query, params).to_arrow_table()
    except duckdb.IOException as exc:
        raise ConnectorError(f"{doing} failed: {exc}", transient=store.remote) from None
    except duckdb.Error as exc:
        raise ConnectorError(f"{doing} failed (not a quarantine layout of seed 003's shape?): {exc}") from None


def _reason_filter(reason: str | None) -> tuple[str, dict[str, Any]]:
    if reason is None:
        return "", {}
    if reason == NULL_REASON:
        return f" WHERE {_ident(REASON_COLUMN)} IS NULL", {}
    return f" WHERE {_ident(REASON_COLUMN)} = $reason", {"reason": reason}


def _key_columns(store: Store, table: str, columns: Sequence[str]) -> list[str]:
    """The configured key columns of ``table`` present in ``columns``, else its ``*_id`` columns."""
    configured = store.cfg.key_columns.get(table)
    if configured:
        missing = [c for c in configured if c not in columns]
        if missing and columns:
            raise ConnectorError(
                f"the key column(s) {', '.join(missing)} configured for {table} are in none of its files "
                f"(columns: {', '.join(columns)}); fix key_columns in the connection's config"
            )
        return list(configured)
    return [c for c in columns if c.endswith("_id") and c not in (REASON_COLUMN, TIMESTAMP_COLUMN)]


def _columns_of(store: Store, listing: dict[dt.date, list[FileInfo]], start: dt.date, end: dt.date) -> list[str]:
    footers = _footers(store, [f for day, files in listing.items() if start <= day <= end for f in files])
    return _union_columns(footers.values())


def _union_columns(parts: Iterable[_Part]) -> list[str]:
    columns: dict[str, None] = {}
    for part in parts:
        columns.update(dict.fromkeys(part.columns))
    return list(columns)


def _footers(store: Store, files: Sequence[FileInfo]) -> dict[str, _Part]:
    """Rows and top-level columns of each file from its footer; a file gone since the listing is skipped."""

    def read(info: FileInfo) -> _Part | None:
        try:
            meta = pq.read_metadata(pa.BufferReader(_footer(store, info)))
        except FileNotFoundError:
            return None  # removed since the listing (a release or a cleanup): its rows are elsewhere now
        except (pa.ArrowInvalid, ValueError) as exc:
            raise ConnectorError(f"{store.url(info.path)} is not a readable parquet file: {exc}") from None
        return _Part(path=info.path, rows=meta.num_rows, columns=tuple(meta.schema.to_arrow_schema().names))

    if store.remote and len(files) > 1:
        with ThreadPoolExecutor(max_workers=REMOTE_FOOTER_WORKERS) as pool:
            parts = list(pool.map(read, files))
    else:
        parts = [read(f) for f in files]
    return {p.path: p for p in parts if p is not None}


def _footer(store: Store, info: FileInfo) -> bytes:
    """The end of a parquet file holding its footer (``<metadata><length: 4 bytes LE>PAR1``): one ranged read
    of the last 64 KiB, a second one only when the metadata is larger. pyarrow reads the footer from it."""
    if info.size < 12:
        raise ValueError(f"{info.size} bytes is too small for a parquet file")
    tail = store.read_range(info.path, max(0, info.size - FOOTER_READ), info.size)
    if tail[-4:] != b"PAR1":
        raise ValueError("the file does not end with the parquet magic bytes")
    needed = int.from_bytes(tail[-8:-4], "little") + 8
    if needed > len(tail):
        if needed + 4 > info.size:
            raise ValueError("the footer length exceeds the file")
        tail = store.read_range(info.path, info.size - needed, info.size)
    return tail


def _day_counts(
    table: str, days: list[dt.date], valid: dict[dt.date, list[_Part]], quarantined: dict[dt.date, list[_Part]]
) -> list[DayCount]:
    found = []
    for day in days:
        v = sum(p.rows for p in valid.get(day, []))
        q = sum(p.rows for p in quarantined.get(day, []))
        found.append(DayCount(table=table, date=day, valid=v, quarantined=q, rate=_rate(q, v)))
    return found


def _footer_parts(
    store: Store, listing: dict[dt.date, list[FileInfo]], exclude: frozenset[str] = frozenset()
) -> dict[dt.date, list[_Part]]:
    footers = _footers(store, [f for files in listing.values() for f in files if f.path not in exclude])
    return {day: [footers[f.path] for f in files if f.path in footers] for day, files in listing.items()}


def _listing(
    store: Store, table: str, start: dt.date, end: dt.date, *, quarantined: bool
) -> dict[dt.date, list[FileInfo]]:
    """The files of the partitions of ``table`` within ``[start, end]`` (one listing per partition)."""
    return {
        day: store.files(table, day, quarantined=quarantined)
        for day in store.days(table, quarantined=quarantined)
        if start <= day <= end
    }


def _pending(store: Store) -> frozenset[str]:
    """Valid files of releases still pending (ledger): store paths, with or without ``gs://``."""
    return frozenset(path.removeprefix("gs://") for path in ledger.pending_valid_files(store))


def _tables(store: Store, tables: Sequence[str] | None) -> list[str]:
    return store.tables() if tables is None else [_table(t) for t in tables]


def _table(table: str) -> str:
    if not TABLE_NAME.match(table):
        raise ConnectorError(f"{table!r} is not a table name (letters, digits, _ and -; one path segment)")
    return table


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def _check_window(start: dt.date, end: dt.date) -> None:
    if start > end:
        raise ConnectorError(f"the window starts ({start.isoformat()}) after it ends ({end.isoformat()})")
    if (end - start).days >= MAX_WINDOW_DAYS:
        raise ConnectorError(f"the window may span at most {MAX_WINDOW_DAYS} days")


def _rate(quarantined: int, valid: int) -> float | None:
    return None if valid == 0 else round(quarantined / valid * 100, 3)


def _from_epoch_us(value: int | None) -> dt.datetime | None:
    return None if value is None else dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=value)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"
