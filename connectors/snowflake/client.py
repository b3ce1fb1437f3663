"""Sessions, error translation and the query-history lookup that makes every execute idempotent.

Every session is a new ``snowflake.connector`` connection with the config's login, network and socket
timeouts, a statement timeout, autocommit, and ``QUERY_TAG`` set at login: the action id for an action's
session, ``cp-check`` for checks and plans. Every driver error leaves as a :class:`ConnectorError`, transient
(network, 5xx, throttling, a statement cancelled by its timeout or a lock wait) or permanent (login refused,
object missing or not authorized, SQL error), with the operation named and the password blanked.

Re-delivery: a Snowflake statement keeps running when the worker that sent it dies, and the query history
keeps it with its tag. :class:`TaggedRunner` reads the action's own statements back
(``<DB>.INFORMATION_SCHEMA.QUERY_HISTORY`` filtered by ``QUERY_TAG``: the by-session variant cannot see a
previous session) and skips a statement already run with success, waits for one still running, and runs the
rest. A statement is recognised by its text: the connector renders identifiers the same way every time, so
the text of ``ALTER TASK IDENTIFIER('DB.S.T') RESUME`` is its own signature.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import snowflake.connector
from snowflake.connector import DictCursor, SnowflakeConnection
from snowflake.connector import errors as sf_errors

from connectors.base import ConnectorError
from connectors.snowflake.config import SnowflakeConfig, quote

CHECK_TAG = "cp-check"
HISTORY_LIMIT = 10_000  # the table function's maximum; the action's statements are among the newest

# Login refused for a reason retrying cannot fix (bad password, locked user, unknown role/database/warehouse).
_PERMANENT_LOGIN_ERRNOS = {390100, 390101, 390102, 390104, 390106, 390189, 390190, 390191, 390192, 390201, 390422}
# Statement errors worth retrying: cancelled (by its timeout or an operator), lock waits, "warehouse busy".
_TRANSIENT_ERRNOS = {604, 625, 630, 250001, 250002, 250003, 250005}
_TRANSIENT_CLASSES: tuple[type[Exception], ...] = (
    sf_errors.OperationalError,
    sf_errors.InterfaceError,
    sf_errors.InternalServerError,
    sf_errors.ServiceUnavailableError,
    sf_errors.GatewayTimeoutError,
    sf_errors.BadGatewayError,
    sf_errors.TooManyRequests,
    sf_errors.RequestTimeoutError,
    sf_errors.OtherHTTPRetryableError,
)


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` blanked (Snowflake does not echo passwords; never trust that). A secret under
    4 characters would blank ordinary letters, so it is left: it cannot be told from the message anyway."""
    return text.replace(secret, "***") if secret and len(secret) >= 4 else text


def translate(exc: sf_errors.Error, config: SnowflakeConfig, doing: str, password: str | None) -> ConnectorError:
    """A driver error as a transient or permanent ConnectorError whose message says what to do."""
    detail = scrub(str(exc.msg or exc).strip().replace("\n", " "), password)
    errno = int(exc.errno or -1)
    sqlstate = str(exc.sqlstate or "")
    if errno in _PERMANENT_LOGIN_ERRNOS or isinstance(exc, sf_errors.ForbiddenError):
        return ConnectorError(
            f"{config.where}: login refused while {doing}: {detail} [fix the connection's config or its password "
            "secret; not retried]"
        )
    if errno in (604, 630) or sqlstate == "57014":
        return ConnectorError(
            f"{config.where}: statement cancelled while {doing}: {detail} (its statement timeout of "
            f"{config.statement_timeout_s} s, or an operator); will retry. If it is truly slow, raise "
            "statement_timeout_s or scale the warehouse",
            transient=True,
        )
    if errno == 625 or ("lock" in detail.lower() and "wait" in detail.lower()):
        return ConnectorError(
            f"{config.where}: lock wait while {doing}: {detail}; another transaction holds the table (an "
            "earlier, abandoned attempt's transaction is rolled back when its session ends); will retry",
            transient=True,
        )
    transient = isinstance(exc, _TRANSIENT_CLASSES) or errno in _TRANSIENT_ERRNOS
    if isinstance(exc, sf_errors.ProgrammingError):
        transient = False
    advice = "will retry; check that Snowflake is reachable" if transient else "not retried"
    if errno == 2003:
        advice = (
            "not retried; the object does not exist or the role lacks a privilege on it: check the catalog "
            "target's locator and the connection's role"
        )
    elif errno == 3001:
        advice = "not retried; the connection's role lacks a privilege: grant it, or use a role that has it"
    code = f" [error {errno}{', SQLSTATE ' + sqlstate if sqlstate and sqlstate != 'n/a' else ''}]" if errno > 0 else ""
    return ConnectorError(f"{config.where}: error while {doing}: {detail}{code} ({advice})", transient=transient)


def connect(config: SnowflakeConfig, password: str | None, doing: str, *, tag: str) -> SnowflakeConnection:
    """A new autocommit connection with every timeout set and ``QUERY_TAG`` = ``tag``."""
    kwargs: dict[str, Any] = {
        "account": config.account,
        "user": config.user,
        "password": password or "",
        "login_timeout": config.login_timeout_s,
        "network_timeout": config.network_timeout_s,
        "socket_timeout": config.socket_timeout_s,
        "autocommit": True,
        "client_session_keep_alive": False,
        "session_parameters": {
            "QUERY_TAG": tag,
            "STATEMENT_TIMEOUT_IN_SECONDS": config.statement_timeout_s,
            "TIMEZONE": "UTC",
        },
    }
    for key in ("role", "warehouse", "database", "host", "port"):
        value = getattr(config, key)
        if value is not None:
            kwargs[key] = value
    if config.host:
        kwargs["protocol"] = config.protocol
    try:
        return snowflake.connector.connect(**kwargs)
    except sf_errors.Error as exc:
        raise translate(exc, config, doing, password) from exc
    except OSError as exc:  # a socket error the driver did not wrap
        raise ConnectorError(
            f"{config.where}: cannot connect while {doing}: {exc} (will retry)", transient=True
        ) from exc


