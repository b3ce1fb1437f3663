"""Quarantine reviews: request a review, turn its outcome into the review record, decide dispositions,
complete the review, export it as markdown; open incidents for threshold breaches and escalation rules;
the schedule's review and retention-cleanup requests.

Every change goes through the one action path (``actions.services.action_request``: preview, policy,
approval in protected environments, idempotency) or, for what is not an action (an escalation, the review
record itself), writes its audit event in the same transaction. The review record is made from the
``quarantine-review`` action's outcome by a receiver of ``action_finished`` (``receivers.py``); dispositions
are recorded the same way when their action ends.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from pydantic import ValidationError

from connectors.base import ConnectorError
from connectors.quarantine import stats
from connectors.quarantine.config import QuarantineConfig
from controlplane import access
from controlplane.actions.models import ActionRun, ActionState
from controlplane.actions.services import action_plan, action_request
from controlplane.audit import context
from controlplane.audit.context import Channel
from controlplane.audit.services import audit_record
from controlplane.catalog.models import Environment, Target
from controlplane.catalog.services import target_create
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.incidents.models import Incident
from controlplane.incidents.services import alert_ingest
from controlplane.quarantine.models import Disposition, QuarantineReview, ReviewItem, ReviewSchedule
from controlplane.quarantine.selectors import _connector, item_sample

log = logging.getLogger(__name__)

REVIEW_VERB = "quarantine-review"
CLEANUP_VERB = "quarantine-cleanup"
DISPOSITION_VERBS: dict[str, str] = {
    Disposition.Kind.RELEASE.value: "quarantine-release",
    Disposition.Kind.DISCARD.value: "quarantine-discard",
    Disposition.Kind.KEEP.value: "quarantine-keep",
}
# Incidents opened here: their alert type matches runbook 003-quarantine-high-rate's ``applies_to``.
ALERT_SOURCE = "quarantine"
ALERT_TYPE = "quarantine.high_rate"
# The account the schedule requests actions as (a responder; in production an approver still decides).
SCHEDULER_USERNAME = "quarantine-scheduler"
MAX_NOTE = 2000
SAMPLE_KEYS_KEPT = 20

User = Any


def last_week_end(today: date) -> date:
    """The last Sunday before ``today``: the end of the last complete week (Monday..Sunday)."""
    return today - timedelta(days=today.weekday() + 1)


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


@contextlib.contextmanager
def _channel(actor: User, channel: str | None) -> Iterator[None]:
    """Run under ``channel`` when the caller names one (a task or a command); else keep the caller's context
    (a web or API request already set it)."""
    if channel is None:
        yield
        return
    current = context.current()
    with context.change_context(
        channel=channel, user=actor, request_id=current.request_id or None, scopes=current.scopes
    ):
        yield


def _config(target: Target) -> QuarantineConfig:
    try:
        return QuarantineConfig.model_validate(target.connection.config)
    except ValidationError:
        raise InvalidInput(f"{target.connection.name} has no valid quarantine config") from None


# ------------------------------------------------------------------------------------------ reviews


def review_request(
    *,
    actor: User,
    target_key: str,
    week_end: date | None = None,
    channel: str | None = None,
    idempotency_key: str | None = None,
) -> ActionRun:
    """Request the ``quarantine-review`` action of one source for the week ending ``week_end`` (default: the
    last Sunday, UTC). The review record is created when the action succeeds (``review_create_from_outcome``).
    The review only reads (its plan is read-only), so it runs without an approver, also in production."""
    week_end = week_end or last_week_end(_today())
    if week_end >= _today():
        raise InvalidInput(f"week_end {week_end} is not over yet; review a week that ended before today")
    with _channel(actor, channel):
        result = action_request(
            actor=actor,
            verb=REVIEW_VERB,
            target_key=target_key,
            params={"week_end": week_end.isoformat()},
            reason=f"weekly quarantine review of {target_key}, week ending {week_end.isoformat()}",
            idempotency_key=idempotency_key,
        )
    return result.action


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _over(table: dict[str, Any], threshold: float) -> bool:
    return any(d.get("rate") is not None and float(d["rate"]) > threshold for d in table.get("days", []))


def review_create_from_outcome(*, action: ActionRun) -> QuarantineReview | None:
    """Create the review and its items from a succeeded ``quarantine-review`` action's outcome
    (``{"summary", "escalations", "breaches"}``); None for any other action. Idempotent per (target,
    week_end): a second action for the same week returns the first review unchanged (its items may already
    have dispositions). An item needs a disposition when its table was over the threshold on a day of the
    week or its reason is new. Audited (``quarantine.review_created``) and announced once committed."""
    if action.verb != REVIEW_VERB or action.state != ActionState.SUCCEEDED:
        return None
    details = (action.outcome or {}).get("details") or {}
    summary = details.get("summary") or {}
    try:
        week_start = date.fromisoformat(str(summary["week_start"]))
        week_end = date.fromisoformat(str(summary["week_end"]))
    except (KeyError, ValueError):
        log.error("quarantine-review action %s has no summary with its week; no review made", action.id)
        return None
    target = action.target
    existing = QuarantineReview.objects.filter(target=target, week_end=week_end).first()
    if existing is not None:
        return existing
    threshold = _config(target).threshold_pct
    try:
        with transaction.atomic():
            review = QuarantineReview.objects.create(
                target=target,
                week_start=week_start,
                week_end=week_end,
                threshold_pct=threshold,
                summary=summary,
                escalations=list(details.get("escalations") or []),
                breaches=list(details.get("breaches") or []),
                created_by_action=action,
            )
            items = []
            for table in summary.get("tables", []):
                over = _over(table, threshold)
                for reason in table.get("reasons", []):
                    new = bool(reason.get("new"))
                    items.append(
                        ReviewItem(
                            review=review,
                            table=str(table["table"]),
                            reason=str(reason["reason"]),
                            count=int(reason.get("count") or 0),
                            previous_week=int(reason.get("previous_week") or 0),
                            new=new,
                            over_threshold=over,
                            needs_disposition=over or new,
                            first_seen=_parse_time(reason.get("first_seen")),
                            last_seen=_parse_time(reason.get("last_seen")),
                            sample_keys=list(reason.get("sample_keys") or [])[:SAMPLE_KEYS_KEPT],
                        )
                    )
            ReviewItem.objects.bulk_create(items)
            needing = sum(1 for i in items if i.needs_disposition)
            audit_record(
                event="quarantine.review_created",
                obj=review,
                after={
                    **review.audit_state(),
                    "action": str(action.id),
                    "items": len(items),
                    "needing_disposition": needing,
                    "escalations": len(review.escalations),
                    "breaches": len(review.breaches),
                },
            )
            _review_maybe_complete(review)
            transaction.on_commit(lambda: _announce(review.pk))
    except IntegrityError:  # a concurrent receiver made it first
        return QuarantineReview.objects.get(target=target, week_end=week_end)
    return review


def _announce(review_id: int) -> None:
    """A new review reaches people in Slack (when Slack is on): the target's pipeline channel, else its
    environment's, else ``SLACK["DEFAULT_CHANNEL"]``; the audit trail has it in any case."""
    from controlplane.slack import outbound

    review = QuarantineReview.objects.select_related("target__connection__environment", "target__pipeline").get(
        pk=review_id
    )
    needing = review.items.filter(needs_disposition=True).count()
    target = review.target
    channel = (
        (target.pipeline.slack_channel if target.pipeline else "")
        or target.connection.environment.slack_channel
        or str(settings.SLACK["DEFAULT_CHANNEL"])
    )
    link = settings.SLACK["PUBLIC_URL"].rstrip("/") + f"/quarantine/{review.pk}/"
    work = f"{needing} (table, reason) to decide" if needing else "nothing over the threshold or new"
    text = (
        f"Quarantine review of {target.key}, week {review.week_start}..{review.week_end}: {work}; "
        f"{len(review.escalations)} escalation rule(s) fired. {link}"
    )
    with transaction.atomic():
        outbound.post(channel, text, None)


