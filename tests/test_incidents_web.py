"""Incident pages and services: the status lifecycle (acknowledge, mitigate, resolve) and comments with
their refusals (role, bad jump, empty or long text: nothing written), the list with its filters, the
detail page (alert, log excerpt, timeline, actions, runbooks), the post-incident export, the dashboard's
incident counts and pipeline freshness (also with an unreachable warehouse), and pages whose number of
queries does not grow with the data."""

from __future__ import annotations

import html
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.access import PolicyError
from controlplane.actions import services as action_services
from controlplane.actions.models import ActionRun, ActionState, Approval
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.catalog.models import Environment, Pipeline
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.incidents import services
from controlplane.incidents.export import incident_export, step_result_summary
from controlplane.incidents.models import Incident, IncidentEvent
from runbooks.models import Runbook, RunbookRun, RunbookVersion, StepRun

pytestmark = pytest.mark.django_db

PROD_MART = "prod.weather.daily_weather_aggregates"
DEV_MART = "dev.weather.daily_weather_aggregates"
LOG = "[2026-11-20 00:05:01] INFO - fetching orders\n[2026-11-20 00:05:02] ERROR - FileNotFoundError: orders.csv"


# ------------------------------------------------------------------------------------------ helpers


def client_for(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def post(client: Client, path: str, data: dict[str, Any] | None = None, *, htmx: bool = False) -> Any:
    """POST as htmx or a form does: load a page for the csrftoken cookie, send it back as X-CSRFToken."""
    if "csrftoken" not in client.cookies:
        assert client.get("/incidents/").status_code == 200
    headers = {"X-CSRFToken": client.cookies["csrftoken"].value}
    if htmx:
        headers["HX-Request"] = "true"
    return client.post(path, data or {}, headers=headers)


def text(response: Any) -> str:
    return response.content.decode()


def make_pipeline(name: str, layer: str) -> Pipeline:
    env = Environment.objects.get_or_create(name="prod", defaults={"protected": True})[0]
    return Pipeline.objects.create(name=name, layer=layer, environment=env)


def make_incident(n: int = 0, *, pipeline: Pipeline | None = None, targets: list[Any] = (), **over: Any) -> Incident:  # type: ignore[assignment]
    fields: dict[str, Any] = {
        "title": f"data_ingestion_bronze.ingest_orders failed (run r{n})",
        "severity": Incident.Severity.HIGH,
        "fingerprint": f"airflow:data_ingestion_bronze:ingest_orders:r{n}:{uuid.uuid4().hex[:6]}",
        "alert_type": "airflow.task_failed",
        "source": "airflow",
        "summary": "FileNotFoundError: gs://retail-landing/orders/2026-11-20/orders.csv not found",
        "details": {
            "dag_id": "data_ingestion_bronze",
            "task_id": "ingest_orders",
            "run_id": f"r{n}",
            "try_number": 1,
            "log_url": "http://127.0.0.1:8080/dags/data_ingestion_bronze/runs/x/tasks/ingest_orders",
            "log_excerpt": LOG,
        },
        "pipeline": pipeline,
        "alert_count": 1,
        "last_alert_at": timezone.now(),
    } | over
    incident = Incident.objects.create(**fields)
    incident.targets.set(list(targets))
    IncidentEvent.objects.create(
        incident=incident, kind="alert", message=f"{fields['title']}: FileNotFoundError", actor_name="system"
    )
    return incident


def incident_export_markdown(*, incident_id: int) -> str:
    """The whole post-incident record, as the download's pieces joined."""
    return "".join(incident_export(incident_id=incident_id))


def counts() -> tuple[int, int, list[str]]:
    return (
        IncidentEvent.objects.count(),
        AuditEvent.objects.filter(object_type="incidents.incident").count(),
        list(Incident.objects.order_by("pk").values_list("status", flat=True)),
    )


def request_for(incident: Incident, actor: Any, target: str = PROD_MART, reason: str = "mart stale") -> ActionRun:
    with change_context(channel=Channel.WEB, user=actor):
        return action_services.action_request(
            actor=actor, verb="refresh-mart", target_key=target, params={}, reason=reason, incident=incident
        ).action


def make_runbook_run(incident: Incident, actor: Any, action: ActionRun | None = None) -> RunbookRun:
    runbook = Runbook.objects.create(slug="001-failed-ingestion", title="Failed ingestion task")
    version = RunbookVersion.objects.create(
        runbook=runbook,
        version=1,
        digest="0" * 64,
        definition={
            "id": "001-failed-ingestion",
            "title": "Failed ingestion task",
            "applies_to": {"alert_types": ["airflow.task_failed"]},
            "steps": [{"id": "look", "kind": "manual"}, {"id": "fresh", "kind": "check"}],
        },
    )
    Runbook.objects.filter(pk=runbook.pk).update(latest=version)
    run = RunbookRun.objects.create(
        runbook_version=version, incident=incident, started_by=actor, channel="web", state="waiting", current=2
    )
    now = timezone.now()
    StepRun.objects.create(
        run=run, index=0, step_id="look", kind="manual", state="done", result={"choice": "file is missing"},
        actor=actor, actor_name=actor.username, started_at=now, finished_at=now,
    )  # fmt: skip
    StepRun.objects.create(
        run=run, index=1, step_id="fresh", kind="check", state="failed",
        result={"passed": False, "summary": "core.weather is stale: last load 30 h ago"}, error="SLA exceeded",
        actor_name="control plane", started_at=now, finished_at=now, action=action,
    )  # fmt: skip
    return run


# ------------------------------------------------------------------------------------------ services


def test_lifecycle_acknowledge_mitigate_resolve_writes_timeline_and_audit(actors: Any) -> None:
    incident = make_incident()
    rita = actors["responder"]
    with change_context(channel=Channel.WEB, user=rita):
        services.incident_acknowledge(actor=rita, incident_id=incident.pk, note="looking at the landing bucket")
        services.incident_mitigate(actor=rita, incident_id=incident.pk)
        services.incident_resolve(actor=rita, incident_id=incident.pk, note="file re-delivered, task cleared")
    incident.refresh_from_db()
    assert incident.status == "resolved"
    ack, mitigated, resolved = incident.acknowledged_at, incident.mitigated_at, incident.resolved_at
    assert ack is not None and mitigated is not None and resolved is not None
    assert ack <= mitigated <= resolved
    moves = list(IncidentEvent.objects.filter(incident=incident, kind="status").order_by("id"))
    assert [(e.data["from"], e.data["to"]) for e in moves] == [
        ("triggered", "acknowledged"),
        ("acknowledged", "mitigated"),
        ("mitigated", "resolved"),
    ]
    assert all(e.actor == rita and e.actor_name == "rita" for e in moves)
    assert moves[0].message == "rita changed the status from triggered to acknowledged: looking at the landing bucket"
    audits = list(
        AuditEvent.objects.filter(object_type="incidents.incident", object_id=str(incident.pk)).order_by("seq")
    )
    assert [a.event for a in audits] == ["incident.acknowledged", "incident.mitigated", "incident.resolved"]
    assert audits[0].actor_name == "rita" and audits[0].channel == "web"
    assert audits[0].before == {"status": "triggered"} and (audits[0].after or {})["status"] == "acknowledged"
    assert audits[2].reason == "file re-delivered, task cleared"


@pytest.mark.parametrize("start", ["triggered", "acknowledged", "mitigated"])
def test_resolve_is_allowed_from_any_open_status(actors: Any, start: str) -> None:
    incident = make_incident(status=start)
    services.incident_resolve(actor=actors["responder"], incident_id=incident.pk)
    incident.refresh_from_db()
    assert incident.status == "resolved" and incident.resolved_at is not None


@pytest.mark.parametrize(
    ("start", "move", "message"),
    [
        ("triggered", "incident_mitigate", "only a acknowledged incident can be moved to mitigated"),
        ("acknowledged", "incident_acknowledge", "is already acknowledged"),
        ("mitigated", "incident_acknowledge", "only a triggered incident"),
        ("resolved", "incident_resolve", "already resolved"),
        ("resolved", "incident_acknowledge", "already resolved"),
    ],
)
def test_a_jump_the_lifecycle_does_not_allow_is_refused_and_writes_nothing(
    actors: Any, start: str, move: str, message: str
) -> None:
    incident = make_incident(status=start)
    before = counts()
    with pytest.raises(Conflict) as refused:
        getattr(services, move)(actor=actors["admin"], incident_id=incident.pk)
    assert message in refused.value.message and f"INC-{incident.pk}" in refused.value.message
    assert counts() == before


def test_viewer_may_not_change_status_or_comment(actors: Any) -> None:
    incident = make_incident()
    before = counts()
    calls: list[tuple[Any, dict[str, str]]] = [
        (services.incident_acknowledge, {}),
        (services.incident_resolve, {}),
        (services.incident_comment, {"text": "hello"}),
    ]
    for call, kwargs in calls:
        with pytest.raises(PolicyError) as refused:
            call(actor=actors["viewer"], incident_id=incident.pk, **kwargs)
        assert "needs the responder role or higher; you have viewer" in refused.value.message
    with pytest.raises(PolicyError):
        services.incident_acknowledge(actor=actors["nobody"], incident_id=incident.pk)
    assert counts() == before


def test_comment_is_markdown_on_the_timeline_with_an_audit_event(actors: Any) -> None:
    incident = make_incident(status="resolved")  # findings often come after the fix
    event = services.incident_comment(
        actor=actors["responder2"], incident_id=incident.pk, text="  **root cause**: x \n"
    )
    assert event.kind == "comment" and event.message == "**root cause**: x" and event.actor_name == "rob"
    audit = AuditEvent.objects.get(event="incident.commented")
    assert audit.after == {"comment": "**root cause**: x", "event_id": event.pk}


@pytest.mark.parametrize(
    ("body", "message"),
    [("", "the comment is empty"), ("   \n ", "the comment is empty"), ("x" * 10_001, "at most 10000")],
)
def test_empty_or_too_long_comment_is_refused_and_writes_nothing(actors: Any, body: str, message: str) -> None:
    incident = make_incident()
    before = counts()
    with pytest.raises(InvalidInput) as refused:
        services.incident_comment(actor=actors["responder"], incident_id=incident.pk, text=body)
    assert message in refused.value.message
    assert counts() == before


def test_status_note_too_long_and_unknown_incident_are_refused(actors: Any) -> None:
    incident = make_incident()
    before = counts()
    with pytest.raises(InvalidInput):
        services.incident_acknowledge(actor=actors["responder"], incident_id=incident.pk, note="n" * 2001)
    with pytest.raises(NotFound):
        services.incident_acknowledge(actor=actors["responder"], incident_id=incident.pk + 1000)
    assert counts() == before


# ------------------------------------------------------------------------------------------ list page


def test_list_shows_open_incidents_by_default_and_filters(actors: Any) -> None:
    bronze = make_pipeline("data_ingestion_bronze", "bronze")
    mart = make_pipeline("weather_mart", "mart")
    open_high = make_incident(1, pipeline=bronze, title="orders load failed")
    make_incident(2, pipeline=mart, title="mart is stale", severity="medium", status="acknowledged")
    make_incident(3, pipeline=bronze, title="old resolved failure", status="resolved")
    old = make_incident(4, pipeline=mart, title="last month's failure", severity="low")
    Incident.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=20))
    client = client_for(actors["viewer"])

    page = text(client.get("/incidents/"))
    assert "orders load failed" in page and "mart is stale" in page and "last month" in page
    assert "old resolved failure" not in page
    assert f"INC-{open_high.pk}" in page and f'href="/incidents/{open_high.pk}/"' in page
    assert '<span class="badge sev sev-high" title="severity">high</span>' in page
    assert '<option value="data_ingestion_bronze">' in page  # the pipeline picker

    def titles(**params: str) -> set[str]:
        body = text(client.get("/incidents/", params, headers={"HX-Request": "true"}))
        return {t for t in ("orders load", "mart is stale", "old resolved", "last month") if t in body}

    assert titles(status="all") == {"orders load", "mart is stale", "old resolved", "last month"}
    assert titles(status="resolved") == {"old resolved"}
    assert titles(status="acknowledged") == {"mart is stale"}
    assert titles(severity="medium") == {"mart is stale"}
    assert titles(pipeline="data_ingestion_bronze", status="all") == {"orders load", "old resolved"}
    assert titles(age="7d") == {"orders load", "mart is stale"}
    assert titles(age="30d") == {"orders load", "mart is stale", "last month"}
    bad = client.get("/incidents/", {"status": "on-fire"})
    assert bad.status_code == 200 and "unknown status &#x27;on-fire&#x27;" in text(bad)
    assert "unknown age" in text(client.get("/incidents/", {"age": "1y"}))


