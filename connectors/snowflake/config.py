"""Typed configuration, target locators and parameter models of the Snowflake connector.

Every identifier (database, schema, object, column) is validated against Snowflake's unquoted-identifier
grammar ``^[A-Za-z_][A-Za-z0-9_$]*$`` and upper-cased, which is how Snowflake resolves an unquoted name. SQL
then binds the fully qualified name with ``IDENTIFIER(%s)`` where Snowflake accepts it, or double-quotes the
upper-cased parts where it does not (stage references, ``CALL``, ``SHOW ... IN SCHEMA``, table functions of a
database's INFORMATION_SCHEMA): both resolve to the same object, and nothing typed by a requester is ever
formatted into a statement. Values are bound parameters.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors import base
from connectors.base import TargetRef

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
MAX_IDENTIFIER_CHARS = 255


def check_identifier(value: str) -> str:
    """``value`` upper-cased if it is a plain Snowflake identifier; ValueError otherwise."""
    if not isinstance(value, str) or not _IDENT.match(value):
        raise ValueError(
            f"{value!r} is not a Snowflake identifier (letters, digits, _ and $; not starting with a digit)"
        )
    if len(value) > MAX_IDENTIFIER_CHARS:
        raise ValueError(f"is longer than {MAX_IDENTIFIER_CHARS} characters")
    return value.upper()


Ident = Annotated[str, AfterValidator(check_identifier)]


def _qualified(value: str) -> str:
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 3:
        raise ValueError(f"{value!r} must be fully qualified as DATABASE.SCHEMA.NAME")
    return ".".join(check_identifier(p) for p in parts)


#: ``DB.SCHEMA.NAME`` (a stage, a procedure, a file format), each part validated and upper-cased
QualifiedName = Annotated[str, AfterValidator(_qualified)]


def quote(name: str) -> str:
    """``"DB"."SCHEMA"."NAME"`` for a validated (upper-cased) dotted name: for the places Snowflake does not
    take ``IDENTIFIER()`` (a stage after ``@``, ``CALL``, ``SHOW ... IN``, a database's table functions)."""
    parts = name.split(".")
    for part in parts:
        if not _IDENT.match(part) or part != part.upper():
            raise ValueError(f"refusing to quote {name!r}: not a validated upper-case identifier")
    return ".".join(f'"{p}"' for p in parts)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


WAREHOUSE_SIZES = (
    "XSMALL", "SMALL", "MEDIUM", "LARGE", "XLARGE", "XXLARGE", "XXXLARGE", "X4LARGE", "X5LARGE", "X6LARGE",
)  # fmt: skip
_SIZE_ALIASES = {"X-SMALL": "XSMALL", "X-LARGE": "XLARGE", "2X-LARGE": "XXLARGE", "3X-LARGE": "XXXLARGE"}
_SIZE_ALIASES |= {"4X-LARGE": "X4LARGE", "5X-LARGE": "X5LARGE", "6X-LARGE": "X6LARGE", "2XLARGE": "XXLARGE"}
_SIZE_ALIASES |= {"3XLARGE": "XXXLARGE", "4XLARGE": "X4LARGE", "5XLARGE": "X5LARGE", "6XLARGE": "X6LARGE"}


def normalize_size(value: str) -> str:
    """A warehouse size in the one spelling ``ALTER WAREHOUSE`` takes (``X-Large`` and ``XLARGE`` are one size;
    SHOW WAREHOUSES answers ``X-Large``)."""
    key = str(value).strip().upper().replace(" ", "")
    key = _SIZE_ALIASES.get(key, key)
    if key not in WAREHOUSE_SIZES:
        raise ValueError(f"{value!r} is not a warehouse size (one of {', '.join(WAREHOUSE_SIZES)})")
    return key


WarehouseSize = Annotated[str, AfterValidator(normalize_size)]


class SnowflakeConfig(_Strict):
    """Non-secret settings of one Snowflake connection; the ``password`` is a secret reference.

    ``host``/``port``/``protocol`` are only for a non-default endpoint (the sandbox's emulator); in production
    the account alone locates Snowflake. Every connection uses ``login_timeout_s`` and ``network_timeout_s``
    (the connector's own retry deadline) and ``socket_timeout_s``; every statement is bounded by
    ``statement_timeout_s`` (the session's STATEMENT_TIMEOUT_IN_SECONDS).
    """

    account: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.\-]+$")
    user: str = Field(min_length=1, max_length=255)
    host: str | None = Field(default=None, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["https", "http"] = "https"
    role: Ident | None = None
    warehouse: Ident | None = None
    database: Ident | None = None
    login_timeout_s: int = Field(default=10, ge=1, le=120)
    network_timeout_s: int = Field(default=30, ge=1, le=600)
    socket_timeout_s: int = Field(default=30, ge=1, le=600)
    statement_timeout_s: int = Field(default=600, ge=1, le=86_400)
    #: how long execute waits for a task run (EXECUTE TASK / RETRY LAST are asynchronous) and polls
    wait_timeout_s: float = Field(default=900, gt=0, le=86_400)
    poll_interval_s: float = Field(default=2, ge=0.1, le=60)
    freshness_max_hours: float = Field(default=2, gt=0, le=24 * 366)
    retry_last_window_days: int = Field(default=14, ge=1, le=14)

    @model_validator(mode="after")
    def _endpoint(self) -> SnowflakeConfig:
        if self.protocol == "http" and not self.host:
            raise ValueError("protocol http is only for an explicit host (an emulator); Snowflake itself is https")
        return self

    @property
    def where(self) -> str:
        """Where this connection points, for messages (never includes a secret)."""
        endpoint = f" at {self.protocol}://{self.host}:{self.port or ''}" if self.host else ""
        return f"Snowflake account {self.account}{endpoint} as {self.user}"


# ---------------------------------------------------------------------------------------------- locators


class ObjectLocator(_Strict):
    """``{"database", "schema", "name"}``: a schema object (task, pipe, stream, procedure)."""

    database: Ident
    schema_: Ident = Field(alias="schema")
    name: Ident

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def fqn(self) -> str:
        """``DB.SCHEMA.NAME``: bound with ``IDENTIFIER(%s)`` or passed to SYSTEM$ functions as a value."""
        return f"{self.database}.{self.schema_}.{self.name}"

    @property
    def schema_fqn(self) -> str:
        return f"{self.database}.{self.schema_}"


class TaskLocator(ObjectLocator):
    """A task; ``root`` names the root task of its graph when the task is a child."""

    root: ObjectLocator | None = None

    @property
    def root_or_self(self) -> ObjectLocator:
        return self.root or ObjectLocator.model_validate(
            {"database": self.database, "schema": self.schema_, "name": self.name}
        )


class PipeLocator(ObjectLocator):
    pass


class StreamLocator(ObjectLocator):
    pass


class ProcedureLocator(ObjectLocator):
    pass


class TableLocator(ObjectLocator):
    """A table; the optional parts say what the table's checks and backfill use: ``timestamp_column`` (load
    time, freshness and row counts), ``stage`` + ``file_format`` (a raw table loaded by COPY INTO),
    ``procedure`` + ``date_column`` (a fact table reloaded by a procedure), ``key_column`` (SCD2 business key),
    ``valid_column`` (the data-quality flag)."""

    timestamp_column: Ident | None = None
    stage: QualifiedName | None = None
    file_format: QualifiedName | None = None
    procedure: QualifiedName | None = None
    date_column: Ident | None = None
    key_column: Ident | None = None
    valid_column: Ident | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> TableLocator:
        if self.stage and self.procedure:
            raise ValueError("a table is loaded either from a stage (raw) or by a procedure (facts), not both")
        if self.procedure and not self.date_column:
            raise ValueError("a table loaded by a procedure needs its date_column (the period a backfill deletes)")
        return self


class WarehouseLocator(_Strict):
    name: Ident


class EnvironmentLocator(_Strict):
    """The databases of one environment (``DEV_RAW``, ``DEV_STAGING``, ``DEV_DW``): a clone's source. Each
    name is ``<PREFIX>_<LAYER>`` with one prefix for all."""

    databases: list[Ident] = Field(min_length=1, max_length=20)

    @field_validator("databases")
    @classmethod
    def _one_prefix(cls, value: list[str]) -> list[str]:
        prefixes = {name.split("_", 1)[0] for name in value}
        if any("_" not in name for name in value) or len(prefixes) != 1:
            raise ValueError("every database must be named <PREFIX>_<LAYER> with the same prefix (DEV_RAW, DEV_DW)")
        if len(set(value)) != len(value):
            raise ValueError("a database is listed twice")
        return value

    @property
    def prefix(self) -> str:
        return self.databases[0].split("_", 1)[0]


LOCATOR_MODELS: dict[str, type[BaseModel]] = {
    "task": TaskLocator,
    "pipe": PipeLocator,
    "stream": StreamLocator,
    "table": TableLocator,
    "procedure": ProcedureLocator,
    "warehouse": WarehouseLocator,
    "environment": EnvironmentLocator,
}


def parse_locator(target: TargetRef, allowed_kinds: tuple[str, ...]) -> Any:
    """``target``'s locator as its kind's model; a permanent ConnectorError naming the problem otherwise."""
    return base.parse_locator(LOCATOR_MODELS, target, allowed_kinds)


# ---------------------------------------------------------------------------------------------- params


class Params(_Strict):
    pass


def check_window(start: date, end: date | None, max_days: int = 366) -> None:
    if end is not None and start >= end:
        raise ValueError("start_date must be before end_date (end_date is exclusive)")
    if end is not None and (end - start).days > max_days:
        raise ValueError(f"the window may span at most {max_days} days")
