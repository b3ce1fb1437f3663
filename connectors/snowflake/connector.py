"""The Snowflake connector: tasks and task graphs, pipes, streams, tables, warehouses and environments.

Reads shared by checks, verbs and the watch live here (the task graph from SHOW TASKS, runs from
TASK_HISTORY, SYSTEM$PIPE_STATUS, SHOW WAREHOUSES), so each is written once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from snowflake.connector import SnowflakeConnection

from connectors.base import Connector, ConnectorError, HealthResult, TargetRef, WatchAlert
from connectors.snowflake.client import CHECK_TAG, fetch, scalar, session
from connectors.snowflake.config import (
    LOCATOR_MODELS,
    ObjectLocator,
    PipeLocator,
    SnowflakeConfig,
    TaskLocator,
    check_identifier,
    quote,
)

FAILED_RUN_STATES = {"FAILED", "CANCELLED"}
DONE_RUN_STATES = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELLED", "FAILED_AND_AUTO_SUSPENDED"}
AUTO_SUSPENDED = "FAILED_AND_AUTO_SUSPENDED"
# TASK_HISTORY answers at most the last 7 days (ACCOUNT_USAGE goes further, hours late).
TASK_HISTORY_MAX_HOURS = 7 * 24


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def as_utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _name_of(qualified: str) -> str:
    """The object name of ``"DB"."S"."N"`` or ``DB.S.N`` (predecessors in SHOW TASKS), upper-cased."""
    return qualified.replace('"', "").split(".")[-1].upper()


@dataclass(frozen=True)
class TaskGraph:
    """A task graph read from SHOW TASKS: the root's row, every task's row by name, children by name."""

    schema_fqn: str
    root: dict[str, Any]
    tasks: dict[str, dict[str, Any]]
    children: dict[str, list[str]]

    @property
    def root_name(self) -> str:
        return str(self.root["name"]).upper()

    def fqn(self, name: str) -> str:
        return f"{self.schema_fqn}.{name}"

    def top_down(self) -> list[str]:
        """Every task, the root first and each task after all its predecessors (SUSPEND order)."""
        order: list[str] = []
        indegree = {n: len(_predecessors(t)) for n, t in self.tasks.items()}
        ready = [self.root_name]
        while ready:
            name = ready.pop(0)
            order.append(name)
            for child in sorted(self.children.get(name, [])):
                indegree[child] -= 1
                if indegree[child] <= 0:
                    ready.append(child)
        return order

    def descendants(self, names: set[str]) -> set[str]:
        found, todo = set(names), list(names)
        while todo:
            for child in self.children.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def state(self, name: str) -> str:
        return str(self.tasks[name].get("state") or "").lower()

    def auto_suspended(self) -> bool:
        reason = str(self.root.get("last_suspended_reason") or "").upper()
        return self.state(self.root_name) == "suspended" and reason == AUTO_SUSPENDED


def _predecessors(task: Mapping[str, Any]) -> list[str]:
    raw = task.get("predecessors") or "[]"
    try:
        names = json.loads(raw) if isinstance(raw, str) else list(raw)
    except ValueError:
        names = [p for p in str(raw).strip("[]").split(",") if p.strip()]
    return [_name_of(str(p)) for p in names]


class SnowflakeConnector(Connector):
    """Snowflake through ``snowflake-connector-python``. Config :class:`SnowflakeConfig`, secret ``password``.

    Target kinds: ``task``, ``pipe``, ``stream``, ``table``, ``procedure`` (``{"database", "schema",
    "name"}``, tasks optionally with their ``root``; tables with the columns, stage or procedure their checks
    and backfill use), ``warehouse`` (``{"name"}``) and ``environment`` (``{"databases": [...]}``).
    """

    kind = "snowflake"
    config_model = SnowflakeConfig
    secret_names = ("password",)
    target_kinds = tuple(LOCATOR_MODELS)
    locator_models = LOCATOR_MODELS

    def __init__(self, config: BaseModel | Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        if not isinstance(config, SnowflakeConfig):
            raw = config.model_dump() if isinstance(config, BaseModel) else dict(config)
            config = SnowflakeConfig.model_validate(raw)
        super().__init__(config, secrets)
        self.cfg: SnowflakeConfig = config

    def session(self, doing: str, *, tag: str = CHECK_TAG) -> AbstractContextManager[SnowflakeConnection]:
        """A session with the connection's timeouts whose statements carry ``QUERY_TAG = tag``."""
        return session(self.cfg, self.secrets.get("password"), doing, tag=tag)

    def health(self) -> HealthResult:
        """``SELECT CURRENT_VERSION()`` with timing; a failure is reported (ok=False), not raised."""
        started = time.perf_counter()
        try:
            with self.session("checking health") as conn:
                version = scalar(conn, "SELECT CURRENT_VERSION()")
        except ConnectorError as exc:
            return HealthResult(ok=False, summary=exc.message)
        latency = round((time.perf_counter() - started) * 1000, 1)
        return HealthResult(ok=True, summary=f"{self.cfg.where}: Snowflake {version}", latency_ms=latency)

    # ------------------------------------------------------------------------------------------ tasks

    def task_graph(self, conn: SnowflakeConnection, locator: TaskLocator) -> TaskGraph:
        """The graph ``locator`` belongs to (all tasks of a graph live in one schema), from SHOW TASKS."""
        rows = fetch(conn, f"SHOW TASKS IN SCHEMA {quote(locator.schema_fqn)}")
        tasks = {str(r["name"]).upper(): r for r in rows}
        if locator.name not in tasks:
            raise ConnectorError(
                f"task {locator.fqn} does not exist (or the connection's role cannot see it): check the catalog "
                "target's locator"
            )
        root_name = locator.root_or_self.name
        # the catalog may name a child without its root: walk up the predecessors to the root
        seen: set[str] = set()
        while _predecessors(tasks.get(root_name, {})) and root_name not in seen:
            seen.add(root_name)
            root_name = _predecessors(tasks[root_name])[0]
        if root_name not in tasks:
            raise ConnectorError(f"the root task {root_name} of {locator.fqn} is not in {locator.schema_fqn}")
        children: dict[str, list[str]] = {}
        for name, row in tasks.items():
            for parent in _predecessors(row):
                children.setdefault(parent, []).append(name)
        graph_names = TaskGraph(locator.schema_fqn, tasks[root_name], tasks, children).descendants({root_name})
        in_graph = {n: tasks[n] for n in graph_names}
        kids = {p: [c for c in cs if c in graph_names] for p, cs in children.items() if p in graph_names}
        return TaskGraph(locator.schema_fqn, tasks[root_name], in_graph, kids)

    def task_runs(
        self, conn: SnowflakeConnection, graph: TaskGraph, hours: float, *, task_name: str | None = None
    ) -> list[dict[str, Any]]:
        """TASK_HISTORY rows of the graph (or of one task) scheduled in the last ``hours`` (at most 7 days),
        newest first; rows of tasks outside the graph are dropped."""
        hours = min(hours, TASK_HISTORY_MAX_HOURS)
        database = graph.schema_fqn.split(".")[0]
        args = ["SCHEDULED_TIME_RANGE_START => DATEADD('second', -%s, CURRENT_TIMESTAMP())", "RESULT_LIMIT => 10000"]
        params: list[Any] = [int(hours * 3600)]
        if task_name is not None:
            args.append("TASK_NAME => %s")
            params.append(task_name)
        rows = fetch(
            conn,
            f"SELECT QUERY_ID, NAME, DATABASE_NAME, SCHEMA_NAME, STATE, ERROR_CODE, ERROR_MESSAGE, SCHEDULED_TIME, "
            f"QUERY_START_TIME, COMPLETED_TIME, NEXT_SCHEDULED_TIME, ROOT_TASK_ID, GRAPH_VERSION, RUN_ID, "
            f"SCHEDULED_FROM FROM TABLE({quote(database)}.INFORMATION_SCHEMA.TASK_HISTORY({', '.join(args)})) "
            f"WHERE DATABASE_NAME = %s AND SCHEMA_NAME = %s ORDER BY SCHEDULED_TIME DESC",
            (*params, *graph.schema_fqn.split(".")),
        )
        return [r for r in rows if str(r["name"]).upper() in graph.tasks]

    @staticmethod
    def last_graph_run(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of the newest graph run (one RUN_ID) among ``runs`` (newest first)."""
        if not runs:
            return []
        newest = runs[0]["run_id"]
        return [r for r in runs if r["run_id"] == newest]

    # ------------------------------------------------------------------------------------------ pipes

    def pipe_status(self, conn: SnowflakeConnection, locator: ObjectLocator) -> dict[str, Any]:
        """SYSTEM$PIPE_STATUS as a dict (executionState, pendingFileCount, lastIngestedTimestamp, error ...)."""
        raw = scalar(conn, "SELECT SYSTEM$PIPE_STATUS(%s)", (locator.fqn,))
        try:
            status = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        except ValueError:
            raise ConnectorError(f"SYSTEM$PIPE_STATUS of {locator.fqn} answered non-JSON: {str(raw)[:200]}") from None
        return dict(status)

    @staticmethod
    def pipe_error(status: Mapping[str, Any]) -> str | None:
        for key in ("error", "lastErrorMessage", "lastForwardedErrorMessage"):
            if status.get(key):
                return str(status[key])
        return None

    def pipe_definition(self, conn: SnowflakeConnection, locator: ObjectLocator) -> dict[str, Any]:
        """The pipe's SHOW PIPES row (its ``definition`` names the table and stage it copies)."""
        rows = fetch(conn, f"SHOW PIPES LIKE %s IN SCHEMA {quote(locator.schema_fqn)}", (locator.name,))
        row = next((r for r in rows if str(r["name"]).upper() == locator.name), None)
        if row is None:
            raise ConnectorError(f"pipe {locator.fqn} does not exist (or the connection's role cannot see it)")
        return row

    # -------------------------------------------------------------------------------------- warehouses

    def warehouse(self, conn: SnowflakeConnection, name: str) -> dict[str, Any]:
        rows = fetch(conn, "SHOW WAREHOUSES LIKE %s", (name,))
        row = next((r for r in rows if str(r["name"]).upper() == name.upper()), None)
        if row is None:
            raise ConnectorError(f"warehouse {name} does not exist (or the connection's role cannot see it)")
        return row

    # ------------------------------------------------------------------------------------------ watch

    def alerts(self, targets: list[TargetRef]) -> list[WatchAlert]:
        """A failed task (its newest run FAILED, or, for a root, its graph left FAILED_AND_AUTO_SUSPENDED) ->
        ``snowflake.task_failed``; a pipe not RUNNING or reporting an error -> ``snowflake.pipe_paused``.
        One session for all targets; a target whose locator is invalid or whose object is missing is skipped (its
        checks say why), so one broken target does not hide the others' alerts; a transient error is raised."""
        tasks = [t for t in targets if t.kind == "task"]
        pipes = [t for t in targets if t.kind == "pipe"]
        if not tasks and not pipes:
            return []
        found: list[WatchAlert] = []
        with self.session("watching tasks and pipes") as conn:
            for target in [*tasks, *pipes]:
                try:
                    if target.kind == "task":
                        alert = self._task_alert(conn, target, TaskLocator.model_validate(dict(target.locator)))
                    else:
                        alert = self._pipe_alert(conn, target, PipeLocator.model_validate(dict(target.locator)))
                except ValueError:
                    continue  # an invalid locator: the catalog refuses those; nothing to watch
                except ConnectorError as exc:
                    if exc.transient:
                        raise
                    continue  # a target whose object is gone must not hide the other targets' alerts
                if alert is not None:
                    found.append(alert)
        return found

    def _task_alert(self, conn: SnowflakeConnection, target: TargetRef, locator: TaskLocator) -> WatchAlert | None:
        graph = self.task_graph(conn, locator)
        runs = self.task_runs(conn, graph, 24, task_name=locator.name)
        latest = runs[0] if runs else None
        failed = latest is not None and str(latest["state"]).upper() in FAILED_RUN_STATES
        # the suspension is the root's: one alert on the root's target, not one per task of the graph
        suspended = graph.auto_suspended() and locator.name == graph.root_name
        if not failed and not suspended:
            return None
        failed_run = latest if failed else next((r for r in runs if str(r["state"]).upper() in FAILED_RUN_STATES), None)
        run_ref = str((failed_run or {}).get("run_id") or (failed_run or {}).get("query_id") or AUTO_SUSPENDED)
        error = str((failed_run or {}).get("error_message") or "")
        state = AUTO_SUSPENDED if suspended else "FAILED"
        summary = f"Snowflake task {locator.fqn} failed" + (f": {error[:200]}" if error else "")
        if suspended:
            summary += f"; its graph (root {graph.fqn(graph.root_name)}) is {AUTO_SUSPENDED}"
        return WatchAlert(
            key=f"snowflake.task_failed:{locator.fqn}:{run_ref}",
            alert_type="snowflake.task_failed",
            severity="critical" if suspended else "error",
            summary=summary,
            target=target.key,
            details={
                "task": locator.fqn,
                "root_task": graph.fqn(graph.root_name),
                "state": state,
                "error": error,
                "error_code": (failed_run or {}).get("error_code"),
                "run_id": jsonable((failed_run or {}).get("run_id")),
                "query_id": (failed_run or {}).get("query_id"),
                "scheduled_time": jsonable((failed_run or {}).get("scheduled_time")),
                "last_suspended_reason": graph.root.get("last_suspended_reason"),
            },
        )

    def _pipe_alert(self, conn: SnowflakeConnection, target: TargetRef, locator: PipeLocator) -> WatchAlert | None:
        status = self.pipe_status(conn, locator)
        state = str(status.get("executionState") or "UNKNOWN").upper()
        error = self.pipe_error(status)
        if state == "RUNNING" and not error:
            return None
        summary = f"Snowflake pipe {locator.fqn} is {state}" + (f": {error[:200]}" if error else "")
        return WatchAlert(
            key=f"snowflake.pipe_paused:{locator.fqn}:{state}",
            alert_type="snowflake.pipe_paused",
            severity="error",
            summary=summary,
            target=target.key,
            details={
                "pipe": locator.fqn,
                "execution_state": state,
                "error": error or "",
                "pending_file_count": status.get("pendingFileCount"),
                "last_ingested_timestamp": status.get("lastIngestedTimestamp"),
                "last_ingested_file_path": status.get("lastIngestedFilePath"),
            },
        )

    # --------------------------------------------------------------------------------------- pickers

    def metadata(self, what: str, **filters: Any) -> list[dict[str, Any]]:
        """``tasks``, ``pipes``, ``streams`` (filters ``database`` and ``schema`` required) and ``warehouses``
        for pickers; rows carry ``value`` and ``label`` and the object's state."""
        if what == "warehouses":
            with self.session("listing warehouses") as conn:
                rows = fetch(conn, "SHOW WAREHOUSES")
            return [
                {
                    "value": r["name"],
                    "label": f"{r['name']} ({r.get('size')}, {str(r.get('state') or '').lower()})",
                    "size": r.get("size"),
                    "state": r.get("state"),
                }
                for r in rows
            ]
        if what not in ("tasks", "pipes", "streams"):
            raise ConnectorError(
                f"snowflake connector cannot list {what!r} (it lists tasks, pipes, streams, warehouses)"
            )
        try:
            schema_fqn = f"{check_identifier(str(filters['database']))}.{check_identifier(str(filters['schema']))}"
        except (KeyError, ValueError):
            raise ConnectorError(f"listing {what} needs a valid database and schema") from None
        with self.session(f"listing {what} in {schema_fqn}") as conn:
            rows = fetch(conn, f"SHOW {what.upper()} IN SCHEMA {quote(schema_fqn)}")
        out = []
        for r in rows:
            name = str(r["name"])
            row: dict[str, Any] = {"value": name, "label": name, "fqn": f"{schema_fqn}.{name.upper()}"}
            if what == "tasks":
                row |= {"state": r.get("state"), "schedule": r.get("schedule"), "predecessors": _predecessors(r)}
                row["label"] = f"{name} ({r.get('state')})"
            elif what == "pipes":
                row["definition"] = r.get("definition")
            else:
                row |= {"table": r.get("table_name"), "stale": r.get("stale")}
            out.append(row)
        return out


def _register() -> None:
    from connectors.snowflake import checks, verbs

    SnowflakeConnector.checks = checks.CHECKS
    SnowflakeConnector.verbs = verbs.VERBS


_register()
