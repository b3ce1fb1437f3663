"""Read-only diagnostics of the BigQuery connector, modelled on the seed-002 runbook's queries.

Checks only read (SELECT and metadata); values reach SQL as query parameters, identifiers from the catalog
backquoted. Metadata views (INFORMATION_SCHEMA.PARTITIONS, MATERIALIZED_VIEWS, JOBS) are used where they
answer without scanning the table: they cost nothing on demand. Rows are JSON-ready.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from connectors.base import Check, ConnectorError, Findings, TargetRef
from connectors.bigquery.client import Session, param
from connectors.bigquery.config import (
    ColumnName,
    DatasetLocator,
    MatviewLocator,
    TableLocator,
    check_column,
    column,
    parse_locator,
    table_ref,
)

if TYPE_CHECKING:
    from connectors.bigquery.connector import BigQueryConnector

MAX_WINDOW_DAYS = 366
DEFAULT_LIMIT = 100


def jsonable(value: Any) -> Any:
    """A BigQuery value as JSON-ready data."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _hours_since(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else (now - moment).total_seconds() / 3600


def _parent_table(value: str) -> str:
    parts = value.split(".")
    if len(parts) != 2:
        raise ValueError("must be 'dataset.table'")
    table_ref("p", *parts)  # validates both names
    return value


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _BigQueryCheck(Check["BigQueryConnector", Any]):
    connector: BigQueryConnector

    def ref(self, dataset: str, name: str) -> str:
        return table_ref(self.connector.cfg.project, dataset, name)

    def key_column(self, locator: TableLocator, given: str | None, what: str) -> str:
        chosen = given or locator.key_column
        if chosen is None:
            raise ConnectorError(f"no column for {what} on {locator.display}: pass `column` or set key_column")
        return chosen


# -------------------------------------------------------------------------------------------- freshness


class FreshnessParams(_Params):
    """``sla_hours``: the last load must be at most this old (default: the connection's ``freshness_sla_hours``;
    the name the Postgres check and the catalog's freshness board use); ``column``: the load-time column (a
    table's default is its ``timestamp_column``; a dataset's is ``_loaded_at``, in every table that has it)."""

    sla_hours: float | None = Field(default=None, gt=0, le=24 * 366)
    column: Annotated[str | None, AfterValidator(lambda v: v if v is None else check_column(v))] = None


class FreshnessCheck(_BigQueryCheck):
    """Hours since the last load of a table (or of each table of a dataset), against ``sla_hours``: the
    runbook's ``MAX(_loaded_at)`` per table."""

    name = "freshness"
    params_model = FreshnessParams
    target_kinds = ("table", "dataset")
    description = "Hours since the last load per table (MAX of the load-time column) against an SLA."

    def run(self, target: TargetRef, params: FreshnessParams) -> Findings:
        locator = parse_locator(target, self.target_kinds)
        sla_hours = params.sla_hours or self.connector.cfg.freshness_sla_hours
        session = self.connector.session()
        if isinstance(locator, DatasetLocator):
            wanted = params.column or "_loaded_at"
            tables = session.call(
                f"listing the tables of {locator.dataset}",
                lambda: [
                    session.client.get_table(item.reference, retry=session.retry, timeout=session.config.timeout_s)
                    for item in session.client.list_tables(
                        locator.dataset, retry=session.retry, timeout=session.config.timeout_s
                    )
                    if item.table_type == "TABLE"
                ],
            )
            pairs = [(t.table_id, wanted) for t in tables if any(f.name == wanted for f in t.schema)]
            dataset = locator.dataset
        else:
            chosen = params.column or locator.timestamp_column
            if chosen is None:
                raise ConnectorError(
                    f"no load-time column for {locator.display}: pass `column` or set timestamp_column"
                )
            pairs, dataset = [(locator.name, chosen)], locator.dataset
        if not pairs:
            raise ConnectorError(f"no table of {dataset} has a {params.column or '_loaded_at'} column")
        selects = " UNION ALL ".join(
            f"SELECT '{name}' AS table_name, MAX({column(col)}) AS last_load FROM {self.ref(dataset, name)}"
            for name, col in pairs
        )  # the table names are validated identifiers (BigQuery names cannot hold a quote)
        found = dict(session.rows(selects, doing=f"reading the last loads in {dataset}"))
        now = datetime.now(UTC)
        rows = []
        for name, col in pairs:
            last = found.get(name)
            hours = _hours_since(last, now)
            fresh = hours is not None and hours <= sla_hours
            rows.append([f"{dataset}.{name}", col, jsonable(last), None if hours is None else round(hours, 2), fresh])
        late = [row[0] for row in rows if not row[4]]
        summary = (
            f"{len(late)} of {len(rows)} table(s) not loaded within {sla_hours:g} h: {', '.join(late)}"
            if late
            else f"every table loaded within {sla_hours:g} h"
        )
        return Findings(
            passed=not late, summary=summary, expectation=f"last load within {sla_hours:g} hours",
            columns=["table", "column", "last_loaded_at", "hours_since_last_load", "fresh"], rows=rows,
        )  # fmt: skip


