"""The weekly quarantine review pages (``/quarantine/``): thin views over the quarantine app's selectors
and services, rendered like the other web pages (controlplane/web/views.py: the same login and role
gate, full page or htmx partial with ``Vary: HX-Request``, CSRF on every POST, a ServiceError shown
inline with its status and nothing written).

- ``/quarantine/``: the reviews of each source, newest first, with their status and the items left; the
  review schedule; "Request a review now" for responders.
- ``/quarantine/<id>/``: the heat map (tables x days, coloured by rate against the source's threshold),
  a trend line per table (12 weekly rates), the top reasons with growth and new ones marked, and per
  (table, reason) item its counts, a sample (loaded by htmx, or a plain link), the sample as CSV and the
  disposition form (release, discard, keep, escalate) for responders. Readable without JavaScript.
- ``/quarantine/<id>/record.md``: the review's record (who decided what, when, with which counts).

Charts are server-side SVG (controlplane/quarantine/charts.py); the figures are in the markup too.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from connectors.base import ConnectorError
from connectors.quarantine.config import QuarantineConfig
from connectors.quarantine.stats import Sample
from controlplane import access
from controlplane.actions import selectors as action_selectors
from controlplane.audit.context import Channel
from controlplane.catalog.models import Target
from controlplane.errors import InvalidInput, NotFound, ServiceError
from controlplane.quarantine import charts, selectors, services
from controlplane.quarantine.models import Disposition, QuarantineReview, ReviewItem
from controlplane.web.views import is_htmx, service_error, web_login_required

SAMPLE_LIMIT = 50
DISPOSITION_KINDS = ("release", "discard", "keep", "escalate")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


# ------------------------------------------------------------------------------------------ helpers


def _review_or_404(review_id: int) -> QuarantineReview:
    try:
        return selectors.review_detail(review_id=review_id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _item_or_404(review: QuarantineReview, item_id: int) -> ReviewItem:
    item = next((i for i in review.items.all() if i.pk == item_id), None)
    if item is None:
        raise Http404(f"review {review.pk} has no item {item_id}")
    return item


def growth_pct(count: int, previous: int) -> float | None:
    """Week-over-week growth in percent; None when the previous week had none (a new reason or a return)."""
    if not previous:
        return None
    return (count - previous) / previous * 100


@dataclass(frozen=True)
class ReasonRow:
    """A reason across the review's tables: this week's and last week's counts, growth, new or not."""

    reason: str
    tables: list[str]
    count: int
    previous_week: int
    new: bool

    @property
    def growth(self) -> float | None:
        return growth_pct(self.count, self.previous_week)


def top_reasons(items: list[ReviewItem], limit: int = 5) -> list[ReasonRow]:
    """The reasons with the most quarantined rows this week (the seed's "Top 5 patterns")."""
    by_reason: dict[str, dict[str, Any]] = {}
    for item in items:
        row = by_reason.setdefault(item.reason, {"tables": [], "count": 0, "previous_week": 0, "new": False})
        row["tables"].append(item.table)
        row["count"] += item.count
        row["previous_week"] += item.previous_week
        row["new"] = row["new"] or item.new
    rows = [ReasonRow(reason=r, **v) for r, v in by_reason.items()]
    return sorted(rows, key=lambda r: (-r.count, r.reason))[:limit]


def _svg(text: str) -> SafeString:
    return mark_safe(text)  # noqa: S308 (charts.py escapes every text it puts into the SVG)


# ------------------------------------------------------------------------------------------ list


@dataclass(frozen=True)
class SourceReviews:
    """One quarantine source with its reviews, newest week first."""

    target: Target
    reviews: list[QuarantineReview]


