"""Fixed-window request counters in Redis.

DRF's ``SimpleRateThrottle`` keeps a list of request timestamps per client in the cache and reads and
writes the whole list on every request: at 250 requests/s and a one-minute window that is a 15,000-entry
pickled list per request. A counter per window (``INCR`` + ``EXPIRE`` in one round trip) costs the same
at any rate. The price is the usual fixed-window one: a client can spend two windows' worth across a
window boundary.
"""

from __future__ import annotations

import time
from typing import Any

from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from controlplane.clientip import client_ip
from controlplane.redis import redis_client

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"6000/minute"`` -> (6000, 60)."""
    count, _, period = rate.partition("/")
    return int(count), _UNITS[period[0]]


class FixedWindowThrottle(BaseThrottle):
    """Allows ``rate`` requests per window per client; ``scope`` names the rate in DRF's settings."""

    scope = ""
    THROTTLE_RATES: dict[str, str] = api_settings.DEFAULT_THROTTLE_RATES  # type: ignore[assignment]

    def __init__(self) -> None:
        self.num_requests, self.duration = parse_rate(self.THROTTLE_RATES[self.scope])
        self.window_end = 0.0

    def get_ident_key(self, request: Any) -> str | None:
        raise NotImplementedError

    def get_ident(self, request: Any) -> str:
        """The client address, read as the login lockout reads it (``TRUSTED_PROXY_COUNT``)."""
        return client_ip(request)

    def allow_request(self, request: Any, view: Any) -> bool:
        ident = self.get_ident_key(request)
        if ident is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        self.window_end = (window + 1) * self.duration
        key = f"throttle:{self.scope}:{ident}:{window}"
        pipe = redis_client().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, self.duration + 1)
        count = pipe.execute()[0]
        return int(count) <= self.num_requests

    def wait(self) -> float | None:
        return max(self.window_end - time.time(), 0.0)


class UserThrottle(FixedWindowThrottle):
    """Per authenticated user (all of a user's tokens and sessions share it); per address otherwise."""

    scope = "user"

    def get_ident_key(self, request: Any) -> str | None:
        user = request.user
        if user is not None and user.is_authenticated:
            return f"u{user.pk}"
        return f"a{self.get_ident(request)}"


class AnonThrottle(FixedWindowThrottle):
    """Per client address, for requests without credentials."""

    scope = "anon"

    def get_ident_key(self, request: Any) -> str | None:
        user = request.user
        if user is not None and user.is_authenticated:
            return None
        return f"a{self.get_ident(request)}"


class AlertThrottle(UserThrottle):
    """Alerts one user may post per window (all of a bot's tokens together), below the general user rate:
    each alert may open a high-severity incident, so a leaked ``alerts:write`` token cannot flood them."""

    scope = "alerts"
