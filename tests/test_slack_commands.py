"""``/runbook`` from Slack: help at once; status, run (preview, then Confirm / Cancel) and link done by a real
Celery worker as the linked user, answered through the stand-in's response_url."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from controlplane.actions import services as action_services
from controlplane.actions.models import ActionRun
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.incidents.models import Incident
from controlplane.slack.commands import HELP
from controlplane.slack.models import SlackPost, SlackUserLink
from tests.slack_signed import SlackWorld, link, running_slack

DEV_MART = "dev.weather.daily_weather_aggregates"


@pytest.fixture
def slack(settings: Any) -> Iterator[SlackWorld]:
    with running_slack(settings) as world:
        yield world


def button(answer: dict[str, Any], action_id: str) -> dict[str, Any]:
    """The value of the answer's button ``action_id``."""
    for block in answer["blocks"]:
        for element in block.get("elements", []):
            if element.get("action_id") == action_id:
                return dict(json.loads(element["value"]))
    raise AssertionError(f"no {action_id} button in {answer['blocks']}")


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["help", "", "  HELP "])
def test_help_is_answered_at_once(slack: SlackWorld, text: str) -> None:
    response, _ = slack.command(text, user="U0ANYONE")
    assert response.status_code == 200
    assert response.json() == {"response_type": "ephemeral", "text": HELP}


@pytest.mark.django_db
def test_a_command_is_acknowledged_working_on_it_and_a_bad_signature_refused(slack: SlackWorld) -> None:
    response, _ = slack.command("status", user="U0ANYONE")
    assert response.json() == {"response_type": "ephemeral", "text": "Working on `/runbook status`…"}
    refused, _ = slack.command("status", user="U0ANYONE", secret="wrong")
    assert refused.status_code == 401
    event = AuditEvent.objects.get(event="slack.signature_refused")
    assert event.object_repr == "/slack/commands" and (event.after or {})["user_id"] == "U0ANYONE"


