"""Snowflake checks: read-only, tagged ``cp-check``, one Findings table each.

Names and parameters follow docs/snowflake.md (the issue-16 contract): pipe_status, pipe_usage_history,
copy_history, task_history, task_status, stream_has_data, warehouse_status, hours_since_last_load,
row_counts_by_day, scd2_overlaps, invalid_records, databases_exist.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from connectors.base import Check, ConnectorError, Findings, TargetRef
from connectors.snowflake.client import fetch, scalar
from connectors.snowflake.config import (
    EnvironmentLocator,
    Ident,
    ObjectLocator,
    Params,
    TableLocator,
    TaskLocator,
    WarehouseLocator,
    WarehouseSize,
    check_window,
    normalize_size,
    parse_locator,
    quote,
)
from connectors.snowflake.connector import FAILED_RUN_STATES, as_utc, jsonable

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

    from connectors.snowflake.connector import SnowflakeConnector

MAX_ROWS = 200


class _SnowflakeCheck(Check["SnowflakeConnector", Any]):
    connector: SnowflakeConnector


def _rows(rows: list[dict[str, Any]], columns: list[str]) -> list[list[Any]]:
    return [[jsonable(r.get(c)) for c in columns] for r in rows]


# ---------------------------------------------------------------------------------------------- pipes


class NoParams(Params):
    """No parameters."""


class PipeStatusCheck(_SnowflakeCheck):
    """SYSTEM$PIPE_STATUS: passes when the pipe is RUNNING without an error."""

    name = "pipe_status"
    params_model = NoParams
    target_kinds = ("pipe",)
    description = "Snowpipe state: executionState, pending files, last ingestion, error."

    def run(self, target: TargetRef, params: NoParams) -> Findings:
        locator: ObjectLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"reading the status of pipe {locator.fqn}") as conn:
            status = self.connector.pipe_status(conn, locator)
        state = str(status.get("executionState") or "UNKNOWN")
        error = self.connector.pipe_error(status)
        passed = state.upper() == "RUNNING" and not error
        summary = f"pipe {locator.fqn} is {state}, {status.get('pendingFileCount', 0)} file(s) pending"
        summary += f", last ingested {status.get('lastIngestedTimestamp') or 'never'}"
        if error:
            summary += f"; error: {error}"
        if state.upper() == "PAUSED":
            summary += "; resume it with the resume-task verb (PIPE_EXECUTION_PAUSED = FALSE, then REFRESH)"
        columns = [
            "pipe",
            "execution_state",
            "pending_file_count",
            "last_ingested_timestamp",
            "last_ingested_file_path",
            "error",
        ]
        row = [locator.fqn, state, status.get("pendingFileCount"), status.get("lastIngestedTimestamp"),
               status.get("lastIngestedFilePath"), error]  # fmt: skip
        return Findings(
            passed=passed, summary=summary, expectation="RUNNING without error", columns=columns, rows=[row]
        )


class HoursParams(Params):
    """``hours``: how far back to look."""

    hours: float = Field(default=24, gt=0, le=14 * 24)


class PipeUsageHistoryCheck(_SnowflakeCheck):
    """PIPE_USAGE_HISTORY over the last hours: files and bytes ingested, credits. Informational."""

    name = "pipe_usage_history"
    params_model = HoursParams
    target_kinds = ("pipe",)
    description = "What a pipe ingested over the last hours (files, bytes, credits)."

    def run(self, target: TargetRef, params: HoursParams) -> Findings:
        locator: ObjectLocator = parse_locator(target, self.target_kinds)
        columns = ["pipe_name", "start_time", "end_time", "files_inserted", "bytes_inserted", "credits_used"]
        with self.connector.session(f"reading the usage history of pipe {locator.fqn}") as conn:
            rows = fetch(
                conn,
                f"SELECT PIPE_NAME, START_TIME, END_TIME, FILES_INSERTED, BYTES_INSERTED, CREDITS_USED FROM TABLE("
                f"{quote(locator.database)}.INFORMATION_SCHEMA.PIPE_USAGE_HISTORY(DATE_RANGE_START => "
                f"DATEADD('second', -%s, CURRENT_TIMESTAMP()), PIPE_NAME => %s)) ORDER BY START_TIME DESC",
                (int(params.hours * 3600), locator.fqn),
            )
        files = sum(int(r.get("files_inserted") or 0) for r in rows)
        summary = f"pipe {locator.fqn}: {files} file(s) ingested in the last {params.hours:g} h"
        if not files:
            summary += "; nothing ingested: check pipe_status and the stage"
        return Findings(
            passed=files > 0,
            summary=summary,
            expectation=f"files ingested in the last {params.hours:g} h",
            columns=columns,
            rows=_rows(rows[:MAX_ROWS], columns),
        )


class CopyHistoryCheck(_SnowflakeCheck):
    """COPY_HISTORY of a table: files loaded (by COPY INTO or a pipe) and their status. Fails on a failed load."""

    name = "copy_history"
    params_model = HoursParams
    target_kinds = ("table",)
    description = "Files loaded into a table over the last hours, with their status and first error."

    def run(self, target: TargetRef, params: HoursParams) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        columns = [
            "file_name",
            "last_load_time",
            "status",
            "row_count",
            "row_parsed",
            "first_error_message",
            "pipe_name",
        ]
        with self.connector.session(f"reading the copy history of {locator.fqn}") as conn:
            rows = copy_history(conn, locator, hours=params.hours)
        failed = [r for r in rows if str(r.get("status") or "").lower() in ("load failed", "partially loaded")]
        summary = f"{locator.fqn}: {len(rows)} file(s) loaded in the last {params.hours:g} h"
        if failed:
            summary += (
                f"; {len(failed)} failed, first: {failed[0].get('file_name')}: {failed[0].get('first_error_message')}"
            )
        return Findings(
            passed=not failed,
            summary=summary,
            expectation="no failed or partial loads",
            columns=columns,
            rows=_rows(rows[:MAX_ROWS], columns),
        )


def copy_history(conn: SnowflakeConnection, locator: TableLocator, *, hours: float) -> list[dict[str, Any]]:
    """COPY_HISTORY rows of the table (load history: COPY INTO and pipes), newest first."""
    return fetch(
        conn,
        f"SELECT FILE_NAME, LAST_LOAD_TIME, STATUS, ROW_COUNT, ROW_PARSED, FIRST_ERROR_MESSAGE, PIPE_NAME FROM TABLE("
        f"{quote(locator.database)}.INFORMATION_SCHEMA.COPY_HISTORY(TABLE_NAME => %s, START_TIME => "
        f"DATEADD('second', -%s, CURRENT_TIMESTAMP()))) ORDER BY LAST_LOAD_TIME DESC",
        (locator.fqn, int(hours * 3600)),
    )


# ---------------------------------------------------------------------------------------------- tasks


class TaskHistoryCheck(_SnowflakeCheck):
    """TASK_HISTORY over the last hours: every task of the graph when the target is its root, else the task.
    Fails when a task's newest run failed."""

    name = "task_history"
    params_model = HoursParams
    target_kinds = ("task",)
    description = "Runs of a task (or of its whole graph, for a root) with state and error."

    def run(self, target: TargetRef, params: HoursParams) -> Findings:
        locator: TaskLocator = parse_locator(target, self.target_kinds)
        columns = ["name", "state", "scheduled_time", "query_start_time", "completed_time", "error_code",
                   "error_message", "run_id", "scheduled_from", "query_id"]  # fmt: skip
        with self.connector.session(f"reading the task history of {locator.fqn}") as conn:
            graph = self.connector.task_graph(conn, locator)
            is_root = graph.root_name == locator.name
            runs = self.connector.task_runs(conn, graph, params.hours, task_name=None if is_root else locator.name)
        newest: dict[str, dict[str, Any]] = {}
        for run in runs:
            newest.setdefault(str(run["name"]).upper(), run)
        failed = {n: r for n, r in newest.items() if str(r["state"]).upper() in FAILED_RUN_STATES}
        scope = f"graph of {locator.fqn}" if is_root else locator.fqn
        summary = f"{scope}: {len(runs)} run(s) in the last {params.hours:g} h"
        if failed:
            name, run = next(iter(failed.items()))
            summary += f"; newest run of {name} {run['state']}: {run.get('error_message') or 'no message'}"
            summary += " (resume-task retries a failed graph with RETRY LAST)"
        elif not runs:
            summary += "; no runs: is the task (or its root) suspended?"
        return Findings(
            passed=not failed,
            summary=summary,
            expectation="the newest run of every task did not fail",
            columns=columns,
            rows=_rows(runs[:MAX_ROWS], columns),
        )


