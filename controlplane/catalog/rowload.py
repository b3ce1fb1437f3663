"""One SELECT of a target with its connection and environment, its SQL built once per process.

The action path reads a target by key on every launch whose target is not in the per-process cache
(controlplane/configcache.py). Through the ORM (``select_related(...).filter(key=...).first()``) that read
spent about 0.9 ms of CPU, two thirds of it compiling the same SQL again each time. Here the statement is
built once from the models' own field lists, and the rows are turned into model instances the way the ORM
does (each field's database converters, ``Model.from_db``, the foreign keys' caches filled), so the objects
are the ones the ORM would return: ``tests/test_catalog_rowload.py`` holds them equal field by field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

from controlplane.catalog.models import Connection, Environment, Target

Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]


@dataclass(frozen=True)
class _Part:
    model: type[models.Model]
    attnames: list[str]
    columns: list[tuple[Any, list[Converter]]]  # (Col expression, its converters) per field


@dataclass(frozen=True)
class Statement:
    """A statement built once per connection, and how to turn its rows into instances (``hydrate``)."""

    sql: str
    parts: list[_Part]


_statements: dict[str, Statement] = {}


def _part(model: type[models.Model], alias: str, connection: BaseDatabaseWrapper) -> _Part:
    fields = list(model._meta.concrete_fields)
    columns = []
    for field in fields:
        col = field.get_col(alias)
        columns.append((col, connection.ops.get_db_converters(col) + col.get_db_converters(connection)))
    return _Part(model, [f.attname for f in fields], columns)


def _statement(connection: BaseDatabaseWrapper) -> Statement:
    statement = _statements.get(connection.alias)
    if statement is None:
        q = connection.ops.quote_name
        chain: Sequence[tuple[type[models.Model], str]] = ((Target, "t"), (Connection, "c"), (Environment, "e"))
        parts = chain_parts(chain, connection)
        select = select_list(chain, connection)
        sql = (
            f"SELECT {select} FROM {q(Target._meta.db_table)} t"
            f" JOIN {q(Connection._meta.db_table)} c ON c.{q('id')} = t.{q('connection_id')}"
            f" JOIN {q(Environment._meta.db_table)} e ON e.{q('id')} = c.{q('environment_id')}"
            f" WHERE t.{q('key')} = %s"
        )
        statement = _statements[connection.alias] = Statement(sql, parts)
    return statement


def chain_parts(chain: Sequence[tuple[type[models.Model], str]], connection: BaseDatabaseWrapper) -> list[_Part]:
    """What it takes to turn one joined row of ``chain`` ((model, alias) in SELECT order) into instances."""
    return [_part(model, alias, connection) for model, alias in chain]


def select_list(chain: Sequence[tuple[type[models.Model], str]], connection: BaseDatabaseWrapper) -> str:
    """The SELECT list of every concrete column of each model in ``chain``, in the order ``hydrate`` reads."""
    q = connection.ops.quote_name
    return ", ".join(f"{alias}.{q(f.column)}" for model, alias in chain for f in model._meta.concrete_fields)


def hydrate(row: Sequence[Any], parts: list[_Part], connection: BaseDatabaseWrapper) -> list[models.Model]:
    """One instance per part from a joined row, through each field's database converters and
    ``Model.from_db``, as the ORM builds them."""
    instances = []
    start = 0
    for part in parts:
        values = list(row[start : start + len(part.attnames)])
        start += len(part.attnames)
        for i, (col, converters) in enumerate(part.columns):
            for convert in converters:
                values[i] = convert(values[i], col, connection)
        instances.append(part.model.from_db(connection.alias, part.attnames, values))
    return instances


def link_target(target: Target, conn: Connection, environment: Environment) -> None:
    """Fill the foreign-key caches, so ``target.connection.environment`` needs no query."""
    Target._meta.get_field("connection").set_cached_value(target, conn)
    Connection._meta.get_field("environment").set_cached_value(conn, environment)


def target_with_connection(key: str, *, using: str = "default") -> Target | None:
    """The target with ``key``, its ``connection`` and the connection's ``environment`` loaded; None if
    there is no such target."""
    connection = connections[using]
    statement = _statement(connection)
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, [key])
        row = cursor.fetchone()
    if row is None:
        return None
    target, conn, environment = hydrate(row, statement.parts, connection)
    link_target(target, conn, environment)  # type: ignore[arg-type]
    return target  # type: ignore[return-value]
