"""Benchmark: reliability under failures; prints one figure per rule and exits non-zero if a rule broke.

    uv run python bench/chaos.py [--actions 50] [--rate 20] [--redis-outage 30] [--parallel 100] [--quick]

Starts its own world in a temp dir and stops all of it at the end (also on Ctrl-C / SIGTERM): sandbox
Postgres + Redis for the control plane (``sandbox.services.start_all``), a second Postgres cluster for the
seed-004 weather warehouse (so the warehouse can go down on its own), the sandbox Airflow (metadata on the
warehouse's cluster; ``--no-airflow`` leaves it out), a migrated control-plane database, a catalog made
through the catalog services, gunicorn (gunicorn.conf.py) behind nginx, and a Celery worker with beat (the
reaper). This process never configures Django: it talks to the API over HTTP and reads the databases with
psycopg, as an outside observer would. The rules (bench/README.md):

1. worker kill: batches of actions (refresh-mart on slow marts; with Airflow, a clear and a rerun of a DAG);
   at a random moment after each batch's launch the worker's whole process group gets SIGKILL and a new
   worker starts. Every action ends succeeded (0 lost) and its effect exists once (0 run twice): one ledger
   row per refresh, one new try per cleared task instance, one DAG run per rerun.
2. Redis stopped for ``--redis-outage`` s while launches arrive at ``--rate``/s: each launch is a 202 whose
   action later ran once, or a 503 with a message; nothing else, nothing accepted and lost.
3. Postgres (the control plane's) restarted while launches arrive and while an action runs: the same rule.
4. the target down (Airflow stopped; the warehouse's Postgres stopped) under a running action: it ends
   within its timeout with a message naming the system's address; a launch meanwhile is a 503 naming it.
5. ``--parallel`` simultaneous launches on one target: exactly one 202, the others 409 naming it.

The tests run each rule at a small size through these functions (tests/test_chaos.py).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.launch_dispatch import (  # noqa: E402 (needs the repo root on sys.path when run as a file)
    TERMINAL,
    WORKER_ARGS,
    BenchError,
    Child,
    World,
    _raise_interrupt,
    control_plane_env,
    free_port,
    machine,
    migrating,
    pg_version,
    step,
    wait_http_ok,
)
from sandbox import nginx as sandbox_nginx  # noqa: E402
from sandbox import services as sandbox  # noqa: E402
from sandbox.weather import load_weather  # noqa: E402

CP_DB = "cp_chaos"
WEATHER_DB = "weather"
DAG = "retail_transformation_pipeline"
AIRFLOW_SECRET_ENV = "CHAOS_AIRFLOW_PASSWORD"
# The worker's and beat's recovery settings (README: "Settings"): short, so a lost attempt is found in seconds.
WORKER_ENV = {
    "ACTION_LEASE_SECONDS": "5",
    "ACTION_DISPATCH_GRACE_SECONDS": "3",
    "REAPER_INTERVAL_SECONDS": "1",
    "ACTION_RETRY_BACKOFF_SECONDS": "1",
    "ACTION_EXECUTE_TIMEOUT_SECONDS": "120",
}
TARGET_DOWN_BOUND_S = 60.0  # the connectors' timeouts here: attempts x (connect + call) + backoff, well below
SETTLE_S = 120.0  # how long every accepted action gets to end once the failure is over


# ------------------------------------------------------------------------------------------------ the world


@dataclass
class ChaosWorld:
    """Everything the rules need; ``close`` stops all of it."""

    base: World
    warehouse_root: Path
    airflow_root: Path | None = None
    cp_url: str = ""
    weather_url: str = ""
    redis_port: int = 0
    pg_port: int = 0
    token: str = ""
    marts: list[str] = field(default_factory=list)  # fast matview targets, one per launch
    slow: list[str] = field(default_factory=list)  # slow matview targets (a refresh takes slow_s)
    slow_s: float = 2.0
    airflow: Any = None  # the sandbox AirflowServer, when the world has one
    warehouse_port: int = 0
    port: int = 0  # nginx
    worker: Child | None = None

    def take(self, n: int) -> list[str]:
        if n > len(self.marts):
            raise BenchError(f"out of mart targets: {n} wanted, {len(self.marts)} left (seed more)")
        chunk, self.marts[:] = self.marts[:n], self.marts[n:]
        return chunk

    # -- processes

    def start_worker(self) -> Child:
        """A Celery worker with beat (the reaper) in its own process group."""
        env = {**self.base.env, **WORKER_ENV}
        name = f"worker-{secrets.token_hex(3)}"
        schedule = self.base.tmp / f"beat-{name}"
        cmd = [sys.executable, "-m", "celery", *WORKER_ARGS, "-n", f"{name}@%h", "-B", "--schedule", str(schedule)]
        child = self.base.start(name, [*cmd, "-l", "INFO"], env)
        deadline = time.monotonic() + 60
        while b"ready." not in child.log.read_bytes():
            if not child.alive():
                raise BenchError(f"the worker exited at start:\n{child.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"the worker was not ready within 60 s:\n{child.tail()}")
            time.sleep(0.1)
        self.worker = child
        return child

    def kill_worker(self) -> None:
        """SIGKILL the worker's whole process group (main process, pool children, beat), as a lost node."""
        child = self.worker
        if child is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, signal.SIGKILL)
        child.proc.wait(timeout=10)
        self.base.children.remove(child)
        self.worker = None

    def start_web(self) -> None:
        """gunicorn (gunicorn.conf.py) behind nginx, as shipped."""
        upstream = free_port()
        cmd = [sys.executable, "-m", "gunicorn", "controlplane.wsgi", "--config", str(ROOT / "gunicorn.conf.py")]
        gunicorn = self.base.start("gunicorn", [*cmd, "-b", f"127.0.0.1:{upstream}"], self.base.env)
        self.port = free_port()
        directory = self.base.tmp / "nginx"
        sandbox_nginx.write_config(directory, listen=f"127.0.0.1:{self.port}", upstream=f"127.0.0.1:{upstream}")
        nginx = self.base.start("nginx", sandbox_nginx.command(directory), self.base.env)
        wait_http_ok(gunicorn, upstream, "/healthz")
        wait_http_ok(nginx, self.port, "/healthz")

    # -- services

    def stop_redis(self) -> None:
        sandbox.stop_redis(self.base.sandbox_root)

    def start_redis(self) -> None:
        sandbox.start_redis(self.base.sandbox_root, self.redis_port)

    def stop_postgres(self) -> None:
        sandbox.stop_postgres(self.base.sandbox_root)

    def start_postgres(self) -> None:
        sandbox.start_postgres(self.base.sandbox_root, self.pg_port)

    def close(self) -> None:
        for child in list(reversed(self.base.children)):  # first: nothing may call the services any more
            self.base.stop_child(child)
        if self.airflow_root is not None and self.airflow_root.exists():
            from sandbox.airflow import stop_airflow

            try:
                stop_airflow(self.airflow_root)
            except Exception as exc:
                print(f"warning: could not stop Airflow: {exc}", file=sys.stderr)
        try:
            sandbox.stop_postgres(self.warehouse_root)
        except Exception as exc:
            print(f"warning: could not stop the warehouse's Postgres: {exc}", file=sys.stderr)
        self.base.close()
        # A cluster the postgres user could not keep under the temp dir lives in the system temp dir instead
        # (sandbox.services): outside what --keep keeps, so it goes in any case.
        for root in (self.base.sandbox_root, self.warehouse_root):
            for candidate in sandbox._pg_root_candidates(root)[1:]:
                shutil.rmtree(candidate.parent, ignore_errors=True)


