"""The audit trail against someone holding the app's database credentials: the app's role (granted by the
project's own post-migrate step) appends through the normal paths, and cannot edit, delete, truncate, hide
or re-point what was appended."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditChainHead, AuditEvent
from controlplane.audit.services import audit_app_role_grant, audit_record, audit_verify_chain


def _create_role(name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {name} LOGIN NOSUPERUSER")


def _drop_role(name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {name}")  # its grants in this database
        cursor.execute(f"DROP ROLE {name}")


@pytest.fixture
def app_role(transactional_db: Any, settings: Any) -> Iterator[str]:
    """A login role granted as compose's app role is: by ``migrate`` with ``DATABASE_APP_ROLE`` set."""
    name = f"cp_app_{uuid.uuid4().hex[:8]}"
    _create_role(name)
    settings.DATABASE_APP_ROLE = name
    try:
        call_command("migrate", verbosity=0)
        # Migration 0005 made the head row; the flush ending an earlier transactional test may have removed it.
        AuditChainHead.objects.get_or_create(id=1)
        yield name
    finally:
        _drop_role(name)


@contextlib.contextmanager
def _django_connected_as(role: str) -> Iterator[None]:
    """The app's own database connection, logged in as ``role`` (the sandbox trusts loopback logins)."""
    user = connection.settings_dict["USER"]
    connection.close()
    connection.settings_dict["USER"] = role
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["USER"] = user


def _run_as(role: str, sql: str) -> str:
    """Run one statement logged in as ``role`` (its own transaction); the database's refusal, or "" if done."""
    db = connection.settings_dict
    conninfo = psycopg.conninfo.make_conninfo(
        host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=role, connect_timeout=5
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        try:
            conn.execute(sql)
        except psycopg.Error as exc:
            return str(exc)
    return ""


def _record(n: int) -> list[AuditEvent]:
    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        return [audit_record(event="test.event", object_type="thing", object_id=str(i)) for i in range(n)]


@pytest.mark.django_db(transaction=True)
def test_the_app_role_appends_through_request_claim_and_finish_and_the_chain_verifies(
    app_role: str, catalog: dict[str, Any], actors: Any
) -> None:
    from controlplane.actions import runner
    from controlplane.actions.models import ActionState
    from controlplane.actions.services import action_request

    rita = actors["responder"]
    with _django_connected_as(app_role):
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone() == (app_role,)
        with change_context(channel=Channel.API, user=rita):
            target = "dev.weather.daily_weather_aggregates"
            action = action_request(actor=rita, verb="refresh-mart", target_key=target, params={}, reason="r").action
        with change_context(channel=Channel.SYSTEM, actor_name=runner.WORKER_NAME):
            claimed = runner._claim(str(action.id))  # the worker's claim, audited under the head's lock
            assert claimed is not None
            journal = runner._Journal(claimed, [])
            assert runner._finish(claimed, 1, state=ActionState.SUCCEEDED, event="action.succeeded", journal=journal)
        events = AuditEvent.objects.filter(object_id=str(action.id)).order_by("seq").values_list("event", flat=True)
        assert list(events) == ["action.requested", "action.planned", "action.started", "action.succeeded"]
        verdict = audit_verify_chain()
        assert verdict.ok, verdict.describe()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("UPDATE audit_auditevent SET reason = 'nothing to see'", "permission denied"),
        ("DELETE FROM audit_auditevent", "permission denied"),
        ("TRUNCATE audit_auditevent", "permission denied"),
        ("SET session_replication_role = replica", "permission denied"),
        ("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_no_update_delete", "must be owner"),
        ("ALTER TABLE audit_auditevent DISABLE TRIGGER ALL", "must be owner"),
        ("DROP TRIGGER audit_event_no_update_delete ON audit_auditevent", "must be owner"),
        (
            "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger"
            " AS 'BEGIN RETURN NEW; END' LANGUAGE plpgsql",
            "permission denied for schema",
        ),
        ("ALTER TABLE audit_auditchainhead DISABLE TRIGGER audit_head_moves_forward", "must be owner"),
        (
            "UPDATE audit_auditchainhead SET seq = 1, hash = (SELECT hash FROM audit_auditevent WHERE seq = 1)",
            "only moves forward",
        ),
        ("UPDATE audit_auditchainhead SET seq = seq + 1, hash = repeat('a', 64)", "only moves forward"),
        ("DELETE FROM audit_auditchainhead", "permission denied"),
        ("INSERT INTO audit_auditchainhead (id, seq, hash) VALUES (2, 0, '')", "permission denied"),
    ],
)
def test_the_app_role_cannot_rewrite_or_hide_the_audit_trail(app_role: str, statement: str, refusal: str) -> None:
    events = _record(3)
    error = _run_as(app_role, statement)
    assert refusal in error, f"{statement!r} was not refused: {error or 'it ran'}"
    assert list(AuditEvent.objects.order_by("seq").values_list("hash", flat=True)) == [e.hash for e in events]
    head = AuditChainHead.objects.get(id=1)
    assert (head.seq, head.hash) == (3, events[-1].hash)
    assert audit_verify_chain().ok


