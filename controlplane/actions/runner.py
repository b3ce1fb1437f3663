"""Carrying out an action on a worker: claim, lease, execute, verify, record; and the reaper.

The runner owns lifecycle, status, leases and logs; connectors only implement the work (as Nautobot's
``run_job`` does for jobs). Every transition after the claim is fenced on ``(state=running,
attempts=N)``: a worker that lost its lease to the reaper cannot overwrite what the next attempt did.
"""

from __future__ import annotations

import logging
import socket
import threading
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from connectors.base import ConnectorError, ExecutionContext, Outcome, Verification
from controlplane.actions.claim import action_claim_queued
from controlplane.actions.models import ActionLogLine, ActionRun, ActionState
from controlplane.actions.services import announce_finished_on_commit, dispatch_on_commit, redispatch_due, target_ref
from controlplane.audit import context
from controlplane.audit.context import Channel
from controlplane.audit.services import CENSORED, audit_record
from controlplane.catalog.services import connector_for

log = logging.getLogger(__name__)

WORKER_NAME = f"worker@{socket.gethostname()}"


def _conf(name: str) -> Any:
    return settings.CONTROLPLANE[name]


class LeaseLost(Exception):
    """The reaper took this attempt's lease; the next attempt owns the action now."""


class _Lease:
    """Renews the lease every third of its length from a thread, and reads the cancel flag."""

    def __init__(self, action_id: Any, attempt: int) -> None:
        self.action_id, self.attempt = action_id, attempt
        self.lost = threading.Event()
        self.cancel = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{action_id}", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def renew(self) -> None:
        now = timezone.now()
        lease = timedelta(seconds=_conf("LEASE_SECONDS"))
        rows = ActionRun.objects.filter(id=self.action_id, state=ActionState.RUNNING, attempts=self.attempt)
        if rows.update(heartbeat_at=now, lease_expires_at=now + lease) != 1:
            self.lost.set()
            return
        if rows.filter(cancel_requested=True).exists():
            self.cancel.set()

    def _run(self) -> None:
        interval = max(_conf("LEASE_SECONDS") / 3, 0.5)
        try:
            while not self._stop.wait(interval) and not self.lost.is_set():
                try:
                    self.renew()
                except Exception:
                    log.exception("heartbeat failed for action %s", self.action_id)
        finally:
            connection.close()


def _claim(action_id: str) -> ActionRun | None:
    """queued -> running with a conditional UPDATE; a duplicate delivery finds nothing and returns None."""
    now = timezone.now()
    lease = timedelta(seconds=_conf("LEASE_SECONDS"))
    with transaction.atomic():
        action = action_claim_queued(action_id, now=now, lease_until=now + lease, worker=WORKER_NAME)
        if action is None:
            return None
        audit_record(
            event="action.started",
            obj=action,
            after={"state": action.state, "attempt": action.attempts, "worker": WORKER_NAME},
        )
    return action


class _Log:
    """The attempt's log lines, with the connection's secrets censored. ``write`` stores a line at once (a live
    log); ``line`` builds one for the caller to store with a transaction it makes anyway."""

    def __init__(self, action: ActionRun, secrets: list[str]) -> None:
        self.action_id, self.attempt = action.id, action.attempts
        self.secrets = [secret for secret in secrets if secret]

    def line(self, message: str, level: str = "info") -> ActionLogLine:
        for secret in self.secrets:
            message = message.replace(secret, CENSORED)
        return ActionLogLine(action_id=self.action_id, attempt=self.attempt, level=level, message=message[:4000])

    def write(self, message: str, level: str = "info") -> None:
        self.line(message, level).save(force_insert=True)


def _progress_writer(action: ActionRun, attempt: int) -> Callable[[int, int], None]:
    last: list[tuple[int, int]] = []

    def write(done: int, total: int) -> None:
        value = (max(0, done), max(0, total))
        if last and last[0] == value:
            return  # connectors report on every poll; only a change is worth a write
        ActionRun.objects.filter(id=action.id, state=ActionState.RUNNING, attempts=attempt).update(
            progress_done=value[0], progress_total=value[1]
        )
        last[:] = [value]

    return write