def _review_maybe_complete(review: QuarantineReview) -> bool:
    """Mark the review done (``completed_at``, audited) once every item needing a disposition has a done
    one; call in a transaction. True when it became done now."""
    locked = QuarantineReview.objects.select_for_update().get(pk=review.pk)
    if locked.completed_at is not None:
        return False
    done = Disposition.objects.filter(item=OuterRef("pk"), state=Disposition.State.DONE)
    if ReviewItem.objects.filter(review=locked, needs_disposition=True).exclude(Exists(done)).exists():
        return False
    locked.completed_at = timezone.now()
    locked.save(update_fields=["completed_at"])
    review.completed_at = locked.completed_at
    decided = Disposition.objects.filter(item__review=locked, state=Disposition.State.DONE).count()
    audit_record(
        event="quarantine.review_completed",
        obj=locked,
        before={"status": "open"},
        after={"status": "done", "dispositions": decided},
    )
    return True


# ------------------------------------------------------------------------------------- dispositions


def _table_target(source: Target, table: str) -> Target:
    """The catalog's ``quarantine_table`` target of ``table`` on the source's connection; created (audited,
    key ``<source key>.<table>``) when the catalog has none yet: the table name comes from the source's own
    listing (a validated path segment), never from request text."""
    found = Target.objects.filter(connection=source.connection, kind="quarantine_table", locator__table=table).first()
    if found is not None:
        return found
    return target_create(
        key=f"{source.key}.{table.lower()}"[:200],
        kind="quarantine_table",
        connection=source.connection,
        locator={"table": table},
        pipeline=source.pipeline,
        display_name=f"{table} (quarantine)",
    )


