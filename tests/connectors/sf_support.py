"""Fixtures for the Snowflake connector tests: the real connector against the sandbox's Snowflake emulator.

``SANDBOX_SNOWFLAKE_URL`` (written by ``python -m sandbox.services start``) points at the emulator's layer; the
tests fail, never skip, without it. Each test gets its own database so tests never see
each other's tasks, tables or history.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from connectors.base import ExecutionContext, Outcome, Plan, TargetRef
from connectors.snowflake import SnowflakeConnector
from connectors.snowflake.client import fetch

Sql = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def sf_url() -> str:
    url = os.environ.get("SANDBOX_SNOWFLAKE_URL")
    if not url:
        pytest.fail(
            "SANDBOX_SNOWFLAKE_URL is not set: the Snowflake connector tests need the sandbox's Snowflake emulator. "
            "Start it with `uv run python -m sandbox.services start --root /tmp/sbx` and export what it prints",
            pytrace=False,
        )
    return url


@pytest.fixture
def db() -> str:
    return f"CP_T_{uuid.uuid4().hex[:8].upper()}"


def sf_connector(sf_url: str, db: str, **config: Any) -> SnowflakeConnector:
    """A connector on the emulator at ``sf_url`` with ``db`` as its database; ``config`` overrides."""
    parts = urlsplit(sf_url)
    base = {"account": "sandbox", "user": "controlplane", "host": parts.hostname, "port": parts.port,
            "protocol": parts.scheme, "database": db, "poll_interval_s": 0.2, "wait_timeout_s": 60}  # fmt: skip
    return SnowflakeConnector({**base, **config}, {"password": "sandbox-password"})


def emulator_hook(sf_url: str, name: str, payload: dict[str, Any]) -> Any:
    """One of the emulator's test hooks (docs/snowflake-emulator.md), e.g. ``stages/put``."""
    request = urllib.request.Request(
        f"{sf_url}/_emulator/{name}", data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


@pytest.fixture
def make_connector(sf_url: str, db: str) -> Callable[..., SnowflakeConnector]:
    def make(**config: Any) -> SnowflakeConnector:
        return sf_connector(sf_url, db, **config)

    return make


@pytest.fixture
def connector(make_connector: Callable[..., SnowflakeConnector]) -> SnowflakeConnector:
    return make_connector()


@pytest.fixture
def sql(connector: SnowflakeConnector, db: str) -> Iterator[Sql]:
    """``sql(statement, params)``: one statement in a session tagged ``test-setup``; the test's database is
    created first (a unique name)."""

    def run(statement: str, params: tuple[Any, ...] | None = None) -> list[dict[str, Any]]:
        with connector.session("test setup", tag="test-setup") as conn:
            return fetch(conn, statement, params)

    run(f"CREATE DATABASE IF NOT EXISTS {db}")
    yield run  # not dropped: fakesnow has no DROP DATABASE; the name is unique to the test


@pytest.fixture
def hook(sf_url: str) -> Callable[[str, dict[str, Any]], Any]:
    """``hook("tasks/fail-next", {...})``: one of the emulator's test hooks (docs/snowflake-emulator.md)."""

    def call(name: str, payload: dict[str, Any]) -> Any:
        return emulator_hook(sf_url, name, payload)

    return call


def ctx(action_id: str, plan: Plan | None = None, lines: list[str] | None = None, attempt: int = 1) -> ExecutionContext:
    """The runner's context of the action's ``attempt`` (a re-delivery is a later attempt: each claim counts one)."""
    return ExecutionContext(
        action_id=action_id,
        attempt=attempt,
        plan=plan,
        log=(lines.append if lines is not None else lambda _line: None),
    )


def run_verb(
    connector: SnowflakeConnector, name: str, target: TargetRef, action_id: str, **params: Any
) -> tuple[Plan, Outcome, Outcome]:
    """Plan, execute, then execute AGAIN with the same action id and plan (a re-delivery); both outcomes."""
    verb = connector.verb(name)
    parsed = verb.params_model.model_validate(params)
    plan = verb.plan(target, parsed)
    first = verb.execute(target, parsed, ctx(action_id, plan))
    again = verb.execute(target, parsed, ctx(action_id, plan, attempt=2))
    return plan, first, again


def tagged(sql: Sql, db: str, action_id: str, like: str) -> list[dict[str, Any]]:
    """The action's statements whose text matches ``like`` (case-insensitive) in the query history."""
    return sql(
        f"SELECT QUERY_TEXT, EXECUTION_STATUS FROM TABLE({db}.INFORMATION_SCHEMA.QUERY_HISTORY(RESULT_LIMIT => 10000)) "
        "WHERE QUERY_TAG = %s AND QUERY_TEXT ILIKE %s",
        (action_id, like),
    )
