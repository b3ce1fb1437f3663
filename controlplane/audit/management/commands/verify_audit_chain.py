"""``manage.py verify_audit_chain``: recompute the hash chain; exit 1 naming the first bad event."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controlplane.audit.services import audit_verify_chain


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain and name the first event that was edited, removed or moved."

    def handle(self, *args: Any, **options: Any) -> None:
        verdict = audit_verify_chain()
        if not verdict.ok:
            raise CommandError(verdict.describe())
        self.stdout.write(verdict.describe())
