"""Slack's button presses: signed requests refused or acknowledged at once, the work done by a real Celery
worker as the linked user through the same services as the web, and the answers read back from the
stand-in's response_url."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client

from controlplane.actions import services as action_services
from controlplane.actions.models import ActionRun, ActionState, Approval
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.incidents.models import Incident
from controlplane.slack.inbound import PRESS_WINDOW_SECONDS
from controlplane.slack.models import SlackPost, SlackUserLink
from tests.conftest import wait_for
from tests.slack_signed import SlackWorld, link, running_slack

DEV_MART = "dev.weather.daily_weather_aggregates"
PROD_MART = "prod.weather.daily_weather_aggregates"


@pytest.fixture
def slack(settings: Any) -> Iterator[SlackWorld]:
    with running_slack(settings) as world:
        yield world


def incident() -> Incident:
    return Incident.objects.create(title="mart stale", fingerprint="f", severity=Incident.Severity.HIGH)


def queued_tasks() -> int:
    """Tasks waiting in Slack's queue (CELERY_TASK_ROUTES)."""
    length: int = redis.Redis.from_url(settings.REDIS_URL).llen("slack")  # type: ignore[assignment]
    return length


def launch_value(target: str = DEV_MART, **extra: Any) -> dict[str, Any]:
    return {"verb": "refresh-mart", "target": target, "params": {}, **extra}


# ------------------------------------------------------------------------------------- signatures


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("body", "signature mismatch"),
        ("secret", "signature mismatch"),
        ("stale", "stale timestamp"),
        ("unsigned", "missing signature headers"),
    ],
)
def test_tampered_stale_or_unsigned_requests_are_refused_audited_and_change_nothing(
    slack: SlackWorld, actors: Any, tamper: str, reason: str
) -> None:
    link(actors["responder"], "U0RITA")
    before_events, before_tasks = AuditEvent.objects.count(), queued_tasks()
    kwargs: dict[str, Any] = {}
    if tamper == "secret":
        kwargs["secret"] = "not-the-signing-secret"
    if tamper == "stale":
        kwargs["timestamp"] = int(time.time()) - 6 * 60
    if tamper in ("body", "unsigned"):
        original = slack.post

        def altered(path: str, body: str, headers: dict[str, str]) -> Any:
            if tamper == "unsigned":
                return original(path, body, {})
            return original(path, body.replace("refresh-mart", "refresh-marT"), headers)

        slack.post = altered  # type: ignore[method-assign]
    response, answer_to = slack.press("action.launch", launch_value(), user="U0RITA", **kwargs)
    assert response.status_code == 401
    assert not ActionRun.objects.exists() and SlackPost.objects.count() == 0
    assert queued_tasks() == before_tasks
    refused = list(AuditEvent.objects.order_by("seq")[before_events:])
    assert [(e.event, e.channel) for e in refused] == [("slack.signature_refused", Channel.SLACK)]
    claimed = refused[0].after or {}
    assert claimed["reason"].startswith(reason)
    assert claimed["user_id"] == "U0RITA" and claimed["team_id"] == "T0DEMO"
    assert slack.answers(answer_to) == []


