"""The web tier as shipped: nginx (deploy/nginx/controlplane.conf.template, run by sandbox/nginx.py as the
demo runs it) in front of gunicorn (the repo's gunicorn.conf.py: 2 processes x 4 threads), on the test
database. Slow clients cost nginx a connection each, never a gunicorn thread; without nginx, as many
clients as gunicorn has threads stop it."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import nginx as sandbox_nginx
from sandbox.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
TRICKLERS = 16  # twice gunicorn's threads (2 processes x 4)
# One byte a second: a request line and headers of about 60 bytes take a minute to arrive.
TRICKLED_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: trickle\r\nAccept: */*\r\n\r\n"
PROBES = 3


class Server:
    """A server process this test started (in its own session), and where it listens."""

    def __init__(self, name: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name, self.port, self.proc, self.log = name, port, proc, log

    def get(self, path: str, *, token: str | None = None, timeout: float = 20) -> tuple[int, bytes, float]:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
            resp = conn.getresponse()
            return resp.status, resp.read(), time.monotonic() - started
        finally:
            conn.close()

    def probe(self, timeout: float) -> float:
        """Seconds until GET /healthz answered 200, or ``timeout`` when it did not answer in time."""
        try:
            status, body, took = self.get("/healthz", timeout=timeout)
        except TimeoutError:
            return timeout
        assert status == 200, body
        return took


@contextlib.contextmanager
def _serve(name: str, cmd: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[Server]:
    out = log.open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, port, proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"{name} exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{name} did not answer in 60 s:\n{log.read_text()[-3000:]}"
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
        out.close()
        print(f"---- {name} log ----\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def gunicorn(transactional_db: Any, tmp_path: Path) -> Iterator[Server]:
    """gunicorn with the repo's gunicorn.conf.py and nothing overridden but the address, on the test database."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    env = {**os.environ, "DATABASE_URL": f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "controlplane.wsgi", "--config", str(ROOT / "gunicorn.conf.py")]
    cmd += ["-b", f"127.0.0.1:{port}", "--log-level", "info", "--graceful-timeout", "5"]
    with _serve("gunicorn", cmd, env, port, tmp_path / "gunicorn.log") as server:
        yield server


@pytest.fixture
def proxied(gunicorn: Server, tmp_path: Path) -> Iterator[Server]:
    """nginx in front of ``gunicorn``, with the configuration the demo and compose use."""
    port = free_port()
    directory = tmp_path / "nginx"
    sandbox_nginx.write_config(directory, listen=f"127.0.0.1:{port}", upstream=f"127.0.0.1:{gunicorn.port}")
    with _serve("nginx", sandbox_nginx.command(directory), dict(os.environ), port, tmp_path / "nginx.log") as server:
        yield server


@contextlib.contextmanager
def _tricklers(port: int, n: int = TRICKLERS) -> Iterator[list[socket.socket]]:
    """``n`` connections that each send TRICKLED_REQUEST one byte a second, for as long as the block runs
    (a fraction of the request: it never completes)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
    stop = threading.Event()

    def trickle() -> None:
        for i in range(len(TRICKLED_REQUEST)):
            for sock in socks:
                # A server that dropped it: the test's assertions say whether that was expected.
                with contextlib.suppress(OSError):
                    sock.sendall(TRICKLED_REQUEST[i : i + 1])
            if stop.wait(1.0):
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(1.5)  # every connection accepted and a few bytes in
        yield socks
    finally:
        stop.set()
        thread.join(5)
        for sock in socks:
            sock.close()


def _still_open(sock: socket.socket) -> bool:
    """Neither answered nor closed by the server: still waiting for the rest of its request."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # an answer (an error status) or the end of the connection


def test_slow_clients_do_not_hold_up_the_proxied_web_tier(proxied: Server) -> None:
    with _tricklers(proxied.port) as socks:
        took = [proxied.probe(timeout=5) for _ in range(PROBES)]
        assert all(_still_open(s) for s in socks), "nginx dropped the slow clients instead of waiting for them"
    assert max(took) < 1.0, f"/healthz through nginx took {', '.join(f'{t:.2f}' for t in took)} s"


def test_without_the_proxy_slow_clients_hold_up_gunicorn(gunicorn: Server) -> None:
    # Why nginx is there: gunicorn gives each connection a thread once its first byte arrives and waits for
    # the rest without a limit. Which process accepts a connection is up to the kernel: a probe that lands on
    # a process the tricklers left a thread to answers at once, one on the other waits; so up to 10 probes,
    # until one is slow.
    took: list[float] = []
    with _tricklers(gunicorn.port):
        while len(took) < 10 and max(took, default=0) < 1.0:
            took.append(gunicorn.probe(timeout=2))
    assert max(took) >= 1.0, f"/healthz straight to gunicorn took {', '.join(f'{t:.2f}' for t in took)} s"


def test_a_waiting_request_does_not_hold_up_the_web_tier(proxied: Server, catalog: Any, actors: dict[str, Any]) -> None:
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
    _, token = api_token_create(user=actors["viewer"], name="tier", scopes=["actions:read"])
    waited: list[tuple[int, bytes, float]] = []
    path = f"/api/v1/actions/{result.action.id}"
    waiter = threading.Thread(target=lambda: waited.append(proxied.get(f"{path}?wait=6", token=token)), daemon=True)
    waiter.start()
    time.sleep(1.0)  # the wait is under way
    status, body, took = proxied.get(path, token=token)
    assert status == 200, body
    assert took < 2.5, f"a read took {took:.1f} s while another request waited for an action's end"
    assert waiter.is_alive(), "the ?wait request should still be waiting"
    waiter.join(20)
    assert waited and waited[0][0] == 200 and waited[0][2] >= 5, waited
