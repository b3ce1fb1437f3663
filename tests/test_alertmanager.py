"""``POST /api/v1/alerts/alertmanager``: Prometheus Alertmanager's webhook (v4). Firing alerts open or count
incidents by the documented label mapping; a resolved alert is noted on the open incident, never resolves it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controlplane.audit.models import AuditEvent
from controlplane.incidents.models import Incident, IncidentEvent

pytestmark = pytest.mark.django_db

MART = "dev.weather.daily_weather_aggregates"


def _alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "MartStale", "severity": "critical", "target": MART, **labels},
        "annotations": {"summary": "daily_weather_aggregates is stale", "description": "last refresh 30 h ago"},
        "startsAt": "2026-12-06T08:00:00.000Z",
        "endsAt": "2026-12-06T09:00:00.000Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph?g0.expr=mart_age_hours+%3E+26",
        "fingerprint": "c0ffee" + "".join(sorted(labels.values())).encode().hex()[:10],
    }


def _webhook(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="MartStale"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "controlplane",
        "groupLabels": {"alertname": "MartStale"},
        "commonLabels": {"alertname": "MartStale"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": list(alerts),
    }


@pytest.fixture
def alertmanager(api_for: Any) -> Any:
    return api_for("responder", scopes=["alerts:write"])


def test_a_firing_alert_opens_an_incident_by_the_label_mapping(catalog: Any, alertmanager: Any) -> None:
    answer = alertmanager.post("/api/v1/alerts/alertmanager", _webhook(_alert(alert_type="freshness")))
    assert answer.status_code == 200, answer.content
    [row] = answer.json()["alerts"]
    assert row["outcome"] == "opened" and row["status"] == "firing"
    incident = Incident.objects.get(pk=row["incident"])
    assert incident.source == "alertmanager" and incident.severity == "critical"
    assert incident.alert_type == "freshness"
    assert incident.title == "daily_weather_aggregates is stale"
    assert incident.summary == "last refresh 30 h ago"
    assert [t.key for t in incident.targets.all()] == [MART]
    assert incident.details["groupKey"] == '{}:{alertname="MartStale"}'
    assert incident.fingerprint == f"alertmanager:{row['fingerprint']}"
    assert AuditEvent.objects.filter(event="incident.opened", object_id=str(incident.pk)).exists()


def test_repeated_notifications_of_one_alert_are_counted(catalog: Any, alertmanager: Any) -> None:
    body = _webhook(_alert())
    first = alertmanager.post("/api/v1/alerts/alertmanager", body).json()["alerts"][0]
    for _ in range(3):  # Alertmanager's repeat_interval sends the same firing alert again
        again = alertmanager.post("/api/v1/alerts/alertmanager", body).json()["alerts"][0]
        assert again == first | {"outcome": "counted"}
    incident = Incident.objects.get()
    assert incident.alert_count == 4
    assert incident.events.filter(kind="alert").count() == 1


def test_severity_labels_map_and_an_unknown_one_is_medium(catalog: Any, alertmanager: Any) -> None:
    alerts = [
        _alert(severity="warning", n="1"),
        _alert(severity="info", n="2"),
        _alert(severity="P2-ish", n="3"),
        {**_alert(n="4"), "labels": {"alertname": "NoSeverity", "target": MART, "n": "4"}},
    ]
    answer = alertmanager.post("/api/v1/alerts/alertmanager", _webhook(*alerts)).json()["alerts"]
    severities = [Incident.objects.get(pk=r["incident"]).severity for r in answer]
    assert severities == ["medium", "low", "medium", "medium"]


def test_a_label_outside_the_catalog_opens_the_incident_unlinked_and_says_so(catalog: Any, alertmanager: Any) -> None:
    answer = alertmanager.post("/api/v1/alerts/alertmanager", _webhook(_alert(target="nowhere.mart", pipeline="nope")))
    assert answer.status_code == 200
    incident = Incident.objects.get(pk=answer.json()["alerts"][0]["incident"])
    assert not incident.targets.exists() and incident.pipeline is None
    opening = incident.events.get(kind="alert").message
    assert "target label 'nowhere.mart' is not in the catalog" in opening
    assert "pipeline label 'nope' is not in the catalog" in opening


def test_a_resolved_alert_is_noted_and_the_incident_stays_open(catalog: Any, alertmanager: Any, api_for: Any) -> None:
    alertmanager.post("/api/v1/alerts/alertmanager", _webhook(_alert()))
    incident = Incident.objects.get()
    api_for("responder", scopes=["incidents:write"]).post(f"/api/v1/incidents/{incident.pk}/acknowledge")
    resolved = _webhook(_alert("resolved"), status="resolved")
    for _ in range(2):  # sent again: noted once
        answer = alertmanager.post("/api/v1/alerts/alertmanager", resolved)
        assert answer.status_code == 200
        assert answer.json()["alerts"][0]["outcome"] == "noted"
    incident.refresh_from_db()
    assert incident.status == "acknowledged" and incident.resolved_at is None
    assert incident.alert_count == 1  # an end is not another alert
    notes = list(incident.events.filter(kind="alert", data__alert__status="resolved"))
    assert len(notes) == 1
    assert "resolved" in notes[0].message and "stays acknowledged until a person resolves it" in notes[0].message
    assert AuditEvent.objects.filter(event="incident.alert_resolved", object_id=str(incident.pk)).count() == 1


def test_a_resolved_alert_without_an_open_incident_writes_nothing(catalog: Any, alertmanager: Any) -> None:
    answer = alertmanager.post("/api/v1/alerts/alertmanager", _webhook(_alert("resolved"), status="resolved"))
    assert answer.status_code == 200
    assert answer.json()["alerts"][0] == {
        "fingerprint": _alert()["fingerprint"],
        "status": "resolved",
        "outcome": "no_open_incident",
        "incident": None,
    }
    assert not Incident.objects.exists() and not IncidentEvent.objects.exists()


def test_firing_again_after_a_person_resolved_opens_a_new_incident(
    catalog: Any, alertmanager: Any, api_for: Any
) -> None:
    first = alertmanager.post("/api/v1/alerts/alertmanager", _webhook(_alert())).json()["alerts"][0]["incident"]
    api_for("responder", scopes=["incidents:write"]).post(f"/api/v1/incidents/{first}/resolve", {"note": "fixed"})
    again = alertmanager.post("/api/v1/alerts/alertmanager", _webhook(_alert())).json()["alerts"][0]
    assert again["outcome"] == "opened" and again["incident"] != first


@pytest.mark.parametrize(
    ("spoil", "words"),
    [
        (lambda b: b.update(version="3"), ["version"]),
        (lambda b: b.update(alerts=[]), ["alerts"]),
        (lambda b: b["alerts"][1].update(status="pending"), ["alerts.1.status", "pending"]),
        (lambda b: b["alerts"][1].update(startsAt="soon"), ["alerts.1.startsAt"]),
        (lambda b: b["alerts"][1].pop("labels"), ["alerts.1.labels"]),
        (lambda b: b["alerts"][1]["labels"].update({"not a name": "x"}), ["alerts.1.labels", "not a name"]),
        (lambda b: b["alerts"][0]["annotations"].update({"\x00": "x"}), ["alerts.0.annotations"]),
        (
            lambda b: b.update(alerts=[{"status": "firing", "labels": {}, "startsAt": "2026-12-06T08:00:00Z"}] * 201),
            ["alerts", "200"],
        ),
    ],
)
def test_a_malformed_webhook_is_a_400_and_takes_none_of_its_alerts(
    catalog: Any, alertmanager: Any, spoil: Any, words: list[str]
) -> None:
    body = _webhook(_alert(n="1"), _alert(n="2"))
    body = copy.deepcopy(body)
    spoil(body)
    answer = alertmanager.post("/api/v1/alerts/alertmanager", body)
    assert answer.status_code == 400, answer.content
    for word in words:
        assert word in answer.json()["error"]["message"]
    assert not Incident.objects.exists()


def test_the_webhook_needs_a_responders_alerts_token(catalog: Any, api_for: Any) -> None:
    refused = api_for("viewer", scopes=["alerts:write"]).post("/api/v1/alerts/alertmanager", _webhook(_alert()))
    assert refused.status_code == 403
    anonymous = api_for("viewer")
    anonymous.token = None
    assert anonymous.post("/api/v1/alerts/alertmanager", _webhook(_alert())).status_code == 401
    assert not Incident.objects.exists()


def test_alertmanager_and_generic_incidents_show_on_the_page_and_in_the_export(
    catalog: Any, actors: Any, alertmanager: Any
) -> None:
    from django.test import Client

    am = alertmanager.post("/api/v1/alerts/alertmanager", _webhook(_alert())).json()["alerts"][0]["incident"]
    generic = alertmanager.post(
        "/api/v1/alerts",
        {"source": "dbt", "target": MART, "severity": "low", "summary": "dbt test <b>failed</b>", "details": {"x": 1}},
    ).json()["id"]
    person = Client()
    person.force_login(actors["viewer"])
    for incident_id, title in (
        (am, "daily_weather_aggregates is stale"),
        (generic, "dbt test &lt;b&gt;failed&lt;/b&gt;"),
    ):
        page = person.get(f"/incidents/{incident_id}/")
        assert page.status_code == 200 and title in page.content.decode()
        assert person.get(f"/incidents/{incident_id}/export.md").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_concurrent_webhooks_with_the_same_alerts_in_any_order_open_each_incident_once(
    catalog: Any, api_for: Any
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    alerts = [_alert(n=str(n)) for n in range(6)]
    bot = api_for("responder", scopes=["alerts:write"])
    barrier = threading.Barrier(8)

    def send(i: int) -> int:
        try:
            ordered = alerts if i % 2 else alerts[::-1]  # opposite orders: no deadlock between batches
            barrier.wait(timeout=10)
            return int(bot.post("/api/v1/alerts/alertmanager", _webhook(*ordered)).status_code)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(send, range(8)))
    assert codes == [200] * 8
    assert sorted(Incident.objects.values_list("alert_count", flat=True)) == [8] * 6


def test_alerts_left_out_by_max_alerts_are_logged(catalog: Any, alertmanager: Any, caplog: Any) -> None:
    body = _webhook(_alert()) | {"truncatedAlerts": 7}
    with caplog.at_level("WARNING", logger="controlplane.incidents.services"):
        assert alertmanager.post("/api/v1/alerts/alertmanager", body).status_code == 200
    assert any("left out 7 alerts" in r.getMessage() for r in caplog.records)
