"""The weekly quarantine review pages (controlplane/quarantine/views.py) over a real source on local disk
and the real database: the reviews list with status and schedule, the review page (heat map coloured
against the threshold, trend lines read from the files, reasons with growth and new ones marked), the
sample as an htmx partial, a page of its own and CSV (key columns first), the record as markdown,
dispositions through the one request path, and the refusals (no role, viewer, CSRF, bad input: nothing
written)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.actions.models import ActionRun
from controlplane.incidents.models import Incident
from controlplane.quarantine.models import Disposition, QuarantineReview
from controlplane.quarantine.services import review_markdown
from controlplane.quarantine.views import csv_safe
from tests.quarantine_qweb import (
    DUPLICATE,
    FUTURE_DATE,
    NULL_CUSTOMER,
    OVER_DAY,
    WEEK_END,
    make_review,
    quarantine_source,
    write_source,
)

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def post(client: Client, path: str, data: dict[str, Any], *, htmx: bool = False) -> Any:
    """POST as the page does: the csrftoken cookie from a page load, sent back as X-CSRFToken."""
    if "csrftoken" not in client.cookies:
        assert client.get("/quarantine/").status_code == 200
    headers = {"X-CSRFToken": client.cookies["csrftoken"].value}
    if htmx:
        headers["HX-Request"] = "true"
    return client.post(path, data, headers=headers)


def text(response: Any) -> str:
    return response.content.decode()


@pytest.fixture
def source(tmp_path: Path) -> Any:
    write_source(tmp_path)
    return quarantine_source(tmp_path)


@pytest.fixture
def review(source: Any) -> QuarantineReview:
    return make_review(source)


def item_of(review: QuarantineReview, reason: str) -> Any:
    return review.items.get(reason=reason)


def cell(page: str, table: str, day: str) -> str:
    match = re.search(rf'<g class="hm-cell"[^>]*data-table="{table}" data-date="{day}"[^>]*>.*?</g>', page)
    assert match, f"no heat map cell {table} {day}"
    return match.group(0)


# ------------------------------------------------------------------------------------------ list


def test_reviews_listed_newest_first_per_source_with_status_and_schedule(
    tmp_path: Path, source: Any, actors: dict[str, Any]
) -> None:
    older = make_review(source, week_end=date_before(WEEK_END, 7))
    newer = make_review(source)
    other = make_review(quarantine_source(tmp_path / "other", key="dev.silver2.quarantine"))
    page = text(client_for(actors["viewer"]).get("/quarantine/"))
    assert page.index(f"/quarantine/{newer.pk}/") < page.index(f"/quarantine/{older.pk}/")
    assert page.index("dev.silver.quarantine<") < page.index("dev.silver2.quarantine<")
    assert f"/quarantine/{other.pk}/" in page
    # two items need a decision (over the threshold or new), neither has one yet
    row = re.search(rf'href="/quarantine/{newer.pk}/".*?</tr>', page, re.S)
    assert row and re.findall(r"<td>(\d+)</td>", row.group(0)) == ["2", "2"]
    assert 'class="badge review-open"' in row.group(0)
    assert "Mondays at 06:00 UTC" in page  # the schedule the migration creates
    assert "Requesting a review needs the responder role" in page  # a viewer reads, does not request
    assert 'action="/quarantine/request/"' not in page


def date_before(day: date, days: int) -> date:
    return day - timedelta(days=days)


def test_a_review_with_every_decision_done_is_listed_done(review: QuarantineReview, actors: dict[str, Any]) -> None:
    for reason in (NULL_CUSTOMER, FUTURE_DATE):
        Disposition.objects.create(
            item=item_of(review, reason), kind="escalate", state="done", decided_by=actors["responder"]
        )
    QuarantineReview.objects.filter(pk=review.pk).update(completed_at=timezone.now())
    page = text(client_for(actors["viewer"]).get("/quarantine/"))
    row = re.search(rf'href="/quarantine/{review.pk}/".*?</tr>', page, re.S)
    assert row and re.findall(r"<td>(\d+)</td>", row.group(0)) == ["0", "2"]
    assert 'class="badge review-done"' in row.group(0)
    detail = text(client_for(actors["viewer"]).get(f"/quarantine/{review.pk}/"))
    assert detail.count('data-testid="disposition-status">decided<') == 2


def test_nav_links_the_reviews(actors: dict[str, Any]) -> None:
    page = text(client_for(actors["viewer"]).get("/quarantine/"))
    assert re.search(r'<a href="/quarantine/" aria-current="page">Quarantine</a>', page)


def test_request_review_refuses_bad_week_end_and_writes_nothing(source: Any, actors: dict[str, Any]) -> None:
    client = client_for(actors["responder"])
    response = post(client, "/quarantine/request/", {"target": source.key, "week_end": "last sunday"})
    assert response.status_code == 400
    assert "&#x27;week_end&#x27; must be a date (YYYY-MM-DD)" in text(response)
    assert ActionRun.objects.count() == 0


def test_responder_requests_a_review_and_sees_its_action(source: Any, actors: dict[str, Any]) -> None:
    response = post(client_for(actors["responder"]), "/quarantine/request/", {"target": source.key, "week_end": ""})
    action = ActionRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/actions/{action.id}/"
    assert (action.verb, action.target_id, action.channel) == ("quarantine-review", source.pk, "web")
    page = text(client_for(actors["viewer"]).get("/quarantine/"))
    requested = re.search(r'<li data-testid="review-requested">.*?</li>', page, re.S)
    assert requested and f'href="/actions/{action.id}/"' in requested.group(0)
    assert f"{source.key}, week ending {action.params['week_end']}" in requested.group(0)


def test_viewer_cannot_request_a_review(source: Any, actors: dict[str, Any]) -> None:
    response = post(client_for(actors["viewer"]), "/quarantine/request/", {"target": source.key})
    assert response.status_code == 403
    assert "needs the responder role" in text(response)
    assert ActionRun.objects.count() == 0


# ------------------------------------------------------------------------------------------ review page


def test_heat_map_cells_coloured_against_the_threshold(review: QuarantineReview, actors: dict[str, Any]) -> None:
    response = client_for(actors["viewer"]).get(f"/quarantine/{review.pk}/")
    assert response.status_code == 200
    page = text(response)
    over = cell(page, "orders", OVER_DAY.isoformat())
    assert 'data-level="over"' in over and 'fill="#ffb77c"' in over
    assert "65 quarantined of 1,000 valid, rate 6.50%, over the threshold (5.00%)" in over  # tooltip and label
    under = cell(page, "orders", "2026-11-23")
    assert 'data-level="ok"' in under and "rate 1.00%" in under
    assert 'data-level="empty"' in cell(page, "customers", "2026-11-23")  # no valid rows: no rate
    assert 'data-level="near"' not in cell(page, "customers", "2026-11-24")  # 1% of 100: under half
    assert "over the escalation rate" in page  # the legend, with the source's escalation rate (10%)


def test_trend_line_per_table_from_the_files(review: QuarantineReview, actors: dict[str, Any]) -> None:
    client = client_for(actors["viewer"])
    page = text(client.get(f"/quarantine/{review.pk}/"))
    trends = f"/quarantine/{review.pk}/trends/"
    # read from the source after the page (htmx), or through the same link without JavaScript
    assert f'hx-get="{trends}" hx-trigger="load"' in page and f'<a href="{trends}">' in page
    response = client.get(trends, headers={"HX-Request": "true"})
    assert response.status_code == 200 and "HX-Request" in response["Vary"]
    partial = text(response)
    assert "<html" not in partial
    for table in ("orders", "customers"):
        assert re.search(rf'<svg[^>]*class="chart trend"[^>]*data-table="{table}"', partial)
    trend = re.search(r'<svg[^>]*class="chart trend"[^>]*data-table="orders".*?</svg>', partial, re.S)
    assert trend
    assert 'class="threshold"' in trend.group(0)
    # the review's week: 125 of 7000 valid rows (1.79%), read from the parquet files now
    assert "week ending 2026-11-29: rate 1.79% (125 quarantined of 7,000 valid)" in trend.group(0)
    assert "<html" in text(client.get(trends)) and "week ending 2026-11-29" in text(client.get(trends))


def test_a_source_that_cannot_be_read_leaves_the_review_readable(
    review: QuarantineReview, tmp_path: Path, actors: dict[str, Any]
) -> None:
    for path in sorted(tmp_path.rglob("*.parquet")):
        path.write_bytes(b"not parquet")
    client = client_for(actors["viewer"])
    assert client.get(f"/quarantine/{review.pk}/").status_code == 200  # the heat map is the stored summary
    response = client.get(f"/quarantine/{review.pk}/trends/", headers={"HX-Request": "true"})
    assert response.status_code in (400, 503)
    assert "The source could not be read for the trends" in text(response)


def test_escalation_rules_that_fired_are_shown(review: QuarantineReview, actors: dict[str, Any]) -> None:
    client = client_for(actors["viewer"])
    assert "Escalation rules that fired" not in text(client.get(f"/quarantine/{review.pk}/"))
    review.escalations = [
        {"rule": "new_reason", "table": "orders", "reason": FUTURE_DATE, "days": ["2026-11-27"],
         "detail": "orders: new reason 'order_date in future' first seen 2026-11-27"},
    ]  # fmt: skip
    review.save()
    page = text(client.get(f"/quarantine/{review.pk}/"))
    rule = re.search(r'<li data-rule="new_reason">.*?</li>', page, re.S)
    assert rule and "orders: new reason &#x27;order_date in future&#x27; first seen 2026-11-27" in rule.group(0)


def test_reasons_with_growth_and_new_ones_marked(review: QuarantineReview, actors: dict[str, Any]) -> None:
    page = text(client_for(actors["viewer"]).get(f"/quarantine/{review.pk}/"))
    reasons = re.search(r'<table class="list compact reasons">.*?</table>', page, re.S)
    assert reasons
    row = re.compile(r"<tr[^>]*>\s*<td><code>([^<]+)</code>.*?</tr>", re.S)
    rows = {m.group(1): m.group(0) for m in row.finditer(reasons.group(0))}
    assert list(rows) == [NULL_CUSTOMER, DUPLICATE, FUTURE_DATE]  # most records first
    assert "+100%" in rows[NULL_CUSTOMER]
    assert "-50%" in rows[DUPLICATE]
    assert 'class="badge new-reason">new<' in rows[FUTURE_DATE]
    assert "new-reason" not in rows[NULL_CUSTOMER] and "new-reason" not in rows[DUPLICATE]


def test_items_show_counts_and_need_a_decision(review: QuarantineReview, actors: dict[str, Any]) -> None:
    page = text(client_for(actors["responder"]).get(f"/quarantine/{review.pk}/"))
    item = item_of(review, FUTURE_DATE)
    block = re.search(rf'<article class="card q-item needs" id="item-{item.pk}".*?</article>', page, re.S)
    assert block
    assert 'data-testid="disposition-status">needs a decision<' in block.group(0)
    for kind in ("release", "discard", "keep", "escalate"):
        assert f'name="kind" value="{kind}"' in block.group(0)
    assert "csrfmiddlewaretoken" in block.group(0)
    # the sample: a plain link that works without JavaScript, loaded in place by htmx
    sample = f"/quarantine/{review.pk}/items/{item.pk}/sample/"
    assert f'href="{sample}" hx-get="{sample}"' in block.group(0)
    assert f'href="/quarantine/{review.pk}/items/{item.pk}/sample.csv"' in block.group(0)


def test_review_page_queries_do_not_grow_with_items_and_dispositions(
    review: QuarantineReview, source: Any, actors: dict[str, Any]
) -> None:
    client = client_for(actors["viewer"])

    def queries(path: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        return len(captured)

    before = (queries(f"/quarantine/{review.pk}/"), queries("/quarantine/"))
    for n, item in enumerate(review.items.all()):
        incident = make_incident(n)
        Disposition.objects.create(
            item=item, kind="escalate", state="done", decided_by=actors["responder"], incident=incident
        )
    for weeks in (1, 2, 3):
        make_review(source, week_end=date_before(WEEK_END, 7 * weeks))
    assert (queries(f"/quarantine/{review.pk}/"), queries("/quarantine/")) == before


def make_incident(n: int) -> Incident:
    return Incident.objects.create(
        title=f"quarantine {n}",
        severity=Incident.Severity.HIGH,
        fingerprint=f"q-{n}",
        alert_type="quarantine.high_rate",
    )


def test_viewer_sees_no_disposition_form(review: QuarantineReview, actors: dict[str, Any]) -> None:
    page = text(client_for(actors["viewer"]).get(f"/quarantine/{review.pk}/"))
    assert 'name="kind"' not in page
    assert "Show the first 50 records" in page  # reading is for everyone with a role


# ------------------------------------------------------------------------------------------ samples


def test_sample_partial_key_columns_first(review: QuarantineReview, actors: dict[str, Any]) -> None:
    item = item_of(review, FUTURE_DATE)
    client = client_for(actors["viewer"])
    response = client.get(f"/quarantine/{review.pk}/items/{item.pk}/sample/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "HX-Request" in response["Vary"]
    partial = text(response)
    assert "<html" not in partial
    headers = re.findall(r'<th scope="col">([^<]+)</th>', partial)
    assert headers == ["order_id", "reason", "timestamp", "record"]
    rows = re.findall(r"<tr><td>(f\d)</td><td>([^<]+)</td>", partial)
    assert sorted(r[0] for r in rows) == [f"f{i}" for i in range(5)]
    assert all(r[1] == FUTURE_DATE for r in rows)
    record = json.loads(re.search(r'<td class="mono record">([^<]+)</td>', partial).group(1).replace("&quot;", '"'))  # type: ignore[union-attr]
    assert set(record) == {"amount", "customer_id"}
    full = client.get(f"/quarantine/{review.pk}/items/{item.pk}/sample/")  # without JavaScript: a page
    assert "<html" in text(full) and "f0" in text(full)


def test_sample_csv_key_columns_first_then_json(review: QuarantineReview, actors: dict[str, Any]) -> None:
    item = item_of(review, NULL_CUSTOMER)
    response = client_for(actors["viewer"]).get(f"/quarantine/{review.pk}/items/{item.pk}/sample.csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(text(response))))
    assert rows[0] == ["order_id", "reason", "timestamp", "record"]
    assert len(rows) == 1 + 50  # the first 50 of 115
    assert all(r[1] == NULL_CUSTOMER for r in rows[1:])
    assert json.loads(rows[1][3]) == {"amount": 3.25, "customer_id": None}


def test_csv_cells_a_spreadsheet_would_run_are_neutralised() -> None:
    assert csv_safe('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert csv_safe("@SUM(A1)") == "'@SUM(A1)"
    assert csv_safe("-2.5") == "-2.5"  # a number stays a number
    assert csv_safe("+1 555") == "'+1 555"
    assert csv_safe("o-1") == "o-1"


def test_sample_of_an_item_of_another_review_is_404(
    review: QuarantineReview, source: Any, actors: dict[str, Any]
) -> None:
    other = make_review(source, week_end=date_before(WEEK_END, 7))
    item = item_of(other, NULL_CUSTOMER)
    client = client_for(actors["viewer"])
    assert client.get(f"/quarantine/{review.pk}/items/{item.pk}/sample.csv").status_code == 404
    assert client.get(f"/quarantine/{review.pk + 1000}/").status_code == 404


# ------------------------------------------------------------------------------------------ record


def test_record_downloads_as_markdown(review: QuarantineReview, actors: dict[str, Any]) -> None:
    response = client_for(actors["viewer"]).get(f"/quarantine/{review.pk}/record.md")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    assert f'filename="quarantine-review-{review.pk}-2026-11-29.md"' in response["Content-Disposition"]
    body = text(response)
    assert body == review_markdown(review=review)  # the quarantine app's record, as it is
    assert body.startswith("# Quarantine review: dev.silver.quarantine, week 2026-11-23 to 2026-11-29")


# ------------------------------------------------------------------------------------------ refusals


READ_PAGES = [
    "/quarantine/",
    "/quarantine/{r}/",
    "/quarantine/{r}/record.md",
    "/quarantine/{r}/items/{i}/sample/",
    "/quarantine/{r}/items/{i}/sample.csv",
]


@pytest.mark.parametrize("path", READ_PAGES)
def test_a_user_without_role_gets_403(review: QuarantineReview, actors: dict[str, Any], path: str) -> None:
    item = item_of(review, NULL_CUSTOMER)
    response = client_for(actors["nobody"]).get(path.format(r=review.pk, i=item.pk))
    assert response.status_code == 403
    assert NULL_CUSTOMER not in text(response)


def test_anonymous_is_sent_to_login(review: QuarantineReview) -> None:
    response = Client().get(f"/quarantine/{review.pk}/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def dispose(client: Client, review: QuarantineReview, item: Any, data: dict[str, Any], **kw: Any) -> Any:
    return post(client, f"/quarantine/{review.pk}/items/{item.pk}/dispose/", data, **kw)


KEEP = {"kind": "keep", "from_date": "2026-11-23", "to_date": "2026-11-29", "expires": "2027-01-31",
        "note": "a partner sends these late; they are fixed upstream next month"}  # fmt: skip


def test_viewer_cannot_post_a_disposition(review: QuarantineReview, actors: dict[str, Any]) -> None:
    item = item_of(review, FUTURE_DATE)
    response = dispose(client_for(actors["viewer"]), review, item, KEEP, htmx=True)
    assert response.status_code == 403
    assert "needs the responder role" in text(response)
    assert Disposition.objects.count() == 0 and ActionRun.objects.count() == 0


def test_disposition_without_csrf_token_is_refused(review: QuarantineReview, actors: dict[str, Any]) -> None:
    item = item_of(review, FUTURE_DATE)
    client = client_for(actors["responder"])
    response = client.post(f"/quarantine/{review.pk}/items/{item.pk}/dispose/", KEEP)
    assert response.status_code == 403
    assert Disposition.objects.count() == 0 and ActionRun.objects.count() == 0


def test_unknown_disposition_kind_is_refused(review: QuarantineReview, actors: dict[str, Any]) -> None:
    item = item_of(review, FUTURE_DATE)
    response = dispose(client_for(actors["responder"]), review, item, KEEP | {"kind": "burn"})
    assert response.status_code == 400
    assert "unknown disposition &#x27;burn&#x27;" in text(response)
    assert "<html" in text(response)  # without JavaScript: the review page with the message
    assert Disposition.objects.count() == 0 and ActionRun.objects.count() == 0


def test_keep_without_note_is_refused_and_writes_nothing(review: QuarantineReview, actors: dict[str, Any]) -> None:
    item = item_of(review, FUTURE_DATE)
    response = dispose(client_for(actors["responder"]), review, item, KEEP | {"note": ""}, htmx=True)
    assert response.status_code == 400
    assert 'class="alert error"' in text(response)
    assert 'value="2027-01-31"' in text(response)  # the form keeps what was typed
    assert Disposition.objects.count() == 0 and ActionRun.objects.count() == 0


def test_keep_disposition_requests_an_action_and_shows_its_preview(
    review: QuarantineReview, actors: dict[str, Any]
) -> None:
    item = item_of(review, FUTURE_DATE)
    response = dispose(client_for(actors["responder"]), review, item, KEEP, htmx=True)
    assert response.status_code == 200, text(response)
    action = ActionRun.objects.get()
    assert action.verb == "quarantine-keep"
    assert action.params["expires"] == "2027-01-31"
    disposition = Disposition.objects.get()
    assert (disposition.kind, disposition.item_id, disposition.action_id) == ("keep", item.pk, action.id)
    partial = text(response)
    assert f'href="/actions/{action.id}/"' in partial
    assert 'class="plan"' in partial  # the action's preview
    assert "keep requested." in partial
    assert 'data-testid="disposition-status">decision pending<' in partial  # until the action succeeded


def test_escalate_opens_an_incident_and_decides_the_item_at_once(
    review: QuarantineReview, actors: dict[str, Any]
) -> None:
    item = item_of(review, FUTURE_DATE)
    data = {"kind": "escalate", "note": "a new reason from the partner feed: source team to look"}
    response = dispose(client_for(actors["responder"]), review, item, data, htmx=True)
    assert response.status_code == 200, text(response)
    incident = Incident.objects.get()
    partial = text(response)
    assert f'href="/incidents/{incident.pk}/"' in partial
    assert 'data-testid="disposition-status">decided<' in partial
    assert '<span id="review-status" hx-swap-oob="true">' in partial  # the page's status follows
    assert ActionRun.objects.count() == 0


def test_release_in_production_waits_for_approval(tmp_path: Path, actors: dict[str, Any]) -> None:
    write_source(tmp_path)
    review = make_review(quarantine_source(tmp_path, env_name="prod", protected=True))
    item = item_of(review, NULL_CUSTOMER)
    data = {"kind": "release", "from_date": "2026-11-23", "to_date": "2026-11-29", "note": "fixed upstream"}
    response = dispose(client_for(actors["responder"]), review, item, data)
    assert response.status_code == 302 and response["Location"] == f"/quarantine/{review.pk}/#item-{item.pk}"
    action = ActionRun.objects.get()
    assert action.state == "awaiting_approval"
    page = text(client_for(actors["viewer"]).get(f"/quarantine/{review.pk}/"))
    assert f'href="/actions/{action.id}/"' in page
    assert "waits for a second person's approval" in page
