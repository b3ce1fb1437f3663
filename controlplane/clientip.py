"""The client's address, read one way for every consumer (API throttles, login lockout).

``X-Forwarded-For`` is anyone's to write, so it is believed only as far as ``TRUSTED_PROXY_COUNT`` says:
0 (the default) ignores it and takes the socket's peer; N takes the Nth entry from the right, the one the
outermost trusted proxy appended (the entries left of it were sent by the client and prove nothing).
This is DRF's ``NUM_PROXIES`` rule; settings set both from the one variable.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The address the request came from, as far as the trusted proxies vouch for it."""
    remote = str(request.META.get("REMOTE_ADDR", ""))
    proxies: int = settings.TRUSTED_PROXY_COUNT
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
    if proxies <= 0 or not forwarded:
        return remote
    hops = [hop.strip() for hop in forwarded.split(",")]
    candidate = hops[-min(proxies, len(hops))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote  # a proxy that writes no address is misconfigured: fall back to its own address
