"""REST API v1 for runbooks: bots list runbooks, start, list and read runs, and drive their steps through
the same services as the web pages (``/api/v1/runbooks``, ``/api/v1/runbook-runs``). A run's detail says what
its current step needs next (``next``), and ``?wait=N`` answers once the system has carried the run as far
as it can, so a bot walks a runbook end to end without the web page (docs/chatops.md)."""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.auth import rules
from controlplane.api.queries import PageQuery, valid_query
from controlplane.api.serializers import StrictSerializer
from controlplane.api.views import Cursor
from controlplane.api.waiting import MAX_WAIT_SECONDS, wait_while_run_busy
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
    """A run as bots read it: where it is, every step's state and result, and what the current step needs
    next (``services.step_next``)."""
    steps = list(run.steps.all())
    current = steps[run.current].step_id if run.current < len(steps) else None
    spec = services.version_spec(run.runbook_version)
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
        "next": services.step_next(run=run, rows=steps),
        "steps": [
            {
                "id": row.step_id,
                "kind": row.kind,
                "title": spec.steps[row.index].title,
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
    title = serializers.CharField()
    state = serializers.CharField()
    attempt = serializers.IntegerField()
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_blank=True, allow_null=True)
    action = serializers.CharField(allow_null=True)
    by = serializers.CharField(allow_blank=True, allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class ActSerializer(serializers.Serializer[Any]):
    verb = serializers.CharField()
    target = serializers.CharField(allow_null=True)
    params = serializers.DictField(help_text="the runbook's params for the action; `act` takes others")
    approval = serializers.ChoiceField(
        choices=["policy", "always"],
        help_text="always: the action waits for a second person's approval whatever the policy says",
    )


class NextSerializer(serializers.Serializer[Any]):
    """What the current step needs next (``services.step_next``)."""

    step = serializers.CharField(allow_null=True)
    kind = serializers.CharField(required=False)
    title = serializers.CharField(required=False)
    state = serializers.CharField(required=False)
    by = serializers.ChoiceField(
        choices=["person", "system", "action"],
        help_text="person: send one of `commands`; system: the worker carries the step (wait); "
        "action: the step's action runs or awaits its approval (wait on the action)",
    )
    commands = serializers.ListField(child=serializers.CharField())
    instructions = serializers.CharField(required=False, allow_blank=True)
    checklist = serializers.ListField(child=serializers.CharField(), required=False, help_text="`complete`: tick all")
    choices = serializers.ListField(child=serializers.CharField(), required=False, help_text="`complete`: one")
    role = serializers.CharField(required=False, help_text="`approve`: the role it takes")
    act = ActSerializer(required=False)
    action = serializers.CharField(required=False, help_text="the step's action id")
    action_state = serializers.CharField(required=False)
    error = serializers.CharField(required=False)
    template_errors = serializers.ListField(child=serializers.CharField(), required=False)


class RunSummarySerializer(serializers.ModelSerializer[RunbookRun]):
    runbook = serializers.CharField(source="runbook_version.runbook.slug")
    version = serializers.IntegerField(source="runbook_version.version")
    incident = serializers.IntegerField(source="incident_id", allow_null=True)
    current_step = serializers.CharField(allow_null=True, help_text="None once the run has finished")
    started_by = serializers.CharField(source="started_by.get_username")

    class Meta:
        model = RunbookRun
        fields = ["id", "runbook", "version", "incident", "state", "current_step", "started_by", "started_at",
                  "finished_at"]  # fmt: skip


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
    next = NextSerializer(allow_null=True, help_text="what the current step needs; null once the run has ended")
    steps = RunStepSerializer(many=True)


class RunListQuery(PageQuery):
    incident = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    state = serializers.ChoiceField(required=False, choices=RunbookRun.State.choices)
    runbook = serializers.CharField(required=False, max_length=100, help_text="a runbook id")


class RunReadQuery(StrictSerializer):
    wait = serializers.IntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=MAX_WAIT_SECONDS,
        help_text="answer once the run needs a person or has ended, or after this many seconds "
        f"(0 to {MAX_WAIT_SECONDS})",
    )


class AbandonSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=4000)


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


class RunCursor(Cursor):
    ordering = "-started_at"


@extend_schema_view(get=extend_schema(parameters=[RunListQuery]))
class RunCollection(ListAPIView[Any]):
    """List runs newest first (``?incident= &state= &runbook=``), or start one: ``{"runbook", "incident",
    "params"}`` -> 201 with the run."""

    access = rules(get=("viewer", "runbooks:read"), post=("responder", "runbooks:write"))
    serializer_class = RunSummarySerializer
    pagination_class = RunCursor

    def get_queryset(self) -> Any:
        return selectors.run_list(valid_query(RunListQuery, self.request.query_params))

    @extend_schema(request=RunStartSerializer, responses={201: RunSerializer})
    def post(self, request: Request) -> Response:
        data = _valid(RunStartSerializer, request.data)
        incident = incident_get(data["incident"]) if data["incident"] else None
        run = services.run_start(actor=request.user, runbook=data["runbook"], params=data["params"], incident=incident)
        return Response(run_data(selectors.run_get(run.pk)), status=201)


class RunDetail(APIView):
    """A run with its steps and what the current one needs next; with ``?wait=N`` (0-30 s) the answer comes
    once the system has carried the run as far as it can (a person is needed, or it ended)."""

    access = rules(get=("viewer", "runbooks:read"))

    @extend_schema(responses=RunSerializer, parameters=[RunReadQuery])
    def get(self, request: Request, run_id: int) -> Response:
        wait = valid_query(RunReadQuery, request.query_params)["wait"]
        if wait:
            wait_while_run_busy(run_id, wait)
        return Response(run_data(selectors.run_get(run_id)))


class RunAbandon(APIView):
    """``POST /api/v1/runbook-runs/<id>/abandon`` ``{"reason"}``: stop following the run (audited)."""

    access = rules(post=("responder", "runbooks:write"))

    @extend_schema(request=AbandonSerializer, responses=RunSerializer)
    def post(self, request: Request, run_id: int) -> Response:
        data = _valid(AbandonSerializer, request.data)
        services.run_abandon(actor=request.user, run_id=selectors.run_get(run_id).pk, reason=data["reason"])
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
        # As the run page does: carry the run on at once up to the next check (which stays with the worker),
        # so the answer shows the next step.
        services.run_advance(run_id=run_id, run_checks=False)
        return Response(run_data(selectors.run_get(run_id)))


urlpatterns = [
    path("runbooks", RunbookList.as_view(), name="runbooks"),
    path("runbooks/<str:slug>", RunbookDetail.as_view(), name="runbook"),
    path("runbook-runs", RunCollection.as_view(), name="runbook-runs"),
    path("runbook-runs/<int:run_id>", RunDetail.as_view(), name="runbook-run"),
    path("runbook-runs/<int:run_id>/abandon", RunAbandon.as_view(), name="runbook-run-abandon"),
    path("runbook-runs/<int:run_id>/steps/<str:step_id>/<str:command>", StepCommand.as_view(), name="runbook-step"),
]
