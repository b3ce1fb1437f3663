"""Rows of the seed-004 warehouse: the checks its runbooks read, and the ``delete-rows`` verb.

Checks: ``reference_rows`` (a reference table such as core.location, and whether a row is there),
``location_collected`` (a location's raw payloads, facts and mart rows), ``expectation_violations`` (the
seed's data quality expectations, rows that break them) and ``latest_raw_payloads`` (the newest raw API
payloads and the ones the transform cannot parse).

``delete-rows`` deletes what its plan lists: rows of a table target chosen by one selection (the
violations of an expectation, the malformed payloads among the latest, primary key values, or a date
window on the timestamp column). The plan lists the rows by primary key (or counts the window); execute
deletes exactly those keys, in one transaction with its ledger row, so a re-delivered action deletes
nothing more. Identifiers come from the catalog target and from Postgres's own catalog (the primary key);
values are bound parameters; nothing a requester types becomes SQL.
"""

from __future__ import annotations

import json
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import (
    Check,
    ConnectorError,
    ExecutionContext,
    Findings,
    Outcome,
    Plan,
    Risk,
    TargetRef,
    Touch,
    Verb,
    Verification,
)
from connectors.postgres.catalog import READABLE_RELKINDS, column_type, find_relation, primary_key, qualified
from connectors.postgres.checks import MAX_WINDOW_DAYS, jsonable
from connectors.postgres.client import Conn
from connectors.postgres.config import PgIdentifier, TableLocator, parse_locator
from connectors.postgres.ledger import ensure_action_ledger, find_action_record, record_action

if TYPE_CHECKING:
    from connectors.postgres.connector import PostgresConnector

MAX_KEYS = 1000  # a plan lists every row it deletes; more than this is a window, not a list
PAYLOAD_CHARS = 500

# The seed's data quality expectations (src/data_quality.py in seed 004): the column each reads and the
# condition a row breaks it with. Duplicate (location_id, observed_at) rows and unknown location_ids are
# refused by core.weather's primary and foreign keys, so they cannot be found here.
EXPECTATIONS: dict[str, tuple[str, str, str]] = {
    "temperature_range": ("temperature_celsius", "{col} < -50 or {col} > 60", "temperature between -50 and 60 °C"),
    "humidity_range": ("humidity_percent", "{col} < 0 or {col} > 100", "humidity between 0 and 100 %"),
}
Expectation = Literal["temperature_range", "humidity_range"]

# The seed-004 warehouse's layout, for location_collected (fixed names, never input).
RAW_TABLE = sql.Identifier("raw", "weather_observations")
FACT_TABLE = sql.Identifier("core", "weather")
LOCATION_TABLE = sql.Identifier("core", "location")
MART_VIEW = sql.Identifier("mart", "daily_weather_aggregates")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RowsCheck(Check["PostgresConnector", Any]):
    connector: PostgresConnector


def payload_problem(text: str | None) -> str | None:
    """Why the transform could not parse this raw payload text (Open-Meteo's hourly shape), or None if it can."""
    if text is None:
        return "no payload"
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(value, dict):
        return f"not a JSON object but {type(value).__name__}"
    hourly = value.get("hourly")
    if not isinstance(hourly, dict):
        return "no 'hourly' object"
    times = hourly.get("time")
    if not isinstance(times, list) or not times:
        return "no 'hourly.time' list"
    short = sorted(k for k, v in hourly.items() if k != "time" and (not isinstance(v, list) or len(v) != len(times)))
    if short:
        return f"hourly series not as long as hourly.time ({len(times)}): {', '.join(short)} (truncated?)"
    return None


# ------------------------------------------------------------------------------------- reference_rows