# ------------------------------------------------------------------------------------------------ nulls


class ColumnParams(_Params):
    """``column`` (default: the target's ``key_column``) and ``limit`` (rows shown)."""

    column: ColumnName | None = None
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=1000)


class NullsCheck(_BigQueryCheck):
    """Rows whose key is NULL (the runbook's ``WHERE package_id IS NULL LIMIT 100``), with their count."""

    name = "nulls"
    params_model = ColumnParams
    target_kinds = ("table",)
    description = "Rows with a NULL key column: how many, and the first of them."

    def run(self, target: TargetRef, params: ColumnParams) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        key = self.key_column(locator, params.column, "nulls")
        session = self.connector.session()
        table = self.ref(locator.dataset, locator.name)
        doing = f"finding NULL {key} in {locator.display}"
        total, nulls = session.rows(f"SELECT COUNT(*), COUNTIF({column(key)} IS NULL) FROM {table}", doing=doing)[0]
        result = session.result(
            f"SELECT * FROM {table} WHERE {column(key)} IS NULL LIMIT @limit",
            [param("limit", params.limit)],
            doing=doing,
        )
        columns = [field.name for field in result.schema]
        rows = [[jsonable(value) for value in row] for row in result]
        return Findings(
            passed=nulls == 0, summary=f"{nulls} of {total} row(s) of {locator.display} have NULL {key}",
            expectation=f"no NULL {key}", columns=columns, rows=rows,
        )  # fmt: skip


class DuplicatesCheck(_BigQueryCheck):
    """Keys present more than once (the runbook's ``GROUP BY package_id HAVING cnt > 1``); NULL keys are the
    nulls check's business and are left out here."""

    name = "duplicates"
    params_model = ColumnParams
    target_kinds = ("table",)
    description = "Key values present more than once, with their counts."

    def run(self, target: TargetRef, params: ColumnParams) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        key = self.key_column(locator, params.column, "duplicates")
        rows = self.connector.session().rows(
            f"SELECT {column(key)}, COUNT(*) AS cnt FROM {self.ref(locator.dataset, locator.name)} "
            f"WHERE {column(key)} IS NOT NULL GROUP BY 1 HAVING cnt > 1 ORDER BY cnt DESC, 1 LIMIT @limit",
            [param("limit", params.limit)],
            doing=f"finding duplicate {key} in {locator.display}",
        )
        extra = sum(int(count) - 1 for _, count in rows)
        return Findings(
            passed=not rows, summary=f"{len(rows)} duplicated {key} value(s) in {locator.display} ({extra} extra rows)",
            expectation=f"every {key} once", columns=[key, "count"], rows=[[jsonable(v) for v in r] for r in rows],
        )  # fmt: skip


class OrphansParams(_Params):
    """``column``: the foreign key of the target (default its ``key_column``); ``parent_table``
    (``dataset.table``, same project) and ``parent_key``: what it must reference."""

    parent_table: Annotated[str, AfterValidator(_parent_table)]
    parent_key: ColumnName
    column: ColumnName | None = None
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=1000)


