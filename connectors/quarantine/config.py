"""Typed configuration and target locators of the quarantine connector.

A source is one Silver base path (seed 003, section 5): quarantined records at
``{root}/quarantine/{table}/ingest_dt=YYYY-MM-DD/*.parquet`` (with ``_quarantine_reason`` and
``_quarantine_timestamp`` beside the source columns) and valid records at ``{root}/{table}/ingest_dt=.../``.
``root`` is a local absolute path or ``gs://bucket/prefix``. The thresholds are the environment's (the
connection belongs to one environment): 5% / 30 days in production, 10% / 7 days in development.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors import base
from connectors.base import TargetRef

# a table is one path segment: letters, digits, underscore, dash (no dots, slashes or glob characters)
TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,127}$")
REASON_COLUMN = "_quarantine_reason"
TIMESTAMP_COLUMN = "_quarantine_timestamp"
METADATA_COLUMNS = (REASON_COLUMN, TIMESTAMP_COLUMN)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_table(value: str) -> str:
    if not TABLE_NAME.match(value):
        raise ValueError(f"{value!r} is not a table name (letters, digits, _ and -; one path segment)")
    return value


class QuarantineConfig(_Strict):
    """Non-secret settings of one quarantine source. The GCS credentials are a secret (``gcs_token``: the
    service account's JSON, by reference); without it a ``gs://`` root is read anonymously (the emulator)."""

    root: str = Field(min_length=1, description="the Silver base path: an absolute local path or gs://bucket/prefix")
    gcs_endpoint: str | None = Field(default=None, description="GCS API endpoint (an emulator); None for Google")
    gcs_project: str | None = None
    threshold_pct: float = Field(default=5.0, gt=0, le=100, description="alert above this % of valid records")
    escalate_pct: float = Field(default=10.0, gt=0, le=100, description="escalate when above this % ...")
    escalate_days: int = Field(default=3, ge=1, le=60, description="... for this many consecutive days")
    escalate_storage_bytes: int = Field(default=10**12, ge=1, description="escalate when storage is above")
    retention_days: int = Field(default=30, ge=1, le=3650, description="quarantined partitions kept this long")
    weekly_review: bool = Field(default=True, description="a review is created every week (production)")
    key_columns: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per table, the columns that identify a record (default: the columns named *_id)",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, le=600, description="per storage request")

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        value = value.rstrip("/")
        if value.startswith("gs://"):
            if not re.match(r"^gs://[a-z0-9][a-z0-9._\-]{1,221}[a-z0-9](/[^*?\[\]]+)?$", value):
                raise ValueError("a gs:// root is gs://bucket or gs://bucket/prefix, without glob characters")
        elif not value.startswith("/"):
            raise ValueError("a local root is an absolute path (or use gs://bucket/prefix)")
        elif any(ch in value for ch in "*?[]"):
            raise ValueError("the root must not contain glob characters")
        return value

    @field_validator("key_columns")
    @classmethod
    def _keys(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for table in value:
            check_table(table)
        return value


class SourceLocator(_Strict):
    """The whole source (every table under the root)."""


class TableLocator(_Strict):
    """One table of the source."""

    table: str

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return check_table(value)


LOCATOR_MODELS: dict[str, type[BaseModel]] = {"quarantine": SourceLocator, "quarantine_table": TableLocator}


def parse_locator(target: TargetRef, allowed_kinds: tuple[str, ...]) -> Any:
    """Validate ``target`` for an operation accepting ``allowed_kinds``; ConnectorError (permanent) if not."""
    return base.parse_locator(LOCATOR_MODELS, target, allowed_kinds)
