"""Quarantine connector: rates, reasons, samples and storage of quarantined records (parquet on local disk or
GCS, read with DuckDB), and the dispositions that act on them. No Django import anywhere here."""

from __future__ import annotations

from connectors.quarantine.config import QuarantineConfig, SourceLocator, TableLocator
from connectors.quarantine.connector import QuarantineConnector
from connectors.quarantine.store import Store

__all__ = ["QuarantineConfig", "QuarantineConnector", "SourceLocator", "Store", "TableLocator"]
