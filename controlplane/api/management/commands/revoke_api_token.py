"""``manage.py revoke_api_token <prefix>`` revokes the token whose shown prefix is given (``cpt_AbCdEf``).

The revocation is audited and takes effect on the next request in every web process.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.api.models import ApiToken
from controlplane.api.services import api_token_revoke
from controlplane.audit.context import Channel, change_context


class Command(BaseCommand):
    help = "Revoke an API token by the prefix shown when it was minted (e.g. cpt_AbCdEf)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = options["prefix"].rstrip(".")
        live = list(ApiToken.objects.select_related("user").filter(prefix=prefix, revoked_at__isnull=True))
        if not live:
            raise CommandError(f"no live token with prefix {prefix!r}")
        if len(live) > 1:
            names = ", ".join(f"{t.name} of {t.user}" for t in live)
            raise CommandError(f"prefix {prefix!r} matches {len(live)} live tokens ({names}); nothing revoked")
        with change_context(channel=Channel.SYSTEM, actor_name="manage.py revoke_api_token"):
            api_token_revoke(token=live[0])
        self.stdout.write(f"revoked {live[0]}")
