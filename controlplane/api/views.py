"""REST API v1: thin views that parse, call one service or selector, and render."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection
from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, pagination, serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from controlplane.actions import selectors as action_selectors
from controlplane.actions import services as action_services
from controlplane.api import queries as q
from controlplane.api import serializers as s
from controlplane.api.auth import rules
from controlplane.api.throttling import AlertThrottle
from controlplane.api.waiting import wait_until_finished
from controlplane.audit.selectors import audit_list
from controlplane.catalog.models import Target
from controlplane.catalog.selectors import target_choices, target_get, target_list
from controlplane.errors import InvalidInput, NotFound
from controlplane.incidents import selectors as incident_selectors
from controlplane.incidents import services as incident_services

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class Cursor(pagination.CursorPagination):
    """Pages by a cursor; a cursor the API did not issue is a 400 on ``cursor`` (DRF answers 404, or fails
    on a position that is not a value of the ordering column)."""

    page_size = 50
    page_size_query_param = "limit"
    max_page_size = q.PAGE_SIZE_MAX

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> Any:
        self._model = queryset.model
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request: Any) -> Any:
        invalid = exceptions.ValidationError({"cursor": [self.invalid_cursor_message]})
        raw = request.query_params.get(self.cursor_query_param)
        if raw is not None and not _BASE64.fullmatch(raw):  # b64decode would skip the odd characters
            raise invalid
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound:
            raise invalid from None
        if cursor is not None and cursor.position is not None:
            field = self._model._meta.get_field(self.ordering[0].lstrip("-"))
            try:
                field.run_validators(field.to_python(cursor.position))
            except DjangoValidationError:
                raise invalid from None
        return cursor


class ActionCursor(Cursor):
    ordering = "-requested_at"


class AuditCursor(Cursor):
    ordering = "-seq"


def idempotency_key_of(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` header (1 to 200 characters), or None."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 200):
        raise InvalidInput("Idempotency-Key must be 1 to 200 characters")
    return key


def _valid(serializer_cls: type[s.StrictSerializer], data: Any) -> dict[str, Any]:
    serializer = serializer_cls(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


@extend_schema_view(get=extend_schema(parameters=[q.TargetListQuery]))
class TargetList(ListAPIView[Target]):
    """Catalog targets; filter with ``?kind=`` and ``?environment=``."""

    access = rules(get=("viewer", "catalog:read"))
    serializer_class = s.TargetSummarySerializer
    pagination_class = None

    def get_queryset(self) -> Any:
        return target_list(q.valid_query(q.TargetListQuery, self.request.query_params))


class TargetDetail(APIView):
    """A target with the verbs and checks it offers and each one's params JSON schema."""

    access = rules(get=("viewer", "catalog:read"))

    @extend_schema(responses=s.TargetDetailSerializer)
    def get(self, request: Request, key: str) -> Response:
        return Response(s.TargetDetailSerializer(target_get(key)).data)


class TargetChoices(APIView):
    """What the target's system lists for a params field marked ``x-choices`` in its schema (failed runs,
    tasks ...): rows with ``value`` and ``label``, asked live of the system."""

    access = rules(get=("viewer", "catalog:read"))

    @extend_schema(responses=s.TargetChoicesSerializer)
    def get(self, request: Request, key: str, what: str) -> Response:
        return Response({"target": key, "choices": target_choices(target_get(key), what)})


