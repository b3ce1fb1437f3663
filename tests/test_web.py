"""The web UI: pages behind login, forms generated from verb schemas, preview that writes nothing, the
request -> approve path through the same services as the API, roles on both sides of each line, CSRF on
every POST, the live log's polling, the audit banner, and list pages with a constant number of queries."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from controlplane.actions import services as action_services
from controlplane.actions.models import ActionRun, ActionState, Approval
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

DEV_MART = "dev.weather.daily_weather_aggregates"
PROD_MART = "prod.weather.daily_weather_aggregates"
REASON = "mart is stale after the backfill of 2024-03-01"


def client_for(user: Any) -> Client:
    """A logged-in client that enforces CSRF, as the browser is held to."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def post(client: Client, path: str, data: dict[str, Any], *, htmx: bool = False, page: str = "/") -> Any:
    """POST like htmx does: load a page first, then send the csrftoken cookie back as X-CSRFToken."""
    if "csrftoken" not in client.cookies:
        assert client.get(page).status_code == 200
    headers = {"X-CSRFToken": client.cookies["csrftoken"].value}
    if htmx:
        headers["HX-Request"] = "true"
    return client.post(path, data, headers=headers)


def target_url(key: str) -> str:
    return f"/targets/{key}/"


def request_url(key: str, verb: str = "refresh-mart") -> str:
    return f"/targets/{key}/verbs/{verb}/request/"


def preview_url(key: str, verb: str = "refresh-mart") -> str:
    return f"/targets/{key}/verbs/{verb}/preview/"


def request_action(actor: Any, target: str = DEV_MART, **over: Any) -> ActionRun:
    """An action requested through the service, as another channel would."""
    with change_context(channel=Channel.API, user=actor):
        args = {"verb": "refresh-mart", "target_key": target, "params": {}, "reason": REASON} | over
        return action_services.action_request(actor=actor, **args).action


def text(response: Any) -> str:
    return response.content.decode()


# ------------------------------------------------------------------------------------------ login


