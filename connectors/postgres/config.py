"""Typed configuration and target locators of the Postgres connector.

Identifiers are validated here (length, no control characters) and quoted with ``psycopg.sql.Identifier``
wherever they reach SQL; nothing is ever string-formatted into a statement.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from connectors import base
from connectors.base import TargetRef

# NAMEDATALEN - 1: Postgres silently truncates longer identifiers, which would make the connector act
# on a different object than the catalog names.
MAX_IDENTIFIER_BYTES = 63


def _check_identifier(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"is longer than {MAX_IDENTIFIER_BYTES} bytes (Postgres would truncate it)")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("contains control characters")
    return value


PgIdentifier = Annotated[str, AfterValidator(_check_identifier)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostgresConfig(_Strict):
    """Non-secret settings of one Postgres connection. The password is a secret (``secret_names``).

    The timeouts are applied to every session through libpq ``options`` so no statement, lock wait or
    connection attempt can hang a worker.
    """

    host: str = Field(min_length=1)
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: PgIdentifier
    user: PgIdentifier
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    connect_timeout_s: int = Field(default=5, ge=1, le=120)
    statement_timeout_ms: int = Field(default=30_000, ge=1, le=3_600_000)
    lock_timeout_ms: int = Field(default=10_000, ge=1, le=3_600_000)
    # How often the server checks that the client is still there during a long query, so a statement
    # whose worker was SIGKILLed is aborted instead of running (and holding locks) to its end.
    client_connection_check_interval_ms: int = Field(default=5_000, ge=100, le=600_000)
    application_name: str = Field(default="controlplane", max_length=63)
    ledger_table: str = "controlplane.mart_refresh_log"

    @field_validator("ledger_table")
    @classmethod
    def _ledger_is_qualified(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 2:
            raise ValueError("must be schema-qualified as 'schema.table' (no quotes, no extra dots)")
        for part in parts:
            _check_identifier(part)
        return value

    @property
    def ledger(self) -> tuple[str, str]:
        """The ledger table as (schema, name)."""
        schema, name = self.ledger_table.split(".")
        return schema, name

    @property
    def where(self) -> str:
        """Where this connection points, for error messages (never includes a secret)."""
        return f"Postgres {self.host}:{self.port}/{self.dbname} as {self.user}"


class RelationLocator(_Strict):
    """A schema-qualified relation: the locator of ``matview`` targets."""

    schema_: PgIdentifier = Field(alias="schema")
    name: PgIdentifier

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def display(self) -> str:
        """``schema.name`` for messages and ledger rows (not for SQL: SQL uses Identifier)."""
        return f"{self.schema_}.{self.name}"


class MatviewLocator(RelationLocator):
    """Locator of a ``matview`` target: ``{"schema": ..., "name": ...}``."""


class TableLocator(RelationLocator):
    """Locator of a ``table`` target; ``timestamp_column`` is the load time used by freshness checks."""

    timestamp_column: PgIdentifier | None = None


class DatabaseLocator(_Strict):
    """Locator of a ``database`` target: ``{}``, the database the connection points at."""


LOCATOR_MODELS: dict[str, type[BaseModel]] = {
    "matview": MatviewLocator,
    "table": TableLocator,
    "database": DatabaseLocator,
}


def parse_locator(target: TargetRef, allowed_kinds: tuple[str, ...]) -> Any:
    """Validate ``target`` for an operation accepting ``allowed_kinds``; ConnectorError (permanent) if not."""
    return base.parse_locator(LOCATOR_MODELS, target, allowed_kinds)
