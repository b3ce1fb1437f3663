"""What the OpenAPI schema says beyond the views' own annotations: how callers authenticate, and the error
answers every endpoint can give, in the one JSON shape ``controlplane/api/errors.py`` writes. Bots (and the
schemathesis run in the tests) read the schema as the contract, so it must name each answer truthfully."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": True},
            },
        }
    },
}

# Answers any endpoint can give (an authenticated one: the schema's own endpoints are public).
_ALWAYS = {
    "400": "invalid input: the message names the field (query parameters too)",
    "401": "no, or an unknown, expired or revoked, API token",
    "403": "the token lacks the endpoint's scope, or the user's role does not allow it",
    "429": "throttled: wait for Retry-After seconds",
    "503": "the control plane's database or Redis, or a system the answer needs, did not answer; retry later",
}
_WITH_PATH_PARAMETERS = {"404": "no such object"}
_WRITES = {
    "404": "an object the request names does not exist",
    "409": "conflicts with the object's state, or another action is active on the target",
    "413": "the body is larger than MAX_REQUEST_BYTES",
    "422": "the Idempotency-Key was used with a different body",
}


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "controlplane.api.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return dict(build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer"))  # noqa: S106


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "controlplane.api.auth.SessionWithContext"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: the ``Error`` component and the error answers of each operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            errors = dict(_ALWAYS)
            if "{" in path:
                errors.update(_WITH_PATH_PARAMETERS)
            if method == "post":
                errors.update(_WRITES)
            responses = operation.setdefault("responses", {})
            for status, description in errors.items():
                responses.setdefault(
                    status, {"description": description, "content": {"application/json": {"schema": ref}}}
                )
    return result
