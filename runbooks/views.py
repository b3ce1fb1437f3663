"""Runbook pages: the library, starting a run (its parameters pre-filled from the incident), and the guided
run page, whose steps are driven by htmx POSTs that each call one service and re-render the run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from connectors.base import ConnectorError
from connectors.registry import get_connector_class
from controlplane import access
from controlplane.actions import services as action_services
from controlplane.actions.models import ACTIVE_STATES
from controlplane.catalog.models import Target
from controlplane.catalog.selectors import target_choices, target_get
from controlplane.errors import NotFound, ServiceError
from controlplane.incidents.models import Incident
from controlplane.web.forms import FormField, choice_sources, fields_from_schema, params_from_post
from controlplane.web.views import is_htmx, service_error, web_login_required
from runbooks import selectors, services
from runbooks.models import RunbookRun, StepRun
from runbooks.tasks import advance_run

LOG_TAIL = 12  # log lines of the current step's action shown live


def _incident_or_none(raw: str | None) -> Incident | None:
    if not raw:
        return None
    try:
        return Incident.objects.select_related("pipeline").prefetch_related("targets").get(pk=int(raw))
    except (ValueError, Incident.DoesNotExist):
        raise Http404(f"no incident {raw}") from None


@require_GET
@web_login_required
def runbook_list(request: HttpRequest) -> HttpResponse:
    """``/runbooks/``: the library (latest versions), each with its steps' kinds and a Start link."""
    incident = _incident_or_none(request.GET.get("incident"))
    versions = selectors.runbook_list()
    rows = []
    for version in versions:
        steps = version.steps
        executable = sum(1 for s in steps if s["kind"] in ("check", "action") and not s.get("waits_for"))
        waiting = sorted({s["waits_for"] for s in steps if s.get("waits_for")})
        rows.append({"version": version, "steps": len(steps), "executable": executable, "waiting": waiting})
    return render(request, "runbooks/list.html", {"rows": rows, "incident": incident, "section": "runbooks"})


