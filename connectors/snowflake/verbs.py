"""Snowflake verbs: resume-task, pause, rerun, backfill, scale-warehouse, clone-environment.

Each plan reads Snowflake first and lists the statements execute will run, in order (``details["steps"]``);
execute runs the approved plan's steps in one session tagged with the action id, through
:class:`~connectors.snowflake.client.TaggedRunner`, so a re-delivered execute skips every statement the query
history shows done and runs only the rest. ``warehouse_size`` on backfill and rerun scales the warehouse that
does the work for the action and restores it in a ``finally``; :meth:`Verb.recover` restores it when the
worker was lost (the original size is in the plan's ``details["warehouse"]``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from snowflake.connector import SnowflakeConnection
from snowflake.connector import errors as sf_errors

from connectors.base import (
    ConnectorError,
    ExecutionContext,
    Outcome,
    Plan,
    Risk,
    TargetRef,
    Touch,
    Verb,
    Verification,
)
from connectors.snowflake.checks import copy_history, day_bound, day_column
from connectors.snowflake.client import TaggedRunner, fetch, render, scalar
from connectors.snowflake.config import (
    EnvironmentLocator,
    Ident,
    ObjectLocator,
    Params,
    PipeLocator,
    TableLocator,
    TaskLocator,
    WarehouseLocator,
    WarehouseSize,
    check_identifier,
    normalize_size,
    parse_locator,
    quote,
)
from connectors.snowflake.connector import (
    AUTO_SUSPENDED,
    FAILED_RUN_STATES,
    TASK_HISTORY_MAX_HOURS,
    SnowflakeConnector,
    TaskGraph,
    as_utc,
    jsonable,
)

_IN_FLIGHT_RUN = {"SCHEDULED", "EXECUTING"}
_OK_RUN = {"SUCCEEDED", "SKIPPED"}
_FILE = re.compile(r"^[A-Za-z0-9_.\-/=+@:]{1,1024}$")
COPY_HISTORY_HOURS = 14 * 24  # COPY_HISTORY answers the last 14 days


def _step(sql: str, params: tuple[str, ...], what: str) -> dict[str, Any]:
    """One statement of a plan: its SQL with placeholders, its (string) parameters and a line for people."""
    return {"sql": sql, "params": list(params), "what": what}


class _SfVerb(Verb[SnowflakeConnector, Any]):
    connector: SnowflakeConnector

    @contextmanager
    def _tagged(self, ctx: ExecutionContext, database: str, doing: str) -> Iterator[TaggedRunner]:
        with self.connector.session(doing, tag=ctx.action_id) as conn:
            yield TaggedRunner(
                conn,
                database,
                ctx.action_id,
                ctx.log,
                wait_timeout_s=self.connector.cfg.wait_timeout_s,
                poll_interval_s=self.connector.cfg.poll_interval_s,
                first_delivery=ctx.attempt == 1,
            )

    def _run_steps(
        self, runner: TaggedRunner, steps: list[dict[str, Any]], ctx: ExecutionContext
    ) -> tuple[list[dict[str, Any]], int]:
        """Run the plan's steps in order; returns (the rows of the last step run now, steps already done)."""
        rows: list[dict[str, Any]] = []
        already = 0
        for step in steps:
            result, done = runner.run(step["sql"], tuple(step["params"]))
            if done:
                already += 1
            else:
                rows = result
                ctx.log(step["what"])
        return rows, already

    # ---------------------------------------------------------------------------- warehouse for the action

    def _warehouse_detail(
        self, conn: SnowflakeConnection, name: str | None, size: str | None, *, missing: str = ""
    ) -> dict[str, Any] | None:
        """What the plan keeps to scale ``name`` to ``size`` and back (None without ``size``); ``missing`` says
        why there is no warehouse to scale."""
        if size is None:
            return None
        if name is None:
            raise ConnectorError(f"warehouse_size cannot be used: {missing or 'set the connection warehouse'}")
        row = self.connector.warehouse(conn, name)
        return {"name": name, "size": normalize_size(str(row.get("size"))), "scale_to": size}

    @contextmanager
    def _scaled(self, runner: TaggedRunner, detail: dict[str, Any] | None, ctx: ExecutionContext) -> Iterator[None]:
        """Scale the warehouse for the body and restore its size afterwards, also when the body fails."""
        if detail is None:
            yield
            return
        name, original, scale_to = detail["name"], detail["size"], detail["scale_to"]
        if original != scale_to:
            fetch(runner.conn, "ALTER WAREHOUSE IDENTIFIER(%s) SET WAREHOUSE_SIZE = %s", (name, scale_to))
            ctx.log(f"warehouse {name} scaled {original} -> {scale_to} for this action")
        try:
            yield
        finally:
            if original != scale_to:
                self._restore(runner, name, original, ctx)

    def _restore(self, runner: TaggedRunner, name: str, size: str, ctx: ExecutionContext) -> None:
        """Scale ``name`` back to ``size``: on the action's session, else on a new one (the body may have
        failed because the session broke); a failure of both is an error naming the warehouse left scaled."""
        statement = "ALTER WAREHOUSE IDENTIFIER(%s) SET WAREHOUSE_SIZE = %s"
        try:
            fetch(runner.conn, statement, (name, size))
        except (sf_errors.Error, ConnectorError):
            try:
                with self.connector.session(f"restoring warehouse {name}", tag=runner.tag) as conn:
                    fetch(conn, statement, (name, size))
            except ConnectorError as exc:
                raise ConnectorError(
                    f"warehouse {name} could not be scaled back to {size} and is still scaled up: run "
                    f"scale-warehouse with warehouse_size {size} ({exc.message})",
                    transient=exc.transient,
                ) from exc
        ctx.log(f"warehouse {name} restored to {size}")

    def recover(self, target: TargetRef, params: Any, plan: Plan | None, action_id: str) -> str | None:
        """Scale the warehouse back to the size the plan recorded, when the lost worker left it scaled."""
        detail = (plan.details.get("warehouse") if plan is not None else None) or None
        if not detail:
            return None
        name, original = str(detail["name"]), normalize_size(str(detail["size"]))
        with self.connector.session(f"restoring warehouse {name}", tag=action_id) as conn:
            current = normalize_size(str(self.connector.warehouse(conn, name).get("size")))
            if current == original:
                return None
            fetch(conn, "ALTER WAREHOUSE IDENTIFIER(%s) SET WAREHOUSE_SIZE = %s", (check_identifier(name), original))
        return f"warehouse {name} was left at {current} by the lost worker; restored to {original}"

    # ------------------------------------------------------------------------------------- task runs

    def _wait_for_graph_run(
        self, conn: SnowflakeConnection, graph: TaskGraph, since: datetime, ctx: ExecutionContext
    ) -> dict[str, str]:
        """Poll TASK_HISTORY until the graph run started at or after ``since`` ends: nothing scheduled or
        executing, and either a task failed or every task downstream of those that ran has finished."""
        cfg = self.connector.cfg
        deadline = time.monotonic() + cfg.wait_timeout_s
        hours = min(TASK_HISTORY_MAX_HOURS, (datetime.now(UTC) - since).total_seconds() / 3600 + 1)
        states: dict[str, str] = {}
        while True:
            # a retried run may keep its original SCHEDULED_TIME: a row belongs to this run when it started (or,
            # still scheduled, was scheduled) after the statement; TASK_HISTORY keeps milliseconds, so ``since`` is
            # cut to them (a wider margin would take in the failed run's tasks that had just succeeded)
            earliest = since.replace(microsecond=since.microsecond // 1000 * 1000)
            runs = [r for r in self.connector.task_runs(conn, graph, hours) if _started(r) >= earliest]
            if runs:
                newest = runs[0]["run_id"]
                mine = [r for r in runs if r["run_id"] == newest]
                states = {}
                for r in reversed(mine):  # oldest first: the newest row of each task wins
                    states[str(r["name"]).upper()] = str(r["state"]).upper()
                flying = any(s in _IN_FLIGHT_RUN for s in states.values())
                failed = any(s in FAILED_RUN_STATES for s in states.values())
                # a suspended child does not run when its predecessor succeeds (Snowflake skips it)
                needed = {n for n in graph.descendants(set(states)) if n in states or graph.state(n) == "started"}
                if not flying and (failed or all(states.get(n) in _OK_RUN for n in needed)):
                    return states
            if time.monotonic() > deadline:
                raise ConnectorError(
                    f"the run of the graph of {graph.fqn(graph.root_name)} did not finish within "
                    f"{cfg.wait_timeout_s:.0f} s "
                    f"(states so far: {states or 'none yet'}); look at task_history"
                )
            ctx.heartbeat()
            if ctx.cancel_requested():
                raise ConnectorError("cancelled on request while the task graph was running (it keeps running)")
            time.sleep(cfg.poll_interval_s)

    @staticmethod
    def _since(runner: TaggedRunner, signature: str) -> datetime:
        """When the graph run of this action was triggered: the statement's start in the history (earlier
        delivery), else now by Snowflake's clock."""
        earlier = runner.done(signature)
        if earlier is not None and as_utc(earlier.get("start_time")):
            return as_utc(earlier["start_time"]) or datetime.now(UTC)
        return as_utc(scalar(runner.conn, "SELECT CURRENT_TIMESTAMP()")) or datetime.now(UTC)


def _started(run: dict[str, Any]) -> datetime:
    for key in ("query_start_time", "completed_time", "scheduled_time"):
        when = as_utc(run.get(key))
        if when is not None:
            return when
    return datetime.min.replace(tzinfo=UTC)


def _runs_verdict(states: dict[str, str], what: str) -> tuple[bool, str]:
    if not states:
        return False, f"no run of {what} found"
    bad = {n: s for n, s in states.items() if s not in _OK_RUN}
    if bad:
        return False, f"{what}: " + ", ".join(f"{n} {s}" for n, s in sorted(bad.items()))
    return True, f"{what}: every task succeeded ({', '.join(sorted(states))})"


# ------------------------------------------------------------------------------------------ resume-task


class ResumeParams(Params):
    """``mode``: ``auto`` retries a failed, unchanged graph run of the last days with RETRY LAST and resumes
    what is suspended; ``resume`` only resumes; ``retry_last`` insists on a retry (refused when it cannot).
    ``wait_for_completion``: wait for the retried run to end."""

    mode: Literal["auto", "retry_last", "resume"] = "auto"
    wait_for_completion: bool = True


class ResumeTask(_SfVerb):
    name = "resume-task"
    params_model = ResumeParams
    target_kinds = ("task", "pipe")
    description = (
        "Task: retry the failed graph run (EXECUTE TASK ... RETRY LAST) and/or ALTER TASK ... RESUME, children "
        "before the root. Pipe: PIPE_EXECUTION_PAUSED = FALSE, then ALTER PIPE ... REFRESH."
    )

    def plan(self, target: TargetRef, params: ResumeParams) -> Plan:
        if target.kind == "pipe":
            return _pipe_resume_plan(self.connector, parse_locator(target, ("pipe",)))
        locator: TaskLocator = parse_locator(target, ("task",))
        cfg = self.connector.cfg
        with self.connector.session(f"planning the resume of {locator.fqn}") as conn:
            graph = self.connector.task_graph(conn, locator)
            hours = min(TASK_HISTORY_MAX_HOURS, cfg.retry_last_window_days * 24)
            runs = self.connector.task_runs(conn, graph, hours)
        root = graph.fqn(graph.root_name)
        last = self.connector.last_graph_run(runs)
        failed = [r for r in last if str(r["state"]).upper() in FAILED_RUN_STATES]
        warnings: list[str] = []
        times = [t for t in (as_utc(r["scheduled_time"]) for r in last) if t is not None]
        started = min(times, default=None)
        changed = [
            n
            for n, t in graph.tasks.items()
            if started is not None and (as_utc(t.get("last_committed_on")) or started) > started
        ]
        why_not = ""
        if not failed:
            why_not = "the last graph run did not fail" if last else "no graph run in the task history window"
        elif changed:
            why_not = f"the graph changed since its failed run ({', '.join(changed)})"
        retry = bool(failed) and not changed and params.mode != "resume"
        if params.mode == "retry_last" and not retry:
            raise ConnectorError(f"cannot retry the graph of {root}: {why_not}; use mode resume")
        if failed and not retry:
            warnings.append(f"not retrying the failed run: {why_not or 'mode resume'}")
        suspended = [n for n in reversed(graph.top_down()) if graph.state(n) != "started"]
        children = [n for n in suspended if n != graph.root_name]
        steps = [
            _step("ALTER TASK IDENTIFIER(%s) RESUME", (graph.fqn(n),), f"resumed {graph.fqn(n)}") for n in children
        ]
        if retry:
            steps.append(_step("EXECUTE TASK IDENTIFIER(%s) RETRY LAST", (root,), f"retried the failed run of {root}"))
        if graph.root_name in suspended:
            steps.append(_step("ALTER TASK IDENTIFIER(%s) RESUME", (root,), f"resumed {root}"))
        summary = f"graph of {root}: "
        if graph.auto_suspended():
            summary = f"graph of {root} is {AUTO_SUSPENDED}: "
            warnings.append(f"the root {root} was suspended by Snowflake after consecutive failures ({AUTO_SUSPENDED})")
        if retry:
            names = ", ".join(str(r["name"]) for r in failed)
            summary += f"retry the failed run (RETRY LAST re-runs {names} and what follows)"
        if suspended:
            summary += ("; " if retry else "") + f"resume {len(suspended)} task(s), children before the root"
        if not steps:
            summary += "nothing to do: every task is started and the last run did not fail"
            warnings.append("nothing changes")
        return Plan(
            summary=summary,
            touches=[
                Touch(kind="statement", name=render(s["sql"], tuple(s["params"])), detail={"what": s["what"]})
                for s in steps
            ],
            counts={"tasks": len(graph.tasks), "statements": len(steps)},
            warnings=warnings,
            risk=Risk.MEDIUM if retry else Risk.LOW,
            details={
                "kind": "task",
                "root": root,
                "mode": "retry_last" if retry else "resume",
                "steps": steps,
                "failed_run": [
                    {k: jsonable(r.get(k)) for k in ("name", "state", "error_message", "run_id", "scheduled_time")}
                    for r in failed
                ],
                "last_suspended_reason": graph.root.get("last_suspended_reason"),
            },
        )

    def execute(self, target: TargetRef, params: ResumeParams, ctx: ExecutionContext) -> Outcome:
        plan = ctx.plan or self.plan(target, params)
        if target.kind == "pipe":
            return _pipe_execute(self, target, plan, ctx)
        locator: TaskLocator = parse_locator(target, ("task",))
        steps: list[dict[str, Any]] = plan.details["steps"]
        states: dict[str, str] = {}
        with self._tagged(ctx, locator.database, f"resuming the graph of {locator.fqn}") as runner:
            retry = next((s for s in steps if "RETRY LAST" in s["sql"]), None)
            since = self._since(runner, render(retry["sql"], tuple(retry["params"]))) if retry else None
            _, already = self._run_steps(runner, steps, ctx)
            if steps and already < len(steps):
                ctx.executed(f"ran {len(steps) - already} statement(s) on the graph of {plan.details['root']}")
            if retry and since is not None and params.wait_for_completion:
                graph = self.connector.task_graph(runner.conn, locator)
                states = self._wait_for_graph_run(runner.conn, graph, since, ctx)
        return Outcome(
            summary=f"{plan.details['root']}: {len(steps) - already} statement(s) run"
            + (f", {already} already done earlier" if already else ""),
            details={"root": plan.details["root"], "mode": plan.details["mode"], "run_states": states, "steps": steps},
            already_done=already == len(steps),
        )

    def verify(self, target: TargetRef, params: ResumeParams, outcome: Outcome) -> Verification:
        if target.kind == "pipe":
            return _pipe_verify(self.connector, target, paused=False)
        locator: TaskLocator = parse_locator(target, ("task",))
        with self.connector.session(f"verifying the graph of {locator.fqn}") as conn:
            graph = self.connector.task_graph(conn, locator)
        suspended = [n for n in graph.tasks if graph.state(n) != "started"]
        ok, summary = True, f"every task of the graph of {outcome.details['root']} is started"
        if suspended:
            ok, summary = False, f"still suspended: {', '.join(sorted(suspended))}"
        states = outcome.details.get("run_states") or {}
        if outcome.details.get("mode") == "retry_last" and params.wait_for_completion:
            run_ok, run_summary = _runs_verdict(states, "the retried run")
            ok, summary = ok and run_ok, f"{summary}; {run_summary}"
        return Verification(ok=ok, summary=summary, details={"suspended": suspended, "run_states": states})


# ------------------------------------------------------------------------------------------------- pipes


def _parse_pipe(definition: str, pipe: ObjectLocator) -> tuple[str, str]:
    """(table, stage) fully qualified, from a pipe's ``COPY INTO <table> FROM @<stage>`` definition."""
    match = re.search(r"COPY\s+INTO\s+([\w$.\"]+)[\s\S]*?FROM\s+@([\w$.\"]+)", definition, re.I)
    if not match:
        raise ConnectorError(f"cannot read the table and stage from the definition of pipe {pipe.fqn}")

    def qualify(name: str) -> str:
        parts = [check_identifier(p) for p in name.replace('"', "").split(".")]
        return ".".join([pipe.database, pipe.schema_][: 3 - len(parts)] + parts)

    try:
        return qualify(match.group(1)), qualify(match.group(2))
    except ValueError as exc:
        raise ConnectorError(f"pipe {pipe.fqn}: {exc}") from None


def _stage_files(conn: SnowflakeConnection, stage: str, pattern: str | None = None) -> list[dict[str, Any]]:
    sql = f"LIST @{quote(stage)}" + (" PATTERN = %s" if pattern else "")
    return fetch(conn, sql, (pattern,) if pattern else None)


def _base(name: str) -> str:
    return str(name).rstrip("/").split("/")[-1]


def _staged_at(file: dict[str, Any]) -> datetime | None:
    """LIST's ``last_modified`` (``Mon, 07 Dec 2026 02:22:03 GMT``) as an aware datetime."""
    raw = file.get("last_modified")
    if isinstance(raw, datetime):
        return as_utc(raw)
    try:
        return as_utc(parsedate_to_datetime(str(raw)))
    except (TypeError, ValueError):
        return None


def _loaded(
    conn: SnowflakeConnection, table: TableLocator, staged: list[dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Files the load history shows loaded into ``table`` (COPY_HISTORY: the last 14 days), by base name. With
    ``staged`` (LIST's rows), a file staged again after its last load counts as not loaded: its load belongs
    to an earlier copy of the file (or of the table)."""
    found: dict[str, dict[str, Any]] = {}
    for row in copy_history(conn, table, hours=COPY_HISTORY_HOURS):
        if str(row.get("status") or "").lower() in ("loaded", "partially loaded"):
            found.setdefault(_base(row["file_name"]), row)
    for file in staged or []:
        load = found.get(_base(file["name"]))
        staged_at, loaded_at = _staged_at(file), as_utc(load.get("last_load_time")) if load else None
        if staged_at is not None and loaded_at is not None and staged_at > loaded_at:
            del found[_base(file["name"])]
    return found


def _pipe_resume_plan(connector: SnowflakeConnector, locator: PipeLocator) -> Plan:
    with connector.session(f"planning the resume of pipe {locator.fqn}") as conn:
        status = connector.pipe_status(conn, locator)
        table, stage = _parse_pipe(str(connector.pipe_definition(conn, locator).get("definition") or ""), locator)
        db, schema, name = table.split(".")
        files = _stage_files(conn, stage)
        loaded = _loaded(conn, TableLocator.model_validate({"database": db, "schema": schema, "name": name}), files)
    state = str(status.get("executionState") or "UNKNOWN").upper()
    new = [f for f in files if _base(f["name"]) not in loaded]
    steps = []
    if state != "RUNNING":
        steps.append(
            _step(
                "ALTER PIPE IDENTIFIER(%s) SET PIPE_EXECUTION_PAUSED = FALSE",
                (locator.fqn,),
                f"resumed pipe {locator.fqn}",
            )
        )
    steps.append(_step("ALTER PIPE IDENTIFIER(%s) REFRESH", (locator.fqn,), f"refreshed pipe {locator.fqn}"))
    warnings = [] if state != "RUNNING" else [f"pipe {locator.fqn} is already RUNNING: only the REFRESH runs"]
    if connector.pipe_error(status):
        warnings.append(f"the pipe reports an error: {connector.pipe_error(status)}")
    return Plan(
        summary=f"pipe {locator.fqn} is {state}: resume it, then REFRESH loads {len(new)} staged file(s) into {table}",
        touches=[
            Touch(
                kind="file",
                name=str(f["name"]),
                detail={"size": jsonable(f.get("size")), "last_modified": jsonable(f.get("last_modified"))},
            )
            for f in new
        ],
        counts={"files": len(new)},
        warnings=warnings,
        risk=Risk.LOW,
        details={
            "kind": "pipe",
            "pipe": locator.fqn,
            "state": state,
            "table": table,
            "stage": stage,
            "steps": steps,
            "files": [str(f["name"]) for f in new],
            "already_loaded": sorted(loaded),
        },
    )


def _pipe_execute(verb: _SfVerb, target: TargetRef, plan: Plan, ctx: ExecutionContext) -> Outcome:
    locator: PipeLocator = parse_locator(target, ("pipe",))
    steps: list[dict[str, Any]] = plan.details["steps"]
    with verb._tagged(ctx, locator.database, f"changing pipe {locator.fqn}") as runner:
        rows, already = verb._run_steps(runner, steps, ctx)
    if already < len(steps):
        ctx.executed(f"ran {len(steps) - already} statement(s) on pipe {locator.fqn}")
    files = [{"file": r.get("file"), "status": r.get("status")} for r in rows]
    return Outcome(
        summary=f"pipe {locator.fqn}: {len(steps) - already} statement(s) run"
        + (f", {len(files)} file(s) sent for loading" if files else "")
        + (f", {already} already done earlier" if already else ""),
        details={"pipe": locator.fqn, "steps": steps, "refreshed_files": files},
        already_done=already == len(steps),
    )


def _pipe_verify(connector: SnowflakeConnector, target: TargetRef, *, paused: bool) -> Verification:
    locator: PipeLocator = parse_locator(target, ("pipe",))
    with connector.session(f"verifying pipe {locator.fqn}") as conn:
        status = connector.pipe_status(conn, locator)
    state = str(status.get("executionState") or "UNKNOWN").upper()
    ok = (state == "PAUSED") if paused else (state == "RUNNING")
    return Verification(
        ok=ok,
        summary=f"pipe {locator.fqn} reads back as {state}, {status.get('pendingFileCount', 0)} file(s) pending",
        details={"execution_state": state, "pending_file_count": status.get("pendingFileCount")},
    )


# ------------------------------------------------------------------------------------------------ pause


class PauseParams(Params):
    """No parameters: a task's graph is suspended from its root; a pipe is paused."""


class Pause(_SfVerb):
    name = "pause"
    params_model = PauseParams
    target_kinds = ("task", "pipe")
    description = "Task: ALTER TASK ... SUSPEND, the root first (stops the graph). Pipe: PIPE_EXECUTION_PAUSED = TRUE."

    def plan(self, target: TargetRef, params: PauseParams) -> Plan:
        if target.kind == "pipe":
            locator: PipeLocator = parse_locator(target, ("pipe",))
            with self.connector.session(f"planning the pause of pipe {locator.fqn}") as conn:
                state = str(self.connector.pipe_status(conn, locator).get("executionState") or "UNKNOWN").upper()
            steps = (
                []
                if state == "PAUSED"
                else [
                    _step(
                        "ALTER PIPE IDENTIFIER(%s) SET PIPE_EXECUTION_PAUSED = TRUE",
                        (locator.fqn,),
                        f"paused pipe {locator.fqn}",
                    )
                ]
            )
            return Plan(
                summary=f"pause pipe {locator.fqn} (now {state}): staged files wait until it is resumed",
                touches=[Touch(kind="pipe", name=locator.fqn, detail={"execution_state": state})],
                counts={"statements": len(steps)},
                warnings=["already paused: nothing changes"] if not steps else [],
                details={"kind": "pipe", "pipe": locator.fqn, "steps": steps},
            )
        task: TaskLocator = parse_locator(target, ("task",))
        with self.connector.session(f"planning the pause of {task.fqn}") as conn:
            graph = self.connector.task_graph(conn, task)
        names = [graph.root_name] + ([task.name] if task.name != graph.root_name else [])
        started = [n for n in names if graph.state(n) == "started"]
        steps = [
            _step("ALTER TASK IDENTIFIER(%s) SUSPEND", (graph.fqn(n),), f"suspended {graph.fqn(n)}") for n in started
        ]
        return Plan(
            summary=f"suspend {', '.join(graph.fqn(n) for n in started) or 'nothing'} (root first): no new graph runs",
            touches=[Touch(kind="task", name=graph.fqn(n), detail={"state": graph.state(n)}) for n in names],
            counts={"statements": len(steps)},
            warnings=["already suspended: nothing changes"]
            if not steps
            else ["a run in progress finishes; no new one starts"],
            details={"kind": "task", "root": graph.fqn(graph.root_name), "steps": steps},
        )

    def execute(self, target: TargetRef, params: PauseParams, ctx: ExecutionContext) -> Outcome:
        plan = ctx.plan or self.plan(target, params)
        if target.kind == "pipe":
            return _pipe_execute(self, target, plan, ctx)
        locator: TaskLocator = parse_locator(target, ("task",))
        steps: list[dict[str, Any]] = plan.details["steps"]
        with self._tagged(ctx, locator.database, f"suspending the graph of {locator.fqn}") as runner:
            _, already = self._run_steps(runner, steps, ctx)
        return Outcome(
            summary=f"{len(steps) - already} task(s) suspended"
            + (f", {already} already by an earlier delivery" if already else ""),
            details={"root": plan.details["root"], "steps": steps},
            already_done=already == len(steps),
        )

    def verify(self, target: TargetRef, params: PauseParams, outcome: Outcome) -> Verification:
        if target.kind == "pipe":
            return _pipe_verify(self.connector, target, paused=True)
        locator: TaskLocator = parse_locator(target, ("task",))
        with self.connector.session(f"verifying the graph of {locator.fqn}") as conn:
            graph = self.connector.task_graph(conn, locator)
        state = graph.state(graph.root_name)
        return Verification(
            ok=state == "suspended",
            summary=f"root {graph.fqn(graph.root_name)} reads back as {state}",
            details={"root_state": state},
        )


# ------------------------------------------------------------------------------------------------ rerun


class RerunParams(Params):
    """``warehouse_size``: scale the warehouse doing the work for the run and back afterwards.
    ``wait_for_completion``: wait for the task graph run to end (needed with warehouse_size)."""

    warehouse_size: WarehouseSize | None = None
    wait_for_completion: bool = True

    @model_validator(mode="after")
    def _wait(self) -> RerunParams:
        if self.warehouse_size and not self.wait_for_completion:
            raise ValueError("warehouse_size needs wait_for_completion (the size is restored when the run ends)")
        return self


class Rerun(_SfVerb):
    name = "rerun"
    params_model = RerunParams
    target_kinds = ("task", "procedure")
    description = "Task: EXECUTE TASK on its graph's root (the graph runs once now). Procedure: CALL it."

    def plan(self, target: TargetRef, params: RerunParams) -> Plan:
        if target.kind == "procedure":
            proc: ObjectLocator = parse_locator(target, ("procedure",))
            sql = f"CALL {quote(proc.fqn)}()"
            with self.connector.session(f"planning the call of {proc.fqn}") as conn:
                detail = self._warehouse_detail(conn, self.connector.cfg.warehouse, params.warehouse_size)
            return Plan(
                summary=f"CALL {proc.fqn}()"
                + (f" on warehouse {detail['name']} scaled to {detail['scale_to']}" if detail else ""),
                touches=[Touch(kind="procedure", name=proc.fqn)],
                counts={"statements": 1},
                risk=Risk.MEDIUM,
                details={
                    "kind": "procedure",
                    "procedure": proc.fqn,
                    "steps": [_step(sql, (), f"called {proc.fqn}")],
                    "warehouse": detail,
                },
            )
        task: TaskLocator = parse_locator(target, ("task",))
        with self.connector.session(f"planning the run of {task.fqn}") as conn:
            graph = self.connector.task_graph(conn, task)
            task_wh = graph.root.get("warehouse") or None
            detail = self._warehouse_detail(
                conn,
                check_identifier(str(task_wh)) if task_wh else None,
                params.warehouse_size,
                missing=f"the root task {graph.fqn(graph.root_name)} runs serverless (no warehouse)",
            )
        root = graph.fqn(graph.root_name)
        warnings = []
        if task.name != graph.root_name:
            warnings.append(f"{task.fqn} is a child task: EXECUTE TASK runs its graph from the root {root}")
        idle = [n for n in graph.top_down() if n != graph.root_name and graph.state(n) != "started"]
        if idle:
            warnings.append(f"suspended child task(s) do not run: {', '.join(idle)} (resume-task resumes them)")
        return Plan(
            summary=f"EXECUTE TASK {root}: the graph ({len(graph.tasks)} task(s)) runs once now",
            touches=[Touch(kind="task", name=graph.fqn(n), detail={"state": graph.state(n)}) for n in graph.top_down()],
            counts={"tasks": len(graph.tasks), "statements": 1},
            warnings=warnings,
            risk=Risk.LOW,
            details={
                "kind": "task",
                "root": root,
                "warehouse": detail,
                "steps": [_step("EXECUTE TASK IDENTIFIER(%s)", (root,), f"started a run of {root}")],
            },
        )

    def execute(self, target: TargetRef, params: RerunParams, ctx: ExecutionContext) -> Outcome:
        plan = ctx.plan or self.plan(target, params)
        steps: list[dict[str, Any]] = plan.details["steps"]
        database = str(plan.details.get("root") or plan.details.get("procedure")).split(".")[0]
        states: dict[str, str] = {}
        returned: Any = None
        with self._tagged(
            ctx, database, f"running {plan.details.get('root') or plan.details.get('procedure')}"
        ) as runner:
            since = self._since(runner, render(steps[0]["sql"], tuple(steps[0]["params"])))
            with self._scaled(runner, plan.details.get("warehouse"), ctx):
                rows, already = self._run_steps(runner, steps, ctx)
                if not already:
                    ctx.executed(steps[0]["what"])
                returned = jsonable(next(iter(rows[0].values()))) if rows else None
                if target.kind == "task" and params.wait_for_completion:
                    graph = self.connector.task_graph(runner.conn, parse_locator(target, ("task",)))
                    states = self._wait_for_graph_run(runner.conn, graph, since, ctx)
        what = plan.details.get("root") or plan.details.get("procedure")
        return Outcome(
            summary=f"{what}: "
            + ("already run by an earlier delivery" if already else "run")
            + (f"; {', '.join(f'{n} {s}' for n, s in sorted(states.items()))}" if states else ""),
            details={"kind": plan.details["kind"], "what": what, "run_states": states, "returned": returned},
            already_done=bool(already),
        )

    def verify(self, target: TargetRef, params: RerunParams, outcome: Outcome) -> Verification:
        if outcome.details["kind"] == "procedure":
            return Verification(
                ok=True, summary=f"{outcome.details['what']} returned {outcome.details.get('returned')!r}"
            )
        if not params.wait_for_completion:
            return Verification(ok=True, summary="run started; not waiting for it")
        ok, summary = _runs_verdict(outcome.details.get("run_states") or {}, f"the run of {outcome.details['what']}")
        return Verification(ok=ok, summary=summary, details={"run_states": outcome.details.get("run_states")})


# --------------------------------------------------------------------------------------------- backfill


class BackfillParams(Params):
    """Raw tables (a ``stage`` on the target): ``files`` (names relative to the stage) or a ``pattern``
    (a regular expression, e.g. ``.*2024-01-0[1-7].*``), ``force`` to load files already loaded. Fact tables
    (a ``procedure`` on the target): ``from_date``..``to_date`` (inclusive; a NUMBER ``date_column`` is a
    ``YYYYMMDD`` date key) deleted, then the procedure called, in one transaction. ``warehouse_size``: scale
    the connection's warehouse for the action."""

    files: list[str] | None = Field(default=None, max_length=1000)
    pattern: str | None = Field(default=None, min_length=1, max_length=500)
    force: bool = False
    from_date: date | None = None
    to_date: date | None = None
    warehouse_size: WarehouseSize | None = None

    @field_validator("files")
    @classmethod
    def _files(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            bad = [f for f in value if not _FILE.match(f)]
            if bad:
                raise ValueError(f"not plain file names: {bad[:5]}")
            if not value:
                raise ValueError("give at least one file")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_scope(self) -> BackfillParams:
        if self.files and self.pattern:
            raise ValueError("give files or a pattern, not both")
        if (self.from_date is None) != (self.to_date is None):
            raise ValueError("give both from_date and to_date")
        if self.from_date and self.to_date and self.from_date > self.to_date:
            raise ValueError("from_date is after to_date")
        return self


class Backfill(_SfVerb):
    name = "backfill"
    params_model = BackfillParams
    target_kinds = ("table",)
    description = (
        "Raw table: COPY INTO from its stage for named files or a pattern. Fact table: delete the period and "
        "CALL its load procedure in one transaction."
    )

    def plan(self, target: TargetRef, params: BackfillParams) -> Plan:
        table: TableLocator = parse_locator(target, self.target_kinds)
        if table.stage:
            return self._raw_plan(table, params)
        if table.procedure:
            return self._facts_plan(table, params)
        raise ConnectorError(
            f"target {target.key!r} has neither a stage (raw) nor a procedure (facts): cannot backfill"
        )

    def _raw_plan(self, table: TableLocator, params: BackfillParams) -> Plan:
        if not params.files and not params.pattern:
            raise ConnectorError("a raw backfill needs files or a pattern")
        assert table.stage is not None
        with self.connector.session(f"planning the backfill of {table.fqn}") as conn:
            staged = _stage_files(conn, table.stage, params.pattern)
            loaded = _loaded(conn, table, staged)
            detail = self._warehouse_detail(conn, self.connector.cfg.warehouse, params.warehouse_size)
        by_base = {_base(f["name"]): f for f in staged}
        if params.files:
            missing = [f for f in params.files if _base(f) not in by_base]
            if missing:
                raise ConnectorError(
                    f"not in stage {table.stage}: {', '.join(missing[:10])}; check the names with LIST @stage"
                )
            chosen = [by_base[_base(f)] for f in params.files]
        else:
            chosen = staged
        if not chosen:
            raise ConnectorError(f"no file in stage {table.stage} matches {params.pattern!r}")
        touches = [
            Touch(
                kind="file",
                name=str(f["name"]),
                detail={
                    "size": jsonable(f.get("size")),
                    "already_loaded": _base(f["name"]) in loaded,
                    "loaded_at": jsonable(loaded.get(_base(f["name"]), {}).get("last_load_time")),
                },
            )
            for f in chosen
        ]
        done = [t.name for t in touches if t.detail["already_loaded"]]
        warnings = []
        if done and not params.force:
            warnings.append(f"{len(done)} file(s) already loaded are skipped by Snowflake (force loads them again)")
        if done and params.force:
            warnings.append(f"force: {len(done)} file(s) already loaded are loaded AGAIN (duplicate rows)")
        if not params.force and len(done) == len(touches):
            raise ConnectorError(
                f"every selected file is already loaded into {table.fqn}; nothing to backfill (force reloads)"
            )
        sql, args = self._copy_sql(table, params)
        return Plan(
            summary=f"COPY INTO {table.fqn} from @{table.stage}: "
            f"{len(touches) - (0 if params.force else len(done))} file(s) to load"
            + (f", {len(done)} already loaded" if done else ""),
            touches=touches,
            counts={"files": len(touches), "already_loaded": len(done)},
            estimated_bytes=sum(int(f.get("size") or 0) for f in chosen),
            warnings=warnings,
            risk=Risk.HIGH if params.force and done else Risk.MEDIUM,
            details={
                "mode": "raw",
                "table": table.fqn,
                "stage": table.stage,
                "warehouse": detail,
                "steps": [_step(sql, args, f"copied files into {table.fqn}")],
            },
        )

    @staticmethod
    def _copy_sql(table: TableLocator, params: BackfillParams) -> tuple[str, tuple[str, ...]]:
        assert table.stage is not None
        sql = f"COPY INTO IDENTIFIER(%s) FROM @{quote(table.stage)}"
        args: list[str] = [table.fqn]
        if params.files:
            sql += " FILES = (" + ", ".join(["%s"] * len(params.files)) + ")"
            args += params.files
        else:
            sql += " PATTERN = %s"
            args.append(str(params.pattern))
        if table.file_format:
            sql += " FILE_FORMAT = (FORMAT_NAME = %s)"
            args.append(table.file_format)
        if params.force:
            sql += " FORCE = TRUE"
        return sql, tuple(args)

    def _facts_plan(self, table: TableLocator, params: BackfillParams) -> Plan:
        if params.from_date is None or params.to_date is None:
            raise ConnectorError("a fact backfill needs from_date and to_date")
        assert table.procedure is not None and table.date_column is not None
        with self.connector.session(f"planning the backfill of {table.fqn}") as conn:
            rows = _period_rows(conn, table, params)
            detail = self._warehouse_detail(conn, self.connector.cfg.warehouse, params.warehouse_size)
        period = f"{params.from_date.isoformat()}..{params.to_date.isoformat()}"
        return Plan(
            summary=f"delete {rows} row(s) of {table.fqn} with {table.date_column} in {period} and "
            f"CALL {table.procedure}() "
            "in one transaction",
            touches=[
                Touch(kind="table", name=table.fqn, detail={"period": period, "rows_now": rows}),
                Touch(kind="procedure", name=table.procedure),
            ],
            counts={"rows": rows},
            warnings=["readers see the period's old rows until the transaction commits, then the reloaded ones"],
            risk=Risk.MEDIUM,
            details={
                "mode": "facts",
                "table": table.fqn,
                "procedure": table.procedure,
                "period": period,
                "rows_before": rows,
                "warehouse": detail,
            },
        )

    def execute(self, target: TargetRef, params: BackfillParams, ctx: ExecutionContext) -> Outcome:
        table: TableLocator = parse_locator(target, self.target_kinds)
        plan = ctx.plan or self.plan(target, params)
        with (
            self._tagged(ctx, table.database, f"backfilling {table.fqn}") as runner,
            self._scaled(runner, plan.details.get("warehouse"), ctx),
        ):
            if plan.details["mode"] == "raw":
                rows, already = self._run_steps(runner, plan.details["steps"], ctx)
                files = [{k: jsonable(v) for k, v in r.items()} for r in rows]
                if not already:
                    ctx.executed(f"copied {len(files)} file(s) into {table.fqn}")
                details: dict[str, Any] = {"mode": "raw", "files": files}
            else:
                already = self._facts(runner, table, params, ctx)
                details = {
                    "mode": "facts",
                    "period": plan.details["period"],
                    "rows_before": plan.details["rows_before"],
                }
        return Outcome(
            summary=f"backfill of {table.fqn}: " + ("already done by an earlier delivery" if already else "done"),
            details={"table": table.fqn, **details},
            already_done=bool(already),
        )

    def _facts(self, runner: TaggedRunner, table: TableLocator, params: BackfillParams, ctx: ExecutionContext) -> bool:
        """DELETE the period and CALL the procedure in one transaction; a COMMIT of this action in the history
        means an earlier delivery did it (a transaction that did not commit was rolled back)."""
        assert table.procedure is not None and table.date_column is not None
        if runner.done_exactly("COMMIT") is not None:
            ctx.log("the delete and reload committed in an earlier delivery; not running them again")
            return True
        conn = runner.conn
        low, high = _period_bounds(conn, table, params)
        fetch(conn, "BEGIN")
        try:
            fetch(
                conn,
                "DELETE FROM IDENTIFIER(%s) WHERE IDENTIFIER(%s) BETWEEN %s AND %s",
                (table.fqn, table.date_column, low, high),
            )
            fetch(conn, f"CALL {quote(table.procedure)}()")
            fetch(conn, "COMMIT")
        except BaseException:
            with suppress(sf_errors.Error):  # a broken session rolls back on its own
                fetch(conn, "ROLLBACK")
            raise
        ctx.log(
            f"deleted {params.from_date}..{params.to_date} of {table.fqn} and called {table.procedure}(): committed"
        )
        ctx.executed(f"reloaded {table.fqn} for {params.from_date}..{params.to_date}")
        return False

    def verify(self, target: TargetRef, params: BackfillParams, outcome: Outcome) -> Verification:
        table: TableLocator = parse_locator(target, self.target_kinds)
        if outcome.details["mode"] == "facts":
            with self.connector.session(f"verifying the backfill of {table.fqn}") as conn:
                rows = _period_rows(conn, table, params)
            return Verification(
                ok=rows > 0,
                summary=f"{table.fqn} holds {rows} row(s) in {outcome.details['period']} "
                f"(before: {outcome.details['rows_before']})",
                details={"rows_after": rows, "rows_before": outcome.details["rows_before"]},
            )
        with self.connector.session(f"verifying the backfill of {table.fqn}") as conn:
            loaded = _loaded(conn, table)
        wanted = (
            [_base(f) for f in params.files]
            if params.files
            else [_base(str(f.get("file"))) for f in outcome.details["files"]]
        )
        missing = [f for f in wanted if f not in loaded]
        failed = [f for f in outcome.details["files"] if "FAIL" in str(f.get("status") or "").upper()]
        ok = not missing and not failed
        summary = (
            f"{len(wanted) - len(missing)} of {len(wanted)} file(s) show as loaded in the load history of {table.fqn}"
        )
        if failed:
            summary += f"; failed: {', '.join(str(f.get('file')) for f in failed[:5])}: {failed[0].get('first_error')}"
        return Verification(ok=ok, summary=summary, details={"missing": missing})


def _period_bounds(conn: SnowflakeConnection, table: TableLocator, params: BackfillParams) -> tuple[Any, Any]:
    """``from_date``/``to_date`` as the fact table's ``date_column`` compares them (dates, or YYYYMMDD keys)."""
    assert table.date_column is not None and params.from_date is not None and params.to_date is not None
    _, is_key = day_column(conn, table, table.date_column)
    return day_bound(params.from_date, is_key), day_bound(params.to_date, is_key)


def _period_rows(conn: SnowflakeConnection, table: TableLocator, params: BackfillParams) -> int:
    low, high = _period_bounds(conn, table, params)
    return int(
        scalar(
            conn,
            "SELECT COUNT(*) FROM IDENTIFIER(%s) WHERE IDENTIFIER(%s) BETWEEN %s AND %s",
            (table.fqn, table.date_column, low, high),
        )
        or 0
    )


# -------------------------------------------------------------------------------------- scale-warehouse


class ScaleParams(Params):
    """``warehouse_size``: the size to set (XSMALL .. X6LARGE; ``X-Large`` spellings accepted)."""

    warehouse_size: WarehouseSize


class ScaleWarehouse(_SfVerb):
    name = "scale-warehouse"
    params_model = ScaleParams
    target_kinds = ("warehouse",)
    description = "ALTER WAREHOUSE ... SET WAREHOUSE_SIZE: the runbook's explicit scale up or down (not restored)."

    def plan(self, target: TargetRef, params: ScaleParams) -> Plan:
        wh: WarehouseLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"planning the scale of warehouse {wh.name}") as conn:
            row = self.connector.warehouse(conn, wh.name)
        size = normalize_size(str(row.get("size")))
        steps = (
            []
            if size == params.warehouse_size
            else [
                _step(
                    "ALTER WAREHOUSE IDENTIFIER(%s) SET WAREHOUSE_SIZE = %s",
                    (wh.name, params.warehouse_size),
                    f"warehouse {wh.name} set to {params.warehouse_size}",
                )
            ]
        )
        up = _size_rank(params.warehouse_size) > _size_rank(size)
        return Plan(
            summary=f"warehouse {wh.name}: {size} -> {params.warehouse_size}",
            touches=[Touch(kind="warehouse", name=wh.name, detail={"size": size, "state": row.get("state")})],
            counts={"statements": len(steps)},
            warnings=["already at that size: nothing changes"]
            if not steps
            else (["a larger warehouse costs more credits per hour until it is scaled down"] if up else []),
            risk=Risk.MEDIUM if up and _size_rank(params.warehouse_size) >= _size_rank("XLARGE") else Risk.LOW,
            details={"warehouse": None, "name": wh.name, "size_before": size, "steps": steps},
        )

    def execute(self, target: TargetRef, params: ScaleParams, ctx: ExecutionContext) -> Outcome:
        wh: WarehouseLocator = parse_locator(target, self.target_kinds)
        plan = ctx.plan or self.plan(target, params)
        database = self.connector.cfg.database
        if database is None:
            raise ConnectorError(
                "scale-warehouse reads its query history through a database: set the connection's database"
            )
        with self._tagged(ctx, database, f"scaling warehouse {wh.name}") as runner:
            _, already = self._run_steps(runner, plan.details["steps"], ctx)
        return Outcome(
            summary=f"warehouse {wh.name} set to {params.warehouse_size}"
            + (" (by an earlier delivery)" if already else ""),
            details={"name": wh.name, "size_before": plan.details["size_before"]},
            already_done=bool(already) or not plan.details["steps"],
        )

    def verify(self, target: TargetRef, params: ScaleParams, outcome: Outcome) -> Verification:
        wh: WarehouseLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"verifying warehouse {wh.name}") as conn:
            size = normalize_size(str(self.connector.warehouse(conn, wh.name).get("size")))
        return Verification(ok=size == params.warehouse_size, summary=f"warehouse {wh.name} reads back as {size}")


def _size_rank(size: str) -> int:
    from connectors.snowflake.config import WAREHOUSE_SIZES

    return WAREHOUSE_SIZES.index(normalize_size(size))


# ------------------------------------------------------------------------------------ clone-environment


class CloneParams(Params):
    """``prefix``: the new environment's prefix (``QA`` clones DEV_RAW into QA_RAW ...)."""

    prefix: Ident


def _table_counts(conn: SnowflakeConnection, database: str) -> dict[str, int]:
    """Row counts of every base table of ``database`` by ``SCHEMA.TABLE`` (exact: COUNT(*) per table)."""
    tables = fetch(
        conn,
        f"SELECT TABLE_SCHEMA, TABLE_NAME FROM {quote(database)}.INFORMATION_SCHEMA.TABLES "
        "WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA <> 'INFORMATION_SCHEMA' ORDER BY 1, 2",
    )
    counts: dict[str, int] = {}
    for t in tables:
        name = f"{check_identifier(str(t['table_schema']))}.{check_identifier(str(t['table_name']))}"
        counts[name] = int(scalar(conn, "SELECT COUNT(*) FROM IDENTIFIER(%s)", (f"{database}.{name}",)) or 0)
    return counts


class CloneEnvironment(_SfVerb):
    name = "clone-environment"
    params_model = CloneParams
    target_kinds = ("environment",)
    description = "CREATE DATABASE <PREFIX>_<LAYER> CLONE <source> for each database of the environment (zero-copy)."

    def plan(self, target: TargetRef, params: CloneParams) -> Plan:
        env: EnvironmentLocator = parse_locator(target, self.target_kinds)
        if params.prefix == env.prefix:
            raise ConnectorError(f"the new prefix must differ from the source's ({env.prefix})")
        pairs = [(src, f"{params.prefix}_{src.split('_', 1)[1]}") for src in env.databases]
        with self.connector.session("planning the clone of an environment") as conn:
            existing = {str(r["name"]).upper() for r in fetch(conn, "SHOW DATABASES")}
            taken = [clone for _, clone in pairs if clone in existing]
            absent = [src for src, _ in pairs if src not in existing]
            if absent:
                raise ConnectorError(f"source database(s) missing: {', '.join(absent)}")
            if taken:
                raise ConnectorError(
                    f"database(s) already exist: {', '.join(taken)}; choose another prefix (nothing is replaced)"
                )
            counts = {src: _table_counts(conn, src) for src, _ in pairs}
        steps = [
            _step(f"CREATE DATABASE {quote(clone)} CLONE {quote(src)}", (), f"cloned {src} into {clone}")
            for src, clone in pairs
        ]
        return Plan(
            summary=f"clone {', '.join(src for src, _ in pairs)} into {', '.join(c for _, c in pairs)} "
            "(zero-copy, with data)",
            touches=[
                Touch(
                    kind="database",
                    name=clone,
                    detail={"source": src, "tables": len(counts[src]), "rows": sum(counts[src].values())},
                )
                for src, clone in pairs
            ],
            counts={"databases": len(pairs), "tables": sum(len(c) for c in counts.values())},
            warnings=["tasks in the clones start suspended and pipes paused, as Snowflake clones them"],
            risk=Risk.HIGH,
            details={"pairs": [list(p) for p in pairs], "steps": steps, "source_counts": counts},
        )

    def execute(self, target: TargetRef, params: CloneParams, ctx: ExecutionContext) -> Outcome:
        env: EnvironmentLocator = parse_locator(target, self.target_kinds)
        plan = ctx.plan or self.plan(target, params)
        made = 0
        counts: dict[str, dict[str, int]] = {}
        with self._tagged(ctx, env.databases[0], "cloning an environment") as runner:
            for step, (src, clone) in zip(plan.details["steps"], plan.details["pairs"], strict=True):
                if runner.done(render(step["sql"])) is None:
                    counts[src] = _table_counts(runner.conn, src)  # the snapshot the clone takes
                    fetch(runner.conn, step["sql"])
                    made += 1
                    ctx.log(step["what"])
                    ctx.executed(f"cloned {made} database(s)", {"databases": [c for _, c in plan.details["pairs"]]})
                else:
                    ctx.log(f"{clone} was cloned by an earlier delivery")
        return Outcome(
            summary=f"{made} database(s) cloned"
            + (f", {len(plan.details['pairs']) - made} earlier" if made < len(plan.details["pairs"]) else ""),
            details={"pairs": plan.details["pairs"], "source_counts": {**plan.details["source_counts"], **counts}},
            already_done=made == 0,
        )

    def verify(self, target: TargetRef, params: CloneParams, outcome: Outcome) -> Verification:
        problems: list[str] = []
        with self.connector.session("verifying the cloned environment") as conn:
            for src, clone in outcome.details["pairs"]:
                want: dict[str, int] = outcome.details["source_counts"][src]
                have = _table_counts(conn, clone)
                if set(have) != set(want):
                    problems.append(f"{clone} tables differ from {src}: missing {sorted(set(want) - set(have))}")
                problems += [
                    f"{clone}.{t}: {have[t]} rows, {src} had {n}" for t, n in want.items() if t in have and have[t] != n
                ]
        pairs = ", ".join(c for _, c in outcome.details["pairs"])
        return Verification(
            ok=not problems,
            summary=f"{pairs} hold the source's tables and row counts" if not problems else "; ".join(problems[:10]),
            details={"problems": problems},
        )


VERBS: tuple[type[Verb[Any, Any]], ...] = (ResumeTask, Pause, Rerun, Backfill, ScaleWarehouse, CloneEnvironment)
