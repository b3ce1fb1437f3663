"""One Redis client per process for the hot-path counters (throttle windows, the token generation).

Django's cache API has no atomic "increment and set an expiry" and hides its client behind a private
attribute, so the few places that need Redis' own commands share this client. Its pool is thread-safe;
every call has a timeout.
"""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
