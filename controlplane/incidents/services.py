"""Opening incidents from alerts, deduplicating repeats, and keeping their timelines."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from pydantic import ValidationError

from connectors.base import ConnectorError
from controlplane.access import require_role
from controlplane.audit import context
from controlplane.audit.services import audit_record
from controlplane.catalog.models import Pipeline, Target
from controlplane.catalog.services import connector_for, pydantic_message, target_ref
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.incidents.alerts import AirflowFailureAlert, log_url_allowed, url_origin
from controlplane.incidents.models import Incident, IncidentEvent
from controlplane.incidents.signals import incident_changed, incident_opened

log = logging.getLogger(__name__)

# Seed severities: a failed DAG is high, a freshness breach medium, a storage quota low.
AIRFLOW_FAILURE_SEVERITY = Incident.Severity.HIGH
# Alert entries an incident's timeline holds (the first alert and new runs or tries of the same failure,
# each with its log); later repeats only raise ``alert_count`` and ``last_alert_at``.
MAX_ALERT_EVENTS = 10
MAX_EVENT_MESSAGE = 600
MAX_LOG_CHARS = 8_000  # the end of a fetched log kept on the timeline


@dataclass(frozen=True)
class AlertResult:
    incident: Incident
    created: bool


def incident_event_record(
    *, incident_id: int, kind: str, message: str, data: dict[str, Any] | None = None
) -> IncidentEvent:
    """Add an entry to an incident's timeline, by the actor of the current change context."""
    ctx = context.current()
    user = ctx.user if ctx.user is not None and ctx.user.is_authenticated else None
    return IncidentEvent.objects.create(
        incident_id=incident_id,
        kind=kind,
        message=message,
        actor_id=user.pk if user is not None else None,
        actor_name=ctx.actor_name,
        data=data or {},
    )


def _event(incident: Incident, kind: str, message: str, data: dict[str, Any] | None = None) -> IncidentEvent:
    return incident_event_record(incident_id=incident.pk, kind=kind, message=message, data=data)


def _dag_targets(alert: AirflowFailureAlert) -> list[Target]:
    """Catalog DAG targets for the alerting DAG; when the alert names its Airflow, prefer that one's."""
    targets = list(
        Target.objects.select_related("connection", "pipeline").filter(kind="dag", locator__dag_id=alert.dag_id)
    )
    if alert.base_url and len(targets) > 1:
        base = url_origin(str(alert.base_url))
        same = [t for t in targets if url_origin(t.connection.config.get("base_url")) == base]
        targets = same or targets
    return targets


def alert_ingest_airflow(*, payload: Any) -> AlertResult:
    """Open an incident for a failed Airflow task, or count the alert on the open incident with the same
    fingerprint (Airflow, DAG, task, logical day). Invalid payloads raise InvalidInput and write nothing."""
    if not isinstance(payload, dict):
        raise InvalidInput("the alert must be a JSON object")
    try:
        alert = AirflowFailureAlert.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInput(f"invalid Airflow alert: {pydantic_message(exc)}") from None
    try:
        with transaction.atomic():
            return _open_or_repeat(alert)
    except IntegrityError:
        # A concurrent alert opened it first: the partial unique index said so. Now it is a repeat.
        with transaction.atomic():
            return _open_or_repeat(alert)


def _fetch_log_on_commit(incident: Incident, alert: AirflowFailureAlert) -> None:
    if not alert.task_id:
        return
    incident_id = incident.pk
    ref = {"task_id": alert.task_id, "run_id": alert.run_id, "try_number": alert.try_number}

    def send() -> None:
        from controlplane.incidents.tasks import attach_alert_log

        try:
            attach_alert_log.apply_async(args=(incident_id, ref))
        except Exception:
            log.exception("could not queue the log fetch for incident %s", incident_id)

    transaction.on_commit(send)


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _alert_summary(alert: AirflowFailureAlert) -> dict[str, Any]:
    """What a timeline entry keeps of an alert: which run and try, no free text beyond the run id."""
    return {
        "run_id": alert.run_id,
        "try_number": alert.try_number,
        "logical_date": alert.logical_date.isoformat() if alert.logical_date else None,
        "state": alert.state,
    }


def _base_urls(targets: list[Target]) -> list[Any]:
    return [t.connection.config.get("base_url") for t in targets]