def reviews_by_source() -> list[SourceReviews]:
    """Every review, grouped by source (in key order), each annotated with ``items_needing`` (over the
    threshold or new) and ``items_left`` (of those, the ones without a done disposition), in one query."""
    left = (
        ReviewItem.objects.filter(review=OuterRef("pk"), needs_disposition=True)
        .exclude(dispositions__state=Disposition.State.DONE)
        .values("review")
        .annotate(n=Count("pk"))
        .values("n")
    )
    needing = (
        ReviewItem.objects.filter(review=OuterRef("pk"), needs_disposition=True)
        .values("review")
        .annotate(n=Count("pk"))
        .values("n")
    )
    reviews = selectors.review_list().annotate(
        items_left=Coalesce(Subquery(left), 0), items_needing=Coalesce(Subquery(needing), 0)
    )
    grouped: dict[str, SourceReviews] = {}
    for review in reviews:
        grouped.setdefault(review.target.key, SourceReviews(review.target, [])).reviews.append(review)
    return [grouped[key] for key in sorted(grouped)]


def _list_context(request: HttpRequest, *, error: str = "", form: dict[str, str] | None = None) -> dict[str, Any]:
    can_request = access.has_role(request.user, "responder")
    return {
        "sources": reviews_by_source(),
        # review actions not finished yet (waiting for approval in production, queued, running)
        "requested": list(
            action_selectors.action_list({"verb": services.REVIEW_VERB}).filter(state__in=action_selectors.OPEN_STATES)
        ),
        "schedules": [(s, WEEKDAYS[s.weekday]) for s in selectors.schedule_list()],
        "targets": services.quarantine_sources() if can_request else [],
        "can_request": can_request,
        "error": error,
        "form": form or {},
    }


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def review_list(request: HttpRequest) -> HttpResponse:
    """``/quarantine/``: per source, its reviews newest first (week, status, items left); the schedule."""
    return render(request, "quarantine/list.html", _list_context(request))


def _parse_week_end(raw: str) -> date | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"'week_end' must be a date (YYYY-MM-DD), not {raw[:40]!r}") from None


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def review_request(request: HttpRequest) -> HttpResponse:
    """POST ``/quarantine/request/`` (``target``, optional ``week_end``): request a ``quarantine-review``
    action now (the action page shows its progress; the review appears here when it has finished)."""
    form = {"target": request.POST.get("target", ""), "week_end": request.POST.get("week_end", "")}
    try:
        action = services.review_request(
            actor=request.user,
            target_key=form["target"],
            week_end=_parse_week_end(form["week_end"]),
            channel=Channel.WEB,
        )
    except (ServiceError, ConnectorError) as exc:
        message, status = service_error(exc)
        return render(request, "quarantine/list.html", _list_context(request, error=message, form=form), status=status)
    return HttpResponseRedirect(reverse("web:action", args=[action.id]))


# ------------------------------------------------------------------------------------------ detail


def _limits(review: QuarantineReview) -> tuple[float, float | None]:
    """The threshold the review was made against (the source's current one if it did not record it) and the
    source's escalation rate, both in percent."""
    config = QuarantineConfig.model_validate(review.target.connection.config)
    threshold = review.threshold_pct if review.threshold_pct is not None else config.threshold_pct
    return threshold, config.escalate_pct


def _trends(review: QuarantineReview, threshold: float) -> tuple[list[tuple[str, SafeString]], str, int]:
    """A trend chart per table, or why the source could not be read and the status to answer with."""
    try:
        trends = selectors.review_trends(review=review)
    except (ServiceError, ConnectorError) as exc:
        message, status = service_error(exc)
        return [], message, status
    charted = []
    for table, weeks in trends.items():
        points = [charts.TrendPoint(str(w["week_end"]), w["rate"], w["quarantined"], w["valid"]) for w in weeks]
        charted.append((table, _svg(charts.trend_svg(table, points, threshold=threshold))))
    return charted, "", 200


def _item_order(item: ReviewItem) -> tuple[bool, str, int]:
    """Items needing a decision first, then by table, the largest first."""
    return (not item.needs_disposition, item.table, -item.count)


