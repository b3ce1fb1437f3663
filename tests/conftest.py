"""The test world: real Postgres and Redis (started by bin/test), named actors on both sides of every
permission line, a demo-like catalog over the seed 004 weather warehouse, and a real Celery worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
WEATHER_PASSWORD = "weather-s3cret-" + uuid.uuid4().hex[:12]
WEATHER_SECRET_ENV = "CP_TEST_WEATHER_PASSWORD"
os.environ[WEATHER_SECRET_ENV] = WEATHER_PASSWORD
CPTEST_TOKEN = "cptest-t0ken-" + uuid.uuid4().hex[:12]
os.environ["CP_TEST_CPTEST_TOKEN"] = CPTEST_TOKEN


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(
            f"{name} is not set: the tests need the real Postgres and Redis that bin/test starts (run bin/test)"
        )
    return value


def pytest_configure(config: pytest.Config) -> None:
    if not _need("DATABASE_URL").startswith(("postgres://", "postgresql://")):
        raise pytest.UsageError("DATABASE_URL must point at Postgres for the tests (bin/test sets it)")
    _need("REDIS_URL")
    _need("SANDBOX_PG_URL")
    from django.conf import settings

    # Real hashing costs ~250 ms per user; the tests create dozens of users and prove nothing about PBKDF2.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# ---------------------------------------------------------------------------------------------- database


@pytest.fixture(autouse=True)
def _audit_truncate_allowed_for_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """Transactional tests end with Django's flush (TRUNCATE), which the append-only trigger refuses.
    The trigger is switched off only for that flush and back on for every test."""
    marker = request.node.get_closest_marker("django_db")
    transactional = any(f in request.fixturenames for f in ("transactional_db", "live_server")) or bool(
        marker and marker.kwargs.get("transaction")
    )
    if not transactional:
        yield
        return
    request.getfixturevalue("transactional_db")  # set up first, so its flush runs after our teardown
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_no_truncate")
    yield
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_no_truncate")


@pytest.fixture(autouse=True)
def _fresh_throttle_windows() -> None:
    """Each test starts with no request counted against the API's rates: the counters live in the shared
    Redis for a minute, so calls refused as unauthenticated in one test would otherwise throttle the next."""
    from controlplane.redis import redis_client

    client = redis_client()
    keys = list(client.scan_iter(match="throttle:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def weather_db() -> Iterator[dict[str, Any]]:
    """A fresh database on the sandbox Postgres holding the seed 004 warehouse."""
    from sandbox.services import create_database, drop_database, with_dbname
    from sandbox.weather import load_weather

    admin = _need("SANDBOX_PG_URL")
    name = f"weather_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    create_database(admin, name)
    url = with_dbname(admin, name)
    load_weather(url, days=14)
    info = psycopg.conninfo.conninfo_to_dict(url)
    yield {
        "url": url,
        "host": info.get("host", "127.0.0.1"),
        "port": int(str(info.get("port") or 5432)),
        "dbname": name,
        "user": info.get("user", "postgres"),
    }
    drop_database(admin, name)


def weather_sql(weather_db: dict[str, Any], sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(weather_db["url"], autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


# ---------------------------------------------------------------------------------------------- airflow

AIRFLOW_JWT_LIFETIME_S = 4  # short, so token expiry and renewal happen during the tests
AIRFLOW_SECRET_ENV = "CP_TEST_AIRFLOW_PASSWORD"
AIRFLOW_ENV = {
    "AIRFLOW__API_AUTH__JWT_EXPIRATION_TIME": str(AIRFLOW_JWT_LIFETIME_S),
    "AIRFLOW__API_AUTH__JWT_LEEWAY": "0",
}


def start_test_airflow(root: Path) -> Any:
    """Start (or restart, keeping URL, logins and history) the tests' Airflow in ``root``."""
    from sandbox.airflow import start_airflow

    server = start_airflow(root, pg_admin_url=_need("SANDBOX_PG_URL"), env=AIRFLOW_ENV)
    os.environ[AIRFLOW_SECRET_ENV] = server.password
    return server


