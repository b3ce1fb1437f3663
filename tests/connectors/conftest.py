"""Plain-Python fixtures for connector tests: a real sandbox Postgres holding the seed-004 warehouse.

The admin URL comes from ``SANDBOX_PG_URL`` (bin/test sets it; locally start the sandbox with
``uv run python -m sandbox.services start --root /tmp/sbx`` and export what it prints). The warehouse
is loaded once per session into a template database; every test gets its own copy, so tests that refresh,
insert or delete never see each other's changes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from connectors.postgres import PostgresConnector
from sandbox.services import create_database, drop_database
from sandbox.weather import load_weather


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The sandbox Postgres admin URL (database ``postgres``); fails, never skips, when it is missing."""
    url = os.environ.get("SANDBOX_PG_URL")
    if not url:
        pytest.fail(
            "SANDBOX_PG_URL is not set: the connector tests need the real sandbox Postgres. Start it with "
            "`uv run python -m sandbox.services start --root /tmp/sbx` and export the SANDBOX_PG_URL it prints",
            pytrace=False,
        )
    return url


@pytest.fixture(scope="session")
def warehouse_template(pg_admin_url: str) -> Iterator[str]:
    """A database loaded with 14 days of the weather warehouse, used only as a template."""
    name = f"cp_conn_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = create_database(pg_admin_url, name)
    try:
        load_weather(url, days=14)
        yield name
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def warehouse_url(pg_admin_url: str, warehouse_template: str) -> Iterator[str]:
    """A fresh copy of the warehouse for one test; dropped afterwards."""
    name = f"cp_conn_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_admin_url, name, template=warehouse_template)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture
def make_connector(warehouse_url: str) -> Callable[..., PostgresConnector]:
    """``make_connector(statement_timeout_ms=200)``: a connector on this test's warehouse copy."""

    def make(**config: Any) -> PostgresConnector:
        return PostgresConnector.from_url(warehouse_url, **config)

    return make


@pytest.fixture
def connector(make_connector: Callable[..., PostgresConnector]) -> PostgresConnector:
    return make_connector()


@pytest.fixture
def run_sql(warehouse_url: str) -> Callable[..., list[tuple[Any, ...]]]:
    """``run_sql(query, params)``: run one statement on this test's warehouse (autocommit), return rows."""

    def run(query: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(warehouse_url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    return run