def _detail_context(request: HttpRequest, review: QuarantineReview) -> dict[str, Any]:
    heat = selectors.review_heatmap(review=review)
    threshold, escalate = _limits(review)
    days = [d.isoformat() for d in heat.days]
    cells = [
        charts.HeatCell(row.table, c.date.isoformat(), c.valid, c.quarantined, c.rate)
        for row in heat.rows
        for c in row.cells
    ]
    tables = [row.table for row in heat.rows]
    items = list(review.items.all())
    return {
        "review": review,
        "heat": heat,
        "threshold": threshold,
        "heatmap_svg": _svg(charts.heatmap_svg(tables, days, cells, threshold=threshold, escalate=escalate)),
        "legend_svg": _svg(charts.legend_svg(threshold=threshold, escalate=escalate)),
        "reasons": top_reasons(items),
        "items": [item_view(item) for item in sorted(items, key=_item_order)],
        "can_dispose": access.has_role(request.user, "responder"),
        "kinds": DISPOSITION_KINDS,
    }


@dataclass
class ItemView:
    """One (table, reason) item as the page shows it, with the last disposition POST's answer."""

    item: ReviewItem
    dispositions: list[Disposition]
    error: str = ""
    error_details: dict[str, Any] | None = None
    notice: str = ""
    posted: dict[str, str] | None = None

    @property
    def growth(self) -> float | None:
        return growth_pct(self.item.count, self.item.previous_week)

    @property
    def pending(self) -> bool:
        """A disposition is on its way (its action waits for approval or runs)."""
        return any(d.state == Disposition.State.PENDING for d in self.dispositions)


def item_view(item: ReviewItem, **extra: Any) -> ItemView:
    return ItemView(item=item, dispositions=list(item.dispositions.all()), **extra)


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def review_detail(request: HttpRequest, review_id: int) -> HttpResponse:
    """``/quarantine/<id>/``: the review with its charts, reasons and items."""
    review = _review_or_404(review_id)
    return render(request, "quarantine/detail.html", _detail_context(request, review))


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def review_trends(request: HttpRequest, review_id: int) -> HttpResponse:
    """``/quarantine/<id>/trends/``: a trend line per table, the 12 weekly rates ending with the review's week,
    read from the source now. The review page loads it after itself (htmx), so a slow or unreachable source
    never holds up the page; without JavaScript the same link opens it as a page."""
    review = _review_or_404(review_id)
    threshold, _ = _limits(review)
    trends, error, status = _trends(review, threshold)
    context = {"review": review, "trends": trends, "trends_error": error, "threshold": threshold}
    template = "quarantine/partials/trends.html" if is_htmx(request) else "quarantine/trends.html"
    return render(request, template, context, status=status)


def _sample(item: ReviewItem) -> tuple[Sample | None, str, int]:
    """The item's sample from the files, or the reason it could not be read (and the status to answer)."""
    try:
        return selectors.item_sample(item=item, limit=SAMPLE_LIMIT), "", 200
    except (ServiceError, ConnectorError) as exc:
        message, status = service_error(exc)
        return None, message, status


def sample_columns(sample: Sample) -> list[str]:
    """The sample's columns: key columns first, then the reason and the time, then the rest as JSON."""
    return [*sample.key_columns, "reason", "timestamp", "record"]


def sample_rows(sample: Sample) -> list[list[str]]:
    """The sample's rows in ``sample_columns`` order, every value as text (the record as compact JSON)."""
    out = []
    for row in sample.rows:
        values = [row.get(k) for k in sample.key_columns] + [row.get("reason"), row.get("timestamp")]
        cells = ["" if v is None else str(v) for v in values]
        cells.append(json.dumps(row.get("record", {}), sort_keys=True, separators=(",", ":"), default=str))
        out.append(cells)
    return out


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def item_sample(request: HttpRequest, review_id: int, item_id: int) -> HttpResponse:
    """``/quarantine/<id>/items/<item_id>/sample/``: the first 50 records of the item (htmx partial on the
    review page, or a page of its own without JavaScript)."""
    review = _review_or_404(review_id)
    item = _item_or_404(review, item_id)
    sample, error, status = _sample(item)
    context = {
        "review": review,
        "item": item,
        "error": error,
        "columns": sample_columns(sample) if sample is not None else [],
        "rows": sample_rows(sample) if sample is not None else [],
        "limit": SAMPLE_LIMIT,
    }
    template = "quarantine/partials/sample.html" if is_htmx(request) else "quarantine/sample.html"
    return render(request, template, context, status=status)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: str) -> str:
    """A cell a spreadsheet will not run: quarantined records are untrusted input, and a text starting with
    ``=``, ``+``, ``-``, ``@``, tab or CR is read as a formula by Excel and LibreOffice (OWASP "CSV
    injection"), so it gets a leading ``'``; numbers such as ``-2.5`` stay as they are."""
    if value.startswith(FORMULA_START):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


