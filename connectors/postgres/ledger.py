"""The refresh ledger: one row per refresh-mart action, written in the refresh's own transaction.

It lives in the target database (config ``ledger_table``, default ``controlplane.mart_refresh_log``), so
"was this action's refresh committed?" has an exact answer even when the worker died right after COMMIT:
a re-delivered action finds its row and does not refresh twice. It also gives ``matview_status`` the
time of the last refresh, which Postgres itself does not record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from connectors.base import ConnectorError
from connectors.postgres.client import Conn
from connectors.postgres.config import PostgresConfig

# Serializes concurrent first-use DDL (two workers creating the ledger at once would otherwise race on
# the catalog's unique indexes).
_DDL_LOCK_KEY = "controlplane:mart_refresh_log:ddl"

_COLUMNS = "action_id, view, mode, started_at, finished_at, rows_before, rows_after, duration_ms"


@dataclass(frozen=True)
class LedgerRow:
    """One committed refresh, as recorded in the ledger."""

    action_id: str
    view: str
    mode: str
    started_at: datetime
    finished_at: datetime
    rows_before: int | None
    rows_after: int
    duration_ms: int

    def as_details(self) -> dict[str, Any]:
        """The outcome details of this refresh (JSON-ready)."""
        return {
            "action_id": self.action_id,
            "view": self.view,
            "mode": self.mode,
            "rows_before": self.rows_before,
            "rows_after": self.rows_after,
            "started_at": self.started_at.isoformat(),
            "refreshed_at": self.finished_at.isoformat(),
            "duration_ms": self.duration_ms,
        }


def _table(config: PostgresConfig) -> sql.Identifier:
    schema, name = config.ledger
    return sql.Identifier(schema, name)


def _table_exists(conn: Conn, schema: str, name: str) -> bool:
    row = conn.execute(
        """
        select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')
        """,
        (schema, name),
    ).fetchone()
    return row is not None


def _create_once(
    conn: Conn, config: PostgresConfig, lock_key: str, schema: str, table: str, ddl: list[sql.Composed]
) -> None:
    """Run ``ddl`` (CREATE ... IF NOT EXISTS) after the schema's, under an advisory lock: concurrent first uses
    would otherwise race on the catalog's unique indexes. No CREATE privilege: an error saying what to do."""
    try:
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock_key,))
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
            for statement in ddl:
                conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConnectorError(
            f"{config.where} may not create the ledger {table} ({exc}); have an admin create it once, or grant "
            "CREATE on the database, or point ledger_table at a writable schema"
        ) from exc


def ledger_exists(conn: Conn, config: PostgresConfig) -> bool:
    """True if the ledger table exists (checks may run before any refresh created it)."""
    return _table_exists(conn, *config.ledger)


def ensure_ledger(conn: Conn, config: PostgresConfig) -> None:
    """Create the ledger schema and table if missing (idempotent; safe under concurrent first use)."""
    if ledger_exists(conn, config):
        return
    schema, name = config.ledger
    table = _table(config)
    create = sql.SQL(
        """
        create table if not exists {} (
            action_id   text primary key,
            view        text not null,
            mode        text not null check (mode in ('concurrently', 'blocking')),
            started_at  timestamptz not null,
            finished_at timestamptz not null,
            rows_before bigint,
            rows_after  bigint not null,
            duration_ms integer not null
        )
        """
    ).format(table)
    index = sql.SQL("create index if not exists {} on {} (view, finished_at desc)").format(
        sql.Identifier(f"{name[:40]}_view_finished_idx"), table
    )
    _create_once(conn, config, _DDL_LOCK_KEY, schema, config.ledger_table, [create, index])


def _row(values: tuple[Any, ...]) -> LedgerRow:
    action_id, view, mode, started_at, finished_at, rows_before, rows_after, duration_ms = values
    return LedgerRow(
        action_id=str(action_id),
        view=str(view),
        mode=str(mode),
        started_at=started_at,
        finished_at=finished_at,
        rows_before=None if rows_before is None else int(rows_before),
        rows_after=int(rows_after),
        duration_ms=int(duration_ms),
    )