class TaskStatusCheck(_SnowflakeCheck):
    """SHOW TASKS state of the task's graph. Passes when every task is started."""

    name = "task_status"
    params_model = NoParams
    target_kinds = ("task",)
    description = "State (started/suspended) of every task in the graph, with schedule and suspension reason."

    def run(self, target: TargetRef, params: NoParams) -> Findings:
        locator: TaskLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"reading the state of the graph of {locator.fqn}") as conn:
            graph = self.connector.task_graph(conn, locator)
        columns = ["name", "state", "schedule", "predecessors", "warehouse", "last_committed_on",
                   "last_suspended_on", "last_suspended_reason"]  # fmt: skip
        rows = [graph.tasks[n] for n in graph.top_down()]
        suspended = [str(r["name"]) for r in rows if str(r.get("state")).lower() != "started"]
        summary = f"graph of {graph.fqn(graph.root_name)}: {len(rows)} task(s), {len(suspended)} suspended"
        if suspended:
            summary += f" ({', '.join(suspended[:10])})"
        if graph.auto_suspended():
            summary += (
                f"; the root was {graph.root.get('last_suspended_reason')} (resume-task can retry the failed run)"
            )
        return Findings(
            passed=not suspended,
            summary=summary,
            expectation="every task of the graph is started",
            columns=columns,
            rows=_rows(rows, columns),
        )


