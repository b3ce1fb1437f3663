"""API tokens and catalog targets are cached per process (controlplane.configcache), yet every change to
what they stand for (a token's revocation, its user's roles or active flag, an environment's protected flag,
a target's locator) takes effect on the very next request, in every process."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db

TARGETS = "/api/v1/targets"
DEV_MART = "dev.weather.daily_weather_aggregates"


def _token_of(bot: ApiClient) -> Any:
    from controlplane.api.models import ApiToken
    from controlplane.api.services import hash_token

    return ApiToken.objects.get(token_hash=hash_token(bot.token or ""))


def test_a_revoked_token_is_refused_on_its_next_request(catalog: Any, api_for: Any) -> None:
    from controlplane.api.services import api_token_revoke

    bot = api_for("viewer", scopes=["catalog:read"])
    assert bot.get(TARGETS).status_code == 200  # resolved and cached
    api_token_revoke(token=_token_of(bot))
    resp = bot.get(TARGETS)
    assert resp.status_code == 401
    assert "revoked" in resp.json()["error"]["message"]


def test_losing_a_role_takes_effect_on_the_next_request(catalog: Any, api_for: Any, actors: Any) -> None:
    from django.contrib.auth.models import Group

    bot = api_for("responder")
    body = {"verb": "refresh-mart", "target": DEV_MART, "params": {}, "reason": "stale"}
    preview = {k: v for k, v in body.items() if k != "reason"}
    assert bot.post("/api/v1/actions/preview", preview).status_code == 200  # the role is cached with the token
    actors["responder"].groups.remove(Group.objects.get(name="responder"))
    resp = bot.post("/api/v1/actions", body)
    assert resp.status_code == 403
    assert "you have no role" in resp.json()["error"]["message"]


def test_a_deactivated_user_is_refused_on_the_next_request(catalog: Any, api_for: Any, actors: Any) -> None:
    bot = api_for("viewer", scopes=["catalog:read"])
    assert bot.get(TARGETS).status_code == 200
    actors["viewer"].is_active = False
    actors["viewer"].save()
    assert bot.get(TARGETS).status_code == 401


def test_revoking_in_another_process_reaches_this_one(transactional_db: Any, catalog: Any, api_for: Any) -> None:
    from django.conf import settings

    bot = api_for("viewer", scopes=["catalog:read"])
    assert bot.get(TARGETS).status_code == 200  # cached in this process
    token = _token_of(bot)
    db = settings.DATABASES["default"]
    env = {**os.environ, "DATABASE_URL": f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    done = subprocess.run(
        [sys.executable, "manage.py", "revoke_api_token", token.prefix],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "revoked" in done.stdout
    assert bot.get(TARGETS).status_code == 401
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_revoke_command_refuses_an_unknown_prefix(actors: Any) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="no live token"):
        call_command("revoke_api_token", "cpt_nothere")


def test_protecting_an_environment_applies_to_the_next_request(catalog: Any, api_for: Any) -> None:
    from controlplane.catalog.models import Environment

    bot = api_for("responder")
    body = {"verb": "refresh-mart", "target": DEV_MART, "params": {}, "reason": "stale"}
    first = bot.post("/api/v1/actions", body).json()
    assert first["state"] == "queued"  # the target is cached now
    assert bot.post(f"/api/v1/actions/{first['id']}/cancel", {}).status_code == 200
    dev = Environment.objects.get(name="dev")
    dev.protected = True
    dev.save()
    second = bot.post("/api/v1/actions", body).json()
    assert second["state"] == "awaiting_approval"
    assert second["approval_reason"] == "dev is a protected environment"


def test_a_deleted_target_is_gone_on_the_next_request(catalog: Any, api_for: Any) -> None:
    from controlplane.catalog.models import Target

    bot = api_for("responder")
    body = {"verb": "refresh-mart", "target": DEV_MART}
    assert bot.post("/api/v1/actions/preview", body).status_code == 200
    Target.objects.filter(key=DEV_MART).delete()  # a queryset delete still sends post_delete per row
    resp = bot.post("/api/v1/actions/preview", body)
    assert resp.status_code == 404


def test_a_launch_reads_the_config_generation_once(catalog: Any, api_for: Any, monkeypatch: Any) -> None:
    from controlplane import configcache

    bot = api_for("responder")
    reads: list[bytes | None] = []
    real = configcache._read_generation

    def counted() -> bytes | None:
        reads.append(real())
        return reads[-1]

    monkeypatch.setattr(configcache, "_read_generation", counted)
    body = {"verb": "refresh-mart", "target": DEV_MART, "params": {}, "reason": "stale"}
    assert bot.post("/api/v1/actions", body).status_code == 202  # token and target lookups: one read
    assert len(reads) == 1
    configcache.current_generation()  # outside a request: read every time
    assert len(reads) == 2