@pytest.mark.django_db(transaction=True)
def test_the_app_role_owns_nothing_and_is_no_superuser(app_role: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = %s", [app_role]
        )
        assert cursor.fetchone() == (0,)
        cursor.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = %s", [app_role]
        )
        assert cursor.fetchone() == (False, False, False, False)
        cursor.execute(
            "SELECT string_agg(privilege_type, ',' ORDER BY privilege_type) FROM information_schema.role_table_grants"
            " WHERE grantee = %s AND table_name = %s",
            [app_role, "audit_auditevent"],
        )
        assert cursor.fetchone() == ("INSERT,SELECT",)


@pytest.mark.django_db(transaction=True)
def test_tables_added_by_a_later_migration_are_granted_by_the_next_migrate(app_role: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE later_table (id int)")  # what a new migration would add
    try:
        assert "permission denied" in _run_as(app_role, "SELECT * FROM later_table")
        call_command("migrate", verbosity=0)
        assert _run_as(app_role, "INSERT INTO later_table VALUES (1)") == ""
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE later_table")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "reason"),
    [
        ("postgres", "is a superuser"),
        ("cp_table_owner", "owns tables"),
        ("cp_owner_member", "is a member of the tables' owner"),
        ("cp_replicator", "may set session_replication_role"),
        ("cp_nobody_here", "no such database role"),
        ('x"; DROP TABLE audit_auditevent; --', "not a role name"),
    ],
)
def test_a_role_that_would_defeat_the_grants_is_refused_with_its_reason(role: str, reason: str) -> None:
    with connection.cursor() as cursor:  # rolled back with the test
        cursor.execute("CREATE ROLE cp_table_owner NOLOGIN")
        cursor.execute("CREATE TABLE owned_elsewhere (id int)")
        cursor.execute("ALTER TABLE owned_elsewhere OWNER TO cp_table_owner")
        cursor.execute(f"CREATE ROLE cp_owner_member NOLOGIN IN ROLE {connection.settings_dict['USER']}")
        cursor.execute("CREATE ROLE cp_replicator NOLOGIN")
        cursor.execute("GRANT SET ON PARAMETER session_replication_role TO cp_replicator")
    with pytest.raises(ImproperlyConfigured, match=reason):
        audit_app_role_grant(role=role)
    assert AuditEvent._meta.db_table in connection.introspection.table_names()


@pytest.mark.django_db
def test_the_head_moves_only_forward_even_for_the_owner() -> None:
    """The trigger binds every role; only disabling it (the owner's right, kept out of the app) gets past."""
    events = _record(2)
    with pytest.raises(DatabaseError, match="only moves forward"), transaction.atomic():
        AuditChainHead.objects.filter(id=1).update(seq=1, hash=events[0].hash)
    head = AuditChainHead.objects.get(id=1)
    assert (head.seq, head.hash) == (2, events[-1].hash)
    assert audit_verify_chain().ok


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_and_beat_logged_in_as_the_app_role_run_an_action_to_its_verified_end(
    app_role: str, catalog: dict[str, Any], actors: Any, worker_factory: Any
) -> None:
    from controlplane.actions.models import ActionRun, ActionState
    from controlplane.actions.services import action_request
    from tests.conftest import wait_for

    db = connection.settings_dict
    worker_factory(beat=True, DATABASE_URL=f"postgresql://{app_role}@{db['HOST']}:{db['PORT']}/{db['NAME']}")
    rita = actors["responder"]
    with change_context(channel=Channel.API, user=rita):
        target = "dev.weather.daily_weather_aggregates"
        action = action_request(actor=rita, verb="refresh-mart", target_key=target, params={}, reason="r").action

    def ended() -> ActionRun | None:
        run = ActionRun.objects.get(pk=action.pk)
        return run if run.state not in (ActionState.QUEUED, ActionState.RUNNING) else None

    run = wait_for(ended, timeout=40, what="the action to end")
    assert run.state == ActionState.SUCCEEDED, (run.error, run.verification)
    events = AuditEvent.objects.filter(object_id=str(action.id)).order_by("seq").values_list("event", flat=True)
    assert list(events)[-3:] == ["action.started", "action.executed", "action.succeeded"]
    assert audit_verify_chain().ok
    with connection.cursor() as cursor:  # the worker's connections are the app role's
        cursor.execute("SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()")
        assert app_role in {name for (name,) in cursor.fetchall()}