def test_list_partial_for_htmx_and_pagination(actors: Any) -> None:
    for i in range(55):
        make_incident(i)
    client = client_for(actors["viewer"])
    partial = client.get("/incidents/", headers={"HX-Request": "true"})
    assert "HX-Request" in partial["Vary"]
    body = text(partial)
    assert body.lstrip().startswith('<div id="incidents-results"') and "<html" not in body
    assert body.count('<td class="mono nowrap">INC-') == 50 and "page 1 of 2" in body
    older = re.search(r'href="([^"]*)"[^>]*>Older', body)  # keyset pages: follow the cursor link
    assert older is not None
    assert text(client.get("/incidents/" + html.unescape(older.group(1)))).count('<td class="mono nowrap">INC-') == 5


def test_list_queries_do_not_grow_with_rows(actors: Any, django_assert_max_num_queries: Any) -> None:
    pipeline = make_pipeline("data_ingestion_bronze", "bronze")
    client = client_for(actors["viewer"])
    for i in range(5):
        make_incident(i, pipeline=pipeline)
    with django_assert_max_num_queries(10) as few:
        assert client.get("/incidents/").status_code == 200
    for i in range(5, 50):
        make_incident(i, pipeline=pipeline)
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get("/incidents/")
    assert text(page).count('<td class="mono nowrap">INC-') == 50
    print(f"incident list: {len(few.captured_queries)} queries for 5 rows and for 50")


