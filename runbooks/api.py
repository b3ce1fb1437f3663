"""REST API v1 for runbooks: bots list runbooks, start runs and advance steps through the same services
as the web pages (``/api/v1/runbooks``, ``/api/v1/runbook-runs``)."""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.auth import rules
from controlplane.api.serializers import StrictSerializer
from controlplane.errors import NotFound
from controlplane.incidents.selectors import incident_get
from runbooks import selectors, services
from runbooks.models import RunbookRun, RunbookVersion


def _version_data(version: RunbookVersion, *, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": version.runbook.slug,
        "title": version.title,
        "version": version.version,
        "applies_to": version.definition.get("applies_to", {}),
        "parameters": version.definition.get("parameters", []),
        "steps": [
            {"id": s["id"], "kind": s["kind"], "title": s["title"], "waits_for": s.get("waits_for")}
            for s in version.steps
        ],
    }
    if full:
        data["definition"] = version.definition
    return data


def run_data(run: RunbookRun) -> dict[str, Any]:
    """A run as bots read it: where it is and every step's state and result."""
    steps = list(run.steps.all())
    current = steps[run.current].step_id if run.current < len(steps) else None
    return {
        "id": run.pk,
        "runbook": run.runbook_version.runbook.slug,
        "version": run.runbook_version.version,
        "incident": run.incident_id,
        "state": run.state,
        "current_step": current,
        "params": run.params,
        "started_by": run.started_by.get_username(),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "steps": [
            {
                "id": row.step_id,
                "kind": row.kind,
                "state": row.state,
                "attempt": row.attempt,
                "result": row.result,
                "error": row.error,
                "action": str(row.action_id) if row.action_id else None,
                "by": row.actor_name,
                "finished_at": row.finished_at,
            }
            for row in steps
        ],
    }


class StepSummarySerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    kind = serializers.CharField()
    title = serializers.CharField()
    waits_for = serializers.CharField(allow_null=True)


class RunbookSerializer(serializers.Serializer[Any]):
    """The shape ``_version_data`` answers with (for the OpenAPI schema)."""

    id = serializers.CharField()
    title = serializers.CharField()
    version = serializers.IntegerField()
    applies_to = serializers.DictField()
    parameters = serializers.ListField(child=serializers.DictField())
    steps = StepSummarySerializer(many=True)


class RunbookDetailSerializer(RunbookSerializer):
    definition = serializers.DictField(help_text="the runbook as loaded from its YAML")


class RunStepSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    kind = serializers.CharField()
    state = serializers.CharField()
    attempt = serializers.IntegerField()
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_blank=True, allow_null=True)
    action = serializers.CharField(allow_null=True)
    by = serializers.CharField(allow_blank=True, allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class RunSerializer(serializers.Serializer[Any]):
    """The shape ``run_data`` answers with (for the OpenAPI schema)."""

    id = serializers.IntegerField()
    runbook = serializers.CharField()
    version = serializers.IntegerField()
    incident = serializers.IntegerField(allow_null=True)
    state = serializers.CharField()
    current_step = serializers.CharField(allow_null=True)
    params = serializers.DictField()
    started_by = serializers.CharField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    steps = RunStepSerializer(many=True)


class RunStartSerializer(StrictSerializer):
    runbook = serializers.CharField(max_length=100)
    incident = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)
    params = serializers.DictField(required=False, default=dict)


class StepCommandSerializer(StrictSerializer):
    checked = serializers.ListField(child=serializers.CharField(max_length=500), required=False, default=list)
    choice = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    note = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
    comment = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
    reason = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
    params = serializers.DictField(required=False, allow_null=True, default=None)


def _valid(serializer_cls: type[StrictSerializer], data: Any) -> dict[str, Any]:
    serializer = serializer_cls(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class RunbookList(APIView):
    """The runbook library: latest versions with their parameters and steps."""

    access = rules(get=("viewer", "runbooks:read"))

    @extend_schema(responses=RunbookSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response([_version_data(v) for v in selectors.runbook_list()])


class RunbookDetail(APIView):
    access = rules(get=("viewer", "runbooks:read"))

    @extend_schema(responses=RunbookDetailSerializer)
    def get(self, request: Request, slug: str) -> Response:
        return Response(_version_data(selectors.runbook_get(slug), full=True))


class RunCollection(APIView):
    """Start a run: ``{"runbook", "incident", "params"}`` -> 201 with the run."""

    access = rules(post=("responder", "runbooks:write"))

    @extend_schema(request=RunStartSerializer, responses={201: RunSerializer})
    def post(self, request: Request) -> Response:
        data = _valid(RunStartSerializer, request.data)
        incident = incident_get(data["incident"]) if data["incident"] else None
        run = services.run_start(actor=request.user, runbook=data["runbook"], params=data["params"], incident=incident)
        return Response(run_data(selectors.run_get(run.pk)), status=201)


class RunDetail(APIView):
    access = rules(get=("viewer", "runbooks:read"))

    @extend_schema(responses=RunSerializer)
    def get(self, request: Request, run_id: int) -> Response:
        return Response(run_data(selectors.run_get(run_id)))


class StepCommand(APIView):
    """``POST /api/v1/runbook-runs/<id>/steps/<step>/<command>``: ``complete`` (checked, choice, note),
    ``approve`` (comment), ``act`` (params: the action step's params, else the runbook's), ``skip``
    (reason), ``retry``. Answers with the run."""

    access = rules(post=("responder", "runbooks:write"))

    @extend_schema(request=StepCommandSerializer, responses=RunSerializer)
    def post(self, request: Request, run_id: int, step_id: str, command: str) -> Response:
        data = _valid(StepCommandSerializer, request.data or {})
        user = request.user
        selectors.run_get(run_id)  # 404 first
        if command == "complete":
            services.step_complete(
                actor=user,
                run_id=run_id,
                step_id=step_id,
                checked=data["checked"],
                choice=data["choice"],
                note=data["note"],
            )
        elif command == "approve":
            services.step_approve(actor=user, run_id=run_id, step_id=step_id, comment=data["comment"])
        elif command == "act":
            services.step_act(actor=user, run_id=run_id, step_id=step_id, params=data["params"])
        elif command == "skip":
            services.step_skip(actor=user, run_id=run_id, step_id=step_id, reason=data["reason"])
        elif command == "retry":
            services.step_retry(actor=user, run_id=run_id, step_id=step_id)
        else:
            raise NotFound(f"no step command {command!r}; use complete, approve, act, skip or retry")
        return Response(run_data(selectors.run_get(run_id)))


urlpatterns = [
    path("runbooks", RunbookList.as_view(), name="runbooks"),
    path("runbooks/<str:slug>", RunbookDetail.as_view(), name="runbook"),
    path("runbook-runs", RunCollection.as_view(), name="runbook-runs"),
    path("runbook-runs/<int:run_id>", RunDetail.as_view(), name="runbook-run"),
    path("runbook-runs/<int:run_id>/steps/<str:step_id>/<str:command>", StepCommand.as_view(), name="runbook-step"),
]