class StreamHasDataCheck(_SnowflakeCheck):
    """SYSTEM$STREAM_HAS_DATA: changes waiting to be consumed. Informational: passes either way (pending data
    is normal between task runs); the summary says which."""

    name = "stream_has_data"
    params_model = NoParams
    target_kinds = ("stream",)
    description = "Whether a stream holds changes not yet consumed."

    def run(self, target: TargetRef, params: NoParams) -> Findings:
        locator: ObjectLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"reading stream {locator.fqn}") as conn:
            has = bool(scalar(conn, "SELECT SYSTEM$STREAM_HAS_DATA(%s)", (locator.fqn,)))
        summary = f"stream {locator.fqn} " + (
            "holds changes not yet consumed" if has else "is empty (nothing to process)"
        )
        return Findings(
            passed=True,
            summary=summary,
            expectation="informational",
            columns=["stream", "has_data"],
            rows=[[locator.fqn, has]],
        )


# ------------------------------------------------------------------------------------------ warehouse


class WarehouseStatusParams(Params):
    """``expect_size``: fail unless the warehouse has this size (after a scale)."""

    expect_size: WarehouseSize | None = None


class WarehouseStatusCheck(_SnowflakeCheck):
    """SHOW WAREHOUSES: size, state, running and queued queries. Fails when queries queue, or when the size
    is not ``expect_size``."""

    name = "warehouse_status"
    params_model = WarehouseStatusParams
    target_kinds = ("warehouse",)
    description = "Warehouse size, state and load (running and queued queries)."

    def run(self, target: TargetRef, params: WarehouseStatusParams) -> Findings:
        locator: WarehouseLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"reading warehouse {locator.name}") as conn:
            row = self.connector.warehouse(conn, locator.name)
        size = str(row.get("size") or "")
        queued = int(row.get("queued") or 0)
        wrong_size = params.expect_size is not None and normalize_size(size) != params.expect_size
        summary = (
            f"warehouse {locator.name}: {size}, {row.get('state')}, {row.get('running') or 0} running, {queued} queued"
        )
        if wrong_size:
            summary += f"; expected size {params.expect_size}"
        if queued:
            summary += "; queries are queueing: consider scale-warehouse"
        columns = ["name", "state", "type", "size", "running", "queued", "auto_suspend", "auto_resume"]
        expectation = "no queued queries" + (f" and size {params.expect_size}" if params.expect_size else "")
        return Findings(
            passed=not wrong_size and not queued,
            summary=summary,
            expectation=expectation,
            columns=columns,
            rows=_rows([row], columns),
        )


