"""Quarantine reviews in the app: the review made from a worker's outcome, dispositions through the action
path (a second person in production), escalation incidents, completion, the markdown record, the schedule
and breach incidents. Real Postgres, Redis, worker processes and parquet files on local disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.utils import timezone

from controlplane.access import PolicyError
from controlplane.actions import services as actions
from controlplane.actions.models import ActionRun, ActionState
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.errors import Conflict, InvalidInput
from controlplane.incidents.models import Incident
from controlplane.quarantine import selectors, services
from controlplane.quarantine.models import Disposition, QuarantineReview, ReviewSchedule
from runbooks.selectors import runbooks_for_incident
from sandbox import slack as standin
from tests.conftest import wait_for
from tests.quarantine_qapp import environments, make_source, write_source

SLACK_TOKEN = "xoxb-quarantine-test"
NULL_KEY, NEGATIVE_PRICE, BAD_EMAIL = "customer_id IS NULL", "price < 0", "email invalid"


@pytest.fixture
def slack() -> Iterator[standin.SlackStandIn]:
    """The Slack stand-in (sandbox/slack.py); workers reach it through the environment they are given."""
    server = standin.start(token=SLACK_TOKEN)
    yield server
    server.stop()


def week_end() -> Any:
    return services.last_week_end(timezone.now().astimezone(UTC).date())


def audit_events(obj: Any) -> list[str]:
    label = obj._meta.label_lower
    return list(AuditEvent.objects.filter(object_type=label, object_id=str(obj.pk)).values_list("event", flat=True))


def review_of(source: Any, end: Any, timeout: float = 60) -> QuarantineReview:
    return wait_for(
        lambda: QuarantineReview.objects.filter(target=source, week_end=end).first(),
        timeout=timeout,
        what="the review to be made from the action's outcome",
    )


@pytest.mark.worker
def test_review_action_executed_by_a_worker_becomes_the_review_and_its_items(
    actors: Any, worker_factory: Any, slack: standin.SlackStandIn, tmp_path: Path
) -> None:
    end = week_end()
    write_source(tmp_path / "silver", end)
    envs = environments()
    envs["dev"].slack_channel = "#quarantine-dev"
    envs["dev"].save()
    source = make_source(tmp_path / "silver", envs["dev"])
    worker_factory(
        SLACK_BOT_TOKEN_REF="env:CP_TEST_QAPP_SLACK_TOKEN",
        CP_TEST_QAPP_SLACK_TOKEN=SLACK_TOKEN,
        SLACK_API_URL=slack.api_url,
        PUBLIC_URL="https://cp.example.test",
    )
    responder = actors["responder"]
    with change_context(channel=Channel.WEB, user=responder):
        action = services.review_request(actor=responder, target_key=source.key, week_end=end)
    assert action.verb == "quarantine-review" and action.state == ActionState.QUEUED  # dev: no approval

    review = review_of(source, end)
    assert review.created_by_action_id == action.id
    assert (review.week_start, review.threshold_pct, review.status) == (end - timedelta(days=6), 5.0, "open")
    items = {(i.table, i.reason): i for i in review.items.all()}
    assert set(items) == {("orders", NULL_KEY), ("orders", NEGATIVE_PRICE), ("customers", BAD_EMAIL)}
    new = items[("orders", NEGATIVE_PRICE)]
    assert (new.count, new.new, new.over_threshold, new.needs_disposition) == (360, True, True, True)
    steady = items[("orders", NULL_KEY)]
    assert (steady.count, steady.new, steady.over_threshold, steady.needs_disposition) == (140, False, True, True)
    quiet = items[("customers", BAD_EMAIL)]
    assert (quiet.count, quiet.needs_disposition) == (35, False)
    assert {e["rule"] for e in review.escalations} >= {"rate_days", "new_reason"}
    assert "quarantine.review_created" in audit_events(review)

    # Announced in the environment's Slack channel with the count of decisions and the link.
    def announced() -> list[str]:
        with slack.state.lock:
            sent = json.loads(json.dumps(slack.state.messages))
        return [m["text"] for m in sent if m["channel"] == standin.channel_id("#quarantine-dev")]

    text = wait_for(announced, timeout=30, what="the review's Slack message")[0]
    assert f"Quarantine review of {source.key}" in text and "2 (table, reason) to decide" in text
    assert f"https://cp.example.test/quarantine/{review.pk}/" in text

    # What the pages read: the heat map from the stored summary, the trends and a sample from the source.
    heat = {row.table: row for row in selectors.review_heatmap(review=review).rows}
    assert [c.over for c in heat["orders"].cells] == [False] * 4 + [True] * 3
    assert not any(c.over for c in heat["customers"].cells)
    trends = selectors.review_trends(review=review)
    assert len(trends["orders"]) == 12 and trends["orders"][-1]["quarantined"] == 500
    sample = selectors.item_sample(item=new, limit=5)
    assert sample.key_columns == ["order_id"] and len(sample.rows) == 5

    # The same week again: the action runs, the review stays the one already made.
    ActionRun.objects.filter(pk=action.pk).update(idempotency_key=None)
    with change_context(channel=Channel.WEB, user=responder):
        again = services.review_request(actor=responder, target_key=source.key, week_end=end)
    wait_for(lambda: ActionRun.objects.get(pk=again.pk).state == ActionState.SUCCEEDED, timeout=60, what="again")
    assert QuarantineReview.objects.filter(target=source).count() == 1


@pytest.mark.worker
def test_production_release_needs_a_second_person_escalate_opens_an_incident_and_the_review_is_done(
    actors: Any, worker_factory: Any, tmp_path: Path
) -> None:
    end = week_end()
    root = tmp_path / "silver"
    write_source(root, end)
    source = make_source(root, environments()["prod"])
    call_command("load_runbooks", verbosity=0)
    worker_factory()
    responder, approver = actors["responder"], actors["approver"]
    with change_context(channel=Channel.WEB, user=responder):
        review_action = services.review_request(actor=responder, target_key=source.key, week_end=end)
    # a protected environment, but the review only reads: no second person (a release below needs one)
    assert review_action.state == ActionState.QUEUED
    review = review_of(source, end)
    item = review.items.get(table="orders", reason=NEGATIVE_PRICE)
    other = review.items.get(table="orders", reason=NULL_KEY)

    with change_context(channel=Channel.WEB, user=responder):
        release = services.disposition_request(actor=responder, item_id=item.pk, kind="release")
        twice = services.disposition_request(actor=responder, item_id=item.pk, kind="release")
    assert twice.pk == release.pk  # a double submission is the same decision
    assert release.state == Disposition.State.PENDING and release.action is not None
    assert release.action.state == ActionState.AWAITING_APPROVAL
    assert release.action.params == {"reason": NEGATIVE_PRICE, "from_date": str(review.week_start), "to_date": str(end)}
    assert release.action.target.locator == {"table": "orders"} and release.action.target.kind == "quarantine_table"
    with pytest.raises(PolicyError), change_context(channel=Channel.WEB, user=responder):
        actions.action_approve(actor=responder, action_id=release.action.id)
    release.refresh_from_db()
    assert release.state == Disposition.State.PENDING
    with change_context(channel=Channel.WEB, user=approver):
        actions.action_approve(actor=approver, action_id=release.action.id, comment="fixed upstream")

    wait_for(
        lambda: Disposition.objects.get(pk=release.pk).state != Disposition.State.PENDING,
        timeout=90,
        what="the release to be recorded",
    )
    release.refresh_from_db()
    assert release.state == Disposition.State.DONE, release.counts
    assert release.counts["rows"] == 360 and release.decided_at is not None
    released = list((root / "orders").glob(f"ingest_dt=*/released-{release.action_id}.parquet"))
    assert len(released) == 3 and sum(pq.read_metadata(p).num_rows for p in released) == 360
    review.refresh_from_db()
    assert review.status == "open"  # the steady reason over the threshold still waits

    with change_context(channel=Channel.WEB, user=responder):
        escalation = services.disposition_request(
            actor=responder, item_id=other.pk, kind="escalate", note="source team to fix the customer feed"
        )
        with pytest.raises(Conflict):
            services.disposition_request(actor=responder, item_id=other.pk, kind="escalate")
    assert escalation.incident is not None
    incident = escalation.incident
    assert Incident.objects.filter(alert_type="quarantine.high_rate").count() == 1
    assert (incident.severity, incident.alert_type) == ("high", "quarantine.high_rate")
    evidence = incident.details["details"]
    assert (evidence["table"], evidence["reason"], evidence["count"]) == ("orders", NULL_KEY, 140)
    assert len(evidence["days"]) == 7 and evidence["sample_keys"]
    assert "003-quarantine-high-rate" in [v.runbook.slug for v in runbooks_for_incident(incident)]
    assert "quarantine.disposition_recorded" in audit_events(escalation)

    review.refresh_from_db()
    assert review.status == "done" and review.completed_at is not None
    assert "quarantine.review_completed" in audit_events(review)

    markdown = services.review_markdown(review=review)
    assert f"week {review.week_start} to {end}" in markdown
    assert "| orders | price \\< 0 | 360 | release | done | rita | alice (approved" in markdown
    assert "rows 360" in markdown
    assert f"incident INC-{incident.pk}" in markdown and "escalate: source team" in markdown
    assert "Nothing: every item over the threshold or new has a disposition." in markdown


def test_keep_needs_a_note_and_an_expiry_and_bad_input_changes_nothing(actors: Any, tmp_path: Path) -> None:
    end = week_end()
    source = make_source(tmp_path / "silver", environments()["dev"])
    review = QuarantineReview.objects.create(
        target=source, week_start=end - timedelta(days=6), week_end=end, threshold_pct=5.0
    )
    item = review.items.create(table="orders", reason=NEGATIVE_PRICE, count=3, new=True, needs_disposition=True)
    responder = actors["responder"]
    with change_context(channel=Channel.WEB, user=responder):
        for kind, params, note in [
            ("keep", {"expires": (end + timedelta(days=30)).isoformat()}, ""),
            ("keep", {}, "waiting for the vendor"),
            ("release", {"from_date": (end - timedelta(days=9)).isoformat()}, ""),
            ("release", {"table": "customers"}, ""),
            ("shred", {}, ""),
        ]:
            with pytest.raises(InvalidInput):
                services.disposition_request(actor=responder, item_id=item.pk, kind=kind, params=params, note=note)
        with pytest.raises(PolicyError):
            services.disposition_request(actor=actors["viewer"], item_id=item.pk, kind="escalate")
    assert not Disposition.objects.exists() and not ActionRun.objects.exists() and not Incident.objects.exists()


def test_schedule_requests_one_review_per_source_and_week(db: Any, tmp_path: Path) -> None:
    envs = environments()
    end = week_end()
    write_source(tmp_path / "silver", end)
    prod = make_source(tmp_path / "silver", envs["prod"])
    make_source(tmp_path / "silver", envs["prod"], name="manual", weekly_review=False)
    make_source(tmp_path / "silver", envs["dev"])  # dev: not in the default (production) schedule
    assert ReviewSchedule.objects.get().weekday == 0  # the migration's Monday 06:00 UTC
    monday = end + timedelta(days=1) - timedelta(days=7)  # last week's Monday: its week_end is end - 7
    at = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)

    assert services.reviews_schedule_due(now=at + timedelta(hours=5, minutes=45)) == []  # before 06:00
    first = services.reviews_schedule_due(now=at + timedelta(hours=6, minutes=15))
    assert [a.target_id for a in first] == [prod.pk]
    action = first[0]
    assert (action.channel, action.requested_by.username) == ("schedule", services.SCHEDULER_USERNAME)
    assert action.params == {"week_end": (end - timedelta(days=7)).isoformat()}
    assert action.state == ActionState.QUEUED  # production, but it only reads: no approver needed
    for later in (timedelta(hours=6, minutes=30), timedelta(days=2, hours=9)):  # the next ticks that week
        services.reviews_schedule_due(now=at + later)
    assert ActionRun.objects.filter(verb="quarantine-review").count() == 1
    # A week's request that ended without a review is not requested again every tick (a person can).
    ActionRun.objects.filter(pk=action.pk).update(state=ActionState.FAILED, finished_at=timezone.now())
    assert [a.pk for a in services.reviews_schedule_due(now=at + timedelta(days=3))] == [action.pk]
    assert ActionRun.objects.filter(verb="quarantine-review").count() == 1

    this_week = services.reviews_schedule_due(now=at + timedelta(days=7, hours=6, minutes=15))
    assert [a.params["week_end"] for a in this_week] == [end.isoformat()]
    assert ActionRun.objects.filter(verb="quarantine-review").count() == 2

    ReviewSchedule.objects.update(enabled=False)
    ActionRun.objects.update(state=ActionState.CANCELLED)
    assert services.reviews_schedule_due(now=at + timedelta(days=14, hours=7)) == []


def test_breaches_and_escalation_rules_open_deduplicated_incidents(db: Any, tmp_path: Path) -> None:
    end = week_end()
    write_source(tmp_path / "silver", end)
    source = make_source(tmp_path / "silver", environments()["dev"])
    call_command("load_runbooks", verbosity=0)

    opened = services.breaches_open_incidents(target=source, day=end)
    breaches = [i for i in opened if i.details["details"]["kind"] == "breach"]
    assert sorted((i.details["details"]["table"], i.details["details"]["date"]) for i in breaches) == [
        ("orders", (end - timedelta(days=n)).isoformat()) for n in (2, 1, 0)
    ]
    assert {i.severity for i in breaches} == {"high"}  # 14% is over the escalation level (10%) too
    assert {i.details["details"]["table_target"] for i in breaches} == {f"{source.key}.orders"}
    assert {i.details["details"]["source"] for i in breaches} == {source.key}
    rules = {i.details["details"]["rule"] for i in opened if i.details["details"]["kind"] == "escalation"}
    assert {"rate_days", "new_reason"} <= rules
    assert all(i.severity == "high" and i.alert_type == "quarantine.high_rate" for i in opened)
    assert all(i.pipeline == source.pipeline for i in opened)
    assert "003-quarantine-high-rate" in [v.runbook.slug for v in runbooks_for_incident(opened[0])]
    count = Incident.objects.count()

    assert services.breaches_open_incidents(target=source, day=end) == []  # the same run again
    Incident.objects.update(status=Incident.Status.RESOLVED)
    assert services.breaches_open_incidents(target=source, day=end) == []  # a resolved breach stays resolved
    assert Incident.objects.count() == count


def test_retention_cleanup_is_a_previewed_scheduled_action_waiting_for_approval_in_production(
    db: Any, tmp_path: Path
) -> None:
    envs = environments()
    end = week_end()
    write_source(tmp_path / "silver", end)  # 35 days ending last Sunday: the oldest are past 30 days
    prod = make_source(tmp_path / "silver", envs["prod"])
    fresh = tmp_path / "fresh"
    write_source(fresh, end)
    for old in sorted((fresh / "quarantine").glob("*/ingest_dt=*")):
        if old.name < f"ingest_dt={end - timedelta(days=20)}":
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
    dev = make_source(fresh, envs["dev"], name="fresh")

    action = services.cleanup_request(target=prod)
    assert action is not None
    assert (action.verb, action.channel, action.state) == ("quarantine-cleanup", "schedule", "awaiting_approval")
    assert action.requested_by.username == services.SCHEDULER_USERNAME
    assert action.plan["touches"] and "30 days" in action.reason
    assert services.cleanup_request(target=prod) == action  # once a day
    assert "action.requested" in audit_events(action)
    # 30 days of retention and nothing older than 20 days: nothing to delete, nothing requested
    assert services.cleanup_request(target=dev) is None
    assert ActionRun.objects.filter(verb="quarantine-cleanup").count() == 1


def test_an_admin_edits_the_schedule_and_the_change_is_audited(db: Any, django_user_model: Any) -> None:
    from django.test import Client

    ada = django_user_model.objects.create_user("ada", is_staff=True, is_superuser=True)
    schedule = ReviewSchedule.objects.get()
    client = Client()
    client.force_login(ada)
    form = {"weekday": "2", "hour": "7", "enabled": "on", "environment": ""}
    response = client.post(f"/admin/quarantine/reviewschedule/{schedule.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    schedule.refresh_from_db()
    assert (schedule.weekday, schedule.hour) == (2, 7)
    event = AuditEvent.objects.get(event="quarantine.schedule.updated")
    before, after = event.before or {}, event.after or {}
    assert (before["weekday"], after["weekday"], event.actor_name) == (0, 2, "ada")
    bad = client.post(f"/admin/quarantine/reviewschedule/{schedule.pk}/change/", {**form, "hour": "24"})
    assert bad.status_code == 200  # the form shows the error; nothing is saved
    schedule.refresh_from_db()
    assert schedule.hour == 7
    assert client.get("/admin/quarantine/quarantinereview/add/").status_code == 403  # records are read-only


def test_a_bot_reads_reviews_and_decides_through_the_api(api_for: Any, tmp_path: Path) -> None:
    end = week_end()
    write_source(tmp_path / "silver", end)
    source = make_source(tmp_path / "silver", environments()["dev"])
    review = QuarantineReview.objects.create(
        target=source, week_start=end - timedelta(days=6), week_end=end, threshold_pct=5.0
    )
    item = review.items.create(table="orders", reason=NEGATIVE_PRICE, count=360, new=True, needs_disposition=True)
    reader = api_for("viewer", ["quarantine:read"])

    listed = reader.get("/api/v1/quarantine/reviews", status="open")
    assert listed.status_code == 200
    assert [(r["id"], r["target"], r["status"]) for r in listed.json()["results"]] == [(review.pk, source.key, "open")]
    detail = reader.get(f"/api/v1/quarantine/reviews/{review.pk}").json()
    assert [(i["table"], i["reason"], i["needs_disposition"]) for i in detail["items"]] == [
        ("orders", NEGATIVE_PRICE, True)
    ]
    decide = f"/api/v1/quarantine/reviews/{review.pk}/items/{item.pk}/dispositions"
    assert reader.post(decide, {"kind": "release"}).status_code == 403  # reading does not decide

    bot = api_for("responder", ["actions:write"])
    assert bot.post(decide, {"kind": "release", "table": "customers"}).status_code == 400  # not from the body
    release = bot.post(decide, {"kind": "release", "to_date": (end - timedelta(days=1)).isoformat()})
    assert release.status_code == 201, release.content
    body = release.json()
    assert (body["kind"], body["state"], body["decided_by"]) == ("release", "pending", "rita")
    action = ActionRun.objects.get(pk=body["action"])
    assert (action.verb, action.params["to_date"], action.channel) == (
        "quarantine-release",
        (end - timedelta(days=1)).isoformat(),
        "api",
    )
    escalated = bot.post(decide, {"kind": "escalate", "note": "new failure mode"}).json()
    assert escalated["state"] == "done" and Incident.objects.filter(pk=escalated["incident"]).exists()
    assert bot.get(f"/api/v1/quarantine/reviews/{review.pk}").status_code == 403  # actions:write reads nothing

    elsewhere = f"/api/v1/quarantine/reviews/{review.pk + 1}/items/{item.pk}/dispositions"
    assert bot.post(elsewhere, {"kind": "escalate"}).status_code == 404  # an item of another review

    body = {"target": source.key, "week_end": end.isoformat()}
    requested = bot.post("/api/v1/quarantine/reviews", body, headers={"Idempotency-Key": "weekly-1"})
    assert requested.status_code == 202, requested.content
    assert (requested.json()["verb"], requested.json()["params"]) == ("quarantine-review", {"week_end": str(end)})
    # a bot's retry with the same key finds the same action; the same key with another week is refused
    again = bot.post("/api/v1/quarantine/reviews", body, headers={"Idempotency-Key": "weekly-1"})
    assert again.status_code == 202 and again.json()["id"] == requested.json()["id"]
    other = {**body, "week_end": (end - timedelta(days=7)).isoformat()}
    assert bot.post("/api/v1/quarantine/reviews", other, headers={"Idempotency-Key": "weekly-1"}).status_code == 422
    assert ActionRun.objects.filter(verb="quarantine-review").count() == 1


def test_a_rejected_release_is_recorded_failed_and_can_be_decided_again(
    actors: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    end = week_end()
    write_source(tmp_path / "silver", end)
    source = make_source(tmp_path / "silver", environments()["prod"])
    review = QuarantineReview.objects.create(
        target=source, week_start=end - timedelta(days=6), week_end=end, threshold_pct=5.0
    )
    item = review.items.create(table="orders", reason=NEGATIVE_PRICE, count=360, new=True, needs_disposition=True)
    responder, approver = actors["responder"], actors["approver"]
    with change_context(channel=Channel.WEB, user=responder):
        first = services.disposition_request(actor=responder, item_id=item.pk, kind="release")
    assert first.action is not None
    with change_context(channel=Channel.WEB, user=approver), django_capture_on_commit_callbacks(execute=True):
        actions.action_reject(actor=approver, action_id=first.action.id, comment="not before the fix upstream")
    first.refresh_from_db()
    assert (first.state, first.counts["action_state"]) == (Disposition.State.FAILED, "rejected")
    assert "quarantine.disposition_recorded" in audit_events(first)
    review.refresh_from_db()
    assert review.status == "open"

    with change_context(channel=Channel.WEB, user=responder):
        second = services.disposition_request(actor=responder, item_id=item.pk, kind="release")
    assert second.pk != first.pk and second.action_id != first.action_id
    assert second.state == Disposition.State.PENDING