# ------------------------------------------------------------------------------------------ detail page


def test_detail_shows_header_alert_log_timeline_actions_and_runbooks(catalog: Any, actors: Any) -> None:
    pipeline = make_pipeline("data_ingestion_bronze", "bronze")
    incident = make_incident(pipeline=pipeline, targets=[catalog["mart_prod"]])
    action = request_for(incident, actors["responder"])
    services.incident_comment(actor=actors["responder"], incident_id=incident.pk, text="<script>x()</script> *seen*")
    make_runbook_run(incident, actors["responder"])
    page = client_for(actors["responder"]).get(f"/incidents/{incident.pk}/")
    assert page.status_code == 200
    body = text(page)
    assert incident.title in body and "data_ingestion_bronze" in body
    assert f'<a href="/targets/{PROD_MART}/">{PROD_MART}</a>' in body
    assert '<pre class="log-excerpt"' in body and "ERROR - FileNotFoundError: orders.csv" in body
    # Timeline: the alert, the action request (linked), the comment rendered as markdown, escaped.
    assert body.index("FileNotFoundError</div>") < body.index("rita requested refresh-mart")
    assert f'href="/actions/{action.id}/"' in body
    assert "&lt;script&gt;x()&lt;/script&gt; <em>seen</em>" in body and "<script>x()" not in body
    # Runbooks section from the runbooks app's partial: the run and the suggestion.
    assert 'id="runbooks-h"' in body and f'href="/runs/{RunbookRun.objects.get().pk}/"' in body
    assert "Start Failed ingestion task" in body
    # Buttons for what the lifecycle allows next, and the export link.
    assert ">Acknowledge</button>" in body and ">Resolve</button>" in body and ">Mitigate</button>" not in body
    assert f'href="/incidents/{incident.pk}/export.md"' in body
    assert 'name="text"' in body and '<label for="comment-text">' in body