# ---------------------------------------------------------------------------------------------- tables


_NUMBER_TYPES = ("NUMBER", "DECIMAL", "NUMERIC", "INT", "INTEGER", "BIGINT", "SMALLINT")


def day_column(conn: SnowflakeConnection, table: TableLocator, column: str) -> tuple[str, bool]:
    """(the SQL of ``column``'s UTC day, whether it is a date key): a NUMBER column is a ``YYYYMMDD`` date key
    (the seed's ``fact_sales.date_key``), compared with integers; any other is a date or timestamp. The column's
    name is bound with IDENTIFIER; a missing column is a clear error."""
    rows = fetch(
        conn,
        f"SELECT DATA_TYPE FROM {quote(table.database)}.INFORMATION_SCHEMA.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND COLUMN_NAME = %s",
        (table.schema_, table.name, column),
    )
    if not rows:
        raise ConnectorError(f"{table.fqn} has no column {column}: check the catalog target or the column param")
    is_key = str(rows[0]["data_type"]).upper().split("(")[0] in _NUMBER_TYPES
    return ("TO_DATE(TO_VARCHAR(IDENTIFIER(%s)), 'YYYYMMDD')" if is_key else "TO_DATE(IDENTIFIER(%s))"), is_key


def day_bound(day: date, is_key: bool) -> date | int:
    """``day`` as the column compares it: the date, or its ``YYYYMMDD`` key."""
    return day.year * 10_000 + day.month * 100 + day.day if is_key else day


def _time_column(locator: TableLocator, column: str | None) -> str:
    chosen = column or locator.timestamp_column or locator.date_column
    if chosen is None:
        raise ConnectorError(
            f"no timestamp column for {locator.fqn}: pass the column param or set timestamp_column on the target"
        )
    return chosen


class HoursSinceLastLoadParams(Params):
    """``max_hours`` (default: the connection's freshness_max_hours) and ``column`` (default: the target's
    timestamp_column)."""

    max_hours: float | None = Field(default=None, gt=0, le=24 * 366)
    column: Ident | None = None


class HoursSinceLastLoadCheck(_SnowflakeCheck):
    """Hours since ``max(timestamp column)``; passes within ``max_hours`` (the seed: 2 h)."""

    name = "hours_since_last_load"
    params_model = HoursSinceLastLoadParams
    target_kinds = ("table",)
    description = "Hours since the newest row of a table, against the freshness threshold."

    def run(self, target: TargetRef, params: HoursSinceLastLoadParams) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        column = _time_column(locator, params.column)
        limit = params.max_hours or self.connector.cfg.freshness_max_hours
        with self.connector.session(f"checking freshness of {locator.fqn}") as conn:
            rows = fetch(
                conn,
                "SELECT MAX(IDENTIFIER(%s)) AS LAST_LOADED_AT, CURRENT_TIMESTAMP() AS CHECKED_AT FROM IDENTIFIER(%s)",
                (column, locator.fqn),
            )
        last, now = as_utc(rows[0]["last_loaded_at"]), as_utc(rows[0]["checked_at"]) or datetime.now(UTC)
        hours = None if last is None else round((now - last).total_seconds() / 3600, 2)
        passed = hours is not None and hours <= limit
        if hours is None:
            summary = f"{locator.fqn} has no rows: nothing was ever loaded"
        elif passed:
            summary = f"{locator.fqn} is fresh: last load {hours} h ago (threshold {limit:g} h)"
        else:
            summary = (
                f"{locator.fqn} is stale: last load {hours} h ago, threshold {limit:g} h exceeded; check the pipe "
                "(pipe_status) and the tasks loading it (task_history)"
            )
        return Findings(
            passed=passed,
            summary=summary,
            expectation=f"max({column}) at most {limit:g} hours old",
            columns=["table", "column", "last_loaded_at", "checked_at", "hours_since_last_load", "max_hours"],
            rows=[[locator.fqn, column, jsonable(last), jsonable(now), hours, limit]],
        )