def _item(item_id: Any) -> ReviewItem:
    try:
        pk = int(item_id)
    except (TypeError, ValueError):
        raise NotFound(f"no review item {item_id!r}") from None
    item = ReviewItem.objects.select_related("review__target__connection__environment").filter(pk=pk).first()
    if item is None:
        raise NotFound(f"no review item {item_id!r}")
    return item


def _date_param(params: dict[str, Any], name: str, default: date | None) -> date | None:
    value = params.get(name)
    if value in (None, ""):
        return default
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(f"'{name}' must be a date (YYYY-MM-DD), not {value!r}") from None


def disposition_request(
    *,
    actor: User,
    item_id: Any,
    kind: str,
    params: dict[str, Any] | None = None,
    note: str = "",
    channel: str | None = None,
) -> Disposition:
    """Decide what happens to one item's records.

    ``release``, ``discard`` and ``keep`` request their action on the item's table through the action path
    (preview, policy, approval in protected environments) with params from the item: its reason and the
    review's days (``params`` may narrow ``from_date``/``to_date`` and must give ``expires`` for keep; keep
    needs a ``note``). The idempotency key is derived from (review, item, kind) and the number of earlier
    failed tries, so a double submission returns the same disposition and a failed one can be decided again.
    The disposition is ``pending`` until the action ends (``disposition_record_outcome``).

    ``escalate`` opens an incident at once (severity high, alert type ``quarantine.high_rate``) with the
    evidence attached (counts per day, reason, sample keys, the rules that fired) and is done at once.
    """
    access.require_role(actor, "responder", "deciding on quarantined records", scope="actions:write")
    if kind not in Disposition.Kind.values:
        raise InvalidInput(f"unknown disposition {kind!r}; use one of {Disposition.Kind.values}")
    params = dict(params or {})
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise InvalidInput(f"'note' must be text of at most {MAX_NOTE} characters")
    note = note.strip()
    unknown = set(params) - {"from_date", "to_date", "expires"}
    if unknown:
        raise InvalidInput(
            f"unknown params {sorted(unknown)}: the table and reason come from the review item; "
            "give from_date, to_date (and expires for keep)"
        )
    item = _item(item_id)
    review = item.review
    live = Disposition.objects.filter(
        item=item, kind=kind, state__in=[Disposition.State.PENDING, Disposition.State.DONE]
    )
    existing = live.select_related("action").first()
    if existing is not None:
        if existing.state == Disposition.State.PENDING:
            return existing  # the same decision, already on its way
        raise Conflict(f"{item.table} / {item.reason!r} already has a {kind} disposition ({existing.pk})")
    with _channel(actor, channel):
        if kind == Disposition.Kind.ESCALATE:
            return _escalate(actor=actor, item=item, note=note)
        start = _date_param(params, "from_date", review.week_start)
        end = _date_param(params, "to_date", review.week_end)
        assert start is not None and end is not None
        if not review.week_start <= start <= end <= review.week_end:
            raise InvalidInput(
                f"the days must lie within the review's week {review.week_start}..{review.week_end}, from <= to"
            )
        action_params: dict[str, Any] = {
            "reason": item.reason,
            "from_date": start.isoformat(),
            "to_date": end.isoformat(),
        }
        expires: date | None = None
        if kind == Disposition.Kind.KEEP:
            expires = _date_param(params, "expires", None)
            if not note:
                raise InvalidInput("'note' is required to keep records: say why they stay in quarantine")
            if expires is None or expires <= _today():
                raise InvalidInput("'expires' is required to keep records: a date after today")
            action_params.update(note=note, expires=expires.isoformat())
        tries = Disposition.objects.filter(item=item, kind=kind, state=Disposition.State.FAILED).count()
        key = f"quarantine-{review.pk}-{item.pk}-{kind}-{tries}"
        reason = (
            f"{kind} quarantined records of {item.table} ({item.reason!r}, {start}..{end}) from review {review.pk}"
            + (f": {note}" if note else "")
        )[:MAX_NOTE]
        with transaction.atomic():
            table_target = _table_target(review.target, item.table)
            result = action_request(
                actor=actor,
                verb=DISPOSITION_VERBS[kind],
                target_key=table_target.key,
                params=action_params,
                reason=reason,
                idempotency_key=key,
            )
            if not result.created:
                found = Disposition.objects.filter(action=result.action).first()
                if found is not None:
                    return found
            disposition = Disposition.objects.create(
                item=item,
                kind=kind,
                state=Disposition.State.PENDING,
                note=note,
                expires=expires,
                decided_by_id=actor.pk,
                action=result.action,
            )
            audit_record(
                event="quarantine.disposition_requested",
                obj=disposition,
                after={**disposition.audit_state(), "action": str(result.action.id), "item": _item_label(item)},
                reason=note,
            )
    return disposition


