"""Opening incidents from alerts, deduplicating repeats, and keeping their timelines."""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from pydantic import ValidationError

from connectors.base import Connector, ConnectorError
from connectors.registry import get_connector_class
from controlplane.access import require_role
from controlplane.audit import context
from controlplane.audit.services import audit_record, redact
from controlplane.catalog.models import Connection, Pipeline, Target
from controlplane.catalog.selectors import target_get
from controlplane.catalog.services import connector_for, pydantic_message, target_ref
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.incidents.alerts import MAX_FINGERPRINT, AirflowFailureAlert, log_url_allowed, url_origin
from controlplane.incidents.models import Incident, IncidentEvent
from controlplane.incidents.signals import incident_changed, incident_opened

log = logging.getLogger(__name__)
T = TypeVar("T")

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


@dataclass(frozen=True)
class IncomingAlert:
    """One alert as every intake (Airflow callback, generic JSON, Alertmanager) hands it to the one path that
    opens an incident or counts a repeat on the open one (``_alert_take``).

    ``entry`` is what its timeline entry keeps (small, no free text); ``occurrence`` names the keys of
    ``entry`` that tell a new occurrence (a new run, try or start) from a replay of one already listed."""

    source: str
    alert_type: str
    fingerprint: str
    severity: str
    title: str
    summary: str
    message: str
    entry: dict[str, Any]
    occurrence: tuple[str, ...]
    repeat_note: str = ""  # added to a repeat's entry, e.g. ", try 2"


@dataclass(frozen=True)
class AlertScope:
    """What an alert that opens an incident links to and keeps: read only when it opens one."""

    pipeline: Pipeline | None
    targets: list[Target]
    details: dict[str, Any]
    note: str = ""  # appended to the opening entry (e.g. a link that was dropped)


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


def _with_retry(take: Callable[[], T]) -> T:
    """Run ``take`` in a transaction; when a concurrent alert opened the same incident first (the partial
    unique index refused the twin), run it again: now it is a repeat."""
    try:
        with transaction.atomic():
            return take()
    except IntegrityError:
        with transaction.atomic():
            return take()


def alert_ingest_airflow(*, payload: Any) -> AlertResult:
    """Open an incident for a failed Airflow task, or count the alert on the open incident with the same
    fingerprint (Airflow, DAG, task, logical day). Invalid payloads raise InvalidInput and write nothing."""
    if not isinstance(payload, dict):
        raise InvalidInput("the alert must be a JSON object")
    try:
        alert = AirflowFailureAlert.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInput(f"invalid Airflow alert: {pydantic_message(exc)}") from None
    message = f"{alert.title}: {alert.exception[:300]}" if alert.exception else alert.title
    incoming = IncomingAlert(
        source="airflow",
        alert_type="airflow.task_failed" if alert.task_id else "airflow.dag_failed",
        fingerprint=alert.fingerprint,
        severity=AIRFLOW_FAILURE_SEVERITY,
        title=alert.title,
        summary=alert.exception,
        message=message,
        entry=_alert_summary(alert),
        occurrence=("run_id", "try_number"),
        repeat_note=f", try {alert.try_number}" if alert.try_number is not None else "",
    )

    def scope() -> AlertScope:
        targets = _dag_targets(alert)
        pipeline = next((t.pipeline for t in targets if t.pipeline_id), None)
        pipeline = pipeline or Pipeline.objects.filter(name=alert.dag_id).first()
        details = alert.model_dump(mode="json")
        note = ""
        if alert.log_url is not None and not log_url_allowed(str(alert.log_url), _base_urls(targets)):
            del details["log_url"]
            note = f" (log link dropped: {url_origin(str(alert.log_url))} is not this DAG's Airflow in the catalog)"
        return AlertScope(pipeline=pipeline, targets=targets, details=details, note=note)

    return _with_retry(lambda: _alert_take(incoming, scope, lambda incident: _fetch_log_on_commit(incident, alert)))


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


def _open_incident_locked(fingerprint: str) -> Incident | None:
    return (
        Incident.objects.select_for_update()
        .filter(fingerprint=fingerprint)
        .exclude(status=Incident.Status.RESOLVED)
        .first()
    )


