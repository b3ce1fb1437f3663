"""Read-only diagnostics of the Postgres connector, modelled on the seed runbook's queries.

Every check runs in a read-only session (``default_transaction_read_only``), so even a bug here cannot
change the warehouse. Rows are JSON-ready (timestamps and dates as ISO strings, numerics as floats).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import Check, ConnectorError, Findings, TargetRef
from connectors.postgres.catalog import (
    READABLE_RELKINDS,
    MatviewState,
    column_type,
    find_relation,
    has_column,
    inspect_matview,
    qualified,
)
from connectors.postgres.client import Conn
from connectors.postgres.config import PgIdentifier, TableLocator, parse_locator
from connectors.postgres.ledger import LedgerRow, last_refresh

if TYPE_CHECKING:
    from connectors.postgres.connector import PostgresConnector

MAX_WINDOW_DAYS = 366
QUERY_TEXT_CHARS = 1000  # enough to recognise a query; pg_stat_activity can hold megabytes
_TIME_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")


def jsonable(value: Any) -> Any:
    """A database value as JSON-ready data (ISO strings for times, floats for numerics)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _rows(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [[jsonable(v) for v in row] for row in rows]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PostgresCheck(Check["PostgresConnector", Any]):
    connector: PostgresConnector


def _time_column(conn: Conn, oid: int, locator: TableLocator, column: str | None) -> str:
    """The timestamp column to use: the param, else the target's ``timestamp_column``; validated."""
    chosen = column or locator.timestamp_column
    if chosen is None:
        raise ConnectorError(
            f"no timestamp column for {locator.display}: pass the column param or set timestamp_column "
            "on the catalog target"
        )
    kind = column_type(conn, oid, chosen)
    if kind is None:
        raise ConnectorError(f"{locator.display} has no column {chosen!r}")
    if kind not in _TIME_TYPES:
        raise ConnectorError(f"{locator.display}.{chosen} is {kind}, not a timestamp or date column")
    return chosen


# ------------------------------------------------------------------------------------- matview_status


class MatviewStatusParams(_Params):
    """``matview_status`` takes no parameters."""


class MatviewStatusCheck(_PostgresCheck):
    """Is the mart populated, how big, how many rows, when did the control plane last refresh it, and can
    it be refreshed CONCURRENTLY. Passes when the view is populated (the seed's pg_matviews query)."""

    name = "matview_status"
    params_model = MatviewStatusParams
    target_kinds = ("matview",)
    description = "State of a materialized view: populated, size, rows, last refresh, concurrent refresh."

    def run(self, target: TargetRef, params: MatviewStatusParams) -> Findings:
        """One row describing the view; rows are counted only when it is populated."""
        locator = parse_locator(target, self.target_kinds)
        config = self.connector.cfg
        with self.connector.session(f"reading the status of {locator.display}", read_only=True) as conn:
            state = inspect_matview(conn, config, locator)
            last = last_refresh(conn, config, state.display)
        columns = [
            "view", "populated", "has_indexes", "size_bytes", "size", "rows", "last_refresh_at",
            "last_refresh_action", "last_refresh_mode", "concurrent_refresh_possible", "unique_indexes",
        ]  # fmt: skip
        row = [
            state.display, state.populated, state.has_indexes, state.size_bytes, state.size_pretty, state.rows,
            last.finished_at.isoformat() if last else None, last.action_id if last else None,
            last.mode if last else None, state.concurrent_possible, state.unique_indexes,
        ]  # fmt: skip
        return Findings(
            passed=state.populated,
            summary=_status_summary(state, last),
            expectation="the view is populated",
            columns=columns,
            rows=[row],
        )


def _status_summary(state: MatviewState, last: LedgerRow | None) -> str:
    refreshed = (
        f"last refreshed by the control plane at {last.finished_at.isoformat()}"
        if last
        else "no refresh by the control plane on record"
    )
    if not state.populated:
        return f"{state.display} is NOT populated (queries on it fail until it is refreshed); {refreshed}"
    summary = f"{state.display} is populated: {state.rows} rows, {state.size_pretty}; {refreshed}"
    return f"{summary}; {state.concurrent_blocker}" if state.concurrent_blocker else summary


# ----------------------------------------------------------------------------------- blocking_queries


class BlockingQueriesParams(_Params):
    """``min_duration_s``: only report sessions that have been waiting at least this long."""

    min_duration_s: float = Field(default=0, ge=0)


# One row per (blocked session, session blocking it), with the lock the blocked one waits for: the seed's
# pg_stat_activity and ungranted pg_locks queries joined through pg_blocking_pids().
_BLOCKING_SQL = """
    select a.pid,
           a.usename,
           a.application_name,
           a.state,
           extract(epoch from now() - a.query_start)::float8,
           left(a.query, %(chars)s),
           w.locktype,
           w.relation,
           w.mode,
           bp.pid,
           b.usename,
           b.application_name,
           b.state,
           extract(epoch from now() - coalesce(b.xact_start, b.query_start))::float8,
           left(b.query, %(chars)s)
    from pg_stat_activity a
    cross join lateral unnest(pg_blocking_pids(a.pid)) as bp(pid)
    left join pg_stat_activity b on b.pid = bp.pid
    left join lateral (
        select l.locktype, l.relation::regclass::text as relation, l.mode
        from pg_locks l where l.pid = a.pid and not l.granted limit 1
    ) w on true
    where a.wait_event_type = 'Lock'
      and a.datname = current_database()
      and a.pid <> pg_backend_pid()
      and now() - a.query_start >= make_interval(secs => %(min_s)s)
    order by a.query_start, a.pid, bp.pid
"""


class BlockingQueriesCheck(_PostgresCheck):
    """Sessions waiting on a lock held by another session, and who holds it. Passes when none wait."""

    name = "blocking_queries"
    params_model = BlockingQueriesParams
    target_kinds = ("database",)
    description = "Blocked sessions, the sessions blocking them and the locks they wait for."

    def run(self, target: TargetRef, params: BlockingQueriesParams) -> Findings:
        """One row per blocked/blocking pair in the connection's database."""
        parse_locator(target, self.target_kinds)
        with self.connector.session("looking for blocked sessions", read_only=True) as conn:
            found = conn.execute(_BLOCKING_SQL, {"chars": QUERY_TEXT_CHARS, "min_s": params.min_duration_s}).fetchall()
        columns = [
            "blocked_pid", "blocked_user", "blocked_application", "blocked_state", "waiting_s", "blocked_query",
            "wait_locktype", "wait_relation", "wait_mode", "blocking_pid", "blocking_user",
            "blocking_application", "blocking_state", "blocking_xact_s", "blocking_query",
        ]  # fmt: skip
        return Findings(
            passed=not found,
            summary=_blocking_summary(found),
            expectation=f"no session waits on a lock (for {params.min_duration_s:g} s or more)",
            columns=columns,
            rows=_rows(found),
        )


def _blocking_summary(found: list[tuple[Any, ...]]) -> str:
    if not found:
        return "no blocked sessions"
    blocked = {row[0] for row in found}
    blockers = sorted({row[9] for row in found})
    worst = max(found, key=lambda row: row[4] or 0)
    return (
        f"{len(blocked)} blocked session(s), blocked by pid(s) {', '.join(map(str, blockers))}; longest wait "
        f"{worst[4]:.0f} s on {worst[8]} of {worst[7] or worst[6]} held by pid {worst[9]} ({worst[12]}). "
        "If the blocker is stuck, pg_terminate_backend(pid) ends it (use with caution)"
    )


# ------------------------------------------------------------------------------------------ freshness


class FreshnessParams(_Params):
    """``sla_hours``: the newest row must be at most this old (seed: alert after 2 hours). ``column``
    overrides the target's ``timestamp_column``."""

    sla_hours: float = Field(default=2, gt=0, le=24 * 366)
    column: PgIdentifier | None = None


class FreshnessCheck(_PostgresCheck):
    """How long since the last load: ``max(timestamp column)`` against now. Passes within the SLA."""

    name = "freshness"
    params_model = FreshnessParams
    target_kinds = ("table",)
    description = "Hours since the newest row of a table, against an SLA."

    def run(self, target: TargetRef, params: FreshnessParams) -> Findings:
        """One row: the newest timestamp, now, the age in hours and the SLA."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"checking freshness of {locator.display}", read_only=True) as conn:
            oid = find_relation(conn, self.connector.cfg, locator, READABLE_RELKINDS)
            column = _time_column(conn, oid, locator, params.column)
            query = sql.SQL(
                "select max({col})::timestamptz, now(), extract(epoch from now() - max({col})::timestamptz) / 3600"
            ).format(col=sql.Identifier(column))
            query = sql.SQL("{} from {}").format(query, qualified(locator))
            row = conn.execute(query).fetchone()
        assert row is not None  # an aggregate always returns one row
        last, now, hours = row[0], row[1], None if row[2] is None else round(float(row[2]), 2)
        passed = hours is not None and hours <= params.sla_hours
        if hours is None:
            summary = f"{locator.display} has no rows: nothing has ever been loaded"
        elif passed:
            summary = f"{locator.display} is fresh: last load {hours} h ago (SLA {params.sla_hours:g} h)"
        else:
            summary = (
                f"{locator.display} is stale: last load {hours} h ago, SLA {params.sla_hours:g} h exceeded; "
                "check the ingestion pipeline's recent runs"
            )
        return Findings(
            passed=passed,
            summary=summary,
            expectation=f"max({column}) at most {params.sla_hours:g} hours old",
            columns=["table", "column", "last_loaded_at", "checked_at", "hours_since_last_load", "sla_hours"],
            rows=[[locator.display, column, jsonable(last), jsonable(now), hours, params.sla_hours]],
        )


# ----------------------------------------------------------------------------------- row_counts_by_day


class RowCountsByDayParams(_Params):
    """A window of UTC days ``[start_date, end_date)`` (at most 366 days), the timestamp ``column``
    (default: the target's ``timestamp_column``) and an optional ``expected_min_per_day``."""

    start_date: date
    end_date: date
    column: PgIdentifier | None = None
    expected_min_per_day: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _window(self) -> RowCountsByDayParams:
        if self.start_date >= self.end_date:
            raise ValueError("start_date must be before end_date (end_date is exclusive)")
        if (self.end_date - self.start_date).days > MAX_WINDOW_DAYS:
            raise ValueError(f"the window may span at most {MAX_WINDOW_DAYS} days")
        return self


class RowCountsByDayCheck(_PostgresCheck):
    """Rows per UTC day over a window, days without rows included as 0 (the seed's "identify missing or
    incorrect data" query), plus distinct locations when the table has ``location_id``."""

    name = "row_counts_by_day"
    params_model = RowCountsByDayParams
    target_kinds = ("table",)
    description = "Rows per day over a date window (gaps show as 0), against an optional minimum."

    def run(self, target: TargetRef, params: RowCountsByDayParams) -> Findings:
        """One row per day of the window: date, count (and distinct location_id when present)."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"counting rows by day in {locator.display}", read_only=True) as conn:
            oid = find_relation(conn, self.connector.cfg, locator, READABLE_RELKINDS)
            column = _time_column(conn, oid, locator, params.column)
            with_locations = has_column(conn, oid, "location_id")
            found = conn.execute(
                _row_counts_query(locator, column, with_locations),
                {"start": params.start_date, "end": params.end_date},
            ).fetchall()
        columns = ["date", "count"] + (["location_count"] if with_locations else [])
        return _row_counts_findings(locator.display, params, columns, found)


def _row_counts_query(locator: TableLocator, column: str, with_locations: bool) -> sql.Composed:
    # Aggregate once over the window (an index range scan on the column), then right-join the calendar
    # so days without rows appear as 0.
    locations = sql.SQL(", count(distinct location_id) as locations") if with_locations else sql.SQL("")
    coalesced = sql.SQL(", coalesce(c.locations, 0)") if with_locations else sql.SQL("")
    return sql.SQL(
        """
        with counts as (
            select ({col} at time zone 'UTC')::date as day, count(*) as n{locations}
            from {table}
            where {col} >= %(start)s::date::timestamp at time zone 'UTC'
              and {col} < %(end)s::date::timestamp at time zone 'UTC'
            group by 1
        )
        select d::date, coalesce(c.n, 0){coalesced}
        from generate_series(%(start)s::date, %(end)s::date - 1, interval '1 day') as d
        left join counts c on c.day = d::date
        order by 1
        """
    ).format(col=sql.Identifier(column), table=qualified(locator), locations=locations, coalesced=coalesced)


def _row_counts_findings(
    display: str, params: RowCountsByDayParams, columns: list[str], found: list[tuple[Any, ...]]
) -> Findings:
    zero_days = [row[0].isoformat() for row in found if row[1] == 0]
    total = sum(int(row[1]) for row in found)
    minimum = params.expected_min_per_day
    short = [row[0].isoformat() for row in found if minimum is not None and row[1] < minimum]
    summary = f"{display}: {total} rows over {len(found)} day(s)"
    if zero_days:
        summary += f"; {len(zero_days)} day(s) without rows: {', '.join(zero_days[:10])}"
        summary += "..." if len(zero_days) > 10 else ""
    if short:
        summary += f"; {len(short)} day(s) below {minimum} rows"
    expectation = (
        f"every day has at least {minimum} rows"
        if minimum is not None
        else "informational (no expected_min_per_day given)"
    )
    return Findings(passed=not short, summary=summary, expectation=expectation, columns=columns, rows=_rows(found))
