"""What Slack receives: incidents' messages in the right channel with their buttons, their threads following
the actions, approval requests, and the outbox's promises (in order per channel, 429 waited out, nothing
dropped, an action never held up by Slack). Real Postgres, Redis and Celery workers; Slack is the stand-in
of sandbox/slack.py, reached over HTTP by slack_sdk."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction

from controlplane.actions import services as actions
from controlplane.actions.models import ActionRun, ActionState
from controlplane.audit.context import Channel, change_context
from controlplane.catalog import services as cs
from controlplane.catalog.models import Environment, Pipeline
from controlplane.incidents import services as incidents
from controlplane.incidents.models import Incident
from controlplane.slack import outbound
from controlplane.slack.models import SlackOutbox, SlackPost
from runbooks import services as runbook_services
from runbooks.loader import LIBRARY, parse_file
from sandbox import slack as standin
from tests.conftest import wait_for
from tests.slack_signed import link

TOKEN = "xoxb-outbound-test"
TOKEN_ENV = "CP_TEST_SLACK_TOKEN"
AIRFLOW_PASSWORD_ENV = "CP_TEST_UNREACHABLE_AIRFLOW_PASSWORD"
PUBLIC = "https://cp.example.test"
DEV_MART = "dev.weather.daily_weather_aggregates"
PROD_MART = "prod.weather.daily_weather_aggregates"
BRONZE = "data_ingestion_bronze"


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[standin.SlackStandIn]:
    """The stand-in, with this process's settings pointed at it (the workers get ``slack_env``)."""
    server = standin.start(token=TOKEN)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv(AIRFLOW_PASSWORD_ENV, "unused")
    settings.SLACK = {
        **settings.SLACK,
        "BOT_TOKEN_REF": f"env:{TOKEN_ENV}",
        "API_URL": server.api_url,
        "PUBLIC_URL": PUBLIC,
        "DEFAULT_CHANNEL": "#data-incidents",
        "APPROVALS_CHANNEL": "",
    }
    yield server
    server.stop()


def slack_env(server: standin.SlackStandIn, **more: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN_REF": f"env:{TOKEN_ENV}",
        TOKEN_ENV: TOKEN,
        AIRFLOW_PASSWORD_ENV: "unused",
        "SLACK_API_URL": server.api_url,
        "PUBLIC_URL": PUBLIC,
        "SLACK_DEFAULT_CHANNEL": "#data-incidents",
        **more,
    }


def messages(server: standin.SlackStandIn) -> list[dict[str, Any]]:
    with server.state.lock:
        return json.loads(json.dumps(server.state.messages))


def in_channel(message: dict[str, Any], channel: str) -> bool:
    """Slack (and the stand-in) answers with the channel's id, whatever name a message was posted to."""
    return message["channel"] == (standin.channel_id(channel) if channel.startswith("#") else channel)


def top_level(server: standin.SlackStandIn, channel: str | None = None) -> list[dict[str, Any]]:
    return [m for m in messages(server) if not m["thread_ts"] and (channel is None or in_channel(m, channel))]


def replies(server: standin.SlackStandIn, parent: dict[str, Any]) -> list[str]:
    return [m["text"] for m in messages(server) if m["thread_ts"] == parent["ts"]]


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["action_id"]: e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]}


def all_text(message: dict[str, Any]) -> str:
    return json.dumps(message["blocks"])


def outbox_settled() -> bool:
    return not SlackOutbox.objects.filter(state=SlackOutbox.State.PENDING).exists()


@pytest.fixture
def world(catalog: dict[str, Any], actors: dict[str, Any]) -> dict[str, Any]:
    """Incidents' channels at each level (pipeline, environment, default), an Airflow connection that does not
    answer (plans and logs fail: the message must still be posted), and the bronze runbook loaded."""
    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        dev, prod = catalog["dev"], catalog["prod"]
        Environment.objects.filter(pk=dev.pk).update(slack_channel="#dev-data")
        conn = cs.connection_create(
            name="airflow-dev",
            kind="airflow",
            environment=dev,
            config={"base_url": "http://127.0.0.1:9", "username": "admin", "connect_timeout_s": 1, "timeout_s": 2},
            secret_refs={"password": f"env:{AIRFLOW_PASSWORD_ENV}"},
        )
        bronze = cs.pipeline_create(name=BRONZE, environment=dev, layer="bronze")
        Pipeline.objects.filter(pk=bronze.pk).update(slack_channel="#ingestion")
        cs.target_create(
            key=f"dev.airflow.{BRONZE}", kind="dag", connection=conn, locator={"dag_id": BRONZE}, pipeline=bronze
        )
        cs.pipeline_create(name="orders_daily", environment=dev)
        cs.pipeline_create(name="prod_orders", environment=prod)
        runbook_services.runbooks_load(parsed=[parse_file(LIBRARY / "000-ingestion-dag-failure.yaml")])
    return {**catalog, "conn": conn}