def _item_label(item: ReviewItem) -> dict[str, Any]:
    return {"review": item.review_id, "item": item.pk, "table": item.table, "reason": item.reason}


def _evidence(item: ReviewItem) -> dict[str, Any]:
    """What an escalation carries: the item's counts, its table's days of the week, the sample keys and the
    escalation rules of the review that name this table or reason."""
    review = item.review
    table: dict[str, Any] = next((t for t in review.summary.get("tables", []) if t.get("table") == item.table), {})
    rules = [
        e for e in review.escalations if e.get("table") in (None, item.table) and e.get("reason") in (None, item.reason)
    ]
    return {
        "review": review.pk,
        "source": review.target.key,
        "table": item.table,
        "table_target": _table_target(review.target, item.table).key,
        "reason": item.reason,
        "week_start": review.week_start.isoformat(),
        "week_end": review.week_end.isoformat(),
        "count": item.count,
        "previous_week": item.previous_week,
        "new": item.new,
        "over_threshold": item.over_threshold,
        "threshold_pct": review.threshold_pct,
        "days": list(table.get("days", [])),
        "sample_keys": list(item.sample_keys)[:SAMPLE_KEYS_KEPT] or _sample_keys(item),
        "escalations": rules,
    }


def _sample_keys(item: ReviewItem) -> list[dict[str, Any]]:
    """The key columns of the first records of the item's (table, reason) in the review's week, read now
    (the weekly summary leaves sample keys out to stay fast). A source that cannot be read gives none:
    the escalation is not held up by it (the incident says so in its evidence)."""
    review = item.review
    try:
        found = item_sample(item=item, limit=SAMPLE_KEYS_KEPT)
    except (ConnectorError, InvalidInput) as exc:
        log.warning("no sample keys of %s / %r for review %s: %s", item.table, item.reason, review.pk, exc)
        return []
    return [{k: row.get(k) for k in found.key_columns} for row in found.rows]


