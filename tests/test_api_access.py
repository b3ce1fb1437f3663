"""Who may call what: every /api/v1/ route the resolver serves, with every method, as anonymous, as each
role in a session and as each role's token holding each single scope, answers as the table in
docs/security.md ("API access") says. A route added without a row in the table fails here."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from controlplane.access import ROLES
from controlplane.api.models import SCOPES
from controlplane.api.services import api_token_create
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# A value per path parameter that names nothing: an allowed request ends in 404 (or 400 for an empty
# body) without touching anything or calling an outside system.
SAMPLE = {
    "key": "no-such-target",
    "what": "failed_runs",
    "action_id": str(uuid.UUID(int=1)),
    "incident_id": "999999",
    "move": "acknowledge",
    "slug": "no-such-runbook",
    "run_id": "999999",
    "step_id": "no-such-step",
    "command": "complete",
    "review_id": "999999",
    "item_id": "999999",
}
_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}


def doc_table() -> dict[tuple[str, str], tuple[str, str]]:
    """``(method, route) -> (role, scope)`` from the table under docs/security.md's "## API access"."""
    text = (ROOT / "docs" / "security.md").read_text()
    section = text.split("## API access", 1)[1].split("\n## ", 1)[0]
    table: dict[tuple[str, str], tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[1].startswith("/api/v1/"):
            continue
        methods, route, role, scope = cells
        for method in methods.split(", "):
            assert (method, route) not in table, f"{method} {route} is twice in the table"
            table[(method, route)] = (role, scope)
    assert table, "no access table found in docs/security.md"
    return table


def _walk(patterns: list[Any], prefix: str) -> Iterator[str]:
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern)


def api_routes() -> list[str]:
    """Every route under /api/v1/, as the resolver serves it, written as the docs write it."""
    routes = ["/" + re.sub(r"<\w+:(\w+)>", r"<\1>", r) for r in _walk(get_resolver().url_patterns, "")]
    return [r for r in routes if r.startswith("/api/v1/")]


def concrete(route: str) -> str:
    def value(m: re.Match[str]) -> str:
        assert m.group(1) in SAMPLE, f"add a sample value for the path parameter <{m.group(1)}> to SAMPLE"
        return SAMPLE[m.group(1)]

    return re.sub(r"<(\w+)>", value, route)


def answer(client: Client, method: str, url: str, headers: dict[str, str]) -> int:
    call = getattr(client, method.lower())
    if method in ("POST", "PUT", "PATCH"):
        return int(call(url, data="{}", content_type="application/json", headers=headers).status_code)
    return int(call(url, headers=headers).status_code)


def test_every_api_route_is_in_the_access_table() -> None:
    routes = set(api_routes())
    documented = {route for _, route in doc_table()}
    assert routes - documented == set(), "routes without a row in docs/security.md"
    assert documented - routes == set(), "rows in docs/security.md for routes that do not exist"


def test_every_route_and_method_answers_as_the_access_table_says(actors: dict[str, Any]) -> None:
    table = doc_table()
    people = {"nobody": actors["nobody"], **{role: actors[role] for role in ROLES}}
    # (who, role, scope or None for a session, client, headers)
    callers: list[tuple[str, str | None, str | None, Client, dict[str, str]]] = []
    for name, user in people.items():
        role = None if name == "nobody" else name
        session = Client()
        session.force_login(user)
        callers.append((f"{name} (session)", role, None, session, {}))
        for scope in SCOPES:
            _, raw = api_token_create(user=user, name=f"{name}-{scope}", scopes=[scope])
            callers.append((f"{name} token [{scope}]", role, scope, Client(), {"Authorization": f"Bearer {raw}"}))
    wrong: list[str] = []
    for number, route in enumerate(api_routes(), start=1):
        url = concrete(route)
        # Refused callers count against their address's anonymous rate: one address per route stays under it.
        anonymous = Client(REMOTE_ADDR=f"192.0.2.{number}")
        for method in METHODS:
            rule = table.get((method, route))
            got = answer(anonymous, method, url, {})
            if got != 401:
                wrong.append(f"anonymous {method} {route}: {got}, expected 401")
            for who, held, granted, client, headers in callers:
                if rule is None:
                    expected = "405"
                elif held is None or _RANK[held] < _RANK[rule[0]] or (granted is not None and granted != rule[1]):
                    expected = "403"
                else:
                    expected = "allowed"
                got = answer(client, method, url, headers)
                seen = str(got) if got in (401, 403, 405) else "allowed"
                if seen != expected:
                    wrong.append(f"{who} {method} {route}: {got}, expected {expected}")
    assert wrong == [], f"{len(wrong)} answers differ from the table:\n" + "\n".join(wrong[:60])