@pytest.mark.worker
def test_status_lists_open_incidents_then_one_with_its_last_actions(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    link(actors["viewer"], "U0VERA")
    open_one = Incident.objects.create(title="mart stale", fingerprint="a", severity=Incident.Severity.HIGH)
    Incident.objects.create(title="long gone", fingerprint="b", status=Incident.Status.RESOLVED)
    with change_context(channel=Channel.WEB, user=actors["responder"]):
        action_services.action_request(
            actor=actors["responder"],
            verb="refresh-mart",
            target_key=DEV_MART,
            params={},
            reason="stale",
            incident=open_one,
        )
    worker_factory(**slack.worker_env)
    _, listed_to = slack.command("status", user="U0VERA")
    _, one_to = slack.command(f"status INC-{open_one.pk}", user="U0VERA")
    _, bad_to = slack.command("status 1 2", user="U0VERA")
    [listed] = slack.wait_answer(listed_to)
    assert f"INC-{open_one.pk}> [high] triggered: mart stale" in listed["text"]
    assert "long gone" not in listed["text"]
    [one] = slack.wait_answer(one_to)
    assert one["text"].startswith(f"*<http://cp.test/incidents/{open_one.pk}/|INC-{open_one.pk}>* [high]")
    assert f"refresh-mart> on `{DEV_MART}`" in one["text"] and "(by rita, web)" in one["text"]
    [bad] = slack.wait_answer(bad_to)
    assert bad["text"] == ":x: `status` takes one incident number (`12` or `INC-12`), not '1 2'"


@pytest.mark.worker
def test_run_previews_runs_nothing_before_confirm_then_confirm_launches_once(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    rita = actors["responder"]
    link(rita, "U0RITA")
    worker_factory(**slack.worker_env)
    _, preview_to = slack.command(f'run refresh-mart {DEV_MART} timeout_s=120 reason="mart is stale"', user="U0RITA")
    [preview] = slack.wait_answer(preview_to)
    assert preview["text"].startswith(f"Preview: refresh-mart on {DEV_MART}: ")
    assert f"*Preview: refresh-mart on `{DEV_MART}`*" in preview["blocks"][0]["text"]["text"]
    assert not ActionRun.objects.exists()
    confirm, cancel = button(preview, "preview.confirm"), button(preview, "preview.cancel")
    post = SlackPost.objects.get(kind=SlackPost.Kind.PREVIEW)
    assert confirm == cancel == {"preview": post.pk}
    assert post.data["params"] == {"timeout_s": 120} and post.data["slack_user"] == "U0RITA"

    link(actors["responder2"], "U0ROB")
    _, stranger_to = slack.press("preview.confirm", confirm, user="U0ROB", message_ts="")
    [stranger] = slack.wait_answer(stranger_to)
    assert stranger["text"] == "Refused: only the person who asked for this preview can confirm or cancel it"
    _, confirmed_to = slack.press("preview.confirm", confirm, user="U0RITA", message_ts="")
    [confirmed] = slack.wait_answer(confirmed_to)
    action = ActionRun.objects.get()
    assert confirmed["replace_original"] is True and confirmed["text"].startswith("Confirmed: <http://cp.test/actions/")
    assert (action.reason, action.params["timeout_s"], action.channel) == ("mart is stale", 120, Channel.SLACK)
    assert action.requested_by == rita and action.idempotency_key == f"slack:preview:{post.pk}"
    requested = AuditEvent.objects.get(event="action.requested", object_id=str(action.id))
    assert (requested.channel, requested.actor_id) == (Channel.SLACK, rita.pk)

    _, again_to = slack.press("preview.cancel", cancel, user="U0RITA", message_ts="")
    [again] = slack.wait_answer(again_to)
    assert again["text"].startswith("Already confirmed: <http://cp.test/actions/")
    assert ActionRun.objects.count() == 1


@pytest.mark.worker
def test_cancel_runs_nothing_and_the_preview_cannot_be_confirmed_after(
    slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any
) -> None:
    link(actors["responder"], "U0RITA")
    worker_factory(**slack.worker_env)
    _, preview_to = slack.command(f"run refresh-mart {DEV_MART}", user="U0RITA")
    [preview] = slack.wait_answer(preview_to)
    _, cancelled_to = slack.press("preview.cancel", button(preview, "preview.cancel"), user="U0RITA")
    [cancelled] = slack.wait_answer(cancelled_to)
    assert (cancelled["text"], cancelled["replace_original"]) == ("Cancelled; nothing ran.", True)
    _, late_to = slack.press("preview.confirm", button(preview, "preview.confirm"), user="U0RITA")
    [late] = slack.wait_answer(late_to)
    assert late["text"] == "Refused: this preview was cancelled; run `/runbook run ...` again"
    assert not ActionRun.objects.exists() and not SlackPost.objects.exists()

    _, old_to = slack.command(f"run refresh-mart {DEV_MART}", user="U0RITA")
    [old] = slack.wait_answer(old_to)
    SlackPost.objects.update(created_at=timezone.now() - timedelta(minutes=16))
    _, stale_to = slack.press("preview.confirm", button(old, "preview.confirm"), user="U0RITA")
    [stale] = slack.wait_answer(stale_to)
    assert stale["text"] == "Refused: this preview is more than 15 minutes old; run `/runbook run ...` again"
    assert not ActionRun.objects.exists()


@pytest.mark.worker
def test_run_errors_say_what_was_wrong(slack: SlackWorld, catalog: Any, actors: Any, worker_factory: Any) -> None:
    link(actors["responder"], "U0RITA")
    worker_factory(**slack.worker_env)
    cases = {
        "run refresh-mart dev.weather.daily_weather_aggregate": (
            ":x: no catalog target `dev.weather.daily_weather_aggregate`; did you mean "
            f"`{DEV_MART}`, `prod.weather.daily_weather_aggregates`?"
        ),
        f"run refresh-mart {DEV_MART} timeout_s=0": (
            ":x: invalid params for refresh-mart: timeout_s: Input should be greater than or equal to 1"
        ),
        f"run refresh-mart {DEV_MART} fast=yes": (
            ":x: invalid params for refresh-mart: fast: Extra inputs are not permitted"
        ),
        f"run clear {DEV_MART}": (
            f":x: target {DEV_MART} (matview) does not offer verb 'clear'; it offers ['refresh-mart']"
        ),
        "run refresh-mart": ":x: usage: `/runbook run <verb> <target> [key=value ...]`",
        f"run refresh-mart {DEV_MART} timeout_s": ":x: 'timeout_s' is not key=value",
        'run "refresh-mart': 'Could not read `run "refresh-mart`: unbalanced quotes.',
        "frobnicate": f"Unknown `/runbook frobnicate`.\n{HELP}",
    }
    names = {text: slack.command(text, user="U0RITA")[1] for text in cases}
    for text, expected in cases.items():
        [answer] = slack.wait_answer(names[text])
        assert answer["text"] == expected, text
    assert not ActionRun.objects.exists() and not SlackPost.objects.exists()


# ------------------------------------------------------------------------------------------ linking


@pytest.mark.worker
def test_link_code_from_the_profile_page_links_the_slack_user_once(
    slack: SlackWorld, actors: Any, worker_factory: Any
) -> None:
    rita = actors["responder"]
    web = Client(enforce_csrf_checks=False)
    web.force_login(rita)
    page = web.post("/profile/slack/", {"get_code": "1"})
    assert page.status_code == 200
    code = re.search(r"/runbook link ([0-9A-F]{8})", page.content.decode())
    assert code is not None
    worker_factory(**slack.worker_env)
    _, linked_to = slack.command(f"link {code.group(1)}", user="U0RITA")
    [linked] = slack.wait_answer(linked_to)
    assert linked["text"] == "Linked: you act here as rita."
    assert SlackUserLink.objects.get(user=rita).slack_user_id == "U0RITA"
    assert SlackUserLink.objects.get(user=rita).via == "profile"
    _, reused_to = slack.command(f"link {code.group(1)}", user="U0MALLORY")
    [reused] = slack.wait_answer(reused_to)
    assert reused["text"] == ":x: that link code is unknown or expired (codes last 10 minutes): get a new one"
    assert "U0RITA" in web.get("/profile/slack/").content.decode()

    assert web.post("/profile/slack/", {"unlink": "1"}).status_code == 302
    assert not SlackUserLink.objects.exists()
    assert list(AuditEvent.objects.filter(event__startswith="slack.link").values_list("event", "channel")) == [
        ("slack.link.created", Channel.SLACK),
        ("slack.link.removed", Channel.WEB),
    ]


@pytest.mark.django_db
def test_slack_link_command_links_replaces_and_removes(actors: Any) -> None:
    call_command("slack_link", "rita", "u0rita")
    assert SlackUserLink.objects.get(user=actors["responder"]).slack_user_id == "U0RITA"
    with pytest.raises(CommandError, match="Slack user U0RITA is linked to rita; unlink it first"):
        call_command("slack_link", "rob", "U0RITA")
    with pytest.raises(CommandError, match="is not a Slack user id"):
        call_command("slack_link", "rob", "rob@example.com")
    call_command("slack_link", "rita", "U0RITA2")
    call_command("slack_link", "rita", "--remove")
    with pytest.raises(CommandError, match="rita has no Slack link"):
        call_command("slack_link", "rita", "--remove")
    events = AuditEvent.objects.filter(event__startswith="slack.link").order_by("seq")
    first, second = {"slack_user_id": "U0RITA", "via": "admin"}, {"slack_user_id": "U0RITA2", "via": "admin"}
    assert [(e.event, e.before, e.after) for e in events] == [
        ("slack.link.created", None, first),
        ("slack.link.changed", first, second),
        ("slack.link.removed", second, None),
    ]