class ReferenceRowsParams(_Params):
    """``column``/``value``: the row that must be there (e.g. ``location_name`` = ``San Francisco``);
    without them the check only lists the table. ``limit`` bounds the rows shown."""

    column: PgIdentifier | None = None
    value: str | None = None
    limit: int = Field(default=200, ge=1, le=1000)

    @model_validator(mode="after")
    def _both(self) -> ReferenceRowsParams:
        if (self.column is None) != (self.value is None):
            raise ValueError("column and value go together")
        return self


class ReferenceRowsCheck(_RowsCheck):
    """The rows of a reference table (the seed's "verify seed data" queries) and its row count; passes when
    the named row is there."""

    name = "reference_rows"
    params_model = ReferenceRowsParams
    target_kinds = ("table",)
    description = "Rows and row count of a reference table; whether a named row is there."

    def run(self, target: TargetRef, params: ReferenceRowsParams) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"reading {locator.display}", read_only=True) as conn:
            oid = find_relation(conn, self.connector.cfg, locator, READABLE_RELKINDS)
            total_row = conn.execute(sql.SQL("select count(*) from {}").format(qualified(locator))).fetchone()
            total = int(total_row[0]) if total_row else 0
            cur = conn.execute(
                sql.SQL("select * from {} order by 1 limit %s").format(qualified(locator)), (params.limit,)
            )
            columns = [c.name for c in cur.description or []]
            rows = cur.fetchall()
            found = None
            if params.column is not None:
                if column_type(conn, oid, params.column) is None:
                    raise ConnectorError(f"{locator.display} has no column {params.column!r}")
                hit = conn.execute(
                    sql.SQL("select count(*) from {} where {}::text = %s").format(
                        qualified(locator), sql.Identifier(params.column)
                    ),
                    (params.value,),
                ).fetchone()
                found = int(hit[0]) if hit else 0
        summary = f"{locator.display}: {total} row(s)"
        if found is not None:
            summary += f"; {params.column} = {params.value!r}: " + (f"{found} row(s)" if found else "NOT FOUND")
        return Findings(
            passed=found is None or found > 0,
            summary=summary,
            expectation=(
                f"a row with {params.column} = {params.value!r}" if params.column else "informational (no row named)"
            ),
            columns=columns,
            rows=[[jsonable(v) for v in row] for row in rows],
        )


# --------------------------------------------------------------------------------- location_collected


class LocationCollectedParams(_Params):
    """``location_name``: the location whose data must have reached the raw table, the facts and the mart."""

    location_name: str = Field(min_length=1, max_length=200)


class LocationCollectedCheck(_RowsCheck):
    """The seed's "verify data collection" queries: a location's raw payloads, facts and mart rows (the
    seed-004 warehouse's raw.weather_observations, core.weather with core.location, and
    mart.daily_weather_aggregates). Passes when all three have rows."""

    name = "location_collected"
    params_model = LocationCollectedParams
    target_kinds = ("database",)
    description = "A location's rows in the raw payloads, the weather facts and the daily mart."

    def run(self, target: TargetRef, params: LocationCollectedParams) -> Findings:
        parse_locator(target, self.target_kinds)
        name = params.location_name
        queries = [
            ("raw", "raw.weather_observations", sql.SQL(
                "select count(*), min(ingested_at), max(ingested_at) from {} where location_name = %s"
            ).format(RAW_TABLE)),
            ("facts", "core.weather", sql.SQL(
                "select count(*), min(w.observed_at), max(w.observed_at) from {} w join {} l "
                "on w.location_id = l.location_id where l.location_name = %s"
            ).format(FACT_TABLE, LOCATION_TABLE)),
            ("mart", "mart.daily_weather_aggregates", sql.SQL(
                "select count(*), min(observation_date), max(observation_date) from {} where location_name = %s"
            ).format(MART_VIEW)),
        ]  # fmt: skip
        rows = []
        with self.connector.session(f"looking for {name}'s data", read_only=True) as conn:
            for layer, table, query in queries:
                found = conn.execute(query, (name,)).fetchone()
                assert found is not None  # an aggregate returns one row
                rows.append([layer, table, int(found[0]), jsonable(found[1]), jsonable(found[2])])
        missing = [row[1] for row in rows if row[2] == 0]
        counts = ", ".join(f"{row[0]} {row[2]}" for row in rows)
        summary = f"{name}: {counts}" + (f"; nothing yet in {', '.join(missing)}" if missing else "")
        return Findings(
            passed=not missing,
            summary=summary,
            expectation=f"{name} has raw payloads, facts and mart rows",
            columns=["layer", "table", "rows", "first", "last"],
            rows=rows,
        )