@extend_schema_view(get=extend_schema(parameters=[q.ActionListQuery]))
class ActionCollection(ListAPIView[Any]):
    """List actions (``?state= &verb= &target= &environment= &requested_by=``) or request one."""

    access = rules(get=("viewer", "actions:read"), post=("responder", "actions:write"))
    serializer_class = s.ActionSummarySerializer
    pagination_class = ActionCursor

    def get_queryset(self) -> Any:
        return action_selectors.action_list(q.valid_query(q.ActionListQuery, self.request.query_params))

    @extend_schema(
        request=s.ActionRequestSerializer,
        responses={202: s.ActionDetailSerializer, 200: s.ActionDetailSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.ActionRequestSerializer, request.data)
        result = action_services.action_request(
            actor=request.user,
            verb=data["verb"],
            target_key=data["target"],
            params=data["params"],
            reason=data["reason"],
            idempotency_key=idempotency_key_of(request),
            incident=incident_selectors.incident_get(data["incident"]) if data["incident"] else None,
        )
        if result.created:  # everything the response shows is in hand: no second read
            return Response(s.ActionDetailSerializer(result.action, context={"fresh": True}).data, status=202)
        action = action_selectors.action_get(result.action.id)
        return Response(s.ActionDetailSerializer(action).data, status=status.HTTP_200_OK)


class ActionPreview(APIView):
    """The plan a request would get, without creating anything."""

    access = rules(post=("viewer", "actions:write"))

    @extend_schema(request=s.ActionPreviewSerializer, responses=s.ActionPreviewResultSerializer)
    def post(self, request: Request) -> Response:
        data = _valid(s.ActionPreviewSerializer, request.data)
        prepared = action_services.action_prepare(
            actor=request.user, verb=data["verb"], target_key=data["target"], params=data["params"]
        )
        return Response(
            {
                "target": prepared.target.key,
                "verb": data["verb"],
                "params": prepared.params.model_dump(mode="json"),
                "plan": prepared.plan.model_dump(mode="json"),
            }
        )


class ActionDetail(APIView):
    access = rules(get=("viewer", "actions:read"))

    @extend_schema(responses=s.ActionDetailSerializer, parameters=[q.ActionReadQuery])
    def get(self, request: Request, action_id: str) -> Response:
        wait = q.valid_query(q.ActionReadQuery, request.query_params)["wait"]
        if wait:
            # Returns at once for an action that ended or does not exist (the read below answers 404); the
            # action is read once, after the wait.
            wait_until_finished(action_id, wait)
        return Response(s.ActionDetailSerializer(action_selectors.action_get(action_id)).data)


class _ActionCommand(APIView):
    serializer: type[s.StrictSerializer] = s.DecisionSerializer

    def run(self, request: Request, action_id: str, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def post(self, request: Request, action_id: str) -> Response:
        data = _valid(self.serializer, request.data or {})
        action_selectors.action_get(action_id)  # 404 before policy for unknown ids
        self.run(request, action_id, data)
        return Response(s.ActionDetailSerializer(action_selectors.action_get(action_id)).data)


@extend_schema(request=s.DecisionSerializer, responses=s.ActionDetailSerializer)
class ActionApprove(_ActionCommand):
    access = rules(post=("approver", "actions:approve"))

    def run(self, request: Request, action_id: str, data: dict[str, Any]) -> Any:
        return action_services.action_approve(actor=request.user, action_id=action_id, comment=data["comment"])


@extend_schema(request=s.DecisionSerializer, responses=s.ActionDetailSerializer)
class ActionReject(_ActionCommand):
    access = rules(post=("approver", "actions:approve"))

    def run(self, request: Request, action_id: str, data: dict[str, Any]) -> Any:
        return action_services.action_reject(actor=request.user, action_id=action_id, comment=data["comment"])


@extend_schema(request=s.CancelSerializer, responses=s.ActionDetailSerializer)
class ActionCancel(_ActionCommand):
    access = rules(post=("responder", "actions:write"))
    serializer = s.CancelSerializer

    def run(self, request: Request, action_id: str, data: dict[str, Any]) -> Any:
        return action_services.action_cancel(actor=request.user, action_id=action_id, reason=data["reason"])


@extend_schema(request=s.ResolveSerializer, responses=s.ActionDetailSerializer)
class ActionResolve(_ActionCommand):
    """A person dealt with what a ``needs_attention`` action left behind: record it and free the target."""

    access = rules(post=("responder", "actions:write"))
    serializer = s.ResolveSerializer

    def run(self, request: Request, action_id: str, data: dict[str, Any]) -> Any:
        return action_services.action_resolve(actor=request.user, action_id=action_id, note=data["note"])


class IncidentCursor(Cursor):
    ordering = "-created_at"


class TimelineCursor(Cursor):
    ordering = ("-at", "-id")


class _AlertIntake(APIView):
    """Alert intakes share the rule (a responder with ``alerts:write``) and the per-user alert rate."""

    access = rules(post=("responder", "alerts:write"))

    def get_throttles(self) -> list[BaseThrottle]:
        return [*super().get_throttles(), AlertThrottle()]


class AirflowAlertIntake(_AlertIntake):
    """An Airflow ``on_failure_callback`` payload: opens an incident (201) or is counted on the open one
    for the same Airflow, DAG, task and logical day (200). Rate-limited per user (``API_THROTTLE_ALERTS``)."""

    @extend_schema(
        request=dict, responses={201: s.IncidentIntakeResultSerializer, 200: s.IncidentIntakeResultSerializer}
    )
    def post(self, request: Request) -> Response:
        result = incident_services.alert_ingest_airflow(payload=request.data)
        body = {**s.IncidentSummarySerializer(result.incident).data, "created": result.created}
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class GenericAlertIntake(_AlertIntake):
    """An alert from any monitoring system or bot (docs/chatops.md): opens an incident (201) or is counted on
    the open one with the same fingerprint (200). An unknown pipeline or target is a 400 naming it."""

    @extend_schema(
        request=s.GenericAlertSerializer,
        responses={201: s.IncidentIntakeResultSerializer, 200: s.IncidentIntakeResultSerializer},
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.GenericAlertSerializer, request.data)
        result = incident_services.alert_ingest(**data)
        body = {**s.IncidentSummarySerializer(result.incident).data, "created": result.created}
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class AlertmanagerIntake(_AlertIntake):
    """Prometheus Alertmanager's webhook (payload version 4): each firing alert opens or counts an incident,
    each resolved one notes it on the open incident (which stays open). Labels map as README.md says."""

    @extend_schema(request=s.AlertmanagerWebhookSerializer, responses=s.AlertmanagerResultSerializer)
    def post(self, request: Request) -> Response:
        serializer = s.AlertmanagerWebhookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        results = incident_services.alert_ingest_alertmanager(
            alerts=[{**a, "startsAt": a["startsAt"].isoformat()} for a in data["alerts"]],
            group_key=data["groupKey"],
            receiver=data["receiver"],
            external_url=data["externalURL"],
            truncated=data["truncatedAlerts"],
        )
        rows = [
            {
                "fingerprint": r.fingerprint,
                "status": r.status,
                "outcome": r.outcome,
                "incident": r.incident.pk if r.incident is not None else None,
            }
            for r in results
        ]
        return Response({"alerts": rows})


@extend_schema_view(get=extend_schema(parameters=[q.IncidentListQuery]))
class IncidentList(ListAPIView[Any]):
    """Incidents newest first (``?status= &severity= &pipeline= &open=true &max_age_hours=``)."""

    access = rules(get=("viewer", "incidents:read"))
    serializer_class = s.IncidentSummarySerializer
    pagination_class = IncidentCursor

    def get_queryset(self) -> Any:
        return incident_selectors.incident_list(q.valid_query(q.IncidentListQuery, self.request.query_params))


class IncidentDetail(APIView):
    """An incident with the newest entries of its timeline (``timeline_url`` pages through all of them),
    affected targets, log link and the actions that fit it."""

    access = rules(get=("viewer", "incidents:read"))

    @extend_schema(responses=s.IncidentDetailSerializer)
    def get(self, request: Request, incident_id: int) -> Response:
        incident = incident_selectors.incident_get(incident_id)
        return Response(s.IncidentDetailSerializer(incident, context={"request": request}).data)


@extend_schema_view(get=extend_schema(parameters=[q.PageQuery]))
class IncidentTimeline(ListAPIView[Any]):
    """An incident's whole timeline, newest first, a page at a time (``?cursor=``, ``?limit=`` up to 200)."""

    access = rules(get=("viewer", "incidents:read"))
    serializer_class = s.IncidentEventSerializer
    pagination_class = TimelineCursor

    def get_queryset(self) -> Any:
        q.valid_query(q.PageQuery, self.request.query_params)
        incident = incident_selectors.incident_get(self.kwargs["incident_id"])
        return incident_selectors.incident_timeline_events(incident)


class IncidentNoteSerializer(s.StrictSerializer):
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class IncidentCommentSerializer(s.StrictSerializer):
    text = serializers.CharField(max_length=10_000)


class IncidentStatusChange(APIView):
    """``POST /api/v1/incidents/<id>/acknowledge`` (``/mitigate``, ``/resolve``) with an optional note."""

    access = rules(post=("responder", "incidents:write"))
    moves = {
        "acknowledge": incident_services.incident_acknowledge,
        "mitigate": incident_services.incident_mitigate,
        "resolve": incident_services.incident_resolve,
    }

    @extend_schema(request=IncidentNoteSerializer, responses=s.IncidentDetailSerializer)
    def post(self, request: Request, incident_id: int, move: str) -> Response:
        if move not in self.moves:
            raise NotFound(f"no incident status change {move!r}; use acknowledge, mitigate or resolve")
        data = _valid(IncidentNoteSerializer, request.data or {})
        self.moves[move](actor=request.user, incident_id=incident_id, note=data["note"])
        incident = incident_selectors.incident_get(incident_id)
        return Response(s.IncidentDetailSerializer(incident, context={"request": request}).data)


class IncidentComment(APIView):
    """``POST /api/v1/incidents/<id>/comments`` ``{"text"}``: a comment on the timeline."""

    access = rules(post=("responder", "incidents:write"))

    @extend_schema(request=IncidentCommentSerializer, responses={201: s.IncidentCommentResultSerializer})
    def post(self, request: Request, incident_id: int) -> Response:
        data = _valid(IncidentCommentSerializer, request.data)
        event = incident_services.incident_comment(actor=request.user, incident_id=incident_id, text=data["text"])
        return Response({"id": event.pk, "kind": event.kind, "message": event.message}, status=201)


@extend_schema_view(get=extend_schema(parameters=[q.AuditListQuery]))
class AuditList(ListAPIView[Any]):
    """The audit trail, newest first (``?event= &object_type= &object_id= &actor= &request_id=``)."""

    access = rules(get=("viewer", "audit:read"))
    serializer_class = s.AuditEventSerializer
    pagination_class = AuditCursor

    def get_queryset(self) -> Any:
        return audit_list(q.valid_query(q.AuditListQuery, self.request.query_params))


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and the broker answer (each with a short timeout)."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        from controlplane.celery import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            conn.default_channel.client.ping()  # type: ignore[attr-defined]
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)
