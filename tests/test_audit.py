"""The audit trail: chained, censored, append-only, and tampering is named by the verifier."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import CENSORED, audit_record, audit_verify_chain
from tests.conftest import wait_for


@pytest.fixture(autouse=True)
def _no_full_walk_under_way() -> Iterator[None]:
    """A page view in a test may queue a full walk that no worker runs: its lock must not outlive the test."""
    from controlplane.audit.services import VERIFY_LOCK_KEY
    from controlplane.redis import redis_client

    redis_client().delete(VERIFY_LOCK_KEY)
    yield
    redis_client().delete(VERIFY_LOCK_KEY)


def _record_some(n: int = 5) -> list[AuditEvent]:
    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        return [
            audit_record(event="test.event", object_type="thing", object_id=str(i), after={"i": i}) for i in range(n)
        ]


def _tamper(sql: str, params: tuple[Any, ...] = ()) -> None:
    """What an attacker with table-owner rights would do: switch the trigger off and edit rows."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # flush deferred FK checks so ALTER TABLE may run
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_no_update_delete")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_no_update_delete")


@pytest.mark.django_db
def test_chain_links_each_event_to_the_previous_one() -> None:
    events = _record_some(4)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(events))
    verdict = audit_verify_chain()
    assert verdict.ok and verdict.checked == 4


@pytest.mark.django_db
def test_edited_event_is_named_by_the_verifier() -> None:
    events = _record_some(5)
    _tamper("UPDATE audit_auditevent SET reason = 'nothing to see' WHERE id = %s", (events[2].id,))
    verdict = audit_verify_chain()
    assert not verdict.ok
    assert verdict.first_bad_seq == 3
    assert "edited" in verdict.problem


@pytest.mark.django_db
def test_deleted_event_is_named_by_the_verifier() -> None:
    events = _record_some(5)
    _tamper("DELETE FROM audit_auditevent WHERE id = %s", (events[1].id,))
    verdict = audit_verify_chain()
    assert not verdict.ok
    assert verdict.first_bad_seq == 3  # the event after the gap
    assert "missing" in verdict.problem


@pytest.mark.django_db
def test_reordered_events_are_detected() -> None:
    events = _record_some(5)
    a, b = events[1], events[3]
    _tamper("UPDATE audit_auditevent SET seq = -1 WHERE id = %s", (a.id,))
    _tamper("UPDATE audit_auditevent SET seq = %s WHERE id = %s", (a.seq, b.id))
    _tamper("UPDATE audit_auditevent SET seq = %s WHERE id = %s", (b.seq, a.id))
    verdict = audit_verify_chain()
    assert not verdict.ok
    assert verdict.first_bad_seq == 2


@pytest.mark.django_db
def test_removed_tail_is_detected_by_the_head() -> None:
    events = _record_some(3)
    _tamper("DELETE FROM audit_auditevent WHERE id = %s", (events[-1].id,))
    verdict = audit_verify_chain()
    assert not verdict.ok
    assert "removed at the end" in verdict.problem


@pytest.mark.django_db
def test_verify_command_names_the_first_bad_event() -> None:
    events = _record_some(3)
    call_command("verify_audit_chain")  # intact: no error
    _tamper("UPDATE audit_auditevent SET actor_name = 'mallory' WHERE id = %s", (events[0].id,))
    with pytest.raises(CommandError, match=r"BROKEN at event #1"):
        call_command("verify_audit_chain")


