"""The ``terminate-blocking`` verb: ``pg_terminate_backend`` of the sessions blocking others (seed 004,
"Database Lock Contention", step 2: "kill blocking queries if needed, use with caution").

The plan lists each blocking session (pid, user, application, state, query, transaction age, the sessions
it blocks) as the ``blocking_queries`` check finds them. Execute terminates exactly the sessions the
approved plan lists, and only if the same session (pid and backend start) still blocks someone: a pid
reused by a new backend, or a blocker that finished on its own, is left alone. The terminated pids are
recorded in the action ledger, so a re-delivered action terminates nothing more. Terminating a backend
rolls back its open transaction: the risk is high, and a protected environment asks a second person.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from connectors.base import ExecutionContext, Outcome, Plan, Risk, TargetRef, Touch, Verb, Verification
from connectors.postgres.checks import QUERY_TEXT_CHARS, jsonable
from connectors.postgres.client import Conn
from connectors.postgres.config import parse_locator
from connectors.postgres.ledger import ensure_action_ledger, find_action_record, record_action

if TYPE_CHECKING:
    from connectors.postgres.connector import PostgresConnector

GONE_WAIT_S = 5.0  # a terminated backend exits within moments; verify waits this long for it

# One row per session that blocks at least one other session of this database (pg_blocking_pids).
_BLOCKERS_SQL = """
    select b.pid, b.backend_start, b.usename, b.application_name, b.state,
           extract(epoch from now() - coalesce(b.xact_start, b.query_start))::float8,
           left(b.query, %(chars)s),
           array_agg(a.pid order by a.pid),
           max(extract(epoch from now() - a.query_start))::float8
    from pg_stat_activity a
    cross join lateral unnest(pg_blocking_pids(a.pid)) as bp(pid)
    join pg_stat_activity b on b.pid = bp.pid
    where a.wait_event_type = 'Lock'
      and a.datname = current_database()
      and b.pid <> pg_backend_pid()
      and now() - a.query_start >= make_interval(secs => %(min_s)s)
    group by b.pid, b.backend_start, b.usename, b.application_name, b.state, b.xact_start, b.query_start, b.query
    order by b.pid
