"""CREATE DATABASE ... CLONE: a copy with data, and the layer's objects in the database copied as Snowflake does."""

from __future__ import annotations

import re
import shutil
import uuid
from typing import Any

from sandbox.snowflake import protocol as p
from sandbox.snowflake.core import Session, now
from sandbox.snowflake.protocol import SqlError
from sandbox.snowflake.sqltext import (
    split_name,
)
from sandbox.snowflake.streams import Streams


class Clone(Streams):
    """CREATE DATABASE ... CLONE with data and the layer's objects."""

    # ------------------------------------------------------------------------------------------- clone

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
