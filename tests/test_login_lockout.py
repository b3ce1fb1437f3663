"""Password guessing is cut off: the login page and the admin login lock a username from one address after a few
failures (django-axes), and the client address is read the one way the API throttles read it."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
LIMIT = getattr(settings, "AXES_FAILURE_LIMIT", 5)


@pytest.fixture
def people(django_user_model: Any) -> dict[str, Any]:
    return {
        "alice": django_user_model.objects.create_user("alice", password=PASSWORD),
        "bob": django_user_model.objects.create_user("bob", password=PASSWORD),
        "root": django_user_model.objects.create_superuser("root", password=PASSWORD),
    }


def login(path: str, username: str, password: str, *, remote: str = "10.1.1.1", forwarded: str = "") -> Any:
    headers = {"X-Forwarded-For": forwarded} if forwarded else None
    return Client(REMOTE_ADDR=remote).post(path, {"username": username, "password": password}, headers=headers)


def logged_in(response: Any) -> bool:
    return response.status_code == 302 and "/login/" not in response["Location"]


def lock_out(path: str, username: str, **where: str) -> None:
    for _ in range(LIMIT):
        response = login(path, username, "wrong-password", **where)
        assert not logged_in(response)


def test_wrong_passwords_lock_the_login_for_that_user_and_address(people: Any) -> None:
    lock_out("/login/", "alice")
    refused = login("/login/", "alice", PASSWORD)
    assert refused.status_code == 429
    assert "Too many failed logins" in refused.content.decode()
    # Another user from the same address, and the same user from another address, still log in.
    assert logged_in(login("/login/", "bob", PASSWORD))
    assert logged_in(login("/login/", "alice", PASSWORD, remote="10.2.2.2"))


def test_the_admin_login_is_locked_too(people: Any) -> None:
    lock_out("/admin/login/", "root")
    assert login("/admin/login/", "root", PASSWORD).status_code == 429
    assert login("/login/", "root", PASSWORD).status_code == 429  # one counter for both doors


def test_a_success_before_the_limit_starts_the_count_again(people: Any) -> None:
    for _ in range(LIMIT - 1):
        login("/login/", "alice", "wrong-password")
    assert logged_in(login("/login/", "alice", PASSWORD))
    login("/login/", "alice", "wrong-password")
    assert logged_in(login("/login/", "alice", PASSWORD))


def test_a_forged_forwarded_for_does_not_escape_the_lockout(people: Any) -> None:
    lock_out("/login/", "alice")
    forged = login("/login/", "alice", PASSWORD, forwarded="203.0.113.9")
    assert forged.status_code == 429


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_behind_one_proxy_the_address_the_proxy_saw_is_the_client(people: Any) -> None:
    # Every request comes from the proxy's address; the proxy appends the address it saw to X-Forwarded-For.
    lock_out("/login/", "alice", remote="10.0.0.2", forwarded="198.51.100.1")
    assert login("/login/", "alice", PASSWORD, remote="10.0.0.2", forwarded="198.51.100.1").status_code == 429
    # A client's own forged entry stands left of what the proxy appended and is not believed.
    elsewhere = login("/login/", "alice", PASSWORD, remote="10.0.0.2", forwarded="198.51.100.1, 198.51.100.2")
    assert logged_in(elsewhere)


def test_a_failed_password_is_not_stored(people: Any) -> None:
    from django.apps import apps

    AccessAttempt = apps.get_model("axes", "AccessAttempt")
    login("/login/", "alice", "almost-the-right-password")
    attempt = AccessAttempt.objects.get(username="alice")
    assert attempt.failures_since_start == 1
    assert "almost-the-right-password" not in attempt.post_data
