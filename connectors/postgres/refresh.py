"""The ``refresh-mart`` verb: REFRESH MATERIALIZED VIEW [CONCURRENTLY], exactly once per action.

CONCURRENTLY (the seed runbook's way) keeps the view readable: it takes an EXCLUSIVE lock, which only
blocks other refreshes. It needs a populated view and a usable unique index; without them the refresh
must take an ACCESS EXCLUSIVE lock that blocks every reader for its whole duration, so the verb only
does that with the requester's explicit consent (``allow_blocking_readers``).

Exactly once: the refresh and its ledger row commit in one transaction, under an advisory lock keyed on
the action id; a re-delivered action finds the row and reports ``already_done`` instead of refreshing.
https://www.postgresql.org/docs/15/sql-refreshmaterializedview.html
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from connectors.base import (
    ConnectorError,
    ExecutionContext,
    Outcome,
    Plan,
    Risk,
    TargetRef,
    Touch,
    Verb,
    Verification,
)
from connectors.postgres.catalog import MatviewState, inspect_matview, qualified
from connectors.postgres.client import Conn
from connectors.postgres.config import MatviewLocator, PostgresConfig, parse_locator
from connectors.postgres.ledger import LedgerRow, ensure_ledger, find_action, record

if TYPE_CHECKING:
    from connectors.postgres.connector import PostgresConnector

T = TypeVar("T")

LOCK_CONCURRENT = "EXCLUSIVE lock: reads continue, writes to the view block"
LOCK_BLOCKING = "ACCESS EXCLUSIVE lock: readers block for the duration"
LARGE_VIEW_BYTES = 1 << 30  # above this a refresh is a long operation: one notch more risk
CANCEL_POLL_S = 1.0
HEARTBEAT_EVERY_S = 10.0


class RefreshMartParams(BaseModel):
    """Parameters of ``refresh-mart``.

    ``concurrently``: None picks CONCURRENTLY whenever it is possible; True insists (an error if it is
    impossible); False forces a blocking refresh. ``allow_blocking_readers`` is the explicit consent a
    blocking refresh needs. ``timeout_s`` bounds the REFRESH statement itself.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrently: bool | None = None
    allow_blocking_readers: bool = False
    timeout_s: int = Field(default=600, ge=1, le=3600)


def choose_concurrently(state: MatviewState, params: RefreshMartParams) -> bool:
    """The refresh mode for ``state``; a permanent error if CONCURRENTLY is demanded but impossible."""
    if params.concurrently is None:
        return state.concurrent_possible
    if params.concurrently and not state.concurrent_possible:
        raise ConnectorError(f"cannot refresh CONCURRENTLY: {state.concurrent_blocker}")
    return params.concurrently


def _mode(concurrently: bool) -> str:
    return "concurrently" if concurrently else "blocking"


def _consent_reason(state: MatviewState) -> str:
    why = state.concurrent_blocker or "a blocking refresh was requested (concurrently=false)"
    return (
        f"{why}. A blocking refresh takes an ACCESS EXCLUSIVE lock on {state.display}: every query reading "
        "it waits until the refresh commits. Pass allow_blocking_readers=true to accept that."
    )


def _risk(state: MatviewState, concurrently: bool) -> Risk:
    large = state.size_bytes >= LARGE_VIEW_BYTES
    if concurrently:
        return Risk.MEDIUM if large else Risk.LOW
    return Risk.HIGH if large else Risk.MEDIUM


def _warnings(state: MatviewState, concurrently: bool) -> list[str]:
    warnings = []
    if not state.owned_by_current_user:
        warnings.append(f"the connection's user does not own {state.display}: REFRESH will fail with permission denied")
    if concurrently:
        warnings.append(
            "CONCURRENTLY builds the new contents beside the old and applies the difference: it takes longer "
            "than a blocking refresh and needs temporary space about the size of the view"
        )
    else:
        warnings.append(f"readers of {state.display} block until the refresh commits")
        if state.other_lock_holders:
            warnings.append(
                f"{state.other_lock_holders} session(s) hold locks on the view now: the refresh waits behind "
                "them (up to lock_timeout) while queuing every new reader behind itself"
            )
    return warnings


