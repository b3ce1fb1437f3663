"""The reaper undoes what a lost attempt changed only for its own duration (``Verb.recover``: a warehouse scaled
up for the action is scaled back) before it re-queues the action or marks it ``needs_attention``; a recover that
fails is logged, censored, and stops neither the reaper nor the other actions. The ``cptest`` plugin's verb
records each call."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from controlplane.actions import services
from controlplane.actions.models import ActionLogLine, ActionRun, ActionState
from controlplane.actions.reaper import actions_reap
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_verify_chain
from tests.conftest import CPTEST_TOKEN, wait_for
from tests.plugins.cptest import records


def request_job(actor: Any, target: str = "lab.jobs.load", **params: Any) -> ActionRun:
    with change_context(channel=Channel.API, user=actor):
        return services.action_request(
            actor=actor, verb="rerun", target_key=target, params=params, reason="reload the day"
        ).action


def lapse(action: ActionRun, **fields: Any) -> None:
    """The state a worker leaves behind when it dies mid-attempt: running, the lease in the past."""
    ActionRun.objects.filter(id=action.id).update(
        state=ActionState.RUNNING, attempts=1, lease_expires_at=timezone.now() - timedelta(seconds=1), **fields
    )


def events(action: ActionRun) -> list[str]:
    return list(AuditEvent.objects.filter(object_id=str(action.id)).order_by("seq").values_list("event", flat=True))


def log_lines(action: ActionRun) -> list[str]:
    return list(ActionLogLine.objects.filter(action=action).order_by("id").values_list("message", flat=True))


@pytest.mark.worker
def test_the_reaper_restores_what_a_killed_worker_left_scaled_up(cptest: Any, actors: Any, worker_factory: Any) -> None:
    state = cptest["state_cptest-a"]
    worker = worker_factory(PYTHONPATH=cptest["plugin_path"])
    action = request_job(actors["responder"], hold_s=60)
    wait_for(lambda: records(state, "started.jsonl"), what="the attempt to start")
    worker.kill()
    action.refresh_from_db()
    assert action.state == ActionState.RUNNING and records(state, "recovered.jsonl") == []
    wait_for(
        lambda: ActionRun.objects.filter(id=action.id, lease_expires_at__lt=timezone.now()).exists(),
        timeout=20,
        what="the dead worker's lease to lapse",
    )

    assert actions_reap()["requeued"] == [str(action.id)]
    [call] = records(state, "recovered.jsonl")
    assert call["action_id"] == str(action.id)
    assert (call["target"], call["kind"], call["locator"]) == ("lab.jobs.load", "job", {"name": "load"})
    assert call["params"]["hold_s"] == 60
    assert call["plan_warehouse"] == {"name": "TEST_WH", "size": "XSMALL"}  # the plan as stored at the request
    assert "recovered: restored warehouse TEST_WH to XSMALL" in log_lines(action)
    history = events(action)
    assert history.index("action.recovered") < history.index("action.reaped")
    recovered = AuditEvent.objects.get(object_id=str(action.id), event="action.recovered")
    assert recovered.actor_name == "reaper" and recovered.channel == "schedule"
    assert recovered.after == {"attempt": 1, "ok": True, "summary": "restored warehouse TEST_WH to XSMALL"}
    assert audit_verify_chain().ok

    actions_reap()  # re-queued: nothing lapsed any more, nothing recovered twice
    assert len(records(state, "recovered.jsonl")) == 1


@pytest.mark.django_db
def test_a_failing_recover_is_logged_censored_and_the_other_actions_are_still_reaped(
    cptest: Any, actors: Any, caplog: Any
) -> None:
    state = cptest["state_cptest-a"]
    failing = request_job(actors["responder"], recover_error="ALTER WAREHOUSE refused for token {token}")
    fine = request_job(actors["responder2"], target="lab.jobs.publish")
    lapse(failing, idempotent=False)
    lapse(fine)

    result = actions_reap()

    assert result["needs_attention"] == [str(failing.id)] and result["requeued"] == [str(fine.id)]
    failing.refresh_from_db()
    assert failing.state == ActionState.NEEDS_ATTENTION
    [call] = records(state, "recovered.jsonl")
    assert call["action_id"] == str(fine.id)
    lines = log_lines(failing)
    assert "recover failed: ALTER WAREHOUSE refused for token ********" in lines
    note = AuditEvent.objects.get(object_id=str(failing.id), event="action.recovered").after
    assert note == {"attempt": 1, "ok": False, "error": "ALTER WAREHOUSE refused for token ********"}
    assert "recover failed" in caplog.text and "ALTER WAREHOUSE refused" in caplog.text
    everything = caplog.text + " ".join(lines) + str(note)
    assert CPTEST_TOKEN not in everything


@pytest.mark.django_db
def test_verbs_without_a_recover_are_reaped_without_building_their_connector(
    catalog: Any, actors: Any, monkeypatch: Any
) -> None:
    with change_context(channel=Channel.API, user=actors["responder"]):
        action = services.action_request(
            actor=actors["responder"],
            verb="refresh-mart",
            target_key="dev.weather.daily_weather_aggregates",
            params={},
            reason="stale",
        ).action
    lapse(action)
    # The weather password no longer resolves where the reaper runs: a verb with nothing to undo never asks.
    monkeypatch.delenv("CP_TEST_WEATHER_PASSWORD")
    assert actions_reap()["requeued"] == [str(action.id)]
    assert "action.recovered" not in events(action)