class RowCountsByDayParams(Params):
    """UTC days ``[start_date, end_date)`` (``end_date`` exclusive, default tomorrow: today included; at most
    366 days); ``column`` (default: the target's timestamp_column, else its date_column; a NUMBER column is
    read as a ``YYYYMMDD`` date key)."""

    start_date: date
    end_date: date | None = None
    column: Ident | None = None
    expected_min_per_day: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _window(self) -> RowCountsByDayParams:
        check_window(self.start_date, self.end_date or datetime.now(UTC).date() + timedelta(days=1))
        return self


class RowCountsByDayCheck(_SnowflakeCheck):
    """Rows per UTC day over a window, days without rows as 0 (the seed's missing-period query)."""

    name = "row_counts_by_day"
    params_model = RowCountsByDayParams
    target_kinds = ("table",)
    description = "Rows per day over a date window (gaps show as 0), against an optional minimum."

    def run(self, target: TargetRef, params: RowCountsByDayParams) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        column = _time_column(locator, params.column)
        end = params.end_date or datetime.now(UTC).date() + timedelta(days=1)
        with self.connector.session(f"counting rows by day in {locator.fqn}") as conn:
            day_sql, is_key = day_column(conn, locator, column)
            rows = fetch(
                conn,
                f"SELECT {day_sql} AS DAY, COUNT(*) AS N FROM IDENTIFIER(%s) "
                "WHERE IDENTIFIER(%s) >= %s AND IDENTIFIER(%s) < %s GROUP BY 1 ORDER BY 1",
                (column, locator.fqn, column, day_bound(params.start_date, is_key), column, day_bound(end, is_key)),
            )
        counts = {
            r["day"] if isinstance(r["day"], date) else date.fromisoformat(str(r["day"])): int(r["n"]) for r in rows
        }
        days = [params.start_date + timedelta(days=i) for i in range((end - params.start_date).days)]
        found: list[tuple[str, int]] = [(d.isoformat(), counts.get(d, 0)) for d in days]
        zero = [d for d, n in found if n == 0]
        minimum = params.expected_min_per_day
        short = [d for d, n in found if minimum is not None and n < minimum]
        summary = f"{locator.fqn}: {sum(n for _, n in found)} rows over {len(found)} day(s) by {column}"
        if zero:
            summary += f"; {len(zero)} day(s) without rows: {', '.join(zero[:10])}" + ("..." if len(zero) > 10 else "")
        if short:
            summary += f"; {len(short)} day(s) below {minimum} rows"
        return Findings(
            passed=not short,
            summary=summary,
            expectation=f"every day has at least {minimum} rows" if minimum is not None else "informational",
            columns=["date", "count"],
            rows=[list(r) for r in found],
        )


class Scd2Params(Params):
    """``key_column`` (default: the target's key_column) and ``current_column`` (the is-current flag)."""

    key_column: Ident | None = None
    current_column: Ident = "IS_CURRENT"


class Scd2OverlapsCheck(_SnowflakeCheck):
    """The seed's SCD2 query: keys with several versions whose current-flag count is not exactly one."""

    name = "scd2_overlaps"
    params_model = Scd2Params
    target_kinds = ("table",)
    description = "SCD2 keys whose versions do not have exactly one current row."

    def run(self, target: TargetRef, params: Scd2Params) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        key = params.key_column or locator.key_column
        if key is None:
            raise ConnectorError(f"no key column for {locator.fqn}: pass key_column or set it on the target")
        with self.connector.session(f"looking for SCD2 overlaps in {locator.fqn}") as conn:
            rows = fetch(
                conn,
                "SELECT IDENTIFIER(%s) AS KEY, COUNT(*) AS VERSIONS, "
                "SUM(CASE WHEN IDENTIFIER(%s) = TRUE THEN 1 ELSE 0 END) AS CURRENT_ROWS FROM IDENTIFIER(%s) "
                "GROUP BY 1 HAVING COUNT(*) > 1 AND SUM(CASE WHEN IDENTIFIER(%s) = TRUE THEN 1 ELSE 0 END) != 1 "
                f"ORDER BY 1 LIMIT {MAX_ROWS}",
                (key, params.current_column, locator.fqn, params.current_column),
            )
        summary = f"{locator.fqn}: {len(rows)} {key} value(s) without exactly one current version"
        if rows:
            summary += "; fix them, then rerun the loading procedure"
        return Findings(
            passed=not rows,
            summary=summary,
            expectation=f"every {key} with several versions has exactly one {params.current_column} row",
            columns=[key.lower(), "versions", "current_rows"],
            rows=_rows(rows, ["key", "versions", "current_rows"]),
        )


