"""Start and stop the sandbox BigQuery: local-bigquery (its own venv, a private port) behind the byte-estimate
proxy (sandbox/bigquery/proxy.py, the project's Python, the port clients use).

Both run detached under ``ROOT/bigquery`` (``data/`` holds the tables, ``sizes.json`` the declared byte sizes,
``*.pid`` and ``*.log`` beside them), so another process can stop them. Every wait is bounded; a server
that does not come up fails with the tail of its log.
"""

from __future__ import annotations

import http.client
import sys
from dataclasses import dataclass
from pathlib import Path

from sandbox.bigquery.venv import BIGQUERY_VENV, ensure_bigquery_venv, tool_env
from sandbox.processes import LOOPBACK, Detached, free_port, wait_until

PROJECT = "sandbox"
READY_TIMEOUT_S = 60.0
REUSE_PING_TIMEOUT_S = 15.0


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


def _processes(directory: Path) -> dict[str, Detached]:
    """Each process is recognised by its command line before it is signalled (a pid file may be stale)."""
    return {
        "server": Detached(directory, "server", marker="local-bigquery"),
        "proxy": Detached(directory, "proxy", marker="sandbox.bigquery"),
    }


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
    upstream_port, grpc_port = free_port(), free_port()
    server_cmd = [
        str(BIGQUERY_VENV.executable("local-bigquery")), "serve", "--host", LOOPBACK, "--port", str(upstream_port),
        "--grpc-port", str(grpc_port), "--project", project, "--data-dir", str(directory / "data"),
    ]  # fmt: skip
    found = _processes(directory)
    processes = [found["server"].spawn(server_cmd, env=tool_env(venv))]
    proxy_cmd = [
        sys.executable, "-m", "sandbox.bigquery", "proxy", "--port", str(port),
        "--upstream", f"http://{LOOPBACK}:{upstream_port}", "--sizes-file", str(directory / "sizes.json"),
    ]  # fmt: skip
    processes.append(found["proxy"].spawn(proxy_cmd))
    if wait_until(lambda: bigquery_ping(server.host, port, project), processes, READY_TIMEOUT_S):
        return server
    tails = "\n".join(process.log_tail(1500) for process in found.values())
    _stop_dir(directory)
    raise RuntimeError(f"the sandbox BigQuery on port {port} did not answer within {READY_TIMEOUT_S:.0f} s\n{tails}")


def _stop_dir(directory: Path) -> bool:
    stopped = [process.stop() for process in reversed(_processes(directory).values())]  # the proxy first
    return any(stopped)


def bigquery_running(root: Path) -> bool:
    directory = root.resolve() / "bigquery"
    return all(process.pid() is not None for process in _processes(directory).values())


def stop_bigquery(root: Path) -> bool:
    """Stop the sandbox BigQuery of ``root`` (proxy and server) if it runs; True if it was running. Idempotent."""
    return _stop_dir(root.resolve() / "bigquery")