def _escalate(*, actor: User, item: ReviewItem, note: str) -> Disposition:
    review = item.review
    evidence = _evidence(item)
    summary = (
        f"Quarantine escalation: {item.table} {item.reason!r}, {item.count} rows in week "
        f"{review.week_start}..{review.week_end}" + (" (new reason)" if item.new else "")
    )
    with transaction.atomic():
        opened = alert_ingest(
            source=ALERT_SOURCE,
            severity=Incident.Severity.HIGH,
            summary=summary[:300],
            target=review.target.key,
            alert_type=ALERT_TYPE,
            details={**evidence, "note": note, "escalated_by": context.current().actor_name},
            dedup_key=f"{review.target.key}:escalate:{review.pk}:{item.pk}",
        )
        disposition = Disposition.objects.create(
            item=item,
            kind=Disposition.Kind.ESCALATE,
            state=Disposition.State.DONE,
            note=note,
            decided_by_id=actor.pk,
            decided_at=timezone.now(),
            incident=opened.incident,
            counts={k: evidence[k] for k in ("count", "previous_week", "new", "over_threshold", "days")},
        )
        audit_record(
            event="quarantine.disposition_recorded",
            obj=disposition,
            after={**disposition.audit_state(), "incident": opened.incident.pk, "item": _item_label(item)},
            reason=note,
        )
        _review_maybe_complete(review)
    return disposition


OUTCOME_COUNTS = ("table", "reason", "from_date", "to_date", "rows", "files", "bytes", "days")


def disposition_record_outcome(*, action: ActionRun) -> Disposition | None:
    """Record the end of a disposition's action: ``done`` with the outcome's counts when it succeeded (and
    complete the review if that was the last item), ``failed`` otherwise. None when the action is no
    pending disposition's. Audited (``quarantine.disposition_recorded``)."""
    with transaction.atomic():
        disposition = (
            Disposition.objects.select_for_update()
            .select_related("item__review")
            .filter(action=action, state=Disposition.State.PENDING)
            .first()
        )
        if disposition is None:
            return None
        if action.state == ActionState.SUCCEEDED:
            details = (action.outcome or {}).get("details") or {}
            disposition.state = Disposition.State.DONE
            disposition.counts = {k: details[k] for k in OUTCOME_COUNTS if k in details}
        else:
            disposition.state = Disposition.State.FAILED
            disposition.counts = {"action_state": action.state, "error": action.error[:500]}
        disposition.decided_at = action.finished_at or timezone.now()
        disposition.save(update_fields=["state", "counts", "decided_at"])
        audit_record(
            event="quarantine.disposition_recorded",
            obj=disposition,
            before={"state": Disposition.State.PENDING},
            after={**disposition.audit_state(), "action": str(action.id), "item": _item_label(disposition.item)},
        )
        if disposition.state == Disposition.State.DONE:
            _review_maybe_complete(disposition.item.review)
    return disposition


# ----------------------------------------------------------------------------------------- markdown


_MARKUP = re.compile(r"([\\\[\]<>`|])")