@require_GET
@web_login_required
def item_sample_csv(request: HttpRequest, review_id: int, item_id: int) -> HttpResponse:
    """``/quarantine/<id>/items/<item_id>/sample.csv``: the same sample as CSV (key columns first, the
    reason, the time, then the other columns as one JSON column), formula-looking cells neutralised."""
    review = _review_or_404(review_id)
    item = _item_or_404(review, item_id)
    sample, error, status = _sample(item)
    if sample is None:
        return HttpResponse(error, status=status, content_type="text/plain; charset=utf-8")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(sample_columns(sample))
    writer.writerows([csv_safe(v) for v in row] for row in sample_rows(sample))
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    name = f"quarantine-{review.pk}-{item.table}-{item.pk}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _disposition_params(post: Any, kind: str) -> dict[str, Any]:
    """The action's parameters from the form: the day range, and the expiry for keep (dates as text: the
    service validates them and refuses bad ones)."""
    params = {name: post.get(name, "").strip() for name in ("from_date", "to_date")}
    if kind == "keep":
        params["expires"] = post.get("expires", "").strip()
    return {k: v for k, v in params.items() if v}


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def item_dispose(request: HttpRequest, review_id: int, item_id: int) -> HttpResponse:
    """POST ``/quarantine/<id>/items/<item_id>/dispose/`` (``kind``: release, discard, keep or escalate;
    ``from_date``, ``to_date``, ``expires`` for keep, ``note``): the disposition through the quarantine
    service (an action through the one request path, or an incident for escalate). htmx gets the item back
    with the result (the action's link and preview); a plain form is sent back to the review."""
    review = _review_or_404(review_id)
    item = _item_or_404(review, item_id)
    kind = request.POST.get("kind", "")
    posted = {k: request.POST.get(k, "") for k in ("from_date", "to_date", "expires", "note")}
    try:
        services.disposition_request(
            actor=request.user,
            item_id=item.pk,
            kind=kind,
            params=_disposition_params(request.POST, kind),
            note=posted["note"],
            channel=Channel.WEB,
        )
    except (ServiceError, ConnectorError) as exc:
        message, status = service_error(exc)
        view = item_view(item, error=message, error_details=getattr(exc, "details", {}), posted=posted)
        if is_htmx(request):
            return _item_answer(request, review, view, status=status)
        context = _detail_context(request, review)
        context["items"] = [view if v.item.pk == item.pk else v for v in context["items"]]
        context["error"] = f"{item.table} / {item.reason}: {message}"
        return render(request, "quarantine/detail.html", context, status=status)
    if not is_htmx(request):
        return HttpResponseRedirect(reverse("quarantine:review", args=[review.pk]) + f"#item-{item.pk}")
    fresh = _review_or_404(review.pk)
    return _item_answer(request, fresh, item_view(_item_or_404(fresh, item.pk), notice=f"{kind} requested."))


def _item_answer(request: HttpRequest, review: QuarantineReview, view: ItemView, *, status: int = 200) -> HttpResponse:
    context = {
        "review": review,
        "v": view,
        "can_dispose": access.has_role(request.user, "responder"),
        "kinds": DISPOSITION_KINDS,
        "oob_status": True,
    }
    return render(request, "quarantine/partials/item.html", context, status=status)


@require_GET
@web_login_required
def review_record(request: HttpRequest, review_id: int) -> HttpResponse:
    """``/quarantine/<id>/record.md``: the review's record as a markdown download."""
    review = _review_or_404(review_id)
    response = HttpResponse(services.review_markdown(review=review), content_type="text/markdown; charset=utf-8")
    name = f"quarantine-review-{review.pk}-{review.week_end.isoformat()}.md"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