@pytest.mark.parametrize(
    "path",
    ["/", "/targets/", target_url(DEV_MART), "/actions/", "/approvals/", "/audit/"],
)
def test_pages_redirect_anonymous_visitors_to_login(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_login_page_renders_and_logs_in(actors: dict[str, Any]) -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get("/login/")
    assert page.status_code == 200 and 'name="username"' in text(page)
    response = client.post(
        "/login/",
        {"username": "rita", "password": "rita-password"},
        headers={"X-CSRFToken": client.cookies["csrftoken"].value},
    )
    assert response.status_code == 302 and response["Location"] == "/"
    home = client.get("/")
    assert "rita" in text(home) and "responder" in text(home)


def test_nav_shows_role_and_the_approvals_waiting_for_me(catalog: Any, actors: dict[str, Any]) -> None:
    request_action(actors["responder"], PROD_MART)
    page = text(client_for(actors["approver"]).get("/"))
    assert re.search(r'Approvals <span id="nav-approvals-count"><span class="count"[^>]*>1</span>', page)
    assert "approver" in page and 'action="/logout/"' in page
    requester_page = text(client_for(actors["responder"]).get("/"))
    assert 'class="count"' not in requester_page  # her own request is not hers to decide


# ------------------------------------------------------------------------------------------ target page


def test_target_page_offers_refresh_mart_form_generated_from_its_schema(catalog: Any, actors: dict[str, Any]) -> None:
    page = text(client_for(actors["responder"]).get(target_url(DEV_MART)))
    # concurrently is bool | None: three states, so a select (automatic / yes / no), not a checkbox
    assert re.search(r'<select id="verb-refresh-mart-concurrently" name="param-concurrently"', page)
    assert '<option value="">automatic (default)</option>' in page
    assert re.search(r'<input type="checkbox" id="verb-refresh-mart-allow_blocking_readers"', page)
    assert re.search(
        r'<input type="number" id="verb-refresh-mart-timeout_s" name="param-timeout_s" value="600" step="1" '
        r'min="1" max="3600"',
        page,
    )
    assert '<label for="verb-refresh-mart-timeout_s">' in page
    assert re.search(r'<textarea id="verb-refresh-mart-reason" name="reason"[^>]*required', page)
    assert ">Preview</button>" in page and ">Run</button>" in page  # dev is unprotected: it runs at once
    assert "matview_status" in page and ">Run check</button>" in page
    assert "daily_weather_aggregates" in page and "protected" not in page.split("Verbs")[0].split("<h1>")[1]


def test_protected_target_offers_request_approval(catalog: Any, actors: dict[str, Any]) -> None:
    page = text(client_for(actors["responder"]).get(target_url(PROD_MART)))
    assert ">Request approval</button>" in page and 'class="badge protected"' in page


def test_unknown_target_is_404(catalog: Any, actors: dict[str, Any]) -> None:
    assert client_for(actors["responder"]).get(target_url("dev.nothing.here")).status_code == 404


def test_preview_renders_the_plan_and_writes_nothing(catalog: Any, actors: dict[str, Any]) -> None:
    client = client_for(actors["responder"])
    audit_before = AuditEvent.objects.count()
    response = post(client, preview_url(DEV_MART), {"param-timeout_s": "600"}, htmx=True)
    assert response.status_code == 200, text(response)
    page = text(response)
    assert "mart.daily_weather_aggregates" in page
    assert "concurrently" in page and "EXCLUSIVE lock" in page
    assert "risk-low" in page and "Touches" in page and "Locks" in page
    assert "<html" not in page  # the partial only
    assert ActionRun.objects.count() == 0
    assert AuditEvent.objects.count() == audit_before


def test_preview_of_a_blocking_refresh_shows_the_consent_reason(catalog: Any, actors: dict[str, Any]) -> None:
    response = post(client_for(actors["responder"]), preview_url(DEV_MART), {"param-concurrently": "false"}, htmx=True)
    page = text(response)
    assert response.status_code == 200
    assert "Needs your explicit consent" in page and "allow_blocking_readers" in page
    assert "ACCESS EXCLUSIVE" in page


def test_preview_with_invalid_params_names_the_field(catalog: Any, actors: dict[str, Any]) -> None:
    response = post(client_for(actors["responder"]), preview_url(DEV_MART), {"param-timeout_s": "99999"}, htmx=True)
    assert response.status_code == 400
    assert "timeout_s" in text(response) and "3600" in text(response)


def test_request_without_reason_shows_the_error_and_writes_nothing(catalog: Any, actors: dict[str, Any]) -> None:
    client = client_for(actors["responder"])
    audit_before = AuditEvent.objects.count()
    response = post(client, request_url(DEV_MART), {"reason": "  ", "param-timeout_s": "120"}, htmx=True)
    assert response.status_code == 400
    page = text(response)
    assert "&#x27;reason&#x27; is required" in page
    assert 'value="120"' in page  # the form keeps what was typed
    assert ActionRun.objects.count() == 0
    assert AuditEvent.objects.count() == audit_before


def test_request_in_dev_is_queued_and_redirects_to_the_action(catalog: Any, actors: dict[str, Any]) -> None:
    client = client_for(actors["responder"])
    response = post(client, request_url(DEV_MART), {"reason": REASON})
    action = ActionRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/actions/{action.id}/"
    assert action.state == ActionState.QUEUED and action.channel == "web"
    assert action.params == {"concurrently": None, "allow_blocking_readers": False, "timeout_s": 600}
    requested = AuditEvent.objects.get(object_id=str(action.id), event="action.requested")
    assert requested.channel == "web" and requested.actor_name == "rita" and requested.reason == REASON
    page = text(client.get(response["Location"]))
    assert "state-queued" in page and REASON in page and "mart.daily_weather_aggregates" in page


def test_htmx_request_answers_with_hx_redirect(catalog: Any, actors: dict[str, Any]) -> None:
    response = post(client_for(actors["responder"]), request_url(DEV_MART), {"reason": REASON}, htmx=True)
    action = ActionRun.objects.get()
    assert response.status_code == 204 and response["HX-Redirect"] == f"/actions/{action.id}/"


def test_blocking_refresh_without_consent_is_refused_with_the_plan(catalog: Any, actors: dict[str, Any]) -> None:
    response = post(
        client_for(actors["responder"]), request_url(DEV_MART), {"reason": REASON, "param-concurrently": "false"}
    )
    assert response.status_code == 400
    assert "Nothing was requested" in text(response) and "Needs your explicit consent" in text(response)
    assert ActionRun.objects.count() == 0


def test_second_request_on_an_active_target_links_to_the_active_action(catalog: Any, actors: dict[str, Any]) -> None:
    first = request_action(actors["responder2"])
    response = post(client_for(actors["responder"]), request_url(DEV_MART), {"reason": REASON}, htmx=True)
    assert response.status_code == 409
    assert f'href="/actions/{first.id}/"' in text(response)
    assert ActionRun.objects.count() == 1


# ------------------------------------------------------------------------------------------ approval path


def test_prod_request_waits_and_a_different_approver_approves(catalog: Any, actors: dict[str, Any]) -> None:
    requester = client_for(actors["responder"])
    response = post(requester, request_url(PROD_MART), {"reason": REASON})
    action = ActionRun.objects.get()
    assert response.status_code == 302 and action.state == ActionState.AWAITING_APPROVAL

    own = text(requester.get(f"/actions/{action.id}/"))
    assert "awaiting approval" in own and "Waiting for another approver" in own
    assert ">Approve</button>" not in own and ">Reject</button>" not in own

    approver = client_for(actors["approver"])
    page = text(approver.get(f"/actions/{action.id}/"))
    assert ">Approve</button>" in page and ">Reject</button>" in page
    response = post(approver, f"/actions/{action.id}/approve/", {"comment": "ok, go"}, page=f"/actions/{action.id}/")
    assert response.status_code == 302 and response["Location"] == f"/actions/{action.id}/"

    action.refresh_from_db()
    assert action.state == ActionState.QUEUED
    approval = Approval.objects.get(action=action)
    assert approval.approver == actors["approver"] and approval.comment == "ok, go" and approval.channel == "web"
    event = AuditEvent.objects.get(object_id=str(action.id), event="action.approved")
    assert event.actor_name == "alice" and event.channel == "web"
    after = text(approver.get(f"/actions/{action.id}/"))
    assert "state-queued" in after and "ok, go" in after and ">Approve</button>" not in after


def test_an_approver_cannot_approve_their_own_request(catalog: Any, actors: dict[str, Any]) -> None:
    action = request_action(actors["approver"], PROD_MART)
    client = client_for(actors["approver"])
    page = text(client.get(f"/actions/{action.id}/"))
    assert ">Approve</button>" not in page and "Waiting for another approver" in page
    response = post(client, f"/actions/{action.id}/approve/", {"comment": "me"})
    assert response.status_code == 403
    assert "a different person must approve" in text(response)
    action.refresh_from_db()
    assert action.state == ActionState.AWAITING_APPROVAL and not Approval.objects.exists()


def test_approvals_inbox_approves_with_htmx_and_replaces_the_card(catalog: Any, actors: dict[str, Any]) -> None:
    action = request_action(actors["responder"], PROD_MART)
    approver = client_for(actors["approver2"])
    inbox = text(approver.get("/approvals/"))
    assert f'id="approval-{action.id}"' in inbox and REASON in inbox and "rita" in inbox
    assert "mart.daily_weather_aggregates" in inbox  # the plan summary
    response = post(approver, f"/actions/{action.id}/approve/", {"comment": "lgtm"}, htmx=True, page="/approvals/")
    card = text(response)
    assert response.status_code == 200 and card.strip().startswith(
        f'<article class="card approval" id="approval-{action.id}"'
    )
    assert "Approved" in card and ">Approve</button>" not in card
    action.refresh_from_db()
    assert action.state == ActionState.QUEUED
    assert f'id="approval-{action.id}"' not in text(approver.get("/approvals/"))


def test_reject_from_the_inbox_ends_the_action(catalog: Any, actors: dict[str, Any]) -> None:
    action = request_action(actors["responder"], PROD_MART)
    response = post(client_for(actors["approver"]), f"/actions/{action.id}/reject/", {"comment": "not now"}, htmx=True)
    assert response.status_code == 200 and "Rejected" in text(response)
    action.refresh_from_db()
    assert action.state == ActionState.REJECTED


def test_requester_cancels_a_queued_action(catalog: Any, actors: dict[str, Any]) -> None:
    action = request_action(actors["responder"])
    client = client_for(actors["responder"])
    assert ">Cancel action</button>" in text(client.get(f"/actions/{action.id}/"))
    response = post(client, f"/actions/{action.id}/cancel/", {"reason": "wrong mart"})
    assert response.status_code == 302
    action.refresh_from_db()
    assert action.state == ActionState.CANCELLED
    assert AuditEvent.objects.get(object_id=str(action.id), event="action.cancelled").reason == "wrong mart"


# ------------------------------------------------------------------------------------------ roles


def test_viewer_gets_no_request_form_and_no_buttons(catalog: Any, actors: dict[str, Any]) -> None:
    action = request_action(actors["responder"], PROD_MART)
    viewer = client_for(actors["viewer"])
    target_page = text(viewer.get(target_url(PROD_MART)))
    assert 'name="reason"' not in target_page and ">Preview</button>" not in target_page
    assert ">Run</button>" not in target_page and ">Request approval</button>" not in target_page
    assert "needs the responder role" in target_page
    action_page = text(viewer.get(f"/actions/{action.id}/"))
    for button in (">Approve</button>", ">Reject</button>", ">Cancel action</button>"):
        assert button not in action_page
    inbox = text(viewer.get("/approvals/"))
    assert REASON in inbox and ">Approve</button>" not in inbox


def test_viewer_forced_posts_are_refused_with_the_policy_message(catalog: Any, actors: dict[str, Any]) -> None:
    action = request_action(actors["responder"], PROD_MART)
    viewer = client_for(actors["viewer"])
    audit_before = AuditEvent.objects.count()

    response = post(viewer, request_url(PROD_MART), {"reason": REASON})
    assert response.status_code == 403
    assert "requesting an action needs the responder role or higher; you have viewer" in text(response)

    response = post(viewer, request_url(PROD_MART), {"reason": REASON}, htmx=True)
    assert response.status_code == 403 and "you have viewer" in text(response)
    assert 'name="reason"' not in text(response)  # the refusal does not hand the viewer a form

    response = post(viewer, f"/actions/{action.id}/approve/", {"comment": "sneaky"})
    assert response.status_code == 403
    assert "needs the approver role or higher; you have viewer" in text(response)

    response = post(viewer, f"/actions/{action.id}/cancel/", {}, htmx=True)
    assert response.status_code == 403 and "approver role" in text(response)

    assert ActionRun.objects.count() == 1 and not Approval.objects.exists()
    assert AuditEvent.objects.count() == audit_before
    action.refresh_from_db()
    assert action.state == ActionState.AWAITING_APPROVAL


def test_post_without_csrf_token_is_403(catalog: Any, actors: dict[str, Any]) -> None:
    client = client_for(actors["responder"])
    client.get(target_url(DEV_MART))
    response = client.post(request_url(DEV_MART), {"reason": REASON}, headers={"HX-Request": "true"})
    assert response.status_code == 403
    assert ActionRun.objects.count() == 0
    action = request_action(actors["responder"], PROD_MART)
    response = client_for(actors["approver"]).post(f"/actions/{action.id}/approve/", {"comment": "x"})
    assert response.status_code == 403
    action.refresh_from_db()
    assert action.state == ActionState.AWAITING_APPROVAL


# ------------------------------------------------------------------------------------------ live log


def test_live_partial_polls_while_active_and_stops_once_terminal(catalog: Any, actors: dict[str, Any]) -> None:
    action = request_action(actors["responder"])
    client = client_for(actors["responder"])
    live_url = f"/actions/{action.id}/live/"

    page = text(client.get(f"/actions/{action.id}/"))
    assert f'hx-get="{live_url}?seen=queued" hx-trigger="every 1s"' in page

    active = client.get(live_url + "?seen=queued", headers={"HX-Request": "true"})
    body = text(active)
    assert 'hx-trigger="every 1s"' in body
    assert 'id="action-status" class="statusbar" aria-label="Status" hx-swap-oob="true"' in body
    assert 'id="action-controls"' not in body  # unchanged state: the controls are left alone

    ActionRun.objects.filter(id=action.id).update(
        state=ActionState.SUCCEEDED,
        outcome={"summary": "refreshed mart.daily_weather_aggregates", "details": {}, "already_done": False},
        verification={"ok": True, "summary": "populated with 14 rows", "details": {}},
    )
    done = text(client.get(live_url + "?seen=queued", headers={"HX-Request": "true"}))
    assert "hx-trigger" not in done and "every 1s" not in done
    assert "state-succeeded" in done and "Verification passed" in done and "populated with 14 rows" in done
    assert 'id="action-controls"' in done and ">Cancel action</button>" not in done  # swapped: no more cancel


def test_live_partial_shows_log_lines(catalog: Any, actors: dict[str, Any]) -> None:
    action = request_action(actors["responder"])
    action.log_lines.create(attempt=1, message="refreshing mart.daily_weather_aggregates concurrently")
    action.log_lines.create(attempt=1, level="error", message="lock timeout <script>")
    body = text(client_for(actors["viewer"]).get(f"/actions/{action.id}/live/"))
    assert "refreshing mart.daily_weather_aggregates concurrently" in body
    assert "lock timeout &lt;script&gt;" in body and 'class="line level-error"' in body


def test_action_page_shows_its_audit_trail(catalog: Any, actors: dict[str, Any]) -> None:
    action = request_action(actors["responder"])
    page = text(client_for(actors["viewer"]).get(f"/actions/{action.id}/"))
    assert "action.requested" in page and "action.planned" in page


# ------------------------------------------------------------------------------------------ checks


def test_check_runs_and_shows_findings(catalog: Any, actors: dict[str, Any]) -> None:
    client = client_for(actors["viewer"])  # signing in is audited; running a check is not
    audit_before = AuditEvent.objects.count()
    response = post(client, f"/targets/{DEV_MART}/checks/matview_status/", {}, htmx=True)
    assert response.status_code == 200, text(response)
    body = text(response)
    assert 'class="badge pass"' in body and "is populated" in body and "concurrent refresh possible" in body
    assert AuditEvent.objects.count() == audit_before


def test_check_with_invalid_params_shows_the_error(catalog: Any, actors: dict[str, Any]) -> None:
    key = "dev.weather.core_weather"
    response = post(
        client_for(actors["responder"]), f"/targets/{key}/checks/freshness/", {"param-sla_hours": "-1"}, htmx=True
    )
    assert response.status_code == 400 and "sla_hours" in text(response)


# ------------------------------------------------------------------------------------------ lists


def test_list_pages_serve_partials_to_htmx_and_vary_on_it(catalog: Any, actors: dict[str, Any]) -> None:
    client = client_for(actors["viewer"])
    for path, marker in [
        ("/", 'id="dashboard"'),
        ("/targets/", 'id="targets-results"'),
        ("/actions/", 'id="actions-results"'),
        ("/audit/", 'id="audit-results"'),
        ("/approvals/", 'id="approvals-body"'),
    ]:
        full = client.get(path)
        partial = client.get(path, headers={"HX-Request": "true"})
        assert "HX-Request" in full["Vary"] and "HX-Request" in partial["Vary"]
        assert "<html" in text(full) and "<html" not in text(partial)
        assert "{#" not in text(full) and "{%" not in text(full)  # no template syntax leaks onto the page
        assert marker in text(partial)


def test_actions_list_filters_by_state_and_target(catalog: Any, actors: dict[str, Any]) -> None:
    queued = request_action(actors["responder"])
    waiting = request_action(actors["responder"], PROD_MART)
    client = client_for(actors["viewer"])
    page = text(client.get("/actions/", {"state": "awaiting_approval"}))
    assert str(waiting.short_id) in page and str(queued.short_id) not in page
    page = text(client.get("/actions/", {"target": DEV_MART}))
    assert str(queued.short_id) in page and str(waiting.short_id) not in page
    bad = text(client.get("/actions/", {"state": "exploded"}))
    assert "unknown state" in bad


def _make_finished_actions(catalog: Any, user: Any, n: int) -> None:
    ActionRun.objects.bulk_create(
        ActionRun(
            verb="refresh-mart",
            target=catalog["mart_dev"],
            environment=catalog["dev"],
            reason=f"row {i}",
            channel="web",
            requested_by=user,
            request_fingerprint=f"fp{i}",
            state=ActionState.SUCCEEDED,
        )
        for i in range(n)
    )


def test_actions_list_queries_do_not_grow_with_rows(
    catalog: Any, actors: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    client = client_for(actors["approver"])
    _make_finished_actions(catalog, actors["responder"], 3)
    with django_assert_max_num_queries(9) as few:
        assert client.get("/actions/").status_code == 200
    _make_finished_actions(catalog, actors["responder2"], 45)
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get("/actions/")
    assert page.status_code == 200 and text(page).count("<td><code>refresh-mart</code></td>") == 48


def test_dashboard_queries_do_not_grow_with_rows(
    catalog: Any, actors: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    client = client_for(actors["approver"])
    _make_finished_actions(catalog, actors["responder"], 2)
    with django_assert_max_num_queries(12) as few:
        client.get("/")
    _make_finished_actions(catalog, actors["responder2"], 30)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get("/").status_code == 200


# ------------------------------------------------------------------------------------------ audit


def test_audit_page_shows_the_chain_intact(catalog: Any, actors: dict[str, Any]) -> None:
    request_action(actors["responder"])
    client = client_for(actors["viewer"])  # the sign-in is an audited event too
    n = AuditEvent.objects.count()
    page = text(client.get("/audit/"))
    assert "Chain intact" in page and f"{n} events verified" in page
    assert "action.requested" in page and "catalog.target.created" in page


def test_audit_page_names_the_first_broken_event(catalog: Any, actors: dict[str, Any]) -> None:
    request_action(actors["responder"])
    victim = AuditEvent.objects.order_by("seq")[2]
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_no_update_delete")
        cursor.execute("UPDATE audit_auditevent SET reason = 'edited' WHERE id = %s", [victim.id])
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_no_update_delete")
    page = text(client_for(actors["viewer"]).get("/audit/"))
    assert f"Chain BROKEN at event #{victim.seq}" in page and "edited" in page


def test_audit_page_filters_by_actor_and_event(catalog: Any, actors: dict[str, Any]) -> None:
    request_action(actors["responder"])
    page = text(client_for(actors["viewer"]).get("/audit/", {"actor": "rita", "event": "action.planned"}))
    assert "action.planned" in page and "action.requested" not in page.split('id="audit-results"')[1]


# ------------------------------------------------------------------------------------------ schema forms


def test_schema_form_covers_enums_dates_optional_numbers_and_round_trips() -> None:
    import enum
    from datetime import date

    from pydantic import BaseModel, Field

    from controlplane.web.forms import fields_from_schema, params_from_post

    class Mode(enum.StrEnum):
        FAST = "fast"
        SAFE = "safe"

    class Params(BaseModel):
        mode: Mode = Mode.SAFE
        start: date
        limit: int | None = Field(default=None, ge=1, lt=100, description="at most this many")
        ratio: float = Field(default=0.5, gt=0, le=1)
        dry_run: bool = True
        note: str | None = None

    schema = Params.model_json_schema()
    fields = {f.name: f for f in fields_from_schema(schema, form_id="x")}
    assert fields["mode"].widget == "select" and [c[0] for c in fields["mode"].choices] == ["fast", "safe"]
    assert fields["mode"].value == "safe"
    assert fields["start"].widget == "date" and fields["start"].required
    assert (fields["limit"].minimum, fields["limit"].maximum, fields["limit"].step) == (1, 99, "1")
    assert fields["limit"].help == "at most this many" and not fields["limit"].required
    assert fields["ratio"].range_text == "more than 0, max 1" and fields["ratio"].step == "any"
    assert fields["dry_run"].widget == "checkbox" and fields["dry_run"].value is True
    assert fields["note"].widget == "text"

    post = {"param-mode": "fast", "param-start": "2024-03-01", "param-limit": "", "param-ratio": "0.25"}
    params = params_from_post(schema, post)
    assert params == {"mode": "fast", "start": "2024-03-01", "ratio": 0.25, "dry_run": False}
    assert Params.model_validate(params).dry_run is False  # an unticked box is an explicit False here
    assert params_from_post(schema, {"param-limit": "lots"})["limit"] == "lots"  # pydantic will name it


def test_htmx_poll_after_the_session_ended_is_sent_to_login(catalog: Any, actors: dict[str, Any]) -> None:
    action = request_action(actors["responder"])
    page = f"http://testserver/actions/{action.id}/"
    response = Client().get(f"/actions/{action.id}/live/", headers={"HX-Request": "true", "HX-Current-URL": page})
    assert response.status_code == 204
    assert response["HX-Redirect"] == f"/login/?next=%2Factions%2F{action.id}%2F"


def test_an_account_without_a_role_sees_nothing(catalog: Any, actors: dict[str, Any]) -> None:
    request_action(actors["responder"])
    client = client_for(actors["nobody"])
    for path in ["/", "/actions/", "/audit/", target_url(DEV_MART)]:
        response = client.get(path)
        assert response.status_code == 403 and "No role yet" in text(response)
        assert REASON not in text(response)


def test_action_page_shows_progress_of_a_multi_part_action(catalog: Any, actors: Any, client: Any) -> None:
    from controlplane.actions import services
    from controlplane.actions.models import ActionRun
    from controlplane.audit.context import Channel, change_context

    with change_context(channel=Channel.WEB, user=actors["responder"]):
        action = services.action_request(
            actor=actors["responder"],
            verb="refresh-mart",
            target_key="dev.weather.daily_weather_aggregates",
            params={},
            reason="progress",
        ).action
    ActionRun.objects.filter(id=action.id).update(state="running", progress_done=2, progress_total=3)
    client.force_login(actors["viewer"])
    html = client.get(f"/actions/{action.id}/").content.decode()
    assert '<progress max="3" value="2"' in html and "2 / 3" in html