# ----------------------------------------------------------------------------- expectation_violations


class ExpectationViolationsParams(_Params):
    """``expectation``: one of the seed's expectations (default: all of them); ``limit`` rows shown."""

    expectation: Expectation | None = None
    limit: int = Field(default=200, ge=1, le=MAX_KEYS)


def _expectation_where(conn: Conn, oid: int, locator: TableLocator, name: str) -> sql.Composable:
    column, condition, _ = EXPECTATIONS[name]
    if column_type(conn, oid, column) is None:
        raise ConnectorError(f"{locator.display} has no column {column!r}: the {name} expectation does not apply")
    return sql.SQL(condition).format(col=sql.Identifier(column))


def _key_columns(conn: Conn, oid: int, locator: TableLocator) -> list[tuple[str, str]]:
    key = primary_key(conn, oid)
    if not key:
        raise ConnectorError(f"{locator.display} has no primary key: its rows cannot be named one by one")
    return key


def _select_keys(
    conn: Conn, locator: TableLocator, key: list[tuple[str, str]], where: sql.Composable, params: Any, limit: int
) -> list[dict[str, Any]]:
    names = [name for name, _ in key]
    query = sql.SQL("select {} from {} where {} order by {} limit %(limit)s").format(
        sql.SQL(", ").join(map(sql.Identifier, names)),
        qualified(locator),
        where,
        sql.SQL(", ").join(map(sql.Identifier, names)),
    )
    rows = conn.execute(query, {**params, "limit": limit}).fetchall()
    return [{n: jsonable(v) for n, v in zip(names, row, strict=True)} for row in rows]


class ExpectationViolationsCheck(_RowsCheck):
    """Rows breaking the seed's data quality expectations (the seed's "find violations" query), by primary
    key with the offending value. Passes when there are none."""

    name = "expectation_violations"
    params_model = ExpectationViolationsParams
    target_kinds = ("table",)
    description = "Rows breaking the seed's data quality expectations (temperature, humidity ranges)."

    def run(self, target: TargetRef, params: ExpectationViolationsParams) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        names: list[str] = [params.expectation] if params.expectation else list(EXPECTATIONS)
        rows: list[list[Any]] = []
        counts: dict[str, int] = {}
        with self.connector.session(f"looking for violations in {locator.display}", read_only=True) as conn:
            oid = find_relation(conn, self.connector.cfg, locator, READABLE_RELKINDS)
            key = _key_columns(conn, oid, locator)
            for name in names:
                column = EXPECTATIONS[name][0]
                where = _expectation_where(conn, oid, locator, name)
                total = conn.execute(
                    sql.SQL("select count(*) from {} where {}").format(qualified(locator), where)
                ).fetchone()
                counts[name] = int(total[0]) if total else 0
                query = sql.SQL("select {}, {} from {} where {} order by {} limit %s").format(
                    sql.SQL(", ").join(sql.Identifier(n) for n, _ in key),
                    sql.Identifier(column),
                    qualified(locator),
                    where,
                    sql.SQL(", ").join(sql.Identifier(n) for n, _ in key),
                )
                for row in conn.execute(query, (params.limit,)).fetchall():
                    keys = {n: jsonable(v) for (n, _), v in zip(key, row, strict=False)}
                    rows.append([name, keys, jsonable(row[-1])])
        broken = {name: n for name, n in counts.items() if n}
        parts = [f"{n} row(s) break {name} ({EXPECTATIONS[name][2]})" for name, n in broken.items()]
        summary = f"{locator.display}: " + ("; ".join(parts) if broken else f"no rows break {', '.join(names)}")
        return Findings(
            passed=not broken,
            summary=summary,
            expectation="; ".join(EXPECTATIONS[name][2] for name in names),
            columns=["expectation", "key", "value"],
            rows=rows,
        )


