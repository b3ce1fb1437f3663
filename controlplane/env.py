"""Typed readers for settings from the environment that fail loudly on bad values.

A misspelt boolean or a non-numeric port must stop the process at start-up with the variable's name, not
surface hours later as a strange default.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str:
    """The variable's value, or ``NAME_FILE``'s file content (for secrets), or the default."""
    file_var = os.environ.get(f"{name}_FILE")
    if file_var:
        try:
            return Path(file_var).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_var} cannot be read: {exc.strerror}") from None
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ImproperlyConfigured(f"environment variable {name} is required")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be >= {minimum}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    """A finite decimal number (``50``, ``12.5``); not a number, infinite or under ``minimum`` stops start-up."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be >= {minimum}")
    return value


_RATE = re.compile(r"^([1-9][0-9]*)/(s|sec|second|m|min|minute|h|hour|d|day)$")


def env_rate(name: str, default: str) -> str:
    """A request rate such as ``6000/minute`` (per second, minute, hour or day)."""
    raw = os.environ.get(name, default).strip()
    if not _RATE.match(raw):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a rate like 6000/minute (per second, minute, hour or day)")
    return raw


_TIME_OF_DAY = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def env_time_of_day(name: str, default: str) -> tuple[int, int]:
    """A time of day as ``HH:MM`` (24-hour) -> (hour, minute); anything else stops start-up."""
    raw = os.environ.get(name, default).strip()
    matched = _TIME_OF_DAY.match(raw)
    if not matched:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a time of day like 06:00 (24-hour HH:MM)")
    return int(matched.group(1)), int(matched.group(2))


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def _url_int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"DATABASE_URL: {name} must be a whole number, got {value!r}") from None


def database_from_url(url: str) -> dict[str, Any]:
    """Django DATABASES entry from ``DATABASE_URL``, ``postgres://user:pass@host:port/name``.

    Postgres is the only engine: the demo, the tests and compose all run on it. An empty or other URL stops
    start-up (naming the scheme only: the URL may hold a password).
    """
    if not url:
        raise ImproperlyConfigured(
            "DATABASE_URL is required: postgres://user:password@host:port/name (the control plane runs on Postgres)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        scheme = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise ImproperlyConfigured(
            f"DATABASE_URL must be a postgres:// URL, got {scheme} (the control plane runs on Postgres only)"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured("DATABASE_URL needs a database name: postgres://user@host:port/NAME")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    # Parameters are bound by the client and nothing is prepared on the server (Django's defaults): a prepared
    # statement is planned generically after a few runs, without its values, and such a plan cannot use a
    # partial index (open incidents) or tell a rare filter value from a common one, which made history pages
    # at 1 M rows 10-40x slower (bench/history_pages.py).
    options: dict[str, object] = {
        "connect_timeout": _url_int(query.pop("connect_timeout", "5"), "connect_timeout"),
    }
    options.update(query)
    return {
        "ENGINE": "controlplane.pgbackend",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": options,
    }