@contextmanager
def session(config: SnowflakeConfig, password: str | None, doing: str, *, tag: str) -> Iterator[SnowflakeConnection]:
    """A tagged session; driver errors inside become ConnectorErrors naming ``doing``. Closed at the end (an
    open transaction is rolled back by Snowflake then)."""
    conn = connect(config, password, doing, tag=tag)
    try:
        yield conn
    except sf_errors.Error as exc:
        raise translate(exc, config, doing, password) from exc
    finally:
        with suppress(sf_errors.Error):
            conn.close()


def lower_keys(row: dict[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in row.items()}


def fetch(conn: SnowflakeConnection, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """Rows of one statement as dicts with lower-case keys (SHOW answers lower-case, SELECT upper-case)."""
    with conn.cursor(DictCursor) as cur:
        cur.execute(sql, params)
        return [lower_keys(r) for r in cur.fetchall()] if cur.description else []


def scalar(conn: SnowflakeConnection, sql: str, params: Sequence[Any] | None = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
        return row[0] if row else None


# ------------------------------------------------------------------------------------------ re-delivery

_DONE = "SUCCESS"
_IN_FLIGHT = {"RUNNING", "QUEUED", "RESUMING_WAREHOUSE", "BLOCKED"}


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().upper()


def render(sql: str, params: Sequence[Any] = ()) -> str:
    """The text Snowflake records for ``sql`` with string ``params`` bound client-side (the driver's pyformat
    quoting), normalised: the statement's signature in the query history."""
    pieces = sql.split("%s")
    if len(pieces) != len(params) + 1:
        raise ValueError("placeholder count does not match the parameters")
    out = pieces[0]
    for value, rest in zip(params, pieces[1:], strict=True):
        if not isinstance(value, str):
            raise TypeError("only string parameters take part in a statement's signature")
        escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("'", "\\'")
        out += f"'{escaped}'" + rest
    return _normal(out)


def own_statements(conn: SnowflakeConnection, database: str, tag: str) -> list[dict[str, Any]]:
    """The statements that ran with ``QUERY_TAG = tag`` (any session of this user), oldest first."""
    history = f"{quote(database)}.INFORMATION_SCHEMA.QUERY_HISTORY"
    return fetch(
        conn,
        f"SELECT QUERY_ID, QUERY_TEXT, EXECUTION_STATUS, ERROR_MESSAGE, START_TIME "
        f"FROM TABLE({history}(RESULT_LIMIT => {HISTORY_LIMIT})) WHERE QUERY_TAG = %s ORDER BY START_TIME",
        (tag,),
    )


@dataclass
class TaggedRunner:
    """Runs an action's statements in its tagged session, once per action id across deliveries.

    ``history`` is read when the runner starts; ``done(sig)`` tells whether a statement with that signature
    already succeeded in an earlier delivery (waiting for one still running), and ``run`` executes a statement
    unless it did. ``first_delivery`` (the action's first attempt: every later delivery is a new attempt, since
    each claim counts one) skips the history read, which costs a QUERY_HISTORY round trip: nothing of the
    action can have run before it.
    """

    conn: SnowflakeConnection
    database: str
    tag: str
    log: Callable[[str], None]
    wait_timeout_s: float = 900
    poll_interval_s: float = 2
    history: list[dict[str, Any]] = field(default_factory=list)
    first_delivery: bool = False

    def __post_init__(self) -> None:
        if not self.first_delivery:
            self.history = own_statements(self.conn, self.database, self.tag)

    def _matches(self, signature: str) -> list[dict[str, Any]]:
        return [h for h in self.history if signature in _normal(str(h.get("query_text") or ""))]

    def done_exactly(self, text: str) -> dict[str, Any] | None:
        """The earlier successful statement whose whole text is ``text`` (``COMMIT``), or None."""
        want = _normal(text)
        return next(
            (
                h
                for h in reversed(self.history)
                if _normal(str(h.get("query_text") or "")) == want
                and str(h.get("execution_status") or "").upper() == _DONE
            ),
            None,
        )

    def done(self, signature: str) -> dict[str, Any] | None:
        """The earlier successful run of the statement with ``signature``, or None. One still running from a
        lost worker is waited for (Snowflake finishes it without its client) and then judged."""
        found = self._matches(signature)
        deadline = time.monotonic() + self.wait_timeout_s
        while any(str(h.get("execution_status") or "").upper() in _IN_FLIGHT for h in found):
            if time.monotonic() > deadline:
                raise ConnectorError(
                    f"a statement of this action from an earlier delivery is still running after "
                    f"{self.wait_timeout_s:.0f} s (query {found[-1].get('query_id')}); will retry",
                    transient=True,
                )
            self.log(f"waiting for query {found[-1].get('query_id')} of an earlier delivery to finish")
            time.sleep(self.poll_interval_s)
            self.history = own_statements(self.conn, self.database, self.tag)
            found = self._matches(signature)
        return next((h for h in reversed(found) if str(h.get("execution_status") or "").upper() == _DONE), None)

    def run(
        self, sql: str, params: Sequence[Any] = (), *, signature: str | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Execute ``sql`` unless the history shows it done; returns (rows, already_done)."""
        sig = signature or render(sql, params)
        earlier = self.done(sig)
        if earlier is not None:
            self.log(f"already done by an earlier delivery (query {earlier.get('query_id')}): {sig[:200]}")
            return [], True
        return fetch(self.conn, sql, params), False