# -------------------------------------------------------------------------------- latest_raw_payloads


class LatestRawPayloadsParams(_Params):
    """``limit``: how many of the newest payloads to read (the seed reads 5); ``column``: the payload column."""

    limit: int = Field(default=5, ge=1, le=100)
    column: PgIdentifier = "payload"


def _latest_payloads(
    conn: Conn, locator: TableLocator, oid: int, params: LatestRawPayloadsParams
) -> tuple[list[tuple[str, str]], list[tuple[dict[str, Any], Any, Any, str | None]]]:
    """The newest ``limit`` rows: (key, timestamp, payload, problem) each, newest first."""
    if locator.timestamp_column is None:
        raise ConnectorError(f"{locator.display} has no timestamp_column in the catalog: cannot tell the latest")
    for column in (locator.timestamp_column, params.column):
        if column_type(conn, oid, column) is None:
            raise ConnectorError(f"{locator.display} has no column {column!r}")
    key = _key_columns(conn, oid, locator)
    # As text, whatever the column's type: the transform parses the text, and so does payload_problem.
    query = sql.SQL("select {}, {}, {}::text from {} order by {} desc limit %s").format(
        sql.SQL(", ").join(sql.Identifier(n) for n, _ in key),
        sql.Identifier(locator.timestamp_column),
        sql.Identifier(params.column),
        qualified(locator),
        sql.Identifier(locator.timestamp_column),
    )
    out = []
    for row in conn.execute(query, (params.limit,)).fetchall():
        keys = {n: jsonable(v) for (n, _), v in zip(key, row, strict=False)}
        out.append((keys, row[-2], row[-1], payload_problem(row[-1])))
    return key, out


class LatestRawPayloadsCheck(_RowsCheck):
    """The newest raw payloads (the seed's "check raw payload" query, with the record's key) and whether the
    transform can parse each. Passes when all of them parse."""

    name = "latest_raw_payloads"
    params_model = LatestRawPayloadsParams
    target_kinds = ("table",)
    description = "The newest raw payloads and the ones that fail to parse."

    def run(self, target: TargetRef, params: LatestRawPayloadsParams) -> Findings:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"reading the latest payloads of {locator.display}", read_only=True) as conn:
            oid = find_relation(conn, self.connector.cfg, locator, READABLE_RELKINDS)
            _, found = _latest_payloads(conn, locator, oid, params)
        bad = [keys for keys, _, _, problem in found if problem]
        rows = [[keys, jsonable(at), (payload or "")[:PAYLOAD_CHARS], problem] for keys, at, payload, problem in found]
        summary = f"{locator.display}: {len(found)} latest payload(s), " + (
            f"{len(bad)} fail to parse: {', '.join(json.dumps(k) for k in bad)}" if bad else "all parse"
        )
        return Findings(
            passed=not bad,
            summary=summary,
            expectation="the latest payloads parse (a JSON object with hourly series as long as hourly.time)",
            columns=["key", "ingested_at", "payload", "problem"],
            rows=rows,
        )


# --------------------------------------------------------------------------------------- delete-rows