def _md(value: Any) -> str:
    """Untrusted text (reasons and notes come from data and people) as one literal table cell: on one line,
    with the characters that open links, images, raw HTML, code or a new cell backslash-escaped (as the
    post-incident record does)."""
    return _MARKUP.sub(r"\\\1", " ".join(str(value).split()))


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def review_markdown(*, review: QuarantineReview) -> str:
    """The review's record as markdown, like the post-incident record: the week, the counts per table, the
    escalation rules that fired, and every disposition (who decided what, when, the approval, with which
    counts), then the items still waiting. A read: nothing is written."""
    from controlplane.quarantine.selectors import review_detail

    review = review_detail(review_id=review.pk)
    lines = [
        f"# Quarantine review: {_md(review.target.key)}, week {review.week_start} to {review.week_end}",
        "",
        f"- Environment: {_md(review.target.connection.environment.name)}",
        f"- Status: {review.status}",
        f"- Created: {_when(review.created_at)}"
        + (f" by action {review.created_by_action_id}" if review.created_by_action_id else ""),
        f"- Completed: {_when(review.completed_at)}",
        f"- Threshold: {review.threshold_pct}% of valid records",
        "",
        "## Tables",
        "",
        "| Table | Valid | Quarantined | Rate % | Growth % | Days over threshold |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    threshold = review.threshold_pct or 0.0
    for table in review.summary.get("tables", []):
        days = table.get("days", [])
        valid = sum(int(d.get("valid") or 0) for d in days)
        quarantined = sum(int(d.get("quarantined") or 0) for d in days)
        rate = f"{quarantined / valid * 100:.3f}" if valid else "—"
        over = sum(1 for d in days if d.get("rate") is not None and float(d["rate"]) > threshold)
        growth = table.get("growth")
        lines.append(
            f"| {_md(table.get('table'))} | {valid} | {quarantined} | {rate} | "
            f"{'—' if growth is None else growth} | {over} |"
        )
    lines += ["", "## Escalation rules that fired", ""]
    if review.escalations:
        for e in review.escalations:
            days = ", ".join(str(d) for d in e.get("days") or [])
            lines.append(
                f"- {_md(e.get('rule'))}: {_md(e.get('detail', ''))}"
                + (f" (table {_md(e['table'])})" if e.get("table") else "")
                + (f" (reason {_md(e['reason'])})" if e.get("reason") else "")
                + (f" on {days}" if days else "")
            )
    else:
        lines.append("None.")
    lines += [
        "",
        "## Dispositions",
        "",
        "| Table | Reason | Rows (week) | Decision | State | Decided by | Approved by | Decided at | Counts |",
        "|---|---|---:|---|---|---|---|---|---|",
    ]
    items = list(review.items.all())
    approvals = _approvals([d.action_id for i in items for d in i.dispositions.all() if d.action_id])
    waiting = []
    for item in items:
        dispositions = list(item.dispositions.all())
        if item.needs_disposition and not any(d.state == Disposition.State.DONE for d in dispositions):
            waiting.append(item)
        for d in dispositions:
            if d.incident_id:
                counts = f"incident INC-{d.incident_id}; {item.count} rows"
            else:
                counts = ", ".join(f"{k} {d.counts[k]}" for k in ("rows", "files", "bytes") if k in d.counts)
            lines.append(
                f"| {_md(item.table)} | {_md(item.reason)} | {item.count} | {d.kind}"
                + (f" (until {d.expires})" if d.expires else "")
                + (f": {_md(d.note)}" if d.note else "")
                + f" | {d.state} | {_md(d.decided_by.get_username())} | "
                f"{_md(approvals.get(d.action_id, '—')) if d.action_id else '—'} | {_when(d.decided_at)} | "
                f"{_md(counts) or '—'} |"
            )
    lines += ["", "## Waiting for a disposition", ""]
    if waiting:
        for item in waiting:
            why = "new reason" if item.new else "over the threshold"
            lines.append(f"- {_md(item.table)}: {_md(item.reason)} ({item.count} rows, {why})")
    else:
        lines.append("Nothing: every item over the threshold or new has a disposition.")
    return "\n".join(lines) + "\n"


def _approvals(action_ids: list[Any]) -> dict[Any, str]:
    from controlplane.actions.models import Approval

    out: dict[Any, str] = {}
    for a in Approval.objects.filter(action_id__in=action_ids).select_related("approver").order_by("decided_at"):
        out[a.action_id] = f"{a.approver.get_username()} ({a.decision} {_when(a.decided_at)})"
    return out


# ------------------------------------------------------------------------- breaches and escalations


def _existing_fingerprints(keys: list[str]) -> set[str]:
    # alert_ingest's fingerprint for a sender's dedup key is ``alert:<source>:<dedup_key>`` (its docstring)
    fingerprints = [f"alert:{ALERT_SOURCE}:{k}" for k in keys]
    return set(Incident.objects.filter(fingerprint__in=fingerprints).values_list("fingerprint", flat=True))


def breaches_open_incidents(*, target: Target, day: date | None = None) -> list[Incident]:
    """Open incidents for the source's threshold breaches and escalation rules up to ``day`` (default:
    yesterday, UTC): one per (table, day) over the threshold (medium; high above ``escalate_pct``), one per
    escalation rule (high, naming the rule) keyed by its table or reason and its first day. A breach or rule
    that already had an incident (open or resolved) opens none: a repeat run is harmless. Alert type
    ``quarantine.high_rate`` (runbook 003-quarantine-high-rate). The alert's ``details`` (the incident's
    ``details.details``) name ``kind`` (breach or escalation), ``source`` (the source's target key),
    ``table``, ``table_target`` (the table's catalog target key), ``date`` or ``rule``/``days``, and the
    counts. Returns the incidents opened now."""
    end = day or (_today() - timedelta(days=1))
    cfg = _config(target)
    connector = _connector(target)
    start = end - timedelta(days=max(cfg.escalate_days, 7) - 1)
    breaches = stats.breaches(connector.store, cfg, start=start, end=end)
    escalations = stats.escalations(connector.store, cfg, week_end=end)
    alerts: list[dict[str, Any]] = []
    tables = {b.table for b in breaches} | {e.table for e in escalations if e.table}
    with context.change_context(channel=Channel.SCHEDULE, actor_name="quarantine breaches"):
        table_targets = {t: _table_target(target, t).key for t in tables}
    for b in breaches:
        rate = float(b.rate or 0.0)
        alerts.append(
            {
                "key": f"{target.key}:breach:{b.table}:{b.date.isoformat()}",
                "severity": Incident.Severity.HIGH if rate > cfg.escalate_pct else Incident.Severity.MEDIUM,
                "summary": f"Quarantine rate {rate:.2f}% of {b.table} on {b.date} is over {cfg.threshold_pct}%",
                "details": {
                    "kind": "breach",
                    "source": target.key,
                    "table": b.table,
                    "table_target": table_targets[b.table],
                    "date": b.date.isoformat(),
                    "valid": b.valid,
                    "quarantined": b.quarantined,
                    "rate": b.rate,
                    "threshold_pct": cfg.threshold_pct,
                },
            }
        )
    for e in escalations:
        first = e.days[0].isoformat() if e.days else ""
        subject = e.table or "-"
        if e.rule == "new_reason":
            subject = f"{e.table or '-'}:{e.reason or '-'}"
        key = f"{target.key}:escalation:{e.rule}:{subject}" + (f":{first}" if e.rule == "rate_days" else "")
        if e.rule == "storage":
            key += f":{end.isoformat()}"
        alerts.append(
            {
                "key": key,
                "severity": Incident.Severity.HIGH,
                "summary": f"Quarantine escalation ({e.rule}) on {target.key}: {e.detail}",
                "details": {
                    "kind": "escalation",
                    "rule": e.rule,
                    "source": target.key,
                    "table": e.table,
                    "table_target": table_targets.get(e.table) if e.table else None,
                    "reason": e.reason,
                    "days": [d.isoformat() for d in e.days],
                    "detail": e.detail,
                },
            }
        )
    seen = _existing_fingerprints([a["key"] for a in alerts])
    opened: list[Incident] = []
    with context.change_context(channel=Channel.SCHEDULE, actor_name="quarantine breaches"):
        for a in alerts:
            if f"alert:{ALERT_SOURCE}:{a['key']}" in seen:
                continue
            result = alert_ingest(
                source=ALERT_SOURCE,
                severity=a["severity"],
                summary=a["summary"][:300],
                target=target.key,
                alert_type=ALERT_TYPE,
                details=a["details"],
                dedup_key=a["key"],
            )
            if result.created:
                opened.append(result.incident)
    return opened


# ------------------------------------------------------------------------------------------ schedule


def scheduler_actor() -> Any:
    """The account the schedule requests actions as: a responder that cannot log in (no usable password).
    Created on first use; an approver decides on its requests in protected environments as for anyone's."""
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=SCHEDULER_USERNAME, defaults={"is_active": True})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
        user.groups.add(Group.objects.get_or_create(name="responder")[0])
    return user


