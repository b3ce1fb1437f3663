"""Start and stop a real Airflow 3 (api-server, scheduler, dag-processor, triggerer) on loopback.

Plain Python, no Django. The components run detached from their own venv (``sandbox.airflow.venv``), each
in its own session under a tiny supervisor that restarts it when it exits, with the metadata
database in the sandbox Postgres. Everything lives under ``ROOT/airflow/`` so ``stop`` can find it again
from another process, even after the starter crashed::

    ROOT/airflow/state.json      port, database, users' generated passwords and secrets (0600, reused on restart)
    ROOT/airflow/passwords.json  the simple auth manager's passwords file (0600)
    ROOT/airflow/home/           AIRFLOW_HOME (task logs in home/logs); no airflow.cfg: env vars configure all
    ROOT/airflow/logs/           one log per component, plus db-migrate.log
    ROOT/airflow/run/*.pid       each supervisor's pid (= its process group and session)
    ROOT/airflow.env             AIRFLOW_URL, AIRFLOW_USER, AIRFLOW_PASSWORD, AIRFLOW_VIEWER_* (CLI only)

CLI::

    python -m sandbox.airflow start --root DIR --pg-admin-url URL [--port P] [--db-name NAME] [--env K=V ...]
    python -m sandbox.airflow status --root DIR
    python -m sandbox.airflow stop --root DIR [--drop-database]
    python -m sandbox.airflow venv

No ``airflow standalone`` (its log servers listen on every interface): the scheduler and triggerer run with
``--skip-serve-logs`` and the API server binds 127.0.0.1 only; task logs are read from local files.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql

from sandbox.airflow.venv import AIRFLOW_VERSION, AirflowVenvError, airflow_executable, ensure_airflow_venv
from sandbox.processes import LOOPBACK, free_port
from sandbox.services import (
    SandboxError,
    create_database,
    drop_database,
    pid_alive,
    tail_file,
    with_dbname,
)

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
SANDBOX_DAGS = (
    "data_ingestion_bronze",
    "retail_ingestion_pipeline",
    "retail_transformation_pipeline",
    "stuck_report_pipeline",
)
USERNAME = "admin"  # role admin
VIEWER = "viewer"  # role viewer: reads, gets 403 on writes
ENV_FILE = "airflow.env"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HEALTH_KEYS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
READY_TIMEOUT_S = 120.0
MIGRATE_TIMEOUT_S = 300.0
STOP_GRACE_S = 4.0
HTTP_TIMEOUT_S = 30.0  # generous: a first request can wait seconds for lazy initialisation on a busy machine
# Every process started for a root carries this variable (``KEY=ROOT``), so stop can find stragglers
# (task processes put themselves in process groups of their own) by their environment.
MARKER_ENV = "CONTROLPLANE_SANDBOX_AIRFLOW"
# A freshly migrated metadata database, kept on the sandbox Postgres: later roots start from a copy of it
# (CREATE DATABASE ... TEMPLATE, well under a second) instead of running `airflow db migrate` (~5 s).
TEMPLATE_DB = f"airflow_template_{AIRFLOW_VERSION.replace('.', '_')}"
_ADMIN_OPTIONS = "-c statement_timeout=60000 -c lock_timeout=30000"

# The supervisor: restarts the component whenever it exits. It leads the component's session and process
# group, so one killpg stops both (it dies on SIGTERM at once; the component shuts down on its own SIGTERM).
# Before a restart it kills whatever the component left in its session: a killed scheduler's executor
# workers live on, holding the scheduler's inherited Postgres sockets, and with them any transaction it had
# open and that transaction's row locks (the new scheduler then never queues a task). Python, not bash:
# finding a session's processes takes /proc, which bash reads badly and a fresh Debian has no `ps` for.
_SUPERVISOR = r"""
import os, signal, subprocess, sys, time

name, command, me = sys.argv[1], sys.argv[2:], os.getpid()