def find_action(conn: Conn, config: PostgresConfig, action_id: str) -> LedgerRow | None:
    """The ledger row of ``action_id``, or None (also None when the ledger does not exist yet)."""
    if not ledger_exists(conn, config):
        return None
    query = sql.SQL("select {} from {} where action_id = %s").format(sql.SQL(_COLUMNS), _table(config))
    row = conn.execute(query, (action_id,)).fetchone()
    return None if row is None else _row(row)


def last_refresh(conn: Conn, config: PostgresConfig, view: str) -> LedgerRow | None:
    """The latest refresh of ``view`` (``schema.name``) by the control plane, or None."""
    if not ledger_exists(conn, config):
        return None
    query = sql.SQL("select {} from {} where view = %s order by finished_at desc limit 1").format(
        sql.SQL(_COLUMNS), _table(config)
    )
    row = conn.execute(query, (view,)).fetchone()
    return None if row is None else _row(row)


def record(conn: Conn, config: PostgresConfig, row: LedgerRow) -> bool:
    """Insert ``row`` (inside the caller's transaction); False if the action was already recorded."""
    query = sql.SQL("insert into {} ({}) values (%s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing").format(
        _table(config), sql.SQL(_COLUMNS)
    )
    cur = conn.execute(
        query,
        (
            row.action_id,
            row.view,
            row.mode,
            row.started_at,
            row.finished_at,
            row.rows_before,
            row.rows_after,
            row.duration_ms,
        ),
    )
    return cur.rowcount == 1


# ------------------------------------------------------------------------------------ action ledger
#
# The other verbs (delete-rows, terminate-blocking) record one row per action in ``<ledger schema>.
# action_ledger``, in the same transaction as their change where the change is transactional, so a
# re-delivered action finds its row and reports what the first delivery did instead of doing it again.

_ACTION_DDL_LOCK_KEY = "controlplane:action_ledger:ddl"


def _action_table(config: PostgresConfig) -> sql.Identifier:
    return sql.Identifier(config.ledger[0], "action_ledger")


def _action_ledger_exists(conn: Conn, config: PostgresConfig) -> bool:
    return _table_exists(conn, config.ledger[0], "action_ledger")


def ensure_action_ledger(conn: Conn, config: PostgresConfig) -> None:
    """Create ``<schema>.action_ledger`` if missing (idempotent; safe under concurrent first use)."""
    if _action_ledger_exists(conn, config):
        return  # CREATE SCHEMA IF NOT EXISTS would still need CREATE on the database
    create = sql.SQL(
        """
        create table if not exists {} (
            action_id   text primary key,
            verb        text not null,
            target      text not null,
            finished_at timestamptz not null default clock_timestamp(),
            details     jsonb not null
        )
        """
    ).format(_action_table(config))
    schema = config.ledger[0]
    _create_once(conn, config, _ACTION_DDL_LOCK_KEY, schema, f"{schema}.action_ledger", [create])


def find_action_record(conn: Conn, config: PostgresConfig, action_id: str) -> dict[str, Any] | None:
    """The recorded details of ``action_id`` (with ``finished_at``), or None when it has no row."""
    if not _action_ledger_exists(conn, config):
        return None
    row = conn.execute(
        sql.SQL("select details, finished_at from {} where action_id = %s").format(_action_table(config)),
        (action_id,),
    ).fetchone()
    if row is None:
        return None
    return {**row[0], "finished_at": row[1].isoformat()}


def record_action(
    conn: Conn, config: PostgresConfig, *, action_id: str, verb: str, target: str, details: dict[str, Any]
) -> bool:
    """Insert the action's row (inside the caller's transaction); False if it was already recorded."""
    cur = conn.execute(
        sql.SQL(
            "insert into {} (action_id, verb, target, details) values (%s, %s, %s, %s) on conflict do nothing"
        ).format(_action_table(config)),
        (action_id, verb, target, Jsonb(details)),
    )
    return cur.rowcount == 1
