"""Slack's request URLs and the profile page's Slack link.

``POST /slack/interactions`` and ``POST /slack/commands`` are authenticated by Slack's signature (no session,
no CSRF token: Slack cannot send one). They verify, drop duplicate deliveries, enqueue the work and answer at
once (controlplane/slack/inbound.py); the tasks answer the person through the response_url. Both answer 404
while Slack is off (no bot token reference).
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST
from redis.exceptions import RedisError

from controlplane.errors import ServiceError
from controlplane.slack import commands, identity, inbound, tasks
from controlplane.slack.client import slack_enabled
from controlplane.slack.models import SlackUserLink
from controlplane.web.views import web_login_required

log = logging.getLogger(__name__)


def _verified(request: HttpRequest) -> HttpResponse | None:
    """None when the request is Slack's; otherwise the 401 to answer (audited)."""
    if not slack_enabled():
        raise Http404("Slack is not configured")
    try:
        inbound.verify(request)
    except inbound.Refused as refused:
        inbound.audit_refusal(request, refused.reason)
        return HttpResponse("invalid Slack signature", status=401, content_type="text/plain")
    return None


def _unavailable() -> HttpResponse:
    log.exception("could not hand a Slack request to the workers")
    return HttpResponse("the control plane's queue is unavailable; try again", status=503, content_type="text/plain")


@csrf_exempt
@require_POST
def interactions(request: HttpRequest) -> HttpResponse:
    """A button press: 200 with an empty body once the work is queued (Slack shows nothing more)."""
    if (refused := _verified(request)) is not None:
        return refused
    try:
        press = inbound.parse_press(request)
    except (ValueError, UnicodeDecodeError):
        return HttpResponse("malformed payload", status=400, content_type="text/plain")
    if press is None:
        return HttpResponse(status=200)
    try:
        if inbound.first_delivery(press):
            tasks.slack_press.delay(press.as_task_arg())
    except (RedisError, OSError):
        return _unavailable()
    return HttpResponse(status=200)


@csrf_exempt
@require_POST
def slash_commands(request: HttpRequest) -> HttpResponse:
    """``/runbook``: help is answered here; anything else is queued and answered "working on it"."""
    if (refused := _verified(request)) is not None:
        return refused
    try:
        command = inbound.parse_command(request)
    except (ValueError, UnicodeDecodeError):
        return HttpResponse("malformed command", status=400, content_type="text/plain")
    if commands.is_help(command.text):
        return JsonResponse({"response_type": "ephemeral", "text": commands.HELP})
    try:
        if not inbound.first_delivery(command):
            return HttpResponse(status=200)
        tasks.slack_command.delay(command.as_task_arg())
    except (RedisError, OSError):
        return _unavailable()
    return JsonResponse({"response_type": "ephemeral", "text": f"Working on `{command.command} {command.text}`…"})


@require_http_methods(["GET", "POST"])
@web_login_required
def profile(request: HttpRequest) -> HttpResponseBase:
    """The user's Slack link: shows it, issues a one-time link code (``get_code``), or removes it
    (``unlink``). Linking itself happens from Slack (``/runbook link <code>``), which proves the Slack side."""
    code = ""
    if request.method == "POST":
        try:
            if "unlink" in request.POST:
                identity.slack_link_remove(user=request.user)
                messages.success(request, "Your Slack link is removed.")
                return redirect("slack:profile")
            code = identity.slack_link_code_issue(user=request.user)
        except ServiceError as exc:
            messages.error(request, exc.message)
            return redirect("slack:profile")
    link = SlackUserLink.objects.filter(user_id=request.user.pk).first()  # type: ignore[misc]
    context = {"link": link, "code": code, "ttl_minutes": identity.LINK_CODE_TTL_SECONDS // 60}
    return render(request, "slack/profile.html", context)