class OrphansCheck(_BigQueryCheck):
    """Rows whose foreign key has no parent row (the runbook's ``LEFT JOIN ... WHERE c.customer_id IS NULL``)."""

    name = "orphans"
    params_model = OrphansParams
    target_kinds = ("table",)
    description = "Rows whose foreign key matches no row of the parent table (referential integrity)."

    def run(self, target: TargetRef, params: OrphansParams) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        fk = self.key_column(locator, params.column, "orphans")
        parent_dataset, parent_name = params.parent_table.split(".")
        session = self.connector.session()
        shown = [key for key in dict.fromkeys([locator.key_column, fk]) if key]
        select = ", ".join(f"c.{column(key)}" for key in shown)
        doing = f"finding orphans of {locator.display}.{fk} against {params.parent_table}.{params.parent_key}"
        base = (
            f"FROM {self.ref(locator.dataset, locator.name)} c LEFT JOIN {self.ref(parent_dataset, parent_name)} p "
            f"ON c.{column(fk)} = p.{column(params.parent_key)} "
            f"WHERE p.{column(params.parent_key)} IS NULL AND c.{column(fk)} IS NOT NULL"
        )
        count = session.rows(f"SELECT COUNT(*) {base}", doing=doing)[0][0]
        rows = session.rows(
            f"SELECT {select} {base} ORDER BY 1 LIMIT @limit", [param("limit", params.limit)], doing=doing
        )
        return Findings(
            passed=count == 0,
            summary=f"{count} row(s) of {locator.display} reference a {fk} missing from {params.parent_table}",
            expectation=f"every {fk} present in {params.parent_table}.{params.parent_key}",
            columns=shown, rows=[[jsonable(v) for v in r] for r in rows],
        )  # fmt: skip


# ------------------------------------------------------------------------------- partition_row_counts


class PartitionRowCountsParams(_Params):
    """``start_date`` to ``end_date`` (inclusive, default ``start_date``), at most 366 days."""

    start_date: date
    end_date: date | None = None

    @model_validator(mode="after")
    def _window(self) -> PartitionRowCountsParams:
        end = self.end_date or self.start_date
        if end < self.start_date:
            raise ValueError("end_date is before start_date")
        if (end - self.start_date).days >= MAX_WINDOW_DAYS:
            raise ValueError(f"the window is over {MAX_WINDOW_DAYS} days")
        return self


def partition_rows(session: Session, project: str, locator: TableLocator, start: date, end: date) -> dict[date, int]:
    """Rows per day partition between ``start`` and ``end`` (0 for an empty or missing one), from
    INFORMATION_SCHEMA.PARTITIONS: metadata, no table scan."""
    found = session.rows(
        f"SELECT partition_id, total_rows FROM `{project}.{locator.dataset}.INFORMATION_SCHEMA.PARTITIONS` "
        "WHERE table_name = @table AND partition_id BETWEEN @start AND @end",
        [param("table", locator.name), param("start", f"{start:%Y%m%d}"), param("end", f"{end:%Y%m%d}")],
        doing=f"reading the partitions of {locator.display}",
    )
    by_id = {str(pid): int(rows or 0) for pid, rows in found}
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    return {day: by_id.get(f"{day:%Y%m%d}", 0) for day in days}


class PartitionRowCountsCheck(_BigQueryCheck):
    """Rows per date partition over a range; empty days fail (a gap a backfill fills)."""

    name = "partition_row_counts"
    params_model = PartitionRowCountsParams
    target_kinds = ("table",)
    description = "Rows per day partition over a date range; a day without rows fails the check."

    def run(self, target: TargetRef, params: PartitionRowCountsParams) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        end = params.end_date or params.start_date
        counts = partition_rows(self.connector.session(), self.connector.cfg.project, locator, params.start_date, end)
        empty = [day.isoformat() for day, rows in counts.items() if rows == 0]
        summary = (
            f"{len(empty)} of {len(counts)} day(s) of {locator.display} have no rows: {', '.join(empty)}"
            if empty
            else f"all {len(counts)} day(s) of {locator.display} have rows ({sum(counts.values())} in all)"
        )
        return Findings(
            passed=not empty, summary=summary, expectation="every day's partition has rows",
            columns=["partition", "rows"], rows=[[day.isoformat(), rows] for day, rows in counts.items()],
        )  # fmt: skip


# ---------------------------------------------------------------------------------- matview_staleness


class MatviewStalenessParams(_Params):
    """``max_hours`` since the last refresh (default 24)."""

    max_hours: float = Field(default=24.0, gt=0)