def schedule_save(*, schedule: ReviewSchedule) -> ReviewSchedule:
    """Save a schedule an admin edited, with its audit event (``quarantine.schedule.created``/``updated``,
    before and after) in the same transaction."""
    before = None
    if schedule.pk is not None:
        old = ReviewSchedule.objects.select_related("environment").filter(pk=schedule.pk).first()
        before = old.audit_state() if old is not None else None
    schedule.full_clean()
    with transaction.atomic():
        schedule.save()
        event = "quarantine.schedule.updated" if before is not None else "quarantine.schedule.created"
        audit_record(event=event, obj=schedule, before=before, after=schedule.audit_state())
    return schedule


def schedule_delete(*, schedule: ReviewSchedule) -> None:
    """Delete a schedule, audited (``quarantine.schedule.deleted``) in the same transaction."""
    with transaction.atomic():
        audit_record(event="quarantine.schedule.deleted", obj=schedule, before=schedule.audit_state())
        schedule.delete()


def quarantine_sources(*, environments: list[Environment] | None = None) -> list[Target]:
    """The ``quarantine`` targets (sources), of ``environments`` when given, with connection and environment."""
    qs = Target.objects.filter(kind="quarantine").select_related("connection__environment", "pipeline")
    if environments is not None:
        qs = qs.filter(connection__environment__in=environments)
    return list(qs.order_by("key"))


