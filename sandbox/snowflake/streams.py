"""Streams: a view over the difference between a table and a snapshot of it taken at the stream's offset."""

from __future__ import annotations

import re
from typing import Any

from sandbox.snowflake import protocol as p
from sandbox.snowflake.core import Core, Session, columns, fqn, now, parse_ts, sql_like
from sandbox.snowflake.protocol import SqlError
from sandbox.snowflake.sqltext import (
    NAME,
    options,
    unquote,
)

STREAM_COLUMNS = columns(
    "created_on:ts name database_name schema_name owner comment table_name source_type base_tables type stale mode "
    "stale_after:ts invalid_reason owner_role_type"
)


class Streams(Core):
    """Streams: a view over the changes of a table since an offset snapshot."""

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
                parse_ts(s["created_on"]),
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
            if (not like or sql_like(s["name"], unquote(like)))
            and (not scope or self._in_scope(session, s, scope, scope_name))
        ]
        return p.rowset(STREAM_COLUMNS, rows, statement_type=p.SHOW)
