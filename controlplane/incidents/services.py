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
from controlplane.actions.policy import require_role
from controlplane.actions.services import target_ref
from controlplane.audit import context
from controlplane.audit.services import audit_record
from controlplane.catalog.models import Pipeline, Target
from controlplane.catalog.services import connector_for, pydantic_message
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.incidents.alerts import AirflowFailureAlert
from controlplane.incidents.models import Incident, IncidentEvent

log = logging.getLogger(__name__)

# Seed severities: a failed DAG is high, a freshness breach medium, a storage quota low.
AIRFLOW_FAILURE_SEVERITY = Incident.Severity.HIGH


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
        base = str(alert.base_url).rstrip("/")
        same = [t for t in targets if str(t.connection.config.get("base_url", "")).rstrip("/") == base]
        targets = same or targets
    return targets


def alert_ingest_airflow(*, payload: Any) -> AlertResult:
    """Open an incident for a failed Airflow task, or add the alert to the open incident with the same
    fingerprint (DAG, task, run). Invalid payloads raise InvalidInput and write nothing."""
    if not isinstance(payload, dict):
        raise InvalidInput("the alert must be a JSON object")
    try:
        alert = AirflowFailureAlert.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInput(f"invalid Airflow alert: {pydantic_message(exc)}") from None
    data = alert.model_dump(mode="json")
    try:
        with transaction.atomic():
            return _open_or_repeat(alert, data)
    except IntegrityError:
        # A concurrent alert opened it first: the partial unique index said so. Now it is a repeat.
        with transaction.atomic():
            return _open_or_repeat(alert, data)


def _fetch_log_on_commit(incident: Incident, data: dict[str, Any]) -> None:
    incident_id = incident.pk

    def send() -> None:
        from controlplane.incidents.tasks import attach_alert_log

        try:
            attach_alert_log.apply_async(args=(incident_id, data))
        except Exception:
            log.exception("could not queue the log fetch for incident %s", incident_id)

    transaction.on_commit(send)


def _open_or_repeat(alert: AirflowFailureAlert, data: dict[str, Any]) -> AlertResult:
    now = timezone.now()
    open_incident = (
        Incident.objects.select_for_update()
        .filter(fingerprint=alert.fingerprint)
        .exclude(status=Incident.Status.RESOLVED)
        .first()
    )
    message = f"{alert.title}: {alert.exception[:300]}" if alert.exception else alert.title
    if open_incident is not None:
        Incident.objects.filter(pk=open_incident.pk).update(alert_count=F("alert_count") + 1, last_alert_at=now)
        open_incident.refresh_from_db()
        _event(
            open_incident, IncidentEvent.Kind.ALERT, f"repeated alert (#{open_incident.alert_count}): {message}", data
        )
        audit_record(
            event="incident.alert_repeated", obj=open_incident, after={"alert_count": open_incident.alert_count}
        )
        _fetch_log_on_commit(open_incident, data)
        return AlertResult(open_incident, created=False)

    targets = _dag_targets(alert)
    pipeline = next((t.pipeline for t in targets if t.pipeline_id), None)
    pipeline = pipeline or Pipeline.objects.filter(name=alert.dag_id).first()
    with transaction.atomic():  # a savepoint: the unique index may refuse a concurrent twin
        incident = Incident.objects.create(
            title=alert.title,
            severity=AIRFLOW_FAILURE_SEVERITY,
            fingerprint=alert.fingerprint,
            alert_type="airflow.task_failed" if alert.task_id else "airflow.dag_failed",
            source="airflow",
            summary=alert.exception,
            details=data,
            pipeline=pipeline,
            alert_count=1,
            last_alert_at=now,
        )
    incident.targets.set(targets)
    _event(incident, IncidentEvent.Kind.ALERT, message, data)
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
    _fetch_log_on_commit(incident, data)
    return AlertResult(incident, created=True)


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
    with context.change_context(channel=context.Channel.SYSTEM, actor_name="log fetcher"), transaction.atomic():
        Incident.objects.filter(pk=incident_id).update(details={**incident.details, "log_excerpt": text})
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