def alert(dag_id: str, task_id: str = "ingest_orders", run: str = "scheduled__2026-12-06T00:00:00+00:00") -> Incident:
    payload = {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run,
        "try_number": 1,
        "logical_date": "2026-12-06T00:00:00+00:00",
        "exception": "HTTP 503 from the orders API <upstream>",
    }
    with change_context(channel=Channel.API, actor_name="airflow"):
        return incidents.alert_ingest_airflow(payload=payload).incident


def refresh_for(actor: Any, incident: Incident | None, target: str = DEV_MART) -> ActionRun:
    with change_context(channel=Channel.WEB, user=actor):
        return actions.action_request(
            actor=actor, verb="refresh-mart", target_key=target, params={}, reason="slack test", incident=incident
        ).action


def final(action: ActionRun, timeout: float = 40) -> ActionRun:
    def done() -> ActionRun | None:
        action.refresh_from_db()
        terminal = action.state not in (ActionState.QUEUED, ActionState.RUNNING, ActionState.AWAITING_APPROVAL)
        return action if terminal else None

    return wait_for(done, timeout=timeout, what=f"action {action.id} to end")


# ----------------------------------------------------------------------------------------- incidents


@pytest.mark.worker
def test_an_opened_incident_is_posted_once_in_its_channel_with_its_buttons_and_confirm(
    slack: standin.SlackStandIn, world: Any, worker_factory: Any
) -> None:
    worker_factory(**slack_env(slack))
    bronze, orders, prod = alert(BRONZE), alert("orders_daily"), alert("prod_orders")
    # the log fetch and the plan both failed (Airflow does not answer); each updated the message
    wait_for(
        lambda: (
            len(top_level(slack)) == 3
            and SlackPost.objects.filter(data__has_key="plan").exists()
            and Incident.objects.filter(pk=bronze.pk, details__has_key="log_excerpt").exists()
            and top_level(slack, "#ingestion")[0]["edits"] == 2  # one update for each
            and outbox_settled()
        ),
        what="three messages delivered, the plan and the log in",
    )

    assert len(top_level(slack, "#ingestion")) == 1  # the pipeline's channel
    assert len(top_level(slack, "#dev-data")) == 1  # the environment's
    assert len(top_level(slack, "#data-incidents")) == 1  # the default
    message = top_level(slack, "#ingestion")[0]
    assert message["text"].startswith(f"[high] INC-{bronze.pk} ")
    text = all_text(message)
    assert f"{PUBLIC}/incidents/{bronze.pk}/" in text and f"{PUBLIC}/runbooks/000-ingestion-dag-failure/" in text
    assert "data_ingestion_bronze.ingest_orders" in text and "&lt;upstream&gt;" in text  # escaped
    assert "log unavailable" in text  # the finding's log excerpt, as the fetch left it
    found = buttons(message)
    assert list(found) == ["incident.ack", "runbook.start", "action.launch"]
    assert json.loads(found["incident.ack"]["value"]) == {"incident": bronze.pk}
    runbook = {"incident": bronze.pk, "runbook": "000-ingestion-dag-failure"}
    assert json.loads(found["runbook.start"]["value"]) == runbook
    launch = found["action.launch"]
    assert json.loads(launch["value"]) == {
        "incident": bronze.pk,
        "verb": "clear",
        "target": f"dev.airflow.{BRONZE}",
        "params": {"dag_run_id": "scheduled__2026-12-06T00:00:00+00:00", "task_ids": ["ingest_orders"]},
    }
    assert launch["style"] == "danger" and launch["text"]["text"] == "Clear failed tasks"  # no count: no plan
    confirm = launch["confirm"]
    assert confirm["confirm"]["text"] == "Run it" and confirm["deny"]["text"] == "Cancel"
    assert "could not be shown here (could not compute the plan, airflow-dev did not answer" in confirm["text"]["text"]
    assert len(confirm["text"]["text"]) <= 300
    # no catalog target, no remediation: the default channel's message offers Acknowledge only
    assert list(buttons(top_level(slack, "#data-incidents")[0])) == ["incident.ack"]
    assert {p.incident_id for p in SlackPost.objects.filter(kind="incident")} == {bronze.pk, orders.pk, prod.pk}


