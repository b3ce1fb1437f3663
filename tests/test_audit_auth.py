"""Sign-ins and changes of who may do what land in the audit trail, whichever path made them."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_record, audit_verify_chain, canonical_json

pytestmark = pytest.mark.django_db


def _events(name: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event=name).order_by("seq"))


def _row_text(event: AuditEvent) -> str:
    return canonical_json({f.attname: getattr(event, f.attname) for f in AuditEvent._meta.concrete_fields})


def test_a_sign_in_is_audited_with_who_where_from_and_the_request(django_user_model: Any) -> None:
    user = django_user_model.objects.create_user("rita", password="rita-password")
    client = Client(REMOTE_ADDR="192.0.2.7")
    response = client.post(
        "/login/", {"username": "rita", "password": "rita-password"}, headers={"X-Request-ID": "r-1"}
    )
    assert response.status_code == 302
    [event] = _events("auth.login")
    assert (event.actor_id, event.actor_name, event.channel, event.request_id) == (user.pk, "rita", "web", "r-1")
    assert event.after == {"ip": "192.0.2.7"}
    client.post("/logout/")
    [out] = _events("auth.logout")
    assert (out.actor_name, out.channel) == ("rita", "web")
    assert audit_verify_chain().ok


def test_a_failed_sign_in_records_the_name_tried_and_where_from_never_the_password(django_user_model: Any) -> None:
    django_user_model.objects.create_user("rita", password="rita-password")
    client = Client(REMOTE_ADDR="198.51.100.9")
    for username in ("rita", "ghost"):
        response = client.post("/login/", {"username": username, "password": "Hunter2-guess"})
        assert response.status_code == 200  # the form again
    events = _events("auth.login_failed")
    assert [(e.after, e.actor_id, e.actor_name, e.channel) for e in events] == [
        ({"username": "rita", "ip": "198.51.100.9"}, None, "anonymous", "web"),
        ({"username": "ghost", "ip": "198.51.100.9"}, None, "anonymous", "web"),
    ]
    assert all("Hunter2" not in _row_text(e) for e in AuditEvent.objects.all())
    assert not _events("auth.login")


def test_role_changes_from_either_side_are_audited_with_the_roles_added_or_removed(django_user_model: Any) -> None:
    responder, approver = (
        Group.objects.get_or_create(name="responder")[0],
        Group.objects.get_or_create(name="approver")[0],
    )
    rita = django_user_model.objects.create_user("rita")
    rob = django_user_model.objects.create_user("rob")
    with change_context(channel=Channel.WEB, user=django_user_model.objects.create_user("ada"), request_id="r-2"):
        rita.groups.add(responder, approver)
        rita.groups.add(responder)  # already a member: no change, no event
        approver.user_set.add(rob)  # from the group's side
        rita.groups.remove(approver, Group.objects.get_or_create(name="viewer")[0])  # viewer: never a member
        approver.user_set.clear()
        rita.groups.clear()
    changes = [(e.object_repr, e.after) for e in _events("auth.user.roles_changed")]
    assert changes == [
        ("rita", {"added": ["approver", "responder"]}),
        ("rob", {"added": ["approver"]}),
        ("rita", {"removed": ["approver"]}),
        ("rob", {"removed": ["approver"]}),
        ("rita", {"removed": ["responder"]}),
    ]
    assert {(e.actor_name, e.channel, e.request_id) for e in _events("auth.user.roles_changed")} == {
        ("ada", "web", "r-2")
    }
    assert audit_verify_chain().ok


def test_flag_changes_are_audited_and_a_sign_in_is_no_flag_change(django_user_model: Any) -> None:
    django_user_model.objects.create_user("rita")
    [created] = _events("auth.user.created")
    assert created.after == {"username": "rita", "is_active": True, "is_staff": False, "is_superuser": False}
    rita = django_user_model.objects.get(username="rita")
    rita.is_superuser = rita.is_staff = True
    rita.save()
    rita.save(update_fields=["last_login"])
    rita.is_active = False
    rita.save(update_fields=["is_active"])
    updates = [(e.before, e.after) for e in _events("auth.user.updated")]
    assert updates == [
        ({"is_staff": False, "is_superuser": False}, {"is_staff": True, "is_superuser": True}),
        ({"is_active": True}, {"is_active": False}),
    ]


def test_groups_created_renamed_and_deleted_are_audited() -> None:
    group = Group.objects.create(name="on-call")
    group.name = "incident-commander"
    group.save()
    Group.objects.get(pk=group.pk).delete()
    events = AuditEvent.objects.filter(event__startswith="auth.group.").order_by("seq")
    assert [(e.event, e.before, e.after) for e in events] == [
        ("auth.group.created", None, {"name": "on-call"}),
        ("auth.group.renamed", {"name": "on-call"}, {"name": "incident-commander"}),
        ("auth.group.deleted", {"name": "incident-commander"}, None),
    ]


def test_a_change_in_the_admin_site_is_audited_under_the_admin(django_user_model: Any) -> None:
    ada = django_user_model.objects.create_user("ada", is_staff=True, is_superuser=True)
    rita = django_user_model.objects.create_user("rita")
    approver = Group.objects.get_or_create(name="approver")[0]
    client = Client()
    client.force_login(ada)
    form = {
        "username": "rita",
        "is_active": "on",
        "is_staff": "on",
        "groups": [str(approver.pk)],
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }
    response = client.post(f"/admin/auth/user/{rita.pk}/change/", form, headers={"X-Request-ID": "r-3"})
    assert response.status_code == 302, response.content.decode()[:2000]
    events = AuditEvent.objects.filter(object_id=str(rita.pk), request_id="r-3").order_by("seq")
    assert [(e.event, e.after, e.actor_name, e.channel) for e in events] == [
        ("auth.user.updated", {"is_staff": True}, "ada", "web"),
        ("auth.user.roles_changed", {"added": ["approver"]}, "ada", "web"),
    ]


def test_deleting_a_user_leaves_their_audit_events_unchanged_and_is_itself_audited(django_user_model: Any) -> None:
    """The actor's id is hashed: deleting the user must not null it (which the append-only trigger refuses)."""
    ned = django_user_model.objects.create_user("ned")
    with change_context(channel=Channel.WEB, user=ned):
        event = audit_record(event="test.done", object_type="thing", object_id="1")
    ned_id = ned.pk
    ned.delete()
    event.refresh_from_db()
    assert (event.actor_id, event.actor_name) == (ned_id, "ned")
    [deleted] = _events("auth.user.deleted")
    assert deleted.object_id == str(ned_id) and deleted.before is not None and deleted.before["username"] == "ned"
    assert audit_verify_chain().ok