def test_viewer_sees_no_buttons_and_no_comment_form(actors: Any) -> None:
    incident = make_incident()
    body = text(client_for(actors["viewer"]).get(f"/incidents/{incident.pk}/"))
    assert "Acknowledge</button>" not in body and 'name="text"' not in body
    assert "needs the responder role" in body


def test_unknown_incident_is_404(actors: Any) -> None:
    client = client_for(actors["viewer"])
    assert client.get("/incidents/999999/").status_code == 404
    assert client.get("/incidents/999999/export.md").status_code == 404


def test_htmx_acknowledge_swaps_the_body_and_offers_the_next_steps(actors: Any) -> None:
    incident = make_incident()
    client = client_for(actors["responder"])
    resp = post(client, f"/incidents/{incident.pk}/acknowledge/", {"note": "on it"}, htmx=True)
    assert resp.status_code == 200
    body = text(resp)
    assert body.lstrip().startswith('<div id="incident-body">') and "<html" not in body
    assert f"INC-{incident.pk} is acknowledged now." in body
    assert ">Mitigate</button>" in body and ">Acknowledge</button>" not in body
    assert "rita changed the status from triggered to acknowledged: on it" in body
    incident.refresh_from_db()
    assert incident.status == "acknowledged"


def test_plain_form_posts_redirect_and_refusals_show_the_reason(actors: Any) -> None:
    incident = make_incident()
    client = client_for(actors["responder"])
    resp = post(client, f"/incidents/{incident.pk}/resolve/")
    assert resp.status_code == 302 and resp["Location"] == f"/incidents/{incident.pk}/"
    refused = post(client, f"/incidents/{incident.pk}/mitigate/", htmx=True)
    assert refused.status_code == 409 and "already resolved" in text(refused)
    assert Incident.objects.get().status == "resolved"


def test_viewer_forced_posts_are_refused_with_the_policy_message(actors: Any) -> None:
    incident = make_incident()
    client = client_for(actors["viewer"])
    before = counts()
    ack = post(client, f"/incidents/{incident.pk}/acknowledge/", htmx=True)
    assert ack.status_code == 403 and "needs the responder role" in text(ack)
    comment = post(client, f"/incidents/{incident.pk}/comments/", {"text": "hi"})
    assert comment.status_code == 403
    assert counts() == before


def test_posts_without_csrf_token_are_403(actors: Any) -> None:
    incident = make_incident()
    client = client_for(actors["responder"])
    assert client.post(f"/incidents/{incident.pk}/acknowledge/").status_code == 403
    assert client.post(f"/incidents/{incident.pk}/comments/", {"text": "x"}).status_code == 403
    assert Incident.objects.get().status == "triggered"


def test_comment_through_the_page_and_an_empty_one_keeps_the_form(actors: Any) -> None:
    incident = make_incident()
    client = client_for(actors["responder"])
    ok = post(
        client, f"/incidents/{incident.pk}/comments/", {"text": "checked the bucket: `orders.csv` missing"}, htmx=True
    )
    assert ok.status_code == 200 and "checked the bucket: <code>orders.csv</code> missing" in text(ok)
    empty = post(client, f"/incidents/{incident.pk}/comments/", {"text": "  "}, htmx=True)
    assert empty.status_code == 400 and "the comment is empty" in text(empty)
    long = "y" * 10_001
    too_long = post(client, f"/incidents/{incident.pk}/comments/", {"text": long}, htmx=True)
    assert too_long.status_code == 400 and long in text(too_long)  # what was typed is kept
    assert IncidentEvent.objects.filter(kind="comment").count() == 1


def test_export_is_a_markdown_download(actors: Any) -> None:
    incident = make_incident()
    resp = client_for(actors["viewer"]).get(f"/incidents/{incident.pk}/export.md")
    assert resp.status_code == 200
    assert resp["Content-Type"] == "text/markdown; charset=utf-8"
    assert resp["Content-Disposition"] == f'attachment; filename="INC-{incident.pk}.md"'
    assert resp.getvalue().decode().startswith(f"# INC-{incident.pk}: {incident.title}")