@pytest.mark.worker
def test_an_incidents_actions_are_told_in_its_thread_and_its_message_follows_verified_and_resolved(
    slack: standin.SlackStandIn, world: Any, actors: Any, worker_factory: Any
) -> None:
    worker_factory(**slack_env(slack))
    incident = alert("orders_daily")
    wait_for(lambda: len(top_level(slack, "#dev-data")) == 1, what="the incident's message")
    action = final(refresh_for(actors["responder"], incident))
    assert action.state == ActionState.SUCCEEDED, action.error
    parent = top_level(slack, "#dev-data")[0]
    wait_for(lambda: len(replies(slack, parent)) == 3 and outbox_settled(), what="three thread lines")
    lines = replies(slack, parent)
    assert "rita requested" in lines[0] and "refresh-mart" in lines[0]
    assert "is running" in lines[1]
    assert "verified" in lines[2]
    assert f"{PUBLIC}/actions/{action.id}/" in lines[2]
    wait_for(lambda: "verified" in all_text(top_level(slack, "#dev-data")[0]), what="the message updated in place")
    assert "incident.ack" in buttons(top_level(slack, "#dev-data")[0])

    with change_context(channel=Channel.WEB, user=actors["responder2"]):
        incidents.incident_resolve(actor=actors["responder2"], incident_id=incident.pk, note="refreshed")
    wait_for(lambda: "resolved" in top_level(slack, "#dev-data")[0]["text"] and outbox_settled(), what="resolve")
    parent = top_level(slack, "#dev-data")[0]
    assert "rob marked the incident resolved" in replies(slack, parent)[3]
    assert "resolved" in parent["text"] and buttons(parent) == {}  # nothing left to press
    assert len(top_level(slack)) == 1


# ----------------------------------------------------------------------------------------- approvals


@pytest.mark.worker
def test_an_action_needing_approval_is_sent_to_each_linked_approver_and_updated_when_decided(
    slack: standin.SlackStandIn, world: Any, actors: Any, worker_factory: Any
) -> None:
    worker_factory(**slack_env(slack))
    link(actors["approver"], "U0ALICE")
    link(actors["approver2"], "U0ARTHUR")
    link(actors["responder"], "U0RITA")  # the requester: not asked to approve their own action
    action = refresh_for(actors["responder"], None, target=PROD_MART)
    assert action.state == ActionState.AWAITING_APPROVAL
    wait_for(lambda: len(top_level(slack)) == 2 and outbox_settled(), what="two approval requests")
    asked = {m["channel"]: m for m in top_level(slack)}
    assert set(asked) == {"DU0ALICE", "DU0ARTHUR"}  # each approver's direct message with the app
    approve = buttons(asked["DU0ALICE"])["action.approve"]
    assert json.loads(approve["value"]) == {"action": str(action.id)}
    assert "refresh" in approve["confirm"]["text"]["text"] and approve["style"] == "danger"
    assert json.loads(buttons(asked["DU0ALICE"])["action.reject"]["value"]) == {"action": str(action.id)}

    with change_context(channel=Channel.WEB, user=actors["approver"]):
        actions.action_approve(actor=actors["approver"], action_id=action.id)
    assert final(action).state == ActionState.SUCCEEDED
    wait_for(lambda: all("verified" in all_text(m) for m in top_level(slack)) and outbox_settled(), what="the updates")
    for message in top_level(slack):
        assert buttons(message) == {} and "Approved by *alice*" in all_text(message) and message["edits"] == 2


@pytest.mark.worker
def test_with_an_approvals_channel_the_request_goes_there_and_a_rejection_updates_it(
    slack: standin.SlackStandIn, world: Any, actors: Any, worker_factory: Any, settings: Any
) -> None:
    settings.SLACK = {**settings.SLACK, "APPROVALS_CHANNEL": "#approvals"}
    worker_factory(**slack_env(slack, SLACK_APPROVALS_CHANNEL="#approvals"))
    link(actors["approver"], "U0ALICE")
    action = refresh_for(actors["responder"], None, target=PROD_MART)
    wait_for(lambda: len(top_level(slack)) == 1 and outbox_settled(), what="the approval request")
    assert in_channel(top_level(slack)[0], "#approvals")
    with change_context(channel=Channel.WEB, user=actors["approver2"]):
        actions.action_reject(actor=actors["approver2"], action_id=action.id, comment="not during the load")
    wait_for(lambda: top_level(slack)[0]["edits"] >= 1 and outbox_settled(), what="the update")
    message = top_level(slack)[0]
    assert buttons(message) == {} and "Rejected by *arthur*: not during the load" in all_text(message)