def _slot(schedule: ReviewSchedule, now: datetime) -> datetime:
    """This week's (Monday-based, UTC) moment of ``schedule``."""
    monday = (now - timedelta(days=now.weekday())).date()
    day = monday + timedelta(days=schedule.weekday)
    return datetime(day.year, day.month, day.day, schedule.hour, tzinfo=UTC)


def reviews_schedule_due(*, now: datetime | None = None) -> list[ActionRun]:
    """Request the reviews that are due: for each enabled schedule whose moment this week has passed, each
    quarantine source of its environment (every protected one when it names none) whose config says
    ``weekly_review``, the review of the last complete week, unless it exists. Once per week per source:
    the request's idempotency key is (source, week_end) for the scheduler account, so a later tick (or a
    second beat) returns the same action. A source the action path refuses (busy, unreachable) is logged and
    tried again on the next tick. Returns the review actions of this tick's due sources (a later tick of the
    same week finds the same actions)."""
    now = (now or timezone.now()).astimezone(UTC)
    week_end = last_week_end(now.date())
    environments: set[int] = set()
    every_protected = False
    for schedule in ReviewSchedule.objects.filter(enabled=True):
        if _slot(schedule, now) > now:
            continue
        if schedule.environment_id is None:
            every_protected = True
        else:
            environments.add(schedule.environment_id)
    if not environments and not every_protected:
        return []
    scope = Q(id__in=environments) | (Q(protected=True) if every_protected else Q(pk__in=[]))
    sources = quarantine_sources(environments=list(Environment.objects.filter(scope)))
    done = set(
        QuarantineReview.objects.filter(target__in=sources, week_end=week_end).values_list("target_id", flat=True)
    )
    actor = scheduler_actor()
    requested: list[ActionRun] = []
    for source in sources:
        if source.pk in done:
            continue
        try:
            if not _config(source).weekly_review:
                continue
            action = review_request(
                actor=actor,
                target_key=source.key,
                week_end=week_end,
                channel=Channel.SCHEDULE,
                idempotency_key=f"quarantine-review:{source.key}:{week_end.isoformat()}",
            )
        except (Conflict, InvalidInput) as exc:
            log.warning("scheduled quarantine review of %s not requested: %s", source.key, exc)
            continue
        except Exception:
            log.exception("scheduled quarantine review of %s not requested", source.key)
            continue
        requested.append(action)
    return requested


def cleanup_request(*, target: Target, as_of: date | None = None) -> ActionRun | None:
    """Request the retention cleanup of one source (``quarantine-cleanup``, the environment's TTL from the
    source's config) as the scheduler, once per day (idempotency key (source, day)). Previewed first: a plan
    with nothing to delete requests nothing (None). In a protected environment it waits for an approver."""
    as_of = as_of or _today()
    params = {"as_of": as_of.isoformat()}
    plan = action_plan(verb=CLEANUP_VERB, target_key=target.key, params=params).plan
    if not any(plan.counts.get(k) for k in ("files", "partitions", "rows", "bytes")):
        return None
    retention = _config(target).retention_days
    actor = scheduler_actor()
    with context.change_context(channel=Channel.SCHEDULE, user=actor):
        result = action_request(
            actor=actor,
            verb=CLEANUP_VERB,
            target_key=target.key,
            params=params,
            reason=f"retention cleanup: quarantined partitions older than {retention} days (environment TTL)",
            idempotency_key=f"quarantine-cleanup:{target.key}:{as_of.isoformat()}",
        )
    return result.action
