"""``POST /api/v1/alerts``: any monitoring system or bot opens incidents through one documented schema, with
the same dedup, counting, rate and access as the Airflow intake."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.audit.models import AuditEvent
from controlplane.incidents.models import Incident, IncidentEvent

pytestmark = pytest.mark.django_db

MART = "dev.weather.daily_weather_aggregates"
ALERT = {
    "source": "grafana",
    "target": MART,
    "severity": "high",
    "summary": "daily_weather_aggregates is 30 hours old",
    "alert_type": "freshness",
    "details": {"age_hours": 30, "threshold_hours": 26, "panel": "https://grafana.example/d/abc"},
}


@pytest.fixture
def bot(api_for: Any) -> Any:
    return api_for("responder", scopes=["alerts:write"])


def _nothing_written() -> None:
    assert not Incident.objects.exists()
    assert not IncidentEvent.objects.exists()
    assert not AuditEvent.objects.filter(event__startswith="incident.").exists()


def test_a_generic_alert_opens_an_incident_linked_to_its_target(catalog: Any, bot: Any) -> None:
    answer = bot.post("/api/v1/alerts", ALERT)
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["created"] is True and body["severity"] == "high" and body["status"] == "triggered"
    assert body["source"] == "grafana" and body["alert_type"] == "freshness"
    incident = Incident.objects.get(pk=body["id"])
    assert incident.title == ALERT["summary"]
    assert [t.key for t in incident.targets.all()] == [MART]
    assert incident.details["details"] == ALERT["details"]
    assert incident.fingerprint == f"alert:grafana:freshness:-:{MART}"
    assert AuditEvent.objects.filter(event="incident.opened", object_id=str(incident.pk)).count() == 1
    assert [e.kind for e in incident.events.all()] == ["alert"]


def test_repeats_are_counted_on_the_open_incident_and_new_occurrences_listed(catalog: Any, bot: Any) -> None:
    first = bot.post("/api/v1/alerts", ALERT | {"occurred_at": "2026-12-01T10:00:00Z"}).json()
    for _ in range(3):  # a replay of the same occurrence: counted only
        again = bot.post("/api/v1/alerts", ALERT | {"occurred_at": "2026-12-01T10:00:00Z"})
        assert again.status_code == 200 and again.json()["created"] is False
    later = bot.post("/api/v1/alerts", ALERT | {"occurred_at": "2026-12-01T11:00:00Z"})
    assert later.status_code == 200 and later.json()["id"] == first["id"]
    incident = Incident.objects.get()
    assert incident.alert_count == 5
    alerts = list(incident.events.filter(kind="alert"))
    assert len(alerts) == 2 and "repeated alert (#5)" in alerts[1].message
    assert AuditEvent.objects.filter(event="incident.alert_repeated").count() == 1


def test_the_dedup_key_decides_what_is_one_incident(catalog: Any, bot: Any) -> None:
    a = bot.post("/api/v1/alerts", ALERT | {"dedup_key": "mart-age"}).json()
    b = bot.post("/api/v1/alerts", ALERT | {"dedup_key": "mart-age", "summary": "still old", "severity": "low"})
    assert b.status_code == 200 and b.json()["id"] == a["id"]
    other = bot.post("/api/v1/alerts", ALERT | {"dedup_key": "another"})
    assert other.status_code == 201
    # Another source's alert with the same key is another incident.
    assert bot.post("/api/v1/alerts", ALERT | {"dedup_key": "mart-age", "source": "dbt"}).status_code == 201
    assert Incident.objects.count() == 3


def test_a_resolved_incident_lets_the_next_alert_open_a_new_one(catalog: Any, bot: Any, api_for: Any) -> None:
    first = bot.post("/api/v1/alerts", ALERT).json()["id"]
    api_for("responder", scopes=["incidents:write"]).post(f"/api/v1/incidents/{first}/resolve", {"note": "ok"})
    assert bot.post("/api/v1/alerts", ALERT).status_code == 201
    assert Incident.objects.count() == 2


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"target": "dev.weather.daily_weather_aggregate"}, ["unknown target", MART]),
        ({"target": None, "pipeline": "no-such-pipeline"}, ["unknown pipeline 'no-such-pipeline'"]),
        ({"target": None}, ["pipeline", "name the pipeline or the target"]),
        ({"severity": "urgent"}, ["severity", "not a valid choice"]),
        ({"summary": ""}, ["summary"]),
        ({"summary": "x" * 301}, ["summary", "300"]),
        ({"source": "Has Spaces"}, ["source"]),
        ({"details": ["not", "an", "object"]}, ["details"]),
        ({"occurred_at": "yesterday"}, ["occurred_at"]),
        ({"colour": "red"}, ["colour: unknown field"]),
        ({"details": {"log": ["ok", "nul\x00"]}}, ["details", "NUL character"]),
    ],
)
def test_a_bad_alert_is_a_400_naming_the_problem_and_writes_nothing(
    catalog: Any, bot: Any, change: dict[str, Any], words: list[str]
) -> None:
    answer = bot.post("/api/v1/alerts", {**ALERT, **change})
    assert answer.status_code == 400, answer.content
    message = answer.json()["error"]["message"]
    for word in words:
        assert word in message, message
    _nothing_written()


def test_a_body_that_is_not_an_object_is_refused(catalog: Any, bot: Any) -> None:
    assert bot.post("/api/v1/alerts", [ALERT]).status_code == 400
    assert bot.post("/api/v1/alerts", raw=b"{not json").status_code == 400
    _nothing_written()


def test_alert_intake_needs_a_responder_with_the_alerts_scope(catalog: Any, api_for: Any) -> None:
    viewer = api_for("viewer", scopes=["alerts:write"])
    refused = viewer.post("/api/v1/alerts", ALERT)
    assert refused.status_code == 403 and "responder role" in refused.json()["error"]["message"]
    unscoped = api_for("responder", scopes=["incidents:write"])
    assert unscoped.post("/api/v1/alerts", ALERT).status_code == 403
    _nothing_written()


def test_generic_alerts_share_the_alert_rate(catalog: Any, bot: Any, monkeypatch: Any) -> None:
    from controlplane.api.throttling import FixedWindowThrottle

    monkeypatch.setitem(FixedWindowThrottle.THROTTLE_RATES, "alerts", "2/minute")
    codes = [bot.post("/api/v1/alerts", ALERT | {"dedup_key": f"k{n}"}).status_code for n in range(4)]
    assert codes == [201, 201, 429, 429]
    assert Incident.objects.count() == 2


def test_the_schema_describes_the_alert_body(catalog: Any, api_for: Any) -> None:
    schema = api_for("viewer").client.get("/api/schema/", {"format": "json"}).json()
    body = schema["paths"]["/api/v1/alerts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    fields = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert {"source", "pipeline", "target", "severity", "summary", "details", "dedup_key", "occurred_at"} <= set(
        fields["properties"]
    )
    assert set(fields["required"]) == {"source", "severity", "summary"}
