"""Read-only sessions reuse idle connections; writing or failed sessions never go back to the pool."""

from __future__ import annotations

import pytest

from connectors.base import ConnectorError
from connectors.postgres import PostgresConnector


def _pid(connector: PostgresConnector, *, read_only: bool) -> int:
    with connector.session("reading the backend pid", read_only=read_only) as conn:
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        return int(row[0])


def test_read_only_sessions_reuse_one_connection(connector: PostgresConnector) -> None:
    assert _pid(connector, read_only=True) == _pid(connector, read_only=True)


def test_writing_sessions_get_a_fresh_connection_each_time(connector: PostgresConnector) -> None:
    assert _pid(connector, read_only=False) != _pid(connector, read_only=False)


def test_a_session_that_failed_is_not_reused(connector: PostgresConnector) -> None:
    first = _pid(connector, read_only=True)
    with pytest.raises(ConnectorError), connector.session("failing on purpose", read_only=True) as conn:
        conn.execute("select * from no_such_table")
    assert _pid(connector, read_only=True) != first


def test_pooled_sessions_stay_read_only(connector: PostgresConnector) -> None:
    _pid(connector, read_only=True)
    with pytest.raises(ConnectorError, match="read-only"), connector.session("writing", read_only=True) as conn:
        conn.execute("create table should_not_exist (id int)")