# -------------------------------------------------------------------------------------- the outbox


@pytest.mark.worker
def test_a_rate_limited_channel_waits_retry_after_and_delivers_everything_in_order(
    slack: standin.SlackStandIn, db: Any, worker_factory: Any
) -> None:
    worker_factory(**slack_env(slack))
    slack.state.faults["chat.postMessage"] = standin.Fault(status=429, retry_after=3, times=1)
    started = time.monotonic()
    with transaction.atomic():
        parent = SlackPost(kind=SlackPost.Kind.INCIDENT, channel="#burst")
        outbound.post("#burst", "first", None, post=parent)
        for n in range(2, 6):
            outbound.post("#burst", f"message {n}", None)
        outbound.post("#burst", "a reply", None, thread_of=parent)
        outbound.update(parent, "first, updated", None)
    wait_for(lambda: slack.state.calls[:1] == ["chat.postMessage"], what="the rate-limited call")
    outbound.post("#other", "another channel", None)  # its own queue: not held up by #burst's wait
    wait_for(lambda: top_level(slack, "#other"), timeout=10, what="the other channel")
    assert top_level(slack, "#burst") == []  # still waiting out Retry-After
    wait_for(lambda: outbox_settled() and len(messages(slack)) == 7, what="everything delivered")
    assert time.monotonic() - started >= 3
    burst = [m for m in messages(slack) if in_channel(m, "#burst")]
    texts = ["first, updated", "message 2", "message 3", "message 4", "message 5", "a reply"]
    assert [m["text"] for m in burst] == texts
    assert burst[-1]["thread_ts"] == burst[0]["ts"] and burst[0]["edits"] == 1
    first = SlackOutbox.objects.order_by("id").first()
    assert first is not None and first.attempts == 2 and first.state == SlackOutbox.State.SENT
    assert not SlackOutbox.objects.exclude(state=SlackOutbox.State.SENT).exists()


@pytest.mark.worker
@pytest.mark.parametrize("outage", ["stopped", "invalid_auth"])
def test_slack_down_never_fails_nor_delays_an_action(
    slack: standin.SlackStandIn, world: Any, actors: Any, worker_factory: Any, outage: str
) -> None:
    if outage == "stopped":
        slack.stop()
        worker_factory(**slack_env(slack))
    else:
        worker_factory(**slack_env(slack, **{TOKEN_ENV: "xoxb-revoked"}))
    incident = alert("orders_daily")
    action = refresh_for(actors["responder"], incident)
    action = final(action, timeout=30)
    assert action.state == ActionState.SUCCEEDED, action.error
    assert action.finished_at is not None and (action.finished_at - action.requested_at).total_seconds() < 15
    if outage == "stopped":  # kept and retried with backoff, the channel's order held: nothing dropped
        wait_for(lambda: SlackOutbox.objects.filter(attempts__gte=2).exists(), what="a retry")
        rows = list(SlackOutbox.objects.order_by("id"))
        assert len(rows) >= 4 and all(r.state == SlackOutbox.State.PENDING for r in rows)
        assert rows[0].attempts >= 2 and rows[0].not_before is not None and "Connection refused" in rows[0].error
        assert all(r.attempts == 0 for r in rows[1:])
    else:  # refused for good, with Slack's reason, not retried forever
        wait_for(lambda: SlackOutbox.objects.count() >= 4 and outbox_settled(), what="every row refused")
        rows = list(SlackOutbox.objects.order_by("id"))
        assert all(r.state == SlackOutbox.State.FAILED and r.attempts == 1 for r in rows)
        assert rows[0].error == "invalid_auth" and "never posted" in rows[-1].error


@pytest.mark.worker
def test_with_slack_off_nothing_is_queued(world: Any, actors: Any, settings: Any, worker_factory: Any) -> None:
    settings.SLACK = {**settings.SLACK, "BOT_TOKEN_REF": ""}
    worker_factory()
    link(actors["approver"], "U0ALICE")
    incident = alert(BRONZE)
    assert final(refresh_for(actors["responder"], incident)).state == ActionState.SUCCEEDED
    refresh_for(actors["responder"], incident, target=PROD_MART)
    with change_context(channel=Channel.WEB, user=actors["responder"]):
        incidents.incident_resolve(actor=actors["responder"], incident_id=incident.pk)
    assert not SlackOutbox.objects.exists() and not SlackPost.objects.exists()