def airflow_set_variable(server: Any, key: str, value: str) -> None:
    """Create or update an Airflow Variable (the tests share one Airflow: never assume it is new)."""
    from sandbox.airflow import AirflowApiError

    try:
        server.api("PATCH", f"/api/v2/variables/{key}", {"key": key, "value": value})
    except AirflowApiError:
        server.api("POST", "/api/v2/variables", {"key": key, "value": value})


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real Airflow 3 (api-server, scheduler, dag-processor, triggerer) for the whole run, started
    by the project's sandbox scripts on a fresh metadata database in the sandbox Postgres."""
    from sandbox.airflow import stop_airflow

    root = tmp_path_factory.mktemp("airflow")
    try:
        server = start_test_airflow(root)
        print(f"sandbox Airflow started in {server.startup_seconds:.1f} s")
        yield server
    finally:
        stop_airflow(root, drop_db=True)


# ---------------------------------------------------------------------------------------------- actors


def make_user(django_user_model: Any, username: str, role: str | None, *, superuser: bool = False) -> Any:
    user = django_user_model.objects.create_user(
        username=username, password=f"{username}-password", is_superuser=superuser
    )
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])  # a flush (transactional tests) drops them
    return user


@pytest.fixture
def actors(db: Any, django_user_model: Any) -> dict[str, Any]:
    """Named people on each side of each permission line."""
    return {
        "viewer": make_user(django_user_model, "vera", "viewer"),
        "responder": make_user(django_user_model, "rita", "responder"),
        "responder2": make_user(django_user_model, "rob", "responder"),
        "approver": make_user(django_user_model, "alice", "approver"),
        "approver2": make_user(django_user_model, "arthur", "approver"),
        "admin": make_user(django_user_model, "ada", "admin"),
        "nobody": make_user(django_user_model, "ned", None),
    }


# ---------------------------------------------------------------------------------------------- catalog


@pytest.fixture
def catalog(db: Any, weather_db: dict[str, Any]) -> dict[str, Any]:
    """dev (unprotected) and prod (protected) connections to the weather warehouse, with mart targets."""
    from controlplane.audit.context import Channel, change_context
    from controlplane.catalog import services as cs

    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        dev = cs.environment_create(name="dev", protected=False)
        prod = cs.environment_create(name="prod", protected=True)
        out: dict[str, Any] = {"dev": dev, "prod": prod}
        for env in (dev, prod):
            conn = cs.connection_create(
                name=f"weather-{env.name}",
                kind="postgres",
                environment=env,
                config={
                    "host": weather_db["host"],
                    "port": weather_db["port"],
                    "dbname": weather_db["dbname"],
                    "user": weather_db["user"],
                },
                secret_refs={"password": f"env:{WEATHER_SECRET_ENV}"},
            )
            out[f"conn_{env.name}"] = conn
            out[f"mart_{env.name}"] = cs.target_create(
                key=f"{env.name}.weather.daily_weather_aggregates",
                kind="matview",
                connection=conn,
                locator={"schema": "mart", "name": "daily_weather_aggregates"},
            )
            out[f"weather_{env.name}"] = cs.target_create(
                key=f"{env.name}.weather.core_weather",
                kind="table",
                connection=conn,
                locator={"schema": "core", "name": "weather", "timestamp_column": "observed_at"},
            )
    return out


# ---------------------------------------------------------------------------------------------- clients


class ApiClient:
    """A JSON client that sends a bearer token, as a bot would."""

    def __init__(self, token: str | None = None) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.token = token

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra or {})
        return headers

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params, headers=self._headers(None))

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None) -> Any:
        import json

        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.client.post(path, data=data, content_type="application/json", headers=self._headers(headers))


@pytest.fixture
def api_for(actors: dict[str, Any]) -> Callable[..., ApiClient]:
    """``api_for("responder")`` is an API client holding a token of that actor with the given scopes."""
    from controlplane.api.models import SCOPES
    from controlplane.api.services import api_token_create

    def make(who: str, scopes: list[str] | None = None) -> ApiClient:
        _, raw = api_token_create(user=actors[who], name=f"test-{who}", scopes=scopes or sorted(SCOPES))
        return ApiClient(raw)

    return make


