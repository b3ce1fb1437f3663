"""Carrying out an action on a worker: claim, lease, execute, verify, record.

The runner owns lifecycle, status, leases and logs; connectors only implement the work (as Nautobot's
``run_job`` does for jobs). Every transition after the claim is fenced on ``(state=running,
attempts=N)``: a worker that lost its lease to the reaper cannot overwrite what the next attempt did.

An attempt's log lines and progress go into one buffer, the ``_Journal``. The attempt's thread (the one
that renews the lease) stores what is pending every ``LOG_FLUSH_SECONDS``; the finish takes what is left
and stores it in its own transaction. Nothing else writes log lines of a running attempt.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from connectors.base import ConnectorError, ExecutionContext, Outcome, Plan, Verification
from controlplane.actions import signals
from controlplane.actions.lifecycle import (
    announce_finished_on_commit,
    attention_error,
    dispatch_on_commit,
    executed_effect,
)
from controlplane.actions.models import ActionLogLine, ActionRun, ActionState
from controlplane.audit import context
from controlplane.audit.context import Channel
from controlplane.audit.services import audit_record, redact
from controlplane.catalog.services import connector_for, target_ref

log = logging.getLogger(__name__)

WORKER_NAME = f"worker@{socket.gethostname()}"


# How often the attempt's thread stores the journal's pending lines and progress: the live log lags the
# attempt by at most this.
LOG_FLUSH_SECONDS = 0.5
# How often the attempt's thread reads the cancel flag: a cancel reaches the connector within about this
# (the lease renewal, every third of the lease, would make an operator wait up to 20 s).
CANCEL_CHECK_SECONDS = 1.0


def _conf(name: str) -> Any:
    return settings.CONTROLPLANE[name]


class LeaseLost(Exception):
    """The reaper took this attempt's lease; the next attempt owns the action now."""


class _Lease:
    """The attempt's thread: renews the lease every third of its length, reads the cancel flag every
    ``CANCEL_CHECK_SECONDS`` and stores the journal's pending lines and progress every ``LOG_FLUSH_SECONDS``.
    It is stopped after the finish, which took what was still pending."""

    def __init__(self, action_id: Any, attempt: int, journal: _Journal) -> None:
        self.action_id, self.attempt, self.journal = action_id, attempt, journal
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

    def check_cancel(self) -> None:
        if ActionRun.objects.filter(id=self.action_id, cancel_requested=True).exists():
            self.cancel.set()

    def _run(self) -> None:
        interval = max(_conf("LEASE_SECONDS") / 3, 0.5)
        renew_at = time.monotonic() + interval
        check_at = time.monotonic() + CANCEL_CHECK_SECONDS
        try:
            while not self._stop.wait(LOG_FLUSH_SECONDS):
                if self.lost.is_set():
                    return
                try:
                    self.journal.flush()
                except Exception:
                    log.exception("could not store log lines of action %s; the finish takes them", self.action_id)
                now = time.monotonic()
                try:
                    if now >= renew_at:
                        renew_at = now + interval
                        self.renew()
                    if now >= check_at and not self.cancel.is_set():
                        check_at = now + CANCEL_CHECK_SECONDS
                        self.check_cancel()
                except Exception:
                    log.exception("heartbeat failed for action %s", self.action_id)
        finally:
            connection.close()


def _claim(action_id: str) -> ActionRun | None:
    """queued -> running with a conditional UPDATE, then the claimed row with its target, connection and
    environment; a duplicate delivery (or an action cancelled or not yet due) finds nothing and returns None."""
    now = timezone.now()
    lease = timedelta(seconds=_conf("LEASE_SECONDS"))
    with transaction.atomic():
        claimed = (
            ActionRun.objects.filter(id=action_id, state=ActionState.QUEUED)
            .exclude(not_before__gt=now)
            .update(
                state=ActionState.RUNNING,
                attempts=F("attempts") + 1,
                heartbeat_at=now,
                lease_expires_at=now + lease,
                worker=WORKER_NAME,
                not_before=None,
                started_at=Coalesce(F("started_at"), Value(now)),
            )
        )
        if claimed != 1:
            return None
        action = ActionRun.objects.select_related("target__connection__environment").get(id=action_id)
        audit_record(
            event="action.started",
            obj=action,
            after={"state": action.state, "attempt": action.attempts, "worker": WORKER_NAME},
        )
    return action