def test_export_streams_every_entry_of_a_long_timeline_and_shows_alert_text_as_text(
    actors: Any, django_assert_max_num_queries: Any
) -> None:
    from controlplane.incidents.export import TIMELINE_CHUNK

    incident = make_incident(summary="boom ![x](http://evil.example/x.png)")
    IncidentEvent.objects.create(incident=incident, kind="alert", message="repeated: ![y](http://evil.example/y.png)")
    IncidentEvent.objects.bulk_create(
        IncidentEvent(incident=incident, kind="comment", message=f"note {i}", actor_name="rita")
        for i in range(TIMELINE_CHUNK * 2 + 5)
    )
    resp = client_for(actors["viewer"]).get(f"/incidents/{incident.pk}/export.md")
    with django_assert_max_num_queries(12):
        md = resp.getvalue().decode()
    assert md.count("**comment** · rita: note ") == TIMELINE_CHUNK * 2 + 5
    assert md.index("note 0\n") < md.index(f"note {TIMELINE_CHUNK * 2 + 4}\n")
    assert "```text\nboom ![x](http://evil.example/x.png)\n```" in md  # the error, fenced
    assert "repeated: !\\[y\\](http://evil.example/y.png)" in md  # the alert entry, escaped


def _bulk_history(incident: Incident, catalog: Any, actors: Any, n: int) -> None:
    """n timeline entries of each kind, n finished actions with an approval each, n runbook steps."""
    IncidentEvent.objects.bulk_create(
        IncidentEvent(incident=incident, kind=kind, message=f"{kind} {i}", actor_name="rita", data=data)
        for i in range(n)
        for kind, data in (("comment", {}), ("status", {"from": "a", "to": "b"}), ("step", {}))
    )
    runs = ActionRun.objects.bulk_create(
        ActionRun(
            verb="refresh-mart",
            target=catalog["mart_prod"],
            environment=catalog["prod"],
            reason=f"row {i}",
            channel="web",
            requested_by=actors["responder"],
            request_fingerprint=f"fp{uuid.uuid4().hex}",
            state=ActionState.SUCCEEDED,
            requires_approval=True,
            verification={"ok": True, "summary": f"populated {i}"},
            incident=incident,
        )
        for i in range(n)
    )
    Approval.objects.bulk_create(
        Approval(action=a, approver=actors["approver"], decision="approved", channel="web") for a in runs
    )
    IncidentEvent.objects.bulk_create(
        IncidentEvent(incident=incident, kind="action", message="done", data={"action": str(a.id)}) for a in runs
    )


def test_detail_queries_do_not_grow_with_timeline_and_actions(
    catalog: Any, actors: Any, django_assert_max_num_queries: Any
) -> None:
    incident = make_incident(targets=[catalog["mart_prod"], catalog["mart_dev"]])
    make_runbook_run(incident, actors["responder"])
    client = client_for(actors["responder"])
    _bulk_history(incident, catalog, actors, 5)
    with django_assert_max_num_queries(20) as few:
        assert client.get(f"/incidents/{incident.pk}/").status_code == 200
    _bulk_history(incident, catalog, actors, 50)
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get(f"/incidents/{incident.pk}/")
    assert text(page).count('<li class="tl tl-') == 50  # a page of the timeline; the rest a link away
    assert text(page).count("decision-approved") == 50  # the newest 50 actions are listed, the rest linked
    assert f'href="/actions/?incident={incident.pk}">All 55 actions' in text(page)
    print(f"incident page: {len(few.captured_queries)} queries for 5 and for 50 of each")


def test_detail_pages_the_timeline_newest_first_without_javascript(
    actors: Any, django_assert_max_num_queries: Any
) -> None:
    incident = make_incident()
    IncidentEvent.objects.bulk_create(
        IncidentEvent(incident=incident, kind="comment", message=f"note {i}", actor_name="rita") for i in range(120)
    )
    client = client_for(actors["viewer"])
    seen: list[str] = []
    url: str | None = f"/incidents/{incident.pk}/"
    while url:
        body = text(client.get(url))
        notes = re.findall(r"<p>(note \d+)</p>", body)
        assert len(notes) <= 50 and notes == sorted(notes, key=lambda n: int(n.split()[1]))  # oldest first
        seen = notes + seen
        older = re.search(r'href="(\?cursor=[^"]+)"[^>]*>Older', body)
        url = f"/incidents/{incident.pk}/{html.unescape(older.group(1))}" if older else None
    assert seen == [f"note {i}" for i in range(120)]
    assert "121 in all" in body
    # ?timeline=all no longer reads every entry.
    assert text(client.get(f"/incidents/{incident.pk}/", {"timeline": "all"})).count('<li class="tl tl-') == 50
    # htmx gets the body partial with the same page.
    partial = client.get(url or f"/incidents/{incident.pk}/", headers={"HX-Request": "true"})
    assert text(partial).startswith('\n<div id="incident-body">') or '<div id="incident-body">' in text(partial)[:200]


def test_markdown_renders_no_remote_images_and_safe_links_only(actors: Any) -> None:
    from controlplane.web.templatetags.web_ui import markdown

    out = markdown(
        "![x](http://evil.example/x.png) ![y][r] [ok](https://docs.example/a) [js](javascript:alert(1))"
        " [rel](//evil.example/p) [here](/incidents/1/)\n\n[r]: http://evil.example/y.png"
    )
    assert "<img" not in out
    assert '<a href="https://docs.example/a" rel="nofollow noopener noreferrer">ok</a>' in out
    assert "javascript:" not in out.replace("[js](javascript:alert(1))", "")
    assert 'href="//evil.example' not in out
    assert '<a href="/incidents/1/" rel="nofollow noopener noreferrer">here</a>' in out
    # The same on the page, for a comment.
    incident = make_incident()
    services.incident_comment(
        actor=actors["responder"], incident_id=incident.pk, text="![t](http://evil.example/t.png)"
    )
    body = text(client_for(actors["viewer"]).get(f"/incidents/{incident.pk}/"))
    assert "<img" not in body and 'href="http://evil.example/t.png" rel="nofollow noopener noreferrer"' in body


