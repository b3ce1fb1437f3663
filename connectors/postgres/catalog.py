"""Reading the Postgres system catalog: relations, materialized views and their refresh preconditions.

Objects are looked up by name as query *values* (``pg_class.relname = %s``); only once found are they
named in SQL, always through ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

from connectors.base import ConnectorError
from connectors.postgres.client import Conn
from connectors.postgres.config import PostgresConfig, RelationLocator

RELKIND_NAMES = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "i": "index",
    "S": "sequence",
    "c": "composite type",
    "t": "TOAST table",
    "I": "partitioned index",
}
READABLE_RELKINDS = ("r", "p", "v", "m", "f")


def qualified(locator: RelationLocator) -> sql.Identifier:
    """The relation as a quoted, schema-qualified identifier for composing SQL."""
    return sql.Identifier(locator.schema_, locator.name)


def find_relation(conn: Conn, config: PostgresConfig, locator: RelationLocator, kinds: tuple[str, ...]) -> int:
    """The oid of ``locator`` if it exists with one of ``kinds``; a permanent ConnectorError otherwise."""
    row = conn.execute(
        """
        select c.oid, c.relkind::text
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %s and c.relname = %s
        """,
        (locator.schema_, locator.name),
    ).fetchone()
    wanted = " or ".join(RELKIND_NAMES[k] for k in kinds)
    if row is None:
        raise ConnectorError(
            f"{locator.display} does not exist in {config.where} (expected a {wanted}); "
            "check the catalog target and the connection's database"
        )
    oid, relkind = row
    if relkind not in kinds:
        raise ConnectorError(
            f"{locator.display} is a {RELKIND_NAMES.get(relkind, relkind)}, not a {wanted}: "
            "fix the catalog target's kind"
        )
    return int(oid)


def has_column(conn: Conn, oid: int, column: str) -> bool:
    """True if relation ``oid`` has a live column named ``column``."""
    row = conn.execute(
        "select 1 from pg_attribute where attrelid = %s and attname = %s and attnum > 0 and not attisdropped",
        (oid, column),
    ).fetchone()
    return row is not None


def column_type(conn: Conn, oid: int, column: str) -> str | None:
    """The SQL type of ``column`` of relation ``oid`` (``format_type``), or None if it has no such column."""
    row = conn.execute(
        """
        select format_type(atttypid, atttypmod) from pg_attribute
        where attrelid = %s and attname = %s and attnum > 0 and not attisdropped
        """,
        (oid, column),
    ).fetchone()
    return None if row is None else str(row[0])


def count_rows(conn: Conn, locator: RelationLocator) -> int:
    """``count(*)`` of the relation (exact; bounded by the session's statement timeout)."""
    row = conn.execute(sql.SQL("select count(*) from {}").format(qualified(locator))).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class MatviewState:
    """What decides how a materialized view can be refreshed, read from pg_matviews and pg_index."""

    display: str
    oid: int
    populated: bool
    has_indexes: bool
    size_bytes: int
    size_pretty: str
    owned_by_current_user: bool
    other_lock_holders: int
    unique_indexes: list[str] = field(default_factory=list)
    rows: int | None = None

    @property
    def concurrent_possible(self) -> bool:
        """REFRESH ... CONCURRENTLY needs a populated view and a usable unique index."""
        return self.populated and bool(self.unique_indexes)

    @property
    def concurrent_blocker(self) -> str | None:
        """Why CONCURRENTLY is impossible, written for the engineer who has to fix it; None if possible."""
        if not self.populated:
            return (
                f"{self.display} is not populated (created WITH NO DATA or never refreshed): "
                "the first refresh cannot be CONCURRENTLY"
            )
        if not self.unique_indexes:
            return (
                f"{self.display} has no usable unique index: CONCURRENTLY needs a valid UNIQUE index on "
                f"plain columns without a WHERE clause (CREATE UNIQUE INDEX ON {self.display} (<key cols>))"
            )
        return None


_MATVIEW_STATE = """
    select c.oid,
           m.ispopulated,
           m.hasindexes,
           pg_total_relation_size(c.oid),
           pg_size_pretty(pg_total_relation_size(c.oid)),
           pg_has_role(current_user, c.relowner, 'USAGE'),
           (select count(distinct l.pid) from pg_locks l
             where l.relation = c.oid and l.pid <> pg_backend_pid()
               and l.database = (select oid from pg_database where datname = current_database())),
           -- Usable for CONCURRENTLY (as PG's own check): unique, valid, immediate, no predicate, no
           -- expression columns.
           coalesce((select array_agg(ic.relname::text order by ic.relname)
                       from pg_index i join pg_class ic on ic.oid = i.indexrelid
                      where i.indrelid = c.oid and i.indisunique and i.indisvalid and i.indimmediate
                        and i.indpred is null and i.indexprs is null), '{}')
    from pg_matviews m
    join pg_namespace n on n.nspname = m.schemaname
    join pg_class c on c.relnamespace = n.oid and c.relname = m.matviewname
    where m.schemaname = %s and m.matviewname = %s
"""


def inspect_matview(
    conn: Conn, config: PostgresConfig, locator: RelationLocator, *, with_rows: bool = True
) -> MatviewState:
    """The refresh-relevant state of a materialized view; rows are counted only when it is populated."""
    row = conn.execute(_MATVIEW_STATE, (locator.schema_, locator.name)).fetchone()
    if row is None:
        find_relation(conn, config, locator, ("m",))  # raises with "does not exist" or "is a table"
        raise ConnectorError(f"{locator.display} is not a materialized view")
    oid, populated, has_indexes, size_bytes, size_pretty, owned, holders, unique_indexes = row
    rows = count_rows(conn, locator) if (with_rows and populated) else None
    return MatviewState(
        display=locator.display,
        oid=int(oid),
        populated=bool(populated),
        has_indexes=bool(has_indexes),
        size_bytes=int(size_bytes),
        size_pretty=str(size_pretty),
        owned_by_current_user=bool(owned),
        other_lock_holders=int(holders),
        unique_indexes=list(unique_indexes),
        rows=rows,
    )


def primary_key(conn: Conn, oid: int) -> list[tuple[str, str]]:
    """The primary key columns of relation ``oid`` with their SQL types, in key order (empty: none)."""
    rows = conn.execute(
        """
        select a.attname, format_type(a.atttypid, a.atttypmod)
        from pg_index i
        cross join lateral unnest(i.indkey) with ordinality as k(attnum, pos)
        join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
        where i.indrelid = %s and i.indisprimary
        order by k.pos
        """,
        (oid,),
    ).fetchall()
    return [(str(name), str(kind)) for name, kind in rows]
