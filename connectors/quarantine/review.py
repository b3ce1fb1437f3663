"""The ``quarantine-review`` verb: the weekly review of one source (seed 003, "Weekly Review").

It reads files only and writes nothing: the plan names the week and the tables it reads, ``execute`` returns
the week's summary (the ``quarantine_summary`` JSON), the escalations (seed 003: over ``escalate_pct`` for
``escalate_days`` consecutive days, a new reason, storage over ``escalate_storage_bytes``) and the breaches of
``threshold_pct`` as ``Outcome.details``; the control plane turns them into the review record.

The week is resolved once, by the plan (default: the last Sunday before today, UTC), and ``execute`` reviews
the week the plan named, so an action planned late on a Sunday and run after midnight reviews the same week.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from connectors.base import ConnectorError, ExecutionContext, Outcome, Plan, Risk, TargetRef, Touch, Verb, Verification
from connectors.quarantine import stats
from connectors.quarantine.config import parse_locator

if TYPE_CHECKING:
    from connectors.quarantine.connector import QuarantineConnector


def last_sunday(today: dt.date | None = None) -> dt.date:
    """The last Sunday before ``today`` (UTC today by default): the end of the last complete week."""
    today = today or dt.datetime.now(dt.UTC).date()
    return today - dt.timedelta(days=today.isoweekday() % 7 or 7)


class QuarantineReviewParams(BaseModel):
    """``week_end``: the last day (inclusive) of the 7-day week to review; default the last Sunday before
    today (UTC). It must be before today: a week still being written is not reviewed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    week_end: dt.date | None = None


class QuarantineReviewVerb(Verb["QuarantineConnector", QuarantineReviewParams]):
    """Build the weekly review of a quarantine source (read-only)."""

    name = "quarantine-review"
    params_model = QuarantineReviewParams
    target_kinds = ("quarantine",)
    idempotent = True
    description = "Weekly quarantine review: rates, reasons, new reasons, growth and escalations (reads only)."
    connector: QuarantineConnector

    def plan(self, target: TargetRef, params: QuarantineReviewParams) -> Plan:
        """The week and the tables to read (a listing of the quarantine directory, nothing else)."""
        parse_locator(target, self.target_kinds)
        week_end = _week_end(params)
        start = week_end - dt.timedelta(days=stats.WEEK_DAYS - 1)
        tables = self.connector.store.tables()
        days = [(start + dt.timedelta(days=i)).isoformat() for i in range(stats.WEEK_DAYS)]
        return Plan(
            summary=f"review the quarantine of {len(tables)} table(s) of {self.connector.cfg.root} for the week "
            f"{start.isoformat()} to {week_end.isoformat()} (reads files only)",
            touches=[Touch(kind="table", name=t, detail={"days": days}) for t in tables],
            counts={"tables": len(tables), "days": stats.WEEK_DAYS},
            risk=Risk.LOW,
            read_only=True,
            details={"week_start": start.isoformat(), "week_end": week_end.isoformat()},
            warnings=[] if tables else [f"{self.connector.cfg.root} has no quarantined table"],
        )

    def execute(self, target: TargetRef, params: QuarantineReviewParams, ctx: ExecutionContext) -> Outcome:
        """Read the week (the plan's) and return summary, escalations and breaches; writes nothing."""
        parse_locator(target, self.target_kinds)
        planned = ctx.plan.details.get("week_end") if ctx.plan is not None else None
        week_end = dt.date.fromisoformat(planned) if planned else _week_end(params)
        ctx.log(f"reading the quarantine of {self.connector.cfg.root} for the week ending {week_end.isoformat()}")
        review = stats.weekly_review(self.connector.store, self.connector.cfg, week_end=week_end)
        summary = review.summary
        for table in summary["tables"]:
            ctx.log(
                f"{table['table']}: {table['quarantined']} quarantined / {table['valid']} valid "
                f"({table['rate']}%), {len(table['reasons'])} reason(s), growth {table['growth']}%"
            )
        found = f"{len(review.escalations)} escalation(s), {len(review.breaches)} breach(es)"
        ctx.log(f"read in {summary['seconds']} s: {found}")
        return Outcome(
            summary=f"week {summary['week_start']} to {summary['week_end']}: {len(summary['tables'])} table(s), "
            f"{len(review.escalations)} escalation(s), {len(review.breaches)} (table, day) over "
            f"{self.connector.cfg.threshold_pct:g}%",
            details=review.as_json(),
        )

    def verify(self, target: TargetRef, params: QuarantineReviewParams, outcome: Outcome) -> Verification:
        """Ok when the outcome carries the week's summary (the review has nothing to change)."""
        summary: Any = outcome.details.get("summary")
        if not isinstance(summary, dict) or not isinstance(summary.get("tables"), list):
            return Verification(ok=False, summary="the review's outcome has no summary")
        return Verification(
            ok=True,
            summary=f"summary of {len(summary['tables'])} table(s) for the week ending {summary['week_end']}",
            details={"week_start": summary["week_start"], "week_end": summary["week_end"]},
        )


def _week_end(params: QuarantineReviewParams) -> dt.date:
    week_end = params.week_end or last_sunday()
    today = dt.datetime.now(dt.UTC).date()
    if week_end >= today:
        raise ConnectorError(
            f"week_end {week_end.isoformat()} is not before today ({today.isoformat()}, UTC): only complete weeks "
            "are reviewed"
        )
    return week_end
