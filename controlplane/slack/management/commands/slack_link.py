"""``manage.py slack_link <login> <slack user id>``: an admin links a Slack user to a user (``--remove``:
removes the user's link). Audited as the system acting through the command line."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.audit.context import Channel, change_context
from controlplane.errors import ServiceError
from controlplane.slack import identity
from controlplane.slack.models import SlackUserLink


class Command(BaseCommand):
    help = "Link a Slack user id to a control-plane user (or remove the user's link with --remove)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("login", help="the control-plane user's login")
        parser.add_argument("slack_user_id", nargs="?", default="", help="e.g. U024BE7LH")
        parser.add_argument("--remove", action="store_true", help="remove the user's Slack link")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["login"]).first()
        if user is None:
            raise CommandError(f"no user {options['login']!r}")
        with change_context(channel=Channel.SYSTEM, actor_name="manage.py slack_link"):
            try:
                if options["remove"]:
                    identity.slack_link_remove(user=user)
                    self.stdout.write(f"removed the Slack link of {user.get_username()}")
                    return
                if not options["slack_user_id"]:
                    raise CommandError("give the Slack user id to link (or --remove)")
                link = identity.slack_link_set(
                    user=user, slack_user_id=options["slack_user_id"], via=SlackUserLink.Via.ADMIN
                )
            except ServiceError as exc:
                raise CommandError(exc.message) from None
        self.stdout.write(f"linked Slack user {link.slack_user_id} to {user.get_username()}")
