"""The Postgres connector: marts (materialized views), tables and the database's sessions."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel

from connectors.base import Connector, ConnectorError, HealthResult
from connectors.postgres.checks import (
    BlockingQueriesCheck,
    FreshnessCheck,
    MatviewStatusCheck,
    RowCountsByDayCheck,
    jsonable,
)
from connectors.postgres.client import Conn, session
from connectors.postgres.config import LOCATOR_MODELS, PostgresConfig
from connectors.postgres.refresh import RefreshMartVerb
from connectors.postgres.rows import (
    DeleteRowsVerb,
    ExpectationViolationsCheck,
    LatestRawPayloadsCheck,
    LocationCollectedCheck,
    ReferenceRowsCheck,
)
from connectors.postgres.terminate import TerminateBlockingVerb

_LIST_MATVIEWS = """
    select m.schemaname, m.matviewname, m.ispopulated, pg_total_relation_size(c.oid),
           pg_size_pretty(pg_total_relation_size(c.oid)),
           exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisunique and i.indisvalid
                   and i.indimmediate and i.indpred is null and i.indexprs is null)
    from pg_matviews m
    join pg_namespace n on n.nspname = m.schemaname
    join pg_class c on c.relnamespace = n.oid and c.relname = m.matviewname
    where %(schema)s::text is null or m.schemaname = %(schema)s
    order by 1, 2
"""

# Tables (not partitions: they are managed through their parent) with their timestamp/date columns, so a
# catalog form can offer a real choice for ``timestamp_column``.
_LIST_TABLES = """
    select n.nspname, c.relname, case c.relkind when 'p' then 'partitioned table' else 'table' end,
           greatest(c.reltuples, 0)::bigint,
           (select sum(pg_total_relation_size(t.relid))::bigint from pg_partition_tree(c.oid) t),
           coalesce((select array_agg(a.attname::text order by a.attnum) from pg_attribute a
                      where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                        and a.atttypid in ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)), '{}')
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p') and not c.relispartition
      and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%%'
      and (%(schema)s::text is null or n.nspname = %(schema)s)
    order by 1, 2
"""


class PostgresConnector(Connector):
    """PostgreSQL: refresh marts, delete bad rows, terminate blocking sessions; check view status, blocked
    sessions, freshness, daily counts, reference rows, a location's data, expectation violations and raw
    payloads.

    Config is :class:`PostgresConfig`; the only secret is ``password`` (optional: trust or peer auth need
    none). Target kinds: ``matview`` and ``table`` (locator ``{"schema", "name"}``, tables optionally with
    ``timestamp_column``) and ``database`` (locator ``{}``).
    """

    kind = "postgres"
    config_model = PostgresConfig
    secret_names = ("password",)
    verbs = (RefreshMartVerb, DeleteRowsVerb, TerminateBlockingVerb)
    checks = (
        MatviewStatusCheck,
        BlockingQueriesCheck,
        FreshnessCheck,
        RowCountsByDayCheck,
        ReferenceRowsCheck,
        LocationCollectedCheck,
        ExpectationViolationsCheck,
        LatestRawPayloadsCheck,
    )
    target_kinds = ("matview", "table", "database")
    locator_models = LOCATOR_MODELS

    def __init__(self, config: BaseModel | Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        if not isinstance(config, PostgresConfig):
            raw = config.model_dump() if isinstance(config, BaseModel) else dict(config)
            config = PostgresConfig.model_validate(raw)
        super().__init__(config, secrets)
        self.cfg: PostgresConfig = config

    @classmethod
    def from_url(cls, url: str, **config: Any) -> PostgresConnector:
        """A connector for a libpq URL (``postgresql://user[:password]@host:port/db``); the password, if
        any, becomes the secret. ``config`` overrides other settings (timeouts, ledger_table ...)."""
        parts = conninfo_to_dict(url)
        secrets = {"password": str(parts["password"])} if parts.get("password") else {}
        base = {"host": parts.get("host", "localhost"), "port": int(parts.get("port") or 5432)}
        base.update({"dbname": parts.get("dbname", "postgres"), "user": parts.get("user", "postgres")})
        return cls(PostgresConfig.model_validate({**base, **config}), secrets)

    def session(self, doing: str, *, read_only: bool = False) -> AbstractContextManager[Conn]:
        """A session with this connection's timeouts; errors inside become ConnectorErrors (see client)."""
        return session(self.cfg, self.secrets.get("password"), doing, read_only=read_only)

    def health(self) -> HealthResult:
        """``select 1`` round trip with timing; a failure is reported (ok=False), not raised."""
        started = time.perf_counter()
        try:
            with self.session("checking health", read_only=True) as conn:
                row = conn.execute("select current_setting('server_version')").fetchone()
        except ConnectorError as exc:
            return HealthResult(ok=False, summary=exc.message)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        version = row[0] if row else "?"
        return HealthResult(ok=True, summary=f"{self.cfg.where}: PostgreSQL {version}", latency_ms=latency_ms)

    def metadata(self, what: str, **filters: Any) -> list[dict[str, Any]]:
        """``matviews`` or ``tables`` (filter ``schema=``) for catalog pickers; other names are errors."""
        queries = {"matviews": _LIST_MATVIEWS, "tables": _LIST_TABLES}
        if what not in queries:
            raise ConnectorError(f"postgres connector cannot list {what!r} (it lists: {', '.join(queries)})")
        schema = filters.get("schema")
        with self.session(f"listing {what}", read_only=True) as conn:
            rows = conn.execute(queries[what], {"schema": schema}).fetchall()
        if what == "matviews":
            keys = ["schema", "name", "populated", "size_bytes", "size", "concurrent_refresh_possible"]
        else:
            keys = ["schema", "name", "kind", "approx_rows", "size_bytes", "timestamp_columns"]
        return [{key: jsonable(value) for key, value in zip(keys, row, strict=True)} for row in rows]
