"""``manage.py create_api_token <username> --scopes a,b`` prints the new token as its last line."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.api.models import SCOPES
from controlplane.api.services import api_token_create
from controlplane.audit.context import Channel, change_context
from controlplane.errors import ServiceError


class Command(BaseCommand):
    help = "Mint an API token for a user. The token is shown once; only its hash is stored."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--scopes", required=True, help=f"comma list of: {', '.join(sorted(SCOPES))}")
        parser.add_argument("--name", default="cli", help="a label to tell tokens apart")
        parser.add_argument("--days", type=int, default=None, help="lifetime in days (default 90)")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        with change_context(channel=Channel.SYSTEM, actor_name="manage.py create_api_token"):
            try:
                token, raw = api_token_create(user=user, name=options["name"], scopes=scopes, days=options["days"])
            except ServiceError as exc:
                raise CommandError(exc.message) from None
        self.stderr.write(
            f"token {token.prefix}... for {user} scopes={','.join(token.scopes)} expires {token.expires_at:%Y-%m-%d}"
        )
        self.stdout.write(raw)