def test_page_links_the_task_log_only_on_the_catalog_airflow(actors: Any) -> None:
    from controlplane.catalog.models import Connection, Target

    env = Environment.objects.create(name="dev", protected=False)
    conn = Connection.objects.create(
        name="airflow-dev", kind="airflow", environment=env, config={"base_url": "http://127.0.0.1:8080"}
    )
    dag = Target.objects.create(
        key="dev.airflow.data_ingestion_bronze",
        kind="dag",
        connection=conn,
        locator={"dag_id": "data_ingestion_bronze"},
    )
    own = make_incident(targets=[dag])
    foreign = make_incident(1, targets=[dag])
    Incident.objects.filter(pk=foreign.pk).update(details={"log_url": "http://evil.example/x"})
    client = client_for(actors["viewer"])
    assert 'href="http://127.0.0.1:8080/dags/data_ingestion_bronze' in text(client.get(f"/incidents/{own.pk}/"))
    body = text(client.get(f"/incidents/{foreign.pk}/"))
    assert "evil.example" not in body and "open the task log" not in body
    assert "evil.example" not in incident_export_markdown(incident_id=foreign.pk)


# ------------------------------------------------------------------------------------------ export


def test_export_has_times_alert_timeline_actions_approvals_and_runbook_steps(
    catalog: Any, actors: Any, django_assert_max_num_queries: Any
) -> None:
    pipeline = make_pipeline("data_ingestion_bronze", "bronze")
    incident = make_incident(pipeline=pipeline, targets=[catalog["mart_prod"]])
    rita, alice = actors["responder"], actors["approver"]
    with change_context(channel=Channel.WEB, user=rita):
        services.incident_acknowledge(actor=rita, incident_id=incident.pk)
    approved = request_for(incident, rita)
    with change_context(channel=Channel.WEB, user=alice):
        action_services.action_approve(actor=alice, action_id=approved.id, comment="go ahead")
    ActionRun.objects.filter(pk=approved.pk).update(
        state="succeeded",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        outcome={"summary": "refreshed mart.daily_weather_aggregates"},
        verification={"ok": True, "summary": "populated, 14 rows"},
    )
    rejected = request_for(incident, rita, reason="second try")
    with change_context(channel=Channel.WEB, user=actors["approver2"]):
        action_services.action_reject(actor=actors["approver2"], action_id=rejected.id, comment="not needed twice")
    make_runbook_run(incident, rita, action=approved)
    with change_context(channel=Channel.WEB, user=rita):
        services.incident_comment(actor=rita, incident_id=incident.pk, text="root cause: late file\nsecond line")
        services.incident_mitigate(actor=rita, incident_id=incident.pk)
        services.incident_resolve(actor=rita, incident_id=incident.pk, note="fixed")

    with django_assert_max_num_queries(8):
        md = incident_export_markdown(incident_id=incident.pk)
    assert md.startswith(f"# INC-{incident.pk}: {incident.title}\n")
    assert "| Severity | high |" in md and "| Status | resolved |" in md
    assert "| Affected pipeline | `data_ingestion_bronze` (bronze) |" in md
    assert f"| Affected targets | `{PROD_MART}` |" in md
    for label in ("Opened", "Acknowledged", "Mitigated", "Resolved"):
        assert f"- {label}: 20" in md
    assert "**Time to resolve: " in md
    assert "FileNotFoundError: gs://retail-landing" in md
    assert "```text\n" + LOG + "\n```" in md
    # The full timeline, oldest first, multi-line messages indented.
    assert md.index("**alert** · system") < md.index("**status** · rita: rita changed the status from triggered")
    assert "**comment** · rita: root cause: late file\n  second line" in md
    assert f"rita requested refresh-mart on {PROD_MART}" in md
    # The action with who requested, who approved, and how it was verified.
    assert f"### 1. `refresh-mart` on `{PROD_MART}`: succeeded" in md
    assert f"- Action: `{approved.id}` in prod" in md
    assert "- Requested by rita at 20" in md and "via web" in md
    assert "- Approval required: prod is a protected environment" in md
    assert "  - approved by alice at 20" in md and 'via web: "go ahead"' in md
    assert "- Outcome: refreshed mart.daily_weather_aggregates" in md
    assert "- Verification: passed: populated, 14 rows" in md
    assert f"### 2. `refresh-mart` on `{PROD_MART}`: rejected" in md
    assert "  - rejected by arthur at 20" in md and '"not needed twice"' in md
    assert "- Ran: never started (ended 20" in md
    assert "| Alert type | airflow.task_failed from airflow |" in md
    # The runbook run with its steps' results.
    assert "### Failed ingestion task (`001-failed-ingestion` v1): waiting" in md
    assert "| 1 | `look` | manual | done | rita |" in md and "file is missing" in md
    assert "failed; core.weather is stale: last load 30 h ago; error: SLA exceeded" in md
    assert f"(action `{approved.id}`)" in md
    assert "### Root cause" in md and "### Preventive measures" in md