@pytest.mark.django_db
def test_with_slack_on_the_end_of_an_action_for_no_incident_and_no_approval_makes_no_query(
    settings: Any, django_assert_num_queries: Any
) -> None:
    from controlplane.actions.signals import action_finished
    from controlplane.slack.receivers import on_action_finished

    settings.SLACK = {**settings.SLACK, "BOT_TOKEN_REF": f"env:{TOKEN_ENV}"}
    with django_assert_num_queries(0):
        on_action_finished(ActionRun, action_id="00000000-0000-0000-0000-000000000000", incident_id=None)
        action_finished.send(
            sender=ActionRun,
            action_id="00000000-0000-0000-0000-000000000000",
            incident_id=None,
            channel="api",
            requires_approval=False,
            verb="clear",
        )


def test_progress_lines_come_once_per_quarter_and_not_faster_than_the_minimum_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from controlplane.slack import receivers

    now = [1000.0]
    monkeypatch.setattr(receivers.time, "monotonic", lambda: now[0])
    said = []
    for seconds, done in [(0, 0), (1, 1), (12, 2), (13, 5), (30, 5), (31, 6), (45, 7), (60, 8)]:
        now[0] = 1000.0 + seconds
        if receivers._progress_due("a1", done, 8):
            said.append(done)
    # 25 % at 12 s; 50 % held back 1 s after that line, said at 30 s; 75 % held back at 31 s, said at 45 s;
    # 100 % is left to the verdict line
    assert said == [2, 5, 7]


@pytest.mark.django_db(transaction=True)
def test_while_slack_cannot_be_reached_one_failed_call_pauses_every_channel(slack: standin.SlackStandIn) -> None:
    """The workers run actions too: an unreachable Slack must not tie up one of them per channel."""
    from controlplane.redis import redis_client

    redis_client().delete(outbound.PAUSE_KEY)
    slack.stop()
    first = outbound.post("#one", "first channel", None)
    second = outbound.post("#two", "second channel", None)
    assert first is not None and second is not None
    outbound.outbox_deliver(queue="#one")
    outbound.outbox_deliver(queue="#two")
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.attempts == 1 and "Connection refused" in first.error and first.state == SlackOutbox.State.PENDING
    assert second.attempts == 0 and second.state == SlackOutbox.State.PENDING  # not tried: Slack is paused
    pause_ms: Any = redis_client().pttl(outbound.PAUSE_KEY)
    assert 0 < pause_ms <= 2000
    redis_client().delete(outbound.PAUSE_KEY)


@pytest.mark.django_db(transaction=True)
def test_ephemeral_messages_and_response_url_answers_go_through_the_outbox(slack: standin.SlackStandIn) -> None:
    """What the interaction handlers send: a message one user sees, and the answer to a press."""
    from controlplane.redis import redis_client

    redis_client().delete(outbound.PAUSE_KEY)
    only_you = outbound.ephemeral("#dev-data", "U0RITA", "only you see this")
    answer = outbound.respond(slack.respond_url("press-1"), {"text": "launched", "replace_original": False})
    assert only_you is not None and answer is not None and answer.queue == outbound.RESPONSE_QUEUE
    outbound.outbox_deliver(queue="#dev-data")
    outbound.outbox_deliver(queue=outbound.RESPONSE_QUEUE)
    said = {m["type"]: m for m in messages(slack)}
    assert said["ephemeral"]["to_user"] == "U0RITA" and said["ephemeral"]["text"] == "only you see this"
    assert said["response"]["response_url"] == "press-1" and said["response"]["text"] == "launched"
    assert set(SlackOutbox.objects.values_list("state", flat=True)) == {SlackOutbox.State.SENT}


@pytest.mark.django_db(transaction=True)
def test_a_running_actions_stored_progress_reaches_the_incidents_thread_once_per_quarter(
    slack: standin.SlackStandIn, world: Any, actors: Any
) -> None:
    """The worker's journal stores progress every half second; the thread gets a line per quarter at most."""
    from controlplane.actions import runner
    from controlplane.redis import redis_client

    redis_client().delete(outbound.PAUSE_KEY)
    incident = alert("orders_daily")
    action = refresh_for(actors["responder"], incident)  # no worker: it stays queued until we say it runs
    ActionRun.objects.filter(id=action.id).update(state=ActionState.RUNNING, attempts=1)
    action.refresh_from_db()
    journal = runner._Journal(action, [])
    journal.progress(1, 4)
    journal.flush()
    journal.progress(2, 4)  # a second later: the next quarter, too soon for another line
    journal.flush()
    outbound.outbox_deliver(queue="#dev-data")
    lines = replies(slack, top_level(slack, "#dev-data")[0])
    assert len(lines) == 2 and "requested" in lines[0] and lines[1].endswith(": 25% (1 of 4)")
