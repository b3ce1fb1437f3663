"""Benchmark: what the control plane adds to clearing an Airflow DAG run, against calling Airflow directly.

    uv run python bench/airflow_clear.py [--samples N] [--quick] [--warmup N] [--keep]

Starts (and at the end, also on Ctrl-C / SIGTERM, stops) sandbox Postgres + Redis, the sandbox Airflow, a migrated
control-plane DB with an airflow connection and a dag target, gunicorn and a Celery worker; then alternates
direct clears (apache-airflow-client: the dry run as the preview, then the clear) and control-plane clears
(POST /api/v1/actions) of finished runs of retail_transformation_pipeline (direct: polled at 0.2 s; control
plane: GET /api/v1/actions/<id>?wait=30, answered at the end). Prints what the control plane adds against
the DESIGN.md section 9 budget (median added <= 50 ms and <= 2% of the direct median) and where the time
goes. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import http.client
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    pg_version,
    print_table,
    services_state,
    start_worker,
    step,
    verdict,
    wait_http_ok,
)
from sandbox import services as sandbox  # noqa: E402
from sandbox.airflow import AIRFLOW_VERSION, AirflowServer, start_airflow, stop_airflow  # noqa: E402

DAG = "retail_transformation_pipeline"
TARGET = f"dev.airflow.{DAG}"
SECRET_ENV = "BENCH_AIRFLOW_PASSWORD"
POLL_S = 0.2  # both paths poll at this interval, and so does the connector (poll_interval_s)
# DESIGN.md section 9: the median added per pair <= 50 ms and <= 2% of the direct path's median end to end.
BUDGET_ADDED_MS = 50.0
BUDGET_ADDED_SHARE = 0.02
N_RUNS = 4  # runs triggered up front (fewer for fewer pairs), then cleared in turn
WAIT_S = 120.0
RUN_DONE = {"success", "failed"}


def med(values: Sequence[float]) -> float:
    """Median in ms of values in seconds (NaNs left out)."""
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) * 1000 if values else math.nan


def stamp(value: Any) -> float:
    """Epoch seconds of an ISO string or a datetime; NaN when missing."""
    if value is None:
        return math.nan
    return (dt.datetime.fromisoformat(value) if isinstance(value, str) else value).timestamp()


@dataclass
class Sample:
    """One clear and wait. ``at``: epoch seconds of each milestone: t0 (just before the clear call / the POST),
    answer (it returned / the 202 arrived), cleared (Airflow answered the real clear), run_start and run_end
    (Airflow's own), seen (terminal state observed); the control plane's also from the action's timestamps."""

    path: str
    run_id: str
    state: str
    at: dict[str, float]

    def span(self, a: str, b: str) -> float:
        return self.at.get(b, math.nan) - self.at.get(a, math.nan)


# The breakdown: label, direct's span (or None), the control plane's span.
SEGMENTS: list[tuple[str, tuple[str, str] | None, tuple[str, str]]] = [
    ("until Airflow has answered the clear", ("t0", "cleared"), ("t0", "cleared")),
    ("  the preview: dry run / POST -> action row stamped (requested_at)", ("t0", "previewed"), ("t0", "requested_at")),
    ("  requested_at -> claimed (started_at): audit, COMMIT, broker", None, ("requested_at", "started_at")),
    ("  claimed -> execute ('attempt 1' line): connector, lease", None, ("started_at", "attempt")),
    ("  the clear: -> Airflow answered ('cleared' line)", ("previewed", "cleared"), ("attempt", "cleared")),
    ("clear answered -> run starts (scheduler pick-up)", ("cleared", "run_start"), ("cleared", "run_start")),
    ("run start -> run end (three tasks)", ("run_start", "run_end"), ("run_start", "run_end")),
    ("run end -> terminal state seen by the client", ("run_end", "seen"), ("run_end", "seen")),
    ("  run end -> worker sees success (its wait poll)", None, ("run_end", "worker_seen")),
    ("  -> finish begins (finished_at): 'executed' milestone, verify", None, ("worker_seen", "finished_at")),
    ("  -> client sees succeeded: finish commit, publish, ?wait answer", None, ("finished_at", "seen")),
    ("total", ("t0", "seen"), ("t0", "seen")),
]
BEFORE, AFTER, TOTAL = [("t0", "cleared")], [("run_end", "seen")], [("t0", "seen")]
PREVIEW = ("t0", "previewed")  # the direct path's dry run
# After the run ends, the control plane's own part starts when the worker's poll sees the end (the direct
# client's poll seeing it is the same moment on its side): verification, the finish, the ?wait answer.
BOOKKEEPING = ("worker_seen", "seen")


# ------------------------------------------------------------------------------------------------ clients


class Direct:
    """apache-airflow-client as a script calling Airflow itself would use it: one token, one keep-alive pool."""

    def __init__(self, server: AirflowServer) -> None:
        from airflow_client import client as af
        from airflow_client.client.models.clear_task_instances_body import ClearTaskInstancesBody

        cfg = af.Configuration(host=server.url)
        cfg.access_token = server.token()
        api = af.ApiClient(cfg)
        self.tis, self.runs, self.body = af.TaskInstanceApi(api), af.DagRunApi(api), ClearTaskInstancesBody

    def clear(self, run_id: str, *, dry_run: bool) -> int:
        # What the connector sends for {"dag_run_id": run, "only_failed": false}, its defaults spelled out.
        flags = {"only_failed": False, "include_downstream": True, "reset_dag_runs": True}
        body = self.body(dry_run=dry_run, dag_run_id=run_id, **flags)
        return len(self.tis.post_clear_task_instances(DAG, body).task_instances)

    def state(self, run_id: str) -> tuple[str, Any]:
        return str(self.runs.get_dag_run(DAG, run_id).state.value), None

    def times(self, run_id: str) -> dict[str, float]:
        run = self.runs.get_dag_run(DAG, run_id)  # after the timed part: Airflow's own start and end
        return {"run_start": stamp(run.start_date), "run_end": stamp(run.end_date)}


def poll(read: Callable[[], tuple[str, Any]], done: set[str], what: str) -> tuple[float, str, Any]:
    """Read at once, then every POLL_S until the state is in ``done``: (when seen, state, last answer)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        state, answer = read()
        if state in done:
            return time.time(), state, answer
        if time.monotonic() > deadline:
            raise BenchError(f"{what} still {state} after {WAIT_S:.0f} s")
        time.sleep(POLL_S)


def direct_sample(d: Direct, run_id: str) -> Sample:
    """The same clear by hand: preview it (Airflow's dry run, as ``airflow tasks clear`` lists the task
    instances before it asks "Are you sure?", and as the control plane's plan does), clear, poll the run."""
    t0 = time.time()
    if d.clear(run_id, dry_run=True) == 0:
        raise BenchError(f"the direct preview of {run_id} lists nothing")
    previewed = time.time()
    if d.clear(run_id, dry_run=False) == 0:
        raise BenchError(f"the direct clear of {run_id} cleared nothing")
    t1 = time.time()
    seen, state, _ = poll(lambda: d.state(run_id), RUN_DONE, f"run {run_id}")
    at = {"t0": t0, "previewed": previewed, "answer": t1, "cleared": t1, "seen": seen}
    return Sample("direct", run_id, state, {**at, **d.times(run_id)})


def cp_sample(port: int, token: str, d: Direct, run_id: str) -> Sample:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()  # a fresh keep-alive connection (gunicorn drops idle ones: keepalive), outside the timing
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")

    params = {"dag_run_id": run_id, "only_failed": False}
    t0 = time.time()
    status, data = call(
        "POST", "/api/v1/actions", {"verb": "clear", "target": TARGET, "params": params, "reason": "bench"}
    )
    t1 = time.time()
    if status != 202:
        raise BenchError(f"POST /api/v1/actions answered {status}: {data}")

    def read() -> tuple[str, Any]:
        # ?wait: the API answers when the action ends (no second polling loop on top of the worker's).
        code, action = call("GET", f"/api/v1/actions/{data['id']}?wait=30")
        if code != 200:
            raise BenchError(f"GET /api/v1/actions/{data['id']} answered {code}: {action}")
        return str(action["state"]), action

    seen, state, action = poll(read, TERMINAL, f"action {data['id']}")
    conn.close()
    at = {"t0": t0, "answer": t1, "seen": seen, **d.times(run_id)}
    at.update({k: stamp(action[k]) for k in ("requested_at", "started_at", "finished_at")})
    for line in action["log"]:  # the runner's and the connector's log lines, stamped by the worker
        msg = str(line["message"])
        for key, hit in (
            ("attempt", msg.startswith("attempt ")),
            ("cleared", msg.startswith("cleared ")),
            ("worker_seen", msg in (f"run {run_id}: success", f"run {run_id}: failed")),
        ):
            if hit:
                at.setdefault(key, stamp(line["at"]))
    if state != "succeeded":
        print(f"    action {data['id']} {state}: {action.get('error')}", file=sys.stderr)
    return Sample("cp", run_id, state, at)


# ---------------------------------------------------------------------------------------------- the world


def bring_up(world: World) -> tuple[AirflowServer, str]:
    """Sandbox Postgres + Redis, Airflow (while the control-plane DB migrates), Django here, the catalog."""
    t0 = time.monotonic()
    step("starting sandbox Postgres and Redis")
    world.sandbox_started = True
    sb_env = sandbox.start_all(world.sandbox_root, emulators=False)
    world.pg_url, world.redis_url = sb_env["SANDBOX_PG_URL"], sb_env["REDIS_URL"]
    env = control_plane_env(world.tmp, sandbox.create_database(world.pg_url, "cp_airflow_bench"), world.redis_url)
    step("manage.py migrate (in the background) and the sandbox Airflow")
    with migrating(env, world.tmp / "migrate.log"):
        server = start_airflow(world.tmp / "airflow", pg_admin_url=world.pg_url)
    env[SECRET_ENV] = server.password  # the connection's secret reference, for gunicorn and the worker
    world.env = env
    become_django(env)
    step("seeding the catalog: dev environment, airflow connection, dag target, responder bot + token")
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from controlplane.api.services import api_token_create
    from controlplane.audit.context import Channel, change_context
    from controlplane.catalog import services as cs

    config = {"base_url": server.url, "username": server.username, "poll_interval_s": POLL_S, "wait_timeout_s": WAIT_S}
    with change_context(channel=Channel.SYSTEM, actor_name="bench-setup"):
        dev = cs.environment_create(name="dev", protected=False, description="benchmark")
        secret_refs = {"password": f"env:{SECRET_ENV}"}
        conn = cs.connection_create(
            name="airflow", kind="airflow", environment=dev, config=config, secret_refs=secret_refs
        )
        cs.target_create(key=TARGET, kind="dag", connection=conn, locator={"dag_id": DAG})
        user = get_user_model().objects.create_user(username="bench-bot", password=None)
        user.groups.add(Group.objects.get_or_create(name="responder")[0])
        _, token = api_token_create(user=user, name="bench", scopes=["actions:read", "actions:write"])
    step(f"ready in {time.monotonic() - t0:.1f} s (Airflow start {server.startup_seconds:.1f} s)")
    return server, token


def trigger_runs(server: AirflowServer, d: Direct, n: int) -> list[str]:
    runs = [f"bench__{i}_{uuid.uuid4().hex[:8]}" for i in range(n)]
    step(f"triggering {n} runs of {DAG} and waiting for them")
    for run_id in runs:
        server.api("POST", f"/api/v2/dags/{DAG}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
    for run_id in runs:
        if (state := poll(functools.partial(d.state, run_id), RUN_DONE, f"run {run_id}")[1]) != "success":
            raise BenchError(f"the seed run {run_id} ended {state}")
    return runs


# -------------------------------------------------------------------------------------------------- report


def added(d: Sample, c: Sample, spans: Sequence[tuple[str, str]]) -> float:
    return sum(c.span(*x) - d.span(*x) for x in spans)


def added_by_cp(d: Sample, c: Sample, *, preview: bool = True) -> float:
    """What the control plane adds, without the two paths' poll phases: until Airflow answered the clear,
    control plane minus direct; plus, after the run's end, the control plane's bookkeeping from the moment
    its poll saw the end (the direct path's own poll seeing the end is where its clock stops).
    ``preview=False``: against a bare clear (the direct path's dry run taken out of its time)."""
    bare = 0.0 if preview else d.span(*PREVIEW)
    return added(d, c, BEFORE) + bare + c.span(*BOOKKEEPING)


def report(pairs: list[tuple[Sample, Sample]], dry_runs: list[float], opts: argparse.Namespace, pg: str) -> None:
    print("\n" + "=" * 100)
    print("Control plane vs direct Airflow: clear a run and wait until it is finished (bench/airflow_clear.py)")
    print("=" * 100)
    print("\n".join(machine()))
    print(f"services    sandbox PostgreSQL {pg} (fsync off), Redis, Airflow {AIRFLOW_VERSION}, gunicorn 2x4, Celery 2")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"run         {len(pairs)} pairs (+{opts.warmup} warm-up), poll {POLL_S} s; load average at the end {load}")
    rows = []
    for i, (d, c) in enumerate(pairs, 1):
        spans = (
            d.span(*TOTAL[0]),
            c.span(*TOTAL[0]),
            *(added(d, c, x) for x in (TOTAL, BEFORE, AFTER)),
            c.span(*BOOKKEEPING),
            added_by_cp(d, c),
            added_by_cp(d, c, preview=False),
        )
        first = "direct" if d.at["t0"] < c.at["t0"] else "cp"
        rows.append([str(i), first, *(fmt(x * 1000, 0) for x in spans), f"{d.state}/{c.state}"])
    print_table(
        "Per pair, ms. added = control plane - direct: in total; until Airflow answered the clear; from Airflow's run "
        "end to the\n  terminal state seen (both paths poll at 0.2 s: that one is mostly the two polls' phases). "
        "bookkeeping = the control plane\n  from its worker seeing the end to the client seeing the action end. "
        "by cp = before clear + bookkeeping\n  (the direct path previews the clear first, as `airflow tasks clear` "
        "and the control plane's plan do; bare: without its preview)",
        [
            "pair",
            "first",
            "direct",
            "control plane",
            "added",
            "before clear",
            "after end",
            "bookkeeping",
            "by cp",
            "bare",
            "states",
        ],
        rows,
    )
    direct, cp = [d for d, _ in pairs], [c for _, c in pairs]
    total = med([added(d, c, TOTAL) for d, c in pairs])
    by_cp = med([added_by_cp(d, c) for d, c in pairs])
    bare = med([added_by_cp(d, c, preview=False) for d, c in pairs])
    print(f"\n  median direct          {fmt(med([s.span(*TOTAL[0]) for s in direct]), 0):>6} ms")
    print(f"  median control plane   {fmt(med([s.span(*TOTAL[0]) for s in cp]), 0):>6} ms")
    lo, hi = (f(added(d, c, TOTAL) * 1000 for d, c in pairs) for f in (min, max))
    print(f"  median added per pair  {fmt(total, 0):>6} ms   (info; per-pair spread {lo:.0f} .. {hi:.0f} ms:")
    print("    the scheduler's pick-up, the tasks and the polls' phases; at this scale it says nothing about us)")
    direct_med = med([s.span(*TOTAL[0]) for s in direct])
    share = by_cp / direct_med if direct_med else math.nan
    ok = verdict(by_cp <= BUDGET_ADDED_MS and share <= BUDGET_ADDED_SHARE)
    print(
        f"  median added by the control plane per pair {fmt(by_cp, 0)} ms = {fmt(100 * share, 1)}% of the direct"
        f" median   budget <= {BUDGET_ADDED_MS:.0f} ms and <= {100 * BUDGET_ADDED_SHARE:.0f}%: {ok}"
    )
    print("    against the same clear done directly: preview (Airflow's dry run), clear, wait for the run")
    print(f"  against a bare clear (no preview on the direct side) {fmt(bare, 0)} ms (info: the preview, Airflow's")
    print(f"    dry run, costs {fmt(med(dry_runs), 0)} ms; the control plane never clears without showing it first)")
    rows = [
        [label, fmt(med([s.span(*ds) for s in direct]), 0) if ds else "", fmt(med([s.span(*cs) for s in cp]), 0)]
        for label, ds, cs in SEGMENTS
    ]
    print_table(
        "Where the time goes (median ms per segment; medians do not add up exactly)", ["segment", "direct", "cp"], rows
    )
    post = fmt(med([s.span("t0", "answer") for s in cp]))
    print(f"\n  POST /api/v1/actions -> 202 (client side, includes the plan): {post} ms")
    print(f"  Airflow clear dry run (the plan's call), direct keep-alive call: {fmt(med(dry_runs))} ms")
    print("  One wall clock: this process, gunicorn, the worker and Airflow run on the same machine.")


# ---------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/airflow_clear.py", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--samples", type=int, default=None, help="measured pairs (20; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured pairs first (3; quick 2)")
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    opts = parser.parse_args(argv)
    # 20 pairs by default: one pair's added time spreads widely (two cores shared with Airflow's four
    # processes), and the median of 20 moves much less from run to run than that of 10.
    opts.samples = opts.samples if opts.samples is not None else (3 if opts.quick else 20)
    opts.warmup = opts.warmup if opts.warmup is not None else (2 if opts.quick else 3)
    if opts.samples < 1 or opts.warmup < 0:
        parser.error("--samples must be >= 1 and --warmup >= 0")
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-airflow-"))
    tmp.chmod(0o755)  # the postgres user runs the cluster below it when we are root
    world = World(tmp=tmp, keep=opts.keep, sandbox_root=tmp / "sandbox")
    step(f"temp dir {tmp}")
    broke = False
    try:
        server, token = bring_up(world)
        d = Direct(server)
        n_runs = min(N_RUNS, 2 * (opts.warmup + opts.samples))
        runs = trigger_runs(server, d, n_runs)
        port = free_port()
        step(f"starting gunicorn (--workers 2 --threads 4) on :{port} and the Celery worker")
        cmd = [sys.executable, "-m", "gunicorn", "controlplane.wsgi", "-b", f"127.0.0.1:{port}"]
        gunicorn = world.start(
            "gunicorn", [*cmd, "--workers", "2", "--threads", "4", "--log-level", "warning"], world.env
        )
        wait_http_ok(gunicorn, port, "/healthz")
        start_worker(world)
        pairs: list[tuple[Sample, Sample]] = []
        dry_runs: list[float] = []
        for i in range(opts.warmup + opts.samples):
            n, of = (i + 1 - opts.warmup, opts.samples) if i >= opts.warmup else (i + 1, opts.warmup)
            step(f"pair {n}/{of}" + ("" if i >= opts.warmup else " (warm-up)"))
            run_d, run_c = runs[(2 * i) % n_runs], runs[(2 * i + 1) % n_runs]
            if i % 2 == 0:
                ds, cs = direct_sample(d, run_d), cp_sample(port, token, d, run_c)
            else:
                cs, ds = cp_sample(port, token, d, run_c), direct_sample(d, run_d)
            t = time.perf_counter()
            d.clear(run_d, dry_run=True)  # what the plan's dry run costs, outside the timed parts
            if i >= opts.warmup:
                dry_runs.append(time.perf_counter() - t)
                pairs.append((ds, cs))
                broke = broke or ds.state != "success" or cs.state != "succeeded"
            took = [f"{x.path} {x.span(*TOTAL[0]) * 1000:.0f} ms ({x.state})" for x in (ds, cs)]
            step("  " + ", ".join(took))
            if dead := [child for child in world.children if not child.alive()]:
                raise BenchError(f"{dead[0].name} died:\n{dead[0].tail()}")
        report(pairs, dry_runs, opts, pg_version(world.pg_url))
        (tmp / "samples.json").write_text(json.dumps([[vars(d), vars(c)] for d, c in pairs], indent=1))  # --keep
        if broke:
            print("\nSOMETHING BROKE: a run or an action did not succeed (see the states above).", file=sys.stderr)
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
        step(
            "stopping gunicorn, the worker, Airflow, Postgres, Redis" + ("" if opts.keep else "; removing the temp dir")
        )
        for child in list(reversed(world.children)):  # first: nothing may call Airflow any more
            world.stop_child(child)
        if (tmp / "airflow").exists():
            try:
                stop_airflow(tmp / "airflow")
            except Exception as exc:
                print(f"warning: could not stop Airflow: {exc}", file=sys.stderr)
        world.close()
        if opts.keep:
            step(f"kept {tmp}")
    return 1 if broke else 0


if __name__ == "__main__":
    sys.exit(main())