def _alert_take(
    alert: IncomingAlert, scope: Callable[[], AlertScope], on_listed: Callable[[Incident], None] | None = None
) -> AlertResult:
    """The one way an alert opens an incident or counts on the open one with its fingerprint (call it in a
    transaction). ``scope`` is read only to open one; ``on_listed`` runs for each alert given a timeline
    entry (the opening one and new occurrences), e.g. to fetch its log."""
    now = timezone.now()
    open_incident = _open_incident_locked(alert.fingerprint)
    if open_incident is not None:
        return _repeat(open_incident, alert, now, on_listed)
    found = scope()
    with transaction.atomic():  # a savepoint: the unique index may refuse a concurrent twin
        incident = Incident.objects.create(
            title=alert.title[:300],
            severity=alert.severity,
            fingerprint=alert.fingerprint,
            alert_type=alert.alert_type,
            source=alert.source,
            summary=alert.summary,
            details=found.details,
            pipeline=found.pipeline,
            alert_count=1,
            last_alert_at=now,
        )
    incident.targets.set(found.targets)
    message = _bounded(alert.message + found.note, MAX_EVENT_MESSAGE)
    _event(incident, IncidentEvent.Kind.ALERT, message, {"alert": alert.entry})
    audit_record(
        event="incident.opened",
        obj=incident,
        after={
            "title": incident.title,
            "severity": incident.severity,
            "fingerprint": incident.fingerprint,
            "source": incident.source,
            "targets": [t.key for t in found.targets],
        },
    )
    # First: a receiver's work on commit (the Slack message) then comes before the log fetch it shows.
    incident_opened.send(sender=Incident, incident_id=incident.pk)
    if on_listed is not None:
        on_listed(incident)
    return AlertResult(incident, created=True)


def _listed_entries(incident: Incident) -> list[dict[str, Any]]:
    """The alert entries already on the incident's timeline (at most MAX_ALERT_EVENTS are ever written)."""
    rows = (
        IncidentEvent.objects.filter(incident=incident, kind=IncidentEvent.Kind.ALERT, data__has_key="alert")
        .values_list("data__alert", flat=True)
        .order_by()[:MAX_ALERT_EVENTS]
    )
    return [row for row in rows if isinstance(row, dict)]


def _already_listed(listed: list[dict[str, Any]], alert: IncomingAlert) -> bool:
    return any(all(row.get(k) == alert.entry.get(k) for k in alert.occurrence) for row in listed)


def _repeat(
    incident: Incident, alert: IncomingAlert, now: Any, on_listed: Callable[[Incident], None] | None
) -> AlertResult:
    """Count a repeat of an open incident's failure. An occurrence not seen yet also gets a timeline entry,
    an audit event and ``on_listed``, up to MAX_ALERT_EVENTS entries; a replay of one already listed, or
    any repeat past the cap, is only counted (``alert_count``, ``last_alert_at``)."""
    Incident.objects.filter(pk=incident.pk).update(alert_count=F("alert_count") + 1, last_alert_at=now)
    incident.refresh_from_db(fields=["alert_count", "last_alert_at", "updated_at"])
    listed = _listed_entries(incident)
    if _already_listed(listed, alert) or len(listed) >= MAX_ALERT_EVENTS:
        return AlertResult(incident, created=False)
    text = f"repeated alert (#{incident.alert_count}{alert.repeat_note}): {alert.message}"
    if len(listed) + 1 >= MAX_ALERT_EVENTS:
        text = f"{_bounded(text, MAX_EVENT_MESSAGE - 60)} (further repeats are counted, not listed)"
    _event(incident, IncidentEvent.Kind.ALERT, _bounded(text, MAX_EVENT_MESSAGE), {"alert": alert.entry})
    audit_record(event="incident.alert_repeated", obj=incident, after={"alert_count": incident.alert_count})
    if on_listed is not None:
        on_listed(incident)
    return AlertResult(incident, created=False)


# ------------------------------------------------------------------------------- generic JSON alerts

GENERIC_FINGERPRINT_PREFIX = "alert"


def _fingerprint(*parts: str) -> str:
    key = ":".join(parts)
    if len(key) > MAX_FINGERPRINT:
        return f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def _closest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=3, cutoff=0.5)
    return f"; closest: {', '.join(close)}" if close else ""


def _catalog_scope(*, pipeline: str | None, target: str | None) -> tuple[Pipeline | None, Target | None]:
    """The pipeline (by name) and target (by key) an alert names; InvalidInput naming an unknown one and
    the closest known names."""
    found_pipeline = None
    if pipeline:
        found_pipeline = Pipeline.objects.filter(name=pipeline).first()
        if found_pipeline is None:
            names = list(Pipeline.objects.order_by("name").values_list("name", flat=True)[:5000])
            raise InvalidInput(
                f"unknown pipeline {pipeline!r}{_closest(pipeline, names)}",
                details={"fields": {"pipeline": ["not in the catalog"]}},
            )
    found_target = None
    if target:
        try:
            found_target = target_get(target)
        except NotFound:
            keys = list(Target.objects.order_by("key").values_list("key", flat=True)[:5000])
            raise InvalidInput(
                f"unknown target {target!r}{_closest(target, keys)}",
                details={"fields": {"target": ["not in the catalog"]}},
            ) from None
    if found_pipeline and found_target and found_target.pipeline_id not in (None, found_pipeline.pk):
        raise InvalidInput(
            f"target {target!r} belongs to pipeline {found_target.pipeline.name!r}, not {pipeline!r}",  # type: ignore[union-attr]
            details={"fields": {"target": ["of another pipeline"]}},
        )
    return found_pipeline, found_target