class _Journal:
    """An attempt's log lines (the connection's secrets censored, each stamped when written) and progress,
    buffered until the attempt's thread stores them (``flush``) or the finish takes them (``take``).

    A connector logs and reports progress on every poll; the buffer keeps those writes off the attempt's
    path. A worker that dies loses the lines it wrote since the last flush; the audit trail is written with
    the transitions themselves."""

    def __init__(self, action: ActionRun, secrets: list[str]) -> None:
        self.action, self.action_id, self.attempt = action, action.id, action.attempts
        self.secrets = [secret for secret in secrets if secret]
        self._lock = threading.Lock()  # the pending items (never held across a query)
        self._storing = threading.Lock()  # held while a flush stores: a take waits, so lines keep their order
        self._lines: list[ActionLogLine] = []
        self._progress: tuple[int, int] | None = None
        self._reported: tuple[int, int] | None = None  # the last value reported, stored or pending

    def line(self, message: str, level: str = "info") -> ActionLogLine:
        """A censored line stamped now (not yet in the buffer: ``write`` adds one, the finish passes its own)."""
        message = redact(message, self.secrets)
        return ActionLogLine(
            action_id=self.action_id, attempt=self.attempt, level=level, message=message[:4000], at=timezone.now()
        )

    def write(self, message: str, level: str = "info") -> None:
        """Add a line to the live log."""
        line = self.line(message, level)
        with self._lock:
            self._lines.append(line)

    def progress(self, done: int, total: int) -> None:
        """Report how far the attempt is; connectors report on every poll, only a change is kept."""
        value = (max(0, done), max(0, total))
        with self._lock:
            if value != self._reported:
                self._progress = self._reported = value

    def take(self) -> tuple[list[ActionLogLine], tuple[int, int] | None]:
        """What is pending (lines, progress), for the finish's transaction to store."""
        with self._storing, self._lock:
            lines, self._lines = self._lines, []
            value, self._progress = self._progress, None
            return lines, value

    def flush(self) -> None:
        """Store what is pending: the lines in one INSERT, the progress fenced on the attempt. On failure
        they go back in front of the buffer, for the next flush or the finish."""
        with self._storing:
            with self._lock:
                lines, value = self._lines, self._progress
                self._lines, self._progress = [], None
            try:
                if lines:
                    ActionLogLine.objects.bulk_create(lines)
                    lines = []
                stored = 0
                if value is not None:
                    fenced = ActionRun.objects.filter(id=self.action_id, state=ActionState.RUNNING)
                    fenced = fenced.filter(attempts=self.attempt)
                    stored = fenced.update(progress_done=value[0], progress_total=value[1])
            except Exception:
                with self._lock:
                    self._lines[:0] = lines
                    if value is not None and self._progress is None:
                        self._progress = value
                raise
        if value is not None and stored:
            _announce(signals.action_progress, self.action, done=value[0], total=value[1])


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
    journal: _Journal | None = None,
) -> bool:
    """Move a running attempt to its next state, fenced on the attempt number. False if the lease was lost.

    One transaction: the journal's pending lines, then ``lines`` (the verdict), stored with ``bulk_create``
    (also when the lease was lost: a log says what happened); the conditional UPDATE, whose WHERE clause is
    the fence, with the journal's pending progress; the audit event."""
    now = timezone.now()
    change: dict[str, Any] = {"state": state, "error": error, "lease_expires_at": None}
    if journal is not None:
        pending, progress = journal.take()
        lines = [*pending, *lines]
        if progress is not None:
            change.update(progress_done=progress[0], progress_total=progress[1])
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
        _announce(signals.action_started, action, attempt=action.attempts)
        _run_attempt(action)


def _announce(signal: Any, action: ActionRun, **facts: Any) -> None:
    """Tell the subscribers of ``signal`` (sent after the change committed) about ``action``; a receiver's
    error is logged, never raised into the attempt."""
    if not signal.has_listeners(ActionRun):
        return
    for receiver, result in signal.send_robust(
        sender=ActionRun, action_id=action.id, incident_id=action.incident_id, **facts
    ):
        if isinstance(result, Exception):
            log.error("%s failed for action %s: %r", receiver, action.id, result)


