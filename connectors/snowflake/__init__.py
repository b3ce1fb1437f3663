"""Snowflake connector: task graphs, pipes, streams, tables, warehouses and environments over
``snowflake-connector-python``, every statement tagged with the action id (see docs/snowflake.md)."""

from __future__ import annotations

from connectors.snowflake.config import SnowflakeConfig
from connectors.snowflake.connector import SnowflakeConnector

__all__ = ["SnowflakeConfig", "SnowflakeConnector"]
