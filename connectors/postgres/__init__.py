"""PostgreSQL connector: refresh marts (materialized views), delete rows a plan lists and terminate blocking
sessions, each exactly once per action; read-only checks (matview status, blocking queries, freshness, row
counts by day, reference rows, a location's data, expectation violations, raw payloads). No Django import."""

from __future__ import annotations

from connectors.postgres.checks import (
    BlockingQueriesCheck,
    BlockingQueriesParams,
    FreshnessCheck,
    FreshnessParams,
    MatviewStatusCheck,
    MatviewStatusParams,
    RowCountsByDayCheck,
    RowCountsByDayParams,
)
from connectors.postgres.config import DatabaseLocator, MatviewLocator, PostgresConfig, TableLocator
from connectors.postgres.connector import PostgresConnector
from connectors.postgres.refresh import RefreshMartParams, RefreshMartVerb
from connectors.postgres.rows import DeleteRowsParams, DeleteRowsVerb
from connectors.postgres.terminate import TerminateBlockingParams, TerminateBlockingVerb

__all__ = [
    "BlockingQueriesCheck",
    "BlockingQueriesParams",
    "DatabaseLocator",
    "DeleteRowsParams",
    "DeleteRowsVerb",
    "FreshnessCheck",
    "FreshnessParams",
    "MatviewLocator",
    "MatviewStatusCheck",
    "MatviewStatusParams",
    "PostgresConfig",
    "PostgresConnector",
    "RefreshMartParams",
    "RefreshMartVerb",
    "RowCountsByDayCheck",
    "RowCountsByDayParams",
    "TableLocator",
    "TerminateBlockingParams",
    "TerminateBlockingVerb",
]
