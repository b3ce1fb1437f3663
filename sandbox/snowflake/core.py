"""The emulator layer's core: its state, the sessions, the statement dispatch, the histories.

State: the objects (tasks, pipes, stages, streams, procedures, warehouses, load metadata) are a JSON document
(``ROOT/snowflake/state.json``, rewritten after each change): the layer's own logic reads them, and one file is easy
to inspect and reset. The histories (query, task, copy, pipe usage) are append-only tables in fakesnow's private
``_EMULATOR`` database, because clients read them with arbitrary SQL: ``TABLE(...INFORMATION_SCHEMA.X(...))`` in a
statement is rewritten into a subquery over them (``SYSTEM$`` functions into their values) before it is forwarded.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import re
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sandbox.snowflake import protocol as p
from sandbox.snowflake.protocol import Column, Fakesnow, SqlError
from sandbox.snowflake.sqltext import (
    NAME,
    STRING,
    closing_paren,
    lit,
    split_name,
    split_top,
    strip_statement,
    unquote,
)

ADMIN_DB = "_EMULATOR"
log = logging.getLogger("sandbox.snowflake")

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


def columns(spec: str) -> list[Column]:
    """``"name size:fixed created_on:ts"`` -> result columns (text unless typed ``fixed``/``ts``/``bool``)."""
    types = {"fixed": "fixed", "ts": "timestamp_ltz", "bool": "boolean"}
    return [Column(n, types[t] if t else "text") for n, _, t in (c.partition(":") for c in spec.split())]


def empty_state() -> dict[str, Any]:
    """The layer's objects when it knows none (``databases``: the ones to re-attach after a restart)."""
    kinds = ("tasks", "graph_runs", "warehouses", "stages", "file_formats", "pipes", "streams", "procedures")
    return {"databases": [], "load_metadata": {}, **{kind: {} for kind in kinds}}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fqn(parts: tuple[str, str, str]) -> str:
    return ".".join(parts)


def sql_like(value: str, pattern: str) -> bool:
    """SQL LIKE (case-insensitive, as SHOW ... LIKE is)."""
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, re.I | re.S) is not None


def parse_ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


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