def _open_or_repeat(alert: AirflowFailureAlert) -> AlertResult:
    now = timezone.now()
    open_incident = (
        Incident.objects.select_for_update()
        .filter(fingerprint=alert.fingerprint)
        .exclude(status=Incident.Status.RESOLVED)
        .first()
    )
    message = f"{alert.title}: {alert.exception[:300]}" if alert.exception else alert.title
    if open_incident is not None:
        return _repeat(open_incident, alert, message, now)

    targets = _dag_targets(alert)
    pipeline = next((t.pipeline for t in targets if t.pipeline_id), None)
    pipeline = pipeline or Pipeline.objects.filter(name=alert.dag_id).first()
    details = alert.model_dump(mode="json")
    if alert.log_url is not None and not log_url_allowed(str(alert.log_url), _base_urls(targets)):
        del details["log_url"]
        message += f" (log link dropped: {url_origin(str(alert.log_url))} is not this DAG's Airflow in the catalog)"
    with transaction.atomic():  # a savepoint: the unique index may refuse a concurrent twin
        incident = Incident.objects.create(
            title=alert.title,
            severity=AIRFLOW_FAILURE_SEVERITY,
            fingerprint=alert.fingerprint,
            alert_type="airflow.task_failed" if alert.task_id else "airflow.dag_failed",
            source="airflow",
            summary=alert.exception,
            details=details,
            pipeline=pipeline,
            alert_count=1,
            last_alert_at=now,
        )
    incident.targets.set(targets)
    _event(incident, IncidentEvent.Kind.ALERT, _bounded(message, MAX_EVENT_MESSAGE), {"alert": _alert_summary(alert)})
    audit_record(
        event="incident.opened",
        obj=incident,
        after={
            "title": incident.title,
            "severity": incident.severity,
            "fingerprint": incident.fingerprint,
            "targets": [t.key for t in targets],
        },
    )
    # First: a receiver's work on commit (the Slack message) then comes before the log fetch it shows.
    incident_opened.send(sender=Incident, incident_id=incident.pk)
    _fetch_log_on_commit(incident, alert)
    return AlertResult(incident, created=True)


def _repeat(incident: Incident, alert: AirflowFailureAlert, message: str, now: Any) -> AlertResult:
    """Count a repeat of an open incident's failure. A run or try not seen yet also gets a timeline entry,
    an audit event and its log fetched, up to MAX_ALERT_EVENTS entries; a replay of one already listed, or
    any repeat past the cap, is only counted (``alert_count``, ``last_alert_at``)."""
    Incident.objects.filter(pk=incident.pk).update(alert_count=F("alert_count") + 1, last_alert_at=now)
    incident.refresh_from_db(fields=["alert_count", "last_alert_at", "updated_at"])
    listed = list(
        IncidentEvent.objects.filter(incident=incident, kind=IncidentEvent.Kind.ALERT, data__has_key="alert")
        .values_list("data__alert__run_id", "data__alert__try_number")
        .order_by()[:MAX_ALERT_EVENTS]
    )
    if (alert.run_id, alert.try_number) in listed or len(listed) >= MAX_ALERT_EVENTS:
        return AlertResult(incident, created=False)
    try_text = f", try {alert.try_number}" if alert.try_number is not None else ""
    text = f"repeated alert (#{incident.alert_count}{try_text}): {message}"
    if len(listed) + 1 >= MAX_ALERT_EVENTS:
        text = f"{_bounded(text, MAX_EVENT_MESSAGE - 60)} (further repeats are counted, not listed)"
    _event(incident, IncidentEvent.Kind.ALERT, _bounded(text, MAX_EVENT_MESSAGE), {"alert": _alert_summary(alert)})
    audit_record(event="incident.alert_repeated", obj=incident, after={"alert_count": incident.alert_count})
    _fetch_log_on_commit(incident, alert)
    return AlertResult(incident, created=False)


def incident_attach_log(*, incident_id: int, alert: dict[str, Any]) -> IncidentEvent | None:
    """Fetch the end of the failed try's log from the system that alerted and put it on the timeline
    (run by a worker after the alert was taken, so the callback is answered at once)."""
    incident = Incident.objects.filter(pk=incident_id).first()
    if incident is None or not alert.get("task_id"):
        return None
    target = incident.targets.select_related("connection").filter(kind="dag").first()
    if target is None:
        return None
    ref = {"dag_run_id": alert["run_id"], "task_id": alert["task_id"], "try_number": alert.get("try_number") or 1}
    try:
        text = connector_for(target.connection).logs(target_ref(target), ref)
    except ConnectorError as exc:
        text = f"(log unavailable: {exc.message})"
    text = text if len(text) <= MAX_LOG_CHARS else "…" + text[-(MAX_LOG_CHARS - 1) :]
    with context.change_context(channel=context.Channel.SYSTEM, actor_name="log fetcher"), transaction.atomic():
        Incident.objects.filter(pk=incident_id).update(details={**incident.details, "log_excerpt": text})
        incident_changed.send(sender=Incident, incident_id=incident_id, change="log")
        return _event(
            incident,
            IncidentEvent.Kind.ALERT,
            f"log of {alert['task_id']} try {ref['try_number']}",
            {"log": text, **ref},
        )


# ------------------------------------------------------------------------------------ people's changes

MAX_COMMENT = 10_000
MAX_NOTE = 2_000

