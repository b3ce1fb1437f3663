"""The stateful part of the Snowflake emulator: what fakesnow cannot do, done in front of it.

:class:`Emulator` receives every statement a client sends (``execute``), answers the contract's statements itself
(tasks and task graphs, warehouses, query tags and query history, stages, file formats, COPY INTO with load
metadata, pipes, streams, procedures, clone with data) and forwards everything else to fakesnow in the client's own
fakesnow session (so transactions span both). Table functions and ``SYSTEM$`` functions inside a SELECT are
rewritten into plain SQL over the layer's tables and then forwarded, so WHERE/ORDER BY run on the real engine.

State: the objects (tasks, pipes, stages, streams, procedures, warehouses, load metadata) are a JSON document
(``ROOT/snowflake/state.json``, rewritten after each change): the layer's own logic reads them, and one file is easy
to inspect and reset. The histories (query, task, copy, pipe usage) are append-only tables in fakesnow's private
``_EMULATOR`` database, because clients read them with arbitrary SQL. A stream is a view over the difference
between its table and a snapshot of it (``_EMULATOR.STREAMS``) taken at the stream's offset.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import itertools
import json
import re
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.snowflake import protocol as p
from sandbox.snowflake.protocol import Column, Fakesnow, SqlError
from sandbox.snowflake.sqltext import (
    NAME,
    STRING,
    closing_paren,
    find_keyword,
    lit,
    options,
    split_name,
    split_top,
    string_list,
    strip_statement,
    unquote,
)

ADMIN_DB = "_EMULATOR"
DEFAULT_SUSPEND_AFTER_FAILURES = 3
RETRY_WINDOW = dt.timedelta(days=14)
LOAD_METADATA_TTL = dt.timedelta(days=64)
WAREHOUSE_SIZES = {
    "XSMALL": "X-Small",
    "X-SMALL": "X-Small",
    "SMALL": "Small",
    "MEDIUM": "Medium",
    "LARGE": "Large",
    "XLARGE": "X-Large",
    "X-LARGE": "X-Large",
    "XXLARGE": "2X-Large",
    "X2LARGE": "2X-Large",
    "2X-LARGE": "2X-Large",
    "XXXLARGE": "3X-Large",
    "X3LARGE": "3X-Large",
    "3X-LARGE": "3X-Large",
    "X4LARGE": "4X-Large",
    "4X-LARGE": "4X-Large",
    "X5LARGE": "5X-Large",
    "5X-LARGE": "5X-Large",
    "X6LARGE": "6X-Large",
    "6X-LARGE": "6X-Large",
}

HISTORY_TABLES = {
    "QUERY_HISTORY": "QUERY_ID VARCHAR, QUERY_TEXT VARCHAR, DATABASE_NAME VARCHAR, SCHEMA_NAME VARCHAR, "
    "QUERY_TYPE VARCHAR, SESSION_ID NUMBER, USER_NAME VARCHAR, ROLE_NAME VARCHAR, WAREHOUSE_NAME VARCHAR, "
    "WAREHOUSE_SIZE VARCHAR, QUERY_TAG VARCHAR, EXECUTION_STATUS VARCHAR, ERROR_CODE VARCHAR, ERROR_MESSAGE VARCHAR, "
    "START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ, TOTAL_ELAPSED_TIME NUMBER, ROWS_PRODUCED NUMBER",
    "TASK_HISTORY": "QUERY_ID VARCHAR, NAME VARCHAR, DATABASE_NAME VARCHAR, SCHEMA_NAME VARCHAR, QUERY_TEXT VARCHAR, "
    "CONDITION_TEXT VARCHAR, STATE VARCHAR, ERROR_CODE VARCHAR, ERROR_MESSAGE VARCHAR, SCHEDULED_TIME TIMESTAMP_LTZ, "
    "QUERY_START_TIME TIMESTAMP_LTZ, NEXT_SCHEDULED_TIME TIMESTAMP_LTZ, COMPLETED_TIME TIMESTAMP_LTZ, "
    "ROOT_TASK_ID VARCHAR, GRAPH_VERSION NUMBER, RUN_ID NUMBER, RETURN_VALUE VARCHAR, SCHEDULED_FROM VARCHAR, "
    "ATTEMPT_NUMBER NUMBER",
    "COPY_HISTORY": "FILE_NAME VARCHAR, STAGE_LOCATION VARCHAR, LAST_LOAD_TIME TIMESTAMP_LTZ, ROW_COUNT NUMBER, "
    "ROW_PARSED NUMBER, FILE_SIZE NUMBER, FIRST_ERROR_MESSAGE VARCHAR, FIRST_ERROR_LINE_NUMBER NUMBER, "
    "ERROR_COUNT NUMBER, ERROR_LIMIT NUMBER, STATUS VARCHAR, TABLE_CATALOG_NAME VARCHAR, TABLE_SCHEMA_NAME VARCHAR, "
    "TABLE_NAME VARCHAR, PIPE_CATALOG_NAME VARCHAR, PIPE_SCHEMA_NAME VARCHAR, PIPE_NAME VARCHAR, "
    "PIPE_RECEIVED_TIME TIMESTAMP_LTZ",
    "PIPE_USAGE_HISTORY": "PIPE_ID NUMBER, PIPE_CATALOG_NAME VARCHAR, PIPE_SCHEMA_NAME VARCHAR, PIPE_NAME VARCHAR, "
    "START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ, CREDITS_USED NUMBER(38, 6), BYTES_INSERTED NUMBER, "
    "FILES_INSERTED NUMBER",
}


AFTER_ENDS = r"\b(?:WHEN|COMMENT|WAREHOUSE|SCHEDULE|SUSPEND_TASK_AFTER_NUM_FAILURES)\b"


def columns(spec: str) -> list[Column]:
    """``"name size:fixed created_on:ts"`` -> result columns (text unless typed ``fixed``/``ts``/``bool``)."""
    types = {"fixed": "fixed", "ts": "timestamp_ltz", "bool": "boolean"}
    return [Column(n, types[t] if t else "text") for n, _, t in (c.partition(":") for c in spec.split())]


WAREHOUSE_COLUMNS = columns(
    "name state type size min_cluster_count:fixed max_cluster_count:fixed started_clusters:fixed running:fixed "
    "queued:fixed is_default is_current auto_suspend:fixed auto_resume created_on:ts resumed_on:ts updated_on:ts "
    "owner comment"
)
STREAM_COLUMNS = columns(
    "created_on:ts name database_name schema_name owner comment table_name source_type base_tables type stale mode "
    "stale_after:ts invalid_reason owner_role_type"
)
COPY_COLUMNS = columns(
    "file status rows_parsed:fixed rows_loaded:fixed error_limit:fixed errors_seen:fixed first_error "
    "first_error_line:fixed first_error_character:fixed first_error_column_name"
)
PIPE_COLUMNS = columns(
    "created_on:ts name database_name schema_name definition owner notification_channel comment integration pattern "
    "error_integration owner_role_type invalid_reason kind"
)
COPY_INTO = rf"COPY\s+INTO\s+({NAME})(?:\s*\(([^)]*)\))?\s+FROM\s+(@[^\s;]+)(.*)"
TASK_COLUMNS = columns(
    "created_on:ts name id database_name schema_name owner comment warehouse schedule predecessors state definition "
    "condition allow_overlapping_execution error_integration last_committed_on:ts last_suspended_on:ts "
    "owner_role_type config budget last_suspended_reason"
)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fqn(parts: tuple[str, str, str]) -> str:
    return ".".join(parts)


@dataclass
class Session:
    """A client's session: its fakesnow token and what the layer tracks of it."""

    token: str
    id: int
    user: str = ""
    role: str = "SYSADMIN"
    query_tag: str = ""
    warehouse: str | None = None
    database: str | None = None
    schema: str | None = None
    in_transaction: bool = False
    on_commit: list[Any] = field(default_factory=list)  # what the layer does at COMMIT (ROLLBACK drops it)


