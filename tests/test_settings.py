"""Settings from the environment stop the process at start-up, naming the variable, on a bad value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest


def _start(**env: str) -> subprocess.CompletedProcess[str]:
    code = "import django; django.setup(); print('started')"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("API_THROTTLE_USER", "lots", "is not a rate like 6000/minute"),
        ("API_THROTTLE_ANON", "10/fortnight", "is not a rate like 6000/minute"),
        ("ACTION_LEASE_SECONDS", "soon", "is not an integer"),
        ("APPROVAL_COST_USD", "fifty", "is not a number"),
        ("APPROVAL_COST_USD", "inf", "is not a finite number"),
        ("WATCH_INTERVAL_SECONDS", "5m", "is not an integer"),
        ("QUARANTINE_DAILY_AT", "6am", "is not a time of day like 06:00"),
        ("QUARANTINE_DAILY_AT", "24:00", "is not a time of day like 06:00"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(name: str, value: str, says: str) -> None:
    done = _start(**{name: value})
    assert done.returncode != 0
    assert f"{name}={value!r} {says}" in done.stderr


def test_good_values_start() -> None:
    done = _start(API_THROTTLE_USER="250/s", API_THROTTLE_ANON="100/hour")
    assert done.returncode == 0, done.stderr
    assert "started" in done.stdout


def _settings(*names: str, **env: str) -> dict[str, Any]:
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n, 'unset') for n in {list(names)!r}}}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


SECURITY = (
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_SSL_REDIRECT",
    "TRUSTED_PROXY_COUNT",
)
HTTPS_ENV = ("SECURE_COOKIES", "SECURE_HSTS_SECONDS", "TRUST_X_FORWARDED_PROTO", "SECURE_SSL_REDIRECT")


def test_with_debug_off_cookies_are_secure_and_https_is_remembered(monkeypatch: Any) -> None:
    for name in HTTPS_ENV:
        monkeypatch.delenv(name, raising=False)
    got = _settings(*SECURITY, DEBUG="false")
    assert got["SESSION_COOKIE_SECURE"] is True
    assert got["CSRF_COOKIE_SECURE"] is True
    assert got["SECURE_HSTS_SECONDS"] == 31_536_000
    assert got["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert got["SECURE_HSTS_PRELOAD"] is False
    # Trusting X-Forwarded-Proto or X-Forwarded-For without a proxy would let any client claim HTTPS or an address.
    assert got["SECURE_PROXY_SSL_HEADER"] is None
    assert got["SECURE_SSL_REDIRECT"] is False
    assert got["TRUSTED_PROXY_COUNT"] == 0


def test_behind_a_tls_proxy_the_settings_say_so() -> None:
    got = _settings(
        *SECURITY,
        DEBUG="false",
        TRUST_X_FORWARDED_PROTO="true",
        SECURE_SSL_REDIRECT="true",
        SECURE_HSTS_SECONDS="600",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="true",
        SECURE_HSTS_PRELOAD="true",
        TRUSTED_PROXY_COUNT="1",
    )
    assert got["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert got["SECURE_SSL_REDIRECT"] is True
    assert got["SECURE_HSTS_SECONDS"] == 600
    assert got["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert got["SECURE_HSTS_PRELOAD"] is True
    assert got["TRUSTED_PROXY_COUNT"] == 1


def test_plain_http_can_be_chosen_and_debug_is_plain_http(monkeypatch: Any) -> None:
    for name in HTTPS_ENV:
        monkeypatch.delenv(name, raising=False)
    got = _settings(*SECURITY, DEBUG="false", SECURE_COOKIES="false", SECURE_HSTS_SECONDS="0")
    assert (got["SESSION_COOKIE_SECURE"], got["CSRF_COOKIE_SECURE"], got["SECURE_HSTS_SECONDS"]) == (False, False, 0)
    got = _settings(*SECURITY, DEBUG="true")
    assert (got["SESSION_COOKIE_SECURE"], got["SECURE_HSTS_SECONDS"]) == (False, 0)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("TRUSTED_PROXY_COUNT", "-1", "must be >= 0"),
        ("TRUST_X_FORWARDED_PROTO", "maybe", "is not a boolean"),
        ("SECURE_HSTS_SECONDS", "a year", "is not an integer"),
        ("LOGIN_FAILURE_LIMIT", "0", "must be >= 1"),
    ],
)
def test_bad_security_values_stop_start_up(name: str, value: str, says: str) -> None:
    done = _start(**{name: value})
    assert done.returncode != 0
    assert says in done.stderr and name in done.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (None, "DATABASE_URL is required: postgres://user:password@host:port/name"),
        ("", "DATABASE_URL is required: postgres://user:password@host:port/name"),
        ("mysql://cp:s3cr3t@db/cp", "DATABASE_URL must be a postgres:// URL, got mysql://"),
        ("var/controlplane.db", "DATABASE_URL must be a postgres:// URL, got no scheme"),
    ],
)
def test_the_database_is_postgres_or_start_up_stops(url: str | None, says: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if url is not None:
        env["DATABASE_URL"] = url
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        env={**env, "DJANGO_SETTINGS_MODULE": "controlplane.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "started" not in done.stdout
    assert says in done.stderr
    assert "s3cr3t" not in done.stderr  # the URL, which may hold a password, is not repeated


def test_the_daily_quarantine_jobs_run_at_a_fixed_hour_not_every_24_hours_from_beats_start() -> None:
    """A beat restarted (a deploy, a fresh schedule file) before an interval's end never runs an every-24-hours
    entry; a crontab one runs at its hour whenever beat started."""
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "from datetime import datetime, timezone; "
        "out = {}\n"
        "for name in ('quarantine-breaches', 'quarantine-retention-cleanup'):\n"
        "    sched = s.CELERY_BEAT_SCHEDULE[name]['schedule']\n"
        "    sched.nowfun = lambda: datetime(2026, 12, 7, 7, 31, tzinfo=timezone.utc)\n"
        "    started = datetime(2026, 12, 7, 7, 0, tzinfo=timezone.utc)  # beat (re)started at 07:00\n"
        "    out[name] = [sched.is_due(started).is_due, sorted(sched.hour), sorted(sched.minute)]\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings", "QUARANTINE_DAILY_AT": "07:30"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {key: [True, [7], [30]] for key in ("quarantine-breaches", "quarantine-retention-cleanup")}