def last_refresh(session: Session, project: str, locator: MatviewLocator) -> tuple[bool, datetime | None]:
    """(the view exists, its last refresh time or None when never refreshed)."""
    found = session.rows(
        f"SELECT last_refresh_time FROM `{project}.{locator.dataset}.INFORMATION_SCHEMA.MATERIALIZED_VIEWS` "
        "WHERE table_name = @name",
        [param("name", locator.name)],
        doing=f"reading the last refresh of {locator.display}",
    )
    return (bool(found), found[0][0] if found else None)


class MatviewStalenessCheck(_BigQueryCheck):
    """When the materialized view was last refreshed, against ``max_hours``; never refreshed is stale."""

    name = "matview_staleness"
    params_model = MatviewStalenessParams
    target_kinds = ("matview",)
    description = "Hours since a materialized view's last refresh against max_hours."

    def run(self, target: TargetRef, params: MatviewStalenessParams) -> Findings:
        locator: MatviewLocator = parse_locator(target, self.target_kinds)
        exists, refreshed = last_refresh(self.connector.session(), self.connector.cfg.project, locator)
        if not exists:
            raise ConnectorError(f"{locator.display} is not a materialized view of {self.connector.cfg.project}")
        hours = _hours_since(refreshed, datetime.now(UTC))
        fresh = hours is not None and hours <= params.max_hours
        shown = None if hours is None else round(hours, 2)
        when = "never refreshed" if refreshed is None else f"last refreshed {shown} h ago"
        return Findings(
            passed=fresh, summary=f"{locator.display} {when}", expectation=f"refreshed within {params.max_hours:g} h",
            columns=["view", "last_refresh_time", "hours_since"], rows=[[locator.display, jsonable(refreshed), shown]],
        )  # fmt: skip


# ------------------------------------------------------------------------------------------- slot_usage


class SlotUsageParams(_Params):
    """``hours`` of job history to read; ``max_average_slots``: fail above this average."""

    hours: int = Field(default=24, ge=1, le=24 * 30)
    max_average_slots: float | None = Field(default=None, gt=0)


class SlotUsageCheck(_BigQueryCheck):
    """Jobs and slot use over the last hours from ``region-<location>.INFORMATION_SCHEMA.JOBS``. Where the
    view gives no ``total_slot_ms`` (an emulator), the check says so and counts the jobs only."""

    name = "slot_usage"
    params_model = SlotUsageParams
    target_kinds = ("project",)
    description = "Jobs and average slots used over the last hours (INFORMATION_SCHEMA.JOBS)."

    def run(self, target: TargetRef, params: SlotUsageParams) -> Findings:
        parse_locator(target, self.target_kinds)
        config = self.connector.cfg
        since = datetime.now(UTC) - timedelta(hours=params.hours)
        result = self.connector.session().result(
            f"SELECT * FROM {config.jobs_view} WHERE creation_time >= @since",
            [param("since", since)],
            doing=f"reading the jobs of the last {params.hours} h",
        )
        names = [field.name for field in result.schema]
        jobs = [dict(zip(names, row, strict=True)) for row in result]
        groups: dict[tuple[str, str], list[int]] = {}
        for job in jobs:
            key = (str(job.get("job_type") or "?"), str(job.get("statement_type") or "?"))
            totals = groups.setdefault(key, [0, 0, 0])
            totals[0] += 1
            totals[1] += int(job.get("total_slot_ms") or 0)
            totals[2] += int(job.get("total_bytes_billed") or 0)
        rows = [[kind, statement, *totals] for (kind, statement), totals in sorted(groups.items())]
        columns = ["job_type", "statement_type", "jobs", "total_slot_ms", "total_bytes_billed"]
        if "total_slot_ms" not in names:
            return Findings(
                passed=True,
                summary=f"{len(jobs)} job(s) in {params.hours} h; this BigQuery gives no slot figures "
                "(INFORMATION_SCHEMA.JOBS has no total_slot_ms), so slot use cannot be judged",
                expectation="slot figures available", columns=columns, rows=rows,
            )  # fmt: skip
        average = sum(totals[1] for totals in groups.values()) / (params.hours * 3600 * 1000)
        passed = params.max_average_slots is None or average <= params.max_average_slots
        return Findings(
            passed=passed, summary=f"{len(jobs)} job(s) in {params.hours} h, {average:.2f} slots on average",
            expectation=f"at most {params.max_average_slots:g} slots on average" if params.max_average_slots else "",
            columns=columns, rows=rows,
        )  # fmt: skip
