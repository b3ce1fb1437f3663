"""Web pages: thin views that parse the request, call one selector or service and render a template.

Every view serves the full page, or only its partial when htmx asks (``HX-Request``), and says so with
``Vary: HX-Request``. Writes go through ``controlplane.actions.services`` exactly as the REST API's do
(the middleware has set the change context to channel "web"); a ServiceError is rendered inline with
its status code and nothing is written. Every POST is CSRF-protected: htmx sends the token from the
``hx-headers`` on ``<body>``, plain forms carry ``{% csrf_token %}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils.functional import SimpleLazyObject
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from connectors.base import ConnectorError
from controlplane import access
from controlplane.actions import policy
from controlplane.actions import selectors as actions
from controlplane.actions import services as action_services
from controlplane.actions.models import ActionRun, ActionState
from controlplane.audit import selectors as audit
from controlplane.audit.services import audit_chain_status
from controlplane.catalog import selectors as catalog_selectors
from controlplane.catalog.models import Target
from controlplane.catalog.selectors import target_choices, target_get
from controlplane.errors import InvalidInput, NotFound, ServiceError
from controlplane.incidents import selectors as incidents
from controlplane.incidents import services as incident_services
from controlplane.incidents.export import incident_export as export_pieces
from controlplane.incidents.models import Incident
from controlplane.web import catalog
from controlplane.web.forms import FormField, choice_sources, fields_from_schema, params_from_post
from controlplane.web.pagination import INVALID_CURSOR, KeysetPage, keyset_page
from runbooks import selectors as runbooks

PAGE_SIZE = 50
RECENT = 20
LOG_LINES = 200


# ------------------------------------------------------------------------------------------ helpers


def is_htmx(request: HttpRequest) -> bool:
    """An htmx request wanting a partial (a history restore wants the full page)."""
    return request.headers.get("HX-Request") == "true" and "HX-History-Restore-Request" not in request.headers


def web_login_required(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """``login_required`` that also works for htmx (a poll or POST whose session expired would otherwise
    follow the redirect and swap the login page into a fragment; htmx is told to load the login page),
    and that shows nothing to an account holding no role yet (viewer is the least role that reads)."""

    def with_role(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not access.has_role(request.user, "viewer"):
            return render(request, "web/no_role.html", status=403)
        return view(request, *args, **kwargs)

    protected = login_required(with_role)

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if is_htmx(request) and not request.user.is_authenticated:
            current = urlsplit(request.headers.get("HX-Current-URL", ""))
            next_url = current.path + (f"?{current.query}" if current.query else "") if current.path else request.path
            response = HttpResponse(status=204)
            response["HX-Redirect"] = f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': next_url})}"
            return response
        return protected(request, *args, **kwargs)

    return wrapper


def _render(
    request: HttpRequest, full: str, partial: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    return render(request, partial if is_htmx(request) else full, context, status=status)


def _page(request: HttpRequest, qs: QuerySet[Any], order: tuple[str, ...]) -> KeysetPage:
    """The page of a newest-first history list that ``?cursor=`` points at (keyset pagination: the same
    queries for the first page and one a million rows down; see controlplane/web/pagination.py)."""
    return keyset_page(qs, order, request.GET.get("cursor"), size=PAGE_SIZE)


def service_error(exc: ServiceError | ConnectorError) -> tuple[str, int]:
    """The message and HTTP status to show for a refused request."""
    if isinstance(exc, ServiceError):
        return exc.message, exc.status
    return exc.message, 503 if exc.transient else 400


def _filters(request: HttpRequest, names: tuple[str, ...]) -> dict[str, str]:
    return {name: request.GET.get(name, "").strip() for name in names}


# ------------------------------------------------------------------------------------------ dashboard


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """``/``: open incidents by severity, action counts by state, what is running or queued, what waits for
    my approval, the last 20 actions. The body refreshes itself every 5 s through the same view (htmx
    partial); pipeline freshness is a section of its own (``dashboard_freshness``) that loads after the
    page and refreshes every minute, so a slow or unreachable warehouse never holds up the page."""
    user = request.user
    can_decide = access.has_role(user, "approver")
    incident_counts = incidents.incident_open_counts()
    context = {
        "incident_counts": incident_counts,
        "incidents_open": sum(incident_counts.values()),
        "counts": actions.action_state_counts(),
        "ended_states": [s for s in ActionState.values if s not in actions.OPEN_STATES],
        "in_flight": list(actions.actions_in_flight()),
        "awaiting_me": list(actions.awaiting_approval_for(user)[:RECENT]) if can_decide else [],
        "can_decide": can_decide,
        "recent": list(actions.action_list()[:RECENT]),
    }
    return _render(request, "web/dashboard.html", "web/partials/dashboard_body.html", context)


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def dashboard_freshness(request: HttpRequest) -> HttpResponse:
    """``/freshness/``: hours since the newest row of every catalog table with a ``timestamp_column``,
    against the 2 h SLA; a warehouse that does not answer shows its error on its rows."""
    context = {
        "freshness": catalog.freshness_overview(actor=request.user),
        "sla_hours": catalog.FRESHNESS_SLA_HOURS,
    }
    return _render(request, "web/freshness.html", "web/partials/freshness.html", context)


# ------------------------------------------------------------------------------------------ targets


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def target_list(request: HttpRequest) -> HttpResponse:
    """``/targets/``: the catalog's targets (key, kind, environment, connector), filterable."""
    filters = _filters(request, ("q", "environment", "kind"))
    context: dict[str, Any] = {"targets": list(catalog_selectors.target_list(filters)), "filters": filters}
    if not is_htmx(request):  # the filter form's choices: not part of the partial
        context.update(environments=catalog.environment_names(), kinds=catalog.target_kinds())
    return _render(request, "web/targets.html", "web/partials/targets_table.html", context)