class Core(ABC):
    """The layer's state, sessions, statement dispatch and history; the object families (tasks, loading,
    streams, ...) are mixins on it, put together by :class:`sandbox.snowflake.emulator.Emulator`."""

    # (regex, handler): the statements the layer answers itself, matched in order against the whole statement
    HANDLERS: ClassVar[list[tuple[str, Callable[..., dict[str, Any]]]]] = []

    def __init__(self, directory: Path, fakesnow: Fakesnow) -> None:
        self.directory = directory
        self.state_file = directory / "state.json"
        self.fs = fakesnow
        self.lock = threading.RLock()
        self.sessions: dict[str, Session] = {}
        self.running: dict[str, int] = {}  # statements in flight per warehouse (SHOW WAREHOUSES' running)
        self._ids = itertools.count(int(now().timestamp()))
        self.state: dict[str, Any] = self._load()
        self.admin = self.fs.login(ADMIN_DB, "PUBLIC")
        self._admin_lock = threading.Lock()
        self.admin_sql("CREATE SCHEMA IF NOT EXISTS _EMULATOR.STREAMS")
        for name, columns in HISTORY_TABLES.items():
            self.admin_sql(f"CREATE TABLE IF NOT EXISTS _EMULATOR.PUBLIC.{name} ({columns})")
        self.admin_sql(
            f"CREATE OR REPLACE TABLE _EMULATOR.PUBLIC.QUERY_HISTORY_RUNNING ({HISTORY_TABLES['QUERY_HISTORY']})"
        )
        self._history_lock = threading.RLock()
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self.in_flight: dict[str, dict[str, Any]] = {}  # the client statements running now (EXECUTION_STATUS RUNNING)
        self._stopping = threading.Event()
        threading.Thread(target=self._flush_forever, name="history-writer", daemon=True).start()
        for database in self.state["databases"]:  # re-attach the databases' files after a restart
            self.admin_sql(f"CREATE DATABASE IF NOT EXISTS {database}")

    # ------------------------------------------------------------------------------------------- state

    def _load(self) -> dict[str, Any]:
        try:
            return {**empty_state(), **json.loads(self.state_file.read_text())}
        except (OSError, ValueError):
            return empty_state()

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
        """Queue a history row; :meth:`flush_history` writes the queue (before any read of a history, and every
        half second), so a statement does not wait for its own bookkeeping."""
        with self._history_lock:
            self._pending.append((table, row))

    def flush_history(self) -> None:
        with self._history_lock:
            pending, self._pending = self._pending, []
            for (table, columns), group in itertools.groupby(pending, key=lambda item: (item[0], tuple(item[1]))):
                values = ", ".join(f"({', '.join(lit(v) for v in row.values())})" for _t, row in group)
                self.admin_sql(f"INSERT INTO _EMULATOR.PUBLIC.{table} ({', '.join(columns)}) VALUES {values}")

    def _flush_forever(self) -> None:
        while not self._stopping.wait(0.5):
            try:
                self.flush_history()
            except Exception:  # logged; the next tick or read tries again with later rows
                log.exception("writing the history failed")

    def close(self) -> None:
        self._stopping.set()
        self.flush_history()

    def reset(self) -> None:
        """Forget every object and history the layer keeps (the databases' tables stay in fakesnow)."""
        with self.lock:
            for stream in self.state["streams"].values():
                self.admin_sql(f"DROP TABLE IF EXISTS _EMULATOR.STREAMS.{stream['snapshot']}")
            databases = self.state["databases"]
            self.state = empty_state()
            self.state["databases"] = databases
            self.flush_history()
            for table in HISTORY_TABLES:
                self.admin_sql(f"DELETE FROM _EMULATOR.PUBLIC.{table}")
            shutil.rmtree(self.directory / "stages", ignore_errors=True)
            self.save()

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

    def after_commit(self, session: Session, action: Any) -> None:
        """Run ``action`` now, or at the session's COMMIT when a transaction is open (ROLLBACK drops it)."""
        if session.in_transaction:
            session.on_commit.append(action)
        else:
            action()

    def _in_scope(self, session: Session, obj: dict[str, Any], scope: str, name: str | None) -> bool:
        if scope.upper() == "ACCOUNT":
            return True
        parts = split_name(name) if name else []
        if scope.upper() == "DATABASE":
            return obj["database"] == (parts[-1] if parts else session.database)
        if len(parts) == 2:
            return (obj["database"], obj["schema"]) == (parts[0], parts[1])
        return (obj["database"], obj["schema"]) == (session.database, parts[-1] if parts else session.schema)

    def databases(self) -> list[str]:
        return [str(row[1]) for row in self.admin_rows("SHOW DATABASES")]

    def note_database(self, name: str) -> None:
        """Remember a database so a restarted layer re-attaches its file."""
        if name not in self.state["databases"]:
            self.state["databases"].append(name)
            self.save()

    # ---------------------------------------------------------------------------------------- dispatch

    def execute(self, session: Session, sql: str) -> dict[str, Any]:
        """Answer one client statement; it is in the query history from its start (RUNNING) to its end."""
        query_id, started = str(uuid.uuid4()), now()
        warehouse = session.warehouse or ""
        query_type = (strip_statement(sql).split() or ["UNKNOWN"])[0].upper()
        record = {
            "QUERY_ID": query_id,
            "QUERY_TEXT": sql,
            "DATABASE_NAME": session.database,
            "SCHEMA_NAME": session.schema,
            "QUERY_TYPE": query_type,
            "SESSION_ID": session.id,
            "USER_NAME": session.user,
            "ROLE_NAME": session.role,
            "WAREHOUSE_NAME": session.warehouse,
            "QUERY_TAG": session.query_tag,
            "EXECUTION_STATUS": "RUNNING",
            "WAREHOUSE_SIZE": self.state["warehouses"].get(warehouse, {}).get("size"),
            "START_TIME": started,
        }
        with self._history_lock:
            self.in_flight[query_id] = record
        error: SqlError | None = None
        data: dict[str, Any] = {}
        counted = query_type in ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "CALL", "EXECUTE")
        warehouse = warehouse if counted else ""  # metadata statements use no warehouse
        with self.lock:
            self.running[warehouse] = self.running.get(warehouse, 0) + 1
        try:
            data = self.run(session, sql)
        except SqlError as exc:
            error = exc
        except Exception as exc:  # a bug of the layer: the client gets a statement error, the log the trace
            log.exception("the layer failed on %r", sql)
            error = SqlError(f"the Snowflake emulator failed: {type(exc).__name__}: {exc}", 603, "XX000")
        finally:
            with self.lock:
                self.running[warehouse] -= 1
        finished = now()
        record.update(
            {
                "EXECUTION_STATUS": "FAIL" if error else "SUCCESS",
                "ERROR_CODE": f"{error.code:06d}" if error else None,
                "ERROR_MESSAGE": error.message if error else None,
                "END_TIME": finished,
                "TOTAL_ELAPSED_TIME": int((finished - started).total_seconds() * 1000),
                "ROWS_PRODUCED": data.get("total"),
            }
        )
        with self._history_lock:
            self.in_flight.pop(query_id, None)
            self.insert_history("QUERY_HISTORY", record)
        if error is not None:
            error.query_id = query_id
            raise error
        data["queryId"] = query_id  # the client's sfqid is the history's QUERY_ID
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
        if self.TABLE_FUNCTION.search(text):
            self.flush_history()
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
        text = re.sub(
            rf"SYSTEM\$STREAM_HAS_DATA\s*\(\s*({STRING})\s*\)",
            lambda m: lit(self.stream_has_data(session, unquote(m.group(1)))),
            text,
            flags=re.I,
        )
        return re.sub(r"\bCURRENT_WAREHOUSE\s*\(\s*\)", lit(session.warehouse), text, flags=re.I)

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
        source = f"_EMULATOR.PUBLIC.{table}"
        if table == "QUERY_HISTORY":  # the finished statements and the ones running now
            with self._history_lock:
                self.admin_sql("DELETE FROM _EMULATOR.PUBLIC.QUERY_HISTORY_RUNNING")
                for row in list(self.in_flight.values()):
                    values = ", ".join(lit(v) for v in row.values())
                    self.admin_sql(
                        f"INSERT INTO _EMULATOR.PUBLIC.QUERY_HISTORY_RUNNING ({', '.join(row)}) VALUES ({values})"
                    )
            source = f"(SELECT * FROM {source} UNION ALL SELECT * FROM _EMULATOR.PUBLIC.QUERY_HISTORY_RUNNING)"
        return f"SELECT * FROM {source} WHERE {condition} ORDER BY {order} DESC LIMIT {limit}"

    # ----------------------------------------------------------------------- provided by the object families

    @abstractmethod
    def pipe_status(self, session: Session, name: str) -> str:
        """SYSTEM$PIPE_STATUS's JSON (sandbox.snowflake.loading)."""

    @abstractmethod
    def stream_has_data(self, session: Session, name: str) -> bool:
        """SYSTEM$STREAM_HAS_DATA (sandbox.snowflake.streams)."""

    @abstractmethod
    def note_stream_reads(self, session: Session, text: str) -> None:
        """Advance the streams a DML statement read (sandbox.snowflake.streams)."""
