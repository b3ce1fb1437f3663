"""Sending to Slack (a minimal stand-in for slackout's module on this branch: the same four names and
signatures, sending at once through ``client.web_client()``, or slack_sdk's WebhookClient to a response_url). Every call
has the configured timeout; a failure is logged and swallowed: Slack being down never fails a press's work.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from controlplane.slack.client import web_client

if TYPE_CHECKING:
    from controlplane.slack.models import SlackPost

log = logging.getLogger(__name__)


def respond(response_url: str, body: dict[str, Any]) -> None:
    """Answer an interaction or a slash command through its response_url (valid 30 minutes, 5 uses)."""
    try:
        answer = WebhookClient(response_url, timeout=settings.SLACK["TIMEOUT_SECONDS"]).send_dict(body)
    except OSError:
        log.warning("could not answer through the response_url", exc_info=True)
        return
    if answer.status_code != 200:
        log.warning("the response_url answered %s: %s", answer.status_code, answer.body[:200])


def ephemeral(channel: str, slack_user_id: str, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
    """A message only ``slack_user_id`` sees, in ``channel``."""
    try:
        web_client().chat_postEphemeral(channel=channel, user=slack_user_id, text=text, blocks=blocks)
    except (SlackApiError, OSError):
        log.warning("could not post an ephemeral message", exc_info=True)


def post(
    channel: str,
    text: str,
    blocks: list[dict[str, Any]],
    *,
    thread_of: SlackPost | None = None,
    post: SlackPost | None = None,
) -> None:
    """Post ``text``/``blocks`` to ``channel`` (in the thread of ``thread_of``); record its ts on ``post``."""
    try:
        answer = web_client().chat_postMessage(
            channel=channel, text=text, blocks=blocks, thread_ts=thread_of.ts if thread_of is not None else None
        )
    except (SlackApiError, OSError):
        log.warning("could not post to %s", channel, exc_info=True)
        return
    if post is not None:
        post.channel, post.ts = str(answer["channel"]), str(answer["ts"])
        post.save(update_fields=["channel", "ts", "updated_at"])


def update(post: SlackPost, text: str, blocks: list[dict[str, Any]]) -> None:
    """Replace a posted message's text and blocks (``chat.update``)."""
    try:
        web_client().chat_update(channel=post.channel, ts=post.ts, text=text, blocks=blocks)
    except (SlackApiError, OSError):
        log.warning("could not update %s", post, exc_info=True)