def _finish(
    action: ActionRun,
    attempt: int,
    *,
    state: str,
    event: str,
    error: str = "",
    outcome: Outcome | None = None,
    verification: Verification | None = None,
    retry_in: float | None = None,
    lines: Sequence[ActionLogLine] = (),
) -> bool:
    """Move a running attempt to its next state, fenced on the attempt number. False if the lease was lost.

    One conditional UPDATE (no read of the row first): the fence is its WHERE clause. ``lines`` (the verdict)
    are stored in the same transaction, also when the lease was lost (a log says what happened)."""
    now = timezone.now()
    change: dict[str, Any] = {"state": state, "error": error, "lease_expires_at": None}
    if outcome is not None:
        change["outcome"] = outcome.model_dump(mode="json")
    if verification is not None:
        change["verification"] = verification.model_dump(mode="json")
    if retry_in is not None:
        change.update(not_before=now + timedelta(seconds=retry_in), queued_at=now, dispatched_at=now)
    else:
        change["finished_at"] = now
    with transaction.atomic():
        if lines:
            ActionLogLine.objects.bulk_create(lines)
        fenced = ActionRun.objects.filter(id=action.id, state=ActionState.RUNNING, attempts=attempt)
        if fenced.update(**change) != 1:
            return False
        for field, value in change.items():
            setattr(action, field, value)
        after: dict[str, Any] = {"state": state, "attempt": attempt}
        if error:
            after["error"] = error
        if verification is not None:
            after["verification"] = {"ok": verification.ok, "summary": verification.summary}
        audit_record(event=event, obj=action, before={"state": "running"}, after=after)
        if retry_in is not None:
            dispatch_on_commit(action, countdown=retry_in)
        else:
            announce_finished_on_commit(action)
    return True


def action_execute(*, action_id: str, request_id: str = "") -> None:
    """Run one attempt of an action: claim, execute with a heartbeating lease, verify, record.

    ``request_id`` is the one the action was requested under (carried in the task message), so the
    whole trail of an action shares it."""
    close_old_connections()
    with context.change_context(channel=Channel.SYSTEM, actor_name=WORKER_NAME, request_id=request_id or None):
        action = _claim(action_id)
        if action is None:
            log.info("action %s: nothing to claim (duplicate delivery or no longer queued)", action_id)
            return
        _run_attempt(action)


def _run_attempt(action: ActionRun) -> None:
    attempt = action.attempts
    try:
        connector = connector_for(action.target.connection)
    except ConnectorError as exc:
        _finish(action, attempt, state=ActionState.FAILED, event="action.failed", error=exc.message)
        return
    log_ = _Log(action, list(connector.secrets.values()))
    write = log_.write
    verb = connector.verb(action.verb)
    params = verb.params_model.model_validate(action.params)
    target = target_ref(action.target)
    recorded: list[str] = []  # the 'executed' milestone, once: when the connector says so, else after execute

    def executed(summary: str, *, already_done: bool = False, lines: Sequence[ActionLogLine] = ()) -> None:
        if not recorded:
            recorded.append(summary)
            after = {"summary": summary, "already_done": already_done}
            _milestone(action, attempt, "action.executed", after, lines=[log_.line(f"executed: {summary}"), *lines])

    with _Lease(action.id, attempt) as lease:
        ctx = ExecutionContext(
            action_id=str(action.id),
            attempt=attempt,
            timeout_s=float(_conf("EXECUTE_TIMEOUT_SECONDS")),
            log=write,
            heartbeat=lease.renew,
            cancel_requested=lease.cancel.is_set,
            progress=_progress_writer(action, attempt),
            executed=executed,
        )
        try:
            write(f"attempt {attempt}: {action.verb} on {action.target.key} ({WORKER_NAME})")
            outcome = verb.execute(target, params, ctx)
            executed(outcome.summary, already_done=outcome.already_done, lines=[log_.line("verifying")])
            verification = verb.verify(target, params, outcome)
        except ConnectorError as exc:
            write(f"error: {exc.message}", "error")
            _after_error(action, attempt, exc, cancelled=lease.cancel.is_set())
            return
        except SoftTimeLimitExceeded:
            message = f"timed out after {_conf('EXECUTE_TIMEOUT_SECONDS')} s; check {action.target.key} before retrying"
            write(message, "error")
            _finish(action, attempt, state=ActionState.FAILED, event="action.failed", error=message)
            return
        except Exception as exc:
            log.error("action %s crashed:\n%s", action.id, traceback.format_exc())
            write(f"internal error: {type(exc).__name__}: {exc}", "error")
            _finish(
                action,
                attempt,
                state=ActionState.FAILED,
                event="action.failed",
                error=f"internal error: {type(exc).__name__}: {exc}",
            )
            return
    verdict = [log_.line(f"verification {'passed' if verification.ok else 'FAILED'}: {verification.summary}")]
    if verification.ok:
        _finish(
            action,
            attempt,
            state=ActionState.SUCCEEDED,
            event="action.succeeded",
            outcome=outcome,
            verification=verification,
            lines=verdict,
        )
    else:
        _finish(
            action,
            attempt,
            state=ActionState.FAILED,
            event="action.failed",
            outcome=outcome,
            verification=verification,
            error=f"verification failed: {verification.summary}",
            lines=verdict,
        )


