"""The web process's request gate (controlplane/webgate.py) and the gunicorn worker that holds it
(controlplane/webworker.py): requests take turns in arrival order, and waits on the outside world
(a connector, ``?wait`` for an action's end, a client that has not sent its request yet) let others run."""

from __future__ import annotations

import functools
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane import webgate
from sandbox.services import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def gate() -> Iterator[webgate.Gate]:
    """A one-slot gate installed as this process's, removed afterwards (tests run ungated otherwise)."""
    installed = webgate.install(1)
    assert installed is not None
    try:
        yield installed
    finally:
        webgate.install(0)


def _waiting(gate: webgate.Gate) -> int:
    with gate._mutex:
        return len(gate._waiters)


def _in_thread(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def _until(predicate: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_requests_get_the_gate_in_arrival_order(gate: webgate.Gate) -> None:
    order: list[str] = []

    def request(name: str) -> Callable[[], None]:
        def run() -> None:
            gate.enter()
            order.append(name)
            gate.leave()

        return run

    gate.enter()  # a request is running
    threads = []
    for queued, name in enumerate(["b", "c", "d"], start=1):
        threads.append(_in_thread(request(name)))
        _until(lambda: _waiting(gate) == queued, f"{name} to queue")  # noqa: B023 (called at once)
    gate.leave()
    for t in threads:
        t.join(5)
    assert order == ["b", "c", "d"]


def test_a_newcomer_does_not_overtake_a_waiting_request(gate: webgate.Gate) -> None:
    order: list[str] = []
    gate.enter()

    def waiting() -> None:
        gate.enter()
        order.append("waiting")
        time.sleep(0.05)  # hold the slot a moment: the newcomer must still come after
        gate.leave()

    t = _in_thread(waiting)
    _until(lambda: _waiting(gate) == 1, "the first request to queue")
    gate.leave()  # the slot goes to the waiting request, not back to the pool
    gate.enter()  # the newcomer, arriving just after
    order.append("newcomer")
    gate.leave()
    t.join(5)
    assert order == ["waiting", "newcomer"]


def _queued_request(gate: webgate.Gate) -> tuple[threading.Thread, threading.Event]:
    """A request in a thread that enters, says so and leaves; returned once it waits in line."""
    entered = threading.Event()

    def run() -> None:
        gate.enter()
        entered.set()
        gate.leave()

    thread = _in_thread(run)
    _until(lambda: _waiting(gate) == 1, "a request to queue")
    return thread, entered


def test_width_two_lets_two_requests_run_and_queues_the_third() -> None:
    wide = webgate.Gate(2)
    wide.enter()
    wide.enter()
    t, entered = _queued_request(wide)
    assert not entered.is_set()
    wide.leave()
    assert entered.wait(5)
    t.join(5)
    wide.leave()
    with pytest.raises(ValueError):
        webgate.Gate(0)
    with pytest.raises(ValueError):
        webgate.Gate(1, lend_after=0)


def test_a_short_wait_outside_lends_nothing() -> None:
    gate = webgate.Gate(1, lend_after=0.5)
    gate.enter()
    t, entered = _queued_request(gate)
    gate.step_out()
    time.sleep(0.05)  # a wait well under lend_after
    gate.step_in()
    assert not entered.is_set(), "the waiting request ran during a short wait outside"
    assert gate.held()
    gate.leave()
    assert entered.wait(5)
    t.join(5)


def test_a_long_wait_outside_lends_the_slot_after_lend_after() -> None:
    gate = webgate.Gate(1, lend_after=0.1)
    gate.enter()
    entered_at: list[float] = []
    leave_now = threading.Event()

    def waiting() -> None:
        gate.enter()
        entered_at.append(time.monotonic())
        leave_now.wait(5)
        gate.leave()

    t = _in_thread(waiting)
    _until(lambda: _waiting(gate) == 1, "a request to queue")
    stepped_out = time.monotonic()
    gate.step_out()
    _until(lambda: bool(entered_at), "the waiting request to borrow the slot")
    assert entered_at[0] - stepped_out >= 0.1
    # Back from outside while the borrower runs: it waits at the front until the borrower leaves.
    releaser = threading.Timer(0.2, leave_now.set)
    releaser.start()
    gate.step_in()
    back_at = time.monotonic()
    t.join(5)
    assert leave_now.is_set() and back_at - entered_at[0] >= 0.15, "came back before the borrower left"
    assert gate.held() and not gate.is_out()
    gate.leave()


def test_outside_lets_others_run_and_comes_back_first(gate: webgate.Gate) -> None:
    order: list[str] = []
    gate.enter()
    inside_wait = threading.Event()
    done_waiting = threading.Event()

    def other(name: str) -> Callable[[], None]:
        def run() -> None:
            gate.enter()
            order.append(name)
            if name == "other-1":
                inside_wait.set()
                done_waiting.wait(5)  # still running when the waiting request comes back
            gate.leave()

        return run

    with webgate.outside():
        first = _in_thread(other("other-1"))
        assert inside_wait.wait(5), "another request could not run while this one waited outside"
        second = _in_thread(other("other-2"))
        _until(lambda: _waiting(gate) == 1, "a second request to queue")
        done_waiting.set()
    # Back inside: ahead of other-2, which queued while this request was outside.
    assert gate.held()
    order.append("came back")
    gate.leave()
    first.join(5)
    second.join(5)
    assert order == ["other-1", "came back", "other-2"]


def test_under_contention_one_request_runs_at_a_time_and_every_one_finishes() -> None:
    gate = webgate.Gate(1, lend_after=0.002)
    running = [0]
    most = [0]
    counter_lock = threading.Lock()
    done: list[int] = []

    def inside(delta: int) -> None:
        with counter_lock:
            running[0] += delta
            most[0] = max(most[0], running[0])

    def request(k: int) -> None:
        for i in range(60):
            gate.enter()
            inside(+1)
            if (i + k) % 3 == 0:  # a wait outside: short or long enough to lend
                inside(-1)
                gate.step_out()
                time.sleep(0.004 if i % 2 else 0.0005)
                gate.step_in()
                inside(+1)
            time.sleep(0.0002)
            inside(-1)
            gate.leave()
        done.append(k)

    threads = [_in_thread(functools.partial(request, k)) for k in range(8)]
    for t in threads:
        t.join(30)
    assert sorted(done) == list(range(8)), "a request never got the gate back"
    assert most[0] == 1, f"{most[0]} requests ran inside a one-slot gate at once"
    assert gate._free == 1 and not gate._waiters and not gate._out


def test_outside_keeps_the_gate_inside_a_transaction(transactional_db: Any, gate: webgate.Gate) -> None:
    from django.db import transaction

    gate.enter()
    try:
        with transaction.atomic(), webgate.outside():
            assert not gate.is_out(), "a request holding row locks must not lend its slot"
        with webgate.outside():
            assert gate.is_out()
            with webgate.outside():  # nested: still one step out, and one step back in
                assert gate.is_out()
            assert gate.is_out()
        assert gate.held() and not gate.is_out()
    finally:
        gate.leave()


def test_outside_is_a_no_op_without_a_gate() -> None:
    assert webgate.install(0) is None
    with webgate.outside():
        pass
    gate = webgate.Gate(1)
    assert not gate.held()


# ------------------------------------------------------------------------------ gunicorn with the worker


class Gunicorn:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.port, self.proc, self.log = port, proc, log

    def get(self, path: str, *, token: str | None = None, timeout: float = 20) -> tuple[int, bytes, float]:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
            resp = conn.getresponse()
            return resp.status, resp.read(), time.monotonic() - started
        finally:
            conn.close()


@pytest.fixture
def gunicorn(transactional_db: Any, tmp_path: Path) -> Iterator[Gunicorn]:
    """The repo's gunicorn.conf.py on the test database, one process with two threads: the smallest
    layout in which one request can hold up another."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "WEB_ACTIVE_REQUESTS": "1",
    }
    port = free_port()
    log = tmp_path / "gunicorn.log"
    cmd = [sys.executable, "-m", "gunicorn", "controlplane.wsgi", "--config", str(ROOT / "gunicorn.conf.py")]
    cmd += ["--workers", "1", "--threads", "2", "-b", f"127.0.0.1:{port}", "--log-level", "info"]
    out = log.open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Gunicorn(port, proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"gunicorn exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"gunicorn did not answer in 60 s:\n{log.read_text()[-3000:]}"
            try:
                if server.get("/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        print(f"---- gunicorn log ----\n{log.read_text(errors='replace')[-3000:]}")


def test_gunicorn_runs_the_gated_worker(gunicorn: Gunicorn) -> None:
    assert "Using worker: controlplane.webworker.GatedThreadWorker" in gunicorn.log.read_text()


def test_a_silent_client_does_not_hold_up_the_process(gunicorn: Gunicorn) -> None:
    # Connected, sends nothing: gthread gives it a thread that waits up to 5 s for its first bytes. That
    # wait must not hold the gate, or the other thread's request would wait the 5 s too.
    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=10):
        time.sleep(0.3)  # accepted and handed to a thread by now
        status, _, took = gunicorn.get("/healthz")
    assert status == 200
    assert took < 2.5, f"/healthz took {took:.1f} s behind a silent connection"


def test_a_waiting_request_does_not_hold_up_the_process(
    gunicorn: Gunicorn, catalog: Any, actors: dict[str, Any]
) -> None:
    from controlplane.actions.services import action_request
    from controlplane.api.services import api_token_create
    from controlplane.audit import context

    with context.change_context(channel=context.Channel.API, user=actors["responder"]):
        result = action_request(
            actor=actors["responder"],
            verb="refresh-mart",
            target_key="prod.weather.daily_weather_aggregates",
            params={},
            reason="stale",
        )
    assert result.action.state == "awaiting_approval"  # it will not end by itself
    _, token = api_token_create(user=actors["viewer"], name="gate", scopes=["actions:read"])
    waited: list[tuple[int, bytes, float]] = []
    waiter = _in_thread(lambda: waited.append(gunicorn.get(f"/api/v1/actions/{result.action.id}?wait=6", token=token)))
    time.sleep(1.0)  # the wait is under way
    status, body, took = gunicorn.get(f"/api/v1/actions/{result.action.id}", token=token)
    assert status == 200, body
    assert took < 2.5, f"a read took {took:.1f} s while another request waited for an action's end"
    assert waiter.is_alive(), "the ?wait request should still be waiting"
    waiter.join(20)
    assert waited and waited[0][0] == 200 and waited[0][2] >= 5, waited