class Emulator:
    """The layer's state and statement handlers (thread-safe: one lock around state changes)."""

    def __init__(self, directory: Path, fakesnow: Fakesnow) -> None:
        self.directory = directory
        self.state_file = directory / "state.json"
        self.fs = fakesnow
        self.lock = threading.RLock()
        self.sessions: dict[str, Session] = {}
        self._ids = itertools.count(int(now().timestamp()))
        self.state: dict[str, Any] = self._load()
        self.admin = self.fs.login(ADMIN_DB, "PUBLIC")
        self._admin_lock = threading.Lock()
        self.admin_sql("CREATE SCHEMA IF NOT EXISTS _EMULATOR.STREAMS")
        for name, columns in HISTORY_TABLES.items():
            self.admin_sql(f"CREATE TABLE IF NOT EXISTS _EMULATOR.PUBLIC.{name} ({columns})")
        for database in self.state["databases"]:  # re-attach the databases' files after a restart
            self.admin_sql(f"CREATE DATABASE IF NOT EXISTS {database}")

    # ------------------------------------------------------------------------------------------- state

    def _load(self) -> dict[str, Any]:
        empty: dict[str, Any] = {
            "databases": [],
            "tasks": {},
            "graph_runs": {},
            "warehouses": {},
            "stages": {},
            "file_formats": {},
            "pipes": {},
            "streams": {},
            "procedures": {},
            "load_metadata": {},
        }
        try:
            return {**empty, **json.loads(self.state_file.read_text())}
        except (OSError, ValueError):
            return empty

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True, default=str))
        tmp.replace(self.state_file)

    def new_id(self) -> int:
        return next(self._ids)

    def admin_sql(self, sql: str) -> dict[str, Any]:
        """Run ``sql`` in the layer's own fakesnow session (autocommit)."""
        with self._admin_lock:
            return self.fs.query(self.admin, sql)

    def admin_rows(self, sql: str) -> list[tuple[Any, ...]]:
        return p.rows_of(self.admin_sql(sql))

    def insert_history(self, table: str, row: dict[str, Any]) -> None:
        columns = ", ".join(row)
        values = ", ".join(lit(v) for v in row.values())
        self.admin_sql(f"INSERT INTO _EMULATOR.PUBLIC.{table} ({columns}) VALUES ({values})")

    def reset(self) -> None:
        """Forget every object and history the layer keeps (the databases' tables stay in fakesnow)."""
        with self.lock:
            for stream in self.state["streams"].values():
                self.admin_sql(f"DROP TABLE IF EXISTS _EMULATOR.STREAMS.{stream['snapshot']}")
            databases = self.state["databases"]
            self.state = self._load_empty()
            self.state["databases"] = databases
            for table in HISTORY_TABLES:
                self.admin_sql(f"DELETE FROM _EMULATOR.PUBLIC.{table}")
            shutil.rmtree(self.directory / "stages", ignore_errors=True)
            self.save()

    def _load_empty(self) -> dict[str, Any]:
        saved, self.state_file = self.state_file, self.directory / "no-such-state.json"
        try:
            return self._load()
        finally:
            self.state_file = saved

    # ---------------------------------------------------------------------------------------- sessions

    def login(self, token: str, user: str, params: dict[str, Any], query: dict[str, str]) -> Session:
        session = Session(
            token=token,
            id=self.new_id(),
            user=user.upper(),
            role=(query.get("roleName") or "SYSADMIN").upper(),
            query_tag=str(params.get("QUERY_TAG") or ""),
            warehouse=query.get("warehouse", "").upper() or None,
            database=query.get("databaseName", "").upper() or None,
            schema=query.get("schemaName", "").upper() or None,
        )
        with self.lock:
            self.sessions[token] = session
        return session

    def internal_session(self, database: str | None = None, schema: str | None = None) -> Session:
        """A fakesnow session for the layer's own runs (task bodies)."""
        return Session(
            token=self.fs.login(database, schema), id=self.new_id(), user="SYSTEM", database=database, schema=schema
        )

    def resolve(self, session: Session, text: str) -> tuple[str, str, str]:
        """An object name completed with the session's database and schema."""
        parts = split_name(text)
        if len(parts) == 3:
            return parts[0], parts[1], parts[2]
        if len(parts) == 2:
            if session.database is None:
                raise SqlError(
                    f"Cannot perform operation. This session does not have a current database: {text}", 90105, "22000"
                )
            return session.database, parts[0], parts[1]
        if session.database is None or session.schema is None:
            raise SqlError(
                f"Cannot perform operation. This session does not have a current schema: {text}", 90106, "22000"
            )
        return session.database, session.schema, parts[0]

    # ---------------------------------------------------------------------------------------- dispatch

    def execute(self, session: Session, sql: str) -> dict[str, Any]:
        """Answer one client statement and record it in the query history."""
        started = now()
        error: SqlError | None = None
        data: dict[str, Any] = {}
        try:
            data = self.run(session, sql)
        except SqlError as exc:
            error = exc
        finished = now()
        warehouse = self.state["warehouses"].get(session.warehouse or "", {})
        self.insert_history(
            "QUERY_HISTORY",
            {
                "QUERY_ID": data.get("queryId") or str(uuid.uuid4()),
                "QUERY_TEXT": sql,
                "DATABASE_NAME": session.database,
                "SCHEMA_NAME": session.schema,
                "QUERY_TYPE": (strip_statement(sql).split() or ["UNKNOWN"])[0].upper(),
                "SESSION_ID": session.id,
                "USER_NAME": session.user,
                "ROLE_NAME": session.role,
                "WAREHOUSE_NAME": session.warehouse,
                "WAREHOUSE_SIZE": warehouse.get("size"),
                "QUERY_TAG": session.query_tag,
                "EXECUTION_STATUS": "FAIL" if error else "SUCCESS",
                "ERROR_CODE": f"{error.code:06d}" if error else None,
                "ERROR_MESSAGE": error.message if error else None,
                "START_TIME": started,
                "END_TIME": finished,
                "TOTAL_ELAPSED_TIME": int((finished - started).total_seconds() * 1000),
                "ROWS_PRODUCED": data.get("total"),
            },
        )
        if error is not None:
            raise error
        return data

    def run(self, session: Session, sql: str) -> dict[str, Any]:
        """Answer one statement (a client's, a task body's, a procedure body's) without recording it."""
        text = strip_statement(sql)
        for pattern, handler in self.HANDLERS:
            match = re.fullmatch(pattern, text, re.I | re.S)
            if match:
                with self.lock:
                    return handler(self, session, match)
        return self.forward(session, text)

    def forward(self, session: Session, text: str) -> dict[str, Any]:
        """Send ``text`` (its table and SYSTEM$ functions rewritten) to fakesnow in the session's own session."""
        rewritten = self.rewrite(session, text)
        data = self.fs.query(session.token, rewritten)
        session.database = data.get("finalDatabaseName") or session.database
        session.schema = data.get("finalSchemaName") or session.schema
        replaced = re.match(rf"CREATE\s+OR\s+REPLACE\s+(?:TRANSIENT\s+|TEMPORARY\s+)?TABLE\s+({NAME})", text, re.I)
        if replaced:  # a new table has no load metadata
            with self.lock:
                if self.state["load_metadata"].pop(fqn(self.resolve(session, replaced.group(1))), None) is not None:
                    self.save()
        created = re.fullmatch(
            rf"CREATE\s+(?:OR\s+REPLACE\s+)?DATABASE\s+(?:IF\s+NOT\s+EXISTS\s+)?({NAME})", text, re.I
        )
        if created:
            with self.lock:
                self.note_database(split_name(created.group(1))[-1])
        keyword = (text.split() or [""])[0].upper()
        if keyword in ("INSERT", "UPDATE", "DELETE", "MERGE", "CREATE"):
            self.note_stream_reads(session, text)
        return data

    # ------------------------------------------------------------------------------------ transactions

    def begin(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        data = self.fs.query(session.token, match.group(0))
        session.in_transaction = True
        return data

    def commit(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        data = self.fs.query(session.token, match.group(0))
        session.in_transaction = False
        actions, session.on_commit = session.on_commit, []
        for action in actions:
            action()
        return data

    def rollback(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        data = self.fs.query(session.token, match.group(0))
        session.in_transaction = False
        session.on_commit = []
        return data

    # -------------------------------------------------------------------------------- session settings

    def set_query_tag(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        session.query_tag = unquote(match.group(1))
        return p.status()

    def unset_query_tag(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        session.query_tag = ""
        return p.status()

    def use_warehouse(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        name = split_name(match.group(1))[-1]
        self.warehouse(name)
        session.warehouse = name
        return p.status(statement_type=0x4300)

    # -------------------------------------------------------------------------------------- warehouses

    def warehouse(self, name: str) -> dict[str, Any]:
        found = self.state["warehouses"].get(name)
        if found is None:
            raise SqlError(f"Object does not exist, or operation cannot be performed: warehouse {name}", 2043)
        return dict(found)

    @staticmethod
    def warehouse_size(raw: str) -> str:
        size = WAREHOUSE_SIZES.get(unquote(raw).upper())
        if size is None:
            raise SqlError(f"invalid value [{unquote(raw)}] for parameter 'WAREHOUSE_SIZE'", 1008, "22023")
        return size

    def create_warehouse(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, rest = match.groups()
        name = split_name(name_text)[-1]
        if name in self.state["warehouses"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        opts = options(rest or "")
        stamp = now().isoformat()
        self.state["warehouses"][name] = {
            "name": name,
            "size": self.warehouse_size(opts.get("WAREHOUSE_SIZE", "XSMALL")),
            "state": "SUSPENDED" if unquote(opts.get("INITIALLY_SUSPENDED", "FALSE")).upper() == "TRUE" else "STARTED",
            "auto_suspend": int(unquote(opts.get("AUTO_SUSPEND", "600"))),
            "auto_resume": unquote(opts.get("AUTO_RESUME", "TRUE")).upper() == "TRUE",
            "created_on": stamp,
            "updated_on": stamp,
            "resumed_on": stamp,
            "comment": unquote(opts.get("COMMENT", "''")),
        }
        self.save()
        session.warehouse = name  # Snowflake makes a new warehouse the session's current one
        return p.status(f"Warehouse {name} successfully created.")

    def alter_warehouse(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text, action = match.groups()
        name = split_name(name_text)[-1]
        if if_exists and name not in self.state["warehouses"]:
            return p.status()
        warehouse = self.state["warehouses"][name] if name in self.state["warehouses"] else self.warehouse(name)
        verb = action.split()[0].upper()
        if verb == "SUSPEND":
            if warehouse["state"] == "SUSPENDED":
                raise SqlError(f"Invalid state. Warehouse '{name}' cannot be suspended.", 90064, "22000")
            warehouse["state"] = "SUSPENDED"
        elif verb == "RESUME":
            if warehouse["state"] == "STARTED" and "IF SUSPENDED" not in action.upper():
                raise SqlError(f"Invalid state. Warehouse '{name}' cannot be resumed.", 90063, "22000")
            warehouse["state"], warehouse["resumed_on"] = "STARTED", now().isoformat()
        else:
            opts = options(action[3:])
            if not opts:
                raise SqlError(f"SQL compilation error: nothing to set in ALTER WAREHOUSE {name}", 1003, "42000")
            if "WAREHOUSE_SIZE" in opts:
                warehouse["size"] = self.warehouse_size(opts["WAREHOUSE_SIZE"])
            if "AUTO_SUSPEND" in opts:
                warehouse["auto_suspend"] = int(unquote(opts["AUTO_SUSPEND"]))
            if "AUTO_RESUME" in opts:
                warehouse["auto_resume"] = unquote(opts["AUTO_RESUME"]).upper() == "TRUE"
        warehouse["updated_on"] = now().isoformat()
        self.save()
        return p.status()

    def drop_warehouse(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text = match.groups()
        name = split_name(name_text)[-1]
        if self.state["warehouses"].pop(name, None) is None and not if_exists:
            self.warehouse(name)
        self.save()
        return p.status(f"{name} successfully dropped.")

    def show_warehouses(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        like = match.group(1)
        columns = WAREHOUSE_COLUMNS
        rows = []
        for name, w in sorted(self.state["warehouses"].items()):
            if like and not _like(name, unquote(like)):
                continue
            started = w["state"] == "STARTED"
            rows.append(
                [
                    name,
                    w["state"],
                    "STANDARD",
                    w["size"],
                    1,
                    1,
                    1 if started else 0,
                    0,
                    0,
                    "N",
                    "Y" if session.warehouse == name else "N",
                    w["auto_suspend"],
                    "true" if w["auto_resume"] else "false",
                    _ts(w["created_on"]),
                    _ts(w["resumed_on"]),
                    _ts(w["updated_on"]),
                    "SYSADMIN",
                    w["comment"],
                ]
            )
        return p.rowset(columns, rows, statement_type=p.SHOW)

    # ------------------------------------------------------------------------------------------- tasks

    def task(self, name: str) -> dict[str, Any]:
        found = self.state["tasks"].get(name)
        if found is None:
            raise SqlError(f"Task {name.split('.')[-1]} does not exist or not authorized.", 2003, "02000")
        return dict(found) if False else found

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
            if like and not _like(t["name"], unquote(like)):
                continue
            if scope and not self._in_scope(session, t, scope, scope_name):
                continue
            rows.append(
                [
                    _ts(t["created_on"]),
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
                    _ts(t["last_committed_on"]),
                    _ts(t["last_suspended_on"]),
                    "ROLE",
                    None,
                    None,
                    t["last_suspended_reason"],
                ]
            )
        return p.rowset(columns, rows, statement_type=p.SHOW)

    def _in_scope(self, session: Session, obj: dict[str, Any], scope: str, name: str | None) -> bool:
        if scope.upper() == "ACCOUNT":
            return True
        parts = split_name(name) if name else []
        if scope.upper() == "DATABASE":
            return obj["database"] == (parts[-1] if parts else session.database)
        if len(parts) == 2:
            return (obj["database"], obj["schema"]) == (parts[0], parts[1])
        return (obj["database"], obj["schema"]) == (session.database, parts[-1] if parts else session.schema)

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
        started = now()
        error: SqlError | None = None
        query_id = str(uuid.uuid4())
        if task["fail_next"]:
            error = SqlError(task["fail_next"].pop(0), 100132, "P0000")
        else:
            session = self.internal_session(task["database"], task["schema"])
            try:
                data = self.run(session, task["definition"])
                query_id = data.get("queryId") or query_id
            except SqlError as exc:
                error = exc
        state = "FAILED" if error else "SUCCEEDED"
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

    # ---------------------------------------------------------------------- table and SYSTEM$ functions

    TABLE_FUNCTION = re.compile(
        r"TABLE\s*\(\s*(?:((?:\"[^\"]+\"|[A-Za-z_][A-Za-z0-9_$]*))\s*\.\s*)?INFORMATION_SCHEMA\s*\.\s*"
        r"(TASK_HISTORY|QUERY_HISTORY_BY_SESSION|QUERY_HISTORY_BY_USER|QUERY_HISTORY|COPY_HISTORY|PIPE_USAGE_HISTORY)"
        r"\s*\(",
        re.I,
    )

    def rewrite(self, session: Session, text: str) -> str:
        """``text`` with each history table function replaced by a subquery over the layer's tables and each
        ``SYSTEM$PIPE_STATUS`` / ``SYSTEM$STREAM_HAS_DATA`` call by its value."""
        while (match := self.TABLE_FUNCTION.search(text)) is not None:
            args_open = match.end() - 1
            args_close = closing_paren(text, args_open)
            outer_close = closing_paren(text, text.index("(", match.start()))
            database = split_name(match.group(1))[0] if match.group(1) else None
            args = {}
            for arg in split_top(text[args_open + 1 : args_close], ","):
                key, _, value = arg.partition("=>")
                args[key.strip().upper()] = value.strip()
            query = self._history_query(session, match.group(2).upper(), database, args)
            text = f"{text[: match.start()]}({query}){text[outer_close + 1 :]}"
        text = re.sub(
            rf"SYSTEM\$PIPE_STATUS\s*\(\s*({STRING})\s*\)",
            lambda m: lit(self.pipe_status(session, unquote(m.group(1)))),
            text,
            flags=re.I,
        )
        return re.sub(
            rf"SYSTEM\$STREAM_HAS_DATA\s*\(\s*({STRING})\s*\)",
            lambda m: lit(self.stream_has_data(session, unquote(m.group(1)))),
            text,
            flags=re.I,
        )

    def _history_query(self, session: Session, function: str, database: str | None, args: dict[str, str]) -> str:
        where: list[str] = []
        limit = int(unquote(args.pop("RESULT_LIMIT", "100")))
        if function == "TASK_HISTORY":
            table, order = "TASK_HISTORY", "SCHEDULED_TIME"
            if database:
                where.append(f"DATABASE_NAME = {lit(database)}")
            bounds = {
                "SCHEDULED_TIME_RANGE_START": "SCHEDULED_TIME >= ",
                "SCHEDULED_TIME_RANGE_END": "SCHEDULED_TIME < ",
            }
            if "TASK_NAME" in args:
                where.append(f"NAME = {lit(split_name(unquote(args.pop('TASK_NAME')))[-1])}")
            if "ROOT_TASK_ID" in args:
                where.append(f"ROOT_TASK_ID = {args.pop('ROOT_TASK_ID')}")
            if unquote(args.pop("ERROR_ONLY", "FALSE")).upper() == "TRUE":
                where.append("STATE = 'FAILED'")
        elif function.startswith("QUERY_HISTORY"):
            table, order = "QUERY_HISTORY", "START_TIME"
            bounds = {"END_TIME_RANGE_START": "END_TIME >= ", "END_TIME_RANGE_END": "END_TIME < "}
            if function == "QUERY_HISTORY_BY_SESSION":
                where.append(f"SESSION_ID = {args.pop('SESSION_ID', str(session.id))}")
            if function == "QUERY_HISTORY_BY_USER":
                where.append(f"USER_NAME = {lit(unquote(args.pop('USER_NAME', lit(session.user))).upper())}")
        elif function == "COPY_HISTORY":
            table, order = "COPY_HISTORY", "LAST_LOAD_TIME"
            bounds = {"START_TIME": "LAST_LOAD_TIME >= ", "END_TIME": "LAST_LOAD_TIME < "}
            parts = split_name(unquote(args.pop("TABLE_NAME", "''")))
            names = ("TABLE_CATALOG_NAME", "TABLE_SCHEMA_NAME", "TABLE_NAME")
            scope = {"TABLE_CATALOG_NAME": database or session.database, "TABLE_SCHEMA_NAME": session.schema}
            for column, value in zip(names[3 - len(parts) :], parts, strict=True):
                scope[column] = value
            scope["TABLE_NAME"] = parts[-1] if parts else None
            where += [f"{column} = {lit(value)}" for column, value in scope.items() if value]
        else:
            table, order = "PIPE_USAGE_HISTORY", "START_TIME"
            bounds = {"DATE_RANGE_START": "START_TIME >= ", "DATE_RANGE_END": "END_TIME <= "}
            if "PIPE_NAME" in args:
                parts = split_name(unquote(args.pop("PIPE_NAME")))
                for column, value in zip(
                    ("PIPE_CATALOG_NAME", "PIPE_SCHEMA_NAME", "PIPE_NAME")[3 - len(parts) :], parts, strict=True
                ):
                    where.append(f"{column} = {lit(value)}")
        for key, prefix in bounds.items():
            if key in args:
                where.append(f"{prefix}({args.pop(key)})")
        if args:
            raise SqlError(
                f"SQL compilation error: the emulator's {function} does not take {', '.join(args)}", 1003, "42000"
            )
        condition = " AND ".join(where) or "TRUE"
        return f"SELECT * FROM _EMULATOR.PUBLIC.{table} WHERE {condition} ORDER BY {order} DESC LIMIT {limit}"

    # ------------------------------------------------------------------------------------------- clone

    def databases(self) -> list[str]:
        return [str(row[1]) for row in self.admin_rows("SHOW DATABASES")]

    def create_database_clone(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        """A clone WITH data: every schema, table (CREATE TABLE AS SELECT) and view of the source, and the layer's
        objects in it: tasks suspended, pipes paused, stages with their files, file formats, streams (starting at
        the clone), procedures, and the tables' load metadata."""
        replace, if_not_exists, target_text, source_text = match.groups()
        target, source = split_name(target_text)[-1], split_name(source_text)[-1]
        existing = self.databases()
        if source not in existing:
            raise SqlError(f"Database '{source}' does not exist or not authorized.", 2003)
        if target in existing:
            if if_not_exists:
                return p.status(f"{target} already exists, statement succeeded.")
            if not replace:
                raise SqlError(f"Object '{target}' already exists.", 2002, "42710")
            self._empty_database(target)
        self.admin_sql(f"CREATE DATABASE IF NOT EXISTS {target}")
        self.note_database(target)
        schemas = [
            str(r[0])
            for r in self.admin_rows(
                f"SELECT schema_name FROM {source}.INFORMATION_SCHEMA.SCHEMATA "
                "WHERE schema_name <> 'INFORMATION_SCHEMA'"
            )
        ]
        for schema in schemas:
            self.admin_sql(f"CREATE SCHEMA IF NOT EXISTS {target}.{schema}")
        for schema, table in self.admin_rows(
            f"SELECT table_schema, table_name FROM {source}.INFORMATION_SCHEMA.TABLES "
            "WHERE table_schema <> 'INFORMATION_SCHEMA' AND table_type = 'BASE TABLE'"
        ):
            self.admin_sql(f"CREATE TABLE {target}.{schema}.{table} AS SELECT * FROM {source}.{schema}.{table}")
        in_target = self.internal_session(target, None)
        streams = {key for key in self.state["streams"] if key.startswith(f"{source}.")}
        for schema, view, definition in self.admin_rows(
            f"SELECT table_schema, table_name, view_definition FROM {source}.INFORMATION_SCHEMA.VIEWS "
            "WHERE table_schema <> 'INFORMATION_SCHEMA'"
        ):
            if f"{source}.{schema}.{view}" not in streams:
                self.fs.query(in_target.token, str(definition).rstrip(";"))

        def moved(name: str | None) -> str | None:
            return f"{target}.{name[len(source) + 1 :]}" if name and name.startswith(f"{source}.") else name

        stamp = now().isoformat()
        for key, task in list(self.state["tasks"].items()):
            if task["database"] == source:
                self.state["tasks"][moved(key) or key] = {
                    **task,
                    "database": target,
                    "id": str(uuid.uuid4()),
                    "state": "suspended",
                    "predecessors": [moved(x) for x in task["predecessors"]],
                    "fail_next": [],
                    "consecutive_failures": 0,
                    "created_on": stamp,
                    "last_suspended_reason": None,
                }
        for key, stage in list(self.state["stages"].items()):
            if stage["database"] == source:
                folder = (
                    stage["folder"]
                    if stage["url"]
                    else str(self.directory / "stages" / target / stage["schema"] / stage["name"])
                )
                if not stage["url"]:
                    shutil.copytree(stage["folder"], folder, dirs_exist_ok=True)
                self.state["stages"][moved(key) or key] = {**stage, "database": target, "folder": folder}
        for key, fmt in list(self.state["file_formats"].items()):
            if key.startswith(f"{source}."):
                self.state["file_formats"][moved(key) or key] = dict(fmt)
        for key, pipe in list(self.state["pipes"].items()):
            if pipe["database"] == source:
                self.state["pipes"][moved(key) or key] = {
                    **pipe,
                    "database": target,
                    "id": self.new_id(),
                    "paused": True,
                    "pending": [],
                    "table": moved(pipe["table"]),
                    "stage": moved(pipe["stage"]),
                    "definition": pipe["definition"],
                    "last_error": None,
                }
        for key, proc in list(self.state["procedures"].items()):
            if proc["database"] == source:
                self.state["procedures"][moved(key) or key] = {**proc, "database": target}
        for table, loads in list(self.state["load_metadata"].items()):
            if table.startswith(f"{source}."):
                self.state["load_metadata"][moved(table) or table] = {(moved(f) or f): at for f, at in loads.items()}
        for key in sorted(streams):
            stream = self.state["streams"][key]
            clone = {
                **stream,
                "database": target,
                "table": moved(stream["table"]),
                "created_on": stamp,
                "snapshot": re.sub(r"\W", "_", f"{target}__{stream['schema']}__{stream['name']}"),
            }
            self.admin_sql(
                f"CREATE OR REPLACE TABLE _EMULATOR.STREAMS.{clone['snapshot']} AS SELECT * FROM {clone['table']}"
            )
            self.admin_sql(self._stream_view(moved(key) or key, clone))
            self.state["streams"][moved(key) or key] = clone
        self.save()
        return p.status(f"Database {target} successfully created.")

    def _empty_database(self, database: str) -> None:
        """Drop every schema of ``database`` and forget the layer's objects in it (fakesnow has no DROP DATABASE)."""
        for (schema,) in self.admin_rows(
            f"SELECT schema_name FROM {database}.INFORMATION_SCHEMA.SCHEMATA "
            "WHERE schema_name NOT IN ('INFORMATION_SCHEMA', 'PUBLIC')"
        ):
            self.admin_sql(f"DROP SCHEMA {database}.{schema} CASCADE")
        for kind in ("tasks", "stages", "file_formats", "pipes", "procedures", "streams", "load_metadata"):
            for key in [k for k in self.state[kind] if k.startswith(f"{database}.")]:
                del self.state[kind][key]

    def note_database(self, name: str) -> None:
        """Remember a database so a restarted layer re-attaches its file."""
        if name not in self.state["databases"]:
            self.state["databases"].append(name)
            self.save()

    # ----------------------------------------------------------------------------------------- streams

    def stream(self, key: str) -> dict[str, Any]:
        found = self.state["streams"].get(key)
        if found is None:
            raise SqlError(f"Stream '{key}' does not exist or not authorized.", 2003)
        return found

    def _stream_view(self, key: str, stream: dict[str, Any]) -> str:
        """The stream as a view: rows added to its table since the offset snapshot (INSERT) and rows gone from it
        (DELETE; not for an APPEND_ONLY stream)."""
        table, snapshot = stream["table"], f"_EMULATOR.STREAMS.{stream['snapshot']}"
        inserted = (
            f"SELECT *, 'INSERT' AS METADATA$ACTION, FALSE AS METADATA$ISUPDATE, NULL::VARCHAR AS "
            f"METADATA$ROW_ID FROM (SELECT * FROM {table} EXCEPT ALL SELECT * FROM {snapshot})"
        )
        deleted = (
            f" UNION ALL SELECT *, 'DELETE', FALSE, NULL::VARCHAR FROM (SELECT * FROM {snapshot} EXCEPT ALL "
            f"SELECT * FROM {table})"
        )
        return f"CREATE OR REPLACE VIEW {key} AS {inserted}{'' if stream['mode'] == 'APPEND_ONLY' else deleted}"

    def create_stream(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, table_text, rest = match.groups()
        db, schema, name = self.resolve(session, name_text)
        key = fqn((db, schema, name))
        if key in self.state["streams"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        table = fqn(self.resolve(session, table_text))
        self.table_columns(session, table)
        append_only = unquote(options(rest or "").get("APPEND_ONLY", "FALSE")).upper() == "TRUE"
        stream = {
            "database": db,
            "schema": schema,
            "name": name,
            "table": table,
            "created_on": now().isoformat(),
            "snapshot": re.sub(r"\W", "_", f"{db}__{schema}__{name}"),
            "mode": "APPEND_ONLY" if append_only else "DEFAULT",
            "comment": unquote(options(rest or "").get("COMMENT", "''")),
        }
        self.admin_sql(f"CREATE OR REPLACE TABLE _EMULATOR.STREAMS.{stream['snapshot']} AS SELECT * FROM {table}")
        self.admin_sql(self._stream_view(key, stream))
        self.state["streams"][key] = stream
        self.save()
        return p.status(f"Stream {name} successfully created.")

    def note_stream_reads(self, session: Session, text: str) -> None:
        """A DML statement that read from a stream advances the stream's offset (at COMMIT in a transaction)."""
        for match in re.finditer(rf"\b(?:FROM|JOIN|USING)\s+({NAME})", text, re.I):
            try:
                key = fqn(self.resolve(session, match.group(1)))
            except SqlError:
                continue
            if key in self.state["streams"]:
                self.after_commit(session, lambda key=key: self.advance_stream(key))

    def advance_stream(self, key: str) -> None:
        stream = self.state["streams"].get(key)
        if stream is not None:
            self.admin_sql(
                f"CREATE OR REPLACE TABLE _EMULATOR.STREAMS.{stream['snapshot']} AS SELECT * FROM {stream['table']}"
            )

    def stream_has_data(self, session: Session, name: str) -> bool:
        key = fqn(self.resolve(session, name))
        self.stream(key)
        return bool(self.admin_rows(f"SELECT COUNT(*) FROM (SELECT 1 FROM {key} LIMIT 1)")[0][0])

    def drop_stream(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text = match.groups()
        key = fqn(self.resolve(session, name_text))
        stream = self.state["streams"].pop(key, None)
        if stream is None:
            if not if_exists:
                self.stream(key)
            return p.status("Drop statement executed successfully (stream already dropped).")
        self.admin_sql(f"DROP VIEW IF EXISTS {key}")
        self.admin_sql(f"DROP TABLE IF EXISTS _EMULATOR.STREAMS.{stream['snapshot']}")
        self.save()
        return p.status(f"{stream['name']} successfully dropped.")

    def show_streams(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        like, scope, scope_name = match.groups()
        rows = [
            [
                _ts(s["created_on"]),
                s["name"],
                s["database"],
                s["schema"],
                "SYSADMIN",
                s["comment"],
                s["table"],
                "Table",
                s["table"],
                "DELTA",
                "false",
                s["mode"],
                None,
                None,
                "ROLE",
            ]
            for _key, s in sorted(self.state["streams"].items())
            if (not like or _like(s["name"], unquote(like)))
            and (not scope or self._in_scope(session, s, scope, scope_name))
        ]
        return p.rowset(STREAM_COLUMNS, rows, statement_type=p.SHOW)

    # -------------------------------------------------------------------------------------- procedures

    def create_procedure(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, args_text, returns, body = match.groups()
        db, schema, name = self.resolve(session, name_text)
        key = fqn((db, schema, name))
        if key in self.state["procedures"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        args = [a.split()[0].upper() for a in split_top(args_text, ",")]
        body = body.strip()
        body = body[2:-2] if body.startswith("$$") else unquote(body)
        self.state["procedures"][key] = {
            "database": db,
            "schema": schema,
            "name": name,
            "args": args,
            "returns": returns.strip(),
            "body": body.strip(),
            "created_on": now().isoformat(),
        }
        self.save()
        return p.status(f"Function {name} successfully created.")

    def call(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        """Run a Snowflake Scripting body's statements in order, in the caller's session (and transaction):
        ``:name`` binds an argument or a LET variable, ``RETURN expr`` ends the call with its value."""
        name_text, args_text = match.groups()
        key = fqn(self.resolve(session, name_text))
        proc = self.state["procedures"].get(key)
        if proc is None:
            raise SqlError(f"Unknown user-defined function {key}.", 2140, "42601")
        values = split_top(args_text, ",")
        if len(values) != len(proc["args"]):
            raise SqlError(
                f"Invalid argument types for function '{proc['name']}': {len(values)} given, "
                f"{len(proc['args'])} expected.",
                1044,
                "42P13",
            )
        env = {arg: f"({value})" for arg, value in zip(proc["args"], values, strict=True)}
        inner = Session(
            token=session.token,
            id=session.id,
            user=session.user,
            query_tag=session.query_tag,
            warehouse=session.warehouse,
            database=proc["database"],
            schema=proc["schema"],
            in_transaction=session.in_transaction,
            on_commit=session.on_commit,
        )
        result = None
        try:
            result = self._run_body(inner, proc["body"], env)
        except SqlError as exc:
            raise SqlError(
                f"Uncaught exception of type 'STATEMENT_ERROR' in {proc['name']}: {exc.message}", exc.code, exc.sqlstate
            ) from exc
        finally:
            session.in_transaction, session.on_commit = inner.in_transaction, inner.on_commit
        return p.rowset([Column(proc["name"].upper())], [[result]])

    def _run_body(self, session: Session, body: str, env: dict[str, str]) -> Any:
        if re.match(r"\s*DECLARE\b", body, re.I):
            declare_end = find_keyword(body, "BEGIN")
            for line in split_top(body[:declare_end].strip()[7:], ";"):
                var = re.match(r"(\w+)(?:\s+\w+(?:\([^)]*\))?)?\s*(?::=|DEFAULT)\s*(.*)", line, re.S)
                if var:
                    env[var.group(1).upper()] = f"({self._bind(var.group(2), env)})"
            body = body[declare_end:]
        begin, end = find_keyword(body, "BEGIN"), body.upper().rstrip().rstrip(";").rstrip().rfind("END")
        if begin < 0 or end < begin:
            raise SqlError("the emulator runs Snowflake Scripting bodies of the form BEGIN ... END", 1003, "42000")
        for statement in split_top(body[begin + 5 : end], ";"):
            let = re.fullmatch(r"(?:LET\s+)?(\w+)(?:\s+\w+)?\s*:=\s*(.*)", statement, re.I | re.S)
            if let:
                env[let.group(1).upper()] = f"({self._bind(let.group(2), env)})"
                continue
            returned = re.fullmatch(r"RETURN\s+(.*)", statement, re.I | re.S)
            if returned:
                data = self.fs.query(session.token, f"SELECT {self._bind(returned.group(1), env, bare=True)}")
                return p.rows_of(data)[0][0]
            self.run(session, self._bind(statement, env))
        return None

    @staticmethod
    def _bind(sql: str, env: dict[str, str], *, bare: bool = False) -> str:
        """``:name`` (and, in expressions, a bare ``name``) replaced by its argument's or variable's SQL."""
        pattern = r"(?<![:\w])(:?)([A-Za-z_]\w*)\b" if bare else r"(?<!:)(:)([A-Za-z_]\w*)\b"
        return re.sub(pattern, lambda m: env.get(m.group(2).upper(), m.group(0)), sql)

    def drop_procedure(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text = match.groups()
        key = fqn(self.resolve(session, name_text))
        if self.state["procedures"].pop(key, None) is None and not if_exists:
            raise SqlError(f"Procedure '{key}' does not exist or not authorized.", 2003)
        self.save()
        return p.status(f"{key.split('.')[-1]} successfully dropped.")

    # ---------------------------------------------------------------------------------- stages and COPY

    def create_stage(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, rest = match.groups()
        db, schema, name = self.resolve(session, name_text)
        key = fqn((db, schema, name))
        if key in self.state["stages"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        opts = options(rest or "")
        url = unquote(opts["URL"]) if "URL" in opts else None
        if url is not None and not url.startswith("file://"):
            raise SqlError(f"the emulator's stages are folders: URL must be file:///..., not {url}", 1003, "42000")
        folder = Path(url.removeprefix("file://")) if url else self.directory / "stages" / db / schema / name
        if replace and not url:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        self.state["stages"][key] = {
            "database": db,
            "schema": schema,
            "name": name,
            "url": url,
            "folder": str(folder),
            "file_format": opts.get("FILE_FORMAT"),
            "created_on": now().isoformat(),
        }
        self.save()
        return p.status(f"Stage area {name} successfully created.")

    def stage_ref(self, session: Session, text: str) -> tuple[str, str]:
        """``@db.s.stage/sub/path`` -> (the stage's full name, ``sub/path``)."""
        name, _, subpath = text.removeprefix("@").partition("/")
        key = fqn(self.resolve(session, name))
        if key not in self.state["stages"]:
            raise SqlError(f"Stage '{key}' does not exist or not authorized.", 2003)
        return key, subpath

    def stage_files(self, key: str, subpath: str = "", pattern: str | None = None) -> list[str]:
        folder = Path(self.state["stages"][key]["folder"])
        found = sorted(str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file())
        found = [f for f in found if f.startswith(subpath)]
        return [f for f in found if pattern is None or re.fullmatch(pattern, f)]

    def list_stage(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        ref, rest = match.groups()
        key, subpath = self.stage_ref(session, ref)
        opts = options(rest or "")
        pattern = unquote(opts["PATTERN"]) if "PATTERN" in opts else None
        folder = Path(self.state["stages"][key]["folder"])
        rows = []
        for rel in self.stage_files(key, subpath, pattern):
            path = folder / rel
            stat = path.stat()
            modified = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
            digest = hashlib.md5(path.read_bytes()).hexdigest()
            rows.append([f"{key.split('.')[-1].lower()}/{rel}", stat.st_size, digest, modified])
        return p.rowset(columns("name size:fixed md5 last_modified"), rows)

    def create_file_format(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, rest = match.groups()
        db, schema, name = self.resolve(session, name_text)
        key = fqn((db, schema, name))
        if key in self.state["file_formats"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        opts = {k: unquote(v) for k, v in options(rest).items()}
        if opts.get("TYPE", "CSV").upper() != "CSV":
            raise SqlError("the emulator reads CSV files only (TYPE = CSV)", 1003, "42000")
        self.state["file_formats"][key] = opts
        self.save()
        return p.status(f"File format {name} successfully created.")

    def file_format(self, session: Session, raw: str | None, table: str) -> dict[str, str]:
        """The options of ``FILE_FORMAT = (FORMAT_NAME = 'f')`` or ``(TYPE = CSV ...)`` (default: plain CSV)."""
        if not raw:
            return {}
        inner = options(raw.strip()[1:-1] if raw.strip().startswith("(") else f"FORMAT_NAME = {raw}")
        if "FORMAT_NAME" not in inner:
            return {k: unquote(v) for k, v in inner.items()}
        parts = split_name(unquote(inner["FORMAT_NAME"]))
        db, schema, _name = table.split(".")
        candidates = (
            [fqn(self.resolve(session, unquote(inner["FORMAT_NAME"])))]
            if len(parts) == 3 or (session.database and session.schema)
            else []
        )
        candidates.append(".".join([db, schema][: 3 - len(parts)] + parts))
        for key in candidates:
            if key in self.state["file_formats"]:
                return dict(self.state["file_formats"][key])
        raise SqlError(f"File format '{unquote(inner['FORMAT_NAME'])}' does not exist or not authorized.", 2003)

    def copy_into(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        results = self.load(session, match)
        if not results:
            return p.rowset([Column("status")], [["Copy executed with 0 files processed."]])
        return p.rowset(COPY_COLUMNS, [r[:10] for r in results])

    def load(
        self,
        session: Session,
        match: re.Match[str],
        *,
        pipe: dict[str, Any] | None = None,
        only: list[str] | None = None,
    ) -> list[list[Any]]:
        """Run a parsed ``COPY INTO``: each staged CSV file not loaded into the table yet (64 days of load metadata,
        as Snowflake keeps) is inserted in one statement; the per-file result rows."""
        table_text, column_text, stage_text, rest = match.groups()
        table = fqn(self.resolve(session, table_text))
        stage, subpath = self.stage_ref(session, stage_text)
        opts = options(rest or "")
        files = string_list(opts["FILES"]) if "FILES" in opts else None
        pattern = unquote(opts["PATTERN"]) if "PATTERN" in opts else None
        force = unquote(opts.get("FORCE", "FALSE")).upper() == "TRUE"
        on_error = unquote(opts.get("ON_ERROR", "SKIP_FILE" if pipe else "ABORT_STATEMENT")).upper()
        fmt = self.file_format(session, opts.get("FILE_FORMAT") or self.state["stages"][stage]["file_format"], table)
        targets = [c.strip() for c in column_text.split(",")] if column_text else self.table_columns(session, table)
        candidates = self.stage_files(stage, subpath, pattern)
        if files is not None:
            missing = [f for f in files if f"{subpath}{f}" not in candidates and f not in candidates]
            if missing:
                raise SqlError(
                    f"Remote file '{missing[0]}' was not found. There are several potential causes.", 2003, "58030"
                )
            candidates = [c for c in candidates if c in files or c.removeprefix(subpath) in files]
        if only is not None:
            candidates = [c for c in candidates if c in only]
        loaded = self.state["load_metadata"].get(table, {})
        fresh = [c for c in candidates if force or not _recent(loaded.get(f"{stage}/{c}"))]
        own_transaction = not session.in_transaction and on_error == "ABORT_STATEMENT" and len(fresh) > 1
        if own_transaction:
            self.fs.query(session.token, "BEGIN")
        results: list[list[Any]] = []
        try:
            for rel in fresh:
                results.append(self._load_file(session, table, targets, stage, rel, fmt, on_error))
                if results[-1][1] == "LOAD_FAILED" and on_error == "ABORT_STATEMENT":
                    raise SqlError(str(results[-1][6]), 100038, "22018")
        except SqlError:
            if own_transaction:
                self.fs.query(session.token, "ROLLBACK")
            raise
        if own_transaction:
            self.fs.query(session.token, "COMMIT")
        self.after_commit(session, lambda: self._record_loads(table, stage, results, pipe))
        return results

    def table_columns(self, session: Session, table: str) -> list[str]:
        db, schema, name = table.split(".")
        data = self.fs.query(
            session.token,
            f"SELECT column_name FROM {db}.INFORMATION_SCHEMA.COLUMNS WHERE "
            f"table_schema = {lit(schema)} AND table_name = {lit(name)} ORDER BY ordinal_position",
        )
        found = [str(row[0]) for row in p.rows_of(data)]
        if not found:
            raise SqlError(f"Table '{table}' does not exist or not authorized.", 2003, "42S02")
        return found

    def _load_file(
        self, session: Session, table: str, targets: list[str], stage: str, rel: str, fmt: dict[str, str], on_error: str
    ) -> list[Any]:
        path = Path(self.state["stages"][stage]["folder"]) / rel
        enclosed = fmt.get("FIELD_OPTIONALLY_ENCLOSED_BY", "NONE")
        reader = csv.reader(
            io.StringIO(path.read_text(errors="replace")),
            delimiter=fmt.get("FIELD_DELIMITER", ","),
            quotechar=enclosed if enclosed.upper() != "NONE" else None,
            quoting=csv.QUOTE_MINIMAL if enclosed.upper() != "NONE" else csv.QUOTE_NONE,
        )
        records = [r for r in list(reader)[int(fmt.get("SKIP_HEADER", "0")) :] if r]
        null_if = set(string_list(fmt["NULL_IF"])) if "NULL_IF" in fmt else {"\\N"}
        good, first_error, first_line, errors = [], None, None, 0
        for line, record in enumerate(records, start=1 + int(fmt.get("SKIP_HEADER", "0"))):
            if len(record) != len(targets):
                errors += 1
                if first_error is None:
                    first_error = (
                        f"Number of columns in file ({len(record)}) does not match that of the "
                        f"corresponding table ({len(targets)}), use file format option "
                        "error_on_column_count_mismatch=false to ignore this error"
                    )
                    first_line = line
                continue
            good.append(["NULL" if v in null_if or v == "" else lit(v) for v in record])
        if errors and on_error != "CONTINUE":
            good = []
        loaded = 0
        if good:
            values = ", ".join(f"({', '.join(r)})" for r in good)
            try:
                self.fs.query(session.token, f"INSERT INTO {table} ({', '.join(targets)}) VALUES {values}")
                loaded = len(good)
            except SqlError as exc:
                errors, first_error, first_line = errors + len(good), exc.message, first_line or 1
        status = "LOADED" if not errors else "PARTIALLY_LOADED" if loaded else "LOAD_FAILED"
        return [rel, status, len(records), loaded, 1, errors, first_error, first_line, None, None, path.stat().st_size]

    def _record_loads(self, table: str, stage: str, results: list[list[Any]], pipe: dict[str, Any] | None) -> None:
        db, schema, name = table.split(".")
        stamp = now()
        for rel, status, parsed, loaded, limit, errors, error, line, _c, _n, size in results:
            if status != "LOAD_FAILED":
                self.state["load_metadata"].setdefault(table, {})[f"{stage}/{rel}"] = stamp.isoformat()
            self.insert_history(
                "COPY_HISTORY",
                {
                    "FILE_NAME": rel,
                    "STAGE_LOCATION": f"@{stage}/",
                    "LAST_LOAD_TIME": stamp,
                    "ROW_COUNT": loaded,
                    "ROW_PARSED": parsed,
                    "FILE_SIZE": size,
                    "FIRST_ERROR_MESSAGE": error,
                    "FIRST_ERROR_LINE_NUMBER": line,
                    "ERROR_COUNT": errors,
                    "ERROR_LIMIT": limit,
                    "STATUS": {"LOADED": "Loaded", "PARTIALLY_LOADED": "Partially loaded"}.get(status, "Load failed"),
                    "TABLE_CATALOG_NAME": db,
                    "TABLE_SCHEMA_NAME": schema,
                    "TABLE_NAME": name,
                    "PIPE_CATALOG_NAME": pipe and pipe["database"],
                    "PIPE_SCHEMA_NAME": pipe and pipe["schema"],
                    "PIPE_NAME": pipe and pipe["name"],
                    "PIPE_RECEIVED_TIME": stamp if pipe else None,
                },
            )
        self.save()

    def after_commit(self, session: Session, action: Any) -> None:
        """Run ``action`` now, or at the session's COMMIT when a transaction is open (ROLLBACK drops it)."""
        if session.in_transaction:
            session.on_commit.append(action)
        else:
            action()

    # ------------------------------------------------------------------------------------------- pipes

    def pipe(self, key: str) -> dict[str, Any]:
        found = self.state["pipes"].get(key)
        if found is None:
            raise SqlError(f"Pipe '{key}' does not exist or not authorized.", 2003)
        return found

    def create_pipe(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, rest = match.groups()
        db, schema, name = self.resolve(session, name_text)
        key = fqn((db, schema, name))
        as_at = find_keyword(rest, "AS")
        copy = re.fullmatch(COPY_INTO, rest[as_at + 2 :].strip(), re.I | re.S) if as_at >= 0 else None
        if copy is None:
            raise SqlError("SQL compilation error: CREATE PIPE needs AS COPY INTO <table> FROM @<stage>", 1003, "42000")
        if key in self.state["pipes"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        inner = Session(token=session.token, id=session.id, database=db, schema=schema)
        table = fqn(self.resolve(inner, copy.group(1)))
        stage, subpath = self.stage_ref(inner, copy.group(3))
        self.table_columns(session, table)
        opts = options(rest[:as_at])
        self.state["pipes"][key] = {
            "database": db,
            "schema": schema,
            "name": name,
            "id": self.new_id(),
            "definition": copy.group(0),
            "table": table,
            "stage": stage,
            "subpath": subpath,
            "paused": False,
            "pending": [],
            "auto_ingest": unquote(opts.get("AUTO_INGEST", "FALSE")).upper() == "TRUE",
            "last_ingested": None,
            "last_path": None,
            "last_error": None,
            "created_on": now().isoformat(),
            "comment": unquote(opts.get("COMMENT", "''")),
        }
        self.save()
        return p.status(f"Pipe {name} successfully created.")

    def alter_pipe(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text, action = match.groups()
        key = fqn(self.resolve(session, name_text))
        if if_exists and key not in self.state["pipes"]:
            return p.status()
        pipe = self.pipe(key)
        opts = options(action)
        if action.upper().startswith("REFRESH"):
            if pipe["paused"]:
                raise SqlError(f"Pipe {key} is paused: set PIPE_EXECUTION_PAUSED = FALSE before REFRESH.", 91319)
            prefix = unquote(opts.get("PREFIX", "''"))
            loaded = self.state["load_metadata"].get(pipe["table"], {})
            files = [
                f
                for f in self.stage_files(pipe["stage"], pipe["subpath"] + prefix)
                if not _recent(loaded.get(f"{pipe['stage']}/{f}"))
            ]
            self.ingest(pipe, files)
            return p.rowset(columns("File Status"), [[f, "SENT"] for f in files])
        if "PIPE_EXECUTION_PAUSED" not in opts:
            raise SqlError(f"SQL compilation error: the emulator's ALTER PIPE does not take {action}", 1003, "42000")
        pipe["paused"] = unquote(opts["PIPE_EXECUTION_PAUSED"]).upper() == "TRUE"
        if not pipe["paused"] and pipe["pending"]:  # queued notifications are processed on resume
            pending, pipe["pending"] = pipe["pending"], []
            self.ingest(pipe, pending)
        self.save()
        return p.status()

    def ingest(self, pipe: dict[str, Any], files: list[str]) -> None:
        """Load ``files`` through the pipe's COPY (ON_ERROR = SKIP_FILE, as Snowpipe) and record its usage."""
        if not files:
            return
        started = now()
        session = self.internal_session(pipe["database"], pipe["schema"])
        copy = re.fullmatch(COPY_INTO, pipe["definition"], re.I | re.S)
        assert copy is not None
        try:
            results = self.load(session, copy, pipe=pipe, only=files)
        except SqlError as exc:
            pipe["last_error"] = exc.message
            self.save()
            return
        for result in results:
            if result[1] == "LOAD_FAILED":
                pipe["last_error"] = f"{result[0]}: {result[6]}"
            else:
                pipe["last_error"] = None
                pipe["last_ingested"], pipe["last_path"] = now().isoformat(), result[0]
        inserted = [r for r in results if r[1] != "LOAD_FAILED"]
        if inserted:
            self.insert_history(
                "PIPE_USAGE_HISTORY",
                {
                    "PIPE_ID": pipe["id"],
                    "PIPE_CATALOG_NAME": pipe["database"],
                    "PIPE_SCHEMA_NAME": pipe["schema"],
                    "PIPE_NAME": pipe["name"],
                    "START_TIME": started,
                    "END_TIME": now(),
                    "CREDITS_USED": round(0.0006 * len(inserted), 6),
                    "BYTES_INSERTED": sum(r[10] for r in inserted),
                    "FILES_INSERTED": len(inserted),
                },
            )
        self.save()

    def pipe_status(self, session: Session, name: str) -> str:
        pipe = self.pipe(fqn(self.resolve(session, name)))
        status: dict[str, Any] = {
            "executionState": "PAUSED" if pipe["paused"] else "RUNNING",
            "pendingFileCount": len(pipe["pending"]),
            "notificationChannelName": f"emulator:{pipe['stage']}",
            "numOutstandingMessagesOnChannel": len(pipe["pending"]),
        }
        if pipe["last_ingested"]:
            status["lastIngestedTimestamp"] = pipe["last_ingested"].replace("+00:00", "Z")
            status["lastIngestedFilePath"] = pipe["last_path"]
        if pipe["last_error"]:
            status["error"] = status["lastErrorMessage"] = pipe["last_error"]
        return json.dumps(status)

    def drop_pipe(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text = match.groups()
        key = fqn(self.resolve(session, name_text))
        if self.state["pipes"].pop(key, None) is None and not if_exists:
            self.pipe(key)
        self.save()
        return p.status(f"{key.split('.')[-1]} successfully dropped.")

    def show_pipes(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        like, scope, scope_name = match.groups()
        rows = [
            [
                _ts(x["created_on"]),
                x["name"],
                x["database"],
                x["schema"],
                x["definition"],
                "SYSADMIN",
                None,
                x["comment"],
                None,
                None,
                None,
                "ROLE",
                None,
                "STANDARD",
            ]
            for x in sorted(self.state["pipes"].values(), key=lambda x: (x["database"], x["schema"], x["name"]))
            if (not like or _like(x["name"], unquote(like)))
            and (not scope or self._in_scope(session, x, scope, scope_name))
        ]
        return p.rowset(PIPE_COLUMNS, rows, statement_type=p.SHOW)

    def put_file(self, stage_name: str, name: str, content: str, notify: bool = True) -> dict[str, Any]:
        """The "a file arrives" hook: write the file into the stage; each auto-ingest pipe on the stage ingests it
        (or queues it while paused)."""
        with self.lock:
            key = ".".join(split_name(stage_name))
            if key not in self.state["stages"]:
                raise SqlError(f"Stage '{key}' does not exist or not authorized.", 2003)
            folder = Path(self.state["stages"][key]["folder"])
            path = (folder / name).resolve()
            if not path.is_relative_to(folder.resolve()):
                raise SqlError(f"file name {name!r} leaves the stage", 1003)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            ingested, queued = [], []
            for pipe_key, pipe in sorted(self.state["pipes"].items()):
                if not (notify and pipe["auto_ingest"] and pipe["stage"] == key and name.startswith(pipe["subpath"])):
                    continue
                if pipe["paused"]:
                    pipe["pending"].append(name)
                    queued.append(pipe_key)
                else:
                    self.ingest(pipe, [name])
                    ingested.append(pipe_key)
            self.save()
            return {"file": name, "ingested_by": ingested, "queued_by": queued}

    HANDLERS: list[tuple[str, Any]] = []


def _like(value: str, pattern: str) -> bool:
    """SQL LIKE (case-insensitive, as SHOW ... LIKE is)."""
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, re.I | re.S) is not None


def _recent(loaded_at: str | None) -> bool:
    """True when a load recorded at ``loaded_at`` is still in the load metadata (64 days)."""
    return loaded_at is not None and now() - dt.datetime.fromisoformat(loaded_at) < LOAD_METADATA_TTL


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


Emulator.HANDLERS = [
    (
        rf"CREATE\s+(OR\s+REPLACE\s+)?DATABASE\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})\s+CLONE\s+({NAME})",
        Emulator.create_database_clone,
    ),
    (r"(BEGIN(?:\s+(?:TRANSACTION|WORK))?|START\s+TRANSACTION)", Emulator.begin),
    (r"COMMIT(?:\s+WORK)?", Emulator.commit),
    (r"ROLLBACK(?:\s+WORK)?", Emulator.rollback),
    (rf"ALTER\s+SESSION\s+SET\s+QUERY_TAG\s*=\s*({STRING})", Emulator.set_query_tag),
    (r"ALTER\s+SESSION\s+UNSET\s+QUERY_TAG", Emulator.unset_query_tag),
    (rf"USE\s+WAREHOUSE\s+({NAME})", Emulator.use_warehouse),
    (
        rf"CREATE\s+(OR\s+REPLACE\s+)?WAREHOUSE\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})(?:\s+WITH)?(.*)",
        Emulator.create_warehouse,
    ),
    (
        rf"ALTER\s+WAREHOUSE\s+(IF\s+EXISTS\s+)?({NAME})\s+(SUSPEND|RESUME(?:\s+IF\s+SUSPENDED)?|SET\s+.*)",
        Emulator.alter_warehouse,
    ),
    (rf"DROP\s+WAREHOUSE\s+(IF\s+EXISTS\s+)?({NAME})", Emulator.drop_warehouse),
    (rf"SHOW\s+WAREHOUSES(?:\s+LIKE\s+({STRING}))?", Emulator.show_warehouses),
    (rf"CREATE\s+(OR\s+REPLACE\s+)?TASK\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})\s+(.*)", Emulator.create_task),
    (rf"ALTER\s+TASK\s+(IF\s+EXISTS\s+)?({NAME})\s+(RESUME|SUSPEND|SET\s+.*|MODIFY\s+AS\s+.*)", Emulator.alter_task),
    (rf"DROP\s+TASK\s+(IF\s+EXISTS\s+)?({NAME})", Emulator.drop_task),
    (
        rf"SHOW\s+TASKS(?:\s+LIKE\s+({STRING}))?(?:\s+IN\s+(ACCOUNT|DATABASE|SCHEMA)(?:\s+({NAME}))?)?",
        Emulator.show_tasks,
    ),
    (rf"EXECUTE\s+TASK\s+({NAME})(\s+RETRY\s+LAST)?", Emulator.execute_task),
    (rf"CREATE\s+(OR\s+REPLACE\s+)?STAGE\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})(.*)", Emulator.create_stage),
    (r"(?:LIST|LS)\s+(@[^\s;]+)(.*)", Emulator.list_stage),
    (rf"CREATE\s+(OR\s+REPLACE\s+)?FILE\s+FORMAT\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})(.*)", Emulator.create_file_format),
    (COPY_INTO, Emulator.copy_into),
    (rf"CREATE\s+(OR\s+REPLACE\s+)?PIPE\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})(.*)", Emulator.create_pipe),
    (rf"ALTER\s+PIPE\s+(IF\s+EXISTS\s+)?({NAME})\s+(SET\s+.*|REFRESH.*)", Emulator.alter_pipe),
    (rf"DROP\s+PIPE\s+(IF\s+EXISTS\s+)?({NAME})", Emulator.drop_pipe),
    (
        rf"SHOW\s+PIPES(?:\s+LIKE\s+({STRING}))?(?:\s+IN\s+(ACCOUNT|DATABASE|SCHEMA)(?:\s+({NAME}))?)?",
        Emulator.show_pipes,
    ),
    (
        rf"CREATE\s+(OR\s+REPLACE\s+)?STREAM\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})\s+ON\s+TABLE\s+({NAME})(.*)",
        Emulator.create_stream,
    ),
    (rf"DROP\s+STREAM\s+(IF\s+EXISTS\s+)?({NAME})", Emulator.drop_stream),
    (
        rf"SHOW\s+STREAMS(?:\s+LIKE\s+({STRING}))?(?:\s+IN\s+(ACCOUNT|DATABASE|SCHEMA)(?:\s+({NAME}))?)?",
        Emulator.show_streams,
    ),
    (
        rf"CREATE\s+(OR\s+REPLACE\s+)?(?:SECURE\s+)?PROCEDURE\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})\s*\((.*?)\)\s+"
        r"RETURNS\s+(.*?)\s+LANGUAGE\s+SQL\b.*?\bAS\s+(\$\$.*\$\$|'.*')",
        Emulator.create_procedure,
    ),
    (rf"CALL\s+({NAME})\s*\((.*)\)", Emulator.call),
    (rf"DROP\s+PROCEDURE\s+(IF\s+EXISTS\s+)?({NAME})\s*(?:\([^)]*\))?", Emulator.drop_procedure),
]