def alert_ingest(
    *,
    source: str,
    severity: str,
    summary: str,
    pipeline: str | None = None,
    target: str | None = None,
    alert_type: str = "",
    details: dict[str, Any] | None = None,
    dedup_key: str | None = None,
    occurred_at: datetime | None = None,
) -> AlertResult:
    """A generic alert from any monitoring system or bot (``POST /api/v1/alerts``): opens an incident, or
    counts it on the open one with the same fingerprint. The fingerprint is ``alert:<source>:<dedup_key>``
    when the sender gives a key, else ``alert:<source>:<alert_type>:<pipeline>:<target>``: the same source
    reporting the same kind of problem on the same thing is one incident until it is resolved.

    The pipeline (by name) or target (by key) must be in the catalog: an unknown one is refused naming it
    (and the closest known names), before anything is written."""
    if not (pipeline or target):
        raise InvalidInput(
            "name the pipeline or the target the alert is about", details={"fields": {"pipeline": ["required"]}}
        )
    if severity not in Incident.Severity.values:
        raise InvalidInput(f"unknown severity {severity!r}; use one of {Incident.Severity.values}")
    found_pipeline, found_target = _catalog_scope(pipeline=pipeline, target=target)
    found_pipeline = found_pipeline or (found_target.pipeline if found_target else None)
    kind = alert_type or f"{source}.alert"
    if dedup_key:
        fingerprint = _fingerprint(GENERIC_FINGERPRINT_PREFIX, source, dedup_key)
    else:
        fingerprint = _fingerprint(GENERIC_FINGERPRINT_PREFIX, source, kind, pipeline or "-", target or "-")
    when = occurred_at.isoformat() if occurred_at else None
    payload = {
        "source": source,
        "alert_type": kind,
        "severity": severity,
        "summary": summary,
        "pipeline": pipeline,
        "target": target,
        "dedup_key": dedup_key,
        "occurred_at": when,
        "details": details or {},
    }
    incoming = IncomingAlert(
        source=source,
        alert_type=kind,
        fingerprint=fingerprint,
        severity=severity,
        title=summary,
        summary=summary,
        message=f"{source}: {summary}",
        entry={"occurred_at": when, "severity": severity},
        occurrence=("occurred_at",),
    )
    scope = AlertScope(pipeline=found_pipeline, targets=[found_target] if found_target else [], details=payload)
    return _with_retry(lambda: _alert_take(incoming, lambda: scope))


# ---------------------------------------------------------------------------- Prometheus Alertmanager

# Alertmanager ``severity`` label -> Incident severity; any other value (or none) is ALERTMANAGER_DEFAULT.
ALERTMANAGER_SEVERITY = {
    "critical": Incident.Severity.CRITICAL,
    "page": Incident.Severity.CRITICAL,
    "high": Incident.Severity.HIGH,
    "error": Incident.Severity.HIGH,
    "major": Incident.Severity.HIGH,
    "warning": Incident.Severity.MEDIUM,
    "warn": Incident.Severity.MEDIUM,
    "medium": Incident.Severity.MEDIUM,
    "minor": Incident.Severity.LOW,
    "low": Incident.Severity.LOW,
    "info": Incident.Severity.LOW,
    "none": Incident.Severity.LOW,
}
ALERTMANAGER_DEFAULT = Incident.Severity.MEDIUM


@dataclass(frozen=True)
class AlertmanagerResult:
    """One alert of a webhook: the incident it opened, counted on or noted on (None: a resolved alert with
    no open incident), and what was done (``opened``, ``counted``, ``noted``, ``no_open_incident``)."""

    fingerprint: str
    status: str
    incident: Incident | None
    outcome: str


def _am_fingerprint(alert: Mapping[str, Any]) -> str:
    """Alertmanager's own fingerprint of the alert's label set, or the same idea computed here."""
    given = str(alert.get("fingerprint") or "")
    if given:
        return given
    labels = sorted((str(k), str(v)) for k, v in (alert.get("labels") or {}).items())
    return hashlib.sha256(json.dumps(labels).encode()).hexdigest()[:16]