def bring_up(tmp: Path, *, n_marts: int, n_slow: int, slow_s: float, airflow: bool, keep: bool = False) -> ChaosWorld:
    """Start the services, migrate, load the warehouse, seed the catalog, start nginx/gunicorn and a worker."""
    t0 = time.monotonic()
    world = ChaosWorld(base=World(tmp=tmp, keep=keep, sandbox_root=tmp / "sandbox"), warehouse_root=tmp / "warehouse")
    world.slow_s = slow_s
    try:
        step("starting the control plane's Postgres and Redis, and the warehouse's Postgres")
        world.base.sandbox_started = True
        sb_env = sandbox.start_all(world.base.sandbox_root, emulators=False)
        world.base.pg_url, world.base.redis_url = sb_env["SANDBOX_PG_URL"], sb_env["REDIS_URL"]
        world.pg_port = urlsplit(world.base.pg_url).port or 5432
        world.redis_port = urlsplit(world.base.redis_url).port or 6379
        warehouse = sandbox.start_postgres(world.warehouse_root, free_port())
        world.warehouse_port = warehouse.port
        sandbox.drop_database(world.base.pg_url, CP_DB)  # a cluster kept from an earlier run under this root
        sandbox.drop_database(warehouse.url(), WEATHER_DB)
        world.cp_url = sandbox.create_database(world.base.pg_url, CP_DB)
        world.weather_url = sandbox.create_database(warehouse.url(), WEATHER_DB)
        env = control_plane_env(
            tmp,
            world.cp_url,
            world.base.redis_url,
            API_THROTTLE_USER="1000000/minute",  # one bot sends every launch
            PYTHONDONTWRITEBYTECODE="1",
        )
        world.base.env = env
        step("manage.py migrate (in the background), the warehouse" + (" and Airflow" if airflow else ""))
        with migrating(env, tmp / "migrate.log"):
            load_weather(world.weather_url, days=3)
            with psycopg.connect(world.weather_url, autocommit=True, connect_timeout=5) as conn:
                for i in range(n_slow):  # a refresh of one takes slow_s: a kill can land in the middle of it
                    conn.execute(
                        f"CREATE MATERIALIZED VIEW mart.chaos_slow_{i} AS SELECT x AS id, "
                        f"pg_sleep({float(slow_s)}) IS NULL AS slept FROM generate_series(1, 1) AS x"
                    )
                    conn.execute(f"CREATE UNIQUE INDEX chaos_slow_{i}_id ON mart.chaos_slow_{i} (id)")
            if airflow:
                from sandbox.airflow import start_airflow

                world.airflow_root = tmp / "airflow"
                server = start_airflow(world.airflow_root, pg_admin_url=warehouse.url())
                world.airflow = server
                env[AIRFLOW_SECRET_ENV] = server.password
        step(
            f"seeding the catalog: {n_marts} mart targets, {n_slow} slow marts" + (", 2 DAG targets" if airflow else "")
        )
        spec = {
            "warehouse": {"host": "127.0.0.1", "port": warehouse.port, "dbname": WEATHER_DB, "user": "postgres"},
            "n_marts": n_marts,
            "n_slow": n_slow,
            "airflow": {"base_url": world.airflow.url, "username": world.airflow.username} if airflow else None,
            "out": str(tmp / "seed.json"),
        }
        result = subprocess.run(
            [sys.executable, "-c", "from bench.chaos import seed_main; seed_main()"],
            input=json.dumps(spec),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"seeding failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        seeded = json.loads((tmp / "seed.json").read_text())
        world.token, world.marts, world.slow = seeded["token"], seeded["marts"], seeded["slow"]
        step("starting nginx + gunicorn and a worker with beat")
        world.start_web()
        world.start_worker()
        step(f"ready in {time.monotonic() - t0:.1f} s")
        return world
    except BaseException:
        world.close()
        raise


def seed_main() -> None:
    """Run in a subprocess configured for the chaos database: the catalog through the catalog services, a
    responder bot and its token. Reads the spec (JSON) on stdin, writes what was made to ``spec["out"]``."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import transaction

    from controlplane.api.services import api_token_create
    from controlplane.audit.context import Channel, change_context
    from controlplane.catalog import services as cs

    spec = json.loads(sys.stdin.read())
    marts = [f"dev.chaos.mart-{i:04d}" for i in range(1, spec["n_marts"] + 1)]
    slow = [f"dev.chaos.slow-{i}" for i in range(spec["n_slow"])]
    with change_context(channel=Channel.SYSTEM, actor_name="chaos-setup"), transaction.atomic():
        dev = cs.environment_create(name="dev", protected=False, description="chaos benchmark")
        conn = cs.connection_create(
            name="weather-warehouse", kind="postgres", environment=dev, config=spec["warehouse"], secret_refs={}
        )
        for key in marts:
            locator = {"schema": "mart", "name": "daily_weather_aggregates"}
            cs.target_create(key=key, kind="matview", connection=conn, locator=locator)
        for i, key in enumerate(slow):
            cs.target_create(
                key=key, kind="matview", connection=conn, locator={"schema": "mart", "name": f"chaos_slow_{i}"}
            )
        if spec["airflow"]:
            config = {
                **spec["airflow"],
                "poll_interval_s": 0.5,
                "connect_timeout_s": 2,
                "timeout_s": 5,
                "wait_timeout_s": 120,
            }
            airflow = cs.connection_create(
                name="airflow",
                kind="airflow",
                environment=dev,
                config=config,
                secret_refs={"password": f"env:{AIRFLOW_SECRET_ENV}"},
            )
            for key in ("dev.chaos.dag-clear", "dev.chaos.dag-rerun"):
                cs.target_create(key=key, kind="dag", connection=airflow, locator={"dag_id": DAG})
        user = get_user_model().objects.create_user(username="chaos-bot", password=None)
        user.groups.add(Group.objects.get_or_create(name="responder")[0])
        _, token = api_token_create(user=user, name="chaos", scopes=["actions:read", "actions:write"])
    Path(spec["out"]).write_text(json.dumps({"token": token, "marts": marts, "slow": slow}))


# --------------------------------------------------------------------------------------------- observing


def api(world: ChaosWorld, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[str, Any]:
    """One call through nginx on a new connection: ("202", parsed body), or ("error:<exception>", text)."""
    conn = http.client.HTTPConnection("127.0.0.1", world.port, timeout=timeout)
    headers = {"Authorization": f"Bearer {world.token}", "Content-Type": "application/json"}
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return str(resp.status), json.loads(raw or b"null")
        except ValueError:
            return str(resp.status), raw.decode(errors="replace")[:500]
    except (OSError, http.client.HTTPException) as exc:
        return f"error:{type(exc).__name__}", str(exc)
    finally:
        conn.close()


def launch(world: ChaosWorld, verb: str, target: str, params: dict[str, Any] | None = None) -> tuple[str, Any]:
    body = {"verb": verb, "target": target, "params": params or {}, "reason": "chaos"}
    return api(world, "POST", "/api/v1/actions", body)


def cp_rows(world: ChaosWorld, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(world.cp_url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def action_rows(world: ChaosWorld, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = cp_rows(
        world,
        "SELECT id::text, state, attempts, error, finished_at FROM actions_actionrun WHERE id = ANY(%s::uuid[])",
        (list(ids),),
    )
    return {r[0]: {"state": r[1], "attempts": r[2], "error": r[3], "finished_at": r[4]} for r in rows}


def recovered(world: ChaosWorld, ids: Sequence[str]) -> set[str]:
    """Actions the reaper took back: re-queued after a lost lease, or dispatched again after a lost message."""
    rows = cp_rows(
        world,
        "SELECT DISTINCT object_id FROM audit_auditevent WHERE event IN ('action.reaped', 'action.redispatched')"
        " AND object_id = ANY(%s)",
        (list(ids),),
    )
    return {r[0] for r in rows}


def wait_ended(world: ChaosWorld, ids: Sequence[str], timeout: float = SETTLE_S) -> dict[str, dict[str, Any]]:
    """The actions' rows once all ended, or as they are when ``timeout`` ran out."""
    deadline = time.monotonic() + timeout
    while True:
        rows = action_rows(world, ids)
        if all(r["state"] in TERMINAL for r in rows.values()) and len(rows) == len(ids):
            return rows
        if time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def ledger_counts(world: ChaosWorld, ids: Sequence[str]) -> Counter[str]:
    """Refreshes the warehouse recorded per action (controlplane.mart_refresh_log, keyed by action id)."""
    with psycopg.connect(world.weather_url, autocommit=True, connect_timeout=5) as conn:
        try:
            rows = conn.execute(
                "SELECT action_id, count(*) FROM controlplane.mart_refresh_log WHERE action_id = ANY(%s) GROUP BY 1",
                (list(ids),),
            ).fetchall()
        except psycopg.errors.UndefinedTable:  # no refresh ran yet: the connector creates it on first use
            return Counter()
    return Counter({r[0]: int(r[1]) for r in rows})


def airflow_api(world: ChaosWorld, method: str, path: str, body: Any = None) -> Any:
    return world.airflow.api(method, path, body)


@dataclass
class Figure:
    """One rule's outcome: the line printed, the values for the README table, what broke (empty: held)."""

    name: str
    line: str
    broken: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------------------------------------ 1. kill


def worker_kill(world: ChaosWorld, *, actions: int, batch: int, airflow: bool, rng: random.Random) -> Figure:
    """Batches of actions; a SIGKILL of the worker group at a random moment of each; all end, each once."""
    ids: list[str] = []
    kinds: dict[str, str] = {}
    kills: dict[str, float] = {}
    broken: list[str] = []
    twice: list[str] = []
    lost: list[str] = []
    clear_run = ""
    runs_before = 0
    if airflow:
        clear_run = f"chaos__{secrets.token_hex(4)}"
        airflow_api(world, "POST", f"/api/v2/dags/{DAG}/dagRuns", {"dag_run_id": clear_run, "logical_date": None})
        _wait_airflow_run(world, clear_run)
        runs_before = _dag_runs(world)
    n_rounds = 0
    while len(ids) < actions:
        n_rounds += 1
        round_ids: list[str] = []
        plan: list[tuple[str, str, dict[str, Any]]] = []
        if airflow:
            plan += [("clear", "dev.chaos.dag-clear", {"dag_run_id": clear_run, "only_failed": False})]
            plan += [("rerun", "dev.chaos.dag-rerun", {})]
        plan += [("refresh-mart", key, {}) for key in world.slow]
        plan = plan[: min(batch, actions - len(ids))]
        tries_before: dict[str, int] = _tries(world, clear_run) if airflow else {}
        for verb, target, params in plan:
            status, body = launch(world, verb, target, params)
            if status != "202":
                broken.append(f"round {n_rounds}: {verb} on {target} answered {status}: {body}")
                continue
            round_ids.append(body["id"])
            kinds[body["id"]] = verb
        delay = rng.uniform(0.0, world.slow_s * 2 + (3.0 if airflow else 0.0))
        time.sleep(delay)
        kill_at = time.time()
        world.kill_worker()
        kills.update(dict.fromkeys(round_ids, kill_at))
        world.start_worker()
        rows = wait_ended(world, round_ids)
        for action_id in (i for i in round_ids if kinds[i] == "clear"):
            # One clear makes one new try of each task instance; a second clear would make a second.
            deltas = {task: n - tries_before.get(task, 0) for task, n in _tries(world, clear_run).items()}
            if any(d > 1 for d in deltas.values()):
                twice.append(action_id)
            elif any(d < 1 for d in deltas.values()):
                lost.append(action_id)
        states = Counter(r["state"] for r in rows.values())
        step(
            f"  round {n_rounds}: kill {delay:.1f} s after the launches; "
            + ", ".join(f"{n} {s}" for s, n in states.items())
        )
        ids += round_ids
    rows = action_rows(world, ids)
    lost += [i for i in ids if rows.get(i, {}).get("state") != "succeeded" and i not in lost]
    refreshes = [i for i in ids if kinds[i] == "refresh-mart"]
    ledger = ledger_counts(world, refreshes)
    twice += [i for i in refreshes if ledger[i] > 1]
    lost += [i for i in refreshes if ledger[i] == 0 and i not in lost]
    if airflow:
        reruns = [i for i in ids if kinds[i] == "rerun"]
        made = _dag_runs(world) - runs_before
        if made != len(reruns):
            broken.append(f"worker kill: {len(reruns)} reruns made {made} DAG runs")
        lost += [i for i in reruns if _run_state(world, f"controlplane__{i}") != "success" and i not in lost]
    back = recovered(world, ids)
    recovery = [
        rows[i]["finished_at"].timestamp() - kills[i] for i in back if rows.get(i, {}).get("finished_at") is not None
    ]
    for action_id in lost:
        row = rows.get(action_id, {})
        broken.append(f"worker kill: lost {kinds[action_id]} {action_id} {row.get('state')}: {row.get('error')}")
    broken += [f"worker kill: run twice: {kinds[i]} {i}" for i in twice]
    mix = ", ".join(f"{n} {k}" for k, n in sorted(Counter(kinds.values()).items()))
    line = (
        f"worker kill: {len(ids)} actions ({mix}), {n_rounds} kills, {len(lost)} lost, {len(twice)} run twice, "
        f"{len(back)} recovered by the reaper, median recovery {_median(recovery):.1f} s (kill -> succeeded)"
    )
    values = {
        "actions": len(ids),
        "kills": n_rounds,
        "lost": len(lost),
        "twice": len(twice),
        "recovered": len(back),
        "median_recovery_s": _median(recovery),
    }
    return Figure("worker kill", line, broken, values)


def _tries(world: ChaosWorld, run_id: str) -> dict[str, int]:
    data = airflow_api(world, "GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances")
    return {ti["task_id"]: int(ti["try_number"]) for ti in data["task_instances"]}


def _dag_runs(world: ChaosWorld) -> int:
    return int(airflow_api(world, "GET", f"/api/v2/dags/{DAG}/dagRuns?limit=1")["total_entries"])


def _run_state(world: ChaosWorld, run_id: str) -> str:
    return str(airflow_api(world, "GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}")["state"])


def _wait_airflow_run(world: ChaosWorld, run_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (state := _run_state(world, run_id)) not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise BenchError(f"Airflow run {run_id} still {state} after {timeout:.0f} s")
        time.sleep(0.5)
    if state != "success":
        raise BenchError(f"the seed run {run_id} of {DAG} ended {state}")


# ---------------------------------------------------------------------------------------- 2, 3. outages


@dataclass
class Launch:
    target: str
    sent: float
    status: str = ""
    body: Any = None


def offered(
    world: ChaosWorld, targets: Sequence[str], rate: float, timeline: Sequence[tuple[float, Callable[[], None]]]
) -> list[Launch]:
    """Launch refresh-mart on each target at ``rate``/s (each on its own thread and connection, so a slow
    answer does not delay the next send), while ``timeline`` runs its steps at their offsets (seconds)."""
    launches = [Launch(t, 0.0) for t in targets]
    t0 = time.monotonic()
    errors: list[BaseException] = []

    def run_timeline() -> None:
        for offset, action in timeline:
            time.sleep(max(0.0, t0 + offset - time.monotonic()))
            try:
                action()
            except BaseException as exc:  # reported after the launches
                errors.append(exc)

    def send(item: Launch) -> None:
        item.sent = time.monotonic() - t0
        item.status, item.body = launch(world, "refresh-mart", item.target)

    control = threading.Thread(target=run_timeline, daemon=True)
    control.start()
    with ThreadPoolExecutor(max_workers=64) as pool:
        for i, item in enumerate(launches):
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            pool.submit(send, item)
    control.join()
    if errors:
        raise BenchError(f"the failure timeline broke: {errors[0]!r}")
    return launches


def worker_survived(world: ChaosWorld, name: str) -> list[str]:
    """A worker that exited during an outage is a broken rule of its own (it needs a supervisor to come
    back); a new one is started so that what was accepted can still be judged."""
    if world.worker is not None and world.worker.alive():
        return []
    tail = world.worker.tail(15) if world.worker is not None else ""
    if world.worker is not None:
        world.base.stop_child(world.worker)
    world.start_worker()
    return [f"{name}: the worker exited during the outage:\n{tail}"]


def judge(
    world: ChaosWorld, name: str, launches: list[Launch], extra_ids: Sequence[str] = ()
) -> tuple[list[str], dict[str, Any]]:
    """The rule: every 202 ran once (succeeded, one ledger row); every other answer a 503 with a message."""
    broken: list[str] = []
    accepted = [item.body["id"] for item in launches if item.status == "202" and isinstance(item.body, dict)]
    ids = [*accepted, *extra_ids]
    rows = wait_ended(world, ids)
    ledger = ledger_counts(world, ids)
    lost = [i for i in ids if rows.get(i, {}).get("state") != "succeeded" or ledger[i] == 0]
    twice = [i for i in ids if ledger[i] > 1]
    refused = [item for item in launches if item.status == "503"]
    unclear = [item for item in refused if not _clear_503(item.body)]
    other = [item for item in launches if item.status not in ("202", "503")]
    for i in lost[:5]:
        broken.append(
            f"{name}: accepted and not run once: {i} {rows.get(i, {}).get('state')} ledger {ledger[i]}: "
            f"{rows.get(i, {}).get('error')}"
        )
    broken += [f"{name}: run twice: {i}" for i in twice[:5]]
    for item in [*unclear, *other][:5]:
        broken.append(f"{name}: launch at {item.sent:.1f} s answered {item.status}: {str(item.body)[:300]}")
    if len(lost) > 5 or len(unclear) + len(other) > 5:
        broken.append(f"{name}: ... {len(lost)} lost, {len(unclear)} unclear 503s, {len(other)} other answers in all")
    messages = Counter(item.body["error"]["message"] for item in refused if _clear_503(item.body))
    values = {
        "launches": len(launches),
        "accepted": len(accepted),
        "refused": len(refused),
        "other": len(other),
        "lost": len(lost),
        "twice": len(twice),
        "recovered": len(recovered(world, ids)),
        "messages": messages.most_common(3),
        "statuses": dict(Counter(item.status for item in launches)),
    }
    return broken, values


def _clear_503(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and body.get("error", {}).get("code") == "unavailable"
        and bool(body["error"].get("message"))
    )


def redis_down(world: ChaosWorld, *, rate: float, outage: float, margin: float) -> Figure:
    """Redis stopped for ``outage`` s (and started again, empty) while launches arrive at ``rate``/s."""
    n = int(rate * (outage + 2 * margin))
    timeline = [(margin, world.stop_redis), (margin + outage, world.start_redis)]
    launches = offered(world, world.take(n), rate, timeline)
    died = worker_survived(world, "redis down")
    broken, v = judge(world, "redis down", launches)
    broken += died
    line = (
        f"redis down {outage:.0f} s: {v['launches']} launches at {rate:.0f}/s, {v['accepted']} x 202 "
        f"({v['accepted'] - v['lost']} ran once, {v['recovered']} of them re-dispatched by the reaper), "
        f"{v['refused']} x 503, {v['other']} other, {v['lost']} lost, {v['twice']} run twice; "
        f"worker {'exited' if died else 'survived'}"
    )
    return Figure("redis down", _with_messages(line, v), broken, {**v, "outage_s": outage, "rate": rate})


def postgres_restart(world: ChaosWorld, *, rate: float, down: float, margin: float) -> Figure:
    """The control plane's Postgres stopped (fast shutdown: sessions cut) for ``down`` s and started again,
    while launches arrive at ``rate``/s and while a slow refresh runs on the worker (launched a second
    before the stop, which waits until it runs)."""
    slow: dict[str, Any] = {}

    def launch_slow() -> None:
        slow["answer"] = launch(world, "refresh-mart", world.slow[0])

    def stop_under_it() -> None:
        status, body = slow["answer"]
        if status != "202":
            raise BenchError(f"the slow refresh's launch answered {status}: {body}")
        slow["id"] = body["id"]
        deadline = time.monotonic() + 10
        while (state := action_rows(world, [slow["id"]])[slow["id"]]["state"]) != "running":
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        slow["state_at_stop"] = state
        world.stop_postgres()

    n = int(rate * (down + 2 * margin))
    timeline = [(max(0.0, margin - 1.0), launch_slow), (margin, stop_under_it), (margin + down, world.start_postgres)]
    launches = offered(world, world.take(n), rate, timeline)
    died = worker_survived(world, "postgres restart")
    running = slow["id"]
    broken, v = judge(world, "postgres restart", launches, extra_ids=[running])
    broken += died
    if slow["state_at_stop"] != "running":
        broken.append(f"postgres restart: the slow refresh was {slow['state_at_stop']} at the stop, not running")
    row = action_rows(world, [running])[running]
    line = (
        f"postgres restart ({down:.0f} s down): {v['launches']} launches at {rate:.0f}/s, {v['accepted']} x 202 "
        f"(all ran once: {v['lost'] == 0}), {v['refused']} x 503, {v['other']} other, {v['lost']} lost, "
        f"{v['twice']} run twice; the refresh running at the stop: {row['state']} after "
        f"{row['attempts']} attempt(s), refreshed {ledger_counts(world, [running])[running]} time(s); "
        f"worker {'exited' if died else 'survived'}"
    )
    values = {**v, "down_s": down, "rate": rate, "running_attempts": row["attempts"]}
    return Figure("postgres restart", _with_messages(line, v), broken, values)


def _with_messages(line: str, v: dict[str, Any]) -> str:
    return line + "".join(f"\n    503 x {n}: {message}" for message, n in v["messages"])


# ------------------------------------------------------------------------------------------- 4. targets


def target_down(
    world: ChaosWorld, *, what: str, verb: str, target: str, stop: Callable[[], object], address: str
) -> Figure:
    """Start an action, stop the system under it once it runs; it must end within the bound with a message
    naming the system's ``address``. A launch while the system is down must be a 503 naming it too."""
    broken: list[str] = []
    status, body = launch(world, verb, target)
    if status != "202":
        raise BenchError(f"{what}: the launch answered {status}: {body}")
    action_id = body["id"]
    deadline = time.monotonic() + 60
    while action_rows(world, [action_id])[action_id]["state"] != "running":
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: action {action_id} did not start within 60 s")
        time.sleep(0.1)
    time.sleep(0.5)  # into the connector's call
    stopped = time.monotonic()
    stop()
    row = wait_ended(world, [action_id], timeout=TARGET_DOWN_BOUND_S)[action_id]
    took = time.monotonic() - stopped
    error = str(row["error"] or "")
    if row["state"] not in ("failed", "needs_attention"):
        broken.append(
            f"{what}: action {action_id} is {row['state']} {took:.0f} s after the stop (bound "
            f"{TARGET_DOWN_BOUND_S:.0f} s)"
        )
    elif address not in error:
        broken.append(f"{what}: the message does not name {address}: {error}")
    again_status, again = launch(world, verb, world.take(1)[0] if verb == "refresh-mart" else target)
    again_message = again.get("error", {}).get("message", "") if isinstance(again, dict) else str(again)
    held = again_status == "409" and row["state"] == "needs_attention"  # the action still holds the target
    if (again_status != "503" or address not in again_message) and not held:
        broken.append(f"{what}: a launch while it is down answered {again_status}: {str(again)[:300]}")
    line = (
        f"target down: {what}: {row['state']} {took:.1f} s after the stop with '{error[:300]}'; "
        f"a launch meanwhile: {again_status} '{again_message[:200]}'"
    )
    values = {"state": row["state"], "seconds": took, "error": error, "launch": again_status}
    return Figure(f"target down ({what})", line, broken, values)


def warehouse_down(world: ChaosWorld) -> Figure:
    port = world.warehouse_port
    return target_down(
        world,
        what="warehouse Postgres",
        verb="refresh-mart",
        target=world.slow[-1],
        stop=lambda: sandbox.stop_postgres(world.warehouse_root),
        address=f"127.0.0.1:{port}",
    )


def airflow_down(world: ChaosWorld) -> Figure:
    from sandbox.airflow import stop_airflow

    assert world.airflow_root is not None
    root = world.airflow_root
    return target_down(
        world,
        what="Airflow",
        verb="rerun",
        target="dev.chaos.dag-rerun",
        stop=lambda: stop_airflow(root),
        address=world.airflow.url.removeprefix("http://"),
    )


# ------------------------------------------------------------------------------------------- 5. parallel


def parallel_launches(world: ChaosWorld, *, n: int) -> Figure:
    """``n`` launches on one target released together: one 202, ``n - 1`` 409s naming that action."""
    target = world.take(1)[0]
    barrier = threading.Barrier(n)
    body = json.dumps({"verb": "refresh-mart", "target": target, "params": {}, "reason": "chaos"})
    headers = {"Authorization": f"Bearer {world.token}", "Content-Type": "application/json"}

    def post(_: int) -> tuple[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", world.port, timeout=60)
        try:
            conn.connect()  # connected before the barrier: the requests leave together
            barrier.wait(timeout=30)
            conn.request("POST", "/api/v1/actions", body=body, headers=headers)
            resp = conn.getresponse()
            return str(resp.status), json.loads(resp.read() or b"null")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return f"error:{type(exc).__name__}", str(exc)
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        answers = list(pool.map(post, range(n)))
    statuses = Counter(status for status, _ in answers)
    winners = [b["id"] for s, b in answers if s == "202"]
    naming = [
        b for s, b in answers if s == "409" and winners and b["error"]["details"].get("active_action") == winners[0]
    ]
    broken = []
    if len(winners) != 1 or len(naming) != n - 1:
        broken.append(f"parallel launches: {dict(statuses)}; {len(naming)} of the 409s name the active action")
    active = cp_rows(
        world,
        "SELECT count(*) FROM actions_actionrun a JOIN catalog_target t ON t.id = a.target_id WHERE t.key = %s",
        (target,),
    )[0][0]
    if active != 1:
        broken.append(f"parallel launches: {active} actions exist on {target}")
    if winners:
        wait_ended(world, winners)
    line = f"{n} parallel launches: {len(winners)} active, {len(naming)} x 409 naming it" + (
        "" if set(statuses) <= {"202", "409"} else f", other answers {dict(statuses)}"
    )
    return Figure("parallel launches", line, broken, {"n": n, "accepted": len(winners), "conflicts": len(naming)})


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/chaos.py", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--actions", type=int, default=None, help="worker kill: actions (50; quick 10)")
    parser.add_argument("--batch", type=int, default=5, help="worker kill: actions per kill (5)")
    parser.add_argument("--rate", type=float, default=20.0, help="outages: launches/s offered (20)")
    parser.add_argument("--redis-outage", type=float, default=None, help="seconds Redis stays down (30; quick 5)")
    parser.add_argument("--pg-down", type=float, default=None, help="seconds Postgres stays down (10; quick 3)")
    parser.add_argument("--margin", type=float, default=None, help="launch seconds before and after (5; quick 2)")
    parser.add_argument("--parallel", type=int, default=100, help="simultaneous launches on one target (100)")
    parser.add_argument("--no-airflow", action="store_true", help="leave Airflow out (no clear/rerun, no Airflow down)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for the kill moments")
    parser.add_argument("--quick", action="store_true", help="small counts and short outages (a smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    opts = parser.parse_args(argv)
    opts.actions = opts.actions or (10 if opts.quick else 50)
    opts.redis_outage = opts.redis_outage or (5.0 if opts.quick else 30.0)
    opts.pg_down = opts.pg_down or (3.0 if opts.quick else 10.0)
    opts.margin = opts.margin if opts.margin is not None else (2.0 if opts.quick else 5.0)
    opts.seed = opts.seed if opts.seed is not None else secrets.randbelow(1_000_000)
    if opts.actions < 1 or opts.batch < 1 or opts.parallel < 2 or opts.rate <= 0:
        parser.error("--actions, --batch >= 1, --parallel >= 2, --rate > 0")
    return opts


def run_all(world: ChaosWorld, opts: argparse.Namespace) -> list[Figure]:
    """The rules in an order that leaves each one's world intact: the target-down rules stop systems last."""
    airflow = world.airflow_root is not None
    rng = random.Random(opts.seed)
    figures = [parallel_launches(world, n=opts.parallel)]
    step(f"worker kill: {opts.actions} actions, {opts.batch} per kill (seed {opts.seed})")
    figures.append(worker_kill(world, actions=opts.actions, batch=opts.batch, airflow=airflow, rng=rng))
    step(f"redis down for {opts.redis_outage:.0f} s at {opts.rate:.0f} launches/s")
    figures.append(redis_down(world, rate=opts.rate, outage=opts.redis_outage, margin=opts.margin))
    step(f"postgres restart ({opts.pg_down:.0f} s down) at {opts.rate:.0f} launches/s and under a running action")
    figures.append(postgres_restart(world, rate=opts.rate, down=opts.pg_down, margin=opts.margin))
    if airflow:
        step("target down: Airflow stopped under a running rerun")
        figures.append(airflow_down(world))
    step("target down: the warehouse's Postgres stopped under a running refresh")
    figures.append(warehouse_down(world))
    return figures


def targets_needed(opts: argparse.Namespace) -> int:
    per_outage = int(opts.rate * (opts.redis_outage + 2 * opts.margin)) + int(
        opts.rate * (opts.pg_down + 2 * opts.margin)
    )
    return per_outage + 10


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-chaos-"))
    tmp.chmod(0o755)  # the postgres user runs the clusters below it when we are root
    step(f"temp dir {tmp}")
    world: ChaosWorld | None = None
    broke = False
    t0 = time.monotonic()
    try:
        n_slow = max(1, opts.batch - (0 if opts.no_airflow else 2))
        world = bring_up(
            tmp, n_marts=targets_needed(opts), n_slow=n_slow, slow_s=2.0, airflow=not opts.no_airflow, keep=opts.keep
        )
        figures = run_all(world, opts)
        print("\n" + "=" * 100)
        print("Reliability under failures (bench/chaos.py)")
        print("=" * 100)
        print("\n".join(machine()))
        print(
            f"services    PostgreSQL {pg_version(world.base.pg_url)} x2 (control plane, warehouse), Redis, "
            + ("Airflow, " if world.airflow_root else "")
            + "nginx + gunicorn 2x4, Celery prefork 2 + beat"
        )
        print("worker      " + " ".join(f"{k}={v}" for k, v in WORKER_ENV.items()))
        print(f"run         seed {opts.seed}, {time.monotonic() - t0:.0f} s in all\n")
        for figure in figures:
            print(("HELD  " if not figure.broken else "BROKE ") + figure.line)
        problems = [p for figure in figures for p in figure.broken]
        if problems:
            broke = True
            print("\nBROKEN RULES:\n  " + "\n  ".join(problems))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        broke = True
    except BenchError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        broke = True
    except Exception:
        traceback.print_exc()
        broke = True
    finally:
        step(
            "stopping the worker, nginx, gunicorn, Airflow, both Postgres clusters and Redis"
            + ("" if opts.keep else "; removing the temp dir")
        )
        if world is not None:
            world.close()
        elif not opts.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        if opts.keep:
            step(f"kept {tmp}")
    return 1 if broke else 0


@contextlib.contextmanager
def chaos_world(tmp: Path, *, n_marts: int, n_slow: int = 1, slow_s: float = 2.0) -> Iterator[ChaosWorld]:
    """A world without Airflow for the tests; stopped on exit."""
    world = bring_up(tmp, n_marts=n_marts, n_slow=n_slow, slow_s=slow_s, airflow=False, keep=True)
    try:
        yield world
    finally:
        world.close()


if __name__ == "__main__":
    sys.exit(main())