@pytest.mark.django_db
def test_a_flood_of_forged_requests_writes_a_few_audit_rows_with_the_count_not_one_each(
    slack: SlackWorld, actors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("controlplane.slack.inbound.REFUSAL_WINDOW_S", 10**9)  # one window for the whole test
    before = AuditEvent.objects.count()
    statuses = [
        slack.press("action.launch", launch_value(), user="U0RITA", secret="forged")[0].status_code for _ in range(12)
    ]
    assert statuses == [401] * 12  # every one refused
    refused = list(AuditEvent.objects.order_by("seq")[before:])
    assert [(e.event, (e.after or {})["refusals_this_minute"]) for e in refused] == [
        ("slack.signature_refused", 1),
        ("slack.signature_refused", 10),
    ]
    other = Client(REMOTE_ADDR="203.0.113.9")  # another address is counted on its own
    slack.client = other
    assert slack.press("action.launch", launch_value(), user="U0RITA", secret="forged")[0].status_code == 401
    last = AuditEvent.objects.order_by("seq").last()
    assert last is not None and (last.after or {})["refusals_this_minute"] == 1
    assert (last.after or {})["ip"] == "203.0.113.9"
    assert not ActionRun.objects.exists()


@pytest.mark.django_db
def test_slack_endpoints_are_404_while_slack_is_off(actors: Any) -> None:
    assert not settings.SLACK["BOT_TOKEN_REF"]
    assert Client().post("/slack/interactions", data="payload=%7B%7D", content_type="x").status_code == 404
    assert Client().post("/slack/commands", data="text=help", content_type="x").status_code == 404


@pytest.mark.django_db
def test_a_press_is_acknowledged_at_once_with_an_empty_body_and_queued(slack: SlackWorld, actors: Any) -> None:
    before = queued_tasks()
    response, _ = slack.press("incident.ack", {"incident": 1}, user="U0RITA")
    assert response.status_code == 200 and response.content == b""
    assert queued_tasks() == before + 1
    assert not SlackUserLink.objects.exists()  # nobody was looked up in the request


# ----------------------------------------------------------------------------------- who presses


@pytest.mark.worker
def test_unlinked_user_is_told_how_to_link_and_nothing_runs(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    worker_factory(**slack.worker_env)
    response, answer_to = slack.press("action.launch", launch_value(), user="U0STRANGER")
    assert response.status_code == 200
    [answer] = slack.wait_answer(answer_to)
    assert "U0STRANGER" in answer["text"] and "not linked" in answer["text"]
    assert "/runbook link" in answer["text"] and "http://cp.test/profile/slack/" in answer["text"]
    assert answer["response_type"] == "ephemeral"
    assert not ActionRun.objects.exists() and not SlackUserLink.objects.exists()


@pytest.mark.worker
def test_confirmed_slack_email_links_the_user_and_the_press_acts_as_them(
    slack: SlackWorld, actors: Any, worker_factory: Any
) -> None:
    rita = actors["responder"]
    rita.email = "Rita@Example.com"
    rita.save()
    slack.slack_users({"id": "U0RITA", "name": "rita", "email": "rita@example.com"})
    case = incident()
    worker_factory(**slack.worker_env)
    _, answer_to = slack.press("incident.ack", {"incident": case.pk}, user="U0RITA")
    [answer] = slack.wait_answer(answer_to)
    assert answer["text"] == f"You acknowledged INC-{case.pk}."
    case.refresh_from_db()
    assert case.status == Incident.Status.ACKNOWLEDGED
    assert SlackUserLink.objects.get(slack_user_id="U0RITA").user == rita
    assert SlackUserLink.objects.get(slack_user_id="U0RITA").via == "email"
    acked = AuditEvent.objects.get(event="incident.acknowledged")
    assert (acked.channel, acked.actor_id, acked.actor_name) == (Channel.SLACK, rita.pk, "rita")
    linked = AuditEvent.objects.get(event="slack.link.created")
    assert linked.after == {"slack_user_id": "U0RITA", "via": "email"} and linked.channel == Channel.SLACK


@pytest.mark.worker
def test_an_email_shared_by_two_users_links_nobody(slack: SlackWorld, actors: Any, worker_factory: Any) -> None:
    for who in ("responder", "responder2"):
        actors[who].email = "oncall@example.com"
        actors[who].save()
    slack.slack_users({"id": "U0SHARED", "name": "oncall", "email": "oncall@example.com"})
    case = incident()
    worker_factory(**slack.worker_env)
    _, answer_to = slack.press("incident.ack", {"incident": case.pk}, user="U0SHARED")
    [answer] = slack.wait_answer(answer_to)
    assert "not linked" in answer["text"]
    case.refresh_from_db()
    assert case.status == Incident.Status.TRIGGERED and not SlackUserLink.objects.exists()


@pytest.mark.worker
def test_viewer_pressing_a_launch_is_refused_naming_the_role(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    link(actors["viewer"], "U0VERA")
    worker_factory(**slack.worker_env)
    _, answer_to = slack.press("action.launch", launch_value(), user="U0VERA")
    [answer] = slack.wait_answer(answer_to)
    assert answer["text"] == "Refused: requesting an action needs the responder role or higher; you have viewer"
    assert answer["response_type"] == "ephemeral"
    assert not ActionRun.objects.exists()


# ------------------------------------------------------------------------------- launches, twice


@pytest.mark.worker
def test_retries_and_double_clicks_launch_one_action_audited_as_slack(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    rita = actors["responder"]
    link(rita, "U0RITA")
    case = incident()
    value = launch_value(incident=case.pk)
    first, answer_to = slack.press("action.launch", value, user="U0RITA", trigger_id="111.222.abc")
    # Slack's retry of the same delivery, and a double click (a second delivery of the same button).
    retry, retry_to = slack.press(
        "action.launch", value, user="U0RITA", trigger_id="111.222.abc", headers={"X-Slack-Retry-Num": "1"}
    )
    double, double_to = slack.press("action.launch", value, user="U0RITA")
    assert [first.status_code, retry.status_code, double.status_code] == [200, 200, 200]
    worker_factory(**slack.worker_env)
    [answer] = slack.wait_answer(answer_to)
    action = ActionRun.objects.get()
    assert answer["text"].startswith("Requested <http://cp.test/actions/") and str(action.id)[:8] in answer["text"]
    assert (action.channel, action.requested_by, action.incident) == (Channel.SLACK, rita, case)
    assert (action.idempotency_key or "").startswith("slack:C0INCIDENTS:1765000000.000100:action.launch:")
    rows = AuditEvent.objects.filter(object_id=str(action.id), event__in=("action.requested", "action.planned"))
    assert {(e.channel, e.actor_id) for e in rows} == {(Channel.SLACK, rita.pk)} and rows.count() == 2
    # Pressed again later (past the double-click window): the same action, no second one.
    time.sleep(PRESS_WINDOW_SECONDS + 0.5)
    _, later_to = slack.press("action.launch", value, user="U0RITA")
    [later] = slack.wait_answer(later_to)
    assert later["text"].startswith("This button already launched") and str(action.id)[:8] in later["text"]
    assert ActionRun.objects.count() == 1
    time.sleep(1)
    assert slack.answers(retry_to) == [] and slack.answers(double_to) == []


@pytest.mark.worker
def test_another_users_press_while_active_names_the_active_action(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    link(actors["responder"], "U0RITA")
    link(actors["responder2"], "U0ROB")
    with change_context(channel=Channel.WEB, user=actors["approver"]):
        active = action_services.action_request(
            actor=actors["approver"], verb="refresh-mart", target_key=PROD_MART, params={}, reason="web"
        ).action
    assert active.state == ActionState.AWAITING_APPROVAL
    worker_factory(**slack.worker_env)
    _, answer_to = slack.press("action.launch", launch_value(PROD_MART), user="U0ROB")
    [answer] = slack.wait_answer(answer_to)
    assert answer["text"].startswith(f"Refused: action {active.id} (refresh-mart, awaiting_approval")
    assert ActionRun.objects.count() == 1


# ------------------------------------------------------------------------------------- approvals


def awaiting(actors: Any) -> ActionRun:
    with change_context(channel=Channel.WEB, user=actors["responder"]):
        return action_services.action_request(
            actor=actors["responder"], verb="refresh-mart", target_key=PROD_MART, params={}, reason="stale"
        ).action


@pytest.mark.worker
def test_nobody_approves_their_own_action_from_slack(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    actors["responder"].groups.add(actors["approver"].groups.get())  # rita may approve, just not her own
    link(actors["responder"], "U0RITA")
    action = awaiting(actors)
    worker_factory(**slack.worker_env)
    _, answer_to = slack.press("action.approve", {"action": str(action.id)}, user="U0RITA")
    [answer] = slack.wait_answer(answer_to)
    assert answer["text"] == "Refused: you requested this action; a different person must approve or reject it"
    action.refresh_from_db()
    assert action.state == ActionState.AWAITING_APPROVAL and not Approval.objects.exists()


@pytest.mark.worker
def test_reject_from_slack_ends_the_action_as_rejected(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    link(actors["approver"], "U0ALICE")
    action = awaiting(actors)
    worker_factory(**slack.worker_env)
    _, answer_to = slack.press("action.reject", {"action": str(action.id)}, user="U0ALICE")
    [answer] = slack.wait_answer(answer_to)
    assert answer["text"].startswith("You rejected <http://cp.test/actions/")
    action.refresh_from_db()
    assert action.state == ActionState.REJECTED
    decision = Approval.objects.get()
    assert (decision.approver, decision.channel) == (actors["approver"], Channel.SLACK)


@pytest.mark.worker
def test_approving_from_slack_and_the_web_at_once_gives_one_decision(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    link(actors["approver"], "U0ALICE")
    action = awaiting(actors)
    worker_factory(**slack.worker_env)
    web = Client()
    web.force_login(actors["approver2"])
    statuses: list[int] = []
    start = threading.Barrier(2)

    def from_web() -> None:
        start.wait()
        try:
            statuses.append(web.post(f"/actions/{action.id}/approve/").status_code)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=from_web)
    thread.start()
    start.wait()
    _, answer_to = slack.press("action.approve", {"action": str(action.id)}, user="U0ALICE")
    thread.join()
    [answer] = slack.wait_answer(answer_to)
    decision = wait_for(lambda: list(Approval.objects.select_related("approver")), what="a decision")
    assert len(decision) == 1
    assert AuditEvent.objects.filter(event="action.approved", object_id=str(action.id)).count() == 1
    if decision[0].channel == Channel.SLACK:  # Slack won: the web is told the action no longer awaits approval
        assert answer["text"].startswith("You approved") and statuses == [409]
    else:  # the web won (its form redirects to the action): the Slack press hears who decided, and where
        assert statuses == [302] and answer["text"].startswith("Already approved by arthur (web)"), answer["text"]


@pytest.mark.worker
def test_start_runbook_button_starts_the_run_for_the_incident_as_the_user(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    from runbooks import services as runbook_services
    from runbooks.loader import LIBRARY, parse_file
    from runbooks.models import RunbookRun

    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        runbook_services.runbooks_load(parsed=[parse_file(LIBRARY / "004-rehydrate-mart.yaml")])
    rita = actors["responder"]
    link(rita, "U0RITA")
    case = incident()
    case.targets.set([catalog["mart_dev"]])
    worker_factory(**slack.worker_env)
    _, answer_to = slack.press("runbook.start", {"incident": case.pk, "runbook": "004-rehydrate-mart"}, user="U0RITA")
    [answer] = slack.wait_answer(answer_to)
    run = RunbookRun.objects.get()
    assert answer["text"] == f"Started runbook 004-rehydrate-mart: <http://cp.test/runs/{run.pk}/|follow it here>."
    assert (run.incident, run.started_by, run.channel, run.params["mart"]) == (case, rita, Channel.SLACK, DEV_MART)
    started = AuditEvent.objects.get(event="runbook_run.started")
    assert (started.channel, started.actor_id) == (Channel.SLACK, rita.pk)


@pytest.mark.worker
def test_a_press_after_the_web_decided_hears_who_decided_and_where(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    link(actors["approver"], "U0ALICE")
    action = awaiting(actors)
    web = Client()
    web.force_login(actors["approver2"])
    assert web.post(f"/actions/{action.id}/approve/").status_code == 302
    worker_factory(**slack.worker_env)
    _, approve_to = slack.press("action.approve", {"action": str(action.id)}, user="U0ALICE")
    _, reject_to = slack.press("action.reject", {"action": str(action.id)}, user="U0ALICE")
    for name in (approve_to, reject_to):
        [answer] = slack.wait_answer(name)
        assert answer["text"].startswith("Already approved by arthur (web); <http://cp.test/actions/"), answer["text"]
    assert Approval.objects.count() == 1


@pytest.mark.worker
def test_a_press_is_not_held_up_by_long_actions_on_the_action_workers(
    slack: SlackWorld, catalog: Any, actors: Any, weather_db: Any, worker_factory: Any
) -> None:
    """Slack's tasks have their own queue and worker (CELERY_TASK_ROUTES): with both processes of the actions'
    worker busy with refreshes that run until cancelled, a press still gets its action row at once."""
    from controlplane.catalog import services as catalog_services
    from tests.conftest import weather_sql

    slow = []
    weather_sql(weather_db, "CREATE TABLE IF NOT EXISTS mart.slow_sleep AS SELECT 0 AS seconds")
    weather_sql(weather_db, "UPDATE mart.slow_sleep SET seconds = 0")  # creating the views does not wait
    for name in ("slow_one", "slow_two"):
        weather_sql(weather_db, f"DROP MATERIALIZED VIEW IF EXISTS mart.{name}")
        weather_sql(
            weather_db,
            f"CREATE MATERIALIZED VIEW mart.{name} AS SELECT 1 AS id, "
            "pg_sleep((SELECT seconds FROM mart.slow_sleep)) IS NULL AS slept",
        )
        weather_sql(weather_db, f"CREATE UNIQUE INDEX {name}_id ON mart.{name} (id)")
        with change_context(channel=Channel.SYSTEM):
            slow.append(
                catalog_services.target_create(
                    key=f"dev.weather.{name}",
                    kind="matview",
                    connection=catalog["conn_dev"],
                    locator={"schema": "mart", "name": name},
                )
            )
    weather_sql(weather_db, "UPDATE mart.slow_sleep SET seconds = 600")  # refreshes end only when cancelled
    rita = actors["responder"]
    worker_factory(queues="celery", **slack.worker_env)
    worker_factory(queues="slack", **slack.worker_env)
    with change_context(channel=Channel.WEB, user=rita):
        busy = [
            action_services.action_request(
                actor=rita, verb="refresh-mart", target_key=t.key, params={}, reason="long refresh"
            ).action
            for t in slow
        ]
    wait_for(
        lambda: ActionRun.objects.filter(pk__in=[a.pk for a in busy], state=ActionState.RUNNING).count() == 2,
        what="both refreshes running",
    )
    try:
        link(rita, "U0RITA")
        answer, _ = slack.press("action.launch", launch_value(), user="U0RITA")
        assert answer.status_code == 200
        pressed = wait_for(
            lambda: ActionRun.objects.filter(target__key=DEV_MART).first(), timeout=15, what="the press's action"
        )
        assert pressed.channel == Channel.SLACK and pressed.requested_by == rita
        assert ActionRun.objects.filter(pk__in=[a.pk for a in busy], state=ActionState.RUNNING).count() == 2
    finally:
        with change_context(channel=Channel.WEB, user=rita):
            for action in busy:
                action_services.action_cancel(actor=rita, action_id=action.id, reason="test over")
        wait_for(
            lambda: not ActionRun.objects.filter(pk__in=[a.pk for a in busy], state=ActionState.RUNNING).exists(),
            what="the refreshes cancelled",
        )
