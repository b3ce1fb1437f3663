"""Airflow failure alerts open incidents, repeats join them, and bots read them back."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection

from controlplane.audit.models import AuditEvent
from controlplane.incidents.models import Incident, IncidentEvent

ALERT = {
    "source": "airflow",
    "dag_id": "data_ingestion_bronze",
    "task_id": "ingest_orders",
    "run_id": "scheduled__2026-11-20T00:00:00+00:00",
    "logical_date": "2026-11-20T00:00:00+00:00",
    "try_number": 1,
    "state": "failed",
    "exception": "FileNotFoundError: gs://retail-landing/orders/2026-11-20/orders.csv not found",
    "log_url": "http://127.0.0.1:8080/dags/data_ingestion_bronze/runs/x/tasks/ingest_orders?try_number=1",
    "base_url": "http://127.0.0.1:8080",
}


@pytest.fixture
def airflow_bot(api_for: Any) -> Any:
    return api_for("responder", scopes=["alerts:write"])


@pytest.mark.django_db
def test_failure_callback_opens_one_incident_and_a_repeat_joins_it(actors: Any, airflow_bot: Any, api_for: Any) -> None:
    first = airflow_bot.post("/api/v1/alerts/airflow", ALERT)
    assert first.status_code == 201, first.content
    assert first.json()["created"] is True
    repeat = airflow_bot.post("/api/v1/alerts/airflow", ALERT | {"try_number": 2})
    assert repeat.status_code == 200
    assert repeat.json()["id"] == first.json()["id"] and repeat.json()["created"] is False
    incident = Incident.objects.get()
    assert incident.severity == "high" and incident.alert_count == 2
    assert incident.title == "data_ingestion_bronze.ingest_orders failed (run scheduled__2026-11-20T00:00:00+00:00)"
    assert IncidentEvent.objects.filter(incident=incident, kind="alert").count() == 2
    assert list(AuditEvent.objects.filter(object_type="incidents.incident").values_list("event", flat=True)) == [
        "incident.opened",
        "incident.alert_repeated",
    ]
    other_task = airflow_bot.post("/api/v1/alerts/airflow", ALERT | {"task_id": "ingest_customers"})
    assert other_task.status_code == 201  # another task of the run is another incident


@pytest.mark.django_db
def test_resolved_incident_does_not_swallow_a_new_failure(actors: Any, airflow_bot: Any) -> None:
    airflow_bot.post("/api/v1/alerts/airflow", ALERT)
    Incident.objects.update(status="resolved")
    again = airflow_bot.post("/api/v1/alerts/airflow", ALERT)
    assert again.status_code == 201
    assert Incident.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_alerts_open_one_incident(actors: Any, api_for: Any) -> None:
    bot = api_for("responder", scopes=["alerts:write"])
    barrier = threading.Barrier(10)

    def send(_: int) -> int:
        try:
            barrier.wait(timeout=10)
            return bot.post("/api/v1/alerts/airflow", ALERT).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = list(pool.map(send, range(10)))
    assert sorted(codes) == [200] * 9 + [201]
    assert Incident.objects.get().alert_count == 10


BAD = [
    ("missing dag_id", {k: v for k, v in ALERT.items() if k != "dag_id"}, "dag_id"),
    ("dag_id with spaces", ALERT | {"dag_id": "drop table; --"}, "dag_id"),
    ("missing run_id", {k: v for k, v in ALERT.items() if k != "run_id"}, "run_id"),
    ("bad try_number", ALERT | {"try_number": "twice"}, "try_number"),
    ("bad log url", ALERT | {"log_url": "javascript:alert(1)"}, "log_url"),
    ("not airflow", ALERT | {"source": "prefect"}, "source"),
    ("huge exception", ALERT | {"exception": "x" * 20_000}, "exception"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "payload", "field"), BAD, ids=[b[0] for b in BAD])
def test_malformed_alert_is_400_and_creates_nothing(
    actors: Any, airflow_bot: Any, name: str, payload: Any, field: str
) -> None:
    resp = airflow_bot.post("/api/v1/alerts/airflow", payload)
    assert resp.status_code == 400, resp.content
    assert field in resp.json()["error"]["message"]
    assert not Incident.objects.exists() and not IncidentEvent.objects.exists()


@pytest.mark.django_db
def test_oversized_and_non_json_alerts_are_refused(actors: Any, airflow_bot: Any) -> None:
    assert (
        airflow_bot.post("/api/v1/alerts/airflow", raw=json.dumps(ALERT | {"pad": "x" * 100_000}).encode()).status_code
        == 413
    )
    assert airflow_bot.post("/api/v1/alerts/airflow", raw=b"<xml/>").status_code == 400
    assert airflow_bot.post("/api/v1/alerts/airflow", [ALERT]).status_code == 400
    assert not Incident.objects.exists()


@pytest.mark.django_db
def test_alert_intake_needs_the_alerts_scope(actors: Any, api_for: Any) -> None:
    resp = api_for("admin", scopes=["incidents:read"]).post("/api/v1/alerts/airflow", ALERT)
    assert resp.status_code == 403 and "alerts:write" in resp.json()["error"]["message"]


@pytest.mark.django_db
def test_incidents_list_filters_and_detail_with_timeline(
    actors: Any, airflow_bot: Any, api_for: Any, airflow_dag: Any
) -> None:
    airflow_bot.post("/api/v1/alerts/airflow", ALERT)
    airflow_bot.post("/api/v1/alerts/airflow", ALERT | {"dag_id": "retail_transformation_pipeline", "task_id": "load"})
    Incident.objects.filter(fingerprint__contains="retail_transformation").update(status="resolved")
    reader = api_for("viewer", scopes=["incidents:read"])
    triggered = reader.get("/api/v1/incidents", status="triggered").json()["results"]
    assert [i["title"].split(" ")[0] for i in triggered] == ["data_ingestion_bronze.ingest_orders"]
    assert reader.get("/api/v1/incidents", severity="high").json()["results"][0]["severity"] == "high"
    assert reader.get("/api/v1/incidents", status="on-fire").status_code == 400
    page = reader.get("/api/v1/incidents", limit=1).json()
    assert len(page["results"]) == 1 and page["next"]
    detail = reader.get(f"/api/v1/incidents/{triggered[0]['id']}").json()
    assert detail["log_url"] == ALERT["log_url"]
    assert detail["timeline"][0]["kind"] == "alert" and "FileNotFoundError" in detail["timeline"][0]["message"]
    assert reader.get("/api/v1/incidents/999999").status_code == 404


@pytest.mark.django_db
def test_action_for_an_incident_appears_on_its_timeline(
    catalog: Any, actors: Any, airflow_bot: Any, api_for: Any
) -> None:
    incident_id = airflow_bot.post("/api/v1/alerts/airflow", ALERT).json()["id"]
    body = {
        "verb": "refresh-mart",
        "target": "prod.weather.daily_weather_aggregates",
        "params": {},
        "reason": "mart stale after the failed load",
        "incident": incident_id,
    }
    action = api_for("responder").post("/api/v1/actions", body).json()
    assert action["incident"] == incident_id
    timeline = api_for("viewer", scopes=["incidents:read"]).get(f"/api/v1/incidents/{incident_id}").json()["timeline"]
    assert timeline[-1]["kind"] == "action"
    assert "requested refresh-mart on prod.weather.daily_weather_aggregates" in timeline[-1]["message"]
    assert "waiting for approval" in timeline[-1]["message"]


@pytest.mark.django_db
def test_a_request_and_its_timeline_note_are_written_together(catalog: Any, actors: Any, airflow_bot: Any) -> None:
    """The request reaches its incident's timeline through ``action_requested``, inside the request's
    transaction: when a subscriber fails, the request is refused and neither the action, its audit events
    nor the note stay written."""
    from controlplane.actions.models import ActionRun
    from controlplane.actions.services import action_request
    from controlplane.actions.signals import action_requested
    from controlplane.audit.context import Channel, change_context

    incident = Incident.objects.get(pk=airflow_bot.post("/api/v1/alerts/airflow", ALERT).json()["id"])
    before = (IncidentEvent.objects.count(), AuditEvent.objects.count())
    seen: list[str] = []

    def fail_after_the_note(sender: Any, action: Any, requester: str, **kwargs: Any) -> None:
        seen.extend(IncidentEvent.objects.filter(incident=incident, kind="action").values_list("message", flat=True))
        raise RuntimeError("a subscriber failed")

    action_requested.connect(fail_after_the_note, dispatch_uid="test-fail-after-the-note")
    try:
        with change_context(channel=Channel.API, user=actors["responder"]), pytest.raises(RuntimeError):
            action_request(
                actor=actors["responder"],
                verb="refresh-mart",
                target_key="prod.weather.daily_weather_aggregates",
                params={},
                reason="mart stale after the failed load",
                incident=incident,
            )
    finally:
        action_requested.disconnect(dispatch_uid="test-fail-after-the-note")
    assert seen == [
        "rita requested refresh-mart on prod.weather.daily_weather_aggregates; "
        "waiting for approval (prod is a protected environment)"
    ]
    assert not ActionRun.objects.exists()
    assert (IncidentEvent.objects.count(), AuditEvent.objects.count()) == before


@pytest.mark.django_db
def test_finished_action_outcome_joins_the_incident_timeline(
    catalog: Any, actors: Any, airflow_bot: Any, api_for: Any
) -> None:
    from controlplane.actions.models import ActionRun
    from controlplane.actions.signals import action_finished

    incident_id = airflow_bot.post("/api/v1/alerts/airflow", ALERT).json()["id"]
    body = {"verb": "refresh-mart", "target": "dev.weather.daily_weather_aggregates", "params": {}, "reason": "r"}
    action_id = api_for("responder").post("/api/v1/actions", body | {"incident": incident_id}).json()["id"]
    ActionRun.objects.filter(id=action_id).update(state="succeeded", verification={"ok": True, "summary": "populated"})
    action_finished.send(sender=ActionRun, action_id=action_id, incident_id=incident_id, channel="api")
    last = IncidentEvent.objects.filter(incident_id=incident_id).last()
    assert last is not None and last.kind == "action"
    assert last.message == "refresh-mart on dev.weather.daily_weather_aggregates succeeded: populated"


@pytest.mark.django_db
def test_status_times_are_read_back_by_bots(actors: Any, airflow_bot: Any, api_for: Any) -> None:
    from controlplane.incidents.services import incident_acknowledge

    incident_id = airflow_bot.post("/api/v1/alerts/airflow", ALERT).json()["id"]
    incident_acknowledge(actor=actors["responder"], incident_id=incident_id, note="on it")
    detail = api_for("viewer", scopes=["incidents:read"]).get(f"/api/v1/incidents/{incident_id}").json()
    assert detail["status"] == "acknowledged" and detail["acknowledged_at"]
    assert detail["mitigated_at"] is None and detail["resolved_at"] is None
    assert detail["timeline"][-1]["kind"] == "status"
    assert detail["timeline"][-1]["message"] == "rita changed the status from triggered to acknowledged: on it"


def test_bots_acknowledge_comment_and_resolve_incidents(catalog: Any, api_for: Any) -> None:
    incident = Incident.objects.create(title="stale", severity="medium", fingerprint="bot-1")
    bot = api_for("responder", scopes=["incidents:read", "incidents:write"])
    acked = bot.post(f"/api/v1/incidents/{incident.pk}/acknowledge", {"note": "on it"})
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    comment = bot.post(f"/api/v1/incidents/{incident.pk}/comments", {"text": "the mart is refreshing"})
    assert comment.status_code == 201
    jump = bot.post(f"/api/v1/incidents/{incident.pk}/acknowledge", {})
    assert jump.status_code == 409 and jump.json()["error"]["message"]
    resolved = bot.post(f"/api/v1/incidents/{incident.pk}/resolve", {"note": "fresh again"})
    assert resolved.json()["status"] == "resolved"
    assert bot.post(f"/api/v1/incidents/{incident.pk}/explode", {}).status_code == 404
    reader = api_for("responder", scopes=["incidents:read"])
    assert reader.post(f"/api/v1/incidents/{incident.pk}/comments", {"text": "x"}).status_code == 403
    viewer = api_for("viewer", scopes=["incidents:write"])
    assert viewer.post(f"/api/v1/incidents/{incident.pk}/comments", {"text": "x"}).status_code == 403
    events = set(AuditEvent.objects.filter(object_id=str(incident.pk)).values_list("event", flat=True))
    assert {"incident.acknowledged", "incident.resolved"} <= events


# ------------------------------------------------------------------------------------ abuse of the intake


@pytest.fixture
def airflow_dag(db: Any) -> Any:
    """A catalog Airflow connection at ALERT's base_url with a DAG target for ALERT's DAG."""
    from controlplane.audit.context import Channel, change_context
    from controlplane.catalog import services as cs

    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        env = cs.environment_create(name="dev", protected=False)
        conn = cs.connection_create(
            name="airflow-dev", kind="airflow", environment=env, config={"base_url": "http://127.0.0.1:8080"}
        )
        return cs.target_create(
            key="dev.airflow.data_ingestion_bronze",
            kind="dag",
            connection=conn,
            locator={"dag_id": "data_ingestion_bronze"},
        )


def _alert_events(incident: Incident) -> list[IncidentEvent]:
    return list(IncidentEvent.objects.filter(incident=incident, kind="alert").order_by("id"))


@pytest.mark.django_db
def test_the_free_text_run_id_does_not_open_a_new_incident_per_value(actors: Any, airflow_bot: Any) -> None:
    for n in range(20):
        resp = airflow_bot.post("/api/v1/alerts/airflow", ALERT | {"run_id": f"manual__spam{n}"})
        assert resp.status_code == (201 if n == 0 else 200), resp.content
    incident = Incident.objects.get()
    assert incident.alert_count == 20
    # Another logical date, another Airflow or another task is another failure.
    for other in (
        {"logical_date": "2026-11-21T00:00:00+00:00"},
        {"base_url": "http://10.0.0.9:8080"},
        {"task_id": "ingest_customers"},
    ):
        assert airflow_bot.post("/api/v1/alerts/airflow", ALERT | other).status_code == 201, other
    # Another hour of the same logical day is the same failure.
    assert (
        airflow_bot.post("/api/v1/alerts/airflow", ALERT | {"logical_date": "2026-11-20T13:00:00+00:00"}).json()[
            "created"
        ]
        is False
    )
    # Without a logical date (an asset-triggered run) the run id is what identifies the run.
    bare = {k: v for k, v in ALERT.items() if k != "logical_date"}
    assert airflow_bot.post("/api/v1/alerts/airflow", bare).status_code == 201
    assert airflow_bot.post("/api/v1/alerts/airflow", bare).status_code == 200
    assert airflow_bot.post("/api/v1/alerts/airflow", bare | {"run_id": "asset_triggered__2"}).status_code == 201
    assert Incident.objects.count() == 6


@pytest.mark.django_db
def test_a_replayed_alert_is_counted_not_stored_and_fetches_no_log(
    actors: Any, airflow_bot: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as first:
        airflow_bot.post("/api/v1/alerts/airflow", ALERT)
    assert len(first) == 1  # the log fetch of the first alert
    with django_capture_on_commit_callbacks() as replays:
        for _ in range(30):
            assert airflow_bot.post("/api/v1/alerts/airflow", ALERT).status_code == 200
    assert replays == []  # no log fetch for the same try again
    incident = Incident.objects.get()
    assert incident.alert_count == 31 and incident.last_alert_at is not None
    assert len(_alert_events(incident)) == 1
    with django_capture_on_commit_callbacks() as retry:
        airflow_bot.post("/api/v1/alerts/airflow", ALERT | {"try_number": 2})
    assert len(retry) == 1  # a new try: its log is fetched
    events = _alert_events(incident)
    assert len(events) == 2 and "try 2" in events[-1].message and "#32" in events[-1].message


@pytest.mark.django_db
def test_repeats_store_a_bounded_number_of_small_timeline_entries(actors: Any, airflow_bot: Any) -> None:
    from controlplane.incidents.services import MAX_ALERT_EVENTS

    big = ALERT | {"exception": "E" * 9_000}
    for n in range(MAX_ALERT_EVENTS + 25):
        airflow_bot.post("/api/v1/alerts/airflow", big | {"run_id": f"manual__{n}", "try_number": n + 1})
    incident = Incident.objects.get()
    assert incident.alert_count == MAX_ALERT_EVENTS + 25
    events = _alert_events(incident)
    assert len(events) == MAX_ALERT_EVENTS
    assert "further repeats are counted" in events[-1].message
    for event in events:
        assert len(event.message) <= 600 and len(json.dumps(event.data)) <= 1_000


@pytest.mark.django_db
def test_log_link_is_kept_only_on_the_connections_own_host(actors: Any, airflow_bot: Any, airflow_dag: Any) -> None:
    own = airflow_bot.post("/api/v1/alerts/airflow", ALERT).json()["id"]
    assert Incident.objects.get(pk=own).details["log_url"] == ALERT["log_url"]
    for n, url in enumerate(["http://evil.example/x.png", "http://127.0.0.1:9999/dags/x", "https://127.0.0.1:8080/x"]):
        elsewhere = ALERT | {"logical_date": f"2026-10-0{n + 1}T00:00:00+00:00", "log_url": url}
        incident = Incident.objects.get(pk=airflow_bot.post("/api/v1/alerts/airflow", elsewhere).json()["id"])
        assert "log_url" not in incident.details, url
        assert "log link dropped" in _alert_events(incident)[0].message


@pytest.mark.django_db
def test_log_link_of_an_airflow_outside_the_catalog_is_dropped_and_never_served(
    actors: Any, airflow_bot: Any, api_for: Any
) -> None:
    incident_id = airflow_bot.post("/api/v1/alerts/airflow", ALERT).json()["id"]
    assert "log_url" not in Incident.objects.get(pk=incident_id).details
    # An incident stored before the check is not served with its foreign link either.
    Incident.objects.filter(pk=incident_id).update(details={"log_url": "http://evil.example/"})
    detail = api_for("viewer", scopes=["incidents:read"]).get(f"/api/v1/incidents/{incident_id}").json()
    assert detail["log_url"] is None


@pytest.mark.django_db
def test_detail_carries_the_newest_timeline_entries_and_the_timeline_pages_through_all(
    actors: Any, airflow_bot: Any, api_for: Any
) -> None:
    incident_id = airflow_bot.post("/api/v1/alerts/airflow", ALERT).json()["id"]
    IncidentEvent.objects.bulk_create(
        IncidentEvent(incident_id=incident_id, kind="comment", message=f"note {i}", actor_name="rita")
        for i in range(130)
    )
    reader = api_for("viewer", scopes=["incidents:read"])
    detail = reader.get(f"/api/v1/incidents/{incident_id}").json()
    assert [e["message"] for e in detail["timeline"]] == [f"note {i}" for i in range(80, 130)]
    assert detail["timeline_more"] is True
    assert detail["timeline_url"].endswith(f"/api/v1/incidents/{incident_id}/timeline")
    seen: list[str] = []
    url: str | None = f"/api/v1/incidents/{incident_id}/timeline"
    while url:
        page = reader.get(url.replace("http://testserver", "")).json()
        assert len(page["results"]) <= 50
        seen += [e["message"] for e in page["results"]]
        url = page["next"]
    assert len(seen) == 131 and seen[0] == "note 129" and seen[-1].startswith("data_ingestion_bronze.ingest_orders")
    assert reader.get("/api/v1/incidents/999999/timeline").status_code == 404
    unscoped = api_for("viewer", scopes=["actions:read"])
    assert unscoped.get(f"/api/v1/incidents/{incident_id}/timeline").status_code == 403


@pytest.mark.django_db
def test_alert_intake_has_its_own_rate(actors: Any, airflow_bot: Any, monkeypatch: Any) -> None:
    from controlplane.api.throttling import FixedWindowThrottle
    from controlplane.redis import redis_client

    monkeypatch.setitem(FixedWindowThrottle.THROTTLE_RATES, "alerts", "3/minute")
    for key in redis_client().scan_iter("throttle:*"):
        redis_client().delete(key)
    codes = [airflow_bot.post("/api/v1/alerts/airflow", ALERT | {"task_id": f"t{n}"}).status_code for n in range(5)]
    assert codes == [201, 201, 201, 429, 429]
    assert Incident.objects.count() == 3
