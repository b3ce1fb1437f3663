"""Reads of quarantine reviews for the pages and the API: lists, one review with its items and
dispositions, the heat map (from the review's stored summary), trends and samples (read live from the
source through its connector)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from django.db.models import Prefetch, QuerySet

from connectors.quarantine import stats
from connectors.quarantine.connector import QuarantineConnector
from controlplane.catalog.models import Target
from controlplane.catalog.services import connector_for
from controlplane.errors import InvalidInput, NotFound
from controlplane.quarantine.models import Disposition, QuarantineReview, ReviewItem, ReviewSchedule


@dataclass(frozen=True)
class HeatCell:
    """One (table, day): counts and rate (percent, None when there were no valid rows); ``over`` when the
    rate is above the review's threshold."""

    date: date
    valid: int
    quarantined: int
    rate: float | None
    over: bool


@dataclass(frozen=True)
class HeatRow:
    table: str
    cells: list[HeatCell] = field(default_factory=list)


@dataclass(frozen=True)
class HeatMap:
    """Tables x the review's 7 days; ``threshold_pct`` is the review's threshold."""

    days: list[date]
    rows: list[HeatRow]
    threshold_pct: float | None


def review_list(*, target_key: str | None = None, status: str | None = None) -> QuerySet[QuarantineReview]:
    """Reviews newest week first (then newest created), with their target and environment; ``status``
    ``open`` or ``done`` filters, ``target_key`` keeps one source."""
    qs = QuarantineReview.objects.select_related("target__connection__environment").order_by("-week_end", "-id")
    if target_key:
        qs = qs.filter(target__key=target_key)
    if status == "open":
        qs = qs.filter(completed_at__isnull=True)
    elif status == "done":
        qs = qs.filter(completed_at__isnull=False)
    elif status not in (None, "", "all"):
        raise InvalidInput(f"unknown status {status!r}; use open, done or all")
    return qs


def review_detail(*, review_id: Any) -> QuarantineReview:
    """One review with its target, items (table, then largest count first) and each item's dispositions
    (with their action, incident and decider) prefetched; NotFound if there is none."""
    dispositions = Disposition.objects.select_related("action", "incident", "decided_by").order_by("requested_at", "id")
    items = ReviewItem.objects.prefetch_related(Prefetch("dispositions", queryset=dispositions))
    try:
        review_pk = int(review_id)
    except (TypeError, ValueError):
        raise NotFound(f"no quarantine review {review_id!r}") from None
    review = (
        QuarantineReview.objects.select_related("target__connection__environment", "created_by_action")
        .prefetch_related(Prefetch("items", queryset=items))
        .filter(pk=review_pk)
        .first()
    )
    if review is None:
        raise NotFound(f"no quarantine review {review_id!r}")
    return review


def review_item(*, review_id: Any, item_id: Any) -> ReviewItem:
    """One item of one review (with the review and its target); NotFound if the item is not the review's."""
    try:
        item = ReviewItem.objects.select_related("review__target__connection__environment").filter(
            pk=int(item_id), review_id=int(review_id)
        )
    except (TypeError, ValueError):
        raise NotFound(f"no item {item_id!r} in review {review_id!r}") from None
    found = item.first()
    if found is None:
        raise NotFound(f"no item {item_id!r} in review {review_id!r}")
    return found


def review_heatmap(*, review: QuarantineReview) -> HeatMap:
    """Tables x days of the review's week from its stored summary (no read of the source); a day the
    summary does not list for a table is a cell with zero counts."""
    days = [review.week_start + timedelta(days=n) for n in range((review.week_end - review.week_start).days + 1)]
    threshold = review.threshold_pct
    rows: list[HeatRow] = []
    for table in review.summary.get("tables", []):
        by_day = {str(d.get("date")): d for d in table.get("days", [])}
        cells = []
        for day in days:
            d = by_day.get(day.isoformat(), {})
            rate = d.get("rate")
            cells.append(
                HeatCell(
                    date=day,
                    valid=int(d.get("valid") or 0),
                    quarantined=int(d.get("quarantined") or 0),
                    rate=None if rate is None else float(rate),
                    over=rate is not None and threshold is not None and float(rate) > threshold,
                )
            )
        rows.append(HeatRow(table=str(table.get("table")), cells=cells))
    return HeatMap(days=days, rows=rows, threshold_pct=threshold)


def _connector(target: Target) -> QuarantineConnector:
    connector = connector_for(target.connection)
    if not isinstance(connector, QuarantineConnector):
        raise InvalidInput(f"target {target.key} is not a quarantine source")
    return connector


def review_trends(*, review: QuarantineReview, weeks: int = 12) -> dict[str, list[dict[str, Any]]]:
    """Per table, the weekly rates of the ``weeks`` weeks ending with the review's week (oldest first),
    read from the source now (``connectors.quarantine.stats.weekly_rates``): ``{table: [{"week_start",
    "week_end", "valid", "quarantined", "rate"}]}``. ConnectorError when the source cannot be read."""
    connector = _connector(review.target)
    return stats.weekly_rates(connector.store, week_end=review.week_end, weeks=weeks)


def item_sample(*, item: ReviewItem, limit: int = 50) -> stats.Sample:
    """The first ``limit`` quarantined records of the item's (table, reason) in the review's week, key
    columns first (``connectors.quarantine.stats.sample``: ``Sample(key_columns, rows)``), read now."""
    review = item.review
    connector = _connector(review.target)
    return stats.sample(
        connector.store, table=item.table, reason=item.reason, start=review.week_start, end=review.week_end, limit=limit
    )


def schedule_list() -> list[ReviewSchedule]:
    """The review schedules (shown on the reviews page), with their environment."""
    return list(ReviewSchedule.objects.select_related("environment"))