class RefreshMartVerb(Verb["PostgresConnector", RefreshMartParams]):
    """Refresh a materialized view (a mart), CONCURRENTLY when possible, once per action id."""

    name = "refresh-mart"
    params_model = RefreshMartParams
    target_kinds = ("matview",)
    idempotent = True
    description = "Refresh a materialized view; CONCURRENTLY (readers keep reading) whenever possible."
    connector: PostgresConnector

    def plan(self, target: TargetRef, params: RefreshMartParams) -> Plan:
        """Read-only preview: the view, its size and rows, the mode and the lock it will take."""
        locator: MatviewLocator = parse_locator(target, self.target_kinds)
        with self.connector.session(f"planning a refresh of {locator.display}", read_only=True) as conn:
            state = inspect_matview(conn, self.connector.cfg, locator)
        concurrently = choose_concurrently(state, params)
        mode = _mode(concurrently)
        contents = f"{state.rows} rows" if state.populated else "not populated"
        return Plan(
            summary=f"refresh {state.display} {mode} ({contents}, {state.size_pretty})",
            touches=[Touch(kind="matview", name=state.display, detail={"rows": state.rows, "size": state.size_pretty})],
            counts={"views": 1, "rows": state.rows or 0, "bytes": state.size_bytes},
            estimated_bytes=state.size_bytes,
            locks=[LOCK_CONCURRENT if concurrently else LOCK_BLOCKING],
            warnings=_warnings(state, concurrently),
            risk=_risk(state, concurrently),
            requires_consent=not concurrently,
            consent_reason="" if concurrently else _consent_reason(state),
            details={
                "view": state.display,
                "populated": state.populated,
                "rows": state.rows,
                "size_bytes": state.size_bytes,
                "size": state.size_pretty,
                "unique_indexes": state.unique_indexes,
                "concurrent_possible": state.concurrent_possible,
                "concurrent_blocker": state.concurrent_blocker,
                "mode": mode,
                "timeout_s": params.timeout_s,
            },
        )

    def execute(self, target: TargetRef, params: RefreshMartParams, ctx: ExecutionContext) -> Outcome:
        """Refresh once per ``ctx.action_id``; a repeat returns ``already_done`` with the first's facts."""
        locator: MatviewLocator = parse_locator(target, self.target_kinds)
        config = self.connector.cfg
        with self.connector.session(f"refreshing {locator.display}") as conn:
            # The row counts around the refresh may take as long as the refresh itself on a big view.
            conn.execute("select set_config('statement_timeout', %s, false)", (str(params.timeout_s * 1000),))
            done = find_action(conn, config, ctx.action_id)
            if done is not None:
                ctx.log(f"{done.view} was already refreshed by this action at {done.finished_at.isoformat()}")
                return _outcome(done, already_done=True)
            state = inspect_matview(conn, config, locator)
            concurrently = choose_concurrently(state, params)
            if not concurrently and not params.allow_blocking_readers:
                raise ConnectorError(f"needs consent: {_consent_reason(state)}")
            ensure_ledger(conn, config)
            lock = LOCK_CONCURRENT if concurrently else LOCK_BLOCKING
            ctx.log(f"refreshing {state.display} {_mode(concurrently)} ({lock})")
            row, already = _watched(
                conn, ctx, lambda: _refresh_once(conn, config, locator, state, concurrently, params, ctx.action_id)
            )
        if already:
            ctx.log(f"{row.view} was already refreshed by this action (concurrent delivery)")
            return _outcome(row, already_done=True)
        ctx.log(f"refreshed {row.view} in {row.duration_ms} ms, {row.rows_after} rows (was {row.rows_before})")
        return _outcome(row, already_done=False)

    def verify(self, target: TargetRef, params: RefreshMartParams, outcome: Outcome) -> Verification:
        """The view is populated, its row count matches the ledger, and the action's ledger row exists."""
        locator: MatviewLocator = parse_locator(target, self.target_kinds)
        action_id = str(outcome.details.get("action_id", ""))
        with self.connector.session(f"verifying the refresh of {locator.display}", read_only=True) as conn:
            row = find_action(conn, self.connector.cfg, action_id) if action_id else None
            state = inspect_matview(conn, self.connector.cfg, locator)
        problems = _verification_problems(state, row, outcome, action_id)
        details = {
            "populated": state.populated,
            "rows": state.rows,
            "ledger": row.as_details() if row else None,
        }
        if problems:
            return Verification(ok=False, summary="; ".join(problems), details=details)
        assert row is not None  # no problems means the ledger row was found
        summary = f"{state.display} is populated with {state.rows} rows, refreshed at {row.finished_at.isoformat()}"
        return Verification(ok=True, summary=summary, details=details)


