"""Settings from the environment stop the process at start-up, naming the variable, on a bad value."""

from __future__ import annotations

import os
import subprocess
import sys

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
