"""An attempt's log lines and progress (controlplane/actions/runner.py ``_Journal``): one buffer, stamped
when written, stored in order by the attempt's thread within ``LOG_FLUSH_SECONDS`` or taken by the finish,
never twice."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import DataError
from django.utils import timezone

from controlplane.actions import runner
from controlplane.actions.models import ActionLogLine, ActionRun, ActionState
from controlplane.actions.services import action_request
from controlplane.audit.context import Channel, change_context
from tests.conftest import wait_for

DEV_MART = "dev.weather.daily_weather_aggregates"


def running_action(actor: Any) -> ActionRun:
    """An action as the worker holds it after its claim (attempt 1, running), with no worker involved."""
    with change_context(channel=Channel.API, user=actor):
        action = action_request(
            actor=actor, verb="refresh-mart", target_key=DEV_MART, params={}, reason="journal"
        ).action
    ActionRun.objects.filter(id=action.id).update(state=ActionState.RUNNING, attempts=1)
    action.refresh_from_db()
    return action


def stored(action: ActionRun) -> list[str]:
    return list(ActionLogLine.objects.filter(action=action).order_by("id").values_list("message", flat=True))


@pytest.mark.django_db(transaction=True)
def test_lines_are_stored_by_the_attempts_thread_while_the_attempt_runs(catalog: Any, actors: Any) -> None:
    action = running_action(actors["responder"])
    journal = runner._Journal(action, ["s3cr3t"])
    journal.write("connecting with password s3cr3t")
    journal.progress(1, 3)
    assert stored(action) == []  # writing stores nothing: the writer's path makes no query
    with runner._Lease(action.id, 1, journal):
        wait_for(lambda: stored(action), timeout=5, interval=0.01, what="the thread to store the line")
        assert stored(action) == ["connecting with password ********"]
        wait_for(
            lambda: ActionRun.objects.filter(id=action.id, progress_done=1, progress_total=3).exists(),
            timeout=5,
            interval=0.01,
            what="the thread to store the progress",
        )
        journal.write("second")
        wait_for(lambda: len(stored(action)) == 2, timeout=5, interval=0.01, what="the thread to store again")
        assert journal.take() == ([], None)  # stored once: nothing left for the finish
    assert stored(action) == ["connecting with password ********", "second"]


@pytest.mark.django_db(transaction=True)
def test_the_finish_takes_what_is_pending_in_order_with_its_verdict(catalog: Any, actors: Any) -> None:
    action = running_action(actors["responder"])
    journal = runner._Journal(action, [])
    journal.write("first")
    journal.progress(2, 2)
    journal.write("second")
    verdict = journal.line("verification passed: ok")
    assert runner._finish(
        action, 1, state=ActionState.SUCCEEDED, event="action.succeeded", lines=[verdict], journal=journal
    )
    assert stored(action) == ["first", "second", "verification passed: ok"]
    lines = list(ActionLogLine.objects.filter(action=action).order_by("id"))
    assert [line.at for line in lines] == sorted(line.at for line in lines)
    action.refresh_from_db()
    assert (action.state, action.progress_done, action.progress_total) == (ActionState.SUCCEEDED, 2, 2)
    assert action.finished_at is not None and lines[-1].at <= action.finished_at
    assert journal.take() == ([], None)


@pytest.mark.django_db(transaction=True)
def test_a_line_is_stamped_when_written_not_when_stored(catalog: Any, actors: Any) -> None:
    action = running_action(actors["responder"])
    journal = runner._Journal(action, [])
    written = timezone.now()
    journal.write("seen the run end")
    time.sleep(0.3)
    journal.flush()
    line = ActionLogLine.objects.get(action=action)
    assert written <= line.at < written + timedelta(seconds=0.2)


@pytest.mark.django_db(transaction=True)
def test_unchanged_progress_is_not_written_again(catalog: Any, actors: Any) -> None:
    action = running_action(actors["responder"])
    journal = runner._Journal(action, [])
    journal.progress(0, 1)
    assert journal.take() == ([], (0, 1))
    journal.progress(0, 1)  # connectors report on every poll
    assert journal.take() == ([], None)
    journal.progress(1, 1)
    assert journal.take() == ([], (1, 1))


@pytest.mark.django_db(transaction=True)
def test_the_finish_stores_lines_state_and_audit_event_together_and_keeps_the_chain(catalog: Any, actors: Any) -> None:
    from controlplane.audit.models import AuditEvent
    from controlplane.audit.services import audit_verify_chain

    action = ActionRun.objects.select_related("target").get(id=running_action(actors["responder"]).id)  # as claimed
    journal = runner._Journal(action, [])
    journal.write("run scheduled__1: success")
    journal.progress(1, 1)
    assert runner._finish(action, 1, state=ActionState.SUCCEEDED, event="action.succeeded", journal=journal)
    assert stored(action) == ["run scheduled__1: success"]
    run = ActionRun.objects.get(id=action.id)
    assert (run.state, run.progress_done, run.lease_expires_at) == (ActionState.SUCCEEDED, 1, None)
    ended = AuditEvent.objects.filter(object_id=str(action.id)).latest("seq")
    assert (ended.event, ended.before, ended.after) == (
        "action.succeeded",
        {"state": "running"},
        {"state": "succeeded", "attempt": 1},
    )
    assert audit_verify_chain().ok


@pytest.mark.django_db(transaction=True)
def test_a_finish_that_fails_stores_nothing_of_what_it_took(catalog: Any, actors: Any) -> None:
    """The lines, the state and the audit event are one transaction: a failure in any leaves none."""
    from controlplane.audit.models import AuditEvent

    action = running_action(actors["responder"])
    journal = runner._Journal(action, [])
    journal.write("seen the run end")
    events = AuditEvent.objects.count()
    with pytest.raises(DataError):  # a state longer than its column: the UPDATE fails after the INSERT
        runner._finish(action, 1, state="x" * 100, event="action.failed", journal=journal)
    assert stored(action) == []
    assert ActionRun.objects.get(id=action.id).state == ActionState.RUNNING
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db(transaction=True)
def test_a_finish_after_the_lease_was_lost_stores_its_lines_and_nothing_else(catalog: Any, actors: Any) -> None:
    from controlplane.audit.models import AuditEvent

    action = running_action(actors["responder"])
    ActionRun.objects.filter(id=action.id).update(attempts=2)  # the reaper re-queued it; attempt 2 runs
    journal = runner._Journal(action, [])
    journal.write("attempt 1 still writing")
    events = AuditEvent.objects.count()
    assert not runner._finish(action, 1, state=ActionState.SUCCEEDED, event="action.succeeded", journal=journal)
    assert stored(action) == ["attempt 1 still writing"]
    assert ActionRun.objects.get(id=action.id).state == ActionState.RUNNING
    assert AuditEvent.objects.count() == events
