"""Start and stop the sandbox BigQuery: local-bigquery (its own venv, a private port) behind the byte-estimate
proxy (sandbox/bigquery/proxy.py, the project's Python, the port clients use).

Both run detached under ``ROOT/bigquery`` (``data/`` holds the tables, ``sizes.json`` the declared byte sizes,
``*.pid`` and ``*.log`` beside them), so another process can stop them. Every wait is bounded; a server
that does not come up fails with the tail of its log.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.bigquery.venv import BIGQUERY_VENV, ensure_bigquery_venv, tool_env

LOOPBACK = "127.0.0.1"
PROJECT = "sandbox"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
REUSE_PING_TIMEOUT_S = 15.0
# Each process is recognised by its command line before it is signalled (a pid file may be stale).
_MARKERS = {"server": "local-bigquery", "proxy": "sandbox.bigquery"}


def bigquery_ping(host: str, port: int, project: str = PROJECT, *, timeout: float = 2.0) -> bool:
    """True if the API answers ``datasets.list`` of ``project`` on host:port (through the proxy: both are up)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", f"/bigquery/v2/projects/{project}/datasets")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@dataclass(frozen=True)
class BigQueryServer:
    """A running sandbox BigQuery: ``url`` is the proxy's address, the one clients use."""

    directory: Path
    port: int
    project: str = PROJECT
    host: str = LOOPBACK

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> bool:
        return _stop_dir(self.directory)


def _free_port() -> int:
    from sandbox.services import free_port

    return free_port()


def _pid(directory: Path, name: str) -> int | None:
    try:
        pid = int((directory / f"{name}.pid").read_text().strip())
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if _MARKERS[name] in cmdline else None


def _spawn(directory: Path, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with (directory / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,  # outlives the caller, like the daemonized Redis
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
    (directory / f"{name}.pid").write_text(str(proc.pid))
    return proc


def _log_tails(directory: Path) -> str:
    parts = []
    for name in _MARKERS:
        text = (directory / f"{name}.log").read_text(errors="replace") if (directory / f"{name}.log").exists() else ""
        parts.append(f"--- {name}.log (tail) ---\n{text[-1500:] or '(empty)'}")
    return "\n".join(parts)


def start_bigquery(root: Path, port: int, *, project: str = PROJECT) -> BigQueryServer:
    """Start (or reuse) the sandbox BigQuery of ``root`` with its proxy on 127.0.0.1:``port``; wait until it
    answers. Builds the local-bigquery venv on first use."""
    server = BigQueryServer(directory=root.resolve() / "bigquery", port=port, project=project)
    directory = server.directory
    (directory / "data").mkdir(parents=True, exist_ok=True)
    # Both processes are alive: a busy server (a test's long query) may take a while to answer, and is not
    # restarted for that.
    if bigquery_running(root) and bigquery_ping(server.host, port, project, timeout=REUSE_PING_TIMEOUT_S):
        return server
    _stop_dir(directory)
    venv = ensure_bigquery_venv()
    upstream_port, grpc_port = _free_port(), _free_port()
    server_cmd = [
        str(BIGQUERY_VENV.executable("local-bigquery")), "serve", "--host", LOOPBACK, "--port", str(upstream_port),
        "--grpc-port", str(grpc_port), "--project", project, "--data-dir", str(directory / "data"),
    ]  # fmt: skip
    processes = [_spawn(directory, "server", server_cmd, env=tool_env(venv))]
    proxy_cmd = [
        sys.executable, "-m", "sandbox.bigquery", "proxy", "--port", str(port),
        "--upstream", f"http://{LOOPBACK}:{upstream_port}", "--sizes-file", str(directory / "sizes.json"),
    ]  # fmt: skip
    processes.append(_spawn(directory, "proxy", proxy_cmd))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if bigquery_ping(server.host, port, project):
            return server
        if any(proc.poll() is not None for proc in processes):
            break
        time.sleep(0.1)
    tails = _log_tails(directory)
    _stop_dir(directory)
    raise RuntimeError(f"the sandbox BigQuery on port {port} did not answer within {READY_TIMEOUT_S:.0f} s\n{tails}")


def _stop_one(directory: Path, name: str) -> bool:
    pid = _pid(directory, name)
    if pid is None:
        (directory / f"{name}.pid").unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _pid(directory, name) is not None:
        time.sleep(0.05)
    if _pid(directory, name) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    (directory / f"{name}.pid").unlink(missing_ok=True)
    return True


def _stop_dir(directory: Path) -> bool:
    stopped = [_stop_one(directory, name) for name in ("proxy", "server")]
    return any(stopped)


def bigquery_running(root: Path) -> bool:
    directory = root.resolve() / "bigquery"
    return _pid(directory, "server") is not None and _pid(directory, "proxy") is not None


def stop_bigquery(root: Path) -> bool:
    """Stop the sandbox BigQuery of ``root`` (proxy and server) if it runs; True if it was running. Idempotent."""
    return _stop_dir(root.resolve() / "bigquery")