def _am_scope(labels: Mapping[str, str]) -> tuple[Pipeline | None, list[Target], str]:
    """The catalog pipeline and target the ``pipeline`` and ``target`` labels name. An unknown one does not
    refuse the alert (Alertmanager drops a notification answered 4xx, and an alert lost is worse than one
    unlinked): the incident opens without the link and its first entry says so."""
    notes = []
    pipeline = None
    if name := labels.get("pipeline"):
        pipeline = Pipeline.objects.filter(name=name).first()
        if pipeline is None:
            notes.append(f"pipeline label {name[:120]!r} is not in the catalog")
    targets: list[Target] = []
    if key := labels.get("target"):
        try:
            targets = [target_get(key)]
        except NotFound:
            notes.append(f"target label {key[:200]!r} is not in the catalog")
    if pipeline is None and targets and targets[0].pipeline_id:
        pipeline = targets[0].pipeline
    return pipeline, targets, (f" ({'; '.join(notes)})" if notes else "")


def _am_alert(
    alert: Mapping[str, Any], *, group_key: str, receiver: str, external_url: str
) -> tuple[IncomingAlert, Callable[[], AlertScope]]:
    """One Alertmanager alert as an IncomingAlert, by the label mapping README.md's table states, and the
    scope (catalog links, details) an opening one takes."""
    labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
    annotations = {str(k): str(v) for k, v in (alert.get("annotations") or {}).items()}
    am_fingerprint = _am_fingerprint(alert)
    name = labels.get("alertname") or "alert"
    subject = [labels[k] for k in ("pipeline", "target") if k in labels]
    title = _bounded(annotations.get("summary") or " ".join([name, *subject]), 300)
    status = str(alert.get("status") or "firing")
    incoming = IncomingAlert(
        source="alertmanager",
        alert_type=labels.get("alert_type") or name,
        fingerprint=_fingerprint("alertmanager", am_fingerprint),
        severity=ALERTMANAGER_SEVERITY.get(labels.get("severity", "").lower(), ALERTMANAGER_DEFAULT),
        title=title,
        summary=annotations.get("description") or annotations.get("summary") or "",
        message=f"alertmanager: {name} {status}: {title}",
        entry={"fingerprint": am_fingerprint, "starts_at": str(alert.get("startsAt") or ""), "status": status},
        occurrence=("fingerprint", "starts_at", "status"),
    )

    def scope() -> AlertScope:
        pipeline, targets, note = _am_scope(labels)
        details = {
            "labels": labels,
            "annotations": annotations,
            "startsAt": incoming.entry["starts_at"],
            "generatorURL": str(alert.get("generatorURL") or ""),
            "fingerprint": am_fingerprint,
            "groupKey": group_key,
            "receiver": receiver,
            "externalURL": external_url,
        }
        return AlertScope(pipeline=pipeline, targets=targets, details=details, note=note)

    return incoming, scope


def alert_ingest_alertmanager(
    *,
    alerts: list[Mapping[str, Any]],
    group_key: str,
    receiver: str = "",
    external_url: str = "",
    truncated: int = 0,
) -> list[AlertmanagerResult]:
    """A Prometheus Alertmanager webhook (payload version 4), its shape validated by the caller: every
    ``firing`` alert opens or counts an incident like any other alert (fingerprint
    ``alertmanager:<Alertmanager's fingerprint>``); every ``resolved`` one adds a note to the open incident
    of that fingerprint and does **not** resolve it (docs/security.md, "Generic and Alertmanager alert
    intake"). All alerts of one webhook are taken in one transaction: all or none."""
    if truncated:  # Alertmanager's max_alerts left these out: they reach no incident
        log.warning("Alertmanager webhook %s (receiver %s) left out %d alerts", group_key[:200], receiver, truncated)
    taken = [_am_alert(a, group_key=group_key, receiver=receiver, external_url=external_url) for a in alerts]
    results: dict[int, AlertmanagerResult] = {}
    with transaction.atomic():
        # In fingerprint order: two webhooks carrying the same alerts in other orders lock their incidents in
        # the same order, so they wait for each other instead of deadlocking.
        for i in sorted(range(len(taken)), key=lambda i: taken[i][0].fingerprint):
            incoming, scope = taken[i]
            am_fingerprint = str(incoming.entry["fingerprint"])
            if incoming.entry["status"] == "resolved":
                incident = _alert_resolved_note(incoming, ends=str(alerts[i].get("endsAt") or ""))
                outcome = "noted" if incident is not None else "no_open_incident"
                results[i] = AlertmanagerResult(am_fingerprint, "resolved", incident, outcome)
                continue
            result = _with_retry(partial(_alert_take, incoming, scope))
            outcome = "opened" if result.created else "counted"
            results[i] = AlertmanagerResult(am_fingerprint, "firing", result.incident, outcome)
    return [results[i] for i in range(len(taken))]