class InvalidRecordsParams(Params):
    """``valid_column`` (default: the target's valid_column, else IS_VALID), ``limit`` rows shown."""

    valid_column: Ident | None = None
    limit: int = Field(default=100, ge=1, le=MAX_ROWS)


class InvalidRecordsCheck(_SnowflakeCheck):
    """The seed's DQ query: rows flagged ``is_valid = FALSE``, newest first. Passes when there are none."""

    name = "invalid_records"
    params_model = InvalidRecordsParams
    target_kinds = ("table",)
    description = "Rows the transformation flagged invalid, newest first."

    def run(self, target: TargetRef, params: InvalidRecordsParams) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        valid = params.valid_column or locator.valid_column or "IS_VALID"
        order = locator.timestamp_column
        with self.connector.session(f"looking for invalid records in {locator.fqn}") as conn:
            total = int(
                scalar(conn, "SELECT COUNT(*) FROM IDENTIFIER(%s) WHERE IDENTIFIER(%s) = FALSE", (locator.fqn, valid))
                or 0
            )
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT * FROM IDENTIFIER(%s) WHERE IDENTIFIER(%s) = FALSE"
                    + (" ORDER BY IDENTIFIER(%s) DESC" if order else "")
                    + f" LIMIT {params.limit}",
                    (locator.fqn, valid, order) if order else (locator.fqn, valid),
                )
                columns = [str(d[0]).lower() for d in cur.description or []]
                rows = [[jsonable(v) for v in row] for row in cur.fetchall()]
        summary = f"{locator.fqn}: {total} invalid record(s) ({valid} = FALSE)"
        if total > len(rows):
            summary += f", newest {len(rows)} shown"
        return Findings(
            passed=total == 0,
            summary=summary,
            expectation=f"no row with {valid} = FALSE",
            columns=columns,
            rows=rows,
        )


# --------------------------------------------------------------------------------------- environments


class DatabasesExistParams(Params):
    """``databases``: the names to look for (default: the target's databases)."""

    databases: list[Ident] | None = Field(default=None, max_length=50)


class DatabasesExistCheck(_SnowflakeCheck):
    """SHOW DATABASES / SHOW SCHEMAS: each database exists, with its schemas. Passes when all exist."""

    name = "databases_exist"
    params_model = DatabasesExistParams
    target_kinds = ("environment",)
    description = "Whether each database of an environment exists, and its schemas."

    def run(self, target: TargetRef, params: DatabasesExistParams) -> Findings:
        locator: EnvironmentLocator = parse_locator(target, self.target_kinds)
        wanted = params.databases or locator.databases
        with self.connector.session("listing databases") as conn:
            existing = {str(r["name"]).upper() for r in fetch(conn, "SHOW DATABASES")}
            rows: list[list[Any]] = []
            for name in wanted:
                schemas: list[str] = []
                if name in existing:
                    found = fetch(conn, f"SHOW SCHEMAS IN DATABASE {quote(name)}")
                    schemas = sorted(
                        str(s["name"]).upper() for s in found if str(s["name"]).upper() != "INFORMATION_SCHEMA"
                    )
                rows.append([name, name in existing, schemas])
        missing = [str(r[0]) for r in rows if not r[1]]
        summary = f"{len(wanted) - len(missing)} of {len(wanted)} database(s) exist"
        if missing:
            summary += f"; missing: {', '.join(missing)}"
        return Findings(
            passed=not missing,
            summary=summary,
            expectation="every database exists",
            columns=["database", "exists", "schemas"],
            rows=rows,
        )


CHECKS: tuple[type[Check[Any, Any]], ...] = (
    PipeStatusCheck,
    PipeUsageHistoryCheck,
    CopyHistoryCheck,
    TaskHistoryCheck,
    TaskStatusCheck,
    StreamHasDataCheck,
    WarehouseStatusCheck,
    HoursSinceLastLoadCheck,
    RowCountsByDayCheck,
    Scd2OverlapsCheck,
    InvalidRecordsCheck,
    DatabasesExistCheck,
)
