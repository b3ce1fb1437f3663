"""What bots read: targets with their param schemas, actions and audit with filters and cursors, health."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from controlplane.actions.models import ActionRun

pytestmark = pytest.mark.django_db


def test_targets_filter_by_kind_and_environment(catalog: Any, api_for: Any) -> None:
    bot = api_for("viewer", scopes=["catalog:read"])
    everything = {t["key"] for t in bot.get("/api/v1/targets").json()}
    assert "dev.weather.daily_weather_aggregates" in everything and "prod.weather.core_weather" in everything
    prod_marts = bot.get("/api/v1/targets", kind="matview", environment="prod").json()
    assert [t["key"] for t in prod_marts] == ["prod.weather.daily_weather_aggregates"]
    assert prod_marts[0]["protected"] is True and prod_marts[0]["connector"] == "postgres"


def test_target_detail_offers_verbs_and_checks_with_json_schemas(catalog: Any, api_for: Any) -> None:
    data = api_for("viewer", scopes=["catalog:read"]).get("/api/v1/targets/dev.weather.daily_weather_aggregates").json()
    verbs = {v["name"]: v for v in data["verbs"]}
    assert set(verbs) == {"refresh-mart"}
    schema = verbs["refresh-mart"]["params_schema"]
    assert schema["type"] == "object"
    assert {"concurrently", "allow_blocking_readers", "timeout_s"} <= set(schema["properties"])
    assert schema["properties"]["timeout_s"]["maximum"] == 3600
    checks = {c["name"] for c in data["checks"]}
    assert "matview_status" in checks
    table = api_for("viewer", scopes=["catalog:read"]).get("/api/v1/targets/dev.weather.core_weather").json()
    assert {c["name"] for c in table["checks"]} >= {"freshness", "row_counts_by_day"}
    assert [v["name"] for v in table["verbs"]] == ["delete-rows"]  # a table's bad records, or a date window


def test_unknown_target_is_404_json(catalog: Any, api_for: Any) -> None:
    resp = api_for("viewer").get("/api/v1/targets/nope")
    assert resp.status_code == 404
    assert "nope" in resp.json()["error"]["message"]


def test_actions_list_filters_and_cursor_pagination(catalog: Any, api_for: Any, actors: Any) -> None:
    bot = api_for("responder")
    ids = []
    for target in ("dev.weather.daily_weather_aggregates", "prod.weather.daily_weather_aggregates"):
        body: dict[str, Any] = {"verb": "refresh-mart", "target": target, "params": {}, "reason": "list test"}
        ids.append(bot.post("/api/v1/actions", body).json()["id"])
    reader = api_for("viewer", scopes=["actions:read"])
    waiting = reader.get("/api/v1/actions", state="awaiting_approval").json()
    assert [a["id"] for a in waiting["results"]] == [ids[1]]
    page1 = reader.get("/api/v1/actions", limit=1).json()
    assert len(page1["results"]) == 1 and page1["next"]
    page2 = reader.client.get(page1["next"], headers={"Authorization": f"Bearer {reader.token}"}).json()
    assert {page1["results"][0]["id"], page2["results"][0]["id"]} == set(ids)
    assert reader.get("/api/v1/actions", state="bogus").status_code == 400


def test_action_detail_shows_plan_approvals_and_log(catalog: Any, api_for: Any) -> None:
    body = {"verb": "refresh-mart", "target": "prod.weather.daily_weather_aggregates", "params": {}, "reason": "r"}
    created = api_for("responder").post("/api/v1/actions", body).json()
    api_for("approver").post(f"/api/v1/actions/{created['id']}/approve", {"comment": "go"})
    detail = api_for("viewer", scopes=["actions:read"]).get(f"/api/v1/actions/{created['id']}").json()
    assert detail["plan"]["summary"]
    assert detail["approvals"][0]["approver"] == "alice"
    assert detail["state"] == "queued"
    assert detail["log"] == []


def test_audit_endpoint_filters_by_object(catalog: Any, api_for: Any) -> None:
    body = {"verb": "refresh-mart", "target": "dev.weather.daily_weather_aggregates", "params": {}, "reason": "r"}
    action_id = api_for("responder").post("/api/v1/actions", body).json()["id"]
    auditor = api_for("viewer", scopes=["audit:read"])
    events = auditor.get("/api/v1/audit", object_id=action_id).json()["results"]
    assert [e["event"] for e in events] == ["action.planned", "action.requested"]  # newest first
    assert all(len(e["hash"]) == 64 for e in events)
    assert events[0]["prev_hash"] == events[1]["hash"]
    assert api_for("viewer", scopes=["actions:read"]).get("/api/v1/audit").status_code == 403


def test_preview_returns_the_plan_and_writes_nothing(catalog: Any, api_for: Any) -> None:
    body = {"verb": "refresh-mart", "target": "dev.weather.daily_weather_aggregates", "params": {}}
    resp = api_for("viewer", scopes=["actions:write"]).post("/api/v1/actions/preview", body)
    assert resp.status_code == 200, resp.content
    assert "daily_weather_aggregates" in resp.json()["plan"]["summary"]
    assert ActionRun.objects.count() == 0


def test_openapi_schema_and_docs_are_served_without_a_cdn(db: Any) -> None:
    client = Client()
    schema = client.get("/api/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    assert b"/api/v1/actions" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower() and "https://" not in html
    asset = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


def test_health_and_readiness(db: Any) -> None:
    client = Client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert ready["X-Request-ID"]


def test_request_id_is_taken_from_the_caller(db: Any) -> None:
    resp = Client().get("/healthz", headers={"X-Request-ID": "bot-run-42"})
    assert resp["X-Request-ID"] == "bot-run-42"
    evil = Client().get("/healthz", headers={"X-Request-ID": "x\r\nSet-Cookie: a=b"})
    assert evil["X-Request-ID"] != "x\r\nSet-Cookie: a=b"


def test_throttled_bot_gets_429_with_a_message(catalog: Any, api_for: Any, monkeypatch: Any) -> None:
    from controlplane.api.throttling import FixedWindowThrottle
    from controlplane.redis import redis_client

    monkeypatch.setattr(FixedWindowThrottle, "THROTTLE_RATES", {"user": "3/minute", "anon": "3/minute"})
    for key in redis_client().scan_iter("throttle:*"):
        redis_client().delete(key)
    bot = api_for("viewer", scopes=["catalog:read"])
    statuses = [bot.get("/api/v1/targets").status_code for _ in range(4)]
    if statuses != [200, 200, 200, 429]:  # the minute turned between two requests: the window restarted
        statuses = [bot.get("/api/v1/targets").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = bot.get("/api/v1/targets")
    assert "throttled" in resp.json()["error"]["message"].lower()
    assert 0 < int(resp["Retry-After"]) <= 60
    # Another user has a counter of their own.
    assert api_for("responder", scopes=["catalog:read"]).get("/api/v1/targets").status_code == 200


def test_anonymous_callers_are_throttled_per_address(db: Any, monkeypatch: Any) -> None:
    # No API endpoint admits anonymous callers today (Slack's signed endpoints will): the class is tested alone.
    from django.contrib.auth.models import AnonymousUser
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from controlplane.api.throttling import AnonThrottle, FixedWindowThrottle
    from controlplane.redis import redis_client

    monkeypatch.setattr(FixedWindowThrottle, "THROTTLE_RATES", {"user": "100/minute", "anon": "2/minute"})
    for key in redis_client().scan_iter("throttle:*"):
        redis_client().delete(key)

    def allowed(addr: str) -> bool:
        request = Request(APIRequestFactory().get("/x", REMOTE_ADDR=addr))
        request.user = AnonymousUser()
        return AnonThrottle().allow_request(request, None)

    verdicts = [allowed("10.0.0.7") for _ in range(3)]
    if verdicts != [True, True, False]:  # the minute turned
        verdicts = [allowed("10.0.0.7") for _ in range(3)]
    assert verdicts == [True, True, False]
    assert allowed("10.0.0.8")


def test_callers_without_valid_credentials_are_throttled_per_address(db: Any, monkeypatch: Any) -> None:
    # DRF checks permissions before throttles: without care a refused caller is never counted.
    from controlplane.api.throttling import FixedWindowThrottle
    from controlplane.redis import redis_client

    monkeypatch.setattr(FixedWindowThrottle, "THROTTLE_RATES", {"user": "100/minute", "anon": "3/minute"})
    for key in redis_client().scan_iter("throttle:*"):
        redis_client().delete(key)

    def status(addr: str, **headers: str) -> int:
        return Client(REMOTE_ADDR=addr).get("/api/v1/targets", headers=headers or None).status_code

    statuses = [status("10.0.0.7") for _ in range(4)]
    if statuses != [401, 401, 401, 429]:  # the minute turned
        statuses = [status("10.0.0.7") for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    throttled = Client(REMOTE_ADDR="10.0.0.7").get("/api/v1/targets", headers={"Authorization": "Bearer forged"})
    assert throttled.status_code == 429
    assert "throttled" in throttled.json()["error"]["message"].lower()
    assert 0 < int(throttled["Retry-After"]) <= 60
    # A forged X-Forwarded-For does not make a new client; another address has its own count.
    assert status("10.0.0.7", **{"X-Forwarded-For": "203.0.113.5"}) == 429
    assert status("10.0.0.8") == 401


@pytest.mark.parametrize(
    ("proxies", "forwarded", "client"),
    [
        (0, "203.0.113.5", "10.0.0.2"),  # no proxy trusted: the header is the caller's word only
        (1, "203.0.113.5", "203.0.113.5"),
        (1, "198.51.100.9, 203.0.113.5", "203.0.113.5"),  # the left entry was sent by the client
        (2, "198.51.100.9, 203.0.113.5, 10.0.0.3", "203.0.113.5"),
        (2, "203.0.113.5", "203.0.113.5"),  # fewer entries than proxies: the leftmost
        (1, "", "10.0.0.2"),
        (1, "not-an-address", "10.0.0.2"),
    ],
)
def test_the_client_address_trusts_only_the_configured_proxies(proxies: int, forwarded: str, client: str) -> None:
    from django.test import RequestFactory, override_settings

    from controlplane.clientip import client_ip

    headers = {"X-Forwarded-For": forwarded} if forwarded else None
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", headers=headers)
    with override_settings(TRUSTED_PROXY_COUNT=proxies):
        assert client_ip(request) == client


def test_the_202_body_is_the_action_as_get_shows_it(catalog: Any, api_for: Any) -> None:
    bot = api_for("responder")
    for target in ("dev.weather.daily_weather_aggregates", "prod.weather.daily_weather_aggregates"):
        created = bot.post("/api/v1/actions", {"verb": "refresh-mart", "target": target, "params": {}, "reason": "r"})
        assert created.status_code == 202
        assert created.json() == bot.get(f"/api/v1/actions/{created.json()['id']}").json()


def test_approval_reason_is_shown_to_bots(catalog: Any, api_for: Any) -> None:
    body = {"verb": "refresh-mart", "target": "prod.weather.daily_weather_aggregates", "params": {}, "reason": "r"}
    data = api_for("responder").post("/api/v1/actions", body).json()
    assert data["approval_reason"] == "prod is a protected environment"


def test_create_api_token_command_prints_a_working_token_last(actors: Any) -> None:
    import io

    from django.core.management import call_command

    from controlplane.api.models import ApiToken
    from tests.conftest import ApiClient

    out = io.StringIO()
    call_command("create_api_token", "rita", "--scopes", "catalog:read,actions:read", stdout=out, stderr=io.StringIO())
    token = out.getvalue().strip().splitlines()[-1]
    stored = ApiToken.objects.get(user=actors["responder"])
    assert token.startswith("cpt_") and token not in (stored.token_hash, stored.prefix)
    assert stored.scopes == ["actions:read", "catalog:read"]
    assert ApiClient(token).get("/api/v1/targets").status_code == 200
    assert ApiClient(token).post("/api/v1/actions", {}).status_code == 403  # no actions:write


def test_action_detail_names_its_decisions_and_the_last_lines_of_its_log(catalog: Any, api_for: Any) -> None:
    from controlplane.actions.models import ActionLogLine
    from controlplane.api.serializers import LOG_TAIL

    body = {"verb": "refresh-mart", "target": "prod.weather.daily_weather_aggregates", "params": {}, "reason": "r"}
    reader = api_for("viewer", scopes=["actions:read"])
    created = api_for("responder").post("/api/v1/actions", body)
    assert created.status_code == 202
    fresh = created.json()
    assert fresh == reader.get(f"/api/v1/actions/{fresh['id']}").json()  # the 202 is what a read answers
    assert (fresh["approvals"], fresh["log"], fresh["state"]) == ([], [], "awaiting_approval")
    api_for("approver").post(f"/api/v1/actions/{fresh['id']}/approve", {"comment": "go"})
    ActionLogLine.objects.bulk_create(
        ActionLogLine(action_id=fresh["id"], attempt=1, level="error" if n % 2 else "info", message=f"line {n}")
        for n in range(LOG_TAIL + 3)
    )
    data = reader.get(f"/api/v1/actions/{fresh['id']}").json()
    assert (data["target"], data["environment"], data["requested_by"]) == (
        "prod.weather.daily_weather_aggregates",
        "prod",
        "rita",
    )
    assert [(a["approver"], a["decision"], a["comment"]) for a in data["approvals"]] == [("alice", "approved", "go")]
    assert [line["message"] for line in data["log"]] == [f"line {n}" for n in range(3, LOG_TAIL + 3)]
    assert data["log"][0]["level"] == "error" and data["log"][0]["attempt"] == 1
    for unknown in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        assert reader.get(f"/api/v1/actions/{unknown}").status_code == 404