def left_in_session():
    for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                session = int(stat.read().rsplit(")", 1)[1].split()[3])
        except (OSError, ValueError, IndexError):
            continue
        if session == me and pid != me:
            yield pid


restarts = 0
while True:
    status = subprocess.call(command, stdin=subprocess.DEVNULL)
    for pid in left_in_session():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    restarts += 1
    print(f"controlplane-supervisor: {name} exited with status {status}; restart #{restarts} in 1 s",
          file=sys.stderr, flush=True)
    time.sleep(1)
"""
_RESTART_LINE = "controlplane-supervisor: "


class AirflowApiError(RuntimeError):
    """A REST call to the sandbox Airflow answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:1000]}")
        self.method, self.path, self.status, self.body = method, path, status, body


# ------------------------------------------------------------------------------------------------ files


@dataclass(frozen=True)
class _Layout:
    root: Path

    @property
    def base(self) -> Path:
        return self.root / "airflow"

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def run(self) -> Path:
        return self.base / "run"

    @property
    def state_file(self) -> Path:
        return self.base / "state.json"

    @property
    def passwords_file(self) -> Path:
        return self.base / "passwords.json"

    def pid_file(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def _bindable(port: int | None) -> bool:
    """True when ``port`` is free on loopback right now (a remembered port may have been taken since)."""
    if not port:
        return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, int(port)))
        except OSError:
            return False
    return True


def _layout(root: Path) -> _Layout:
    return _Layout(root.resolve())


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def _read_state(layout: _Layout) -> dict[str, Any]:
    try:
        data = json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ----------------------------------------------------------------------------------------------- server


@dataclass
class AirflowServer:
    """A running sandbox Airflow: REST API at ``url`` (``/api/v2``), simple auth manager user ``username``."""

    url: str
    username: str
    password: str
    root: Path
    viewer_password: str = field(default="", repr=False)
    startup_seconds: float = 0.0
    startup_phases: dict[str, float] = field(default_factory=dict)
    database: str = ""
    _token: str | None = field(default=None, repr=False)

    @property
    def home(self) -> Path:
        """AIRFLOW_HOME (task logs under ``home/logs``)."""
        return _layout(self.root).home

    @property
    def logs_dir(self) -> Path:
        """One log file per component."""
        return _layout(self.root).logs

    def env(self) -> dict[str, str]:
        """What ``ROOT/airflow.env`` holds: URL, admin user and password, viewer user and password."""
        return {
            "AIRFLOW_URL": self.url,
            "AIRFLOW_USER": self.username,
            "AIRFLOW_PASSWORD": self.password,
            "AIRFLOW_VIEWER_USER": VIEWER,
            "AIRFLOW_VIEWER_PASSWORD": self.viewer_password,
        }

    def token(self, username: str | None = None, password: str | None = None) -> str:
        """A fresh JWT from ``POST /auth/token`` (lifetime: ``[api_auth] jwt_expiration_time``)."""
        return fetch_token(self.url, username or self.username, password or self.password)

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        timeout: float = HTTP_TIMEOUT_S,
    ) -> Any:
        """Call the REST API (``path`` like ``/api/v2/dags``) with a cached token, renewed once on a 401."""
        if self._token is None:
            self._token = self.token()
        try:
            return api_request(self.url, method, path, body, token=self._token, params=params, timeout=timeout)
        except AirflowApiError as exc:
            if exc.status != 401:
                raise
        self._token = self.token()
        return api_request(self.url, method, path, body, token=self._token, params=params, timeout=timeout)

    def component_pids(self) -> dict[str, int | None]:
        """The supervisor process group of each component (None when it is not running)."""
        layout = _layout(self.root)
        return {name: _live_group(layout, name) for name in COMPONENTS}

    def stop(self, *, drop_db: bool = False) -> bool:
        """Stop every component (and drop the metadata database if asked); True if something ran."""
        return stop_airflow(self.root, drop_db=drop_db)


# ------------------------------------------------------------------------------------------------- HTTP