def test_export_of_a_bare_incident_says_what_is_missing(actors: Any) -> None:
    incident = make_incident(details={}, summary="")
    md = incident_export_markdown(incident_id=incident.pk)
    assert "_No log excerpt was fetched._" in md and "_The alert carried no error text._" in md
    assert "_No action was requested for this incident._" in md
    assert "_No runbook was run for this incident._" in md
    assert "Time to resolve: not resolved yet" in md and "- Acknowledged: —" in md


def test_export_fence_survives_backticks_in_the_log(actors: Any) -> None:
    incident = make_incident(details={"log_excerpt": "a ``` b ```` c"})
    assert "`````text\na ``` b ```` c\n`````" in incident_export_markdown(incident_id=incident.pk)


def test_step_result_summary_reads_any_result_shape() -> None:
    assert step_result_summary({"summary": "ok"}) == "ok"
    assert step_result_summary({"passed": True, "summary": "fresh"}) == "passed; fresh"
    assert step_result_summary({"outcome": {"summary": "cleared 2"}}) == "cleared 2"
    assert step_result_summary({"weird": [1, 2]}) == '{"weird": [1, 2]}'
    assert step_result_summary({}, "boom") == "error: boom"
    assert step_result_summary(None) == "—"


# ------------------------------------------------------------------------------------------ dashboard


def test_dashboard_counts_open_incidents_by_severity_with_links(actors: Any) -> None:
    make_incident(1, severity="critical")
    make_incident(2, severity="high")
    make_incident(3, severity="high", status="mitigated")
    make_incident(4, severity="low", status="resolved")
    body = text(client_for(actors["viewer"]).get("/"))
    assert 'href="/incidents/?severity=critical"' in body
    assert '<a class="tile sev-high" href="/incidents/?severity=high">\n          <span class="tile-n">2</span>' in body
    assert (
        '<a class="tile sev-low zero" href="/incidents/?severity=low">\n          <span class="tile-n">0</span>' in body
    )
    assert '<span class="tile-n">3</span><span class="tile-label">all open</span>' in body
    assert '<a href="/incidents/" >Incidents</a>' in body or 'href="/incidents/" >Incidents' in body
    assert 'hx-get="/freshness/"' in body


def test_dashboard_lists_approvals_waiting_for_me_not_my_own(catalog: Any, actors: Any) -> None:
    incident = make_incident()
    action = request_for(incident, actors["approver2"])  # an approver's own request in prod
    mine = text(client_for(actors["approver2"]).get("/"))
    theirs = text(client_for(actors["approver"]).get("/"))
    link = f'href="/actions/{action.id}/"'
    assert "Nothing waits for your decision." in mine
    assert link in theirs and "Awaiting my approval" in theirs


def test_dashboard_queries_stay_within_the_existing_budget(
    catalog: Any, actors: Any, django_assert_max_num_queries: Any
) -> None:
    for i in range(30):
        make_incident(i, severity=["low", "medium", "high", "critical"][i % 4])
    client = client_for(actors["approver"])
    with django_assert_max_num_queries(12) as captured:
        assert client.get("/").status_code == 200
    print(f"dashboard: {len(captured.captured_queries)} queries")


def test_freshness_shows_hours_and_the_error_of_an_unreachable_warehouse(catalog: Any, actors: Any) -> None:
    from controlplane.catalog import services as cs

    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        down = cs.connection_create(
            name="weather-down",
            kind="postgres",
            environment=catalog["dev"],
            config={"host": "127.0.0.1", "port": 1, "dbname": "weather", "user": "nobody", "connect_timeout_s": 2},
            secret_refs={},
        )
        cs.target_create(
            key="dev.down.core_weather",
            kind="table",
            connection=down,
            locator={"schema": "core", "name": "weather", "timestamp_column": "observed_at"},
        )
        cs.target_create(  # no timestamp column: not on the freshness list
            key="dev.weather.other",
            kind="table",
            connection=catalog["conn_dev"],
            locator={"schema": "core", "name": "x"},
        )
    client = client_for(actors["viewer"])
    assert client.get("/").status_code == 200  # the dashboard itself never waits for the warehouse
    resp = client.get("/freshness/", headers={"HX-Request": "true"})
    assert resp.status_code == 200 and "<html" not in text(resp)
    body = text(resp)
    rows = body.split("<tr class=")[1:]
    assert len(rows) == 3  # dev and prod core_weather, and the unreachable one
    down_row = next(r for r in rows if "dev.down.core_weather" in r)
    assert down_row.startswith('"fresh-error"') and "Postgres 127.0.0.1:1/weather" in down_row
    assert "unknown" in down_row
    ok_row = next(r for r in rows if "dev.weather.core_weather" in r)
    assert '"fresh-error"' not in ok_row and " h</td>" in ok_row and "core.weather is" in ok_row
    assert "dev.weather.other" not in body
    full = client.get("/freshness/")
    assert full.status_code == 200 and "<h1>Pipeline freshness</h1>" in text(full)