class DeleteRowsParams(_Params):
    """Exactly one selection: ``expectation`` (the rows breaking one of the seed's expectations),
    ``malformed_in_latest`` (the payloads failing to parse among the newest N, as latest_raw_payloads),
    ``ids`` (primary key values of a single-column key) or ``start_date``/``end_date`` (the UTC days
    ``[start_date, end_date)`` of the target's timestamp column)."""

    expectation: Expectation | None = None
    malformed_in_latest: int | None = Field(default=None, ge=1, le=100)
    ids: list[int | str] | None = Field(default=None, min_length=1, max_length=MAX_KEYS)
    start_date: date | None = None
    end_date: date | None = None

    @model_validator(mode="after")
    def _one_selection(self) -> DeleteRowsParams:
        if (self.start_date is None) != (self.end_date is None):
            raise ValueError("start_date and end_date go together")
        if self.start_date and self.end_date:
            if self.start_date >= self.end_date:
                raise ValueError("start_date must be before end_date (end_date is exclusive)")
            if (self.end_date - self.start_date).days > MAX_WINDOW_DAYS:
                raise ValueError(f"the window may span at most {MAX_WINDOW_DAYS} days")
        chosen = [self.expectation, self.malformed_in_latest, self.ids, self.start_date]
        if sum(x is not None for x in chosen) != 1:
            raise ValueError("choose exactly one of expectation, malformed_in_latest, ids, start_date/end_date")
        return self

    @property
    def selection(self) -> str:
        """The selection in words, for plans and logs."""
        if self.expectation:
            return f"rows breaking {self.expectation} ({EXPECTATIONS[self.expectation][2]})"
        if self.malformed_in_latest:
            return f"payloads failing to parse among the latest {self.malformed_in_latest}"
        if self.ids is not None:
            return f"rows with key {', '.join(map(str, self.ids))}"
        return f"rows from {self.start_date} up to (not including) {self.end_date}"


def _window_where(locator: TableLocator) -> sql.Composable:
    col = sql.Identifier(str(locator.timestamp_column))
    return sql.SQL(
        "{col} >= %(start)s::date::timestamp at time zone 'UTC' and {col} < %(end)s::date::timestamp at time zone 'UTC'"
    ).format(col=col)


def _window_column(conn: Conn, oid: int, locator: TableLocator) -> str:
    if locator.timestamp_column is None or column_type(conn, oid, locator.timestamp_column) is None:
        raise ConnectorError(f"{locator.display} has no usable timestamp_column in the catalog: no date window")
    return locator.timestamp_column