def _run_attempt(action: ActionRun) -> None:
    attempt = action.attempts
    try:
        connector = connector_for(action.target.connection)
    except ConnectorError as exc:
        effect = _effect_made(action, [])
        if effect is not None:
            error = attention_error(exc.message, effect)
            _finish(action, attempt, state=ActionState.NEEDS_ATTENTION, event="action.needs_attention", error=error)
        else:
            _finish(action, attempt, state=ActionState.FAILED, event="action.failed", error=exc.message)
        return
    journal = _Journal(action, list(connector.secrets.values()))
    write = journal.write
    verb = connector.verb(action.verb)
    params = verb.params_model.model_validate(action.params)
    target = target_ref(action.target)
    # The 'executed' milestone, once: when the connector says so, else after execute. From then on the effect
    # exists in the outside system, and the action must not end 'failed' with the target released.
    made: list[Outcome] = []

    def executed(summary: str, details: Mapping[str, Any] | None = None, *, already_done: bool = False) -> None:
        if not made:
            made.append(Outcome(summary=summary, details=dict(details or {})))
            after = {
                "summary": summary,
                "already_done": already_done,
                **({"details": dict(details)} if details else {}),
            }
            journal.write(f"executed: {summary}")
            _milestone(action, attempt, "action.executed", after)

    def failed(error: str, **more: Any) -> None:
        effect = _effect_made(action, made)
        if effect is not None:
            _needs_attention(action, attempt, error, effect, journal)
            return
        _finish(action, attempt, state=ActionState.FAILED, event="action.failed", error=error, journal=journal, **more)

    with _Lease(action.id, attempt, journal) as lease:
        ctx = ExecutionContext(
            action_id=str(action.id),
            attempt=attempt,
            timeout_s=float(_conf("EXECUTE_TIMEOUT_SECONDS")),
            log=write,
            heartbeat=lease.renew,
            cancel_requested=lease.cancel.is_set,
            progress=journal.progress,
            executed=executed,
            plan=Plan.model_validate(action.plan) if action.plan else None,
        )
        try:
            write(f"attempt {attempt}: {action.verb} on {action.target.key} ({WORKER_NAME})")
            outcome = verb.execute(target, params, ctx)
            executed(outcome.summary, already_done=outcome.already_done)
            write("verifying")
            verification = verb.verify(target, params, outcome)
        except ConnectorError as exc:
            write(f"error: {exc.message}", "error")
            if lease.cancel.is_set():
                _finish(
                    action,
                    attempt,
                    state=ActionState.CANCELLED,
                    event="action.cancelled",
                    error=exc.message,
                    journal=journal,
                )
            elif not _retry_later(action, attempt, exc, journal, made):
                failed(exc.message)
            return
        except SoftTimeLimitExceeded:
            message = f"timed out after {_conf('EXECUTE_TIMEOUT_SECONDS')} s; check {action.target.key} before retrying"
            write(message, "error")
            failed(message)
            return
        except Exception as exc:
            log.error("action %s crashed:\n%s", action.id, traceback.format_exc())
            write(f"internal error: {type(exc).__name__}: {exc}", "error")
            failed(f"internal error: {type(exc).__name__}: {exc}")
            return
        verdict = [journal.line(f"verification {'passed' if verification.ok else 'FAILED'}: {verification.summary}")]
        if verification.ok:
            _finish(
                action,
                attempt,
                state=ActionState.SUCCEEDED,
                event="action.succeeded",
                outcome=outcome,
                verification=verification,
                lines=verdict,
                journal=journal,
            )
        else:
            # The verb's own verdict on a finished effect (the runs ran and some failed): nothing is left
            # running unowned, so the action fails and the target is free again.
            error = f"verification failed: {verification.summary}"
            _finish(
                action,
                attempt,
                state=ActionState.FAILED,
                event="action.failed",
                error=error,
                outcome=outcome,
                verification=verification,
                lines=verdict,
                journal=journal,
            )


def _milestone(action: ActionRun, attempt: int, event: str, after: dict[str, Any]) -> None:
    """Audit a step of a running attempt, unless the attempt lost its lease (then the next attempt owns the
    action's trail)."""
    with transaction.atomic():
        if ActionRun.objects.filter(id=action.id, state=ActionState.RUNNING, attempts=attempt).exists():
            audit_record(event=event, obj=action, after={"attempt": attempt, **after})


def _effect_made(action: ActionRun, made: Sequence[Outcome]) -> Outcome | None:
    """What this action made in the outside system: said by this attempt, or by an earlier one (its
    ``action.executed`` audit event), or None when nothing was made yet."""
    if made:
        return made[0]
    if action.attempts <= 1:
        return None
    return executed_effect(action)


def _retry_later(
    action: ActionRun, attempt: int, exc: ConnectorError, journal: _Journal, made: Sequence[Outcome]
) -> bool:
    """Schedule the next attempt after a transient error, if the verb is idempotent and attempts remain
    (the next attempt finds what this one made by the action id and follows it). False otherwise."""
    if not (exc.transient and action.idempotent and attempt < action.max_attempts):
        return False
    backoff = _conf("RETRY_BACKOFF_SECONDS") * 2 ** (attempt - 1)
    note = f"transient error; retrying in {backoff}s (attempt {attempt + 1} of {action.max_attempts})"
    if made:
        note += f"; it follows what this attempt made ({made[0].summary}) instead of making it again"
    _finish(
        action,
        attempt,
        state=ActionState.QUEUED,
        event="action.retry_scheduled",
        error=exc.message,
        retry_in=backoff,
        lines=[journal.line(note)],
        journal=journal,
    )
    return True


def _needs_attention(action: ActionRun, attempt: int, error: str, effect: Outcome, journal: _Journal) -> None:
    """End an attempt whose effect exists but whose follow-up failed: ``needs_attention`` (the target stays
    locked until a person resolves it), naming what exists in the outcome."""
    message = attention_error(error, effect)
    _finish(
        action,
        attempt,
        state=ActionState.NEEDS_ATTENTION,
        event="action.needs_attention",
        error=message,
        outcome=effect,
        lines=[journal.line(message, "error")],
        journal=journal,
    )