def _http(
    method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None, timeout: float = HTTP_TIMEOUT_S
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # our loopback URL
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def fetch_token(base_url: str, username: str, password: str, *, timeout: float = HTTP_TIMEOUT_S) -> str:
    """``POST {base_url}/auth/token`` with ``{"username", "password"}``: the JWT (HTTP 201)."""
    status, raw = _http("POST", f"{base_url}/auth/token", {"username": username, "password": password}, timeout=timeout)
    if status not in (200, 201):
        raise AirflowApiError("POST", "/auth/token", status, raw.decode(errors="replace"))
    return str(json.loads(raw)["access_token"])


def api_request(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None,
    params: Mapping[str, Any] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> Any:
    """One JSON request; the decoded body (None when empty), AirflowApiError on a status >= 400."""
    url = base_url + path
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, raw = _http(method, url, body, headers, timeout)
    if status >= 400:
        raise AirflowApiError(method, path, status, raw.decode(errors="replace"))
    return json.loads(raw) if raw.strip() else None


# -------------------------------------------------------------------------------------------- processes


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _marker(layout: _Layout) -> bytes:
    return f"{MARKER_ENV}={layout.root}".encode()


def _live_group(layout: _Layout, component: str) -> int | None:
    """The pid (= process group) of a component's supervisor, if it still runs and is ours."""
    try:
        pid = int(layout.pid_file(component).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) and _has_marker(pid, _marker(layout)) else None


def _recorded_sessions(layout: _Layout) -> set[int]:
    """The session ids of this root's supervisors (from the pid files, alive or not)."""
    sessions = set()
    for name in COMPONENTS:
        with contextlib.suppress(OSError, ValueError):
            sessions.add(int(layout.pid_file(name).read_text().strip()))
    return sessions


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _our_processes(layout: _Layout) -> list[int]:
    """Every live process started for this root, whatever its process group.

    Each supervisor leads a session of its own (``start_new_session``); task processes leave their
    supervisor's process group (setpgid) but not its session, and some components rename themselves
    (setproctitle), which clobbers the environment seen in /proc. So a process is ours when it carries the
    marker variable, or when it runs Airflow inside one of our supervisors' sessions.
    """
    marker, sessions, me, found = _marker(layout), _recorded_sessions(layout), os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        if (_has_marker(pid, marker) or (_session(pid) in sessions and b"airflow" in _cmdline(pid))) and pid_alive(pid):
            found.append(pid)
    return found


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _kill_all(layout: _Layout, grace: float = STOP_GRACE_S) -> bool:
    """SIGTERM every process of this root (supervisors first, so nothing is restarted), SIGKILL what is
    left after ``grace``; True if anything ran. Needs nothing but the files under ``layout``."""
    groups = [pgid for pgid in (_live_group(layout, name) for name in COMPONENTS) if pgid is not None]
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)  # the supervisors die at once, their components shut down
    targets = _our_processes(layout)  # plus task processes (own groups) and orphans of a killed supervisor
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in targets):
        time.sleep(0.1)
    for _ in range(3):  # whatever is left, including anything forked meanwhile
        left = _our_processes(layout)
        if not left:
            break
        for pid in left:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(pid_alive(pid) for pid in left):
            time.sleep(0.05)
    for name in COMPONENTS:
        layout.pid_file(name).unlink(missing_ok=True)
    return bool(groups or targets)


# --------------------------------------------------------------------------------------- configuration


def _secrets(state: dict[str, Any]) -> dict[str, str]:
    """Generated once per root and kept, so every component (and every restart) agrees."""
    return {
        "password": state.get("password") or secrets.token_urlsafe(18),
        "viewer_password": state.get("viewer_password") or secrets.token_urlsafe(18),
        "jwt_secret": state.get("jwt_secret") or secrets.token_urlsafe(48),
        "secret_key": state.get("secret_key") or secrets.token_urlsafe(48),
        "fernet_key": state.get("fernet_key") or base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }


def _sqlalchemy_url(pg_url: str) -> str:
    parts = urllib.parse.urlsplit(pg_url)
    return urllib.parse.urlunsplit(parts._replace(scheme="postgresql+psycopg2"))


def airflow_environment(
    layout: _Layout,
    state: dict[str, Any],
    *,
    dags_folder: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of every component (no airflow.cfg: env vars are the configuration)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "UV_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    venv_bin = str(airflow_executable().parent)
    url = f"http://{LOOPBACK}:{state['port']}"
    env = {
        **base,
        "PATH": venv_bin + os.pathsep + base.get("PATH", "/usr/bin:/bin"),
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in the repository's dags folder
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        MARKER_ENV: str(layout.root),
        "AIRFLOW_HOME": str(layout.home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__FERNET_KEY": state["fernet_key"],
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "socket.gethostname",  # no DNS lookup (getfqdn) per task
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{state['username']}:admin,{VIEWER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(layout.passwords_file),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _sqlalchemy_url(state["db_url"]),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "5",
        "AIRFLOW__API__HOST": LOOPBACK,
        "AIRFLOW__API__PORT": str(state["port"]),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": state["secret_key"],
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": state["jwt_secret"],
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "2",
        "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
        # An idle scheduler loop sleeps this long, and each step of a run (queued -> running, a task's end ->
        # the next task queued, the last task's end -> run done) waits up to one sleep (default 1 s).
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "90",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        # The task supervisor polls its task at this interval: it notices a failed task's exit up to this late.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
    }
    env.update(extra or {})
    return env


def _admin_connect(admin_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(admin_url, connect_timeout=5, autocommit=True, options=_ADMIN_OPTIONS)


def _database_exists(admin_url: str, name: str) -> bool:
    with _admin_connect(admin_url) as conn:
        return conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is not None


def _alembic_revision(db_url: str) -> str | None:
    """The metadata database's migration revision, None when it has none (empty or unreachable)."""
    try:
        with psycopg.connect(db_url, connect_timeout=5, autocommit=True, options=_ADMIN_OPTIONS) as conn:
            row = conn.execute("select version_num from alembic_version").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None


def _create_metadata_database(admin_url: str, name: str) -> bool:
    """Create database ``name``: a copy of the migrated template when there is one (True), else empty."""
    if _database_exists(admin_url, TEMPLATE_DB):
        try:
            create_database(admin_url, name, template=TEMPLATE_DB)
            return True
        except psycopg.Error:  # the template is being published or copied by someone else right now
            if _database_exists(admin_url, name):
                drop_database(admin_url, name)
    create_database(admin_url, name)
    return False


def _publish_template(admin_url: str, name: str) -> None:
    """Keep a pristine copy of the just-migrated ``name`` as the template later roots start from.

    Copied under a temporary name and renamed, so a template that exists is complete. Best effort: losing
    a race with another publisher, or any other error, only means the next start migrates again.
    """
    staging = f"{TEMPLATE_DB}_tmp_{secrets.token_hex(3)}"
    try:
        create_database(admin_url, staging, template=name)
        with _admin_connect(admin_url) as conn:
            conn.execute(
                psycopg.sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    psycopg.sql.Identifier(staging), psycopg.sql.Identifier(TEMPLATE_DB)
                )
            )
    except psycopg.Error:
        with contextlib.suppress(psycopg.Error):
            drop_database(admin_url, staging)


def _prepare_metadata_database(admin_url: str, state: dict[str, Any], env: Mapping[str, str], layout: _Layout) -> str:
    """Make ``state["db_name"]`` exist and be migrated for this Airflow; how (for the start-up report)."""
    name, db_url = state["db_name"], state["db_url"]
    if not _database_exists(admin_url, name) and _create_metadata_database(admin_url, name):
        state["migrated"] = {"airflow": AIRFLOW_VERSION, "revision": _alembic_revision(db_url)}
        return "copied from template"
    migrated = state.get("migrated") or {}
    revision = _alembic_revision(db_url)
    if revision and migrated == {"airflow": AIRFLOW_VERSION, "revision": revision}:
        return "already migrated"
    fresh = revision is None
    _run_logged([str(airflow_executable()), "db", "migrate"], env, layout.log_file("db-migrate"), MIGRATE_TIMEOUT_S)
    state["migrated"] = {"airflow": AIRFLOW_VERSION, "revision": _alembic_revision(db_url)}
    if fresh:
        _publish_template(admin_url, name)
    return "migrated"


# ---------------------------------------------------------------------------------------------- startup


def _run_logged(cmd: Sequence[str], env: Mapping[str, str], log: Path, timeout: float) -> None:
    with log.open("ab") as out:
        try:
            result = subprocess.run(
                list(cmd), env=dict(env), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                timeout=timeout, check=False, start_new_session=True,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(f"{' '.join(cmd)} did not finish in {timeout:.0f} s\n{tail_file(log, 40)}") from exc
    if result.returncode != 0:
        raise SandboxError(f"{' '.join(cmd)} failed ({result.returncode}):\n--- {log} (tail) ---\n{tail_file(log, 40)}")


def _component_command(component: str, port: int) -> list[str]:
    airflow = str(airflow_executable())
    return {
        "api-server": [airflow, "api-server", "--host", LOOPBACK, "--port", str(port)],
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
        "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
    }[component]


def _spawn(layout: _Layout, component: str, env: Mapping[str, str], port: int) -> int:
    log = layout.log_file(component)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _SUPERVISOR, component, *_component_command(component, port)],
            env=dict(env), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    layout.pid_file(component).write_text(f"{proc.pid}\n")
    return proc.pid


def _restarted(layout: _Layout, offsets: Mapping[str, int]) -> str | None:
    """A component whose supervisor had to restart it since we started (read from its log)."""
    for name in COMPONENTS:
        try:
            with layout.log_file(name).open("rb") as handle:
                handle.seek(offsets.get(name, 0))
                if _RESTART_LINE.encode() in handle.read():
                    return name
        except OSError:
            continue
    return None


def _health(url: str) -> dict[str, Any] | None:
    try:
        status, raw = _http("GET", f"{url}/api/v2/monitor/health", timeout=3)
    except OSError:
        return None
    if status != 200:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _healthy(health: Mapping[str, Any] | None) -> bool:
    return health is not None and all(
        isinstance(health.get(key), dict) and health[key].get("status") == "healthy" for key in HEALTH_KEYS
    )


def _wait_ready(
    server: AirflowServer, layout: _Layout, expected: Sequence[str], timeout: float, offsets: Mapping[str, int]
) -> dict[str, float]:
    """Block until every component is healthy and ``expected`` DAGs are listed; when each milestone came."""
    started = time.monotonic()
    deadline = started + timeout
    milestones: dict[str, float] = {}
    health: dict[str, Any] | None = None
    listed: set[str] = set()
    while time.monotonic() < deadline:
        crashed = _restarted(layout, offsets)
        if crashed is not None:
            raise SandboxError(
                f"Airflow {crashed} exited during start-up\n--- {layout.log_file(crashed)} (tail) ---\n"
                f"{tail_file(layout.log_file(crashed), 40)}"
            )
        health = _health(server.url)
        if health is not None:
            milestones.setdefault("api_up", time.monotonic() - started)
        if _healthy(health):
            milestones.setdefault("healthy", time.monotonic() - started)
            try:
                dags = server.api("GET", "/api/v2/dags", params={"limit": 100})
                listed = {d["dag_id"] for d in dags.get("dags", [])}
                if set(expected) <= listed:
                    milestones["dags_listed"] = time.monotonic() - started
                    if expected:  # the first task-endpoint call took 7-10 s on a busy machine: pay it here
                        server.api(
                            "GET", f"/api/v2/dags/{expected[0]}/tasks", timeout=max(deadline - time.monotonic(), 1)
                        )
                        milestones["warm"] = time.monotonic() - started
                    return milestones
                import_errors = server.api("GET", "/api/v2/importErrors").get("import_errors")
            except (AirflowApiError, OSError):
                import_errors = None
            if import_errors:
                raise SandboxError(f"Airflow could not import DAG files: {json.dumps(import_errors)[:3000]}")
        time.sleep(0.25)
    logs = "\n".join(f"--- {layout.log_file(n)} (tail) ---\n{tail_file(layout.log_file(n), 15)}" for n in COMPONENTS)
    raise SandboxError(
        f"Airflow at {server.url} not ready after {timeout:.0f} s: health={health} dags={sorted(listed)} "
        f"(waiting for {sorted(set(expected) - listed)})\n{logs}"
    )


def start_airflow(
    root: Path,
    *,
    pg_admin_url: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    db_name: str | None = None,
    dags_folder: Path | None = None,
    expected_dags: Sequence[str] | None = None,
    timeout: float = READY_TIMEOUT_S,
) -> AirflowServer:
    """Start (or restart) the sandbox Airflow of ``root`` and wait until it serves the sandbox DAGs.

    ``pg_admin_url`` is a superuser URL of the sandbox Postgres: the metadata database (``db_name``, else
    the one this root used before, else ``airflow_<random>``) is created there if missing, then migrated.
    ``port`` defaults to the previous one of this root, else a free one. ``env`` adds or overrides Airflow
    settings, e.g. ``{"AIRFLOW__API_AUTH__JWT_EXPIRATION_TIME": "5"}``. Components already running for
    ``root`` are stopped first. Returns once ``/api/v2/monitor/health`` reports every component healthy
    and ``/api/v2/dags`` lists ``expected_dags`` (the four sandbox DAGs when ``dags_folder`` is the
    default); SandboxError with the logs' tails otherwise.
    """
    started = time.monotonic()
    layout = _layout(root)
    for directory in (layout.home, layout.logs, layout.run):
        directory.mkdir(parents=True, exist_ok=True)
    layout.base.chmod(0o700)
    _kill_all(layout)
    phases = {"stop_previous": time.monotonic() - started}
    ensure_airflow_venv()
    phases["venv"] = time.monotonic() - started - sum(phases.values())

    state = _read_state(layout)
    name = db_name or state.get("db_name") or f"airflow_{secrets.token_hex(4)}"
    if name != state.get("db_name"):
        state.pop("migrated", None)
    state.update(_secrets(state))
    state.update(
        {
            "username": USERNAME,
            "port": port or (state.get("port") if _bindable(state.get("port")) else None) or free_port(),
            "db_name": name,
            "db_url": with_dbname(pg_admin_url, name),
            "pg_admin_url": pg_admin_url,
        }
    )
    passwords = {state["username"]: state["password"], VIEWER: state["viewer_password"]}
    _write_private(layout.passwords_file, json.dumps(passwords) + "\n")
    folder = (dags_folder or DAGS_FOLDER).resolve()
    component_env = airflow_environment(layout, state, dags_folder=folder, extra=env)
    _write_private(layout.state_file, json.dumps(state, indent=2) + "\n")  # stop --drop-database finds it
    database = _prepare_metadata_database(pg_admin_url, state, component_env, layout)
    _write_private(layout.state_file, json.dumps(state, indent=2) + "\n")
    phases["database"] = time.monotonic() - started - sum(phases.values())
    offsets = {n: layout.log_file(n).stat().st_size if layout.log_file(n).exists() else 0 for n in COMPONENTS}
    server = AirflowServer(
        url=f"http://{LOOPBACK}:{state['port']}",
        username=state["username"],
        password=state["password"],
        root=root,
        viewer_password=state["viewer_password"],
    )
    try:
        with ThreadPoolExecutor(len(COMPONENTS)) as pool:  # fork+exec of four supervisors side by side
            list(pool.map(lambda c: _spawn(layout, c, component_env, state["port"]), COMPONENTS))
        if expected_dags is None:
            expected_dags = SANDBOX_DAGS if dags_folder is None else ()
        milestones = _wait_ready(server, layout, expected_dags, timeout, offsets)
    except BaseException:
        _kill_all(layout)
        raise
    server.startup_seconds = time.monotonic() - started
    phases.update({f"components_{k}": v for k, v in milestones.items()})
    server.startup_phases = phases
    server.database = f"{name} ({database})"
    return server


def stop_airflow(root: Path, *, drop_db: bool = False) -> bool:
    """Stop every Airflow process of ``root`` (idempotent, works from any process); True if any ran.

    With ``drop_db`` the metadata database is dropped too (its admin URL is in ``state.json``).
    """
    layout = _layout(root)
    stopped = _kill_all(layout) if layout.base.exists() else False
    if drop_db:
        state = _read_state(layout)
        if state.get("pg_admin_url") and state.get("db_name"):
            drop_database(state["pg_admin_url"], state["db_name"])
    return stopped


def airflow_processes(root: Path) -> list[int]:
    """The pids of every process running for the sandbox Airflow of ``root`` (components, tasks, strays)."""
    return _our_processes(_layout(root))


def airflow_status(root: Path) -> dict[str, Any]:
    """Which supervisors run, and the API's health answer (None when it does not answer)."""
    layout = _layout(root)
    state = _read_state(layout)
    health = _health(f"http://{LOOPBACK}:{state['port']}") if state.get("port") else None
    return {"components": {n: _live_group(layout, n) is not None for n in COMPONENTS}, "health": health}


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``start``, ``status`` or ``stop`` the sandbox Airflow of ``--root``; ``venv`` builds the venv."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.airflow", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start Airflow (detached), write ROOT/airflow.env")
    start.add_argument("--root", type=Path, required=True)
    start.add_argument("--pg-admin-url", required=True, help="superuser URL of the sandbox Postgres")
    start.add_argument("--port", type=int, default=None)
    start.add_argument("--db-name", default=None)
    start.add_argument("--timeout", type=float, default=READY_TIMEOUT_S)
    start.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every component (repeatable), e.g. CONTROLPLANE_ALERT_URL=... or "
        "AIRFLOW__API_AUTH__JWT_EXPIRATION_TIME=60",
    )
    stop = sub.add_parser("stop", help="stop every component (idempotent)")
    stop.add_argument("--root", type=Path, required=True)
    stop.add_argument("--drop-database", action="store_true")
    sub.add_parser("status", help="show what runs").add_argument("--root", type=Path, required=True)
    sub.add_parser("venv", help="build (or reuse) the Airflow venv and print its path")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            extra = dict(item.split("=", 1) for item in args.env if "=" in item)
            server = start_airflow(
                args.root,
                pg_admin_url=args.pg_admin_url,
                port=args.port,
                env=extra,
                db_name=args.db_name,
                timeout=args.timeout,
            )
            values = server.env()
            (args.root / ENV_FILE).write_text("".join(f"{k}={v}\n" for k, v in values.items()))
            (args.root / ENV_FILE).chmod(0o600)
            for key, value in values.items():
                print(f"{key}={value}")
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in server.startup_phases.items())
            print(
                f"started in {server.startup_seconds:.1f} s ({phases}); database {server.database}; "
                f"logs in {server.logs_dir}",
                file=sys.stderr,
            )
        elif args.command == "stop":
            stopped = stop_airflow(args.root, drop_db=args.drop_database)
            (args.root / ENV_FILE).unlink(missing_ok=True)
            print("stopped" if stopped else "not running")
        elif args.command == "status":
            print(json.dumps(airflow_status(args.root), indent=2))
        else:
            print(ensure_airflow_venv())
    except (SandboxError, AirflowVenvError, OSError, psycopg.Error) as exc:
        print(f"sandbox.airflow: {exc}", file=sys.stderr)
        return 1
    return 0
