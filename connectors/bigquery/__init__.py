"""BigQuery connector: refresh marts, backfill date partitions with a dry-run cost estimate, restore a table
from time travel, each once per action (jobs with deterministic ids and a ``cp_action`` label), and read-only
checks (freshness, nulls, duplicates, orphans, partition row counts, materialized view staleness, slot use).
No Django import anywhere here. docs/bigquery.md describes it."""

from __future__ import annotations

from connectors.bigquery.checks import (
    ColumnParams,
    DuplicatesCheck,
    FreshnessCheck,
    FreshnessParams,
    MatviewStalenessCheck,
    MatviewStalenessParams,
    NullsCheck,
    OrphansCheck,
    OrphansParams,
    PartitionRowCountsCheck,
    PartitionRowCountsParams,
    SlotUsageCheck,
    SlotUsageParams,
)
from connectors.bigquery.config import BigQueryConfig, DatasetLocator, MatviewLocator, ProjectLocator, TableLocator
from connectors.bigquery.connector import BigQueryConnector
from connectors.bigquery.verbs import (
    BackfillParams,
    BackfillVerb,
    RefreshMartParams,
    RefreshMartVerb,
    RestoreTableParams,
    RestoreTableVerb,
    cost_risk,
)

__all__ = [
    "BackfillParams",
    "BackfillVerb",
    "BigQueryConfig",
    "BigQueryConnector",
    "ColumnParams",
    "DatasetLocator",
    "DuplicatesCheck",
    "FreshnessCheck",
    "FreshnessParams",
    "MatviewLocator",
    "MatviewStalenessCheck",
    "MatviewStalenessParams",
    "NullsCheck",
    "OrphansCheck",
    "OrphansParams",
    "PartitionRowCountsCheck",
    "PartitionRowCountsParams",
    "ProjectLocator",
    "RefreshMartParams",
    "RefreshMartVerb",
    "RestoreTableParams",
    "RestoreTableVerb",
    "SlotUsageCheck",
    "SlotUsageParams",
    "TableLocator",
    "cost_risk",
]
