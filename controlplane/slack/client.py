"""The Slack Web API client, configured from ``settings.SLACK``: every call has a timeout, the bot token is
read from its secret reference when the client is made and never logged."""

from __future__ import annotations

from django.conf import settings
from slack_sdk import WebClient

from connectors.secrets import resolve_secret_ref


def slack_enabled() -> bool:
    """Slack is on once a bot token reference is configured."""
    return bool(settings.SLACK["BOT_TOKEN_REF"])


def web_client() -> WebClient:
    conf = settings.SLACK
    api_url = conf["API_URL"] if conf["API_URL"].endswith("/") else conf["API_URL"] + "/"
    return WebClient(token=resolve_secret_ref(conf["BOT_TOKEN_REF"]), base_url=api_url, timeout=conf["TIMEOUT_SECONDS"])


def signing_secret() -> str:
    return resolve_secret_ref(settings.SLACK["SIGNING_SECRET_REF"])