def _milestone(
    action: ActionRun, attempt: int, event: str, after: dict[str, Any], *, lines: Sequence[ActionLogLine] = ()
) -> None:
    """Audit a step of a running attempt (fenced like ``_finish``), with its log lines in the same commit."""
    with transaction.atomic():
        if lines:
            ActionLogLine.objects.bulk_create(lines)
        if ActionRun.objects.filter(id=action.id, state=ActionState.RUNNING, attempts=attempt).exists():
            audit_record(event=event, obj=action, after={"attempt": attempt, **after})


def _after_error(action: ActionRun, attempt: int, exc: ConnectorError, *, cancelled: bool) -> None:
    if cancelled:
        _finish(action, attempt, state=ActionState.CANCELLED, event="action.cancelled", error=exc.message)
    elif exc.transient and action.idempotent and attempt < action.max_attempts:
        backoff = _conf("RETRY_BACKOFF_SECONDS") * 2 ** (attempt - 1)
        ActionLogLine.objects.create(
            action_id=action.id,
            attempt=attempt,
            message=f"transient error; retrying in {backoff}s (attempt {attempt + 1} of {action.max_attempts})",
        )
        _finish(
            action,
            attempt,
            state=ActionState.QUEUED,
            event="action.retry_scheduled",
            error=exc.message,
            retry_in=backoff,
        )
    else:
        _finish(action, attempt, state=ActionState.FAILED, event="action.failed", error=exc.message)


def actions_reap() -> dict[str, list[str]]:
    """Recover from lost workers and lost messages.

    Running actions whose lease lapsed are re-queued when their verb is idempotent and attempts remain
    (the connector's idempotency token makes the repeat harmless), otherwise they need attention. Queued
    actions never picked up are dispatched again.
    """
    now = timezone.now()
    requeued: list[str] = []
    attention: list[str] = []
    with context.change_context(channel=Channel.SCHEDULE, actor_name="reaper"), transaction.atomic():
        expired = ActionRun.objects.select_for_update(skip_locked=True).filter(
            state=ActionState.RUNNING, lease_expires_at__lt=now
        )
        for action in expired[:500]:
            lost = f"worker {action.worker or '?'} stopped renewing its lease during attempt {action.attempts}"
            if action.idempotent and action.attempts < action.max_attempts:
                action.state, action.queued_at, action.dispatched_at = ActionState.QUEUED, now, now
                action.lease_expires_at, action.worker = None, ""
                action.save()
                audit_record(
                    event="action.reaped",
                    obj=action,
                    before={"state": "running"},
                    after={"state": action.state, "attempt": action.attempts},
                    reason=f"{lost}; re-queued",
                )
                ActionLogLine.objects.create(
                    action_id=action.id,
                    attempt=action.attempts,
                    level="warning",
                    message=f"{lost}; re-queued for attempt {action.attempts + 1}",
                )
                dispatch_on_commit(action)
                requeued.append(str(action.id))
            else:
                why = "the verb is not idempotent" if not action.idempotent else "no attempts left"
                action.state, action.finished_at, action.lease_expires_at = (
                    ActionState.NEEDS_ATTENTION,
                    now,
                    None,
                )
                action.error = f"{lost}; not retried because {why}: check {action.target.key} by hand"
                action.save()
                audit_record(
                    event="action.reaped",
                    obj=action,
                    before={"state": "running"},
                    after={"state": action.state},
                    reason=action.error,
                )
                announce_finished_on_commit(action)
                attention.append(str(action.id))
        redispatched = redispatch_due(now, timedelta(seconds=_conf("DISPATCH_GRACE_SECONDS")))
    if requeued or attention or redispatched:
        log.warning("reaper: requeued=%s needs_attention=%s redispatched=%s", requeued, attention, redispatched)
    return {"requeued": requeued, "needs_attention": attention, "redispatched": redispatched}
