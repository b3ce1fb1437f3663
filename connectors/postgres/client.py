"""Sessions and error translation: every psycopg error leaves as a ConnectorError an on-call can act on.

Each session sets its timeouts through libpq ``options`` (so they hold from the first statement), runs in
UTC (day boundaries are the same for every engineer) and, for checks, is read-only at the server.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors
from psycopg.rows import TupleRow

from connectors.base import ConnectorError
from connectors.postgres.config import PostgresConfig

Conn = psycopg.Connection[TupleRow]

# SQLSTATEs worth retrying: the same statement may well succeed a little later. Classes: 08 connection,
# 40 rollback (serialization failure, deadlock), 53 resources (too many connections, disk full), 57
# operator intervention (admin shutdown, cannot connect now). See
# https://www.postgresql.org/docs/15/errcodes-appendix.html
_TRANSIENT_CLASSES = ("08", "40", "53", "57")
_TRANSIENT_CODES = {"55P03", "55006", "25P03", "58000", "58030"}  # lock/object busy, idle timeout, I/O
_PERMANENT_CODES = {"57P04"}  # database_dropped: retrying cannot help

# libpq reports connection failures without a SQLSTATE; these texts mean retrying will not help.
_PERMANENT_CONNECT_HINTS = (
    "does not exist",
    "password authentication failed",
    "no pg_hba.conf entry",
    "authentication failed",
    "permission denied",
    "no password supplied",
    "does not support ssl",
    "certificate",
)


def _options(config: PostgresConfig, *, read_only: bool) -> str:
    settings = {
        "statement_timeout": config.statement_timeout_ms,
        "lock_timeout": config.lock_timeout_ms,
        "client_connection_check_interval": config.client_connection_check_interval_ms,
        # A worker that dies between statements must not leave a transaction holding locks.
        "idle_in_transaction_session_timeout": 300_000,
        "TimeZone": "UTC",
    }
    if read_only:
        settings["default_transaction_read_only"] = "on"
    return " ".join(f"-c {key}={value}" for key, value in settings.items())


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` blanked out (libpq does not echo passwords, but never trust that)."""
    return text.replace(secret, "***") if secret else text


def translate(
    exc: psycopg.Error, config: PostgresConfig, doing: str, password: str | None, *, connecting: bool = False
) -> ConnectorError:
    """Map a psycopg error to a transient or permanent ConnectorError with an actionable message."""
    detail = scrub(str(exc).strip().replace("\n", " "), password)
    sqlstate = exc.sqlstate or ""
    if connecting:
        lowered = detail.lower()
        permanent = any(hint in lowered for hint in _PERMANENT_CONNECT_HINTS)
        advice = "fix the connection's config or secret" if permanent else "will retry; check the server is up"
        return ConnectorError(
            f"cannot connect to {config.where} ({doing}): {detail} [{advice}]", transient=not permanent
        )
    if isinstance(exc, errors.QueryCanceled):
        return ConnectorError(
            f"{config.where}: statement cancelled while {doing} ({detail}); it exceeded its statement "
            "timeout or was cancelled by an operator. Retry later, or raise the timeout if it is truly slow",
            transient=True,
        )
    if isinstance(exc, errors.LockNotAvailable):
        return ConnectorError(
            f"{config.where}: lock wait exceeded lock_timeout ({config.lock_timeout_ms} ms) while {doing}: "
            "another session holds a conflicting lock (run the blocking_queries check); will retry",
            transient=True,
        )
    transient = (sqlstate[:2] in _TRANSIENT_CLASSES or sqlstate in _TRANSIENT_CODES) and (
        sqlstate not in _PERMANENT_CODES
    )
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not sqlstate:
        transient = True  # the connection broke mid-way (server restart, network): worth a retry
    kind = "will retry" if transient else "not retried"
    if sqlstate == "42501":
        kind += f"; {config.user} lacks a privilege: grant it, or use a user that owns the object"
    code = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
    return ConnectorError(f"{config.where}: error while {doing}: {detail}{code} ({kind})", transient=transient)


# Read-only sessions (plans, checks, verification) reuse idle connections: opening one (a new Postgres
# backend process) costs the server far more than the queries a plan runs. Sessions that change things
# always get a fresh connection of their own.
_IDLE_PER_KEY = 4
_idle: dict[tuple[Any, ...], list[Conn]] = {}
_idle_lock = threading.Lock()
_pid = os.getpid()


def _pool_key(config: PostgresConfig, password: str | None) -> tuple[Any, ...]:
    secret = hashlib.sha256((password or "").encode()).hexdigest()  # keyed by it, never kept in clear
    return (*config.model_dump().items(), secret)


def _take_idle(key: tuple[Any, ...]) -> Conn | None:
    global _pid
    with _idle_lock:
        if os.getpid() != _pid:  # forked (gunicorn, Celery prefork): the parent's sockets are not ours
            _idle.clear()
            _pid = os.getpid()
        idle = _idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                return conn
            conn.close()
    return None


def _give_back(key: tuple[Any, ...], conn: Conn) -> None:
    if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.close()
        return
    with _idle_lock:
        idle = _idle.setdefault(key, [])
        if len(idle) < _IDLE_PER_KEY:
            idle.append(conn)
            return
    conn.close()


def _connect(config: PostgresConfig, password: str | None, doing: str, *, read_only: bool) -> Conn:
    try:
        return psycopg.connect(
            host=config.host,
            port=config.port,
            dbname=config.dbname,
            user=config.user,
            password=password or None,
            sslmode=config.sslmode,
            connect_timeout=config.connect_timeout_s,
            application_name=config.application_name,
            options=_options(config, read_only=read_only),
            autocommit=True,
            # Keepalives detect a peer that vanished mid-statement; libpq would wait on a dead socket.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
    except psycopg.Error as exc:
        raise translate(exc, config, doing, password, connecting=True) from exc


@contextmanager
def session(config: PostgresConfig, password: str | None, doing: str, *, read_only: bool = False) -> Iterator[Conn]:
    """An autocommit session with the config's timeouts; psycopg errors inside become ConnectorErrors.

    ``doing`` names the operation for messages ("checking freshness of core.weather"). Use
    ``conn.transaction()`` for statements that must commit together. Read-only sessions come from a small
    per-process pool of idle connections and go back to it when they end cleanly.
    """
    key = _pool_key(config, password) if read_only else None
    conn = _take_idle(key) if key is not None else None
    if conn is None:
        conn = _connect(config, password, doing, read_only=read_only)
    clean = False
    try:
        yield conn
        clean = True
    except psycopg.Error as exc:
        raise translate(exc, config, doing, password) from exc
    finally:
        if key is not None and clean:
            _give_back(key, conn)
        else:
            conn.close()