def _alert_resolved_note(alert: IncomingAlert, *, ends: str) -> Incident | None:
    """Alertmanager says an alert ended: a note on the open incident of its fingerprint (once per
    occurrence, within the incident's cap of alert entries). The incident stays open: the person who
    tracks it decides when it is resolved."""
    incident = _open_incident_locked(alert.fingerprint)
    if incident is None:
        return None
    listed = _listed_entries(incident)
    if _already_listed(listed, alert) or len(listed) >= MAX_ALERT_EVENTS:
        return incident
    text = f"{alert.message} (ended {ends or 'now'}); the incident stays {incident.status} until a person resolves it"
    _event(incident, IncidentEvent.Kind.ALERT, _bounded(text, MAX_EVENT_MESSAGE), {"alert": alert.entry})
    audit_record(event="incident.alert_resolved", obj=incident, after={"source": alert.source, **alert.entry})
    return incident


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


# ------------------------------------------------------------------------------------- connectors' watch

# The actor the watch's incidents and audit events are written by (channel ``schedule``).
WATCH_ACTOR = "watch"


@dataclass(frozen=True)
class WatchReport:
    """One connection's part of a watch pass: the alerts its connector reported, how many opened a new
    incident (the others counted on an open one, or were refused and logged), and the error that stopped it
    (empty when it answered)."""

    connection: str
    alerts: int = 0
    opened: int = 0
    error: str = ""


def _watches(connection: Connection) -> bool:
    """The connection's connector overrides ``Connector.alerts`` (a connection of a kind with no installed
    connector is not watched: the health check reports it)."""
    try:
        connector_cls = get_connector_class(connection.kind)
    except ConnectorError:
        return False
    return connector_cls.alerts is not Connector.alerts


def connections_watch() -> list[WatchReport]:
    """One pass of the connectors' watch (Celery beat, every ``WATCH_INTERVAL_SECONDS``).

    For each connection whose connector overrides ``Connector.alerts``, ask it about the connection's catalog
    targets and feed each ``WatchAlert`` to ``alert_ingest`` (source = the connector kind, dedup key = the
    alert's key): a problem opens one incident, suggesting the runbooks that list its alert type, and found
    again while that incident is open it counts on it. A connection that fails (a ConnectorError, or a bug
    in the plugin) is recorded on its health and in the log, and the pass goes on with the others."""
    reports: list[WatchReport] = []
    with context.change_context(channel=context.Channel.SCHEDULE, actor_name=WATCH_ACTOR):
        for connection in Connection.objects.select_related("environment").order_by("name"):
            if _watches(connection):
                reports.append(_connection_watch(connection))
    return reports


def _connection_watch(connection: Connection) -> WatchReport:
    targets = list(Target.objects.filter(connection=connection).order_by("key"))
    if not targets:
        return WatchReport(connection.name)
    secrets: list[str] = []
    try:
        connector = connector_for(connection)
        secrets = list(connector.secrets.values())
        found = connector.alerts([target_ref(target) for target in targets])
    except Exception as exc:  # a ConnectorError, or any failure of the plugin's code: recorded, never raised
        error = redact(getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}", secrets)
        log.warning("watch: %s (%s) failed: %s", connection.name, connection.kind, error)
        Connection.objects.filter(pk=connection.pk).update(
            health_ok=False, health_summary=f"watch failed: {error}"[:500], health_checked_at=timezone.now()
        )
        return WatchReport(connection.name, error=error)
    keys = {target.key for target in targets}
    opened = 0
    for alert in found:
        if alert.target not in keys:
            log.warning(
                "watch: %s reported %r on %r, not one of its targets; ignored", connection.name, alert.key, alert.target
            )
            continue
        try:
            result = alert_ingest(
                source=connection.kind,
                severity=alert.severity,
                summary=redact(alert.summary, secrets),
                target=alert.target,
                alert_type=alert.alert_type,
                details=alert.details,
                dedup_key=alert.key,
            )
        except Exception as exc:  # one alert the intake refuses (a bad severity) does not hide the others
            error = redact(getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}", secrets)
            log.warning("watch: alert %r of %s refused: %s", alert.key, connection.name, error)
            continue
        opened += int(result.created)
    return WatchReport(connection.name, alerts=len(found), opened=opened)


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