@dataclass
class OfferForm:
    """One verb's or check's form on the target page, with what the last POST produced."""

    offer: catalog.Offer
    fields: list[FormField]
    form_id: str
    reason: str = ""
    error: str = ""
    error_details: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    findings: dict[str, Any] | None = None


class _Choices:
    """Live picker options for one page: each list asked of the connector once; a system that does not
    answer leaves the fields as free text (the page must not fail because Airflow is slow)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.cache: dict[str, list[tuple[str, str]]] = {}

    def for_schema(self, schema: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
        out = {}
        for name, what in choice_sources(schema).items():
            if what not in self.cache:
                try:
                    rows = target_choices(self.target, what)
                except ServiceError:
                    rows = []
                self.cache[what] = [(str(r["value"]), str(r.get("label", r["value"]))) for r in rows if "value" in r]
            out[name] = self.cache[what]
        return out


def _offer_form(offer: catalog.Offer, prefix: str, post: Any = None, choices: _Choices | None = None) -> OfferForm:
    """The form for ``offer``, refilled from ``post`` when it is the one that was just submitted."""
    form_id = f"{prefix}-{offer.name}"
    options = choices.for_schema(offer.schema) if choices is not None else {}
    return OfferForm(
        offer=offer,
        fields=fields_from_schema(offer.schema, form_id=form_id, submitted=post, choices=options),
        form_id=form_id,
        reason=post.get("reason", "") if post is not None else "",
    )


def _incident_for_request(request: HttpRequest) -> Incident | None:
    """The incident a target page was opened for (``?incident=`` from the incident page's "Actions that
    fit", or the verb form's hidden ``incident`` field): requests made there are linked to it. Unknown ids
    are ignored on GET; target_request refuses them."""
    raw = request.POST.get("incident") if request.method == "POST" else request.GET.get("incident")
    if not raw:
        return None
    try:
        return incidents.incident_get(raw)
    except NotFound:
        return None


def _target_context(request: HttpRequest, target: Target, *, active: OfferForm | None = None) -> dict[str, Any]:
    """The target page; ``active`` replaces the form of the verb or check that was just POSTed."""
    choices = _Choices(target)
    verb_forms = [_offer_form(o, "verb", choices=choices) for o in catalog.verbs_for(target)]
    check_forms = [_offer_form(o, "check") for o in catalog.checks_for(target)]
    if active is not None:
        forms = verb_forms if active.form_id.startswith("verb-") else check_forms
        forms[:] = [active if f.form_id == active.form_id else f for f in forms]
    return {
        "target": target,
        "verb_forms": verb_forms,
        "check_forms": check_forms,
        "can_request": access.has_role(request.user, "responder"),
        "recent": list(actions.action_list({"target": target.key})[:RECENT]),
        "incident": _incident_for_request(request),
    }


def _target_or_404(key: str) -> Target:
    try:
        return target_get(key)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _offer_or_404(offers: list[catalog.Offer], name: str) -> catalog.Offer:
    offer = next((o for o in offers if o.name == name), None)
    if offer is None:
        raise Http404(f"this target offers no {name!r}")
    return offer


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def target_detail(request: HttpRequest, key: str) -> HttpResponse:
    """``/targets/<key>/``: locator, a request form per verb (generated from its params schema) with
    Preview and Run, the read-only checks with Run check, and the recent actions on this target."""
    target = _target_or_404(key)
    context = _target_context(request, target)
    return _render(request, "web/target_detail.html", "web/partials/target_body.html", context)


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def target_preview(request: HttpRequest, key: str, verb: str) -> HttpResponse:
    """POST ``/targets/<key>/verbs/<verb>/preview/``: the plan this request would get (plan partial), or
    the refusal; nothing is written."""
    target = _target_or_404(key)
    offer = _offer_or_404(catalog.verbs_for(target), verb)
    form = _offer_form(offer, "verb", request.POST, choices=_Choices(target))
    status = 200
    try:
        prepared = action_services.action_prepare(
            actor=request.user, verb=verb, target_key=key, params=params_from_post(offer.schema, request.POST)
        )
        form.plan = prepared.plan.model_dump(mode="json")
    except (ServiceError, ConnectorError) as exc:
        form.error, status = service_error(exc)
        form.error_details = getattr(exc, "details", {})
    if is_htmx(request):
        return render(request, "web/partials/preview_result.html", {"form": form, "target": target}, status=status)
    context = _target_context(request, target, active=form)
    return render(request, "web/target_detail.html", context, status=status)


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def target_request(request: HttpRequest, key: str, verb: str) -> HttpResponse:
    """POST ``/targets/<key>/verbs/<verb>/request/``: request the action (channel "web") and go to its
    page; a refusal re-renders the form with the message, and nothing is written."""
    target = _target_or_404(key)
    offer = _offer_or_404(catalog.verbs_for(target), verb)
    incident = _incident_for_request(request)
    try:
        if request.POST.get("incident") and incident is None:
            raise NotFound(f"no incident {request.POST['incident']}: the action would not be linked to it")
        result = action_services.action_request(
            actor=request.user,
            verb=verb,
            target_key=key,
            params=params_from_post(offer.schema, request.POST),
            reason=request.POST.get("reason", ""),
            incident=incident,
        )
    except (ServiceError, ConnectorError) as exc:
        form = _offer_form(offer, "verb", request.POST, choices=_Choices(target))
        form.error, status = service_error(exc)
        form.error_details = getattr(exc, "details", {})
        if isinstance(form.error_details.get("plan"), dict):
            form.plan = form.error_details["plan"]  # a consent refusal carries the plan: show why
        if is_htmx(request):
            context = {
                "form": form,
                "target": target,
                "can_request": access.has_role(request.user, "responder"),
                "incident": incident,
            }
            return render(request, "web/partials/verb_form.html", context, status=status)
        return render(request, "web/target_detail.html", _target_context(request, target, active=form), status=status)
    url = reverse("web:action", args=[result.action.id])
    if is_htmx(request):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return HttpResponseRedirect(url)


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def target_check(request: HttpRequest, key: str, check: str) -> HttpResponse:
    """POST ``/targets/<key>/checks/<check>/``: run a read-only check and show its findings table."""
    target = _target_or_404(key)
    offer = _offer_or_404(catalog.checks_for(target), check)
    form = _offer_form(offer, "check", request.POST)
    status = 200
    try:
        findings = catalog.check_run(
            actor=request.user, target_key=key, check=check, params=params_from_post(offer.schema, request.POST)
        )
        form.findings = findings.model_dump(mode="json")
    except (ServiceError, ConnectorError) as exc:
        form.error, status = service_error(exc)
    if is_htmx(request):
        return render(request, "web/partials/findings.html", {"form": form}, status=status)
    return render(request, "web/target_detail.html", _target_context(request, target, active=form), status=status)


# ------------------------------------------------------------------------------------------ actions


ACTION_FILTERS = ("state", "verb", "target", "environment", "incident")
ACTION_ORDER = ("requested_at", "id")  # newest first; served by the action_history_idx index


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def action_list(request: HttpRequest) -> HttpResponse:
    """``/actions/``: actions newest first, filtered by state, verb, target, environment and incident (the
    incident page links its actions here), 50 a page with Older / Newer links carrying a cursor (a constant
    number of queries whatever the page and the table)."""
    filters = _filters(request, ACTION_FILTERS)
    error = ""
    try:
        qs = actions.action_list(filters)
    except InvalidInput as exc:
        error = exc.message
        qs = ActionRun.objects.none()
    page = _page(request, qs, ACTION_ORDER)
    if page.invalid_cursor:
        error = error or INVALID_CURSOR
    context: dict[str, Any] = {"page": page, "filters": filters, "error": error}
    if not is_htmx(request):  # the filter form's choices: not part of the partial
        context.update(states=ActionState.values, verbs=catalog.verb_names(), environments=catalog.environment_names())
    return _render(request, "web/actions.html", "web/partials/actions_results.html", context)


def _action_or_404(action_id: uuid.UUID) -> ActionRun:
    try:
        return actions.action_get(action_id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _refusal(check: Any, user: Any, action: ActionRun) -> str:
    """The policy's reason ``user`` may not do ``check`` on ``action``; empty when allowed."""
    try:
        check(user, action)
    except access.PolicyError as exc:
        return exc.message
    return ""


def _action_context(request: HttpRequest, action: ActionRun, *, error: str = "") -> dict[str, Any]:
    user = request.user
    decide_refusal = _refusal(policy.check_can_decide, user, action)
    cancel_refusal = _refusal(policy.check_can_cancel, user, action)
    return {
        "action": action,
        "approvals": list(action.approvals.all()),
        "log_lines": actions.action_log_tail(action.id, LOG_LINES),
        # Lazy: the live poll renders the audit trail only when the state changed.
        "audit_events": SimpleLazyObject(lambda: list(audit.audit_for_action(action.id))),
        "awaiting": action.state == ActionState.AWAITING_APPROVAL,
        "can_decide": action.state == ActionState.AWAITING_APPROVAL and not decide_refusal,
        "is_requester": action.requested_by_id == user.pk,
        "can_cancel": action.is_active and not cancel_refusal,
        "can_resolve": action.awaits_resolution and not _refusal(policy.check_can_resolve, user, action),
        "error": error,
    }


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def action_detail(request: HttpRequest, action_id: uuid.UUID) -> HttpResponse:
    """``/actions/<id>/``: the request, its plan, approvals with Approve/Reject for who may decide,
    Cancel, outcome and verification, the live log (polled while active) and the action's audit trail."""
    action = _action_or_404(action_id)
    return _render(request, "web/action_detail.html", "web/partials/action_body.html", _action_context(request, action))


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def action_live(request: HttpRequest, action_id: uuid.UUID) -> HttpResponse:
    """``/actions/<id>/live/``: the live block (state, outcome, verification, log) polled every second
    while the action is active, rendered without the polling trigger once it is terminal. The status bar
    is swapped out of band every time; the controls, approvals and audit trail only when the state
    differs from ``?seen=`` (so a comment being typed is not wiped every second)."""
    action = _action_or_404(action_id)
    context = _action_context(request, action)
    context["state_changed"] = request.GET.get("seen", action.state) != action.state
    context["oob"] = True
    return render(request, "web/partials/action_live.html", context)


def _command(request: HttpRequest, action_id: uuid.UUID, command: str) -> HttpResponse:
    """Approve, reject or cancel through the action service. htmx (the approvals inbox) gets the
    inbox card back with the result; a plain form is redirected to the action page (or sees the
    action page with the refusal)."""
    text = request.POST.get("comment", request.POST.get("reason", request.POST.get("note", "")))[:2000]
    actor = request.user
    error, status = "", 200
    try:
        if command == "approve":
            action_services.action_approve(actor=actor, action_id=action_id, comment=text)
        elif command == "reject":
            action_services.action_reject(actor=actor, action_id=action_id, comment=text)
        elif command == "resolve":
            action_services.action_resolve(actor=actor, action_id=action_id, note=text)
        else:
            action_services.action_cancel(actor=actor, action_id=action_id, reason=text)
    except NotFound as exc:
        raise Http404(exc.message) from None
    except ServiceError as exc:
        error, status = exc.message, exc.status
    action = _action_or_404(action_id)
    if is_htmx(request):
        can_decide = action.state == ActionState.AWAITING_APPROVAL and not _refusal(
            policy.check_can_decide, actor, action
        )
        context = {"action": action, "error": error, "decided": "" if error else command, "can_decide": can_decide}
        return render(request, "web/partials/approval_card.html", context, status=status)
    if not error:
        return HttpResponseRedirect(reverse("web:action", args=[action.id]))
    return render(request, "web/action_detail.html", _action_context(request, action, error=error), status=status)


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def action_approve(request: HttpRequest, action_id: uuid.UUID) -> HttpResponse:
    """POST ``/actions/<id>/approve/`` (``comment``): a different approver lets the action run."""
    return _command(request, action_id, "approve")


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def action_reject(request: HttpRequest, action_id: uuid.UUID) -> HttpResponse:
    """POST ``/actions/<id>/reject/`` (``comment``): a different approver refuses the action."""
    return _command(request, action_id, "reject")


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def action_cancel(request: HttpRequest, action_id: uuid.UUID) -> HttpResponse:
    """POST ``/actions/<id>/cancel/`` (``reason``): cancel a waiting or queued action, or ask a running one
    to stop."""
    return _command(request, action_id, "cancel")


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def action_resolve(request: HttpRequest, action_id: uuid.UUID) -> HttpResponse:
    """POST ``/actions/<id>/resolve/`` (``note``): a person dealt with what a ``needs_attention`` action left
    behind; its target is free again."""
    return _command(request, action_id, "resolve")


# ------------------------------------------------------------------------------------------ approvals


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def approvals(request: HttpRequest) -> HttpResponse:
    """``/approvals/``: actions awaiting a decision I may give (never my own), each with its plan summary,
    risk, requester and reason, and Approve / Reject; plus my own requests waiting for someone else."""
    user = request.user
    can_decide = access.has_role(user, "approver")
    waiting = actions.action_list({"state": ActionState.AWAITING_APPROVAL})
    context = {
        "can_decide": can_decide,
        "inbox": list(actions.awaiting_approval_for(user) if can_decide else waiting),
        "mine": list(waiting.filter(requested_by_id=user.pk)),
    }
    return _render(request, "web/approvals.html", "web/partials/approvals_body.html", context)


# ------------------------------------------------------------------------------------------ audit


AUDIT_FILTERS = ("event", "object_type", "object_id", "actor", "request_id")
AUDIT_ORDER = ("seq",)


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    """``/audit/``: audit events newest first, filtered by event, object type, actor and request id,
    50 a page with Older / Newer cursor links; the full page also verifies the hash chain (the events since
    the last verified one) and shows the verdict in a banner."""
    filters = _filters(request, AUDIT_FILTERS)
    page = _page(request, audit.audit_list(filters), AUDIT_ORDER)
    context: dict[str, Any] = {"page": page, "filters": filters, "error": INVALID_CURSOR if page.invalid_cursor else ""}
    if not is_htmx(request):
        status = audit_chain_status()
        context["verdict"], context["full_verified_at"] = status.verdict, status.full_verified_at
        context["pending"] = status.pending
    return _render(request, "web/audit.html", "web/partials/audit_results.html", context)


# ------------------------------------------------------------------------------------------ incidents


INCIDENT_FILTERS = ("status", "severity", "pipeline", "age")
INCIDENT_ORDER = ("created_at", "id")
INCIDENT_ACTIONS_LIMIT = 50  # the newest ones; the page links the rest (the action history, filtered)


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def incident_list(request: HttpRequest) -> HttpResponse:
    """``/incidents/``: incidents newest first, open ones unless ``status`` says otherwise (``all``, or one
    status), filtered by severity, pipeline and age (24h, 7d, 30d, all), 50 a page with Older / Newer cursor
    links (a constant number of queries whatever the page and the table)."""
    filters = _filters(request, INCIDENT_FILTERS)
    filters["status"] = filters["status"] or "open"
    error = ""
    try:
        qs = incidents.incident_list(filters)
    except InvalidInput as exc:
        error = exc.message
        qs = Incident.objects.none()
    page = _page(request, qs, INCIDENT_ORDER)
    if page.invalid_cursor:
        error = error or INVALID_CURSOR
    context: dict[str, Any] = {"page": page, "filters": filters, "error": error}
    if not is_htmx(request):  # the filter form's choices: not part of the partial
        context.update(
            statuses=Incident.Status.values,
            severities=[str(s) for s in incidents.SEVERITY_ORDER],
            pipelines=incidents.incident_pipeline_names(),
            ages=list(incidents.AGE_CHOICES),
        )
    return _render(request, "web/incidents.html", "web/partials/incidents_results.html", context)


def _incident_or_404(incident_id: int) -> Incident:
    try:
        return incidents.incident_get(incident_id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _incident_context(
    request: HttpRequest, incident: Incident, *, error: str = "", comment: str = "", notice: str = ""
) -> dict[str, Any]:
    """The incident page: header, alert, status controls, the actions, the runbooks and the timeline (a
    keyset page of it: the newest entries, ``?cursor=`` for older ones, shown oldest first)."""
    timeline = _page(request, incidents.incident_timeline_events(incident), incidents.TIMELINE_ORDER)
    can_respond = access.has_role(request.user, "responder")
    recent = incidents.incident_actions_recent(incident, limit=INCIDENT_ACTIONS_LIMIT)
    return {
        "incident": incident,
        "targets": list(incident.targets.all()),
        "timeline": timeline.object_list[::-1],
        "page": timeline,
        "log_url": incidents.incident_log_url(incident),
        "incident_actions": recent.actions,
        "incident_actions_total": recent.total,
        "incident_actions_truncated": recent.truncated,
        "suggested": incidents.suggested_actions(incident),
        "next_statuses": incident_services.incident_allowed_statuses(incident) if can_respond else [],
        "can_respond": can_respond,
        "suggested_runbooks": runbooks.runbooks_for_incident(incident),
        "runbook_runs": list(runbooks.runs_for_incident(incident)),
        "comment_max": incident_services.MAX_COMMENT,
        "error": error,
        "comment": comment,
        "notice": notice,
    }


@vary_on_headers("HX-Request")
@require_GET
@web_login_required
def incident_detail(request: HttpRequest, incident_id: int) -> HttpResponse:
    """``/incidents/<id>/``: what broke (title, severity, status, pipeline, targets, the alert and its log
    excerpt), Acknowledge / Mitigate / Resolve for responders, the actions taken, the runbooks, a comment
    form, and the timeline, newest last (50 entries a page, Older / Newer links for the rest)."""
    incident = _incident_or_404(incident_id)
    context = _incident_context(request, incident)
    return _render(request, "web/incident_detail.html", "web/partials/incident_body.html", context)


_STATUS_COMMANDS: dict[str, Callable[..., Incident]] = {
    "acknowledge": incident_services.incident_acknowledge,
    "mitigate": incident_services.incident_mitigate,
    "resolve": incident_services.incident_resolve,
}


def _incident_answer(
    request: HttpRequest, incident_id: int, *, error: str = "", status: int = 200, comment: str = "", notice: str = ""
) -> HttpResponse:
    """After a POST: htmx gets the refreshed incident body (with the refusal, if any); a plain form is
    redirected to the incident page, or sees it with the refusal."""
    if not error and not is_htmx(request):
        return HttpResponseRedirect(reverse("web:incident", args=[incident_id]))
    incident = _incident_or_404(incident_id)
    context = _incident_context(request, incident, error=error, comment=comment, notice=notice)
    template = "web/partials/incident_body.html" if is_htmx(request) else "web/incident_detail.html"
    return render(request, template, context, status=status)


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def incident_status(request: HttpRequest, incident_id: int, command: str) -> HttpResponse:
    """POST ``/incidents/<id>/acknowledge/`` | ``mitigate/`` | ``resolve/`` (optional ``note``): move the
    status one allowed step; a refusal (role, a jump the lifecycle does not allow) writes nothing."""
    service = _STATUS_COMMANDS.get(command)
    if service is None:
        raise Http404(f"no incident command {command!r}")
    try:
        incident = service(actor=request.user, incident_id=incident_id, note=request.POST.get("note", ""))
    except NotFound as exc:
        raise Http404(exc.message) from None
    except ServiceError as exc:
        return _incident_answer(request, incident_id, error=exc.message, status=exc.status)
    return _incident_answer(request, incident_id, notice=f"INC-{incident.pk} is {incident.status} now.")


@vary_on_headers("HX-Request")
@require_POST
@web_login_required
def incident_comment(request: HttpRequest, incident_id: int) -> HttpResponse:
    """POST ``/incidents/<id>/comments/`` (``text``, markdown): add a comment to the timeline; an empty or
    too long comment is refused with the text kept in the form."""
    text = request.POST.get("text", "")
    try:
        incident_services.incident_comment(actor=request.user, incident_id=incident_id, text=text)
    except NotFound as exc:
        raise Http404(exc.message) from None
    except ServiceError as exc:
        return _incident_answer(request, incident_id, error=exc.message, status=exc.status, comment=text)
    return _incident_answer(request, incident_id, notice="Comment added.")


@require_GET
@web_login_required
def incident_export(request: HttpRequest, incident_id: int) -> StreamingHttpResponse:
    """``/incidents/<id>/export.md``: the post-incident record (times, alert, full timeline, actions with
    approvals and verification, runbook runs) as a markdown download, streamed as it is read."""
    try:
        pieces = export_pieces(incident_id=incident_id)
    except NotFound as exc:
        raise Http404(exc.message) from None
    response = StreamingHttpResponse(pieces, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="INC-{incident_id}.md"'
    return response
