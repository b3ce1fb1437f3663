"""History lists with keyset pagination (actions, audit, incidents): Older / Newer cursors walk every row
exactly once in order, keep the filters, survive ties on the timestamp, cost the same queries on the first
page as on a deep one, and a cursor that cannot be read shows the first page with a message (never a 500).
Plus the incident page's cap on the actions it lists, with the link to the rest."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.actions.models import ActionRun, ActionState
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_record
from controlplane.incidents.models import Incident
from controlplane.web import pagination
from controlplane.web.pagination import INVALID_CURSOR, decode_cursor, encode_cursor

pytestmark = pytest.mark.django_db

ACTION_LINK = re.compile(r'<td><a class="mono" href="/actions/([0-9a-f-]{36})/">')
AUDIT_ROW = re.compile(r'<td class="mono">(\d+)</td>')
INCIDENT_ROW = re.compile(r'<td class="mono nowrap">INC-(\d+)')


def client_for(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def text(response: Any) -> str:
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def link(body: str, label: str) -> str | None:
    """The href of the pager's "Older" or "Newer" link (None when it is disabled)."""
    found = re.search(rf'<a class="btn small" href="([^"]*)"[^>]*>[^<]*{label}', body)
    return html.unescape(found.group(1)) if found else None


def make_actions(catalog: Any, user: Any, n: int, *, state: str = ActionState.SUCCEEDED, tie_every: int = 7) -> None:
    """``n`` finished actions a second apart, with runs of ``tie_every`` sharing one requested_at (the id
    orders those): a cursor on the timestamp alone would skip or repeat them."""
    base = timezone.now() - dt.timedelta(days=1)
    rows = ActionRun.objects.bulk_create(
        ActionRun(
            verb="refresh-mart",
            target=catalog["mart_dev"],
            environment=catalog["dev"],
            reason=f"history {i}",
            channel="web",
            requested_by=user,
            request_fingerprint=f"fp-{state}-{i}",
            state=state,
            # Finished long ago: one that needed attention was resolved (else it would still hold the target).
            resolved_at=base if state == ActionState.NEEDS_ATTENTION else None,
        )
        for i in range(n)
    )
    for i, row in enumerate(rows):
        ActionRun.objects.filter(pk=row.pk).update(requested_at=base - dt.timedelta(seconds=i // tie_every))


def walk(client: Client, url: str, pattern: re.Pattern[str], label: str = "Older") -> list[list[str]]:
    """Follow the pager's ``label`` links from ``url`` to the end: the rows of each page."""
    pages: list[list[str]] = []
    path = url.split("?")[0]
    while url is not None:
        body = text(client.get(url))
        pages.append(pattern.findall(body))
        nxt = link(body, label)
        url = path + nxt if nxt is not None else None  # type: ignore[assignment]
        assert len(pages) < 100, "the pager does not end"
    return pages


def newest_first_action_ids(**filters: Any) -> list[str]:
    return [
        str(pk)
        for pk in ActionRun.objects.filter(**filters).order_by("-requested_at", "-id").values_list("id", flat=True)
    ]


# ------------------------------------------------------------------------------------------ actions


def test_older_and_newer_cursors_walk_every_action_exactly_once(catalog: Any, actors: dict[str, Any]) -> None:
    make_actions(catalog, actors["responder"], 120)
    client = client_for(actors["viewer"])
    forward = walk(client, "/actions/", ACTION_LINK)
    assert [len(p) for p in forward] == [50, 50, 20]
    assert [row for page in forward for row in page] == newest_first_action_ids()  # each once, in order

    # Back from the last page with "Newer": the same pages, the other way round.
    last = client.get("/actions/")
    for _ in range(2):
        last = client.get("/actions/" + link(text(last), "Older"))  # type: ignore[operator]
    body = text(last)
    assert "page 3 of 3 · 120 in all" in body and link(body, "Older") is None
    backward = walk(client, "/actions/" + link(body, "Newer"), ACTION_LINK, label="Newer")  # type: ignore[operator]
    assert backward == forward[:2][::-1]


def test_cursor_links_keep_the_filters(catalog: Any, actors: dict[str, Any]) -> None:
    make_actions(catalog, actors["responder"], 70, state=ActionState.FAILED)
    make_actions(catalog, actors["responder"], 70, state=ActionState.SUCCEEDED)
    client = client_for(actors["viewer"])
    first = text(client.get("/actions/", {"state": "failed", "target": catalog["mart_dev"].key}))
    older = link(first, "Older")
    assert older is not None and "state=failed" in older and "target=dev.weather" in older and "cursor=" in older
    pages = walk(client, "/actions/?state=failed", ACTION_LINK)
    assert [row for page in pages for row in page] == newest_first_action_ids(state="failed")
    # htmx asks for the partial with the same links (hx-get), and gets the same rows.
    partial = text(client.get("/actions/" + older, headers={"HX-Request": "true"}))
    assert "<html" not in partial and ACTION_LINK.findall(partial) == pages[1]


def test_name_filters_compare_the_key_with_a_subquery_not_a_join(catalog: Any, actors: dict[str, Any]) -> None:
    """A join on the target's key lets Postgres walk the whole history looking for a rare target's few old
    actions; ``target_id = (SELECT ...)`` reads the index (target, requested_at, id)."""
    make_actions(catalog, actors["responder"], 3)
    client = client_for(actors["viewer"])
    with CaptureQueriesContext(connection) as captured:
        body = text(client.get("/actions/", {"target": catalog["mart_dev"].key, "environment": "dev"}))
    assert len(ACTION_LINK.findall(body)) == 3
    rows = next(q["sql"] for q in captured.captured_queries if "LIMIT 51" in q["sql"])
    assert (
        '"actions_actionrun"."target_id" = (SELECT' in rows and '"actions_actionrun"."environment_id" = (SELECT' in rows
    )
    assert ACTION_LINK.findall(text(client.get("/actions/", {"target": "no.such.target"}))) == []


def test_a_tampered_cursor_shows_the_first_page_with_a_message(catalog: Any, actors: dict[str, Any]) -> None:
    make_actions(catalog, actors["responder"], 60)
    client = client_for(actors["viewer"])
    first = ACTION_LINK.findall(text(client.get("/actions/")))
    good = link(text(client.get("/actions/")), "Older")
    assert good is not None
    token = good.split("cursor=")[1]

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    tampered = [
        "garbage!",
        token[:-3],  # cut short
        token + "AAAA",
        b64(b"not json"),
        b64(b"[1, 2]"),
        b64(json.dumps({"v": ["yesterday", "x"], "o": 1, "n": 2}).encode()),  # not a time, not a uuid
        b64(json.dumps({"v": [timezone.now().isoformat()], "o": 1, "n": 2}).encode()),  # one value of two
        b64(json.dumps({"v": [timezone.now().isoformat(), str(uuid.uuid4())], "o": 5, "n": 2}).encode()),
        b64(json.dumps({"v": [timezone.now().isoformat(), str(uuid.uuid4())], "o": 1, "n": -3}).encode()),
        b64(json.dumps({"v": [{"a": 1}, str(uuid.uuid4())], "o": 1, "n": 2}).encode()),
        "A" * 5000,
    ]
    for cursor in tampered:
        response = client.get("/actions/", {"cursor": cursor})
        body = text(response)
        assert INVALID_CURSOR.replace("'", "&#x27;") in body, cursor
        assert ACTION_LINK.findall(body) == first and "page 1 of 2" in body
    for path in ("/audit/", "/incidents/"):
        assert INVALID_CURSOR.replace("'", "&#x27;") in text(client.get(path, {"cursor": "garbage!"}))


def test_first_and_deep_pages_cost_the_same_queries(catalog: Any, actors: dict[str, Any]) -> None:
    make_actions(catalog, actors["responder"], 120)
    client = client_for(actors["approver"])
    client.get("/actions/")  # session, role and config caches warm, as for any later page
    with CaptureQueriesContext(connection) as first_page:
        body = text(client.get("/actions/"))
    deep_url = "/actions/" + link(body, "Older")  # type: ignore[operator]
    deep_url = "/actions/" + link(text(client.get(deep_url)), "Older")  # type: ignore[operator]
    with CaptureQueriesContext(connection) as deep_page:
        deep = text(client.get(deep_url))
    assert "page 3 of 3" in deep and len(ACTION_LINK.findall(deep)) == 20
    assert len(deep_page.captured_queries) == len(first_page.captured_queries)
    listing = [q["sql"] for q in deep_page.captured_queries if "actions_actionrun" in q["sql"]]
    assert not any("OFFSET" in sql for sql in listing)  # a range on (requested_at, id), not a skip
    assert sum("COUNT(" in sql and "LIMIT 1001" in sql for sql in listing) == 1  # the bounded count only


def test_count_says_more_than_the_cap_and_pages_go_on(
    catalog: Any, actors: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pagination, "COUNT_CAP", 100)
    make_actions(catalog, actors["responder"], 120)
    client = client_for(actors["viewer"])
    body = text(client.get("/actions/"))
    assert "page 1 · more than 100 in all" in body
    pages = walk(client, "/actions/", ACTION_LINK)
    assert sum(len(p) for p in pages) == 120


def test_cursor_round_trip_keeps_time_and_id_exactly() -> None:
    at = dt.datetime(2026, 11, 20, 10, 0, 1, 123456, tzinfo=dt.UTC)
    pk = uuid.uuid4()
    cursor = decode_cursor(encode_cursor([at, pk], older=False, number=7), ActionRun, ("requested_at", "id"))
    assert cursor.values == (at, pk) and cursor.older is False and cursor.number == 7
    assert decode_cursor(encode_cursor([41], older=True, number=2), AuditEvent, ("seq",)).values == (41,)


# ------------------------------------------------------------------------------------------ audit, incidents


def test_audit_pages_walk_every_event_once_and_keep_the_filter(catalog: Any, actors: dict[str, Any]) -> None:
    with change_context(channel=Channel.SYSTEM, actor_name="history-test"):
        for i in range(110):
            audit_record(event="test.ping" if i % 2 else "test.pong", object_type="test", object_id=str(i))
    client = client_for(actors["viewer"])
    pages = walk(client, "/audit/", AUDIT_ROW)
    seqs = [int(s) for page in pages for s in page]
    assert seqs == list(AuditEvent.objects.order_by("-seq").values_list("seq", flat=True))
    pings = walk(client, "/audit/?event=test.ping", AUDIT_ROW)
    assert [len(p) for p in pings] == [50, 5]
    assert {int(s) for p in pings for s in p} == set(
        AuditEvent.objects.filter(event="test.ping").values_list("seq", flat=True)
    )
    with CaptureQueriesContext(connection) as first:
        text(client.get("/audit/", headers={"HX-Request": "true"}))
    older = link(text(client.get("/audit/")), "Older")
    with CaptureQueriesContext(connection) as deep:
        text(client.get("/audit/" + older, headers={"HX-Request": "true"}))  # type: ignore[operator]
    assert len(deep.captured_queries) == len(first.captured_queries)


def test_incident_pages_walk_every_incident_once(actors: dict[str, Any]) -> None:
    base = timezone.now() - dt.timedelta(days=2)
    for i in range(105):
        incident = Incident.objects.create(title=f"old {i}", fingerprint=f"fp-{i}", status=Incident.Status.RESOLVED)
        Incident.objects.filter(pk=incident.pk).update(created_at=base - dt.timedelta(minutes=i // 4))  # ties
    client = client_for(actors["viewer"])
    pages = walk(client, "/incidents/?status=all", INCIDENT_ROW)
    assert [len(p) for p in pages] == [50, 50, 5]
    expected = Incident.objects.order_by("-created_at", "-id").values_list("id", flat=True)
    assert [int(i) for p in pages for i in p] == list(expected)


# ------------------------------------------------------------------------------------------ incident page


def test_incident_page_lists_the_newest_50_actions_and_links_the_rest(catalog: Any, actors: dict[str, Any]) -> None:
    incident = Incident.objects.create(title="mart is stale", fingerprint="fp-stale")
    make_actions(catalog, actors["responder"], 60)
    ActionRun.objects.update(incident=incident)
    client = client_for(actors["viewer"])
    body = text(client.get(f"/incidents/{incident.pk}/"))
    assert 'Actions taken <span class="muted">(60)</span>' in body and "Showing the newest 50." in body
    shown = ACTION_LINK.findall(body)
    assert shown == newest_first_action_ids()[:50][::-1]  # the newest 50, oldest first
    everything = f"/actions/?incident={incident.pk}"
    assert f'href="{everything}"' in body
    listed = walk(client, everything, ACTION_LINK)
    assert sum(len(p) for p in listed) == 60
    assert f'name="incident" value="{incident.pk}"' in text(client.get(everything))  # the filter stays visible


def test_a_bad_incident_filter_is_a_message_not_a_500(catalog: Any, actors: dict[str, Any], api_for: Any) -> None:
    client = client_for(actors["viewer"])
    for bad in ("abc", "1; drop", "9" * 30):
        assert "incident must be an incident number" in text(client.get("/actions/", {"incident": bad}))
    assert api_for("viewer", ["actions:read"]).get("/api/v1/actions", incident="abc").status_code == 400


def test_dashboard_counts_open_actions_always_and_ended_ones_for_a_day(catalog: Any, actors: Any) -> None:
    from controlplane.actions.selectors import action_state_counts

    make_actions(catalog, actors["responder"], 3, state=ActionState.SUCCEEDED)  # a day old and more
    make_actions(catalog, actors["responder"], 2, state=ActionState.NEEDS_ATTENTION)
    now = timezone.now()
    assert action_state_counts(now=now - dt.timedelta(hours=2))["succeeded"] == 3
    later = action_state_counts(now=now + dt.timedelta(hours=2))
    assert later["succeeded"] == 0  # ended more than 24 hours before "now": off the dashboard
    assert later["needs_attention"] == 2  # open ones stay until someone deals with them
