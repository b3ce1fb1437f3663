"""Forget cached API tokens when what they resolve to changes: the token itself, its user (active flag,
superuser flag), a group or a user's group memberships (roles are groups)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, post_delete, post_save

from controlplane.api.models import ApiToken
from controlplane.configcache import config_changed


def _changed(sender: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login", "last_used_at"}:
        return  # a login or a token's use changes nothing a token resolves to
    config_changed()


def _memberships_changed(sender: Any, action: str, **kwargs: Any) -> None:
    if action in {"post_add", "post_remove", "post_clear"}:
        config_changed()


def connect() -> None:
    user_model = get_user_model()
    for model in (ApiToken, user_model, Group):
        post_save.connect(_changed, sender=model, dispatch_uid=f"api-credentials-save-{model.__name__}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"api-credentials-delete-{model.__name__}")
    m2m_changed.connect(_memberships_changed, sender=user_model.groups.through, dispatch_uid="api-credentials-m2m")