# Which statuses each move starts from: forward only, one step at a time, and resolve from any open one.
_TRANSITIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    # to: (allowed from, the verb people read, the time field it stamps)
    Incident.Status.ACKNOWLEDGED: ((Incident.Status.TRIGGERED,), "acknowledge", "acknowledged_at"),
    Incident.Status.MITIGATED: ((Incident.Status.ACKNOWLEDGED,), "mark mitigated", "mitigated_at"),
    Incident.Status.RESOLVED: (
        (Incident.Status.TRIGGERED, Incident.Status.ACKNOWLEDGED, Incident.Status.MITIGATED),
        "resolve",
        "resolved_at",
    ),
}


def incident_allowed_statuses(incident: Incident) -> list[str]:
    """The statuses ``incident`` may move to next (what the page offers buttons for)."""
    return [to for to, (sources, _, _) in _TRANSITIONS.items() if incident.status in sources]


def _clean_text(value: Any, *, what: str, limit: int, required: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"the {what} must be text")
    text = value.strip()
    if required and not text:
        raise InvalidInput(f"the {what} is empty: write something")
    if len(text) > limit:
        raise InvalidInput(f"the {what} is {len(text)} characters long; at most {limit} are allowed")
    return text


def _actor_name(actor: Any) -> str:
    return str(actor.get_username()) if actor is not None and actor.is_authenticated else context.current().actor_name


def _locked(incident_id: int) -> Incident:
    incident = Incident.objects.select_for_update().filter(pk=incident_id).first()
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    return incident


def _move(*, actor: Any, incident_id: int, to: str, note: Any) -> Incident:
    """Move an incident's status one allowed step, with a timeline entry and an audit event in the same
    transaction. Refusals (role, jump, bad note) raise before anything is written or roll it back."""
    sources, verb, stamp = _TRANSITIONS[to]
    require_role(actor, "responder", f"changing an incident's status ({verb})")
    text = _clean_text(note, what="note", limit=MAX_NOTE, required=False)
    with transaction.atomic():
        incident = _locked(incident_id)
        before = incident.status
        if before not in sources:
            if before == Incident.Status.RESOLVED:
                raise Conflict(f"INC-{incident.pk} is already resolved; nothing to {verb}")
            if before == to:
                raise Conflict(f"INC-{incident.pk} is already {to}")
            need = " or ".join(sources)
            raise Conflict(f"INC-{incident.pk} is {before}: only a {need} incident can be moved to {to} ({verb})")
        now = timezone.now()
        incident.status = to
        setattr(incident, stamp, now)
        incident.save(update_fields=["status", stamp, "updated_at"])
        name = _actor_name(actor)
        IncidentEvent.objects.create(
            incident=incident,
            kind=IncidentEvent.Kind.STATUS,
            message=f"{name} changed the status from {before} to {to}" + (f": {text}" if text else ""),
            actor=actor if actor is not None and actor.is_authenticated else None,
            actor_name=name,
            data={"from": before, "to": to, "note": text},
        )
        audit_record(
            event=f"incident.{to}",
            obj=incident,
            before={"status": before},
            after={"status": to, stamp: now.isoformat()},
            reason=text,
        )
        incident_changed.send(sender=Incident, incident_id=incident.pk, change="status", status=to, actor=name)
    return incident


def incident_acknowledge(*, actor: Any, incident_id: int, note: str = "") -> Incident:
    """Someone is on it: triggered -> acknowledged (responder or higher)."""
    return _move(actor=actor, incident_id=incident_id, to=Incident.Status.ACKNOWLEDGED, note=note)


def incident_mitigate(*, actor: Any, incident_id: int, note: str = "") -> Incident:
    """The impact is contained: acknowledged -> mitigated (responder or higher)."""
    return _move(actor=actor, incident_id=incident_id, to=Incident.Status.MITIGATED, note=note)


def incident_resolve(*, actor: Any, incident_id: int, note: str = "") -> Incident:
    """Fixed: any open status -> resolved (responder or higher). A new alert with the same fingerprint
    opens a new incident from then on."""
    return _move(actor=actor, incident_id=incident_id, to=Incident.Status.RESOLVED, note=note)


def incident_comment(*, actor: Any, incident_id: int, text: Any) -> IncidentEvent:
    """Add a comment (markdown, at most MAX_COMMENT characters) to the timeline (responder or higher).
    Comments are allowed on resolved incidents too: findings often come after the fix."""
    require_role(actor, "responder", "commenting on an incident")
    body = _clean_text(text, what="comment", limit=MAX_COMMENT, required=True)
    with transaction.atomic():
        incident = _locked(incident_id)
        name = _actor_name(actor)
        event = IncidentEvent.objects.create(
            incident=incident,
            kind=IncidentEvent.Kind.COMMENT,
            message=body,
            actor=actor if actor is not None and actor.is_authenticated else None,
            actor_name=name,
        )
        Incident.objects.filter(pk=incident.pk).update(updated_at=timezone.now())
        audit_record(event="incident.commented", obj=incident, after={"comment": body, "event_id": event.pk})
    return event
