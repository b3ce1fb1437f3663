"""Signal receivers of the audit app: the app role's grants after every migrate."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from controlplane.audit.services import audit_app_role_grant


def grant_app_role(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """After ``migrate`` (post_migrate, sent once for this app when every migration ran), grant the app's
    database role on every table as it is now; nothing to do when ``DATABASE_APP_ROLE`` is unset."""
    role = settings.DATABASE_APP_ROLE
    if role:
        audit_app_role_grant(role=role, using=using)
