"""Tasks and task graphs (CREATE / ALTER / DROP / SHOW TASKS, EXECUTE TASK [RETRY LAST], the scheduler hook)."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Any

from sandbox.snowflake import protocol as p
from sandbox.snowflake.core import Core, Session, columns, fqn, now, parse_ts, sql_like
from sandbox.snowflake.protocol import SqlError
from sandbox.snowflake.sqltext import (
    find_keyword,
    options,
    split_name,
    split_top,
    unquote,
)

DEFAULT_SUSPEND_AFTER_FAILURES = 3
RETRY_WINDOW = dt.timedelta(days=14)
AFTER_ENDS = r"\b(?:WHEN|COMMENT|WAREHOUSE|SCHEDULE|SUSPEND_TASK_AFTER_NUM_FAILURES)\b"

TASK_COLUMNS = columns(
    "created_on:ts name id database_name schema_name owner comment warehouse schedule predecessors state definition "
    "condition allow_overlapping_execution error_integration last_committed_on:ts last_suspended_on:ts "
    "owner_role_type config budget last_suspended_reason"
)


class Tasks(Core):
    """Tasks and task graphs: definitions, runs, history, auto-suspend, RETRY LAST and the scheduler tick."""

    # ------------------------------------------------------------------------------------------- tasks

    def task(self, name: str) -> dict[str, Any]:
        found = self.state["tasks"].get(name)
        if found is None:
            raise SqlError(f"Task {name.split('.')[-1]} does not exist or not authorized.", 2003, "02000")
        return found

    def root_of(self, name: str) -> str:
        task = self.task(name)
        seen = {name}
        while task["predecessors"]:
            name = task["predecessors"][0]
            if name in seen:
                break
            seen.add(name)
            task = self.task(name)
        return name

    def graph(self, root: str) -> list[str]:
        """The tasks of ``root``'s graph, each after its predecessors."""
        order = [root]
        for name in order:
            for child, t in sorted(self.state["tasks"].items()):
                if name in t["predecessors"] and child not in order:
                    order.append(child)
        return order

    def bump_graph_version(self, name: str) -> None:
        try:
            root = self.task(self.root_of(name))
        except SqlError:
            return
        root["graph_version"] = root.get("graph_version", 1) + 1

    def create_task(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, rest = match.groups()
        db, schema, name = self.resolve(session, name_text)
        key = fqn((db, schema, name))
        as_at = find_keyword(rest, "AS")
        if as_at < 0:
            raise SqlError("SQL compilation error: CREATE TASK needs AS <statement>", 1003, "42000")
        head, body = rest[:as_at], rest[as_at + 2 :].strip()
        if key in self.state["tasks"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        after_at = find_keyword(head, "AFTER")
        predecessors: list[str] = []
        if after_at >= 0:
            after = re.split(AFTER_ENDS, head[after_at + 5 :], maxsplit=1, flags=re.I)[0]
            predecessors = [fqn(self.resolve(session, part)) for part in split_top(after, ",")]
            for pred in predecessors:
                self.task(pred)
                root = self.task(self.root_of(pred))
                if root["state"] == "started":
                    raise SqlError(
                        f"Unable to update graph with root task {self.root_of(pred)} since that root task "
                        "is not suspended.",
                        91092,
                        "22000",
                    )
        when = re.search(r"\bWHEN\s+(.*)$", head, re.I | re.S)
        opts = options(head[:after_at] if after_at >= 0 else head)
        previous = self.state["tasks"].get(key, {})
        stamp = now().isoformat()
        self.state["tasks"][key] = {
            "database": db,
            "schema": schema,
            "name": name,
            "id": previous.get("id") or str(uuid.uuid4()),
            "created_on": stamp,
            "last_committed_on": stamp,
            "warehouse": split_name(opts["WAREHOUSE"])[-1] if "WAREHOUSE" in opts else None,
            "schedule": unquote(opts["SCHEDULE"]) if "SCHEDULE" in opts else None,
            "predecessors": predecessors,
            "state": "suspended",
            "definition": body,
            "condition": when.group(1).strip() if when else None,
            "comment": unquote(opts.get("COMMENT", "''")),
            "suspend_after_failures": int(
                unquote(opts.get("SUSPEND_TASK_AFTER_NUM_FAILURES", str(DEFAULT_SUSPEND_AFTER_FAILURES)))
            ),
            "consecutive_failures": 0,
            "graph_version": previous.get("graph_version", 0) + 1,
            "last_suspended_on": None,
            "last_suspended_reason": None,
            "fail_next": previous.get("fail_next", []),
        }
        self.bump_graph_version(key)
        self.save()
        return p.status(f"Task {name} successfully created.")

    def alter_task(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text, action = match.groups()
        key = fqn(self.resolve(session, name_text))
        if if_exists and key not in self.state["tasks"]:
            return p.status()
        task = self.task(key)
        verb = action.split()[0].upper()
        root_key = self.root_of(key)
        if root_key != key and self.task(root_key)["state"] == "started":
            raise SqlError(
                f"Unable to update graph with root task {root_key} since that root task is not suspended.",
                91092,
                "22000",
            )
        if verb == "RESUME":
            task["state"] = "started"
            task["consecutive_failures"] = 0
        elif verb == "SUSPEND":
            if task["state"] == "started":
                task["state"], task["last_suspended_on"] = "suspended", now().isoformat()
                task["last_suspended_reason"] = "USER_SUSPENDED"
        elif verb == "SET":
            opts = options(action[3:])
            if "SUSPEND_TASK_AFTER_NUM_FAILURES" in opts:
                task["suspend_after_failures"] = int(unquote(opts["SUSPEND_TASK_AFTER_NUM_FAILURES"]))
            if "SCHEDULE" in opts:
                task["schedule"] = unquote(opts["SCHEDULE"])
            if "WAREHOUSE" in opts:
                task["warehouse"] = split_name(opts["WAREHOUSE"])[-1]
        else:  # MODIFY AS <sql>
            task["definition"] = re.sub(r"^MODIFY\s+AS\s+", "", action, flags=re.I).strip()
            task["last_committed_on"] = now().isoformat()
            self.bump_graph_version(key)
        self.save()
        return p.status()

    def drop_task(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text = match.groups()
        key = fqn(self.resolve(session, name_text))
        if key not in self.state["tasks"]:
            if if_exists:
                return p.status("Drop statement executed successfully (task already dropped).")
            self.task(key)
        self.bump_graph_version(key)
        del self.state["tasks"][key]
        for other in self.state["tasks"].values():
            other["predecessors"] = [pred for pred in other["predecessors"] if pred != key]
        self.save()
        return p.status(f"{key.split('.')[-1]} successfully dropped.")

    def show_tasks(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        like, scope, scope_name = match.groups()
        columns = TASK_COLUMNS
        rows = []
        for _key, t in sorted(self.state["tasks"].items()):
            if like and not sql_like(t["name"], unquote(like)):
                continue
            if scope and not self._in_scope(session, t, scope, scope_name):
                continue
            rows.append(
                [
                    parse_ts(t["created_on"]),
                    t["name"],
                    t["id"],
                    t["database"],
                    t["schema"],
                    "SYSADMIN",
                    t["comment"],
                    t["warehouse"],
                    t["schedule"],
                    json.dumps(t["predecessors"]),
                    t["state"],
                    t["definition"],
                    t["condition"],
                    "false",
                    "null",
                    parse_ts(t["last_committed_on"]),
                    parse_ts(t["last_suspended_on"]),
                    "ROLE",
                    None,
                    None,
                    t["last_suspended_reason"],
                ]
            )
        return p.rowset(columns, rows, statement_type=p.SHOW)

    def execute_task(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        name_text, retry = match.groups()
        key = fqn(self.resolve(session, name_text))
        self.task(key)
        if retry:
            self.retry_last(key)
        else:
            self.run_graph(key, "EXECUTE TASK")
        return p.status(f"Task {key.split('.')[-1]} is scheduled to run immediately.")

    def run_graph(self, start: str, scheduled_from: str) -> dict[str, str]:
        """Run ``start`` and, when it succeeds, the graph's later tasks; the graph run's task states."""
        root_key = self.root_of(start)
        root = self.task(root_key)
        run = {
            "run_id": int(now().timestamp() * 1000),
            "graph_version": root["graph_version"],
            "time": now().isoformat(),
            "root": root_key,
            "attempt": 1,
            "tasks": {},
        }
        self._run_tasks(run, self.graph(start), scheduled_from)
        self.state["graph_runs"][root_key] = run
        self._count_failures(root_key, run)
        self.save()
        return dict(run["tasks"])

    def retry_last(self, key: str) -> None:
        root_key = self.root_of(key)
        if root_key != key:
            raise SqlError(f"Cannot perform retry: task {key} is not a root task.", 91130, "22000")
        run = self.state["graph_runs"].get(root_key)
        failed = [name for name, state in (run or {}).get("tasks", {}).items() if state == "FAILED"]
        if run is None or not failed:
            raise SqlError(f"Cannot perform retry: the last graph run of task {key} did not fail.", 91131, "22000")
        if now() - dt.datetime.fromisoformat(run["time"]) > RETRY_WINDOW:
            raise SqlError(
                f"Cannot perform retry: the last graph run of task {key} is older than 14 days.", 91132, "22000"
            )
        if run["graph_version"] != self.task(root_key)["graph_version"]:
            raise SqlError(f"Cannot perform retry: the graph of task {key} changed since its last run.", 91133, "22000")
        run["attempt"] += 1
        order = [name for name in self.graph(root_key) if run["tasks"].get(name) != "SUCCEEDED"]
        self._run_tasks(run, order, "RETRY")
        self._count_failures(root_key, run)
        self.save()

    def _run_tasks(self, run: dict[str, Any], order: list[str], scheduled_from: str) -> None:
        for position, name in enumerate(order):
            task = self.task(name)
            preds = [pred for pred in task["predecessors"] if pred in run["tasks"] or pred in order]
            if position and any(run["tasks"].get(pred) != "SUCCEEDED" for pred in preds):
                continue  # a predecessor failed or did not run: the graph run stops on this branch
            if position and task["state"] != "started":
                continue  # a suspended child does not run
            run["tasks"][name] = self._run_one(task, run, scheduled_from)

    def _run_one(self, task: dict[str, Any], run: dict[str, Any], scheduled_from: str) -> str:
        """Run one task of a graph run (its WHEN condition first: false -> SKIPPED); its TASK_HISTORY state."""
        started = now()
        error: SqlError | None = None
        query_id = str(uuid.uuid4())
        session = self.internal_session(task["database"], task["schema"])
        state = "SUCCEEDED"
        try:
            if (
                task["condition"]
                and not p.rows_of(self.fs.query(session.token, f"SELECT {self.rewrite(session, task['condition'])}"))[
                    0
                ][0]
            ):
                state = "SKIPPED"
            elif task["fail_next"]:
                raise SqlError(task["fail_next"].pop(0), 100132, "P0000")
            else:
                query_id = self.run(session, task["definition"]).get("queryId") or query_id
        except SqlError as exc:
            error, state = exc, "FAILED"
        root = self.task(run["root"])
        self.insert_history(
            "TASK_HISTORY",
            {
                "QUERY_ID": query_id,
                "NAME": task["name"],
                "DATABASE_NAME": task["database"],
                "SCHEMA_NAME": task["schema"],
                "QUERY_TEXT": task["definition"],
                "CONDITION_TEXT": task["condition"],
                "STATE": state,
                "ERROR_CODE": f"{error.code:06d}" if error else None,
                "ERROR_MESSAGE": error.message if error else None,
                "SCHEDULED_TIME": started,
                "QUERY_START_TIME": started,
                "NEXT_SCHEDULED_TIME": None,
                "COMPLETED_TIME": now(),
                "ROOT_TASK_ID": root["id"],
                "GRAPH_VERSION": run["graph_version"],
                "RUN_ID": run["run_id"],
                "RETURN_VALUE": None,
                "SCHEDULED_FROM": scheduled_from,
                "ATTEMPT_NUMBER": run["attempt"],
            },
        )
        return state

    def _count_failures(self, root_key: str, run: dict[str, Any]) -> None:
        root = self.task(root_key)
        if "FAILED" not in run["tasks"].values():
            root["consecutive_failures"] = 0
            return
        root["consecutive_failures"] = root.get("consecutive_failures", 0) + 1
        if root["state"] == "started" and root["consecutive_failures"] >= root["suspend_after_failures"]:
            root["state"], root["last_suspended_on"] = "suspended", now().isoformat()
            root["last_suspended_reason"] = "FAILED_AND_AUTO_SUSPENDED"

    def run_scheduler(self, only: list[str] | None = None) -> list[str]:
        """One tick of the scheduler: every started root task with a schedule (of ``only``, when given) runs its
        graph once."""
        with self.lock:
            wanted = None if only is None else {".".join(split_name(name)) for name in only}
            roots = [
                key
                for key, t in sorted(self.state["tasks"].items())
                if not t["predecessors"]
                and t["state"] == "started"
                and t["schedule"]
                and (wanted is None or key in wanted)
            ]
            for key in roots:
                self.run_graph(key, "SCHEDULE")
            return roots

    def fail_next(self, name: str, times: int, message: str) -> None:
        """The next ``times`` runs of task ``name`` fail with ``message`` (0: the next run runs its body)."""
        with self.lock:
            task = self.task(".".join(split_name(name)))
            task["fail_next"] = [message] * times
            self.save()
