"""PostgreSQL connector: refresh marts (materialized views) exactly once per action, and read-only checks
(matview status, blocking queries, freshness, row counts by day). No Django import anywhere here."""

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

__all__ = [
    "BlockingQueriesCheck",
    "BlockingQueriesParams",
    "DatabaseLocator",
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
]