def _outcome(row: LedgerRow, *, already_done: bool) -> Outcome:
    verb = "was already refreshed" if already_done else "refreshed"
    summary = f"{row.view} {verb} {row.mode} in {row.duration_ms} ms: {row.rows_before} -> {row.rows_after} rows"
    return Outcome(summary=summary, details=row.as_details(), already_done=already_done)


def _verification_problems(state: MatviewState, row: LedgerRow | None, outcome: Outcome, action_id: str) -> list[str]:
    problems = []
    if not state.populated:
        problems.append(f"{state.display} is not populated")
    if row is None:
        problems.append(f"no ledger row for action {action_id or '(none in outcome)'}: the refresh did not commit")
        return problems
    if state.populated and state.rows != row.rows_after:
        problems.append(
            f"{state.display} has {state.rows} rows but the refresh recorded {row.rows_after} "
            "(refreshed again since, or the ledger is wrong)"
        )
    started = outcome.details.get("started_at")
    if started and row.finished_at < datetime.fromisoformat(str(started)):
        problems.append(
            f"the ledger row finished at {row.finished_at.isoformat()}, before the action started ({started})"
        )
    return problems


def _refresh_once(
    conn: Conn,
    config: PostgresConfig,
    locator: MatviewLocator,
    state: MatviewState,
    concurrently: bool,
    params: RefreshMartParams,
    action_id: str,
) -> tuple[LedgerRow, bool]:
    """One transaction: lock the action id, re-check the ledger, REFRESH, count, record, commit.

    Returns the ledger row and whether it was already there (another delivery of the same action won).
    """
    refresh = sql.SQL("refresh materialized view {}{}").format(
        sql.SQL("concurrently ") if concurrently else sql.SQL(""), qualified(locator)
    )
    with conn.transaction():
        # Two deliveries of one action serialize here; the loser then finds the winner's ledger row.
        conn.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"refresh-mart:{action_id}",))
        existing = find_action(conn, config, action_id)
        if existing is not None:
            return existing, True
        # SET LOCAL cannot take a bind parameter; set_config(..., true) is its parameterized form.
        conn.execute("select set_config('statement_timeout', %s, true)", (str(params.timeout_s * 1000),))
        started_at = _clock(conn)
        conn.execute(refresh)
        rows_after = _count(conn, locator)
        finished_at = _clock(conn)
        row = LedgerRow(
            action_id=action_id,
            view=state.display,
            mode=_mode(concurrently),
            started_at=started_at,
            finished_at=finished_at,
            rows_before=state.rows,
            rows_after=rows_after,
            duration_ms=int((finished_at - started_at).total_seconds() * 1000),
        )
        record(conn, config, row)
    return row, False


def _clock(conn: Conn) -> datetime:
    row = conn.execute("select clock_timestamp()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


def _count(conn: Conn, locator: MatviewLocator) -> int:
    row = conn.execute(sql.SQL("select count(*) from {}").format(qualified(locator))).fetchone()
    return int(row[0]) if row else 0


def _watched(conn: Conn, ctx: ExecutionContext, work: Callable[[], T]) -> T:
    """Run ``work`` (which uses ``conn``) in a helper thread while this thread heartbeats the lease and
    polls for cancellation, cancelling the running statement if asked. ``ctx`` callbacks are only ever
    called from the calling thread (they may touch the runner's database connection)."""
    cancelled = False
    last_beat = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-refresh") as pool:
        future = pool.submit(work)
        try:
            while True:
                try:
                    return future.result(timeout=CANCEL_POLL_S)
                except TimeoutError:
                    pass
                if time.monotonic() - last_beat >= HEARTBEAT_EVERY_S:
                    ctx.heartbeat()
                    last_beat = time.monotonic()
                if not cancelled and ctx.cancel_requested():
                    ctx.log("cancel requested: cancelling the refresh (it rolls back; the view keeps its rows)")
                    conn.cancel_safe(timeout=5)
                    cancelled = True
        except psycopg.errors.QueryCanceled as exc:
            if cancelled:
                raise ConnectorError("refresh cancelled on request; the view keeps its previous contents") from exc
            raise
        except BaseException:
            # Leaving early (heartbeat failed, interrupt): do not leave the statement running behind us.
            if not future.done():
                conn.cancel_safe(timeout=5)
            raise
