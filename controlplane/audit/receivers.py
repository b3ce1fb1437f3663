"""Signal receivers of the audit app: the app role's grants after every migrate, and the audit events of
sign-ins and of changes to who may do what (users' flags and roles, groups), whichever path made them
(the web, the admin site, a management command, a shell)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model, user_logged_in, user_logged_out, user_login_failed
from django.contrib.auth.models import Group
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_init, post_save
from django.http import HttpRequest

from controlplane.audit import context
from controlplane.audit.services import audit_app_role_grant, audit_record
from controlplane.clientip import client_ip

# The flags that change what a user may do; saved changes of them are audited (with roles, i.e. groups).
USER_FLAGS = ("is_active", "is_staff", "is_superuser")


def grant_app_role(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """After ``migrate`` (post_migrate, sent once for this app when every migration ran), grant the app's
    database role on every table as it is now; nothing to do when ``DATABASE_APP_ROLE`` is unset."""
    role = settings.DATABASE_APP_ROLE
    if role:
        audit_app_role_grant(role=role, using=using)


# ------------------------------------------------------------------------------------------ sign-ins


def _client_ip(request: HttpRequest | None) -> str:
    return client_ip(request) if request is not None else ""


def logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    ctx = context.current()
    with context.change_context(channel=ctx.channel, user=user, request_id=ctx.request_id or None):
        audit_record(event="auth.login", obj=user, after={"ip": _client_ip(request)})


def logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None:  # no one was signed in
        return
    ctx = context.current()
    with context.change_context(channel=ctx.channel, user=user, request_id=ctx.request_id or None):
        audit_record(event="auth.logout", obj=user, after={"ip": _client_ip(request)})


def login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any) -> None:
    """The name tried and where from; never the password (Django masks it in ``credentials``, and only the
    username is read)."""
    tried = str(credentials.get(get_user_model().USERNAME_FIELD) or "")[:150]
    ctx = context.current()
    with context.change_context(channel=ctx.channel, actor_name="anonymous", request_id=ctx.request_id or None):
        audit_record(
            event="auth.login_failed",
            object_type="auth.user",
            object_repr=tried,
            after={"username": tried, "ip": _client_ip(request)},
        )


# ------------------------------------------------------------------------------------ users and roles


def _flags(user: Model) -> dict[str, bool]:
    """The flags loaded on this instance (a deferred one is not read: that would be a query per user)."""
    deferred = user.get_deferred_fields()
    return {flag: bool(getattr(user, flag)) for flag in USER_FLAGS if flag not in deferred}


def user_loaded(sender: Any, instance: Model, **kwargs: Any) -> None:
    """Remember the flags as loaded, so a save can say what it changed without reading the row again."""
    instance._audit_flags = _flags(instance)  # type: ignore[attr-defined]


def user_saved(sender: Any, instance: Model, created: bool, update_fields: Any = None, **kwargs: Any) -> None:
    now = _flags(instance)
    before: dict[str, bool] = getattr(instance, "_audit_flags", now)
    instance._audit_flags = now  # type: ignore[attr-defined]
    if created:
        audit_record(event="auth.user.created", obj=instance, after={"username": str(instance), **now})
        return
    changed = [flag for flag in now if flag in before and before[flag] != now[flag]]
    if changed:
        audit_record(
            event="auth.user.updated",
            obj=instance,
            before={flag: before[flag] for flag in changed},
            after={flag: now[flag] for flag in changed},
        )


def user_deleted(sender: Any, instance: Model, **kwargs: Any) -> None:
    audit_record(event="auth.user.deleted", obj=instance, before={"username": str(instance), **_flags(instance)})


def memberships_changed(
    sender: Any, instance: Model, action: str, reverse: bool, pk_set: set[Any] | None, **kwargs: Any
) -> None:
    """A user's roles (groups) changed, from the user's side (``user.groups``) or the group's
    (``group.user_set``): one event per user naming the roles added or removed. What a removal or a clear
    takes away is read before it happens (the signal after it carries no or too many ids)."""
    side, other = ("group", "user") if reverse else ("user", "group")
    if action in ("pre_remove", "pre_clear"):
        rows = sender.objects.filter(**{side: instance})
        if action == "pre_remove":
            rows = rows.filter(**{f"{other}__in": pk_set})
        instance._audit_removing = set(rows.values_list(f"{other}_id", flat=True))  # type: ignore[attr-defined]
        return
    if action == "post_add":
        ids, change = set(pk_set or ()), "added"
    elif action in ("post_remove", "post_clear"):
        ids, change = instance.__dict__.pop("_audit_removing", set()), "removed"
    else:
        return
    if not ids:
        return
    if reverse:
        for user in get_user_model().objects.filter(pk__in=ids).order_by("pk"):
            audit_record(event="auth.user.roles_changed", obj=user, after={change: [str(instance)]})
    else:
        names = sorted(Group.objects.filter(pk__in=ids).values_list("name", flat=True))
        audit_record(event="auth.user.roles_changed", obj=instance, after={change: names})


def group_loaded(sender: Any, instance: Group, **kwargs: Any) -> None:
    if "name" not in instance.get_deferred_fields():
        instance._audit_name = instance.name  # type: ignore[attr-defined]


def group_saved(sender: Any, instance: Group, created: bool, **kwargs: Any) -> None:
    """Roles are groups found by name: creating or renaming one changes who may do what."""
    before = getattr(instance, "_audit_name", None)
    group_loaded(sender, instance)
    if created:
        audit_record(event="auth.group.created", obj=instance, after={"name": instance.name})
    elif before is not None and before != instance.name:
        audit_record(event="auth.group.renamed", obj=instance, before={"name": before}, after={"name": instance.name})


def group_deleted(sender: Any, instance: Group, **kwargs: Any) -> None:
    audit_record(event="auth.group.deleted", obj=instance, before={"name": instance.name})


def connect() -> None:
    user_model = get_user_model()
    user_logged_in.connect(logged_in, dispatch_uid="audit-login")
    user_logged_out.connect(logged_out, dispatch_uid="audit-logout")
    user_login_failed.connect(login_failed, dispatch_uid="audit-login-failed")
    post_init.connect(user_loaded, sender=user_model, dispatch_uid="audit-user-init")
    post_save.connect(user_saved, sender=user_model, dispatch_uid="audit-user-save")
    post_delete.connect(user_deleted, sender=user_model, dispatch_uid="audit-user-delete")
    m2m_changed.connect(memberships_changed, sender=user_model.groups.through, dispatch_uid="audit-user-groups")
    post_init.connect(group_loaded, sender=Group, dispatch_uid="audit-group-init")
    post_save.connect(group_saved, sender=Group, dispatch_uid="audit-group-save")
    post_delete.connect(group_deleted, sender=Group, dispatch_uid="audit-group-delete")