# ------------------------------------------------------------------------------------------ linking actions


def test_an_action_requested_from_the_incident_page_is_linked_to_the_incident(catalog: Any, actors: Any) -> None:
    incident = make_incident(targets=[catalog["mart_dev"]])
    client = client_for(actors["responder"])
    detail = text(client.get(f"/incidents/{incident.pk}/"))
    link = f'href="/targets/{DEV_MART}/?incident={incident.pk}#verb-refresh-mart"'
    assert link in detail  # "Actions that fit" opens the target page for this incident
    target_page = text(client.get(f"/targets/{DEV_MART}/", {"incident": incident.pk}))
    assert f'<input type="hidden" name="incident" value="{incident.pk}">' in target_page
    assert f'linked to <a href="/incidents/{incident.pk}/">INC-{incident.pk}' in target_page
    resp = post(
        client,
        f"/targets/{DEV_MART}/verbs/refresh-mart/request/",
        {"reason": "mart stale after the failed load", "incident": str(incident.pk)},
        htmx=True,
    )
    assert resp.status_code == 204, text(resp)
    action = ActionRun.objects.get()
    assert action.incident_id == incident.pk
    detail = text(client.get(f"/incidents/{incident.pk}/"))
    assert f'<a class="mono" href="/actions/{action.id}/">{action.short_id}</a>' in detail
    assert f"rita requested refresh-mart on {DEV_MART}" in detail


def test_a_request_naming_an_unknown_incident_is_refused(catalog: Any, actors: Any) -> None:
    client = client_for(actors["responder"])
    resp = post(
        client, f"/targets/{DEV_MART}/verbs/refresh-mart/request/", {"reason": "r", "incident": "999999"}, htmx=True
    )
    assert resp.status_code == 404 and "no incident 999999" in text(resp)
    assert not ActionRun.objects.exists()


def test_runbook_step_entries_link_to_their_run(actors: Any) -> None:
    incident = make_incident()
    run = make_runbook_run(incident, actors["responder"])
    IncidentEvent.objects.create(
        incident=incident, kind="step", message="step look done", actor_name="rita", data={"run": run.pk}
    )
    body = text(client_for(actors["viewer"]).get(f"/incidents/{incident.pk}/"))
    assert f'href="/runs/{run.pk}/">runbook run {run.pk} →</a>' in body


# ------------------------------------------------------------------------------------------ browser


@pytest.mark.browser
def test_keyboard_acknowledges_comments_and_sees_freshness_in_a_real_browser(
    live_server: Any, catalog: Any, actors: Any
) -> None:
    """Real buttons and labelled fields, driven by the keyboard only; htmx sends the CSRF token."""
    import os

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread
    from playwright.sync_api import expect

    from tests.test_browser import playwright

    incident = make_incident(targets=[catalog["mart_dev"]])
    base = live_server.url
    with playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{base}/login/")
            page.get_by_label("Username").fill("rita")
            page.get_by_label("Password").fill("rita-password")
            page.keyboard.press("Enter")
            page.wait_for_url(f"{base}/")
            expect(page.locator("#freshness")).to_contain_text("dev.weather.core_weather")  # loaded after the page
            page.get_by_role("link", name="Incidents").focus()
            page.keyboard.press("Enter")
            page.wait_for_url(f"{base}/incidents/")
            page.get_by_role("link", name=incident.title).focus()
            page.keyboard.press("Enter")
            page.wait_for_url(f"{base}/incidents/{incident.pk}/")

            page.get_by_label("Note").focus()
            page.keyboard.type("looking at it")
            page.keyboard.press("Tab")  # the first button after the note: Acknowledge
            page.keyboard.press("Enter")
            expect(page.locator("#incident-messages")).to_contain_text(f"INC-{incident.pk} is acknowledged now.")
            expect(page.locator("#incident-messages .alert")).to_be_focused()  # not lost to the top of the page
            expect(page.get_by_role("button", name="Mitigate")).to_be_visible()

            page.get_by_label("Add a comment").focus()
            page.keyboard.type("the **landing file** is late")
            page.keyboard.press("Tab")
            page.keyboard.press("Enter")
            expect(page.locator("ol.timeline")).to_contain_text("the landing file is late")
            expect(page.locator("ol.timeline strong")).to_have_text("landing file")
            page.get_by_label("Add a comment").focus()
            page.keyboard.press("Tab")
            page.keyboard.press("Enter")  # empty: the browser's own required check stops it, nothing is sent
            page.wait_for_timeout(300)
            expect(page.locator(".alert.error")).to_have_count(0)
            shots = Path(os.environ.get("SCREENSHOT_DIR", "var/screenshots"))
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "incident-page.png"), full_page=True)
            page.goto(f"{base}/")
            expect(page.locator("#freshness")).to_contain_text("dev.weather.core_weather")
            page.screenshot(path=str(shots / "dashboard-incidents.png"), full_page=True)
        finally:
            browser.close()
    incident.refresh_from_db()
    assert incident.status == "acknowledged"
    assert IncidentEvent.objects.filter(kind="comment", actor_name="rita").count() == 1