@pytest.mark.django_db
@pytest.mark.parametrize("statement", ["UPDATE audit_auditevent SET reason = 'x'", "DELETE FROM audit_auditevent"])
def test_database_rejects_update_and_delete_of_audit_rows(statement: str) -> None:
    _record_some(1)
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db
def test_secret_values_are_censored_but_references_kept() -> None:
    with change_context(channel=Channel.SYSTEM):
        event = audit_record(
            event="test.secret",
            object_type="thing",
            object_id="1",
            after={
                "password": "hunter2",
                "nested": {"api_key": "abc"},
                "secret_refs": {"password": "env:PG_PASSWORD"},
            },
        )
    event.refresh_from_db()
    assert event.after is not None
    assert event.after["password"] == CENSORED
    assert event.after["nested"]["api_key"] == CENSORED
    assert event.after["secret_refs"] == {"password": "env:PG_PASSWORD"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_do_not_fork_the_chain() -> None:
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with change_context(channel=Channel.SYSTEM, actor_name=f"writer-{n}"):
                for i in range(10):
                    audit_record(event="test.concurrent", object_type="thing", object_id=f"{n}-{i}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert AuditEvent.objects.count() == 60
    verdict = audit_verify_chain()
    assert verdict.ok, verdict.describe()


@pytest.mark.django_db
def test_chain_status_checks_new_events_from_a_checkpoint_and_full_walks_catch_old_edits() -> None:
    from django.core.cache import cache

    from controlplane.audit.services import audit_chain_status, audit_verify_full

    cache.delete("audit:chain-verdict")
    events = _record_some(3)
    first = audit_chain_status()
    assert first.verdict is not None and first.verdict.ok and first.verdict.checked == 3
    _record_some(2)
    second = audit_chain_status()
    assert second.verdict is not None and second.verdict.ok and second.verdict.checked == 5
    _tamper("UPDATE audit_auditevent SET reason = 'rewritten' WHERE id = %s", (events[0].id,))
    full = audit_verify_full()
    assert full is not None and not full.ok  # the periodic full walk finds the old edit
    broken = audit_chain_status()
    assert broken.verdict is not None and not broken.verdict.ok and broken.verdict.first_bad_seq == 1


@pytest.mark.django_db
def test_a_long_chain_without_checkpoint_is_walked_by_a_worker_not_the_page(monkeypatch: Any) -> None:
    from django.core.cache import cache
    from django.test import Client

    from controlplane.audit import services
    from controlplane.audit.tasks import verify_audit_chain

    cache.delete("audit:chain-verdict")
    _record_some(3)
    monkeypatch.setattr(services, "FULL_WALK_IN_REQUEST", 2)  # "long" is 3 events here
    queued: list[dict[str, Any]] = []
    monkeypatch.setattr(verify_audit_chain, "delay", lambda **kwargs: queued.append(kwargs))
    status = services.audit_chain_status()
    assert status.pending and status.verdict is None and len(queued) == 1
    assert services.audit_chain_status().pending and len(queued) == 1  # queued once, not on every view
    services.audit_verify_full(**queued[0])  # what the worker does
    after = services.audit_chain_status()
    assert after.verdict is not None and after.verdict.ok and after.verdict.checked == 3
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("auditor")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    client = Client()
    client.force_login(user)
    cache.delete("audit:chain-verdict")
    assert "Verifying the whole chain" in client.get("/audit/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_full_verify_is_not_run_or_queued_again_while_one_runs(
    monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg
    from django.core.cache import cache

    from controlplane.audit import services
    from controlplane.audit.tasks import verify_audit_chain

    _record_some(3)
    cache.delete("audit:chain-verdict")
    db = connection.settings_dict
    blocker = psycopg.connect(host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=db["USER"], connect_timeout=5)
    # The first walk waits on this lock once it started (it holds the verify lock by then).
    blocker.execute("LOCK TABLE audit_auditevent IN ACCESS EXCLUSIVE MODE")
    results: dict[str, Any] = {}

    def walk(name: str) -> None:
        try:
            results[name] = services.audit_verify_full()
        finally:
            connection.close()

    first = threading.Thread(target=walk, args=("first",))
    second = threading.Thread(target=walk, args=("second",))
    try:
        first.start()
        wait_for(_waiting_on_a_lock, what="the first walk to wait on the table lock")
        second.start()
        second.join(timeout=10)
        assert not second.is_alive(), "the second walk ran beside the first instead of skipping"
        assert results["second"] is None
        queued: list[dict[str, Any]] = []
        monkeypatch.setattr(verify_audit_chain, "delay", lambda **kwargs: queued.append(kwargs))
        monkeypatch.setattr(services, "FULL_WALK_IN_REQUEST", 2)
        assert services.audit_chain_status().pending and queued == []  # the page queues no second walk
        with caplog.at_level("INFO", logger="controlplane.audit.tasks"):
            verify_audit_chain()  # beat's run
        assert "already queued or running" in caplog.text
    finally:
        blocker.rollback()
        blocker.close()
        for thread in (first, second):
            if thread.ident is not None:
                thread.join(timeout=30)
    assert results["first"] is not None and results["first"].ok and results["first"].checked == 3
    again = services.audit_verify_full()  # the lock went with the first walk
    assert again is not None and again.ok


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return bool(cursor.fetchone()[0])