class DeleteRowsVerb(Verb["PostgresConnector", DeleteRowsParams]):
    """Delete the rows a plan lists (by primary key) or counts (a date window), once per action id."""

    name = "delete-rows"
    params_model = DeleteRowsParams
    target_kinds = ("table",)
    idempotent = True
    description = "Delete bad records (expectation violations, malformed payloads, keys) or a date window."
    connector: PostgresConnector

    def plan(self, target: TargetRef, params: DeleteRowsParams) -> Plan:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"planning a delete in {locator.display}", read_only=True) as conn:
            oid = find_relation(conn, self.connector.cfg, locator, ("r", "p"))
            key = _key_columns(conn, oid, locator) if params.start_date is None else []
            keys, by_day = _planned(conn, locator, oid, key, params)
        warnings = ["deleted rows cannot be restored by the control plane; a rerun of the flow reloads them"]
        if by_day is not None:
            count = sum(by_day.values())
            details: dict[str, Any] = {
                "selection": "window",
                "column": locator.timestamp_column,
                "start_date": str(params.start_date),
                "end_date": str(params.end_date),
                "rows_by_day": by_day,
            }
            risk = Risk.HIGH
        else:
            count = len(keys)
            details = {"selection": params.selection, "key_columns": [n for n, _ in key], "keys": keys}
            risk = Risk.MEDIUM
            if params.ids is not None and len(keys) < len(params.ids):
                warnings.append(f"{len(params.ids) - len(keys)} of the given ids are not in {locator.display}")
        summary = f"delete {count} row(s) of {locator.display}: {params.selection}"
        return Plan(
            summary=summary if count else f"nothing to delete in {locator.display}: no {params.selection}",
            touches=[Touch(kind="table", name=locator.display, detail={"rows": count})],
            counts={"rows": count},
            locks=["ROW EXCLUSIVE lock on the table; the deleted rows are locked until commit"],
            warnings=warnings,
            risk=risk,
            details=details,
        )

    def execute(self, target: TargetRef, params: DeleteRowsParams, ctx: ExecutionContext) -> Outcome:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        config = self.connector.cfg
        with self.connector.session(f"deleting rows of {locator.display}") as conn:
            done = find_action_record(conn, config, ctx.action_id)
            if done is not None:
                ctx.log(f"this action already deleted {done['deleted']} row(s) at {done['finished_at']}")
                return _delete_outcome(locator, {**done, "action_id": ctx.action_id}, already_done=True)
            oid = find_relation(conn, config, locator, ("r", "p"))
            ensure_action_ledger(conn, config)
            with conn.transaction():
                # Two deliveries of one action serialize here; the second finds the first's ledger row.
                conn.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"delete-rows:{ctx.action_id}",))
                again = find_action_record(conn, config, ctx.action_id)
                if again is not None:
                    return _delete_outcome(locator, {**again, "action_id": ctx.action_id}, already_done=True)
                details = _delete(conn, locator, oid, params, ctx)
                record_action(conn, config, action_id=ctx.action_id, verb=self.name, target=target.key, details=details)
        ctx.log(f"deleted {details['deleted']} row(s) of {locator.display} (planned {details['planned']})")
        return _delete_outcome(locator, {**details, "action_id": ctx.action_id}, already_done=False)

    def verify(self, target: TargetRef, params: DeleteRowsParams, outcome: Outcome) -> Verification:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        action_id = str(outcome.details.get("action_id", ""))
        with self.connector.session(f"verifying the delete in {locator.display}", read_only=True) as conn:
            done = find_action_record(conn, self.connector.cfg, action_id)
            oid = find_relation(conn, self.connector.cfg, locator, ("r", "p"))
            if outcome.details.get("selection") == "window":
                _window_column(conn, oid, locator)
                left_row = conn.execute(
                    sql.SQL("select count(*) from {} where {}").format(qualified(locator), _window_where(locator)),
                    {"start": params.start_date, "end": params.end_date},
                ).fetchone()
                left = int(left_row[0]) if left_row else 0
            else:
                key = _key_columns(conn, oid, locator)
                left = _count_keys(conn, locator, key, list(outcome.details.get("keys", [])))
        if done is None:
            return Verification(ok=False, summary=f"no ledger row for action {action_id}: the delete did not commit")
        if left:
            return Verification(
                ok=False, summary=f"{left} of the deleted rows are in {locator.display} again", details={"left": left}
            )
        return Verification(
            ok=True, summary=f"{done['deleted']} row(s) of {locator.display} deleted; none is left", details=done
        )


def _planned(
    conn: Conn, locator: TableLocator, oid: int, key: list[tuple[str, str]], params: DeleteRowsParams
) -> tuple[list[dict[str, Any]], dict[str, int] | None]:
    """The keys the delete names, or (for a window) the rows per day it covers."""
    if params.start_date is not None:
        column = sql.Identifier(_window_column(conn, oid, locator))
        rows = conn.execute(
            sql.SQL("select ({c} at time zone 'UTC')::date, count(*) from {t} where {w} group by 1 order by 1").format(
                c=column, t=qualified(locator), w=_window_where(locator)
            ),
            {"start": params.start_date, "end": params.end_date},
        ).fetchall()
        return [], {day.isoformat(): int(n) for day, n in rows}
    if params.malformed_in_latest is not None:
        latest = LatestRawPayloadsParams(limit=params.malformed_in_latest)
        _, found = _latest_payloads(conn, locator, oid, latest)
        return [keys for keys, _, _, problem in found if problem], None
    if params.ids is not None:
        if len(key) != 1:
            raise ConnectorError(f"{locator.display} has a composite primary key: ids cannot name its rows")
        by_id = sql.SQL("{} = any(%(ids)s::text[]::{}[])").format(sql.Identifier(key[0][0]), sql.SQL(key[0][1]))
        return _select_keys(conn, locator, key, by_id, {"ids": [str(i) for i in params.ids]}, MAX_KEYS), None
    assert params.expectation is not None
    where = _expectation_where(conn, oid, locator, params.expectation)
    keys = _select_keys(conn, locator, key, where, {}, MAX_KEYS + 1)
    if len(keys) > MAX_KEYS:
        raise ConnectorError(
            f"more than {MAX_KEYS} rows of {locator.display} break {params.expectation}: that is not a few bad "
            "records; check the expectation, or reprocess the window (delete a date range)"
        )
    return keys, None