# ---------------------------------------------------------------------------------------------- worker


class Worker:
    """A real Celery worker process (optionally with embedded beat) on the test database."""

    def __init__(self, tmp: Path, *, beat: bool, env: dict[str, str], queues: str = "celery,slack") -> None:
        self.tmp, self.beat, self.env, self.queues = tmp, beat, env, queues
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / f"worker-{uuid.uuid4().hex[:6]}.log"

    def start(self) -> Worker:
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "controlplane",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
            "-n",
            f"test-{uuid.uuid4().hex[:6]}@%h",
            "-Q",
            self.queues,
        ]
        if self.beat:
            cmd += ["-B", "--schedule", str(self.tmp / f"beat-{uuid.uuid4().hex[:6]}")]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited at start:\n{self.log.read_text()[-3000:]}")
            if b"ready." in self.log.read_bytes():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready in 30 s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group, as the OOM killer or a lost node would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def worker_factory(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start real workers on the test database; all are stopped after the test."""
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5).flushdb()  # no messages from earlier tests
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "ACTION_LEASE_SECONDS": "5",  # short, yet robust on a loaded 2-core machine
            "ACTION_DISPATCH_GRACE_SECONDS": "3",
            "REAPER_INTERVAL_SECONDS": "1",
            "ACTION_RETRY_BACKOFF_SECONDS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    started: list[Worker] = []

    def start(*, beat: bool = False, queues: str = "celery,slack", **extra_env: str) -> Worker:
        """A worker of both queues unless ``queues`` says which (as deployed: one for actions, one for Slack)."""
        w = Worker(tmp_path, beat=beat, env={**env, **extra_env}, queues=queues).start()
        started.append(w)
        return w

    yield start
    for w in started:
        # Killed, not stopped: the test is over and nothing it asserts is left to happen, while a warm
        # shutdown takes a second or more (longer when an action still follows its system).
        w.kill()
        # Shown by pytest only when the test fails: what the worker saw (its errors first: the beat's
        # routine tasks fill the tail).
        out = w.output()
        errors = [line for line in out.splitlines() if "ERROR" in line or "Traceback" in line or "Error:" in line]
        if errors:
            print(f"---- {w.log.name} (error lines) ----\n" + "\n".join(errors[-40:]))
        print(f"---- {w.log.name} (last lines) ----\n{out[-4000:]}")


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30, interval: float = 0.1, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --------------------------------------------------------------------------------- the tests' own connector


@pytest.fixture
def cptest(db: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The ``cptest`` connector plugin (tests/plugins/cptest.py) registered as an entry point, and a catalog of
    its own: environments ``lab`` (unprotected) and ``vault`` (protected), connections ``cptest-a`` (lab) and
    ``cptest-b`` (vault), each with a state folder, the secret ``token`` (``CPTEST_TOKEN``) and ``job``
    targets ``<env>.jobs.load`` and ``<env>.jobs.publish``. ``plugin_path`` goes on a worker's ``PYTHONPATH``."""
    from controlplane.audit.context import Channel, change_context
    from controlplane.catalog import services as cs
    from tests.plugins import cptest as plugin

    with (
        plugin.register(tmp_path / "plugin") as plugin_path,
        change_context(channel=Channel.SYSTEM, actor_name="test-setup"),
    ):
        out: dict[str, Any] = {"plugin_path": str(plugin_path)}
        for env_name, protected, conn_name in (("lab", False, "cptest-a"), ("vault", True, "cptest-b")):
            env = cs.environment_create(name=env_name, protected=protected)
            state = tmp_path / conn_name
            state.mkdir()
            conn = cs.connection_create(
                name=conn_name,
                kind=plugin.KIND,
                environment=env,
                config={"state_dir": str(state)},
                secret_refs={"token": "env:CP_TEST_CPTEST_TOKEN"},
            )
            out[env_name], out[conn_name], out[f"state_{conn_name}"] = env, conn, state
            for job in ("load", "publish"):
                cs.target_create(key=f"{env_name}.jobs.{job}", kind="job", connection=conn, locator={"name": job})
        yield out
