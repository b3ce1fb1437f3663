"""Read-only checks of the quarantine connector, named as the 003 runbooks use them.

Each reads files only (stats.py) and returns JSON-ready rows. A window of days defaults to the 7 days ending
yesterday (UTC): today's partitions are still being written.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.base import Check, ConnectorError, Findings, TargetRef
from connectors.quarantine import stats
from connectors.quarantine.config import TableLocator, check_table, parse_locator

if TYPE_CHECKING:
    from connectors.quarantine.connector import QuarantineConnector

BOTH = ("quarantine", "quarantine_table")


def yesterday() -> dt.date:
    """The last complete UTC day."""
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("table", check_fields=False)
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        return None if value is None else check_table(value)


class _QuarantineCheck(Check["QuarantineConnector", Any]):
    connector: QuarantineConnector

    def tables(self, target: TargetRef, table: str | None) -> list[str] | None:
        """The tables the check reads: the target's table, else ``table``, else every table (None)."""
        locator = parse_locator(target, self.target_kinds)
        if isinstance(locator, TableLocator):
            if table is not None and table != locator.table:
                raise ConnectorError(f"target {target.key!r} is table {locator.table!r}; table={table!r} differs")
            return [locator.table]
        return None if table is None else [table]


# ------------------------------------------------------------------------------------------ quarantine_rate


class QuarantineRateParams(_Params):
    """``days`` ending ``end`` (default yesterday, UTC); ``max_quarantine_pct`` defaults to the source's
    ``threshold_pct`` (5% in production, 10% in development)."""

    table: str | None = None
    days: int = Field(default=7, ge=1, le=stats.MAX_WINDOW_DAYS)
    end: dt.date | None = None
    max_quarantine_pct: float | None = Field(default=None, gt=0, le=100)


class QuarantineRateCheck(_QuarantineCheck):
    """Quarantined rows as a percentage of valid rows per (table, day). Passes when no day is over the limit
    (a day with quarantined rows and no valid row is over any limit)."""

    name = "quarantine_rate"
    params_model = QuarantineRateParams
    target_kinds = BOTH
    description = "Quarantine rate per table and day over a window, against the environment's threshold."

    def run(self, target: TargetRef, params: QuarantineRateParams) -> Findings:
        tables = self.tables(target, params.table)
        end = params.end or yesterday()
        start = end - dt.timedelta(days=params.days - 1)
        limit = params.max_quarantine_pct or self.connector.cfg.threshold_pct
        counts = stats.day_counts(self.connector.store, start=start, end=end, tables=tables)
        rows = [[c.table, c.date.isoformat(), c.valid, c.quarantined, c.rate, c.over(limit)] for c in counts]
        over = [c for c in counts if c.over(limit)]
        window = f"{start.isoformat()} to {end.isoformat()}"
        if over:
            worst = ", ".join(
                f"{c.table} {c.date.isoformat()} ({'no valid rows' if c.rate is None else f'{c.rate}%'})"
                for c in over[:10]
            )
            summary = f"{len(over)} (table, day) over {limit:g}% in {window}: {worst}" + (
                "..." if len(over) > 10 else ""
            )
        else:
            summary = f"no table over {limit:g}% on any day of {window} ({len({c.table for c in counts})} tables)"
        return Findings(
            passed=not over,
            summary=summary,
            expectation=f"quarantined rows at most {limit:g}% of valid rows on every day",
            columns=["table", "date", "valid", "quarantined", "rate", "over"],
            rows=rows,
        )


# --------------------------------------------------------------------------------------- quarantine_reasons


class QuarantineReasonsParams(_Params):
    """The week ending ``week_end`` (default yesterday, UTC); the ``top`` reasons per table."""

    table: str | None = None
    week_end: dt.date | None = None
    top: int = Field(default=5, ge=1, le=100)