def _keys_source(key: list[tuple[str, str]]) -> sql.Composable:
    """``jsonb_to_recordset(%(keys)s) as k(col type, ...)``: the plan's keys as typed rows to join on."""
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in key)
    return sql.SQL("jsonb_to_recordset(%(keys)s) as k({})").format(columns)


def _key_match(key: list[tuple[str, str]]) -> sql.Composable:
    return sql.SQL(" and ").join(sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(n)) for n, _ in key)


def _count_keys(conn: Conn, locator: TableLocator, key: list[tuple[str, str]], keys: list[dict[str, Any]]) -> int:
    if not keys:
        return 0
    row = conn.execute(
        sql.SQL("select count(*) from {} t join {} on {}").format(
            qualified(locator), _keys_source(key), _key_match(key)
        ),
        {"keys": Jsonb(keys)},
    ).fetchone()
    return int(row[0]) if row else 0


def _delete(
    conn: Conn, locator: TableLocator, oid: int, params: DeleteRowsParams, ctx: ExecutionContext
) -> dict[str, Any]:
    """Delete (inside the caller's transaction) what the approved plan lists; returns the ledger details."""
    plan = ctx.plan.details if ctx.plan is not None else None
    if params.start_date is not None:
        _window_column(conn, oid, locator)
        planned = sum((plan or {}).get("rows_by_day", {}).values()) if plan else None
        cur = conn.execute(
            sql.SQL("delete from {} where {}").format(qualified(locator), _window_where(locator)),
            {"start": params.start_date, "end": params.end_date},
        )
        deleted = cur.rowcount
        if planned is not None and deleted != planned:
            ctx.log(f"the window held {deleted} row(s) at execution, {planned} when planned")
        return {"selection": "window", "deleted": deleted, "planned": planned if planned is not None else deleted}
    key = _key_columns(conn, oid, locator)
    if plan is not None and "keys" in plan:
        keys = list(plan["keys"])
    else:
        keys, _ = _planned(conn, locator, oid, key, params)
    where = _key_match(key)
    if params.expectation:
        # A row corrected since the plan no longer breaks the expectation: it is kept.
        where = sql.SQL("{} and ({})").format(where, _expectation_where(conn, oid, locator, params.expectation))
    gone: list[dict[str, Any]] = []
    if keys:
        names = [n for n, _ in key]
        cur = conn.execute(
            sql.SQL("delete from {} t using {} where {} returning {}").format(
                qualified(locator),
                _keys_source(key),
                where,
                sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(n)) for n in names),
            ),
            {"keys": Jsonb(keys)},
        )
        gone = [{n: jsonable(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]
    # ``keys`` are the rows deleted (what verify looks for), not the rows planned
    return {"selection": params.selection, "deleted": len(gone), "planned": len(keys), "keys": gone}


def _delete_outcome(locator: TableLocator, details: dict[str, Any], *, already_done: bool) -> Outcome:
    verb = "already deleted" if already_done else "deleted"
    return Outcome(
        summary=f"{verb} {details['deleted']} row(s) of {locator.display} (planned {details['planned']})",
        details=details,
        already_done=already_done,
    )
