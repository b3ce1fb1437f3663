"""Benchmark: what the control plane adds to a Snowflake resume-task and a BigQuery backfill plan, against the
same statements issued directly with the vendors' clients, in one run.

    uv run python bench/snowflake_bigquery.py [--samples N] [--warmup N] [--days D] [--only snowflake|bigquery]
                                              [--quick] [--keep]

Starts (and at the end, also on Ctrl-C / SIGTERM, stops) the sandbox (Postgres, Redis and the Snowflake and
BigQuery emulators), a migrated control-plane DB with a snowflake and a bigquery connection and their targets,
gunicorn and a Celery worker. Then, alternating which path goes first in each pair:

- resume-task: a suspended three-task graph resumed by ``POST /api/v1/actions`` (``GET ...?wait=30`` until it
  ends: plan, dispatch, execute, verify) against snowflake-connector-python doing the same (log in, SHOW TASKS,
  TASK_HISTORY, ALTER TASK ... RESUME children first, SHOW TASKS again); the graph is suspended before each;
- backfill plan: ``POST /api/v1/actions/preview`` of a BigQuery backfill against google-cloud-bigquery issuing the
  plan's queries (the partitions' rows, a dry run of each day's delete and load).

Prints medians, p99, the median added per pair and the ratio of the medians. DESIGN.md section 9 has no budget
for these: the figures are information. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.launch_dispatch import (  # noqa: E402 (needs the repo root on sys.path when run as a file)
    TERMINAL,
    BenchError,
    World,
    _raise_interrupt,
    become_django,
    control_plane_env,
    fmt,
    free_port,
    machine,
    migrating,
    pct,
    pg_version,
    print_table,
    services_state,
    start_worker,
    step,
    wait_http_ok,
)
from sandbox import services as sandbox  # noqa: E402

CP_DB = "cp_sfbq_bench"
WAIT_S = 60.0
POLL_S = 0.05  # only when ?wait answered before the end (it waits up to 30 s)

# Snowflake: a graph ROOT -> TRANSFORM -> PUBLISH in BENCH_DB.TASKS, all suspended before each resume.
SF_DB, SF_SCHEMA, SF_WAREHOUSE = "BENCH_DB", "TASKS", "BENCH_WH"
SF_TASKS = (("ROOT", None), ("TRANSFORM", "ROOT"), ("PUBLISH", "TRANSFORM"))
SF_TARGET = "dev.snowflake.bench_root"
SF_SECRET_ENV = "BENCH_SNOWFLAKE_PASSWORD"
SF_CP_USER, SF_DIRECT_USER, SF_SETUP_USER = "CP_BENCH", "BENCH_DIRECT", "BENCH_SETUP"
TASK_HISTORY_HOURS = 7 * 24  # what the connector reads (TASK_HISTORY's 7 days, under the 14-day retry window)

# BigQuery: the seed-002 fact table (partitioned by delivery_date), its load query, its datasets prefixed.
BQ_PREFIX = "bench_"
BQ_TARGET = "dev.bigquery.fact_deliveries"
TIB = 2**40
USD_PER_TIB = 6.25


def med(values: Sequence[float]) -> float:
    """Median in ms of values in seconds (NaNs left out)."""
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) * 1000 if values else math.nan


def p99(values: Sequence[float]) -> float:
    """Nearest-rank p99 in ms of values in seconds (NaNs left out)."""
    return pct([v for v in values if not math.isnan(v)], 99) * 1000


def stamp(value: Any) -> float:
    if value is None:
        return math.nan
    return (dt.datetime.fromisoformat(value) if isinstance(value, str) else value).timestamp()


@dataclass
class Sample:
    """One resume or one plan. ``at``: epoch seconds of its milestones (t0 and seen on every sample)."""

    path: str
    at: dict[str, float]
    statements: int = 0
    sessions: int = 0
    bytes: int = 0

    def span(self, a: str, b: str) -> float:
        return self.at.get(b, math.nan) - self.at.get(a, math.nan)

    @property
    def total(self) -> float:
        return self.span("t0", "seen")


@dataclass
class Part:
    """One benchmark's samples: (direct, control plane) pairs, and figures measured beside them."""

    name: str
    pairs: list[tuple[Sample, Sample]] = field(default_factory=list)
    info: dict[str, list[float]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ the API


class Api:
    """One keep-alive connection to gunicorn with the bot's token."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.headers = port, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def fresh(self) -> None:
        """A new connection, outside the timing (gunicorn drops idle keep-alive connections)."""
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.conn.connect()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------------------------- Snowflake


@dataclass
class Snowflake:
    url: str
    password: str

    def connect(self, user: str, tag: str) -> Any:
        """A snowflake-connector-python session on the emulator, as a script would open one."""
        import snowflake.connector

        parts = urlsplit(self.url)
        return snowflake.connector.connect(
            host=parts.hostname,
            port=parts.port,
            protocol="http",
            account="sandbox",
            user=user,
            password=self.password,
            login_timeout=10,
            network_timeout=30,
            session_parameters={"QUERY_TAG": tag, "TIMEZONE": "UTC"},
        )


def sf_rows(conn: Any, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    from snowflake.connector import DictCursor

    with conn.cursor(DictCursor) as cur:
        cur.execute(sql, params)
        return [{str(k).lower(): v for k, v in r.items()} for r in cur.fetchall()] if cur.description else []


def sf_fqn(name: str) -> str:
    return f"{SF_DB}.{SF_SCHEMA}.{name}"


SHOW_TASKS = f'SHOW TASKS IN SCHEMA "{SF_DB}"."{SF_SCHEMA}"'
LAST_RUNS = (
    "SELECT NAME, STATE, ERROR_MESSAGE, SCHEDULED_TIME, RUN_ID FROM TABLE("
    f'"{SF_DB}".INFORMATION_SCHEMA.TASK_HISTORY(SCHEDULED_TIME_RANGE_START => '
    "DATEADD('second', -%s, CURRENT_TIMESTAMP()), RESULT_LIMIT => 10000)) "
    "WHERE DATABASE_NAME = %s AND SCHEMA_NAME = %s ORDER BY SCHEDULED_TIME DESC"
)


# One call of each kind, timed alone on the emulator (a login is timed around connect).
FLOOR: dict[str, tuple[str, tuple[Any, ...]]] = {
    "a login": ("", ()),
    "SELECT 1": ("SELECT 1", ()),
    "SHOW TASKS": (SHOW_TASKS, ()),
    "ALTER TASK ... RESUME (a child)": ("ALTER TASK IDENTIFIER(%s) RESUME", (sf_fqn("PUBLISH"),)),
    "TASK_HISTORY (the plan's read of the last runs)": (LAST_RUNS, (TASK_HISTORY_HOURS * 3600, SF_DB, SF_SCHEMA)),
    "QUERY_HISTORY by tag (execute's re-delivery guard)": (
        "SELECT QUERY_ID, QUERY_TEXT, EXECUTION_STATUS, ERROR_MESSAGE, START_TIME FROM TABLE("
        f'"{SF_DB}".INFORMATION_SCHEMA.QUERY_HISTORY(RESULT_LIMIT => 10000)) WHERE QUERY_TAG = %s ORDER BY START_TIME',
        ("bench-no-such-tag",),
    ),
}


def sf_setup(sf: Snowflake) -> Any:
    """The graph, a warehouse, one successful graph run; returns the set-up session (kept for the run)."""
    conn = sf.connect(SF_SETUP_USER, "bench-setup")
    statements = [
        f"CREATE DATABASE IF NOT EXISTS {SF_DB}",
        f"CREATE SCHEMA IF NOT EXISTS {SF_DB}.{SF_SCHEMA}",
        f"CREATE WAREHOUSE IF NOT EXISTS {SF_WAREHOUSE} WITH WAREHOUSE_SIZE = 'XSMALL'",
    ]
    for name, after in SF_TASKS:
        what = "SCHEDULE = '60 MINUTE'" if after is None else f"AFTER {sf_fqn(after)}"
        statements.append(f"CREATE OR REPLACE TASK {sf_fqn(name)} WAREHOUSE = {SF_WAREHOUSE} {what} AS SELECT 1")
    for sql in statements:
        sf_rows(conn, sql)
    sf_resume_order(sf_rows(conn, SHOW_TASKS))  # the graph is whole
    # one successful graph run (children resumed so that they run), then everything suspended again
    for name, _ in reversed(SF_TASKS[1:]):
        sf_rows(conn, f"ALTER TASK {sf_fqn(name)} RESUME")
    sf_rows(conn, f"EXECUTE TASK {sf_fqn('ROOT')}")
    sf_suspend(conn)
    return conn


def sf_suspend(conn: Any) -> None:
    """Suspend the graph, root first (a started root's children cannot change)."""
    for name, _ in SF_TASKS:
        sf_rows(conn, f"ALTER TASK {sf_fqn(name)} SUSPEND")


def sf_resume_order(tasks: list[dict[str, Any]]) -> list[str]:
    """The graph's task names, children before their predecessors (RESUME order: the root last)."""
    preds = {
        str(t["name"]).upper(): [str(p).replace('"', "").split(".")[-1].upper() for p in json.loads(t["predecessors"])]
        for t in tasks
    }
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            depth[name] = 1 + max((level(p) for p in preds.get(name, [])), default=-1)
        return depth[name]

    if set(preds) != {name for name, _ in SF_TASKS}:
        raise BenchError(f"SHOW TASKS lists {sorted(preds)}, not the bench graph")
    return sorted(preds, key=level, reverse=True)


def sf_direct(sf: Snowflake, tag: str) -> Sample:
    """The resume by hand: log in, read the graph's state and its last runs, resume what is suspended
    (children before the root), read the state back."""
    at = {"t0": time.time()}
    conn = sf.connect(SF_DIRECT_USER, tag)
    try:
        at["login"] = time.time()
        tasks = sf_rows(conn, SHOW_TASKS)
        runs = sf_rows(conn, LAST_RUNS, (TASK_HISTORY_HOURS * 3600, SF_DB, SF_SCHEMA))
        at["read"] = time.time()
        last = [r for r in runs if runs and r["run_id"] == runs[0]["run_id"]]
        if any(str(r["state"]).upper() in ("FAILED", "CANCELLED") for r in last):
            raise BenchError(f"the bench graph's last run failed: {last}")  # then it would be RETRY LAST
        state = {str(t["name"]).upper(): str(t["state"]).lower() for t in tasks}
        for name in sf_resume_order(tasks):
            if state[name] != "started":
                sf_rows(conn, "ALTER TASK IDENTIFIER(%s) RESUME", (sf_fqn(name),))
        at["resumed"] = time.time()
        after = sf_rows(conn, SHOW_TASKS)
        at["verified"] = time.time()
    finally:
        conn.close()
    at["seen"] = time.time()
    if any(str(t["state"]).lower() != "started" for t in after):
        raise BenchError(f"the direct resume left tasks suspended: {[(t['name'], t['state']) for t in after]}")
    return Sample("direct", at)


def sf_cp(api: Api) -> Sample:
    """The control plane's resume-task: request (the plan), then wait for its end (execute, verify)."""
    api.fresh()
    body = {"verb": "resume-task", "target": SF_TARGET, "params": {}, "reason": "bench"}
    at = {"t0": time.time()}
    status, data = api.call("POST", "/api/v1/actions", body)
    at["answer"] = time.time()
    if status != 202:
        raise BenchError(f"POST /api/v1/actions answered {status}: {data}")
    action = wait_action(api, str(data["id"]))
    at["seen"] = time.time()
    if action["state"] != "succeeded":
        raise BenchError(f"resume-task action {data['id']} ended {action['state']}: {action.get('error')}")
    at.update({k: stamp(action[k]) for k in ("requested_at", "started_at", "finished_at")})
    for line in action["log"]:
        msg, when = str(line["message"]), stamp(line["at"])
        if msg.startswith("attempt "):
            at.setdefault("attempt", when)
        elif msg.startswith("resumed "):
            at["resumed"] = when  # the last statement of execute
        elif msg == "verifying":
            at["verifying"] = when
    return Sample("cp", at)


def wait_action(api: Api, action_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        code, action = api.call("GET", f"/api/v1/actions/{action_id}?wait=30")
        if code != 200:
            raise BenchError(f"GET /api/v1/actions/{action_id} answered {code}: {action}")
        if action["state"] in TERMINAL:
            return dict(action)
        if time.monotonic() > deadline:
            raise BenchError(f"action {action_id} still {action['state']} after {WAIT_S:.0f} s")
        time.sleep(POLL_S)


class StatementCounter:
    """How many statements (and sessions) each user sent, from the emulator's query history: the difference
    across a sample is that sample's."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: dict[str, tuple[int, int]] = {}

    def delta(self, user: str) -> tuple[int, int]:
        rows = sf_rows(
            self.conn,
            f'SELECT SESSION_ID FROM TABLE("{SF_DB}".INFORMATION_SCHEMA.QUERY_HISTORY(RESULT_LIMIT => 10000)) '
            "WHERE UPPER(USER_NAME) = %s",
            (user.upper(),),
        )
        now = (len(rows), len({r["session_id"] for r in rows}))
        before = self.seen.get(user, (0, 0))
        self.seen[user] = now
        return now[0] - before[0], now[1] - before[1]


def run_snowflake(sf: Snowflake, api: Api, samples: int, warmup: int) -> Part:
    part = Part("snowflake")
    setup = sf_setup(sf)
    try:
        counter = StatementCounter(setup)
        for user in (SF_CP_USER, SF_DIRECT_USER):
            counter.delta(user)
        for i in range(warmup + samples):
            label = f"resume-task pair {i + 1 - warmup}/{samples}" if i >= warmup else f"warm-up {i + 1}/{warmup}"
            pair: dict[str, Sample] = {}
            for path in ("direct", "cp") if i % 2 == 0 else ("cp", "direct"):
                sf_suspend(setup)
                pair[path] = sf_direct(sf, f"bench-direct-{i}") if path == "direct" else sf_cp(api)
                user = SF_DIRECT_USER if path == "direct" else SF_CP_USER
                pair[path].statements, pair[path].sessions = counter.delta(user)
            d, c = pair["direct"], pair["cp"]
            step(f"{label}: direct {d.total * 1000:.0f} ms, control plane {c.total * 1000:.0f} ms")
            if i >= warmup:
                part.pairs.append((d, c))
        # the emulator's own cost of each kind of call the paths make, for reading the figures
        sf_suspend(setup)  # a started root's children cannot be resumed
        floor: dict[str, list[float]] = {name: [] for name in FLOOR}
        for _ in range(samples):
            t = time.perf_counter()
            conn = sf.connect(SF_DIRECT_USER, "bench-floor")
            floor["a login"].append(time.perf_counter() - t)
            for name, (sql, params) in FLOOR.items():
                if sql:
                    t = time.perf_counter()
                    sf_rows(conn, sql, params)
                    floor[name].append(time.perf_counter() - t)
            conn.close()
        sf_suspend(setup)
        part.info = {
            **{f"the emulator alone, {name}": values for name, values in floor.items()},
            "the plan alone, in this process (actions.services.action_plan)": plan_in_process(
                "resume-task", SF_TARGET, {}, samples
            ),
            "the plan through the API (POST /api/v1/actions/preview, nothing written)": [
                preview(api, "resume-task", SF_TARGET, {}) for _ in range(samples)
            ],
        }
    finally:
        setup.close()
    return part


def plan_in_process(verb: str, target: str, params: dict[str, Any], n: int) -> list[float]:
    """The control plane's plan without the API around it: target, verb, params, the connector's plan."""
    from controlplane.actions.services import action_plan

    took = []
    for _ in range(n):
        t = time.perf_counter()
        action_plan(verb=verb, target_key=target, params=params)
        took.append(time.perf_counter() - t)
    return took


def preview(api: Api, verb: str, target: str, params: dict[str, Any]) -> float:
    """Seconds of one ``POST /api/v1/actions/preview`` (a fresh connection, opened outside the timing)."""
    api.fresh()
    t = time.perf_counter()
    status, data = api.call("POST", "/api/v1/actions/preview", {"verb": verb, "target": target, "params": params})
    took = time.perf_counter() - t
    if status != 200:
        raise BenchError(f"POST /api/v1/actions/preview answered {status}: {data}")
    return took


# ---------------------------------------------------------------------------------------------- BigQuery


@dataclass
class BigQuery:
    url: str
    project: str
    dataset: str
    table: str
    partition_column: str
    load_query: str
    start: dt.date
    end: dt.date

    def client(self) -> Any:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            location="US",
            client_options=ClientOptions(api_endpoint=self.url),
        )


def bq_direct(bq: BigQuery, workers: int) -> Sample:
    """The plan by hand: each partition's rows (INFORMATION_SCHEMA.PARTITIONS), then a dry run of each day's
    delete and of its load query, ``workers`` days at a time (1: one request after the other); their bytes
    summed and priced."""
    from google.cloud import bigquery

    at = {"t0": time.time()}
    client = bq.client()
    try:
        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("table", "STRING", bq.table),
                bigquery.ScalarQueryParameter("start", "STRING", f"{bq.start:%Y%m%d}"),
                bigquery.ScalarQueryParameter("end", "STRING", f"{bq.end:%Y%m%d}"),
            ],
            maximum_bytes_billed=TIB,
        )
        rows = client.query(
            f"SELECT partition_id, total_rows FROM `{bq.project}.{bq.dataset}.INFORMATION_SCHEMA.PARTITIONS` "
            "WHERE table_name = @table AND partition_id BETWEEN @start AND @end",
            job_config=config,
            timeout=30,
        ).result(timeout=60)
        rows_now = {str(r[0]): int(r[1] or 0) for r in rows}
        at["read"] = time.time()
        table = f"`{bq.project}.{bq.dataset}.{bq.table}`"
        delete = f"DELETE FROM {table} WHERE `{bq.partition_column}` = @partition_date"
        load = bq.load_query  # BigQuery bills what the INSERT reads: its SELECT

        def day_bytes(day: dt.date) -> int:
            dry = bigquery.QueryJobConfig(
                query_parameters=[bigquery.ScalarQueryParameter("partition_date", "DATE", day)],
                dry_run=True,
                use_query_cache=False,
                maximum_bytes_billed=TIB,
            )
            jobs = [client.query(sql, job_config=dry, timeout=30) for sql in (delete, load)]
            return sum(int(job.total_bytes_processed or 0) for job in jobs)

        days = [bq.start + dt.timedelta(days=n) for n in range((bq.end - bq.start).days + 1)]
        if workers == 1:
            total = sum(day_bytes(day) for day in days)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                total = sum(pool.map(day_bytes, days))
        cost = round(total / TIB * USD_PER_TIB, 4)
    finally:
        client.close()
    at["seen"] = time.time()
    if len(rows_now) > len(days) or cost < 0:
        raise BenchError(f"the partitions query answered {rows_now}")
    return Sample("direct", at, bytes=total)


def bq_cp(api: Api, bq: BigQuery) -> Sample:
    """The control plane's preview of the backfill: the connector's plan through the API (writes nothing)."""
    api.fresh()
    params = {"start_date": bq.start.isoformat(), "end_date": bq.end.isoformat()}
    at = {"t0": time.time()}
    status, data = api.call(
        "POST", "/api/v1/actions/preview", {"verb": "backfill", "target": BQ_TARGET, "params": params}
    )
    at["seen"] = time.time()
    if status != 200:
        raise BenchError(f"POST /api/v1/actions/preview answered {status}: {data}")
    return Sample("cp", at, bytes=int(data["plan"].get("estimated_bytes") or 0))


def run_bigquery(bq: BigQuery, api: Api, samples: int, warmup: int) -> Part:
    from connectors.bigquery.verbs import DRY_RUN_WORKERS  # the direct path sends as many at once as the plan

    part = Part("bigquery")
    for i in range(warmup + samples):
        label = f"backfill plan pair {i + 1 - warmup}/{samples}" if i >= warmup else f"warm-up {i + 1}/{warmup}"
        if i % 2 == 0:
            d, c = bq_direct(bq, DRY_RUN_WORKERS), bq_cp(api, bq)
        else:
            c, d = bq_cp(api, bq), bq_direct(bq, DRY_RUN_WORKERS)
        if d.bytes != c.bytes or d.bytes == 0:
            raise BenchError(f"the plan's estimate ({c.bytes} bytes) is not the direct dry runs' ({d.bytes} bytes)")
        step(f"{label}: direct {d.total * 1000:.0f} ms, control plane {c.total * 1000:.0f} ms")
        if i >= warmup:
            part.pairs.append((d, c))
    # one dry run alone on the emulator, for reading the figures
    from google.cloud import bigquery

    client = bq.client()
    dry = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
    runs = []
    for _ in range(samples):
        t = time.perf_counter()
        client.query(f"SELECT 1 FROM `{bq.project}.{bq.dataset}.{bq.table}`", job_config=dry, timeout=30)
        runs.append(time.perf_counter() - t)
    client.close()
    params = {"start_date": bq.start.isoformat(), "end_date": bq.end.isoformat()}
    part.info = {
        f"direct, the dry runs one after the other instead of {DRY_RUN_WORKERS} days at a time": [
            bq_direct(bq, 1).total for _ in range(samples)
        ],
        "the emulator alone, one dry run": runs,
        "the plan alone, in this process (actions.services.action_plan)": plan_in_process(
            "backfill", BQ_TARGET, params, samples
        ),
    }
    return part


# ---------------------------------------------------------------------------------------------- the world


def bring_up(world: World, only: str | None, days: int) -> tuple[str, Snowflake, BigQuery]:
    """The sandbox, the control-plane database, Django here, the emulators' objects and the catalog."""
    t0 = time.monotonic()
    step("starting the sandbox: Postgres, Redis, the Snowflake and BigQuery emulators")
    world.sandbox_started = True
    sb_env = sandbox.start_all(world.sandbox_root)
    world.pg_url, world.redis_url = sb_env["SANDBOX_PG_URL"], sb_env["REDIS_URL"]
    password = secrets.token_urlsafe(16)
    cp_url = sandbox.create_database(world.pg_url, CP_DB)
    env = control_plane_env(world.tmp, cp_url, world.redis_url, **{SF_SECRET_ENV: password})
    step("manage.py migrate (in the background) and the BigQuery seed")
    with migrating(env, world.tmp / "migrate.log"):
        from sandbox.bigquery.seed import seed

        bq_url, project = sb_env["SANDBOX_BIGQUERY_URL"], sb_env["SANDBOX_BIGQUERY_PROJECT"]
        objects = seed(bq_url, project, prefix=BQ_PREFIX) if only != "snowflake" else None
    sf = Snowflake(sb_env["SANDBOX_SNOWFLAKE_URL"], password)
    end = objects.days[-1] if objects else dt.date.today()
    bq = BigQuery(
        url=bq_url,
        project=project,
        dataset=objects.marts if objects else "",
        table="fact_deliveries",
        partition_column="delivery_date",
        load_query=objects.load_query if objects else "",
        start=end - dt.timedelta(days=days - 1),
        end=end,
    )
    world.env = env
    become_django(env)
    step("seeding the catalog: dev environment, snowflake and bigquery connections and targets, bot + token")
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from controlplane.api.services import api_token_create
    from controlplane.audit.context import Channel, change_context
    from controlplane.catalog import services as cs

    parts = urlsplit(sf.url)
    sf_config = {"account": "sandbox", "user": SF_CP_USER, "host": parts.hostname, "port": parts.port}
    sf_config |= {"protocol": "http", "warehouse": SF_WAREHOUSE}
    with change_context(channel=Channel.SYSTEM, actor_name="bench-setup"):
        dev = cs.environment_create(name="dev", protected=False, description="benchmark")
        refs = {"password": f"env:{SF_SECRET_ENV}"}
        conn = cs.connection_create(
            name="snowflake", kind="snowflake", environment=dev, config=sf_config, secret_refs=refs
        )
        locator = {"database": SF_DB, "schema": SF_SCHEMA, "name": "ROOT"}
        cs.target_create(key=SF_TARGET, kind="task", connection=conn, locator=locator)
        if objects is not None:
            config = {"project": project, "api_endpoint": bq_url}
            conn = cs.connection_create(name="bigquery", kind="bigquery", environment=dev, config=config)
            locator = {"dataset": bq.dataset, "name": bq.table, "partition_column": bq.partition_column}
            locator["load_query"] = bq.load_query
            cs.target_create(key=BQ_TARGET, kind="table", connection=conn, locator=locator)
        user = get_user_model().objects.create_user(username="bench-bot", password=None)
        user.groups.add(Group.objects.get_or_create(name="responder")[0])
        _, token = api_token_create(user=user, name="bench", scopes=["actions:read", "actions:write"])
    step(f"ready in {time.monotonic() - t0:.1f} s")
    return token, sf, bq


# -------------------------------------------------------------------------------------------------- report


def print_part(
    title: str, part: Part, segments: list[tuple[str, tuple[str, str] | None, tuple[str, str] | None]]
) -> None:
    pairs = part.pairs
    direct, cp = [d for d, _ in pairs], [c for _, c in pairs]
    added = [c.total - d.total for d, c in pairs]
    print(f"\n{title}")
    rows = [
        ["direct", fmt(med([s.total for s in direct])), fmt(p99([s.total for s in direct])), ""],
        ["control plane", fmt(med([s.total for s in cp])), fmt(p99([s.total for s in cp])), ""],
        ["added per pair (cp - direct)", fmt(med(added)), fmt(p99(added)), ""],
    ]
    d_med, c_med = med([s.total for s in direct]), med([s.total for s in cp])
    rows[2][3] = f"ratio of the medians {fmt(c_med / d_med if d_med else math.nan, 2)}x"
    print_table(f"  {len(pairs)} pairs, ms", ["", "median", "p99", ""], rows)
    if any(s.statements for s in direct + cp):
        print(
            f"\n  statements sent per {part.name} operation (median): direct "
            f"{statistics.median(s.statements for s in direct):.0f} in "
            f"{statistics.median(s.sessions for s in direct):.0f} session(s), control plane "
            f"{statistics.median(s.statements for s in cp):.0f} in {statistics.median(s.sessions for s in cp):.0f}"
        )
    rows = [
        [
            label,
            fmt(med([s.span(*ds) for s in direct])) if ds else "",
            fmt(med([s.span(*cs) for s in cp])) if cs else "",
        ]
        for label, ds, cs in segments
    ]
    print_table(
        "  Where the time goes (median ms per segment; medians do not add up exactly)",
        ["segment", "direct", "cp"],
        rows,
    )
    for name, values in part.info.items():
        print(f"  {name}: median {fmt(med(values))} ms, p99 {fmt(p99(values))} ms")


SF_SEGMENTS: list[tuple[str, tuple[str, str] | None, tuple[str, str] | None]] = [
    ("log in", ("t0", "login"), None),
    ("read the state and the last runs (SHOW TASKS, TASK_HISTORY)", ("login", "read"), None),
    ("POST -> action row (requested_at): the plan (log in, SHOW TASKS, TASK_HISTORY)", None, ("t0", "requested_at")),
    ("requested_at -> claimed (started_at): policy, audit, COMMIT, broker", None, ("requested_at", "started_at")),
    ("claimed -> execute ('attempt 1' line)", None, ("started_at", "attempt")),
    ("the resumes (cp: log in, query history, ALTER TASK x3)", ("read", "resumed"), ("attempt", "resumed")),
    ("-> 'verifying': the executed milestone", None, ("resumed", "verifying")),
    ("read back (cp: verify: log in, SHOW TASKS)", ("resumed", "verified"), ("verifying", "finished_at")),
    ("-> end seen (direct: close; cp: finish, ?wait answer)", ("verified", "seen"), ("finished_at", "seen")),
    ("total", ("t0", "seen"), ("t0", "seen")),
    ("  (info) POST -> 202", None, ("t0", "answer")),
]
BQ_SEGMENTS: list[tuple[str, tuple[str, str] | None, tuple[str, str] | None]] = [
    ("the partitions' rows (INFORMATION_SCHEMA.PARTITIONS)", ("t0", "read"), None),
    ("the dry runs (delete and load of each day, 8 days at a time)", ("read", "seen"), None),
    ("total (cp: POST /api/v1/actions/preview -> 200)", ("t0", "seen"), ("t0", "seen")),
]


def report(parts: list[Part], opts: argparse.Namespace, pg: str) -> None:
    print("\n" + "=" * 100)
    print(
        "Control plane vs direct clients: Snowflake resume-task, BigQuery backfill plan (bench/snowflake_bigquery.py)"
    )
    print("=" * 100)
    print("\n".join(machine()))
    print(
        f"services    sandbox PostgreSQL {pg} (fsync off), Redis, the Snowflake and BigQuery emulators, "
        "gunicorn 2x4, Celery 2"
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"run         {opts.samples} pairs per part (+{opts.warmup} warm-up); load average at the end {load}")
    print("budget      none in DESIGN.md section 9 for these: the added time is information")
    for part in parts:
        if part.name == "snowflake":
            title = (
                "resume-task of a suspended 3-task graph: POST + ?wait (plan, dispatch, execute, verify) "
                "vs snowflake-connector-python"
            )
            print_part(title, part, SF_SEGMENTS)
        else:
            title = (
                f"backfill plan of {opts.days} day partitions: POST /api/v1/actions/preview vs google-cloud-bigquery"
            )
            print_part(title, part, BQ_SEGMENTS)
        added = med([c.total - d.total for d, c in part.pairs])
        d_med = med([d.total for d, _ in part.pairs])
        print(
            f"  {part.name}: median added by the control plane per pair {fmt(added, 0)} ms = "
            f"{fmt(100 * added / d_med if d_med else math.nan, 0)}% of the direct median {fmt(d_med, 0)} ms"
        )
    print("  One wall clock: this process, gunicorn, the worker and both emulators run on the same machine.")


# ---------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/snowflake_bigquery.py", description=(__doc__ or "").strip().splitlines()[0]
    )
    parser.add_argument("--samples", type=int, default=None, help="measured pairs per part (20; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured pairs first (3; quick 1)")
    parser.add_argument("--days", type=int, default=7, help="day partitions in the backfill plan (7, the seed's)")
    parser.add_argument("--only", choices=("snowflake", "bigquery"), help="run one part")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    opts = parser.parse_args(argv)
    opts.samples = opts.samples if opts.samples is not None else (3 if opts.quick else 20)
    opts.warmup = opts.warmup if opts.warmup is not None else (1 if opts.quick else 3)
    if opts.samples < 1 or opts.warmup < 0 or not 1 <= opts.days <= 7:
        parser.error("--samples must be >= 1, --warmup >= 0, --days 1..7 (the seed's partitions)")
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-sfbq-"))
    tmp.chmod(0o755)  # the postgres user runs the cluster below it when we are root
    world = World(tmp=tmp, keep=opts.keep, sandbox_root=tmp / "sandbox")
    step(f"temp dir {tmp}")
    broke = False
    try:
        token, sf, bq = bring_up(world, opts.only, opts.days)
        port = free_port()
        step(f"starting gunicorn (--workers 2 --threads 4) on :{port} and the Celery worker")
        cmd = [sys.executable, "-m", "gunicorn", "controlplane.wsgi", "-b", f"127.0.0.1:{port}"]
        gunicorn = world.start(
            "gunicorn", [*cmd, "--workers", "2", "--threads", "4", "--log-level", "warning"], world.env
        )
        wait_http_ok(gunicorn, port, "/healthz")
        start_worker(world)
        api = Api(port, token)
        runs: list[tuple[str, Callable[[], Part]]] = [
            ("snowflake", lambda: run_snowflake(sf, api, opts.samples, opts.warmup)),
            ("bigquery", lambda: run_bigquery(bq, api, opts.samples, opts.warmup)),
        ]
        parts = [run() for name, run in runs if opts.only in (None, name)]
        api.close()
        report(parts, opts, pg_version(world.pg_url))
        samples = {p.name: [[vars(d), vars(c)] for d, c in p.pairs] for p in parts}
        (tmp / "samples.json").write_text(json.dumps(samples, indent=1))  # --keep
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        broke = True
    except BenchError as exc:
        print(f"\nbenchmark failed: {exc}\n{services_state(world)}", file=sys.stderr)
        broke = True
    except Exception:
        traceback.print_exc()
        broke = True
    finally:
        step("stopping gunicorn, the worker and the sandbox" + ("" if opts.keep else "; removing the temp dir"))
        world.close()
        if opts.keep:
            step(f"kept {tmp}")
    return 1 if broke else 0


if __name__ == "__main__":
    sys.exit(main())
