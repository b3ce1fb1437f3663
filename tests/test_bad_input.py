"""Bad input gets a 4xx with a message a person can act on, and nothing is written."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.actions.models import ActionRun
from controlplane.audit.models import AuditEvent
from tests.conftest import ApiClient, weather_sql

pytestmark = pytest.mark.django_db

DEV_MART = "dev.weather.daily_weather_aggregates"


def ok_body(**over: Any) -> dict[str, Any]:
    return {"verb": "refresh-mart", "target": DEV_MART, "params": {}, "reason": "stale"} | over


@pytest.fixture
def nothing_written(catalog: Any) -> Any:
    def count() -> int:  # making the test's users and minting their tokens is audited too, not the request's doing
        return AuditEvent.objects.exclude(event="api_token.created").exclude(event__startswith="auth.").count()

    audit_before = count()
    yield
    assert ActionRun.objects.count() == 0
    assert count() == audit_before


CASES = [
    ("unknown verb", ok_body(verb="drop-everything"), 400, "does not offer verb 'drop-everything'"),
    ("unknown target", ok_body(target="prod.nothing.here"), 404, "no catalog target"),
    ("wrong param type", ok_body(params={"timeout_s": "soon"}), 400, "timeout_s"),
    ("param out of range", ok_body(params={"timeout_s": 999999}), 400, "timeout_s"),
    ("unknown param", ok_body(params={"sql": "DROP TABLE core.weather"}), 400, "sql"),
    ("params not an object", ok_body(params=["x"]), 400, "params"),
    ("missing reason", {k: v for k, v in ok_body().items() if k != "reason"}, 400, "reason"),
    ("blank reason", ok_body(reason="   "), 400, "reason"),
    ("unknown field", ok_body(priority="urgent"), 400, "priority: unknown field"),
    ("injection in target key", ok_body(target='dev.weather.x"; DROP TABLE core.weather; --'), 404, "no catalog"),
    ("body is a list", [ok_body()], 400, "JSON object"),
    ("verb on wrong kind", ok_body(target="dev.weather.core_weather"), 400, "does not offer verb"),
]


@pytest.mark.parametrize(("name", "payload", "status", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_refused_with_a_message(
    nothing_written: Any, api_for: Any, weather_db: Any, name: str, payload: Any, status: int, message: str
) -> None:
    resp = api_for("responder").post("/api/v1/actions", payload)
    assert resp.status_code == status, resp.content
    error = resp.json()["error"]
    assert message in error["message"], error
    assert weather_sql(weather_db, "SELECT to_regclass('core.weather') IS NOT NULL") == [(True,)]


def test_malformed_json_is_400(nothing_written: Any, api_for: Any) -> None:
    resp = api_for("responder").post("/api/v1/actions", raw=b'{"verb": "refresh-mart",')
    assert resp.status_code == 400
    assert "not valid JSON" in resp.json()["error"]["message"]


def test_oversized_body_is_413(nothing_written: Any, api_for: Any) -> None:
    huge = json.dumps(ok_body(reason="x" * 200_000)).encode()
    resp = api_for("responder").post("/api/v1/actions", raw=huge)
    assert resp.status_code == 413
    assert "larger than" in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    "header",
    ["Bearer nope", "Bearer cpt_forged-token-value", "Token abc", "Bearer "],
)
def test_bad_tokens_are_401_with_a_message(nothing_written: Any, header: str) -> None:
    client = ApiClient()
    resp = client.client.post(
        "/api/v1/actions",
        data=json.dumps(ok_body()),
        content_type="application/json",
        headers={"Authorization": header},
    )
    assert resp.status_code == 401
    assert resp.json()["error"]["message"]


def test_expired_token_is_refused(nothing_written: Any, api_for: Any) -> None:
    from django.utils import timezone

    from controlplane.api.models import ApiToken

    bot = api_for("responder")
    ApiToken.objects.update(expires_at=timezone.now())
    assert bot.post("/api/v1/actions", ok_body()).status_code == 401


def test_unknown_action_id_is_404(nothing_written: Any, api_for: Any) -> None:
    bot = api_for("approver")
    assert bot.get("/api/v1/actions/00000000-0000-0000-0000-000000000000").status_code == 404
    resp = bot.post("/api/v1/actions/00000000-0000-0000-0000-000000000000/approve", {})
    assert resp.status_code == 404
    assert resp.json()["error"]["message"]


def test_overlong_idempotency_key_is_400(nothing_written: Any, api_for: Any) -> None:
    resp = api_for("responder").post("/api/v1/actions", ok_body(), headers={"Idempotency-Key": "k" * 201})
    assert resp.status_code == 400
    assert "Idempotency-Key" in resp.json()["error"]["message"]


def test_consent_is_required_for_a_blocking_refresh(nothing_written: Any, api_for: Any) -> None:
    resp = api_for("responder").post("/api/v1/actions", ok_body(params={"concurrently": False}))
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["details"]["consent_required"] is True
    assert "consent" in error["message"]


UUID0 = "00000000-0000-0000-0000-000000000000"
QUERY_CASES = [
    ("/api/v1/incidents", {"max_age_hours": "inf"}, "max_age_hours"),
    ("/api/v1/incidents", {"max_age_hours": "nan"}, "max_age_hours"),
    ("/api/v1/incidents", {"max_age_hours": "1e400"}, "max_age_hours"),
    ("/api/v1/incidents", {"max_age_hours": "-3"}, "max_age_hours"),
    ("/api/v1/incidents", {"max_age_hours": "soon"}, "max_age_hours"),
    ("/api/v1/incidents", {"status": "sleeping"}, "status"),
    ("/api/v1/incidents", {"severity": "apocalyptic"}, "severity"),
    ("/api/v1/incidents", {"open": "perhaps"}, "open"),
    ("/api/v1/incidents", {"age": "1y"}, "age"),
    ("/api/v1/incidents", {"limit": "0"}, "limit"),
    ("/api/v1/incidents", {"limit": "many"}, "limit"),
    ("/api/v1/incidents", {"limit": "100000"}, "limit"),
    ("/api/v1/incidents", {"cursor": "garbage"}, "cursor"),
    ("/api/v1/incidents", {"colour": "red"}, "colour"),
    ("/api/v1/actions", {"state": "exploded"}, "state"),
    ("/api/v1/actions", {"channel": "carrier-pigeon"}, "channel"),
    ("/api/v1/actions", {"incident": "1; DROP TABLE x"}, "incident"),
    ("/api/v1/actions", {"incident": "99999999999999999999999"}, "incident"),
    ("/api/v1/actions", {"target": "x\x00y"}, "target"),
    ("/api/v1/actions", {"cursor": "%%%"}, "cursor"),
    ("/api/v1/actions", {"stat": "running"}, "stat"),
    ("/api/v1/audit", {"channel": "carrier-pigeon"}, "channel"),
    ("/api/v1/audit", {"object_id": "x" * 1000}, "object_id"),
    ("/api/v1/audit", {"cursor": "cD1hYmM="}, "cursor"),  # p=abc: not a sequence number
    ("/api/v1/actions", {"cursor": "cD0yMDI0LTEzLTQ1"}, "cursor"),  # p=2024-13-45: not a time
    ("/api/v1/audit", {"evnt": "x"}, "evnt"),
    ("/api/v1/targets", {"kind": "x\x00"}, "kind"),
    ("/api/v1/targets", {"knd": "matview"}, "knd"),
    (f"/api/v1/actions/{UUID0}", {"wait": "inf"}, "wait"),
    (f"/api/v1/actions/{UUID0}", {"wait": "-1"}, "wait"),
]


@pytest.mark.parametrize(("path", "query", "field"), QUERY_CASES, ids=[f"{c[0]}?{c[2]}" for c in QUERY_CASES])
def test_a_bad_query_parameter_is_400_naming_it(
    nothing_written: Any, api_for: Any, path: str, query: dict[str, str], field: str
) -> None:
    resp = api_for("admin").get(path, **query)
    assert resp.status_code == 400, resp.content
    error = resp.json()["error"]
    assert field in error["details"]["fields"], error
    assert error["message"].startswith(f"{field}: "), error


@pytest.mark.parametrize("hours", ["inf", "-inf", "nan", "1e400", "-1", "soon"])
def test_the_incident_selector_refuses_an_age_it_cannot_count(db: Any, hours: str) -> None:
    from controlplane.errors import InvalidInput
    from controlplane.incidents.selectors import incident_list

    with pytest.raises(InvalidInput, match="max_age_hours"):
        list(incident_list({"max_age_hours": hours}))


def test_an_api_path_no_route_matches_is_a_json_404(nothing_written: Any, api_for: Any) -> None:
    resp = api_for("admin").get("/api/v1/incidents/-1")
    assert resp.status_code == 404
    assert resp["Content-Type"] == "application/json"
    assert resp.json()["error"]["code"] == "not_found"