@require_GET
@web_login_required
def runbook_detail(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        version = selectors.runbook_get(slug)
    except NotFound as exc:
        raise Http404(exc.message) from None
    spec = services.version_spec(version)
    return render(request, "runbooks/detail.html", {"version": version, "spec": spec, "section": "runbooks"})


@require_http_methods(["GET", "POST"])
@web_login_required
def run_new(request: HttpRequest) -> HttpResponse:
    """``/runs/new/?runbook=<id>&incident=<id>``: the parameters, pre-filled from the incident; POST starts."""
    source = request.POST if request.method == "POST" else request.GET
    incident = _incident_or_none(source.get("incident"))
    try:
        version = selectors.runbook_get(source.get("runbook", ""))
    except NotFound as exc:
        raise Http404(exc.message) from None
    spec = services.version_spec(version)
    values = services.run_defaults(version=version, incident=incident)
    error, status = "", 200
    if request.method == "POST":
        values = {p.name: request.POST.get(f"param-{p.name}", "") for p in spec.parameters}
        for p in spec.parameters:
            if p.type == "boolean":
                values[p.name] = "true" if request.POST.get(f"param-{p.name}") else "false"
        try:
            run = services.run_start(actor=request.user, runbook=spec.id, params=values, incident=incident)
        except ServiceError as exc:
            error, status = service_error(exc)
        else:
            return HttpResponseRedirect(reverse("runbooks:run", args=[run.pk]))
    targets = {
        p.name: list(Target.objects.filter(kind__in=p.target_kinds).order_by("key").values_list("key", flat=True))
        for p in spec.parameters
        if p.type == "target"
    }
    context = {
        "version": version,
        "spec": spec,
        "incident": incident,
        "values": values,
        "targets": targets,
        "error": error,
        "can_start": access.has_role(request.user, "responder"),
        "section": "runbooks",
    }
    return render(request, "runbooks/run_new.html", context, status=status)


# ------------------------------------------------------------------------------------------ run page


@dataclass
class StepCard:
    """One step as the page shows it: the definition, its row, rendered templates and, for the current
    action step, its form."""

    index: int
    spec: Any
    row: StepRun
    current: bool
    rendered: dict[str, Any] = field(default_factory=dict)
    fields: list[FormField] = field(default_factory=list)
    form_error: str = ""
    plan: dict[str, Any] | None = None
    action_active: bool = False
    can_act: bool = False
    asks_approval: bool = False  # the action will wait for a second person: a protected environment, or the step's rule
    log: list[Any] = field(default_factory=list)


def _initial(schema: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A fake POST holding the runbook's rendered params (and the schema's defaults for the rest), so the
    generated form shows them."""
    post: dict[str, Any] = {}
    for name, node in schema.get("properties", {}).items():
        value = values.get(name, node.get("default"))
        key = f"param-{name}"
        if value is None:
            post[key] = ""
        elif isinstance(value, bool):
            post[key] = "true" if value else "false"
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            post[key] = value
        elif isinstance(value, list | dict):
            post[key] = json.dumps(value)
        else:
            post[key] = str(value)
    return post


def _verb_schema(target_key: str, verb: str) -> tuple[Target | None, dict[str, Any]]:
    try:
        target = target_get(target_key)
    except NotFound:
        return None, {}
    try:
        verb_cls = get_connector_class(target.connection.kind).verb_class(verb)
    except ConnectorError:
        return target, {}
    return target, verb_cls.params_model.model_json_schema() if verb_cls is not None else {}


def _live_choices(target: Target, schema: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for name, what in choice_sources(schema).items():
        try:
            rows = target_choices(target, what)
        except ServiceError:
            rows = []
        out[name] = [(str(r["value"]), str(r.get("label", r["value"]))) for r in rows if "value" in r]
    return out


def _run_context(request: HttpRequest, run: RunbookRun, *, post: Any = None, **extra: Any) -> dict[str, Any]:
    spec = services.version_spec(run.runbook_version)
    rows = list(run.steps.all())
    cards = []
    for row in rows:
        card = StepCard(index=row.index, spec=spec.steps[row.index], row=row, current=row.index == run.current)
        if card.current or row.state in (StepRun.State.WAITING, StepRun.State.FAILED):
            card.rendered = services.step_rendered(run=run, step_id=row.step_id, rows=rows)
        action = row.action
        card.action_active = action is not None and action.state in ACTIVE_STATES
        if card.current and action is not None:  # the live part of the page: the action's latest log lines
            card.log = list(action.log_lines.order_by("-id")[:LOG_TAIL])[::-1]
        if card.current and card.spec.kind == "action" and card.spec.waits_for is None and not card.action_active:
            target, schema = _verb_schema(str(card.rendered.get("target", "")), card.spec.verb)
            if target is not None and schema:
                card.asks_approval = target.connection.environment.protected or card.spec.approval == "always"
                card.fields = fields_from_schema(
                    schema,
                    form_id=f"step-{row.step_id}",
                    submitted=post if post is not None else _initial(schema, card.rendered.get("params") or {}),
                    choices=_live_choices(target, schema),
                )
                card.can_act = access.has_role(request.user, "responder")
            else:
                card.form_error = f"the step's target {card.rendered.get('target')!r} is not a catalog target"
        cards.append(card)
    # The current step's action ended but the step has not heard yet (its announcement is on the way, or
    # was lost): keep refreshing; the view asks the worker to reconcile.
    unheard = any(
        c.current and c.row.state == StepRun.State.WAITING and c.row.action is not None and not c.action_active
        for c in cards
    )
    polling = run.state == RunbookRun.State.RUNNING or unheard or any(c.action_active for c in cards)
    context = {
        "run": run,
        "spec": spec,
        "cards": cards,
        "polling": polling,
        "unheard": unheard,
        "is_responder": access.has_role(request.user, "responder"),
        "is_approver": access.has_role(request.user, "approver"),
        "section": "runbooks",
    }
    context.update(extra)
    return context


def _run_or_404(run_id: int) -> RunbookRun:
    try:
        return selectors.run_get(run_id)
    except NotFound as exc:
        raise Http404(exc.message) from None


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """``/runs/<id>/``: the steps with their state, the current one open. Refreshes itself (htmx) while
    the system works on a step or an action runs."""
    run = _run_or_404(run_id)
    template = "runbooks/partials/run_body.html" if is_htmx(request) else "runbooks/run_detail.html"
    context = _run_context(request, run)
    if context["unheard"]:
        advance_run.delay(run.pk)  # idempotent: records the action's end on the step
    return render(request, template, context)


COMMANDS = {"complete", "approve", "skip", "retry", "preview", "act", "abandon"}


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def step_command(request: HttpRequest, run_id: int, step_id: str, command: str) -> HttpResponse:
    """POST ``/runs/<id>/steps/<step>/<command>/``: one person's move on the current step, then the run
    re-rendered (htmx) or the page reloaded. ``preview`` only renders the plan; it changes nothing."""
    if command not in COMMANDS:
        raise Http404(f"no step command {command!r}")
    run = _run_or_404(run_id)
    post = request.POST
    error, status, plan, form_post = "", 200, None, None
    try:
        if command == "complete":
            services.step_complete(
                actor=request.user,
                run_id=run.pk,
                step_id=step_id,
                checked=post.getlist("checked"),
                choice=post.get("choice", ""),
                note=post.get("note", ""),
            )
        elif command == "approve":
            services.step_approve(actor=request.user, run_id=run.pk, step_id=step_id, comment=post.get("comment", ""))
        elif command == "skip":
            services.step_skip(actor=request.user, run_id=run.pk, step_id=step_id, reason=post.get("reason", ""))
        elif command == "retry":
            services.step_retry(actor=request.user, run_id=run.pk, step_id=step_id)
        elif command == "abandon":
            services.run_abandon(actor=request.user, run_id=run.pk, reason=post.get("reason", ""))
        else:  # preview / act: the action step's form
            rendered = services.step_rendered(run=run, step_id=step_id)
            step = services.version_spec(run.runbook_version).step(step_id)
            if step.kind != "action":
                raise Http404("only action steps have a preview")
            _, schema = _verb_schema(str(rendered.get("target", "")), step.verb)
            params = params_from_post(schema, post) if schema else dict(rendered.get("params") or {})
            form_post = post
            if command == "preview":
                prepared = action_services.action_prepare(
                    actor=request.user, verb=step.verb, target_key=str(rendered["target"]), params=params
                )
                plan = prepared.plan.model_dump(mode="json")
                if is_htmx(request):
                    return render(request, "web/partials/plan.html", {"plan": plan, "preview": True})
            else:
                services.step_act(actor=request.user, run_id=run.pk, step_id=step_id, params=params)
                form_post = None
    except (ServiceError, ConnectorError) as exc:
        error, status = service_error(exc)
        if command == "preview" and is_htmx(request):
            return render(request, "runbooks/partials/error.html", {"error": error}, status=status)
    else:
        # Show the next step at once: skips, notifications and waits are quick; checks stay with the worker.
        services.run_advance(run_id=run.pk, run_checks=False)
    run = _run_or_404(run.pk)
    context = _run_context(request, run, post=form_post if error else None, error=error, error_step=step_id, plan=plan)
    template = "runbooks/partials/run_body.html" if is_htmx(request) else "runbooks/run_detail.html"
    return render(request, template, context, status=status)