class QuarantineReasonsCheck(_QuarantineCheck):
    """The most frequent quarantine reasons per table over a week, with their count the week before and
    whether they are new (not seen in the 4 weeks before). Passes when no reason is new (seed 003: a new
    reason is escalated)."""

    name = "quarantine_reasons"
    params_model = QuarantineReasonsParams
    target_kinds = BOTH
    description = "Top quarantine reasons per table over a week, new reasons marked."

    def run(self, target: TargetRef, params: QuarantineReasonsParams) -> Findings:
        tables = self.tables(target, params.table)
        store = self.connector.store
        end = params.week_end or yesterday()
        start = end - dt.timedelta(days=stats.WEEK_DAYS - 1)
        rows, new = [], []
        for table in tables if tables is not None else store.tables():
            for reason in stats.reason_stats(store, table=table, start=start, end=end)[: params.top]:
                data = reason.as_json()
                rows.append([table, *(data[c] for c in _REASON_COLUMNS[1:])])
                if reason.new:
                    new.append(f"{table}: {reason.reason!r} ({reason.count})")
        window = f"{start.isoformat()} to {end.isoformat()}"
        summary = (
            f"{len(new)} new reason(s) in {window}: {'; '.join(new)}"
            if new
            else f"no new quarantine reason in {window} ({len(rows)} reason(s) listed)"
        )
        return Findings(
            passed=not new,
            summary=summary,
            expectation="no reason that was not seen in the 4 weeks before",
            columns=_REASON_COLUMNS,
            rows=rows,
        )


_REASON_COLUMNS = ["table", "reason", "count", "previous_week", "new", "first_seen", "last_seen", "sample_keys"]


# --------------------------------------------------------------------------------------- quarantine_storage


class QuarantineStorageParams(_Params):
    """``max_storage_tb`` defaults to the source's ``escalate_storage_bytes`` (1 TB, seed 003)."""

    max_storage_tb: float | None = Field(default=None, gt=0)


class QuarantineStorageCheck(_QuarantineCheck):
    """Bytes of quarantined files per table (every partition), from the listing. Passes when the total is at
    most the limit."""

    name = "quarantine_storage"
    params_model = QuarantineStorageParams
    target_kinds = BOTH
    description = "Quarantine storage per table against the escalation limit (1 TB)."

    def run(self, target: TargetRef, params: QuarantineStorageParams) -> Findings:
        tables = self.tables(target, None)
        limit = (
            int(params.max_storage_tb * 10**12)
            if params.max_storage_tb is not None
            else self.connector.cfg.escalate_storage_bytes
        )
        sizes = stats.storage(self.connector.store, tables=tables)
        total = sum(sizes.values())
        summary = f"quarantine holds {total} bytes ({total / 1e12:.3f} TB) in {len(sizes)} table(s)"
        return Findings(
            passed=total <= limit,
            summary=summary + (f", above the limit of {limit / 1e12:g} TB" if total > limit else ""),
            expectation=f"at most {limit / 1e12:g} TB of quarantined files",
            columns=["table", "bytes", "tb"],
            rows=[[table, size, round(size / 1e12, 6)] for table, size in sizes.items()],
        )


# --------------------------------------------------------------------------------------- quarantine_records


class QuarantineRecordsParams(_Params):
    """One ``table`` (default: the target's), one ``reason`` or all, one day (``ingest_dt``) or the ``days``
    days ending yesterday (UTC); at most ``limit`` records."""

    table: str | None = None
    reason: str | None = Field(default=None, min_length=1, max_length=2000)
    ingest_dt: dt.date | None = None
    days: int = Field(default=7, ge=1, le=stats.MAX_WINDOW_DAYS)
    limit: int = Field(default=50, ge=1, le=stats.MAX_SAMPLE)


class QuarantineRecordsCheck(_QuarantineCheck):
    """A sample of quarantined records (the seed's "inspect quarantine records"): key columns first, then
    the reason, the timestamp and the other columns as JSON. Informational: always passes."""

    name = "quarantine_records"
    params_model = QuarantineRecordsParams
    target_kinds = BOTH
    description = "A sample of quarantined records of one table (and reason), key columns first."

    def run(self, target: TargetRef, params: QuarantineRecordsParams) -> Findings:
        tables = self.tables(target, params.table)
        if tables is None:
            raise ConnectorError("quarantine_records reads one table: pass table (or use a quarantine_table target)")
        table = tables[0]
        end = params.ingest_dt or yesterday()
        start = end if params.ingest_dt else end - dt.timedelta(days=params.days - 1)
        found = stats.sample(
            self.connector.store, table=table, reason=params.reason, start=start, end=end, limit=params.limit
        )
        columns = [*found.key_columns, "reason", "timestamp", "record"]
        rows = [
            [*(row[k] for k in found.key_columns), row["reason"], row["timestamp"], row["record"]] for row in found.rows
        ]
        which = f"reason {params.reason!r}" if params.reason else "every reason"
        return Findings(
            passed=True,
            summary=f"{len(rows)} quarantined record(s) of {table}, {which}, {start.isoformat()} to {end.isoformat()}",
            expectation="informational",
            columns=columns,
            rows=rows,
        )
