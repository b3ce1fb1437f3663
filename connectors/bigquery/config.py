"""Typed configuration and target locators of the BigQuery connector.

Identifiers (datasets, tables, columns) come from the catalog and are validated here against BigQuery's
naming rules, narrowed to ASCII, so that :func:`table_ref` and :func:`column` can backquote them safely:
nothing a requester types reaches SQL except as a query parameter.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from connectors import base
from connectors.base import TargetRef

TIB = 2**40
_PROJECT = re.compile(r"^[a-z][a-z0-9.:-]{0,126}[a-z0-9]$")  # domain-scoped ids (example.com:p) included
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_TABLE = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
_LOCATION = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,40}$")


def _matches(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"is not a valid BigQuery {what} ({pattern.pattern})")
        return value

    return AfterValidator(check)


ProjectId = Annotated[str, _matches(_PROJECT, "project id")]
DatasetName = Annotated[str, _matches(_DATASET, "dataset name")]
TableName = Annotated[str, _matches(_TABLE, "table name")]
ColumnName = Annotated[str, _matches(_COLUMN, "column name")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BigQueryConfig(_Strict):
    """Non-secret settings of one BigQuery connection. The secret ``credentials_json`` (a service account key)
    is optional only when ``api_endpoint`` points at an emulator: then the client connects anonymously.

    ``timeout_s`` bounds every API call; ``job_timeout_s`` bounds the wait for one job. Every job carries
    ``maximum_bytes_billed``: BigQuery refuses a query that would bill more. ``on_demand_usd_per_tib`` turns
    a plan's dry-run bytes into its estimated cost.
    """

    project: ProjectId
    location: str = "US"
    api_endpoint: str | None = None
    on_demand_usd_per_tib: float = Field(default=6.25, gt=0, le=1000)
    maximum_bytes_billed: int = Field(default=TIB, ge=1)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    job_timeout_s: float = Field(default=600.0, gt=0, le=6 * 3600)
    freshness_sla_hours: float = Field(default=24.0, gt=0)

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        if not _LOCATION.match(value):
            raise ValueError("must be a BigQuery location such as US, EU or europe-west1")
        return value

    @field_validator("api_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+(/[^\s]*)?$", value):
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:9050")
        return value.rstrip("/") if value else value

    @property
    def where(self) -> str:
        """Where this connection points, for messages (never a secret)."""
        at = f" at {self.api_endpoint}" if self.api_endpoint else ""
        return f"BigQuery project {self.project}{at}"

    @property
    def jobs_view(self) -> str:
        """The project's ``INFORMATION_SCHEMA.JOBS`` for this location, backquoted."""
        return f"`{self.project}.region-{self.location.lower()}.INFORMATION_SCHEMA.JOBS`"

    def cost_usd(self, size: int) -> float:
        """What scanning ``size`` bytes costs at the on-demand price."""
        return round(size / TIB * self.on_demand_usd_per_tib, 4)


def _load_query(value: str | None) -> str | None:
    if value is None:
        return value
    stripped = value.strip().rstrip(";").strip()
    if not re.match(r"^(SELECT|WITH)\b", stripped, flags=re.IGNORECASE):
        raise ValueError("must be one SELECT (or WITH ... SELECT) statement producing the table's columns")
    if ";" in stripped:
        raise ValueError("must be a single statement (no ';')")
    if "@partition_date" not in stripped:
        raise ValueError("must filter on the @partition_date parameter (one partition per job)")
    return stripped


class TableLocator(_Strict):
    """A ``table`` target: ``{"dataset", "name"}`` plus what its checks and verbs need: ``partition_column``
    (the DATE column it is partitioned by: backfill, partition row counts), ``timestamp_column`` (load time:
    freshness), ``key_column`` (nulls, duplicates, orphans) and ``load_query`` (the SELECT that reloads one
    partition, filtered on ``@partition_date``: backfill)."""

    dataset: DatasetName
    name: TableName
    partition_column: ColumnName | None = None
    timestamp_column: ColumnName | None = None
    key_column: ColumnName | None = None
    load_query: Annotated[str | None, AfterValidator(_load_query)] = None

    @property
    def display(self) -> str:
        return f"{self.dataset}.{self.name}"


class MatviewLocator(_Strict):
    """A ``matview`` target: ``{"dataset", "name"}`` of a materialized view."""

    dataset: DatasetName
    name: TableName

    @property
    def display(self) -> str:
        return f"{self.dataset}.{self.name}"


class DatasetLocator(_Strict):
    """A ``dataset`` target: ``{"dataset"}``."""

    dataset: DatasetName

    @property
    def display(self) -> str:
        return self.dataset


class ProjectLocator(_Strict):
    """A ``project`` target: ``{}``, the connection's project (slot use)."""


LOCATOR_MODELS: dict[str, type[BaseModel]] = {
    "table": TableLocator,
    "matview": MatviewLocator,
    "dataset": DatasetLocator,
    "project": ProjectLocator,
}


def parse_locator(target: TargetRef, allowed_kinds: tuple[str, ...]) -> Any:
    """Validate ``target`` for an operation accepting ``allowed_kinds``; ConnectorError (permanent) if not."""
    return base.parse_locator(LOCATOR_MODELS, target, allowed_kinds)


def table_ref(project: str, dataset: str, name: str) -> str:
    """```project.dataset.name``` for SQL, from validated names only."""
    for value, pattern in ((dataset, _DATASET), (name, _TABLE)):
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not a valid BigQuery name")
    return f"`{project}.{dataset}.{name}`"


def column(name: str) -> str:
    """```name``` for SQL, from a validated column name only."""
    if not _COLUMN.match(name):
        raise ValueError(f"{name!r} is not a valid BigQuery column name")
    return f"`{name}`"


def check_column(name: str) -> str:
    """``name`` if it is a valid column name; ValueError otherwise (for params typed by a requester)."""
    column(name)
    return name