# ------------------------------------------------------------------------ what the endpoint cannot know

DEV_MART = "dev.weather.daily_weather_aggregates"
PROD_MART = "prod.weather.daily_weather_aggregates"
GATED = """\
id: 000-gated
title: Gated
version: 1
steps:
  - id: sign_off
    kind: approval
    title: A lead signs off
  - id: by_hand
    kind: manual
    title: By hand
"""


@pytest.fixture
def library(db: Any) -> None:
    from controlplane.audit.context import Channel, change_context
    from runbooks import services
    from runbooks.loader import LIBRARY, parse_file, parse_text

    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        files = [parse_file(LIBRARY / "004-rehydrate-mart.yaml"), parse_text(GATED, "000-gated.yaml")]
        services.runbooks_load(parsed=files)


def test_runbooks_write_alone_walks_a_runbook_but_launches_no_action(
    catalog: Any, actors: Any, api_for: Any, library: Any
) -> None:
    from controlplane.actions.models import ActionRun
    from runbooks.services import run_advance

    walker = api_for("responder", scopes=["runbooks:write", "runbooks:read"])
    started = walker.post("/api/v1/runbook-runs", {"runbook": "004-rehydrate-mart", "params": {"mart": DEV_MART}})
    assert started.status_code == 201, started.content
    run_id = started.json()["id"]
    run_advance(run_id=run_id)  # what the worker does: the checks run up to the action step
    assert walker.get(f"/api/v1/runbook-runs/{run_id}").json()["current_step"] == "refresh"

    refused = walker.post(f"/api/v1/runbook-runs/{run_id}/steps/refresh/act", {"params": {"concurrently": False}})
    assert refused.status_code == 403
    assert "'actions:write' scope" in refused.json()["error"]["message"]
    assert not ActionRun.objects.exists()

    launcher = api_for("responder", scopes=["runbooks:write", "actions:write"])
    launched = launcher.post(f"/api/v1/runbook-runs/{run_id}/steps/refresh/act", {})
    assert launched.status_code == 200, launched.content
    assert ActionRun.objects.get().target.key == DEV_MART


def test_a_runbook_approval_gate_needs_the_actions_approve_scope(
    catalog: Any, actors: Any, api_for: Any, library: Any
) -> None:
    from runbooks.services import run_advance

    started = api_for("approver", scopes=["runbooks:write"]).post("/api/v1/runbook-runs", {"runbook": "000-gated"})
    run_id = started.json()["id"]
    run_advance(run_id=run_id)
    gate = f"/api/v1/runbook-runs/{run_id}/steps/sign_off/approve"
    refused = api_for("approver2", scopes=["runbooks:write"]).post(gate, {"comment": "fine"})
    assert refused.status_code == 403
    assert "'actions:approve' scope" in refused.json()["error"]["message"]
    passed = api_for("approver2", scopes=["runbooks:write", "actions:approve"]).post(gate, {"comment": "fine"})
    assert passed.status_code == 200, passed.content
    assert {s["id"]: s["state"] for s in passed.json()["steps"]}["sign_off"] == "done"


def test_cancelling_someone_elses_action_takes_the_approvers_scope(catalog: Any, api_for: Any) -> None:
    body = {"verb": "refresh-mart", "target": PROD_MART, "params": {}, "reason": "stale mart"}
    action = api_for("responder", scopes=["actions:write"]).post("/api/v1/actions", body).json()
    assert action["state"] == "awaiting_approval"
    cancel = f"/api/v1/actions/{action['id']}/cancel"
    refused = api_for("approver", scopes=["actions:write"]).post(cancel, {"reason": "not needed"})
    assert refused.status_code == 403
    assert "'actions:approve' scope" in refused.json()["error"]["message"]
    done = api_for("approver", scopes=["actions:write", "actions:approve"]).post(cancel, {"reason": "not needed"})
    assert done.status_code == 200 and done.json()["state"] == "cancelled"


def test_a_requester_cancels_their_own_action_with_actions_write(catalog: Any, api_for: Any) -> None:
    bot = api_for("responder", scopes=["actions:write"])
    body = {"verb": "refresh-mart", "target": PROD_MART, "params": {}, "reason": "stale mart"}
    action = bot.post("/api/v1/actions", body).json()
    done = bot.post(f"/api/v1/actions/{action['id']}/cancel", {"reason": "wrong mart"})
    assert done.status_code == 200 and done.json()["state"] == "cancelled"
