"""Domain errors raised by services, carrying the HTTP status every interface maps them to.

Services raise these with a message written for the person who sent the request; the REST API renders
them as JSON, the web UI as a message, Slack as an ephemeral reply. Nothing has been written when one is
raised from a service: validation happens before the transaction, conflicts roll it back.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidInput(ServiceError):
    status = 400
    code = "invalid"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class IdempotencyMismatch(ServiceError):
    status = 422
    code = "idempotency_key_reused"


class Unavailable(ServiceError):
    """An external system needed to answer (for a plan) is unreachable; retrying later may work."""

    status = 503
    code = "unavailable"
