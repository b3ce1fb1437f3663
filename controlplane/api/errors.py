"""Every API error as JSON with a human message: ``{"error": {"code", "message", "details"}}``.

The control plane's own Postgres or Redis being unreachable (a restart, a failover) is a 503 saying which
one, not a 500: the client may try again once ``/readyz`` answers 200. A launch refused this way left no
action behind (the request's transaction rolled back); one answered 202 is in the database and is run once,
dispatched again by the reaper if its message was lost (README, "Reliability").
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

from controlplane.errors import ServiceError, Unavailable

log = logging.getLogger(__name__)

_DOWN = (
    "is unreachable, so this request was not carried out; try again in a moment "
    "(GET /readyz answers 200 when it is back)"
)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        out: list[str] = []
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)  # str: a list index 0 is a name too
            out += _flatten(value, f"{prefix}.{name}" if prefix and name else name or prefix)
        return out
    if isinstance(detail, list):
        return [m for item in detail for m in _flatten(item, prefix)]
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def _throttle_refused(exc: Exception, context: dict[str, Any]) -> Exception:
    """DRF checks permissions before throttles, so a caller without valid credentials is refused before any
    throttle counts it: count it here, against the anonymous rate of its address, and answer 429 past it."""
    view, request = context.get("view"), context.get("request")
    if view is None or request is None:
        return exc
    try:
        view.check_throttles(request)
    except exceptions.Throttled as throttled:
        return throttled
    return exc


# SQLSTATEs of a server that went away or is starting (class 08: connection exception; 57P01-57P03: shut down,
# crashed, starting up). A statement or lock timeout (57014, 55P03) is an OperationalError too, but no outage.
_GONE = ("08", "57P01", "57P02", "57P03")


def _connection_lost(exc: OperationalError) -> bool:
    """Whether the database error is the server being unreachable (no SQLSTATE: the client could not talk
    to it at all) rather than a statement that failed."""
    state = getattr(exc.__cause__, "sqlstate", None)
    return state is None or state.startswith(_GONE)


def _unavailable(exc: Exception) -> Exception:
    """An outage of the control plane's own database or Redis as a 503 naming it; other errors unchanged."""
    if isinstance(exc, InterfaceError) or (isinstance(exc, OperationalError) and _connection_lost(exc)):
        what = "the control plane's database"
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):  # not a command's own error
        what = "the control plane's Redis (rate limits, task queue)"
    else:
        return exc
    log.warning("answering 503: %s: %s: %s", what, type(exc).__name__, exc)
    return Unavailable(f"{what} {_DOWN}")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = _unavailable(exc)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        exc = _throttle_refused(exc, context)
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "not found")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        message = "; ".join(_flatten(exc.detail))
        return Response(error_body("invalid", message, {"fields": exc.detail}), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        response.data = error_body(str(code), str(exc.detail))
    return response


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The site's 404 handler: an API path no route matches (``/api/v1/incidents/-1``) answers in the API's
    JSON error shape, as the schema promises; other paths get Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "no API endpoint at this path"), status=404)
    return defaults.page_not_found(request, exception)
