"""``GET /api/v1/actions/<id>?wait=N``: bots wait for an action's end in one request instead of polling."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from controlplane.actions.models import ActionRun

DEV_MART = "dev.weather.daily_weather_aggregates"
PROD_MART = "prod.weather.daily_weather_aggregates"


def _launch(bot: Any, target: str) -> dict[str, Any]:
    resp = bot.post("/api/v1/actions", {"verb": "refresh-mart", "target": target, "params": {}, "reason": "stale"})
    assert resp.status_code == 202, resp.content
    return dict(resp.json())


@pytest.mark.worker
def test_wait_answers_with_the_verified_end(catalog: Any, api_for: Any, worker_factory: Any) -> None:
    worker_factory()
    bot = api_for("responder")
    action = _launch(bot, DEV_MART)
    data = bot.get(f"/api/v1/actions/{action['id']}", wait="30").json()
    assert data["state"] == "succeeded"
    assert data["verification"]["ok"] is True


def test_a_rejection_wakes_the_waiting_request(
    transactional_db: Any, catalog: Any, api_for: Any, monkeypatch: Any
) -> None:
    from controlplane.api import waiting

    monkeypatch.setattr(waiting, "_RECHECK_SECONDS", 20.0)  # only the published end can wake it early
    action = _launch(api_for("responder"), PROD_MART)
    assert action["state"] == "awaiting_approval"
    approver = api_for("approver")

    def reject() -> None:
        from django.db import connection

        time.sleep(0.5)
        try:
            approver.post(f"/api/v1/actions/{action['id']}/reject", {"comment": "not now"})
        finally:
            connection.close()

    thread = threading.Thread(target=reject)
    started = time.monotonic()
    thread.start()
    data = api_for("viewer", scopes=["actions:read"]).get(f"/api/v1/actions/{action['id']}", wait="20").json()
    waited = time.monotonic() - started
    thread.join()
    assert data["state"] == "rejected"
    assert waited < 10, f"woken by the {waited:.1f}-second timeout, not by the rejection"


@pytest.mark.django_db
def test_wait_gives_up_after_the_given_seconds(catalog: Any, api_for: Any) -> None:
    bot = api_for("responder")
    action = _launch(bot, PROD_MART)
    started = time.monotonic()
    data = bot.get(f"/api/v1/actions/{action['id']}", wait="1").json()
    assert time.monotonic() - started >= 1
    assert data["state"] == "awaiting_approval"


@pytest.mark.django_db
def test_without_a_free_slot_the_answer_comes_at_once(catalog: Any, api_for: Any, monkeypatch: Any) -> None:
    from controlplane.api import waiting

    monkeypatch.setattr(waiting, "_slots", threading.BoundedSemaphore(1))
    assert waiting._slots.acquire(blocking=False)  # the only slot is taken by another waiting request
    bot = api_for("responder")
    action = _launch(bot, PROD_MART)
    started = time.monotonic()
    data = bot.get(f"/api/v1/actions/{action['id']}", wait="20").json()
    assert time.monotonic() - started < 10
    assert data["state"] == "awaiting_approval"


@pytest.mark.django_db
@pytest.mark.parametrize("wait", ["soon", "-1", "31", "1.5"])
def test_a_bad_wait_is_400_and_waits_for_nothing(catalog: Any, api_for: Any, wait: str) -> None:
    bot = api_for("responder")
    action = _launch(bot, PROD_MART)
    resp = bot.get(f"/api/v1/actions/{action['id']}", wait=wait)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["message"].startswith("wait: ") and "wait" in error["details"]["fields"], error
    assert ActionRun.objects.get(id=action["id"]).state == "awaiting_approval"


@pytest.mark.django_db
def test_a_rejected_action_reaches_the_incident_timeline(
    catalog: Any, api_for: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from controlplane.incidents.models import Incident, IncidentEvent

    incident = Incident.objects.create(title="mart stale", severity="medium", fingerprint="t-1")
    body = {"verb": "refresh-mart", "target": PROD_MART, "params": {}, "reason": "stale", "incident": incident.pk}
    action = api_for("responder").post("/api/v1/actions", body).json()
    with django_capture_on_commit_callbacks(execute=True):
        api_for("approver").post(f"/api/v1/actions/{action['id']}/reject", {"comment": "not now"})
    messages = list(IncidentEvent.objects.filter(incident=incident).values_list("message", flat=True))
    assert any("refresh-mart on prod.weather.daily_weather_aggregates rejected" in m for m in messages), messages
    assert "alice rejected refresh-mart on prod.weather.daily_weather_aggregates: not now" in messages


@pytest.mark.django_db
def test_waiting_for_an_unknown_action_is_404_at_once(catalog: Any, api_for: Any) -> None:
    started = time.monotonic()
    resp = api_for("viewer", scopes=["actions:read"]).get(f"/api/v1/actions/{uuid.uuid4()}", wait="20")
    assert resp.status_code == 404
    assert "no action" in resp.json()["error"]["message"]
    assert time.monotonic() - started < 5
