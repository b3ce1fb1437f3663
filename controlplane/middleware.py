"""Request id and change context for every web and API request."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from controlplane.audit import context
from controlplane.audit.context import Channel
from controlplane.configcache import one_read_per_request

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Takes a well-formed ``X-Request-ID`` from the caller or makes one; echoes it on the response. The
    request runs in its change context, reading the cached-configuration generation once."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_ID.match(incoming) else context.new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        channel = Channel.API if request.path.startswith("/api/") else Channel.WEB
        with context.change_context(channel=channel, request_id=request_id), one_read_per_request():
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class ChangeContextMiddleware:
    """Attaches the session user to the change context (DRF token users are attached by the API's
    authentication class, which runs inside the view)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            context.set_user(user)
        return self.get_response(request)


class BodySizeLimitMiddleware:
    """Refuses a declared body larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` with 413 before anything reads
    it (JSON for the API, text elsewhere). Bodies without a length are bounded by the API's parser."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            message = f"request body is larger than {limit} bytes"
            if request.path.startswith("/api/"):
                body = {"error": {"code": "payload_too_large", "message": message, "details": {}}}
                return JsonResponse(body, status=413)
            return HttpResponse(message, status=413, content_type="text/plain")
        return self.get_response(request)