"""

_KEYS = ("pid", "backend_start", "user", "application", "state", "xact_age_s", "query", "blocks", "longest_wait_s")


class TerminateBlockingParams(BaseModel):
    """``min_duration_s``: only blockers of sessions waiting at least this long (as blocking_queries);
    ``pids``: only these of the blockers (default: all of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_duration_s: float = Field(default=0, ge=0)
    pids: list[int] | None = Field(default=None, min_length=1, max_length=100)


def blockers(conn: Conn, params: TerminateBlockingParams) -> list[dict[str, Any]]:
    """The sessions blocking others now (restricted to ``params.pids`` when given), JSON-ready."""
    rows = conn.execute(_BLOCKERS_SQL, {"chars": QUERY_TEXT_CHARS, "min_s": params.min_duration_s}).fetchall()
    found = [{k: jsonable(v) for k, v in zip(_KEYS, row, strict=True)} for row in rows]
    return [b for b in found if params.pids is None or b["pid"] in params.pids]


class TerminateBlockingVerb(Verb["PostgresConnector", TerminateBlockingParams]):
    """Terminate the sessions blocking others (the plan lists them), once per action id."""

    name = "terminate-blocking"
    params_model = TerminateBlockingParams
    target_kinds = ("database",)
    idempotent = True
    description = "pg_terminate_backend of the sessions blocking others; their transactions roll back."
    connector: PostgresConnector

    def plan(self, target: TargetRef, params: TerminateBlockingParams) -> Plan:
        parse_locator(target, self.target_kinds)
        with self.connector.session("looking for blocking sessions", read_only=True) as conn:
            found = blockers(conn, params)
        warnings = ["a terminated session's open transaction is rolled back: its uncommitted work is lost"]
        if params.pids is not None and len(found) < len(params.pids):
            missing = sorted(set(params.pids) - {b["pid"] for b in found})
            warnings.append(f"pid(s) {', '.join(map(str, missing))} block nobody now: they are left alone")
        pids = ", ".join(str(b["pid"]) for b in found)
        return Plan(
            summary=f"terminate {len(found)} blocking session(s): pid {pids}" if found else "no session blocks another",
            touches=[
                Touch(kind="session", name=f"pid {b['pid']}", detail={k: b[k] for k in ("user", "state", "query")})
                for b in found
            ],
            counts={"sessions": len(found), "blocked": len({p for b in found for p in b["blocks"]})},
            warnings=warnings,
            risk=Risk.HIGH,
            details={"blockers": found},
        )

    def execute(self, target: TargetRef, params: TerminateBlockingParams, ctx: ExecutionContext) -> Outcome:
        parse_locator(target, self.target_kinds)
        config = self.connector.cfg
        with self.connector.session("terminating blocking sessions") as conn:
            done = find_action_record(conn, config, ctx.action_id)
            if done is not None:
                ctx.log(f"this action already terminated pid(s) {done['terminated']} at {done['finished_at']}")
                return _outcome({**done, "action_id": ctx.action_id}, already_done=True)
            ensure_action_ledger(conn, config)
            planned = list(ctx.plan.details.get("blockers", [])) if ctx.plan is not None else blockers(conn, params)
            with conn.transaction():
                conn.execute(
                    "select pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"terminate-blocking:{ctx.action_id}",)
                )
                again = find_action_record(conn, config, ctx.action_id)
                if again is not None:
                    return _outcome({**again, "action_id": ctx.action_id}, already_done=True)
                now = {(b["pid"], b["backend_start"]) for b in blockers(conn, TerminateBlockingParams())}
                terminated: list[int] = []
                skipped: list[int] = []
                for b in planned:
                    if (b["pid"], b["backend_start"]) not in now:
                        skipped.append(b["pid"])
                        ctx.log(f"pid {b['pid']} no longer blocks anyone (or is another session now): left alone")
                        continue
                    row = conn.execute("select pg_terminate_backend(%s)", (b["pid"],)).fetchone()
                    (terminated if row and row[0] else skipped).append(b["pid"])
                    ctx.log(f"terminated pid {b['pid']} ({b['user']}, {b['state']}): {str(b['query'])[:200]}")
                details = {
                    "terminated": terminated,
                    "skipped": skipped,
                    "sessions": [b for b in planned if b["pid"] in terminated],
                }
                record_action(conn, config, action_id=ctx.action_id, verb=self.name, target=target.key, details=details)
        return _outcome({**details, "action_id": ctx.action_id}, already_done=False)

    def verify(self, target: TargetRef, params: TerminateBlockingParams, outcome: Outcome) -> Verification:
        parse_locator(target, self.target_kinds)
        sessions = list(outcome.details.get("sessions", []))
        deadline = time.monotonic() + GONE_WAIT_S
        while True:
            with self.connector.session("checking the terminated sessions are gone", read_only=True) as conn:
                alive = _alive(conn, sessions)
                still = blockers(conn, TerminateBlockingParams(min_duration_s=params.min_duration_s))
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if alive:
            return Verification(ok=False, summary=f"pid(s) {', '.join(map(str, alive))} are still running")
        summary = f"pid(s) {', '.join(str(s['pid']) for s in sessions) or '(none)'} are gone; "
        summary += f"{len(still)} session(s) block others now" if still else "no session blocks another"
        return Verification(ok=True, summary=summary, details={"blocking_now": still})


def _alive(conn: Conn, sessions: list[dict[str, Any]]) -> list[int]:
    if not sessions:
        return []
    rows = conn.execute(
        "select pid, backend_start from pg_stat_activity where pid = any(%s)", ([s["pid"] for s in sessions],)
    ).fetchall()
    live = {(pid, jsonable(start)) for pid, start in rows}
    return [s["pid"] for s in sessions if (s["pid"], s["backend_start"]) in live]


def _outcome(details: dict[str, Any], *, already_done: bool) -> Outcome:
    verb = "already terminated" if already_done else "terminated"
    pids = ", ".join(map(str, details["terminated"])) or "no session"
    return Outcome(summary=f"{verb} {pids}", details=details, already_done=already_done)
